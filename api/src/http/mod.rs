//! The HTTP surface: one [`app`] used by the local server, by Lambda and by tests.
//!
//! Route groups live in their own modules, each exposing `router()`; they are merged here.
//! Every `/v1` handler goes through [`respond::serve`], which applies the route's policy: cache
//! lookup and coalescing, `Cache-Control`, ETag/304, compression, tags and timing headers.

pub mod endpoint;
pub mod error;
mod formations;
mod lines;
mod meta;
mod operations;
pub mod respond;
mod sightings;

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::response::IntoResponse;
use cache_policy::{Policy, Route};
use http::{HeaderName, HeaderValue};

use crate::cache::LocalCache;
use crate::calendar::ServiceCalendar;
use crate::store::Db;

pub use error::ApiError;

/// Precomputed header values of one route, so the hot path formats nothing.
#[derive(Debug)]
pub struct RouteHeaders {
    /// The policy route.
    pub route: &'static Route,
    /// `Cache-Control` of a `200`.
    pub cache_control: HeaderValue,
    /// `Cache-Control` of a `400`/`404`.
    pub negative: HeaderValue,
}

/// Everything a request handler needs; cheap to clone (all shared).
#[derive(Debug, Clone)]
pub struct AppState {
    /// The database.
    pub store: Db,
    /// The in-process response cache and change-feed follower.
    pub cache: Arc<LocalCache>,
    /// Per-request settings.
    pub http: Arc<HttpSettings>,
}

/// Settings and precomputed values of the HTTP layer.
#[derive(Debug)]
pub struct HttpSettings {
    /// The validated cache policy.
    pub policy: &'static Policy,
    /// Service day rules, for `today`.
    pub calendar: ServiceCalendar,
    /// Name of the header carrying cache tags.
    pub tag_header: HeaderName,
    /// Header values per route, in policy order.
    pub routes: Vec<RouteHeaders>,
    /// Index into `routes` by path template (axum's `MatchedPath`).
    pub index: HashMap<&'static str, usize>,
    /// Negative caching of unknown paths.
    pub default_negative: HeaderValue,
}

impl HttpSettings {
    /// Precomputes the header values of every route.
    pub fn new(policy: &'static Policy, calendar: ServiceCalendar, tag_header: HeaderName) -> Self {
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
            policy,
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
    pub fn new(store: Db, cache: LocalCache, http: HttpSettings) -> Self {
        Self { store, cache: Arc::new(cache), http: Arc::new(http) }
    }
}

/// The application: every route, the JSON 404 and 405 answers.
pub fn app(state: AppState) -> Router {
    Router::new()
        .merge(lines::router())
        .merge(formations::router())
        .merge(operations::router())
        .merge(sightings::router())
        .merge(meta::router())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
}

async fn not_found(axum::extract::State(state): axum::extract::State<AppState>) -> impl IntoResponse {
    ApiError::NotFound { cache_control: state.http.default_negative.clone() }
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}
