//! Attestation: the enclave's NSM (real `/dev/nsm` on Nitro, the mock NSM in simulation) and its
//! per-boot identity key. A document binds the client's nonce, the identity public key and the
//! domain fingerprint to the enclave's measurements, so a client that verifies it knows which
//! code holds the identity key, and that the answer is fresh.

use std::fmt;

use aws_lc_rs::agreement;
use ekms_attestation::Nsm;

use crate::EnclaveError;

/// Largest nonce accepted (AWS allows up to 1024 bytes in the document).
pub const MAX_NONCE_LEN: usize = 512;

/// The NSM and the identity key of this boot.
pub struct Attestor {
    nsm: Box<dyn Nsm>,
    /// ECDH P-384 key made at boot, never exported; custodians and peers encrypt to it.
    identity: agreement::PrivateKey,
    identity_public: Vec<u8>,
    simulation: bool,
}

impl fmt::Debug for Attestor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Attestor(simulation: {})", self.simulation)
    }
}

impl Attestor {
    /// Wraps an NSM and makes this boot's identity key.
    pub fn new(nsm: Box<dyn Nsm>, simulation: bool) -> Result<Self, EnclaveError> {
        let identity = agreement::PrivateKey::generate(&agreement::ECDH_P384)?;
        let identity_public = identity.compute_public_key()?.as_ref().to_vec();
        Ok(Self {
            nsm,
            identity,
            identity_public,
            simulation,
        })
    }

    /// The identity public key (SEC1 uncompressed P-384 point).
    #[must_use]
    pub fn identity_public(&self) -> &[u8] {
        &self.identity_public
    }

    /// The identity private key, for decrypting what is encrypted to this enclave.
    #[must_use]
    pub fn identity(&self) -> &agreement::PrivateKey {
        &self.identity
    }

    /// Whether documents are signed by the simulation CA.
    #[must_use]
    pub fn is_simulation(&self) -> bool {
        self.simulation
    }

    /// A document over `nonce`, this boot's identity key, and `user_data`.
    pub fn document(&self, nonce: &[u8], user_data: &[u8]) -> Result<Vec<u8>, EnclaveError> {
        if nonce.is_empty() || nonce.len() > MAX_NONCE_LEN {
            return Err(EnclaveError::BadInput);
        }
        self.nsm
            .attestation(Some(nonce), Some(user_data), Some(&self.identity_public))
            .map_err(|e| {
                tracing::error!(error = %e, "the NSM refused an attestation request");
                EnclaveError::Crypto
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ekms_attestation::{MockNsm, SimulationCa, ValidationTime, verify};

    #[test]
    fn documents_bind_nonce_identity_and_user_data() {
        let ca = SimulationCa::generate().unwrap();
        let root = ca.trust_root().unwrap();
        let a = Attestor::new(
            Box::new(MockNsm::from_executable_bytes(ca, b"enclave")),
            true,
        )
        .unwrap();
        let doc = a.document(b"nonce-1", b"ekms").unwrap();
        let v = verify(&doc, &root, ValidationTime::DocumentTimestamp).unwrap();
        assert_eq!(v.doc().nonce(), Some(&b"nonce-1"[..]));
        assert_eq!(v.doc().public_key(), Some(a.identity_public()));
        assert_eq!(v.doc().user_data(), Some(&b"ekms"[..]));
        assert!(matches!(a.document(b"", b""), Err(EnclaveError::BadInput)));
        assert!(matches!(
            a.document(&[0; 513], b""),
            Err(EnclaveError::BadInput)
        ));
    }
}
