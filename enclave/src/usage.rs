//! The last use of each key (`GetKeyLastUsage`): recorded in enclave memory as each successful
//! cryptographic operation ends, written back in batches as sealed usage records (kind 7) when
//! the host asks, and refused to be forgotten: usage left unwritten too long stops further
//! cryptographic operations. The host never says what a key's last usage was; it only stores
//! and shows the enclave's sealed records, which the state view checks like any record.
//!
//! Precision (docs/formats.md): the time is the enclave's clock in milliseconds; the host asks
//! for a flush every [`FLUSH_INTERVAL`], so an honest crash loses the uses of the last interval
//! or two; a host that withholds flushes gets cryptographic operations refused once a use has
//! waited [`MAX_UNSAVED`], so no host can make the enclave lose more than that and go on
//! serving.

use std::{
    collections::HashMap,
    sync::{
        Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};

use crate::{EnclaveError, ledger::Version};

/// How often the host is expected to ask for a flush (`ekms serve` does so).
pub const FLUSH_INTERVAL: Duration = Duration::from_secs(10);
/// How long a use may wait to become durable before cryptographic operations are refused.
pub const MAX_UNSAVED: Duration = Duration::from_mins(1);
/// Usage records sealed per flush request (about 200 bytes each).
pub const MAX_PER_FLUSH: usize = 2000;

/// Which usage record: a key's 128 bits and the region part of its name
/// (`ekms_wire::region::usage_region`; empty for a key's only region).
pub type UsageKey = (u128, Box<str>);

/// A sealed usage record: the last successful cryptographic operation on a key (in one region,
/// for a multi-Region key's replica).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageRecord {
    /// The key (UUID or `mrk-` id).
    pub key_id: String,
    /// The region part of the record's name (empty: the key's only region or the home region).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub region: String,
    /// The operation (one of `plan::LAST_USAGE_OPERATIONS`).
    pub operation: String,
    /// When it ended, by the enclave's clock (Unix milliseconds).
    pub ms: i64,
    /// Its request id (`x-amzn-RequestId`), from its verified signature.
    pub request_id: String,
    /// `TrackingStartDate` (Unix milliseconds): since when uses of this key are recorded.
    pub since_ms: i64,
    /// The domain-wide sequence number of this version.
    pub generation: u64,
}

impl UsageRecord {
    /// The record's name in the store, also its sealed id.
    #[must_use]
    pub fn name(&self) -> String {
        ekms_wire::region::usage_record(&self.region, &self.key_id)
    }

    /// The record, if its body names the key and region of its sealed id (a record is never
    /// moved to another key or replica: the id is authenticated, and the body must agree).
    pub fn checked(self, sealed_id: &str) -> Result<Self, EnclaveError> {
        if self.name() == sealed_id {
            Ok(self)
        } else {
            Err(EnclaveError::BadRecord)
        }
    }
}

/// One use of a key, as kept in memory. Packed: with 100,000 keys in use the tracker holds
/// 100,000 of these, and alignment would add 7 bytes to each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C, packed)]
pub struct Last {
    /// Index of the operation in `plan::LAST_USAGE_OPERATIONS`.
    pub op: u8,
    /// When it ended, Unix milliseconds (enclave clock).
    pub ms: i64,
    /// Its request id (16 bytes; shown as a UUID).
    pub request: [u8; 16],
    /// `TrackingStartDate` of the key, Unix milliseconds.
    pub since_ms: i64,
}

/// A key used since its last durable usage record (packed, as [`Last`]).
#[derive(Debug, Clone, Copy)]
#[repr(C, packed)]
struct Slot {
    latest: Last,
    /// Bumped at every use, so a flush knows whether what it sealed is still the latest.
    stamp: u64,
    /// When (monotonic ms) the oldest use not yet known durable happened.
    since: u64,
    /// The last version sealed for this slot.
    sealed: Option<Sealed>,
}

/// What a flush sealed for a slot.
#[derive(Debug, Clone, Copy)]
#[repr(C, packed)]
struct Sealed {
    /// The slot's stamp when it was sealed.
    stamp: u64,
    /// The sealed version.
    version: Version,
    /// When it was sealed (monotonic ms).
    at: u64,
}

/// The slots: those of a key's only (or home) region by the key's 16 id bytes, the few of
/// multi-Region replicas by their whole [`UsageKey`].
#[derive(Debug, Default)]
struct Slots {
    home: HashMap<[u8; 16], Slot>,
    replicas: HashMap<UsageKey, Slot>,
}

