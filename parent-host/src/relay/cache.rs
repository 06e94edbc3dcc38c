//! The relay's read-through cache of sealed records, in front of the store: bounded in bytes,
//! with S3-FIFO eviction (quick_cache), so a host serving a hundred thousand keys keeps the
//! hot ones in memory and reads the others from the store, instead of holding every record it
//! ever read. It holds only sealed records, which the enclave checks against its state view
//! on every use: a stale entry costs a retry, never a wrong answer.

use ekms_wire::msg::SealedBlob;

/// Bytes the cache holds by default (`ekms serve --record-cache`), counting ids, records and
/// [`ENTRY_OVERHEAD`]: about 14,000 key records (about 500 bytes each) in two thirds of it.
pub const DEFAULT_BYTES: u64 = 12 << 20;
/// The share of each map, in twelfths of the whole: keys, aliases, principals, grants.
const SHARES: [u64; 4] = [8, 1, 1, 2];
/// What an entry costs beyond its bytes: the cache's slot, the `String` and `Vec` headers and
/// the allocator's rounding.
const ENTRY_OVERHEAD: u64 = 96;
/// A typical entry's weight, for sizing the maps' tables.
const TYPICAL_ENTRY: u64 = 600;

/// One map of the cache, by the store's id.
pub(super) type Map<V> = quick_cache::sync::Cache<String, V, Bytes>;

/// The cached records, by kind.
pub(super) struct Cache {
    pub(super) keys: Map<SealedBlob>,
    pub(super) aliases: Map<(SealedBlob, String)>,
    /// Access key id → the principal's record and name.
    pub(super) principals: Map<(SealedBlob, String)>,
    /// `"<key id>\n<grantee ARN>"` → that grantee's grants on that key (none, too).
    pub(super) grants: Map<Vec<SealedBlob>>,
}

impl Default for Cache {
    fn default() -> Self {
        Self::with_bytes(DEFAULT_BYTES)
    }
}

impl Cache {
    /// A cache of `bytes` in all, shared among the maps by [`SHARES`] (each map at least one
    /// entry's worth, so a tiny cache still works).
    pub(super) fn with_bytes(bytes: u64) -> Self {
        fn map<V: Weight + Clone>(bytes: u64) -> Map<V> {
            let bytes = bytes.max(TYPICAL_ENTRY);
            let items = usize::try_from(bytes / TYPICAL_ENTRY).unwrap_or(1024);
            Map::with_weighter(items, bytes, Bytes)
        }
        let share = |i: usize| bytes / 12 * SHARES.get(i).copied().unwrap_or(1);
        Self {
            keys: map(share(0)),
            aliases: map(share(1)),
            principals: map(share(2)),
            grants: map(share(3)),
        }
    }
}

/// The bytes a cached value holds.
pub(super) trait Weight {
    fn bytes(&self) -> usize;
}

impl Weight for SealedBlob {
    fn bytes(&self) -> usize {
        self.0.len()
    }
}

impl Weight for (SealedBlob, String) {
    fn bytes(&self) -> usize {
        self.0.0.len() + self.1.len()
    }
}

impl Weight for Vec<SealedBlob> {
    fn bytes(&self) -> usize {
        self.iter()
            .map(|b| b.0.len() + std::mem::size_of::<SealedBlob>())
            .sum()
    }
}

/// Weighs an entry by its bytes.
#[derive(Clone, Copy, Debug)]
pub(super) struct Bytes;

impl<V: Weight> quick_cache::Weighter<String, V> for Bytes {
    fn weight(&self, key: &String, val: &V) -> u64 {
        u64::try_from(key.len() + val.bytes())
            .unwrap_or(u64::MAX / 2)
            .saturating_add(ENTRY_OVERHEAD)
    }
}

/// Drops the cached grants of key `key_id`.
pub(super) fn forget_grants(cache: &Cache, key_id: &str) {
    let prefix = format!("{key_id}\n");
    cache.grants.retain(|k, _| !k.starts_with(&prefix));
}

pub(super) fn remember<V: Weight + Clone>(map: &Map<V>, id: &str, v: V) {
    map.insert(id.to_owned(), v);
}

pub(super) fn forget<V: Weight + Clone>(map: &Map<V>, id: &str) {
    map.remove(id);
}

/// The cached value of `id`, else the store's (remembered when found).
pub(super) fn read_through<V: Weight + Clone>(
    map: &Map<V>,
    id: &str,
    fetch: impl FnOnce() -> Result<Option<V>, crate::HostError>,
) -> Result<Option<V>, crate::HostError> {
    if let Some(v) = map.get(id) {
        return Ok(Some(v));
    }
    let v = fetch()?;
    if let Some(v) = &v {
        remember(map, id, v.clone());
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cache_stays_within_its_bytes() {
        let cache = Cache::default();
        let keys_bytes = DEFAULT_BYTES / 12 * 8;
        // Twice as many 500-byte records as fit.
        let n = usize::try_from(2 * keys_bytes / (500 + 36 + ENTRY_OVERHEAD)).unwrap();
        for i in 0..n {
            remember(&cache.keys, &format!("{i:036}"), SealedBlob(vec![7; 500]));
        }
        assert!(cache.keys.weight() <= keys_bytes);
        assert!(
            cache.keys.len() < n * 3 / 5,
            "{} of {n} kept",
            cache.keys.len()
        );
        assert!(cache.keys.len() > n / 3, "{} of {n} kept", cache.keys.len());
        // A read-through miss reads the store and remembers; a hit does not read it.
        let key = "k".to_owned();
        let got = read_through(&cache.keys, &key, || Ok(Some(SealedBlob(vec![1]))));
        assert_eq!(got.unwrap().unwrap().0, [1]);
        let again = read_through(&cache.keys, &key, || panic!("read the store on a hit"));
        assert_eq!(again.unwrap().unwrap().0, [1]);
        forget(&cache.keys, &key);
        let gone = read_through(&cache.keys, &key, || Ok(None));
        assert!(gone.unwrap().is_none());
    }

    #[test]
    fn a_smaller_cache_holds_fewer_records() {
        let cache = Cache::with_bytes(1 << 20);
        for i in 0..10_000 {
            remember(&cache.keys, &format!("{i:036}"), SealedBlob(vec![7; 500]));
        }
        assert!(cache.keys.weight() <= (1 << 20) / 12 * 8);
        // 699,048 bytes of 632-byte entries: at most 1,106 of them.
        assert!(
            (500..=1_106).contains(&cache.keys.len()),
            "{}",
            cache.keys.len()
        );
        // Even a cache of nothing keeps working, one entry at a time.
        let tiny = Cache::with_bytes(0);
        remember(
            &tiny.principals,
            "a",
            (SealedBlob(vec![1; 100]), "admin".into()),
        );
        assert!(tiny.principals.get("a").is_some());
    }

    #[test]
    fn grants_are_forgotten_by_key() {
        let cache = Cache::default();
        remember(&cache.grants, "k1\narn:a", vec![SealedBlob(vec![1])]);
        remember(&cache.grants, "k1\narn:b", Vec::new());
        remember(&cache.grants, "k2\narn:a", vec![SealedBlob(vec![2])]);
        forget_grants(&cache, "k1");
        assert!(cache.grants.get("k1\narn:a").is_none());
        assert!(cache.grants.get("k1\narn:b").is_none());
        assert!(cache.grants.get("k2\narn:a").is_some());
    }
}
