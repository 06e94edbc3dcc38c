//! The HTTP edge of every listener (KMS and custody on `--listen`, the XKS proxy API): our own
//! accept loop over hyper's HTTP/1.1 connections, so that no client can hold the host's
//! resources for free. It enforces a header timeout, a body timeout, an idle keep-alive timeout,
//! a connection cap (over it a new connection gets a 503 in its API's error shape and is closed)
//! and a budget for request bodies buffered at once across all connections.
//!
//! It must never read a body for any purpose but buffering it, never log one, and never decide
//! who may call: the routers behind it (and the enclave behind them) do.

mod activity;
mod body;

use std::{
    convert::Infallible, future::Future, io, net::SocketAddr, pin::pin, sync::Arc, time::Duration,
};

use axum::{
    Router,
    body::Body,
    extract::ConnectInfo,
    http::{HeaderValue, Request, Response, header},
};
use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::{
    io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _},
    net::{TcpListener, TcpStream},
    sync::{Semaphore, watch},
};
use tower::ServiceExt as _;

use activity::{Activity, Phase, Watched};
pub use body::{BodyBudget, DEFAULT_MAX_BODY_MEMORY, SMALL_BODY};

/// The limits of one listener's edge. The defaults are what `ekms serve` uses without flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EdgeLimits {
    /// A request head (request line and headers) must arrive within this, counted from the
    /// connection's start (after its TLS handshake, which has as long) or from the first byte
    /// of a later request.
    pub header_timeout: Duration,
    /// A request body must arrive whole within this, counted from the end of its head.
    pub body_timeout: Duration,
    /// A connection with no request in flight and no byte of a new one is closed after this.
    pub idle_timeout: Duration,
    /// Connections served at once on the listener (TLS handshakes included); one more gets a
    /// 503 and is closed.
    pub max_connections: usize,
}

impl Default for EdgeLimits {
    fn default() -> Self {
        Self {
            header_timeout: DEFAULT_HEADER_TIMEOUT,
            body_timeout: DEFAULT_BODY_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
        }
    }
}

/// Default of `--header-timeout`: far more than any client on a working network needs for a
/// few hundred bytes of headers.
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Default of `--body-timeout`: the largest body (384 KiB) at about 100 kbit/s.
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(30);
/// Default of `--idle-timeout`: what AWS's own load balancers keep an idle connection.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Default of `--max-connections`, per listener. Each connection is an open file: `serve` warns
/// at start when its open-files limit is below what its caps need.
pub const DEFAULT_MAX_CONNECTIONS: usize = 512;

/// Largest buffer hyper keeps per connection for reading (a request head must fit in it).
/// hyper's default is about 400 KiB; a request head of a KMS or XKS call is under 8 KiB.
const READ_BUFFER: usize = 64 * 1024;
/// Refusals (503s to connections over the cap) in progress at once; past it a connection over
/// the cap is closed without an answer.
const MAX_REFUSALS: usize = 64;
/// How long a refusal may take (TLS handshake, writing the 503, reading what the client sent).
const REFUSAL_TIME: Duration = Duration::from_secs(2);
/// Bytes of a refused client's request read (and dropped) before its connection is closed, so
/// that the close does not reset the connection under the client's feet before it read the 503.
const REFUSAL_DRAIN: usize = 64 * 1024;
/// How long a stopping listener lets its requests in flight finish.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// How a listener's API words the edge's refusals (KMS: `{"__type", "message"}`; XKS:
/// `{"errorName", "errorMessage"}`).
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    /// Over the connection cap or the body budget: status 503.
    pub busy: fn() -> Response<Body>,
    /// A body over the listener's limit (the argument): a 4xx.
    pub too_large: fn(usize) -> Response<Body>,
    /// A body that did not arrive within the body timeout (the argument): a 4xx.
    pub too_slow: fn(Duration) -> Response<Body>,
}

/// One listener's edge: its limits, its API's shape, its largest body, and the body budget
/// it shares with the other listeners.
#[derive(Debug, Clone)]
pub struct Edge {
    /// The limits.
    pub limits: EdgeLimits,
    /// Its API's error shape.
    pub shape: Shape,
    /// Largest request body.
    pub max_body: usize,
    /// Request bodies buffered at once, across every listener.
    pub budget: BodyBudget,
    /// Its name in logs.
    pub name: &'static str,
}

/// What turns an accepted TCP connection into the byte stream HTTP runs on: nothing (plain
/// HTTP) or a TLS handshake (bounded in time by the implementation).
pub trait Transport: Clone + Send + Sync + 'static {
    /// The stream.
    type Io: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    /// Completes the connection's setup.
    fn handshake(&self, tcp: TcpStream) -> impl Future<Output = io::Result<Self::Io>> + Send;
}

/// Plain HTTP.
#[derive(Debug, Clone, Copy)]
pub struct Plain;

