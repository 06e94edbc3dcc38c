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

/// A run of consecutive records of one chain, as a drain hands them to the host: their lines
/// in one buffer, so that neither side allocates per record. The host stores each line as a
/// row without parsing it (the values beside the lines are the host's index; a verifier trusts
/// only what is inside a record).
#[derive(Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct AuditBlock {
    /// The chain (16 bytes).
    #[serde(with = "serde_bytes")]
    pub chain: Vec<u8>,
    /// Sequence number of the first record.
    pub first_seq: u64,
    /// The records, each one line of JSON followed by `\n` (JSON escapes a newline inside a
    /// string, so a record never holds one).
    pub lines: String,
    /// Each record's time (Unix milliseconds, the enclave's clock), one per line.
    pub times: Vec<i64>,
    /// Checkpoints the enclave signed with these records (every so many records).
    pub checkpoints: Vec<AuditCheckpoint>,
}

impl AuditBlock {
    /// The records: sequence number, time and line (no newline). Stops at the shorter of the
    /// lines and the times.
    pub fn records(&self) -> impl Iterator<Item = (u64, i64, &str)> {
        (self.first_seq..)
            .zip(&self.times)
            .zip(self.lines.split_terminator('\n'))
            .map(|((seq, t), line)| (seq, *t, line))
    }

    /// How many records it holds.
    #[must_use]
    pub fn len(&self) -> usize {
        self.times.len()
    }

    /// Whether it holds none.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.times.is_empty()
    }
}

impl std::fmt::Debug for AuditBlock {
    // Records name principals and keys; keep them out of debug output of messages.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "AuditBlock(chain {}, seq {}.., {} records, {} bytes, {} checkpoints)",
            hex(&self.chain),
            self.first_seq,
            self.times.len(),
            self.lines.len(),
            self.checkpoints.len()
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
    push_hex(&mut s, bytes);
    s
}

/// Appends `bytes` in lower-case hex to `out`.
pub fn push_hex(out: &mut String, bytes: &[u8]) {
    for b in bytes {
        for nibble in [b >> 4, b & 0x0f] {
            out.push(char::from_digit(u32::from(nibble), 16).unwrap_or('0'));
        }
    }
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
        let b = AuditBlock {
            chain: vec![0xab; 16],
            first_seq: 3,
            lines: "{\"userIdentity\":\"secret-arn\"}\n".into(),
            times: vec![0],
            checkpoints: Vec::new(),
        };
        let d = format!("{b:?}");
        assert!(!d.contains("secret-arn"), "{d}");
        assert!(d.contains("seq 3"));
    }

    #[test]
    fn a_block_reads_back_as_numbered_lines_and_never_past_its_times() {
        let mut b = AuditBlock {
            chain: vec![1; 16],
            first_seq: 10,
            lines: "{\"a\":1}\n{\"b\":2}\n".into(),
            times: vec![5, 6],
            checkpoints: Vec::new(),
        };
        let r: Vec<_> = b.records().collect();
        assert_eq!(r, vec![(10, 5, "{\"a\":1}"), (11, 6, "{\"b\":2}")]);
        b.times.pop();
        assert_eq!(b.records().count(), 1);
        assert_eq!(b.len(), 1);
    }
}
