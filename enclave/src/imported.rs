//! Imported key material (keys of origin `EXTERNAL`): the import token, which carries the
//! wrapping private key sealed by this enclave and bound to one key and one algorithm; the
//! unwrapping of the client's material (RSAES-OAEP, or RSA-OAEP of an AES key then AES key wrap
//! with padding, RFC 5649); the check of material against a key spec; and expiry by this
//! enclave's clock. The wrapping private key exists in plaintext only inside the enclave, in
//! zeroized memory, while one request runs; nothing of it is kept between requests.

use std::fmt;

use aws_lc_rs::{
    constant_time, digest,
    encoding::{AsDer as _, Pkcs8V1Der, PublicKeyX509Der},
    key_wrap::{AES_256, AesKek, KeyWrapPadded as _},
    rsa,
    signature::KeyPair as _,
};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::{
    EnclaveError,
    domain::Keyring,
    keyspec::{Curve, Family, Spec},
    material::Rotated,
    record::{self, KeyRecord, KeyState, Kind, SecretBytes},
};

/// How long an import token and its public key are valid (AWS: 24 hours).
pub const TOKEN_VALIDITY_MS: i64 = 24 * 3_600_000;

/// AWS's `WrappingAlgorithm` values this appliance accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum WrappingAlgorithm {
    /// `RSAES_OAEP_SHA_1`: the material itself, RSAES-OAEP with SHA-1 and MGF1-SHA-1.
    OaepSha1,
    /// `RSAES_OAEP_SHA_256`: the material itself, RSAES-OAEP with SHA-256 and MGF1-SHA-256.
    OaepSha256,
    /// `RSA_AES_KEY_WRAP_SHA_1`: an AES-256 key under RSAES-OAEP-SHA-1, then the material
    /// under AES-KWP (RFC 5649) with that key.
    AesKeyWrapSha1,
    /// `RSA_AES_KEY_WRAP_SHA_256`: as above with SHA-256.
    AesKeyWrapSha256,
}

impl WrappingAlgorithm {
    /// Parses AWS's name.
    #[must_use]
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "RSAES_OAEP_SHA_1" => Some(Self::OaepSha1),
            "RSAES_OAEP_SHA_256" => Some(Self::OaepSha256),
            "RSA_AES_KEY_WRAP_SHA_1" => Some(Self::AesKeyWrapSha1),
            "RSA_AES_KEY_WRAP_SHA_256" => Some(Self::AesKeyWrapSha256),
            _ => None,
        }
    }

    /// AWS's name.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::OaepSha1 => "RSAES_OAEP_SHA_1",
            Self::OaepSha256 => "RSAES_OAEP_SHA_256",
            Self::AesKeyWrapSha1 => "RSA_AES_KEY_WRAP_SHA_1",
            Self::AesKeyWrapSha256 => "RSA_AES_KEY_WRAP_SHA_256",
        }
    }

    fn oaep(self) -> &'static rsa::OaepAlgorithm {
        match self {
            Self::OaepSha1 | Self::AesKeyWrapSha1 => &rsa::OAEP_SHA1_MGF1SHA1,
            Self::OaepSha256 | Self::AesKeyWrapSha256 => &rsa::OAEP_SHA256_MGF1SHA256,
        }
    }

    /// Whether the material travels under AES key wrap (any size) rather than RSA alone.
    #[must_use]
    pub fn is_key_wrap(self) -> bool {
        matches!(self, Self::AesKeyWrapSha1 | Self::AesKeyWrapSha256)
    }

    /// Whether this algorithm with an RSA wrapping key of `bits` may carry material of `spec`,
    /// by AWS's table ("Select a wrapping algorithm"): RSAES-OAEP cannot carry an RSA private key,
    /// nor a P-521 private key under an RSA 2048 wrapping key (both are longer than OAEP
    /// allows); the key-wrap algorithms carry everything.
    #[must_use]
    pub fn can_wrap(self, spec: &Spec, bits: u32) -> bool {
        if self.is_key_wrap() {
            return true;
        }
        let too_long = match spec.family {
            Family::Rsa(_) => true,
            Family::Ecc(Curve::P521) => bits == 2048,
            _ => false,
        };
        !too_long
    }
}

