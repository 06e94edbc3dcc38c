//! Custodian keys: the P-384 key pair a custodian's shares are encrypted to (ECDH) and with which
//! the custodian signs what it submits to an enclave (ECDSA P-384/SHA-384, over messages with
//! their own label, never over anything ECDH sees). The private key lives in the custodian's PEM
//! file (PKCS#8); the public key travels as a small JSON file.

use std::fmt;

use aws_lc_rs::{
    agreement::{self, ECDH_P384},
    encoding::{AsDer, Pkcs8V1Der},
    rand::SystemRandom,
    signature::{
        ECDSA_P384_SHA384_FIXED, ECDSA_P384_SHA384_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _,
        UnparsedPublicKey,
    },
};
use base64::{Engine as _, engine::general_purpose::STANDARD};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::error::{CustodyError, Result};
use crate::seal::P384PublicKey;

/// Largest private-key PEM or public-key JSON accepted, checked before parsing.
pub const MAX_KEY_FILE_LEN: usize = 16 * 1024;
/// `kind` of a public key file.
const PUBLIC_KIND: &str = "ekms-custodian-public-key";
/// Version of the public key file.
const PUBLIC_VERSION: u8 = 1;
/// Curve name written in the public key file.
const CURVE: &str = "P-384";
const PEM_BEGIN: &str = "-----BEGIN PRIVATE KEY-----";
const PEM_END: &str = "-----END PRIVATE KEY-----";

/// Length of a custodian's signature: ECDSA P-384 in the fixed `r ‖ s` form (48 + 48 bytes).
pub const CUSTODIAN_SIGNATURE_LEN: usize = 96;

/// A custodian's private key. No `Clone`, no `Serialize`; `Debug` shows the fingerprint only.
/// aws-lc-rs frees (and cleanses) the key when it is dropped.
///
/// One P-384 scalar serves two uses: ECDH (shares sealed to the custodian) and ECDSA (the
/// custodian's signature on a submission). Custodians already hold and have distributed this key,
/// so signing with it needs no new ceremony and no new public key file. The two uses never meet
/// on the same bytes: ECDH output only feeds HKDF with an `ekms/v1/share-to-*` label, and a
/// signature covers a message that starts with its own label (`ekms/v2/custodian-submission`);
/// ECDSA and ECIES-style ECDH with one key are known to be jointly secure (Degabriele, Lehmann,
/// Paterson, Smart, Strefler, CT-RSA 2012).
pub struct CustodianKey {
    key: agreement::PrivateKey,
    signer: EcdsaKeyPair,
    public: CustodianPublicKey,
}

impl fmt::Debug for CustodianKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CustodianKey({})", self.public.fingerprint_hex())
    }
}

impl CustodianKey {
    /// Generates a fresh P-384 key from aws-lc-rs's RNG.
    pub fn generate() -> Result<Self> {
        let key = agreement::PrivateKey::generate(&ECDH_P384)?;
        let der: Pkcs8V1Der<'static> = key.as_der()?;
        Self::from_pkcs8_der(der.as_ref())
    }

    /// Imports a PKCS#8 (or RFC 5915) DER P-384 private key.
    pub fn from_pkcs8_der(der: &[u8]) -> Result<Self> {
        let key = agreement::PrivateKey::from_private_key_der(&ECDH_P384, der)
            .map_err(|_| CustodyError::InvalidPrivateKey)?;
        let signer = EcdsaKeyPair::from_private_key_der(&ECDSA_P384_SHA384_FIXED_SIGNING, der)
            .map_err(|_| CustodyError::InvalidPrivateKey)?;
        let public = CustodianPublicKey(
            P384PublicKey::of(&key).map_err(|_| CustodyError::InvalidPrivateKey)?,
        );
        // Both views of the one scalar must name the same public key.
        if signer.public_key().as_ref() != public.key().sec1().as_slice() {
            return Err(CustodyError::InvalidPrivateKey);
        }
        Ok(Self {
            key,
            signer,
            public,
        })
    }

