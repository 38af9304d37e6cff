//! Invokes a built Lambda bootstrap (any architecture, through a runner such as `qemu-aarch64`)
//! the way Lambda does: a local Runtime API hands it Function URL events as CloudFront forwards
//! them, and each answer must be a `200` carrying the caching headers the edge relies on. Used by
//! `scripts/package.sh` on the arm64 build that `sam build` makes.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use testbed::runtime::{LocalRuntime, function_url_event, lambda_env};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The function's `bootstrap`.
    #[arg(long)]
    bootstrap: PathBuf,
    /// A program to run it with (e.g. `qemu-aarch64`); its own arguments go in `--runner-arg`.
    #[arg(long)]
    runner: Option<PathBuf>,
    /// Arguments of the runner, before the bootstrap.
    #[arg(long = "runner-arg", allow_hyphen_values = true)]
    runner_args: Vec<String>,
    /// The database the function reads.
    #[arg(long)]
    database_url: String,
    /// Paths to invoke, in order.
    #[arg(long = "path", required = true)]
    paths: Vec<String>,
    /// How long the first answer may take (emulated starts are slow).
    #[arg(long, default_value_t = 60)]
    timeout_secs: u64,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let mut runtime = LocalRuntime::start().await?;
    let mut command = match &args.runner {
        Some(runner) => {
            let mut c = tokio::process::Command::new(runner);
            c.args(&args.runner_args).arg(&args.bootstrap);
            c
        }
        None => tokio::process::Command::new(&args.bootstrap),
    };
    let mut child = command
        .env_clear()
        .envs(lambda_env(runtime.addr, 128))
        .env("DATABASE_URL", &args.database_url)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()?;
    let mut failures = 0;
    for path in &args.paths {
        runtime.send(function_url_event(path));
        let done = runtime.finished(Duration::from_secs(args.timeout_secs)).await?;
        let status = done.response["statusCode"].as_u64().unwrap_or(0);
        let cache_control = done.header("cache-control").unwrap_or("");
        let etag = done.header("etag").unwrap_or("");
        let tags = done.header("cache-tag").unwrap_or("");
        let ok = status == 200 && cache_control.contains("s-maxage=") && !etag.is_empty() && !tags.is_empty();
        println!(
            "{} {path}: {status}, cache-control: {cache_control}, etag: {etag}, cache-tag: {tags}, {:.1} ms",
            if ok { "✓" } else { "✗" },
            done.handler.as_secs_f64() * 1e3
        );
        if !ok {
            failures += 1;
        }
    }
    let _ = child.kill().await;
    anyhow::ensure!(failures == 0, "{failures} of {} invocations did not answer as the edge expects", args.paths.len());
    Ok(())
}
