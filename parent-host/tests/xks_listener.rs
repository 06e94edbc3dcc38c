//! The XKS listener over real sockets and the real TLS stack: HTTPS with and without mTLS, the
//! alert a refused client certificate gets (rustls client, and curl where it is installed),
//! and the answers the host gives without the enclave (404, 405, 400, and 500 when the enclave
//! cannot be reached).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)] // test code

use std::{net::SocketAddr, path::Path, sync::Arc};

use ekms_parent_host::{
    client::EnclaveClient,
    edge::{self, BodyBudget, DEFAULT_MAX_BODY_MEMORY, Edge, EdgeLimits},
    relay::Relay,
    store::SqliteStore,
    xks_http, xks_tls,
};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::{AlertDescription, ClientConfig, RootCertStore, pki_types::ServerName};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// A certificate and its key, PEM.
struct Pem {
    cert: String,
    key: String,
}

struct Ca {
    pem: String,
    issuer: Issuer<'static, KeyPair>,
}

fn ca(name: &str) -> Ca {
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name.push(DnType::CommonName, name);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let pem = p.self_signed(&key).unwrap().pem();
    Ca {
        pem,
        issuer: Issuer::new(p, key),
    }
}

fn leaf(names: &[&str], usage: ExtendedKeyUsagePurpose, expired: bool) -> CertificateParams {
    let mut p =
        CertificateParams::new(names.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>()).unwrap();
    p.distinguished_name.push(DnType::CommonName, names[0]);
    p.extended_key_usages = vec![usage];
    if expired {
        p.not_before = rcgen::date_time_ymd(2020, 1, 1);
        p.not_after = rcgen::date_time_ymd(2021, 1, 1);
    }
    p
}

fn issue(ca: &Ca, params: &CertificateParams) -> Pem {
    let key = KeyPair::generate().unwrap();
    Pem {
        cert: params.signed_by(&key, &ca.issuer).unwrap().pem(),
        key: key.serialize_pem(),
    }
}

fn self_signed(params: &CertificateParams) -> Pem {
    let key = KeyPair::generate().unwrap();
    Pem {
        cert: params.self_signed(&key).unwrap().pem(),
        key: key.serialize_pem(),
    }
}

/// The PKI of one test: the server's CA and certificate, the client CA the listener trusts,
/// and client certificates good and bad.
struct Pki {
    server_ca: Ca,
    server: Pem,
    client_ca: Ca,
    good: Pem,
    expired: Pem,
    self_signed: Pem,
    other_ca: Pem,
}

fn pki() -> Pki {
    let server_ca = ca("XKS test server CA");
    let server = issue(
        &server_ca,
        &leaf(&["localhost"], ExtendedKeyUsagePurpose::ServerAuth, false),
    );
    let client_ca = ca("XKS test client CA");
    let client = |expired| {
        leaf(
            &["xks-client.example"],
            ExtendedKeyUsagePurpose::ClientAuth,
            expired,
        )
    };
    let good = issue(&client_ca, &client(false));
    let expired = issue(&client_ca, &client(true));
    let self_signed = self_signed(&client(false));
    let other_ca = issue(&ca("Another CA"), &client(false));
    Pki {
        server_ca,
        server,
        client_ca,
        good,
        expired,
        self_signed,
        other_ca,
    }
}

/// A relay whose enclave is not running (its calls fail as an unreachable enclave does).
fn relay(dir: &Path) -> Arc<Relay> {
    let store =
        Arc::new(SqliteStore::open(&dir.join(ekms_parent_host::store::STORE_FILE)).unwrap());
    let enclave = Arc::new(EnclaveClient::new(
        ekms_wire::SocketAddress::Mock {
            dir: dir.join("run"),
            cid: 99,
            port: 5000,
        },
        1,
    ));
    Arc::new(Relay::new(store, enclave))
}

/// Starts the XKS listener on 127.0.0.1:0 (TLS with `config`, else plain HTTP).
async fn start(
    dir: &Path,
    config: Option<Arc<rustls::ServerConfig>>,
) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = tcp.local_addr().unwrap();
    let app = xks_http::router(relay(dir));
    let edge = Edge {
        limits: EdgeLimits::default(),
        shape: xks_http::edge_shape(),
        max_body: xks_http::MAX_XKS_BODY,
        budget: BodyBudget::new(DEFAULT_MAX_BODY_MEMORY),
        name: "xks",
    };
    let forever = std::future::pending();
    let task = match config {
        Some(c) => {
            let tls = xks_tls::TlsTransport::new(c, std::time::Duration::from_secs(10));
            tokio::spawn(edge::serve(tcp, tls, app, edge, forever))
        }
        None => tokio::spawn(edge::serve(tcp, edge::Plain, app, edge, forever)),
    };
    (addr, task)
}

