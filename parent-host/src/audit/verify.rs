//! `ekms audit verify`: checks every chain of the stored audit log and every checkpoint against
//! the domain's audit public key, and names the first bad record.
//!
//! What is detected (docs/audit.md): an edited record (its hash no longer matches the next
//! record's `prev`, or a checkpoint), an inserted, deleted or reordered record (a gap or a
//! repeat in a chain's sequence numbers, or a broken `prev`), a truncated chain whose records a
//! later checkpoint covers, a deleted chain that a later chain names as its predecessor, a
//! forged checkpoint, and, given the enclave's current signed head, dropped newest records.

use std::collections::{BTreeMap, HashMap, HashSet};

use aws_lc_rs::{digest, signature};
use ekms_wire::audit::{AuditCheckpoint, CHAIN_START, HASH_LEN, hex};

use super::db::{AuditDb, StoredRecord};
use crate::HostError;

/// Records read per page.
const PAGE: usize = 10_000;

/// A finding, tied to a record where there is one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Row id of the record concerned (the first bad one), if any.
    pub row: Option<i64>,
    /// What is wrong.
    pub what: String,
}

/// The outcome of a verification.
#[derive(Debug, Default)]
pub struct Report {
    /// Records read.
    pub records: u64,
    /// Chains seen.
    pub chains: usize,
    /// Checkpoints whose signature and head verified.
    pub checkpoints: usize,
    /// Records newer than their chain's last checkpoint (intact, not yet signed over).
    pub unsigned: u64,
    /// Everything wrong, in the order found (records by arrival first, then checkpoints).
    pub problems: Vec<Problem>,
}

impl Report {
    /// Whether the log is intact.
    #[must_use]
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }

    /// The first problem at a record, or else the first problem.
    #[must_use]
    pub fn first(&self) -> Option<&Problem> {
        self.problems
            .iter()
            .filter(|p| p.row.is_some())
            .min_by_key(|p| p.row)
            .or_else(|| self.problems.first())
    }
}

#[derive(Default)]
struct ChainState {
    next: u64,
    /// Row of the newest record read.
    last_row: i64,
    head: [u8; HASH_LEN],
    first_row: i64,
    /// The predecessor its first record names: chain, seq, hash.
    previous: Option<(String, u64, String)>,
}

/// Verifies everything in `db` against `public_key` (Ed25519, 32 bytes) and, if given, the
/// enclave's current signed head.
pub fn verify(
    db: &AuditDb,
    public_key: &[u8],
    current: Option<&AuditCheckpoint>,
) -> Result<Report, HostError> {
    let mut report = Report::default();
    let checkpoints = db.checkpoints()?;
    // The (chain, seq) whose hashes the checkpoints and chain links need.
    let mut wanted: HashSet<(String, u64)> = checkpoints
        .iter()
        .chain(current)
        .map(|c| (hex(&c.chain), c.seq))
        .collect();
    let mut links: Vec<(i64, String, String, u64, String)> = Vec::new();
    let mut chains: BTreeMap<String, ChainState> = BTreeMap::new();
    let mut hashes: HashMap<(String, u64), [u8; HASH_LEN]> = HashMap::new();
    // A first pass over the chain-start records collects the links' targets.
    let mut after = 0;
    loop {
        let page = db.records_after(after, PAGE)?;
        let Some(last) = page.last() else { break };
        after = last.id;
        for r in &page {
            if let Some(p) = parse(r).ok().and_then(|p| p.previous) {
                wanted.insert((p.0, p.1));
            }
        }
    }
    let mut after = 0;
    loop {
        let page = db.records_after(after, PAGE)?;
        let Some(last) = page.last() else { break };
        after = last.id;
        for r in &page {
            report.records += 1;
            check_record(
                r,
                public_key,
                &mut chains,
                &mut hashes,
                &wanted,
                &mut links,
                &mut report,
            );
        }
    }
    report.chains = chains.len();
    // Chain links: a chain's predecessor must be in the log, with that hash.
    for (row, chain, prev_chain, prev_seq, prev_hash) in &links {
        match hashes.get(&(prev_chain.clone(), *prev_seq)) {
            Some(h) if hex(h) == *prev_hash => {}
            Some(_) => report.problems.push(Problem {
                row: Some(*row),
                what: format!(
                    "chain {chain} names record {prev_seq} of chain {prev_chain} as its \
                     predecessor, but that record differs from the one it names"
                ),
            }),
            None => report.problems.push(Problem {
                row: Some(*row),
                what: format!(
                    "chain {chain} names record {prev_seq} of chain {prev_chain} as its \
                     predecessor, which is not in the log: records or a whole chain were deleted"
                ),
            }),
        }
    }
    let mut signed_to: HashMap<String, u64> = HashMap::new();
    for c in checkpoints.iter().chain(current) {
        if check_checkpoint(c, public_key, &chains, &hashes, &mut report) {
            report.checkpoints += 1;
            let e = signed_to.entry(hex(&c.chain)).or_default();
            *e = (*e).max(c.seq.saturating_add(1));
        }
    }
    report.unsigned = chains
        .iter()
        .map(|(id, s)| {
            s.next
                .saturating_sub(signed_to.get(id).copied().unwrap_or(0))
        })
        .sum();
    // Later chains name their predecessor (the host says which one at every start).
    let mut firsts: Vec<(&String, &ChainState)> = chains.iter().collect();
    firsts.sort_by_key(|(_, s)| s.first_row);
    for (id, s) in firsts.iter().skip(1) {
        if s.previous.is_none() && s.next > 0 {
            report.problems.push(Problem {
                row: Some(s.first_row),
                what: format!("chain {id} does not name its predecessor chain"),
            });
        }
    }
    Ok(report)
}

