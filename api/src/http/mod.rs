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
//! - [`observe`]: the span and the metrics of every request.
//! - [`state`]: [`AppState`] and the settings computed once at start.
//! - `lines`, `formations`, `operations`, `sightings`, `meta`: the route groups.

mod error;
mod formations;
mod lines;
mod meta;
mod negotiate;
mod observe;
mod operations;
mod request;
mod respond;
mod sightings;
mod state;

use axum::Router;
use axum::response::{IntoResponse, Response};
use http::HeaderValue;

use error::ApiError;
use observe::ObserveLayer;
pub use state::AppState;
pub(crate) use state::{HttpSettings, Identity};

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
        .layer(ObserveLayer::new(state.clone()))
        .with_state(state)
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

/// Every route group's descriptions, for `openapi.json`.
#[cfg(feature = "openapi")]
pub(crate) fn document(docs: &mut crate::openapi::Docs) {
    lines::document(docs);
    formations::document(docs);
    operations::document(docs);
    sightings::document(docs);
    meta::document(docs);
}

/// The methods every route answers.
pub(crate) const ALLOWED_METHODS: &str = "GET, HEAD, OPTIONS";
