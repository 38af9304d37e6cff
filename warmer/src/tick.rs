//! One warmer tick: claim changes, plan, invalidate, mark processed, warm, summarize.

use std::collections::{BTreeSet, HashSet};
use std::time::{Duration, Instant};

use api::calendar::ServiceCalendar;
use api::store::Db;
use cache_policy::Policy;
use cache_policy::plan::{Context, Limits, Mode, plan};
use chrono::Utc;
use serde::Serialize;

use crate::backend::{Invalidator, caller_reference};
use crate::config::WarmArgs;
use crate::feed::{self, Accepted};
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
    /// Backend invalidation id.
    pub invalidation_id: Option<String>,
    /// Backend status after waiting (if it waited).
    pub invalidation_status: Option<String>,
    /// Paths warmed successfully.
    pub warmed: usize,
    /// Of those, already cached at the edge.
    pub warm_hits: usize,
    /// Of those, fetched from the origin by the edge.
    pub warm_misses: usize,
    /// Warm requests that failed.
    pub failures: usize,
    /// Tick duration in milliseconds.
    pub duration_ms: u64,
    /// Why the tick failed, if it did (the changes stay pending).
    pub error: Option<String>,
    /// Whether retrying later can succeed.
    pub retryable: Option<bool>,
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
    /// CloudFront paths allowed per calendar month before batches are coarsened.
    pub path_budget: usize,
    /// Most changes per tick.
    pub batch: i64,
    /// Minimum age of a change before it is claimed.
    pub settle: Duration,
    /// Warming settings.
    pub warm: WarmArgs,
    /// How long to wait for a CloudFront invalidation to complete before warming.
    pub wait_timeout: Duration,
    /// How often to poll its status meanwhile.
    pub poll_interval: Duration,
    /// HTTP client for warming.
    pub http: reqwest::Client,
}

impl Warmer {
    /// Runs one tick. Never panics; failures are in the summary.
    pub async fn tick(&self) -> Summary {
        let started = Instant::now();
        let mut summary = Summary::default();
        let today = self.calendar.service_date(Utc::now()).to_string();
        let mut changed = BTreeSet::new();
        if let Err((message, retryable)) = self.invalidate(&today, &mut summary, &mut changed).await {
            summary.error = Some(message);
            summary.retryable = Some(retryable);
        } else if let Err(message) = self.warm(&today, &changed, &mut summary).await {
            // Warming is best effort: the invalidation already happened.
            tracing::warn!(error = %message, "warming failed");
            summary.failures += 1;
        }
        summary.duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        summary
    }