fn client_config(pki: &Pki, client: Option<&Pem>, tls12: bool) -> Arc<ClientConfig> {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject as _};
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(pki.server_ca.pem.as_bytes()).unwrap())
        .unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let versions: &[&rustls::SupportedProtocolVersion] = if tls12 {
        &[&rustls::version::TLS12]
    } else {
        &[&rustls::version::TLS13]
    };
    let builder = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots);
    let mut config = match client {
        Some(c) => builder
            .with_client_auth_cert(
                vec![CertificateDer::from_pem_slice(c.cert.as_bytes()).unwrap()],
                PrivateKeyDer::from_pem_slice(c.key.as_bytes()).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

/// Sends one XKS request over TLS and returns the raw HTTP answer, or the TLS error.
async fn https(addr: SocketAddr, config: Arc<ClientConfig>) -> Result<String, rustls::Error> {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let connector = tokio_rustls::TlsConnector::from(config);
    let as_tls = |e: std::io::Error| {
        e.get_ref()
            .and_then(|i| i.downcast_ref::<rustls::Error>())
            .cloned()
            .unwrap_or_else(|| rustls::Error::General(e.to_string()))
    };
    let name = ServerName::try_from("localhost").unwrap();
    let mut tls = connector.connect(name, tcp).await.map_err(as_tls)?;
    // In TLS 1.3 the client's side of the handshake is over before the server has read the
    // client's certificate: its refusal arrives on the first read.
    let req = "POST /p/kms/xks/v1/health HTTP/1.1\r\nhost: localhost\r\ncontent-length: 2\r\n\
               connection: close\r\n\r\n{}";
    tls.write_all(req.as_bytes()).await.map_err(as_tls)?;
    let mut out = Vec::new();
    tls.read_to_end(&mut out).await.map_err(as_tls)?;
    Ok(String::from_utf8_lossy(&out).into_owned())
}

fn server_config(pki: &Pki, mtls: bool) -> Arc<rustls::ServerConfig> {
    xks_tls::server_config(
        pki.server.cert.as_bytes(),
        pki.server.key.as_bytes(),
        mtls.then_some(pki.client_ca.pem.as_bytes()),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn mtls_refuses_bad_client_certificates_with_handshake_failure() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki();
    let (addr, _server) = start(dir.path(), Some(server_config(&pki, true))).await;
    for tls12 in [false, true] {
        // A good client certificate gets through TLS to the relay (no enclave here: 500).
        let answer = https(addr, client_config(&pki, Some(&pki.good), tls12))
            .await
            .unwrap();
        assert!(answer.starts_with("HTTP/1.1 500"), "{answer}");
        assert!(answer.contains("\"errorName\":\"InternalException\""));
        for (what, cert) in [
            ("expired", &pki.expired),
            ("self-signed", &pki.self_signed),
            ("from another CA", &pki.other_ca),
        ] {
            let err = https(addr, client_config(&pki, Some(cert), tls12))
                .await
                .unwrap_err();
            assert_eq!(
                err,
                rustls::Error::AlertReceived(AlertDescription::HandshakeFailure),
                "{what} client certificate, TLS 1.{}",
                if tls12 { 2 } else { 3 }
            );
        }
        // No certificate: rustls itself refuses with certificate_required before any verifier
        // runs (RFC 8446 §4.4.2.4); the handshake fails all the same.
        let err = https(addr, client_config(&pki, None, tls12))
            .await
            .unwrap_err();
        assert_eq!(
            err,
            rustls::Error::AlertReceived(AlertDescription::CertificateRequired)
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn without_mtls_any_client_gets_through_tls() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki();
    let (addr, _server) = start(dir.path(), Some(server_config(&pki, false))).await;
    for tls12 in [false, true] {
        let answer = https(addr, client_config(&pki, None, tls12)).await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 500"), "{answer}");
    }
}

#[test]
fn unusable_tls_files_are_refused() {
    let pki = pki();
    let (cert, key) = (pki.server.cert.as_bytes(), pki.server.key.as_bytes());
    let err = |r: Result<_, ekms_parent_host::HostError>| r.unwrap_err().to_string();
    assert!(err(xks_tls::server_config(b"", key, None)).contains("no CERTIFICATE"));
    assert!(err(xks_tls::server_config(cert, b"", None)).contains("server key"));
    // A key that is not the certificate's.
    let other = KeyPair::generate().unwrap().serialize_pem();
    assert!(
        err(xks_tls::server_config(cert, other.as_bytes(), None))
            .contains("server certificate and key")
    );
    assert!(err(xks_tls::server_config(cert, key, Some(b"junk"))).contains("client CA"));
    let missing = xks_tls::XksTlsFiles {
        cert: "/nonexistent/cert.pem".into(),
        key: "/nonexistent/key.pem".into(),
        client_ca: None,
    };
    assert!(err(xks_tls::load(&missing)).contains("/nonexistent/cert.pem"));
}

/// What `curl -v` prints for a refused client certificate: AWS's XKS compliance client
/// (`test_negative_mtls`) looks for "TLS alert, handshake failure". Skipped without curl.
#[tokio::test(flavor = "multi_thread")]
async fn curl_reports_a_handshake_failure_alert() {
    if std::process::Command::new("curl")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("SKIPPED: curl is not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let pki = pki();
    let (addr, _server) = start(dir.path(), Some(server_config(&pki, true))).await;
    let write = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    let ca = write("server-ca.pem", &pki.server_ca.pem);
    let curl = |cert: &Pem, tls: &'static str| {
        let c = write("client.pem", &cert.cert);
        let k = write("client-key.pem", &cert.key);
        let url = format!("https://localhost:{}/p/kms/xks/v1/health", addr.port());
        let mut cmd = tokio::process::Command::new("curl");
        cmd.args(["-sv", "--max-time", "10", tls, "--cacert"])
            .arg(&ca)
            .arg("--cert")
            .arg(c)
            .arg("--key")
            .arg(k)
            .args(["-X", "POST", "-d", "{}", &url]);
        cmd
    };
    for tls in ["--tlsv1.2", "--tlsv1.3"] {
        // --tlsv1.2 is a minimum: pin 1.2 with --tls-max.
        for (what, cert) in [
            ("expired", &pki.expired),
            ("self-signed", &pki.self_signed),
            ("from another CA", &pki.other_ca),
        ] {
            let mut cmd = curl(cert, tls);
            if tls == "--tlsv1.2" {
                cmd.args(["--tls-max", "1.2"]);
            }
            let out = cmd.output().await.unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(!out.status.success(), "{what} {tls}: {stderr}");
            assert!(
                stderr.contains("TLS alert, handshake failure"),
                "{what} {tls}: {stderr}"
            );
        }
        let out = curl(&pki.good, tls).output().await.unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(stdout.contains("InternalException"), "{stdout}");
        // Without a certificate: refused (rustls's certificate_required; see xks_tls).
        let url = format!("https://localhost:{}/p/kms/xks/v1/health", addr.port());
        let mut cmd = tokio::process::Command::new("curl");
        cmd.args(["-sv", "--max-time", "10", tls, "--cacert"])
            .arg(&ca)
            .args(["-X", "POST", "-d", "{}", &url]);
        if tls == "--tlsv1.2" {
            cmd.args(["--tls-max", "1.2"]);
        }
        let out = cmd.output().await.unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "no certificate {tls}: {stderr}");
        assert!(out.stdout.is_empty(), "no certificate {tls}: {stderr}");
        for line in stderr.lines().filter(|l| l.contains("alert")) {
            eprintln!("no client certificate, {tls}: {line}");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_host_answers_what_needs_no_secret() {
    let dir = tempfile::tempdir().unwrap();
    let (addr, _server) = start(dir.path(), None).await;
    // Another shape of path: 404 InvalidUriPathException.
    for path in [
        "/",
        "/kms/xks/v1/health",
        "/p/kms/xks/v1/keys/k/sign",
        "/p//kms/xks/v1/health",
        "/p%20q/kms/xks/v1/health",
    ] {
        let (status, headers, body) = http(addr, "POST", path, b"{}").await;
        assert_eq!(status, 404, "{path}");
        assert!(
            headers.contains("content-type: application/json"),
            "{headers}"
        );
        assert!(
            body.contains("\"errorName\":\"InvalidUriPathException\""),
            "{body}"
        );
    }
    // Another method on an API path: 405 with Allow: POST.
    for method in ["GET", "PUT", "DELETE", "OPTIONS"] {
        let (status, headers, body) = http(addr, method, "/p/kms/xks/v1/health", b"").await;
        assert_eq!(status, 405, "{method}");
        assert!(headers.contains("allow: post"), "{headers}");
        assert!(body.contains("\"errorName\":\"UnsupportedOperationException\""));
    }
    // A body over 64 KiB: 400 ValidationException.
    let big = vec![b'x'; xks_http::MAX_XKS_BODY + 1];
    let (status, _, body) = http(addr, "POST", "/p/kms/xks/v1/keys/k/encrypt", &big).await;
    assert_eq!(status, 400);
    assert!(
        body.contains("\"errorName\":\"ValidationException\""),
        "{body}"
    );
    // The rest goes to the enclave, which is not running here: 500 InternalException.
    let at_limit = vec![b'x'; xks_http::MAX_XKS_BODY];
    let (status, _, body) = http(addr, "POST", "/a/b/kms/xks/v1/keys/k/decrypt", &at_limit).await;
    assert_eq!(status, 500);
    assert!(
        body.contains("\"errorName\":\"InternalException\""),
        "{body}"
    );
}

/// A minimal HTTP/1.1 client over a plain socket: (status, lower-cased head, body).
async fn http(addr: SocketAddr, method: &str, path: &str, body: &[u8]) -> (u16, String, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nhost: x\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).await.unwrap();
    // The server may answer (and close) before it read an oversized body.
    let _ = s.write_all(body).await;
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out).await;
    let text = String::from_utf8_lossy(&out).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, head.to_ascii_lowercase(), body.to_owned())
}
