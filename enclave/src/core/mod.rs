//! The enclave's state and its request handler: the custody state (empty, sealed, unsealed),
//! the challenges and sessions that authenticated parties redeemed ([`sessions`]), and the
//! authenticated view of the latest version of every record ([`Ledger`]).

use std::sync::{
    Arc, Mutex, MutexGuard, RwLock,
    atomic::{AtomicBool, Ordering},
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
    clock::Clock,
    custody::{Domain, Refusal},
    delivery,
    domain::{Keyring, hex},
    ledger::{Ledger, LedgerError, RecordId, Version, digest_of},
    ops,
    record::{self, AliasRecord, KeyRecord, Kind, PrincipalRecord, TombstoneRecord},
};

pub(crate) mod ceremony;
mod peer;
mod records;
mod sessions;
mod witness;

use sessions::Sessions;

/// Settings of the enclave.
#[derive(Debug, Clone)]
pub struct Config {
    /// The home region: the one served before several were (its aliases keep their plain
    /// names in the store; see `ekms_wire::region`).
    pub region: String,
    /// The regions whose requests are served (the home region among them).
    pub regions: ekms_wire::region::Regions,
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
    /// Custodians named by the header.
    total: u8,
    /// The header's custodian fingerprints in share-index order (version 2); `None` for a
    /// version 1 record, whose shares cannot be checked against a list before it opens.
    custodians: Option<Vec<[u8; 16]>>,
    /// At most one share per index, each from the custodian whose signature verified.
    shares: Vec<Received>,
}

/// A share the enclave took, and who signed it.
#[derive(Debug)]
struct Received {
    share: Share,
    signer: [u8; 16],
}