/// What a sealed key record keeps of one imported material, also once the material itself was
/// deleted or expired: so that re-importing it can be recognised and restores the same id.
#[derive(Clone, Serialize, Deserialize)]
pub struct ImportInfo {
    /// Material version (ciphertext blobs name it).
    pub version: u32,
    /// Key material id (64 hex digits).
    pub id: String,
    /// SHA-256 over a label, the key id and the material (the public key of an asymmetric
    /// key). Sealed like the material; never shown.
    #[serde(with = "serde_bytes")]
    pub fingerprint: [u8; 32],
    /// `ValidTo` (Unix ms) when the material expires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_to_ms: Option<i64>,
    /// `KeyMaterialDescription`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// When it was last imported (Unix ms).
    pub imported_ms: i64,
    /// The rotation that made it current, if any (kept when the material is deleted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotated: Option<Rotated>,
}

impl fmt::Debug for ImportInfo {
    // The fingerprint is a hash of secret material: never printed.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ImportInfo")
            .field("version", &self.version)
            .field("id", &self.id)
            .field("valid_to_ms", &self.valid_to_ms)
            .finish_non_exhaustive()
    }
}

/// The sealed body of an import token (kind 6, sealed under the key id).
#[derive(Serialize, Deserialize)]
struct TokenBody {
    key_id: String,
    algorithm: WrappingAlgorithm,
    wrapping_bits: u32,
    expires_ms: i64,
    /// The wrapping private key, PKCS#8 DER.
    private: SecretBytes,
}

/// An opened import token.
pub struct ImportToken {
    body: TokenBody,
}

impl fmt::Debug for ImportToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ImportToken")
            .field("key_id", &self.body.key_id)
            .field("algorithm", &self.body.algorithm)
            .finish_non_exhaustive()
    }
}

/// Why a token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenError {
    /// Not sealed by this domain, altered, or for another key.
    Invalid,
    /// Past its validity by this enclave's clock.
    Expired,
}

/// Parameters of one `GetParametersForImport`.
pub struct Issued {
    /// The wrapping public key, DER `SubjectPublicKeyInfo`.
    pub public_key: Vec<u8>,
    /// The sealed token.
    pub token: Vec<u8>,
    /// When both stop being accepted (Unix ms).
    pub valid_to_ms: i64,
}

/// Generates a wrapping key pair of `bits` for key `key_id` and seals its private half, with
/// the key id, the algorithm and the expiry, into an import token.
pub fn issue(
    keys: &Keyring,
    key_id: &str,
    algorithm: WrappingAlgorithm,
    bits: u32,
    now_ms: i64,
) -> Result<Issued, EnclaveError> {
    let size = match bits {
        2048 => rsa::KeySize::Rsa2048,
        3072 => rsa::KeySize::Rsa3072,
        4096 => rsa::KeySize::Rsa4096,
        _ => return Err(EnclaveError::BadInput),
    };
    let private = rsa::PrivateDecryptingKey::generate(size)?;
    let public_key = public_der(&private.public_key())?;
    let pkcs8: Pkcs8V1Der<'static> = private.as_der()?;
    let valid_to_ms = now_ms.saturating_add(TOKEN_VALIDITY_MS);
    let body = TokenBody {
        key_id: key_id.to_owned(),
        algorithm,
        wrapping_bits: bits,
        expires_ms: valid_to_ms,
        private: SecretBytes(pkcs8.as_ref().to_vec()),
    };
    let token = record::seal(keys.current(), Kind::ImportToken, key_id, &body)?;
    Ok(Issued {
        public_key,
        token,
        valid_to_ms,
    })
}

/// DER `SubjectPublicKeyInfo` of an RSA public key.
fn public_der(key: &rsa::PublicEncryptingKey) -> Result<Vec<u8>, EnclaveError> {
    let der: PublicKeyX509Der<'static> = key.as_der()?;
    Ok(der.as_ref().to_vec())
}

