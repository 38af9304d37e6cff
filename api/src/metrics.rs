//! The API's metrics: counted per route with atomics on the request path, written as CloudWatch
//! Embedded Metric Format lines at most once per interval (and at shutdown), so the hot path pays a
//! few relaxed atomic additions and nothing else.
//!
//! Every line carries the `FunctionName` dimension. Per route (dimension `Route`, and summed over
//! routes): `Hits`, `Misses`, `Stale` (the
//! `x-local-cache` outcomes), `Status2xx` … `Status5xx`, `DbTimeMs` (mean database time of the
//! window's misses). Per instance: `FeedPollFailures` and `FeedLagMs` (how long ago the last
//! successful change poll started).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use plumbing::emf::{Record, Unit};

use crate::cache::Outcome;

/// Every metric name the API emits (the template's alarms may only use these).
pub const NAMES: &[&str] = &[
    "Hits",
    "Misses",
    "Stale",
    "Status2xx",
    "Status3xx",
    "Status4xx",
    "Status5xx",
    "DbTimeMs",
    "FeedPollFailures",
    "FeedLagMs",
];

/// The counters of one route.
#[derive(Debug, Default)]
struct RouteCounters {
    hits: AtomicU64,
    misses: AtomicU64,
    stale: AtomicU64,
    /// Responses by status class: 2xx, 3xx, 4xx, 5xx.
    status: [AtomicU64; 4],
    /// Database time of the misses, in microseconds.
    db_micros: AtomicU64,
}

/// The aggregator of one instance.
#[derive(Debug)]
pub(crate) struct Metrics {
    /// Whether lines are written at all (on Lambda by default; `METRICS=off` locally).
    enabled: bool,
    /// Route names, in policy order, then `other` for unmatched paths and non-policy routes.
    names: Vec<String>,
    /// The `FunctionName` dimension.
    function: String,
    /// Counters, parallel to `names`.
    routes: Vec<RouteCounters>,
    /// Minimum time between two flushes, in milliseconds.
    interval_ms: u64,
    /// Reference point of `window_ms`.
    epoch: Instant,
    /// Start of the window in milliseconds since `epoch`. A flush claims the window by swapping
    /// this forward (compare-and-swap), so two requests never write the same window twice, and
    /// checking whether one is due is a single atomic load.
    window_ms: AtomicU64,
}

