//! The messages carried in frames: host → enclave ([`HostRequest`]) and enclave → host
//! ([`EnclaveResponse`]). Pure serde data; a sealed record is an opaque [`SealedBlob`] here.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A record sealed by the enclave (key, alias or principal). Opaque to the host.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedBlob(#[serde(with = "serde_bytes")] pub Vec<u8>);

impl fmt::Debug for SealedBlob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SealedBlob({} bytes)", self.0.len())
    }
}

/// A request from the host.
#[derive(Debug, Serialize, Deserialize)]
pub enum HostRequest {
    /// Health and identity of the enclave.
    Status,
    /// A client's signed KMS call with the sealed records it needs.
    Kms(Box<KmsCall>),
    /// An External Key Store proxy call (`POST /{prefix}/kms/xks/v1/...`, SigV4 for service
    /// `kms-xks-proxy`): `http.uri` is the full path; `principal` the sealed record the
    /// request's access key id names, if the store has one; `keys` the sealed key record the
    /// path's `{keyId}` names, if the store has one. Answered with [`EnclaveResponse::Xks`], or
    /// `Fault::StaleRecord` (read the records again and retry).
    Xks(Box<KmsCall>),
    /// A fresh attestation document bound to the client's nonce, carrying the enclave's per-boot
    /// identity public key.
    Attest {
        /// The client's nonce (at most 512 bytes).
        #[serde(with = "serde_bytes")]
        nonce: Vec<u8>,
    },
    /// Ask the enclave to check that a sealed record is authentic (used by tests and tooling).
    Open {
        /// The record.
        sealed: SealedBlob,
    },
    /// The stored domain (sealed keyring): a sealed or empty enclave learns which domain it
    /// serves; an unsealed one adopts a newer generation of its own domain (after a rotation).
    LoadDomain {
        /// The sealed keyring, as stored.
        domain: SealedBlob,
    },
    /// Create a new domain on an empty enclave and split its custody secret among custodians.
    InitDomain {
        /// Custodian public key files (JSON), one per custodian.
        custodians: Vec<String>,
        /// Shares needed to unseal.
        threshold: u8,
        /// The public key file (JSON, custodian format) the admin credential is encrypted to.
        admin_key: String,
        /// The operator's fresh nonce, for the attestation document that vouches for the
        /// encrypted credential (1 to 512 bytes).
        #[serde(with = "serde_bytes")]
        nonce: Vec<u8>,
        /// Witnesses the domain needs for ever (0: none; then rollback across a restart is
        /// possible). Fixed at creation: the keyring carries it, so no host can drop it later.
        #[serde(default)]
        witnesses: u8,
    },
    /// A custodian's share, re-sealed to this enclave's attested identity key and signed with
    /// the custodian's key (docs/custody.md).
    SubmitShare {
        /// The nonce of the attestation document the custodian verified (the custodian's own;
        /// the signature covers it, and each custodian can use it once per enclave start).
        #[serde(with = "serde_bytes")]
        session: Vec<u8>,
        /// The submitted share (JSON).
        share: String,
    },
    /// Make a new domain key that seals new records (returned staged; active after the host
    /// stored it and sent it back with [`HostRequest::LoadDomain`]).
    RotateDomain,
    /// Drop every domain key but the current one (the host re-sealed all records first).
    RetireDomainKeys,
    /// The next generation of the keyring with the same keys, in the current format (the host
    /// asks once it finds a version 1 domain record, whose header lists no custodians).
    UpgradeDomain,
    /// Re-seal a record under the current domain key if an older one sealed it.
    Reseal {
        /// The record.
        sealed: SealedBlob,
    },
    /// Peer forwarding, on the running enclave: a fresh challenge for a joining peer.
    PeerChallenge,
    /// Peer forwarding, on the joining enclave: attest to the running enclave's challenge.
    PeerHello {
        /// The running enclave's challenge.
        #[serde(with = "serde_bytes")]
        challenge: Vec<u8>,
    },
    /// Peer forwarding, on the running enclave: verify the joining enclave and grant it the
    /// domain's custody secret, encrypted to its attested identity key.
    PeerGrant {
        /// The joining enclave's attestation document.
        #[serde(with = "serde_bytes")]
        document: Vec<u8>,
        /// The joining enclave's challenge for the running one.
        #[serde(with = "serde_bytes")]
        challenge: Vec<u8>,
    },
    /// Peer forwarding, on the joining enclave: verify the running enclave and take the grant.
    PeerAccept {
        /// The running enclave's attestation document.
        #[serde(with = "serde_bytes")]
        document: Vec<u8>,
        /// The custody secret sealed to this enclave's identity key.
        #[serde(with = "serde_bytes")]
        grant: Vec<u8>,
    },
    /// The host made the writes of these prepared changes durable: the enclave's state view
    /// advances to them (each is checked against the view, all or nothing per token).
    Commit {
        /// Tokens from [`KmsOutcome::Ok`], [`EnclaveResponse::Resealed`] or
        /// [`EnclaveResponse::Swept`].
        tokens: Vec<u64>,
    },
    /// After an unseal: every stored record (keys, aliases, principals, tombstones), in batches,
    /// so the enclave can build its view of the latest state before it serves.
    LoadRecords {
        /// A batch of sealed records.
        records: Vec<SealedBlob>,
        /// The last batch.
        done: bool,
    },
    /// Keys the host's index says are due for deletion; the enclave decides from their sealed
    /// state and its own clock, and answers with the deletions to make durable.
    Sweep {
        /// Sealed key records.
        keys: Vec<SealedBlob>,
    },
    /// Keys the host's index says are due for automatic rotation; the enclave decides from
    /// their sealed schedule and its own clock, and answers with the rotations to make durable.
    RotateDue {
        /// Sealed key records.
        keys: Vec<SealedBlob>,
    },
    /// Write back the last usage of keys (`GetKeyLastUsage`): the enclave seals a usage record
    /// for each key used since its last durable one (a bounded batch), and answers with the
    /// writes to make durable. The host asks every few seconds and at shutdown; the enclave
    /// refuses cryptographic operations when usage stays unwritten too long (docs/formats.md).
    FlushUsage,
    /// A signed checkpoint of the audit chain's head: always with `force`, else only when
    /// records were written since the last one (the host asks every few seconds and at
    /// shutdown). Answered with [`EnclaveResponse::AuditCheckpoint`].
    AuditCheckpoint {
        /// Sign the head even if nothing changed since the last checkpoint.
        force: bool,
    },
    /// The audit records written since the last drain, oldest first (at most
    /// [`crate::audit::DRAIN_MAX_BYTES`] of them per answer). The host asks every few tens of
    /// milliseconds; the enclave refuses KMS calls while its unstored records exceed
    /// [`crate::audit::PENDING_MAX_BYTES`]. Answered with [`EnclaveResponse::AuditRecords`].
    AuditDrain,
    /// The newest audit record the host stored (its chain, sequence number and the SHA-256 of
    /// its line): the next chain this enclave starts names it as its predecessor, so that a
    /// whole chain deleted later breaks the link. Sent before serving.
    AuditResume {
        /// Chain id.
        #[serde(with = "serde_bytes")]
        chain: Vec<u8>,
        /// Sequence number.
        seq: u64,
        /// SHA-256 of the record's line.
        #[serde(with = "serde_bytes")]
        head: Vec<u8>,
    },
    /// Witnessed domain, on the writer: start a round that commits these prepared writes (the
    /// host has not made them durable yet). Answered with the intent for the witnesses.
    Propose {
        /// Tokens of prepared writes.
        tokens: Vec<u64>,
    },
    /// Witnessed domain, on the writer: a quorum of witnesses acknowledged the round's intent;
    /// answered with the confirmation to send them once the writes are durable.
    Confirm {
        /// The round.
        round: u64,
        /// Witness acknowledgements of the intent (opaque, authenticated in the enclave).
        acks: Vec<Vec<u8>>,
    },
    /// Witnessed domain, on the writer: a quorum of witnesses holds the round's checkpoint; the
    /// state view advances.
    Ratify {
        /// The round.
        round: u64,
        /// Witness acknowledgements of the confirmation.
        acks: Vec<Vec<u8>>,
    },
    /// Witnessed domain, on the writer: drop a round whose intent found no quorum (allowed only
    /// before its confirmation was released).
    Abandon {
        /// The round.
        round: u64,
    },
    /// Witnessed domain, on the writer: a fresh query for the witnesses (their answers prove the
    /// latest state after a restart, and enrol new witnesses).
    WitnessQuery,
    /// Witnessed domain, on the writer: the witnesses' answers to the last query.
    WitnessAnswers {
        /// Opaque answers, authenticated in the enclave.
        answers: Vec<Vec<u8>>,
    },
    /// On a witness (a follower of the domain): a message from the domain's writer, relayed
    /// from another host. Opaque to every host.
    Witness {
        /// The message.
        #[serde(with = "serde_bytes")]
        message: Vec<u8>,
    },
}