/// Opens an import token for key `key_id` at `now_ms`.
pub fn open_token(
    keys: &Keyring,
    key_id: &str,
    token: &[u8],
    now_ms: i64,
) -> Result<ImportToken, TokenError> {
    let body: TokenBody = record::open(keys, Kind::ImportToken, Some(key_id), token)
        .map_err(|_| TokenError::Invalid)?;
    if body.key_id != key_id {
        return Err(TokenError::Invalid);
    }
    if body.expires_ms <= now_ms {
        return Err(TokenError::Expired);
    }
    Ok(ImportToken { body })
}

impl ImportToken {
    /// The algorithm the token was issued for.
    #[must_use]
    pub fn algorithm(&self) -> WrappingAlgorithm {
        self.body.algorithm
    }

    /// Unwraps `wrapped` with the token's private key and algorithm; `None` when it does not
    /// unwrap (opaque: no hint of which step failed).
    #[must_use]
    pub fn unwrap_material(&self, wrapped: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
        let private = rsa::PrivateDecryptingKey::from_pkcs8(&self.body.private.0).ok()?;
        if u32::try_from(private.key_size_bits()).ok()? != self.body.wrapping_bits {
            return None;
        }
        let key = rsa::OaepPrivateDecryptingKey::new(private).ok()?;
        let k = key.key_size_bytes();
        let alg = self.body.algorithm.oaep();
        let oaep = |ciphertext: &[u8]| -> Option<Zeroizing<Vec<u8>>> {
            if ciphertext.len() != k {
                return None;
            }
            let mut out = Zeroizing::new(vec![0u8; key.min_output_size()]);
            let len = key.decrypt(alg, ciphertext, &mut out, None).ok()?.len();
            out.truncate(len);
            Some(out)
        };
        if !self.body.algorithm.is_key_wrap() {
            return oaep(wrapped);
        }
        let (head, tail) = wrapped.split_at_checked(k)?;
        let aes = oaep(head)?;
        if aes.len() != 32 || tail.is_empty() {
            return None;
        }
        let kek = AesKek::new(&AES_256, &aes).ok()?;
        let mut out = Zeroizing::new(vec![0u8; tail.len()]);
        let len = kek.unwrap_with_padding(tail, &mut out).ok()?.len();
        out.truncate(len);
        Some(out)
    }
}

/// Material checked against a key spec, ready for a key record.
pub struct Checked {
    /// The AES-256 key of a symmetric key.
    pub secret: Option<Zeroizing<[u8; 32]>>,
    /// The HMAC key, or the PKCS#8 DER private key.
    pub private: Option<SecretBytes>,
    /// The public key of an asymmetric key (DER `SubjectPublicKeyInfo`).
    pub public: Option<Vec<u8>>,
    /// See [`ImportInfo::fingerprint`].
    pub fingerprint: [u8; 32],
}

/// AWS's lengths of imported HMAC material: from the spec's key length to 64 bytes (`HMAC_224`,
/// `HMAC_256`) or 128 bytes (`HMAC_384`, `HMAC_512`), as its developer guide lists them.
#[must_use]
pub fn hmac_lengths(len: usize) -> std::ops::RangeInclusive<usize> {
    let max = if len <= 32 { 64 } else { 128 };
    len..=max
}

/// Checks `material` against `spec` for key `key_id`; `None` if it does not fit (wrong length,
/// not a PKCS#8 private key of the spec's algorithm, curve or size).
#[must_use]
pub fn check_material(spec: &Spec, key_id: &str, material: &[u8]) -> Option<Checked> {
    match spec.family {
        Family::Symmetric => {
            let mut secret = Zeroizing::new([0u8; 32]);
            secret.copy_from_slice(material.get(..32).filter(|_| material.len() == 32)?);
            Some(Checked {
                secret: Some(secret),
                private: None,
                public: None,
                fingerprint: fingerprint(key_id, material),
            })
        }
        Family::Hmac(len) => hmac_lengths(len)
            .contains(&material.len())
            .then(|| Checked {
                secret: None,
                private: Some(SecretBytes(material.to_vec())),
                public: None,
                fingerprint: fingerprint(key_id, material),
            }),
        Family::Rsa(bits) => {
            let key = rsa::KeyPair::from_pkcs8(material).ok()?;
            if u32::try_from(key.public_modulus_len())
                .ok()?
                .checked_mul(8)?
                != bits
            {
                return None;
            }
            let public = key.public_key().as_der().ok()?.as_ref().to_vec();
            Some(asymmetric(key_id, material, public))
        }
        Family::Ecc(_) | Family::Ed25519 => {
            // Parsing for the spec's curve refuses a key of another curve or algorithm.
            let public = crate::asymmetric::public_key(spec.family, material).ok()?;
            Some(asymmetric(key_id, material, public))
        }
        Family::MlDsa(_) | Family::Sm2 => None,
    }
}

