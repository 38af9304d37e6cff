//! End-to-end tests of edgerail, in one test binary (one link, one build).
//!
//! They need the services `scripts/test.sh` starts (PostgreSQL, PgBouncer) and the fixtures it
//! prepares; a missing service is a failure, never a skip.

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
                async fn $name() {
                    super::$name($crate::helpers::Backend::Postgres).await
                }
            )*
        }
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::helpers::Backend::Sqlite).await
                }
            )*
        }
    };
}
