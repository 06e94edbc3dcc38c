//! `ekms-bench`: drives any AWS-KMS-compatible endpoint with SigV4-signed Encrypt (32 B),
//! Decrypt, GenerateDataKey, CreateKey, Sign (ECDSA P-256, RSA-2048 PSS), Verify, RSA Decrypt
//! and GenerateMac requests at several connection counts for a fixed time, prints ops/s and
//! p50/p99 latency, and beside them the same cryptography done in-process with aws-lc-rs (the
//! ceiling). With `--ops xks-encrypt,xks-decrypt` it drives the appliance's XKS proxy API over
//! HTTPS instead.

use std::{
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use anyhow::{Context as _, anyhow, bail};
use aws_credential_types::Credentials;
use aws_sigv4::{
    http_request::{SignableBody, SignableRequest, SigningSettings, sign},
    sign::v4,
};
use bytes::Bytes;
use clap::Parser;
use http_body_util::{BodyExt as _, Full};

mod ceiling;
mod fixture;
mod server_cpu;
mod xks;

use fixture::Fixture;

#[derive(Parser, Debug)]
#[command(
    name = "ekms-bench",
    about = "Benchmark an AWS-KMS-compatible endpoint"
)]
struct Args {
    /// Endpoint URL (http only).
    #[arg(long, default_value = "http://127.0.0.1:8400")]
    endpoint: String,
    /// Region for the SigV4 scope.
    #[arg(long, default_value = "us-east-1")]
    region: String,
    /// Access key id (else from --profile or AWS_ACCESS_KEY_ID).
    #[arg(long)]
    access_key: Option<String>,
    /// Secret access key.
    #[arg(long)]
    secret_key: Option<String>,
    /// Profile in the shared credentials file (AWS_SHARED_CREDENTIALS_FILE or ~/.aws/credentials).
    #[arg(long)]
    profile: Option<String>,
    /// Key to use; a new key is created when absent.
    #[arg(long)]
    key_id: Option<String>,
    /// Symmetric keys that Encrypt and GenerateDataKey go through in turn (the bench creates
    /// all but the first): with the server's pid, the RSS printed after each measurement is
    /// then that of a server whose keys have all been used.
    #[arg(long, default_value_t = 1)]
    keys: usize,
    /// Connection counts to measure.
    #[arg(long, value_delimiter = ',', default_value = "1,32")]
    connections: Vec<usize>,
    /// Seconds per measurement.
    #[arg(long, default_value_t = 10)]
    duration_secs: u64,
    /// Warm-up seconds before each measurement.
    #[arg(long, default_value_t = 1)]
    warmup_secs: u64,
    /// Operations: encrypt, decrypt, generate-data-key, create-key, sign-ecdsa, verify-ecdsa,
    /// sign-rsa, decrypt-rsa (RSA_2048 OAEP-SHA-256), generate-mac, encrypt-context (the admin's Encrypt with an encryption context),
    /// encrypt-grant (the same Encrypt by a principal that only a grant lets in, on a key with a
    /// realistic three-statement policy, one with a context condition); xks-encrypt,
    /// xks-decrypt (the XKS proxy API: 32-byte plaintext, 20-byte AAD; see the --xks options).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "encrypt,decrypt,generate-data-key"
    )]
    ops: Vec<String>,
    /// Skip the in-process aws-lc-rs ceiling.
    #[arg(long)]
    no_ceiling: bool,
    /// The server's pid (`ekms serve`, local): prints the CPU time per request of it and of
    /// each process below it (the simulated enclave), read from /proc during the measurement.
    #[arg(long)]
    server_pid: Option<u32>,
    #[command(flatten)]
    xks: xks::XksArgs,
}

struct Target {
    host: String,
    addr: String,
    url: String,
    region: String,
    creds: aws_credential_types::Credentials,
}

