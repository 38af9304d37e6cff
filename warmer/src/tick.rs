//! One warmer tick, as a sequence of steps that each return what they did: check the calendar,
//! invalidate what changed (budget, mark, settle, claim, plan, send, complete, prune), flush the
//! edge if a new build answers, warm, bound the learned set, and sum it all up in one
//! [`Summary`]. What each step decides is a function of [`crate::decide`]; here it only reads,
//! calls and writes.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use cache_policy::Policy;
use cache_policy::cost::BudgetPolicy;
use cache_policy::plan::{Context, Limits, Mode, plan};
use chrono::Utc;
use plumbing::error_chain;
use serde::Serialize;
use store::outbox::{Accepted, BuildSeen, Pending};
use store::{Db, ServiceCalendar, StoreError};

use crate::backend::{InvalidationError, Invalidator, caller_reference};
use crate::config::WarmArgs;
use crate::decide::{self, Budget, Situation, Tally};
use crate::warm;

/// What one tick did: printed as one JSON line.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Summary {
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
    /// warmer (and presumably the API) uses: `operations:{date}` tags then name the wrong day.
    /// Fix it with `api migrate` under the right SERVICE_TZ / SERVICE_DAY_START.
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
}

impl TickError {
    /// Whether the next tick can succeed with nobody changing anything: throttling, a network
    /// or database outage do; a rejected batch or missing permission need an operator.
    pub fn retryable(&self) -> bool {
        match self {
            Self::Store(_) => true,
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
    /// [`TickFailure`] when the invalidation step failed; its changes stay pending for the next
    /// tick. Warming is best effort: its failures are counted in the summary, not raised.
    #[tracing::instrument(name = "tick", skip_all, fields(changes, items, invalidation_id, warmed, failures))]
    pub async fn tick(&self) -> Result<Summary, TickFailure> {
        let started = Instant::now();
        let calendar_mismatch = self.calendar_mismatch().await;
        // Each step's future boxed: the tick's would otherwise nest them all inline.
        let invalidated = Box::pin(self.invalidate()).await;
        let deployed = match &invalidated {
            Ok(_) => Box::pin(self.invalidate_deploy()).await,
            Err(_) => Ok(None),
        };
        let warmed = match (&invalidated, &deployed) {
            (Ok(invalidated), Ok(deployed)) => {
                Box::pin(self.warm(&invalidated.changed, &invalidated.today, deployed.is_some())).await.unwrap_or_else(
                    |err| {
                        tracing::warn!(error = %error_chain(&err), "warming failed");
                        Warmed { tally: Tally { failures: 1, ..Tally::default() }, ..Warmed::default() }
                    },
                )
            }
            _ => Warmed::default(),
        };
        let learned_pruned = match self.db.prune_learned(self.warm.learned_max_age, self.warm.learned_max).await {
            Ok(pruned) => pruned,
            Err(err) => {
                tracing::warn!(error = %error_chain(&err), "could not prune the learned paths");
                0
            }
        };
        let pending = self.db.pending().await.ok();
        let error = invalidated.as_ref().err().or(deployed.as_ref().err());
        let summary = Summary::of(Tick {
            calendar_mismatch,
            invalidated: invalidated.as_ref().ok(),
            deployed: deployed.as_ref().ok().cloned().flatten(),
            warmed: &warmed,
            learned_pruned,
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
        match invalidated.and(deployed) {
            Ok(_) => Ok(summary),
            Err(error) => {
                tracing::error!(error = %error_chain(&error), retryable = error.retryable(), "tick failed");
                Err(TickFailure { summary, error })
            }
        }
    }

    /// Compares the triggers' calendar with this process's; `None` when they agree (or the
    /// database cannot say, which the rest of the tick will report).
    async fn calendar_mismatch(&self) -> Option<String> {
        let (zone, day_start) = self.db.trigger_calendar().await.ok()?;
        let text = self.calendar.mismatch(&zone, day_start)?;
        tracing::error!(mismatch = %text, "service calendar mismatch: run `api migrate` with the right SERVICE_TZ");
        Some(text)
    }

    /// The current service day, as the routes spell it.
    fn today(&self) -> String {
        self.calendar.service_date(Utc::now()).to_string()
    }

    /// Turns what changed into an invalidation: within the month's budget, claims every change
    /// visible a settle time ago, plans the batch, sends it, marks the changes processed once the
    /// backend accepted it, and prunes old processed changes.
    async fn invalidate(&self) -> Result<Invalidated, TickError> {
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
        let mut invalidated = Invalidated { items_this_month: used, today: self.today(), ..Invalidated::default() };
        match decide::budget(&self.budget, used, since_last) {
            Budget::Wait => {
                invalidated.deferred = true;
                tracing::info!(?used, budget = self.budget.budget, "over the month's budget: changes wait to coalesce");
            }
            Budget::Send { remaining } => self.send(remaining, &mut invalidated).await?,
        }
        invalidated.pruned = self.db.prune_changes(self.retention).await?;
        Ok(invalidated)
    }

    /// Claims, plans, sends and completes (see [`Self::invalidate`]), filling in `invalidated`.
    async fn send(&self, remaining: Option<usize>, invalidated: &mut Invalidated) -> Result<(), TickError> {
        // Claim what was visible `settle` ago: every API instance has evicted it by now, whenever
        // its transaction started. Waiting only when something is pending keeps idle ticks short.
        let mark = self.db.visible_mark().await?;
        if !self.settle.is_zero() && self.db.pending().await?.count > 0 {
            tokio::time::sleep(self.settle).await;
        }
        let claim = self.db.claim(self.batch, &mark).await?;
        // Planned for the day of the claim: a tick that straddles the rollover (it waited out the
        // settle time first) plans and warms for the new day.
        invalidated.today = self.today();
        if claim.is_empty() {
            claim.release().await;
            return Ok(());
        }
        invalidated.changes = claim.changes();
        invalidated.changed = claim.tags.iter().map(|t| t.tag.clone()).collect();
        let limits = Limits { budget_remaining: remaining, ..self.limits };
        let context = Context { today: Some(invalidated.today.clone()) };
        let batch = plan(self.policy, &invalidated.changed, self.mode, &limits, &context);
        invalidated.items = batch.items.len();
        let reference = caller_reference(&claim.tags, &batch.items);
        if batch.items.is_empty() {
            // Tags no route carries: nothing to invalidate, but they are handled.
            let accepted = Accepted {
                id: None,
                backend: self.invalidator.name(),
                caller_reference: &reference,
                items: 0,
                status: "",
            };
            claim.complete(&accepted).await?;
            return Ok(());
        }
        let submitted = match self.invalidator.submit(&batch.items, &reference).await {
            Ok(submitted) => submitted,
            Err(err) => {
                // Not accepted: the changes stay pending for the next tick.
                claim.release().await;
                return Err(err.into());
            }
        };
        claim
            .complete(&Accepted {
                id: Some(&submitted.id),
                backend: self.invalidator.name(),
                caller_reference: &reference,
                items: batch.items.len(),
                status: &submitted.status,
            })
            .await?;
        let status = self.invalidator.wait(&submitted, self.poll_interval, self.wait_timeout, |_, _| {}).await;
        invalidated.invalidation_status = Some(status.unwrap_or_else(|e| {
            tracing::warn!(error = %error_chain(&e), "could not follow the invalidation");
            submitted.status.clone()
        }));
        invalidated.invalidation_id = Some(submitted.id);
        Ok(())
    }

    /// Invalidates the whole edge once when a new API build starts answering, so nothing the old
    /// code made outlives the deploy (one path: `/*`). The build is read from `/health-check`
    /// through the edge (never cached there); the warm step then re-warms the whole warm set.
    /// Returns the invalidation's id, if one was sent.
    async fn invalidate_deploy(&self) -> Result<Option<String>, TickError> {
        let Some(base) = self.warm.base_url.as_deref() else { return Ok(None) };
        let Some(build) = warm::build_id(&self.http, base).await else { return Ok(None) };
        match self.db.build_status(&build).await? {
            BuildSeen::Known => Ok(None),
            BuildSeen::First => {
                self.db.record_build(&build, None).await?;
                Ok(None)
            }
            BuildSeen::Deployed { sequence } => {
                let items = vec!["/*".to_owned()];
                let reference = format!("deploy-{build}-{sequence}");
                let submitted = self.invalidator.submit(&items, &reference).await?;
                let accepted = Accepted {
                    id: Some(&submitted.id),
                    backend: self.invalidator.name(),
                    caller_reference: &reference,
                    items: items.len(),
                    status: &submitted.status,
                };
                self.db.record_invalidation(&accepted).await?;
                self.db.record_build(&build, Some(&submitted.id)).await?;
                tracing::info!(build, invalidation = %submitted.id, "new API build: the edge was invalidated");
                if let Err(err) =
                    self.invalidator.wait(&submitted, self.poll_interval, self.wait_timeout, |_, _| {}).await
                {
                    tracing::warn!(error = %error_chain(&err), "could not follow the deploy invalidation");
                }
                Ok(Some(submitted.id))
            }
        }
    }

    /// Warms what [`decide::choose`] picks, and records when each path was fetched.
    async fn warm(&self, changed: &BTreeSet<String>, today: &str, everything: bool) -> Result<Warmed, StoreError> {
        let Some(base) = self.warm.base_url.as_deref() else { return Ok(Warmed::default()) };
        let now = Utc::now();
        let floor = warm::warm_set(self.policy, &self.db, &self.calendar, now, self.warm.max_paths).await?;
        let learned = warm::learned_set(self.policy, &self.db, self.warm.learned_max).await?;
        let warmed = self.db.warm_state().await?;
        let situation = Situation {
            floor: &floor,
            learned: &learned,
            warmed: &warmed,
            changed,
            today,
            everything_emptied: everything,
            now,
            budget: self.warm.budget,
        };
        let chosen = decide::choose(self.policy, &situation);
        let fetched = warm::fetch_all(&self.http, base, &chosen.fetch, self.warm.concurrency).await;
        for f in fetched.iter().filter(|f| !f.ok()) {
            tracing::warn!(path = %f.path, status = ?f.status, error = ?f.error, "warm request failed");
        }
        self.db.record_warm(&warm::answered(&fetched)).await?;
        Ok(Warmed { tally: decide::tally(&fetched, &learned), chosen, learned: learned.len() })
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
    /// Processed changes pruned.
    pruned: u64,
    /// CloudFront items sent this month before this tick.
    items_this_month: Option<u64>,
    /// The service day it was planned for.
    today: String,
}

/// What the warm step did.
#[derive(Debug, Clone, Default)]
struct Warmed {
    /// What was chosen.
    chosen: decide::Warm,
    /// What the requests did.
    tally: Tally,
    /// Learned paths in the warm set.
    learned: usize,
}

/// Everything a tick's steps returned, for its summary.
struct Tick<'a> {
    calendar_mismatch: Option<String>,
    invalidated: Option<&'a Invalidated>,
    deployed: Option<String>,
    warmed: &'a Warmed,
    learned_pruned: u64,
    pending: Option<Pending>,
    path_budget: u64,
    duration: Duration,
    error: Option<&'a TickError>,
}

impl Summary {
    /// The summary of a tick, assembled once from what its steps returned.
    fn of(tick: Tick<'_>) -> Self {
        let invalidated = tick.invalidated.cloned().unwrap_or_default();
        let (warm, tally) = (&tick.warmed.chosen, &tick.warmed.tally);
        Self {
            changes: invalidated.changes,
            tags: invalidated.changed.len(),
            items: invalidated.items,
            deferred: invalidated.deferred,
            invalidation_id: invalidated.invalidation_id,
            invalidation_status: invalidated.invalidation_status,
            pruned: invalidated.pruned,
            pending: tick.pending.map_or(0, |p| p.count),
            oldest_pending_age_s: tick
                .pending
                .and_then(|p| p.oldest)
                .map(|t| (Utc::now() - t).to_std().unwrap_or(Duration::ZERO).as_secs_f64()),
            items_this_month: invalidated.items_this_month,
            path_budget: tick.path_budget,
            deploy_invalidation: tick.deployed,
            calendar_mismatch: tick.calendar_mismatch,
            warmed: tally.warmed,
            warm_hits: tally.hits,
            warm_misses: tally.misses,
            failures: tally.failures,
            warm_skipped: warm.skipped,
            learned: tick.warmed.learned,
            learned_rewarmed: tally.learned_rewarmed,
            learned_skipped: warm.learned_skipped,
            learned_failed: tally.learned_failed,
            learned_pruned: tick.learned_pruned,
            duration_ms: u64::try_from(tick.duration.as_millis()).unwrap_or(u64::MAX),
            error: tick.error.map(|e| error_chain(e)),
            retryable: tick.error.map(TickError::retryable),
        }
    }
}
