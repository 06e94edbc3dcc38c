//! The audit log, kept by the enclave: one record for every KMS call it answers, allowed or
//! refused, hash-chained, with checkpoints signed by the domain's audit key (the format is in
//! `ekms_wire::audit`, the rules in docs/audit.md).
//!
//! The enclave writes every record and every checkpoint; the host only stores them. What the
//! host can do is therefore limited to what a verifier detects: an edited, reordered, deleted
//! or inserted record breaks the chain, a dropped tail is below a later checkpoint (or the
//! enclave's current head), and a forged checkpoint does not verify under the audit key, which
//! never leaves the enclave: it is derived from the custody secret.
//!
//! A record holds who called (the principal's ARN only when the signature verified), the
//! access key id named, the operation, the key, the request id, the outcome and error code, and
//! the encryption context's keys: never its values, never plaintext, never a secret.

use std::{cell::RefCell, collections::VecDeque, sync::Mutex};

use aws_lc_rs::{digest, hkdf, rand, signature::Ed25519KeyPair, signature::KeyPair as _};
use ekms_wire::{
    audit::{
        AUDIT_KEY_INFO, AuditBlock, AuditCheckpoint, CHAIN_ID_LEN, CHAIN_START, DRAIN_MAX_BYTES,
        HASH_LEN, PENDING_MAX_BYTES, push_hex,
    },
    msg::KmsCall,
};
use serde::Serialize;
use zeroize::Zeroizing;

use crate::custody::Domain;

/// The enclave signs a checkpoint with every this many records (the host also asks for one
/// every few seconds).
pub const CHECKPOINT_EVERY: u64 = 1000;

/// What the call's processing learnt for its record.
#[derive(Debug, Default)]
pub struct Note {
    /// The verified operation (else the record names the one the request claims).
    pub operation: Option<String>,
    /// The region the request is signed for, once verified.
    pub region: Option<String>,
    /// The caller's ARN, once its signature verified.
    pub principal_arn: Option<String>,
    /// The ARN of the key the call was authorized against (the first one).
    pub key_arn: Option<String>,
    /// The request's encryption context keys (sorted, unique).
    pub ec_keys: Vec<String>,
    /// An XKS proxy call (from AWS KMS, with a key store's credential): the request id is AWS
    /// KMS's, and the principal the one AWS KMS names in the request's metadata.
    pub xks: bool,
    /// The request id, where it is not derived from the signature (XKS: AWS KMS's).
    pub request_id: Option<String>,
}

/// `eventSource` of KMS calls.
const KMS_SOURCE: &str = "kms.amazonaws.com";
/// `eventSource` of XKS proxy calls.
const XKS_SOURCE: &str = "xks-proxy.ekms";

/// The outcome of a call, for its record.
#[derive(Debug, Clone, Copy)]
pub enum Outcome<'a> {
    /// Answered.
    Success,
    /// Refused or failed with this AWS error code.
    Error(&'a str),
}

/// The chain this enclave writes, and its records the host has not collected yet.
#[derive(Default)]
pub struct AuditLog {
    state: Mutex<State>,
    /// The newest record the host stored (chain, seq, head), for the next chain's first record.
    previous: Mutex<Option<Head>>,
}

/// What the chain's lock covers.
#[derive(Default)]
struct State {
    chain: Option<Chain>,
    /// Written and not yet drained, in chain order.
    pending: VecDeque<AuditBlock>,
    /// Record bytes in `pending`.
    pending_bytes: usize,
}

/// A block takes records until it holds this many bytes (so a drain's answer of
/// [`DRAIN_MAX_BYTES`] always has room for one).
const BLOCK_BYTES: usize = DRAIN_MAX_BYTES / 2;
/// A new block's buffer (it grows as records come).
const BLOCK_START: usize = 64 * 1024;