/// The HTTP request exactly as the client sent it; the enclave verifies its SigV4 signature.
#[derive(Clone, Default, Serialize, Deserialize)]
pub struct HttpRequest {
    /// HTTP method.
    pub method: String,
    /// Path and query.
    pub uri: String,
    /// Header names (lower case) and raw values, in arrival order.
    pub headers: Vec<(String, serde_bytes::ByteBuf)>,
    /// The body.
    #[serde(with = "serde_bytes")]
    pub body: Vec<u8>,
}

impl HttpRequest {
    /// The first header named `name` (any case), if its value is UTF-8.
    #[must_use]
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .and_then(|(_, v)| std::str::from_utf8(v).ok())
    }

    /// The KMS operation the `X-Amz-Target` header names (`TrentService.<op>`), unverified
    /// until the signature is: for scheduling and for naming a refused call.
    #[must_use]
    pub fn kms_target(&self) -> Option<&str> {
        self.header("x-amz-target")
            .and_then(|t| t.strip_prefix("TrentService."))
    }

    /// The region of the SigV4 credential scope (unverified: see `region::scope_region`).
    #[must_use]
    pub fn scope_region(&self) -> Option<&str> {
        self.header("authorization")
            .and_then(crate::region::scope_region)
    }

    /// The access key id of the SigV4 `Authorization` header's `Credential=AKID/...`
    /// (unverified: only a lookup key for the sealed principal record; the enclave verifies the
    /// signature). `None` when the header or the credential is missing, empty or over 128 bytes.
    #[must_use]
    pub fn access_key_id(&self) -> Option<&str> {
        let rest = self.header("authorization")?.split("Credential=").nth(1)?;
        rest.split('/')
            .next()
            .filter(|s| !s.is_empty() && s.len() <= 128)
    }
}

