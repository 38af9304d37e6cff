//! End-to-end tests of edgerail, in one test binary (one link, one build).
//!
//! Two tiers. The checks of generated and hand-kept files (the configuration reference, the man
//! pages, openapi.json, the template's query behaviours, the docs' links) need nothing and run in
//! a plain `cargo test`. Every other test talks to the services `scripts/test.sh` starts
//! (PostgreSQL, PgBouncer, moto, Varnish), the fixtures it prepares and the binaries it builds: those
//! are `#[ignore = "needs services…"]`, so a plain `cargo test` lists them as ignored, and the test
//! command runs them with `cargo nextest run --run-ignored all`, where a missing service fails them.

mod helpers;

mod coalescing;
mod contract;
mod docs;
mod edge;
mod failures;
mod faults;
mod freshness;
mod lambda;
mod learn;
mod openapi;
mod pgbouncer;
mod plans;
mod quickstart;
mod roundtrips;
mod secrets;
mod store;
mod template;
mod warmer;

/// Generates one `#[tokio::test]` per backend from an `async fn(Backend)`.
#[macro_export]
macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                #[ignore = "needs services: run ./scripts/test.sh"]
                async fn $name() {
                    super::$name($crate::helpers::Backend::Postgres).await
                }
            )*
        }
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                #[ignore = "needs services: run ./scripts/test.sh"]
                async fn $name() {
                    super::$name($crate::helpers::Backend::Sqlite).await
                }
            )*
        }
    };
}