impl State {
    /// Numbers, links and appends a record whose other fields are `body` to the newest block
    /// (a new one when there is none of this chain, or it is full).
    fn record(&mut self, body: &str, time_ms: i64) -> bool {
        let Some(chain) = self.chain.as_mut() else {
            return false;
        };
        let fits = self
            .pending
            .back()
            .is_some_and(|b| b.chain == chain.id && b.lines.len() < BLOCK_BYTES);
        if !fits {
            self.pending.push_back(AuditBlock {
                chain: chain.id.to_vec(),
                first_seq: chain.next,
                lines: String::with_capacity(BLOCK_START),
                ..AuditBlock::default()
            });
        }
        let Some(block) = self.pending.back_mut() else {
            return false;
        };
        let before = block.lines.len();
        chain.push(body, time_ms, block);
        self.pending_bytes = self
            .pending_bytes
            .saturating_add(block.lines.len().saturating_sub(before));
        true
    }
}

thread_local! {
    /// Each thread's buffer for a record's fields: a record costs no allocation of its own.
    static BODY: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AuditLog")
    }
}

/// A stored record's chain, sequence number and hash.
type Head = (Vec<u8>, u64, Vec<u8>);

struct Chain {
    domain: [u8; 8],
    id: [u8; CHAIN_ID_LEN],
    /// Sequence number of the next record.
    next: u64,
    /// Hash of the newest record.
    head: [u8; HASH_LEN],
    /// Records since the last checkpoint.
    unsigned: u64,
    key: Ed25519KeyPair,
}

/// The domain's Ed25519 audit key, derived from its custody secret.
fn audit_key(domain: &Domain) -> Option<Ed25519KeyPair> {
    struct Seed;
    impl hkdf::KeyType for Seed {
        fn len(&self) -> usize {
            32
        }
    }
    let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, &[]).extract(domain.secret().expose());
    let info = [AUDIT_KEY_INFO];
    let okm = prk.expand(&info, Seed).ok()?;
    let mut seed = Zeroizing::new([0u8; 32]);
    okm.fill(seed.as_mut()).ok()?;
    Ed25519KeyPair::from_seed_unchecked(seed.as_ref()).ok()
}

/// The domain's audit public key (Ed25519, 32 bytes).
#[must_use]
pub fn public_key(domain: &Domain) -> Option<Vec<u8>> {
    audit_key(domain).map(|k| k.public_key().as_ref().to_vec())
}

impl AuditLog {
    /// Remembers the newest record the host stored, for the next chain's first record.
    pub fn resume(&self, chain: Vec<u8>, seq: u64, head: Vec<u8>) {
        if chain.len() == CHAIN_ID_LEN
            && head.len() == HASH_LEN
            && let Ok(mut p) = self.previous.lock()
        {
            *p = Some((chain, seq, head));
        }
    }

    /// Writes the record of `call` (its outcome, what `note` learnt) at `time_ms` (the
    /// enclave's clock), where the next drain collects it. Starts a chain first when there is
    /// none for this domain. `false` only when the audit key cannot be made.
    pub fn append(
        &self,
        domain: &Domain,
        account: &str,
        call: &KmsCall,
        note: &Note,
        outcome: Outcome<'_>,
        time_ms: i64,
    ) -> bool {
        BODY.with_borrow_mut(|buf| {
            // Everything but the chain link is written before the lock: the lock covers only
            // numbering, linking, hashing and a copy, so concurrent calls barely wait.
            buf.clear();
            body(event(account, call, note, outcome), time_ms, buf);
            let written = std::str::from_utf8(buf)
                .is_ok_and(|text| self.link(domain, account, text, time_ms));
            if buf.capacity() > BLOCK_START {
                // One huge record (a long context) does not keep its buffer.
                *buf = Vec::new();
            }
            written
        })
    }

    fn link(&self, domain: &Domain, account: &str, body: &str, time_ms: i64) -> bool {
        let Ok(mut state) = self.state.lock() else {
            return false;
        };
        if state.chain.as_ref().is_none_or(|c| c.domain != domain.id()) {
            let previous = self.previous.lock().ok().and_then(|mut p| p.take());
            let Some((chain, first)) = Chain::start(domain, account, previous.as_ref(), time_ms)
            else {
                return false;
            };
            state.chain = Some(chain);
            if !state.record(&first, time_ms) {
                return false;
            }
        }
        state.record(body, time_ms)
    }

