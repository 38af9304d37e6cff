//! The warmer's decisions, as functions over plain values: whether the month's budget lets a tick
//! send now, which paths of the warm set an invalidation emptied, which are due, and what to warm
//! in what order within a tick's budget. The tick reads what they need, calls them and does what
//! they say; their tests need no database, edge or CDN.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::Duration;

use cache_policy::Policy;
use cache_policy::cost::BudgetPolicy;
use cache_policy::plan::{Context, covers, route_paths};
use chrono::{DateTime, Utc};

use crate::warm::{Fetched, Learned, WarmPath};

/// What the month's path budget lets a tick do with the changes it finds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Budget {
    /// Send now. The planner coarsens the batch within collections towards `remaining` paths
    /// while some remain; `None` when no budget applies (a backend that does not bill by path),
    /// or when it is spent: then batches stay precise.
    Send {
        /// Paths left this month, when some are.
        remaining: Option<usize>,
    },
    /// Over the budget, and the last batch went out less than the over-budget interval ago: the
    /// changes stay pending and coalesce into the next batch.
    Wait,
}

/// The budget's decision, with `used` paths sent this month (`None`: the backend does not bill by
/// path) and the last batch sent `since_last` ago (`None`: none this month).
pub fn budget(policy: &BudgetPolicy, used: Option<u64>, since_last: Option<Duration>) -> Budget {
    let Some(used) = used else { return Budget::Send { remaining: None } };
    if !policy.may_send(used, since_last) {
        return Budget::Wait;
    }
    let left = policy.budget.saturating_sub(used);
    Budget::Send { remaining: (left > 0).then(|| usize::try_from(left).unwrap_or(usize::MAX)) }
}

/// Whether a path whose edge copy was last fetched from the origin at `last` (`None`: never, as
/// far as the warmer knows) is due: at 90 % of its edge TTL, so the copy never expires between
/// ticks.
pub fn is_due(edge_ttl: Duration, last: Option<DateTime<Utc>>, now: DateTime<Utc>) -> bool {
    match last {
        None => true,
        Some(at) => (now - at).to_std().unwrap_or(Duration::ZERO) >= edge_ttl.mul_f64(0.9),
    }
}

/// Whether the edge may still hold a learned path: fetched from the origin within its edge TTL,
/// by a viewer or by the warmer at `warmed`.
pub fn held(learned: &Learned, warmed: Option<DateTime<Utc>>, now: DateTime<Utc>) -> bool {
    (now - last_fetch(learned, warmed)).to_std().unwrap_or(Duration::ZERO) < learned.warm.edge_ttl
}

/// When the edge last fetched a learned path from the origin, for a viewer or for the warmer.
pub fn last_fetch(learned: &Learned, warmed: Option<DateTime<Utc>>) -> DateTime<Utc> {
    warmed.map_or(learned.seen.last_fetched_at, |w| w.max(learned.seen.last_fetched_at))
}

/// The paths of `warm` that the changed `tags` affect.
pub fn affected(policy: &Policy, tags: &BTreeSet<String>, today: &str, warm: &[WarmPath]) -> Vec<WarmPath> {
    let context = Context { today: Some(today.to_owned()) };
    let patterns: Vec<String> = tags.iter().flat_map(|tag| pages(policy, tag, &context)).collect();
    warm.iter().filter(|w| patterns.iter().any(|p| covers(p, &w.path))).cloned().collect()
}

/// The path patterns of every route's pages that `tag` covers.
fn pages<'a>(policy: &'a Policy, tag: &'a str, context: &'a Context) -> impl Iterator<Item = String> + 'a {
    policy.routes().iter().flat_map(move |route| route_paths(route, tag, context))
}

