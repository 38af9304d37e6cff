//! Content negotiation and the ETag format, in one place because they depend on each other: each
//! encoding of a body is its own representation, so it carries its own strong ETag, and an
//! `If-None-Match` must recognise every representation of the same body.
//!
//! The ETag of the identity body is `"<hash>"`; of an encoded body `"<hash>-<coding>"`, where
//! `hash` is the xxh3-128 of the identity body.

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, header};

/// A body encoding the cache keeps a variant of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Encoding {
    /// Brotli.
    Br,
    /// gzip.
    Gzip,
}

impl Encoding {
    /// `Content-Encoding` value.
    pub(crate) const fn as_str(self) -> &'static str {
        match self {
            Self::Br => "br",
            Self::Gzip => "gzip",
        }
    }

    /// [`Self::as_str`] as a header value, built at compile time.
    pub(crate) fn header_value(self) -> HeaderValue {
        match self {
            Self::Br => const { HeaderValue::from_static(Self::Br.as_str()) },
            Self::Gzip => const { HeaderValue::from_static(Self::Gzip.as_str()) },
        }
    }

    /// Which of a cached response's variant slots holds this encoding.
    pub(crate) fn slot(self) -> usize {
        match self {
            Self::Br => 0,
            Self::Gzip => 1,
        }
    }

    /// `body` compressed with this encoding, at levels chosen for responses that are compressed
    /// once and served many times.
    pub(crate) fn compress(self, body: &[u8]) -> Bytes {
        use std::io::Write;
        Bytes::from(match self {
            Self::Gzip => {
                let mut enc =
                    flate2::write::GzEncoder::new(Vec::with_capacity(body.len() / 4), flate2::Compression::new(6));
                // Writing to a Vec cannot fail.
                let _ = enc.write_all(body);
                enc.finish().unwrap_or_default()
            }
            Self::Br => {
                let mut out = Vec::with_capacity(body.len() / 4);
                let params = brotli::enc::BrotliEncoderParams { quality: 5, lgwin: 22, ..Default::default() };
                let _ = brotli::BrotliCompress(&mut &body[..], &mut out, &params);
                out
            }
        })
    }
}

/// Bodies shorter than this are sent as they are: compression would not pay for its headers.
pub(crate) const MIN_COMPRESS: usize = 1_024;

/// The opaque part shared by every ETag of a body.
pub(crate) fn body_hash(body: &[u8]) -> String {
    format!("{:032x}", xxhash_rust::xxh3::xxh3_128(body))
}

/// The strong ETag of a body's representation: identity when `encoding` is `None`.
pub(crate) fn etag(hash: &str, encoding: Option<Encoding>) -> HeaderValue {
    let text = match encoding {
        None => format!("\"{hash}\""),
        Some(enc) => format!("\"{hash}-{}\"", enc.as_str()),
    };
    // A hex hash and a coding name are always valid header text.
    HeaderValue::try_from(text).unwrap_or_else(|_| HeaderValue::from_static("\"\""))
}

/// Whether an `If-None-Match` value matches any representation of a body whose hash is `hash`
/// (weak comparison, as RFC 9110 prescribes for `If-None-Match`).
pub(crate) fn etag_matches(if_none_match: &str, hash: &str) -> bool {
    if_none_match.split(',').any(|candidate| {
        let candidate = candidate.trim();
        if candidate == "*" {
            return true;
        }
        let opaque = candidate.strip_prefix("W/").unwrap_or(candidate);
        let Some(inner) = opaque.strip_prefix('"').and_then(|o| o.strip_suffix('"')) else {
            return false;
        };
        inner == hash
            || inner
                .strip_prefix(hash)
                .and_then(|suffix| suffix.strip_prefix('-'))
                .is_some_and(|coding| [Encoding::Br, Encoding::Gzip].iter().any(|e| e.as_str() == coding))
    })
}

/// Picks the response encoding from `Accept-Encoding`: brotli, then gzip, else none.
pub(crate) fn choose_encoding(request: &HeaderMap) -> Option<Encoding> {
    let mut br = false;
    let mut gzip = false;
    for value in request.get_all(header::ACCEPT_ENCODING) {
        let Ok(text) = value.to_str() else { continue };
        for item in text.split(',') {
            let mut parts = item.split(';');
            let coding = parts.next().unwrap_or("").trim();
            let refused = parts.any(|p| {
                p.trim().strip_prefix("q=").and_then(|q| q.trim().parse::<f32>().ok()).is_some_and(|q| q <= 0.0)
            });
            if refused {
                continue;
            }
            if coding.eq_ignore_ascii_case("br") {
                br = true;
            } else if coding.eq_ignore_ascii_case("gzip") || coding.eq_ignore_ascii_case("x-gzip") {
                gzip = true;
            }
        }
    }
    if br {
        Some(Encoding::Br)
    } else if gzip {
        Some(Encoding::Gzip)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT_ENCODING, HeaderValue::from_str(value).unwrap());
        h
    }

    #[test]
    fn encoding_prefers_brotli_and_honours_q_zero() {
        assert_eq!(choose_encoding(&accept("gzip, deflate, br")), Some(Encoding::Br));
        assert_eq!(choose_encoding(&accept("gzip")), Some(Encoding::Gzip));
        assert_eq!(choose_encoding(&accept("br;q=0, gzip;q=0.5")), Some(Encoding::Gzip));
        assert_eq!(choose_encoding(&accept("identity")), None);
        assert_eq!(choose_encoding(&HeaderMap::new()), None);
    }

    #[test]
    fn if_none_match_uses_weak_comparison_over_every_representation() {
        let hash = "abc123";
        assert!(etag_matches("\"abc123\"", hash));
        assert!(etag_matches("W/\"abc123\"", hash));
        assert!(etag_matches("\"zzz\", \"abc123-br\"", hash));
        assert!(etag_matches("\"abc123-gzip\"", hash));
        assert!(etag_matches("*", hash));
        assert!(!etag_matches("\"abc12\"", hash));
        assert!(!etag_matches("\"abc123-zstd\"", hash));
        assert!(!etag_matches("abc123", hash));
    }

    #[test]
    fn every_etag_this_module_writes_is_one_it_recognises() {
        let hash = body_hash(b"{\"lines\":[]}");
        for encoding in [None, Some(Encoding::Br), Some(Encoding::Gzip)] {
            let tag = etag(&hash, encoding);
            assert!(etag_matches(tag.to_str().unwrap(), &hash), "{tag:?}");
        }
        assert_ne!(etag(&hash, None), etag(&hash, Some(Encoding::Br)));
        assert_ne!(etag(&hash, Some(Encoding::Br)), etag(&hash, Some(Encoding::Gzip)));
        assert_eq!(body_hash(b"{}"), body_hash(b"{}"));
        assert_ne!(body_hash(b"{}"), body_hash(b"[]"));
    }

    #[test]
    fn compression_shrinks_repetitive_bodies() {
        let body = vec![b'a'; 4096];
        assert!(Encoding::Br.compress(&body).len() < 100);
        assert!(Encoding::Gzip.compress(&body).len() < 100);
    }
}
