//! Records opened by earlier calls, kept by the digest of their sealed bytes: the caller's
//! principal (about 5 % of the enclave's CPU per Encrypt) and the key a call uses (about 8 %:
//! decrypting and decoding it), so that the next request naming the same bytes skips that work.
//! The cache decides nothing. A copy is used only for the very sealed bytes it was opened from,
//! and only after the state view has confirmed that those bytes are the record's current
//! version ([`crate::ops::execute_noted`], [`crate::Core::current_key`]): a rotated access key,
//! a changed policy, a disabled or deleted key has another digest, or none, and is refused
//! exactly as before. An operation gets its own copy of a key record, which it may change.
//!
//! Beside each principal version it keeps the `SigV4` signing keys derived from its secrets
//! (one per access key, UTC day, region and service), so that a caller's requests of one day
//! cost one derivation (four HMACs) instead of one each. A key is kept under the digest of the
//! sealed bytes its secret came from: a rotated secret is another version, with keys of its own.
//!
//! Principals hold access-key secrets, key records their key material, and the signing keys are
//! derived from secrets. They stay inside the enclave, are dropped and zeroized
//! (`PrincipalSecret`, `KeyMaterial`, `SecretBytes`, [`SigningKey`]) when the cache is emptied,
//! and the cache is bounded: past [`MAX_PRINCIPALS`] principal versions (or as many versions
//! with signing keys) or [`MAX_KEYS`] key versions that part starts again empty, and a
//! principal version keeps at most [`MAX_SCOPES`] signing keys.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use crate::{
    auth::{Scope, SigningKey, SigningKeys},
    ledger::Digest,
    principal::PrincipalRecord,
    record::KeyRecord,
};

/// Most principal versions kept.
pub const MAX_PRINCIPALS: usize = 1024;
/// Most key record versions kept (about a kilobyte each).
pub const MAX_KEYS: usize = 1024;
/// Most signing keys kept for one principal version (two access keys, a few regions, days).
pub const MAX_SCOPES: usize = 8;

/// The cache.
pub struct Opened {
    principals: Kept<PrincipalRecord>,
    keys: Kept<KeyRecord>,
    /// Signing keys by the digest of the principal version whose secret they came from.
    signing: Mutex<HashMap<Digest, Vec<Scoped>>>,
}

/// A signing key and what it is for.
struct Scoped {
    akid: String,
    date: chrono::NaiveDate,
    region: String,
    service: String,
    key: SigningKey,
}

impl Scoped {
    fn is(&self, akid: &str, scope: &Scope<'_>) -> bool {
        self.date == scope.date
            && self.akid == akid
            && self.region == scope.region
            && self.service == scope.service
    }
}

/// A principal version with the cache of its signing keys: what a KMS or XKS call's signature
/// is checked with.
pub struct Keyed<'a> {
    /// The opened principal.
    pub record: &'a PrincipalRecord,
    /// The digest of the sealed bytes it was opened from.
    pub digest: Digest,
    /// Where its signing keys are kept.
    pub opened: &'a Opened,
}

impl SigningKeys for Keyed<'_> {
    fn signing_key(&self, akid: &str, scope: &Scope<'_>) -> Option<SigningKey> {
        self.opened.signing_key(self.digest, akid, scope, || {
            self.record.signing_key(akid, scope)
        })
    }
}

impl Default for Opened {
    fn default() -> Self {
        Self {
            principals: Kept::new(MAX_PRINCIPALS),
            keys: Kept::new(MAX_KEYS),
            signing: Mutex::default(),
        }
    }
}

impl std::fmt::Debug for Opened {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Opened({} principals, {} keys, {} signing keys)",
            self.principals.len(),
            self.keys.len(),
            self.signing_keys()
        )
    }
}

/// Opened records of one kind by the digest of their sealed bytes, at most `max`.
struct Kept<T> {
    map: Mutex<HashMap<Digest, Arc<T>>>,
    max: usize,
}

impl<T> Kept<T> {
    fn new(max: usize) -> Self {
        Self {
            map: Mutex::default(),
            max,
        }
    }

    /// The record sealed as the bytes whose digest is `digest`: kept from an earlier call, or
    /// opened now by `open` (and kept; a record that does not open is not).
    fn get_or_open<E>(
        &self,
        digest: Digest,
        open: impl FnOnce() -> Result<T, E>,
    ) -> Result<Arc<T>, E> {
        if let Some(r) = self.map.lock().ok().and_then(|m| m.get(&digest).cloned()) {
            return Ok(r);
        }
        let r = Arc::new(open()?);
        if let Ok(mut m) = self.map.lock() {
            if m.len() >= self.max {
                *m = HashMap::new();
            }
            m.insert(digest, Arc::clone(&r));
        }
        Ok(r)
    }

    fn len(&self) -> usize {
        self.map.lock().map_or(0, |m| m.len())
    }
}

impl Opened {
    /// The principal sealed as the bytes whose digest is `digest`: kept from an earlier call, or
    /// opened now by `open` (and kept).
    pub fn principal<E>(
        &self,
        digest: Digest,
        open: impl FnOnce() -> Result<PrincipalRecord, E>,
    ) -> Result<Arc<PrincipalRecord>, E> {
        self.principals.get_or_open(digest, open)
    }

    /// The key record sealed as the bytes whose digest is `digest`: kept from an earlier call,
    /// or opened now by `open` (and kept).
    pub fn key<E>(
        &self,
        digest: Digest,
        open: impl FnOnce() -> Result<KeyRecord, E>,
    ) -> Result<Arc<KeyRecord>, E> {
        self.keys.get_or_open(digest, open)
    }

    /// Key record versions kept.
    #[must_use]
    pub fn keys(&self) -> usize {
        self.keys.len()
    }

