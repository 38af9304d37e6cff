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
    /// Every connection through the proxy gets each answer late, each by its own delay of
    /// 0.5–8 s (`param` seeds the draw): slow loads, some past the statement timeout.
    SlowLinks,
    /// `LOCK TABLE` sightings (`param` 0) or formations (1) `IN ACCESS EXCLUSIVE MODE`, held for
    /// 1–4 s, as a migration or an import takes it: loads of that table wait.
    TableLock,
    /// Another client's burst of expensive queries, one per core and more: a starved database.
    CpuBurst,
    /// The purge endpoint takes requests and answers nothing, or answers seconds late.
    PurgeStall,
    /// The password of the role the secrets name changes in PostgreSQL, and the secrets (moto)
    /// follow `length` later, as RDS rotates: one user (`param` 0) or alternating users (1).
    Rotation,
}

pub const ALL: [Kind; 14] = [
    Kind::WarmerKill,
    Kind::WarmerStop,
    Kind::InstanceFreeze,
    Kind::PostgresRestart,
    Kind::PgbouncerRestart,
    Kind::FeedLock,
    Kind::BlackHole,
    Kind::PurgeDown,
    Kind::Deploy,
    Kind::SlowLinks,
    Kind::TableLock,
    Kind::CpuBurst,
    Kind::PurgeStall,
    Kind::Rotation,
];

impl Kind {
    /// Whether edge deadlines are pushed past this fault: it stops the invalidation path (the
    /// warmer, the database or the feed it claims from, the invalidation endpoint). A starved
    /// database slows the warmer's every statement, and a rotation refuses its logins until it
    /// reads the secret again.
    pub fn stops_invalidation(self) -> bool {
        matches!(
            self,
            Self::WarmerKill
                | Self::WarmerStop
                | Self::PostgresRestart
                | Self::FeedLock
                | Self::PurgeDown
                | Self::PurgeStall
                | Self::CpuBurst
                | Self::Rotation
        )
    }

    /// Whether the database is unavailable to (some) instances: stale answers and `503`s allowed.
    /// A lock on the change feed is one too: writers wait behind it holding the locks they took,
    /// and a `TRUNCATE` among them holds its table's, so reads of that table wait as long. So is
    /// slowness beyond the acquire or statement timeouts (slow links, a table lock queued behind
    /// a writer, a starved database), and a rotation for the instances on the secret until they
    /// read it again.
    pub fn database_unavailable(self) -> bool {
        matches!(
            self,
            Self::PostgresRestart
                | Self::PgbouncerRestart
                | Self::BlackHole
                | Self::FeedLock
                | Self::SlowLinks
                | Self::TableLock
                | Self::CpuBurst
                | Self::Rotation
        )
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
    /// What the kind says it means (a delay, a table, a strategy); 0 when it means nothing.
    pub param: u64,
}

/// How long after the secret changed a rotation's instances have all read it again: the store
/// reads it on a refused login, at most once per 10 s while it keeps finding the same.
pub const ROTATION_SETTLES: Duration = Duration::from_secs(12);

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
            Kind::WarmerStop | Kind::PurgeDown | Kind::PurgeStall | Kind::SlowLinks => rng.u64(2000..8000),
            Kind::InstanceFreeze => rng.u64(2000..10_000),
            Kind::FeedLock | Kind::BlackHole | Kind::CpuBurst => rng.u64(2000..6000),
            Kind::TableLock => rng.u64(1000..4000),
            Kind::Rotation => rng.u64(500..3000),
            Kind::PostgresRestart | Kind::Deploy => 0,
        });
        let param = match kind {
            Kind::SlowLinks => rng.u64(500..8000),
            Kind::TableLock | Kind::Rotation => rng.u64(0..2),
            _ => 0,
        };
        // A rotation lasts until the instances on the secret have read it again.
        let lasts = length + if kind == Kind::Rotation { ROTATION_SETTLES } else { Duration::ZERO };
        if at + lasts > end {
            break;
        }
        planned.push(Planned { kind, at, length, param });
        // Restarts take a moment of their own.
        at += lasts
            + Duration::from_millis(rng.u64(3000..7000))
            + Duration::from_secs(u64::from(kind == Kind::PostgresRestart));
    }
    planned
}

/// The soak's quiet start (the fleet and the warmer settle before the first fault) and end (what
/// the last fault left has time to show before the viewers stop).
pub const LEAD_IN: Duration = Duration::from_secs(8);
/// See [`LEAD_IN`].
pub const LEAD_OUT: Duration = Duration::from_secs(12);

#[cfg(test)]
mod tests {
    use super::*;

    /// The test command's soak (`scripts/test.sh`: seed 1, 160 s): long enough for a fault of
    /// every kind.
    const SHORT_RUN: Duration = Duration::from_secs(160);

    #[test]
    fn a_seed_gives_one_schedule_with_every_kind_each_round() {
        let a = schedule(7, Duration::from_secs(600), Duration::from_secs(10), Duration::from_secs(15), &ALL);
        let b = schedule(7, Duration::from_secs(600), Duration::from_secs(10), Duration::from_secs(15), &ALL);
        assert_eq!(format!("{a:?}"), format!("{b:?}"));
        // The long run (bench/run.sh: seed 1, fifteen minutes) provokes every kind five times.
        let long = schedule(1, Duration::from_secs(900), LEAD_IN, LEAD_OUT, &ALL);
        for kind in ALL {
            assert!(long.iter().filter(|p| p.kind == kind).count() >= 5, "{kind:?} under 5 times in 15 minutes");
        }
        let lasts = |p: &Planned| p.length + if p.kind == Kind::Rotation { ROTATION_SETTLES } else { Duration::ZERO };
        assert!(a.windows(2).all(|w| w[0].at + lasts(&w[0]) < w[1].at), "faults overlap");
        assert!(a.last().is_some_and(|p| p.at + lasts(p) <= Duration::from_secs(585)));
        // The test command's run (scripts/test.sh: seed 1, SHORT_RUN) provokes every kind.
        let short = schedule(1, SHORT_RUN, LEAD_IN, LEAD_OUT, &ALL);
        for kind in ALL {
            assert!(short.iter().any(|p| p.kind == kind), "{kind:?} missing from the short run: {short:?}");
        }
    }
}
