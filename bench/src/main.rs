//! `bench`: the measuring parts of edgerail's benchmarks, driven by `bench/run.sh`.
//!
//! Every subcommand writes one JSON result; `report` turns them into `target/bench/report.md` (with
//! SVG plots). Each figure is a ratio or distribution measured in the same run, on this machine.
//! The local Runtime API, the demo workload and the local edge come from the `testbed` crate,
//! which the soak (a crate of its own) shares.
//!
//! # Layout
//!
//! - `ceiling`: a bare axum app serving static bytes at one route template (the framework ceiling
//!   for the hot path: axum's routing of the same URL, no work of edgerail's).
//! - `hot-path`: CPU time per request of pinned servers under wrk, in interleaved rounds.
//! - `instructions`: instructions per request of a cached hit and of the ceiling, under Callgrind.
//! - `cold-start`: exec → first `200`, peak RSS, and a Lambda-mode start against a local Runtime API.
//! - `lambda`: handler time per invocation and peak memory, in Lambda mode.
//! - `wire`: database round trips per request, and miss latency with a delay added to each.
//! - `invoke`: runs a built bootstrap (e.g. the arm64 one under qemu) against the local Runtime API
//!   and checks its answers (`scripts/package.sh`).
//! - `connections`: K simulated Lambda instances through PgBouncer, or straight to PostgreSQL.
//! - `offload`: a Zipf workload through the local edge with writes and warmer ticks.
//! - `warmset`: the same through the edge, once with the fixed warm set and once with the learned one.
//! - `reads`: every route's miss (cache off), on production-sized data.
//! - `writes`: what the triggers cost each kind of write, on production-sized data.
//! - `busy`: a busy site's write rate with the warmer ticking: the system's own tables over time,
//!   and what polling, claiming and pruning the outbox cost.
//! - `report`: the markdown report.

mod busy;
mod coldstart;
mod connections;
mod hotpath;
mod instructions;
mod invoke;
mod lambda;
mod offload;
mod reads;
mod report;
mod warmset;
mod wire;
mod writes;

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "bench", about = "edgerail benchmarks (see bench/run.sh)")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve `bytes` static bytes at `route` (the framework ceiling).
    Ceiling {
        #[arg(long)]
        addr: SocketAddr,
        #[arg(long)]
        bytes: usize,
        /// The route template, in axum's syntax (`/v1/formations/{id}`), so the ceiling routes the
        /// same URL the way the api does.
        #[arg(long)]
        route: String,
        /// A response header (`name: value`) to send with every answer (repeatable): the floor
        /// of the instruction count sends the headers a hit carries.
        #[arg(long = "header")]
        headers: Vec<String>,
    },
    /// CPU time per request of running servers under wrk.
    HotPath(hotpath::Args),
    /// Instructions per request of a cached hit and of the ceiling, under Callgrind.
    Instructions(instructions::Args),
    /// Cold starts of the api binary.
    ColdStart(coldstart::Args),
    /// Handler time and memory in Lambda mode.
    Lambda(lambda::Args),
    /// Invokes a built bootstrap through a local Runtime API and checks its answers.
    Invoke(invoke::Args),
    /// Database round trips, and miss latency with slower ones.
    Wire(wire::Args),
    /// Simulated Lambda instances against PostgreSQL.
    Connections(connections::Args),
    /// Zipf workload through the edge, with writes and warmer ticks.
    Offload(offload::Args),
    /// The warm set, fixed against learned, in one run (found warm, edge misses, origin load).
    Warmset(warmset::Args),
    /// Every route's miss on production-sized data, from the api's own database time.
    Reads(reads::Args),
    /// What the triggers cost each kind of write, with and without them.
    Writes(writes::Args),
    /// A busy site's write rate with the warmer ticking: the system's tables and the outbox's cost.
    Busy(busy::Args),
    /// Assemble the markdown report from the JSON results.
    Report {
        #[arg(long)]
        dir: PathBuf,
        /// A repository root: also write bench/RESULTS.md, its plots and the README's summary there.
        #[arg(long)]
        publish: Option<PathBuf>,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Ceiling { addr, bytes, route, headers } => {
            let body = bytes::Bytes::from(vec![b'x'; bytes]);
            let mut fixed = http::HeaderMap::new();
            for header in &headers {
                let (name, value) =
                    header.split_once(':').ok_or_else(|| anyhow::anyhow!("not `name: value`: {header}"))?;
                fixed.append(http::HeaderName::try_from(name.trim())?, http::HeaderValue::try_from(value.trim())?);
            }
            let handler = if fixed.is_empty() {
                axum::routing::get(move || {
                    let body = body.clone();
                    async move { ([("content-type", "application/json")], body) }
                })
            } else {
                // Each header inserted once into the response's own map, as a handler that
                // computed them would.
                axum::routing::get(move || {
                    let mut response = axum::response::Response::new(axum::body::Body::from(body.clone()));
                    let headers = response.headers_mut();
                    headers.reserve(fixed.len() + 1);
                    headers.insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
                    for (name, value) in &fixed {
                        headers.insert(name.clone(), value.clone());
                    }
                    std::future::ready(response)
                })
            };
            let app = axum::Router::new().route(&route, handler);
            let listener = tokio::net::TcpListener::bind(addr).await?;
            // SIGTERM ends it by returning from `main`, so a profiler around it writes its totals.
            axum::serve(listener, app).with_graceful_shutdown(plumbing::shutdown_signal()).await?;
            Ok(())
        }
        Command::HotPath(args) => tokio::task::spawn_blocking(move || hotpath::run(&args)).await?,
        Command::Instructions(args) => tokio::task::spawn_blocking(move || instructions::run(&args)).await?,
        Command::ColdStart(args) => coldstart::run(args).await,
        Command::Lambda(args) => lambda::run(args).await,
        Command::Invoke(args) => invoke::run(args).await,
        Command::Wire(args) => wire::run(args).await,
        Command::Connections(args) => connections::run(args).await,
        Command::Offload(args) => offload::run(args).await,
        Command::Warmset(args) => warmset::run(args).await,
        Command::Reads(args) => reads::run(args).await,
        Command::Writes(args) => writes::run(args).await,
        Command::Busy(args) => busy::run(args).await,
        Command::Report { dir, publish } => report::run(&dir, publish.as_deref()),
    }
}