    /// Whether the records the host has not collected leave room for another call's
    /// ([`PENDING_MAX_BYTES`]): a host that stops draining stops service, never the record.
    #[must_use]
    pub fn has_room(&self) -> bool {
        self.state
            .lock()
            .is_ok_and(|s| s.pending_bytes < PENDING_MAX_BYTES)
    }

    /// The oldest uncollected records, in blocks up to `max_bytes` in all (at least one
    /// block), and whether more wait.
    pub fn drain(&self, max_bytes: usize) -> (Vec<AuditBlock>, bool) {
        let Ok(mut state) = self.state.lock() else {
            return (Vec::new(), false);
        };
        let mut out = Vec::new();
        let mut bytes = 0usize;
        while let Some(b) = state.pending.front() {
            if !out.is_empty() && bytes.saturating_add(b.lines.len()) > max_bytes {
                break;
            }
            bytes = bytes.saturating_add(b.lines.len());
            out.extend(state.pending.pop_front());
        }
        state.pending_bytes = state.pending_bytes.saturating_sub(bytes);
        (out, !state.pending.is_empty())
    }

    /// A signed checkpoint of the head: with `force` always, else only when records were
    /// written since the last one. `None` before the first record.
    pub fn checkpoint(&self, force: bool, time_ms: i64) -> Option<AuditCheckpoint> {
        let mut state = self.state.lock().ok()?;
        let chain = state.chain.as_mut()?;
        (force || chain.unsigned > 0).then(|| chain.sign(time_ms))
    }
}

impl Chain {
    fn start(
        domain: &Domain,
        account: &str,
        previous: Option<&Head>,
        time_ms: i64,
    ) -> Option<(Self, String)> {
        let mut id = [0u8; CHAIN_ID_LEN];
        rand::fill(&mut id).ok()?;
        let chain = Self {
            domain: domain.id(),
            id,
            next: 0,
            head: [0; HASH_LEN],
            unsigned: 0,
            key: audit_key(domain)?,
        };
        let public = crate::domain::hex(chain.key.public_key().as_ref());
        let event = Fields {
            event_name: CHAIN_START,
            user_identity: Identity {
                kind: "AWSService",
                invoked_by: Some("ekms.enclave"),
                ..Identity::default()
            },
            recipient_account_id: account,
            service_event_details: Some(ChainStart {
                domain: crate::domain::hex(&domain.id()),
                audit_public_key: public,
                previous: previous.map(|(c, seq, head)| Previous {
                    chain: crate::domain::hex(c),
                    seq: *seq,
                    hash: crate::domain::hex(head),
                }),
            }),
            event_type: "AwsServiceEvent",
            ..Fields::default()
        };
        let mut first = Vec::new();
        body(event, time_ms, &mut first);
        Some((chain, String::from_utf8(first).ok()?))
    }

