//! The change-feed follower: when to poll, what a poll means for the cache, and whether the cache
//! can still vouch for an entry.
//!
//! The rules, which docs/freshness.md states as the instance's freshness bound:
//!
//! - An instance polls at most once per `poll_interval`, and only while it serves requests (an
//!   idle or frozen Lambda instance does no database work).
//! - A request that finds a poll due starts it in the background and waits for it at most
//!   `poll_wait` (tens of milliseconds); so does a request arriving just after a poll started.
//!   (A cold instance, which has nothing cached to serve, waits up to the poll's timeout for its
//!   first feed position instead, so that its first answers can be kept.)
//!   Then it answers from the cache whatever the poll is doing: a locked or slow feed never holds
//!   a hit longer than that. The poll itself gives up after its own timeout. Once a poll took
//!   longer than `poll_wait` (or failed), requests stop waiting for polls at all until one
//!   finishes within it again: a slow feed costs hits nothing, and the freshness bound below does
//!   not depend on the waiting.
//! - On PostgreSQL a cold instance does not poll at all: its first loads read the feed position in
//!   the same round trip as their data ([`store::Position::Take`]), and the first position read
//!   is adopted ([`Follower::adopt`]). Its first answer then costs one database round trip, not a
//!   poll followed by a read.
//! - A successful poll that *started* at `P` has evicted every change visible before `P`. An entry
//!   loaded at `L` can therefore miss only changes made visible after `max(L, P)`. A hit is served
//!   only while `now - max(L, P) <= max_lag`; past that (the feed has been unreadable for a while)
//!   the entry is reloaded instead. So no committed change stays invisible on an instance for
//!   longer than `max_lag`, whatever happens to the feed.
//! - A poll reads at most [`FEED_LIMIT`] changes. More than that (an instance frozen for hours, a
//!   bulk write) drops the whole cache, which is cheap, and resumes from the present: the work and
//!   memory of a poll are bounded whatever arrives. So does a poll that learns that a change
//!   processed since its cursor was read has been pruned (an instance idle for longer than the
//!   warmer's retention): it could not read that change, so it cannot vouch for anything it holds,
//!   its stale copies included.
//!
//! The state lives behind one `std::sync::Mutex`: it is held for a few comparisons, never across
//! an `.await`, so a blocking mutex is cheaper than an async one. A `Notify` wakes the requests that
//! wait for a poll; it carries no state.

use std::collections::HashSet;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use store::{FeedCursor, FeedPage};
use tokio::sync::Notify;

/// Most changes one poll reads; beyond it the instance drops its cache and resyncs.
pub(crate) const FEED_LIMIT: usize = 10_000;

/// The follower's settings.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FeedSettings {
    /// Minimum time between two polls of this instance.
    pub(crate) poll_interval: Duration,
    /// How long a request waits for a due or just-started poll before answering anyway.
    pub(crate) poll_wait: Duration,
    /// The database's limit on a poll's statement; a cold instance waits this long for its first
    /// poll. (A connection silent for longer is taken for dead by the store.)
    pub(crate) poll_timeout: Duration,
    /// The freshness bound: the longest a hit may go unverified by a successful poll.
    pub(crate) max_lag: Duration,
    /// A cold instance takes its position from its first load instead of a poll of its own (the
    /// store can read both in one round trip).
    pub(crate) start_with_first_read: bool,
}

/// What a request does about the feed before it looks at the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// Go ahead: no poll is due, or the one running has had its share of waiting.
    Proceed,
    /// A poll is due and this request is the one to start it; then wait for poll number `seq`
    /// until `deadline`.
    Start {
        /// Give up waiting at this instant.
        deadline: Instant,
        /// Polls completed before this one.
        seq: u64,
    },
    /// A poll started moments ago; wait for it until `deadline`.
    Wait {
        /// Give up waiting at this instant.
        deadline: Instant,
        /// Polls completed before the running one.
        seq: u64,
    },
}

/// What a successful poll read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Polled {
    /// The first poll of the instance: the feed's present position.
    Started(FeedCursor),
    /// Changes since the last position.
    Page(FeedPage),
}

