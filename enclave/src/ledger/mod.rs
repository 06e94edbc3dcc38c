//! The enclave's authenticated view of the store: for every record of the domain (keys, aliases,
//! principals, grants, keys' last-usage records, and the tombstones of deleted ones) the sequence number and digest of the one
//! sealed copy that is current. Sealing stops the host from reading or forging a record; this
//! view stops it from choosing which authentic copy to show: an older one (rollback), one of two
//! written from the same version (a fork), a deleted one (resurrection), or none (hiding).
//!
//! Rules (docs/state.md):
//! - Every write takes a fresh number from one domain-wide counter, so generations strictly
//!   increase, a re-created record continues above its tombstone, and no two records share an
//!   (id, generation).
//! - A write is *prepared* when the enclave seals it and *committed* only when the host says it
//!   is durable; commit is a compare-and-swap on the versions the operation read. A write the
//!   host lost never enters the view; one the host committed replaces its predecessor for good.
//!   Showing a prepared write's record (or, for a deletion, showing the record absent) says the
//!   same as committing it, so it commits it: a host that restarted between its store commit
//!   and its `Commit` (the enclave kept running) finds its records accepted, not stuck.
//! - A record the host shows must be the current copy, byte for byte (by digest); a record the
//!   host says is missing must be absent or a tombstone in the view; a page of a listing must be
//!   exactly the live records of that range.
//!
//! Memory: a key and its last-usage record are two entries of about 42 bytes each (a 17-byte
//! id, a 25-byte version) in maps of their own (`entries.rs`); with `BTreeMap` node overhead,
//! 1,000,000 keys take 66 MiB and their usage records 61 MiB more (the ignored test
//! `ledger_memory_at_one_million_keys`; with a 48-byte id and a 32-byte entry in one map they
//! took 117 and 114). Lookups and writes cost O(log n).

mod accumulator;
mod entries;
mod pages;
#[cfg(test)]
mod tests;

use std::{
    collections::{BTreeSet, HashMap},
    time::{Duration, Instant},
};

use aws_lc_rs::{digest, hmac};

use accumulator::{add, sub, summand, to_bytes};
use entries::{Entries, Entry};

/// Bytes of a record digest kept in the view (truncated SHA-256; the host cannot make the
/// enclave seal chosen records, so only second preimages matter).
pub const DIGEST_LEN: usize = 16;
/// A record digest.
pub type Digest = [u8; DIGEST_LEN];
/// How long a prepared write waits for the host's commit before it is forgotten.
const PREPARED_TTL: Duration = Duration::from_mins(15);
/// Tokens remembered as committed because the host showed their result first (its `Commit` of
/// them then succeeds).
const MAX_SHOWN: usize = 4096;
/// Most prepared writes kept; the oldest are forgotten first (they can then never commit).
const MAX_PREPARED: usize = 65_536;

/// The digest of a sealed record as the view keeps it.
#[must_use]
pub fn digest_of(sealed: &[u8]) -> Digest {
    let d = digest::digest(&digest::SHA256, sealed);
    let mut out = [0u8; DIGEST_LEN];
    for (o, b) in out.iter_mut().zip(d.as_ref()) {
        *o = *b;
    }
    out
}

/// Which record. Keys order like their hyphenated lower-case ids (the store's order).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RecordId {
    /// A KMS key, by UUID.
    Key(u128),
    /// A multi-Region key (`mrk-…`, a version-8 UUID): after every other key, as its id sorts
    /// after theirs in the store.
    Mrk(u128),
    /// An alias, by name.
    Alias(Box<str>),
    /// A principal, by name (an older record: by its access key id).
    Principal(Box<str>),
    /// A grant: its key (UUID) and its grant id.
    Grant(u128, Box<str>),
    /// The last-usage record of a key (its 128 bits) in a region (empty: the key's only region,
    /// or the home region of a multi-Region key; `ekms_wire::region::usage_region`),
    /// `GetKeyLastUsage`.
    Usage(u128, Box<str>),
}

impl RecordId {
    /// The id of the key with this (hyphenated) id; `None` if it is not a UUID.
    #[must_use]
    pub fn key(id: &str) -> Option<Self> {
        let u = u128::from_be_bytes(ekms_wire::plan::key_id_bytes(id)?);
        Some(if ekms_wire::plan::is_multi_region(id) {
            Self::Mrk(u)
        } else {
            Self::Key(u)
        })
    }

    /// The 128 bits of a key's id (`None` for other records).
    #[must_use]
    pub fn key_bits(&self) -> Option<u128> {
        match self {
            Self::Key(u) | Self::Mrk(u) => Some(*u),
            _ => None,
        }
    }