/// What a client gets for a replayed state-changing request (the enclave's `ThrottlingException`;
/// the host recognises it to time its answer).
pub const MSG_REPLAYED: &str = "This signed request was already executed: a state-changing request runs at most once. Sign and send a new request.";

impl fmt::Debug for HttpRequest {
    // Bodies may hold plaintext: never print them.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "HttpRequest({} {}, {} headers, {} body bytes)",
            self.method,
            self.uri,
            self.headers.len(),
            self.body.len()
        )
    }
}

/// A KMS call relayed by the host (`Default`: an empty request with no records).
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct KmsCall {
    /// The signed request.
    pub http: HttpRequest,
    /// The sealed principal named by the request's access key id, if the host has one.
    pub principal: Option<SealedBlob>,
    /// Sealed key records the call refers to (and, for listings, the page of keys).
    pub keys: Vec<SealedBlob>,
    /// Sealed alias records the call refers to (and, for listings, the page of aliases).
    pub aliases: Vec<SealedBlob>,
    /// Sealed principal records the call names (and, for listings, the page of principals).
    #[serde(default)]
    pub principals: Vec<SealedBlob>,
    /// Sealed grant records: the caller's grants on the keys of the call, those the call names,
    /// and for listings the page of grants.
    #[serde(default)]
    pub grants: Vec<SealedBlob>,
    /// For list operations: the marker of the next page, if there is one.
    pub next_marker: Option<String>,
    /// Sealed last-usage records of the keys the call names (`GetKeyLastUsage`).
    #[serde(default)]
    pub usage: Vec<SealedBlob>,
}

