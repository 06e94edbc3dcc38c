//! `ekms serve`: open the store, start (simulation) or reach (Nitro) the enclave, keep its
//! custody in step with the store (load, unseal, peer join), listen, sweep expired keys, and
//! shut everything down on Ctrl-C/SIGTERM.

use std::{net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use ekms_wire::SocketAddress;

use crate::{
    HostError,
    client::EnclaveClient,
    credentials,
    custody::{Custody, DevCustodian},
    edge::{BodyBudget, Edge, EdgeLimits},
    http::{AppState, router},
    relay::Relay,
    store::{SqliteStore, Store},
    supervisor::{EnclaveCommand, Supervisor},
};

/// The simulated enclave's CA file in a simulation data dir (secret; its presence is what makes a
/// data dir a simulation one). NEVER IN PRODUCTION.
pub const SIM_CA_FILE: &str = "SIMULATION-ONLY-attestation-ca.secret";

/// How `serve` reaches its enclave.
#[derive(Debug, Clone)]
pub enum EnclaveMode {
    /// Spawn `ekms-enclave` on the vsock mock.
    Simulation {
        /// The enclave executable.
        program: PathBuf,
        /// The CID the enclave takes in the vsock mock (a second appliance on the same data dir
        /// needs its own).
        cid: u32,
        /// Whether the development custodian in the data dir creates and unseals the domain.
        dev_custodian: bool,
        /// Days the simulated enclave's clock runs ahead of the machine's (0: none); for tests
        /// of schedules. A Nitro enclave has no such setting.
        clock_offset_days: u32,
    },
    /// A Nitro enclave on AF_VSOCK.
    Nitro {
        /// Its CID.
        cid: u32,
        /// Its port.
        port: u32,
    },
}

/// Settings of `serve`.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Data directory (store, credentials, simulation files).
    pub data_dir: PathBuf,
    /// HTTP listen address.
    pub listen: SocketAddr,
    /// The enclave.
    pub mode: EnclaveMode,
    /// The home region.
    pub region: String,
    /// The regions served.
    pub regions: ekms_wire::region::Regions,
    /// Account id.
    pub account: String,
    /// Connections in the enclave pool.
    pub connections: usize,
    /// A running appliance of the same domain to get the domain from (peer forwarding).
    pub peer: Option<String>,
    /// The witnesses' appliance URLs (a domain created here needs as many witnesses).
    pub witnesses: Vec<String>,
    /// The XKS proxy API listener, if any.
    pub xks: Option<XksListen>,
    /// The HTTP edge's timeouts and connection cap, on each listener.
    pub edge: EdgeLimits,
    /// Bytes of large request bodies buffered at once, across listeners (`--max-body-memory`).
    pub max_body_memory: usize,
    /// Where to serve `GET /metrics` (Prometheus), if anywhere.
    pub metrics: Option<SocketAddr>,
    /// Bytes of sealed records the relay keeps in memory (`--record-cache`).
    pub record_cache: u64,
}

/// Where and how `serve` offers the XKS proxy API (AWS KMS External Key Store).
#[derive(Debug, Clone)]
pub struct XksListen {
    /// Listen address.
    pub addr: SocketAddr,
    /// TLS files; `None` serves plain HTTP (`--xks-insecure-http`, for tests: AWS KMS calls an
    /// XKS proxy over HTTPS only).
    pub tls: Option<crate::xks_tls::XksTlsFiles>,
}