impl Metrics {
    pub(crate) fn new(enabled: bool, route_names: impl IntoIterator<Item = String>, interval: Duration) -> Self {
        let mut names: Vec<String> = route_names.into_iter().collect();
        names.push("other".into());
        let routes = names.iter().map(|_| RouteCounters::default()).collect();
        let interval_ms = u64::try_from(interval.as_millis()).unwrap_or(u64::MAX);
        let function = plumbing::emf::function_name();
        Self { enabled, names, function, routes, interval_ms, epoch: Instant::now(), window_ms: AtomicU64::new(0) }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// The counters of route `index` (out of range, or none: `other`).
    fn route(&self, index: Option<usize>) -> &RouteCounters {
        &self.routes[index.unwrap_or(usize::MAX).min(self.routes.len() - 1)]
    }

    /// Counts one response of route `index`, by its status.
    pub(crate) fn observe(&self, index: Option<usize>, status: u16) {
        if !self.enabled {
            return;
        }
        let class = usize::from(status / 100).saturating_sub(2).min(3);
        self.route(index).status[class].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts how the in-process cache answered a request of policy route `index`, and the
    /// database time of a miss. Called by the route's handler, which holds both as values: the
    /// layer that counts statuses would otherwise read them back out of the response.
    pub(crate) fn served(&self, index: usize, outcome: Outcome, db_time: Duration) {
        if !self.enabled {
            return;
        }
        let counters = self.route(Some(index));
        match outcome {
            Outcome::Hit => counters.hits.fetch_add(1, Ordering::Relaxed),
            Outcome::Stale => counters.stale.fetch_add(1, Ordering::Relaxed),
            Outcome::Miss => {
                let micros = u64::try_from(db_time.as_micros()).unwrap_or(u64::MAX);
                counters.db_micros.fetch_add(micros, Ordering::Relaxed);
                counters.misses.fetch_add(1, Ordering::Relaxed)
            }
        };
    }

    /// Whether a flush is due.
    pub(crate) fn due(&self) -> bool {
        self.enabled && self.now_ms().saturating_sub(self.window_ms.load(Ordering::Relaxed)) >= self.interval_ms
    }

    /// Writes the window's lines (one per route that served anything, one for the instance) and
    /// starts a new window, unless another caller just did. `feed` is (poll failures in the
    /// window, time since the last successful poll started).
    pub(crate) fn flush(&self, feed: impl FnOnce() -> (u64, Option<Duration>)) {
        if !self.enabled {
            return;
        }
        let start = self.window_ms.load(Ordering::Relaxed);
        let now = self.now_ms().max(start + 1);
        if self.window_ms.compare_exchange(start, now, Ordering::AcqRel, Ordering::Relaxed).is_err() {
            return;
        }
        for record in self.records(feed()) {
            record.emit();
        }
    }

    /// The window's records, resetting the counters.
    fn records(&self, (poll_failures, lag): (u64, Option<Duration>)) -> Vec<Record> {
        let mut out = Vec::new();
        for (name, c) in self.names.iter().zip(&self.routes) {
            let take = |a: &AtomicU64| a.swap(0, Ordering::Relaxed);
            let (hits, misses, stale) = (take(&c.hits), take(&c.misses), take(&c.stale));
            let status: Vec<u64> = c.status.iter().map(take).collect();
            let db_micros = take(&c.db_micros);
            if status.iter().sum::<u64>() == 0 {
                continue;
            }
            let count = |v: u64| v as f64;
            let mut record = Record::new(&[&["FunctionName", "Route"], &["FunctionName"]])
                .dimension("FunctionName", self.function.clone())
                .dimension("Route", name.clone())
                .metric("Hits", Unit::Count, count(hits))
                .metric("Misses", Unit::Count, count(misses))
                .metric("Stale", Unit::Count, count(stale));
            for (metric, value) in ["Status2xx", "Status3xx", "Status4xx", "Status5xx"].into_iter().zip(status) {
                record = record.metric(metric, Unit::Count, count(value));
            }
            if misses > 0 {
                record = record.metric("DbTimeMs", Unit::Milliseconds, db_micros as f64 / 1_000.0 / misses as f64);
            }
            out.push(record);
        }
        let mut instance = Record::new(&[&["FunctionName"]]).dimension("FunctionName", self.function.clone()).metric(
            "FeedPollFailures",
            Unit::Count,
            poll_failures as f64,
        );
        if let Some(lag) = lag {
            instance = instance.metric("FeedLagMs", Unit::Milliseconds, lag.as_secs_f64() * 1_000.0);
        }
        out.push(instance);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A response of route `index` with `status`, answered by the cache as `outcome`.
    fn seen(m: &Metrics, index: Option<usize>, status: u16, outcome: Option<Outcome>) {
        m.observe(index, status);
        if let (Some(index), Some(outcome)) = (index, outcome) {
            m.served(index, outcome, Duration::from_millis(4));
        }
    }

    #[test]
    fn a_window_adds_up_to_what_was_served_and_starts_afresh() {
        let m = Metrics::new(true, ["lines".to_owned(), "formation".to_owned()], Duration::from_secs(10));
        seen(&m, Some(0), 200, Some(Outcome::Miss));
        seen(&m, Some(0), 200, Some(Outcome::Hit));
        seen(&m, Some(0), 304, Some(Outcome::Hit));
        seen(&m, Some(1), 404, Some(Outcome::Miss));
        seen(&m, None, 405, None);
        let lines: Vec<serde_json::Value> = m
            .records((2, Some(Duration::from_millis(1_500))))
            .iter()
            .map(|r| serde_json::from_str(&r.to_json(0)).unwrap())
            .collect();
        assert_eq!(lines.len(), 4, "three routes served, plus the instance line");
        assert_eq!(lines[0]["Route"], "lines");
        assert_eq!((lines[0]["Hits"].as_f64(), lines[0]["Misses"].as_f64()), (Some(2.0), Some(1.0)));
        assert_eq!((lines[0]["Status2xx"].as_f64(), lines[0]["Status3xx"].as_f64()), (Some(2.0), Some(1.0)));
        assert_eq!(lines[0]["DbTimeMs"].as_f64(), Some(4.0));
        assert_eq!(lines[1]["Status4xx"].as_f64(), Some(1.0));
        assert_eq!(lines[2]["Route"], "other");
        assert_eq!(lines[3]["FeedPollFailures"].as_f64(), Some(2.0));
        assert_eq!(lines[3]["FeedLagMs"].as_f64(), Some(1_500.0));
        for line in &lines {
            for metric in line["_aws"]["CloudWatchMetrics"][0]["Metrics"].as_array().unwrap() {
                assert!(NAMES.contains(&metric["Name"].as_str().unwrap()), "{metric}");
            }
        }
        // The counters were taken: the next window has only the instance line.
        assert_eq!(m.records((0, None)).len(), 1);
    }

    #[test]
    fn disabled_metrics_cost_nothing_and_say_nothing() {
        let m = Metrics::new(false, ["lines".to_owned()], Duration::ZERO);
        seen(&m, Some(0), 200, Some(Outcome::Hit));
        assert!(!m.due());
    }
}
