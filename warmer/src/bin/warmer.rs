//! `warmer`: a scheduled Lambda function (EventBridge), or `--once` / `--every 60s` locally.

use std::process::ExitCode;

use clap::Parser;
use plumbing::LogFormat;
use warmer::cli::{self, WarmerCli};
use warmer::lambda;
use warmer::tick::Warmer;

#[tokio::main]
async fn main() -> anyhow::Result<ExitCode> {
    let args = WarmerCli::parse();
    let on_lambda = args.lambda_runtime_api.is_some();
    plumbing::init_logging(LogFormat::resolve(None, on_lambda));
    let mut warmer = cli::warmer(&args.db, &args.outbox, &args.backend, &args.warm).await?;
    warmer.metrics = plumbing::settings::MetricsMode::enabled(args.metrics, on_lambda);

    if on_lambda {
        let warmer = &warmer;
        lambda_runtime::run(lambda_runtime::service_fn(move |event| lambda::handle_scheduled_event(warmer, event)))
            .await
            .map_err(|e| anyhow::anyhow!(e))?;
        return Ok(ExitCode::SUCCESS);
    }
    cli::check_schema(&warmer.db).await?;
    match args.every {
        Some(interval) => {
            let mut timer = tokio::time::interval(interval);
            timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let shutdown = plumbing::shutdown_signal();
            tokio::pin!(shutdown);
            loop {
                tokio::select! {
                    _ = timer.tick() => { let _ = tick_and_print(&warmer).await; }
                    () = &mut shutdown => break,
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        // A failed tick was logged (with its causes) and summarized already: only the status says so.
        None if args.once => {
            Ok(if tick_and_print(&warmer).await.is_ok() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
        None => anyhow::bail!("say --once or --every <interval> (or run it on Lambda)"),
    }
}

/// One tick, its summary printed as a JSON line whether it failed or not.
async fn tick_and_print(warmer: &Warmer) -> Result<(), warmer::tick::TickFailure> {
    let result = warmer.tick().await;
    warmer::metrics::report(&result, warmer.metrics);
    result.map(|_| ())
}
