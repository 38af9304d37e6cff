//! The soak's network faults: a TCP proxy that can black-hole its connections, and a gate in front
//! of the edge's purge endpoint that can refuse.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
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

    /// Waits while the switch is on.
    async fn pass(&self) {
        while self.on() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Forwards TCP connections to `upstream`. While `hole` is on nothing moves in either direction,
/// not even a close, and new connections are accepted but not connected onwards: a network
/// partition as the two ends see it. When it ends, what was held is delivered.
pub async fn black_hole_proxy(upstream: SocketAddr, hole: Switch) -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let hole = hole.clone();
            tokio::spawn(async move {
                hole.pass().await;
                let Ok(server) = TcpStream::connect(upstream).await else { return };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                let (client_read, client_write) = client.into_split();
                let (server_read, server_write) = server.into_split();
                let up = tokio::spawn(pipe(client_read, server_write, hole.clone()));
                let down = tokio::spawn(pipe(server_read, client_write, hole));
                let _ = tokio::join!(up, down);
            });
        }
    });
    Ok(addr)
}

async fn pipe(mut from: tokio::net::tcp::OwnedReadHalf, mut to: tokio::net::tcp::OwnedWriteHalf, hole: Switch) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        hole.pass().await;
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    hole.pass().await;
    let _ = to.shutdown().await;
}

#[derive(Debug, Clone)]
struct Gate {
    edge: String,
    client: reqwest::Client,
    down: Switch,
}

/// Forwards the warmer's PURGE requests to the edge at `edge`; answers `503` while `down` is on
/// (the invalidation API refusing).
pub async fn purge_gate(edge: String, down: Switch) -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let gate = Gate { edge, client: reqwest::Client::new(), down };
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
    let url = format!("{}{}", gate.edge, request.uri().path_and_query().map_or("/", |p| p.as_str()));
    let mut forwarded = gate.client.request(request.method().clone(), url);
    for (name, value) in request.headers() {
        if name != "host" && name != "content-length" {
            forwarded = forwarded.header(name, value);
        }
    }
    match forwarded.send().await {
        Ok(res) => {
            let status = res.status();
            (status, res.bytes().await.unwrap_or_default()).into_response()
        }
        Err(_) => StatusCode::BAD_GATEWAY.into_response(),
    }
}
