//! The XKS proxy API side of the bench: `xks-encrypt` and `xks-decrypt` as AWS KMS sends them
//! to an external key store — HTTPS (rustls on aws-lc-rs, optional mutual TLS), HTTP/1.1
//! keep-alive, each request signed with SigV4 for service `kms-xks-proxy`, a 32-byte plaintext
//! (a data key) with a 20-byte AAD. The store's credential and key are given, or made once with
//! the bench's KMS credentials (`EkmsCreateXksCredential`, `EkmsCreateXksKey`).

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::SystemTime,
};

use anyhow::{Context as _, anyhow, bail};
use aws_credential_types::Credentials;
use aws_sigv4::{
    http_request::{SignableBody, SignableRequest, SigningSettings, sign},
    sign::v4,
};
use base64::Engine as _;
use bytes::Bytes;
use http_body_util::Full;
use rustls::{ClientConfig, RootCertStore, crypto::aws_lc_rs};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject as _};
use tokio_rustls::TlsConnector;

use crate::{Sender, Target, fixture};

/// The XKS operations the bench knows.
pub(crate) const XKS_OPS: &[&str] = &["xks-encrypt", "xks-decrypt"];

/// The SigV4 service name of the XKS proxy API (XKS Proxy API spec v1.0, "Authentication").
const SERVICE: &str = "kms-xks-proxy";

/// The plaintext of every XKS encrypt: 32 bytes, the size of the data key AWS KMS protects.
const PLAINTEXT: [u8; 32] = [0x42; 32];

/// The AAD of every XKS call: 20 bytes.
const AAD: [u8; 20] = [0x61; 20];

/// The `requestMetadata` principal and key ARNs (illustrative; the enclave only checks them
/// against a store's access rule, which the bench's store has none of).
const PRINCIPAL_ARN: &str = "arn:aws:iam::111122223333:user/ekms-bench";
const KMS_KEY_ARN: &str =
    "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab";

/// The XKS command-line options.
#[derive(clap::Args, Debug, Default)]
#[expect(
    clippy::struct_field_names,
    reason = "the fields are the --xks-* flags, named apart from the KMS ones they sit beside"
)]
pub(crate) struct XksArgs {
    /// XKS proxy endpoint (`https://HOST:PORT`, the appliance's `--xks-listen`).
    #[arg(long)]
    xks_endpoint: Option<String>,
    /// The key store's URI prefix; with no --xks-access-key-id, a new store `ekms-bench-PID`
    /// is made.
    #[arg(long)]
    xks_prefix: Option<String>,
    /// The store's XKS access key id; absent: a credential is made with the KMS credentials.
    #[arg(long, requires = "xks_secret")]
    xks_access_key_id: Option<String>,
    /// The store's XKS secret access key.
    #[arg(long, requires = "xks_access_key_id")]
    xks_secret: Option<String>,
    /// The XKS key id; absent: a key is made in the store with the KMS credentials.
    #[arg(long)]
    xks_key_id: Option<String>,
    /// CA certificate(s) the XKS server certificate must chain to (PEM).
    #[arg(long)]
    xks_ca: Option<PathBuf>,
    /// Client certificate chain for mutual TLS (PEM, leaf first).
    #[arg(long, requires = "xks_client_key")]
    xks_client_cert: Option<PathBuf>,
    /// Client private key for mutual TLS (PEM).
    #[arg(long, requires = "xks_client_cert")]
    xks_client_key: Option<PathBuf>,
}

impl XksArgs {
    /// Whether the bench must make the store's credential or key with its KMS credentials.
    pub(crate) fn needs_kms(&self) -> bool {
        self.xks_access_key_id.is_none() || self.xks_key_id.is_none()
    }
}

