//! The warmer's own checks through the edge, set against the checker's judgement of the very
//! answers it read: whether its verdicts (fresh, stale) and the freshness it publishes are what a
//! viewer at its location got.
//!
//! The warmer reads the edge through [`crate::net::recorder`], which keeps every answer, and logs
//! each page it read back (`RUST_LOG=warmer::check=debug`): its path, its verdict, its freshness,
//! when its request was sent, and when the mark its tick claimed was seen. Each check is matched
//! to the answer recorded for its path nearest its send time and judged by the commit history: a
//! `fresh` answer must show, for every fact it shows, the latest write that committed before the
//! mark (what that tick claimed, or an earlier one did). A `stale` one lacks one, or its copy
//! was made before those writes could show (by its `Age`, the edge's copy was made before the mark
//! plus the instance bound): the warmer compares versions, so a change the checker does not
//! follow (an import of old sightings changes a formation's tag, not the facts its page shows)
//! makes an older copy stale too. A `stale` verdict on a copy made after that is a false alarm.
//! Writes that committed within [`MARGIN`] of the mark count neither way: the two clocks and the
//! recorded commit time (when `COMMIT` returned) are that close, not closer.
//!
//! Freshness: for a page the warmer found fresh, the checker takes the first write it shows that
//! its tick claimed (committed after the mark of the last tick whose batch was sent before it,
//! and before this tick's mark) and brackets, from the viewers' reads of that page at the
//! warmer's edge cache, when the users there got it: after the last read without it, by the first
//! read with it. The users' freshness is the time from that write's commit to that first read;
//! the warmer's runs from its first change's commit (the database's commit timestamp) to its own
//! read, after the batch (and its repeat) completed. The two are compared where they measure the
//! same thing: the warmer's start is the write's commit (not a write the checker does not follow,
//! such as an import, committed earlier), the edge held the old copy until this tick's
//! invalidation (the last read without the write was a hit, the first with it came after this
//! tick's mark), and no viewer got the page without the write after the warmer's read (counted
//! apart). There the warmer's figures must lie in the users' bracket, give or take
//! [`Timing::tolerance`] (one tick, plus the propagation and a poll for each purge the warmer
//! waits out before it reads): at the median, and at the 99th percentile given a hundred pages.
//! Counted apart: where an earlier invalidation of the page's tags brought the write (the first
//! read with it came before the mark), the warmer's figure is only an upper bound, since it counts
//! to its own read; where the tick that sent the write did not read back (it did not see its
//! invalidation complete, or was killed), the write is not measured and the next tick measures
//! from its own first change ("short"). Pages no viewer read without the write are not compared:
//! the users there got it at once, or did not ask.

use std::collections::{HashMap, HashSet};

use serde_json::{Value, json};

use crate::checker::{History, KeyId, StateId, Time};

/// How close to a tick's mark a commit may be and count neither way.
pub const MARGIN: f64 = 0.05;

/// One page the warmer read back, from its log.
#[derive(Debug, Clone)]
pub struct Check {
    pub path: String,
    /// `fresh`, `repaired`, `stale` or `unknown`.
    pub outcome: String,
    pub freshness: Option<f64>,
    /// When its request was sent, in seconds from the soak's epoch.
    pub sent: Time,
    /// When the mark its tick claimed was seen, in seconds from the soak's epoch.
    pub marked: Option<Time>,
}

/// A time the warmer logged (RFC 3339), in seconds from `epoch` (the soak's epoch on the wall
/// clock).
pub fn since(epoch: chrono::DateTime<chrono::Utc>, time: &Value) -> Option<Time> {
    let time = chrono::DateTime::parse_from_rfc3339(time.as_str()?).ok()?;
    Some((time.with_timezone(&chrono::Utc) - epoch).as_seconds_f64())
}

/// The warmer's checks in `log` (its stderr, JSON lines).
pub fn checks(log: &str, epoch: chrono::DateTime<chrono::Utc>) -> Vec<Check> {
    log.lines()
        .filter(|line| line.starts_with('{'))
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|v| v["target"] == "warmer::check")
        .filter_map(|v| {
            Some(Check {
                path: v["path"].as_str()?.to_owned(),
                outcome: v["outcome"].as_str()?.to_owned(),
                freshness: v["freshness_s"].as_f64(),
                sent: since(epoch, &v["sent"])?,
                marked: since(epoch, &v["marked"]),
            })
        })
        .collect()
}