/// What the cache must do with a poll's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Apply {
    /// Nothing changed.
    Nothing,
    /// Evict every entry carrying one of these tags.
    Evict(HashSet<String>),
    /// Drop everything: the instance starts following the feed now, or fell too far behind.
    Reset,
}

impl Polled {
    /// The cursor to continue from.
    fn cursor(&self) -> &FeedCursor {
        match self {
            Self::Started(cursor) => cursor,
            Self::Page(page) => &page.cursor,
        }
    }

    /// What the cache must do.
    pub(crate) fn apply(&self) -> Apply {
        match self {
            Self::Started(_) => Apply::Reset,
            Self::Page(page) if page.overflow => Apply::Reset,
            Self::Page(page) if page.changes.is_empty() => Apply::Nothing,
            Self::Page(page) => Apply::Evict(page.changes.iter().map(|c| c.tag.clone()).collect()),
        }
    }
}

/// The follower's state: position, and what is known about the last polls.
#[derive(Debug, Default)]
struct FeedState {
    /// Position in the feed; `None` until the first successful poll. Until then nothing loaded
    /// is kept, since a change between a load and the first poll would go unnoticed.
    cursor: Option<FeedCursor>,
    /// Start of the last successful poll: every change visible before it has been evicted.
    verified_at: Option<Instant>,
    /// Start of the last poll attempt, successful or not: the interval counts from it.
    attempted_at: Option<Instant>,
    /// Start of the poll running now.
    in_flight: Option<Instant>,
    /// Polls completed (successful or not), so a waiter can tell whether its poll finished.
    completed: u64,
    /// Failed polls since the metrics last took the count.
    failures: u64,
    /// The last poll failed or took longer than `poll_wait`: requests do not wait for polls until
    /// one finishes within it again.
    slow: bool,
}

/// The follower: [`FeedState`] behind its lock, and the signal of a finished poll.
#[derive(Debug)]
pub(crate) struct Follower {
    /// Settings, fixed at start.
    pub(crate) settings: FeedSettings,
    /// The state; see the module documentation for why a blocking mutex.
    state: Mutex<FeedState>,
    /// Wakes requests waiting for a poll.
    done: Notify,
}

impl Follower {
    pub(crate) fn new(settings: FeedSettings) -> Self {
        Self { settings, state: Mutex::new(FeedState::default()), done: Notify::new() }
    }

    fn state(&self) -> MutexGuard<'_, FeedState> {
        // A panic while holding this lock cannot leave the plain values inconsistent.
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Decides what a request arriving at `now` does; a `Start` marks the poll as running.
    pub(crate) fn step(&self, now: Instant) -> Step {
        let s = self.settings;
        let mut state = self.state();
        if state.cursor.is_none() && s.start_with_first_read {
            // The loads themselves read the position; see `adopt`.
            return Step::Proceed;
        }
        // Until the first poll succeeds nothing is cached, so no hit can be held up: a cold
        // instance waits for its feed position (up to the poll's timeout), and its first answers
        // can then be kept.
        let wait = match (&state.cursor, state.slow) {
            (None, _) => s.poll_timeout,
            (Some(_), false) => s.poll_wait,
            (Some(_), true) => Duration::ZERO,
        };
        if let Some(started) = state.in_flight {
            let deadline = started + wait;
            return if now < deadline { Step::Wait { deadline, seq: state.completed } } else { Step::Proceed };
        }
        let due = state.attempted_at.is_none_or(|at| now.saturating_duration_since(at) >= s.poll_interval);
        if !due {
            return Step::Proceed;
        }
        state.in_flight = Some(now);
        state.attempted_at = Some(now);
        Step::Start { deadline: now + wait, seq: state.completed }
    }

    /// Waits until the poll that `seq` counts up to has completed, or until `deadline`.
    pub(crate) async fn wait(&self, seq: u64, deadline: Instant) {
        let notified = self.done.notified();
        if self.state().completed != seq {
            return;
        }
        let _ = tokio::time::timeout_at(deadline.into(), notified).await;
    }