impl Target {
    fn request(&self, op: &str, body: &str) -> anyhow::Result<http::Request<Full<Bytes>>> {
        let identity = self.creds.clone().into();
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(&self.region)
            .name("kms")
            .time(SystemTime::now())
            .settings(SigningSettings::default())
            .build()?
            .into();
        let target = format!("TrentService.{op}");
        let headers = [
            ("host", self.host.as_str()),
            ("content-type", "application/x-amz-json-1.1"),
            ("x-amz-target", target.as_str()),
        ];
        let signable = SignableRequest::new(
            "POST",
            &self.url,
            headers.iter().copied(),
            SignableBody::Bytes(body.as_bytes()),
        )?;
        let (instructions, _) = sign(signable, &params)?.into_parts();
        let mut req = http::Request::builder().method("POST").uri("/");
        for (k, v) in headers {
            req = req.header(k, v);
        }
        let mut req = req.body(Full::new(Bytes::from(body.to_owned())))?;
        instructions.apply_to_request_http1x(&mut req);
        Ok(req)
    }
}

/// One keep-alive HTTP/1.1 connection (plain or TLS).
type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

async fn connect(t: &Target) -> anyhow::Result<Sender> {
    let stream = tokio::net::TcpStream::connect(&t.addr).await?;
    stream.set_nodelay(true)?;
    let io = hyper_util::rt::TokioIo::new(stream);
    let (sender, conn) = hyper::client::conn::http1::handshake(io).await?;
    tokio::spawn(conn);
    Ok(sender)
}

async fn call(t: &Target, s: &mut Sender, op: &str, body: &str) -> anyhow::Result<(u16, Bytes)> {
    // Some servers (moto's, for one) close the connection after each response: redial then.
    if s.is_closed() || s.ready().await.is_err() {
        *s = connect(t).await?;
    }
    send(s, t.request(op, body)?).await
}

/// Sends `req` on `s`; the status and body of the answer.
async fn send(s: &mut Sender, req: http::Request<Full<Bytes>>) -> anyhow::Result<(u16, Bytes)> {
    let resp = s.send_request(req).await?;
    let status = resp.status().as_u16();
    let bytes = resp.into_body().collect().await?.to_bytes();
    Ok((status, bytes))
}

/// What one measurement drives: a KMS operation with its body, or an XKS operation.
#[derive(Clone)]
enum Driver {
    Kms {
        t: Arc<Target>,
        op: &'static str,
        /// Sent in turn (one per key of `--keys`).
        bodies: Arc<Vec<String>>,
    },
    Xks {
        t: Arc<xks::XksTarget>,
        op: &'static str,
    },
}

impl Driver {
    async fn connect(&self) -> anyhow::Result<Sender> {
        match self {
            Self::Kms { t, .. } => connect(t).await,
            Self::Xks { t, .. } => t.connect().await,
        }
    }

    async fn call(&self, s: &mut Sender) -> anyhow::Result<(u16, Bytes)> {
        let n = UNIQUE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        match self {
            // A state-changing request is executed at most once per signature: make each
            // CreateKey unique (the enclave refuses byte-identical replays).
            Self::Kms { t, op, bodies } => {
                #[allow(clippy::cast_possible_truncation)]
                let body = bodies
                    .get(n as usize % bodies.len().max(1))
                    .map_or("", String::as_str);
                if *op == "CreateKey" {
                    call(
                        t,
                        s,
                        op,
                        &body.replace("ekms-bench", &format!("ekms-bench {n}")),
                    )
                    .await
                } else {
                    call(t, s, op, body).await
                }
            }
            Self::Xks { t, op } => t.call(s, op, n).await,
        }
    }

    /// Whether an answer other than 200 ends the run (XKS: the bench's requests are all valid,
    /// so any error answer is a finding, not load).
    fn aborts_on_error(&self) -> bool {
        matches!(self, Self::Xks { .. })
    }
}

/// Result of one measurement.
struct Measured {
    ops: usize,
    errors: usize,
    first_error: Option<String>,
    /// An XKS answer other than 200 stopped the measurement (`first_error` holds it).
    aborted: bool,
    secs: f64,
    lat_us: Vec<u32>,
    /// Server CPU (µs) by process over the measurement, when a server pid was given.
    server_cpu: Vec<(String, u64)>,
    /// Server RSS (KiB) by process at the end of the measurement.
    server_rss: Vec<(String, u64)>,
}

