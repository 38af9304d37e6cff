//! Answering a policy route: the in-process cache (or a load), then rendering the cached value as
//! HTTP: the route's `Cache-Control`, strong ETags and `304`, compression with `Vary`, cache tags,
//! `x-local-cache` and `Server-Timing`.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{HeaderName, HeaderValue, StatusCode, header};
use serde::Serialize;

use store::{Db, Position, Read, StoreError, StoreResult};

use super::error::ApiError;
use super::error::error_body;
use super::negotiate::{self, MIN_COMPRESS};
use super::request::Endpoint;
use super::state::{AppState, RouteHeaders};
use crate::cache::{CachedResponse, LoadError, Outcome, Variant};

/// The header saying which data an answer shows (see [`cache_policy::VERSION_HEADER`]).
pub(crate) const X_EDGERAIL_VERSION: HeaderName = HeaderName::from_static(cache_policy::VERSION_HEADER);

/// `x-local-cache` header name.
pub(crate) const X_LOCAL_CACHE: HeaderName = HeaderName::from_static("x-local-cache");

/// `Server-Timing` header name (built once: parsing a name per response showed up in profiles).
pub(crate) const SERVER_TIMING: HeaderName = HeaderName::from_static("server-timing");

/// How long the edge may keep a stale copy served because the database failed: briefly, so it
/// asks again soon.
const STALE_CACHE_CONTROL: &str = "public, max-age=0, s-maxage=5";
/// An answer served once: its load took longer than the freshness bound allows, or overlapped a
/// change of its data. No cache may keep it, the edge included: it could arrive there after the
/// invalidation of a change it lacks.
const ONCE_CACHE_CONTROL: &str = "public, max-age=0, s-maxage=0";
/// The `s-maxage` of [`STALE_CACHE_CONTROL`].
const STALE_EDGE_TTL: Duration = Duration::from_secs(5);

/// Serializes a value for a response body.
///
/// # Errors
///
/// [`StoreError::Data`] if the value cannot be represented as JSON.
pub(crate) fn json<T: Serialize>(value: &T) -> StoreResult<Bytes> {
    serde_json::to_vec(value).map(Bytes::from).map_err(|e| StoreError::Data(e.to_string()))
}

/// Answers a policy route: from the in-process cache, or by running `load` (once for all
/// concurrent requests of the same key). `load` returns `None` for a resource that does not exist,
/// which becomes a negatively cached `404` saying `not_found`. It is given the request, so a
/// handler copies the parameters its query needs only on a miss (a hit allocates nothing for them),
/// and whether the cache wants the feed's position read with the data.
pub(crate) async fn serve<F, Fut>(state: &AppState, endpoint: Endpoint, not_found: &'static str, load: F) -> Response
where
    F: FnOnce(Db, &Endpoint, Position) -> Fut,
    Fut: Future<Output = StoreResult<Read<Option<Bytes>>>>,
{
    state.cache.refresh(&state.store).await;
    let route = endpoint.route();
    let store = state.store.clone();
    let request = &endpoint;
    let result = state
        .cache
        .get_or_load(&endpoint.key, |position| async move {
            let started = Instant::now();
            let Read { value: loaded, position, version } = load(store, request, position).await?;
            let db_time = started.elapsed();
            let tags = request.tags();
            let value = |status, body: Bytes| {
                let hash = negotiate::body_hash(&body);
                let etag = negotiate::etag(&hash, None);
                CachedResponse::new(status, body, (hash, etag), tags, db_time, started)
            };
            let mut answer = match loaded {
                Some(body) => value(StatusCode::OK, body).with_lifetimes(route.local_ttl, route.sie),
                None => value(StatusCode::NOT_FOUND, error_body("not_found", not_found))
                    .with_lifetimes(route.negative_ttl.min(route.local_ttl), Duration::ZERO),
            };
            answer.version = version.and_then(|v| HeaderValue::try_from(v).ok());
            Ok((answer, position))
        })
        .await;
    match result {
        Ok((cached, outcome)) => {
            // Counted here, where the outcome and the database time are values; the layer that
            // counts every response's status would have to read them back out of the headers.
            state.metrics.served(endpoint.index(), outcome, cached.db_time);
            render(state, &endpoint, &cached, outcome)
        }
        Err(LoadError::Unavailable) => ApiError::Unavailable.into_response(),
        Err(LoadError::Internal) => ApiError::Internal.into_response(),
    }
}

/// Builds the HTTP response for a cached value.
///
/// Fixed header values are built in `const` blocks: `HeaderValue::from_static` called at run time
/// checks its text byte by byte on every response.
fn render(state: &AppState, endpoint: &Endpoint, cached: &Arc<CachedResponse>, outcome: Outcome) -> Response {
    let edge_keeps = state.cache.edge_may_keep(cached, outcome);
    let cache_control = cache_control(endpoint.headers(), cached.status, outcome, edge_keeps, endpoint.today_remaining);
    let compressible = cached.body.len() >= MIN_COMPRESS;
    let encoded = endpoint.encoding.filter(|_| compressible).and_then(|enc| {
        let variant = cached.variant(enc.slot(), |c| Variant {
            body: enc.compress(&c.body),
            etag: negotiate::etag(&c.hash, Some(enc)),
        })?;
        Some((enc, variant))
    });
    let (body, etag) = match encoded {
        Some((_, variant)) => (variant.body.clone(), variant.etag.clone()),
        None => (cached.body.clone(), cached.etag.clone()),
    };
    let encoding = encoded.map(|(enc, _)| enc);

    let not_modified = cached.status == StatusCode::OK
        && endpoint
            .if_none_match
            .as_ref()
            .and_then(|v| v.to_str().ok())
            .is_some_and(|inm| negotiate::etag_matches(inm, &cached.hash));

    let mut response = if not_modified {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        let mut r = Response::new(Body::from(body));
        *r.status_mut() = cached.status;
        // Room for every header below without regrowing the map.
        r.headers_mut().reserve(12);
        r.headers_mut().insert(header::CONTENT_TYPE, const { HeaderValue::from_static("application/json") });
        if let Some(enc) = encoding {
            r.headers_mut().insert(header::CONTENT_ENCODING, enc.header_value());
        }
        r
    };
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, cache_control);
    if cached.status == StatusCode::OK {
        headers.insert(header::ETAG, etag);
    }
    if compressible {
        headers.insert(header::VARY, const { HeaderValue::from_static("accept-encoding") });
    }
    if !cached.tags.is_empty() {
        headers.insert(state.http.tag_header.clone(), cached.tag_header.clone());
    }
    if let Some(version) = &cached.version {
        headers.insert(X_EDGERAIL_VERSION, version.clone());
    }
    headers.insert(X_LOCAL_CACHE, outcome.header_value());
    headers.insert(SERVER_TIMING, server_timing(outcome, cached.db_time));
    response
}

