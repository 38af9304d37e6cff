//! One warmer tick, as a sequence of steps that each return what they did, summed up in one
//! [`Summary`]. What each step decides is a function of [`crate::decide`]; here it only reads,
//! calls and writes.
//!
//! - **Survey**, reads only: the calendar check, the month's budget, whether changes are pending
//!   (at a visibility mark), which build answers; and only when none of these gives the tick
//!   work, the warm set and when the edge last fetched each of its paths (read from the data
//!   tables, which a migration may hold locked: a tick with changes reads it when it warms, after
//!   the purge). With nothing to do, the tick ends there: an idle tick writes nothing, so on
//!   SQLite it never takes the write lock.
//! - **Lease**: a tick with work takes the warmer's lease ([`store::Db::take_lease`]) or, when
//!   another tick holds it, ends at once and says so (`lease_held`): at most one tick works at a
//!   time, whatever invokes them (a schedule whose runs overlap, an operator's `--once`). It
//!   renews the lease before each step, and stops if it outlived it. It gives the lease back
//!   whether it succeeded or failed, retrying until its deadline while the lease is still held: a tick that
//!   failed because the database restarted must not leave every later tick, and so every
//!   invalidation, waiting for the lease to expire.
//! - **Invalidate**: wait out the settle time since the mark, claim what the mark saw (committed
//!   at once, under the tick's token), plan, send, then complete the claim (the changes are
//!   processed) or release it (they stay pending). No transaction is open while the backend is
//!   called, and every call has its bound: statements their timeout, the backend
//!   `INVALIDATION_TIMEOUT`.
//! - **Deploy flush**: one `/*` when a new build answers.
//! - **Warm** what the invalidation emptied and what is due, and record when the edge fetched each.
//! - **Prune** the warmer's tables (no lease needed; a write only when something is to go).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use cache_policy::Policy;
use cache_policy::cost::BudgetPolicy;
use cache_policy::plan::{Context, Limits, Mode, plan};
use chrono::{DateTime, Utc};
use plumbing::error_chain;
use serde::Serialize;
use store::outbox::{Accepted, BuildSeen, Lease, Pending, VisibleMark};
use store::{Db, ServiceCalendar, StoreError};

use crate::backend::{InvalidationError, Invalidator, caller_reference};
use crate::config::WarmArgs;
use crate::decide::{self, Budget, Sent, Situation, Tally};
use crate::warm::{self, Learned, WarmPath};

/// What one tick did: printed as one JSON line.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Summary {
    /// Nothing was to be done (no change pending, no new build, nothing due): the tick only read.
    pub idle: bool,
    /// Set when another tick held the warmer's lease (who, and until when): this tick did none of
    /// the work, which that one does.
    pub lease_held: Option<String>,
    /// When the mark the claim took was seen (the warmer's clock), if the tick claimed: it held
    /// the changes that had committed by then and were still pending. Once its invalidation
    /// completed, every change committed before it has been sent.
    pub marked_at: Option<DateTime<Utc>>,
    /// Changes claimed.
    pub changes: usize,
    /// Distinct tags among them.
    pub tags: usize,
    /// Invalidation items sent.
    pub items: usize,
    /// Changes left pending because the month's budget is spent and the last batch is recent.
    pub deferred: bool,
    /// Backend invalidation id.
    pub invalidation_id: Option<String>,
    /// Backend status after waiting (if it waited).
    pub invalidation_status: Option<String>,
    /// Processed changes deleted for being older than the retention window.
    pub pruned: u64,
    /// Changes still pending after the tick.
    pub pending: i64,
    /// Age of the oldest of them, in seconds.
    pub oldest_pending_age_s: Option<f64>,
    /// CloudFront items sent this month before this tick (CloudFront only).
    pub items_this_month: Option<u64>,
    /// The month's path budget.
    pub path_budget: u64,
    /// The invalidation sent because a new API build started answering, if one was.
    pub deploy_invalidation: Option<String>,
    /// Set when the database's triggers compute service days with another calendar than this
    /// warmer (and presumably the API) uses: another zone or day start, or, within 400 days of
    /// today, other clock changes (the zone's rules changed since `migrate`). `operations:{date}`
    /// tags then name the wrong day. Fix it with `api migrate` under the right SERVICE_TZ /
    /// SERVICE_DAY_START, with the current zone rules.
    pub calendar_mismatch: Option<String>,
    /// Paths warmed successfully.
    pub warmed: usize,
    /// Of those, already cached at the edge.
    pub warm_hits: usize,
    /// Of those, fetched from the origin by the edge.
    pub warm_misses: usize,
    /// Warm requests that failed.
    pub failures: usize,
    /// Paths due or emptied that this tick's warm budget left for the next.
    pub warm_skipped: usize,
    /// Learned paths in the warm set.
    pub learned: usize,
    /// Of the paths warmed, learned ones.
    pub learned_rewarmed: usize,
    /// Of the paths skipped over budget, learned ones.
    pub learned_skipped: usize,
    /// Of the warm requests that failed, for learned paths.
    pub learned_failed: usize,
    /// Learned paths forgotten for age or rank.
    pub learned_pruned: u64,
    /// Warm state rows deleted for being older than the longest edge TTL.
    pub warm_state_pruned: u64,
    /// Recorded invalidations deleted for being from before last month.
    pub invalidations_pruned: u64,
    /// Paths the invalidation emptied whose answer, read back through the edge, shows every
    /// claimed change covering it (its `x-edgerail-version` sees their transactions).
    pub verified: usize,
    /// Of those read back, how many the edge still answered with older data after the
    /// invalidation completed (a purge that did not take).
    pub verified_stale: usize,
    /// The first of those paths (at most 20).
    pub stale_paths: Vec<String>,
    /// Of those read back, how many could not be checked (a failed request, no version, a copy
    /// served while the database was down, a backlog too large to list its writers).
    pub verified_unknown: usize,
    /// The second invalidation sent for the paths found stale (their tags again), if one was.
    pub repair_invalidation: Option<String>,
    /// Stale paths whose repair waits as pending changes again (over the month's budget, as a
    /// change would, or not accepted by the backend); the next tick sends it.
    pub repair_deferred: usize,
    /// Stale paths repaired but not read again (it did not complete in time, or the warm budget
    /// was spent).
    pub repair_unchecked: usize,
    /// Stale paths read back again after the repair completed that showed their changes.
    pub repaired: usize,
    /// Paths stale after a second invalidation (read again after the repair, or lacking a change
    /// an earlier tick requeued as a repair): the alarm's count.
    pub repair_failed: usize,
    /// The paths still stale after the repair (at most 20).
    pub repair_failed_paths: Vec<String>,
    /// How long after a change became visible the edge answered with it, over the paths read
    /// back (fresh ones, repaired ones; one still stale counts with how long it had been stale,
    /// a lower bound): the median, in seconds.
    pub freshness_p50_s: Option<f64>,
    /// Their 99th percentile.
    pub freshness_p99_s: Option<f64>,
    /// Their maximum.
    pub freshness_max_s: Option<f64>,
    /// What freshness counts from: `commit` (PostgreSQL with `track_commit_timestamp` on) or
    /// `mark` (the tick's look at the feed that found the change pending: later than its commit,
    /// by up to a tick, so the figure errs short).
    pub freshness_from: Option<&'static str>,
    /// Tick duration in milliseconds.
    pub duration_ms: u64,
    /// Why the tick failed, if it did (the changes stay pending).
    pub error: Option<String>,
    /// Whether retrying later can succeed.
    pub retryable: Option<bool>,
}