    /// Exports the private key as PKCS#8 v1 DER.
    pub fn to_pkcs8_der(&self) -> Result<Zeroizing<Vec<u8>>> {
        let der: Pkcs8V1Der<'static> = self.key.as_der()?;
        Ok(Zeroizing::new(der.as_ref().to_vec()))
    }

    /// Imports a `-----BEGIN PRIVATE KEY-----` PEM (PKCS#8, what `openssl genpkey` writes).
    pub fn from_pem(pem: &str) -> Result<Self> {
        check_len(pem.len())?;
        let body = pem
            .trim()
            .strip_prefix(PEM_BEGIN)
            .and_then(|s| s.strip_suffix(PEM_END))
            .ok_or(CustodyError::InvalidPrivateKey)?;
        let b64: Zeroizing<String> =
            Zeroizing::new(body.chars().filter(|c| !c.is_ascii_whitespace()).collect());
        let der = Zeroizing::new(
            STANDARD
                .decode(b64.as_bytes())
                .map_err(|_| CustodyError::InvalidPrivateKey)?,
        );
        Self::from_pkcs8_der(&der)
    }

    /// Exports the private key as a PKCS#8 PEM with 64-column lines.
    pub fn to_pem(&self) -> Result<Zeroizing<String>> {
        let der = self.to_pkcs8_der()?;
        let b64 = Zeroizing::new(STANDARD.encode(der.as_slice()));
        let mut out = Zeroizing::new(String::with_capacity(b64.len() + 80));
        out.push_str(PEM_BEGIN);
        out.push('\n');
        for line in b64.as_bytes().chunks(64) {
            // base64 output is ASCII, so every chunk is valid UTF-8.
            out.push_str(std::str::from_utf8(line).map_err(|_| CustodyError::Crypto)?);
            out.push('\n');
        }
        out.push_str(PEM_END);
        out.push('\n');
        Ok(out)
    }

    /// This key's public half.
    #[must_use]
    pub fn public_key(&self) -> &CustodianPublicKey {
        &self.public
    }

    /// The aws-lc-rs key, for [`crate::open_with`].
    #[must_use]
    pub fn agreement_key(&self) -> &agreement::PrivateKey {
        &self.key
    }

    /// Signs `message` (ECDSA P-384/SHA-384, fixed `r ‖ s`). Crate-private: the only messages a
    /// custodian key signs are built here, each starting with its own label.
    pub(crate) fn sign(&self, message: &[u8]) -> Result<[u8; CUSTODIAN_SIGNATURE_LEN]> {
        let sig = self.signer.sign(&SystemRandom::new(), message)?;
        sig.as_ref().try_into().map_err(|_| CustodyError::Crypto)
    }
}

/// A custodian's public key, named by its fingerprint.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct CustodianPublicKey(P384PublicKey);

/// The public key file, as JSON.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct PublicKeyFile {
    kind: String,
    version: u8,
    curve: String,
    /// Uncompressed SEC1 point, lower-case hex.
    sec1: String,
    /// First 16 bytes of SHA-256(sec1), hex; checked on import.
    fingerprint: String,
}

impl CustodianPublicKey {
    /// Wraps a validated P-384 key.
    #[must_use]
    pub fn new(key: P384PublicKey) -> Self {
        Self(key)
    }

    /// The key, for [`crate::seal_to`].
    #[must_use]
    pub fn key(&self) -> &P384PublicKey {
        &self.0
    }

    /// SHA-256(SEC1)[..16]: names the custodian in share files.
    #[must_use]
    pub fn fingerprint(&self) -> [u8; 16] {
        self.0.fingerprint()
    }

    /// The fingerprint in hex.
    #[must_use]
    pub fn fingerprint_hex(&self) -> String {
        hex::encode(self.fingerprint())
    }

