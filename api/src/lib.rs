//! The edgerail read API.
//!
//! One axum application ([`http::app`]) serves railway-operations data with per-route caching
//! headers, ETags and cache tags, backed by an in-process response cache that coalesces misses and
//! follows the database's change feed. The same binary runs as a local HTTP server or on AWS
//! Lambda (`lambda_http`), and uses PostgreSQL or, by default, an embedded SQLite file.
//!
//! # Layout
//!
//! - [`config`]: the typed configuration (flags and environment variables).
//! - [`startup`]: building state from configuration; local server and Lambda runners.
//! - [`http`]: the router, route groups, the [`http::endpoint::Endpoint`] extractor, errors and
//!   response rendering.
//! - [`cache`]: the in-process cache and the change-feed follower that evicts from it.
//! - [`store`]: the [`store::Store`] trait with PostgreSQL and SQLite implementations.
//! - [`calendar`]: service days and their rollover.
//! - [`seed`]: demo data generation.
//! - [`telemetry`]: log setup.

pub mod cache;
pub mod calendar;
pub mod config;
pub mod http;
pub mod seed;
pub mod startup;
pub mod store;
pub mod telemetry;

pub use http::{AppState, app};