/// Why a tick failed. Every variant leaves the claimed changes pending.
#[derive(Debug, thiserror::Error)]
pub enum TickError {
    /// The database failed.
    #[error("database")]
    Store(#[from] StoreError),
    /// The backend did not accept the invalidation.
    #[error("invalidation")]
    Invalidation(#[from] InvalidationError),
    /// The tick outlived its lease and another tick took it: this one stopped, the others do
    /// the rest.
    #[error("the lease expired during the tick, and another tick took it")]
    LeaseLost,
}

impl TickError {
    /// Whether the next tick can succeed with nobody changing anything: throttling, a network
    /// or database outage do; a rejected batch or missing permission need an operator.
    pub fn retryable(&self) -> bool {
        match self {
            Self::Store(_) | Self::LeaseLost => true,
            Self::Invalidation(e) => e.retryable(),
        }
    }
}

/// A failed tick: the summary of what it did get done, and why it stopped.
#[derive(Debug, thiserror::Error)]
#[error("the tick failed; its changes stay pending")]
pub struct TickFailure {
    /// What the tick did before it failed (with `error` and `retryable` filled in).
    pub summary: Summary,
    /// The cause.
    #[source]
    pub error: TickError,
}

/// Everything a tick needs.
#[derive(Debug, Clone)]
pub struct Warmer {
    /// The API's database (change feed, ids for the warm set, warmer state).
    pub db: Db,
    /// Where invalidations go.
    pub invalidator: Invalidator,
    /// The cache policy.
    pub policy: &'static Policy,
    /// Service days, for `today`.
    pub calendar: ServiceCalendar,
    /// Tags or paths.
    pub mode: Mode,
    /// Planner limits (the remaining budget is filled in per tick).
    pub limits: Limits,
    /// The monthly path budget and what happens past it (CloudFront only).
    pub budget: BudgetPolicy,
    /// Most distinct tags per tick (a tick takes every change carrying them).
    pub batch: i64,
    /// How long a change must have been visible before it is claimed.
    pub settle: Duration,
    /// Processed changes older than this are pruned.
    pub retention: Duration,
    /// The longest a tick holds the warmer's lease without renewing it.
    pub lease: Duration,
    /// Whether every completed batch (and a deploy's `/*`) is sent once more, as soon as it
    /// completed (layered caches), not only the tags of pages read back stale.
    pub repeat: bool,
    /// Warming settings.
    pub warm: WarmArgs,
    /// How long to wait for a CloudFront invalidation to complete before warming.
    pub wait_timeout: Duration,
    /// How often to poll its status meanwhile.
    pub poll_interval: Duration,
    /// HTTP client for warming.
    pub http: reqwest::Client,
    /// Whether each tick writes an Embedded Metric Format line.
    pub metrics: bool,
}

impl Warmer {
    /// Runs one tick.
    ///
    /// # Errors
    ///
    /// [`TickFailure`] when the survey or the invalidation step failed; its changes stay pending
    /// for the next tick. Warming is best effort: its failures are counted in the summary, not
    /// raised.
    #[tracing::instrument(name = "tick", skip_all, fields(changes, items, invalidation_id, warmed, failures))]
    pub async fn tick(&self) -> Result<Summary, TickFailure> {
        let started = Instant::now();
        // The tick ends before its lease would: every wait is cut to what is left of it.
        let deadline =
            Deadline(started + self.lease.saturating_sub(self.lease.div_f64(10.0).max(Duration::from_secs(1))));
        let calendar_mismatch = self.calendar_mismatch().await;
        let (steps, worked) = match Box::pin(self.survey()).await {
            Ok(survey) => {
                let deferred = survey.deferred();
                if deferred {
                    let used = survey.items_this_month;
                    tracing::info!(
                        ?used,
                        budget = self.budget.budget,
                        "over the month's budget: changes wait to coalesce"
                    );
                }
                let surveyed = Invalidated {
                    items_this_month: survey.items_this_month,
                    deferred,
                    today: self.today(),
                    ..Invalidated::default()
                };
                let (mut steps, worked) = if survey.has_work() {
                    Box::pin(self.under_lease(deadline)).await
                } else {
                    (Steps { idle: true, ..Steps::default() }, Ok(()))
                };
                steps.invalidated.get_or_insert(surveyed);
                (steps, worked)
            }
            Err(err) => (Steps::default(), Err(err)),
        };
        // After a failed survey the database may not answer at all: no more waiting on it.
        let pending = if worked.is_ok() { self.db.pending().await.ok() } else { None };
        let error = worked.as_ref().err();
        let summary = Summary::of(Tick {
            calendar_mismatch,
            steps: &steps,
            pending,
            path_budget: self.budget.budget,
            duration: started.elapsed(),
            error,
        });
        let span = tracing::Span::current();
        span.record("changes", summary.changes);
        span.record("items", summary.items);
        span.record("warmed", summary.warmed);
        span.record("failures", summary.failures);
        if let Some(id) = &summary.invalidation_id {
            span.record("invalidation_id", id.as_str());
        }
        match worked {
            Ok(()) => Ok(summary),
            Err(error) => {
                tracing::error!(error = %error_chain(&error), retryable = error.retryable(), "tick failed");
                Err(TickFailure { summary, error })
            }
        }
    }

    /// Compares the triggers' calendar with this process's, and the service days they put the
    /// next and last 400 days in; `None` when they agree (or the database cannot say, which the
    /// rest of the tick will report).
    async fn calendar_mismatch(&self) -> Option<String> {
        let text = self.db.calendar_mismatch(&self.calendar, Utc::now(), CALENDAR_WINDOW).await.ok()??;
        tracing::error!(mismatch = %text, "service calendar mismatch: run `api migrate` with the right SERVICE_TZ");
        Some(text)
    }

    /// The current service day, as the routes spell it.
    fn today(&self) -> String {
        self.calendar.service_date(Utc::now()).to_string()
    }

    /// What there is to do, read without writing anything: the budget, whether changes are
    /// pending (and the mark they were seen at), whether a new build answers, whether anything is
    /// old enough to prune and, only when none of these gives the tick work, what the warm set
    /// holds and whether any of it is due.
    async fn survey(&self) -> Result<Survey, TickError> {
        // Only CloudFront bills per path; a purge or a dry run has no budget to respect.
        let used = match self.invalidator {
            Invalidator::CloudFront(_) => Some(u64::try_from(self.db.items_this_month().await?).unwrap_or(0)),
            _ => None,
        };
        let since_last = match used {
            Some(_) => self
                .db
                .recent_invalidations(1)
                .await?
                .first()
                .filter(|r| r.backend == self.invalidator.name())
                .map(|r| (Utc::now() - r.created_at).to_std().unwrap_or(Duration::ZERO)),
            None => None,
        };
        let budget = decide::budget(&self.budget, used, since_last);
        let mark = self.db.visible_mark().await?;
        let seen = Instant::now();
        let mark = self.db.pending_at(&mark).await?.then_some((mark, seen));
        let build = match self.warm.base_url.as_deref() {
            Some(base) => match warm::build_id(&self.http, base).await {
                Some(build) => Some((self.db.build_status(&build).await?, build)),
                None => None,
            },
            None => None,
        };
        let prunable = self
            .db
            .anything_to_prune(
                self.retention,
                self.warm.learned_max_age,
                self.warm.learned_max,
                self.policy.max_edge_ttl(),
            )
            .await?;
        let mut survey = Survey { items_this_month: used, budget, mark, build, warm: None, prunable };
        // The warm set is read from the data tables, which a migration or an import may hold
        // locked for seconds. Read here only to learn whether a path is due when nothing else is
        // to be done: a tick with changes reads it after it has sent their invalidation, so such
        // a lock does not hold back the purge of changes already pending. (Changes committed
        // while that later read waits are left to the next tick, as behind any slow warm step.)
        if !survey.has_work() && self.warm.base_url.is_some() {
            survey.warm = Some(self.warm_inputs().await?);
        }
        Ok(survey)
    }

    /// The warm set and when the edge last fetched each of its paths.
    async fn warm_inputs(&self) -> Result<WarmInputs, StoreError> {
        let today = self.today();
        let floor = warm::warm_set(self.policy, &self.db, &self.calendar, Utc::now(), self.warm.max_paths).await?;
        let learned = warm::learned_set(self.policy, &self.db, self.warm.learned_max).await?;
        let paths: Vec<&str> =
            floor.iter().map(|p| p.path.as_str()).chain(learned.iter().map(|l| l.warm.path.as_str())).collect();
        let fetched = self.db.warm_state(&paths).await?;
        Ok(WarmInputs { today, floor, learned, fetched })
    }

    /// Takes the lease, surveys again (what another tick did up to a moment ago is done), does
    /// the work found, and gives the lease back; or, when another tick holds it, does nothing
    /// and says so.
    /// Returns what its steps did, and the error that stopped them if one did.
    async fn under_lease(&self, deadline: Deadline) -> (Steps, Result<(), TickError>) {
        let token = lease_token();
        let taken_at = Instant::now();
        let taken = self.db.take_lease(&token, self.lease).await;
        // The database counts the lease in whole seconds, at least one.
        let held = Held { token, until: std::sync::Mutex::new(taken_at + self.lease_ttl()) };
        match taken {
            Ok(Lease::Taken) => {}
            Ok(Lease::Held { holder, until }) => {
                let until = until.map_or_else(|| "no expiry".to_owned(), |t| t.to_rfc3339());
                let text = format!("another tick holds the lease ({holder}, until {until})");
                tracing::info!(%text, "nothing done this tick");
                return (Steps { lease_held: Some(text), ..Steps::default() }, Ok(()));
            }
            Err(err) => {
                // The take may have committed with its answer lost: give back what this tick
                // may hold (only a lease under its own token is released).
                self.give_back(&held, deadline).await;
                return (Steps::default(), Err(err.into()));
            }
        }
        let done = match Box::pin(self.survey()).await {
            Ok(survey) => Box::pin(self.work(survey, &held, deadline)).await,
            Err(err) => (Steps::default(), Err(err)),
        };
        self.give_back(&held, deadline).await;
        done
    }

    /// The lease's length as the database counts it: whole seconds, at least one.
    fn lease_ttl(&self) -> Duration {
        Duration::from_secs(self.lease.as_secs().max(1))
    }

    /// Releases the lease, retrying while it would still be held: a tick that failed because the
    /// database went away (a restart, a failover) usually finds it back within seconds, and a
    /// lease left to expire would stop every tick, and so every invalidation, until it does. The
    /// retries end by the tick's deadline and a little more ([`GIVE_BACK_GRACE`], within what the
    /// deadline leaves of the lease, and so of the function's timeout on Lambda): the tick still
    /// reports how it ended.
    async fn give_back(&self, held: &Held, deadline: Deadline) {
        let stop = deadline.0 + GIVE_BACK_GRACE;
        let time_left = || held.left().min(stop.saturating_duration_since(Instant::now()));
        let mut pause = Duration::from_millis(100);
        // The first attempt has its time even for a tick that ends at its deadline.
        let mut attempt_for = time_left().max(GIVE_BACK_GRACE);
        loop {
            let attempt = tokio::time::timeout(attempt_for, self.db.release_lease(&held.token)).await;
            let err = match attempt {
                Ok(Ok(())) => return,
                Ok(Err(err)) => error_chain(&err),
                Err(_) => "no answer before the lease's expiry".to_owned(),
            };
            if time_left() <= pause {
                tracing::warn!(error = %err, "could not release the lease: it expires on its own");
                return;
            }
            tracing::debug!(error = %err, "could not release the lease yet: retrying");
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(1));
            attempt_for = time_left();
        }
    }

    /// Extends the lease before a step; fails when this tick does not hold it any more (it
    /// outlived it, and another tick took it since): then it stops, and leaves the rest to others.
    async fn renew(&self, held: &Held) -> Result<(), TickError> {
        let asked = Instant::now();
        if self.db.renew_lease(&held.token, self.lease).await? {
            *held.until.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = asked + self.lease_ttl();
            Ok(())
        } else {
            Err(TickError::LeaseLost)
        }
    }

    /// The steps of a tick that has work, under the lease `held`, ending by `deadline`: what they
    /// did, and the error that stopped them if one did.
    async fn work(&self, survey: Survey, held: &Held, deadline: Deadline) -> (Steps, Result<(), TickError>) {
        let surveyed = Invalidated {
            items_this_month: survey.items_this_month,
            deferred: survey.deferred(),
            today: self.today(),
            ..Invalidated::default()
        };
        // A flush of the whole edge follows: no use waiting for this batch to complete first.
        let flush = matches!(survey.build, Some((BuildSeen::Deployed { .. }, _)));
        let invalidated = match (survey.budget, survey.mark.clone()) {
            (Budget::Send { remaining }, Some(mark)) => {
                match Box::pin(self.send(remaining, mark, held, deadline, !flush, surveyed)).await {
                    Ok(invalidated) => invalidated,
                    Err(Failed { done, error }) => {
                        return (Steps { invalidated: Some(done), ..Steps::default() }, Err(error));
                    }
                }
            }
            _ => surveyed,
        };
        // The deploy flush, warming and pruning: each step's value is kept as it returns, so a
        // tick stopped by a failure still reports what it did.
        let (mut deployed, mut warmed, mut pruned) = (None, Warmed::default(), Pruned::default());
        let rest = async {
            if let Some((seen, build)) = &survey.build
                && !matches!(seen, BuildSeen::Known)
            {
                self.renew(held).await?;
                deployed = Box::pin(self.invalidate_deploy(build, *seen, deadline)).await?;
            }
            if let Some(base) = self.warm.base_url.as_deref() {
                self.renew(held).await?;
                let invalidated = Invalidated { deployed: deployed.is_some(), ..invalidated.clone() };
                let warming = self.warm(base, survey.warm, &invalidated, deployed.is_some(), deadline);
                warmed = match tokio::time::timeout(deadline.left(), Box::pin(warming)).await {
                    Ok(Ok(warmed)) => warmed,
                    Ok(Err(err)) => {
                        tracing::warn!(error = %error_chain(&err), "warming failed");
                        Warmed { tally: Tally { failures: 1, ..Tally::default() }, ..Warmed::default() }
                    }
                    Err(_) => {
                        tracing::warn!("warming stopped at the tick's deadline");
                        Warmed { tally: Tally { failures: 1, ..Tally::default() }, ..Warmed::default() }
                    }
                };
            }
            if survey.prunable {
                self.renew(held).await?;
                pruned = self.prune(deadline).await;
            }
            Ok::<(), TickError>(())
        };
        let result = Box::pin(rest).await;
        (Steps { invalidated: Some(invalidated), deployed, warmed, pruned, ..Steps::default() }, result)
    }

    /// Waits out the settle time since `mark` was seen, claims what it saw, plans the batch, sends
    /// it, and marks the changes processed once the backend accepted it (or leaves them pending).
    /// Returns what the survey found (`surveyed`) with what this step did added; or, when it
    /// failed, what it had done by then.
    async fn send(
        &self,
        remaining: Option<usize>,
        (mark, seen): (VisibleMark, Instant),
        held: &Held,
        deadline: Deadline,
        wait: bool,
        surveyed: Invalidated,
    ) -> Result<Invalidated, Failed> {
        let mut invalidated = surveyed;
        // Each step records what it did as it goes: a failed one reports what was done by then.
        let steps = async {
            // Claim what was visible `settle` ago: every API instance has evicted it by now, whenever
            // its transaction started.
            tokio::time::sleep(self.settle.saturating_sub(seen.elapsed())).await;
            self.renew(held).await?;
            // Taken before the claim: the database's `now()` in it is later, so freshness errs long.
            let (asked, claimed_at) = (Instant::now(), Utc::now());
            let claim = self.db.claim(self.batch, &mark, &held.token).await?;
            invalidated.claimed_at = Some(claimed_at);
            invalidated.marked_at = chrono::Duration::from_std(asked.duration_since(seen))
                .ok()
                .and_then(|waited| claimed_at.checked_sub_signed(waited));
            invalidated.from_commit = claim.tags.iter().all(|t| t.from_commit);
            // Planned for the day of the claim: a tick that straddles the rollover (it waited out the
            // settle time first) plans and warms for the new day.
            invalidated.today = self.today();
            if claim.is_empty() {
                return Ok(());
            }
            invalidated.changes = claim.changes();
            invalidated.changed = claim.tags.iter().map(|t| t.tag.clone()).collect();
            let limits = Limits { budget_remaining: remaining, ..self.limits };
            let context = Context { today: Some(invalidated.today.clone()) };
            let batch = plan(self.policy, &invalidated.changed, self.mode, &limits, &context);
            invalidated.items = batch.items.len();
            let reference = caller_reference(&self.db.identity().await?, &claim.tags, &batch.items);
            let accepted = |id, status| Accepted {
                id,
                backend: self.invalidator.name(),
                caller_reference: &reference,
                items: batch.items.len(),
                status,
            };
            if batch.items.is_empty() {
                // Tags no route carries: nothing to invalidate, but they are handled.
                claim.complete(&self.db, &accepted(None, "")).await?;
                return Ok(());
            }
            // Every call is bounded, and so is the whole submission, retries of a throttled one
            // included: it ends by the tick's deadline.
            let submitted = match tokio::time::timeout(
                deadline.left(),
                self.invalidator.submit(&batch.items, &reference),
            )
            .await
            .unwrap_or(Err(InvalidationError::Deadline))
            {
                Ok(submitted) => submitted,
                Err(err) => {
                    // Not accepted: the changes stay pending for the next tick.
                    if let Err(release) = claim.release(&self.db).await {
                        tracing::warn!(error = %error_chain(&release), "could not release the claim: the next tick takes it");
                    }
                    return Err(err.into());
                }
            };
            let written: Vec<Sent> = claim.tags.iter().map(|t| Sent::of(t, asked - seen)).collect();
            let accepted = accepted(Some(&submitted.id), &submitted.status);
            // The repeat is owed from the moment the batch is accepted: a tick that dies before it
            // sent it leaves it to the next.
            // A batch of repairs only is itself the second purge: it owes none.
            let owed = if self.repeat {
                claim.complete_owing_repeat(&self.db, &accepted).await?
            } else {
                claim.complete(&self.db, &accepted).await?;
                None
            };
            invalidated.invalidation_status = Some(submitted.status.clone());
            if wait {
                let waited =
                    self.invalidator.wait(&submitted, self.poll_interval, deadline.cap(self.wait_timeout), |_, _| {});
                match waited.await {
                    Ok(status) => invalidated.invalidation_status = Some(status),
                    Err(e) => tracing::warn!(error = %error_chain(&e), "could not follow the invalidation"),
                }
            }
            // Only a completed invalidation promises that the edge dropped what it covered; one
            // CloudFront already had was sent by an earlier tick, and may still be in progress.
            let completed = invalidated.invalidation_status.as_deref().is_some_and(crate::backend::is_completed);
            if completed && !submitted.id.starts_with(crate::backend::ALREADY_SENT) {
                let mut written = written;
                if let Some(owed) = owed {
                    let used = invalidated.items_this_month.map(|u| u + batch.items.len() as u64);
                    let again = self.send_again(&batch.items, &reference, used, deadline).await;
                    if matches!(again, Again::Completed(_)) {
                        // Sent twice and done: a page still lacking them fails a second time.
                        written.iter_mut().for_each(|s| s.repaired_by = Some(s.written_by.clone()));
                    }
                    match again.id() {
                        Some(id) => {
                            invalidated.repeated = true;
                            if let Err(err) = owed.settle(&self.db, id).await {
                                tracing::warn!(error = %error_chain(&err), "could not settle the repeat: the next tick sends it again");
                            }
                        }
                        None => {
                            // Over the budget, refused, or out of time: it stays owed, and the next
                            // tick sends it as a repair (which owes no repeat of its own) once the
                            // budget lets a batch go, as any change.
                            let tags = owed.leave();
                            tracing::info!(tags, "the batch's repeat did not go: the next tick sends it");
                        }
                    }
                }
                invalidated.completed = written;
            } else if let Some(owed) = owed {
                // Not seen complete (or CloudFront had it from a tick that died before its
                // repeat): the next tick sends the repeat, as a repair.
                let tags = owed.leave();
                tracing::info!(tags, "the batch's repeat is left to the next tick");
            }
            invalidated.invalidation_id = Some(submitted.id);
            Ok::<(), TickError>(())
        };
        match Box::pin(steps).await {
            Ok(()) => Ok(invalidated),
            Err(error) => Err(Failed { done: invalidated, error }),
        }
    }

    /// Invalidates the whole edge once when a new API build, or the same build with other settings
    /// that shape answers (the service calendar, the tag header), starts answering, so nothing the
    /// old one made outlives the deploy (one path: `/*`). What answers was read from
    /// `/health-check` through the edge (never cached there); the warm step then re-warms the
    /// whole warm set.
    /// Returns the invalidation's id, if one was sent.
    async fn invalidate_deploy(
        &self,
        build: &str,
        seen: BuildSeen,
        deadline: Deadline,
    ) -> Result<Option<String>, TickError> {
        match seen {
            BuildSeen::Known => Ok(None),
            BuildSeen::First => {
                self.db.record_build(build, None).await?;
                Ok(None)
            }
            BuildSeen::Deployed { sequence } => {
                let items = vec!["/*".to_owned()];
                // The database's identity too: a restore rewinds the sequence of builds seen.
                let identity = self.db.identity().await?;
                let reference =
                    format!("deploy-{:016x}-{build}-{sequence}", xxhash_rust::xxh3::xxh3_64(identity.as_bytes()));
                let submitted = tokio::time::timeout(deadline.left(), self.invalidator.submit(&items, &reference))
                    .await
                    .unwrap_or(Err(InvalidationError::Deadline))?;
                let accepted = Accepted {
                    id: Some(&submitted.id),
                    backend: self.invalidator.name(),
                    caller_reference: &reference,
                    items: items.len(),
                    status: &submitted.status,
                };
                self.db.record_invalidation(&accepted).await?;
                if let Err(err) = self
                    .invalidator
                    .wait(&submitted, self.poll_interval, deadline.cap(self.wait_timeout), |_, _| {})
                    .await
                {
                    tracing::warn!(error = %error_chain(&err), "could not follow the deploy invalidation");
                }
                // Behind a shield, the first `/*` may reach an edge location before the shield, which
                // refills it with the old code's answer: the flush is both `/*`s. A second that the
                // backend did not take fails the tick with the build unrecorded, so the next tick
                // sends both again. Over the month's budget it is left out on purpose.
                if self.repeat {
                    let used = match self.invalidator {
                        Invalidator::CloudFront(_) => {
                            Some(u64::try_from(self.db.items_this_month().await?).unwrap_or(0))
                        }
                        _ => None,
                    };
                    if let Again::Failed(err) = self.send_again(&items, &reference, used, deadline).await {
                        return Err(err.into());
                    }
                }
                // Recorded once both went: a tick that dies or fails before (Lambda's timeout, a
                // refused repeat) leaves the build unrecorded, and the next tick flushes for it
                // again (the same references: CloudFront answers with what it already has), twice.
                self.db.record_build(build, Some(&submitted.id)).await?;
                tracing::info!(build, invalidation = %submitted.id, "a new API build or settings: the edge was invalidated");
                Ok(Some(submitted.id))
            }
        }
    }

    /// Sends a completed batch once more (`INVALIDATION_REPEAT`: layered caches), within the
    /// month's budget as any batch (`used`: this month's paths with this tick's; over it, the
    /// repeat does not go), and waits for it. Says why one did not go: a deploy's flush fails its
    /// tick on a refusal, not over the budget.
    async fn send_again(&self, items: &[String], reference: &str, used: Option<u64>, deadline: Deadline) -> Again {
        if decide::repair_budget(&self.budget, used) == Budget::Wait {
            tracing::info!("over the month's budget: no repeat");
            return Again::OverBudget;
        }
        let reference = format!("again-{:016x}", xxhash_rust::xxh3::xxh3_64(reference.as_bytes()));
        match self.send_extra(items, &reference, deadline).await {
            Ok((id, true)) => Again::Completed(id),
            Ok((id, false)) => Again::Sent(id),
            Err(err) => {
                tracing::warn!(error = %error_chain(&err), "could not send the repeat");
                Again::Failed(err)
            }
        }
    }

    /// Sends an invalidation beyond the tick's batch (a repeat, a repair) by `until`, records it
    /// (a failed record is logged: the month's count misses it), and waits for it to complete.
    /// Returns its id and whether it completed by `until`.
    async fn send_extra(
        &self,
        items: &[String],
        reference: &str,
        until: Deadline,
    ) -> Result<(String, bool), InvalidationError> {
        let submitted = tokio::time::timeout(until.left(), self.invalidator.submit(items, reference))
            .await
            .unwrap_or(Err(InvalidationError::Deadline))?;
        let accepted = Accepted {
            id: Some(&submitted.id),
            backend: self.invalidator.name(),
            caller_reference: reference,
            items: items.len(),
            status: &submitted.status,
        };
        if let Err(err) = self.db.record_invalidation(&accepted).await {
            tracing::warn!(error = %error_chain(&err), "could not record the invalidation");
        }
        let waited = self.invalidator.wait(&submitted, self.poll_interval, until.cap(self.wait_timeout), |_, _| {});
        let status = tokio::time::timeout(until.left(), waited).await.ok().and_then(Result::ok);
        Ok((submitted.id, status.as_deref().is_some_and(crate::backend::is_completed)))
    }

    /// Warms what [`decide::choose`] picks, reads back what the invalidation emptied, records when
    /// the edge fetched each path and what its check found, then repairs what it found stale
    /// (its steps ending a little before the deadline, at most [`REPAIR_MARGIN`], so what was read
    /// is kept whatever it does).
    ///
    /// `surveyed` is the warm set the survey read, if it read one; otherwise (the tick had changes
    /// to send first) it is read now. Its paths are fetched through `base`.
    async fn warm(
        &self,
        base: &str,
        surveyed: Option<WarmInputs>,
        invalidated: &Invalidated,
        everything: bool,
        deadline: Deadline,
    ) -> Result<Warmed, StoreError> {
        let today = invalidated.today.as_str();
        // A tick that straddled the service day's rollover warms the new day's paths.
        let inputs = match surveyed {
            Some(inputs) if inputs.today == today => inputs,
            _ => self.warm_inputs().await?,
        };
        let situation = Situation {
            floor: &inputs.floor,
            learned: &inputs.learned,
            warmed: &inputs.fetched,
            changed: &invalidated.changed,
            today,
            everything_emptied: everything,
            now: Utc::now(),
            budget: self.warm.budget,
        };
        let chosen = decide::choose(self.policy, &situation);
        let fetched = warm::fetch_all(&self.http, base, &chosen.fetch, self.warm.concurrency).await;
        for f in fetched.iter().filter(|f| !f.ok()) {
            tracing::warn!(path = %f.path, status = ?f.status, error = ?f.error, "warm request failed");
        }
        // Read back: the answers to what the invalidation emptied must show the changes it was
        // sent for.
        let emptied: Vec<&str> = chosen.fetch[..chosen.emptied].iter().map(|p| p.path.as_str()).collect();
        let owed = decide::owed(self.policy, &invalidated.completed, today, &emptied);
        let claimed_at = invalidated.claimed_at.unwrap_or_else(Utc::now);
        let verified = decide::verify(&fetched, &owed, claimed_at);
        self.db.record_warm(&log_checks(checked(&fetched, &verified, "fresh"), invalidated)).await?;
        let tally = decide::tally(&fetched, &inputs.learned);
        let mut warmed = Warmed { tally, verified, chosen, learned: inputs.learned.len(), ..Warmed::default() };
        let plan = decide::repair(&warmed.verified);
        if plan.tags.is_empty() && plan.failed_again.is_empty() {
            return Ok(warmed);
        }
        if let Some(first) = warmed.verified.stale.first() {
            tracing::warn!(
                stale = warmed.verified.stale.len(),
                %first,
                "the edge still answers older data than the invalidation it completed"
            );
        }
        let reads = self.warm.budget.saturating_sub(fetched.len());
        let margin = (self.lease / 20).clamp(Duration::from_millis(100), REPAIR_MARGIN);
        let until = Deadline(deadline.0.checked_sub(margin).unwrap_or(deadline.0));
        let repairing = self.repair(&plan, &owed, invalidated, &warmed.chosen, base, reads, until);
        // Its steps end by `until`; the margin after it leaves a requeue or a record time to finish.
        let mut repair = match tokio::time::timeout(deadline.left(), Box::pin(repairing)).await {
            Ok(repair) => repair,
            Err(_) => {
                tracing::warn!("the repair did not end by the tick's deadline: its pages are not read again");
                Repair { unchecked: plan.paths.len(), ..Repair::default() }
            }
        };
        repair.failed_again = plan.failed_again;
        if !repair.fetched.is_empty() {
            self.db.record_warm(&log_checks(checked(&repair.fetched, &repair.again, "repaired"), invalidated)).await?;
        }
        let failed = repair.failed();
        if !failed.is_empty() {
            tracing::error!(stale = failed.len(), first = %failed[0], "the edge still answers older data after a second invalidation");
        }
        warmed.repair = repair;
        Ok(warmed)
    }

    /// Invalidates again the tags the stale pages lack, once, within the month's budget as any
    /// batch; over it, or when the backend does not take it, the tags become pending changes
    /// again (the next tick sends them, and their claim says they are a repair). Once it
    /// completed, reads the pages back again, at most `reads` of them (what the warm budget left).
    #[allow(clippy::too_many_arguments)]
    async fn repair(
        &self,
        decided: &decide::Repair,
        owed: &HashMap<String, Vec<&Sent>>,
        invalidated: &Invalidated,
        chosen: &decide::Warm,
        base: &str,
        reads: usize,
        until: Deadline,
    ) -> Repair {
        if decided.tags.is_empty() {
            return Repair::default();
        }
        let of = invalidated.invalidation_id.as_deref().unwrap_or("repair");
        let requeue = |why: &str| {
            // Each with what its answers must show: the writers of the changes it was sent for.
            let tags: Vec<(&str, &str)> = decided
                .tags
                .iter()
                .filter_map(|t| invalidated.completed.iter().find(|s| &s.tag == t))
                .map(|s| (s.tag.as_str(), s.written_by.as_str()))
                .collect();
            let why = why.to_owned();
            async move {
                tracing::warn!(why, "the repair waits: its tags are pending changes again");
                match self.db.requeue(&tags).await {
                    Ok(()) => Repair { deferred: decided.paths.len(), ..Repair::default() },
                    Err(err) => {
                        tracing::warn!(error = %error_chain(&err), "could not requeue the repair");
                        Repair { unchecked: decided.paths.len(), ..Repair::default() }
                    }
                }
            }
        };
        // CloudFront only: this tick's batches count, and went out just now.
        let twice = |sent: bool, again: bool| u64::from(sent) * (1 + u64::from(again));
        let sent_now =
            invalidated.items as u64 * (1 + u64::from(invalidated.repeated)) + twice(invalidated.deployed, self.repeat);
        let used = invalidated.items_this_month.map(|u| u + sent_now);
        let remaining = match decide::repair_budget(&self.budget, used) {
            Budget::Send { remaining } => remaining,
            Budget::Wait => return requeue("over the month's budget").await,
        };
        let limits = Limits { budget_remaining: remaining, ..self.limits };
        let context = Context { today: Some(invalidated.today.clone()) };
        let batch = plan(self.policy, &decided.tags, self.mode, &limits, &context);
        let reference =
            format!("repair-{:016x}", xxhash_rust::xxh3::xxh3_64(format!("{of}{:?}", batch.items).as_bytes()));
        let (id, completed) = match self.send_extra(&batch.items, &reference, until).await {
            Ok(sent) => sent,
            Err(err) => return requeue(&error_chain(&err)).await,
        };
        let mut repair = Repair { id: Some(id), ..Repair::default() };
        if !completed {
            tracing::warn!("the repair did not complete within the tick: its pages are not read again");
            repair.unchecked = decided.paths.len();
            return repair;
        }
        let again: Vec<WarmPath> =
            chosen.fetch.iter().filter(|p| decided.paths.contains(&p.path)).take(reads).cloned().collect();
        repair.unchecked = decided.paths.len() - again.len();
        let reading = warm::fetch_all(&self.http, base, &again, self.warm.concurrency);
        repair.fetched = tokio::time::timeout(until.left(), reading).await.unwrap_or_default();
        repair.unchecked += again.len() - repair.fetched.len();
        let claimed_at = invalidated.claimed_at.unwrap_or_else(Utc::now);
        repair.again = decide::verify(&repair.fetched, owed, claimed_at);
        repair
    }

    /// Bounds the warmer's tables: processed changes past the retention, learned paths past their
    /// age or rank, warm state past the longest edge TTL (such a path is due either way), recorded
    /// invalidations before last month. Each failure is logged, not raised: the next tick prunes
    /// again.
    async fn prune(&self, deadline: Deadline) -> Pruned {
        let logged = |what: &str, result: Result<u64, StoreError>| {
            result.unwrap_or_else(|err| {
                tracing::warn!(error = %error_chain(&err), "could not prune the {what}");
                0
            })
        };
        // Processed changes go a batch at a time (short statements, short holds of SQLite's write
        // lock), as many batches as the tick has time for.
        let mut changes = 0;
        loop {
            let gone = logged("processed changes", self.db.prune_changes(self.retention).await);
            changes += gone;
            if gone < store::outbox::PRUNE_BATCH || deadline.left().is_zero() {
                break;
            }
        }
        Pruned {
            changes,
            learned: logged(
                "learned paths",
                self.db.prune_learned(self.warm.learned_max_age, self.warm.learned_max).await,
            ),
            warm_state: logged("warm state", self.db.prune_warm_state(self.policy.max_edge_ttl()).await),
            invalidations: logged("recorded invalidations", self.db.prune_invalidations().await),
        }
    }

    /// Warms the whole warm set now, regardless of cadence (`cachectl warm`).
    ///
    /// # Errors
    ///
    /// The warm set could not be read, or the results not recorded.
    pub async fn warm_everything(&self, base: &str) -> Result<Vec<warm::Fetched>, StoreError> {
        let mut set = warm::warm_set(self.policy, &self.db, &self.calendar, Utc::now(), self.warm.max_paths).await?;
        let learned = warm::learned_set(self.policy, &self.db, self.warm.learned_max).await?;
        let mut seen: std::collections::HashSet<String> = set.iter().map(|p| p.path.clone()).collect();
        set.extend(learned.into_iter().map(|l| l.warm).filter(|p| seen.insert(p.path.clone())));
        let fetched = warm::fetch_all(&self.http, base, &set, self.warm.concurrency).await;
        self.db.record_warm(&warm::answered(&fetched)).await?;
        Ok(fetched)
    }
}

/// The warm records of the answers among `fetched`, each with what reading it back found
/// (`fresh` names a fresh one).
fn checked(fetched: &[warm::Fetched], verified: &decide::Verified, fresh: &'static str) -> Vec<store::outbox::Warmed> {
    let mut record: BTreeMap<String, store::outbox::Warmed> =
        warm::answered(fetched).into_iter().map(|w| (w.path.clone(), w)).collect();
    let outcomes = verified
        .fresh
        .iter()
        .map(|(path, freshness)| (path, fresh, Some(*freshness)))
        .chain(verified.stale.iter().map(|path| (path, "stale", None)))
        .chain(verified.unknown.iter().map(|path| (path, "unknown", None)));
    for (path, outcome, freshness) in outcomes {
        let at = fetched.iter().find(|f| &f.path == path).map_or_else(Utc::now, |f| f.at);
        if let Some(w) = record.get_mut(path) {
            w.verified = Some(store::outbox::Verification { outcome, freshness, at });
        }
    }
    record.into_values().collect()
}

/// Logs each check among `records` at debug level (target `warmer::check`: `RUST_LOG=warmer::check=debug`),
/// one line per page read back, with when its request was sent, when the changes it was checked
/// against were claimed and when the mark that claim took was seen (what had committed by then):
/// an operator can follow a page's checks, and the soak sets each beside its own judgement of the
/// very answer the warmer read. Returns `records`.
fn log_checks(records: Vec<store::outbox::Warmed>, invalidated: &Invalidated) -> Vec<store::outbox::Warmed> {
    let time = |at: Option<DateTime<Utc>>| at.map(|at| at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true));
    let (claimed, marked) = (time(invalidated.claimed_at), time(invalidated.marked_at));
    for (w, check) in records.iter().filter_map(|w| w.verified.as_ref().map(|v| (w, v))) {
        tracing::debug!(
            target: "warmer::check",
            path = %w.path,
            outcome = check.outcome,
            freshness_s = check.freshness.map(|f| f.as_secs_f64()),
            sent = %check.at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            claimed = claimed.as_deref(),
            marked = marked.as_deref(),
            "read back"
        );
    }
    records
}