/// Exact percentile of sorted data (nearest rank).
fn percentile(sorted: &[u32], p: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss
    )]
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted
        .get(rank.saturating_sub(1).min(sorted.len() - 1))
        .copied()
        .unwrap_or(0)
}

/// A counter that makes state-changing bench requests distinct.
static UNIQUE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

async fn measure(
    driver: &Driver,
    conns: usize,
    warmup: Duration,
    dur: Duration,
    server_pid: Option<u32>,
) -> anyhow::Result<Measured> {
    let mut senders = Vec::with_capacity(conns);
    for _ in 0..conns {
        senders.push(driver.connect().await?);
    }
    let start = Instant::now() + warmup;
    let end = start + dur;
    let mut tasks = Vec::new();
    let abort = Arc::new(std::sync::atomic::AtomicBool::new(false));
    for mut s in senders {
        let driver = driver.clone();
        let abort = Arc::clone(&abort);
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let (mut ops, mut errors, mut first_error) = (0usize, 0usize, None);
            loop {
                let t0 = Instant::now();
                if t0 >= end || abort.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
                let r = driver.call(&mut s).await;
                let us = u32::try_from(t0.elapsed().as_micros()).unwrap_or(u32::MAX);
                // Every XKS answer must be 200, warm-up included: the first other one stops
                // the measurement with its body.
                if driver.aborts_on_error()
                    && let Ok((status, b)) = &r
                    && *status != 200
                {
                    errors += 1;
                    first_error = Some(format!("HTTP {status}: {}", String::from_utf8_lossy(b)));
                    abort.store(true, std::sync::atomic::Ordering::Relaxed);
                    break;
                }
                if t0 < start {
                    continue;
                }
                match r {
                    Ok((200, _)) => {
                        ops += 1;
                        lat.push(us);
                    }
                    Ok((status, b)) => {
                        errors += 1;
                        first_error.get_or_insert_with(|| {
                            format!("HTTP {status}: {}", String::from_utf8_lossy(&b))
                        });
                    }
                    Err(e) => {
                        errors += 1;
                        first_error.get_or_insert_with(|| e.to_string());
                        match driver.connect().await {
                            Ok(n) => s = n,
                            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
                        }
                    }
                }
            }
            (ops, errors, first_error, lat)
        }));
    }
    let (mut server_cpu, mut server_rss) = (Vec::new(), Vec::new());
    if let Some(pid) = server_pid {
        tokio::time::sleep_until(start.into()).await;
        let before = server_cpu::sample(pid);
        tokio::time::sleep_until(end.into()).await;
        server_cpu = server_cpu::spent(&before, &server_cpu::sample(pid));
        server_rss = server_cpu::rss_kib(pid).into_iter().collect();
    }
    let mut m = Measured {
        ops: 0,
        errors: 0,
        first_error: None,
        aborted: abort.load(std::sync::atomic::Ordering::Relaxed),
        secs: dur.as_secs_f64(),
        lat_us: Vec::new(),
        server_cpu,
        server_rss,
    };
    for task in tasks {
        let (ops, errors, fe, lat) = task.await?;
        m.ops += ops;
        m.errors += errors;
        if m.first_error.is_none() {
            m.first_error = fe;
        }
        m.lat_us.extend(lat);
    }
    m.lat_us.sort_unstable();
    Ok(m)
}

/// Prints one measurement's line, and the server's CPU per request when it was sampled.
fn print_measured(op: &str, conns: usize, m: &Measured) {
    #[allow(clippy::cast_precision_loss)]
    let rate = m.ops as f64 / m.secs;
    println!(
        "{:<20} {:>6} {:>10.0} {:>9.3} {:>9.3} {:>7}",
        op,
        conns,
        rate,
        f64::from(percentile(&m.lat_us, 50.0)) / 1000.0,
        f64::from(percentile(&m.lat_us, 99.0)) / 1000.0,
        m.errors
    );
    if !m.server_cpu.is_empty() && m.ops > 0 {
        #[allow(clippy::cast_precision_loss)]
        let per = |us: u64| us as f64 / m.ops as f64;
        let total: u64 = m.server_cpu.iter().map(|(_, us)| us).sum();
        let parts: Vec<String> = m
            .server_cpu
            .iter()
            .map(|(name, us)| format!("{name} {:.1}", per(*us)))
            .collect();
        println!(
            "    server CPU per request: {:.1} us ({})",
            per(total),
            parts.join(" + ")
        );
    }
    if !m.server_rss.is_empty() {
        #[allow(clippy::cast_precision_loss)]
        let mib = |kib: u64| kib as f64 / 1024.0;
        let total: u64 = m.server_rss.iter().map(|(_, kib)| kib).sum();
        let parts: Vec<String> = m
            .server_rss
            .iter()
            .map(|(name, kib)| format!("{name} {:.1}", mib(*kib)))
            .collect();
        println!(
            "    server RSS: {:.1} MiB ({})",
            mib(total),
            parts.join(" + ")
        );
    }
}

