//! The domain key: the root of every sealed record. 256 bits, generated in the enclave, held in
//! memory only, zeroized on drop, never printed.

use std::fmt;

use aws_lc_rs::{
    aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey},
    hkdf, rand,
};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::EnclaveError;

/// HKDF info for the record-sealing key (domain separation from every other use).
const SEAL_INFO: &[u8] = b"ekms/v1/record-seal";

/// Raw domain key bytes.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct DomainKeyBytes([u8; 32]);

impl DomainKeyBytes {
    /// Wraps raw bytes (from custody).
    #[must_use]
    pub fn new(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }
    /// The bytes, for custody export only.
    #[must_use]
    pub fn expose(&self) -> &[u8; 32] {
        &self.0
    }
}

/// A domain key with its derived sealing key.
pub struct DomainKey {
    bytes: DomainKeyBytes,
    fingerprint: [u8; 8],
    seal: LessSafeKey,
}

impl fmt::Debug for DomainKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DomainKey({})", self.fingerprint_hex())
    }
}

impl DomainKey {
    /// Generates a fresh domain key from the OS RNG.
    pub fn generate() -> Result<Self, EnclaveError> {
        let mut bytes = DomainKeyBytes([0u8; 32]);
        rand::fill(&mut bytes.0)?;
        Self::from_bytes(bytes)
    }

    /// Builds a domain key from custody bytes.
    pub fn from_bytes(bytes: DomainKeyBytes) -> Result<Self, EnclaveError> {
        // One definition of the fingerprint, shared with the custody ceremony, which checks a
        // reconstructed key against it.
        let fingerprint = ekms_custody::DomainSecret::new(bytes.0).fingerprint();
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, &[]).extract(&bytes.0);
        let okm = prk.expand(&[SEAL_INFO], &AES_256_GCM)?;
        let seal = LessSafeKey::new(UnboundKey::from(okm));
        Ok(Self {
            bytes,
            fingerprint,
            seal,
        })
    }

    /// Public identifier of this key (first 8 bytes of a labelled SHA-256).
    #[must_use]
    pub fn fingerprint(&self) -> [u8; 8] {
        self.fingerprint
    }

    /// Fingerprint in hex.
    #[must_use]
    pub fn fingerprint_hex(&self) -> String {
        hex(&self.fingerprint)
    }

    /// The raw bytes, for custody only.
    #[must_use]
    pub fn bytes(&self) -> &DomainKeyBytes {
        &self.bytes
    }

    /// AES-256-GCM seal with a random nonce; `aad` is authenticated, `plaintext` is consumed
    /// and returned as `nonce || ciphertext || tag`.
    pub fn seal(&self, aad: &[u8], plaintext: Zeroizing<Vec<u8>>) -> Result<Vec<u8>, EnclaveError> {
        let mut nonce = [0u8; NONCE_LEN];
        rand::fill(&mut nonce)?;
        let mut in_out: Vec<u8> = Vec::with_capacity(NONCE_LEN + plaintext.len() + 16);
        in_out.extend_from_slice(&plaintext);
        drop(plaintext);
        let result = self.seal.seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(aad),
            &mut in_out,
        );
        if result.is_err() {
            in_out.zeroize();
            return Err(EnclaveError::Crypto);
        }
        let mut out = Vec::with_capacity(NONCE_LEN + in_out.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&in_out);
        Ok(out)
    }

    /// Opens `nonce || ciphertext || tag` sealed by [`DomainKey::seal`] with the same `aad`.
    pub fn open(&self, aad: &[u8], sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, EnclaveError> {
        let (nonce, ct) = sealed
            .split_first_chunk::<NONCE_LEN>()
            .ok_or(EnclaveError::BadRecord)?;
        let mut buf = Zeroizing::new(ct.to_vec());
        let len = self
            .seal
            .open_in_place(
                Nonce::assume_unique_for_key(*nonce),
                Aad::from(aad),
                &mut buf,
            )
            .map_err(|_| EnclaveError::BadRecord)?
            .len();
        buf.truncate(len);
        Ok(buf)
    }
}

/// The domain keys in use: the last one seals new records; each opens the records whose header
/// names its fingerprint.
#[derive(Debug)]
pub struct Keyring {
    /// Older keys, oldest first.
    older: Vec<DomainKey>,
    current: DomainKey,
}

impl Keyring {
    /// A keyring of one key.
    #[must_use]
    pub fn single(key: DomainKey) -> Self {
        Self {
            older: Vec::new(),
            current: key,
        }
    }

    /// A keyring of `keys`, oldest first; `None` if empty.
    #[must_use]
    pub fn new(mut keys: Vec<DomainKey>) -> Option<Self> {
        let current = keys.pop()?;
        Some(Self {
            older: keys,
            current,
        })
    }

    /// The key that seals new records.
    #[must_use]
    pub fn current(&self) -> &DomainKey {
        &self.current
    }

    /// The key with this fingerprint.
    #[must_use]
    pub fn get(&self, fingerprint: [u8; 8]) -> Option<&DomainKey> {
        self.keys().find(|k| k.fingerprint == fingerprint)
    }

    /// Every key, oldest first.
    pub fn keys(&self) -> impl Iterator<Item = &DomainKey> {
        self.older.iter().chain(std::iter::once(&self.current))
    }
}

/// Lower-case hex of bytes.
#[must_use]
pub fn hex(bytes: &[u8]) -> String {
    ekms_wire::audit::hex(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_round_trip_and_tamper() {
        let k = DomainKey::generate().unwrap();
        let sealed = k.seal(b"aad", Zeroizing::new(b"secret".to_vec())).unwrap();
        assert_eq!(&k.open(b"aad", &sealed).unwrap()[..], b"secret");
        assert!(matches!(
            k.open(b"other", &sealed),
            Err(EnclaveError::BadRecord)
        ));
        let mut t = sealed.clone();
        *t.last_mut().unwrap() ^= 1;
        assert!(k.open(b"aad", &t).is_err());
        assert!(k.open(b"aad", &sealed[..5]).is_err());
        let other = DomainKey::generate().unwrap();
        assert!(other.open(b"aad", &sealed).is_err());
        assert_ne!(k.fingerprint(), other.fingerprint());
    }

    #[test]
    fn fingerprint_is_the_documented_labelled_sha256() {
        // SHA-256("ekms/v1/domain-fingerprint" || 32 zero bytes)[..8], as in docs/formats.md.
        let k = DomainKey::from_bytes(DomainKeyBytes::new([0u8; 32])).unwrap();
        assert_eq!(k.fingerprint_hex(), "ce0be48edf56f1ca");
    }

    #[test]
    fn debug_shows_only_the_fingerprint() {
        let k = DomainKey::from_bytes(DomainKeyBytes::new([7u8; 32])).unwrap();
        let s = format!("{k:?}");
        assert!(s.starts_with("DomainKey(") && !s.contains("0707"));
    }
}