/// What `cachectl verify` found for one path.
#[derive(Debug, Clone, Serialize)]
pub struct PathCheck {
    /// The path.
    pub path: String,
    /// `fresh` (the answer shows every change sent for invalidation that covers it), `stale`
    /// (it lacks one), `unknown` (the answer could not say), or `owes nothing` (no such change
    /// in the window).
    pub verdict: &'static str,
    /// What the edge answered.
    pub answer: warm::Fetched,
    /// Distinct tags sent for invalidation in the window that cover the path.
    pub owed_tags: usize,
}

impl Warmer {
    /// Reads `paths` through the edge at `base` and checks each answer against the changes sent
    /// for invalidation since its copy was made (its `Age`, plus a minute), leaving out those sent
    /// within `propagating` (their invalidation may still be in progress): `cachectl verify`.
    ///
    /// # Errors
    ///
    /// A path no route serves (nothing is fetched), or the database failed.
    pub async fn check_paths(
        &self,
        base: &str,
        paths: &[String],
        propagating: Duration,
    ) -> Result<Vec<PathCheck>, CheckError> {
        let mut warm = Vec::with_capacity(paths.len());
        for path in paths {
            let (route, _) = self.policy.match_path(path).ok_or_else(|| CheckError::NoRoute(path.clone()))?;
            warm.push(WarmPath { path: path.clone(), edge_ttl: route.edge_ttl });
        }
        let mut fetched = warm::fetch_all(&self.http, base, &warm, self.warm.concurrency).await;
        // In the order asked (they answer in any).
        fetched.sort_by_key(|f| paths.iter().position(|p| *p == f.path));
        let oldest = fetched.iter().filter_map(|f| f.age).max().unwrap_or_default();
        let within = oldest + propagating + Duration::from_secs(60);
        let processed = self.db.processed_since(within, propagating).await?;
        let sent: Vec<Sent> = processed.iter().map(|t| Sent::of(t, Duration::ZERO)).collect();
        let today = self.today();
        let names: Vec<&str> = paths.iter().map(String::as_str).collect();
        let owed = decide::owed(self.policy, &sent, &today, &names);
        let verified = decide::verify(&fetched, &owed, Utc::now());
        Ok(fetched
            .into_iter()
            .map(|answer| {
                let verdict = if verified.stale.contains(&answer.path) {
                    "stale"
                } else if verified.unknown.contains(&answer.path) {
                    "unknown"
                } else if owed.contains_key(&answer.path) {
                    "fresh"
                } else {
                    "owes nothing"
                };
                let owed_tags = owed.get(&answer.path).map_or(0, Vec::len);
                PathCheck { path: answer.path.clone(), verdict, answer, owed_tags }
            })
            .collect())
    }
}

