//! The soak's network faults: a TCP proxy that can black-hole its connections or slow some of
//! them down, and a gate in front of the edge's purge endpoint that can refuse, stall or answer
//! slowly.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A switch a fault turns on for a while.
#[derive(Debug, Clone, Default)]
pub struct Switch(Arc<AtomicBool>);

impl Switch {
    pub fn set(&self, on: bool) {
        self.0.store(on, Ordering::SeqCst);
    }

    pub fn on(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }

    /// On for `length`, then off: a fault's window.
    pub async fn hold(&self, length: Duration) {
        self.set(true);
        tokio::time::sleep(length).await;
        self.set(false);
    }

    /// Waits while the switch is on.
    async fn pass(&self) {
        while self.on() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// A delay a fault sets for a while (zero: none).
#[derive(Debug, Clone, Default)]
pub struct Delay(Arc<AtomicU64>);

impl Delay {
    pub fn set(&self, delay: Duration) {
        self.0.store(u64::try_from(delay.as_millis()).unwrap_or(u64::MAX), Ordering::SeqCst);
    }

    fn get(&self) -> Duration {
        Duration::from_millis(self.0.load(Ordering::SeqCst))
    }
}

/// Forwards TCP connections to `upstream`. While `hole` is on nothing moves in either direction,
/// not even a close, and new connections are accepted but not connected onwards: a network
/// partition as the two ends see it. When it ends, what was held is delivered. While `slow` is
/// set, every connection delivers each piece the server sends that much later: a round trip
/// that takes seconds on the connections of some instances (those behind this proxy), as a
/// congested link or an overloaded replica makes it.
pub async fn proxy(upstream: SocketAddr, hole: Switch, slow: Delay) -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let (hole, slow) = (hole.clone(), Some(slow.clone()));
            tokio::spawn(async move {
                hole.pass().await;
                let Ok(server) = TcpStream::connect(upstream).await else { return };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                let (client_read, client_write) = client.into_split();
                let (server_read, server_write) = server.into_split();
                let up = tokio::spawn(pipe(client_read, server_write, hole.clone(), None));
                let down = tokio::spawn(pipe(server_read, client_write, hole, slow));
                let _ = tokio::join!(up, down);
            });
        }
    });
    Ok(addr)
}

async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    hole: Switch,
    slow: Option<Delay>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        hole.pass().await;
        if let Some(delay) = slow.as_ref().map(Delay::get).filter(|d| !d.is_zero()) {
            tokio::time::sleep(delay).await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    hole.pass().await;
    let _ = to.shutdown().await;
}

#[derive(Debug, Clone)]
struct Gate {
    edges: Vec<String>,
    client: reqwest::Client,
    down: Switch,
    stalled: Switch,
    requests: Arc<AtomicU64>,
}

/// Forwards the warmer's PURGE requests to every edge cache of `edges`, as an invalidation reaches
/// every CloudFront location, and answers the first failure among theirs, if any; answers `503`
/// while `down` is on (the invalidation API refusing). While `stalled` is on, it takes each request and answers
/// nothing until the stall ends (then `503`), or, every other request, forwards it two seconds
/// late: an invalidation API that hangs, or crawls.
pub async fn purge_gate(edges: Vec<String>, down: Switch, stalled: Switch) -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let gate = Gate { edges, client: reqwest::Client::new(), down, stalled, requests: Arc::default() };
    let app = axum::Router::new().fallback(forward).with_state(gate);
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(addr)
}

async fn forward(State(gate): State<Gate>, request: Request) -> Response {
    if gate.down.on() {
        return (StatusCode::SERVICE_UNAVAILABLE, "the invalidation endpoint is down (soak fault)").into_response();
    }
    if gate.stalled.on() {
        if gate.requests.fetch_add(1, Ordering::SeqCst).is_multiple_of(2) {
            gate.stalled.pass().await;
            return (StatusCode::SERVICE_UNAVAILABLE, "the invalidation endpoint stalled (soak fault)").into_response();
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let target = request.uri().path_and_query().map_or("/", |p| p.as_str()).to_owned();
    let purges = gate.edges.iter().map(|edge| {
        let mut forwarded = gate.client.request(request.method().clone(), format!("{edge}{target}"));
        for (name, value) in request.headers() {
            if name != "host" && name != "content-length" {
                forwarded = forwarded.header(name, value);
            }
        }
        async move {
            match forwarded.send().await {
                Ok(res) => (res.status(), res.bytes().await.unwrap_or_default()),
                Err(_) => (StatusCode::BAD_GATEWAY, axum::body::Bytes::new()),
            }
        }
    });
    let answers = futures_util::future::join_all(purges).await;
    let worst = answers.iter().position(|(status, _)| !status.is_success()).unwrap_or(0);
    answers.into_iter().nth(worst).map_or_else(|| StatusCode::BAD_GATEWAY.into_response(), IntoResponse::into_response)
}
