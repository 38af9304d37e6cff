//! `cachectl`: the operator's CLI for edgerail's edge cache.

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail};
use api::config::LogFormat;
use cache_policy::plan::{Context, plan, validate_batch};
use cache_policy::{QueryKind, format_duration};
use clap::Parser;
use warmer::backend::is_completed;
use warmer::cli::{self, CachectlCli, CachectlCommand, Target};
use warmer::feed::{self, Accepted};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = CachectlCli::parse();
    api::telemetry::init(LogFormat::Text);
    match args.command {
        CachectlCommand::Policy => print_policy(),
        CachectlCommand::Plan { target, backend, db } => {
            for item in items(&target, &backend, &db)? {
                println!("{item}");
            }
            Ok(())
        }
        CachectlCommand::Invalidate { target, wait, dry_run, backend, db } => {
            let items = items(&target, &backend, &db)?;
            validate_batch(&items, &cli::limits(&backend)).context("the batch is not valid")?;
            if dry_run {
                for item in &items {
                    println!("{item}");
                }
                println!("dry run: {} item(s), nothing sent", items.len());
                return Ok(());
            }
            let invalidator = cli::invalidator(&backend).await?;
            let millis = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_millis();
            let reference =
                format!("cachectl-{millis}-{:016x}", xxhash_rust::xxh3::xxh3_64(items.join("\n").as_bytes()));
            let submitted = invalidator
                .submit(&items, &reference)
                .await
                .with_context(|| format!("the {} backend did not accept the invalidation", invalidator.name()))?;
            println!("invalidation {} ({} item(s)): {}", submitted.id, items.len(), submitted.status);
            if db.database_url.is_some() {
                let store = cli::open_db(&db)?;
                feed::record_invalidation(
                    &store,
                    &Accepted {
                        id: Some(&submitted.id),
                        backend: invalidator.name(),
                        caller_reference: &reference,
                        items: items.len(),
                        status: &submitted.status,
                    },
                )
                .await?;
            }
            if wait {
                let status = invalidator
                    .wait(&submitted, backend.poll_interval, backend.wait_timeout, |status, elapsed| {
                        println!("  {:>5.1}s  {status}", elapsed.as_secs_f64());
                    })
                    .await?;
                if !is_completed(&status) {
                    bail!(
                        "invalidation {} is still {status} after {}",
                        submitted.id,
                        format_duration(backend.wait_timeout)
                    );
                }
                println!("invalidation {} completed", submitted.id);
            }
            Ok(())
        }
        CachectlCommand::Warm { warm, db } => {
            let base = warm.base_url.clone().context("WARM_BASE_URL (or --base-url) is required")?;
            let warmer = cli::warmer(&db, &warmer::config::BackendArgs::defaults(), &warm).await?;
            let fetched = warmer.warm_everything(&base).await.map_err(anyhow::Error::msg)?;
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
        CachectlCommand::Status { db } => {
            let store = cli::open_db(&db)?;
            cli::check_schema(&store).await?;
            let (pending, oldest) = feed::pending(&store).await?;
            println!("pending changes: {pending}{}", oldest.map(|o| format!(" (oldest {o})")).unwrap_or_default());
            println!("invalidation items this month (cloudfront): {}", feed::items_this_month(&store).await?);
            let recent = feed::recent_invalidations(&store, 10).await?;
            if recent.is_empty() {
                println!("no invalidations yet");
            } else {
                println!(
                    "{:<32} {:<10} {:>5} {:>7} {:<12} sent",
                    "invalidation", "backend", "items", "changes", "status"
                );
                for r in recent {
                    println!(
                        "{:<32} {:<10} {:>5} {:>7} {:<12} {}",
                        r.id, r.backend, r.items, r.changes, r.status, r.created_at
                    );
                }
            }
            Ok(())
        }
    }
}

/// The items for a target: tags planned per the mode, paths taken as given.
fn items(
    target: &Target,
    backend: &warmer::config::BackendArgs,
    db: &warmer::config::DatabaseArgs,
) -> anyhow::Result<Vec<String>> {
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

fn print_policy() -> anyhow::Result<()> {
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
