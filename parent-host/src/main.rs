//! `ekms`: the Enclave KMS operator binary. `ekms serve` runs the appliance.

use std::{net::SocketAddr, path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};
use ekms_parent_host::{
    cli_attestation, cli_audit, cli_credential, cli_domain, cli_principal, cli_recipient, cli_xks,
    custodian, fetch,
    serve::{self, EnclaveMode, ServeConfig, XksListen},
    xks_tls::XksTlsFiles,
};

#[derive(Parser, Debug)]
#[command(
    name = "ekms",
    about = "Enclave KMS: an AWS-KMS-compatible key service whose keys live in an enclave",
    version
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the appliance: HTTP front end, store, and the enclave (simulated or Nitro).
    Serve(ServeArgs),
    /// Attestation documents.
    #[command(subcommand)]
    Attestation(AttestationCommand),
    /// Custodian tools for the M-of-N custody ceremony.
    #[command(subcommand)]
    Custodian(CustodianCommand),
    /// The key domain: create it, see its custody state, rotate its key.
    #[command(subcommand)]
    Domain(DomainCommand),
    /// Credentials the enclave delivered sealed to your key.
    #[command(subcommand)]
    Credential(CredentialCommand),
    /// Principals (users with access keys and an identity policy), made and changed by signed
    /// requests that the enclave authorizes.
    #[command(subcommand)]
    Principal(cli_principal::PrincipalCommand),
    /// CiphertextForRecipient: what KMS returns to an enclave app that sent an attestation
    /// document as `Recipient`.
    #[command(subcommand)]
    Recipient(cli_recipient::RecipientCommand),
    /// The XKS proxy API (AWS KMS external key store): its credentials and external keys.
    #[command(subcommand)]
    Xks(cli_xks::XksCommand),
    /// The enclave's signed audit log: verify, tail, export.
    #[command(subcommand)]
    Audit(cli_audit::AuditCommand),
}

#[derive(Subcommand, Debug)]
enum CredentialCommand {
    /// Verify a saved sealed credential's attestation, then decrypt it with your key.
    Open(cli_credential::OpenArgs),
}

#[derive(Subcommand, Debug)]
enum CustodianCommand {
    /// Make a custodian key pair (NAME.key, mode 0600, and NAME.pub).
    Keygen(custodian::KeygenArgs),
    /// Verify the enclave's attestation, then submit your share encrypted to its attested key.
    Unseal(custodian::UnsealArgs),
}

#[derive(Subcommand, Debug)]
enum DomainCommand {
    /// Create the key domain in the enclave and split it among custodians (M of N).
    Init(cli_domain::InitArgs),
    /// Show the custody state (sealed with k of M shares, or unsealed) and re-sealing progress.
    Status(cli_domain::StatusArgs),
    /// Make a new domain key for new records; older records are re-sealed in the background.
    Rotate(cli_domain::EndpointArgs),
    /// Disaster recovery of a witnessed domain whose witnesses are lost: make the writer serve
    /// the state its store holds (signed by a principal of the domain, never by the host).
    AcceptState(cli_domain::AcceptStateArgs),
}

#[derive(Subcommand, Debug)]
enum AttestationCommand {
    /// Verify a Nitro attestation document and print it as JSON.
    Verify(cli_attestation::VerifyArgs),
    /// Fetch a fresh attestation document, bound to your nonce, from an appliance.
    Fetch(fetch::FetchArgs),
    /// SIMULATION ONLY: make an attestation document for your own enclave app, signed by a
    /// simulation data dir's CA, to send as `Recipient` to that simulated appliance.
    Mock(cli_attestation::MockArgs),
}