/// Host and port of an `https://HOST:PORT[/]` endpoint, and the name TLS verifies.
fn parse_endpoint(endpoint: &str) -> anyhow::Result<(String, ServerName<'static>)> {
    let hostport = endpoint
        .strip_prefix("https://")
        .ok_or_else(|| anyhow!("--xks-endpoint must be https://HOST:PORT"))?
        .trim_end_matches('/');
    if hostport.is_empty() || hostport.contains('/') {
        bail!("--xks-endpoint must be https://HOST:PORT (no path: the prefix is --xks-prefix)");
    }
    let host = match hostport.strip_prefix('[') {
        Some(v6) => v6.split_once(']').map(|(h, _)| h),
        None => Some(hostport.rsplit_once(':').map_or(hostport, |(h, _)| h)),
    }
    .filter(|h| !h.is_empty())
    .ok_or_else(|| anyhow!("no host in --xks-endpoint {endpoint}"))?;
    let name = ServerName::try_from(host.to_owned())
        .map_err(|e| anyhow!("--xks-endpoint host {host:?}: {e}"))?;
    Ok((hostport.to_owned(), name))
}

/// The path of operation `op` (`encrypt`, `decrypt`) on key `key_id` of store `prefix`.
fn key_path(prefix: &str, key_id: &str, op: &str) -> String {
    format!("/{prefix}/kms/xks/v1/keys/{key_id}/{op}")
}

/// A UUID-shaped `kmsRequestId`, distinct for each request of a run (AWS KMS sends a fresh one).
fn request_id(n: u64) -> String {
    format!(
        "{:08x}-0000-4000-8000-{:012x}",
        std::process::id(),
        n & 0xffff_ffff_ffff
    )
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn metadata(operation: &str, n: u64) -> serde_json::Value {
    serde_json::json!({
        "awsPrincipalArn": PRINCIPAL_ARN,
        "kmsKeyArn": KMS_KEY_ARN,
        "kmsOperation": operation,
        "kmsRequestId": request_id(n),
    })
}

/// An encrypt body, as AWS KMS sends it for `Encrypt` of a data key.
fn encrypt_body(n: u64) -> String {
    serde_json::json!({
        "requestMetadata": metadata("Encrypt", n),
        "plaintext": b64(&PLAINTEXT),
        "additionalAuthenticatedData": b64(&AAD),
        "encryptionAlgorithm": "AES_GCM",
    })
    .to_string()
}

/// What a decrypt needs of an encrypt's answer (each field base64, as sent back).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Sealed {
    ciphertext: String,
    iv: String,
    tag: String,
    metadata: Option<String>,
}

impl Sealed {
    /// The fields of an XKS encrypt's answer.
    fn from_answer(answer: &[u8]) -> anyhow::Result<Self> {
        let v: serde_json::Value =
            serde_json::from_slice(answer).context("the XKS encrypt answer is not JSON")?;
        let field = |k: &str| {
            v.get(k)
                .and_then(serde_json::Value::as_str)
                .map(str::to_owned)
        };
        let need = |k: &str| field(k).ok_or_else(|| anyhow!("the XKS encrypt answer has no {k}"));
        Ok(Self {
            ciphertext: need("ciphertext")?,
            iv: need("initializationVector")?,
            tag: need("authenticationTag")?,
            metadata: field("ciphertextMetadata"),
        })
    }

    /// A decrypt body for this ciphertext, as AWS KMS sends it for `Decrypt`.
    fn decrypt_body(&self, n: u64) -> String {
        let mut v = serde_json::json!({
            "requestMetadata": metadata("Decrypt", n),
            "additionalAuthenticatedData": b64(&AAD),
            "encryptionAlgorithm": "AES_GCM",
            "ciphertext": self.ciphertext,
            "initializationVector": self.iv,
            "authenticationTag": self.tag,
        });
        if let (Some(m), Some(o)) = (&self.metadata, v.as_object_mut()) {
            o.insert("ciphertextMetadata".into(), m.clone().into());
        }
        v.to_string()
    }
}

