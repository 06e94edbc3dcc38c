//! Custody of the domain inside the enclave: learn the stored domain, create a new one (with
//! its genesis admin), take custodians' shares, stage rotations.

use super::{
    Arc, Core, Domain, DomainCreated, DomainSecret, EnclaveError, EnclaveResponse, Fault, Genesis,
    Kind, Ordering, P384PublicKey, Pending, PrincipalRecord, RecordId, SealedBlob, SecretKind,
    Share, State, SubmittedShare, Version, delivery, digest_of, hex, peek_domain, rand, record,
    refused,
};

impl Core {
    pub(super) fn load_domain(&self, sealed: Vec<u8>) -> EnclaveResponse {
        let Some(h) = peek_domain(&sealed) else {
            return refused("the stored domain record is not a sealed keyring");
        };
        let (id, generation, threshold) = (h.domain, h.generation, h.threshold);
        let Ok(mut state) = self.state.write() else {
            return EnclaveResponse::Fault(Fault::Internal);
        };
        match &mut *state {
            State::Empty => {
                *state = State::Sealed(Pending {
                    sealed,
                    id,
                    threshold,
                    shares: Vec::new(),
                });
            }
            State::Sealed(p) if p.id == id => {
                p.sealed = sealed;
                p.threshold = threshold;
            }
            State::Sealed(p) => {
                *p = Pending {
                    sealed,
                    id,
                    threshold,
                    shares: Vec::new(),
                };
            }
            State::Open(d) if d.id() != id => {
                return refused(format!(
                    "this enclave serves domain {}, not {}",
                    hex(&d.id()),
                    hex(&id)
                ));
            }
            State::Open(d) if generation > d.generation() => {
                match Domain::open(DomainSecret::new(*d.secret().expose()), &sealed) {
                    Ok(newer) => {
                        tracing::info!(generation, "adopted a newer keyring of this domain");
                        *d = Arc::new(newer);
                    }
                    Err(_) => {
                        return refused(
                            "the stored keyring does not open with this domain's secret",
                        );
                    }
                }
            }
            State::Open(_) => {}
        }
        drop(state);
        EnclaveResponse::Custody(self.custody_state())
    }

    /// Creates a domain, splits it among `custodians`, and makes the admin credential, whose
    /// secret leaves the enclave only encrypted to `admin_key`, vouched for by a document over
    /// the operator's `nonce`.
    pub(super) fn init_domain(
        &self,
        custodians: &[String],
        threshold: u8,
        admin_key: &str,
        nonce: &[u8],
        witnesses: u8,
    ) -> EnclaveResponse {
        let Ok(admin_key) = delivery::recipient(admin_key) else {
            return refused("the admin key is not a P-384 public key file (ekms custodian keygen)");
        };
        if nonce.is_empty() || nonce.len() > crate::attest::MAX_NONCE_LEN {
            return refused("the nonce must be 1 to 512 bytes");
        }
        let Ok(mut state) = self.state.write() else {
            return EnclaveResponse::Fault(Fault::Internal);
        };
        match &*state {
            State::Empty => {}
            State::Sealed(p) => {
                return refused(format!(
                    "this appliance already has domain {} (sealed); unseal it instead",
                    hex(&p.id)
                ));
            }
            State::Open(d) => {
                return refused(format!(
                    "this appliance already has domain {}",
                    hex(&d.id())
                ));
            }
        }
        let Ok(policy) = self.attestor.pcrs() else {
            return EnclaveResponse::Fault(Fault::Internal);
        };
        let (domain, shares) = match Domain::create(custodians, threshold, policy, witnesses) {
            Ok(done) => done,
            Err(why) => return refused(why),
        };
        let created = domain.seal().and_then(|sealed| {
            let genesis = self.make_admin(&domain, &admin_key, nonce)?;
            Ok(DomainCreated {
                domain: SealedBlob(sealed),
                shares,
                genesis,
            })
        });
        match created {
            Ok(created) => {
                tracing::info!(domain = %hex(&domain.id()), threshold, "created a new domain");
                let mut ledger = self.open_view(&domain, true);
                if let Some(h) = record::peek(&created.genesis.principal.0) {
                    ledger.insert_own(
                        RecordId::principal(h.id),
                        Version {
                            seq: 0,
                            digest: digest_of(&created.genesis.principal.0),
                        },
                    );
                }
                self.reset_ledger(ledger);
                self.genesis_checkpoint(&domain);
                self.follower.store(false, Ordering::Relaxed);
                *state = State::Open(Arc::new(domain));
                EnclaveResponse::DomainCreated(Box::new(created))
            }
            Err(_) => EnclaveResponse::Fault(Fault::Internal),
        }
    }