    /// Checks this custodian's signature over `message` ([`CustodyError::BadSignature`] if not).
    pub(crate) fn verify(&self, message: &[u8], signature: &[u8]) -> Result<()> {
        UnparsedPublicKey::new(&ECDSA_P384_SHA384_FIXED, self.0.sec1().as_slice())
            .verify(message, signature)
            .map_err(|_| CustodyError::BadSignature)
    }

    /// The public key file (pretty JSON, trailing newline).
    pub fn to_json(&self) -> Result<String> {
        let file = PublicKeyFile {
            kind: PUBLIC_KIND.to_owned(),
            version: PUBLIC_VERSION,
            curve: CURVE.to_owned(),
            sec1: hex::encode(self.0.sec1()),
            fingerprint: self.fingerprint_hex(),
        };
        let mut s = serde_json::to_string_pretty(&file)
            .map_err(|_| CustodyError::Malformed("public key file"))?;
        s.push('\n');
        Ok(s)
    }

    /// Parses a public key file; refuses unknown fields, another curve, and a fingerprint that
    /// does not match the key (a typo or a swapped file).
    pub fn from_json(text: &str) -> Result<Self> {
        check_len(text.len())?;
        let file: PublicKeyFile =
            serde_json::from_str(text).map_err(|_| CustodyError::Malformed("public key file"))?;
        if file.kind != PUBLIC_KIND {
            return Err(CustodyError::Malformed("public key file kind"));
        }
        if file.version != PUBLIC_VERSION {
            return Err(CustodyError::UnsupportedVersion(file.version));
        }
        if file.curve != CURVE {
            return Err(CustodyError::Malformed("public key file curve"));
        }
        let sec1 = hex::decode(&file.sec1).map_err(|_| CustodyError::InvalidPublicKey)?;
        let key = Self(P384PublicKey::from_sec1(&sec1)?);
        if !file
            .fingerprint
            .eq_ignore_ascii_case(&key.fingerprint_hex())
        {
            return Err(CustodyError::Malformed("public key file fingerprint"));
        }
        Ok(key)
    }
}