/// What a verifier reads from a record.
struct Parsed {
    chain: String,
    seq: u64,
    prev: String,
    event_name: String,
    public_key: Option<String>,
    previous: Option<(String, u64, String)>,
}

fn parse(r: &StoredRecord) -> Result<Parsed, String> {
    let v: serde_json::Value =
        serde_json::from_str(&r.record).map_err(|_| "the record is not JSON".to_owned())?;
    let ekms = v.get("ekms").ok_or("the record has no ekms link")?;
    let text =
        |v: &serde_json::Value, k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_owned);
    let details = v.get("serviceEventDetails");
    Ok(Parsed {
        chain: text(ekms, "chain").ok_or("the record names no chain")?,
        seq: ekms
            .get("seq")
            .and_then(serde_json::Value::as_u64)
            .ok_or("the record has no sequence number")?,
        prev: text(ekms, "prev").ok_or("the record names no previous hash")?,
        event_name: text(&v, "eventName").unwrap_or_default(),
        public_key: details.and_then(|d| text(d, "auditPublicKey")),
        previous: details
            .and_then(|d| d.get("previous"))
            .and_then(|p| Some((text(p, "chain")?, p.get("seq")?.as_u64()?, text(p, "hash")?))),
    })
}

fn check_record(
    r: &StoredRecord,
    public_key: &[u8],
    chains: &mut BTreeMap<String, ChainState>,
    hashes: &mut HashMap<(String, u64), [u8; HASH_LEN]>,
    wanted: &HashSet<(String, u64)>,
    links: &mut Vec<(i64, String, String, u64, String)>,
    report: &mut Report,
) {
    let problems = &mut report.problems;
    let mut problem = |row: i64, what: String| {
        problems.push(Problem {
            row: Some(row),
            what,
        });
    };
    let p = match parse(r) {
        Ok(p) => p,
        Err(why) => return problem(r.id, format!("{why} (edited)")),
    };
    if p.chain != r.chain || i64::try_from(p.seq).ok() != Some(r.seq) {
        problem(
            r.id,
            format!(
                "the stored columns (chain {}, seq {}) differ from the record's (chain {}, seq {})",
                r.chain, r.seq, p.chain, p.seq
            ),
        );
    }
    let state = chains.entry(p.chain.clone()).or_insert_with(|| ChainState {
        first_row: r.id,
        ..ChainState::default()
    });
    if p.seq != state.next {
        problem(
            r.id,
            format!(
                "chain {} jumps from {} to record {}: {}",
                p.chain,
                state
                    .next
                    .checked_sub(1)
                    .map_or_else(|| "its start".to_owned(), |n| format!("record {n}")),
                p.seq,
                if p.seq > state.next {
                    "records are missing (deleted)"
                } else {
                    "records are repeated or out of order"
                }
            ),
        );
    } else if p.prev != hex(&state.head) {
        // The record before this one was edited (its hash changed), or this one (its prev):
        // the earlier of the two is the first that may be bad.
        problem(
            state.last_row,
            format!(
                "record {} of chain {} (row {}) does not hash to the prev of the record after \
                 it (row {}): one of them was edited, or a record was put between them",
                p.seq.saturating_sub(1),
                p.chain,
                state.last_row,
                r.id
            ),
        );
    }
    if p.seq == 0 {
        if p.event_name != CHAIN_START {
            problem(
                r.id,
                format!("chain {} does not begin with a chain start", p.chain),
            );
        }
        if p.public_key.as_deref() != Some(hex(public_key).as_str()) {
            problem(
                r.id,
                format!(
                    "chain {} was written under another audit key than this domain's",
                    p.chain
                ),
            );
        }
        if let Some((c, s, h)) = &p.previous {
            links.push((r.id, p.chain.clone(), c.clone(), *s, h.clone()));
        }
        state.previous.clone_from(&p.previous);
    }
    let d = digest::digest(&digest::SHA256, r.record.as_bytes());
    state.head.copy_from_slice(d.as_ref());
    state.next = p.seq.saturating_add(1);
    state.last_row = r.id;
    if wanted.contains(&(p.chain.clone(), p.seq)) {
        hashes.insert((p.chain, p.seq), state.head);
    }
}

/// Checks one checkpoint; true when it verified and matches the stored chain.
fn check_checkpoint(
    c: &AuditCheckpoint,
    public_key: &[u8],
    chains: &BTreeMap<String, ChainState>,
    hashes: &HashMap<(String, u64), [u8; HASH_LEN]>,
    report: &mut Report,
) -> bool {
    let chain = hex(&c.chain);
    let mut problem = |what: String| report.problems.push(Problem { row: None, what });
    let key = signature::UnparsedPublicKey::new(&signature::ED25519, public_key);
    if c.public_key != public_key || key.verify(&c.message(), &c.signature).is_err() {
        problem(format!(
            "the checkpoint of chain {chain} at record {} is not signed by this domain's audit \
             key (forged)",
            c.seq
        ));
        return false;
    }
    let stored = chains.get(&chain).map_or(0, |s| s.next);
    match hashes.get(&(chain.clone(), c.seq)) {
        Some(h) if h.as_slice() == c.head.as_slice() => true,
        Some(_) => {
            problem(format!(
                "record {} of chain {chain} differs from the one the enclave signed (edited)",
                c.seq
            ));
            false
        }
        None if c.seq >= stored => {
            problem(format!(
                "chain {chain} holds {stored} records, but the enclave signed records up to \
                 number {}: the newest records were dropped",
                c.seq
            ));
            false
        }
        None => {
            problem(format!(
                "record {} of chain {chain}, which the enclave signed, is missing",
                c.seq
            ));
            false
        }
    }
}
