//! The edgerail read API.
//!
//! One axum application ([`app`]) serves railway-operations data with per-route caching headers,
//! ETags and cache tags, backed by an in-process response cache that coalesces misses and follows
//! the database's change feed. The same binary runs as a local HTTP server or on AWS Lambda
//! (`lambda_http`), over PostgreSQL or, by default, an embedded SQLite file (the `store` crate).
//!
//! # Layout
//!
//! - [`config`]: the typed configuration (flags and environment variables).
//! - [`startup`]: building state from configuration; the local server and the Lambda runner.
//! - `http`: the router, the validated request, content negotiation, rendering, errors and the
//!   route groups.
//! - `cache`: the cached response value, the in-process cache, and the change-feed follower that
//!   keeps it fresh.
//! - [`metrics`]: per-route counters written as CloudWatch Embedded Metric Format lines.
//! - [`learn`]: the paths this instance answered for the edge, flushed for the warmer.
//! - `openapi` (feature `openapi`): `openapi.json` built from the policy and the answer types.
//!
//! Only what the binary and the end-to-end tests need is public.

mod cache;
pub mod config;
mod http;
pub mod learn;
pub mod metrics;
#[cfg(feature = "openapi")]
pub mod openapi;
pub mod startup;

pub use http::{AppState, app};
