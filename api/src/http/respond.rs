//! Turning a cached (or freshly loaded) response into HTTP: the route's `Cache-Control`, strong
//! ETags and `304`, compression with `Vary`, cache tags, `x-local-cache` and `Server-Timing`.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use serde::Serialize;

use super::endpoint::Endpoint;
use super::error::error_body;
use super::{ApiError, AppState};
use crate::cache::{CachedResponse, Encoding, LoadError, Outcome};
use crate::store::{Db, StoreError, StoreResult};

/// `x-local-cache` header name.
pub const X_LOCAL_CACHE: HeaderName = HeaderName::from_static("x-local-cache");

/// `Server-Timing` header name (built once: parsing a name per response showed up in profiles).
pub const SERVER_TIMING: HeaderName = HeaderName::from_static("server-timing");

/// How long the edge may keep a stale copy served because the database failed: briefly, so it
/// asks again soon.
const STALE_CACHE_CONTROL: &str = "public, max-age=0, s-maxage=5";

/// Serializes a value for a response body.
///
/// # Errors
///
/// [`StoreError::Data`] if the value cannot be represented as JSON.
pub fn json<T: Serialize>(value: &T) -> StoreResult<Bytes> {
    serde_json::to_vec(value).map(Bytes::from).map_err(|e| StoreError::Data(e.to_string()))
}

/// Answers a policy route: from the in-process cache, or by running `load` (once for all
/// concurrent requests of the same key). `load` returns `None` for a resource that does not exist,
/// which becomes a negatively cached `404` saying `not_found`.
pub async fn serve<F, Fut>(state: &AppState, endpoint: Endpoint, not_found: &'static str, load: F) -> Response
where
    F: FnOnce(Db) -> Fut,
    Fut: Future<Output = StoreResult<Option<Bytes>>>,
{
    state.cache.refresh(&state.store).await;
    let route = endpoint.route();
    let store = state.store.clone();
    let result = state
        .cache
        .get_or_load(&endpoint.key, || async {
            let started = Instant::now();
            let loaded = load(store).await?;
            let db_time = started.elapsed();
            let tags = endpoint.tags();
            Ok(match loaded {
                Some(body) => {
                    CachedResponse::new(StatusCode::OK, body, tags, db_time).with_lifetimes(route.local_ttl, route.sie)
                }
                None => CachedResponse::new(StatusCode::NOT_FOUND, error_body("not_found", not_found), tags, db_time)
                    .with_lifetimes(route.negative_ttl.min(route.local_ttl), Duration::ZERO),
            })
        })
        .await;
    match result {
        Ok((cached, outcome)) => render(state, &endpoint, &cached, outcome),
        Err(LoadError::Unavailable) => ApiError::Unavailable.into_response(),
        Err(LoadError::Internal) => ApiError::Internal.into_response(),
    }
}

/// Builds the HTTP response for a cached value.
fn render(state: &AppState, endpoint: &Endpoint, cached: &Arc<CachedResponse>, outcome: Outcome) -> Response {
    let route_headers = endpoint.headers();
    let cache_control = match (cached.status, outcome, endpoint.today_remaining) {
        (StatusCode::OK, Outcome::Stale, _) => HeaderValue::from_static(STALE_CACHE_CONTROL),
        (StatusCode::OK, _, None) => route_headers.cache_control.clone(),
        (StatusCode::OK, _, Some(remaining)) => HeaderValue::try_from(endpoint.route().cache_control_until(remaining))
            .unwrap_or(HeaderValue::from_static("no-store")),
        _ => route_headers.negative.clone(),
    };
    let encoding = if cached.compressible() { endpoint.encoding } else { None };
    let (body, etag) = match encoding {
        Some(enc) => {
            let variant = cached.encoded(enc);
            (variant.body.clone(), variant.etag.clone())
        }
        None => (cached.body.clone(), cached.etag.clone()),
    };

    let not_modified = cached.status == StatusCode::OK
        && endpoint
            .if_none_match
            .as_ref()
            .and_then(|v| v.to_str().ok())
            .is_some_and(|inm| etag_matches(inm, &cached.hash));

    let mut response = if not_modified {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        let mut r = Response::new(Body::from(body));
        *r.status_mut() = cached.status;
        // Room for every header below without regrowing the map.
        r.headers_mut().reserve(12);
        r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if let Some(enc) = encoding {
            r.headers_mut().insert(header::CONTENT_ENCODING, HeaderValue::from_static(enc.as_str()));
        }
        r
    };
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, cache_control);
    if cached.status == StatusCode::OK {
        headers.insert(header::ETAG, etag);
    }
    if cached.compressible() {
        headers.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    }
    if !cached.tags.is_empty() {
        headers.insert(state.http.tag_header.clone(), cached.tag_header.clone());
    }
    headers.insert(X_LOCAL_CACHE, HeaderValue::from_static(outcome.as_str()));
    headers.insert(SERVER_TIMING, server_timing(outcome, cached.db_time));
    response
}

fn server_timing(outcome: Outcome, db_time: Duration) -> HeaderValue {
    match outcome {
        Outcome::Miss => HeaderValue::try_from(format!("db;dur={:.3}", db_time.as_secs_f64() * 1_000.0))
            .unwrap_or(HeaderValue::from_static("db;dur=0")),
        Outcome::Hit => HeaderValue::from_static("db;dur=0, cache;desc=\"hit\""),
        Outcome::Stale => HeaderValue::from_static("db;dur=0, cache;desc=\"stale\""),
    }
}

/// Picks the response encoding from `Accept-Encoding`: brotli, then gzip, else none.
pub fn choose_encoding(request: &HeaderMap) -> Option<Encoding> {
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

/// Whether an `If-None-Match` value matches any representation of a response whose body hash is
/// `hash` (weak comparison, as RFC 9110 prescribes for `If-None-Match`).
pub fn etag_matches(if_none_match: &str, hash: &str) -> bool {
    if_none_match.split(',').any(|candidate| {
        let candidate = candidate.trim();
        if candidate == "*" {
            return true;
        }
        let opaque = candidate.strip_prefix("W/").unwrap_or(candidate);
        let Some(inner) = opaque.strip_prefix('"').and_then(|o| o.strip_suffix('"')) else {
            return false;
        };
        inner == hash || inner.strip_prefix(hash).is_some_and(|suffix| suffix == "-br" || suffix == "-gzip")
    })
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
}
