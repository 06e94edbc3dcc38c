//! TLS for the XKS proxy listener: rustls on the aws-lc-rs provider, TLS 1.2 and 1.3 with AEAD
//! suites only, HTTP/1.1, and optional mutual TLS against an operator's client CA. Every refused
//! client certificate ends the handshake with the alert `handshake_failure`, which AWS's XKS
//! compliance client expects (`aws-kms-xksproxy-test-client`, `test_negative_mtls`).
//!
//! TLS here authenticates the appliance to AWS KMS and (with mTLS) keeps other callers out
//! early; it never widens access: the enclave verifies every request's SigV4 signature.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use rustls::{
    DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig, SignatureScheme,
    client::danger::HandshakeSignatureValid,
    crypto::{CryptoProvider, aws_lc_rs},
    server::{
        WebPkiClientVerifier,
        danger::{ClientCertVerified, ClientCertVerifier},
    },
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, UnixTime, pem::PemObject as _};
use tokio::{net::TcpStream, sync::Semaphore};
use tokio_rustls::{TlsAcceptor, server::TlsStream};

use crate::HostError;

/// Handshakes in progress at once; further connections wait for a slot (within the timeout).
const MAX_HANDSHAKES: usize = 256;

/// The files of the XKS listener's TLS setup (PEM).
#[derive(Debug, Clone)]
pub struct XksTlsFiles {
    /// The server certificate chain, leaf first.
    pub cert: PathBuf,
    /// The server's private key (PKCS #8, PKCS #1 or SEC1).
    pub key: PathBuf,
    /// With mTLS: the CA certificates a client certificate must chain to.
    pub client_ca: Option<PathBuf>,
}

/// The cipher suites offered, named so a review sees them: all AEAD with forward secrecy.
/// TLS 1.3: AES-128-GCM, AES-256-GCM, ChaCha20-Poly1305. TLS 1.2: ECDHE with ECDSA or RSA
/// certificates, each with AES-128-GCM, AES-256-GCM or ChaCha20-Poly1305.
fn provider() -> Arc<CryptoProvider> {
    use aws_lc_rs::cipher_suite as s;
    Arc::new(CryptoProvider {
        cipher_suites: vec![
            s::TLS13_AES_256_GCM_SHA384,
            s::TLS13_AES_128_GCM_SHA256,
            s::TLS13_CHACHA20_POLY1305_SHA256,
            s::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
            s::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
            s::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
            s::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
            s::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
            s::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
        ],
        ..aws_lc_rs::default_provider()
    })
}

fn read(path: &Path) -> Result<Vec<u8>, HostError> {
    std::fs::read(path).map_err(|e| HostError::Tls(format!("reading {}: {e}", path.display())))
}

/// The server configuration from the PEM files.
pub fn load(files: &XksTlsFiles) -> Result<Arc<ServerConfig>, HostError> {
    let ca = files.client_ca.as_deref().map(read).transpose()?;
    server_config(&read(&files.cert)?, &read(&files.key)?, ca.as_deref())
}

fn certificates(pem: &[u8], what: &str) -> Result<Vec<CertificateDer<'static>>, HostError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| HostError::Tls(format!("{what}: {e}")))?;
    if certs.is_empty() {
        return Err(HostError::Tls(format!("{what}: no CERTIFICATE in the PEM")));
    }
    Ok(certs)
}

/// The server configuration: `cert_pem` (chain, leaf first), `key_pem`, and with
/// `client_ca_pem` mutual TLS that requires a client certificate chaining to one of its CAs.
pub fn server_config(
    cert_pem: &[u8],
    key_pem: &[u8],
    client_ca_pem: Option<&[u8]>,
) -> Result<Arc<ServerConfig>, HostError> {
    let chain = certificates(cert_pem, "server certificate")?;
    let key = PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|e| HostError::Tls(format!("server key: {e}")))?;
    let provider = provider();
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| HostError::Tls(e.to_string()))?;
    let builder = match client_ca_pem {
        Some(pem) => {
            let mut roots = RootCertStore::empty();
            for ca in certificates(pem, "client CA")? {
                roots
                    .add(ca)
                    .map_err(|e| HostError::Tls(format!("client CA: {e}")))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| HostError::Tls(format!("client CA: {e}")))?;
            builder.with_client_cert_verifier(Arc::new(HandshakeFailureOnRefusal(verifier)))
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(chain, key)
        .map_err(|e| HostError::Tls(format!("server certificate and key: {e}")))?;
    // AWS KMS speaks HTTP/1.1 to an XKS proxy; a client that offers ALPN gets that or nothing.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A client-certificate verifier that refuses what `0` refuses, always with the alert
/// `handshake_failure`. rustls derives the alert from the refusal: `InvalidCertificate(..)`
/// becomes `bad_certificate`, `unknown_ca`, `certificate_expired`, …, a bad signature
/// `decrypt_error`, and any other error `handshake_failure` (rustls `CommonState::
/// send_cert_verify_error_alert`). So each refusal is logged here and returned as
/// `Error::General`.
///
/// A client that sends no certificate at all never reaches a verifier: rustls answers it with
/// `certificate_required` (RFC 8446 §4.4.2.4), which it does not let a verifier change.
#[derive(Debug)]
struct HandshakeFailureOnRefusal(Arc<dyn ClientCertVerifier>);

fn refused(what: &str, e: &rustls::Error) -> rustls::Error {
    tracing::info!(error = %e, "XKS mTLS: {what} refused");
    rustls::Error::General(format!("{what} refused"))
}

impl ClientCertVerifier for HandshakeFailureOnRefusal {
    fn offer_client_auth(&self) -> bool {
        self.0.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.0.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.0.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.0
            .verify_client_cert(end_entity, intermediates, now)
            .map_err(|e| refused("client certificate", &e))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0
            .verify_tls12_signature(message, cert, dss)
            .map_err(|e| refused("client signature", &e))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0
            .verify_tls13_signature(message, cert, dss)
            .map_err(|e| refused("client signature", &e))
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// TLS for the edge's accept loop: each connection's handshake runs in its own task, within
/// a time limit (the edge's header timeout; waiting for one of the [`MAX_HANDSHAKES`] slots
/// included), so a slow or stalled client delays nobody and holds its connection slot for a
/// bounded time.
#[derive(Clone)]
pub struct TlsTransport {
    acceptor: TlsAcceptor,
    slots: Arc<Semaphore>,
    timeout: Duration,
}

impl std::fmt::Debug for TlsTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsTransport").finish_non_exhaustive()
    }
}

impl TlsTransport {
    /// Serves TLS with `config`; a handshake that takes longer than `timeout` is dropped.
    #[must_use]
    pub fn new(config: Arc<ServerConfig>, timeout: Duration) -> Self {
        Self {
            acceptor: TlsAcceptor::from(config),
            slots: Arc::new(Semaphore::new(MAX_HANDSHAKES)),
            timeout,
        }
    }
}

impl crate::edge::Transport for TlsTransport {
    type Io = TlsStream<TcpStream>;

    async fn handshake(&self, tcp: TcpStream) -> std::io::Result<Self::Io> {
        let handshake = async {
            let _slot = self
                .slots
                .acquire()
                .await
                .map_err(|_| std::io::Error::other("closed"))?;
            self.acceptor.accept(tcp).await
        };
        tokio::time::timeout(self.timeout, handshake)
            .await
            .map_err(|_| {
                std::io::Error::new(std::io::ErrorKind::TimedOut, "TLS handshake timed out")
            })?
    }
}