/// What a tick knows when it chooses what to warm.
#[derive(Debug, Clone, Copy)]
pub struct Situation<'a> {
    /// The warm set's floor (the `warm = true` routes, expanded).
    pub floor: &'a [WarmPath],
    /// The learned paths, the most fetched first.
    pub learned: &'a [Learned],
    /// When the warmer last fetched each path.
    pub warmed: &'a HashMap<String, DateTime<Utc>>,
    /// The tags this tick invalidated.
    pub changed: &'a BTreeSet<String>,
    /// The service day the invalidation was planned for.
    pub today: &'a str,
    /// The whole edge was invalidated (a deploy): everything it held is gone.
    pub everything_emptied: bool,
    /// Now.
    pub now: DateTime<Utc>,
    /// Most warm requests this tick.
    pub budget: usize,
}

/// What to warm this tick.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Warm {
    /// The paths to fetch, in order: what the invalidation emptied, then the floor's due paths,
    /// then the learned ones (most fetched first); each once.
    pub fetch: Vec<WarmPath>,
    /// How many of `fetch`, from its start, the invalidation emptied.
    pub emptied: usize,
    /// Paths emptied or due that the budget left for a later tick.
    pub skipped: usize,
    /// Of those, learned ones.
    pub learned_skipped: usize,
}

/// Chooses what to warm: first what the invalidation emptied (the floor's paths it covers, and
/// the learned paths it covers that the edge held; after a deploy, all of those), then the paths
/// near the end of their edge TTL, within the budget.
pub fn choose(policy: &Policy, s: &Situation<'_>) -> Warm {
    let warmed = |path: &str| s.warmed.get(path).copied();
    let held: Vec<WarmPath> =
        s.learned.iter().filter(|l| held(l, warmed(&l.warm.path), s.now)).map(|l| l.warm.clone()).collect();
    let emptied: Vec<WarmPath> = if s.everything_emptied {
        s.floor.iter().cloned().chain(held).collect()
    } else {
        let mut emptied = affected(policy, s.changed, s.today, s.floor);
        emptied.extend(affected(policy, s.changed, s.today, &held));
        emptied
    };
    let due_floor = s.floor.iter().filter(|p| is_due(p.edge_ttl, warmed(&p.path), s.now)).cloned();
    let due_learned = s
        .learned
        .iter()
        .filter(|l| is_due(l.warm.edge_ttl, Some(last_fetch(l, warmed(&l.warm.path))), s.now))
        .map(|l| l.warm.clone());
    let mut seen = HashSet::new();
    let emptied: Vec<WarmPath> = emptied.into_iter().filter(|p| seen.insert(p.path.clone())).collect();
    let emptied_count = emptied.len();
    let due: Vec<WarmPath> = due_floor.chain(due_learned).filter(|p| seen.insert(p.path.clone())).collect();
    let mut fetch = emptied;
    fetch.extend(due);
    let mut warm = Warm::default();
    if fetch.len() > s.budget {
        let skipped = fetch.split_off(s.budget);
        let learned: HashSet<&str> = s.learned.iter().map(|l| l.warm.path.as_str()).collect();
        warm.skipped = skipped.len();
        warm.learned_skipped = skipped.iter().filter(|p| learned.contains(p.path.as_str())).count();
    }
    warm.emptied = emptied_count.min(fetch.len());
    warm.fetch = fetch;
    warm
}

/// A claimed tag whose invalidation completed: what its answers must show, and since when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sent {
    /// The tag.
    pub tag: String,
    /// What wrote its changes ([`store::outbox::ClaimedTag::written_by`]).
    pub written_by: String,
    /// How long before the claim the first of them became visible.
    pub age: Duration,
    /// What a repair of it requires, when it was sent twice already (requeued by an earlier
    /// tick, or repeated by this one): an answer still lacking that failed twice.
    pub repaired_by: Option<String>,
}

impl Sent {
    /// A claimed tag, visible for `age` before the claim: from its first change's commit when the
    /// database says when it committed, else from the mark that found it pending `seen` before
    /// the claim (later than its commit: the figure errs short, by up to a tick).
    pub fn of(claimed: &store::outbox::ClaimedTag, seen: Duration) -> Self {
        let age =
            if claimed.from_commit { Duration::from_millis(u64::try_from(claimed.age_ms).unwrap_or(0)) } else { seen };
        let (tag, written_by, repaired_by) =
            (claimed.tag.clone(), claimed.written_by.clone(), claimed.repaired_by.clone());
        Self { tag, written_by, age, repaired_by }
    }
}

