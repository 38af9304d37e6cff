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
use axum::extract::{MatchedPath, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use cache_policy::{Policy, Route};
use http::{HeaderName, HeaderValue};
use store::{Db, ServiceCalendar};
use tracing::Instrument;

use crate::cache::LocalCache;
use crate::metrics::{Metrics, Observation};
pub(crate) use error::ApiError;
use respond::Served;

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
    /// Per-route counters, written as metrics.
    metrics: Arc<Metrics>,
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
    /// The code's build id, reported by `/health-check`.
    pub(crate) build_id: String,
}

impl HttpSettings {
    /// Precomputes the header values of every route.
    pub(crate) fn new(
        policy: &'static Policy,
        calendar: ServiceCalendar,
        tag_header: HeaderName,
        build_id: String,
    ) -> Self {
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
            build_id,
        }
    }
}

impl AppState {
    /// Assembles the state.
    pub(crate) fn new(store: Db, cache: LocalCache, http: HttpSettings, metrics: Metrics) -> Self {
        Self { store, cache: Arc::new(cache), http: Arc::new(http), metrics: Arc::new(metrics) }
    }

    /// Writes the metrics gathered since the last flush (at shutdown, so none are lost).
    pub fn flush_metrics(&self) {
        self.metrics.flush(|| self.cache.feed_health());
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
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}

/// Runs the request inside a span naming its route (the template, so the log groups by route),
/// records the status and the local cache outcome on it, so every log line of the request says
/// which request it belongs to, and counts the response in the metrics.
async fn observe(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let matched = request.extensions().get::<MatchedPath>().map(|m| m.as_str().to_owned());
    let span = tracing::info_span!(
        "request",
        method = %request.method(),
        route = matched.as_deref().unwrap_or("-"),
        status = tracing::field::Empty,
        cache = tracing::field::Empty,
    );
    let response = next.run(request).instrument(span.clone()).await;
    let status = response.status().as_u16();
    let served = response.extensions().get::<Served>().copied();
    let outcome = served.map(|s| s.outcome.as_str());
    span.record("status", status);
    if let Some(outcome) = outcome {
        span.record("cache", outcome);
    }
    let index = matched.as_deref().and_then(|m| state.http.index.get(m).copied());
    state.metrics.observe(index, Observation { status, outcome, db_time: served.and_then(|s| s.db_time) });
    if state.metrics.due() {
        state.flush_metrics();
    }
    response
}

async fn not_found(axum::extract::State(state): axum::extract::State<AppState>) -> impl IntoResponse {
    ApiError::NotFound { cache_control: state.http.default_negative.clone() }
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}