/// The `Cache-Control` of an answer: the route's, cut short for `today` so no edge keeps it past
/// the rollover (stale copies and `404`s included), the brief stale one, the negative one, or, for
/// an answer the edge must not keep (`edge_keeps` false: see `LocalCache::edge_may_keep`), one
/// that no cache reuses.
fn cache_control(
    route: &RouteHeaders,
    status: StatusCode,
    outcome: Outcome,
    edge_keeps: bool,
    today_remaining: Option<Duration>,
) -> HeaderValue {
    let computed = |text: String| HeaderValue::try_from(text).unwrap_or(HeaderValue::from_static("no-store"));
    match (status, outcome, today_remaining) {
        (_, Outcome::Hit | Outcome::Miss, _) if !edge_keeps => HeaderValue::from_static(ONCE_CACHE_CONTROL),
        (StatusCode::OK, Outcome::Stale, Some(remaining)) if remaining < STALE_EDGE_TTL => {
            computed(cache_policy::negative_cache_control(remaining))
        }
        (StatusCode::OK, Outcome::Stale, _) => HeaderValue::from_static(STALE_CACHE_CONTROL),
        (StatusCode::OK, _, None) => route.cache_control.clone(),
        (StatusCode::OK, _, Some(remaining)) => computed(route.route.cache_control_until(remaining)),
        // "No such operation today" must not outlive today either: the new day may have it.
        (_, _, Some(remaining)) if remaining < route.route.negative_ttl => {
            computed(cache_policy::negative_cache_control(remaining))
        }
        _ => route.negative.clone(),
    }
}

fn server_timing(outcome: Outcome, db_time: Duration) -> HeaderValue {
    match outcome {
        Outcome::Miss => HeaderValue::try_from(format!("db;dur={:.3}", db_time.as_secs_f64() * 1_000.0))
            .unwrap_or(HeaderValue::from_static("db;dur=0")),
        Outcome::Hit => const { HeaderValue::from_static("db;dur=0, cache;desc=\"hit\"") },
        Outcome::Stale => const { HeaderValue::from_static("db;dur=0, cache;desc=\"stale\"") },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route() -> RouteHeaders {
        let route = cache_policy::Policy::embedded().unwrap().route("operations").unwrap();
        RouteHeaders {
            route,
            cache_control: HeaderValue::try_from(route.cache_control()).unwrap(),
            negative: HeaderValue::try_from(route.negative_cache_control()).unwrap(),
        }
    }

    fn s_maxage(value: &HeaderValue) -> u64 {
        let text = value.to_str().unwrap();
        text.split(", ").find_map(|d| d.strip_prefix("s-maxage=")).unwrap().parse().unwrap()
    }

    #[test]
    fn no_answer_for_today_outlives_the_rollover() {
        let r = route();
        let soon = Some(Duration::from_secs(2));
        for outcome in [Outcome::Hit, Outcome::Miss, Outcome::Stale] {
            let value = cache_control(&r, StatusCode::OK, outcome, true, soon);
            assert!(s_maxage(&value) <= 2, "{outcome:?}: {value:?}");
        }
        // Far from the rollover a stale copy keeps its brief edge TTL, a fresh one the route's.
        let later = Some(Duration::from_secs(3_600));
        assert_eq!(cache_control(&r, StatusCode::OK, Outcome::Stale, true, later), STALE_CACHE_CONTROL);
        assert_eq!(s_maxage(&cache_control(&r, StatusCode::OK, Outcome::Stale, true, None)), 5);
        assert_eq!(cache_control(&r, StatusCode::OK, Outcome::Hit, true, None), r.cache_control);
        assert_eq!(cache_control(&r, StatusCode::NOT_FOUND, Outcome::Hit, true, later), r.negative);
        assert_eq!(cache_control(&r, StatusCode::NOT_FOUND, Outcome::Hit, true, None), r.negative);
        // A 404 for `today` is not kept past the rollover either.
        for outcome in [Outcome::Hit, Outcome::Miss] {
            assert!(s_maxage(&cache_control(&r, StatusCode::NOT_FOUND, outcome, true, soon)) <= 2, "{outcome:?}");
        }
    }
}