/// What reading the emptied paths back through the edge showed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Verified {
    /// Emptied paths whose answer shows every claimed change covering it, each with its
    /// freshness: how long after the first of those changes became visible the edge answered
    /// with it (the change's age at the claim, plus the time from the claim to the request).
    pub fresh: Vec<(String, Duration)>,
    /// Emptied paths whose answer lacks one of those changes: the edge still held pre-change data
    /// after the invalidation completed, whatever its `X-Cache` said.
    pub stale: Vec<String>,
    /// For each stale path, the tags its answer lacks (and whether it lacks what a repair of
    /// that tag required: its second failure), and how
    /// long the first of those changes had been visible when the edge still answered without it:
    /// its freshness will be at least that.
    pub lacking: BTreeMap<String, (Vec<(String, bool)>, Duration)>,
    /// Emptied paths whose answer could not be checked: a failed request, an answer without the
    /// header (or of another database), a copy the API served while its database was down, or
    /// changes written by too many transactions to list.
    pub unknown: Vec<String>,
}

/// What each of `paths` owes: every sent tag whose pages cover the path. Paths no sent tag
/// covers owe nothing.
pub fn owed<'a>(policy: &Policy, sent: &'a [Sent], today: &str, paths: &[&str]) -> HashMap<String, Vec<&'a Sent>> {
    let context = Context { today: Some(today.to_owned()) };
    let mut owed: HashMap<String, Vec<&Sent>> = HashMap::new();
    for tag in sent {
        let patterns: Vec<String> = pages(policy, &tag.tag, &context).collect();
        for path in paths.iter().filter(|p| patterns.iter().any(|pattern| covers(pattern, p))) {
            owed.entry((*path).to_owned()).or_default().push(tag);
        }
    }
    owed
}

/// Checks the answers among `fetched` that owe something (see [`owed`]): one is fresh when its
/// version shows every change it owes ([`store::version_shows`]). Transactions that wrote nothing
/// the page shows do not count: an answer read after its own changes but before some other
/// transaction completed is fresh. `claimed_at` is when the claim was asked for, on the
/// warmer's clock (which then measures only the time from the claim to each request).
pub fn verify(fetched: &[Fetched], owed: &HashMap<String, Vec<&Sent>>, claimed_at: DateTime<Utc>) -> Verified {
    let mut verified = Verified::default();
    for f in fetched {
        let Some(owes) = owed.get(&f.path) else { continue };
        // A copy the API served while its database was down says nothing about the purge.
        let served_stale = f.local_cache.as_deref() == Some("stale");
        let version = f.version.as_deref().filter(|_| f.ok() && !served_stale);
        let shown: Option<Vec<bool>> =
            version.and_then(|v| owes.iter().map(|sent| store::version_shows(v, &sent.written_by)).collect());
        let since_claim = (f.at - claimed_at).to_std().unwrap_or(Duration::ZERO);
        match shown {
            Some(shown) if shown.iter().all(|s| *s) => {
                let oldest = owes.iter().map(|sent| sent.age).max().unwrap_or(Duration::ZERO);
                verified.fresh.push((f.path.clone(), oldest + since_claim));
            }
            Some(shown) => {
                let lacks: Vec<&Sent> = owes.iter().zip(&shown).filter(|(_, s)| !**s).map(|(sent, _)| *sent).collect();
                let oldest = lacks.iter().map(|sent| sent.age).max().unwrap_or(Duration::ZERO);
                let twice = |sent: &Sent| {
                    sent.repaired_by
                        .as_deref()
                        .is_some_and(|r| store::version_shows(version.unwrap_or(""), r) == Some(false))
                };
                let tags = lacks.iter().map(|sent| (sent.tag.clone(), twice(sent))).collect();
                verified.lacking.insert(f.path.clone(), (tags, oldest + since_claim));
                verified.stale.push(f.path.clone());
            }
            None => verified.unknown.push(f.path.clone()),
        }
    }
    verified.stale.sort();
    verified
}