#[derive(clap::Args, Debug)]
struct ServeArgs {
    /// Simulation mode: start `ekms-enclave` as a child process on the vsock mock.
    #[arg(long, conflicts_with = "enclave_cid")]
    sim: bool,
    /// Data directory (store, credentials).
    #[arg(long, default_value = "./ekms-data")]
    data_dir: PathBuf,
    /// HTTP listen address.
    #[arg(long, default_value = "127.0.0.1:8400")]
    listen: SocketAddr,
    /// Simulation: the `ekms-enclave` executable (default: next to `ekms`).
    #[arg(long)]
    enclave_bin: Option<PathBuf>,
    /// Nitro: CID of the running enclave (AF_VSOCK).
    #[arg(long)]
    enclave_cid: Option<u32>,
    /// Nitro: vsock port of the enclave.
    #[arg(long, default_value_t = ekms_wire::transport::DEFAULT_ENCLAVE_PORT)]
    enclave_port: u32,
    /// The home region: the region of ARNs and aliases from before several regions were served
    /// (its aliases keep their plain names in the store).
    #[arg(long, default_value = "us-east-1")]
    region: String,
    /// The regions served: `us-east-1,eu-west-1`, or `*` for any region. A request signed for
    /// another region is refused. Default: `*` in simulation, else the home region only.
    #[arg(long)]
    regions: Option<String>,
    /// Account id in ARNs.
    #[arg(long, default_value = "111122223333")]
    account: String,
    /// Connections to the enclave.
    #[arg(long, default_value_t = 4)]
    enclave_connections: usize,
    /// Simulation: no development custodian. A fresh data dir waits for `ekms domain init`, and
    /// after a restart the domain stays sealed until custodians (or a peer) unseal it.
    #[arg(long, requires = "sim")]
    no_dev_custodian: bool,
    /// Simulation: the CID of this appliance's enclave in the vsock mock. A second appliance on
    /// the same data dir (a peer) needs its own.
    #[arg(long, requires = "sim", default_value_t = ekms_wire::transport::SIM_ENCLAVE_CID)]
    sim_cid: u32,
    /// Simulation, for tests of rotation and expiry schedules: run the enclave's clock DAYS ahead
    /// of this machine's (announced at every start). Signatures still use the real time. A Nitro
    /// enclave has no such setting.
    #[arg(long, requires = "sim", value_name = "DAYS",
          value_parser = clap::value_parser!(u32).range(..=36_500))]
    sim_clock_offset_days: Option<u32>,
    /// A running appliance of the same domain (e.g. http://10.0.0.5:8400): when this one's
    /// enclave is sealed it gets the domain from that one by mutual attestation.
    #[arg(long, value_name = "URL")]
    peer: Option<String>,
    /// A witness: an appliance whose enclave follows this domain (started with --peer pointing
    /// here) and holds its latest checkpoint. Repeat for each. A domain created by this appliance
    /// needs that many witnesses for ever: writes commit, and a restarted enclave serves, only
    /// with a majority of them (docs/state.md).
    #[arg(long = "witness", value_name = "URL")]
    witnesses: Vec<String>,
    /// Also serve the XKS proxy API (an AWS KMS external key store) on this address, with
    /// --xks-tls-cert and --xks-tls-key (HTTPS) or --xks-insecure-http.
    #[arg(long, value_name = "ADDR")]
    xks_listen: Option<SocketAddr>,
    /// XKS listener: the server certificate chain (PEM, leaf first).
    #[arg(long, value_name = "CERT.pem", requires_all = ["xks_listen", "xks_tls_key"])]
    xks_tls_cert: Option<PathBuf>,
    /// XKS listener: the server's private key (PEM: PKCS #8, PKCS #1 or SEC1).
    #[arg(long, value_name = "KEY.pem", requires = "xks_tls_cert")]
    xks_tls_key: Option<PathBuf>,
    /// XKS listener: require a client certificate chaining to a CA in this PEM file (mTLS). A
    /// refused certificate ends the handshake with the alert handshake_failure.
    #[arg(long, value_name = "CA.pem", requires = "xks_tls_cert")]
    xks_client_ca: Option<PathBuf>,
    /// XKS listener: plain HTTP instead of HTTPS. For tests only: AWS KMS calls an XKS proxy
    /// over HTTPS.
    #[arg(long, requires = "xks_listen",
          conflicts_with_all = ["xks_tls_cert", "xks_tls_key", "xks_client_ca"])]
    xks_insecure_http: bool,
    /// Serve Prometheus metrics at http://ADDR/metrics (off by default). Keep it on a private
    /// address: it shows request volumes.
    #[arg(long, value_name = "ADDR")]
    metrics_listen: Option<SocketAddr>,
    /// Log lines as text or as JSON objects (one per line). Every line of a KMS request
    /// carries its request id (`request{id=...}`, or the `span` member in JSON). The level is
    /// set by RUST_LOG (default warn).
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

/// `--log-format`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum LogFormat {
    /// Human-readable lines (coloured only on a terminal).
    Text,
    /// One JSON object per line.
    Json,
}

