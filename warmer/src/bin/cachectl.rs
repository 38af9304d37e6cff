//! `cachectl`: the operator's CLI for edgerail's edge cache. One function per subcommand.

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail};
use cache_policy::cost::{batch_cost_usd, billable_paths};
use cache_policy::plan::{Context, plan, validate_batch};
use cache_policy::{QueryKind, format_duration};
use clap::Parser;
use plumbing::LogFormat;
use serde_json::json;
use store::outbox::Accepted;
use warmer::backend::{Invalidator, is_completed};
use warmer::cli::{self, CachectlCli, CachectlCommand, Target};
use warmer::config::{BackendArgs, DatabaseArgs, InvalidatorKind, OutboxArgs, WarmArgs};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = CachectlCli::parse();
    plumbing::init_logging(LogFormat::Text);
    match args.command {
        CachectlCommand::Policy => policy(),
        CachectlCommand::Plan { target, json, backend, db } => plan_cmd(&target, json, &backend, &db).await,
        CachectlCommand::Invalidate { target, wait, dry_run, json, backend, db } => {
            invalidate(&target, wait, dry_run, json, &backend, &db).await
        }
        CachectlCommand::Warm { json, warm: settings, db } => warm(&settings, json, &db).await,
        CachectlCommand::Verify { paths, propagation, json, warm: settings, db } => {
            verify(&paths, propagation, json, &settings, &db).await
        }
        CachectlCommand::Status { json, backend, db } => status(json, &backend, &db).await,
    }
}

/// The items for a target: tags planned per the mode, paths taken as given.
fn items(target: &Target, backend: &BackendArgs, db: &DatabaseArgs) -> anyhow::Result<Vec<String>> {
    if !target.paths.is_empty() {
        return Ok(target.paths.clone());
    }
    let policy = cli::policy()?;
    let calendar = cli::calendar(db)?;
    let tags: BTreeSet<String> = target.tags.iter().cloned().collect();
    let today = calendar.service_date(chrono::Utc::now()).to_string();
    let planned = plan(policy, &tags, backend.mode.into(), &cli::limits(backend), &Context { today: Some(today) });
    if planned.items.is_empty() {
        bail!("no route carries these tags: {}", target.tags.join(", "));
    }
    Ok(planned.items)
}

/// CloudFront paths sent this month, when a database is configured.
async fn used_this_month(db: &DatabaseArgs) -> anyhow::Result<Option<u64>> {
    if !db.is_configured() {
        return Ok(None);
    }
    let store = cli::open_db(db).await?;
    let used = store.items_this_month().await.context("cannot read this month's invalidations")?;
    Ok(Some(u64::try_from(used).unwrap_or(0)))
}

/// `cachectl plan`: the items, one a line, then (on stderr) what the batch would cost this month.
async fn plan_cmd(target: &Target, json: bool, backend: &BackendArgs, db: &DatabaseArgs) -> anyhow::Result<()> {
    let items = items(target, backend, db)?;
    let used = used_this_month(db).await?;
    let count = items.len() as u64;
    let billable = billable_paths(used.unwrap_or(0), count);
    let cost = batch_cost_usd(used.unwrap_or(0), count);
    if json {
        let out = json!({
            "items": items,
            "count": count,
            "used_this_month": used,
            "budget": backend.path_budget,
            "billable": billable,
            "cost_usd": cost,
        });
        println!("{out}");
        return Ok(());
    }
    for item in &items {
        println!("{item}");
    }
    let used_text = used
        .map_or_else(|| "unknown (no DATABASE_URL or DATABASE_SECRET_ARN): counted as 0".to_owned(), |u| u.to_string());
    eprintln!(
        "{count} item(s); used this month: {used_text} of a {} budget; billable: {billable}; cost: ${cost:.3}",
        backend.path_budget
    );
    Ok(())
}