fn asymmetric(key_id: &str, material: &[u8], public: Vec<u8>) -> Checked {
    // An asymmetric key is the same key when its public key is: the PKCS#8 encoding may differ
    // between two exports of one key (with or without the public key, attributes).
    Checked {
        secret: None,
        private: Some(SecretBytes(material.to_vec())),
        fingerprint: fingerprint(key_id, &public),
        public: Some(public),
    }
}

fn fingerprint(key_id: &str, material: &[u8]) -> [u8; 32] {
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(b"ekms/v1/imported-material\0");
    ctx.update(key_id.as_bytes());
    ctx.update(b"\0");
    ctx.update(material);
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

/// Whether two fingerprints are equal, in constant time.
#[must_use]
pub fn same_material(a: &[u8; 32], b: &[u8; 32]) -> bool {
    constant_time::verify_slices_are_equal(a, b).is_ok()
}

/// Drops every imported material of `rec` whose `ValidTo` is at or before `now_ms`; a key that
/// so loses its current material is `PendingImport` (a key pending deletion stays so).
pub fn expire(rec: &mut KeyRecord, now_ms: i64) {
    if rec.imports.is_empty() {
        return;
    }
    let expired: Vec<u32> = rec
        .imports
        .iter()
        .filter(|i| i.valid_to_ms.is_some_and(|t| t <= now_ms))
        .map(|i| i.version)
        .collect();
    if expired.is_empty() {
        return;
    }
    // Dropping a `Material` zeroizes its secrets.
    rec.materials.retain(|m| !expired.contains(&m.version));
    if expired.contains(&rec.current) && matches!(rec.state, KeyState::Enabled | KeyState::Disabled)
    {
        rec.state = KeyState::PendingImport;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::DomainKey;

    fn spec(name: &str) -> &'static Spec {
        crate::keyspec::find(name).unwrap()
    }

    #[test]
    fn tokens_bind_key_and_time() {
        let keys = Keyring::single(DomainKey::generate().unwrap());
        let t = issue(&keys, "k1", WrappingAlgorithm::OaepSha256, 2048, 1000).unwrap();
        assert_eq!(t.valid_to_ms, 1000 + TOKEN_VALIDITY_MS);
        assert!(open_token(&keys, "k1", &t.token, 1000).is_ok());
        assert_eq!(
            open_token(&keys, "k2", &t.token, 1000).unwrap_err(),
            TokenError::Invalid
        );
        assert_eq!(
            open_token(&keys, "k1", &t.token, t.valid_to_ms).unwrap_err(),
            TokenError::Expired
        );
        let mut bad = t.token.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert_eq!(
            open_token(&keys, "k1", &bad, 1000).unwrap_err(),
            TokenError::Invalid
        );
        let other = Keyring::single(DomainKey::generate().unwrap());
        assert!(open_token(&other, "k1", &t.token, 1000).is_err());
        // The token never shows the wrapping key.
        let opened = open_token(&keys, "k1", &t.token, 1000).unwrap();
        assert!(!format!("{opened:?}").contains("private"));
    }

    #[test]
    fn key_wrap_with_padding_round_trips_through_the_token() {
        let keys = Keyring::single(DomainKey::generate().unwrap());
        let t = issue(&keys, "k", WrappingAlgorithm::AesKeyWrapSha256, 2048, 0).unwrap();
        let public = rsa::PublicEncryptingKey::from_der(&t.public_key).unwrap();
        let public = rsa::OaepPublicEncryptingKey::new(public).unwrap();
        let aes = [7u8; 32];
        let mut head = vec![0u8; public.ciphertext_size()];
        public
            .encrypt(&rsa::OAEP_SHA256_MGF1SHA256, &aes, &mut head, None)
            .unwrap();
        let material = [9u8; 45]; // not a multiple of 8: exercises the RFC 5649 padding
        let mut tail = vec![0u8; material.len() + 15];
        let n = AesKek::new(&AES_256, &aes)
            .unwrap()
            .wrap_with_padding(&material, &mut tail)
            .unwrap()
            .len();
        tail.truncate(n);
        let token = open_token(&keys, "k", &t.token, 0).unwrap();
        let mut wrapped = head.clone();
        wrapped.extend_from_slice(&tail);
        assert_eq!(
            token.unwrap_material(&wrapped).unwrap().as_slice(),
            material
        );
        // Truncated, or with the wrong AES key: refused, no panic.
        assert!(token.unwrap_material(&wrapped[..100]).is_none());
        assert!(token.unwrap_material(&head).is_none());
        let mut flipped = wrapped.clone();
        *flipped.last_mut().unwrap() ^= 1;
        assert!(token.unwrap_material(&flipped).is_none());
        assert!(token.unwrap_material(&[]).is_none());
    }

    #[test]
    fn material_must_fit_the_spec() {
        assert!(check_material(spec("SYMMETRIC_DEFAULT"), "k", &[1; 32]).is_some());
        assert!(check_material(spec("SYMMETRIC_DEFAULT"), "k", &[1; 16]).is_none());
        assert!(check_material(spec("SYMMETRIC_DEFAULT"), "k", &[1; 33]).is_none());
        assert!(check_material(spec("HMAC_224"), "k", &[1; 27]).is_none());
        assert!(check_material(spec("HMAC_224"), "k", &[1; 28]).is_some());
        assert!(check_material(spec("HMAC_256"), "k", &[1; 64]).is_some());
        assert!(check_material(spec("HMAC_256"), "k", &[1; 65]).is_none());
        assert!(check_material(spec("HMAC_512"), "k", &[1; 128]).is_some());
        let p256 = crate::asymmetric::generate(Family::Ecc(Curve::P256)).unwrap();
        assert!(check_material(spec("ECC_NIST_P256"), "k", &p256).is_some());
        assert!(check_material(spec("ECC_NIST_P384"), "k", &p256).is_none());
        assert!(check_material(spec("ECC_SECG_P256K1"), "k", &p256).is_none());
        assert!(check_material(spec("RSA_2048"), "k", &p256).is_none());
        let rsa = crate::asymmetric::generate(Family::Rsa(2048)).unwrap();
        assert!(check_material(spec("RSA_2048"), "k", &rsa).is_some());
        assert!(check_material(spec("RSA_3072"), "k", &rsa).is_none());
        assert!(check_material(spec("ECC_NIST_P256"), "k", &[0x30, 0x03, 1, 1, 1]).is_none());
        // The same material under another key has another fingerprint.
        let a = check_material(spec("SYMMETRIC_DEFAULT"), "k", &[1; 32]).unwrap();
        let b = check_material(spec("SYMMETRIC_DEFAULT"), "j", &[1; 32]).unwrap();
        assert!(!same_material(&a.fingerprint, &b.fingerprint));
    }

    #[test]
    fn oaep_carries_no_rsa_key_and_no_p521_key_under_rsa_2048() {
        let oaep = WrappingAlgorithm::OaepSha256;
        assert!(!oaep.can_wrap(spec("RSA_2048"), 4096));
        assert!(!oaep.can_wrap(spec("ECC_NIST_P521"), 2048));
        assert!(oaep.can_wrap(spec("ECC_NIST_P521"), 3072));
        assert!(oaep.can_wrap(spec("HMAC_512"), 2048));
        assert!(WrappingAlgorithm::AesKeyWrapSha1.can_wrap(spec("RSA_4096"), 2048));
    }
}