/// An answer the warmer read, as the checker sees it.
#[derive(Debug, Clone)]
pub struct Answer {
    /// The path (and query) asked for.
    pub path: String,
    pub sent: Time,
    /// The edge's `Age` (whole seconds).
    pub age: Option<u64>,
    /// Its body could be decoded.
    pub readable: bool,
    /// `None`: a route the checker does not judge, or a body it cannot read.
    pub facts: Option<Vec<(KeyId, StateId)>>,
}

/// One viewer's read at the warmer's edge cache: its path, when it was sent, whether the edge
/// answered from its cache, and what it showed.
pub type Seen<'a> = (&'a str, Time, bool, &'a [(KeyId, StateId)]);

/// A viewer's read of a page, for one key it shows: when, whether a hit, which write of the key
/// (its index in the key's history; none: the state before the soak).
type PageRead = (Time, bool, Option<usize>);

/// A fresh page's claimed write, as the warmer measured it and as the viewers saw it.
#[derive(Debug, Clone, PartialEq)]
pub struct Bracket {
    /// The page, the write's commit and the warmer's read (seconds from the soak's epoch), for
    /// the report.
    pub page: String,
    pub commit: Time,
    pub read: Time,
    /// The warmer's freshness: from its first change's commit to its read.
    pub warmer: f64,
    /// From the write's commit to the last viewer read of the page without it.
    pub without: f64,
    /// From the commit to the first viewer read with it after that (none: no viewer read it).
    pub with: Option<f64>,
    /// That last read without it was an edge hit: the edge held the old copy until then.
    pub held: bool,
    /// The first read with it came before the mark of the tick the warmer measured: an earlier
    /// invalidation of the page's tags (for an earlier write) brought it, which the warmer does
    /// not see, so its figure is only an upper bound.
    pub earlier: bool,
    /// A viewer read the page without it after the warmer found it fresh (the last read without
    /// it and the first with it are taken up to the warmer's read).
    pub regressed: bool,
}

/// The soak's timings the comparison needs.
#[derive(Debug, Default, Clone, Copy)]
pub struct Timing {
    /// How far the warmer's freshness and the users' may be apart: the warmer's schedule period,
    /// plus, for each purge it waits out before it reads (the batch, and its repeat), the
    /// propagation and one poll of the invalidation's status.
    pub tolerance: f64,
    /// `CHANGE_MAX_LAG`: an instance shows a write this long after its commit.
    pub instance_bound: f64,
}

/// How far apart the warmer's start (a commit timestamp, taken from the database's clock through
/// the claim's round trip) and the write's recorded commit (when `COMMIT` returned to the writer)
/// may be and still be the same write.
pub const SAME_START: f64 = 0.25;

impl Bracket {
    /// When the warmer's figure starts.
    fn start(&self) -> Time {
        self.read - self.warmer
    }

    /// The warmer's figure starts after the write's commit: the tick that sent the write did not
    /// measure it.
    fn short(&self) -> bool {
        self.start() > self.commit + MARGIN
    }

    /// The warmer's figure starts at an earlier write than the checker follows (an import).
    fn starts_unfollowed(&self) -> bool {
        self.start() < self.commit - SAME_START
    }

    /// The two measure the same thing (see the module's doc).
    fn comparable(&self) -> bool {
        self.held
            && !self.earlier
            && !self.regressed
            && self.with.is_some()
            && !self.short()
            && !self.starts_unfollowed()
    }

    fn describe(&self) -> String {
        format!(
            "{}: committed at {:.3} s, without it until {:.3} s, with it from {}, the warmer's read at {:.3} s ({:.3} s)",
            self.page,
            self.commit,
            self.commit + self.without,
            self.with.map_or("no read".to_owned(), |with| format!("{:.3} s", self.commit + with)),
            self.read,
            self.warmer
        )
    }
}

/// What the comparison found.
#[derive(Debug, Default)]
pub struct Agreement {
    pub timing: Timing,
    pub checks: usize,
    /// Checks with a verdict (`fresh`, `repaired`, `stale`) on a route the checker judges, matched
    /// to the answer read.
    pub judged: usize,
    /// Checks whose answer's body could not be decoded.
    pub unreadable: usize,
    pub agree: usize,
    /// Found fresh, but the answer lacked a write committed before the mark.
    pub missed: Vec<String>,
    /// Found stale, and the answer showed every write the checker follows that committed before
    /// the mark, but its copy was older than them: a change the checker does not follow.
    pub stale_unfollowed: usize,
    /// Found stale, but the answer showed every write committed before the mark, from a copy
    /// made after they could show.
    pub false_alarms: Vec<String>,
    /// Per judged fresh page that viewers read without its claimed write: the warmer's freshness
    /// beside the viewers' bracket.
    pub freshness: Vec<Bracket>,
}