/// Why `cachectl verify` checked nothing.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// The path is not one the API serves.
    #[error("no route serves {0}")]
    NoRoute(String),
    /// The database failed.
    #[error("cannot read the changes sent for invalidation")]
    Store(#[from] StoreError),
}

/// The lease this tick holds: its token, and a time it is held until at least (measured from
/// before the statement that took or last renewed it, so never later than the database's own).
struct Held {
    token: String,
    until: std::sync::Mutex<Instant>,
}

impl Held {
    /// What is left of the lease.
    fn left(&self) -> Duration {
        self.until.lock().unwrap_or_else(std::sync::PoisonError::into_inner).saturating_duration_since(Instant::now())
    }
}

/// A token naming this tick as the lease's holder: where it runs (the Lambda instance's log
/// stream, or the host), its process and when it started, so an operator can tell who held it.
fn lease_token() -> String {
    let place = std::env::var("AWS_LAMBDA_LOG_STREAM_NAME")
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_else(|_| "local".to_owned());
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    format!("{place}:{}:{nanos}", std::process::id())
}

/// The most a repair leaves of the tick's deadline, to record what it read (a twentieth of the
/// lease, at least 100 ms, when that is less).
const REPAIR_MARGIN: Duration = Duration::from_secs(2);

/// How long past its deadline a tick may still try to give its lease back: half of the least the
/// deadline leaves before the lease (and the function's timeout) ends.
const GIVE_BACK_GRACE: Duration = Duration::from_millis(500);

