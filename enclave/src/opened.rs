//! Principal records opened by earlier calls, kept by the digest of their sealed bytes: a caller's
//! next request skips decrypting and decoding the same record (about 5 % of the enclave's CPU
//! per Encrypt). The cache decides nothing. A copy is used only for the very sealed bytes it
//! was opened from, and only after the state view has confirmed that those bytes are the
//! principal's current version ([`crate::ops::execute_noted`]): a rotated key, a changed
//! policy or a deleted principal has another digest, or none, and is refused exactly as before.
//!
//! The records hold access-key secrets. They stay inside the enclave, are dropped (and their
//! secrets zeroized, `PrincipalSecret`) when the cache is emptied, and the cache is bounded:
//! past [`MAX_PRINCIPALS`] versions it starts again empty.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use crate::{ledger::Digest, principal::PrincipalRecord};

/// Most principal versions kept.
pub const MAX_PRINCIPALS: usize = 1024;

/// The cache.
#[derive(Default)]
pub struct Opened {
    principals: Mutex<HashMap<Digest, Arc<PrincipalRecord>>>,
}

impl std::fmt::Debug for Opened {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.principals.lock().map_or(0, |m| m.len());
        write!(f, "Opened({n} principals)")
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
        if let Some(p) = self
            .principals
            .lock()
            .ok()
            .and_then(|m| m.get(&digest).cloned())
        {
            return Ok(p);
        }
        let p = Arc::new(open()?);
        if let Ok(mut m) = self.principals.lock() {
            if m.len() >= MAX_PRINCIPALS {
                *m = HashMap::new();
            }
            m.insert(digest, Arc::clone(&p));
        }
        Ok(p)
    }

    /// Principal versions kept.
    #[must_use]
    pub fn len(&self) -> usize {
        self.principals.lock().map_or(0, |m| m.len())
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
