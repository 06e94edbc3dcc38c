//! The domain key as custody sees it: 32 secret bytes and their public fingerprint. Never printed,
//! never serialized; the enclave turns it back into its own `DomainKey`.

use std::fmt;

use aws_lc_rs::digest;
use zeroize::{Zeroize, ZeroizeOnDrop};

/// Prefix of the fingerprint hash; must equal `FINGERPRINT_LABEL` in `enclave/src/domain.rs`.
const FINGERPRINT_LABEL: &[u8] = b"ekms/v1/domain-fingerprint";

/// Length of a domain fingerprint.
pub const DOMAIN_FINGERPRINT_LEN: usize = 8;

/// The 256-bit domain key, held for splitting or just reconstructed.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct DomainSecret([u8; 32]);

impl fmt::Debug for DomainSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DomainSecret({})", hex::encode(self.fingerprint()))
    }
}

impl DomainSecret {
    /// Wraps raw key bytes (from the enclave's `DomainKeyBytes`).
    #[must_use]
    pub fn new(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The key bytes, to hand back to the enclave's `DomainKey::from_bytes`.
    #[must_use]
    pub fn expose(&self) -> &[u8; 32] {
        &self.0
    }

    /// The public fingerprint of this key; see [`fingerprint`].
    #[must_use]
    pub fn fingerprint(&self) -> [u8; DOMAIN_FINGERPRINT_LEN] {
        fingerprint(self)
    }
}

/// `SHA-256("ekms/v1/domain-fingerprint" ‖ key)[..8]`, the same definition as the enclave's
/// `DomainKey::fingerprint`, so a reconstructed key can be checked against the domain it names.
#[must_use]
pub fn fingerprint(secret: &DomainSecret) -> [u8; DOMAIN_FINGERPRINT_LEN] {
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(FINGERPRINT_LABEL);
    ctx.update(&secret.0);
    let d = ctx.finish();
    let mut out = [0u8; DOMAIN_FINGERPRINT_LEN];
    // SHA-256 output is 32 bytes, so the first 8 always exist.
    for (o, b) in out.iter_mut().zip(d.as_ref()) {
        *o = *b;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Vectors computed outside Rust from the definition:
    /// `python3 -c "import hashlib; print(hashlib.sha256(b'ekms/v1/domain-fingerprint' + k).hexdigest()[:16])"`.
    #[test]
    fn fingerprint_matches_definition() {
        assert_eq!(
            hex::encode(fingerprint(&DomainSecret::new([0u8; 32]))),
            "ce0be48edf56f1ca"
        );
        let mut k = [0u8; 32];
        for (i, b) in k.iter_mut().enumerate() {
            *b = u8::try_from(i).unwrap();
        }
        assert_eq!(
            hex::encode(DomainSecret::new(k).fingerprint()),
            "1bfca7947587b344"
        );
    }

    #[test]
    fn debug_shows_fingerprint_only() {
        let s = DomainSecret::new([0xab; 32]);
        let text = format!("{s:?}");
        assert!(!text.contains("abab"), "{text}");
        assert!(text.starts_with("DomainSecret("));
    }
}