impl Agreement {
    /// Pages whose freshness the warmer measured from a change after the write's.
    pub fn short(&self) -> usize {
        self.freshness.iter().filter(|b| b.short()).count()
    }

    /// Pages where the warmer and the users measure the same thing.
    pub fn comparable(&self) -> usize {
        self.freshness.iter().filter(|b| b.comparable()).count()
    }

    /// Where they measure the same thing: the warmer's figures, and the users' bracket (from the
    /// commit to the last viewer read without the write, and to the first with it).
    fn compared(&self) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
        let mut compared = (Vec::new(), Vec::new(), Vec::new());
        for b in self.freshness.iter().filter(|b| b.comparable()) {
            compared.0.push(b.warmer);
            compared.1.push(b.without);
            compared.2.push(b.with.unwrap_or(b.warmer));
        }
        compared
    }

    /// Whether, where they measure the same thing, the warmer's figures fall in the users'
    /// bracket, give or take the tolerance: the median, and the 99th percentile when there are a
    /// hundred pages or more (`None`: nothing to compare). Each page's figure lies at or after the
    /// last read without the write (the warmer read after it) and within the tolerance after the
    /// first read with it, so each percentile of the figures lies between the same percentiles of
    /// the two ends.
    pub fn freshness_agrees(&self) -> Option<bool> {
        let (warmer, without, with) = self.compared();
        let tolerance = self.timing.tolerance;
        let percentiles: &[f64] = if warmer.len() >= 100 { &[50.0, 99.0] } else { &[50.0] };
        (!warmer.is_empty()).then(|| {
            percentiles.iter().all(|&p| {
                let figure = crate::pct(&warmer, p);
                figure >= crate::pct(&without, p) - tolerance && figure <= crate::pct(&with, p) + tolerance
            })
        })
    }

    /// Pages a viewer read without the write after the warmer found them fresh.
    pub fn regressed(&self) -> Vec<&Bracket> {
        self.freshness.iter().filter(|b| b.regressed).collect()
    }

    pub fn report(&self) -> Value {
        let spread = |samples: &[f64]| {
            if samples.is_empty() {
                return Value::Null;
            }
            json!({ "p50": crate::pct(samples, 50.0), "p99": crate::pct(samples, 99.0), "max": crate::pct(samples, 100.0) })
        };
        let (warmer, without, users) = self.compared();
        let apart = |b: &&&Bracket| b.with.is_some_and(|users| (b.warmer - users).abs() > self.timing.tolerance);
        let comparable: Vec<&Bracket> = self.freshness.iter().filter(|b| b.comparable()).collect();
        json!({
            "checks": self.checks,
            "judged": self.judged,
            "unreadable": self.unreadable,
            "agree": self.agree,
            "missed": self.missed.len(),
            "stale_unfollowed": self.stale_unfollowed,
            "false_alarms": self.false_alarms.len(),
            "first_missed": self.missed.iter().take(5).collect::<Vec<_>>(),
            "first_false_alarms": self.false_alarms.iter().take(5).collect::<Vec<_>>(),
            "freshness_pages": self.freshness.len(),
            "freshness_tolerance_s": self.timing.tolerance,
            "freshness_compared": comparable.len(),
            "freshness_agrees": self.freshness_agrees(),
            "freshness_regressed": self.regressed().len(),
            "freshness_apart": comparable.iter().filter(apart).count(),
            "freshness_first_apart": comparable.iter().filter(apart).take(5).map(|b| b.describe()).collect::<Vec<_>>(),
            "freshness_brought_earlier": self.freshness.iter().filter(|b| b.earlier).count(),
            "freshness_from_unfollowed": self.freshness.iter().filter(|b| b.starts_unfollowed()).count(),
            "freshness_short": self.short(),
            "freshness_first_short": self.freshness.iter().filter(|b| b.short()).take(5).map(Bracket::describe).collect::<Vec<_>>(),
            "freshness_warmer_s": spread(&warmer),
            "freshness_users_s": spread(&users),
            "freshness_users_without_s": spread(&without),
        })
    }
}