/// The enclave.
#[derive(Debug)]
pub struct Core {
    pub(crate) config: Config,
    pub(crate) attestor: Attestor,
    state: RwLock<State>,
    sessions: Sessions,
    /// The latest version of every record of the domain.
    ledger: Mutex<Ledger>,
    /// Set when a peer forwarded the domain: this enclave follows that one and serves no KMS
    /// calls (one writer per domain, so there is one view of the state).
    follower: AtomicBool,
    /// State-changing requests already run (replay refusal).
    pub(crate) replay: crate::replay::ReplayCache,
    /// Witnessed rounds (as the writer) and the checkpoint held (as a witness).
    rounds: Mutex<witness::Rounds>,
    /// Last uses of keys not yet written back (`GetKeyLastUsage`).
    pub(crate) usage: crate::usage::Tracker,
    /// The time by which records are dated and key lifecycle events decided.
    pub(crate) clock: Clock,
    /// The audit chain this enclave writes.
    pub(crate) audit: crate::audit::AuditLog,
    /// Principal records opened by earlier calls, by the digest of their sealed bytes.
    pub(crate) opened: crate::opened::Opened,
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
            rounds: Mutex::new(witness::Rounds::new()),
            usage: crate::usage::Tracker::new(chrono::Utc::now().timestamp_millis()),
            clock: Clock::system(),
            audit: crate::audit::AuditLog::default(),
            opened: crate::opened::Opened::default(),
        }
    }

    /// This enclave with `clock`. A shifted clock is for simulation only: refused
    /// ([`EnclaveError::SimulationOnly`]) unless attestation comes from the mock NSM.
    pub fn with_clock(mut self, clock: Clock) -> Result<Self, EnclaveError> {
        if clock.is_shifted() && !self.attestor.is_simulation() {
            return Err(EnclaveError::SimulationOnly);
        }
        self.clock = clock;
        Ok(self)
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
    /// The domain's id (hex), once there is a domain.
    pub(crate) fn domain_hex(&self) -> String {
        self.domain().map(|d| hex(&d.id())).unwrap_or_default()
    }

    pub(crate) fn domain(&self) -> Option<Arc<Domain>> {
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
                need: Some(p.threshold),
            },
            State::Open(d) => d.state(),
        }
    }

    /// Handles one host request.
    pub fn handle(&self, req: HostRequest) -> EnclaveResponse {
        match req {
            HostRequest::Status => EnclaveResponse::Status(StatusInfo {
                region: self.config.region.clone(),
                account: self.config.account.clone(),
                custody: self.custody_state(),
                simulation: self.attestor.is_simulation(),
                ledger_ready: self.ledger().is_ok_and(|l| l.is_ready()),
                follower: self.follower.load(Ordering::Relaxed),
                witnesses: self.domain().map_or(0, |d| d.witnesses()),
                fresh: self.domain().is_some_and(|d| self.is_fresh(&d)),
                audit_key: self.domain().and_then(|d| crate::audit::public_key(&d)),
            }),
            req @ (HostRequest::AuditCheckpoint { .. }
            | HostRequest::AuditDrain
            | HostRequest::AuditResume { .. }) => self.audit_request(req),
            HostRequest::Kms(call) => self.kms(&call),
            HostRequest::Xks(call) => crate::xks::call(self, &call),
            HostRequest::Attest { nonce } => {
                let (domain, state) = match self.custody_state() {
                    CustodyState::Uninitialised => ("none".to_owned(), "uninitialised"),
                    CustodyState::Sealed { domain, .. } => (domain, "sealed"),
                    CustodyState::Unsealed { domain, .. } => (domain, "unsealed"),
                };
                let user_data = format!("ekms/v1 domain={domain} state={state}");
                // Anonymous: the document is the whole answer and nothing is remembered. A
                // custodian's nonce is remembered only once its signed share verifies.
                match self.attestor.document(&nonce, user_data.as_bytes()) {
                    Ok(document) => EnclaveResponse::Attestation { document },
                    Err(EnclaveError::BadInput) => EnclaveResponse::Fault(Fault::BadInput),
                    Err(_) => EnclaveResponse::Fault(Fault::Internal),
                }
            }
            HostRequest::Open { sealed } => match self.domain() {
                Some(d) => match records::open_any(d.keyring(), &sealed) {
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
                witnesses,
            } => self.init_domain(&custodians, threshold, &admin_key, &nonce, witnesses),
            HostRequest::SubmitShare { session, share } => self.submit_share(&session, &share),
            HostRequest::RotateDomain => self.stage(Domain::rotated),
            HostRequest::RetireDomainKeys => self.stage(Domain::retired),
            HostRequest::UpgradeDomain => self.stage(Domain::upgraded),
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
            HostRequest::Commit { tokens } => match self.domain() {
                Some(d) if d.witnesses() > 0 => EnclaveResponse::Fault(Fault::Witnessed),
                _ => self.commit(&tokens),
            },
            HostRequest::Propose { tokens } => self.propose(&tokens),
            HostRequest::Confirm { round, acks } => self.confirm_round(round, &acks),
            HostRequest::Ratify { round, acks } => self.ratify(round, &acks),
            HostRequest::Abandon { round } => self.abandon(round),
            HostRequest::WitnessQuery => self.witness_query(),
            HostRequest::WitnessAnswers { answers } => self.witness_answers(&answers),
            HostRequest::Witness { message } => self.witness_message(&message),
            HostRequest::LoadRecords { records, done } => self.load_records(&records, done),
            HostRequest::Sweep { keys } => match self.domain() {
                Some(d) => match self.sweep(d.keyring(), &keys, self.clock.now()) {
                    Ok((writes, token)) => EnclaveResponse::Swept { writes, token },
                    Err(_) => EnclaveResponse::Fault(Fault::Internal),
                },
                None => EnclaveResponse::Fault(Fault::Sealed),
            },
            HostRequest::FlushUsage => self.flush_usage(),
            HostRequest::RotateDue { keys } => match self.domain() {
                Some(d) => {
                    match ops::rotation::rotate_due(self, d.keyring(), &keys, self.clock.now()) {
                        Ok((writes, token)) => EnclaveResponse::RotatedDue { writes, token },
                        Err(_) => EnclaveResponse::Fault(Fault::Internal),
                    }
                }
                None => EnclaveResponse::Fault(Fault::Sealed),
            },
        }
    }

    /// The key usage to write back (`HostRequest::FlushUsage`).
    fn flush_usage(&self) -> EnclaveResponse {
        let Some(d) = self.domain() else {
            return EnclaveResponse::Fault(Fault::Sealed);
        };
        if self.follower.load(Ordering::Relaxed) {
            return EnclaveResponse::Fault(Fault::NotWriter);
        }
        match ops::last_usage::flush(self, d.keyring()) {
            Ok((writes, token, more)) => EnclaveResponse::UsageFlushed {
                writes,
                token,
                more,
            },
            Err(_) => EnclaveResponse::Fault(Fault::Internal),
        }
    }

    fn kms(&self, call: &KmsCall) -> EnclaveResponse {
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
            // No domain, no audit key: nothing is served, and nothing to record.
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
        if !self.is_fresh(&domain) && !recovery_call(call) {
            return EnclaveResponse::Fault(Fault::NotFresh);
        }
        if !self.audit.has_room() {
            // Not answered, so nothing to record: the host must collect the audit records
            // first (it drains them every few tens of milliseconds).
            return EnclaveResponse::Kms(KmsOutcome::Err {
                code: KmsErrorCode::ThrottlingException,
                message: AUDIT_BACKLOG.to_owned(),
            });
        }
        let now = chrono::Utc::now();
        let mut note = crate::audit::Note::default();
        let outcome = match ops::execute_noted(self, domain.keyring(), call, now, &mut note) {
            Ok((body, writes, token)) => KmsOutcome::Ok {
                body,
                writes,
                token,
            },
            Err(ops::OpError::Kms(e)) => KmsOutcome::Err {
                code: e.code,
                message: e.message,
            },
            // Not answered: the host re-reads its records and sends the call again, which is
            // recorded then.
            Err(ops::OpError::Stale) => return EnclaveResponse::Fault(Fault::StaleRecord),
        };
        let code = match &outcome {
            KmsOutcome::Ok { .. } => crate::audit::Outcome::Success,
            KmsOutcome::Err { code, .. } => crate::audit::Outcome::Error(code.name()),
        };
        self.audit.append(
            &domain,
            &self.config.account,
            call,
            &note,
            code,
            self.clock.at(now).timestamp_millis(),
        );
        EnclaveResponse::Kms(outcome)
    }
}