    /// The id of the usage record the store names `name` (`KEY` or `REGION/MRK`, as
    /// `ekms_wire::region::usage_record` makes them); `None` for any other name.
    #[must_use]
    pub fn usage_named(name: &str) -> Option<Self> {
        let (region, key) = match name.split_once('/') {
            Some((r, k))
                if ekms_wire::region::is_region_name(r) && ekms_wire::plan::is_multi_region(k) =>
            {
                (r, k)
            }
            Some(_) => return None,
            None => ("", name),
        };
        let u = u128::from_be_bytes(ekms_wire::plan::key_id_bytes(key)?);
        // Only the canonical spelling names a record (one name per id).
        (key_name(u) == key).then(|| Self::Usage(u, region.into()))
    }

    /// An alias id.
    #[must_use]
    pub fn alias(name: &str) -> Self {
        Self::Alias(name.into())
    }

    /// A principal id.
    #[must_use]
    pub fn principal(id: &str) -> Self {
        Self::Principal(id.into())
    }

    /// The id of grant `grant_id` of key `key_id`; `None` if the key id is not a UUID.
    #[must_use]
    pub fn grant(key_id: &str, grant_id: &str) -> Option<Self> {
        Some(Self::Grant(Self::key(key_id)?.key_bits()?, grant_id.into()))
    }

    /// The id as the store names it.
    #[must_use]
    pub fn name(&self) -> String {
        match self {
            Self::Key(u) | Self::Mrk(u) => key_name(*u),
            Self::Usage(u, region) => ekms_wire::region::usage_record(region, &key_name(*u)),
            Self::Alias(n) | Self::Principal(n) => n.to_string(),
            Self::Grant(u, g) => format!("{}/{g}", key_name(*u)),
        }
    }
}

/// The hyphenated id of a key.
#[must_use]
pub fn key_name(u: u128) -> String {
    ekms_wire::plan::key_id_of(u.to_be_bytes())
}

/// One version of a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Version {
    /// Its generation (a number from the domain-wide counter).
    pub seq: u64,
    /// Digest of its sealed bytes.
    pub digest: Digest,
}

/// One record change of a prepared write.
#[derive(Debug, Clone)]
pub struct Change {
    /// The record.
    pub id: RecordId,
    /// The version it replaces (`None`: the record is absent or a tombstone).
    pub expected: Option<Version>,
    /// The new version.
    pub new: Version,
    /// False when the new version is a tombstone.
    pub live: bool,
    /// For an alias: its target key.
    pub target: Option<u128>,
}

/// Why the view refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LedgerError {
    /// The record shown is not the current one, or a current one was hidden.
    #[error("the record is not the current version")]
    Stale,
    /// The view is still being loaded after an unseal.
    #[error("the state view is not loaded")]
    NotReady,
    /// A commit whose versions no longer match the view, or whose token is unknown.
    #[error("the write does not apply to the current state")]
    Conflict,
}

/// A keyed accumulator of the whole view: `Σ HMAC_k(kind ‖ id ‖ generation ‖ digest ‖ live)`
/// mod 2^256 over every entry. O(1) to update per change; equal for two views exactly when they
/// hold the same entries (the host knows neither `k` nor any summand, so it cannot build a
/// different set with the same sum). It is what witnesses hold (`docs/state.md`).
pub type Accumulator = [u8; 32];

/// The view.
pub struct Ledger {
    ready: bool,
    /// Accumulator key (`None` in tests that need no accumulator).
    acc_key: Option<hmac::Key>,
    /// Accumulator as four little-endian 64-bit limbs.
    acc: [u64; 4],
    /// Whether showing a prepared write's result commits it (off for a witnessed domain: only a
    /// witnessed round may advance the view).
    auto_commit: bool,
    seq: u64,
    entries: Entries,
    /// Live aliases by target key, for listings by key and deletions.
    by_target: BTreeSet<(u128, Box<str>)>,
    /// Target of each live alias.
    targets: HashMap<Box<str>, u128>,
    prepared: HashMap<u64, (Instant, Vec<Change>)>,
    next_token: u64,
    /// Tokens committed because the host showed their result before it sent `Commit`.
    shown: std::collections::VecDeque<u64>,
}

impl std::fmt::Debug for Ledger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ledger")
            .field("ready", &self.ready)
            .field("seq", &self.seq)
            .field("entries", &self.entries.len())
            .field("prepared", &self.prepared.len())
            .finish_non_exhaustive()
    }
}