/// What to do about the stale pages a read back found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Repair {
    /// The tags to invalidate again: those the stale answers lack.
    pub tags: BTreeSet<String>,
    /// The pages to read again once that completed.
    pub paths: Vec<String>,
    /// Stale pages that lack a repair already (a requeued one): their second failure.
    pub failed_again: Vec<String>,
}

/// Decides the repair of what `verified` found stale: each stale page once. One that lacks a
/// change that already was a repair (requeued, or sent twice) is not repaired again: it failed
/// twice.
pub fn repair(verified: &Verified) -> Repair {
    let mut repair = Repair::default();
    for path in &verified.stale {
        let Some((lacks, _)) = verified.lacking.get(path) else { continue };
        if lacks.iter().any(|(_, is_repair)| *is_repair) {
            repair.failed_again.push(path.clone());
        } else {
            repair.tags.extend(lacks.iter().map(|(tag, _)| tag.clone()));
            repair.paths.push(path.clone());
        }
    }
    repair
}

/// Whether a repair may go now, this tick having just sent a batch: the budget's rule for any
/// batch, with `used` counting this tick's items (`None`: the backend does not bill by path).
/// Over the budget the last batch is a moment old, so the repair waits, as a change would.
pub fn repair_budget(policy: &BudgetPolicy, used: Option<u64>) -> Budget {
    budget(policy, used, used.map(|_| Duration::ZERO))
}

/// The median, 99th percentile and maximum of a tick's freshness measurements (nearest rank).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spread {
    /// The median.
    pub p50: Duration,
    /// The 99th percentile.
    pub p99: Duration,
    /// The maximum.
    pub max: Duration,
}