    /// The signing key of access key `akid` for `scope` of the principal version `digest`: kept
    /// from an earlier call, or derived now by `derive` (and kept).
    pub fn signing_key(
        &self,
        digest: Digest,
        akid: &str,
        scope: &Scope<'_>,
        derive: impl FnOnce() -> Option<SigningKey>,
    ) -> Option<SigningKey> {
        if let Some(k) = self.signing.lock().ok().and_then(|m| {
            m.get(&digest)?
                .iter()
                .find(|s| s.is(akid, scope))
                .map(|s| s.key.clone())
        }) {
            return Some(k);
        }
        let key = derive()?;
        if let Ok(mut m) = self.signing.lock() {
            if m.len() >= MAX_PRINCIPALS && !m.contains_key(&digest) {
                *m = HashMap::new();
            }
            let kept = m.entry(digest).or_default();
            if kept.len() >= MAX_SCOPES {
                kept.clear();
            }
            kept.push(Scoped {
                akid: akid.to_owned(),
                date: scope.date,
                region: scope.region.to_owned(),
                service: scope.service.to_owned(),
                key: key.clone(),
            });
        }
        Some(key)
    }

    /// Signing keys kept, of every version.
    #[must_use]
    pub fn signing_keys(&self) -> usize {
        self.signing
            .lock()
            .map_or(0, |m| m.values().map(Vec::len).sum())
    }

    /// Principal versions kept.
    #[must_use]
    pub fn len(&self) -> usize {
        self.principals.len()
    }

    /// Whether none is kept.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn named(name: &str) -> PrincipalRecord {
        let mut p = crate::auth::tests::principal();
        p.name = name.into();
        p
    }

    #[test]
    fn a_version_is_opened_once_and_another_digest_opens_again() {
        let cache = Opened::default();
        let mut opened = 0;
        let mut open = |name: &str| {
            opened += 1;
            Ok::<_, ()>(named(name))
        };
        let a = cache.principal([1; 16], || open("a")).unwrap();
        let again = cache.principal([1; 16], || open("x")).unwrap();
        assert_eq!(again.name, "a");
        assert!(Arc::ptr_eq(&a, &again));
        let b = cache.principal([2; 16], || open("b")).unwrap();
        assert_eq!(b.name, "b");
        assert_eq!(opened, 2);
    }

    #[test]
    fn a_record_that_does_not_open_is_not_kept() {
        let cache = Opened::default();
        assert_eq!(cache.principal([1; 16], || Err("bad")).unwrap_err(), "bad");
        assert!(cache.is_empty());
        assert_eq!(
            cache
                .principal([1; 16], || Ok::<_, ()>(named("a")))
                .unwrap()
                .name,
            "a"
        );
    }

    fn scope(date: u32, region: &str) -> Scope<'_> {
        Scope {
            date: chrono::NaiveDate::from_ymd_opt(2026, 12, date).unwrap(),
            region,
            service: "kms",
        }
    }

    #[test]
    fn a_signing_key_is_derived_once_per_version_access_key_and_scope() {
        let cache = Opened::default();
        let p = crate::auth::tests::principal();
        let akid = crate::auth::tests::AKID;
        let derived = std::cell::Cell::new(0);
        let key = |digest: Digest, akid: &str, scope: &Scope<'_>| {
            cache.signing_key(digest, akid, scope, || {
                derived.set(derived.get() + 1);
                p.signing_key(akid, scope)
            })
        };
        let first = key([1; 16], akid, &scope(2, "us-east-1")).unwrap();
        assert_eq!(
            *first,
            *crate::auth::derive(crate::auth::tests::SECRET, &scope(2, "us-east-1"))
        );
        assert_eq!(*key([1; 16], akid, &scope(2, "us-east-1")).unwrap(), *first);
        assert_eq!(derived.get(), 1);
        // Another day, region or principal version is derived anew, and differs.
        assert_ne!(*key([1; 16], akid, &scope(3, "us-east-1")).unwrap(), *first);
        assert_ne!(*key([1; 16], akid, &scope(2, "eu-west-1")).unwrap(), *first);
        assert_eq!(*key([2; 16], akid, &scope(2, "us-east-1")).unwrap(), *first);
        assert_eq!(derived.get(), 4);
        // An access key the version does not hold has no key, and none is kept for it.
        assert!(key([1; 16], "AKIAOTHER", &scope(2, "us-east-1")).is_none());
        assert_eq!(derived.get(), 5);
        assert_eq!(cache.signing_keys(), 4);
    }

    #[test]
    fn the_signing_keys_stay_bounded() {
        let cache = Opened::default();
        let key = || Some(SigningKey::default());
        for day in 1..=u32::try_from(MAX_SCOPES).unwrap() + 1 {
            cache.signing_key([1; 16], "A", &scope(day, "r"), key);
            assert!(cache.signing_keys() <= MAX_SCOPES);
        }
        for i in 0..=MAX_PRINCIPALS {
            let mut digest = [0u8; 16];
            digest[..8].copy_from_slice(&(i as u64).to_le_bytes());
            cache.signing_key(digest, "A", &scope(1, "r"), key);
            assert!(cache.signing.lock().unwrap().len() <= MAX_PRINCIPALS);
        }
    }

    #[test]
    fn the_cache_stays_bounded() {
        let cache = Opened::default();
        for i in 0..=MAX_PRINCIPALS {
            let mut digest = [0u8; 16];
            digest[..8].copy_from_slice(&(i as u64).to_le_bytes());
            cache.principal(digest, || Ok::<_, ()>(named("p"))).unwrap();
            assert!(cache.len() <= MAX_PRINCIPALS);
        }
    }
}
