//! `ekms serve`: open the store, start (simulation) or reach (Nitro) the enclave, store the
//! genesis credential, listen, sweep expired keys, and shut everything down on Ctrl-C/SIGTERM.

use std::{net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use ekms_wire::{SocketAddress, msg::EnclaveResponse};

use crate::{
    HostError,
    client::EnclaveClient,
    credentials,
    http::router,
    relay::Relay,
    store::{SqliteStore, Store},
    supervisor::{EnclaveCommand, Supervisor},
};

/// How `serve` reaches its enclave.
#[derive(Debug, Clone)]
pub enum EnclaveMode {
    /// Spawn `ekms-enclave` on the vsock mock.
    Simulation {
        /// The enclave executable.
        program: PathBuf,
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
    /// Region.
    pub region: String,
    /// Account id.
    pub account: String,
    /// Connections in the enclave pool.
    pub connections: usize,
}

/// Runs until Ctrl-C or SIGTERM.
pub async fn run(mut cfg: ServeConfig) -> Result<(), HostError> {
    std::fs::create_dir_all(&cfg.data_dir)?;
    // Absolute, so the printed exports work from any directory.
    cfg.data_dir = std::fs::canonicalize(&cfg.data_dir)?;
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&cfg.data_dir, std::fs::Permissions::from_mode(0o700))?;
    }
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&cfg.data_dir.join("ekms.sqlite3"))?);
    let (addr, supervisor) = match &cfg.mode {
        EnclaveMode::Simulation { program } => {
            let run_dir = cfg.data_dir.join("run");
            let addr = SocketAddress::Mock {
                dir: run_dir.clone(),
                cid: ekms_wire::transport::SIM_ENCLAVE_CID,
                port: ekms_wire::transport::DEFAULT_ENCLAVE_PORT,
            };
            let custody = cfg.data_dir.join("DEV-ONLY-INSECURE-domain-key.custody");
            eprintln!(
                "ekms: WARNING: simulation mode. The domain key is kept in the DEVELOPMENT-ONLY custody file\n\
                 ekms: WARNING: {} -- anyone who can read it can read every key. Never use this in production.",
                custody.display()
            );
            let cmd = EnclaveCommand {
                program: program.clone(),
                args: vec![
                    "--mock-vsock-dir".into(),
                    run_dir.display().to_string(),
                    "--region".into(),
                    cfg.region.clone(),
                    "--account".into(),
                    cfg.account.clone(),
                    "--sim-ca-file".into(),
                    cfg.data_dir
                        .join("SIMULATION-ONLY-attestation-ca.secret")
                        .display()
                        .to_string(),
                    "--dev-custody-file".into(),
                    custody.display().to_string(),
                    "--exit-on-stdin-eof".into(),
                ],
            };
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
    let result = serve_with(&cfg, store, Arc::clone(&client)).await;
    if let Some(s) = supervisor {
        s.stop().await;
    }
    result
}

async fn serve_with(
    cfg: &ServeConfig,
    store: Arc<dyn Store>,
    client: Arc<EnclaveClient>,
) -> Result<(), HostError> {
    let status = client.wait_ready(Duration::from_secs(30)).await?;
    let EnclaveResponse::Status(status) = status else {
        return Err(HostError::Startup(
            "the enclave did not answer the status request".into(),
        ));
    };
    if let Some(genesis) = &status.genesis {
        store.put_principal(&genesis.access_key_id, &genesis.principal)?;
        credentials::write(&cfg.data_dir, genesis, &status.region)?;
        eprintln!(
            "ekms: new domain {}: created the admin credential",
            status.domain_fingerprint
        );
    } else if !store.has_principals()? {
        return Err(HostError::Startup(
            "the enclave's domain exists but this data dir holds no credential for it; \
             the data dir is inconsistent (start with an empty data dir to create a new domain)"
                .into(),
        ));
    }
    let relay = Arc::new(Relay::new(Arc::clone(&store), client));
    let listener = tokio::net::TcpListener::bind(cfg.listen).await?;
    let local = listener.local_addr()?;
    let endpoint = format!("http://{local}");
    eprintln!(
        "ekms: domain {} (region {}, account {})",
        status.domain_fingerprint, status.region, status.account
    );
    eprintln!(
        "ekms: use it with:\n{}",
        credentials::usage(&cfg.data_dir, &endpoint)
    );
    // Tests and scripts read this line.
    println!("ekms: listening on {endpoint}");
    let sweeper = tokio::spawn(sweep_loop(Arc::clone(&relay)));
    let app = router(relay);
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown_signal())
        .await;
    sweeper.abort();
    eprintln!("ekms: shutting down");
    served.map_err(HostError::Io)
}

async fn sweep_loop(relay: Arc<Relay>) {
    loop {
        let store = Arc::clone(relay.store());
        let now = chrono::Utc::now().timestamp();
        match tokio::task::spawn_blocking(move || store.sweep(now)).await {
            Ok(Ok(ids)) if !ids.is_empty() => {
                tracing::info!(
                    count = ids.len(),
                    "deleted keys whose deletion window passed"
                );
                relay.forget_keys(&ids);
            }
            Ok(Err(e)) => tracing::error!(error = %e, "deletion sweep failed"),
            _ => {}
        }
        tokio::time::sleep(Duration::from_mins(1)).await;
    }
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
