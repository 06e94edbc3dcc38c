//! The audit log's shared format: what the enclave hands the host with every KMS call, what the
//! host stores, and what `ekms audit verify` checks (docs/audit.md).
//!
//! - A **record** is one JSON line written by the enclave (CloudTrail's field names where they
//!   fit). Its `ekms` member names its chain, its sequence number and the hash of the record
//!   before it (`prev`, 64 hex digits; zeros for the first record of a chain), so the records of
//!   a chain form a hash chain: record `n`'s hash is `SHA-256(line n)`.
//! - A **chain** is what one enclave wrote since it opened its domain (a fresh random id each
//!   time). Its first record (`eventName` [`CHAIN_START`]) names the chain the host said came
//!   before it.
//! - A **checkpoint** is the enclave's Ed25519 signature over [`checkpoint_message`]: the chain,
//!   the sequence number and hash of its newest record, and the time. The key is the domain's
//!   audit key, derived inside the enclave from the domain's custody secret
//!   ([`AUDIT_KEY_INFO`]); its public half is all a verifier needs.

use serde::{Deserialize, Serialize};

/// HKDF info under which the enclave derives the domain's Ed25519 audit key (the seed) from
/// the custody secret.
pub const AUDIT_KEY_INFO: &[u8] = b"ekms/v1/audit-key";
/// Domain-separation label at the start of every signed checkpoint message.
pub const CHECKPOINT_LABEL: &[u8] = b"ekms/v1/audit-checkpoint";
/// `eventName` of a chain's first record.
pub const CHAIN_START: &str = "EkmsAuditChainStart";
/// Length of a chain id.
pub const CHAIN_ID_LEN: usize = 16;
/// Length of a record hash (SHA-256).
pub const HASH_LEN: usize = 32;
/// Most record bytes in one answer to a drain (well inside a frame's 4 MiB; a single record,
/// bounded by the request limits, is far smaller).
pub const DRAIN_MAX_BYTES: usize = 2 * 1024 * 1024;
/// Most record bytes the enclave keeps unstored: past it, KMS calls are refused with a
/// `ThrottlingException` until the host drains them (no call goes unrecorded).
pub const PENDING_MAX_BYTES: usize = 16 * 1024 * 1024;

/// One audit record, as the enclave wrote it, with what the host needs to store it without
/// parsing it (the same values are inside the record, which is what a verifier trusts).
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AuditEntry {
    /// The chain (16 bytes).
    #[serde(with = "serde_bytes")]
    pub chain: Vec<u8>,
    /// Sequence number in the chain, from 0.
    pub seq: u64,
    /// The record's time (Unix milliseconds, the enclave's clock), for the host's index.
    pub time_ms: i64,
    /// The record: one line of JSON, no newline.
    pub record: String,
    /// A checkpoint the enclave signed with this record (every so many records).
    pub checkpoint: Option<AuditCheckpoint>,
}

impl std::fmt::Debug for AuditEntry {
    // A record names principals and keys; keep it out of debug output of messages.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "AuditEntry(chain {}, seq {}, {} bytes{})",
            hex(&self.chain),
            self.seq,
            self.record.len(),
            if self.checkpoint.is_some() {
                ", checkpoint"
            } else {
                ""
            }
        )
    }
}

/// The enclave's signed statement that `seq` is the newest record of `chain` and has hash
/// `head`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AuditCheckpoint {
    /// The chain (16 bytes).
    #[serde(with = "serde_bytes")]
    pub chain: Vec<u8>,
    /// Sequence number of the chain's newest record.
    pub seq: u64,
    /// SHA-256 of that record's line.
    #[serde(with = "serde_bytes")]
    pub head: Vec<u8>,
    /// When the enclave signed it (Unix milliseconds, the enclave's clock).
    pub time_ms: i64,
    /// The domain's audit public key (Ed25519, 32 bytes) that signed it.
    #[serde(with = "serde_bytes")]
    pub public_key: Vec<u8>,
    /// Ed25519 signature over [`checkpoint_message`].
    #[serde(with = "serde_bytes")]
    pub signature: Vec<u8>,
}

impl AuditCheckpoint {
    /// The signed message of this checkpoint.
    #[must_use]
    pub fn message(&self) -> Vec<u8> {
        checkpoint_message(&self.chain, self.seq, &self.head, self.time_ms)
    }
}

/// The bytes an audit checkpoint signs: label, chain, big-endian sequence number, head hash,
/// big-endian time. Fixed-length fields after the label, so the encoding is unambiguous.
#[must_use]
pub fn checkpoint_message(chain: &[u8], seq: u64, head: &[u8], time_ms: i64) -> Vec<u8> {
    let mut m = Vec::with_capacity(CHECKPOINT_LABEL.len() + chain.len() + 8 + head.len() + 8);
    m.extend_from_slice(CHECKPOINT_LABEL);
    m.extend_from_slice(chain);
    m.extend_from_slice(&seq.to_be_bytes());
    m.extend_from_slice(head);
    m.extend_from_slice(&time_ms.to_be_bytes());
    m
}

/// Lower-case hex.
#[must_use]
pub fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        for nibble in [b >> 4, b & 0x0f] {
            s.push(char::from_digit(u32::from(nibble), 16).unwrap_or('0'));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_checkpoint_message_has_fixed_fields_after_its_label() {
        let m = checkpoint_message(&[1; 16], 7, &[2; 32], -1);
        assert!(m.starts_with(CHECKPOINT_LABEL));
        assert_eq!(m.len(), CHECKPOINT_LABEL.len() + 16 + 8 + 32 + 8);
        assert_ne!(m, checkpoint_message(&[1; 16], 8, &[2; 32], -1));
    }

    #[test]
    fn debug_output_holds_no_record_text() {
        let e = AuditEntry {
            chain: vec![0xab; 16],
            seq: 3,
            time_ms: 0,
            record: "{\"userIdentity\":\"secret-arn\"}".into(),
            checkpoint: None,
        };
        let d = format!("{e:?}");
        assert!(!d.contains("secret-arn"), "{d}");
        assert!(d.contains("seq 3"));
    }
}
