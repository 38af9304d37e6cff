//! One warmer tick: claim changes, plan, invalidate, mark processed, prune, warm, summarize.

use std::collections::{BTreeSet, HashSet};
use std::time::{Duration, Instant};

use cache_policy::Policy;
use cache_policy::cost::BudgetPolicy;
use cache_policy::plan::{Context, Limits, Mode, plan};
use chrono::Utc;
use serde::Serialize;
use store::outbox::{Accepted, BuildSeen};
use store::{Db, ServiceCalendar, StoreError};

use crate::backend::{InvalidationError, Invalidator, caller_reference};
use crate::config::WarmArgs;
use crate::warm::{self, WarmPath};

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

/// Formats an error with its chain of causes, for one log line or summary field.
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
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
        let mut summary = Summary::default();
        // Set again when the changes are claimed: a tick that straddles the rollover (it waits
        // out the settle time first) plans and warms for the day of its claim.
        let mut today = self.today();
        let mut changed = BTreeSet::new();
        summary.calendar_mismatch = self.calendar_mismatch().await;
        summary.path_budget = self.budget.budget;
        let mut result = self.invalidate(&mut today, &mut summary, &mut changed).await;
        if result.is_ok() {
            result = self.invalidate_deploy(&mut summary).await;
        }
        if result.is_ok()
            && let Err(err) = self.warm(&today, &changed, &mut summary).await
        {
            tracing::warn!(error = %error_chain(&err), "warming failed");
            summary.failures += 1;
        }
        match self.db.prune_learned(self.warm.learned_max_age, self.warm.learned_max).await {
            Ok(pruned) => summary.learned_pruned = pruned,
            Err(err) => tracing::warn!(error = %error_chain(&err), "could not prune the learned paths"),
        }
        if let Ok(pending) = self.db.pending().await {
            summary.pending = pending.count;
            summary.oldest_pending_age_s =
                pending.oldest.map(|t| (Utc::now() - t).to_std().unwrap_or(Duration::ZERO).as_secs_f64());
        }
        summary.duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let span = tracing::Span::current();
        span.record("changes", summary.changes);
        span.record("items", summary.items);
        span.record("warmed", summary.warmed);
        span.record("failures", summary.failures);
        if let Some(id) = &summary.invalidation_id {
            span.record("invalidation_id", id.as_str());
        }
        match result {
            Ok(()) => Ok(summary),
            Err(error) => {
                summary.error = Some(error_chain(&error));
                summary.retryable = Some(error.retryable());
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

    async fn invalidate(
        &self,
        today: &mut String,
        summary: &mut Summary,
        changed: &mut BTreeSet<String>,
    ) -> Result<(), TickError> {
        // Only CloudFront bills per path; a purge or a dry run has no budget to respect.
        let used = match self.invalidator {
            Invalidator::CloudFront(_) => Some(u64::try_from(self.db.items_this_month().await?).unwrap_or(0)),
            _ => None,
        };
        summary.items_this_month = used;
        if let Some(used) = used {
            let since_last = self
                .db
                .recent_invalidations(1)
                .await?
                .first()
                .filter(|r| r.backend == self.invalidator.name())
                .map(|r| (Utc::now() - r.created_at).to_std().unwrap_or(Duration::ZERO));
            if !self.budget.may_send(used, since_last) {
                summary.deferred = true;
                tracing::info!(used, budget = self.budget.budget, "over the month's budget: changes wait to coalesce");
                summary.pruned = self.db.prune_changes(self.retention).await?;
                return Ok(());
            }
        }

        // Claim what was visible `settle` ago: every API instance has evicted it by now, whenever
        // its transaction started. Waiting only when something is pending keeps idle ticks short.
        let mark = self.db.visible_mark().await?;
        if !self.settle.is_zero() && self.db.pending().await?.count > 0 {
            tokio::time::sleep(self.settle).await;
        }
        let claim = self.db.claim(self.batch, &mark).await?;
        *today = self.today();
        if !claim.is_empty() {
            summary.changes = claim.changes();
            changed.extend(claim.tags.iter().map(|t| t.tag.clone()));
            summary.tags = changed.len();
            let budget_remaining = used.map(|u| usize::try_from(self.budget.budget.saturating_sub(u)).unwrap_or(0));
            let limits = Limits { budget_remaining, ..self.limits };
            let batch = plan(self.policy, changed, self.mode, &limits, &Context { today: Some(today.clone()) });
            summary.items = batch.items.len();
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
            } else {
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
                summary.invalidation_id = Some(submitted.id.clone());
                let status = self
                    .invalidator
                    .wait(&submitted, self.poll_interval, self.wait_timeout, |_, _| {})
                    .await
                    .unwrap_or_else(|e| {
                        tracing::warn!(error = %error_chain(&e), "could not follow the invalidation");
                        submitted.status.clone()
                    });
                summary.invalidation_status = Some(status);
            }
        }
        summary.pruned = self.db.prune_changes(self.retention).await?;
        Ok(())
    }

    /// Invalidates the whole edge once when a new API build starts answering, so nothing the old
    /// code made outlives the deploy (one path: `/*`). The build is read from `/health-check`
    /// through the edge (never cached there); the warm step then re-warms the whole warm set.
    async fn invalidate_deploy(&self, summary: &mut Summary) -> Result<(), TickError> {
        let Some(base) = self.warm.base_url.as_deref() else { return Ok(()) };
        let Some(build) = warm::build_id(&self.http, base).await else { return Ok(()) };
        match self.db.build_status(&build).await? {
            BuildSeen::Known => Ok(()),
            BuildSeen::First => Ok(self.db.record_build(&build, None).await?),
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
                summary.deploy_invalidation = Some(submitted.id);
                Ok(())
            }
        }
    }

    /// Warms, within the tick's budget: first what this tick's invalidations emptied (the floor's
    /// paths they cover, and the learned paths they cover that the edge held), then the paths
    /// near the end of their edge TTL (the floor's, then the learned ones, most fetched first).
    async fn warm(&self, today: &str, changed: &BTreeSet<String>, summary: &mut Summary) -> Result<(), StoreError> {
        let Some(base) = self.warm.base_url.as_deref() else { return Ok(()) };
        let now = Utc::now();
        let floor = warm::warm_set(self.policy, &self.db, &self.calendar, now, self.warm.max_paths).await?;
        let learned = warm::learned_set(self.policy, &self.db, self.warm.learned_max).await?;
        summary.learned = learned.len();
        let state = self.db.warm_state().await?;
        let warmed = |path: &str| state.get(path).copied();
        // After a deploy invalidation the edge holds nothing: all of it is emptied.
        let everything = summary.deploy_invalidation.is_some();
        let held: Vec<WarmPath> =
            learned.iter().filter(|l| l.held(warmed(&l.warm.path), now)).map(|l| l.warm.clone()).collect();
        let emptied = if everything {
            floor.iter().cloned().chain(held).collect()
        } else {
            let mut emptied = warm::affected(self.policy, changed, today, &floor);
            emptied.extend(warm::affected(self.policy, changed, today, &held));
            emptied
        };
        let due_floor = floor.iter().filter(|p| warm::is_due(p, warmed(&p.path), now)).cloned();
        let due_learned = learned
            .iter()
            .filter(|l| warm::is_due(&l.warm, Some(l.last_fetch(warmed(&l.warm.path))), now))
            .map(|l| l.warm.clone());
        let mut seen = HashSet::new();
        let mut due: Vec<WarmPath> =
            emptied.into_iter().chain(due_floor).chain(due_learned).filter(|p| seen.insert(p.path.clone())).collect();
        let is_learned: HashSet<&str> = learned.iter().map(|l| l.warm.path.as_str()).collect();
        if due.len() > self.warm.budget {
            let skipped = due.split_off(self.warm.budget);
            summary.warm_skipped = skipped.len();
            summary.learned_skipped = skipped.iter().filter(|p| is_learned.contains(p.path.as_str())).count();
        }
        let fetched = warm::fetch_all(&self.http, base, &due, self.warm.concurrency).await;
        let mut record = Vec::new();
        for f in &fetched {
            let learned = is_learned.contains(f.path.as_str());
            if f.ok() {
                summary.warmed += 1;
                summary.learned_rewarmed += usize::from(learned);
                if f.hit() {
                    summary.warm_hits += 1;
                } else {
                    summary.warm_misses += 1;
                }
                record.push((f.path.clone(), f.status.unwrap_or_default(), f.x_cache.clone()));
            } else {
                summary.failures += 1;
                summary.learned_failed += usize::from(learned);
                tracing::warn!(path = %f.path, status = ?f.status, error = ?f.error, "warm request failed");
            }
        }
        self.db.record_warm(&record).await
    }

    /// Warms the whole warm set now, regardless of cadence (`cachectl warm`).
    ///
    /// # Errors
    ///
    /// The warm set could not be read, or the results not recorded.
    pub async fn warm_everything(&self, base: &str) -> Result<Vec<warm::Fetched>, StoreError> {
        let mut set = warm::warm_set(self.policy, &self.db, &self.calendar, Utc::now(), self.warm.max_paths).await?;
        let learned = warm::learned_set(self.policy, &self.db, self.warm.learned_max).await?;
        let mut seen: HashSet<String> = set.iter().map(|p| p.path.clone()).collect();
        set.extend(learned.into_iter().map(|l| l.warm).filter(|p| seen.insert(p.path.clone())));
        let fetched = warm::fetch_all(&self.http, base, &set, self.warm.concurrency).await;
        let record: Vec<_> = fetched
            .iter()
            .filter(|f| f.ok())
            .map(|f| (f.path.clone(), f.status.unwrap_or_default(), f.x_cache.clone()))
            .collect();
        self.db.record_warm(&record).await?;
        Ok(fetched)
    }
}