/// Runs until Ctrl-C or SIGTERM.
pub async fn run(mut cfg: ServeConfig) -> Result<(), HostError> {
    // Unusable TLS files fail the start before anything else does.
    let xks_tls = match cfg.xks.as_ref().and_then(|x| x.tls.as_ref()) {
        Some(files) => Some(crate::xks_tls::load(files)?),
        None => None,
    };
    let listeners = if cfg.xks.is_some() { 2 } else { 1 };
    crate::edge::warn_open_files(cfg.edge.max_connections.saturating_mul(listeners));
    std::fs::create_dir_all(&cfg.data_dir)?;
    // Absolute, so the printed exports work from any directory.
    cfg.data_dir = std::fs::canonicalize(&cfg.data_dir)?;
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&cfg.data_dir, std::fs::Permissions::from_mode(0o700))?;
    }
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(
        &cfg.data_dir.join(crate::store::STORE_FILE),
    )?);
    let (addr, supervisor) = match &cfg.mode {
        EnclaveMode::Simulation {
            program,
            cid,
            clock_offset_days,
            ..
        } => {
            let run_dir = cfg.data_dir.join("run");
            let addr = SocketAddress::Mock {
                dir: run_dir.clone(),
                cid: *cid,
                port: ekms_wire::transport::DEFAULT_ENCLAVE_PORT,
            };
            let mut cmd = EnclaveCommand {
                program: program.clone(),
                args: vec![
                    "--mock-vsock-dir".into(),
                    run_dir.display().to_string(),
                    "--region".into(),
                    cfg.region.clone(),
                    "--regions".into(),
                    cfg.regions.to_arg(),
                    "--account".into(),
                    cfg.account.clone(),
                    "--sim-ca-file".into(),
                    cfg.data_dir.join(SIM_CA_FILE).display().to_string(),
                    "--cid".into(),
                    cid.to_string(),
                    "--exit-on-stdin-eof".into(),
                ],
            };
            eprintln!(
                "ekms: WARNING: SIMULATION ATTESTATION: Recipient documents signed by this data dir's\n\
                 ekms: WARNING: simulation CA are trusted (besides the AWS Nitro root): anyone who can read\n\
                 ekms: WARNING: the data dir can make one (`ekms attestation mock`). Never in production."
            );
            if *clock_offset_days > 0 {
                eprintln!(
                    "ekms: WARNING: SIMULATION CLOCK: the enclave's clock runs {clock_offset_days} days ahead of\n\
                     ekms: WARNING: this machine's: keys are dated, rotated, deleted and expired by it. For tests only."
                );
                cmd.args.extend([
                    "--sim-clock-offset-days".into(),
                    clock_offset_days.to_string(),
                ]);
            }
            (addr, Some(Supervisor::start(cmd)?))
        }
        EnclaveMode::Nitro { cid, port } => (
            SocketAddress::Vsock {
                cid: *cid,
                port: *port,
            },
            None,
        ),
    };
    let client = Arc::new(EnclaveClient::new(addr, cfg.connections));
    let result = serve_with(&cfg, store, Arc::clone(&client), xks_tls).await;
    if let Some(s) = supervisor {
        s.stop().await;
    }
    result
}

