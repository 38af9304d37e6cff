//! A circuit breaker for loads: once the database was found unavailable, loads fail fast for a
//! short while instead of each waiting out the acquire timeout.

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
}