/// A reply from the enclave.
#[derive(Debug, Serialize, Deserialize)]
pub enum EnclaveResponse {
    /// Answer to [`HostRequest::Status`].
    Status(StatusInfo),
    /// Answer to [`HostRequest::Kms`] (its audit record waits in the enclave for
    /// [`HostRequest::AuditDrain`]).
    Kms(KmsOutcome),
    /// Answer to [`HostRequest::AuditCheckpoint`] (none: nothing new, or no domain).
    AuditCheckpoint(Option<crate::audit::AuditCheckpoint>),
    /// Answer to [`HostRequest::AuditDrain`]: records in chain order, and whether more wait.
    AuditRecords {
        /// The records, oldest first.
        blocks: Vec<crate::audit::AuditBlock>,
        /// More records wait (the answer reached its size limit): drain again.
        more: bool,
    },
    /// Answer to [`HostRequest::Xks`]: the complete HTTP answer, which the host sends as is.
    Xks(XksOutcome),
    /// Answer to [`HostRequest::Open`]: the record is authentic and of this kind and id.
    Opened {
        /// "key", "alias" or "principal".
        kind: String,
        /// The record's id.
        id: String,
    },
    /// Answer to [`HostRequest::Attest`]: the document (untagged COSE_Sign1).
    Attestation {
        /// The document.
        #[serde(with = "serde_bytes")]
        document: Vec<u8>,
    },
    /// The request could not be processed at all.
    Fault(Fault),
    /// A custody or peer request was refused; the reason is public and says what failed.
    Refused(String),
    /// Custody state after a custody request.
    Custody(CustodyState),
    /// Answer to [`HostRequest::InitDomain`].
    DomainCreated(Box<DomainCreated>),
    /// A new sealed keyring for the host to store (then send back with `LoadDomain`).
    DomainStaged {
        /// The sealed keyring.
        domain: SealedBlob,
    },
    /// Answer to [`HostRequest::Reseal`]: the write that replaces the record, if it needed one,
    /// and the token that commits it.
    Resealed(Option<(StoreWrite, u64)>),
    /// Answer to [`HostRequest::Commit`].
    Committed,
    /// Answer to [`HostRequest::LoadRecords`].
    Loaded {
        /// Records in the enclave's view so far.
        records: u64,
        /// Whether the view is complete and the enclave serves.
        ready: bool,
    },
    /// Answer to [`HostRequest::Sweep`]: the deletions to make durable, then commit.
    Swept {
        /// Tombstones replacing the deleted keys and their aliases.
        writes: Vec<StoreWrite>,
        /// Commit token (0 when there are no writes).
        token: u64,
    },
    /// Answer to [`HostRequest::RotateDue`]: the rotated keys to make durable, then commit.
    RotatedDue {
        /// The rotated key records.
        writes: Vec<StoreWrite>,
        /// Commit token (0 when there are no writes).
        token: u64,
    },
    /// Answer to [`HostRequest::FlushUsage`]: the usage records to make durable, then commit.
    UsageFlushed {
        /// Sealed last-usage records, one per key used since its last durable record.
        writes: Vec<StoreWrite>,
        /// Commit token (0 when there are no writes).
        token: u64,
        /// Whether more keys wait (one request carries a bounded batch): ask again.
        more: bool,
    },
    /// Answer to [`HostRequest::PeerChallenge`].
    Challenge {
        /// The challenge.
        #[serde(with = "serde_bytes")]
        nonce: Vec<u8>,
    },
    /// Answer to [`HostRequest::PeerHello`].
    PeerHello {
        /// The joining enclave's document, over the running enclave's challenge.
        #[serde(with = "serde_bytes")]
        document: Vec<u8>,
        /// The joining enclave's own challenge.
        #[serde(with = "serde_bytes")]
        challenge: Vec<u8>,
    },
    /// Answer to [`HostRequest::Propose`].
    Proposed {
        /// The round to run, if any token applies.
        round: Option<Round>,
        /// Tokens that conflict with the state (their writes must not be made durable).
        refused: Vec<u64>,
    },
    /// Answer to [`HostRequest::Confirm`]: send this to the witnesses after the writes are
    /// durable.
    Confirmation {
        /// The confirmation (opaque).
        #[serde(with = "serde_bytes")]
        message: Vec<u8>,
    },
    /// Answer to [`HostRequest::Abandon`].
    Abandoned,
    /// Answer to [`HostRequest::WitnessQuery`]: send this to every witness.
    WitnessQuery {
        /// The query (opaque).
        #[serde(with = "serde_bytes")]
        message: Vec<u8>,
    },
    /// Answer to [`HostRequest::WitnessAnswers`].
    WitnessStatus(WitnessStatus),
    /// Answer to [`HostRequest::Witness`]: the witness's reply, for the writer.
    Witnessed {
        /// The reply (opaque).
        #[serde(with = "serde_bytes")]
        message: Vec<u8>,
    },
    /// Answer to [`HostRequest::PeerGrant`].
    PeerGranted {
        /// The running enclave's document, over the joining enclave's challenge; its user data
        /// names the grant's digest.
        #[serde(with = "serde_bytes")]
        document: Vec<u8>,
        /// The custody secret sealed to the joining enclave's identity key.
        #[serde(with = "serde_bytes")]
        grant: Vec<u8>,
    },
}

