//! The flags of `ekms serve` and what they become: the appliance's [`ServeConfig`], with the
//! HTTP edge's limits. The flags may also come from a TOML file (`--config`, `config_file`).

use std::{net::SocketAddr, path::PathBuf, process::ExitCode, time::Duration};

use crate::{
    edge::EdgeLimits,
    serve::{self, EnclaveMode, ServeConfig, XksListen},
    xks_tls::XksTlsFiles,
};

/// The flags of `ekms serve`.
#[derive(clap::Args, Debug)]
#[allow(clippy::struct_excessive_bools)] // clap flags
pub struct ServeArgs {
    /// Read flags from this TOML file: each key is a flag's long name (`listen = "0.0.0.0:8400"`,
    /// `max-connections = 1024`, `sim = true`, `witness = ["http://a:8400", "http://b:8400"]`).
    /// A flag given on the command line overrides the file.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
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
    /// HTTP edge, every listener: a request's head (request line and headers) must arrive
    /// within this, from the connection's start or the first byte of a later request
    /// (`10s`, `500ms`, `2m`; a bare number is seconds).
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    header_timeout: Duration,
    /// HTTP edge: a request's body must arrive whole within this, from the end of its head; a
    /// slower one is answered 408 and its connection closed.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    body_timeout: Duration,
    /// HTTP edge: a keep-alive connection with no request in flight is closed after this.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_duration)]
    idle_timeout: Duration,
    /// HTTP edge: connections served at once, per listener (TLS handshakes included). One more
    /// gets a 503 (ThrottlingException) and is closed. Each is an open file: keep the open-files
    /// limit (ulimit -n, systemd LimitNOFILE) above the caps of all listeners.
    #[arg(long, value_name = "N", default_value_t = crate::edge::DEFAULT_MAX_CONNECTIONS,
          value_parser = parse_connections)]
    max_connections: usize,
    /// HTTP edge: bytes of request bodies over 16 KiB buffered at once, across listeners
    /// (`64MiB`, `512KiB`, `1GiB`, or bytes). A body that does not fit is answered 503; bodies
    /// up to 16 KiB are bounded by --max-connections instead.
    #[arg(long, value_name = "SIZE", default_value = "64MiB", value_parser = parse_size)]
    max_body_memory: usize,
    /// Memory for the host's cache of sealed records (`12MiB`: about 14,000 key records). The
    /// records beyond it are read from the store when used; the enclave checks every record
    /// either way, so the size trades host memory for store reads, never safety.
    #[arg(long, value_name = "SIZE", default_value = "12MiB", value_parser = parse_size)]
    record_cache: usize,
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
    pub log_format: LogFormat,
}

/// `--log-format`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines (coloured only on a terminal).
    Text,
    /// One JSON object per line.
    Json,
}

