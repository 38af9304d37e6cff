//! Circuit breakers for loads: once the database was found unavailable, loads fail fast for a
//! short while instead of each waiting out the acquire or statement timeout.
//!
//! Two scopes, because two kinds of failure say different things. A database that cannot be
//! reached (refused or lost connections, a refused login, a silent connection) fails every read:
//! the instance's breaker opens and every route fails fast. A statement that ran out of time (a
//! slow plan, a lock on one table) says only that this route's reads are slow: its route's breaker
//! opens, and the other routes keep answering. When every route times out (a starved database),
//! every route's breaker opens in turn: each route costs one statement timeout per
//! [`BREAKER_OPEN`], and its readers get stale copies or fast `503`s meanwhile.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How long loads fail fast after the database was found unavailable (also the `Retry-After`).
pub(crate) const BREAKER_OPEN: Duration = Duration::from_secs(1);

/// Open or closed; one atomic, so checking it on every miss costs nothing.
#[derive(Debug)]
pub(crate) struct Breaker {
    /// Reference point for `open_until_ms`.
    epoch: Instant,
    /// Milliseconds since `epoch` until which loads fail fast.
    open_until_ms: AtomicU64,
}

impl Breaker {
    pub(crate) fn new() -> Self {
        Self { epoch: Instant::now(), open_until_ms: AtomicU64::new(0) }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Whether loads currently fail fast.
    pub(crate) fn is_open(&self) -> bool {
        self.now_ms() < self.open_until_ms.load(Ordering::Relaxed)
    }

    /// The database was found unavailable: open for [`BREAKER_OPEN`].
    pub(crate) fn trip(&self) {
        let until = self.now_ms() + u64::try_from(BREAKER_OPEN.as_millis()).unwrap_or(1_000);
        self.open_until_ms.store(until, Ordering::Relaxed);
    }
}

/// The breakers of each route's reads (by route name), beside the instance's.
#[derive(Debug, Default)]
pub(crate) struct RouteBreakers {
    /// See the module documentation for why a blocking mutex: held for one lookup, on the miss
    /// path only.
    routes: Mutex<HashMap<Box<str>, Instant>>,
}

impl RouteBreakers {
    /// Whether `route`'s loads fail fast now.
    pub(crate) fn is_open(&self, route: &str) -> bool {
        let routes = self.routes.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        routes.get(route).is_some_and(|until| Instant::now() < *until)
    }

    /// `route`'s reads ran out of time: its loads fail fast for [`BREAKER_OPEN`].
    pub(crate) fn trip(&self, route: &str) {
        let mut routes = self.routes.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        routes.insert(route.into(), Instant::now() + BREAKER_OPEN);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trips_open_and_starts_closed() {
        let breaker = Breaker::new();
        assert!(!breaker.is_open());
        breaker.trip();
        assert!(breaker.is_open());
    }

    #[test]
    fn a_routes_breaker_opens_for_that_route_alone() {
        let routes = RouteBreakers::default();
        routes.trip("station_sightings");
        assert!(routes.is_open("station_sightings"));
        assert!(!routes.is_open("lines"));
    }
}
