//! [`Learner`]: the paths this instance answered for the edge, tallied and flushed to the
//! database so the warmer can warm what is actually hot.
//!
//! Every request that reaches the API came from an edge that did not hold the answer (or was
//! refreshing it), so what the API answers is an exact record of what the edge holds. A request
//! carrying [`WARM_HEADER`] with the warmer's secret (`WARM_SECRET`) is the warmer's own fetch and
//! is not counted: the learned set must not feed on itself. The edge forwards the header from
//! anyone, so its value, not its presence, tells the warmer: a viewer cannot opt out of the count.
//! Each path is counted with whether its answer exists (a `404` does not), which ranks it.
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

/// Path → (fetches, latest fetch, whether the latest answer exists), since the last flush.
type Tally = HashMap<Box<str>, (i64, DateTime<Utc>, bool)>;

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
    /// The value of [`WARM_HEADER`] that marks the warmer's fetches (`None`: none does).
    warm_secret: Option<Box<[u8]>>,
}

impl Learner {
    /// A learner flushing at most once per `interval`, counting at most `max_paths` paths per
    /// flush; either zero turns learning off. Requests whose [`WARM_HEADER`] is `warm_secret` are
    /// the warmer's.
    pub(crate) fn new(interval: Duration, max_paths: usize, warm_secret: Option<&str>) -> Self {
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
            warm_secret: warm_secret.filter(|s| !s.is_empty()).map(|s| s.as_bytes().into()),
        }
    }

    /// Whether a request whose [`WARM_HEADER`] is `value` is the warmer's own fetch: only with the
    /// warmer's secret, compared in constant time (the answer must not tell a viewer how much of a
    /// guess was right).
    pub(crate) fn is_warmers(&self, value: Option<&http::HeaderValue>) -> bool {
        let (Some(secret), Some(value)) = (&self.warm_secret, value) else { return false };
        let value = value.as_bytes();
        value.len() == secret.len() && value.iter().zip(secret.iter()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
    }

    /// Counts one answer to the edge for `path` (path and query as asked); `found`: it was an
    /// answer that exists (not a `404`).
    pub(crate) fn record(&self, path: &str, found: bool) {
        if !self.enabled {
            return;
        }
        let now = Utc::now();
        let Ok(mut tally) = self.tally.lock() else { return };
        if let Some((fetches, last, exists)) = tally.get_mut(path) {
            *fetches += 1;
            *last = now;
            *exists = found;
        } else if tally.len() < self.max_paths {
            tally.insert(path.into(), (1, now, found));
        } else if let Some(missing) =
            found.then(|| tally.iter().find(|(_, (_, _, exists))| !exists).map(|(p, _)| p.clone())).flatten()
        {
            // Full: a page that exists takes the place of one that does not, so junk ids that
            // arrive first cannot keep the pages that exist from being counted.
            tally.remove(&missing);
            tally.insert(path.into(), (1, now, found));
            self.dropped.fetch_add(1, Ordering::Relaxed);
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
                .map(|(path, (fetches, last_fetched_at, found))| LearnedPath {
                    path: path.into(),
                    fetches,
                    last_fetched_at,
                    found,
                })
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
                    tracing::warn!(paths = tally.len(), error = %plumbing::error_chain(&err), "could not flush the learned paths: dropped");
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
        let learner = Learner::new(Duration::from_secs(60), 2, None);
        for path in ["/v1/lines", "/v1/formations/10701F", "/v1/lines", "/v1/formations"] {
            learner.record(path, true);
        }
        assert_eq!(counts(&learner), [("/v1/formations/10701F".to_owned(), 1), ("/v1/lines".to_owned(), 2)]);
        assert_eq!(learner.losses(), (1, 0), "the third distinct path is dropped, not counted");
        learner.record("/v1/formations", true);
        assert_eq!(counts(&learner), [("/v1/formations".to_owned(), 1)], "a flush starts a new tally");
    }

    #[test]
    fn a_full_tally_gives_a_found_page_the_place_of_a_missing_one() {
        let learner = Learner::new(Duration::from_secs(60), 2, None);
        learner.record("/v1/formations/JUNK1", false);
        learner.record("/v1/formations/JUNK2", false);
        learner.record("/v1/formations/JUNK3", false);
        learner.record("/v1/lines", true);
        let kept = counts(&learner);
        assert!(kept.iter().any(|(p, _)| p == "/v1/lines"), "{kept:?}");
        assert_eq!(kept.len(), 2);
        // Pages that exist are never displaced by one another's latecomers, nor by junk.
        learner.record("/v1/lines", true);
        learner.record("/v1/stations", true);
        learner.record("/v1/formations/JUNK4", false);
        assert_eq!(counts(&learner), [("/v1/lines".to_owned(), 1), ("/v1/stations".to_owned(), 1)]);
    }

    #[test]
    fn only_the_warmers_secret_marks_a_fetch_as_the_warmers() {
        let header = |v: &str| http::HeaderValue::from_str(v).unwrap();
        let learner = Learner::new(Duration::from_secs(60), 10, Some("s3cret-value"));
        assert!(learner.is_warmers(Some(&header("s3cret-value"))));
        for forged in ["1", "s3cret-valuf", "s3cret-value2", ""] {
            assert!(!learner.is_warmers(Some(&header(forged))), "{forged}");
        }
        assert!(!learner.is_warmers(None));
        let without = Learner::new(Duration::from_secs(60), 10, None);
        assert!(!without.is_warmers(Some(&header("1"))), "no secret: every fetch is a viewer's");
    }

    #[test]
    fn no_flush_is_due_before_the_interval_or_with_learning_off() {
        let learner = Learner::new(Duration::from_secs(60), 10, None);
        learner.record("/v1/lines", true);
        assert!(!learner.due(), "a new instance flushes an interval after it started, not at its first request");
        assert!(!learner.claim());
        let off = Learner::new(Duration::ZERO, 10, None);
        off.record("/v1/lines", true);
        assert!(!off.due() && !off.claim());
        assert!(off.tally.lock().unwrap().is_empty());
    }
}
