//! Peer forwarding: a running enclave of the domain and a joining one attest to each other, and
//! the custody secret travels sealed to the joiner's attested identity key. Each side's
//! challenge is minted without state ([`Purpose`]) and remembered only when a peer whose
//! attestation verified redeems it, so anonymous challenge requests cannot flush anything.

use super::{
    Arc, Core, Domain, DomainSecret, EnclaveError, EnclaveResponse, Fault, Ordering, P384PublicKey,
    State, digest, hex, refused, sessions::Purpose,
};

/// Label and AAD prefix of a custody secret forwarded to a peer enclave.
const PEER_GRANT_LABEL: &[u8] = b"ekms/v1/peer-grant";

impl Core {
    /// Running enclave: a fresh challenge for a joining peer.
    pub(super) fn peer_challenge(&self) -> EnclaveResponse {
        if self.domain().is_none() {
            return refused("this enclave is not serving a domain; it cannot forward one");
        }
        match self.sessions.mint(Purpose::PeerGrant) {
            Ok(nonce) => EnclaveResponse::Challenge { nonce },
            Err(_) => EnclaveResponse::Fault(Fault::Internal),
        }
    }

    /// Joining enclave: attest to the running enclave's challenge, and issue our own.
    pub(super) fn peer_hello(&self, challenge: &[u8]) -> EnclaveResponse {
        let id = match &*match self.state.read() {
            Ok(s) => s,
            Err(_) => return EnclaveResponse::Fault(Fault::Internal),
        } {
            State::Sealed(p) => p.id,
            State::Open(_) => return refused("this enclave already serves its domain"),
            State::Empty => return refused("this enclave has no stored domain to join"),
        };
        let user_data = format!("ekms/v1 peer-hello domain={}", hex(&id));
        let Ok(own) = self.sessions.mint(Purpose::PeerAccept) else {
            return EnclaveResponse::Fault(Fault::Internal);
        };
        match self.attestor.document(challenge, user_data.as_bytes()) {
            Ok(document) => EnclaveResponse::PeerHello {
                document,
                challenge: own,
            },
            Err(EnclaveError::BadInput) => refused("the challenge must be 1 to 512 bytes"),
            Err(_) => EnclaveResponse::Fault(Fault::Internal),
        }
    }

    /// Running enclave: verify the joining enclave against the domain's PCR policy and our own
    /// challenge, then seal the custody secret to its attested identity key.
    pub(super) fn peer_grant(&self, document: &[u8], challenge: &[u8]) -> EnclaveResponse {
        let Some(d) = self.domain() else {
            return refused("this enclave is not serving a domain; it cannot forward one");
        };
        let verified = match self.attestor.verify_peer(document, d.policy()) {
            Ok(v) => v,
            Err(why) => return refused(format!("the joining enclave's attestation: {why}")),
        };
        let Some(nonce) = verified.doc().nonce() else {
            return refused("the joining enclave's attestation has no nonce");
        };
        if let Err(why) = self.sessions.redeem(Purpose::PeerGrant, nonce) {
            return refused(format!("the joining enclave's attestation: {why}"));
        }
        let expected = format!("ekms/v1 peer-hello domain={}", hex(&d.id()));
        if verified.doc().user_data() != Some(expected.as_bytes()) {
            return refused("the joining enclave asks for another domain");
        }
        let Some(peer_key) = verified
            .doc()
            .public_key()
            .and_then(|k| P384PublicKey::from_sec1(k).ok())
        else {
            return refused("the joining enclave's attestation carries no P-384 identity key");
        };
        if challenge.is_empty() || challenge.len() > crate::attest::MAX_NONCE_LEN {
            return refused("the joining enclave's challenge must be 1 to 512 bytes");
        }
        let Ok(grant) = ekms_custody::seal_to(
            &peer_key,
            PEER_GRANT_LABEL,
            &grant_aad(d.id(), challenge),
            d.secret().expose(),
        ) else {
            return EnclaveResponse::Fault(Fault::Internal);
        };
        let user_data = format!(
            "ekms/v1 peer-grant domain={} grant={}",
            hex(&d.id()),
            hex(digest::digest(&digest::SHA256, &grant).as_ref())
        );
        match self.attestor.document(challenge, user_data.as_bytes()) {
            Ok(document) => {
                tracing::info!(domain = %hex(&d.id()), "forwarded the domain to an attested peer");
                EnclaveResponse::PeerGranted { document, grant }
            }
            Err(_) => EnclaveResponse::Fault(Fault::Internal),
        }
    }

    /// Joining enclave: verify the running enclave (same measurements as ours, our challenge, a
    /// grant digest it signed), then open the grant and the stored keyring.
    pub(super) fn peer_accept(&self, document: &[u8], grant: &[u8]) -> EnclaveResponse {
        let Ok(own) = self.attestor.pcrs() else {
            return EnclaveResponse::Fault(Fault::Internal);
        };
        let verified = match self.attestor.verify_peer(document, &own) {
            Ok(v) => v,
            Err(why) => return refused(format!("the running enclave's attestation: {why}")),
        };
        let Some(nonce) = verified.doc().nonce().map(<[u8]>::to_vec) else {
            return refused("the running enclave's attestation has no nonce");
        };
        let Ok(mut state) = self.state.write() else {
            return EnclaveResponse::Fault(Fault::Internal);
        };
        let State::Sealed(p) = &mut *state else {
            drop(state);
            return EnclaveResponse::Custody(self.custody_state());
        };
        if let Err(why) = self.sessions.redeem(Purpose::PeerAccept, &nonce) {
            return refused(format!("the running enclave's attestation: {why}"));
        }
        let expected = format!(
            "ekms/v1 peer-grant domain={} grant={}",
            hex(&p.id),
            hex(digest::digest(&digest::SHA256, grant).as_ref())
        );
        if verified.doc().user_data() != Some(expected.as_bytes()) {
            return refused("the running enclave did not attest to this grant for this domain");
        }
        let opened = ekms_custody::open_with(
            self.attestor.identity(),
            PEER_GRANT_LABEL,
            &grant_aad(p.id, &nonce),
            grant,
        )
        .map_err(|e| e.to_string())
        .and_then(|bytes| {
            let bytes: [u8; 32] = bytes
                .as_slice()
                .try_into()
                .map_err(|_| "the grant is not a 32-byte secret".to_owned())?;
            Domain::open(DomainSecret::new(bytes), &p.sealed)
                .map_err(|_| "the granted secret does not open the stored keyring".to_owned())
        });
        match opened {
            Ok(domain) => {
                tracing::info!(
                    domain = %hex(&domain.id()),
                    "unsealed by an attested peer; following it (it serves the domain's KMS calls)"
                );
                let view = self.open_view(&domain, false);
                self.reset_ledger(view);
                self.follower.store(true, Ordering::Relaxed);
                *state = State::Open(Arc::new(domain));
                drop(state);
                EnclaveResponse::Custody(self.custody_state())
            }
            Err(why) => refused(format!("the peer's grant: {why}")),
        }
    }
}

pub(super) fn grant_aad(domain: [u8; 8], challenge: &[u8]) -> Vec<u8> {
    let mut aad = Vec::with_capacity(PEER_GRANT_LABEL.len() + 8 + challenge.len());
    aad.extend_from_slice(PEER_GRANT_LABEL);
    aad.extend_from_slice(&domain);
    aad.extend_from_slice(challenge);
    aad
}
