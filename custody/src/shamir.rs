//! Shamir M-of-N sharing of a domain key over GF(256), using the `blahaj` crate for the field and
//! polynomial arithmetic (never hand-rolled here) and aws-lc-rs for every random byte.
//!
//! Why `blahaj`: it is the maintained fork of `sharks` by Distrust (0.7.0 is on rand 0.10, which
//! the workspace already locks; `sharks` 0.5.0 is stale on rand 0.8), ~600 lines, GF(256) byte-wise sharing that fits a 32-byte key, deps
//! only `rand_core`/`hashbrown`/`zeroize`, shares zeroize on drop, and it takes the RNG from the
//! caller. `vsss-rs` is maintained too but far larger (crypto-bigint, elliptic-curve, sha3) for
//! verifiable sharing we do not use; `shamir-vault` is a young single-author crate on rand 0.8.
//! Known limit: blahaj's GF(256) uses log/exp tables (not constant time) and does not zeroize its
//! polynomial coefficients; split and combine run once per ceremony, inside the enclave.

use std::collections::BTreeSet;
use std::convert::Infallible;
use std::fmt;

use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::domain::DomainSecret;
use crate::error::{CustodyError, Result};

/// Largest number of shares (and so custodians) of one domain key.
pub const MAX_SHARES: u8 = 16;
/// Length of a share's value: one GF(256) point per secret byte.
pub const SHARE_LEN: usize = 32;

/// One Shamir share: its x-coordinate (`index`, 1-based), the sharing it belongs to
/// (`threshold`-of-`total`) and the 32 y-values. The metadata is public; the value is secret.
#[derive(Zeroize, ZeroizeOnDrop)]
#[cfg_attr(test, derive(Clone))]
pub struct Share {
    index: u8,
    threshold: u8,
    total: u8,
    value: [u8; SHARE_LEN],
}

impl fmt::Debug for Share {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Share")
            .field("index", &self.index)
            .field("threshold", &self.threshold)
            .field("total", &self.total)
            .finish_non_exhaustive()
    }
}

impl Share {
    /// Builds a share from its parts, checking the parameters and that `1 ≤ index ≤ total`.
    pub fn new(index: u8, threshold: u8, total: u8, value: [u8; SHARE_LEN]) -> Result<Self> {
        check_parameters(threshold, total)?;
        if index == 0 || index > total {
            return Err(CustodyError::InvalidShareIndex { index, total });
        }
        Ok(Self {
            index,
            threshold,
            total,
            value,
        })
    }

    /// The share's x-coordinate, 1-based.
    #[must_use]
    pub fn index(&self) -> u8 {
        self.index
    }

    /// How many shares reconstruct the secret.
    #[must_use]
    pub fn threshold(&self) -> u8 {
        self.threshold
    }

    /// How many shares were made.
    #[must_use]
    pub fn total(&self) -> u8 {
        self.total
    }

    /// The secret y-values, for encryption to a custodian or the enclave only.
    #[must_use]
    pub fn expose(&self) -> &[u8; SHARE_LEN] {
        &self.value
    }
}

/// Accepts `2 ≤ threshold ≤ shares ≤ 16`, and 1-of-1 (the simulation's one-custodian domain,
/// where the single share is the key itself).
pub(crate) fn check_parameters(threshold: u8, shares: u8) -> Result<()> {
    let ok = (threshold == 1 && shares == 1)
        || (threshold >= 2 && threshold <= shares && shares <= MAX_SHARES);
    if ok {
        Ok(())
    } else {
        Err(CustodyError::InvalidParameters { threshold, shares })
    }
}

/// Splits `secret` into `shares` shares, any `threshold` of which reconstruct it.
pub fn split(secret: &DomainSecret, threshold: u8, shares: u8) -> Result<Vec<Share>> {
    check_parameters(threshold, shares)?;
    let mut rng = AwsLcRng { failed: false };
    let dealer = blahaj::Sharks(threshold).dealer_rng(secret.expose(), &mut rng);
    // The polynomials are drawn eagerly in `dealer_rng`, so the RNG state is final here.
    if rng.failed {
        return Err(CustodyError::Crypto);
    }
    let mut out = Vec::with_capacity(usize::from(shares));
    // blahaj evaluates at x = 1, 2, …; we record and check the x it reports.
    for (expected_x, s) in (1..=shares).zip(dealer) {
        let bytes = Zeroizing::new(Vec::<u8>::from(&s));
        let (x, y) = bytes.split_first().ok_or(CustodyError::Crypto)?;
        if *x != expected_x {
            return Err(CustodyError::Crypto);
        }
        let mut value = [0u8; SHARE_LEN];
        if y.len() != SHARE_LEN {
            return Err(CustodyError::Crypto);
        }
        value.copy_from_slice(y);
        out.push(Share {
            index: *x,
            threshold,
            total: shares,
            value,
        });
    }
    if out.len() != usize::from(shares) {
        return Err(CustodyError::Crypto);
    }
    Ok(out)
}