async fn serve_with(
    cfg: &ServeConfig,
    store: Arc<dyn Store>,
    client: Arc<EnclaveClient>,
    xks_tls: Option<Arc<rustls::ServerConfig>>,
) -> Result<(), HostError> {
    client.wait_ready(Duration::from_secs(30)).await?;
    let relay = Arc::new(
        Relay::new(Arc::clone(&store), client)
            .with_writer(cfg.peer.clone())
            .with_account(&cfg.account)
            .with_home_region(&cfg.region)
            .with_record_cache(cfg.record_cache),
    );
    let (committer, committer_task) = crate::witness::Committer::start(
        Arc::clone(&store),
        relay.enclave_arc(),
        crate::witness::Witnesses::new(cfg.witnesses.clone()),
    );
    relay.set_committer(committer);
    let audit = crate::audit::Running::start(&relay, &cfg.data_dir)?;
    let dev = match &cfg.mode {
        EnclaveMode::Simulation {
            program,
            dev_custodian: true,
            ..
        } => {
            let dev = DevCustodian::in_dir(&cfg.data_dir, program);
            eprintln!(
                "ekms: WARNING: DEVELOPMENT SETUP (simulation). One custodian whose private key is in\n\
                 ekms: WARNING: {} creates and unseals this domain at every start:\n\
                 ekms: WARNING: anyone who can read the data dir can read every key. Never in production.\n\
                 ekms: WARNING: For a real M-of-N ceremony start with --no-dev-custodian on a fresh data dir\n\
                 ekms: WARNING: and follow \"Custody ceremony\" in the README (ekms custodian keygen,\n\
                 ekms: WARNING: ekms domain init, ekms custodian unseal).",
                dev.key.display()
            );
            Some(dev)
        }
        _ => None,
    };
    let custody = Arc::new(
        Custody::new(
            Arc::clone(&relay),
            cfg.data_dir.clone(),
            cfg.region.clone(),
            dev,
            cfg.peer.clone(),
        )
        .with_witnesses(u8::try_from(cfg.witnesses.len()).unwrap_or(u8::MAX)),
    );
    // One step before listening, so a simulation appliance serves from its first request.
    if let Err(e) = custody.step().await {
        eprintln!("ekms: custody: {e}");
    }
    let watch = tokio::spawn(Arc::clone(&custody).watch());
    let listener = tokio::net::TcpListener::bind(cfg.listen).await?;
    let local = listener.local_addr()?;
    let endpoint = format!("http://{local}");
    eprintln!(
        "ekms: regions {} (home {}), account {}",
        cfg.regions.to_arg(),
        cfg.region,
        cfg.account
    );
    announce_witnesses(&relay, &cfg.witnesses).await;
    announce_profile(cfg, &endpoint);
    // The XKS and metrics listeners are bound (and serve) before the line below says the
    // appliance is up.
    let budget = BodyBudget::new(cfg.max_body_memory);
    let xks = start_xks(cfg, xks_tls, Arc::clone(&relay), budget.clone()).await?;
    let metrics = start_metrics(cfg, Arc::clone(&relay), &budget).await?;
    // Tests and scripts read this line.
    println!("ekms: listening on {endpoint}");
    let ahead = match cfg.mode {
        EnclaveMode::Simulation {
            clock_offset_days, ..
        } => chrono::TimeDelta::try_days(i64::from(clock_offset_days)).unwrap_or_default(),
        EnclaveMode::Nitro { .. } => chrono::TimeDelta::zero(),
    };
    let sweeper = tokio::spawn(sweep_loop(Arc::clone(&relay), ahead));
    let usage = tokio::spawn(usage_loop(Arc::clone(&relay)));
    let app = router(AppState {
        relay: Arc::clone(&relay),
        custody,
    });
    let edge = Edge {
        limits: cfg.edge,
        shape: crate::http::edge_shape(),
        max_body: crate::http::MAX_BODY,
        budget,
        name: "kms",
    };
    crate::edge::serve(listener, crate::edge::Plain, app, edge, shutdown_signal()).await;
    stop_listeners(xks, metrics).await;
    sweeper.abort();
    usage.abort();
    // The uses since the last write-back would be lost with the enclave: write them now.
    if let Err(e) = flush_usage_once(&relay).await {
        tracing::warn!(error = %e, "could not write key usage back at shutdown");
    }
    watch.abort();
    committer_task.abort();
    audit.stop(&relay).await;
    eprintln!("ekms: shutting down");
    Ok(())
}

/// After the KMS listener stopped: the XKS listener finishes its requests, the metrics
/// listener stops.
async fn stop_listeners(
    xks: Option<tokio::task::JoinHandle<()>>,
    metrics: Option<tokio::task::JoinHandle<()>>,
) {
    if let Some(x) = xks {
        stop_xks(x).await;
    }
    if let Some(m) = metrics {
        m.abort();
    }
}

/// Points the data dir's profile at the address listened on (a port may change between
/// starts) and says how to use it.
fn announce_profile(cfg: &ServeConfig, endpoint: &str) {
    let (creds, config) = credentials::paths(&cfg.data_dir);
    if creds.exists() {
        if let Err(e) = credentials::write_config(&config, &cfg.region, Some(endpoint)) {
            tracing::warn!(error = %e, "could not write the profile's endpoint_url");
        }
        eprintln!(
            "ekms: use it with:\n{}",
            credentials::usage(&cfg.data_dir, endpoint)
        );
    }
}

