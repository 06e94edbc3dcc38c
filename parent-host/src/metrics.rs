//! Operator metrics in Prometheus text format (`GET /metrics` on `--metrics-listen`, off by
//! default): requests by operation and outcome, request latency, enclave round trips, requests in
//! flight, store write latency, custody state and audit lag. The `prometheus` crate keeps the
//! registry and writes the format.
//!
//! Nothing secret is a label or a value: operations and AWS error codes come from fixed lists
//! (an unknown operation is counted as `Unknown`), and custody state is public.

use std::{net::SocketAddr, sync::Arc, sync::LazyLock};

use axum::{Router, extract::State, http::header, response::IntoResponse, routing::get};
use ekms_wire::msg::{CustodyState, EnclaveResponse, HostRequest};
use prometheus::{
    Encoder as _, Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec,
    Opts, Registry, TextEncoder,
};

use crate::{HostError, relay::Relay};

/// The appliance's metrics.
pub struct Metrics {
    registry: Registry,
    /// `ekms_requests_total{operation, outcome}`: outcome `ok` or the AWS error code.
    pub requests: IntCounterVec,
    /// `ekms_request_duration_seconds{operation}`: from a request's body read to its answer.
    pub latency: HistogramVec,
    /// `ekms_enclave_round_trip_seconds`: one call to the enclave over vsock.
    pub enclave_rtt: Histogram,
    /// `ekms_requests_in_flight`.
    pub in_flight: IntGauge,
    /// `ekms_store_write_seconds`: one durable store transaction.
    pub store_write: Histogram,
    /// `ekms_custody_state{state}`: 1 for the enclave's current state, 0 for the others.
    pub custody: IntGaugeVec,
    /// `ekms_audit_lag_records`: audit records the enclave wrote and the store has not yet.
    pub audit_lag: IntGauge,
}

/// Latency buckets, seconds: 50 µs to 2.5 s.
const BUCKETS: &[f64] = &[
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5,
];

fn build() -> Result<Metrics, prometheus::Error> {
    let registry = Registry::new();
    let requests = IntCounterVec::new(
        Opts::new(
            "ekms_requests_total",
            "KMS requests by operation and outcome",
        ),
        &["operation", "outcome"],
    )?;
    let latency = HistogramVec::new(
        HistogramOpts::new(
            "ekms_request_duration_seconds",
            "KMS request latency at the host, by operation",
        )
        .buckets(BUCKETS.to_vec()),
        &["operation"],
    )?;
    let enclave_rtt = Histogram::with_opts(
        HistogramOpts::new(
            "ekms_enclave_round_trip_seconds",
            "Round trip of one call to the enclave",
        )
        .buckets(BUCKETS.to_vec()),
    )?;
    let in_flight = IntGauge::new("ekms_requests_in_flight", "KMS requests being served")?;
    let store_write = Histogram::with_opts(
        HistogramOpts::new(
            "ekms_store_write_seconds",
            "One durable write transaction of sealed records",
        )
        .buckets(BUCKETS.to_vec()),
    )?;
    let custody = IntGaugeVec::new(
        Opts::new(
            "ekms_custody_state",
            "1 for the enclave's custody state (uninitialised, sealed, unsealed)",
        ),
        &["state"],
    )?;
    let audit_lag = IntGauge::new(
        "ekms_audit_lag_records",
        "Audit records the enclave wrote that the store does not hold yet",
    )?;
    registry.register(Box::new(requests.clone()))?;
    registry.register(Box::new(latency.clone()))?;
    registry.register(Box::new(enclave_rtt.clone()))?;
    registry.register(Box::new(in_flight.clone()))?;
    registry.register(Box::new(store_write.clone()))?;
    registry.register(Box::new(custody.clone()))?;
    registry.register(Box::new(audit_lag.clone()))?;
    Ok(Metrics {
        registry,
        requests,
        latency,
        enclave_rtt,
        in_flight,
        store_write,
        custody,
        audit_lag,
    })
}

/// The process's metrics (`None` only if the registry could not be built, which its fixed
/// names and labels rule out; then nothing is counted).
pub static METRICS: LazyLock<Option<Metrics>> = LazyLock::new(|| build().ok());

/// Counts one answered KMS request.
pub fn request_done(operation: &str, outcome: &str, seconds: f64) {
    if let Some(m) = METRICS.as_ref() {
        m.requests.with_label_values(&[operation, outcome]).inc();
        m.latency.with_label_values(&[operation]).observe(seconds);
    }
}

/// Holds one request in the in-flight gauge while it lives.
pub struct InFlight;

impl InFlight {
    /// Counts a request in.
    #[must_use]
    pub fn start() -> Self {
        if let Some(m) = METRICS.as_ref() {
            m.in_flight.inc();
        }
        Self
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Some(m) = METRICS.as_ref() {
            m.in_flight.dec();
        }
    }
}

/// Observes one enclave round trip.
pub fn enclave_round_trip(seconds: f64) {
    if let Some(m) = METRICS.as_ref() {
        m.enclave_rtt.observe(seconds);
    }
}

/// Observes one store write.
pub fn store_write(seconds: f64) {
    if let Some(m) = METRICS.as_ref() {
        m.store_write.observe(seconds);
    }
}

/// The text exposition, with custody state and audit lag read now.
async fn render(relay: &Relay) -> String {
    let Some(m) = METRICS.as_ref() else {
        return String::new();
    };
    let state = match relay.enclave().call(&HostRequest::Status).await {
        Ok(EnclaveResponse::Status(s)) => Some(s.custody),
        _ => None,
    };
    for (name, on) in [
        (
            "uninitialised",
            matches!(state, Some(CustodyState::Uninitialised)),
        ),
        ("sealed", matches!(state, Some(CustodyState::Sealed { .. }))),
        (
            "unsealed",
            matches!(state, Some(CustodyState::Unsealed { .. })),
        ),
    ] {
        m.custody.with_label_values(&[name]).set(i64::from(on));
    }
    m.audit_lag.set(
        relay
            .audit()
            .map_or(0, |a| i64::try_from(a.lag()).unwrap_or(i64::MAX)),
    );
    let mut out = Vec::new();
    if TextEncoder::new()
        .encode(&m.registry.gather(), &mut out)
        .is_err()
    {
        return String::new();
    }
    String::from_utf8(out).unwrap_or_default()
}

async fn metrics(State(relay): State<Arc<Relay>>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        render(&relay).await,
    )
}

/// [`start`] when `addr` is given, announcing the address on stdout (tests read the line).
pub async fn start_if(
    addr: Option<SocketAddr>,
    relay: Arc<Relay>,
    edge: crate::edge::Edge,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<Option<tokio::task::JoinHandle<()>>, HostError> {
    let Some(addr) = addr else { return Ok(None) };
    let (local, task) = start(addr, relay, edge, shutdown).await?;
    println!("ekms: metrics on http://{local}/metrics");
    Ok(Some(task))
}

/// Binds `addr` and serves `GET /metrics` through the HTTP edge (its timeouts and connection
/// cap, like every listener) until `shutdown` completes. Returns the bound address (tests pass
/// port 0) and the task.
pub async fn start(
    addr: SocketAddr,
    relay: Arc<Relay>,
    edge: crate::edge::Edge,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>), HostError> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let app = Router::new()
        .route("/metrics", get(metrics))
        .with_state(relay);
    let task = tokio::spawn(crate::edge::serve(
        listener,
        crate::edge::Plain,
        app,
        edge,
        shutdown,
    ));
    Ok((local, task))
}
