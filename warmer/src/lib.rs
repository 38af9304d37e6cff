//! The edgerail warmer: turns database changes into edge invalidations and keeps hot pages warm.
//!
//! Each tick claims pending `cache_changes` rows (written by the API's database triggers), plans an
//! invalidation with [`cache_policy::plan`] (cache tags or paths, within CloudFront's limits and the
//! monthly path budget), sends it to the backend, marks the changes processed only after the backend
//! accepted it, then warms the affected and due paths of the warm set through the edge. It runs as a
//! scheduled Lambda (EventBridge) or locally (`warmer --once`, `warmer --every 60s`); `cachectl` is
//! the operator's CLI for the same operations.
//!
//! The database side (claiming, completing and pruning changes, the warmer's records) lives in
//! the `store` crate's `outbox`, next to the migrations that create those tables.
//!
//! # Layout
//!
//! - [`config`]: flags and environment variables shared by both binaries.
//! - [`cli`]: the `warmer` and `cachectl` command lines, and building a [`tick::Warmer`] from them.
//! - [`backend`]: CloudFront, purge and no-op invalidation backends.
//! - [`decide`]: the tick's decisions as pure functions (the budget, what an invalidation emptied,
//!   what is due, what to warm within the budget), tested without any service.
//! - [`warm`]: reading the warm set, and fetching through the edge.
//! - [`tick`]: one tick as a sequence of steps, its typed error and its JSON summary.
//! - [`lambda`]: the scheduled Lambda handler.
//! - [`metrics`]: the tick's Embedded Metric Format line.

pub mod backend;
pub mod cli;
pub mod config;
pub mod decide;
pub mod lambda;
pub mod metrics;
pub mod tick;
pub mod warm;
