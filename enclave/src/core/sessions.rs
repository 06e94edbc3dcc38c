//! Sessions that strangers cannot flush: challenges this enclave mints carry their own time and
//! an HMAC under a key made at start, so issuing one stores nothing; a challenge is remembered
//! only once an authenticated party (a peer whose attestation verified) redeems it. Custody
//! submissions bring the custodian's own nonce, remembered only after the custodian's signature
//! verified. Anonymous requests (attestation, peer challenges) therefore change no state here.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    sync::Mutex,
    time::{Duration, Instant},
};

use aws_lc_rs::{digest, hmac, rand};

use super::EnclaveError;

/// How long a challenge this enclave minted stays redeemable.
pub(super) const CHALLENGE_TTL: Duration = Duration::from_mins(10);
/// Most redeemed challenges remembered within their lifetime. Only authenticated peers redeem,
/// so reaching it means a misbehaving peer fleet; new redemptions are then refused (never an
/// old one forgotten, which would reopen it for replay).
const MAX_REDEEMED: usize = 4096;
/// Most sessions one custodian can use in one start of the enclave (each is a signed
/// submission); past it the custodian's further submissions are refused, never an old session
/// forgotten.
pub(super) const MAX_SUBMISSIONS_PER_CUSTODIAN: usize = 1024;
/// Random bytes in a challenge.
const RANDOM_LEN: usize = 16;
/// `issued (8) ‖ random (16) ‖ HMAC-SHA256 (32)`.
pub(super) const CHALLENGE_LEN: usize = 8 + RANDOM_LEN + 32;

/// What a challenge is for: a challenge minted for one step is refused at another.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) enum Purpose {
    /// The running enclave's challenge to a joining peer (redeemed by `PeerGrant`).
    PeerGrant,
    /// The joining enclave's challenge to the running one (redeemed by `PeerAccept`).
    PeerAccept,
}

impl Purpose {
    fn label(self) -> &'static [u8] {
        match self {
            Self::PeerGrant => b"ekms/v1/challenge/peer-grant",
            Self::PeerAccept => b"ekms/v1/challenge/peer-accept",
        }
    }
}

/// Why a challenge or a session was not accepted; public text.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub(super) enum SessionRefusal {
    /// Not minted by this start of the enclave for this purpose (or altered).
    #[error("it answers no challenge this enclave issued since it started")]
    Unknown,
    /// Minted, but more than [`CHALLENGE_TTL`] ago.
    #[error("its challenge expired (challenges last ten minutes)")]
    Expired,
    /// Already redeemed.
    #[error("its challenge or session was already used")]
    Used,
    /// The redeemed table is full (see [`MAX_REDEEMED`], [`MAX_SUBMISSIONS_PER_CUSTODIAN`]).
    #[error("too many sessions were used since this enclave started; restart it")]
    Full,
}

/// The per-start challenge key and what authenticated parties redeemed.
#[derive(Debug)]
pub(super) struct Sessions {
    /// HMAC key of this start; `None` only if the random source failed at start (then no
    /// challenge is minted and none is accepted).
    key: Option<hmac::Key>,
    /// Challenge times count from here (this start's clock: the key dies with it).
    epoch: Instant,
    /// Redeemed challenges, oldest first, with their issue time (ms since `epoch`).
    redeemed: Mutex<VecDeque<(Purpose, [u8; RANDOM_LEN], u64)>>,
    /// Sessions each custodian (by fingerprint) used: SHA-256 of the session bytes.
    custody: Mutex<HashMap<[u8; 16], HashSet<[u8; 32]>>>,
}

impl Default for Sessions {
    fn default() -> Self {
        Self {
            key: hmac::Key::generate(hmac::HMAC_SHA256, &rand::SystemRandom::new()).ok(),
            epoch: Instant::now(),
            redeemed: Mutex::new(VecDeque::new()),
            custody: Mutex::new(HashMap::new()),
        }
    }
}

impl Sessions {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn tag(key: &hmac::Key, purpose: Purpose, head: &[u8]) -> hmac::Tag {
        let mut ctx = hmac::Context::with_key(key);
        ctx.update(purpose.label());
        ctx.update(head);
        ctx.sign()
    }