/// What a witnessed round would do: the tokens that apply in order, those that conflict, and
/// the accumulator after the ones that apply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Simulated {
    /// Tokens that apply, in order.
    pub ok: Vec<u64>,
    /// Tokens that conflict with the view or an earlier token of the round, or are unknown.
    pub refused: Vec<u64>,
    /// The accumulator after `ok`.
    pub acc: Accumulator,
}

impl Ledger {
    /// The view of a new domain: empty and ready.
    #[must_use]
    pub fn new_ready() -> Self {
        Self {
            ready: true,
            ..Self::loading()
        }
    }

    /// The view of an unsealed domain before the host loaded its records.
    #[must_use]
    pub fn loading() -> Self {
        Self {
            ready: false,
            acc_key: None,
            acc: [0; 4],
            auto_commit: true,
            seq: 0,
            entries: Entries::default(),
            by_target: BTreeSet::new(),
            targets: HashMap::new(),
            prepared: HashMap::new(),
            next_token: 1,
            shown: std::collections::VecDeque::new(),
        }
    }

    /// The same view, accumulating under `key` (set before anything is added).
    #[must_use]
    pub fn keyed(mut self, key: hmac::Key, witnessed: bool) -> Self {
        debug_assert!(self.entries.is_empty());
        self.acc_key = Some(key);
        self.auto_commit = !witnessed;
        self
    }

    /// The accumulator of the whole view.
    #[must_use]
    pub fn acc(&self) -> Accumulator {
        to_bytes(self.acc)
    }

    /// Whether the view is complete.
    #[must_use]
    pub fn is_ready(&self) -> bool {
        self.ready
    }

    /// Records in the view (tombstones included).
    #[must_use]
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the view is empty.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The last number handed out.
    #[must_use]
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// Adds a stored record while loading; of two copies of one record the higher generation
    /// wins (an honest store has one).
    pub fn ingest(&mut self, id: RecordId, version: Version, live: bool, target: Option<u128>) {
        self.seq = self.seq.max(version.seq);
        if let Some(old) = self.entries.get(&id)
            && old.version().seq >= version.seq
        {
            return;
        }
        self.set(id, Entry::new(version, live), target);
    }

    /// Ends loading: the enclave serves from now on.
    pub fn finish_load(&mut self) {
        self.ready = true;
    }

    /// Registers a record the enclave made outside any operation (the genesis principal).
    pub fn insert_own(&mut self, id: RecordId, version: Version) {
        self.seq = self.seq.max(version.seq);
        self.set(id, Entry::new(version, true), None);
    }

    /// A fresh generation.
    pub fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    /// Checks that `sealed` is the current copy of `id` (or the result of a prepared write, which
    /// showing commits); returns its version.
    pub fn check(
        &mut self,
        id: &RecordId,
        seq: u64,
        sealed: &[u8],
    ) -> Result<Version, LedgerError> {
        let digest = digest_of(sealed);
        self.check_version(id, Version { seq, digest })
    }

    /// [`Ledger::check`] of a version whose digest the caller computed from the sealed bytes
    /// shown.
    pub fn check_version(
        &mut self,
        id: &RecordId,
        version: Version,
    ) -> Result<Version, LedgerError> {
        if !self.ready {
            return Err(LedgerError::NotReady);
        }
        let current = self
            .entries
            .get(id)
            .is_some_and(|e| e.live() && e.version() == version);
        if current || self.commit_shown(id, Some(version)) {
            Ok(version)
        } else {
            Err(LedgerError::Stale)
        }
    }

    /// The version of a record the host shows, once the view is loaded.
    fn shown(&self, seq: u64, sealed: &[u8]) -> Result<Version, LedgerError> {
        if !self.ready {
            return Err(LedgerError::NotReady);
        }
        Ok(Version {
            seq,
            digest: digest_of(sealed),
        })
    }

    /// Commits the prepared write whose result for `id` is `shown` (`None`: a deletion), if any
    /// still applies. The host showing it claims it durable, exactly as `Commit` would.
    fn commit_shown(&mut self, id: &RecordId, shown: Option<Version>) -> bool {
        if !self.auto_commit {
            return false;
        }
        let token = self.prepared.iter().find_map(|(t, (_, changes))| {
            changes
                .iter()
                .any(|c| {
                    c.id == *id
                        && match shown {
                            Some(v) => c.live && c.new == v,
                            None => !c.live,
                        }
                })
                .then_some(*t)
        });
        let Some(token) = token else {
            return false;
        };
        if self.commit(token).is_err() {
            return false;
        }
        if self.shown.len() >= MAX_SHOWN {
            self.shown.pop_front();
        }
        self.shown.push_back(token);
        true
    }