    pub(super) fn submit_share(&self, session: &[u8], share: &str) -> EnclaveResponse {
        let Ok(mut state) = self.state.write() else {
            return EnclaveResponse::Fault(Fault::Internal);
        };
        let p = match &mut *state {
            State::Sealed(p) => p,
            State::Open(_) => {
                drop(state);
                return EnclaveResponse::Custody(self.custody_state());
            }
            State::Empty => return refused("this appliance has no domain to unseal"),
        };
        if !self.sessions.redeem(session) {
            return refused(
                "the share answers no attestation this enclave issued (or it expired or was used); \
                 fetch a fresh document and submit again",
            );
        }
        let submitted = match SubmittedShare::from_json(share) {
            Ok(s) => s,
            Err(e) => return refused(format!("the submitted share does not parse: {e}")),
        };
        let share = match submitted.decrypt(self.attestor.identity(), p.id, session) {
            Ok(s) => s,
            Err(e) => return refused(format!("the share was refused: {e}")),
        };
        if let Some(first) = p.shares.first()
            && (first.threshold(), first.total()) != (share.threshold(), share.total())
        {
            return refused(format!(
                "this share is from a {}-of-{} sharing, the others from {}-of-{}",
                share.threshold(),
                share.total(),
                first.threshold(),
                first.total()
            ));
        }
        if p.shares.iter().any(|s| s.index() == share.index()) {
            return refused(format!("share {} was already received", share.index()));
        }
        tracing::info!(index = share.index(), "received a custodian share");
        p.shares.push(share);
        if p.shares.len() >= usize::from(share_threshold(&p.shares)) {
            let combined = ekms_custody::combine_checked(&p.shares, p.id)
                .map_err(|e| e.to_string())
                .and_then(|secret| {
                    Domain::open(secret, &p.sealed).map_err(|_| {
                        "the reconstructed secret does not open the stored keyring".to_owned()
                    })
                });
            match combined {
                Ok(domain) => {
                    tracing::info!(domain = %hex(&domain.id()), "unsealed by the custodians");
                    let view = self.open_view(&domain, false);
                    self.reset_ledger(view);
                    self.follower.store(false, Ordering::Relaxed);
                    *state = State::Open(Arc::new(domain));
                }
                Err(why) => {
                    p.shares.clear();
                    return refused(format!(
                        "the shares do not reconstruct domain {} ({why}); every share received \
                         was discarded: submit again",
                        hex(&p.id)
                    ));
                }
            }
        }
        drop(state);
        EnclaveResponse::Custody(self.custody_state())
    }

    /// A new keyring generation made by `f`, sealed for the host to store (not yet in use).
    pub(super) fn stage(
        &self,
        f: impl FnOnce(&Domain) -> Result<Domain, EnclaveError>,
    ) -> EnclaveResponse {
        let Some(d) = self.domain() else {
            return EnclaveResponse::Fault(Fault::Sealed);
        };
        match f(&d).and_then(|next| next.seal()) {
            Ok(sealed) => EnclaveResponse::DomainStaged {
                domain: SealedBlob(sealed),
            },
            Err(_) => EnclaveResponse::Fault(Fault::Internal),
        }
    }
}

pub(super) fn share_threshold(shares: &[Share]) -> u8 {
    shares.first().map_or(u8::MAX, Share::threshold)
}

pub(crate) const BASE32: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
pub(crate) const ALNUM: &[u8; 62] =
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

pub(crate) fn random_string(alphabet: &[u8], len: usize) -> Result<String, EnclaveError> {
    let mut out = String::with_capacity(len);
    let mut buf = [0u8; 1];
    // Rejection sampling keeps the distribution uniform.
    let limit = 256 - (256 % alphabet.len());
    while out.len() < len {
        rand::fill(&mut buf)?;
        let b = usize::from(buf[0]);
        if b < limit
            && let Some(&c) = alphabet.get(b % alphabet.len())
        {
            out.push(char::from(c));
        }
    }
    Ok(out)
}

impl Core {
    /// The genesis admin: a principal sealed under the current domain key for the host to store,
    /// and its secret encrypted to `admin_key` with a document over the operator's `nonce`.
    pub(super) fn make_admin(
        &self,
        domain: &Domain,
        admin_key: &P384PublicKey,
        nonce: &[u8],
    ) -> Result<Genesis, EnclaveError> {
        let (key, user_id) = new_access_key(self.clock.now().timestamp_millis())?;
        let access_key_id = key.id.clone();
        let mut record = PrincipalRecord::new(
            crate::principal::ADMIN_NAME,
            user_id,
            key,
            Some(crate::policy::ADMIN_POLICY.to_owned()),
        );
        record.generation = 0;
        let sealed = record::seal(
            domain.keyring().current(),
            Kind::Principal,
            &record.id,
            &record,
        )?;
        let secret = record
            .secret_of(&access_key_id)
            .ok_or(EnclaveError::Encoding)?;
        let delivered = delivery::seal_secret_for(
            &self.attestor,
            admin_key,
            nonce,
            domain.id(),
            (SecretKind::Credential, access_key_id.as_str()),
            secret.0.as_bytes(),
        )?;
        Ok(Genesis {
            principal: SealedBlob(sealed),
            access_key_id,
            sealed_secret: delivered.sealed,
            document: delivered.document,
        })
    }
}

/// A fresh access key made at `now_ms`, and a fresh IAM-style user id for a new principal.
pub(crate) fn new_access_key(
    now_ms: i64,
) -> Result<(crate::principal::AccessKey, String), EnclaveError> {
    let key = crate::principal::AccessKey {
        id: format!("EKMS{}", random_string(BASE32, 16)?),
        secret: crate::record::PrincipalSecret(random_string(ALNUM, 40)?),
        created_ms: now_ms,
    };
    Ok((key, format!("AIDA{}", random_string(BASE32, 17)?)))
}

impl Core {
    /// Encrypts the secret of access key `akid` to the receiver's one-off key (custodian key
    /// JSON) and attests to it over the receiver's `nonce`: only that receiver opens it, and it
    /// knows the secret came from this domain's enclave.
    pub(crate) fn deliver_credential(
        &self,
        recipient_json: &str,
        nonce: &[u8],
        akid: &str,
        secret: &crate::record::PrincipalSecret,
    ) -> Result<delivery::Delivered, EnclaveError> {
        let to = delivery::recipient(recipient_json)?;
        let domain = self.domain().ok_or(EnclaveError::Sealed)?;
        delivery::seal_secret_for(
            &self.attestor,
            &to,
            nonce,
            domain.id(),
            (SecretKind::Credential, akid),
            secret.0.as_bytes(),
        )
    }
}