/// Why a call is refused while the host has not collected the audit records.
pub(crate) const AUDIT_BACKLOG: &str = "The enclave holds too many audit records the host has not \
    stored yet, and answers no call it could not record. Retry after.";

impl Core {
    /// The host's audit requests: a checkpoint of the head, the newest stored record.
    fn audit_request(&self, req: HostRequest) -> EnclaveResponse {
        match req {
            HostRequest::AuditCheckpoint { force } => EnclaveResponse::AuditCheckpoint(
                self.audit
                    .checkpoint(force, self.clock.at(chrono::Utc::now()).timestamp_millis()),
            ),
            HostRequest::AuditDrain => {
                let (blocks, more) = self.audit.drain(ekms_wire::audit::DRAIN_MAX_BYTES);
                EnclaveResponse::AuditRecords { blocks, more }
            }
            HostRequest::AuditResume { chain, seq, head } => {
                self.audit.resume(chain, seq, head);
                EnclaveResponse::Committed
            }
            _ => EnclaveResponse::Fault(Fault::BadInput),
        }
    }
}

/// Whether `call` is the one operation a witnessed writer runs before it proved its state.
fn recovery_call(call: &KmsCall) -> bool {
    call.http.headers.iter().any(|(k, v)| {
        k.eq_ignore_ascii_case("x-amz-target") && v == b"TrentService.EkmsAcceptUnwitnessedState"
    })
}

pub(super) fn fresh_nonce() -> Result<Vec<u8>, EnclaveError> {
    let mut n = vec![0u8; 32];
    rand::fill(&mut n)?;
    Ok(n)
}

/// An attestor over a mock NSM with a fresh simulation CA, for tests.
#[cfg(test)]
impl Core {
    /// Opens a fresh domain (one custodian, no witnesses) in this enclave, for tests of
    /// operations that need one.
    pub(crate) fn open_test_domain(&self) -> Arc<Domain> {
        let custodian = ekms_custody::CustodianKey::generate().unwrap();
        let pubs = vec![custodian.public_key().to_json().unwrap()];
        let (d, _) = Domain::create(&pubs, 1, crate::custody::PcrValues::new(), 0).unwrap();
        let d = Arc::new(d);
        *self.state.write().unwrap() = State::Open(Arc::clone(&d));
        d
    }
}

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
mod custody_tests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod witness_tests;