/// The metrics listener, if `--metrics-listen` asks for one, behind the same edge limits.
async fn start_metrics(
    cfg: &ServeConfig,
    relay: Arc<Relay>,
    budget: &BodyBudget,
) -> Result<Option<tokio::task::JoinHandle<()>>, HostError> {
    let edge = Edge {
        limits: cfg.edge,
        shape: crate::http::edge_shape(),
        max_body: 1024,
        budget: budget.clone(),
        name: "metrics",
    };
    crate::metrics::start_if(cfg.metrics, relay, edge, shutdown_signal()).await
}

/// Binds the XKS listener, if there is one (TLS with `tls`, else plain HTTP), announces it,
/// and serves it in a task until Ctrl-C/SIGTERM.
async fn start_xks(
    cfg: &ServeConfig,
    tls: Option<Arc<rustls::ServerConfig>>,
    relay: Arc<Relay>,
    budget: BodyBudget,
) -> Result<Option<tokio::task::JoinHandle<()>>, HostError> {
    let Some(x) = cfg.xks.as_ref() else {
        return Ok(None);
    };
    let tcp = tokio::net::TcpListener::bind(x.addr).await?;
    let local = tcp.local_addr()?;
    let app = crate::xks_http::router(relay);
    let mtls = x.tls.as_ref().is_some_and(|t| t.client_ca.is_some());
    let edge = Edge {
        limits: cfg.edge,
        shape: crate::xks_http::edge_shape(),
        max_body: crate::xks_http::MAX_XKS_BODY,
        budget,
        name: "xks",
    };
    let task = if let Some(config) = tls {
        // The handshake within the header timeout too (then the head within its own).
        let transport = crate::xks_tls::TlsTransport::new(config, cfg.edge.header_timeout);
        // Tests and scripts read this line.
        println!(
            "ekms: XKS proxy listening on https://{local}{}",
            if mtls { " (mTLS)" } else { "" }
        );
        tokio::spawn(crate::edge::serve(
            tcp,
            transport,
            app,
            edge,
            shutdown_signal(),
        ))
    } else {
        eprintln!(
            "ekms: WARNING: the XKS proxy API is served over plain HTTP (--xks-insecure-http): for\n\
             ekms: WARNING: tests only; AWS KMS calls an external key store proxy over HTTPS only."
        );
        println!("ekms: XKS proxy listening on http://{local}");
        tokio::spawn(crate::edge::serve(
            tcp,
            crate::edge::Plain,
            app,
            edge,
            shutdown_signal(),
        ))
    };
    Ok(Some(task))
}

/// Waits for the XKS listener, which saw the same shutdown signal, to finish its requests in
/// flight (the edge gives them a grace of its own; this is a backstop).
async fn stop_xks(task: tokio::task::JoinHandle<()>) {
    let abort = task.abort_handle();
    if tokio::time::timeout(Duration::from_secs(15), task)
        .await
        .is_err()
    {
        abort.abort();
    }
}

/// Says at every start whether the domain's state is witnessed (docs/state.md).
async fn announce_witnesses(relay: &Relay, urls: &[String]) {
    use ekms_wire::msg::{EnclaveResponse, HostRequest};
    let status = match relay.enclave().call(&HostRequest::Status).await {
        Ok(EnclaveResponse::Status(s)) => Some(s),
        _ => None,
    };
    match status {
        Some(s) if s.follower => {}
        Some(s) if s.witnesses > 0 => {
            relay.set_witnessed(true);
            eprintln!(
                "ekms: the domain has {} witnesses: a write commits, and a restarted enclave \
                 serves, only with {} of them",
                s.witnesses,
                usize::from(s.witnesses) / 2 + 1
            );
            if urls.is_empty() {
                eprintln!(
                    "ekms: WARNING: no --witness given: this appliance cannot commit writes or \
                     prove its state after a restart"
                );
            }
        }
        _ => {
            eprintln!(
                "ekms: NOTE: no witnesses: after an enclave restart the enclave rebuilds its view of the\n\
                 ekms: NOTE: latest state from this host's store unchecked, so a store rolled back while the\n\
                 ekms: NOTE: enclave was down is believed (rollback across a restart is possible).\n\
                 ekms: NOTE: A domain gets witnesses when it is created (--witness URL, several)."
            );
            if !urls.is_empty() {
                eprintln!(
                    "ekms: WARNING: --witness is ignored: this domain was created without witnesses"
                );
            }
        }
    }
}

