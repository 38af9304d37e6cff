//! What path invalidations cost, and the policy once the month's path budget is spent.
//!
//! CloudFront bills invalidation paths per calendar month: the first 1,000 are free, each one
//! after that costs $0.005 (a wildcard counts as one path, a cache tag as one item). The warmer
//! keeps a budget of paths per month (by default the free 1,000).
//!
//! **Over the budget, edgerail keeps invalidating precisely, less often.** Batches are never
//! coarsened into a site-wide wildcard (that would be a whole-site flush and an origin spike on
//! every tick); instead the warmer sends at most one batch per
//! [`BudgetPolicy::over_budget_every`], and the changes that arrive meanwhile wait as pending and
//! are coalesced into that batch. A tag that changes every minute then costs one path per interval
//! instead of one per minute. The price is extra staleness at the edge of up to that interval
//! (in-process caches are still evicted within seconds, so the origin answers fresh data).

use std::time::Duration;

/// Paths CloudFront invalidates free of charge each month.
pub const FREE_PATHS_PER_MONTH: u64 = 1_000;

/// Price of each path beyond the free ones, in US dollars.
pub const PRICE_PER_PATH_USD: f64 = 0.005;

/// How many of `items` paths, sent after `used` paths this month, are billed.
pub fn billable_paths(used: u64, items: u64) -> u64 {
    (used + items).saturating_sub(FREE_PATHS_PER_MONTH) - used.saturating_sub(FREE_PATHS_PER_MONTH)
}

/// The price in US dollars of sending `items` paths after `used` this month.
pub fn batch_cost_usd(used: u64, items: u64) -> f64 {
    billable_paths(used, items) as f64 * PRICE_PER_PATH_USD
}

/// When the warmer may send a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BudgetPolicy {
    /// Paths per calendar month before batches are coalesced.
    pub budget: u64,
    /// Over the budget, at most one batch per this interval.
    pub over_budget_every: Duration,
}

impl BudgetPolicy {
    /// Whether a batch may be sent now, with `used` paths sent this month and the last batch sent
    /// `since_last` ago (`None`: none this month).
    pub fn may_send(&self, used: u64, since_last: Option<Duration>) -> bool {
        used < self.budget || since_last.is_none_or(|ago| ago >= self.over_budget_every)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::Policy;
    use crate::plan::{Context, Limits, Mode, plan};

    #[test]
    fn only_paths_beyond_the_free_tier_are_billed() {
        assert_eq!(billable_paths(0, 10), 0);
        assert_eq!(billable_paths(995, 10), 5);
        assert_eq!(billable_paths(2_000, 10), 10);
        assert!((batch_cost_usd(2_000, 10) - 0.05).abs() < 1e-9);
    }

    #[test]
    fn over_budget_batches_are_spaced() {
        let policy = BudgetPolicy { budget: 1_000, over_budget_every: Duration::from_secs(300) };
        assert!(policy.may_send(999, Some(Duration::from_secs(1))));
        assert!(!policy.may_send(1_000, Some(Duration::from_secs(299))));
        assert!(policy.may_send(1_000, Some(Duration::from_secs(300))));
        assert!(policy.may_send(5_000, None));
    }

    /// A month of one-minute ticks, each with a sighting of one formation (the busiest realistic
    /// feed: every tick has changes), planned and sent as the warmer does.
    #[test]
    fn a_month_of_ticks_stays_precise_and_bounded_once_the_budget_is_spent() {
        let routes = Policy::embedded().unwrap();
        let policy = BudgetPolicy { budget: 1_000, over_budget_every: Duration::from_secs(300) };
        let tick = Duration::from_secs(60);
        let ticks = 30 * 24 * 60;
        let (mut used, mut batches, mut last_sent): (u64, u64, Option<u64>) = (0, 0, None);
        let mut pending: BTreeSet<String> = BTreeSet::new();
        let mut largest = 0;
        for t in 0..ticks {
            let formation = 10_701 + (t * 7919) % 30;
            pending.extend(["sightings".to_owned(), "formations".to_owned(), format!("formation:{formation}F")]);
            let since_last = last_sent.map(|at| tick * u32::try_from(t - at).unwrap());
            if !policy.may_send(used, since_last) {
                continue;
            }
            let limits = Limits {
                budget_remaining: Some(usize::try_from(policy.budget.saturating_sub(used)).unwrap()),
                ..Limits::default()
            };
            let batch = plan(routes, &pending, Mode::Paths, &limits, &Context::default());
            assert!(!batch.items.iter().any(|i| i == "/*" || i == "/v1/*"), "tick {t}: {:?}", batch.items);
            largest = largest.max(batch.items.len());
            used += batch.items.len() as u64;
            batches += 1;
            last_sent = Some(t);
            pending.clear();
        }
        // Within budget: one batch a minute. After: one per five minutes, each still precise.
        let minutes_within = 1_000 / 3;
        assert!(batches <= minutes_within + (ticks - minutes_within) / 5 + 1, "{batches} batches");
        let cost = batch_cost_usd(0, used);
        let every_minute_cost = batch_cost_usd(0, ticks * 3);
        assert!(cost < every_minute_cost / 3.0, "coalescing saves: ${cost:.2} vs ${every_minute_cost:.2}");
        assert!(largest <= 10, "a coalesced batch stays small: {largest}");
    }
}