    /// A fresh challenge for `purpose`. Stores nothing.
    pub(super) fn mint(&self, purpose: Purpose) -> Result<Vec<u8>, EnclaveError> {
        self.mint_at(purpose, self.now_ms())
    }

    fn mint_at(&self, purpose: Purpose, issued: u64) -> Result<Vec<u8>, EnclaveError> {
        let key = self.key.as_ref().ok_or(EnclaveError::Crypto)?;
        let mut out = Vec::with_capacity(CHALLENGE_LEN);
        out.extend_from_slice(&issued.to_be_bytes());
        let mut random = [0u8; RANDOM_LEN];
        rand::fill(&mut random)?;
        out.extend_from_slice(&random);
        let tag = Self::tag(key, purpose, &out);
        out.extend_from_slice(tag.as_ref());
        Ok(out)
    }

    /// Redeems a challenge minted for `purpose`, once, within [`CHALLENGE_TTL`]. Call only after
    /// the redeemer is authenticated: a redemption is the one thing remembered.
    pub(super) fn redeem(&self, purpose: Purpose, challenge: &[u8]) -> Result<(), SessionRefusal> {
        let key = self.key.as_ref().ok_or(SessionRefusal::Unknown)?;
        let (head, tag) = challenge
            .split_at_checked(8 + RANDOM_LEN)
            .ok_or(SessionRefusal::Unknown)?;
        if challenge.len() != CHALLENGE_LEN {
            return Err(SessionRefusal::Unknown);
        }
        let mut signed = Vec::with_capacity(head.len() + purpose.label().len());
        signed.extend_from_slice(purpose.label());
        signed.extend_from_slice(head);
        hmac::verify(key, &signed, tag).map_err(|_| SessionRefusal::Unknown)?;
        let (issued, random) = head
            .split_first_chunk::<8>()
            .ok_or(SessionRefusal::Unknown)?;
        let issued = u64::from_be_bytes(*issued);
        let random: [u8; RANDOM_LEN] = random.try_into().map_err(|_| SessionRefusal::Unknown)?;
        let now = self.now_ms();
        let ttl = u64::try_from(CHALLENGE_TTL.as_millis()).unwrap_or(u64::MAX);
        if issued > now || now - issued >= ttl {
            return Err(SessionRefusal::Expired);
        }
        let mut redeemed = self.redeemed.lock().map_err(|_| SessionRefusal::Full)?;
        // Expired entries can never be redeemed again: forget them.
        while redeemed
            .front()
            .is_some_and(|(_, _, at)| now.saturating_sub(*at) >= ttl)
        {
            redeemed.pop_front();
        }
        if redeemed
            .iter()
            .any(|(p, r, _)| *p == purpose && *r == random)
        {
            return Err(SessionRefusal::Used);
        }
        if redeemed.len() >= MAX_REDEEMED {
            return Err(SessionRefusal::Full);
        }
        // Kept in issue order so the front is always the oldest.
        let at = redeemed.partition_point(|(_, _, t)| *t <= issued);
        redeemed.insert(at, (purpose, random, issued));
        Ok(())
    }