/// What measures `op`: its XKS target, or its KMS target, request and body.
fn driver_for(
    op: &str,
    xks_target: Option<&Arc<xks::XksTarget>>,
    fixture: Option<&(Arc<Target>, Fixture)>,
) -> anyhow::Result<Driver> {
    Ok(
        match (xks::XKS_OPS.iter().find(|x| **x == op), xks_target, fixture) {
            (Some(x), Some(xt), _) => Driver::Xks {
                t: Arc::clone(xt),
                op: x,
            },
            (None, _, Some((t, fixture))) => {
                let (name, bodies) = fixture.bodies_for(op);
                let target = match fixture.credentials_for(op) {
                    Some(creds) => Arc::new(Target {
                        host: t.host.clone(),
                        addr: t.addr.clone(),
                        url: t.url.clone(),
                        region: t.region.clone(),
                        creds,
                    }),
                    None => Arc::clone(t),
                };
                Driver::Kms {
                    t: target,
                    op: name,
                    bodies: Arc::new(bodies),
                }
            }
            _ => bail!("{op}: not set up"),
        },
    )
}

fn credentials(args: &Args) -> anyhow::Result<(String, String)> {
    if let (Some(a), Some(s)) = (&args.access_key, &args.secret_key) {
        return Ok((a.clone(), s.clone()));
    }
    if let Some(profile) = &args.profile {
        let path = std::env::var_os("AWS_SHARED_CREDENTIALS_FILE").map_or_else(
            || PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".aws/credentials"),
            PathBuf::from,
        );
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        return profile_credentials(&text, profile)
            .ok_or_else(|| anyhow!("profile [{profile}] not found in {}", path.display()));
    }
    match (
        std::env::var("AWS_ACCESS_KEY_ID"),
        std::env::var("AWS_SECRET_ACCESS_KEY"),
    ) {
        (Ok(a), Ok(s)) => Ok((a, s)),
        _ => bail!(
            "give --access-key/--secret-key, --profile, or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY"
        ),
    }
}

