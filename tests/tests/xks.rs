//! The XKS proxy API end to end: a running appliance with its XKS listener over HTTPS and mutual
//! TLS (a test CA made here with rcgen), a key store's credential and keys made with
//! `ekms xks`, and AWS's own compliance client (`tests/vendor/aws-kms-xksproxy-test-client`)
//! run against it: all of its tests, its key-usage tests (`-a`) and its negative mTLS tests;
//! and the HTTP edge's limits on that listener.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)] // test code

mod common;

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use common::{ekms_admin, text};
use ekms_tests::{Appliance, free_port, have};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

/// A test PKI: a CA, the server's certificate for localhost, and a client certificate.
struct Pki {
    ca: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
}

fn write_pair(
    dir: &Path,
    name: &str,
    cert: &rcgen::Certificate,
    key: &KeyPair,
) -> (PathBuf, PathBuf) {
    let c = dir.join(format!("{name}_cert.pem"));
    let k = dir.join(format!("{name}_key.pem"));
    std::fs::write(&c, cert.pem()).unwrap();
    std::fs::write(&k, key.serialize_pem()).unwrap();
    (c, k)
}

fn pki(dir: &Path) -> Pki {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "ekms XKS test CA");
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let ca = dir.join("ca.pem");
    std::fs::write(&ca, ca_cert.pem()).unwrap();
    let issuer = Issuer::from_params(&ca_params, &ca_key);

    let server_key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    p.subject_alt_names
        .push(SanType::IpAddress(std::net::IpAddr::from([127, 0, 0, 1])));
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let server = p.signed_by(&server_key, &issuer).unwrap();
    let (server_cert, server_key) = write_pair(dir, "server", &server, &server_key);

    let client_key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name.push(DnType::CommonName, "AWS KMS");
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let client = p.signed_by(&client_key, &issuer).unwrap();
    let (client_cert, client_key) = write_pair(dir, "client", &client, &client_key);
    Pki {
        ca,
        server_cert,
        server_key,
        client_cert,
        client_key,
    }
}

const PREFIX: &str = "example/uri/path/prefix";

/// `ekms xks credential create`: the access key id and secret.
fn credential(app: &Appliance) -> (String, String) {
    let o = ekms_admin(app, &["xks", "credential", "create", "--prefix", PREFIX]);
    assert!(o.status.success(), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    (
        v["AccessKeyId"].as_str().unwrap().to_owned(),
        v["SecretAccessKey"].as_str().unwrap().to_owned(),
    )
}

/// `ekms xks key create --usage USAGE`: the key id.
fn key(app: &Appliance, usage: &str) -> String {
    let o = ekms_admin(
        app,
        &["xks", "key", "create", "--prefix", PREFIX, "--usage", usage],
    );
    assert!(o.status.success(), "{}", text(&o));
    String::from_utf8(o.stdout).unwrap().trim().to_owned()
}

fn client_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("vendor/aws-kms-xksproxy-test-client")
}