/// `cachectl invalidate`: validate, send (unless a dry run), record, and optionally wait.
async fn invalidate(
    target: &Target,
    wait: bool,
    dry_run: bool,
    json: bool,
    backend: &BackendArgs,
    db: &DatabaseArgs,
) -> anyhow::Result<()> {
    let items = items(target, backend, db)?;
    validate_batch(&items, &cli::limits(backend)).context("the batch is not valid")?;
    if dry_run {
        if json {
            println!("{}", json!({ "dry_run": true, "items": items }));
        } else {
            for item in &items {
                println!("{item}");
            }
            println!("dry run: {} item(s), nothing sent", items.len());
        }
        return Ok(());
    }
    if backend.invalidator == InvalidatorKind::None {
        bail!(
            "INVALIDATOR is none, so nothing would be invalidated: set INVALIDATOR=cloudfront (with DISTRIBUTION_ID) \
             or INVALIDATOR=purge (with PURGE_URL), or pass --dry-run to see the items"
        );
    }
    let invalidator = cli::invalidator(backend).await?;
    let millis = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_millis();
    let reference = format!("cachectl-{millis}-{:016x}", xxhash_rust::xxh3::xxh3_64(items.join("\n").as_bytes()));
    let submitted = invalidator
        .submit(&items, &reference)
        .await
        .with_context(|| format!("the {} backend did not accept the invalidation", invalidator.name()))?;
    if !json {
        println!("invalidation {} ({} item(s)): {}", submitted.id, items.len(), submitted.status);
    }
    if db.is_configured() {
        let store = cli::open_db(db).await?;
        let accepted = Accepted {
            id: Some(&submitted.id),
            backend: invalidator.name(),
            caller_reference: &reference,
            items: items.len(),
            status: &submitted.status,
        };
        store.record_invalidation(&accepted).await.context("cannot record the invalidation")?;
    }
    let mut status = submitted.status.clone();
    if wait {
        status = wait_for(&invalidator, &submitted, backend, json).await?;
    }
    if json {
        println!("{}", json!({ "id": submitted.id, "items": items, "status": status, "reference": reference }));
    }
    Ok(())
}

/// Follows an invalidation until it completes or the wait timeout passes.
async fn wait_for(
    invalidator: &Invalidator,
    submitted: &warmer::backend::Submitted,
    backend: &BackendArgs,
    quiet: bool,
) -> anyhow::Result<String> {
    let status = invalidator
        .wait(submitted, backend.poll_interval, backend.wait_timeout, |status, elapsed| {
            if !quiet {
                println!("  {:>5.1}s  {status}", elapsed.as_secs_f64());
            }
        })
        .await?;
    if !is_completed(&status) {
        bail!("invalidation {} is still {status} after {}", submitted.id, format_duration(backend.wait_timeout));
    }
    if !quiet {
        println!("invalidation {} completed", submitted.id);
    }
    Ok(status)
}

/// `cachectl warm`: the whole warm set through the edge, now.
async fn warm(settings: &WarmArgs, json: bool, db: &DatabaseArgs) -> anyhow::Result<()> {
    let base = settings.base_url.clone().context("WARM_BASE_URL (or --base-url) is required")?;
    let warmer = cli::warmer(db, &OutboxArgs::defaults(), &BackendArgs::defaults(), settings).await?;
    let fetched = warmer.warm_everything(&base).await.context("cannot warm")?;
    let failures = fetched.iter().filter(|f| !f.ok()).count();
    if json {
        println!("{}", json!({ "fetched": fetched, "failures": failures }));
        if failures > 0 {
            bail!("{failures} warm request(s) failed");
        }
        return Ok(());
    }
    let mut failures = 0;
    for f in &fetched {
        let status = f.status.map_or_else(|| "---".to_owned(), |s| s.to_string());
        println!("{status} {:<5} {}", f.x_cache.as_deref().unwrap_or("-"), f.path);
        if !f.ok() {
            failures += 1;
            if let Some(e) = &f.error {
                eprintln!("  {e}");
            }
        }
    }
    println!("warmed {} path(s), {failures} failure(s)", fetched.len() - failures);
    if failures > 0 {
        bail!("{failures} warm request(s) failed");
    }
    Ok(())
}

