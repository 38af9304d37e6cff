//! Faults on a seeded random schedule, one at a time with recovery gaps between them, every kind
//! once per round in a shuffled order.

use std::time::Duration;

/// A fault the soak provokes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// SIGKILL of the warmer (mid-tick: most of a tick is its settle wait), restarted after a pause.
    WarmerKill,
    /// The warmer SIGSTOPped for a while.
    WarmerStop,
    /// Idle instances kept frozen for a while (thawed with a feed position seconds old).
    InstanceFreeze,
    /// `pg_ctlcluster … restart -m fast`.
    PostgresRestart,
    /// PgBouncer killed and started again.
    PgbouncerRestart,
    /// `LOCK TABLE cache_changes IN ACCESS EXCLUSIVE MODE`, held.
    FeedLock,
    /// The proxy in front of PostgreSQL for some instances black-holes every connection.
    BlackHole,
    /// The edge's purge endpoint answers `503`.
    PurgeDown,
    /// A new build id under load.
    Deploy,
}

pub const ALL: [Kind; 9] = [
    Kind::WarmerKill,
    Kind::WarmerStop,
    Kind::InstanceFreeze,
    Kind::PostgresRestart,
    Kind::PgbouncerRestart,
    Kind::FeedLock,
    Kind::BlackHole,
    Kind::PurgeDown,
    Kind::Deploy,
];

impl Kind {
    /// Whether edge deadlines are pushed past this fault: it stops the invalidation path (the
    /// warmer, the database or the feed it claims from, the invalidation endpoint).
    pub fn stops_invalidation(self) -> bool {
        matches!(self, Self::WarmerKill | Self::WarmerStop | Self::PostgresRestart | Self::FeedLock | Self::PurgeDown)
    }

    /// Whether the database is unavailable to (some) instances: stale answers and `503`s allowed.
    /// A lock on the change feed is one too: writers wait behind it holding the locks they took,
    /// and a `TRUNCATE` among them holds its table's, so reads of that table wait as long.
    pub fn database_unavailable(self) -> bool {
        matches!(self, Self::PostgresRestart | Self::PgbouncerRestart | Self::BlackHole | Self::FeedLock)
    }
}

/// One planned fault.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Planned {
    pub kind: Kind,
    /// From the start of the soak.
    pub at: Duration,
    /// How long it lasts (for kills and restarts: the pause before the restart).
    pub length: Duration,
}

/// Faults from `warmup` to `duration - cooldown`: gaps of 3–7 s between them.
pub fn schedule(seed: u64, duration: Duration, warmup: Duration, cooldown: Duration, kinds: &[Kind]) -> Vec<Planned> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut planned = Vec::new();
    let mut at = warmup;
    let end = duration.saturating_sub(cooldown);
    let mut round: Vec<Kind> = Vec::new();
    if kinds.is_empty() {
        return planned;
    }
    loop {
        if round.is_empty() {
            round = kinds.to_vec();
            rng.shuffle(&mut round);
        }
        let kind = round.pop().unwrap_or(Kind::Deploy);
        let length = Duration::from_millis(match kind {
            Kind::WarmerKill | Kind::PgbouncerRestart => rng.u64(200..1500),
            Kind::WarmerStop | Kind::PurgeDown => rng.u64(2000..8000),
            Kind::InstanceFreeze => rng.u64(2000..10_000),
            Kind::FeedLock | Kind::BlackHole => rng.u64(2000..6000),
            Kind::PostgresRestart | Kind::Deploy => 0,
        });
        if at + length > end {
            break;
        }
        planned.push(Planned { kind, at, length });
        // Restarts take a moment of their own.
        at += length
            + Duration::from_millis(rng.u64(3000..7000))
            + Duration::from_secs(u64::from(kind == Kind::PostgresRestart));
    }
    planned
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_gives_one_schedule_with_every_kind_each_round() {
        let a = schedule(7, Duration::from_secs(600), Duration::from_secs(10), Duration::from_secs(15), &ALL);
        let b = schedule(7, Duration::from_secs(600), Duration::from_secs(10), Duration::from_secs(15), &ALL);
        assert_eq!(format!("{a:?}"), format!("{b:?}"));
        for kind in ALL {
            assert!(a.iter().filter(|p| p.kind == kind).count() >= 5, "{kind:?} under 5 times in 10 minutes");
        }
        assert!(a.windows(2).all(|w| w[0].at + w[0].length < w[1].at), "faults overlap");
        assert!(a.last().is_some_and(|p| p.at + p.length <= Duration::from_secs(585)));
        let short = schedule(1, Duration::from_secs(90), Duration::from_secs(8), Duration::from_secs(12), &ALL);
        assert!(short.len() >= 6, "a short run provokes few faults: {short:?}");
    }
}