    async fn invalidate(
        &self,
        today: &str,
        summary: &mut Summary,
        changed: &mut BTreeSet<String>,
    ) -> Result<(), (String, bool)> {
        let db_err = |e: feed::FeedError| (e.to_string(), true);
        let claim = feed::claim(&self.db, self.batch, self.settle).await.map_err(db_err)?;
        if claim.changes.is_empty() {
            return Ok(());
        }
        summary.changes = claim.changes.len();
        changed.extend(claim.changes.iter().map(|c| c.tag.clone()));
        summary.tags = changed.len();

        // Only CloudFront bills per path; a purge or a dry run has no budget to respect.
        let budget_remaining = match self.invalidator {
            Invalidator::CloudFront(_) => {
                let used = feed::items_this_month(&self.db).await.map_err(db_err)?;
                Some(self.path_budget.saturating_sub(usize::try_from(used).unwrap_or(0)))
            }
            _ => None,
        };
        let limits = Limits { budget_remaining, ..self.limits };
        let batch = plan(self.policy, changed, self.mode, &limits, &Context { today: Some(today.to_owned()) });
        summary.items = batch.items.len();
        let reference = caller_reference(&claim.ids());
        if batch.items.is_empty() {
            // Tags no route carries: nothing to invalidate, but they are handled.
            claim
                .complete(&Accepted {
                    id: None,
                    backend: self.invalidator.name(),
                    caller_reference: &reference,
                    items: 0,
                    status: "",
                })
                .await
                .map_err(db_err)?;
            return Ok(());
        }
        let submitted = match self.invalidator.submit(&batch.items, &reference).await {
            Ok(s) => s,
            Err(e) => {
                let retryable = e.retryable();
                // Dropping the claim rolls back: the changes stay pending for the next tick.
                drop(claim);
                return Err((e.to_string(), retryable));
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
            .await
            .map_err(db_err)?;
        summary.invalidation_id = Some(submitted.id.clone());
        let status =
            self.invalidator.wait(&submitted, self.poll_interval, self.wait_timeout, |_, _| {}).await.unwrap_or_else(
                |e| {
                    tracing::warn!(error = %e, "could not follow the invalidation");
                    submitted.status.clone()
                },
            );
        summary.invalidation_status = Some(status);
        Ok(())
    }

    async fn warm(&self, today: &str, changed: &BTreeSet<String>, summary: &mut Summary) -> Result<(), String> {
        let Some(base) = self.warm.base_url.as_deref() else { return Ok(()) };
        let now = Utc::now();
        let set = warm::warm_set(self.policy, &self.db, &self.calendar, now, self.warm.max_paths)
            .await
            .map_err(|e| e.to_string())?;
        let affected = warm::affected(self.policy, changed, today, &set);
        let state = feed::warm_state(&self.db).await.map_err(|e| e.to_string())?;
        let mut seen = HashSet::new();
        let mut due: Vec<WarmPath> = Vec::new();
        for path in affected
            .into_iter()
            .chain(set.iter().filter(|p| warm::is_due(p, state.get(&p.path).copied(), now)).cloned())
        {
            if seen.insert(path.path.clone()) {
                due.push(path);
            }
        }
        let fetched = warm::fetch_all(&self.http, base, &due, self.warm.concurrency).await;
        let mut record = Vec::new();
        for f in &fetched {
            if f.ok() {
                summary.warmed += 1;
                if f.hit() {
                    summary.warm_hits += 1;
                } else {
                    summary.warm_misses += 1;
                }
                record.push((f.path.clone(), f.status.unwrap_or_default(), f.x_cache.clone()));
            } else {
                summary.failures += 1;
                tracing::warn!(path = %f.path, status = ?f.status, error = ?f.error, "warm request failed");
            }
        }
        feed::record_warm(&self.db, &record).await.map_err(|e| e.to_string())
    }

    /// Warms the whole warm set now, regardless of cadence (`cachectl warm`).
    ///
    /// # Errors
    ///
    /// The warm set could not be read.
    pub async fn warm_everything(&self, base: &str) -> Result<Vec<warm::Fetched>, String> {
        let set = warm::warm_set(self.policy, &self.db, &self.calendar, Utc::now(), self.warm.max_paths)
            .await
            .map_err(|e| e.to_string())?;
        let fetched = warm::fetch_all(&self.http, base, &set, self.warm.concurrency).await;
        let record: Vec<_> = fetched
            .iter()
            .filter(|f| f.ok())
            .map(|f| (f.path.clone(), f.status.unwrap_or_default(), f.x_cache.clone()))
            .collect();
        feed::record_warm(&self.db, &record).await.map_err(|e| e.to_string())?;
        Ok(fetched)
    }
}

/// A failed tick, as Lambda reports it: `Retryable` errors (throttling, transport, database) go
/// away by themselves; `NonRetryable` ones (bad batch, access denied) need an operator.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct TickFailure {
    /// What went wrong.
    pub message: String,
    /// Whether the next tick can succeed unchanged.
    pub retryable: bool,
}

impl From<TickFailure> for lambda_runtime::Diagnostic {
    fn from(failure: TickFailure) -> Self {
        Self {
            error_type: if failure.retryable { "Retryable" } else { "NonRetryable" }.to_owned(),
            error_message: failure.message,
        }
    }
}

impl Summary {
    /// The summary as a result: `Err` when the tick failed.
    ///
    /// # Errors
    ///
    /// [`TickFailure`] when the tick did not complete.
    pub fn into_result(self) -> Result<Self, TickFailure> {
        match &self.error {
            Some(message) => Err(TickFailure { message: message.clone(), retryable: self.retryable.unwrap_or(true) }),
            None => Ok(self),
        }
    }
}

/// The Lambda handler: one tick per EventBridge scheduled event. The summary is logged as one JSON
/// line and returned.
///
/// # Errors
///
/// [`TickFailure`] when the tick failed (the changes stay pending).
pub async fn handle_scheduled_event(
    warmer: &Warmer,
    event: lambda_runtime::LambdaEvent<aws_lambda_events::eventbridge::EventBridgeEvent>,
) -> Result<Summary, TickFailure> {
    tracing::debug!(source = %event.payload.source, detail_type = %event.payload.detail_type, "scheduled tick");
    let summary = warmer.tick().await;
    println!("{}", serde_json::to_string(&summary).unwrap_or_default());
    summary.into_result()
}
