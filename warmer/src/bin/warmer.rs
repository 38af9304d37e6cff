//! `warmer`: a scheduled Lambda function (EventBridge), or `--once` / `--every 60s` locally.

use anyhow::Context;
use api::config::LogFormat;
use clap::Parser;
use warmer::cli::{self, WarmerCli};
use warmer::tick;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = WarmerCli::parse();
    let on_lambda = args.lambda_runtime_api.is_some();
    api::telemetry::init(if on_lambda { LogFormat::Json } else { LogFormat::Text });
    let warmer = cli::warmer(&args.db, &args.backend, &args.warm).await?;

    if on_lambda {
        let warmer = &warmer;
        lambda_runtime::run(lambda_runtime::service_fn(move |event| tick::handle_scheduled_event(warmer, event)))
            .await
            .map_err(|e| anyhow::anyhow!(e))?;
        return Ok(());
    }
    cli::check_schema(&warmer.db).await?;
    match args.every {
        Some(interval) => {
            let mut timer = tokio::time::interval(interval);
            timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let shutdown = api::startup::shutdown_signal();
            tokio::pin!(shutdown);
            loop {
                tokio::select! {
                    _ = timer.tick() => {
                        let summary = warmer.tick().await;
                        println!("{}", serde_json::to_string(&summary)?);
                    }
                    () = &mut shutdown => break,
                }
            }
            Ok(())
        }
        None if args.once => {
            let summary = warmer.tick().await;
            println!("{}", serde_json::to_string(&summary)?);
            summary.into_result().map(|_| ()).context("the tick failed; the changes stay pending")
        }
        None => anyhow::bail!("say --once or --every <interval> (or run it on Lambda)"),
    }
}