    /// Numbers and links a record whose other fields are `body` (a JSON object without its
    /// closing brace, from [`body`]), and appends it to `block` as a line.
    fn push(&mut self, body: &str, time_ms: i64, block: &mut AuditBlock) {
        use std::fmt::Write as _;
        let seq = self.next;
        let line = &mut block.lines;
        let start = line.len();
        line.push_str(body);
        // Hex digits, digits and a UUID: nothing to escape.
        let _ = write!(
            line,
            r#","eventID":"{}","ekms":{{"chain":""#,
            event_id(&self.id, seq)
        );
        push_hex(line, &self.id);
        let _ = write!(line, r#"","seq":{seq},"prev":""#);
        push_hex(line, &self.head);
        line.push_str("\"}}");
        let hash = digest::digest(
            &digest::SHA256,
            line.get(start..).unwrap_or_default().as_bytes(),
        );
        line.push('\n');
        block.times.push(time_ms);
        self.head.copy_from_slice(hash.as_ref());
        self.next = seq.saturating_add(1);
        self.unsigned = self.unsigned.saturating_add(1);
        if self.unsigned >= CHECKPOINT_EVERY {
            block.checkpoints.push(self.sign(time_ms));
        }
    }

    fn sign(&mut self, time_ms: i64) -> AuditCheckpoint {
        let seq = self.next.saturating_sub(1);
        let message = ekms_wire::audit::checkpoint_message(&self.id, seq, &self.head, time_ms);
        self.unsigned = 0;
        AuditCheckpoint {
            chain: self.id.to_vec(),
            seq,
            head: self.head.to_vec(),
            time_ms,
            public_key: self.key.public_key().as_ref().to_vec(),
            signature: self.key.sign(&message).as_ref().to_vec(),
        }
    }
}

/// CloudTrail's `eventTime` (UTC, seconds): `2026-12-01T10:00:00Z`.
fn event_time(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// A UUID-shaped `eventID`, unique per chain and sequence number.
fn event_id(chain: &[u8; CHAIN_ID_LEN], seq: u64) -> uuid::fmt::Hyphenated {
    // The chain's random id with the sequence number added into its low half: distinct for
    // every record of a chain, and across chains as their ids are.
    let id = u128::from_be_bytes(*chain).wrapping_add(u128::from(seq));
    uuid::Builder::from_random_bytes(id.to_be_bytes())
        .into_uuid()
        .hyphenated()
}

/// The record of a KMS call.
fn event<'a>(
    account: &'a str,
    call: &'a KmsCall,
    note: &'a Note,
    outcome: Outcome<'a>,
) -> Fields<'a> {
    let authorization = call.http.header("authorization");
    let access_key_id = call.http.access_key_id();
    let claimed_op = call
        .http
        .kms_target()
        .filter(|o| ekms_wire::plan::is_known(o));
    let operation = note
        .operation
        .as_deref()
        .or(claimed_op)
        .unwrap_or("Unknown");
    let kind = match note.principal_arn.as_deref() {
        _ if note.xks => "AWSService",
        Some(arn) if arn.contains(":assumed-role/") => "AssumedRole",
        Some(_) => "IAMUser",
        None => "Unknown",
    };
    Fields {
        event_name: operation,
        event_source: if note.xks { XKS_SOURCE } else { KMS_SOURCE },
        aws_region: note.region.as_deref(),
        user_identity: Identity {
            kind,
            arn: note.principal_arn.as_deref(),
            account_id: note
                .principal_arn
                .as_ref()
                .filter(|_| !note.xks)
                .map(|_| account),
            access_key_id,
            invoked_by: note.xks.then_some(KMS_SOURCE),
        },
        request_id: note
            .request_id
            .clone()
            .or_else(|| authorization.and_then(request_id)),
        read_only: Some(!ekms_wire::plan::changes_state(operation)),
        resources: note
            .key_arn
            .as_deref()
            .map(|arn| {
                vec![Resource {
                    arn,
                    account_id: account,
                    kind: "AWS::KMS::Key",
                }]
            })
            .unwrap_or_default(),
        request_parameters: (!note.ec_keys.is_empty()).then(|| Params {
            encryption_context_keys: &note.ec_keys,
        }),
        error_code: match outcome {
            Outcome::Success => None,
            Outcome::Error(code) => Some(code),
        },
        event_type: "AwsApiCall",
        recipient_account_id: account,
        service_event_details: None,
        event_time: String::new(),
    }
}

/// The request id the host shows the client (`x-amzn-RequestId`): derived from the SigV4
/// signature, so the enclave knows it without trusting the host.
fn request_id(authorization: &str) -> Option<String> {
    let sig = ekms_wire::plan::signature_of(authorization)?;
    Some(ekms_wire::plan::request_id(
        crate::replay::RequestId::of_signature(sig).bytes(),
    ))
}

/// Writes a record's fields before its chain link to `out`: a JSON object without its closing
/// brace.
fn body(event: Fields<'_>, time_ms: i64, out: &mut Vec<u8>) {
    let event = Fields {
        event_time: event_time(time_ms),
        ..event
    };
    // Serializing plain strings and numbers cannot fail; an empty body would break the chain
    // visibly rather than silently.
    if serde_json::to_writer(&mut *out, &event).is_err() {
        out.clear();
    }
    out.pop();
}