/// When a tick must be done: before its lease would expire (less a tenth, at least a second).
#[derive(Debug, Clone, Copy)]
struct Deadline(Instant);

impl Deadline {
    /// What is left until it.
    fn left(self) -> Duration {
        self.0.saturating_duration_since(Instant::now())
    }

    /// `wait`, or less if the deadline comes first.
    fn cap(self, wait: Duration) -> Duration {
        wait.min(self.left())
    }
}

/// How far from today the calendar check compares service days, both ways: a year of dated
/// answers and a margin.
const CALENDAR_WINDOW: chrono::Days = chrono::Days::new(400);

/// What the survey found.
struct Survey {
    /// CloudFront items sent this month before this tick (CloudFront only).
    items_this_month: Option<u64>,
    /// What the budget lets the tick do.
    budget: Budget,
    /// The mark at which changes were pending, and when it was taken (`None`: none was).
    mark: Option<(VisibleMark, Instant)>,
    /// The build that answers, and what the warmer knows of it (`None`: no edge, or it did not
    /// say).
    build: Option<(BuildSeen, String)>,
    /// The warm set, read only when nothing else was to be done (`None`: not read, or no edge to
    /// warm through).
    warm: Option<WarmInputs>,
    /// Something is old enough to prune.
    prunable: bool,
}

