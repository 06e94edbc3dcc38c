//! Replay refusal: a signed request that changes state runs at most once. AWS KMS accepts a
//! `SigV4`-signed request again for as long as its date is within the 15-minute skew window, so
//! whoever sees a request (here: the untrusted host) could send a `DisableKey` again after the
//! owner re-enabled the key. The enclave remembers the signatures of the state-changing requests
//! it ran until their dates leave the window, and refuses a second run.
//!
//! It must never forget an entry whose request could still verify: when full, it refuses new
//! state-changing requests (fail closed) rather than evict. What it cannot know (requests run
//! before this enclave started, entries dropped before its clock went back) it refuses too.
//! The cache is one enclave's memory: peers of a fleet do not share it yet.

use std::{
    collections::{HashMap, HashSet},
    sync::Mutex,
};

use aws_lc_rs::digest;
use chrono::{DateTime, Utc};

use ekms_wire::msg::KmsErrorCode;

use crate::{KmsError, auth::SKEW_MINUTES};

pub use ekms_wire::msg::MSG_REPLAYED;

/// Most signatures remembered at once: 1,048,576. An entry is 16 bytes; with the hash tables'
/// spare slots and control bytes (17 bytes a slot, tables at most 7/8 full and sized in powers
/// of two) a full cache holds at most about 40 MiB, briefly more while one minute's table grows.
/// Entries live at most 31 minutes (a request may be dated up to 15 minutes ahead of the
/// enclave's clock and stays valid 15 minutes after its date), so the cap is only reached above
/// roughly 560 state-changing requests per second sustained; AWS's own quotas for these
/// operations are far lower.
pub const CAPACITY: usize = 1 << 20;

/// Names one signed request: the first 16 bytes of the SHA-256 of its verified signature.
///
/// The signature that verifies is 64 lower-case hex digits, so a request has exactly one
/// spelling of it and the host cannot make a second, different-looking copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RequestId([u8; 16]);

impl RequestId {
    /// The id of the request whose verified signature (hex) is `signature`.
    #[must_use]
    pub fn of_signature(signature: &str) -> Self {
        let d = digest::digest(&digest::SHA256, signature.as_bytes());
        let mut id = [0u8; 16];
        for (dst, src) in id.iter_mut().zip(d.as_ref()) {
            *dst = *src;
        }
        Self(id)
    }

    /// Its 16 bytes (shown as the request's id, see `plan::request_id`).
    #[must_use]
    pub fn bytes(self) -> [u8; 16] {
        self.0
    }
}

/// Why a state-changing request may not run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReplayError {
    /// This exact signed request already ran within the skew window.
    #[error("this signed request was already executed")]
    Replayed,
    /// The cache holds [`CAPACITY`] unexpired entries; nothing may be evicted without reopening
    /// replay, so new state-changing requests wait until entries expire.
    #[error("the replay cache is full")]
    Full,
    /// The request is dated before what this cache can vouch for: before the enclave started
    /// (it may have run in the previous life), or in a minute whose entries were already
    /// dropped (only after the clock went back).
    #[error("the request is dated before the replay cache's horizon")]
    BeforeHorizon,
}

impl From<ReplayError> for KmsError {
    fn from(e: ReplayError) -> Self {
        match e {
            // A 400 that every AWS SDK classifies as throttling: an honest client whose two
            // identical calls fell in the same second backs off, signs again with a later date
            // and goes through; a replayed request changes nothing whatever the client does.
            ReplayError::Replayed => KmsError::new(KmsErrorCode::ThrottlingException, MSG_REPLAYED),
            ReplayError::Full => KmsError::new(
                KmsErrorCode::KMSInternalException,
                format!(
                    "The enclave's replay cache is full: it remembers every state-changing request \
                     until its signature expires (at most {CAPACITY}) and refuses new ones rather \
                     than forget one. Retry the request later."
                ),
            ),
            ReplayError::BeforeHorizon => KmsError::new(
                KmsErrorCode::KMSInternalException,
                "This state-changing request is dated before the enclave started (or before \
                 the requests it still remembers), so it cannot tell whether it already ran. \
                 Sign and send a new request; if this repeats, check the client's clock.",
            ),
        }
    }
}

/// The signatures of the state-changing requests run in this enclave's life, bucketed by the
/// minute of their request date so that a lookup touches one bucket and expiry drops whole ones.
#[derive(Debug)]
pub struct ReplayCache {
    capacity: usize,
    inner: Mutex<Buckets>,
}