/// Sets up logging to standard error in `format`, at the level `RUST_LOG` says (default warn).
pub fn init_logs(format: LogFormat) {
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

/// Runs `ekms serve` with these flags; the process's exit code.
#[must_use]
pub fn run(args: ServeArgs) -> ExitCode {
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
        edge: EdgeLimits {
            header_timeout: args.header_timeout,
            body_timeout: args.body_timeout,
            idle_timeout: args.idle_timeout,
            max_connections: args.max_connections,
        },
        max_body_memory: args.max_body_memory,
        metrics: args.metrics_listen,
        record_cache: u64::try_from(args.record_cache).unwrap_or(u64::MAX),
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

impl ServeArgs {
    /// The TOML file the flags were read from (already applied by [`crate::config_file`]).
    #[must_use]
    pub fn config(&self) -> Option<&std::path::Path> {
        self.config.as_deref()
    }
}

/// A duration flag: `500ms`, `10s`, `2m`, or a bare number of seconds (fractions allowed);
/// more than zero and at most a day.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (number, unit) = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .map_or((s, ""), |i| s.split_at(i));
    let scale = match unit.trim() {
        "ms" => 0.001,
        "" | "s" => 1.0,
        "m" => 60.0,
        _ => return Err(format!("'{s}': use a number with ms, s or m (like 10s)")),
    };
    let value: f64 = number
        .parse()
        .map_err(|_| format!("'{s}': use a number with ms, s or m (like 10s)"))?;
    let secs = value * scale;
    if !(0.001..=86_400.0).contains(&secs) {
        return Err(format!("'{s}': must be from 1ms to 24h"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// A connection cap: 1 to 1,000,000.
pub fn parse_connections(s: &str) -> Result<usize, String> {
    s.trim()
        .parse::<usize>()
        .ok()
        .filter(|n| (1..=1_000_000).contains(n))
        .ok_or_else(|| format!("'{s}': use a number from 1 to 1000000"))
}

/// A size flag: bytes, or a number with KiB, MiB or GiB; at least the largest KMS request
/// body, so that every request can be served.
pub fn parse_size(s: &str) -> Result<usize, String> {
    let s = s.trim();
    let (number, unit) = s
        .find(|c: char| !c.is_ascii_digit())
        .map_or((s, ""), |i| s.split_at(i));
    let scale: usize = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        _ => return Err(format!("'{s}': use bytes or a number with KiB, MiB or GiB")),
    };
    let n = number
        .parse::<usize>()
        .ok()
        .and_then(|n| n.checked_mul(scale))
        .ok_or_else(|| format!("'{s}': use bytes or a number with KiB, MiB or GiB"))?;
    if n < crate::http::MAX_BODY {
        return Err(format!(
            "'{s}': must be at least {} KiB, the largest request body",
            crate::http::MAX_BODY / 1024
        ));
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;

    #[derive(clap::Parser, Debug)]
    struct Serve {
        #[command(flatten)]
        args: ServeArgs,
    }

    fn serve(args: &[&str]) -> Result<ServeArgs, clap::Error> {
        let argv = ["serve", "--sim"].iter().chain(args);
        Ok(Serve::try_parse_from(argv)?.args)
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
    fn edge_flags_have_defaults_and_units() {
        let a = serve(&[]).unwrap();
        assert_eq!(a.header_timeout, crate::edge::DEFAULT_HEADER_TIMEOUT);
        assert_eq!(a.body_timeout, crate::edge::DEFAULT_BODY_TIMEOUT);
        assert_eq!(a.idle_timeout, crate::edge::DEFAULT_IDLE_TIMEOUT);
        assert_eq!(a.max_connections, crate::edge::DEFAULT_MAX_CONNECTIONS);
        assert_eq!(a.max_body_memory, crate::edge::DEFAULT_MAX_BODY_MEMORY);
        assert_eq!(
            u64::try_from(a.record_cache).unwrap(),
            crate::relay::RECORD_CACHE_BYTES
        );
        let a = serve(&[
            "--header-timeout",
            "500ms",
            "--body-timeout",
            "2",
            "--idle-timeout",
            "1.5m",
            "--max-connections",
            "8",
            "--max-body-memory",
            "1MiB",
            "--record-cache",
            "64MiB",
        ])
        .unwrap();
        assert_eq!(a.record_cache, 64 << 20);
        assert_eq!(a.header_timeout, Duration::from_millis(500));
        assert_eq!(a.body_timeout, Duration::from_secs(2));
        assert_eq!(a.idle_timeout, Duration::from_secs(90));
        assert_eq!(a.max_connections, 8);
        assert_eq!(a.max_body_memory, 1 << 20);
        for bad in [
            &["--header-timeout", "0"][..],
            &["--header-timeout", "10h"],
            &["--body-timeout", "-1s"],
            &["--idle-timeout", "2d"],
            &["--max-connections", "0"],
            &["--max-body-memory", "100KiB"],
            &["--max-body-memory", "64MB"],
            &["--max-body-memory", "99999999999999999999GiB"],
        ] {
            assert!(serve(bad).is_err(), "{bad:?}");
        }
    }
}