/// A new domain: the sealed keyring and principal for the host to store, the custodians' share
/// files, and the administrator credential (encrypted to the admin key, handed out once).
#[derive(Debug, Serialize, Deserialize)]
pub struct DomainCreated {
    /// The sealed keyring.
    pub domain: SealedBlob,
    /// One share file (JSON) per custodian, in the order given.
    pub shares: Vec<String>,
    /// The administrator credential.
    pub genesis: Genesis,
}

/// Where the enclave is in the custody life cycle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CustodyState {
    /// No domain yet: `ekms domain init` creates one.
    Uninitialised,
    /// The domain is known but its keys are not in this enclave: custodian shares (or a peer)
    /// unseal it.
    Sealed {
        /// Domain id (hex).
        domain: String,
        /// Distinct valid shares received.
        have: u8,
        /// Shares needed, once the first share has said so.
        need: Option<u8>,
    },
    /// Serving.
    Unsealed {
        /// Domain id (hex).
        domain: String,
        /// Shares needed to unseal after a restart.
        threshold: u8,
        /// Custodians.
        total: u8,
        /// Keyring generation.
        generation: u64,
        /// Fingerprints of the domain keys in use, oldest first; the last seals new records.
        keys: Vec<String>,
    },
}

/// Typed failure of a frame (never free text about secrets).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Fault {
    /// The frame did not decode.
    Malformed,
    /// The frame's protocol version is not supported.
    Version,
    /// The enclave has no domain key loaded.
    Sealed,
    /// A sealed record failed authentication.
    BadRecord,
    /// A sealed record is older than one the enclave already opened: the host must re-read its
    /// store and retry (a stale cache, or a rollback attempt).
    StaleRecord,
    /// The request's input is out of bounds (for example an oversized nonce).
    BadInput,
    /// This enclave follows another enclave of its domain and serves no KMS calls: forward the
    /// call to the domain's writer.
    NotWriter,
    /// The enclave is unsealed but its view of the stored records is not loaded yet: send
    /// [`HostRequest::LoadRecords`].
    NotLoaded,
    /// A witnessed writer has not yet proved (to a quorum of its witnesses) that it holds the
    /// latest state, or cannot commit because too few witnesses are enrolled.
    NotFresh,
    /// A witnessed domain commits through witnessed rounds (`Propose`), not `Commit`.
    Witnessed,
    /// A witnessed round is still in flight: finish it before proposing another.
    Busy,
    /// An internal failure; retryable.
    Internal,
}

/// A witnessed commit round: the writer's intent for the witnesses.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Round {
    /// Round number (for `Confirm`, `Ratify`, `Abandon`).
    pub id: u64,
    /// The intent to send to every witness (opaque).
    #[serde(with = "serde_bytes")]
    pub intent: Vec<u8>,
    /// The confirmation, when the enclave already released it (a round resumed after a failed
    /// ratification): send it, then ratify.
    #[serde(default, with = "serde_bytes")]
    pub confirm: Vec<u8>,
}

/// What the writer concluded from its witnesses' answers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WitnessStatus {
    /// Whether the enclave knows the latest state and serves.
    pub fresh: bool,
    /// A round to run (enrolment of new witnesses, or finishing a write the store holds).
    pub round: Option<Round>,
    /// Witnesses counted, witnesses needed, and what is missing (public text).
    pub note: String,
}

