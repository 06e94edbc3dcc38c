//! Attestation: the enclave's NSM (real `/dev/nsm` on Nitro, the mock NSM in simulation) and its
//! per-boot identity key. A document binds the client's nonce, the identity public key and the
//! domain fingerprint to the enclave's measurements, so a client that verifies it knows which
//! code holds the identity key, and that the answer is fresh.

use std::fmt;

use std::time::SystemTime;

use aws_lc_rs::agreement;
use ekms_attestation::{
    Nsm, PcrPolicy, RootKind, TrustRoot, UnixMillis, ValidationTime, VerifiedDoc, verify,
};

use crate::{EnclaveError, custody::PcrValues};

/// The PCRs a domain pins for its peers: the image (0), kernel and boot (1), application (2).
const DOMAIN_PCRS: [u16; 3] = [0, 1, 2];
/// Oldest peer document accepted.
const PEER_DOC_MAX_AGE: std::time::Duration = std::time::Duration::from_mins(5);

/// Largest nonce accepted (AWS allows up to 1024 bytes in the document).
pub const MAX_NONCE_LEN: usize = 512;

/// The NSM and the identity key of this boot.
pub struct Attestor {
    nsm: Box<dyn Nsm>,
    /// ECDH P-384 key made at boot, never exported; custodians and peers encrypt to it.
    identity: agreement::PrivateKey,
    identity_public: Vec<u8>,
    /// The root that peers' documents must chain to (the AWS root on Nitro; in simulation the
    /// simulation CA's root, which both peers share through the data dir).
    root: TrustRoot,
    /// The AWS Nitro root, which a `Recipient`'s document may always chain to.
    aws_root: TrustRoot,
}

impl fmt::Debug for Attestor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Attestor(root: {})", self.root.kind().label())
    }
}

impl Attestor {
    /// Wraps an NSM and the root its documents chain to, and makes this boot's identity key.
    pub fn new(nsm: Box<dyn Nsm>, root: TrustRoot) -> Result<Self, EnclaveError> {
        let identity = agreement::PrivateKey::generate(&agreement::ECDH_P384)?;
        let identity_public = identity.compute_public_key()?.as_ref().to_vec();
        Ok(Self {
            nsm,
            identity,
            identity_public,
            root,
            aws_root: TrustRoot::aws_nitro().map_err(|_| EnclaveError::Crypto)?,
        })
    }

    /// Verifies the attestation document of a `Recipient` (a client enclave app) at `now`: the
    /// COSE signature, the chain to the AWS Nitro root (or, in simulation only, to the
    /// simulation CA's root, announced at start), every certificate valid at `now`, and not a
    /// debug-mode enclave. The caller checks the public key. The reason for a refusal is
    /// public text.
    pub fn verify_recipient(
        &self,
        document: &[u8],
        now: UnixMillis,
    ) -> Result<VerifiedDoc, String> {
        // The document names its root (cabundle[0]); `verify` then checks it is byte for byte
        // the one pinned. A simulation root is a candidate only in simulation.
        let claims_simulation = self.is_simulation()
            && ekms_attestation::AttestationDoc::parse_unverified(document)
                .is_ok_and(|d| d.cabundle().first().map(Vec::as_slice) == Some(self.root.der()));
        let root = if claims_simulation {
            &self.root
        } else {
            &self.aws_root
        };
        let verified =
            verify(document, root, ValidationTime::At(now)).map_err(|e| e.to_string())?;
        PcrPolicy::new()
            .check(&verified, now)
            .map_err(|e| e.to_string())?;
        Ok(verified)
    }

    /// This enclave's PCRs 0, 1 and 2: the domain policy it creates, and what a peer must show.
    pub fn pcrs(&self) -> Result<PcrValues, EnclaveError> {
        DOMAIN_PCRS
            .iter()
            .map(|&i| {
                let state = self.nsm.describe_pcr(i).map_err(|_| EnclaveError::Crypto)?;
                Ok((
                    u8::try_from(i).map_err(|_| EnclaveError::Crypto)?,
                    state.value,
                ))
            })
            .collect()
    }

    /// Verifies a peer enclave's document: chain to our root, signature, fresh (at most five
    /// minutes old), not debug mode, and exactly the PCR values `expected`. The caller checks the
    /// nonce and user data. The reason for a refusal is public text.
    pub fn verify_peer(
        &self,
        document: &[u8],
        expected: &PcrValues,
    ) -> Result<VerifiedDoc, String> {
        let now = UnixMillis::from_system_time(SystemTime::now()).map_err(|e| e.to_string())?;
        let verified =
            verify(document, &self.root, ValidationTime::At(now)).map_err(|e| e.to_string())?;
        let mut policy = PcrPolicy::new().max_age(PEER_DOC_MAX_AGE);
        for (i, v) in expected {
            policy = policy.expect_pcr(*i, v).map_err(|e| e.to_string())?;
        }
        policy.check(&verified, now).map_err(|e| e.to_string())?;
        if verified.root_kind() == RootKind::Simulation {
            tracing::warn!("verified a peer against the SIMULATION root; never in production");
        }
        Ok(verified)
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
        self.root.kind() == RootKind::Simulation
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
            root.clone(),
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