    /// The position to poll from (`None`: the first poll reads the present position).
    pub(crate) fn cursor(&self) -> Option<FeedCursor> {
        self.state().cursor.clone()
    }

    /// Whether the feed position is known, so that a load starting now may be kept.
    pub(crate) fn following(&self) -> bool {
        self.state().cursor.is_some()
    }

    /// Records a poll that started at `started`, succeeded and finished at `finished`, after its
    /// [`Apply`] was carried out.
    pub(crate) fn succeeded(&self, started: Instant, finished: Instant, polled: &Polled) {
        let mut state = self.state();
        state.cursor = Some(polled.cursor().clone());
        state.verified_at = Some(state.verified_at.map_or(started, |v| v.max(started)));
        state.slow = finished.saturating_duration_since(started) > self.settings.poll_wait;
        Self::finish(&mut state);
        drop(state);
        self.done.notify_waiters();
    }

    /// Adopts `cursor`, read together with a load that started at `started`, as the first
    /// position, unless the follower has one already. Returns whether that load may be kept: its
    /// position was adopted, or it sees everything the follower's position sees (changes after
    /// that the next polls evict). A load whose snapshot is older than the follower's position
    /// could lack a change committed between the two, which no poll reports: it is served once.
    /// Concurrent cold loads usually read the same snapshot, so all of them can be kept.
    pub(crate) fn adopt(&self, started: Instant, cursor: FeedCursor) -> bool {
        let mut state = self.state();
        if let Some(current) = &state.cursor {
            return cursor.sees_everything_at(current);
        }
        state.cursor = Some(cursor);
        state.verified_at = Some(started);
        // The next poll is due one interval after this read, as after a poll.
        state.attempted_at = Some(state.attempted_at.map_or(started, |at| at.max(started)));
        true
    }

    /// Records a failed poll; the next is due one interval after this one started, and requests
    /// do not wait for it.
    pub(crate) fn failed(&self) {
        let mut state = self.state();
        state.failures += 1;
        state.slow = true;
        Self::finish(&mut state);
        drop(state);
        self.done.notify_waiters();
    }

    /// For the metrics: failed polls since the last call, and how long ago the last successful
    /// poll started (`None` before the first).
    pub(crate) fn health(&self, now: Instant) -> (u64, Option<Duration>) {
        let mut state = self.state();
        let failures = std::mem::take(&mut state.failures);
        (failures, state.verified_at.map(|v| now.saturating_duration_since(v)))
    }

    fn finish(state: &mut FeedState) {
        state.in_flight = None;
        state.completed += 1;
    }

    /// Whether an entry loaded at `loaded_at` may be served as a hit at `now`: only while the
    /// changes it could be missing are younger than the freshness bound.
    pub(crate) fn vouches_for(&self, loaded_at: Instant, now: Instant) -> bool {
        self.vouches_within(loaded_at, now, self.settings.max_lag)
    }

    /// Whether the changes an entry loaded at `loaded_at` could be missing at `now` are all
    /// younger than `bound`: it was loaded, or a successful poll started, within `bound`.
    pub(crate) fn vouches_within(&self, loaded_at: Instant, now: Instant, bound: Duration) -> bool {
        // An entry younger than the bound needs no look at the feed at all (the common case).
        if now.saturating_duration_since(loaded_at) <= bound {
            return true;
        }
        self.state().verified_at.is_some_and(|verified| now.saturating_duration_since(verified) <= bound)
    }
}

#[cfg(test)]
mod tests {
    use store::Change;

    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn follower() -> Follower {
        Follower::new(FeedSettings {
            poll_interval: 1_000 * MS,
            poll_wait: 50 * MS,
            poll_timeout: 1_000 * MS,
            max_lag: 3_000 * MS,
            start_with_first_read: false,
        })
    }

    fn page(tags: &[&str], overflow: bool) -> Polled {
        let cursor = cursor_after_start();
        let changes = tags.iter().enumerate().map(|(i, t)| Change { id: i as i64 + 1, tag: (*t).into() }).collect();
        Polled::Page(FeedPage { changes, cursor, overflow })
    }

