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

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::{MatchedPath, Request};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use cache_policy::{Policy, Route};
use http::{HeaderName, HeaderValue};
use store::{Db, ServiceCalendar};
use tracing::Instrument;

use crate::cache::LocalCache;
pub(crate) use error::ApiError;
use respond::X_LOCAL_CACHE;

/// Precomputed header values of one route, so the hot path formats nothing.
#[derive(Debug)]
pub(crate) struct RouteHeaders {
    /// The policy route.
    pub(crate) route: &'static Route,
    /// `Cache-Control` of a `200`.
    pub(crate) cache_control: HeaderValue,
    /// `Cache-Control` of a `400`/`404`.
    pub(crate) negative: HeaderValue,
}

/// Everything a request handler needs; cheap to clone (all shared).
#[derive(Debug, Clone)]
pub struct AppState {
    /// The database.
    store: Db,
    /// The in-process response cache and change-feed follower.
    cache: Arc<LocalCache>,
    /// Per-request settings.
    http: Arc<HttpSettings>,
}

/// Settings and precomputed values of the HTTP layer.
#[derive(Debug)]
pub(crate) struct HttpSettings {
    /// Service day rules, for `today`.
    pub(crate) calendar: ServiceCalendar,
    /// Name of the header carrying cache tags.
    pub(crate) tag_header: HeaderName,
    /// Header values per route, in policy order.
    pub(crate) routes: Vec<RouteHeaders>,
    /// Index into `routes` by path template (axum's `MatchedPath`).
    pub(crate) index: HashMap<&'static str, usize>,
    /// Negative caching of unknown paths.
    pub(crate) default_negative: HeaderValue,
}

impl HttpSettings {
    /// Precomputes the header values of every route.
    pub(crate) fn new(policy: &'static Policy, calendar: ServiceCalendar, tag_header: HeaderName) -> Self {
        let value = |text: String| HeaderValue::try_from(text).unwrap_or_else(|_| HeaderValue::from_static("no-store"));
        let routes = policy
            .routes()
            .iter()
            .map(|route| RouteHeaders {
                route,
                cache_control: value(route.cache_control()),
                negative: value(route.negative_cache_control()),
            })
            .collect();
        let index = policy.routes().iter().enumerate().map(|(i, route)| (route.path.as_str(), i)).collect();
        Self {
            calendar,
            tag_header,
            routes,
            index,
            default_negative: value(cache_policy::negative_cache_control(policy.default_negative_ttl())),
        }
    }
}

impl AppState {
    /// Assembles the state.
    pub(crate) fn new(store: Db, cache: LocalCache, http: HttpSettings) -> Self {
        Self { store, cache: Arc::new(cache), http: Arc::new(http) }
    }

    /// The database (the server closes it on shutdown; tests inspect it).
    pub fn store(&self) -> &Db {
        &self.store
    }
}

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
        .layer(middleware::from_fn(request_span))
        .with_state(state)
}

/// Runs the request inside a span naming its route (the template, so the log groups by route),
/// and records the status and the local cache outcome on it: every log line of the request says
/// which request it belongs to.
async fn request_span(request: Request, next: Next) -> Response {
    let route = request.extensions().get::<MatchedPath>().map_or("-", |m| m.as_str()).to_owned();
    let span = tracing::info_span!(
        "request",
        method = %request.method(),
        route,
        status = tracing::field::Empty,
        cache = tracing::field::Empty,
    );
    let response = next.run(request).instrument(span.clone()).await;
    span.record("status", response.status().as_u16());
    if let Some(outcome) = response.headers().get(X_LOCAL_CACHE).and_then(|v| v.to_str().ok()) {
        span.record("cache", outcome);
    }
    response
}

async fn not_found(axum::extract::State(state): axum::extract::State<AppState>) -> impl IntoResponse {
    ApiError::NotFound { cache_control: state.http.default_negative.clone() }
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}