/// `cachectl verify`: each path's answer through the edge against the changes sent for
/// invalidation that cover it.
async fn verify(
    paths: &[String],
    propagation: Duration,
    json: bool,
    settings: &WarmArgs,
    db: &DatabaseArgs,
) -> anyhow::Result<()> {
    let base = settings.base_url.clone().context("WARM_BASE_URL (or --base-url) is required")?;
    let warmer = cli::warmer(db, &OutboxArgs::defaults(), &BackendArgs::defaults(), settings).await?;
    let checks = warmer.check_paths(&base, paths, propagation).await?;
    let stale = checks.iter().filter(|c| c.verdict == "stale").count();
    if json {
        println!("{}", json!({ "paths": checks, "stale": stale }));
    } else {
        println!("{:<13} {:>6} {:<8} {:>6} {:<24} path", "verdict", "status", "x-cache", "age", "version");
        for c in &checks {
            let a = &c.answer;
            println!(
                "{:<13} {:>6} {:<8} {:>6} {:<24} {}",
                c.verdict,
                a.status.map_or_else(|| "---".to_owned(), |s| s.to_string()),
                a.x_cache.as_deref().unwrap_or("-"),
                a.age.map_or_else(|| "-".to_owned(), format_duration),
                a.version.as_deref().unwrap_or("-"),
                c.path
            );
            if let Some(e) = &a.error {
                eprintln!("  {e}");
            }
        }
    }
    if stale > 0 {
        bail!("{stale} path(s) answered older data than changes already invalidated");
    }
    Ok(())
}

/// The last hour's checks of invalidations through the edge, as `cachectl status` reports them.
fn verification_figures(checks: &[store::outbox::VerifiedPath]) -> serde_json::Value {
    let count = |outcome: &str| checks.iter().filter(|c| c.outcome == outcome).count();
    let freshness: Vec<Duration> = checks
        .iter()
        .filter_map(|c| c.freshness_ms)
        .map(|ms| Duration::from_millis(u64::try_from(ms).unwrap_or(0)))
        .collect();
    let spread = warmer::decide::spread(&freshness);
    json!({
        "paths_checked": checks.len(),
        "fresh": count("fresh"),
        "repaired": count("repaired"),
        "stale": count("stale"),
        "unknown": count("unknown"),
        "freshness_p50_s": spread.map(|s| s.p50.as_secs_f64()),
        "freshness_p99_s": spread.map(|s| s.p99.as_secs_f64()),
        "freshness_max_s": spread.map(|s| s.max.as_secs_f64()),
        "stale_paths": checks.iter().filter(|c| c.outcome == "stale").map(|c| &c.path).take(20).collect::<Vec<_>>(),
    })
}