impl Transport for Plain {
    type Io = TcpStream;
    async fn handshake(&self, tcp: TcpStream) -> io::Result<TcpStream> {
        Ok(tcp)
    }
}

/// Serves `router` on `tcp` through `transport` until `shutdown` completes; then closes idle
/// connections, lets requests in flight finish (at most [`SHUTDOWN_GRACE`]) and returns. The
/// router sees `ConnectInfo<SocketAddr>` and bodies already whole.
pub async fn serve<T: Transport>(
    tcp: TcpListener,
    transport: T,
    router: Router,
    edge: Edge,
    shutdown: impl Future<Output = ()>,
) {
    let edge = Arc::new(edge);
    let max = edge.limits.max_connections.max(1);
    let slots = Arc::new(Semaphore::new(max));
    let refusals = Arc::new(Semaphore::new(MAX_REFUSALS));
    let (stop_tx, stop) = watch::channel(false);
    let mut shutdown = pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            biased;
            () = &mut shutdown => break,
            accepted = tcp.accept() => match accepted {
                Ok(c) => c,
                Err(e) => {
                    // Out of file descriptors and the like: wait, as axum's own loop does.
                    tracing::warn!(listener = edge.name, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        if let Ok(slot) = Arc::clone(&slots).try_acquire_owned() {
            let (transport, router, edge, stop) = (
                transport.clone(),
                router.clone(),
                Arc::clone(&edge),
                stop.clone(),
            );
            tokio::spawn(async move {
                connection(stream, peer, transport, router, &edge, stop).await;
                drop(slot);
            });
        } else if let Ok(refusal) = Arc::clone(&refusals).try_acquire_owned() {
            tracing::info!(listener = edge.name, %peer, "over the connection cap: 503");
            let (transport, shape) = (transport.clone(), edge.shape);
            tokio::spawn(async move {
                let _ = tokio::time::timeout(REFUSAL_TIME, refuse(stream, transport, shape)).await;
                drop(refusal);
            });
        } else {
            tracing::info!(listener = edge.name, %peer, "over the connection cap: closed");
        }
    }
    // Accept no more: the port closes, and the connections see the stop.
    drop(tcp);
    let _ = stop_tx.send(true);
    let all = u32::try_from(max).unwrap_or(u32::MAX);
    if tokio::time::timeout(SHUTDOWN_GRACE, slots.acquire_many(all))
        .await
        .is_err()
    {
        tracing::warn!(
            listener = edge.name,
            "requests still in flight after the shutdown grace"
        );
    }
}

/// Serves one connection until it ends, times out, or (at a stop) has no request in flight.
async fn connection<T: Transport>(
    tcp: TcpStream,
    peer: SocketAddr,
    transport: T,
    router: Router,
    edge: &Arc<Edge>,
    mut stop: watch::Receiver<bool>,
) {
    let io = match transport.handshake(tcp).await {
        Ok(io) => io,
        Err(e) => {
            tracing::info!(listener = edge.name, %peer, error = %e, "handshake failed");
            return;
        }
    };
    let activity = Arc::new(Activity::new(tokio::time::Instant::now()));
    let service = {
        let (activity, edge) = (Arc::clone(&activity), Arc::clone(edge));
        hyper::service::service_fn(move |req: Request<Incoming>| {
            let (activity, edge, router) =
                (Arc::clone(&activity), Arc::clone(&edge), router.clone());
            async move {
                let _busy = activity.busy(tokio::time::Instant::now());
                Ok::<_, Infallible>(request(req, peer, router, &edge).await)
            }
        })
    };
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.max_buf_size(READ_BUFFER);
    let io = TokioIo::new(Watched::new(io, Arc::clone(&activity)));
    let mut conn = pin!(builder.serve_connection(io, service));
    let mut stopping = false;
    let mut timer = pin!(tokio::time::sleep_until(activity.deadline(&edge.limits)));
    loop {
        tokio::select! {
            served = conn.as_mut() => {
                if let Err(e) = served {
                    tracing::debug!(listener = edge.name, %peer, error = %e, "connection ended");
                }
                return;
            }
            () = timer.as_mut() => {
                if let Some(phase) = activity.expired(&edge.limits, tokio::time::Instant::now()) {
                    tracing::debug!(listener = edge.name, %peer, ?phase, "timed out: closed");
                    return;
                }
                timer.as_mut().reset(activity.deadline(&edge.limits));
            }
            () = activity.sooner.notified() => {
                timer.as_mut().reset(activity.deadline(&edge.limits));
            }
            _ = stop.changed(), if !stopping => {
                stopping = true;
                if activity.phase() != Phase::Busy {
                    return;
                }
                // The request in flight finishes, then the connection closes.
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}

/// One request: its body read whole (within the body timeout, the listener's limit and the
/// budget), then the router; the body's share of the budget is held until the router answered.
async fn request(
    req: Request<Incoming>,
    peer: SocketAddr,
    router: Router,
    edge: &Edge,
) -> Response<Body> {
    let (mut parts, incoming) = req.into_parts();
    parts.extensions.insert(ConnectInfo(peer));
    let read = body::read(incoming, edge.max_body, &edge.budget);
    let whole = match tokio::time::timeout(edge.limits.body_timeout, read).await {
        Ok(Ok(whole)) => whole,
        Ok(Err(refusal)) => {
            return closing(match refusal {
                body::Refusal::TooLarge => (edge.shape.too_large)(edge.max_body),
                body::Refusal::Busy => {
                    tracing::info!(listener = edge.name, %peer, "body budget spent: 503");
                    (edge.shape.busy)()
                }
                // The client went away mid-body: nobody reads this.
                body::Refusal::Broken => (edge.shape.too_slow)(edge.limits.body_timeout),
            });
        }
        Err(_) => {
            tracing::info!(listener = edge.name, %peer, "body timeout: closed");
            return closing((edge.shape.too_slow)(edge.limits.body_timeout));
        }
    };
    let (bytes, held) = whole.into_parts();
    let response = match router
        .oneshot(Request::from_parts(parts, Body::from(bytes)))
        .await
    {
        Ok(r) => r,
        Err(never) => match never {},
    };
    drop(held);
    response
}

/// `resp` with `Connection: close`: the connection ends after it (its body may be unread).
fn closing(mut resp: Response<Body>) -> Response<Body> {
    resp.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    resp
}

/// Answers a connection over the cap with the shape's 503 and closes it: after the handshake
/// the 503 goes out at once (the client's request is not awaited), then whatever the client
/// sends is read and dropped until it closes (bounded), so the close is no reset.
async fn refuse<T: Transport>(tcp: TcpStream, transport: T, shape: Shape) {
    let Ok(mut io) = transport.handshake(tcp).await else {
        return;
    };
    let wire = to_wire(closing((shape.busy)())).await;
    if io.write_all(&wire).await.is_err() || io.shutdown().await.is_err() {
        return;
    }
    let mut sink = vec![0u8; 4096];
    let mut read = 0;
    while read < REFUSAL_DRAIN {
        match io.read(&mut sink).await {
            Ok(0) | Err(_) => return,
            Ok(n) => read += n,
        }
    }
}

/// An HTTP/1.1 response as bytes (status line, headers with `content-length`, body).
async fn to_wire(resp: Response<Body>) -> Vec<u8> {
    let (parts, body) = resp.into_parts();
    let body = body
        .collect()
        .await
        .map(http_body_util::Collected::to_bytes)
        .unwrap_or_default();
    let mut out = format!(
        "HTTP/1.1 {} {}\r\n",
        parts.status.as_u16(),
        parts.status.canonical_reason().unwrap_or("")
    )
    .into_bytes();
    for (name, value) in &parts.headers {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(format!("content-length: {}\r\n\r\n", body.len()).as_bytes());
    out.extend_from_slice(&body);
    out
}

/// Files the host keeps open besides its client connections: the store and its WAL, the
/// enclave connections, the listeners, the simulated enclave's pipes, logs.
const OWN_FILES: u64 = 64;

/// Says at start when the open-files limit is below what the connection caps of all listeners
/// (`connections`) need: past it, accepting fails and new clients wait in the kernel's backlog
/// instead of getting a 503.
pub fn warn_open_files(connections: usize) {
    let need = u64::try_from(connections)
        .unwrap_or(u64::MAX)
        .saturating_add(OWN_FILES);
    if let Some(limit) = open_files_limit()
        && limit < need
    {
        eprintln!(
            "ekms: WARNING: the open-files limit ({limit}) is below what --max-connections needs \
             ({need}): raise it (ulimit -n, systemd LimitNOFILE) or lower --max-connections"
        );
    }
}

/// The soft limit of open files, from `/proc/self/limits` (`None` where unreadable or
/// unlimited).
fn open_files_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    limits
        .lines()
        .find_map(|l| l.strip_prefix("Max open files"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn busy() -> Response<Body> {
        let mut r = Response::new(Body::from("{\"busy\":1}"));
        *r.status_mut() = axum::http::StatusCode::SERVICE_UNAVAILABLE;
        r
    }

    #[tokio::test]
    async fn a_refusal_is_a_whole_http_response() {
        let wire = to_wire(closing(busy())).await;
        let text = String::from_utf8(wire).unwrap();
        assert!(
            text.starts_with("HTTP/1.1 503 Service Unavailable\r\n"),
            "{text}"
        );
        assert!(text.contains("connection: close\r\n"), "{text}");
        assert!(
            text.ends_with("content-length: 10\r\n\r\n{\"busy\":1}"),
            "{text}"
        );
    }
}