/// The TLS client configuration: trust `ca_pem`, offer `http/1.1`, and with a client
/// certificate and key authenticate for mutual TLS.
fn client_config(
    ca_pem: &[u8],
    client: Option<(&[u8], &[u8])>,
) -> anyhow::Result<Arc<ClientConfig>> {
    let mut roots = RootCertStore::empty();
    for ca in CertificateDer::pem_slice_iter(ca_pem) {
        roots.add(ca.context("--xks-ca")?).context("--xks-ca")?;
    }
    if roots.is_empty() {
        bail!("--xks-ca holds no CERTIFICATE");
    }
    let builder = ClientConfig::builder_with_provider(Arc::new(aws_lc_rs::default_provider()))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots);
    let mut config = match client {
        Some((cert, key)) => {
            let chain = CertificateDer::pem_slice_iter(cert)
                .collect::<Result<Vec<_>, _>>()
                .context("--xks-client-cert")?;
            let key = PrivateKeyDer::from_pem_slice(key).context("--xks-client-key")?;
            builder.with_client_auth_cert(chain, key)?
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

fn read(path: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading {}", path.display()))
}

/// An XKS proxy to measure: where, how to reach it, and the store's credential and key.
pub(crate) struct XksTarget {
    hostport: String,
    server_name: ServerName<'static>,
    tls: TlsConnector,
    region: String,
    prefix: String,
    key_id: String,
    creds: Credentials,
    /// The ciphertext every `xks-decrypt` decrypts.
    sealed: Option<Sealed>,
}

impl XksTarget {
    /// Connects to the proxy and checks one encrypt (and one decrypt when `ops` wants it);
    /// makes the store's credential and key with `kms` when not given.
    pub(crate) async fn setup(
        args: &XksArgs,
        region: &str,
        kms: Option<&Target>,
        ops: &[String],
    ) -> anyhow::Result<Self> {
        let endpoint = args
            .xks_endpoint
            .as_deref()
            .ok_or_else(|| anyhow!("XKS operations need --xks-endpoint https://HOST:PORT"))?;
        let (hostport, server_name) = parse_endpoint(endpoint)?;
        let ca = args
            .xks_ca
            .as_deref()
            .ok_or_else(|| anyhow!("XKS operations need --xks-ca CA.pem"))?;
        let client = match (&args.xks_client_cert, &args.xks_client_key) {
            (Some(c), Some(k)) => Some((read(c)?, read(k)?)),
            _ => None,
        };
        let tls = client_config(
            &read(ca)?,
            client.as_ref().map(|(c, k)| (c.as_slice(), k.as_slice())),
        )?;
        let prefix = args
            .xks_prefix
            .clone()
            .unwrap_or_else(|| format!("ekms-bench-{}", std::process::id()));
        let kms = || kms.ok_or_else(|| anyhow!("making an XKS store needs KMS credentials"));
        let creds = match (&args.xks_access_key_id, &args.xks_secret) {
            (Some(a), Some(s)) => Credentials::new(a, s, None, None, "ekms-bench"),
            _ => fixture::xks_credential(kms()?, &prefix).await?,
        };
        let key_id = match &args.xks_key_id {
            Some(k) => k.clone(),
            None => fixture::xks_key(kms()?, &prefix).await?,
        };
        let mut t = Self {
            hostport,
            server_name,
            tls: TlsConnector::from(tls),
            region: region.to_owned(),
            prefix,
            key_id,
            creds,
            sealed: None,
        };
        let mut s = t.connect().await?;
        let (status, answer) = t.call(&mut s, "xks-encrypt", 0).await.context(
            "the first XKS request failed (a proxy with mutual TLS closes the connection of a \
             client without --xks-client-cert/--xks-client-key)",
        )?;
        if status != 200 {
            bail!(
                "XKS encrypt failed: HTTP {status}: {}",
                String::from_utf8_lossy(&answer)
            );
        }
        let sealed = Sealed::from_answer(&answer)?;
        if ops.iter().any(|o| o == "xks-decrypt") {
            let (status, answer) =
                crate::send(&mut s, t.request("decrypt", sealed.decrypt_body(0))?).await?;
            if status != 200 {
                bail!(
                    "XKS decrypt failed: HTTP {status}: {}",
                    String::from_utf8_lossy(&answer)
                );
            }
        }
        t.sealed = Some(sealed);
        Ok(t)
    }

    /// The store and key, for the header line.
    pub(crate) fn describe(&self) -> String {
        format!(
            "xks https://{}/{}  key {}",
            self.hostport, self.prefix, self.key_id
        )
    }

    /// A new keep-alive HTTPS connection.
    pub(crate) async fn connect(&self) -> anyhow::Result<Sender> {
        let tcp = tokio::net::TcpStream::connect(&self.hostport).await?;
        tcp.set_nodelay(true)?;
        let tls = self.tls.connect(self.server_name.clone(), tcp).await?;
        let (sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls)).await?;
        tokio::spawn(conn);
        Ok(sender)
    }

    /// Sends request `n` of operation `op` (`xks-encrypt`, `xks-decrypt`), redialling a closed
    /// connection; the status and body of the answer.
    pub(crate) async fn call(
        &self,
        s: &mut Sender,
        op: &str,
        n: u64,
    ) -> anyhow::Result<(u16, Bytes)> {
        if s.is_closed() || s.ready().await.is_err() {
            *s = self.connect().await?;
        }
        let req = match (op, &self.sealed) {
            ("xks-decrypt", Some(sealed)) => self.request("decrypt", sealed.decrypt_body(n))?,
            ("xks-decrypt", None) => bail!("no ciphertext to decrypt"),
            _ => self.request("encrypt", encrypt_body(n))?,
        };
        crate::send(s, req).await
    }

    /// A POST of `body` to the key's `op` path, signed with SigV4 for `kms-xks-proxy`.
    fn request(&self, op: &str, body: String) -> anyhow::Result<http::Request<Full<Bytes>>> {
        let path = key_path(&self.prefix, &self.key_id, op);
        let url = format!("https://{}{path}", self.hostport);
        sign_request(&self.creds, &self.region, &self.hostport, &url, &path, body)
    }
}

/// `body` POSTed to `path` on `host`, with SigV4 (service `kms-xks-proxy`) by `aws-sigv4`.
fn sign_request(
    creds: &Credentials,
    region: &str,
    host: &str,
    url: &str,
    path: &str,
    body: String,
) -> anyhow::Result<http::Request<Full<Bytes>>> {
    let identity = creds.clone().into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name(SERVICE)
        .time(SystemTime::now())
        .settings(SigningSettings::default())
        .build()?
        .into();
    let headers = [("host", host), ("content-type", "application/json")];
    let signable = SignableRequest::new(
        "POST",
        url,
        headers.iter().copied(),
        SignableBody::Bytes(body.as_bytes()),
    )?;
    let (instructions, _) = sign(signable, &params)?.into_parts();
    let mut req = http::Request::builder().method("POST").uri(path);
    for (k, v) in headers {
        req = req.header(k, v);
    }
    let mut req = req.body(Full::new(Bytes::from(body)))?;
    instructions.apply_to_request_http1x(&mut req);
    Ok(req)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_https_host_and_port() {
        let (hp, name) = parse_endpoint("https://localhost:8443/").unwrap();
        assert_eq!(hp, "localhost:8443");
        assert_eq!(name, ServerName::try_from("localhost").unwrap());
        let (hp, name) = parse_endpoint("https://127.0.0.1:8443").unwrap();
        assert_eq!(hp, "127.0.0.1:8443");
        assert!(matches!(name, ServerName::IpAddress(_)));
        let (_, name) = parse_endpoint("https://[::1]:8443").unwrap();
        assert!(matches!(name, ServerName::IpAddress(_)));
        for bad in [
            "http://localhost:8443",
            "localhost:8443",
            "https://",
            "https://localhost:8443/prefix",
            "https://:8443",
        ] {
            assert!(parse_endpoint(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn encrypt_bodies_carry_what_aws_kms_sends() {
        let v: serde_json::Value = serde_json::from_str(&encrypt_body(7)).unwrap();
        let plaintext = base64::engine::general_purpose::STANDARD
            .decode(v["plaintext"].as_str().unwrap())
            .unwrap();
        assert_eq!(plaintext.len(), 32);
        let aad = base64::engine::general_purpose::STANDARD
            .decode(v["additionalAuthenticatedData"].as_str().unwrap())
            .unwrap();
        assert_eq!(aad.len(), 20);
        assert_eq!(v["encryptionAlgorithm"], "AES_GCM");
        let m = &v["requestMetadata"];
        assert_eq!(m["kmsOperation"], "Encrypt");
        assert_eq!(m["awsPrincipalArn"], PRINCIPAL_ARN);
        assert_eq!(m["kmsKeyArn"], KMS_KEY_ARN);
        assert_ne!(
            m["kmsRequestId"],
            serde_json::from_str::<serde_json::Value>(&encrypt_body(8)).unwrap()["requestMetadata"]
                ["kmsRequestId"]
        );
        assert_eq!(m["kmsRequestId"].as_str().unwrap().len(), 36);
    }

    #[test]
    fn decrypt_bodies_send_back_the_encrypt_answer() {
        let answer = br#"{"authenticationTag":"dGFn","ciphertext":"Y3Q=","ciphertextMetadata":"AQAAAAE=","initializationVector":"aXY="}"#;
        let sealed = Sealed::from_answer(answer).unwrap();
        let v: serde_json::Value = serde_json::from_str(&sealed.decrypt_body(1)).unwrap();
        assert_eq!(v["ciphertext"], "Y3Q=");
        assert_eq!(v["initializationVector"], "aXY=");
        assert_eq!(v["authenticationTag"], "dGFn");
        assert_eq!(v["ciphertextMetadata"], "AQAAAAE=");
        assert_eq!(v["additionalAuthenticatedData"], b64(&AAD));
        assert_eq!(v["requestMetadata"]["kmsOperation"], "Decrypt");
        // No metadata in the answer: none sent back.
        let sealed = Sealed::from_answer(
            br#"{"authenticationTag":"a","ciphertext":"b","initializationVector":"c"}"#,
        )
        .unwrap();
        let v: serde_json::Value = serde_json::from_str(&sealed.decrypt_body(1)).unwrap();
        assert!(v.get("ciphertextMetadata").is_none());
        assert!(Sealed::from_answer(br#"{"ciphertext":"b"}"#).is_err());
        assert!(Sealed::from_answer(b"not json").is_err());
    }

    #[test]
    fn requests_are_signed_for_the_xks_service_on_the_key_path() {
        let creds = Credentials::new("AKIAXKS", "s".repeat(48), None, None, "t");
        let path = key_path("a/b", "k1", "encrypt");
        assert_eq!(path, "/a/b/kms/xks/v1/keys/k1/encrypt");
        let req = sign_request(
            &creds,
            "us-east-1",
            "localhost:8443",
            &format!("https://localhost:8443{path}"),
            &path,
            encrypt_body(1),
        )
        .unwrap();
        assert_eq!(req.uri().path(), path);
        assert_eq!(req.method(), "POST");
        let auth = req.headers()["authorization"].to_str().unwrap();
        assert!(
            auth.starts_with("AWS4-HMAC-SHA256 Credential=AKIAXKS/"),
            "{auth}"
        );
        assert!(
            auth.contains("/us-east-1/kms-xks-proxy/aws4_request"),
            "{auth}"
        );
        assert!(
            auth.contains("SignedHeaders=content-type;host;x-amz-date"),
            "{auth}"
        );
        assert_eq!(req.headers()["host"], "localhost:8443");
    }

    #[test]
    fn client_config_needs_a_ca() {
        assert!(client_config(b"", None).is_err());
        assert!(client_config(b"not pem", None).is_err());
    }
}