/// `cachectl status`: pending changes and their age, this month's items against the budget, the
/// most fetched learned paths, and the latest invalidations.
async fn status(json: bool, backend: &BackendArgs, db: &DatabaseArgs) -> anyhow::Result<()> {
    let store = cli::open_db(db).await?;
    cli::check_schema(&store).await?;
    let pending = store.pending().await.context("cannot read the change feed")?;
    let oldest_age = pending.oldest.map(|t| (chrono::Utc::now() - t).to_std().unwrap_or(Duration::ZERO));
    let used = store.items_this_month().await.context("cannot read this month's invalidations")?;
    let recent = store.recent_invalidations(10).await.context("cannot read recent invalidations")?;
    let learned = store.learned_top(10).await.context("cannot read the learned paths")?;
    let checks = store.verified_since(Duration::from_secs(3600)).await.context("cannot read the warm state")?;
    let verification = verification_figures(&checks);
    let calendar = cli::calendar(db)?;
    let (trigger_zone, trigger_start) = store.trigger_calendar().await.context("cannot read the trigger calendar")?;
    let mismatch = store
        .calendar_mismatch(&calendar, chrono::Utc::now(), chrono::Days::new(400))
        .await
        .context("cannot read the trigger calendar")?;
    if json {
        let out = json!({
            "trigger_calendar": { "time_zone": trigger_zone, "day_start_minutes": trigger_start },
            "calendar_matches": mismatch.is_none(),
            "pending": pending.count,
            "oldest_pending": pending.oldest.map(|t| t.to_rfc3339()),
            "oldest_pending_age_s": oldest_age.map(|a| a.as_secs_f64()),
            "items_this_month": used,
            "budget": backend.path_budget,
            "recent_invalidations": recent,
            "top_learned_paths": learned,
            "verified_last_hour": verification,
        });
        println!("{out}");
        return Ok(());
    }
    let age = match (pending.oldest, oldest_age) {
        (Some(at), Some(age)) => format!(" (oldest {} ago, at {})", format_duration(age), at.to_rfc3339()),
        _ => String::new(),
    };
    println!("pending changes: {}{age}", pending.count);
    println!("invalidation items this month (cloudfront): {used} of a {} budget", backend.path_budget);
    if let Some(mismatch) = mismatch {
        println!("warning: {mismatch}: run `api migrate` with the right calendar");
    }
    let v = &verification;
    let secs = |key: &str| v[key].as_f64().map_or_else(|| "-".to_owned(), |s| format!("{s:.1}s"));
    println!(
        "checked through the edge in the last hour: {} path(s): {} fresh, {} repaired, {} stale, {} unknown; \
         freshness p50 {} p99 {} max {}",
        v["paths_checked"],
        v["fresh"],
        v["repaired"],
        v["stale"],
        v["unknown"],
        secs("freshness_p50_s"),
        secs("freshness_p99_s"),
        secs("freshness_max_s")
    );
    for path in v["stale_paths"].as_array().into_iter().flatten() {
        println!("  still stale: {}", path.as_str().unwrap_or_default());
    }
    if learned.is_empty() {
        println!("no learned paths yet");
    } else {
        println!("{:<48} {:>8} last fetched by the edge", "top learned path", "fetches");
        for l in &learned {
            println!("{:<48} {:>8} {}", l.path, l.fetches, l.last_fetched_at.to_rfc3339());
        }
    }
    if recent.is_empty() {
        println!("no invalidations yet");
        return Ok(());
    }
    println!("{:<32} {:<10} {:>5} {:>7} {:<12} sent", "invalidation", "backend", "items", "changes", "status");
    for r in recent {
        println!(
            "{:<32} {:<10} {:>5} {:>7} {:<12} {}",
            r.id,
            r.backend,
            r.items,
            r.changes,
            r.status,
            r.created_at.to_rfc3339()
        );
    }
    Ok(())
}

/// `cachectl policy`: the policy as a table.
fn policy() -> anyhow::Result<()> {
    let policy = cli::policy()?;
    let d = |v: Duration| format_duration(v);
    println!(
        "{:<17} {:<32} {:>7} {:>5} {:>5} {:>5} {:>6} {:>5} {:<14} {:<28} warm",
        "route", "path", "browser", "edge", "swr", "sie", "local", "neg", "query", "tags"
    );
    for r in policy.routes() {
        let query = r
            .query
            .iter()
            .map(|q| match q.kind {
                QueryKind::Integer { min, max, default } => format!("{}={min}..{max}({default})", q.name),
            })
            .collect::<Vec<_>>()
            .join(" ");
        let tags = r.tags.iter().map(|t| t.as_str()).collect::<Vec<_>>().join(" ");
        println!(
            "{:<17} {:<32} {:>7} {:>5} {:>5} {:>5} {:>6} {:>5} {:<14} {:<28} {}",
            r.name,
            r.path.as_str(),
            d(r.browser_ttl),
            d(r.edge_ttl),
            d(r.swr),
            d(r.sie),
            d(r.local_ttl),
            d(r.negative_ttl),
            if query.is_empty() { "-".into() } else { query },
            if tags.is_empty() { "-".into() } else { tags },
            if r.warm { "yes" } else { "no" }
        );
    }
    Ok(())
}