/// A slot's key, borrowed from [`Slots`].
#[derive(Clone, Copy)]
enum KeyRef<'a> {
    Home(&'a [u8; 16]),
    Replica(&'a UsageKey),
}

impl KeyRef<'_> {
    fn owned(self) -> UsageKey {
        match self {
            Self::Home(bits) => (u128::from_be_bytes(*bits), Box::default()),
            Self::Replica(key) => key.clone(),
        }
    }
}

impl Slots {
    fn get_mut(&mut self, key: &UsageKey) -> Option<&mut Slot> {
        if key.1.is_empty() {
            self.home.get_mut(&key.0.to_be_bytes())
        } else {
            self.replicas.get_mut(key)
        }
    }

    fn insert(&mut self, key: UsageKey, slot: Slot) {
        if key.1.is_empty() {
            self.home.insert(key.0.to_be_bytes(), slot);
        } else {
            self.replicas.insert(key, slot);
        }
    }

    fn len(&self) -> usize {
        self.home.len() + self.replicas.len()
    }

    fn iter(&self) -> impl Iterator<Item = (KeyRef<'_>, &Slot)> {
        let home = self.home.iter().map(|(k, s)| (KeyRef::Home(k), s));
        let replicas = self.replicas.iter().map(|(k, s)| (KeyRef::Replica(k), s));
        home.chain(replicas)
    }

    /// Keeps the slots `keep` says to (it may change them), and gives back the memory of a
    /// table that kept less than a quarter of its room: 100,000 keys used once would otherwise
    /// hold their table's memory for good.
    fn retain(&mut self, mut keep: impl FnMut(&UsageKey, &mut Slot) -> bool) {
        self.home
            .retain(|bits, s| keep(&(u128::from_be_bytes(*bits), Box::default()), s));
        self.replicas.retain(|key, s| keep(key, s));
        if self.home.len() < self.home.capacity() / 4 {
            self.home.shrink_to_fit();
        }
        if self.replicas.len() < self.replicas.capacity() / 4 {
            self.replicas.shrink_to_fit();
        }
    }
}

/// A use to seal in a flush.
#[derive(Debug, Clone)]
pub struct Due {
    /// The record.
    pub key: UsageKey,
    /// The slot's stamp when it was read.
    pub stamp: u64,
    /// The use.
    pub last: Last,
    /// The version the new record replaces (`None`: the key has none).
    pub expected: Option<Version>,
}

/// Last uses not yet known durable, per key.
#[derive(Debug)]
pub struct Tracker {
    slots: Mutex<Slots>,
    /// Monotonic ms of the oldest use not known durable (`u64::MAX`: none), read without the
    /// lock on every cryptographic operation.
    oldest: AtomicU64,
    epoch: Instant,
    /// The enclave's start (Unix ms): the tracking start of keys made before tracking existed.
    started_ms: i64,
    max_unsaved: Duration,
}

impl Tracker {
    /// An empty tracker of an enclave that started at `started_ms` (Unix ms).
    #[must_use]
    pub fn new(started_ms: i64) -> Self {
        Self {
            slots: Mutex::new(Slots::default()),
            oldest: AtomicU64::new(u64::MAX),
            epoch: Instant::now(),
            started_ms,
            max_unsaved: MAX_UNSAVED,
        }
    }

    /// The same tracker refusing after `max` instead of [`MAX_UNSAVED`] (tests).
    #[must_use]
    pub fn with_max_unsaved(mut self, max: Duration) -> Self {
        self.max_unsaved = max;
        self
    }

    /// The enclave's start, Unix ms.
    #[must_use]
    pub fn started_ms(&self) -> i64 {
        self.started_ms
    }