/// Sets each check beside the answer the warmer read (see the module's doc). `edge_reads` are
/// the viewers' reads at the warmer's edge cache, in any order; `sent`, the marks of the ticks
/// whose batch was sent (or that found nothing to send).
pub fn compare(
    checks: &[Check],
    answers: &[Answer],
    edge_reads: &[Seen<'_>],
    sent: &[Time],
    timing: &Timing,
    history: &History,
) -> Agreement {
    let mut by_path: HashMap<&str, Vec<&Answer>> = HashMap::new();
    for answer in answers {
        by_path.entry(answer.path.as_str()).or_default().push(answer);
    }
    let mut agreement = Agreement { timing: *timing, checks: checks.len(), ..Agreement::default() };
    // Fresh pages' first claimed writes, looked up in the viewers' reads below.
    let mut wanted: Vec<(f64, Time, Time, &str, KeyId, usize, Time)> = Vec::new();
    for check in checks {
        let fresh = matches!(check.outcome.as_str(), "fresh" | "repaired");
        if !fresh && check.outcome != "stale" {
            continue;
        }
        let Some(marked) = check.marked else { continue };
        let distance = |a: &Answer| (a.sent - check.sent).abs();
        let answer = by_path
            .get(check.path.as_str())
            .and_then(|answers| answers.iter().min_by(|a, b| distance(a).total_cmp(&distance(b))))
            .filter(|a| distance(a) < 0.5);
        agreement.unreadable += usize::from(answer.is_some_and(|a| !a.readable));
        let Some((answer, facts)) = answer.and_then(|a| Some((a, a.facts.as_deref()?))) else { continue };
        agreement.judged += 1;
        let lacking = facts.iter().find_map(|&(key, state)| lacks(history, key, state, marked - MARGIN));
        match (fresh, lacking) {
            (true, None) | (false, Some(_)) => agreement.agree += 1,
            (true, Some(what)) => agreement.missed.push(format!("{} at {:.3} s: {what}", check.path, check.sent)),
            (false, None) => {
                // The copy was made at most `Age` + 1 s before the read.
                let made = answer.age.map(|age| check.sent - age as f64 - 1.0);
                if made.is_some_and(|made| made > marked + timing.instance_bound) {
                    agreement.false_alarms.push(format!("{} at {:.3} s", check.path, check.sent));
                } else {
                    agreement.stale_unfollowed += 1;
                }
            }
        }
        if fresh && let Some(freshness) = check.freshness {
            // What an earlier tick sent had committed before its mark.
            // (The tick's own mark is in `sent` too, to a microsecond of `marked`.)
            let previous = sent.iter().copied().filter(|&m| m < marked - MARGIN).fold(f64::NEG_INFINITY, f64::max);
            if let Some((key, index, commit)) = first_claimed(history, facts, previous + MARGIN, marked - MARGIN) {
                wanted.push((freshness, check.sent, marked, check.path.as_str(), key, index, commit));
            }
        }
    }
    // The viewers' reads of each wanted page, by key, in order: when, whether a hit, which write
    // of the key they showed.
    let keys: HashSet<(&str, KeyId)> = wanted.iter().map(|w| (w.3, w.4)).collect();
    let mut shown: HashMap<(&str, KeyId), Vec<PageRead>> = HashMap::new();
    for &(path, at, hit, facts) in edge_reads {
        for &(key, state) in facts.iter().filter(|&&(key, _)| keys.contains(&(path, key))) {
            let index = history.histories[key as usize].entries.iter().rposition(|e| e.state == state);
            shown.entry((path, key)).or_default().push((at, hit, index));
        }
    }
    for reads in shown.values_mut() {
        reads.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    for (warmer, read, marked, path, key, index, commit) in wanted {
        let reads = shown.get(&(path, key)).map_or(&[][..], Vec::as_slice);
        let lacks = |r: &&PageRead| r.2.is_none_or(|s| s < index);
        let regressed = reads.iter().any(|r| r.0 > read + MARGIN && lacks(&r));
        // Up to the warmer's read.
        let until = reads.iter().filter(|r| r.0 >= commit && r.0 <= read + MARGIN);
        let Some(&(last, held, _)) = until.clone().rfind(lacks) else { continue };
        let with = until.filter(|r| r.0 > last && !lacks(r)).map(|r| r.0 - commit).next();
        let (page, without) = (path.to_owned(), last - commit);
        let earlier = with.is_some_and(|with| commit + with < marked);
        agreement.freshness.push(Bracket { page, commit, read, warmer, without, with, held, earlier, regressed });
    }
    agreement
}

/// Whether `state`, shown for `key`, is older than the latest write of it that committed before
/// `before`: that write's state, if so.
fn lacks(history: &History, key: KeyId, state: StateId, before: Time) -> Option<String> {
    let entries = &history.histories[key as usize].entries;
    let required = entries.iter().rposition(|e| e.committed.is_some_and(|c| c < before))?;
    let shown = entries.iter().rposition(|e| e.state == state);
    if shown.is_some_and(|s| s >= required) {
        return None;
    }
    Some(format!(
        "{} showed {:?}; {:?} committed at {:.3} s",
        history.key_name(key),
        history.state_name(state),
        history.state_name(entries[required].state),
        entries[required].committed.unwrap_or_default()
    ))
}

/// The earliest write among those `facts` show that committed between `after` and `before`: its
/// key, its index in the key's history, its commit.
fn first_claimed(
    history: &History,
    facts: &[(KeyId, StateId)],
    after: Time,
    before: Time,
) -> Option<(KeyId, usize, Time)> {
    facts
        .iter()
        .filter_map(|&(key, state)| {
            let entries = &history.histories[key as usize].entries;
            let shown = entries.iter().rposition(|e| e.state == state)?;
            entries[..=shown]
                .iter()
                .enumerate()
                .filter_map(|(i, e)| e.committed.filter(|&c| c > after && c < before).map(|c| (key, i, c)))
                .next()
        })
        .min_by(|a, b| a.2.total_cmp(&b.2))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A history of one formation's note: `v0` before the soak, `v1` committed at 10 s, `v2` at 20 s.
    fn history() -> (History, KeyId) {
        let mut history = History::default();
        history.seed("note:3001F", "v0");
        let first = history.begin("note:3001F", "v1");
        history.commit(first, 10.0);
        let second = history.begin("note:3001F", "v2");
        history.commit(second, 20.0);
        (history, first.0)
    }

    fn timing(tolerance: f64) -> Timing {
        Timing { tolerance, instance_bound: 2.0 }
    }

    fn check(outcome: &str, sent: f64, marked: f64, freshness: Option<f64>) -> Check {
        Check {
            path: "/v1/formations/3001F".to_owned(),
            outcome: outcome.to_owned(),
            freshness,
            sent,
            marked: Some(marked),
        }
    }

    #[test]
    fn a_verdict_agrees_when_the_answer_it_judged_shows_what_committed_before_the_mark() {
        let (mut history, key) = history();
        let v1 = history.state("v1");
        let v2 = history.state("v2");
        let answer = |sent: f64, state, age| Answer {
            path: "/v1/formations/3001F".to_owned(),
            sent,
            age: Some(age),
            readable: true,
            facts: Some(vec![(key, state)]),
        };
        let unreadable = Answer { readable: false, facts: None, ..answer(54.0, v2, 0) };
        let answers = [
            answer(14.0, v1, 0),
            answer(24.0, v1, 0),
            answer(34.0, v2, 0),
            answer(44.0, v2, 30),
            answer(47.0, v1, 0),
            unreadable,
        ];
        let checks = [
            // Mark at 12: v1 was owed, and shown.
            check("fresh", 14.0, 12.0, Some(4.0)),
            // Mark at 22: v2 was owed; the answer showed v1, and the warmer said fresh.
            check("fresh", 24.0, 22.0, Some(4.0)),
            // Mark at 30: the answer showed v2 from a copy made after every instance showed what
            // committed before it (33 s at the earliest, by its age), and the warmer said stale.
            check("stale", 34.0, 30.0, None),
            // Mark at 42: the answer showed v2, from a copy made at 14 s: the warmer said stale,
            // for a change the checker does not follow.
            check("stale", 44.0, 42.0, None),
            // Mark at 45: the answer showed v1, and the warmer said stale.
            check("stale", 47.0, 45.0, None),
            // A check whose answer was not recorded is not judged, nor one whose body could not
            // be read.
            check("fresh", 50.0, 48.0, Some(1.0)),
            check("fresh", 54.0, 52.0, Some(1.0)),
        ];
        let found = compare(&checks, &answers, &[], &[], &timing(1.0), &history);
        assert_eq!((found.judged, found.agree, found.stale_unfollowed, found.unreadable), (5, 2, 1, 1));
        assert_eq!(found.missed.len(), 1, "{:?}", found.missed);
        assert!(found.missed[0].contains("\"v2\" committed at 20.000"), "{:?}", found.missed);
        assert_eq!(found.false_alarms.len(), 1);
    }

    /// The viewers' reads of the page: without v1 until 13.5 s (the edge's copy), with it from
    /// 14 s; the list, which shows the same fact, is another page.
    fn reads<'a>(page: &'a str, old: &'a [(KeyId, StateId)], new: &'a [(KeyId, StateId)]) -> Vec<Seen<'a>> {
        vec![
            (page, 9.5, true, old),
            (page, 11.0, true, old),
            (page, 13.5, true, old),
            (page, 14.0, false, new),
            (page, 14.5, true, new),
            ("/v1/formations", 16.0, true, old),
        ]
    }

    #[test]
    fn the_viewers_bracket_when_the_users_got_a_claimed_write_and_the_warmers_figure_is_set_beside_it() {
        let (mut history, key) = history();
        let (v0, v1) = (history.state("v0"), history.state("v1"));
        let page = "/v1/formations/3001F";
        let answers =
            [Answer { path: page.to_owned(), sent: 15.0, age: None, readable: true, facts: Some(vec![(key, v1)]) }];
        let (old, new) = ([(key, v0)], [(key, v1)]);
        let reads = reads(page, &old, &new);
        // The tick before sent its batch with its mark at 8 s; this one marked at 12 s: it claimed
        // v1 (10 s), and measured 5 s, from v1's commit to its read at 15 s.
        let checks = [check("fresh", 15.0, 12.0, Some(5.0))];
        let found = compare(&checks, &answers, &reads, &[8.0, 12.0], &timing(1.0), &history);
        let expected = Bracket {
            page: page.to_owned(),
            commit: 10.0,
            read: 15.0,
            warmer: 5.0,
            without: 3.5,
            with: Some(4.0),
            held: true,
            earlier: false,
            regressed: false,
        };
        assert_eq!(found.freshness, vec![expected]);
        assert_eq!((found.short(), found.freshness_agrees(), found.regressed().len()), (0, Some(true), 0));
        // With a tolerance of half a second, 5 s is after the users' bracket (3.5 s to 4 s).
        let found = compare(&checks, &answers, &reads, &[8.0], &timing(0.5), &history);
        assert_eq!((found.freshness_agrees(), found.report()["freshness_apart"].as_u64()), (Some(false), Some(1)));
        // A figure that starts after v1's commit (3 s: from 12 s) did not measure it: short, and
        // not compared; one that starts a second before it counts from a write the checker does
        // not follow: not compared either.
        for (figure, short) in [(3.0, 1), (6.0, 0)] {
            let checks = [check("fresh", 15.0, 12.0, Some(figure))];
            let found = compare(&checks, &answers, &reads, &[8.0], &timing(1.0), &history);
            assert_eq!((found.short(), found.freshness_agrees()), (short, None), "{figure}");
        }
        // A viewer that got the page without v1 after the warmer found it fresh: counted, and the
        // page is not compared.
        let mut late = reads.clone();
        late.push((page, 15.5, true, &old));
        let found = compare(&checks, &answers, &late, &[8.0], &timing(1.0), &history);
        assert_eq!((found.regressed().len(), found.freshness_agrees()), (1, None));
        assert_eq!(found.freshness[0].with, Some(4.0), "the bracket ends at the warmer's read");
        // Had the tick measured marked at 14.5 s, the viewers got v1 (at 14 s) before it: an
        // earlier invalidation brought it, and the warmer's figure is only an upper bound.
        let later = [check("fresh", 15.0, 14.5, Some(5.0))];
        let found = compare(&later, &answers, &reads, &[8.0], &timing(1.0), &history);
        assert!(found.freshness[0].earlier);
        assert_eq!(found.freshness_agrees(), None);
        // Had a tick marked at 11 s sent its batch, v1 would have been its claim: nothing to compare.
        let found = compare(&checks, &answers, &reads, &[11.0], &timing(1.0), &history);
        assert!(found.freshness.is_empty());
        // No viewer read the page without it: nothing to compare.
        let found = compare(&checks, &answers, &reads[3..], &[8.0], &timing(1.0), &history);
        assert!(found.freshness.is_empty());
    }
}
