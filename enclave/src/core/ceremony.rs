//! Custody of the domain inside the enclave: learn the stored domain, create a new one (with
//! its genesis admin), take custodians' shares, stage rotations.

use super::{
    Arc, Core, Domain, DomainCreated, DomainSecret, EnclaveError, EnclaveResponse, Fault, Genesis,
    Kind, Ordering, P384PublicKey, Pending, PrincipalRecord, Received, RecordId, Refusal,
    SealedBlob, SecretKind, Share, State, SubmittedShare, Version, delivery, digest_of, hex,
    peek_domain, rand, record, refused,
};
use ekms_custody::CustodyError;

impl Core {
    pub(super) fn load_domain(&self, sealed: Vec<u8>) -> EnclaveResponse {
        let Some(h) = peek_domain(&sealed) else {
            return refused("the stored domain record is not a sealed keyring");
        };
        let (id, generation) = (h.domain, h.generation);
        let (threshold, total, custodians) = (h.threshold, h.total, h.custodians);
        let Ok(mut state) = self.state.write() else {
            return EnclaveResponse::Fault(Fault::Internal);
        };
        match &mut *state {
            State::Empty => {
                *state = State::Sealed(Pending {
                    sealed,
                    id,
                    threshold,
                    total,
                    custodians,
                    shares: Vec::new(),
                });
            }
            State::Sealed(p) if p.id == id => {
                // The host may show another copy (a newer generation, or an edited header).
                // Shares taken under a list that no longer names their signer at their index,
                // or of another sharing, are let go; the rest stay.
                p.shares.retain(|r| {
                    (r.share.threshold(), r.share.total()) == (threshold, total)
                        && custodians.as_ref().is_none_or(|list| {
                            list.get(usize::from(r.share.index()).wrapping_sub(1))
                                == Some(&r.signer)
                        })
                });
                p.sealed = sealed;
                p.threshold = threshold;
                p.total = total;
                p.custodians = custodians;
            }
            State::Sealed(p) => {
                *p = Pending {
                    sealed,
                    id,
                    threshold,
                    total,
                    custodians,
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

    /// A custodian's signed share. Every check that can refuse a stranger comes before anything
    /// is decrypted or kept: the share's sharing and index against the stored record's header,
    /// the signer against the custodian the header lists at that index, the signature (over
    /// this enclave's identity key, the session and the sealed share), and that the custodian
    /// did not use this session before in this start. So a forged, misplaced or replayed
    /// submission takes no slot and discards nothing.
    pub(super) fn submit_share(&self, session: &[u8], share: &str) -> EnclaveResponse {
        let submitted = match SubmittedShare::from_json(share) {
            Ok(s) => s,
            Err(CustodyError::UnsupportedVersion(1)) => {
                return refused(
                    "the submission is unsigned (format version 1): custodians now sign their \
                     shares; update ekms and run `ekms custodian unseal` again",
                );
            }
            Err(e) => return refused(format!("the submitted share does not parse: {e}")),
        };
        let Ok(identity) = P384PublicKey::from_sec1(self.attestor.identity_public()) else {
            return EnclaveResponse::Fault(Fault::Internal);
        };
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
        let index = submitted.index();
        if (submitted.threshold(), submitted.total()) != (p.threshold, p.total) {
            return refused(format!(
                "the share was refused: it is from a {}-of-{} sharing; the stored domain record \
                 is {}-of-{}",
                submitted.threshold(),
                submitted.total(),
                p.threshold,
                p.total
            ));
        }
        let custodian = match &p.custodians {
            Some(list) => match list.get(usize::from(index).wrapping_sub(1)) {
                Some(fp) => Some(*fp),
                None => {
                    return refused(format!(
                        "the share was refused: the domain lists no custodian {index}"
                    ));
                }
            },
            None => None,
        };
        let verified = match submitted.verify(&identity, p.id, custodian, session) {
            Ok(v) => v,
            Err(e) => return refused(format!("the share was refused: {e}")),
        };
        // Authenticated from here: the custodian of this index signed it for this enclave.
        if let Err(why) = self
            .sessions
            .use_custody_session(verified.signer(), session)
        {
            return refused(format!(
                "the share was refused: {why}; fetch a fresh attestation document and submit \
                 again"
            ));
        }
        if p.shares.iter().any(|r| r.share.index() == index) {
            return refused(format!("share {index} was already received"));
        }
        let share = match verified.decrypt(self.attestor.identity()) {
            Ok(s) => s,
            Err(e) => return refused(format!("the share was refused: {e}")),
        };
        tracing::info!(index, "received a custodian's signed share");
        p.shares.push(Received {
            share,
            signer: verified.signer(),
        });
        if p.shares.len() >= usize::from(p.threshold) {
            match reconstruct(p) {
                Ok(domain) => {
                    tracing::info!(domain = %hex(&domain.id()), "unsealed by the custodians");
                    let view = self.open_view(&domain, false);
                    self.reset_ledger(view);
                    self.follower.store(false, Ordering::Relaxed);
                    *state = State::Open(Arc::new(domain));
                }
                Err(why) => return refused(why),
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

/// Reconstructs the domain from the shares held (at least the threshold), newest last.
///
/// Shares checked against the header's custodian list (version 2) are each their custodian's
/// own, so one that does not fit (a damaged share file) is no reason to drop the others: every
/// threshold-sized set that includes the newest share is tried (sets without it were tried
/// before), and the shares are kept for the next custodian unless every custodian's share is
/// already held. Shares of a version 1 record (no list) may be anyone's: a failure discards
/// them all, as before there were lists.
fn reconstruct(p: &mut Pending) -> Result<Domain, Refusal> {
    let threshold = usize::from(p.threshold);
    let authenticated = p.custodians.is_some();
    let sets = if authenticated {
        sets_with_newest(p.shares.len(), threshold)
    } else {
        vec![(0..p.shares.len()).collect()]
    };
    for set in &sets {
        let shares = set
            .iter()
            .filter_map(|&i| p.shares.get(i))
            .filter_map(|r| copy_share(&r.share))
            .collect::<Vec<_>>();
        if let Ok(secret) = ekms_custody::combine_checked(&shares, p.id)
            && let Ok(domain) = Domain::open(secret, &p.sealed)
        {
            return Ok(domain);
        }
    }
    let held = p.shares.len();
    if authenticated && held < usize::from(p.total) {
        return Err(format!(
            "your share was kept, but no {threshold} of the {held} shares held reconstruct \
             domain {} (a custodian's share file may be damaged, or the stored domain record is \
             not this domain's): each further custodian's share is tried with them",
            hex(&p.id)
        ));
    }
    p.shares.clear();
    Err(if authenticated {
        format!(
            "every custodian's share is held and no {threshold} of them reconstruct domain {}: \
             the stored domain record or the share files are not this domain's; every share was \
             discarded",
            hex(&p.id)
        )
    } else {
        format!(
            "the shares do not reconstruct domain {} (its stored record is version 1, which \
             lists no custodians, so any of them may be a stranger's); every share received was \
             discarded: submit again",
            hex(&p.id)
        )
    })
}

/// Every set of `size` indices out of `0..held` that includes `held - 1` (the newest share).
fn sets_with_newest(held: usize, size: usize) -> Vec<Vec<usize>> {
    fn choose(
        from: usize,
        left: usize,
        below: usize,
        cur: &mut Vec<usize>,
        out: &mut Vec<Vec<usize>>,
    ) {
        if left == 0 {
            out.push(cur.clone());
            return;
        }
        for i in from..below {
            if below - i < left {
                break;
            }
            cur.push(i);
            choose(i + 1, left - 1, below, cur, out);
            cur.pop();
        }
    }
    let (Some(newest), Some(others)) = (held.checked_sub(1), size.checked_sub(1)) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut cur = Vec::with_capacity(size);
    choose(0, others, newest, &mut cur, &mut out);
    for set in &mut out {
        set.push(newest);
    }
    out
}

/// A copy of a share for one reconstruction attempt (zeroized on drop like the original).
fn copy_share(s: &Share) -> Option<Share> {
    Share::new(s.index(), s.threshold(), s.total(), *s.expose()).ok()
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
