//! The enclave's state and its request handler: the custody state (empty, sealed, unsealed),
//! the attestation sessions it issued, and the authenticated view of the latest version of
//! every record ([`Ledger`]).

use std::{
    collections::VecDeque,
    sync::{
        Arc, Mutex, MutexGuard, RwLock,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use aws_lc_rs::{digest, rand};
use ekms_custody::{DomainSecret, P384PublicKey, SecretKind, Share, SubmittedShare};
use ekms_wire::{
    msg::{
        CustodyState, DomainCreated, EnclaveResponse, Fault, Genesis, HostRequest, KmsCall,
        KmsErrorCode, KmsOutcome, SealedBlob, StatusInfo, StoreWrite,
    },
    sealed::peek_domain,
};

use crate::{
    EnclaveError,
    attest::Attestor,
    custody::{Domain, Refusal},
    delivery,
    domain::{Keyring, hex},
    ledger::{Ledger, LedgerError, RecordId, Version, digest_of},
    ops,
    record::{self, AliasRecord, KeyRecord, KeyState, Kind, PrincipalRecord},
};

/// Label and AAD prefix of a custody secret forwarded to a peer enclave.
const PEER_GRANT_LABEL: &[u8] = b"ekms/v1/peer-grant";
/// How long an issued attestation nonce stays redeemable.
const SESSION_TTL: Duration = Duration::from_mins(10);
/// Most outstanding sessions kept (the oldest are forgotten first).
const MAX_SESSIONS: usize = 1024;

/// Settings of the enclave.
#[derive(Debug, Clone)]
pub struct Config {
    /// Region in ARNs and in the SigV4 credential scope.
    pub region: String,
    /// Account id in ARNs.
    pub account: String,
}

/// Where this enclave is in the custody life cycle.
#[derive(Debug)]
enum State {
    /// No domain: `InitDomain` creates one.
    Empty,
    /// The stored keyring is known; shares (or a peer) are awaited.
    Sealed(Pending),
    /// Serving.
    Open(Arc<Domain>),
}

/// A sealed domain and the shares received so far.
#[derive(Debug)]
struct Pending {
    sealed: Vec<u8>,
    id: [u8; 8],
    /// Threshold named by the stored keyring's header (a hint until the keyring opens).
    threshold: u8,
    shares: Vec<Share>,
}

/// Nonces this enclave put in attestation documents, redeemable once (a custodian's share or a
/// peer's document must answer one of them).
#[derive(Debug, Default)]
struct Sessions(Mutex<VecDeque<(Vec<u8>, Instant)>>);

impl Sessions {
    fn issue(&self, nonce: &[u8]) {
        if let Ok(mut s) = self.0.lock() {
            if s.len() >= MAX_SESSIONS {
                s.pop_front();
            }
            s.push_back((nonce.to_vec(), Instant::now()));
        }
    }

    /// Redeems `nonce`: true once per issue, within [`SESSION_TTL`].
    fn redeem(&self, nonce: &[u8]) -> bool {
        let Ok(mut s) = self.0.lock() else {
            return false;
        };
        s.retain(|(_, at)| at.elapsed() < SESSION_TTL);
        match s.iter().position(|(n, _)| n == nonce) {
            Some(i) => s.remove(i).is_some(),
            None => false,
        }
    }
}

/// The enclave.
#[derive(Debug)]
pub struct Core {
    pub(crate) config: Config,
    attestor: Attestor,
    state: RwLock<State>,
    sessions: Sessions,
    /// The latest version of every record of the domain.
    ledger: Mutex<Ledger>,
    /// Set when a peer forwarded the domain: this enclave follows that one and serves no KMS
    /// calls (one writer per domain, so there is one view of the state).
    follower: AtomicBool,
    /// State-changing requests already run (replay refusal).
    pub(crate) replay: crate::replay::ReplayCache,
}

fn refused(why: impl Into<Refusal>) -> EnclaveResponse {
    EnclaveResponse::Refused(why.into())
}

impl Core {
    /// An enclave with no domain yet: the host loads the stored one, or creates one.
    #[must_use]
    pub fn new(config: Config, attestor: Attestor) -> Self {
        Self {
            config,
            attestor,
            state: RwLock::new(State::Empty),
            sessions: Sessions::default(),
            ledger: Mutex::new(Ledger::loading()),
            follower: AtomicBool::new(false),
            replay: crate::replay::ReplayCache::new(chrono::Utc::now()),
        }
    }

    /// The state view.
    pub(crate) fn ledger(&self) -> Result<MutexGuard<'_, Ledger>, EnclaveError> {
        self.ledger.lock().map_err(|_| EnclaveError::Crypto)
    }

    pub(crate) fn reset_ledger(&self, ledger: Ledger) {
        if let Ok(mut l) = self.ledger.lock() {
            *l = ledger;
        }
    }

    /// The unsealed domain, if any.
    fn domain(&self) -> Option<Arc<Domain>> {
        match &*self.state.read().ok()? {
            State::Open(d) => Some(Arc::clone(d)),
            _ => None,
        }
    }

    /// The public custody state.
    pub fn custody_state(&self) -> CustodyState {
        let Ok(state) = self.state.read() else {
            return CustodyState::Uninitialised;
        };
        match &*state {
            State::Empty => CustodyState::Uninitialised,
            State::Sealed(p) => CustodyState::Sealed {
                domain: hex(&p.id),
                have: u8::try_from(p.shares.len()).unwrap_or(u8::MAX),
                need: Some(p.shares.first().map_or(p.threshold, Share::threshold)),
            },
            State::Open(d) => d.state(),
        }
    }

    /// Handles one host request.
    pub async fn handle(&self, req: HostRequest) -> EnclaveResponse {
        match req {
            HostRequest::Status => EnclaveResponse::Status(StatusInfo {
                region: self.config.region.clone(),
                account: self.config.account.clone(),
                custody: self.custody_state(),
                simulation: self.attestor.is_simulation(),
                ledger_ready: self.ledger().is_ok_and(|l| l.is_ready()),
                follower: self.follower.load(Ordering::Relaxed),
            }),
            HostRequest::Kms(call) => self.kms(&call).await,
            HostRequest::Attest { nonce } => {
                let (domain, state) = match self.custody_state() {
                    CustodyState::Uninitialised => ("none".to_owned(), "uninitialised"),
                    CustodyState::Sealed { domain, .. } => (domain, "sealed"),
                    CustodyState::Unsealed { domain, .. } => (domain, "unsealed"),
                };
                let user_data = format!("ekms/v1 domain={domain} state={state}");
                match self.attestor.document(&nonce, user_data.as_bytes()) {
                    Ok(document) => {
                        self.sessions.issue(&nonce);
                        EnclaveResponse::Attestation { document }
                    }
                    Err(EnclaveError::BadInput) => EnclaveResponse::Fault(Fault::BadInput),
                    Err(_) => EnclaveResponse::Fault(Fault::Internal),
                }
            }
            HostRequest::Open { sealed } => match self.domain() {
                Some(d) => match open_any(d.keyring(), &sealed) {
                    Ok((kind, id)) => EnclaveResponse::Opened { kind, id },
                    Err(_) => EnclaveResponse::Fault(Fault::BadRecord),
                },
                None => EnclaveResponse::Fault(Fault::Sealed),
            },
            HostRequest::LoadDomain { domain } => self.load_domain(domain.0),
            HostRequest::InitDomain {
                custodians,
                threshold,
                admin_key,
                nonce,
            } => self.init_domain(&custodians, threshold, &admin_key, &nonce),
            HostRequest::SubmitShare { session, share } => self.submit_share(&session, &share),
            HostRequest::RotateDomain => self.stage(Domain::rotated),
            HostRequest::RetireDomainKeys => self.stage(Domain::retired),
            HostRequest::Reseal { sealed } => match self.domain() {
                Some(d) => match self.reseal(d.keyring(), &sealed) {
                    Ok(w) => EnclaveResponse::Resealed(w),
                    Err(EnclaveError::StaleRecord) => EnclaveResponse::Fault(Fault::StaleRecord),
                    Err(_) => EnclaveResponse::Fault(Fault::BadRecord),
                },
                None => EnclaveResponse::Fault(Fault::Sealed),
            },
            HostRequest::PeerChallenge => self.peer_challenge(),
            HostRequest::PeerHello { challenge } => self.peer_hello(&challenge),
            HostRequest::PeerGrant {
                document,
                challenge,
            } => self.peer_grant(&document, &challenge),
            HostRequest::PeerAccept { document, grant } => self.peer_accept(&document, &grant),
            HostRequest::Commit { tokens } => self.commit(&tokens),
            HostRequest::LoadRecords { records, done } => self.load_records(&records, done),
            HostRequest::Sweep { keys } => match self.domain() {
                Some(d) => match self.sweep(d.keyring(), &keys, chrono::Utc::now()) {
                    Ok((writes, token)) => EnclaveResponse::Swept { writes, token },
                    Err(_) => EnclaveResponse::Fault(Fault::Internal),
                },
                None => EnclaveResponse::Fault(Fault::Sealed),
            },
        }
    }

    /// Applies prepared writes the host made durable.
    fn commit(&self, tokens: &[u64]) -> EnclaveResponse {
        let Ok(mut ledger) = self.ledger() else {
            return EnclaveResponse::Fault(Fault::Internal);
        };
        let mut refused = 0usize;
        for t in tokens {
            if ledger.commit(*t).is_err() {
                refused += 1;
            }
        }
        drop(ledger);
        if refused > 0 {
            tracing::warn!(
                refused,
                "commits that do not apply to the current state were refused"
            );
            return EnclaveResponse::Fault(Fault::StaleRecord);
        }
        EnclaveResponse::Committed
    }

    /// Builds the state view from the stored records after an unseal.
    fn load_records(&self, records: &[SealedBlob], done: bool) -> EnclaveResponse {
        let Some(d) = self.domain() else {
            return EnclaveResponse::Fault(Fault::Sealed);
        };
        let Ok(mut ledger) = self.ledger() else {
            return EnclaveResponse::Fault(Fault::Internal);
        };
        if ledger.is_ready() {
            return EnclaveResponse::Loaded {
                records: ledger.len() as u64,
                ready: true,
            };
        }
        for sealed in records {
            // A record that does not open is not part of the state: it is refused when shown.
            if let Ok(i) = record::index(d.keyring(), &sealed.0) {
                ledger.ingest(
                    i.id,
                    Version {
                        seq: i.generation,
                        digest: digest_of(&sealed.0),
                    },
                    i.live,
                    i.target,
                );
            } else {
                tracing::warn!("a stored record does not open; it is left out");
            }
        }
        if done {
            ledger.finish_load();
            tracing::info!(
                records = ledger.len(),
                seq = ledger.seq(),
                "state view loaded; serving"
            );
        }
        EnclaveResponse::Loaded {
            records: ledger.len() as u64,
            ready: ledger.is_ready(),
        }
    }

    /// The deletions due among `keys` by this enclave's clock: each key and its aliases become
    /// tombstones. Keys not due, not current, or not this domain's are left alone.
    pub(crate) fn sweep(
        &self,
        keys: &Keyring,
        candidates: &[SealedBlob],
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<(Vec<StoreWrite>, u64), EnclaveError> {
        let now_ms = now.timestamp_millis();
        let mut writes = Vec::new();
        let mut changes = Vec::new();
        for sealed in candidates {
            let Ok(rec) = record::open::<KeyRecord>(keys, Kind::Key, None, &sealed.0) else {
                continue;
            };
            let Some(id) = RecordId::key(&rec.key_id) else {
                continue;
            };
            let Ok(version) = self.ledger()?.check(&id, rec.generation, &sealed.0) else {
                continue;
            };
            if rec.state != KeyState::PendingDeletion || rec.deletion_ms.is_none_or(|d| d > now_ms)
            {
                continue;
            }
            let RecordId::Key(target) = id else { continue };
            let aliases = {
                let l = self.ledger()?;
                let (names, _) = l.aliases_of(target, None, usize::MAX);
                names
                    .into_iter()
                    .filter_map(|n| l.current(&RecordId::Alias(n.clone())).map(|v| (n, v)))
                    .collect::<Vec<_>>()
            };
            for (name, v) in aliases {
                let (w, c) = ops::tombstone_write(self, keys, Kind::Alias, &name, v, now_ms)?;
                writes.push(w);
                changes.push(c);
            }
            let (w, c) = ops::tombstone_write(self, keys, Kind::Key, &rec.key_id, version, now_ms)?;
            writes.push(w);
            changes.push(c);
        }
        if changes.is_empty() {
            return Ok((writes, 0));
        }
        let token = self.ledger()?.prepare(changes);
        Ok((writes, token))
    }

    async fn kms(&self, call: &KmsCall) -> EnclaveResponse {
        let Some(domain) = self.domain() else {
            let why = match self.custody_state() {
                CustodyState::Sealed { have, need, .. } => format!(
                    "The key domain is sealed: this enclave restarted and holds {have} of {} \
                     custodian shares. Retry after the custodians unseal it (ekms custodian unseal) \
                     or a peer forwards it.",
                    need.map_or_else(|| "the needed".to_owned(), |n| n.to_string())
                ),
                _ => "The appliance has no key domain yet: run `ekms domain init`. Retry after."
                    .to_owned(),
            };
            return EnclaveResponse::Kms(KmsOutcome::Err {
                code: KmsErrorCode::KMSInternalException,
                message: why,
            });
        };
        if self.follower.load(Ordering::Relaxed) {
            return EnclaveResponse::Fault(Fault::NotWriter);
        }
        if !self.ledger().is_ok_and(|l| l.is_ready()) {
            return EnclaveResponse::Fault(Fault::NotLoaded);
        }
        let now = chrono::Utc::now();
        match ops::execute(self, domain.keyring(), call, now).await {
            Ok((body, writes, token)) => EnclaveResponse::Kms(KmsOutcome::Ok {
                body,
                writes,
                token,
            }),
            Err(ops::OpError::Kms(e)) => EnclaveResponse::Kms(KmsOutcome::Err {
                code: e.code,
                message: e.message,
            }),
            Err(ops::OpError::Stale) => EnclaveResponse::Fault(Fault::StaleRecord),
        }
    }

    fn load_domain(&self, sealed: Vec<u8>) -> EnclaveResponse {
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
    fn init_domain(
        &self,
        custodians: &[String],
        threshold: u8,
        admin_key: &str,
        nonce: &[u8],
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
        let (domain, shares) = match Domain::create(custodians, threshold, policy) {
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
                let mut ledger = Ledger::new_ready();
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
                self.follower.store(false, Ordering::Relaxed);
                *state = State::Open(Arc::new(domain));
                EnclaveResponse::DomainCreated(Box::new(created))
            }
            Err(_) => EnclaveResponse::Fault(Fault::Internal),
        }
    }

    fn submit_share(&self, session: &[u8], share: &str) -> EnclaveResponse {
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
                    self.reset_ledger(Ledger::loading());
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
    fn stage(&self, f: impl FnOnce(&Domain) -> Result<Domain, EnclaveError>) -> EnclaveResponse {
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

    /// The write that re-seals `sealed` under the current domain key, if another key sealed it.
    fn reseal(
        &self,
        keys: &Keyring,
        sealed: &SealedBlob,
    ) -> Result<Option<(StoreWrite, u64)>, EnclaveError> {
        let h = record::peek(&sealed.0).ok_or(EnclaveError::BadRecord)?;
        let current = keys.current();
        if h.domain == current.fingerprint() {
            return Ok(None);
        }
        let id = h.id.to_owned();
        let (write, change) = match h.kind {
            1 => {
                let mut rec: KeyRecord = record::open(keys, Kind::Key, Some(&id), &sealed.0)?;
                let rid = RecordId::key(&id).ok_or(EnclaveError::BadRecord)?;
                rec.opened = Some(self.check_current(&rid, rec.generation, &sealed.0)?);
                ops::key_write(self, keys, &mut rec)?
            }
            2 => {
                let mut rec: AliasRecord = record::open(keys, Kind::Alias, Some(&id), &sealed.0)?;
                rec.opened =
                    Some(self.check_current(&RecordId::alias(&id), rec.generation, &sealed.0)?);
                ops::alias_write(self, keys, &mut rec)?
            }
            3 => {
                let mut rec: PrincipalRecord =
                    record::open(keys, Kind::Principal, Some(&id), &sealed.0)?;
                let rid = RecordId::principal(&id);
                let opened = self.check_current(&rid, rec.generation, &sealed.0)?;
                rec.generation = self.ledger()?.next_seq();
                let resealed = record::seal(current, Kind::Principal, &id, &rec)?;
                let change = crate::ledger::Change {
                    id: rid,
                    expected: Some(opened),
                    new: Version {
                        seq: rec.generation,
                        digest: digest_of(&resealed),
                    },
                    live: true,
                    target: None,
                };
                (
                    StoreWrite::PutPrincipal {
                        sealed: SealedBlob(resealed),
                        access_key_id: id,
                    },
                    change,
                )
            }
            _ => return Err(EnclaveError::BadRecord),
        };
        let token = self.ledger()?.prepare(vec![change]);
        Ok(Some((write, token)))
    }

    /// Checks that `sealed` is the current copy of `id` in the state view.
    pub(crate) fn check_current(
        &self,
        id: &RecordId,
        generation: u64,
        sealed: &[u8],
    ) -> Result<Version, EnclaveError> {
        self.ledger()?
            .check(id, generation, sealed)
            .map_err(|_: LedgerError| EnclaveError::StaleRecord)
    }

    /// Running enclave: a fresh challenge for a joining peer.
    fn peer_challenge(&self) -> EnclaveResponse {
        if self.domain().is_none() {
            return refused("this enclave is not serving a domain; it cannot forward one");
        }
        match fresh_nonce() {
            Ok(nonce) => {
                self.sessions.issue(&nonce);
                EnclaveResponse::Challenge { nonce }
            }
            Err(_) => EnclaveResponse::Fault(Fault::Internal),
        }
    }

    /// Joining enclave: attest to the running enclave's challenge, and issue our own.
    fn peer_hello(&self, challenge: &[u8]) -> EnclaveResponse {
        let id = match &*match self.state.read() {
            Ok(s) => s,
            Err(_) => return EnclaveResponse::Fault(Fault::Internal),
        } {
            State::Sealed(p) => p.id,
            State::Open(_) => return refused("this enclave already serves its domain"),
            State::Empty => return refused("this enclave has no stored domain to join"),
        };
        let user_data = format!("ekms/v1 peer-hello domain={}", hex(&id));
        let Ok(own) = fresh_nonce() else {
            return EnclaveResponse::Fault(Fault::Internal);
        };
        match self.attestor.document(challenge, user_data.as_bytes()) {
            Ok(document) => {
                self.sessions.issue(&own);
                EnclaveResponse::PeerHello {
                    document,
                    challenge: own,
                }
            }
            Err(EnclaveError::BadInput) => refused("the challenge must be 1 to 512 bytes"),
            Err(_) => EnclaveResponse::Fault(Fault::Internal),
        }
    }

    /// Running enclave: verify the joining enclave against the domain's PCR policy and our own
    /// challenge, then seal the custody secret to its attested identity key.
    fn peer_grant(&self, document: &[u8], challenge: &[u8]) -> EnclaveResponse {
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
        if !self.sessions.redeem(nonce) {
            return refused("the joining enclave's attestation answers no challenge of ours");
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
    fn peer_accept(&self, document: &[u8], grant: &[u8]) -> EnclaveResponse {
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
        if !self.sessions.redeem(&nonce) {
            return refused("the running enclave's attestation answers no challenge of ours");
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
                self.reset_ledger(Ledger::loading());
                self.follower.store(true, Ordering::Relaxed);
                *state = State::Open(Arc::new(domain));
                drop(state);
                EnclaveResponse::Custody(self.custody_state())
            }
            Err(why) => refused(format!("the peer's grant: {why}")),
        }
    }
}

fn share_threshold(shares: &[Share]) -> u8 {
    shares.first().map_or(u8::MAX, Share::threshold)
}

fn grant_aad(domain: [u8; 8], challenge: &[u8]) -> Vec<u8> {
    let mut aad = Vec::with_capacity(PEER_GRANT_LABEL.len() + 8 + challenge.len());
    aad.extend_from_slice(PEER_GRANT_LABEL);
    aad.extend_from_slice(&domain);
    aad.extend_from_slice(challenge);
    aad
}

fn fresh_nonce() -> Result<Vec<u8>, EnclaveError> {
    let mut n = vec![0u8; 32];
    rand::fill(&mut n)?;
    Ok(n)
}

fn open_any(keys: &Keyring, sealed: &SealedBlob) -> Result<(String, String), EnclaveError> {
    let h = record::peek(&sealed.0).ok_or(EnclaveError::BadRecord)?;
    let id = h.id.to_owned();
    let kind = match h.kind {
        1 => {
            record::open::<KeyRecord>(keys, Kind::Key, None, &sealed.0)?;
            "key"
        }
        2 => {
            record::open::<AliasRecord>(keys, Kind::Alias, None, &sealed.0)?;
            "alias"
        }
        3 => {
            record::open::<PrincipalRecord>(keys, Kind::Principal, None, &sealed.0)?;
            "principal"
        }
        _ => return Err(EnclaveError::BadRecord),
    };
    Ok((kind.to_owned(), id))
}

const BASE32: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
const ALNUM: &[u8; 62] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

fn random_string(alphabet: &[u8], len: usize) -> Result<String, EnclaveError> {
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
    fn make_admin(
        &self,
        domain: &Domain,
        admin_key: &P384PublicKey,
        nonce: &[u8],
    ) -> Result<Genesis, EnclaveError> {
        let access_key_id = format!("EKMS{}", random_string(BASE32, 16)?);
        let record = PrincipalRecord {
            access_key_id: access_key_id.clone(),
            secret: crate::record::PrincipalSecret(random_string(ALNUM, 40)?),
            name: "admin".into(),
            generation: 0,
        };
        let sealed = record::seal(
            domain.keyring().current(),
            Kind::Principal,
            &access_key_id,
            &record,
        )?;
        let delivered = delivery::seal_secret_for(
            &self.attestor,
            admin_key,
            nonce,
            domain.id(),
            (SecretKind::Credential, access_key_id.as_str()),
            record.secret.0.as_bytes(),
        )?;
        Ok(Genesis {
            principal: SealedBlob(sealed),
            access_key_id,
            sealed_secret: delivered.sealed,
            document: delivered.document,
        })
    }
}

/// An attestor over a mock NSM with a fresh simulation CA, for tests.
#[cfg(test)]
pub(crate) fn test_attestor() -> Attestor {
    test_attestor_for(
        &ekms_attestation::SimulationCa::generate().unwrap(),
        b"test",
    )
}

/// An attestor over a mock NSM signing with `ca`, measuring `executable`, for tests.
#[cfg(test)]
pub(crate) fn test_attestor_for(
    ca: &ekms_attestation::SimulationCa,
    executable: &[u8],
) -> Attestor {
    let ca = ekms_attestation::SimulationCa::from_bytes(&ca.to_bytes().unwrap()).unwrap();
    let root = ca.trust_root().unwrap();
    Attestor::new(
        Box::new(ekms_attestation::MockNsm::from_executable_bytes(
            ca, executable,
        )),
        root,
    )
    .unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ekms_attestation::SimulationCa;
    use ekms_custody::{CustodianKey, P384PublicKey, ShareFile};

    fn config() -> Config {
        Config {
            region: "us-east-1".into(),
            account: "111122223333".into(),
        }
    }

    fn call(c: &Core, req: HostRequest) -> EnclaveResponse {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(c.handle(req))
    }

    struct Ceremony {
        ca: SimulationCa,
        custodians: Vec<CustodianKey>,
        shares: Vec<String>,
        sealed: SealedBlob,
        genesis: Genesis,
    }

    fn init(threshold: u8, n: usize) -> (Core, Ceremony) {
        let ca = SimulationCa::generate().unwrap();
        let core = Core::new(config(), test_attestor_for(&ca, b"enclave v1"));
        let custodians: Vec<CustodianKey> =
            (0..n).map(|_| CustodianKey::generate().unwrap()).collect();
        let EnclaveResponse::DomainCreated(created) = call(
            &core,
            HostRequest::InitDomain {
                custodians: custodians
                    .iter()
                    .map(|k| k.public_key().to_json().unwrap())
                    .collect(),
                threshold,
                admin_key: custodians[0].public_key().to_json().unwrap(),
                nonce: vec![3; 32],
            },
        ) else {
            panic!("init refused")
        };
        let DomainCreated {
            domain,
            shares,
            genesis,
        } = *created;
        (
            core,
            Ceremony {
                ca,
                custodians,
                shares,
                sealed: domain,
                genesis,
            },
        )
    }

    /// What `ekms custodian unseal` does: attest with a fresh nonce, re-seal the share to the
    /// attested key, submit.
    fn submit(core: &Core, cer: &Ceremony, i: usize) -> EnclaveResponse {
        let nonce = fresh_nonce().unwrap();
        let EnclaveResponse::Attestation { document } = call(
            core,
            HostRequest::Attest {
                nonce: nonce.clone(),
            },
        ) else {
            panic!()
        };
        let v = ekms_attestation::verify(
            &document,
            &cer.ca.trust_root().unwrap(),
            ekms_attestation::ValidationTime::DocumentTimestamp,
        )
        .unwrap();
        let key = P384PublicKey::from_sec1(v.doc().public_key().unwrap()).unwrap();
        let file = ShareFile::from_json(&cer.shares[i]).unwrap();
        let submitted = file
            .reseal_for_enclave(&cer.custodians[i], &key, &nonce)
            .unwrap();
        call(
            core,
            HostRequest::SubmitShare {
                session: nonce,
                share: submitted.to_json().unwrap(),
            },
        )
    }

    fn restarted(cer: &Ceremony, exe: &[u8]) -> Core {
        let core = Core::new(config(), test_attestor_for(&cer.ca, exe));
        assert!(matches!(
            call(
                &core,
                HostRequest::LoadDomain {
                    domain: cer.sealed.clone()
                }
            ),
            EnclaveResponse::Custody(CustodyState::Sealed { have: 0, .. })
        ));
        core
    }

    fn opens_admin(core: &Core, cer: &Ceremony) -> bool {
        matches!(
            call(
                core,
                HostRequest::Open {
                    sealed: cer.genesis.principal.clone()
                }
            ),
            EnclaveResponse::Opened { .. }
        )
    }

    #[test]
    fn two_of_three_custodians_unseal_a_restarted_enclave() {
        let (first, cer) = init(2, 3);
        assert!(opens_admin(&first, &cer));
        assert!(matches!(
            call(
                &first,
                HostRequest::InitDomain {
                    custodians: vec![],
                    threshold: 1,
                    admin_key: cer.custodians[0].public_key().to_json().unwrap(),
                    nonce: vec![3; 32],
                }
            ),
            EnclaveResponse::Refused(_)
        ));
        let core = restarted(&cer, b"enclave v1");
        assert!(!opens_admin(&core, &cer));
        let EnclaveResponse::Custody(CustodyState::Sealed {
            have: 1,
            need: Some(2),
            ..
        }) = submit(&core, &cer, 2)
        else {
            panic!()
        };
        // The same share again is refused; nothing is unsealed by one share.
        assert!(matches!(
            submit(&core, &cer, 2),
            EnclaveResponse::Refused(_)
        ));
        assert!(!opens_admin(&core, &cer));
        let EnclaveResponse::Custody(CustodyState::Unsealed {
            threshold: 2,
            total: 3,
            ..
        }) = submit(&core, &cer, 0)
        else {
            panic!()
        };
        assert!(opens_admin(&core, &cer));
    }

    #[test]
    fn the_admin_secret_leaves_only_sealed_to_the_admin_key_and_attested() {
        let (core, cer) = init(2, 3);
        let g = &cer.genesis;
        let v = ekms_attestation::verify(
            &g.document,
            &cer.ca.trust_root().unwrap(),
            ekms_attestation::ValidationTime::DocumentTimestamp,
        )
        .unwrap();
        assert_eq!(v.doc().nonce(), Some(&[3u8; 32][..]));
        let id = peek_domain(&cer.sealed.0).unwrap().domain;
        assert!(
            matches!(core.custody_state(), CustodyState::Unsealed { domain, .. } if domain == hex(&id))
        );
        let delivery = ekms_custody::Delivery::credential(id, &g.access_key_id, &[3; 32]).unwrap();
        delivery
            .check_user_data(&g.sealed_secret, v.doc().user_data())
            .unwrap();
        let secret = delivery
            .open(cer.custodians[0].agreement_key(), &g.sealed_secret)
            .unwrap();
        assert_eq!(secret.len(), 40);
        assert!(secret.iter().all(u8::is_ascii_alphanumeric));
        // Another custodian's key does not open it; the secret is nowhere in what the host gets
        // (every field of the answer, as serialized for the wire).
        assert!(
            delivery
                .open(cer.custodians[1].agreement_key(), &g.sealed_secret)
                .is_err()
        );
        let answer = serde_cbor::to_vec(&(&cer.sealed, &cer.shares, g)).unwrap();
        assert!(answer.len() > g.document.len());
        assert!(!answer.windows(secret.len()).any(|w| w == &secret[..]));
        assert!(!format!("{g:?}").contains(std::str::from_utf8(&secret).unwrap()));
    }

    #[test]
    fn init_refuses_a_bad_admin_key_or_nonce_and_creates_nothing() {
        let core = Core::new(config(), test_attestor());
        let custodian = CustodianKey::generate()
            .unwrap()
            .public_key()
            .to_json()
            .unwrap();
        for (admin_key, nonce) in [
            ("not a key".to_owned(), vec![1; 32]),
            (custodian.clone(), vec![]),
            (custodian.clone(), vec![1; 513]),
        ] {
            assert!(matches!(
                call(
                    &core,
                    HostRequest::InitDomain {
                        custodians: vec![custodian.clone()],
                        threshold: 1,
                        admin_key,
                        nonce,
                    }
                ),
                EnclaveResponse::Refused(_)
            ));
            assert_eq!(core.custody_state(), CustodyState::Uninitialised);
        }
    }

    #[test]
    fn shares_must_answer_an_issued_session_and_the_right_domain() {
        let (_, cer) = init(2, 3);
        let core = restarted(&cer, b"enclave v1");
        // A session the enclave never issued.
        let file = ShareFile::from_json(&cer.shares[0]).unwrap();
        let EnclaveResponse::Attestation { document } =
            call(&core, HostRequest::Attest { nonce: vec![1; 16] })
        else {
            panic!()
        };
        let doc = ekms_attestation::AttestationDoc::parse_unverified(&document).unwrap();
        let key = P384PublicKey::from_sec1(doc.public_key().unwrap()).unwrap();
        let submitted = file
            .reseal_for_enclave(&cer.custodians[0], &key, &[2; 16])
            .unwrap();
        assert!(matches!(
            call(
                &core,
                HostRequest::SubmitShare {
                    session: vec![2; 16],
                    share: submitted.to_json().unwrap()
                }
            ),
            EnclaveResponse::Refused(_)
        ));
        // Issued, but the share was sealed for another session: refused, and the session is spent.
        assert!(matches!(
            call(
                &core,
                HostRequest::SubmitShare {
                    session: vec![1; 16],
                    share: submitted.to_json().unwrap()
                }
            ),
            EnclaveResponse::Refused(_)
        ));
        // A share of another domain.
        let (_, other) = init(2, 3);
        let mixed = Ceremony {
            ca: SimulationCa::from_bytes(&cer.ca.to_bytes().unwrap()).unwrap(),
            ..other
        };
        let EnclaveResponse::Refused(why) = submit(&core, &mixed, 0) else {
            panic!()
        };
        assert!(why.contains("domain"), "{why}");
    }

    #[test]
    fn a_peer_with_the_same_measurements_is_forwarded_the_domain() {
        let (running, cer) = init(2, 3);
        let joining = restarted(&cer, b"enclave v1");
        assert!(matches!(
            peer(&running, &joining),
            EnclaveResponse::Custody(CustodyState::Unsealed { .. })
        ));
        assert!(opens_admin(&joining, &cer));
    }

    #[test]
    fn a_peer_with_other_measurements_is_refused() {
        let (running, cer) = init(2, 3);
        let joining = restarted(&cer, b"enclave v2 (patched)");
        let EnclaveResponse::Refused(why) = peer(&running, &joining) else {
            panic!()
        };
        assert!(why.contains("joining enclave"), "{why}");
        assert!(!opens_admin(&joining, &cer));
    }

    fn peer(running: &Core, joining: &Core) -> EnclaveResponse {
        let EnclaveResponse::Challenge { nonce } = call(running, HostRequest::PeerChallenge) else {
            panic!()
        };
        let EnclaveResponse::PeerHello {
            document,
            challenge,
        } = call(joining, HostRequest::PeerHello { challenge: nonce })
        else {
            panic!()
        };
        match call(
            running,
            HostRequest::PeerGrant {
                document,
                challenge,
            },
        ) {
            EnclaveResponse::PeerGranted { document, grant } => {
                // A grant replaced by the host is refused (the running enclave attested its digest).
                let mut forged = grant.clone();
                forged[120] ^= 1;
                assert!(matches!(
                    call(
                        joining,
                        HostRequest::PeerAccept {
                            document: document.clone(),
                            grant: forged
                        }
                    ),
                    EnclaveResponse::Refused(_)
                ));
                // The refusal spent the challenge: the genuine grant now needs a new round.
                assert!(matches!(
                    call(joining, HostRequest::PeerAccept { document, grant }),
                    EnclaveResponse::Refused(_)
                ));
                let EnclaveResponse::Challenge { nonce } =
                    call(running, HostRequest::PeerChallenge)
                else {
                    panic!()
                };
                let EnclaveResponse::PeerHello {
                    document,
                    challenge,
                } = call(joining, HostRequest::PeerHello { challenge: nonce })
                else {
                    panic!()
                };
                let EnclaveResponse::PeerGranted { document, grant } = call(
                    running,
                    HostRequest::PeerGrant {
                        document,
                        challenge,
                    },
                ) else {
                    panic!()
                };
                call(joining, HostRequest::PeerAccept { document, grant })
            }
            other => other,
        }
    }

    #[test]
    fn rotation_is_staged_then_adopted_and_old_records_reseal() {
        let (core, cer) = init(1, 1);
        let EnclaveResponse::DomainStaged { domain } = call(&core, HostRequest::RotateDomain)
        else {
            panic!()
        };
        // Not in use until the host stored it and loads it back.
        let CustodyState::Unsealed { keys, .. } = core.custody_state() else {
            panic!()
        };
        assert_eq!(keys.len(), 1);
        call(&core, HostRequest::LoadDomain { domain });
        let CustodyState::Unsealed {
            keys,
            generation: 2,
            ..
        } = core.custody_state()
        else {
            panic!()
        };
        assert_eq!(keys.len(), 2);
        assert!(opens_admin(&core, &cer));
        let EnclaveResponse::Resealed(Some((StoreWrite::PutPrincipal { sealed, .. }, token))) =
            call(
                &core,
                HostRequest::Reseal {
                    sealed: cer.genesis.principal.clone(),
                },
            )
        else {
            panic!()
        };
        assert!(matches!(
            call(
                &core,
                HostRequest::Commit {
                    tokens: vec![token]
                }
            ),
            EnclaveResponse::Committed
        ));
        assert_eq!(hex(&record::peek(&sealed.0).unwrap().domain), keys[1]);
        assert!(matches!(
            call(
                &core,
                HostRequest::Reseal {
                    sealed: sealed.clone()
                }
            ),
            EnclaveResponse::Resealed(None)
        ));
        let EnclaveResponse::DomainStaged { domain } = call(&core, HostRequest::RetireDomainKeys)
        else {
            panic!()
        };
        call(&core, HostRequest::LoadDomain { domain });
        let CustodyState::Unsealed {
            keys,
            generation: 3,
            ..
        } = core.custody_state()
        else {
            panic!()
        };
        assert_eq!(keys.len(), 1);
        assert!(!opens_admin(&core, &cer));
        assert!(matches!(
            call(&core, HostRequest::Open { sealed }),
            EnclaveResponse::Opened { .. }
        ));
    }

    #[test]
    fn a_sealed_enclave_refuses_kms_calls_with_a_retryable_error() {
        let (_, cer) = init(2, 3);
        let core = restarted(&cer, b"enclave v1");
        let call_ = KmsCall {
            http: ekms_wire::msg::HttpRequest {
                method: "POST".into(),
                uri: "/".into(),
                headers: vec![],
                body: vec![],
            },
            principal: None,
            keys: vec![],
            aliases: vec![],
            next_marker: None,
        };
        let EnclaveResponse::Kms(KmsOutcome::Err { code, message }) =
            call(&core, HostRequest::Kms(Box::new(call_)))
        else {
            panic!()
        };
        assert_eq!(code, KmsErrorCode::KMSInternalException);
        assert!(
            message.contains("sealed") && message.contains("holds 0"),
            "{message}"
        );
    }

    #[test]
    fn a_fresh_domain_serves_and_a_restarted_one_waits_for_its_records() {
        let (core, cer) = init(1, 1);
        let EnclaveResponse::Status(s) = call(&core, HostRequest::Status) else {
            panic!()
        };
        assert!(s.ledger_ready && !s.follower);
        let restarted = restarted(&cer, b"enclave v1");
        assert!(matches!(
            submit(&restarted, &cer, 0),
            EnclaveResponse::Custody(CustodyState::Unsealed { .. })
        ));
        let EnclaveResponse::Status(s) = call(&restarted, HostRequest::Status) else {
            panic!()
        };
        assert!(!s.ledger_ready);
        assert!(matches!(
            call(
                &restarted,
                HostRequest::LoadRecords {
                    records: vec![cer.genesis.principal.clone()],
                    done: true
                }
            ),
            EnclaveResponse::Loaded {
                records: 1,
                ready: true
            }
        ));
    }
}