impl Survey {
    /// Whether changes are pending but the month's budget makes them wait.
    fn deferred(&self) -> bool {
        self.mark.is_some() && self.budget == Budget::Wait
    }

    /// Whether the tick has anything to do: changes to claim, a build to record or flush for,
    /// a path to warm, or rows to prune.
    fn has_work(&self) -> bool {
        (self.mark.is_some() && !self.deferred())
            || self.prunable
            || matches!(self.build, Some((BuildSeen::First | BuildSeen::Deployed { .. }, _)))
            || self.warm.as_ref().is_some_and(WarmInputs::any_due)
    }
}

/// The warm set, as the survey (or, in a tick with changes, the warm step) read it.
struct WarmInputs {
    /// The service day it was read for.
    today: String,
    /// The floor.
    floor: Vec<WarmPath>,
    /// The learned paths.
    learned: Vec<Learned>,
    /// When the edge last fetched each of them from the origin, as far as the warmer knows.
    fetched: HashMap<String, DateTime<Utc>>,
}

impl WarmInputs {
    /// Whether any path is due now, with nothing changed.
    fn any_due(&self) -> bool {
        let now = Utc::now();
        self.floor.iter().any(|p| decide::is_due(p.edge_ttl, self.fetched.get(&p.path).copied(), now))
            || self.learned.iter().any(|l| {
                decide::is_due(
                    l.warm.edge_ttl,
                    Some(decide::last_fetch(l, self.fetched.get(&l.warm.path).copied())),
                    now,
                )
            })
    }
}