#[derive(Debug, Default)]
struct Buckets {
    by_minute: HashMap<i64, HashSet<RequestId>>,
    len: usize,
    /// Requests dated before this (Unix seconds) are refused: the enclave's start, then the
    /// start of the oldest minute still kept.
    horizon: i64,
}

impl ReplayCache {
    /// An empty cache of [`CAPACITY`] for an enclave started at `started`: requests dated
    /// before that second may have run in a previous life of the enclave and are refused.
    #[must_use]
    pub fn new(started: DateTime<Utc>) -> Self {
        Self::with_capacity(CAPACITY, started)
    }

    /// Like [`ReplayCache::new`], holding at most `capacity` entries.
    #[must_use]
    pub fn with_capacity(capacity: usize, started: DateTime<Utc>) -> Self {
        Self {
            capacity,
            inner: Mutex::new(Buckets {
                horizon: started.timestamp(),
                ..Buckets::default()
            }),
        }
    }

    /// Atomically checks that `id` (dated `signed_at`) has not run and records it, at time
    /// `now`. Expired buckets are dropped first.
    ///
    /// # Errors
    /// [`ReplayError::Replayed`] for a second run, [`ReplayError::Full`] when the cache is full
    /// of unexpired entries, [`ReplayError::BeforeHorizon`] for a request dated before the
    /// enclave started or before entries already dropped. A poisoned lock counts as full.
    pub fn admit(
        &self,
        id: RequestId,
        signed_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<(), ReplayError> {
        let mut b = self.inner.lock().map_err(|_| ReplayError::Full)?;
        b.expire(minute(now));
        if signed_at.timestamp() < b.horizon {
            return Err(ReplayError::BeforeHorizon);
        }
        let m = minute(signed_at);
        if b.by_minute.get(&m).is_some_and(|s| s.contains(&id)) {
            return Err(ReplayError::Replayed);
        }
        if b.len >= self.capacity {
            return Err(ReplayError::Full);
        }
        b.by_minute.entry(m).or_default().insert(id);
        b.len += 1;
        Ok(())
    }

    /// Forgets `id` again: for a request that was admitted but provably changed nothing (its
    /// records were stale, so the host re-reads them and sends the same request again).
    pub fn release(&self, id: RequestId, signed_at: DateTime<Utc>) {
        if let Ok(mut b) = self.inner.lock() {
            let m = minute(signed_at);
            let removed = b.by_minute.get_mut(&m).is_some_and(|s| s.remove(&id));
            if removed {
                b.len = b.len.saturating_sub(1);
            }
        }
    }

    /// Entries held.
    #[must_use]
    pub fn len(&self) -> usize {
        self.inner.lock().map_or(0, |b| b.len)
    }

    /// Whether no entry is held.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Buckets {
    /// Drops the buckets no request can verify in any more. A request dated in minute `m` is at
    /// most `60m + 59` seconds and verifies until `SKEW_MINUTES` after that, so from minute
    /// `m + SKEW_MINUTES + 1` on it is refused as expired before it gets here.
    fn expire(&mut self, now_minute: i64) {
        let oldest_kept = now_minute.saturating_sub(SKEW_MINUTES);
        let horizon = oldest_kept.saturating_mul(60);
        if horizon <= self.horizon {
            return;
        }
        self.horizon = horizon;
        let mut dropped = 0;
        self.by_minute.retain(|m, s| {
            let keep = *m >= oldest_kept;
            if !keep {
                dropped += s.len();
            }
            keep
        });
        self.len = self.len.saturating_sub(dropped);
    }
}

fn minute(t: DateTime<Utc>) -> i64 {
    t.timestamp().div_euclid(60)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Duration, TimeZone as _};

