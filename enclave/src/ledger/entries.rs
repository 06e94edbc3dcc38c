//! Where the view keeps its entries, laid out for the two kinds that grow with the number of
//! keys: key records and their last-usage records (one each per key) sit in maps keyed by the
//! key's 16 id bytes, with an unaligned 25-byte entry; every other record (aliases, principals,
//! grants, replica usage) in one map keyed by its [`RecordId`], in the store's order.
//!
//! Memory, measured by the ignored test `ledger_memory_at_one_million_keys`: a key entry was a
//! 48-byte `RecordId` and a 32-byte entry in one `BTreeMap` (117 MiB for 1,000,000 keys, 114 more
//! for their usage records); here it is 17 and 25 bytes (66 and 61 MiB).

use std::{collections::BTreeMap, ops::Bound};

use super::{RecordId, Version};

/// One record's current version and whether it is live (false: a tombstone). Packed: the
/// view holds one per record, and alignment would add 7 bytes to each.
#[derive(Debug, Clone, Copy)]
#[repr(C, packed)]
pub(super) struct Entry {
    version: Version,
    live: bool,
}

impl Entry {
    pub(super) fn new(version: Version, live: bool) -> Self {
        Self { version, live }
    }

    pub(super) fn version(self) -> Version {
        self.version
    }

    pub(super) fn live(self) -> bool {
        self.live
    }

    /// Same version and liveness.
    #[cfg(test)]
    pub(super) fn same(self, other: Self) -> bool {
        self.live() == other.live() && self.version() == other.version()
    }
}

/// A key's id as the key map orders it: multi-Region keys after all others, then by the
/// id's big-endian bytes (the order of their hyphenated ids, as `RecordId` orders them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct KeyId {
    mrk: bool,
    bits: [u8; 16],
}

impl KeyId {
    fn of(id: &RecordId) -> Option<Self> {
        match id {
            RecordId::Key(u) => Some(Self {
                mrk: false,
                bits: u.to_be_bytes(),
            }),
            RecordId::Mrk(u) => Some(Self {
                mrk: true,
                bits: u.to_be_bytes(),
            }),
            _ => None,
        }
    }
}

/// Where one record's entry lives.
enum Slot<'a> {
    Key(KeyId),
    /// The usage record of a key's only region (or a multi-Region key's home region).
    Usage([u8; 16]),
    Named(&'a RecordId),
}

fn slot(id: &RecordId) -> Slot<'_> {
    match id {
        RecordId::Usage(u, region) if region.is_empty() => Slot::Usage(u.to_be_bytes()),
        _ => KeyId::of(id).map_or(Slot::Named(id), Slot::Key),
    }
}

/// The entries of the view.
#[derive(Debug, Default)]
pub(super) struct Entries {
    keys: BTreeMap<KeyId, Entry>,
    usage: BTreeMap<[u8; 16], Entry>,
    named: BTreeMap<RecordId, Entry>,
}

impl Entries {
    pub(super) fn len(&self) -> usize {
        self.keys.len() + self.usage.len() + self.named.len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub(super) fn get(&self, id: &RecordId) -> Option<Entry> {
        match slot(id) {
            Slot::Key(k) => self.keys.get(&k),
            Slot::Usage(u) => self.usage.get(&u),
            Slot::Named(id) => self.named.get(id),
        }
        .copied()
    }

    pub(super) fn insert(&mut self, id: RecordId, entry: Entry) {
        match slot(&id) {
            Slot::Key(k) => {
                self.keys.insert(k, entry);
            }
            Slot::Usage(u) => {
                self.usage.insert(u, entry);
            }
            Slot::Named(_) => {
                self.named.insert(id, entry);
            }
        }
    }

    /// The live keys after `after`, in the store's order.
    pub(super) fn live_keys_after(
        &self,
        after: Option<&RecordId>,
    ) -> impl Iterator<Item = u128> + '_ {
        let start = match after {
            None => Bound::Unbounded,
            Some(a) => match KeyId::of(a) {
                Some(k) => Bound::Excluded(k),
                // Every other record sorts after the keys.
                None => Bound::Excluded(KeyId {
                    mrk: true,
                    bits: [0xff; 16],
                }),
            },
        };
        self.keys
            .range((start, Bound::Unbounded))
            .filter(|(_, e)| e.live())
            .map(|(k, _)| u128::from_be_bytes(k.bits))
    }

    /// The other records (aliases, principals, grants, replica usage) in `range`, in order.
    pub(super) fn named_range(
        &self,
        range: (Bound<RecordId>, Bound<RecordId>),
    ) -> impl Iterator<Item = (&RecordId, &Entry)> + '_ {
        self.named.range(range)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(seq: u64, live: bool) -> Entry {
        Entry::new(
            Version {
                seq,
                digest: [u8::try_from(seq).unwrap(); 16],
            },
            live,
        )
    }

    #[test]
    fn an_entry_takes_25_bytes_and_a_key_id_17() {
        assert_eq!(std::mem::size_of::<Entry>(), 25);
        assert_eq!(std::mem::size_of::<KeyId>(), 17);
    }

    #[test]
    fn every_kind_of_record_is_found_where_it_was_put() {
        let ids = [
            RecordId::Key(7),
            RecordId::Mrk(7),
            RecordId::Usage(7, "".into()),
            RecordId::Usage(7, "eu-west-1".into()),
            RecordId::alias("alias/seven"),
            RecordId::principal("seven"),
            RecordId::Grant(7, "g".into()),
        ];
        let mut entries = Entries::default();
        for (n, id) in (1..).zip(&ids) {
            entries.insert(id.clone(), e(n, n % 2 == 0));
        }
        assert_eq!(entries.len(), ids.len());
        for (n, id) in (1..).zip(&ids) {
            let got = entries.get(id).unwrap();
            assert!(got.same(e(n, n % 2 == 0)), "{id:?}");
        }
        assert!(entries.get(&RecordId::Key(8)).is_none());
        assert!(entries.get(&RecordId::Usage(8, "".into())).is_none());
        // A replacement replaces.
        entries.insert(RecordId::Key(7), e(9, false));
        assert!(entries.get(&RecordId::Key(7)).unwrap().same(e(9, false)));
        assert_eq!(entries.len(), ids.len());
    }

    #[test]
    fn keys_list_in_the_order_of_their_ids_with_multi_region_keys_last() {
        let mut entries = Entries::default();
        for (n, id) in [
            RecordId::Mrk(1),
            RecordId::Key(u128::MAX),
            RecordId::Key(3),
            RecordId::Key(1 << 100),
            RecordId::Key(5),
        ]
        .into_iter()
        .enumerate()
        {
            entries.insert(id, e(n as u64 + 1, true));
        }
        entries.insert(RecordId::Key(4), e(9, false));
        let all: Vec<u128> = entries.live_keys_after(None).collect();
        assert_eq!(all, [3, 5, 1 << 100, u128::MAX, 1]);
        let rest: Vec<u128> = entries.live_keys_after(Some(&RecordId::Key(4))).collect();
        assert_eq!(rest, [5, 1 << 100, u128::MAX, 1]);
        let rest: Vec<u128> = entries
            .live_keys_after(Some(&RecordId::Key(u128::MAX)))
            .collect();
        assert_eq!(rest, [1]);
        assert_eq!(
            entries
                .live_keys_after(Some(&RecordId::alias("alias/x")))
                .count(),
            0
        );
    }
}