/// Identity and state of an enclave.
#[derive(Debug, Serialize, Deserialize)]
#[allow(
    clippy::struct_excessive_bools,
    reason = "independent facts reported side by side, not a state machine"
)]
pub struct StatusInfo {
    /// Region the enclave serves.
    pub region: String,
    /// Account id the enclave serves.
    pub account: String,
    /// Custody state.
    pub custody: CustodyState,
    /// True when documents come from the mock NSM and a simulation CA.
    pub simulation: bool,
    /// Whether the enclave's view of the stored records is loaded (it serves only then).
    pub ledger_ready: bool,
    /// Whether this enclave got its domain from a peer and follows it (it serves no KMS calls;
    /// the domain has one writer).
    pub follower: bool,
    /// Witnesses the domain needs (0: an unwitnessed domain).
    #[serde(default)]
    pub witnesses: u8,
    /// Whether a witnessed writer has proved it holds the latest state (always true otherwise).
    #[serde(default)]
    pub fresh: bool,
    /// The domain's audit public key (Ed25519, 32 bytes), once a domain is open.
    #[serde(default, with = "serde_bytes")]
    pub audit_key: Option<Vec<u8>>,
}

/// The administrator credential created with a new domain. The host stores the sealed
/// principal and passes the rest to the operator; it never holds the secret.
#[derive(Serialize, Deserialize)]
pub struct Genesis {
    /// The sealed principal record for the host to store.
    pub principal: SealedBlob,
    /// Access key id.
    pub access_key_id: String,
    /// The secret access key, encrypted to the admin public key (`ekms/v1/credential`).
    #[serde(with = "serde_bytes")]
    pub sealed_secret: Vec<u8>,
    /// An attestation document over the operator's nonce whose user data names the domain, the
    /// access key id and the SHA-256 of `sealed_secret`.
    #[serde(with = "serde_bytes")]
    pub document: Vec<u8>,
}

impl fmt::Debug for Genesis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Genesis({}, {} sealed bytes)",
            self.access_key_id,
            self.sealed_secret.len()
        )
    }
}

/// The result of a KMS call.
#[derive(Serialize, Deserialize)]
pub enum KmsOutcome {
    /// Success: the JSON response body, and the writes the host must make durable first.
    Ok {
        /// AWS JSON 1.1 response body. May contain plaintext (Decrypt): never logged.
        #[serde(with = "serde_bytes")]
        body: Vec<u8>,
        /// Store writes, applied in one transaction before the response is released.
        writes: Vec<StoreWrite>,
        /// Token for [`HostRequest::Commit`] once the writes are durable (0: no writes).
        token: u64,
    },
    /// An AWS KMS error.
    Err {
        /// The error code.
        code: KmsErrorCode,
        /// AWS-style message; public values only.
        message: String,
    },
}

impl fmt::Debug for KmsOutcome {
    // A success body may hold plaintext (Decrypt, GenerateDataKey): never print it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Ok { body, writes, .. } => {
                write!(f, "Ok({} body bytes, {} writes)", body.len(), writes.len())
            }
            Self::Err { code, message } => write!(f, "Err({code:?}: {message})"),
        }
    }
}

/// The enclave's answer to an XKS proxy call: the HTTP status and the JSON body (a success, or
/// the specification's `{"errorName", "errorMessage"}`), sent by the host as they are.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct XksOutcome {
    /// HTTP status.
    pub status: u16,
    /// JSON body. A decrypt answer holds plaintext: never logged.
    #[serde(with = "serde_bytes")]
    pub body: Vec<u8>,
}

impl fmt::Debug for XksOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "XksOutcome({}, {} body bytes)",
            self.status,
            self.body.len()
        )
    }
}