fn init_logs(format: LogFormat) {
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().with_current_span(true).init(),
        // Colour only on a terminal: a redirected log (serve.log) holds plain text.
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logs(match &cli.command {
        Command::Serve(a) => a.log_format,
        _ => LogFormat::Text,
    });
    match cli.command {
        Command::Serve(args) => serve_cmd(args),
        Command::Attestation(AttestationCommand::Verify(args)) => {
            cli_attestation::run_verify(&args)
        }
        Command::Attestation(AttestationCommand::Fetch(args)) => fetch::run_fetch(&args),
        Command::Attestation(AttestationCommand::Mock(args)) => cli_attestation::run_mock(&args),
        Command::Custodian(CustodianCommand::Keygen(args)) => custodian::run_keygen(&args),
        Command::Custodian(CustodianCommand::Unseal(args)) => custodian::run_unseal(&args),
        Command::Domain(DomainCommand::Init(args)) => cli_domain::run_init(&args),
        Command::Domain(DomainCommand::Status(args)) => cli_domain::run_status(&args),
        Command::Domain(DomainCommand::Rotate(args)) => cli_domain::run_rotate(&args),
        Command::Domain(DomainCommand::AcceptState(args)) => cli_domain::run_accept_state(&args),
        Command::Credential(CredentialCommand::Open(args)) => cli_credential::run_open(&args),
        Command::Principal(cmd) => cli_principal::run(&cmd),
        Command::Recipient(cmd) => cli_recipient::run(&cmd),
        Command::Xks(cmd) => cli_xks::run(&cmd),
        Command::Audit(cmd) => cli_audit::run(&cmd),
    }
}

/// The XKS listener the flags ask for; an error when they ask for one without saying how.
fn xks_listen(args: &ServeArgs) -> Result<Option<XksListen>, &'static str> {
    let Some(addr) = args.xks_listen else {
        return Ok(None);
    };
    let tls = match (&args.xks_tls_cert, &args.xks_tls_key) {
        (Some(cert), Some(key)) => Some(XksTlsFiles {
            cert: cert.clone(),
            key: key.clone(),
            client_ca: args.xks_client_ca.clone(),
        }),
        _ if args.xks_insecure_http => None,
        _ => {
            return Err(
                "--xks-listen needs --xks-tls-cert and --xks-tls-key (HTTPS), or \
                 --xks-insecure-http (plain HTTP, for tests)",
            );
        }
    };
    Ok(Some(XksListen { addr, tls }))
}

