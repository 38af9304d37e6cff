//! Database round trips per uncached request, counted on the wire: each round trip of the
//! PostgreSQL protocol ends with the server's ReadyForQuery message, which a forwarding proxy counts.
//! A miss is one message (its statements and settings together) plus the ping sqlx sends when the
//! connection goes back to the pool: two, directly and through PgBouncer transaction pooling. A cold
//! instance's first request adds only its connection's startup: the feed position comes with the
//! data.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::{Backend, TestApp, TestDb};

/// Forwards to PostgreSQL (or PgBouncer) and counts the ReadyForQuery (`Z`) messages it answers.
struct CountingProxy {
    addr: SocketAddr,
    ready: Arc<AtomicUsize>,
}

impl CountingProxy {
    async fn start(target: SocketAddr) -> Self {
        let ready: Arc<AtomicUsize> = Arc::default();
        let counter = ready.clone();
        let addr = crate::helpers::forward(
            target,
            move |mut client_read, mut client_write, mut server_read, mut server_write| {
                let counter = counter.clone();
                async move {
                    tokio::spawn(async move { tokio::io::copy(&mut client_read, &mut server_write).await });
                    // Server messages: a type byte, then a length that counts itself.
                    let mut pending: Vec<u8> = Vec::new();
                    let mut buf = vec![0u8; 64 * 1024];
                    loop {
                        let Ok(n) = server_read.read(&mut buf).await else { return };
                        if n == 0 || client_write.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                        pending.extend_from_slice(&buf[..n]);
                        while pending.len() >= 5 {
                            let len = u32::from_be_bytes([pending[1], pending[2], pending[3], pending[4]]) as usize;
                            if pending.len() < 1 + len {
                                break;
                            }
                            if pending[0] == b'Z' {
                                counter.fetch_add(1, Ordering::SeqCst);
                            }
                            pending.drain(..1 + len);
                        }
                    }
                }
            },
        )
        .await;
        Self { addr, ready }
    }

    /// Round trips so far, once the count has stopped moving: sqlx checks a connection with a
    /// ping when it goes back to the pool, in the background, after the request has its answer.
    async fn round_trips(&self) -> usize {
        let mut last = self.ready.load(Ordering::SeqCst);
        loop {
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
            let now = self.ready.load(Ordering::SeqCst);
            if now == last {
                return now;
            }
            last = now;
        }
    }
}

async fn count(through_pgbouncer: bool) {
    let db = TestDb::new(Backend::Postgres).await;
    let target = if through_pgbouncer { db.via_pgbouncer() } else { db.url.clone() };
    let authority = target.split('@').nth(1).unwrap().split('/').next().unwrap().to_owned();
    let proxy = CountingProxy::start(authority.parse().unwrap()).await;
    // No TLS, so the proxy can read the protocol.
    let url = format!("{}?sslmode=disable", target.replace(&authority, &proxy.addr.to_string()));
    let app = TestApp::with_url(
        db.clone(),
        &url,
        &[
            "--db-max-connections",
            "1",
            "--db-proxy-compat",
            if through_pgbouncer { "true" } else { "false" },
            "--change-poll-interval",
            "1h",
            "--change-max-lag",
            "2h",
        ],
    )
    .await;
    // A cold instance: connecting (its startup ends with a ReadyForQuery), then one message that
    // reads the feed position with the data, then the ping. No change poll of its own, and the
    // answer is kept.
    let res = app.get("/v1/lines").await;
    assert_eq!((res.status.as_u16(), res.header("x-local-cache")), (200, "miss"));
    let trips = proxy.round_trips().await;
    assert_eq!(trips, 3, "a cold first request took {trips} round trips (pgbouncer: {through_pgbouncer})");
    assert_eq!(app.get("/v1/lines").await.header("x-local-cache"), "hit");
    assert_eq!(proxy.round_trips().await, trips, "a hit reads nothing");
    for uri in
        ["/v1/formations/10701F", "/v1/operations/today/01M", "/v1/lines/minato/stations", "/v1/sightings/latest"]
    {
        let before = proxy.round_trips().await;
        let res = app.get(uri).await;
        let trips = proxy.round_trips().await - before;
        assert_eq!((res.status.as_u16(), res.header("x-local-cache")), (200, "miss"), "{uri}");
        // The read's own message, and sqlx's check of the connection as it returns to the pool.
        assert_eq!(trips, 2, "{uri}: a miss took {trips} round trips (pgbouncer: {through_pgbouncer})");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs services: run ./scripts/test.sh"]
async fn a_miss_costs_two_round_trips_direct() {
    count(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs services: run ./scripts/test.sh"]
async fn a_miss_costs_two_round_trips_through_pgbouncer() {
    count(true).await;
}