    /// Records that `custodian` (whose signature over `session` verified) used `session`; refuses
    /// a session it already used in this start of the enclave.
    pub(super) fn use_custody_session(
        &self,
        custodian: [u8; 16],
        session: &[u8],
    ) -> Result<(), SessionRefusal> {
        let mut used = self.custody.lock().map_err(|_| SessionRefusal::Full)?;
        let mine = used.entry(custodian).or_default();
        let d = digest::digest(&digest::SHA256, session);
        let d: [u8; 32] = d.as_ref().try_into().map_err(|_| SessionRefusal::Full)?;
        if mine.contains(&d) {
            return Err(SessionRefusal::Used);
        }
        if mine.len() >= MAX_SUBMISSIONS_PER_CUSTODIAN {
            return Err(SessionRefusal::Full);
        }
        mine.insert(d);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_minted_challenge_redeems_once_for_its_purpose_only() {
        let s = Sessions::default();
        let c = s.mint(Purpose::PeerGrant).unwrap();
        assert_eq!(c.len(), CHALLENGE_LEN);
        assert_eq!(
            s.redeem(Purpose::PeerAccept, &c),
            Err(SessionRefusal::Unknown)
        );
        assert_eq!(s.redeem(Purpose::PeerGrant, &c), Ok(()));
        assert_eq!(s.redeem(Purpose::PeerGrant, &c), Err(SessionRefusal::Used));
    }

    #[test]
    fn forged_altered_foreign_and_expired_challenges_are_refused() {
        let s = Sessions::default();
        let c = s.mint(Purpose::PeerGrant).unwrap();
        for i in 0..c.len() {
            let mut bad = c.clone();
            bad[i] ^= 1;
            assert_eq!(
                s.redeem(Purpose::PeerGrant, &bad),
                Err(SessionRefusal::Unknown),
                "byte {i}"
            );
        }
        assert_eq!(
            s.redeem(Purpose::PeerGrant, &c[..CHALLENGE_LEN - 1]),
            Err(SessionRefusal::Unknown)
        );
        assert_eq!(
            s.redeem(Purpose::PeerGrant, &[c.clone(), vec![0]].concat()),
            Err(SessionRefusal::Unknown)
        );
        assert_eq!(
            s.redeem(Purpose::PeerGrant, &[]),
            Err(SessionRefusal::Unknown)
        );
        // Another start of the enclave (another key) never minted it.
        let other = Sessions::default();
        assert_eq!(
            other.redeem(Purpose::PeerGrant, &c),
            Err(SessionRefusal::Unknown)
        );
        // Minted with a time beyond the lifetime: expired (and one from the future too).
        let old = Sessions {
            epoch: Instant::now().checked_sub(CHALLENGE_TTL * 2).unwrap(),
            ..Sessions::default()
        };
        let stale = old.mint_at(Purpose::PeerGrant, 0).unwrap();
        assert_eq!(
            old.redeem(Purpose::PeerGrant, &stale),
            Err(SessionRefusal::Expired)
        );
        let future = s.mint_at(Purpose::PeerGrant, u64::MAX / 2).unwrap();
        assert_eq!(
            s.redeem(Purpose::PeerGrant, &future),
            Err(SessionRefusal::Expired)
        );
        // The genuine one still redeems: no refusal above consumed it.
        assert_eq!(s.redeem(Purpose::PeerGrant, &c), Ok(()));
    }

    #[test]
    fn minting_stores_nothing_and_many_redemptions_are_bounded() {
        let s = Sessions::default();
        for _ in 0..10_000 {
            s.mint(Purpose::PeerGrant).unwrap();
        }
        assert!(s.redeemed.lock().unwrap().is_empty());
        for _ in 0..MAX_REDEEMED {
            let c = s.mint(Purpose::PeerAccept).unwrap();
            s.redeem(Purpose::PeerAccept, &c).unwrap();
        }
        let c = s.mint(Purpose::PeerAccept).unwrap();
        assert_eq!(s.redeem(Purpose::PeerAccept, &c), Err(SessionRefusal::Full));
    }

    #[test]
    fn a_custodian_session_is_used_once_and_the_count_is_bounded() {
        let s = Sessions::default();
        assert_eq!(s.use_custody_session([1; 16], b"n"), Ok(()));
        assert_eq!(
            s.use_custody_session([1; 16], b"n"),
            Err(SessionRefusal::Used)
        );
        // Another custodian's use of the same bytes is its own.
        assert_eq!(s.use_custody_session([2; 16], b"n"), Ok(()));
        for i in 1..MAX_SUBMISSIONS_PER_CUSTODIAN {
            s.use_custody_session([1; 16], &i.to_be_bytes()).unwrap();
        }
        assert_eq!(
            s.use_custody_session([1; 16], b"one more"),
            Err(SessionRefusal::Full)
        );
        assert_eq!(s.use_custody_session([3; 16], b"one more"), Ok(()));
    }
}