/// What the prunes deleted.
#[derive(Debug, Clone, Copy, Default)]
struct Pruned {
    changes: u64,
    learned: u64,
    warm_state: u64,
    invalidations: u64,
}

/// What a tick's steps did.
#[derive(Debug, Default)]
struct Steps {
    /// Nothing was to be done.
    idle: bool,
    /// Another tick held the lease: who, and until when.
    lease_held: Option<String>,
    invalidated: Option<Invalidated>,
    deployed: Option<String>,
    warmed: Warmed,
    pruned: Pruned,
}

/// What the invalidation step did.
#[derive(Debug, Clone, Default)]
struct Invalidated {
    /// Changes claimed.
    changes: usize,
    /// Their distinct tags.
    changed: BTreeSet<String>,
    /// Items sent.
    items: usize,
    /// Over the budget: nothing was claimed, the changes wait.
    deferred: bool,
    /// The backend's id of what was sent.
    invalidation_id: Option<String>,
    /// Its status after waiting for it.
    invalidation_status: Option<String>,
    /// CloudFront items sent this month before this tick.
    items_this_month: Option<u64>,
    /// Once their invalidation completed, each claimed tag with what wrote its changes: what the
    /// emptied paths are read back against.
    completed: Vec<Sent>,
    /// When the claim was asked (the warmer's clock).
    claimed_at: Option<DateTime<Utc>>,
    /// When the mark the claim took was seen (the warmer's clock): the claim holds what had
    /// committed by then.
    marked_at: Option<DateTime<Utc>>,
    /// Whether the claim's ages count from commits (else from the mark that found them).
    from_commit: bool,
    /// Whether a deploy's `/*` went out this tick too (a CloudFront item of the month's).
    deployed: bool,
    /// Whether the batch was sent a second time (`INVALIDATION_REPEAT`).
    repeated: bool,
    /// The service day it was planned for.
    today: String,
}