fn serve_cmd(args: ServeArgs) -> ExitCode {
    // clap's `requires = "sim"` is met by the flag's default (false), so say it here: a real
    // enclave's clock is never the host's to move.
    if args.sim_clock_offset_days.is_some() && !args.sim {
        eprintln!("ekms: --sim-clock-offset-days exists only with --sim (a simulated enclave)");
        return ExitCode::from(2);
    }
    let xks = match xks_listen(&args) {
        Ok(x) => x,
        Err(why) => {
            eprintln!("ekms: {why}");
            return ExitCode::from(2);
        }
    };
    let mode = if let Some(cid) = args.enclave_cid {
        EnclaveMode::Nitro {
            cid,
            port: args.enclave_port,
        }
    } else if args.sim {
        let program = args.enclave_bin.unwrap_or_else(|| {
            std::env::current_exe()
                .ok()
                .and_then(|p| p.parent().map(|d| d.join("ekms-enclave")))
                .unwrap_or_else(|| PathBuf::from("ekms-enclave"))
        });
        if !program.is_file() {
            eprintln!(
                "ekms: cannot find the enclave binary at {} (use --enclave-bin)",
                program.display()
            );
            return ExitCode::FAILURE;
        }
        EnclaveMode::Simulation {
            program,
            cid: args.sim_cid,
            dev_custodian: !args.no_dev_custodian,
            clock_offset_days: args.sim_clock_offset_days.unwrap_or(0),
        }
    } else {
        eprintln!("ekms: choose --sim (simulated enclave) or --enclave-cid N (Nitro enclave)");
        return ExitCode::from(2);
    };
    if !ekms_wire::region::is_region_name(&args.region) {
        eprintln!(
            "ekms: '{}' is not a region name (like us-east-1)",
            args.region
        );
        return ExitCode::from(2);
    }
    let regions = match args.regions.as_deref() {
        Some(s) => match ekms_wire::region::Regions::parse(s) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("ekms: --regions: {e}");
                return ExitCode::from(2);
            }
        },
        None if args.sim => ekms_wire::region::Regions::Any,
        None => ekms_wire::region::Regions::Only(vec![args.region.clone()]),
    };
    let cfg = ServeConfig {
        data_dir: args.data_dir,
        listen: args.listen,
        mode,
        regions,
        region: args.region,
        account: args.account,
        connections: args.enclave_connections,
        peer: args.peer,
        witnesses: args.witnesses,
        xks,
        metrics: args.metrics_listen,
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ekms: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(serve::run(cfg)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ekms: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn serve(args: &[&str]) -> Result<ServeArgs, clap::Error> {
        let argv = ["ekms", "serve", "--sim"].iter().chain(args);
        match Cli::try_parse_from(argv)?.command {
            Command::Serve(a) => Ok(a),
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn the_xks_listener_is_https_or_explicitly_plain_http() {
        let tls = [
            "--xks-listen",
            "127.0.0.1:8443",
            "--xks-tls-cert",
            "c.pem",
            "--xks-tls-key",
            "k.pem",
        ];
        let x = xks_listen(&serve(&tls).unwrap()).unwrap().unwrap();
        let files = x.tls.unwrap();
        assert_eq!(x.addr.port(), 8443);
        assert_eq!(
            (files.cert.to_str(), files.key.to_str()),
            (Some("c.pem"), Some("k.pem"))
        );
        assert!(files.client_ca.is_none());
        let mtls = [&tls[..], &["--xks-client-ca", "ca.pem"]].concat();
        let x = xks_listen(&serve(&mtls).unwrap()).unwrap().unwrap();
        assert!(x.tls.unwrap().client_ca.is_some());
        let plain = ["--xks-listen", "127.0.0.1:8480", "--xks-insecure-http"];
        let x = xks_listen(&serve(&plain).unwrap()).unwrap().unwrap();
        assert!(x.tls.is_none());
        assert!(xks_listen(&serve(&[]).unwrap()).unwrap().is_none());
        // A listener without TLS files or --xks-insecure-http says how to choose.
        let bare = serve(&["--xks-listen", "127.0.0.1:8443"]).unwrap();
        assert!(
            xks_listen(&bare)
                .unwrap_err()
                .contains("--xks-insecure-http")
        );
        // Refused by the parser.
        for bad in [
            &["--xks-listen", "127.0.0.1:8443", "--xks-tls-cert", "c.pem"][..],
            &["--xks-listen", "127.0.0.1:8443", "--xks-tls-key", "k.pem"],
            &["--xks-tls-cert", "c.pem", "--xks-tls-key", "k.pem"],
            &["--xks-insecure-http"],
            &[
                &plain[..],
                &["--xks-tls-cert", "c.pem", "--xks-tls-key", "k.pem"],
            ]
            .concat(),
            &[&plain[..], &["--xks-client-ca", "ca.pem"]].concat(),
            &["--xks-listen", "not-an-address", "--xks-insecure-http"],
        ] {
            assert!(serve(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn xks_commands_parse() {
        let cli = Cli::try_parse_from([
            "ekms",
            "xks",
            "key",
            "create",
            "--prefix",
            "a/b",
            "--usage",
            "decrypt",
            "--endpoint",
            "http://127.0.0.1:8400",
        ])
        .unwrap();
        assert!(matches!(
            cli.command,
            Command::Xks(cli_xks::XksCommand::Key(_))
        ));
        for bad in [
            // A store's credentials are listed by its prefix.
            &["ekms", "xks", "credential", "list", "--endpoint", "x"],
            &[
                "ekms",
                "xks",
                "key",
                "create",
                "--prefix",
                "/a",
                "--endpoint",
                "x",
            ][..],
            &[
                "ekms",
                "xks",
                "key",
                "create",
                "--prefix",
                "a",
                "--usage",
                "sign",
                "--endpoint",
                "x",
            ],
            &["ekms", "xks", "credential", "create", "--endpoint", "x"],
            &[
                "ekms",
                "xks",
                "credential",
                "delete",
                "--prefix",
                "a",
                "--endpoint",
                "x",
            ],
        ] {
            assert!(Cli::try_parse_from(bad).is_err(), "{bad:?}");
        }
        for ok in [
            &[
                "ekms",
                "xks",
                "credential",
                "create",
                "--prefix",
                "a",
                "--endpoint",
                "x",
            ][..],
            &[
                "ekms",
                "xks",
                "credential",
                "list",
                "--prefix",
                "a",
                "--endpoint",
                "x",
            ],
            &[
                "ekms",
                "xks",
                "credential",
                "delete",
                "--prefix",
                "a",
                "--access-key-id",
                "AK1",
                "--endpoint",
                "x",
                "--data-dir",
                "/tmp/d",
            ],
        ] {
            assert!(Cli::try_parse_from(ok).is_ok(), "{ok:?}");
        }
    }
}