    /// Checks that `sealed` is the current tombstone of `id`; returns its version.
    pub fn check_tombstone(
        &self,
        id: &RecordId,
        seq: u64,
        sealed: &[u8],
    ) -> Result<Version, LedgerError> {
        let version = self.shown(seq, sealed)?;
        match self.entries.get(id) {
            Some(e) if !e.live() && e.version() == version => Ok(version),
            _ => Err(LedgerError::Stale),
        }
    }

    /// Checks the host's claim that `id` does not exist (true too when a prepared deletion of it
    /// is shown done, which commits it).
    pub fn check_absent(&mut self, id: &RecordId) -> Result<(), LedgerError> {
        if !self.ready {
            return Err(LedgerError::NotReady);
        }
        let live = self.entries.get(id).is_some_and(Entry::live);
        if live && !self.commit_shown(id, None) {
            Err(LedgerError::Stale)
        } else {
            Ok(())
        }
    }

    /// Holds a write until the host commits it; returns its token.
    pub fn prepare(&mut self, changes: Vec<Change>) -> u64 {
        let now = Instant::now();
        self.prepared
            .retain(|_, (at, _)| now.duration_since(*at) < PREPARED_TTL);
        if self.prepared.len() >= MAX_PREPARED
            && let Some(oldest) = self
                .prepared
                .iter()
                .min_by_key(|(_, (at, _))| *at)
                .map(|(t, _)| *t)
        {
            self.prepared.remove(&oldest);
        }
        let token = self.next_token;
        self.next_token += 1;
        self.prepared.insert(token, (now, changes));
        token
    }

    /// Applies a prepared write, if every version it read is still current (or says it was
    /// applied already, when the host showed its result first).
    pub fn commit(&mut self, token: u64) -> Result<(), LedgerError> {
        if let Some(i) = self.shown.iter().position(|t| *t == token) {
            self.shown.remove(i);
            return Ok(());
        }
        let (_, changes) = self.prepared.remove(&token).ok_or(LedgerError::Conflict)?;
        for c in &changes {
            let current = self
                .entries
                .get(&c.id)
                .filter(|e| e.live())
                .map(Entry::version);
            if current != c.expected {
                return Err(LedgerError::Conflict);
            }
        }
        for c in changes {
            self.set(c.id, Entry::new(c.new, c.live), c.target);
        }
        Ok(())
    }

    /// What committing `tokens` in order would do, without doing it.
    #[must_use]
    pub fn simulate(&self, tokens: &[u64]) -> Simulated {
        let mut overlay: HashMap<&RecordId, Option<Entry>> = HashMap::new();
        let mut acc = self.acc;
        let (mut ok, mut refused) = (Vec::new(), Vec::new());
        for t in tokens {
            let Some((_, changes)) = self.prepared.get(t) else {
                refused.push(*t);
                continue;
            };
            let current = |overlay: &HashMap<&RecordId, Option<Entry>>, id: &RecordId| {
                overlay
                    .get(id)
                    .copied()
                    .unwrap_or_else(|| self.entries.get(id))
            };
            let applies = changes.iter().all(|c| {
                current(&overlay, &c.id)
                    .filter(|e| e.live())
                    .map(Entry::version)
                    == c.expected
            }) && !ok.contains(t);
            if !applies {
                refused.push(*t);
                continue;
            }
            for c in changes {
                let new = Entry::new(c.new, c.live);
                if let Some(key) = &self.acc_key {
                    if let Some(old) = current(&overlay, &c.id) {
                        acc = sub(acc, summand(key, &c.id, &old));
                    }
                    acc = add(acc, summand(key, &c.id, &new));
                }
                overlay.insert(&c.id, Some(new));
            }
            ok.push(*t);
        }
        Simulated {
            ok,
            refused,
            acc: to_bytes(acc),
        }
    }

    fn set(&mut self, id: RecordId, entry: Entry, target: Option<u128>) {
        if let Some(key) = &self.acc_key {
            if let Some(old) = self.entries.get(&id) {
                self.acc = sub(self.acc, summand(key, &id, &old));
            }
            self.acc = add(self.acc, summand(key, &id, &entry));
        }
        if let RecordId::Alias(name) = &id {
            if let Some(old) = self.targets.remove(name) {
                self.by_target.remove(&(old, name.clone()));
            }
            if entry.live()
                && let Some(t) = target
            {
                self.targets.insert(name.clone(), t);
                self.by_target.insert((t, name.clone()));
            }
        }
        self.entries.insert(id, entry);
    }

    /// The current version of a live record.
    #[must_use]
    pub fn current(&self, id: &RecordId) -> Option<Version> {
        self.entries
            .get(id)
            .filter(|e| e.live())
            .map(Entry::version)
    }
}