/// Reconstructs the secret from at least `threshold` distinct shares of one sharing.
///
/// Shares must agree on threshold and total and have distinct indices. Shares of *another*
/// sharing with the same parameters cannot be told apart here: they interpolate to a wrong key.
/// Use [`combine_checked`] whenever the domain fingerprint is known.
pub fn combine(shares: &[Share]) -> Result<DomainSecret> {
    let first = shares
        .first()
        .ok_or(CustodyError::NotEnoughShares { have: 0, need: 1 })?;
    let (threshold, total) = (first.threshold, first.total);
    check_parameters(threshold, total)?;
    let mut seen = BTreeSet::new();
    for s in shares {
        if s.threshold != threshold || s.total != total {
            return Err(CustodyError::InconsistentShares);
        }
        if s.index == 0 || s.index > total {
            return Err(CustodyError::InvalidShareIndex {
                index: s.index,
                total,
            });
        }
        if !seen.insert(s.index) {
            return Err(CustodyError::DuplicateShareIndex(s.index));
        }
    }
    if shares.len() < usize::from(threshold) {
        return Err(CustodyError::NotEnoughShares {
            have: shares.len(),
            need: threshold,
        });
    }
    let mut points = Vec::with_capacity(shares.len());
    for s in shares {
        let mut bytes = Zeroizing::new(Vec::with_capacity(1 + SHARE_LEN));
        bytes.push(s.index);
        bytes.extend_from_slice(&s.value);
        let point = blahaj::Share::try_from(bytes.as_slice())
            .map_err(|_| CustodyError::Malformed("share"))?;
        points.push(point);
    }
    let recovered = Zeroizing::new(blahaj::Sharks(threshold).recover(&points).map_err(|_| {
        CustodyError::NotEnoughShares {
            have: shares.len(),
            need: threshold,
        }
    })?);
    let mut key = [0u8; 32];
    if recovered.len() != key.len() {
        return Err(CustodyError::Crypto);
    }
    key.copy_from_slice(&recovered);
    let secret = DomainSecret::new(key);
    key.zeroize();
    Ok(secret)
}

/// [`combine`], then checks the result against the domain's fingerprint, which detects shares
/// mixed from different domains (or a corrupted share) instead of returning a wrong key.
pub fn combine_checked(shares: &[Share], expected: [u8; 8]) -> Result<DomainSecret> {
    let secret = combine(shares)?;
    let actual = secret.fingerprint();
    if actual == expected {
        Ok(secret)
    } else {
        Err(CustodyError::DomainMismatch {
            expected: hex::encode(expected),
            actual: hex::encode(actual),
        })
    }
}

/// `rand_core` face of aws-lc-rs's RNG for blahaj. The trait cannot fail, so a failure zeroes the
/// output and sets `failed`, which [`split`] checks before using any share.
struct AwsLcRng {
    failed: bool,
}

impl AwsLcRng {
    fn fill(&mut self, dst: &mut [u8]) {
        if aws_lc_rs::rand::fill(dst).is_err() {
            dst.zeroize();
            self.failed = true;
        }
    }
}

impl rand_core::TryRng for AwsLcRng {
    type Error = Infallible;

    fn try_next_u32(&mut self) -> std::result::Result<u32, Infallible> {
        let mut b = [0u8; 4];
        self.fill(&mut b);
        Ok(u32::from_le_bytes(b))
    }

    fn try_next_u64(&mut self) -> std::result::Result<u64, Infallible> {
        let mut b = [0u8; 8];
        self.fill(&mut b);
        Ok(u64::from_le_bytes(b))
    }

    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> std::result::Result<(), Infallible> {
        self.fill(dst);
        Ok(())
    }
}