/// How often the host asks the enclave to delete and rotate what is due.
const SWEEP_EVERY: Duration = Duration::from_mins(1);
/// How often the host looks whether its enclave serves: the first pass after a start, an
/// enclave restart or an unseal runs within this, not a whole [`SWEEP_EVERY`] later.
const SERVING_POLL: Duration = Duration::from_secs(1);
/// Keys nominated per request (the enclave takes at most 100 per `RotateDue`).
const DUE_BATCH: usize = 100;
/// Most rotation batches in one pass (each up to the enclave's 100 keys, or retried after a
/// conflict with a client's write): a backlog of keys that fell due while the appliance was
/// down is worked off at once.
const MAX_ROTATION_BATCHES: usize = 100;

/// Deletes keys whose deletion date passed and rotates keys whose automatic rotation is due, as
/// soon as the enclave serves and then every [`SWEEP_EVERY`]. The host's state and date columns
/// only nominate candidates; the enclave checks each against its sealed state and its own clock,
/// and only its answer is written. A doctored column can delay a deletion or a rotation, never
/// cause one. `ahead` is the simulated enclave's clock offset, so that the host nominates what
/// that clock will find due.
async fn sweep_loop(relay: Arc<Relay>, ahead: chrono::TimeDelta) {
    let mut last: Option<tokio::time::Instant> = None;
    loop {
        if !serving(&relay).await {
            // Starting, sealed, loading its records, or a follower: the next pass runs as soon
            // as it serves (again).
            last = None;
        } else if last.is_none_or(|t| t.elapsed() >= SWEEP_EVERY) {
            last = Some(tokio::time::Instant::now());
            let now = chrono::Utc::now();
            let now = now.checked_add_signed(ahead).unwrap_or(now).timestamp();
            if let Err(e) = sweep_once(&relay, now).await {
                tracing::warn!(error = %e, "deletion sweep failed");
            }
            for _ in 0..MAX_ROTATION_BATCHES {
                match rotate_once(&relay, now).await {
                    // A full batch: more may be due. A client changed one of the keys meanwhile
                    // (the batch's writes were not applied): nominate again from the store.
                    Ok(DUE_BATCH..) | Err(HostError::Conflict) => {}
                    Ok(_) => break,
                    Err(e) => {
                        tracing::warn!(error = %e, "rotation sweep failed");
                        break;
                    }
                }
            }
        }
        tokio::time::sleep(SERVING_POLL).await;
    }
}

/// Whether the enclave serves KMS calls now: unsealed, its view of the records loaded, its
/// state confirmed by its witnesses (if any), and the domain's writer, not a follower.
async fn serving(relay: &Relay) -> bool {
    use ekms_wire::msg::{CustodyState, EnclaveResponse, HostRequest};
    matches!(
        relay.enclave().call(&HostRequest::Status).await,
        Ok(EnclaveResponse::Status(s))
            if s.ledger_ready && s.fresh && !s.follower
                && matches!(s.custody, CustodyState::Unsealed { .. })
    )
}

/// One sweep at `now` (Unix seconds, the enclave's clock): candidates from the store's index,
/// decisions from the enclave.
pub async fn sweep_once(relay: &Relay, now: i64) -> Result<usize, HostError> {
    use ekms_wire::msg::{EnclaveResponse, HostRequest};
    let store = Arc::clone(relay.store());
    let keys = tokio::task::spawn_blocking(move || store.due_for_deletion(now, 100))
        .await
        .map_err(|e| HostError::Startup(e.to_string()))??;
    if keys.is_empty() {
        return Ok(0);
    }
    match relay.enclave().call(&HostRequest::Sweep { keys }).await? {
        EnclaveResponse::Swept { writes, token } if !writes.is_empty() => {
            let n = writes.len();
            relay.persist(writes, token).await?;
            tracing::info!(records = n, "deleted keys whose deletion window passed");
            Ok(n)
        }
        EnclaveResponse::Swept { .. } => Ok(0),
        EnclaveResponse::Fault(f) => Err(HostError::Fault(f)),
        other => {
            tracing::error!(?other, "unexpected reply to a sweep");
            Ok(0)
        }
    }
}