/// An invalidation step that failed: what it had done by then, and why it stopped.
struct Failed {
    done: Invalidated,
    error: TickError,
}

/// What the warm step did.
#[derive(Debug, Clone, Default)]
struct Warmed {
    /// What was chosen.
    chosen: decide::Warm,
    /// What the requests did.
    tally: Tally,
    /// What reading the emptied paths back showed.
    verified: decide::Verified,
    /// What the repair of the stale ones did.
    repair: Repair,
    /// Learned paths in the warm set.
    learned: usize,
}

impl Warmed {
    /// The freshness of every page read back: fresh at the first read or after the repair, or,
    /// still stale, how long it had been (at its last read).
    fn freshness(&self) -> Vec<Duration> {
        let first = &self.verified;
        let again = &self.repair.again;
        let mut measured: BTreeMap<&str, Duration> = first.fresh.iter().map(|(p, f)| (p.as_str(), *f)).collect();
        for (path, (_, so_far)) in first.lacking.iter().chain(&again.lacking) {
            measured.insert(path, *so_far);
        }
        measured.extend(again.fresh.iter().map(|(p, f)| (p.as_str(), *f)));
        measured.into_values().collect()
    }
}

/// How a repeated batch went.
#[derive(Debug)]
enum Again {
    /// Sent (its id), and completed.
    Completed(String),
    /// Sent (its id); not completed within the tick.
    Sent(String),
    /// Not sent, on purpose: over the month's budget.
    OverBudget,
    /// Not sent: the backend did not take it, or the tick ran out of time.
    Failed(InvalidationError),
}

impl Again {
    /// The repeat's invalidation id, if it was sent.
    fn id(&self) -> Option<&str> {
        match self {
            Self::Completed(id) | Self::Sent(id) => Some(id),
            Self::OverBudget | Self::Failed(_) => None,
        }
    }
}

/// What a repair did.
#[derive(Debug, Clone, Default)]
struct Repair {
    /// The second invalidation's id, if one was sent.
    id: Option<String>,
    /// Stale pages whose repair waits as pending changes (over the budget, or not accepted).
    deferred: usize,
    /// Stale pages repaired but not read again (it did not complete in time, or no warm budget
    /// was left).
    unchecked: usize,
    /// The stale pages read again once it completed.
    fetched: Vec<warm::Fetched>,
    /// What that read showed.
    again: decide::Verified,
    /// Stale pages that lacked a repair already: their second failure.
    failed_again: Vec<String>,
}

impl Repair {
    /// The pages stale after a second invalidation: read again after this one, or lacking a
    /// requeued one.
    fn failed(&self) -> Vec<String> {
        let mut failed: Vec<String> = self.again.stale.iter().chain(&self.failed_again).cloned().collect();
        failed.sort();
        failed
    }
}

/// Everything a tick's steps returned, for its summary.
struct Tick<'a> {
    calendar_mismatch: Option<String>,
    steps: &'a Steps,
    pending: Option<Pending>,
    path_budget: u64,
    duration: Duration,
    error: Option<&'a TickError>,
}

impl Summary {
    /// The summary of a tick, assembled once from what its steps returned.
    fn of(tick: Tick<'_>) -> Self {
        let steps = tick.steps;
        let invalidated = steps.invalidated.clone().unwrap_or_default();
        let (warm, tally) = (&steps.warmed.chosen, &steps.warmed.tally);
        let repair = &steps.warmed.repair;
        let failed = repair.failed();
        let measured = steps.warmed.freshness();
        let freshness = decide::spread(&measured);
        Self {
            idle: steps.idle,
            lease_held: steps.lease_held.clone(),
            changes: invalidated.changes,
            tags: invalidated.changed.len(),
            items: invalidated.items,
            deferred: invalidated.deferred,
            invalidation_id: invalidated.invalidation_id,
            invalidation_status: invalidated.invalidation_status,
            pruned: steps.pruned.changes,
            pending: tick.pending.map_or(0, |p| p.count),
            oldest_pending_age_s: tick
                .pending
                .and_then(|p| p.oldest)
                .map(|t| (Utc::now() - t).to_std().unwrap_or(Duration::ZERO).as_secs_f64()),
            items_this_month: invalidated.items_this_month,
            marked_at: invalidated.marked_at,
            path_budget: tick.path_budget,
            deploy_invalidation: steps.deployed.clone(),
            calendar_mismatch: tick.calendar_mismatch,
            warmed: tally.warmed,
            warm_hits: tally.hits,
            warm_misses: tally.misses,
            failures: tally.failures,
            warm_skipped: warm.skipped,
            learned: steps.warmed.learned,
            learned_rewarmed: tally.learned_rewarmed,
            learned_skipped: warm.learned_skipped,
            learned_failed: tally.learned_failed,
            learned_pruned: steps.pruned.learned,
            warm_state_pruned: steps.pruned.warm_state,
            invalidations_pruned: steps.pruned.invalidations,
            verified: steps.warmed.verified.fresh.len(),
            verified_stale: steps.warmed.verified.stale.len(),
            stale_paths: steps.warmed.verified.stale.iter().take(20).cloned().collect(),
            verified_unknown: steps.warmed.verified.unknown.len(),
            repair_invalidation: repair.id.clone(),
            repair_deferred: repair.deferred,
            repair_unchecked: repair.unchecked,
            repaired: repair.again.fresh.len(),
            repair_failed: failed.len(),
            repair_failed_paths: failed.into_iter().take(20).collect(),
            freshness_p50_s: freshness.map(|f| f.p50.as_secs_f64()),
            freshness_p99_s: freshness.map(|f| f.p99.as_secs_f64()),
            freshness_max_s: freshness.map(|f| f.max.as_secs_f64()),
            freshness_from: freshness.map(|_| if invalidated.from_commit { "commit" } else { "mark" }),
            duration_ms: u64::try_from(tick.duration.as_millis()).unwrap_or(u64::MAX),
            error: tick.error.map(|e| error_chain(e)),
            retryable: tick.error.map(TickError::retryable),
        }
    }
}