    fn mono(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Records a use of `key`. A use that ended earlier than the one kept (two requests
    /// finishing out of order) does not replace it.
    pub fn record(&self, key: UsageKey, last: Last) {
        let now = self.mono();
        let Ok(mut slots) = self.slots.lock() else {
            return;
        };
        if let Some(s) = slots.get_mut(&key) {
            if last.ms >= { s.latest.ms } {
                s.latest = last;
                s.stamp = s.stamp.wrapping_add(1);
            }
        } else {
            slots.insert(
                key,
                Slot {
                    latest: last,
                    stamp: 1,
                    since: now,
                    sealed: None,
                },
            );
            self.oldest.fetch_min(now, Ordering::Relaxed);
        }
    }

    /// Whether a use has waited longer than allowed to become durable.
    #[must_use]
    pub fn overdue(&self) -> bool {
        let oldest = self.oldest.load(Ordering::Relaxed);
        oldest != u64::MAX
            && Duration::from_millis(self.mono().saturating_sub(oldest)) > self.max_unsaved
    }

    /// The latest use of `key` not yet known durable.
    #[must_use]
    pub fn latest(&self, key: &UsageKey) -> Option<Last> {
        self.slots.lock().ok()?.get_mut(key).map(|s| s.latest)
    }

    /// Forgets the slots whose sealed version is now current in the view (`current`) and
    /// unchanged since, and lists at most `limit` others to seal. Returns them and whether more
    /// wait.
    pub fn due(
        &self,
        current: impl Fn(&UsageKey) -> Option<Version>,
        limit: usize,
    ) -> (Vec<Due>, bool) {
        let Ok(mut slots) = self.slots.lock() else {
            return (Vec::new(), false);
        };
        slots.retain(|key, s| {
            let Some(sealed) = s.sealed else {
                return true;
            };
            if current(key) != Some(sealed.version) {
                return true;
            }
            if sealed.stamp == s.stamp {
                return false;
            }
            // What was sealed is durable; only the uses after its sealing are not.
            s.since = sealed.at;
            s.sealed = None;
            true
        });
        let oldest = slots.iter().map(|(_, s)| s.since).min().unwrap_or(u64::MAX);
        self.oldest.store(oldest, Ordering::Relaxed);
        // The `limit` oldest, oldest first, so a long backlog drains in order of urgency: a
        // selection over all slots, then a sort of the chosen (with 100,000 keys in use, a
        // sort of them all, under the state view's lock, took most of the enclave's time).
        let mut order: Vec<(u64, KeyRef<'_>, &Slot)> =
            slots.iter().map(|(key, s)| (s.since, key, s)).collect();
        let more = order.len() > limit;
        if more {
            order.select_nth_unstable_by_key(limit, |(since, ..)| *since);
            order.truncate(limit);
        }
        order.sort_unstable_by_key(|(since, ..)| *since);
        let due = order
            .into_iter()
            .map(|(_, key, s)| {
                let key = key.owned();
                let expected = current(&key);
                Due {
                    key,
                    stamp: s.stamp,
                    last: s.latest,
                    expected,
                }
            })
            .collect();
        (due, more)
    }

    /// Notes that the use with `stamp` of `key` was sealed as `version` (durable once the
    /// view holds that version).
    pub fn sealed(&self, key: &UsageKey, stamp: u64, version: Version) {
        let now = self.mono();
        if let Ok(mut slots) = self.slots.lock()
            && let Some(s) = slots.get_mut(key)
        {
            s.sealed = Some(Sealed {
                stamp,
                version,
                at: now,
            });
        }
    }

    /// Keys with uses not yet known durable.
    #[must_use]
    pub fn len(&self) -> usize {
        self.slots.lock().map_or(0, |s| s.len())
    }

    /// Whether every use is known durable.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn last(ms: i64) -> Last {
        Last {
            op: 2,
            ms,
            request: [ms.to_le_bytes()[0]; 16],
            since_ms: 0,
        }
    }

    fn k(n: u128) -> UsageKey {
        (n, "".into())
    }

    fn v(seq: u64) -> Version {
        Version {
            seq,
            digest: [u8::try_from(seq).unwrap(); 16],
        }
    }

    #[test]
    fn the_latest_use_wins_and_leaves_once_durable() {
        let t = Tracker::new(0);
        t.record(k(1), last(10));
        t.record(k(1), last(30));
        // A request that ended earlier, reported later, does not move the time back.
        t.record(k(1), last(20));
        assert_eq!({ t.latest(&k(1)).unwrap().ms }, 30);
        let (due, more) = t.due(|_| None, 10);
        assert!(!more);
        assert_eq!(due.len(), 1);
        assert_eq!({ due[0].last.ms }, 30);
        t.sealed(&k(1), due[0].stamp, v(5));
        // Not yet committed: still due (sealed again, over the same expected version).
        assert_eq!(t.due(|_| None, 10).0.len(), 1);
        t.sealed(&k(1), due[0].stamp, v(6));
        // Committed: forgotten.
        assert!(t.due(|_| Some(v(6)), 10).0.is_empty());
        assert!(t.is_empty());
        assert!(!t.overdue());
    }

    #[test]
    fn a_batch_holds_the_oldest_uses_oldest_first() {
        let t = Tracker::new(0);
        // Recorded in this order, a few milliseconds apart (the tracker's clock is in ms).
        let order = [7u128, 3, 9, 1, 5, 8];
        for n in order {
            t.record(k(n), last(1));
            std::thread::sleep(Duration::from_millis(3));
        }
        let (due, more) = t.due(|_| None, 3);
        assert!(more);
        let keys: Vec<u128> = due.iter().map(|d| d.key.0).collect();
        assert_eq!(keys, [7, 3, 9]);
        let (all, more) = t.due(|_| None, 10);
        assert!(!more);
        let keys: Vec<u128> = all.iter().map(|d| d.key.0).collect();
        assert_eq!(keys, order);
    }

    #[test]
    fn a_use_after_the_seal_stays_due() {
        let t = Tracker::new(0);
        t.record(k(1), last(10));
        let (due, _) = t.due(|_| None, 10);
        t.sealed(&k(1), due[0].stamp, v(5));
        t.record(k(1), last(40));
        let (due, _) = t.due(|_| Some(v(5)), 10);
        assert_eq!(due.len(), 1);
        assert_eq!({ due[0].last.ms }, 40);
        assert_eq!(due[0].expected, Some(v(5)));
    }

    #[test]
    fn unwritten_use_becomes_overdue_and_batches_are_bounded() {
        let t = Tracker::new(0).with_max_unsaved(Duration::from_millis(30));
        for n in 0..5 {
            t.record(k(n), last(1));
        }
        assert!(!t.overdue());
        std::thread::sleep(Duration::from_millis(60));
        assert!(t.overdue());
        let (due, more) = t.due(|_| None, 3);
        assert_eq!(due.len(), 3);
        assert!(more);
        let first: Vec<u128> = due.iter().map(|d| d.key.0).collect();
        for d in &due {
            t.sealed(&d.key, d.stamp, v(d.key.0.try_into().unwrap()));
        }
        let committed = |k: &UsageKey| first.contains(&k.0).then(|| v(k.0.try_into().unwrap()));
        let (due, more) = t.due(committed, 3);
        assert_eq!(due.len(), 2);
        assert!(!more);
        // Still overdue: two uses are not durable yet.
        assert!(t.overdue());
        for d in &due {
            t.sealed(&d.key, d.stamp, v(d.key.0.try_into().unwrap()));
        }
        assert!(t.due(|k| Some(v(k.0.try_into().unwrap())), 3).0.is_empty());
        assert!(!t.overdue());
    }

    #[test]
    fn a_slot_takes_90_bytes() {
        assert_eq!(std::mem::size_of::<Last>(), 33);
        assert_eq!(std::mem::size_of::<Slot>(), 90);
    }

    #[test]
    fn replica_slots_are_kept_apart_from_the_home_region() {
        let t = Tracker::new(0);
        let replica: UsageKey = (1, "eu-west-1".into());
        t.record(k(1), last(10));
        t.record(replica.clone(), last(20));
        assert_eq!({ t.latest(&k(1)).unwrap().ms }, 10);
        assert_eq!({ t.latest(&replica).unwrap().ms }, 20);
        let (due, _) = t.due(|_| None, 10);
        let keys: Vec<UsageKey> = due.iter().map(|d| d.key.clone()).collect();
        assert_eq!(keys.len(), 2);
        assert!(keys.contains(&k(1)) && keys.contains(&replica));
        for d in &due {
            t.sealed(&d.key, d.stamp, v(u64::from(d.key.1.is_empty()) + 1));
        }
        // Only the replica's record is durable.
        let current = |key: &UsageKey| (!key.1.is_empty()).then(|| v(1));
        let (due, _) = t.due(current, 10);
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].key, k(1));
        assert!(t.latest(&replica).is_none());
    }

    #[test]
    fn a_table_emptied_by_a_flush_gives_its_memory_back() {
        let t = Tracker::new(0);
        for n in 0..10_000 {
            t.record(k(n), last(1));
        }
        let (due, _) = t.due(|_| None, 10_000);
        for d in &due {
            t.sealed(&d.key, d.stamp, v(7));
        }
        let grown = t.slots.lock().unwrap().home.capacity();
        assert!(grown >= 10_000);
        assert!(t.due(|_| Some(v(7)), 10_000).0.is_empty());
        assert!(t.slots.lock().unwrap().home.capacity() < grown / 4);
    }
}
