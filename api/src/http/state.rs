//! [`AppState`]: everything a request handler needs, and the HTTP settings computed once at start.
//! In a file of its own so that the route groups and the router that merges them depend on it,
//! not on each other.

use std::collections::HashMap;
use std::sync::Arc;

use cache_policy::{Policy, Route};
use http::{HeaderName, HeaderValue};
use store::{Db, ServiceCalendar};

use crate::cache::LocalCache;
use crate::learn::Learner;
use crate::metrics::Metrics;

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

/// Everything a request handler needs. Cloned several times per request (by the middleware and
/// the extractors), so a clone is one reference count.
#[derive(Debug, Clone)]
pub struct AppState(Arc<Shared>);

/// What [`AppState`] shares.
#[derive(Debug)]
pub struct Shared {
    /// The database.
    pub(super) store: Db,
    /// The in-process response cache and change-feed follower.
    pub(super) cache: Arc<LocalCache>,
    /// Per-request settings.
    pub(super) http: Arc<HttpSettings>,
    /// Per-route counters, written as metrics.
    pub(super) metrics: Metrics,
    /// What this instance answered for the edge, for the warmer.
    pub(super) learner: Learner,
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
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
    /// What answers: the code's build and the settings that shape answers, reported by
    /// `/health-check`.
    pub(crate) identity: Identity,
}

/// What an instance answers with, as `/health-check` reports it: the warmer flushes the edge when
/// either part changes.
#[derive(Debug, Clone)]
pub(crate) struct Identity {
    /// The build id (a hash of the code, or BUILD_ID).
    pub(crate) build: String,
    /// A hash of the settings that shape answers (see `Config::answer_settings`).
    pub(crate) settings: String,
}

impl HttpSettings {
    /// Precomputes the header values of every route.
    pub(crate) fn new(
        policy: &'static Policy,
        calendar: ServiceCalendar,
        tag_header: HeaderName,
        identity: Identity,
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
            identity,
        }
    }
}

impl AppState {
    /// Assembles the state.
    pub(crate) fn new(store: Db, cache: LocalCache, http: HttpSettings, metrics: Metrics, learner: Learner) -> Self {
        Self(Arc::new(Shared { store, cache: Arc::new(cache), http: Arc::new(http), metrics, learner }))
    }

    /// Writes what was learned since the last flush (at shutdown, so a last window is kept).
    pub async fn flush_learned(&self) {
        self.learner.flush(&self.store).await;
    }

    /// Starts a flush of what was learned in a task of its own, when one is due (one task per
    /// interval, however many requests find it due at once).
    pub(crate) fn flush_learned_if_due(&self) {
        if self.learner.claim() {
            let state = self.clone();
            tokio::spawn(async move { state.flush_learned().await });
        }
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
