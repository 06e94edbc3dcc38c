//! `ekms-enclave`: the enclave process. On Nitro it listens on AF_VSOCK; in simulation it listens
//! on the vsock mock (a Unix socket) and is started by `ekms serve --sim`.

use std::{path::PathBuf, process::ExitCode, sync::Arc};

use clap::Parser;
use ekms_attestation::{MockNsm, NitroNsm, Nsm, SimulationCa, TrustRoot};
use ekms_enclave::{Config, Core, attest::Attestor, clock::Clock, server};
use ekms_wire::{
    Listener, SocketAddress,
    transport::{DEFAULT_ENCLAVE_PORT, SIM_ENCLAVE_CID, VMADDR_CID_ANY},
};
use tokio::io::AsyncReadExt as _;

/// jemalloc, as the host uses: under Encrypt load at 32 connections glibc's malloc and free
/// took 14 % of the enclave's CPU (a request's buffers are often made on one worker thread and
/// freed on another). Key material is zeroized before it is freed, whatever the allocator.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser, Debug)]
#[command(name = "ekms-enclave", about = "The Enclave KMS key core", version)]
struct Args {
    /// vsock port to listen on.
    #[arg(long, default_value_t = DEFAULT_ENCLAVE_PORT)]
    vsock_port: u32,
    /// Simulation: listen on the vsock mock in this runtime directory instead of AF_VSOCK.
    #[arg(long)]
    mock_vsock_dir: Option<PathBuf>,
    /// Simulation: the CID this enclave takes in the mock.
    #[arg(long, default_value_t = SIM_ENCLAVE_CID)]
    cid: u32,
    /// The home region (the one served before several were; its aliases keep their plain
    /// names in the store).
    #[arg(long, default_value = "us-east-1")]
    region: String,
    /// The regions served: a comma-separated list, or `*` for any (the home region is always
    /// among them).
    #[arg(long)]
    regions: Option<String>,
    /// Account id served.
    #[arg(long, default_value = "111122223333")]
    account: String,
    /// Simulation only: the simulation attestation CA (generated on first use; NEVER IN
    /// PRODUCTION). Its root certificate is written beside it as `simulation-root.pem`.
    #[arg(long, requires = "mock_vsock_dir")]
    sim_ca_file: Option<PathBuf>,
    /// SIMULATION ONLY, for tests of schedules: run the enclave's clock this many days ahead of
    /// the machine's (key dates, rotation, deletion, import expiry). Refused without the mock
    /// vsock; on Nitro the command line is part of the measured image.
    #[arg(long, requires = "mock_vsock_dir", value_name = "DAYS")]
    sim_clock_offset_days: Option<u32>,
    /// Exit when standard input closes (the simulation parent holds it open, so the enclave
    /// never outlives `ekms serve`).
    #[arg(long)]
    exit_on_stdin_eof: bool,
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        // Colour only on a terminal: a redirected log (serve.log) holds plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let args = Args::parse();
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), String> {
    // The enclave starts with no domain keys: the host loads the sealed keyring, then
    // custodians (or a peer) unseal it, or `ekms domain init` creates a new domain.
    let addr = match &args.mock_vsock_dir {
        Some(dir) => SocketAddress::Mock {
            dir: dir.clone(),
            cid: args.cid,
            port: args.vsock_port,
        },
        None => SocketAddress::Vsock {
            cid: VMADDR_CID_ANY,
            port: args.vsock_port,
        },
    };
    let attestor = if args.mock_vsock_dir.is_some() {
        let path = args
            .sim_ca_file
            .clone()
            .ok_or("simulation needs --sim-ca-file for its mock NSM")?;
        let ca = load_or_create_sim_ca(&path)?;
        let exe =
            std::env::current_exe().map_err(|e| format!("cannot locate own executable: {e}"))?;
        let root = ca.trust_root().map_err(|e| e.to_string())?;
        let nsm = MockNsm::from_executable_path(ca, &exe).map_err(|e| e.to_string())?;
        tracing::warn!(
            "SIMULATION: attestation documents come from a mock NSM and a simulation CA, and Recipient documents signed by that CA are trusted; never in production"
        );
        Attestor::new(Box::new(nsm), root).map_err(|e| e.to_string())?
    } else {
        let nsm = NitroNsm::open()
            .map_err(|e| format!("cannot open /dev/nsm (is this a Nitro enclave?): {e}"))?;
        if let Ok(pcr0) = nsm.describe_pcr(0) {
            tracing::info!(pcr0 = %ekms_enclave::domain::hex(&pcr0.value), "running measured image");
        }
        let root = TrustRoot::aws_nitro().map_err(|e| e.to_string())?;
        Attestor::new(Box::new(nsm), root).map_err(|e| e.to_string())?
    };
    let regions = match args.regions.as_deref() {
        None => ekms_wire::region::Regions::Only(vec![args.region.clone()]),
        Some(s) => match ekms_wire::region::Regions::parse(s)? {
            ekms_wire::region::Regions::Only(mut list) => {
                if !list.contains(&args.region) {
                    list.insert(0, args.region.clone());
                }
                ekms_wire::region::Regions::Only(list)
            }
            ekms_wire::region::Regions::Any => ekms_wire::region::Regions::Any,
        },
    };
    if !ekms_wire::region::is_region_name(&args.region) {
        return Err(format!("'{}' is not a region name", args.region));
    }
    tracing::info!(home = %args.region, regions = %regions.to_arg(), "regions served");
    let clock = match args.sim_clock_offset_days {
        None => Clock::system(),
        Some(_) if args.mock_vsock_dir.is_none() => {
            return Err("--sim-clock-offset-days exists only in simulation".into());
        }
        Some(days) => {
            let clock = Clock::simulation_ahead_by_days(days).ok_or_else(|| {
                format!(
                    "--sim-clock-offset-days {days}: at most {}",
                    ekms_enclave::clock::MAX_SIM_OFFSET_DAYS
                )
            })?;
            if clock.is_shifted() {
                tracing::warn!(
                    days,
                    "SIMULATION: the enclave's clock runs {days} days AHEAD of the machine's: keys \
                     are dated, rotated, deleted and expired by it; for tests only, never in production"
                );
            }
            clock
        }
    };
    let core = Core::new(
        Config {
            region: args.region,
            regions,
            account: args.account,
        },
        attestor,
    )
    .with_clock(clock)
    .map_err(|e| format!("--sim-clock-offset-days: {e}"))?;
    let listener = Listener::bind(&addr).map_err(|e| e.to_string())?;
    tracing::info!(%addr, "enclave listening");
    let serve = server::serve(listener, Arc::new(core));
    let parent_gone = async {
        if args.exit_on_stdin_eof {
            stdin_closed().await;
        } else {
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        () = serve => {}
        () = parent_gone => tracing::info!("parent went away; exiting"),
        () = terminated() => tracing::info!("terminated; exiting"),
    }
    Ok(())
}

async fn stdin_closed() {
    let mut stdin = tokio::io::stdin();
    let mut buf = [0u8; 64];
    loop {
        match stdin.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

async fn terminated() {
    let Ok(mut term) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
    else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

/// Loads the simulation CA, or makes one and writes it (0600) with its root PEM beside it.
fn load_or_create_sim_ca(path: &std::path::Path) -> Result<SimulationCa, String> {
    use std::{io::Write as _, os::unix::fs::OpenOptionsExt as _};
    let ca = match std::fs::read(path) {
        Ok(bytes) => {
            SimulationCa::from_bytes(&bytes).map_err(|e| format!("{}: {e}", path.display()))?
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let ca = SimulationCa::generate().map_err(|e| e.to_string())?;
            let bytes = ca.to_bytes().map_err(|e| e.to_string())?;
            let tmp = path.with_extension("tmp");
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)
                .map_err(|e| format!("{}: {e}", tmp.display()))?;
            f.write_all(&bytes)
                .and_then(|()| f.sync_all())
                .map_err(|e| e.to_string())?;
            std::fs::rename(&tmp, path).map_err(|e| e.to_string())?;
            ca
        }
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    let root = path.with_file_name("simulation-root.pem");
    std::fs::write(&root, ca.root_pem().map_err(|e| e.to_string())?)
        .map_err(|e| format!("{}: {e}", root.display()))?;
    Ok(ca)
}