/// A durable change the enclave asks the host to make.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum StoreWrite {
    /// Insert or replace a key record.
    PutKey {
        /// Key id (UUID).
        key_id: String,
        /// Generation of the new record; the store holds `expected` before the write.
        generation: u64,
        /// Generation the store must hold now (`None`: the key must not exist).
        expected: Option<u64>,
        /// The sealed record.
        sealed: SealedBlob,
        /// Key state, public index for the deletion sweeper and listings.
        state: String,
        /// Deletion date (Unix seconds) for keys pending deletion.
        deletion_date: Option<i64>,
        /// Next automatic rotation (Unix seconds), public index for the rotation sweep.
        #[serde(default)]
        rotation_date: Option<i64>,
    },
    /// Insert or replace an alias record.
    PutAlias {
        /// Alias name (`alias/...`).
        name: String,
        /// Target key id (UUID), public index for listings.
        key_id: String,
        /// Generation of the new record.
        generation: u64,
        /// Generation the store must hold now (`None`: the alias must not exist).
        expected: Option<u64>,
        /// The sealed record.
        sealed: SealedBlob,
    },
    /// Insert or replace a principal record.
    PutPrincipal {
        /// The record's id: the principal's name (an older record's access key id).
        id: String,
        /// Generation of the new record.
        generation: u64,
        /// Generation the store must hold now (`None`: the principal must not exist).
        expected: Option<u64>,
        /// The sealed record.
        sealed: SealedBlob,
        /// Its access key ids, public index for finding the record of a request.
        access_key_ids: Vec<String>,
    },
    /// Replace a principal by its sealed tombstone.
    DeletePrincipal {
        /// The record's id.
        id: String,
        /// Generation the store must hold now.
        expected: u64,
        /// Generation of the tombstone.
        generation: u64,
        /// The sealed tombstone.
        tombstone: SealedBlob,
    },
    /// Insert a grant record (grants do not change; they are retired or revoked).
    PutGrant {
        /// The key it is for.
        key_id: String,
        /// Grant id.
        grant_id: String,
        /// Generation of the record.
        generation: u64,
        /// Generation the store must hold now (`None`: a new grant; else a re-sealed copy).
        expected: Option<u64>,
        /// The sealed record.
        sealed: SealedBlob,
        /// Grantee principal ARN, public index for finding the grants of a caller.
        grantee: String,
        /// Retiring principal ARN, public index for `ListRetirableGrants`.
        retiring: Option<String>,
        /// Grant name, public index for `CreateGrant`'s idempotency.
        name: Option<String>,
    },
    /// Replace a grant by its sealed tombstone (retired or revoked).
    DeleteGrant {
        /// The key it was for.
        key_id: String,
        /// Grant id.
        grant_id: String,
        /// Generation the store must hold now.
        expected: u64,
        /// Generation of the tombstone.
        generation: u64,
        /// The sealed tombstone.
        tombstone: SealedBlob,
    },
    /// Replace an alias by its sealed tombstone.
    DeleteAlias {
        /// Alias name.
        name: String,
        /// Generation the store must hold now.
        expected: u64,
        /// Generation of the tombstone.
        generation: u64,
        /// The sealed tombstone.
        tombstone: SealedBlob,
    },
    /// Replace a tombstone by its copy re-sealed under the current domain key.
    PutTombstone {
        /// The tombstone's sealed id (`"<kind>:<id>"`).
        id: String,
        /// Generation of the new copy.
        generation: u64,
        /// Generation the store must hold now.
        expected: u64,
        /// The sealed tombstone.
        sealed: SealedBlob,
    },
    /// Insert or replace the sealed last-usage record of a key (`GetKeyLastUsage`).
    PutUsage {
        /// Key id (UUID).
        key_id: String,
        /// Generation of the new record.
        generation: u64,
        /// Generation the store must hold now (`None`: the key has no usage record yet).
        expected: Option<u64>,
        /// The sealed record.
        sealed: SealedBlob,
    },
    /// Replace a key by its sealed tombstone (the enclave decided that its deletion date passed).
    DeleteKey {
        /// Key id.
        key_id: String,
        /// Generation the store must hold now.
        expected: u64,
        /// Generation of the tombstone.
        generation: u64,
        /// The sealed tombstone.
        tombstone: SealedBlob,
    },
}

/// AWS KMS error codes the enclave produces. Their `__type` names and HTTP statuses are mapped
/// at the host's HTTP edge only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
#[allow(missing_docs)] // the variant names are AWS's own error codes
pub enum KmsErrorCode {
    AccessDeniedException,
    AlreadyExistsException,
    DisabledException,
    DryRunOperationException,
    ExpiredImportTokenException,
    IncompleteSignatureException,
    IncorrectKeyException,
    IncorrectKeyMaterialException,
    InvalidAliasNameException,
    InvalidArnException,
    InvalidCiphertextException,
    InvalidGrantIdException,
    InvalidGrantTokenException,
    InvalidImportTokenException,
    InvalidKeyUsageException,
    InvalidMarkerException,
    InvalidSignatureException,
    KMSInternalException,
    KMSInvalidMacException,
    KMSInvalidSignatureException,
    KMSInvalidStateException,
    LimitExceededException,
    MalformedPolicyDocumentException,
    MissingAuthenticationTokenException,
    NotFoundException,
    SerializationException,
    TagException,
    ThrottlingException,
    UnknownOperationException,
    UnrecognizedClientException,
    UnsupportedOperationException,
    ValidationException,
}