/// One rotation pass, like [`sweep_once`]: candidates from the store's index (enabled keys
/// whose next rotation date passed), decisions from the enclave's sealed schedule and its own
/// clock. A doctored column can delay a rotation, never cause one. Runs as soon as the enclave
/// serves after a start, so keys that fell due while the appliance was down rotate promptly.
/// Returns how many keys rotated (at most [`DUE_BATCH`]).
pub async fn rotate_once(relay: &Relay, now: i64) -> Result<usize, HostError> {
    use ekms_wire::msg::{EnclaveResponse, HostRequest};
    let store = Arc::clone(relay.store());
    let keys = tokio::task::spawn_blocking(move || store.due_for_rotation(now, DUE_BATCH))
        .await
        .map_err(|e| HostError::Startup(e.to_string()))??;
    if keys.is_empty() {
        return Ok(0);
    }
    match relay
        .enclave()
        .call(&HostRequest::RotateDue { keys })
        .await?
    {
        EnclaveResponse::RotatedDue { writes, token } if !writes.is_empty() => {
            let n = writes.len();
            relay.persist(writes, token).await?;
            tracing::info!(keys = n, "rotated keys whose automatic rotation was due");
            Ok(n)
        }
        EnclaveResponse::RotatedDue { .. } => Ok(0),
        EnclaveResponse::Fault(f) => Err(HostError::Fault(f)),
        other => {
            tracing::error!(?other, "unexpected reply to a rotation request");
            Ok(0)
        }
    }
}

/// Writes the enclave's record of key usage back every [`USAGE_FLUSH_INTERVAL`]
/// (`GetKeyLastUsage`). The enclave decides what is written and seals it; a host that stops
/// asking only gets cryptographic operations refused once usage waited too long.
async fn usage_loop(relay: Arc<Relay>) {
    loop {
        tokio::time::sleep(USAGE_FLUSH_INTERVAL).await;
        if let Err(e) = flush_usage_once(&relay).await {
            tracing::warn!(error = %e, "key usage write-back failed");
        }
    }
}

/// How often `serve` asks the enclave to write key usage back (the enclave's
/// `usage::FLUSH_INTERVAL`; see docs/formats.md for what a crash can lose).
pub const USAGE_FLUSH_INTERVAL: Duration = Duration::from_secs(10);

/// One write-back of key usage: the enclave's sealed usage records, made durable and committed,
/// batch after batch while the enclave says more wait. Returns how many records were written.
pub async fn flush_usage_once(relay: &Relay) -> Result<usize, HostError> {
    use ekms_wire::msg::{EnclaveResponse, Fault, HostRequest};
    // Bounded, so a stream of new uses cannot keep one pass going for ever.
    const MAX_BATCHES: usize = 64;
    let mut written = 0;
    for _ in 0..MAX_BATCHES {
        match relay.enclave().call(&HostRequest::FlushUsage).await? {
            EnclaveResponse::UsageFlushed {
                writes,
                token,
                more,
            } => {
                let n = writes.len();
                if n > 0 {
                    relay.persist(writes, token).await?;
                    written += n;
                }
                if !more {
                    break;
                }
            }
            // Nothing to write on a sealed or following enclave.
            EnclaveResponse::Fault(Fault::Sealed | Fault::NotWriter) => break,
            EnclaveResponse::Fault(f) => return Err(HostError::Fault(f)),
            other => {
                tracing::error!(?other, "unexpected reply to a usage write-back");
                break;
            }
        }
    }
    if written > 0 {
        tracing::debug!(records = written, "wrote key usage back");
    }
    Ok(written)
}

async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = term => {}
    }
}
