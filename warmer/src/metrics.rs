//! The warmer's metrics: one CloudWatch Embedded Metric Format line per tick, written before the
//! tick's JSON summary.

use plumbing::emf::{Record, Unit};

use crate::tick::{Summary, TickFailure};

/// Every metric name the warmer emits (the template's alarms may only use these).
pub const NAMES: &[&str] = &[
    "Changes",
    "InvalidationItems",
    "InvalidationsSent",
    "Deferred",
    "PendingChanges",
    "OldestPendingAgeSeconds",
    "WarmHits",
    "WarmMisses",
    "WarmFailures",
    "WarmSkipped",
    "LearnedPaths",
    "LearnedRewarmed",
    "LearnedSkipped",
    "LearnedFailed",
    "ItemsThisMonth",
    "PathBudget",
    "TickFailedRetryable",
    "TickFailedNonRetryable",
    "DeployInvalidations",
    "LeaseHeld",
    "CalendarMismatch",
    "PathsVerified",
    "VerifiedStale",
    "Repaired",
    "RepairFailed",
    "FreshnessP50Seconds",
    "FreshnessP99Seconds",
    "FreshnessMaxSeconds",
];

/// Prints a tick's summary as one JSON line on stdout, whether the tick failed or not, after its
/// metrics line when `metrics` is on.
pub fn report(result: &Result<Summary, TickFailure>, metrics: bool) {
    let summary = match result {
        Ok(summary) => summary,
        Err(failure) => &failure.summary,
    };
    if metrics {
        record(summary).emit();
    }
    println!("{}", serde_json::to_string(summary).unwrap_or_default());
}

/// The tick's line. A failed tick counts as retryable or not, so an alarm can page on the kind an
/// operator must fix (a rejected batch, missing permission) at once, and on the other kind only
/// when it persists.
pub fn record(summary: &Summary) -> Record {
    let flag = |b: bool| if b { 1.0 } else { 0.0 };
    let count = |n: usize| n as f64;
    let failed = summary.error.is_some();
    let retryable = summary.retryable.unwrap_or(true);
    let mut record = Record::new(&[&["FunctionName"]])
        .dimension("FunctionName", plumbing::emf::function_name())
        .metric("Changes", Unit::Count, count(summary.changes))
        .metric("InvalidationItems", Unit::Count, count(summary.items))
        .metric("InvalidationsSent", Unit::Count, flag(summary.invalidation_id.is_some()))
        .metric("Deferred", Unit::Count, flag(summary.deferred))
        .metric("PendingChanges", Unit::Count, summary.pending as f64)
        .metric("OldestPendingAgeSeconds", Unit::Seconds, summary.oldest_pending_age_s.unwrap_or(0.0))
        .metric("WarmHits", Unit::Count, count(summary.warm_hits))
        .metric("WarmMisses", Unit::Count, count(summary.warm_misses))
        .metric("WarmFailures", Unit::Count, count(summary.failures))
        .metric("WarmSkipped", Unit::Count, count(summary.warm_skipped))
        .metric("LearnedPaths", Unit::Count, count(summary.learned))
        .metric("LearnedRewarmed", Unit::Count, count(summary.learned_rewarmed))
        .metric("LearnedSkipped", Unit::Count, count(summary.learned_skipped))
        .metric("LearnedFailed", Unit::Count, count(summary.learned_failed))
        .metric("TickFailedRetryable", Unit::Count, flag(failed && retryable))
        .metric("TickFailedNonRetryable", Unit::Count, flag(failed && !retryable))
        .metric("DeployInvalidations", Unit::Count, flag(summary.deploy_invalidation.is_some()))
        .metric("LeaseHeld", Unit::Count, flag(summary.lease_held.is_some()))
        .metric("CalendarMismatch", Unit::Count, flag(summary.calendar_mismatch.is_some()))
        .metric("PathsVerified", Unit::Count, count(summary.verified + summary.verified_stale))
        .metric("VerifiedStale", Unit::Count, count(summary.verified_stale))
        .metric("Repaired", Unit::Count, count(summary.repaired))
        .metric("RepairFailed", Unit::Count, count(summary.repair_failed));
    // Only a tick that measured freshness reports it: an idle tick's zero would pull averages.
    if let (Some(p50), Some(p99), Some(max)) =
        (summary.freshness_p50_s, summary.freshness_p99_s, summary.freshness_max_s)
    {
        record = record
            .metric("FreshnessP50Seconds", Unit::Seconds, p50)
            .metric("FreshnessP99Seconds", Unit::Seconds, p99)
            .metric("FreshnessMaxSeconds", Unit::Seconds, max);
    }
    if let Some(used) = summary.items_this_month {
        record = record.metric("ItemsThisMonth", Unit::Count, used as f64).metric(
            "PathBudget",
            Unit::Count,
            summary.path_budget as f64,
        );
    }
    record
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_of_a_tick_is_a_declared_name() {
        let summary = Summary {
            items_this_month: Some(10),
            freshness_p50_s: Some(4.0),
            freshness_p99_s: Some(9.0),
            freshness_max_s: Some(9.5),
            verified: 3,
            verified_stale: 2,
            repair_failed: 1,
            error: Some("x".into()),
            retryable: Some(false),
            ..Summary::default()
        };
        let line: serde_json::Value = serde_json::from_str(&record(&summary).to_json(0)).unwrap();
        let metrics = line["_aws"]["CloudWatchMetrics"][0]["Metrics"].as_array().unwrap().clone();
        assert_eq!(metrics.len(), NAMES.len());
        for metric in metrics {
            assert!(NAMES.contains(&metric["Name"].as_str().unwrap()), "{metric}");
        }
        assert_eq!(line["TickFailedNonRetryable"], 1.0);
        assert_eq!(line["TickFailedRetryable"], 0.0);
        assert_eq!((line["PathsVerified"].as_f64(), line["VerifiedStale"].as_f64()), (Some(5.0), Some(2.0)));
        assert_eq!((line["RepairFailed"].as_f64(), line["FreshnessMaxSeconds"].as_f64()), (Some(1.0), Some(9.5)));
        // A tick that measured nothing reports no freshness.
        let idle: serde_json::Value = serde_json::from_str(&record(&Summary::default()).to_json(0)).unwrap();
        assert!(idle.get("FreshnessMaxSeconds").is_none(), "{idle}");
    }
}
