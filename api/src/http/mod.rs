//! The HTTP surface: one [`app`] used by the local server, by Lambda and by tests.
//!
//! Route groups live in their own modules, each exposing `router()`; they are merged here.
//! Every `/v1` handler goes through [`respond::serve`], which applies the route's policy: cache
//! lookup and coalescing, `Cache-Control`, ETag/304, compression, tags and timing headers.
//!
//! # Layout
//!
//! - [`request`]: [`request::Endpoint`], the validated request as the cache policy sees it.
//! - [`negotiate`]: content negotiation and the ETag format.
//! - [`respond`]: the cache lookup and rendering of every policy route.
//! - [`error`]: [`ApiError`], every failure as a JSON answer.
//! - [`state`]: [`AppState`] and the settings computed once at start.
//! - `lines`, `formations`, `operations`, `sightings`, `meta`: the route groups.

mod error;
mod formations;
mod lines;
mod meta;
mod negotiate;
mod operations;
mod request;
mod respond;
mod sightings;
mod state;

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use http::HeaderValue;
use tracing::Instrument;

use crate::metrics::Observation;
use error::ApiError;
use respond::Served;
pub use state::AppState;
pub(crate) use state::HttpSettings;

/// The application: every route, the JSON 404 and 405 answers, one tracing span per request.
pub fn app(state: AppState) -> Router {
    Router::new()
        .merge(lines::router())
        .merge(formations::router())
        .merge(operations::router())
        .merge(sightings::router())
        .merge(meta::router())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}

/// Runs the request inside a span naming its route (the template, so the log groups by route),
/// records the status and the local cache outcome on it, so every log line of the request says
/// which request it belongs to, and counts the response in the metrics.
async fn observe(State(state): State<AppState>, request: Request, next: Next) -> Response {
    // A clone of the matched path is a reference count, not a copy of the string.
    let matched = request.extensions().get::<MatchedPath>().cloned();
    let span = tracing::info_span!(
        "request",
        method = %request.method(),
        route = matched.as_ref().map_or("-", MatchedPath::as_str),
        status = tracing::field::Empty,
        cache = tracing::field::Empty,
    );
    let response = next.run(request).instrument(span.clone()).await;
    let status = response.status().as_u16();
    let served = Served::from_headers(response.headers());
    let outcome = served.map(|s| s.outcome.as_str());
    span.record("status", status);
    if let Some(outcome) = outcome {
        span.record("cache", outcome);
    }
    let index = matched.and_then(|m| state.http.index.get(m.as_str()).copied());
    state.metrics.observe(index, Observation { status, outcome, db_time: served.and_then(|s| s.db_time) });
    if state.metrics.due() {
        state.flush_metrics();
    }
    response
}

async fn not_found(axum::extract::State(state): axum::extract::State<AppState>) -> impl IntoResponse {
    ApiError::NotFound { cache_control: state.http.default_negative.clone() }
}

/// Any method a route does not serve. `OPTIONS` is a CORS preflight: answered `204` with the
/// methods allowed and no CORS headers of its own, which the edge adds after its cache (so one
/// cached answer serves every `Origin`). The rest get `405`.
async fn method_not_allowed(method: http::Method) -> Response {
    if method == http::Method::OPTIONS {
        return (
            http::StatusCode::NO_CONTENT,
            [
                (http::header::ALLOW, HeaderValue::from_static(ALLOWED_METHODS)),
                (http::header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=86400")),
            ],
        )
            .into_response();
    }
    ApiError::MethodNotAllowed.into_response()
}

/// The methods every route answers.
pub(crate) const ALLOWED_METHODS: &str = "GET, HEAD, OPTIONS";