impl rand_core::TryCryptoRng for AwsLcRng {}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn secret(b: u8) -> DomainSecret {
        let mut k = [0u8; 32];
        for (i, x) in k.iter_mut().enumerate() {
            *x = b.wrapping_add(u8::try_from(i).unwrap());
        }
        DomainSecret::new(k)
    }

    #[test]
    fn split_combine_several_parameters() {
        let s = secret(7);
        for (t, n) in [(1, 1), (2, 2), (2, 3), (3, 5), (5, 5), (16, 16), (2, 16)] {
            let shares = split(&s, t, n).unwrap();
            assert_eq!(shares.len(), usize::from(n));
            for (i, sh) in shares.iter().enumerate() {
                assert_eq!(usize::from(sh.index()), i + 1);
                assert_eq!((sh.threshold(), sh.total()), (t, n));
            }
            // First t, last t, and all n reconstruct.
            let first = &shares[..usize::from(t)];
            let last = &shares[shares.len() - usize::from(t)..];
            for subset in [first, last, &shares[..]] {
                assert_eq!(combine(subset).unwrap().expose(), s.expose(), "{t}-of-{n}");
            }
        }
    }

    #[test]
    fn one_of_one_share_is_the_key() {
        let s = secret(1);
        let shares = split(&s, 1, 1).unwrap();
        assert_eq!(shares[0].expose(), s.expose());
    }

    #[test]
    fn fresh_randomness_each_split() {
        let s = secret(9);
        let a = split(&s, 2, 3).unwrap();
        let b = split(&s, 2, 3).unwrap();
        assert_ne!(a[0].expose(), b[0].expose());
    }

    #[test]
    fn invalid_parameters_refused() {
        let s = secret(2);
        for (t, n) in [
            (0, 0),
            (0, 3),
            (1, 2),
            (1, 3),
            (3, 2),
            (2, 17),
            (17, 17),
            (2, 0),
        ] {
            assert!(
                matches!(
                    split(&s, t, n),
                    Err(CustodyError::InvalidParameters { threshold, shares }) if threshold == t && shares == n
                ),
                "{t}-of-{n}"
            );
        }
        assert!(matches!(
            Share::new(1, 1, 3, [0; 32]),
            Err(CustodyError::InvalidParameters { .. })
        ));
    }

    #[test]
    fn fewer_than_threshold_refused_and_forged_threshold_gives_wrong_key() {
        let s = secret(3);
        let shares = split(&s, 3, 5).unwrap();
        assert!(matches!(
            combine(&shares[..2]),
            Err(CustodyError::NotEnoughShares { have: 2, need: 3 })
        ));
        assert!(matches!(
            combine(&[]),
            Err(CustodyError::NotEnoughShares { have: 0, .. })
        ));
        // Lie about the threshold: interpolation of 2 points of a degree-2 polynomial is wrong.
        let forged: Vec<Share> = shares[..2]
            .iter()
            .map(|sh| Share::new(sh.index(), 2, 5, *sh.expose()).unwrap())
            .collect();
        let wrong = combine(&forged).unwrap();
        assert_ne!(wrong.expose(), s.expose());
        assert!(matches!(
            combine_checked(&forged, s.fingerprint()),
            Err(CustodyError::DomainMismatch { .. })
        ));
    }

    #[test]
    fn duplicate_index_refused() {
        let shares = split(&secret(4), 2, 3).unwrap();
        let dup = vec![shares[0].clone(), shares[0].clone()];
        assert!(matches!(
            combine(&dup),
            Err(CustodyError::DuplicateShareIndex(1))
        ));
    }

    #[test]
    fn inconsistent_sharings_refused() {
        let a = split(&secret(5), 2, 3).unwrap();
        let b = split(&secret(5), 2, 4).unwrap();
        assert!(matches!(
            combine(&[a[0].clone(), b[1].clone()]),
            Err(CustodyError::InconsistentShares)
        ));
    }

    #[test]
    fn invalid_index_refused() {
        assert!(matches!(
            Share::new(0, 2, 3, [0; 32]),
            Err(CustodyError::InvalidShareIndex { index: 0, total: 3 })
        ));
        assert!(matches!(
            Share::new(4, 2, 3, [0; 32]),
            Err(CustodyError::InvalidShareIndex { index: 4, total: 3 })
        ));
        // A share built around the constructor (only possible in this crate) is caught too.
        let mut shares = split(&secret(6), 2, 3).unwrap();
        shares[1].index = 9;
        assert!(matches!(
            combine(&shares),
            Err(CustodyError::InvalidShareIndex { index: 9, total: 3 })
        ));
    }

    #[test]
    fn mixed_domains_detected_by_fingerprint() {
        let a = secret(10);
        let b = secret(11);
        let sa = split(&a, 2, 3).unwrap();
        let sb = split(&b, 2, 3).unwrap();
        let mixed = [sa[0].clone(), sb[1].clone()];
        assert_ne!(combine(&mixed).unwrap().expose(), a.expose());
        match combine_checked(&mixed, a.fingerprint()) {
            Err(CustodyError::DomainMismatch { expected, .. }) => {
                assert_eq!(expected, hex::encode(a.fingerprint()));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            combine_checked(&sa[1..], a.fingerprint()).unwrap().expose(),
            a.expose()
        );
    }

    #[test]
    fn debug_is_redacted() {
        let shares = split(&DomainSecret::new([0xcd; 32]), 2, 2).unwrap();
        let text = format!("{:?}", shares[0]);
        assert!(text.contains("index: 1"), "{text}");
        assert!(!text.contains("value"), "{text}");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn prop_split_combine(key in any::<[u8; 32]>(), n in 2u8..=16, t_off in 0u8..16, pick in any::<u64>()) {
            let t = 2 + t_off % (n - 1);
            let s = DomainSecret::new(key);
            let shares = split(&s, t, n).unwrap();
            // Any t of them, chosen by rotating the list.
            let start = usize::try_from(pick % u64::from(n)).unwrap();
            let subset: Vec<Share> = shares.iter().cycle().skip(start).take(usize::from(t)).cloned().collect();
            prop_assert_eq!(*combine(&subset).unwrap().expose(), key);
            prop_assert_eq!(*combine_checked(&subset, s.fingerprint()).unwrap().expose(), key);
        }
    }
}