    fn cursor_after_start() -> FeedCursor {
        // The follower only stores and hands back cursors; any valid one serves.
        FeedCursor::sqlite_origin()
    }

    #[test]
    fn the_first_request_starts_a_poll_and_later_ones_wait_only_briefly() {
        let f = follower();
        let t0 = Instant::now();
        // Cold: nothing is cached yet, so waiting for the feed position holds up no hit.
        assert_eq!(f.step(t0), Step::Start { deadline: t0 + 1_000 * MS, seq: 0 });
        assert_eq!(f.step(t0 + 60 * MS), Step::Wait { deadline: t0 + 1_000 * MS, seq: 0 });
        f.succeeded(t0, t0, &Polled::Started(cursor_after_start()));
        assert!(f.following());
        // Not due again until the interval has passed since the attempt started.
        assert_eq!(f.step(t0 + 999 * MS), Step::Proceed);
        let t1 = t0 + 1_000 * MS;
        assert_eq!(f.step(t1), Step::Start { deadline: t1 + 50 * MS, seq: 1 });
        // While it runs: a request soon after waits until the same deadline, a later one not at all.
        assert_eq!(f.step(t1 + 10 * MS), Step::Wait { deadline: t1 + 50 * MS, seq: 1 });
        assert_eq!(f.step(t1 + 60 * MS), Step::Proceed);
    }

    #[test]
    fn a_cold_instance_on_postgres_takes_its_position_from_its_first_load() {
        let f = Follower::new(FeedSettings { start_with_first_read: true, ..follower().settings });
        let t0 = Instant::now();
        // No poll of its own, and nothing to wait for.
        assert_eq!(f.step(t0), Step::Proceed);
        assert!(!f.following());
        // Cold loads race: the first position read is adopted. Another that read the same
        // snapshot, or a later one, may be kept too; one whose snapshot missed a transaction the
        // adopted one saw completed (801) may not: no poll will report that transaction.
        assert!(f.adopt(t0 + 5 * MS, FeedCursor::postgres("790:805:790,801", 40)));
        assert!(f.adopt(t0, FeedCursor::postgres("790:805:790,801", 40)));
        assert!(f.adopt(t0, FeedCursor::postgres("790:806:790,801,805", 40)));
        assert!(!f.adopt(t0, FeedCursor::postgres("790:801:790", 39)));
        assert!(f.following());
        // The load vouches like a poll that started when it did; polls resume an interval later.
        assert!(f.vouches_for(t0, t0 + 3_005 * MS));
        assert!(!f.vouches_for(t0, t0 + 3_006 * MS));
        assert_eq!(f.step(t0 + 1_004 * MS), Step::Proceed);
        assert!(matches!(f.step(t0 + 1_005 * MS), Step::Start { seq: 0, .. }));
    }

    #[test]
    fn after_a_slow_poll_requests_stop_waiting_for_polls_until_one_is_quick_again() {
        let f = follower();
        let t0 = Instant::now();
        assert!(matches!(f.step(t0), Step::Start { .. }));
        f.succeeded(t0, t0, &Polled::Started(cursor_after_start()));
        // A poll that takes 200 ms, four times what a request waits for one.
        let t1 = t0 + 1_000 * MS;
        assert_eq!(f.step(t1), Step::Start { deadline: t1 + 50 * MS, seq: 1 });
        f.succeeded(t1, t1 + 200 * MS, &page(&[], false));
        // The next due poll starts, and neither its starter nor a request right after it waits.
        let t2 = t1 + 1_000 * MS;
        assert_eq!(f.step(t2), Step::Start { deadline: t2, seq: 2 });
        assert_eq!(f.step(t2 + MS), Step::Proceed);
        // It was quick: waiting resumes for the poll after it.
        f.succeeded(t2, t2 + 2 * MS, &page(&[], false));
        let t3 = t2 + 1_000 * MS;
        assert_eq!(f.step(t3), Step::Start { deadline: t3 + 50 * MS, seq: 3 });
        // A failed poll counts as slow.
        f.failed();
        let t4 = t3 + 1_000 * MS;
        assert_eq!(f.step(t4), Step::Start { deadline: t4, seq: 4 });
    }

