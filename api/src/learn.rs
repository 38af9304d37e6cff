//! [`Learner`]: the paths this instance answered for the edge, tallied and flushed to the
//! database so the warmer can warm what is actually hot.
//!
//! Every request that reaches the API came from an edge that did not hold the answer (or was
//! refreshing it), so what the API answers is an exact record of what the edge holds. A request
//! carrying [`WARM_HEADER`] is the warmer's own fetch and is not counted: the learned set must not
//! feed on itself.
//!
//! The tally is a capped map: at most `max_paths` distinct paths between two flushes, the rest
//! dropped (and counted). At most once per `interval`, the request that finds the tally due
//! spawns its flush, one statement, off every request's path; a flush that fails is dropped, not
//! retried: the next interval's tally replaces it, and a lost minute only delays what is learned.
//! An idle (or frozen Lambda) instance writes nothing.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use store::Db;
use store::learned::LearnedPath;

pub use cache_policy::WARM_HEADER;

/// Path → (fetches, latest fetch), since the last flush.
type Tally = HashMap<Box<str>, (i64, DateTime<Utc>)>;

/// One instance's tally of the paths it answered since the last flush.
#[derive(Debug)]
pub(crate) struct Learner {
    /// Off when the interval or the cap is zero.
    enabled: bool,
    /// Most distinct paths between two flushes.
    max_paths: usize,
    /// Least time between two flushes, in milliseconds.
    interval_ms: u64,
    /// When the instance started: the clock of `window_ms`.
    started: Instant,
    /// When the current window started, in milliseconds after `started`.
    window_ms: AtomicU64,
    /// Whether a flush is writing now (one at a time).
    flushing: AtomicBool,
    /// Path → (fetches, latest fetch).
    tally: Mutex<Tally>,
    /// Paths not counted because the tally was full, since the instance started.
    dropped: AtomicU64,
    /// Flushes that failed (their tally is dropped), since the instance started.
    failed: AtomicU64,
}

impl Learner {
    /// A learner flushing at most once per `interval`, counting at most `max_paths` paths per
    /// flush; either zero turns learning off.
    pub(crate) fn new(interval: Duration, max_paths: usize) -> Self {
        Self {
            enabled: !interval.is_zero() && max_paths > 0,
            max_paths,
            interval_ms: u64::try_from(interval.as_millis()).unwrap_or(u64::MAX),
            started: Instant::now(),
            window_ms: AtomicU64::new(0),
            flushing: AtomicBool::new(false),
            tally: Mutex::new(HashMap::new()),
            dropped: AtomicU64::new(0),
            failed: AtomicU64::new(0),
        }
    }

    /// Counts one answer to the edge for `path` (path and query as asked).
    pub(crate) fn record(&self, path: &str) {
        if !self.enabled {
            return;
        }
        let now = Utc::now();
        let Ok(mut tally) = self.tally.lock() else { return };
        if let Some((fetches, last)) = tally.get_mut(path) {
            *fetches += 1;
            *last = now;
        } else if tally.len() < self.max_paths {
            tally.insert(path.into(), (1, now));
        } else {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Whether a flush should start now: learning is on, the interval has passed since the last
    /// one started, and none is writing.
    pub(crate) fn due(&self) -> bool {
        self.enabled
            && !self.flushing.load(Ordering::Relaxed)
            && self.now_ms().saturating_sub(self.window_ms.load(Ordering::Relaxed)) >= self.interval_ms
    }

    /// Starts a new window if a flush is due: true for exactly one caller per interval, however
    /// many requests find it due at once, so at most one flush is spawned per interval.
    pub(crate) fn claim(&self) -> bool {
        if !self.due() {
            return false;
        }
        let start = self.window_ms.load(Ordering::Relaxed);
        let now = self.now_ms().max(start + 1);
        self.window_ms.compare_exchange(start, now, Ordering::AcqRel, Ordering::Relaxed).is_ok()
    }

    /// Takes the tally.
    fn take(&self) -> Option<Vec<LearnedPath>> {
        let taken = std::mem::take(&mut *self.tally.lock().ok()?);
        Some(
            taken
                .into_iter()
                .map(|(path, (fetches, last_fetched_at))| LearnedPath { path: path.into(), fetches, last_fetched_at })
                .collect(),
        )
    }

    /// Writes the tally to the database in one statement; on failure it is dropped. At most one
    /// flush writes at a time. The interval is the caller's to keep ([`Self::claim`]); at shutdown
    /// the last tally is written whenever it is.
    pub(crate) async fn flush(&self, db: &Db) {
        if self.flushing.swap(true, Ordering::AcqRel) {
            return;
        }
        if let Some(tally) = self.take().filter(|t| !t.is_empty()) {
            match db.record_learned(&tally).await {
                Ok(()) => {
                    let (dropped, failed) = self.losses();
                    tracing::debug!(paths = tally.len(), dropped, failed, "learned paths flushed");
                }
                Err(err) => {
                    self.failed.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(paths = tally.len(), error = %err, "could not flush the learned paths: dropped");
                }
            }
        }
        self.flushing.store(false, Ordering::Release);
    }

    /// (paths dropped for a full tally, flushes that failed) since the instance started.
    pub(crate) fn losses(&self) -> (u64, u64) {
        (self.dropped.load(Ordering::Relaxed), self.failed.load(Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(learner: &Learner) -> Vec<(String, i64)> {
        let mut paths: Vec<_> = learner.take().unwrap().into_iter().map(|p| (p.path, p.fetches)).collect();
        paths.sort();
        paths
    }

    #[test]
    fn a_tally_counts_each_path_and_is_capped() {
        let learner = Learner::new(Duration::from_secs(60), 2);
        for path in ["/v1/lines", "/v1/formations/10701F", "/v1/lines", "/v1/formations"] {
            learner.record(path);
        }
        assert_eq!(counts(&learner), [("/v1/formations/10701F".to_owned(), 1), ("/v1/lines".to_owned(), 2)]);
        assert_eq!(learner.losses(), (1, 0), "the third distinct path is dropped, not counted");
        learner.record("/v1/formations");
        assert_eq!(counts(&learner), [("/v1/formations".to_owned(), 1)], "a flush starts a new tally");
    }

    #[test]
    fn no_flush_is_due_before_the_interval_or_with_learning_off() {
        let learner = Learner::new(Duration::from_secs(60), 10);
        learner.record("/v1/lines");
        assert!(!learner.due(), "a new instance flushes an interval after it started, not at its first request");
        assert!(!learner.claim());
        let off = Learner::new(Duration::ZERO, 10);
        off.record("/v1/lines");
        assert!(!off.due() && !off.claim());
        assert!(off.tally.lock().unwrap().is_empty());
    }
}