fn check_len(len: usize) -> Result<()> {
    if len > MAX_KEY_FILE_LEN {
        return Err(CustodyError::TooLarge {
            len,
            limit: MAX_KEY_FILE_LEN,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_key_der_and_pem_round_trip() {
        let k = CustodianKey::generate().unwrap();
        let der = k.to_pkcs8_der().unwrap();
        let k2 = CustodianKey::from_pkcs8_der(&der).unwrap();
        assert_eq!(k.public_key(), k2.public_key());
        let pem = k.to_pem().unwrap();
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----\n"));
        assert!(pem.lines().all(|l| l.len() <= 64));
        let k3 = CustodianKey::from_pem(&pem).unwrap();
        assert_eq!(k.public_key(), k3.public_key());
        assert!(!format!("{k:?}").contains(&hex::encode(&der[..])));
    }

    #[test]
    fn openssl_style_pem_accepted() {
        // `openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-384` writes PKCS#8 like ours,
        // possibly with CRLF line ends.
        let k = CustodianKey::generate().unwrap();
        let crlf = k.to_pem().unwrap().replace('\n', "\r\n");
        assert_eq!(
            CustodianKey::from_pem(&crlf).unwrap().public_key(),
            k.public_key()
        );
    }

    #[test]
    fn bad_private_keys_refused() {
        let bad = |r: Result<CustodianKey>| matches!(r, Err(CustodyError::InvalidPrivateKey));
        assert!(bad(CustodianKey::from_pkcs8_der(b"not der")));
        assert!(bad(CustodianKey::from_pem("garbage")));
        assert!(bad(CustodianKey::from_pem(
            "-----BEGIN PRIVATE KEY-----\n!!!\n-----END PRIVATE KEY-----"
        )));
        // A P-256 PKCS#8 key is refused.
        let p256 = agreement::PrivateKey::generate(&agreement::ECDH_P256).unwrap();
        let der: Pkcs8V1Der<'static> = p256.as_der().unwrap();
        assert!(bad(CustodianKey::from_pkcs8_der(der.as_ref())));
        assert!(matches!(
            CustodianKey::from_pem(&"A".repeat(MAX_KEY_FILE_LEN + 1)),
            Err(CustodyError::TooLarge { .. })
        ));
    }

    #[test]
    fn signs_with_the_same_key_and_verifies_only_its_own_message() {
        let k = CustodianKey::generate().unwrap();
        let sig = k.sign(b"ekms/test message").unwrap();
        k.public_key().verify(b"ekms/test message", &sig).unwrap();
        assert!(matches!(
            k.public_key().verify(b"ekms/test messagf", &sig),
            Err(CustodyError::BadSignature)
        ));
        let other = CustodianKey::generate().unwrap();
        assert!(matches!(
            other.public_key().verify(b"ekms/test message", &sig),
            Err(CustodyError::BadSignature)
        ));
        // A key re-imported from its PEM signs as the same custodian.
        let again = CustodianKey::from_pem(&k.to_pem().unwrap()).unwrap();
        let sig = again.sign(b"m").unwrap();
        k.public_key().verify(b"m", &sig).unwrap();
        assert!(k.public_key().verify(b"m", &sig[..95]).is_err());
    }

    #[test]
    fn public_key_file_round_trip() {
        let k = CustodianKey::generate().unwrap();
        let json = k.public_key().to_json().unwrap();
        assert!(json.contains(&k.public_key().fingerprint_hex()));
        assert_eq!(
            &CustodianPublicKey::from_json(&json).unwrap(),
            k.public_key()
        );
    }

    #[test]
    fn bad_public_key_files_refused() {
        let k = CustodianKey::generate().unwrap();
        let good: serde_json::Value =
            serde_json::from_str(&k.public_key().to_json().unwrap()).unwrap();
        let with = |field: &str, v: serde_json::Value| {
            let mut j = good.clone();
            j[field] = v;
            CustodianPublicKey::from_json(&j.to_string())
        };
        assert!(matches!(
            with("kind", "x".into()),
            Err(CustodyError::Malformed(_))
        ));
        assert!(matches!(
            with("curve", "P-256".into()),
            Err(CustodyError::Malformed(_))
        ));
        assert!(matches!(
            with("version", 2.into()),
            Err(CustodyError::UnsupportedVersion(2))
        ));
        assert!(matches!(
            with("sec1", "zz".into()),
            Err(CustodyError::InvalidPublicKey)
        ));
        assert!(matches!(
            with("fingerprint", "00".into()),
            Err(CustodyError::Malformed(_))
        ));
        assert!(matches!(
            with("extra", 1.into()),
            Err(CustodyError::Malformed(_))
        ));
        let text = good.to_string();
        assert!(matches!(
            CustodianPublicKey::from_json(&format!("{text} {{}}")),
            Err(CustodyError::Malformed(_))
        ));
        let dup = text.replacen('{', "{\"version\":1,", 1);
        assert!(matches!(
            CustodianPublicKey::from_json(&dup),
            Err(CustodyError::Malformed(_))
        ));
        assert!(matches!(
            CustodianPublicKey::from_json(&" ".repeat(MAX_KEY_FILE_LEN + 1)),
            Err(CustodyError::TooLarge { .. })
        ));
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut buf = [0u8; 256];
        for i in 0..2000usize {
            aws_lc_rs::rand::fill(&mut buf).unwrap();
            let text = String::from_utf8_lossy(&buf[..i % buf.len()]);
            assert!(CustodianPublicKey::from_json(&text).is_err());
            assert!(CustodianKey::from_pem(&text).is_err());
            assert!(CustodianKey::from_pkcs8_der(&buf[..i % buf.len()]).is_err());
        }
    }
}
