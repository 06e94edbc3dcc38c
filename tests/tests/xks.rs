//! The XKS proxy API end to end: a running appliance with its XKS listener over HTTPS and mutual
//! TLS (a test CA made here with rcgen), a key store's credential and keys made with
//! `ekms xks`, and AWS's own compliance client (`tests/vendor/aws-kms-xksproxy-test-client`)
//! run against it: all of its tests, its key-usage tests (`-a`) and its negative mTLS tests.
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
    let summary = report
        .lines()
        .rev()
        .find(|l| l.contains("tests PASSED") || l.contains("tests FAILED"))
        .unwrap_or_default()
        .to_owned();
    (summary, report)
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