    fn at(secs: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_800_000_000 + secs, 0).unwrap()
    }

    fn id(n: u8) -> RequestId {
        RequestId::of_signature(&format!("{n:064x}"))
    }

    #[test]
    fn a_request_runs_once_and_its_id_depends_on_the_signature() {
        let c = ReplayCache::new(at(0));
        assert!(c.is_empty());
        c.admit(id(1), at(0), at(0)).unwrap();
        assert_eq!(c.admit(id(1), at(0), at(30)), Err(ReplayError::Replayed));
        c.admit(id(2), at(0), at(30)).unwrap();
        assert_eq!(c.len(), 2);
        assert_ne!(id(1), id(2));
        assert_eq!(id(1), RequestId::of_signature(&format!("{:064x}", 1)));
    }

    #[test]
    fn the_same_signature_in_another_minute_is_another_bucket() {
        // The date is part of what a signature signs, so equal signatures with different
        // dates do not occur; the buckets must still keep them apart.
        let c = ReplayCache::new(at(0));
        c.admit(id(1), at(0), at(0)).unwrap();
        c.admit(id(1), at(60), at(60)).unwrap();
        assert_eq!(c.admit(id(1), at(61), at(61)), Err(ReplayError::Replayed));
        assert_eq!(c.admit(id(1), at(59), at(61)), Err(ReplayError::Replayed));
        assert_eq!(c.len(), 2);
    }

    #[test]
    fn entries_last_as_long_as_the_skew_window_then_expire() {
        let c = ReplayCache::new(at(0));
        // Dated at the last second of its minute: it verifies until 15 minutes after that.
        c.admit(id(1), at(59), at(59)).unwrap();
        let last_valid = at(59) + Duration::minutes(SKEW_MINUTES);
        assert_eq!(
            c.admit(id(1), at(59), last_valid),
            Err(ReplayError::Replayed)
        );
        assert_eq!(c.len(), 1);
        // One second later no verifier accepts it; the bucket is gone.
        c.admit(id(2), last_valid, last_valid + Duration::seconds(1))
            .unwrap();
        assert_eq!(c.len(), 1);
        // A request dated in the dropped minute is refused even if a clock that went back
        // would verify it.
        assert_eq!(
            c.admit(id(1), at(59), at(60)),
            Err(ReplayError::BeforeHorizon)
        );
        // A request dated ahead of the clock is kept until its own window ends.
        let ahead = last_valid + Duration::minutes(SKEW_MINUTES);
        c.admit(id(3), ahead, last_valid).unwrap();
        assert_eq!(
            c.admit(id(3), ahead, ahead + Duration::minutes(SKEW_MINUTES)),
            Err(ReplayError::Replayed)
        );
    }

    #[test]
    fn a_full_cache_refuses_and_never_evicts_unexpired_entries() {
        let c = ReplayCache::with_capacity(3, at(0));
        for n in 0..3 {
            c.admit(id(n), at(0), at(0)).unwrap();
        }
        assert_eq!(c.admit(id(9), at(1), at(1)), Err(ReplayError::Full));
        // A replay is still named as one, and nothing was evicted.
        assert_eq!(c.admit(id(0), at(0), at(1)), Err(ReplayError::Replayed));
        assert_eq!(c.len(), 3);
        // Once the entries' window has passed there is room again.
        let later = at(0) + Duration::minutes(SKEW_MINUTES + 1);
        c.admit(id(9), later, later).unwrap();
        assert_eq!(c.len(), 1);
    }

    #[test]
    fn each_refusal_has_its_aws_error() {
        let e = KmsError::from(ReplayError::Replayed);
        assert_eq!(
            (e.code, e.message.as_str()),
            (KmsErrorCode::ThrottlingException, MSG_REPLAYED)
        );
        let e = KmsError::from(ReplayError::Full);
        assert_eq!(e.code, KmsErrorCode::KMSInternalException);
        assert!(e.message.contains("replay cache is full"), "{}", e.message);
        let e = KmsError::from(ReplayError::BeforeHorizon);
        assert_eq!(e.code, KmsErrorCode::KMSInternalException);
        assert!(
            e.message.contains("check the client's clock"),
            "{}",
            e.message
        );
    }

    #[test]
    fn requests_dated_before_the_enclave_started_are_refused() {
        // They may have run in the enclave's previous life; a client whose clock lags is
        // served once its clock passes the start.
        let c = ReplayCache::new(at(30));
        assert_eq!(
            c.admit(id(1), at(29), at(31)),
            Err(ReplayError::BeforeHorizon)
        );
        c.admit(id(1), at(30), at(31)).unwrap();
        assert!(
            KmsError::from(ReplayError::BeforeHorizon)
                .message
                .contains("before the enclave started")
        );
    }

    #[test]
    fn a_released_request_may_run_again() {
        let c = ReplayCache::new(at(0));
        c.admit(id(1), at(0), at(0)).unwrap();
        c.release(id(1), at(0));
        assert!(c.is_empty());
        c.admit(id(1), at(0), at(1)).unwrap();
        // Releasing what is not there changes nothing.
        c.release(id(2), at(0));
        assert_eq!(c.len(), 1);
    }
}