/// Reads one profile of an AWS shared-credentials file.
fn profile_credentials(text: &str, profile: &str) -> Option<(String, String)> {
    let (mut in_profile, mut ak, mut sk) = (false, None, None);
    for line in text.lines().map(str::trim) {
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            in_profile = name.trim() == profile;
        } else if in_profile && let Some((k, v)) = line.split_once('=') {
            match k.trim() {
                "aws_access_key_id" => ak = Some(v.trim().to_owned()),
                "aws_secret_access_key" => sk = Some(v.trim().to_owned()),
                _ => {}
            }
        }
    }
    Some((ak?, sk?))
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    fixture::check_ops(&args.ops)?;
    let (xks_ops, kms_ops): (Vec<String>, Vec<String>) = args
        .ops
        .iter()
        .cloned()
        .partition(|o| xks::XKS_OPS.contains(&o.as_str()));
    let needs_kms = !kms_ops.is_empty() || (!xks_ops.is_empty() && args.xks.needs_kms());
    let t = if needs_kms {
        let (ak, sk) = credentials(&args)?;
        let hostport = args
            .endpoint
            .strip_prefix("http://")
            .ok_or_else(|| anyhow!("only http:// endpoints are supported"))?
            .trim_end_matches('/')
            .to_owned();
        Some(Arc::new(Target {
            host: hostport.clone(),
            addr: hostport,
            url: format!("{}/", args.endpoint.trim_end_matches('/')),
            region: args.region.clone(),
            creds: Credentials::new(ak, sk, None, None, "ekms-bench"),
        }))
    } else {
        None
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let mut fixture = None;
    if let (Some(t), false) = (&t, kms_ops.is_empty()) {
        let f = rt.block_on(Fixture::setup(t, args.key_id.clone(), args.keys, &kms_ops))?;
        println!("endpoint {}  key {}", args.endpoint, f.key_id());
        fixture = Some((Arc::clone(t), f));
    }
    let mut xks_target = None;
    if !xks_ops.is_empty() {
        let x = rt.block_on(xks::XksTarget::setup(
            &args.xks,
            &args.region,
            t.as_deref(),
            &xks_ops,
        ))?;
        println!("{}", x.describe());
        xks_target = Some(Arc::new(x));
    }
    println!(
        "duration {}s (+{}s warm-up)",
        args.duration_secs, args.warmup_secs
    );
    println!(
        "{:<20} {:>6} {:>10} {:>9} {:>9} {:>7}",
        "op", "conns", "ops/s", "p50(ms)", "p99(ms)", "errors"
    );
    for op in &args.ops {
        let driver = driver_for(op, xks_target.as_ref(), fixture.as_ref())?;
        for &conns in &args.connections {
            let m = rt.block_on(measure(
                &driver,
                conns.max(1),
                Duration::from_secs(args.warmup_secs),
                Duration::from_secs(args.duration_secs.max(1)),
                args.server_pid,
            ))?;
            print_measured(op, conns, &m);
            if let Some(e) = m.first_error {
                if m.aborted {
                    bail!("{op} at {conns} connections: unexpected answer: {e}");
                }
                println!("    first error: {e}");
            }
        }
    }
    if !args.no_ceiling {
        println!("\nin-process aws-lc-rs ceiling (32-byte messages):");
        for (name, rate) in ceiling::ceiling(&args.ops, Duration::from_secs(2))? {
            println!("{name:<32} {rate:>12.0} ops/s");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_nearest_rank() {
        let v: Vec<u32> = (1..=100).collect();
        assert_eq!(percentile(&v, 50.0), 50);
        assert_eq!(percentile(&v, 99.0), 99);
        assert_eq!(percentile(&[], 99.0), 0);
        assert_eq!(percentile(&[7], 99.0), 7);
    }

    #[test]
    fn xks_options_parse_and_pair() {
        let a = Args::try_parse_from([
            "ekms-bench",
            "--ops",
            "xks-encrypt,xks-decrypt,encrypt",
            "--xks-endpoint",
            "https://localhost:8443",
            "--xks-ca",
            "ca.pem",
        ])
        .unwrap();
        assert_eq!(a.ops, ["xks-encrypt", "xks-decrypt", "encrypt"]);
        assert!(fixture::check_ops(&a.ops).is_ok());
        // No credential or key given: the bench makes them with its KMS credentials.
        assert!(a.xks.needs_kms());
        let given = Args::try_parse_from([
            "ekms-bench",
            "--xks-access-key-id",
            "A",
            "--xks-secret",
            "S",
            "--xks-key-id",
            "K",
        ])
        .unwrap();
        assert!(!given.xks.needs_kms());
        // A secret without its access key id, and a client certificate without its key, are
        // refused.
        assert!(Args::try_parse_from(["ekms-bench", "--xks-secret", "S"]).is_err());
        assert!(Args::try_parse_from(["ekms-bench", "--xks-client-cert", "c.pem"]).is_err());
        assert!(fixture::check_ops(&["xks-frobnicate".to_owned()]).is_err());
    }

    #[test]
    fn profiles_are_read_from_the_credentials_file() {
        let text = "[default]\naws_access_key_id = A\naws_secret_access_key = B\n\n[ekms]\naws_access_key_id=C\naws_secret_access_key = D\n";
        assert_eq!(
            profile_credentials(text, "ekms"),
            Some(("C".into(), "D".into()))
        );
        assert_eq!(
            profile_credentials(text, "default"),
            Some(("A".into(), "B".into()))
        );
        assert_eq!(profile_credentials(text, "none"), None);
    }
}