/// Runs AWS's compliance client (`-a`: the key-usage cases too) against a fresh appliance's
/// XKS listener over HTTPS, with mutual TLS (then also its negative mTLS cases) or without;
/// its summary line and report.
fn compliance(mtls: bool) -> (String, String) {
    let certs = tempfile::tempdir().unwrap();
    let pki = pki(certs.path());
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut args = vec![
        "--xks-listen".to_owned(),
        listen,
        "--xks-tls-cert".to_owned(),
        pki.server_cert.display().to_string(),
        "--xks-tls-key".to_owned(),
        pki.server_key.display().to_string(),
    ];
    if mtls {
        args.extend(["--xks-client-ca".to_owned(), pki.ca.display().to_string()]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let app = Appliance::start_with(dir.path(), &args);
    let (akid, secret) = credential(&app);
    let key_id = key(&app, "encrypt,decrypt");
    let encrypt_only = key(&app, "encrypt");
    let decrypt_only = key(&app, "decrypt");
    let impotent = key(&app, "none");
    let client = if mtls {
        format!(
            "--key {} --cert {}",
            pki.client_key.display(),
            pki.client_cert.display()
        )
    } else {
        String::new()
    };
    let out = Command::new("bash")
        .arg("./test-xks-proxy")
        .arg("-a")
        .current_dir(client_dir())
        .env("XKS_PROXY_HOST", format!("localhost:{port}"))
        .env("URI_PREFIX", PREFIX)
        .env("SIGV4_ACCESS_KEY_ID", &akid)
        .env("SIGV4_SECRET_ACCESS_KEY", &secret)
        .env("KEY_ID", &key_id)
        .env("ENCRYPT_ONLY_KEY_ID", &encrypt_only)
        .env("DECRYPT_ONLY_KEY_ID", &decrypt_only)
        .env("IMPOTENT_KEY_ID", &impotent)
        .env("SECURE", format!("--cacert {}", pki.ca.display()))
        .env("MTLS", client)
        .env("ANSI_ESCAPE", "0")
        .output()
        .unwrap();
    let report = text(&out);
    xks_calls_are_audited(&app);
    let summary = report
        .lines()
        .rev()
        .find(|l| l.contains("tests PASSED") || l.contains("tests FAILED"))
        .unwrap_or_default()
        .to_owned();
    (summary, report)
}

/// Every XKS call is in the domain's audit chain, under AWS KMS's request id, and the chain
/// verifies against the running enclave.
fn xks_calls_are_audited(app: &Appliance) {
    let ekms = |args: &[&str]| {
        Command::new(ekms_tests::bin_dir().join("ekms"))
            .args(args)
            .arg("--data-dir")
            .arg(&app.data_dir)
            .output()
            .unwrap()
    };
    let verified = ekms(&["audit", "verify", "--endpoint", &app.endpoint]);
    assert!(verified.status.success(), "{}", text(&verified));
    let exported = ekms(&["audit", "export"]);
    let records: Vec<serde_json::Value> = String::from_utf8_lossy(&exported.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let xks: Vec<&serde_json::Value> = records
        .iter()
        .filter(|r| r["eventSource"] == "xks-proxy.ekms")
        .collect();
    assert!(xks.len() > 20, "{} XKS records", xks.len());
    let encrypt = xks
        .iter()
        .find(|r| r["eventName"] == "XksEncrypt" && r["errorCode"].is_null())
        .unwrap();
    assert_eq!(encrypt["userIdentity"]["type"], "AWSService");
    assert!(encrypt["requestID"].is_string(), "{encrypt}");
    assert!(xks.iter().any(|r| r["errorCode"].is_string()));
}

fn tools() -> bool {
    have("curl", &["--version"])
        && have("jq", &["--version"])
        && have("xxd", &["-v"])
        && have("uuidgen", &["--version"])
}

#[test]
fn aws_compliance_client_passes_over_mutual_tls() {
    if !tools() {
        return;
    }
    let (summary, report) = compliance(true);
    assert!(
        summary.contains("All") && summary.contains("PASSED") && !report.contains("FAILED with"),
        "compliance client: {summary}\n{report}"
    );
    // The negative mTLS cases (an expired and a self-signed client certificate) ran.
    assert!(
        report.contains("self-signed") || report.contains("selfsigned"),
        "{report}"
    );
    eprintln!("compliance client, mTLS: {summary}");
}

#[test]
fn aws_compliance_client_passes_over_tls() {
    if !tools() {
        return;
    }
    let (summary, report) = compliance(false);
    assert!(
        summary.contains("All") && summary.contains("PASSED") && !report.contains("FAILED with"),
        "compliance client: {summary}\n{report}"
    );
    eprintln!("compliance client, TLS: {summary}");
}

/// One XKS Encrypt with curl (`--aws-sigv4`, as AWS's compliance client sends it): the status.
fn curl_encrypt(port: u16, ca: &Path, (akid, secret): (&str, &str), key: &str) -> u16 {
    let body = serde_json::json!({
        "requestMetadata": {"awsPrincipalArn": "arn:aws:iam::123456789012:user/Alice",
                            "kmsKeyArn": "arn:aws:kms:us-east-1:123456789012:key/x",
                            "kmsOperation": "Encrypt", "kmsRequestId": "r"},
        "plaintext": "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
        "encryptionAlgorithm": "AES_GCM"});
    let out = Command::new("curl")
        .args([
            "--silent",
            "--output",
            "/dev/null",
            "--write-out",
            "%{http_code}",
        ])
        .arg("--cacert")
        .arg(ca)
        .args(["-H", "Content-Type:application/json"])
        .args(["--aws-sigv4", "aws:amz:us-east-1:kms-xks-proxy"])
        .arg("--user")
        .arg(format!("{akid}:{secret}"))
        .arg("--data-binary")
        .arg(body.to_string())
        .arg(format!(
            "https://localhost:{port}/{PREFIX}/kms/xks/v1/keys/{key}/encrypt"
        ))
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).parse().unwrap_or(0)
}

/// Credentials rotated while requests run: the old one works until it is deleted, the new one
/// from the moment it exists, and no request in between fails.
#[test]
fn credentials_rotate_while_requests_run() {
    if !have("curl", &["--version"]) {
        return;
    }
    let certs = tempfile::tempdir().unwrap();
    let pki = pki(certs.path());
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let app = Appliance::start_with(
        dir.path(),
        &[
            "--xks-listen",
            &listen,
            "--xks-tls-cert",
            pki.server_cert.to_str().unwrap(),
            "--xks-tls-key",
            pki.server_key.to_str().unwrap(),
        ],
    );
    let old = credential(&app);
    let key_id = key(&app, "encrypt,decrypt");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let run = |cred: (String, String)| {
        let (stop, ca, key_id) = (stop.clone(), pki.ca.clone(), key_id.clone());
        std::thread::spawn(move || {
            let mut statuses = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                statuses.push(curl_encrypt(port, &ca, (&cred.0, &cred.1), &key_id));
            }
            statuses
        })
    };
    let with_old = run(old.clone());
    std::thread::sleep(std::time::Duration::from_millis(500));
    let new = credential(&app);
    let with_new = run(new.clone());
    std::thread::sleep(std::time::Duration::from_millis(500));
    // AWS KMS now has the new credential: the old one goes.
    let o = ekms_admin(
        &app,
        &[
            "xks",
            "credential",
            "delete",
            "--prefix",
            PREFIX,
            "--access-key-id",
            &old.0,
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    std::thread::sleep(std::time::Duration::from_millis(500));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let old_statuses = with_old.join().unwrap();
    let new_statuses = with_new.join().unwrap();
    // The new credential never failed.
    assert!(!new_statuses.is_empty());
    assert!(new_statuses.iter().all(|s| *s == 200), "{new_statuses:?}");
    // The old one succeeded, then (once deleted) was refused, and nothing else happened.
    let first_refusal = old_statuses
        .iter()
        .position(|s| *s != 200)
        .expect("the deleted credential was refused");
    assert!(first_refusal > 0, "{old_statuses:?}");
    assert!(
        old_statuses[first_refusal..].iter().all(|s| *s == 401),
        "{old_statuses:?}"
    );
    assert_eq!(curl_encrypt(port, &pki.ca, (&old.0, &old.1), &key_id), 401);
    assert_eq!(curl_encrypt(port, &pki.ca, (&new.0, &new.1), &key_id), 200);
}

/// A TLS connection to the XKS listener, trusting the test CA, once its handshake completed.
async fn tls_connect(
    port: u16,
    ca: &Path,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    let pem = std::fs::read(ca).unwrap();
    for c in rustls_pki_types::pem::PemObject::pem_slice_iter(&pem) {
        roots.add(c.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
        .connect("localhost".try_into().unwrap(), tcp)
        .await
        .unwrap()
}

/// Reads until the peer closes (or 10 s pass: `None`); what was read, and when it closed.
async fn read_to_close(
    mut s: impl tokio::io::AsyncRead + Unpin,
    start: std::time::Instant,
) -> Option<(String, std::time::Duration)> {
    use tokio::io::AsyncReadExt as _;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = start + std::time::Duration::from_secs(10);
    loop {
        match tokio::time::timeout_at(deadline.into(), s.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0) | Err(_)) => break,
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
    Some((String::from_utf8_lossy(&got).into_owned(), start.elapsed()))
}

/// The XKS listener has the edge's limits: a stalled TLS handshake and a trickled request head
/// are closed after the header timeout; past the connection cap a new connection gets a 503 in
/// the XKS error shape.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_xks_listener_has_the_header_timeout_and_the_connection_cap() {
    use tokio::io::AsyncWriteExt as _;
    let certs = tempfile::tempdir().unwrap();
    let pki = pki(certs.path());
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let _app = Appliance::start_with(
        dir.path(),
        &[
            "--xks-listen",
            &listen,
            "--xks-tls-cert",
            pki.server_cert.to_str().unwrap(),
            "--xks-tls-key",
            pki.server_key.to_str().unwrap(),
            "--header-timeout",
            "1s",
            "--max-connections",
            "4",
        ],
    );
    let second = std::time::Duration::from_millis(900);
    let late = std::time::Duration::from_secs(5);
    // A TCP connection that never starts its TLS handshake.
    let start = std::time::Instant::now();
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let (_, after) = read_to_close(tcp, start)
        .await
        .expect("a stalled handshake stayed open");
    assert!(after >= second && after < late, "{after:?}");
    // A request head trickled after the handshake.
    let start = std::time::Instant::now();
    let mut tls = tls_connect(port, &pki.ca).await;
    tls.write_all(b"POST /x HTTP/1.1\r\nhost: localhost\r\n")
        .await
        .unwrap();
    let (_, after) = read_to_close(tls, start)
        .await
        .expect("a slow head stayed open");
    assert!(after >= second && after < late, "{after:?}");
    // Four connections at the cap (each with a request answered, then idle), and a fifth.
    let mut held = Vec::new();
    for _ in 0..4 {
        let mut s = tls_connect(port, &pki.ca).await;
        s.write_all(
            b"POST /a/kms/xks/v1/health HTTP/1.1\r\nhost: localhost\r\ncontent-length: 2\r\n\r\n{}",
        )
        .await
        .unwrap();
        let mut buf = [0u8; 2048];
        let n = tokio::io::AsyncReadExt::read(&mut s, &mut buf)
            .await
            .unwrap();
        assert!(
            buf[..n].starts_with(b"HTTP/1.1 "),
            "{}",
            String::from_utf8_lossy(&buf[..n])
        );
        held.push(s);
    }
    let start = std::time::Instant::now();
    let fifth = tls_connect(port, &pki.ca).await;
    let (answer, after) = read_to_close(fifth, start)
        .await
        .expect("the refusal stayed open");
    assert!(after < std::time::Duration::from_secs(2), "{after:?}");
    assert!(answer.starts_with("HTTP/1.1 503 "), "{answer}");
    let body: serde_json::Value =
        serde_json::from_str(answer.split_once("\r\n\r\n").unwrap().1).unwrap();
    assert_eq!(body["errorName"], "ThrottlingException", "{answer}");
    assert!(body["errorMessage"].is_string());
    drop(held);
}