#[derive(Serialize, Default)]
#[serde(rename_all = "camelCase")]
struct Fields<'a> {
    #[serde(skip_serializing_if = "str::is_empty")]
    event_name: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    event_source: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    aws_region: Option<&'a str>,
    user_identity: Identity<'a>,
    #[serde(rename = "requestID", skip_serializing_if = "Option::is_none")]
    request_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    read_only: Option<bool>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    resources: Vec<Resource<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    request_parameters: Option<Params<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error_code: Option<&'a str>,
    event_type: &'a str,
    recipient_account_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    service_event_details: Option<ChainStart>,
    /// Set by [`body`].
    event_time: String,
}

#[derive(Serialize, Default)]
#[serde(rename_all = "camelCase")]
struct Identity<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    arn: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    account_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    access_key_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    invoked_by: Option<&'a str>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Resource<'a> {
    #[serde(rename = "ARN")]
    arn: &'a str,
    account_id: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Params<'a> {
    encryption_context_keys: &'a [String],
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ChainStart {
    domain: String,
    audit_public_key: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    previous: Option<Previous>,
}

#[derive(Serialize)]
struct Previous {
    chain: String,
    seq: u64,
    hash: String,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)] // test code

    use aws_lc_rs::signature::{ED25519, UnparsedPublicKey};
    use ekms_wire::msg::HttpRequest;

    use super::*;

    fn domain() -> Domain {
        let custodian = ekms_custody::CustodianKey::generate().unwrap();
        let pubs = vec![custodian.public_key().to_json().unwrap()];
        Domain::create(&pubs, 1, crate::custody::PcrValues::new(), 0)
            .unwrap()
            .0
    }

    fn call() -> KmsCall {
        KmsCall {
            http: HttpRequest {
                method: "POST".into(),
                uri: "/".into(),
                headers: vec![(
                    "x-amz-target".into(),
                    serde_bytes::ByteBuf::from(b"TrentService.Encrypt".to_vec()),
                )],
                body: Vec::new(),
            },
            ..KmsCall::default()
        }
    }

    #[test]
    fn records_chain_and_checkpoints_verify_under_the_domain_key() {
        let d = domain();
        let log = AuditLog::default();
        for i in 0..3 {
            let note = Note {
                operation: Some("Encrypt".into()),
                principal_arn: (i > 0).then(|| "arn:aws:iam::1:user/a".to_owned()),
                ec_keys: vec!["tenant".into()],
                ..Note::default()
            };
            let outcome = if i == 2 {
                Outcome::Error("AccessDeniedException")
            } else {
                Outcome::Success
            };
            assert!(log.append(&d, "1", &call(), &note, outcome, 1_000 * i));
        }
        let (blocks, more) = log.drain(usize::MAX);
        assert!(!more);
        let lines = lines(&blocks);
        // A chain start, then the three calls.
        assert_eq!(lines.len(), 4);
        let mut prev = [0u8; 32];
        for (n, (seq, record)) in lines.iter().enumerate() {
            assert_eq!(*seq, n as u64);
            let v: serde_json::Value = serde_json::from_str(record).unwrap();
            assert_eq!(v["ekms"]["seq"], n as u64);
            assert_eq!(v["ekms"]["prev"], crate::domain::hex(&prev));
            prev.copy_from_slice(digest::digest(&digest::SHA256, record.as_bytes()).as_ref());
        }
        let first: serde_json::Value = serde_json::from_str(&lines[1].1).unwrap();
        assert_eq!(first["userIdentity"]["type"], "Unknown");
        assert!(first["userIdentity"].get("arn").is_none());
        assert_eq!(
            first["requestParameters"]["encryptionContextKeys"],
            serde_json::json!(["tenant"])
        );
        let last: serde_json::Value = serde_json::from_str(&lines[3].1).unwrap();
        assert_eq!(last["errorCode"], "AccessDeniedException");
        let cp = log.checkpoint(false, 5).unwrap();
        assert_eq!((cp.seq, cp.head.as_slice()), (3, prev.as_slice()));
        assert_eq!(Some(cp.public_key.clone()), public_key(&d));
        UnparsedPublicKey::new(&ED25519, &cp.public_key)
            .verify(&cp.message(), &cp.signature)
            .unwrap();
        // Nothing new: no checkpoint unless forced.
        assert!(log.checkpoint(false, 6).is_none());
        assert!(log.checkpoint(true, 6).is_some());
    }

    #[test]
    fn a_new_chain_names_the_record_the_host_stored_last() {
        let d = domain();
        let log = AuditLog::default();
        log.resume(vec![7; 16], 41, vec![9; 32]);
        assert!(log.append(&d, "1", &call(), &Note::default(), Outcome::Success, 0));
        let (blocks, _) = log.drain(usize::MAX);
        let start: serde_json::Value = serde_json::from_str(&lines(&blocks)[0].1).unwrap();
        assert_eq!(start["eventName"], CHAIN_START);
        let previous = &start["serviceEventDetails"]["previous"];
        assert_eq!(previous["chain"], crate::domain::hex(&[7; 16]));
        assert_eq!(previous["seq"], 41);
        assert_eq!(previous["hash"], crate::domain::hex(&[9; 32]));
    }

    #[test]
    fn drains_come_in_chain_order_within_their_size_and_a_full_backlog_refuses() {
        let d = domain();
        let log = AuditLog::default();
        // Enough records for several blocks.
        let mut written = 0u64;
        while log.state.lock().unwrap().pending.len() < 4 {
            assert!(log.append(&d, "1", &call(), &Note::default(), Outcome::Success, 0));
            written += 1;
        }
        // At least one block per drain, however small the limit; whole blocks up to it.
        let (first, more) = log.drain(1);
        assert_eq!((first.len(), more), (1, true));
        assert!(first[0].lines.len() >= BLOCK_BYTES);
        let (next, more) = log.drain(DRAIN_MAX_BYTES);
        assert_eq!(
            (next.len(), more),
            (1, true),
            "two full blocks exceed a drain"
        );
        let (rest, more) = log.drain(usize::MAX);
        assert!(!more);
        let all: Vec<AuditBlock> = first.into_iter().chain(next).chain(rest).collect();
        let seqs: Vec<u64> = lines(&all).iter().map(|(seq, _)| *seq).collect();
        // The chain's first record, then every call's.
        assert_eq!(seqs, (0..=written).collect::<Vec<_>>());
        assert_eq!(log.state.lock().unwrap().pending_bytes, 0);
        assert!(log.drain(usize::MAX).0.is_empty());
        // A host that never drains: calls are refused before the backlog passes its bound.
        assert!(log.has_room());
        while log.has_room() {
            assert!(log.append(&d, "1", &call(), &Note::default(), Outcome::Success, 0));
        }
        let held = log.state.lock().unwrap().pending_bytes;
        assert!((PENDING_MAX_BYTES..PENDING_MAX_BYTES + 4096).contains(&held));
        let (some, more) = log.drain(DRAIN_MAX_BYTES);
        assert!(more && !some.is_empty());
        assert!(log.has_room());
    }

    #[test]
    fn a_checkpoint_goes_with_the_block_of_its_record() {
        let d = domain();
        let log = AuditLog::default();
        for _ in 0..CHECKPOINT_EVERY {
            assert!(log.append(&d, "1", &call(), &Note::default(), Outcome::Success, 0));
        }
        let (blocks, _) = log.drain(usize::MAX);
        let all = lines(&blocks);
        let cps: Vec<&AuditCheckpoint> = blocks.iter().flat_map(|b| &b.checkpoints).collect();
        // Signed with the record that made it due (the chain start counts), over its hash.
        assert_eq!(cps.len(), 1);
        assert_eq!(cps[0].seq, CHECKPOINT_EVERY - 1);
        let (_, line) = &all[usize::try_from(cps[0].seq).unwrap()];
        assert_eq!(
            cps[0].head,
            digest::digest(&digest::SHA256, line.as_bytes()).as_ref()
        );
    }

    /// Every drained record: its sequence number and line.
    fn lines(blocks: &[AuditBlock]) -> Vec<(u64, String)> {
        blocks
            .iter()
            .flat_map(|b| b.records().map(|(seq, _, l)| (seq, l.to_owned())))
            .collect()
    }
}