/// The spread of `values`; `None` when there are none.
pub fn spread(values: &[Duration]) -> Option<Spread> {
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    let rank = |q: f64| sorted[((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1];
    let max = *sorted.last()?;
    Some(Spread { p50: rank(0.5), p99: rank(0.99), max })
}

/// What a tick's warm requests did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tally {
    /// Answered (2xx, 3xx or 4xx: a `404` is cached negatively, which is warm too).
    pub warmed: usize,
    /// Of those, already held by the edge.
    pub hits: usize,
    /// Of those, fetched from the origin by the edge.
    pub misses: usize,
    /// Failed (no answer, or a `5xx`).
    pub failures: usize,
    /// Of the answered, learned paths.
    pub learned_rewarmed: usize,
    /// Of the failed, learned paths.
    pub learned_failed: usize,
}

/// Counts what the warm requests did; `learned` names the learned paths among them.
pub fn tally(fetched: &[Fetched], learned: &[Learned]) -> Tally {
    let learned: HashSet<&str> = learned.iter().map(|l| l.warm.path.as_str()).collect();
    let mut tally = Tally::default();
    for f in fetched {
        let is_learned = learned.contains(f.path.as_str());
        if f.ok() {
            tally.warmed += 1;
            tally.learned_rewarmed += usize::from(is_learned);
            if f.hit() {
                tally.hits += 1;
            } else {
                tally.misses += 1;
            }
        } else {
            tally.failures += 1;
            tally.learned_failed += usize::from(is_learned);
        }
    }
    tally
}

#[cfg(test)]
mod tests {
    use store::learned::LearnedPath;

    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        text.parse().unwrap()
    }

    fn path(p: &str, ttl: u64) -> WarmPath {
        WarmPath { path: p.into(), edge_ttl: Duration::from_secs(ttl) }
    }

    fn learned(p: &str, ttl: u64, fetches: i64, last: &str) -> Learned {
        Learned {
            warm: path(p, ttl),
            seen: LearnedPath { path: p.into(), fetches, last_fetched_at: at(last), found: true },
        }
    }

    const NOW: &str = "2026-11-28T12:00:00Z";

    #[test]
    fn the_budget_sends_while_paths_remain_and_spaces_batches_once_spent() {
        let policy = BudgetPolicy { budget: 1_000, over_budget_every: Duration::from_secs(300) };
        assert_eq!(budget(&policy, None, None), Budget::Send { remaining: None }, "no billing, no budget");
        assert_eq!(budget(&policy, Some(990), None), Budget::Send { remaining: Some(10) });
        // Spent: the batch stays precise (no remainder to coarsen towards), at most once per interval.
        assert_eq!(budget(&policy, Some(1_000), None), Budget::Send { remaining: None });
        assert_eq!(budget(&policy, Some(1_200), Some(Duration::from_secs(60))), Budget::Wait);
        assert_eq!(budget(&policy, Some(1_200), Some(Duration::from_secs(300))), Budget::Send { remaining: None });
    }

    #[test]
    fn a_path_is_due_only_near_the_end_of_its_edge_ttl() {
        let now = at(NOW);
        let hour = Duration::from_secs(3600);
        assert!(is_due(hour, None, now));
        assert!(!is_due(hour, Some(now - chrono::Duration::minutes(30)), now));
        assert!(!is_due(hour, Some(now - chrono::Duration::minutes(53)), now));
        assert!(is_due(hour, Some(now - chrono::Duration::minutes(55)), now));
    }

    #[test]
    fn due_follows_the_edges_fetch_from_the_origin_not_the_warmers_request() {
        let hour = Duration::from_secs(3600);
        let minutes = |m: i64| at(NOW) + chrono::Duration::minutes(m);
        let warm_request = |m: i64, x_cache: &str, age_s: u64| Fetched {
            path: "/v1/formations".into(),
            status: Some(200),
            x_cache: Some(x_cache.into()),
            age: (age_s > 0).then(|| Duration::from_secs(age_s)),
            at: minutes(m),
            version: None,
            local_cache: None,
            error: None,
        };
        // The edge fetched the path at minute 0 (a miss, no Age); at minute 55 it is due.
        let [fetched] = crate::warm::answered(&[warm_request(0, "Miss", 0)]).try_into().unwrap();
        assert_eq!(fetched.fetched_at, minutes(0));
        assert!(is_due(hour, Some(fetched.fetched_at), minutes(55)));
        // The warm request at minute 55 is a hit of that copy (Age 55 minutes): it does not make
        // the copy live longer, so the path stays due at the next tick, and the one after the
        // copy expired makes the edge fetch it again.
        let [hit] = crate::warm::answered(&[warm_request(55, "Hit", 55 * 60)]).try_into().unwrap();
        assert_eq!(hit.fetched_at, minutes(0), "a hit is not a fetch");
        assert!(is_due(hour, Some(hit.fetched_at), minutes(56)));
        // Counting the hit as a fetch would have put the next warm at minute 109, 49 minutes after
        // the copy expired.
        assert!(!is_due(hour, Some(minutes(55)), minutes(108)));
        // The refetch after expiry (a miss, or a stale copy refreshed: Age past the TTL) moves it.
        let [miss] = crate::warm::answered(&[warm_request(61, "Miss", 0)]).try_into().unwrap();
        assert!(!is_due(hour, Some(miss.fetched_at), minutes(100)));
        assert!(is_due(hour, Some(miss.fetched_at), minutes(61 + 54)));
    }

    #[test]
    fn a_learned_path_is_held_while_its_last_fetch_is_within_its_edge_ttl() {
        let now = at(NOW);
        let l = learned("/v1/formations/10701F", 3600, 5, "2026-11-28T10:30:00Z");
        assert!(!held(&l, None, now), "a viewer's fetch 90 minutes ago has expired");
        assert!(held(&l, Some(at("2026-11-28T11:30:00Z")), now), "the warmer fetched it since");
        assert_eq!(last_fetch(&l, Some(at("2026-11-28T09:00:00Z"))), at("2026-11-28T10:30:00Z"));
    }

    #[test]
    fn affected_paths_follow_the_tags() {
        let policy = Policy::embedded().unwrap();
        let warm = vec![
            path("/v1/lines", 86_400),
            path("/v1/formations", 3600),
            path("/v1/formations/10701F", 3600),
            path("/v1/formations/3001F", 3600),
            path("/v1/operations/2026-11-28", 3600),
            path("/v1/operations/today", 3600),
            path("/v1/sightings/latest", 60),
        ];
        let tags: BTreeSet<String> = ["formation:10701F", "formations", "operations:2026-11-28", "sightings"]
            .iter()
            .map(|s| (*s).into())
            .collect();
        let got: Vec<String> = affected(policy, &tags, "2026-11-28", &warm).into_iter().map(|w| w.path).collect();
        assert_eq!(
            got,
            [
                "/v1/formations",
                "/v1/formations/10701F",
                "/v1/operations/2026-11-28",
                "/v1/operations/today",
                "/v1/sightings/latest"
            ]
        );
    }

    fn situation<'a>(
        floor: &'a [WarmPath],
        learned: &'a [Learned],
        warmed: &'a HashMap<String, DateTime<Utc>>,
        changed: &'a BTreeSet<String>,
        budget: usize,
    ) -> Situation<'a> {
        Situation {
            floor,
            learned,
            warmed,
            changed,
            today: "2026-11-28",
            everything_emptied: false,
            now: at(NOW),
            budget,
        }
    }

    #[test]
    fn what_an_invalidation_emptied_comes_first_then_what_is_due_each_once_within_the_budget() {
        let policy = Policy::embedded().unwrap();
        let floor = [path("/v1/lines", 86_400), path("/v1/formations", 3600)];
        let learned = [
            // Held (fetched 10 minutes ago) and covered by the change: emptied.
            learned("/v1/formations/10701F", 3600, 50, "2026-11-28T11:50:00Z"),
            // Covered, but the edge had let it go: not emptied by the change, only due, so it comes
            // with the due paths, in learned order.
            learned("/v1/formations/3001F", 3600, 40, "2026-11-28T10:00:00Z"),
            // Not covered, due (57 minutes old).
            learned("/v1/formations/5051F", 3600, 30, "2026-11-28T11:03:00Z"),
        ];
        let warmed: HashMap<String, DateTime<Utc>> = [
            ("/v1/lines".to_owned(), at("2026-11-28T11:00:00Z")),
            ("/v1/formations".to_owned(), at("2026-11-28T11:59:00Z")),
        ]
        .into_iter()
        .collect();
        let changed: BTreeSet<String> =
            ["formations", "formation:10701F", "formation:3001F"].iter().map(|t| (*t).to_owned()).collect();
        let warm = choose(policy, &situation(&floor, &learned, &warmed, &changed, 10));
        let order: Vec<&str> = warm.fetch.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(order, ["/v1/formations", "/v1/formations/10701F", "/v1/formations/3001F", "/v1/formations/5051F"]);
        assert_eq!((warm.skipped, warm.learned_skipped), (0, 0));
        assert_eq!(warm.emptied, 2, "the first two were emptied by the change");
        // With room for two, what was emptied goes first, and the due learned paths wait.
        let warm = choose(policy, &situation(&floor, &learned, &warmed, &changed, 2));
        let order: Vec<&str> = warm.fetch.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(order, ["/v1/formations", "/v1/formations/10701F"]);
        assert_eq!((warm.skipped, warm.learned_skipped), (2, 2));
    }

    #[test]
    fn after_a_deploy_everything_the_edge_held_is_rewarmed() {
        let policy = Policy::embedded().unwrap();
        let floor = [path("/v1/lines", 86_400)];
        let learned = [learned("/v1/formations/10701F", 3600, 50, "2026-11-28T11:50:00Z")];
        let warmed = HashMap::from([("/v1/lines".to_owned(), at("2026-11-28T11:59:00Z"))]);
        let changed = BTreeSet::new();
        let mut s = situation(&floor, &learned, &warmed, &changed, 10);
        assert!(choose(policy, &s).fetch.is_empty(), "nothing changed and nothing is due");
        s.everything_emptied = true;
        let order: Vec<String> = choose(policy, &s).fetch.into_iter().map(|p| p.path).collect();
        assert_eq!(order, ["/v1/lines", "/v1/formations/10701F"]);
    }

    #[test]
    fn an_emptied_path_is_verified_when_its_answer_shows_the_changes_it_owes() {
        let answer = |path: &str, status: Option<u16>, version: Option<&str>| Fetched {
            path: path.into(),
            status,
            x_cache: Some("Miss".into()),
            age: None,
            at: at(NOW),
            version: version.map(str::to_owned),
            local_cache: None,
            error: None,
        };
        let policy = Policy::embedded().unwrap();
        let sent = |tag: &str, written_by: &str, age_s: u64| Sent {
            tag: tag.into(),
            written_by: written_by.into(),
            age: Duration::from_secs(age_s),
            repaired_by: None,
        };
        // Transaction 801 wrote the formation (its page and the list), 803 a sighting at M01.
        let claimed =
            [sent("formation:10701F", "801", 5), sent("formations", "801,803", 9), sent("station:M01", "803", 4)];
        let paths = ["/v1/formations/10701F", "/v1/formations", "/v1/stations/M01/sightings", "/v1/lines"];
        let owed = owed(policy, &claimed, "2026-12-07", &paths);
        let written = |path: &str| owed[path].iter().map(|s| s.written_by.as_str()).collect::<Vec<_>>();
        assert_eq!(written("/v1/formations/10701F"), ["801"]);
        assert_eq!(written("/v1/formations"), ["801,803"]);
        assert!(!owed.contains_key("/v1/lines"), "no claimed tag covers it");
        let fetched = [
            // Read after 801, while 803 (which it does not show) was still running: fresh.
            answer("/v1/formations/10701F", Some(200), Some("790:805:790,803")),
            // Read before 801 completed: older data, whatever X-Cache says.
            answer("/v1/formations", Some(200), Some("790:805:790,801")),
            answer("/v1/stations/M01/sightings", None, None),
            // Owes nothing: not checked.
            answer("/v1/lines", Some(200), Some("1:2:")),
        ];
        // Claimed 2 s before the requests: the formation's change was then 5 s old.
        let claimed_at = at(NOW) - chrono::Duration::seconds(2);
        let verified = verify(&fetched, &owed, claimed_at);
        assert_eq!(verified.fresh, [("/v1/formations/10701F".to_owned(), Duration::from_secs(7))]);
        assert_eq!(verified.stale, ["/v1/formations"]);
        assert_eq!(verified.unknown, ["/v1/stations/M01/sightings"], "a failed request");
        // The list lacks 801's change, visible 9 s before the claim: at least 11 s stale.
        let lacks = (vec![("formations".to_owned(), false)], Duration::from_secs(11));
        assert_eq!(verified.lacking["/v1/formations"], lacks);
        // What to invalidate again: the tag the stale list lacks, and the list to read again.
        let planned = repair(&verified);
        assert_eq!(planned.tags, BTreeSet::from(["formations".to_owned()]));
        assert_eq!((planned.paths, planned.failed_again.len()), (vec!["/v1/formations".to_owned()], 0));
        // Lacking a change that was already a repair: the second failure, not repaired again.
        let requeued = [Sent { repaired_by: Some("801,803".into()), ..claimed[1].clone() }];
        let owed_again = super::owed(policy, &requeued, "2026-12-07", &["/v1/formations"]);
        let again = repair(&verify(&fetched[1..2], &owed_again, claimed_at));
        assert_eq!((again.tags.len(), again.failed_again), (0, vec!["/v1/formations".to_owned()]));
        // A repair the answer shows, with a new change it lacks: a first failure, repaired.
        let shown = [Sent { repaired_by: Some("780".into()), ..claimed[1].clone() }];
        let owed_new = super::owed(policy, &shown, "2026-12-07", &["/v1/formations"]);
        let new = repair(&verify(&fetched[1..2], &owed_new, claimed_at));
        assert_eq!((new.tags.len(), new.failed_again.len()), (1, 0));
        // A copy the API served while its database was down says nothing about the purge.
        let served_stale = Fetched { local_cache: Some("stale".into()), ..fetched[1].clone() };
        assert_eq!(verify(&[served_stale], &owed, claimed_at).unknown.len(), 1);
        // Too many writers to list (a backlog): not checked.
        let backlog = [sent("formations", "", 1)];
        let owed_backlog = super::owed(policy, &backlog, "2026-12-07", &["/v1/formations"]);
        assert_eq!(verify(&fetched[1..2], &owed_backlog, claimed_at).unknown.len(), 1);
        // SQLite versions are change ids, and so is what a claim says wrote its changes.
        let claimed = [sent("formations", "40", 1)];
        let owed = super::owed(policy, &claimed, "2026-12-07", &["/v1/formations"]);
        let fresh = verify(&[answer("/v1/formations", Some(200), Some("41"))], &owed, claimed_at);
        let stale = verify(&[answer("/v1/formations", Some(200), Some("39"))], &owed, claimed_at);
        assert_eq!((fresh.fresh.len(), stale.stale.len()), (1, 1));
    }

    #[test]
    fn a_repair_goes_within_the_budget_and_waits_over_it_as_any_batch() {
        let policy = BudgetPolicy { budget: 1_000, over_budget_every: Duration::from_secs(300) };
        assert_eq!(repair_budget(&policy, None), Budget::Send { remaining: None }, "a purge bills nothing");
        assert_eq!(repair_budget(&policy, Some(990)), Budget::Send { remaining: Some(10) });
        assert_eq!(repair_budget(&policy, Some(1_000)), Budget::Wait, "a batch went out just now");
        let unspaced = BudgetPolicy { over_budget_every: Duration::ZERO, ..policy };
        assert_eq!(repair_budget(&unspaced, Some(5_000)), Budget::Send { remaining: None });
    }

    #[test]
    fn the_spread_of_freshness_is_by_nearest_rank() {
        let secs = |v: &[u64]| v.iter().map(|&s| Duration::from_secs(s)).collect::<Vec<_>>();
        assert_eq!(spread(&[]), None);
        let one = spread(&secs(&[4])).unwrap();
        assert_eq!((one.p50, one.p99, one.max), (secs(&[4])[0], secs(&[4])[0], secs(&[4])[0]));
        let hundred: Vec<u64> = (1..=100).rev().collect();
        let s = spread(&secs(&hundred)).unwrap();
        assert_eq!((s.p50, s.p99, s.max), (Duration::from_secs(50), Duration::from_secs(99), Duration::from_secs(100)));
    }

    #[test]
    fn the_tally_counts_hits_misses_and_failures_and_which_were_learned() {
        let fetched = |path: &str, status: Option<u16>, x_cache: Option<&str>| Fetched {
            path: path.into(),
            status,
            x_cache: x_cache.map(str::to_owned),
            age: None,
            at: at(NOW),
            version: None,
            local_cache: None,
            error: None,
        };
        let learned = [learned("/v1/formations/10701F", 3600, 1, NOW)];
        let tally = tally(
            &[
                fetched("/v1/lines", Some(200), Some("Hit")),
                fetched("/v1/formations/10701F", Some(200), Some("Miss from cloudfront")),
                fetched("/v1/formations", Some(503), None),
                fetched("/v1/formations/10701F", None, None),
            ],
            &learned,
        );
        assert_eq!(tally, Tally { warmed: 2, hits: 1, misses: 1, failures: 2, learned_rewarmed: 1, learned_failed: 1 });
    }
}
