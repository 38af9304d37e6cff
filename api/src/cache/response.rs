//! The value the in-process cache stores: a finished response, so a hit does no serialization
//! and no database round trip.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderValue, StatusCode};

/// How many encoded variants a response can hold (brotli and gzip).
pub(crate) const VARIANT_SLOTS: usize = 2;

/// An encoded variant of a cached body, with its own strong ETag.
#[derive(Debug)]
pub(crate) struct Variant {
    /// The encoded bytes.
    pub(crate) body: Bytes,
    /// The variant's ETag: a strong validator must differ between representations.
    pub(crate) etag: HeaderValue,
}

/// A finished response, as the cache stores it.
#[derive(Debug)]
pub(crate) struct CachedResponse {
    /// `200`, or `404` for a resource that does not exist (negatively cached).
    pub(crate) status: StatusCode,
    /// The JSON body.
    pub(crate) body: Bytes,
    /// Hash of the body, the opaque part of every ETag of this response.
    pub(crate) hash: String,
    /// Strong ETag of the identity body.
    pub(crate) etag: HeaderValue,
    /// Tags, for eviction.
    pub(crate) tags: Vec<String>,
    /// Tags joined with `,`, ready for the tag header.
    pub(crate) tag_header: HeaderValue,
    /// Which data the answer shows (`x-edgerail-version`): the version its read returned. Stored
    /// with the answer, so a hit costs nothing more.
    pub(crate) version: Option<HeaderValue>,
    /// Time the load spent in the database (for `Server-Timing`).
    pub(crate) db_time: Duration,
    /// When the load started: the data is at least this fresh, which lets a hit be served while
    /// the change feed cannot be read (see `feed::Follower::vouches_for`).
    pub(crate) loaded_at: Instant,
    /// The eviction generation the load started in (see `evictions`): the answer is served only
    /// while none of its tags was evicted after that. Set by the cache.
    pub(crate) generation: u64,
    /// In-process freshness; zero when the data changed while loading (then it is not kept).
    pub(crate) ttl: Duration,
    /// How long after `ttl` the copy may be served if the database fails.
    pub(crate) stale_for: Duration,
    /// Encoded variants, made on first demand and then reused by every hit.
    variants: [OnceLock<Variant>; VARIANT_SLOTS],
}

impl CachedResponse {
    /// A response value; `hash` and `etag` describe `body` (the HTTP layer owns their format).
    pub(crate) fn new(
        status: StatusCode,
        body: Bytes,
        (hash, etag): (String, HeaderValue),
        tags: Vec<String>,
        db_time: Duration,
        loaded_at: Instant,
    ) -> Self {
        let tag_header = HeaderValue::try_from(tags.join(",")).unwrap_or_else(|_| HeaderValue::from_static(""));
        Self {
            status,
            body,
            hash,
            etag,
            tags,
            tag_header,
            version: None,
            db_time,
            loaded_at,
            generation: 0,
            ttl: Duration::ZERO,
            stale_for: Duration::ZERO,
            variants: [OnceLock::new(), OnceLock::new()],
        }
    }

    /// Sets the in-process lifetimes.
    #[must_use]
    pub(crate) fn with_lifetimes(mut self, ttl: Duration, stale_for: Duration) -> Self {
        self.ttl = ttl;
        self.stale_for = stale_for;
        self
    }

    /// The variant in `slot`, made by `make` the first time it is asked for. `None` for a slot
    /// beyond [`VARIANT_SLOTS`].
    pub(crate) fn variant(&self, slot: usize, make: impl FnOnce(&Self) -> Variant) -> Option<&Variant> {
        self.variants.get(slot).map(|cell| cell.get_or_init(|| make(self)))
    }

    /// Approximate memory held, for the cache's byte bound (encoded variants included).
    pub(crate) fn weight(&self) -> u32 {
        let version = self.version.as_ref().map_or(0, HeaderValue::len);
        let bytes = self.body.len() * 2 + self.tag_header.len() + version + 256;
        u32::try_from(bytes).unwrap_or(u32::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_variant_is_made_once_and_reused() {
        let r = CachedResponse::new(
            StatusCode::OK,
            Bytes::from_static(b"body"),
            ("h".into(), HeaderValue::from_static("\"h\"")),
            vec!["lines".into()],
            Duration::ZERO,
            Instant::now(),
        );
        let made = std::cell::Cell::new(0);
        let make = |_: &CachedResponse| {
            made.set(made.get() + 1);
            Variant { body: Bytes::from_static(b"x"), etag: HeaderValue::from_static("\"h-x\"") }
        };
        let first = std::ptr::from_ref(r.variant(0, make).unwrap());
        let again = std::ptr::from_ref(r.variant(0, make).unwrap());
        assert_eq!(first, again);
        assert_eq!(made.get(), 1);
        assert!(r.variant(VARIANT_SLOTS, make).is_none());
        assert_eq!(r.tag_header, "lines");
    }
}