impl KmsErrorCode {
    /// The AWS `__type` name.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::AccessDeniedException => "AccessDeniedException",
            Self::AlreadyExistsException => "AlreadyExistsException",
            Self::DisabledException => "DisabledException",
            Self::DryRunOperationException => "DryRunOperationException",
            Self::ExpiredImportTokenException => "ExpiredImportTokenException",
            Self::IncompleteSignatureException => "IncompleteSignatureException",
            Self::IncorrectKeyException => "IncorrectKeyException",
            Self::IncorrectKeyMaterialException => "IncorrectKeyMaterialException",
            Self::InvalidAliasNameException => "InvalidAliasNameException",
            Self::InvalidArnException => "InvalidArnException",
            Self::InvalidCiphertextException => "InvalidCiphertextException",
            Self::InvalidGrantIdException => "InvalidGrantIdException",
            Self::InvalidGrantTokenException => "InvalidGrantTokenException",
            Self::InvalidImportTokenException => "InvalidImportTokenException",
            Self::InvalidKeyUsageException => "InvalidKeyUsageException",
            Self::InvalidMarkerException => "InvalidMarkerException",
            Self::InvalidSignatureException => "InvalidSignatureException",
            Self::KMSInternalException => "KMSInternalException",
            Self::KMSInvalidMacException => "KMSInvalidMacException",
            Self::KMSInvalidSignatureException => "KMSInvalidSignatureException",
            Self::KMSInvalidStateException => "KMSInvalidStateException",
            Self::LimitExceededException => "LimitExceededException",
            Self::MalformedPolicyDocumentException => "MalformedPolicyDocumentException",
            Self::MissingAuthenticationTokenException => "MissingAuthenticationTokenException",
            Self::NotFoundException => "NotFoundException",
            Self::SerializationException => "SerializationException",
            Self::TagException => "TagException",
            Self::ThrottlingException => "ThrottlingException",
            Self::UnknownOperationException => "UnknownOperationException",
            Self::UnrecognizedClientException => "UnrecognizedClientException",
            Self::UnsupportedOperationException => "UnsupportedOperationException",
            Self::ValidationException => "ValidationException",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_authorization(value: &[u8]) -> HttpRequest {
        HttpRequest {
            method: "POST".into(),
            uri: "/p/kms/xks/v1/health".into(),
            headers: vec![("authorization".into(), serde_bytes::ByteBuf::from(value))],
            body: vec![],
        }
    }

    #[test]
    fn the_access_key_id_is_read_from_the_credential_scope() {
        let h = with_authorization(
            b"AWS4-HMAC-SHA256 Credential=AKIAXKS1/20261130/us-east-1/kms-xks-proxy/aws4_request, \
              SignedHeaders=host;x-amz-date, Signature=00",
        );
        assert_eq!(h.access_key_id(), Some("AKIAXKS1"));
        assert_eq!(with_authorization(b"Bearer x").access_key_id(), None);
        assert_eq!(with_authorization(b"Credential=/x").access_key_id(), None);
        let long = format!("Credential={}/x", "A".repeat(129));
        assert_eq!(with_authorization(long.as_bytes()).access_key_id(), None);
        assert_eq!(
            with_authorization(b"Credential=\xff/x").access_key_id(),
            None
        );
        let mut none = with_authorization(b"");
        none.headers.clear();
        assert_eq!(none.access_key_id(), None);
    }

    #[test]
    fn debug_never_prints_bodies_or_secrets() {
        let ok = KmsOutcome::Ok {
            body: b"{\"Plaintext\":\"c2VjcmV0\"}".to_vec(),
            writes: vec![],
            token: 0,
        };
        assert!(!format!("{ok:?}").contains("c2VjcmV0"));
        let http = HttpRequest {
            method: "POST".into(),
            uri: "/".into(),
            headers: vec![],
            body: b"c2VjcmV0".to_vec(),
        };
        assert!(!format!("{http:?}").contains("c2VjcmV0"));
    }
}