    #[test]
    fn a_failed_poll_is_retried_after_the_interval_and_never_blocks() {
        let f = follower();
        let t0 = Instant::now();
        assert!(matches!(f.step(t0), Step::Start { .. }));
        f.failed();
        assert!(!f.following());
        assert_eq!(f.health(t0), (1, None));
        assert_eq!(f.health(t0), (0, None), "the count is taken");
        assert_eq!(f.step(t0 + 500 * MS), Step::Proceed);
        assert!(matches!(f.step(t0 + 1_000 * MS), Step::Start { seq: 1, .. }));
    }

    #[test]
    fn hits_are_vouched_for_only_within_the_freshness_bound() {
        let f = follower();
        let t0 = Instant::now();
        assert!(matches!(f.step(t0), Step::Start { .. }));
        f.succeeded(t0, t0, &Polled::Started(cursor_after_start()));
        let loaded = t0 + 100 * MS;
        // Young entries need no poll at all.
        assert!(f.vouches_for(loaded, loaded + 3_000 * MS));
        // An old entry is fine while polls succeed...
        assert!(matches!(f.step(t0 + 5_000 * MS), Step::Start { .. }));
        f.succeeded(t0 + 5_000 * MS, t0 + 5_000 * MS, &page(&[], false));
        assert!(f.vouches_for(loaded, t0 + 7_000 * MS));
        // ...and not once the last successful poll started longer ago than the bound.
        assert!(matches!(f.step(t0 + 7_000 * MS), Step::Start { .. }));
        f.failed();
        assert!(f.vouches_for(loaded, t0 + 8_000 * MS));
        assert!(!f.vouches_for(loaded, t0 + 8_001 * MS));
        // An entry loaded after the feed went dark is good for the bound from its own load.
        let reloaded = t0 + 8_001 * MS;
        assert!(f.vouches_for(reloaded, reloaded + 3_000 * MS));
        assert!(!f.vouches_for(reloaded, reloaded + 3_001 * MS));
    }

    #[test]
    fn verification_never_moves_backwards() {
        let f = follower();
        let t0 = Instant::now();
        assert!(matches!(f.step(t0), Step::Start { .. }));
        f.succeeded(t0 + 2_000 * MS, t0 + 2_000 * MS, &Polled::Started(cursor_after_start()));
        // A slow poll that started earlier finishes later: it proves less than the one before.
        f.succeeded(t0, t0, &page(&[], false));
        assert!(f.vouches_for(t0, t0 + 5_000 * MS));
    }

    #[test]
    fn a_poll_maps_to_evictions_or_a_reset() {
        assert_eq!(Polled::Started(cursor_after_start()).apply(), Apply::Reset);
        assert_eq!(page(&[], false).apply(), Apply::Nothing);
        assert_eq!(
            page(&["lines", "line:minato", "lines"], false).apply(),
            Apply::Evict(["lines", "line:minato"].iter().map(|t| (*t).to_owned()).collect())
        );
        assert_eq!(page(&["lines"], true).apply(), Apply::Reset, "an overflowing page resyncs");
    }

    #[tokio::test]
    async fn waiting_ends_when_the_poll_completes() {
        let f = std::sync::Arc::new(follower());
        let t0 = Instant::now();
        let Step::Start { seq, .. } = f.step(t0) else { panic!() };
        let waiter = {
            let f = f.clone();
            tokio::spawn(async move { f.wait(seq, Instant::now() + Duration::from_secs(60)).await })
        };
        tokio::task::yield_now().await;
        f.failed();
        tokio::time::timeout(Duration::from_secs(10), waiter).await.unwrap().unwrap();
        // A poll that already completed is not waited for.
        tokio::time::timeout(Duration::from_secs(10), f.wait(seq, Instant::now() + Duration::from_secs(60)))
            .await
            .unwrap();
    }
}
