//! Hybrid encryption to a P-384 public key: ephemeral ECDH P-384, HKDF-SHA256, AES-256-GCM, all
//! from aws-lc-rs. One shot per message (a fresh ephemeral key each time); no sender authentication.
//!
//! Sealed blob (see docs/custody.md): `0x01 ‖ ephemeral SEC1 (97) ‖ nonce (12) ‖ ciphertext ‖ tag (16)`.

use std::fmt;

use aws_lc_rs::{
    aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey},
    agreement::{self, ECDH_P384, ParsedPublicKey, UnparsedPublicKey},
    digest, hkdf, rand,
};
use zeroize::Zeroizing;

use crate::error::{CustodyError, Result};

/// Length of an uncompressed SEC1 P-384 point: `0x04 ‖ X (48) ‖ Y (48)`.
pub const P384_SEC1_LEN: usize = 97;
/// Version byte of the sealed blob.
pub const SEALED_VERSION: u8 = 1;
/// AES-GCM tag length.
const TAG_LEN: usize = 16;
/// Bytes a sealed blob adds to its plaintext.
pub const SEALED_OVERHEAD: usize = 1 + P384_SEC1_LEN + NONCE_LEN + TAG_LEN;

/// HKDF info for a share sealed by the enclave to a custodian's key.
pub const LABEL_SHARE_TO_CUSTODIAN: &[u8] = b"ekms/v1/share-to-custodian";
/// HKDF info for a share sealed by a custodian's tool to the enclave's attested key.
pub const LABEL_SHARE_TO_ENCLAVE: &[u8] = b"ekms/v1/share-to-enclave";

/// A validated P-384 public key in uncompressed SEC1 form (the only form we sign or hash, so
/// every party derives the same HKDF salt and fingerprint).
#[derive(Clone, PartialEq, Eq)]
pub struct P384PublicKey([u8; P384_SEC1_LEN]);

impl fmt::Debug for P384PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "P384PublicKey({})", hex::encode(self.fingerprint()))
    }
}

impl P384PublicKey {
    /// Parses an uncompressed SEC1 point and checks it lies on P-384 (compressed points refused).
    pub fn from_sec1(bytes: &[u8]) -> Result<Self> {
        let arr: [u8; P384_SEC1_LEN] = bytes
            .try_into()
            .map_err(|_| CustodyError::InvalidPublicKey)?;
        if arr.first() != Some(&0x04) {
            return Err(CustodyError::InvalidPublicKey);
        }
        ParsedPublicKey::try_from(UnparsedPublicKey::new(&ECDH_P384, &arr[..]))
            .map_err(|_| CustodyError::InvalidPublicKey)?;
        Ok(Self(arr))
    }

    /// The public key of an aws-lc-rs private key (must be P-384).
    pub fn of(private_key: &agreement::PrivateKey) -> Result<Self> {
        if private_key.algorithm() != &ECDH_P384 {
            return Err(CustodyError::InvalidPrivateKey);
        }
        let public = private_key.compute_public_key()?;
        Self::from_sec1(public.as_ref())
    }

    /// The uncompressed SEC1 bytes.
    #[must_use]
    pub fn sec1(&self) -> &[u8; P384_SEC1_LEN] {
        &self.0
    }

    /// First 16 bytes of SHA-256 over the SEC1 bytes: the name of a custodian (or enclave key).
    #[must_use]
    pub fn fingerprint(&self) -> [u8; 16] {
        let d = digest::digest(&digest::SHA256, &self.0);
        let mut out = [0u8; 16];
        for (o, b) in out.iter_mut().zip(d.as_ref()) {
            *o = *b;
        }
        out
    }
}

/// Derives the one-message AES-256-GCM key: HKDF-SHA256 with salt = ephemeral ‖ recipient SEC1
/// and info = `label` over the ECDH shared secret.
fn derive_key(
    shared: &[u8],
    ephemeral: &[u8],
    recipient: &[u8],
    label: &[u8],
) -> std::result::Result<LessSafeKey, aws_lc_rs::error::Unspecified> {
    let mut salt = Vec::with_capacity(2 * P384_SEC1_LEN);
    salt.extend_from_slice(ephemeral);
    salt.extend_from_slice(recipient);
    let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, &salt).extract(shared);
    let info = [label];
    let okm = prk.expand(&info, &AES_256_GCM)?;
    Ok(LessSafeKey::new(UnboundKey::from(okm)))
}

/// Encrypts `plaintext` to `recipient`; `label` separates uses (see the `LABEL_*` constants) and
/// `aad` is authenticated, not encrypted. Only the holder of the recipient's private key opens it.
pub fn seal_to(
    recipient: &P384PublicKey,
    label: &[u8],
    aad: &[u8],
    plaintext: &[u8],
) -> Result<Vec<u8>> {
    let ephemeral = agreement::PrivateKey::generate(&ECDH_P384)?;
    let eph_pub = ephemeral.compute_public_key()?;
    let key = agreement::agree(
        &ephemeral,
        UnparsedPublicKey::new(&ECDH_P384, recipient.sec1()),
        CustodyError::Crypto,
        |shared| {
            derive_key(shared, eph_pub.as_ref(), recipient.sec1(), label)
                .map_err(|_| CustodyError::Crypto)
        },
    )?;
    // The key is fresh per message, so a random nonce is belt and braces, not a requirement.
    let mut nonce = [0u8; NONCE_LEN];
    rand::fill(&mut nonce)?;
    let mut out = Vec::with_capacity(SEALED_OVERHEAD + plaintext.len());
    out.push(SEALED_VERSION);
    out.extend_from_slice(eph_pub.as_ref());
    out.extend_from_slice(&nonce);
    let body_start = out.len();
    out.extend_from_slice(plaintext);
    let tag = key
        .seal_in_place_separate_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(aad),
            out.get_mut(body_start..).ok_or(CustodyError::Crypto)?,
        )
        .map_err(|_| CustodyError::Crypto)?;
    out.extend_from_slice(tag.as_ref());
    if out.len() != SEALED_OVERHEAD + plaintext.len() {
        return Err(CustodyError::Crypto);
    }
    Ok(out)
}

/// Opens a blob made by [`seal_to`] with the recipient's private key, the same `label` and `aad`.
/// Every failure after the version check is the opaque [`CustodyError::DecryptFailed`].
/// `private_key` may be used for any number of blobs.
pub fn open_with(
    private_key: &agreement::PrivateKey,
    label: &[u8],
    aad: &[u8],
    sealed: &[u8],
) -> Result<Zeroizing<Vec<u8>>> {
    let (version, rest) = sealed.split_first().ok_or(CustodyError::DecryptFailed)?;
    if *version != SEALED_VERSION {
        return Err(CustodyError::UnsupportedVersion(*version));
    }
    let (eph, rest) = rest
        .split_first_chunk::<P384_SEC1_LEN>()
        .ok_or(CustodyError::DecryptFailed)?;
    let (nonce, ct) = rest
        .split_first_chunk::<NONCE_LEN>()
        .ok_or(CustodyError::DecryptFailed)?;
    if ct.len() < TAG_LEN {
        return Err(CustodyError::DecryptFailed);
    }
    let recipient = P384PublicKey::of(private_key).map_err(|_| CustodyError::DecryptFailed)?;
    let key = agreement::agree(
        private_key,
        UnparsedPublicKey::new(&ECDH_P384, &eph[..]),
        CustodyError::DecryptFailed,
        |shared| {
            derive_key(shared, eph, recipient.sec1(), label)
                .map_err(|_| CustodyError::DecryptFailed)
        },
    )?;
    let mut buf = Zeroizing::new(ct.to_vec());
    let len = key
        .open_in_place(
            Nonce::assume_unique_for_key(*nonce),
            Aad::from(aad),
            &mut buf,
        )
        .map_err(|_| CustodyError::DecryptFailed)?
        .len();
    buf.truncate(len);
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lc_rs::encoding::{AsBigEndian, EcPublicKeyCompressedBin};
    use proptest::prelude::*;

    fn keypair() -> (agreement::PrivateKey, P384PublicKey) {
        let k = agreement::PrivateKey::generate(&ECDH_P384).unwrap();
        let p = P384PublicKey::of(&k).unwrap();
        (k, p)
    }

    #[test]
    fn round_trip_and_key_reuse() {
        let (k, p) = keypair();
        // One identity key opens many blobs: `agree` borrows the private key.
        for i in 0..5u8 {
            let blob = seal_to(&p, LABEL_SHARE_TO_ENCLAVE, b"aad", &[i; 33]).unwrap();
            assert_eq!(blob.len(), SEALED_OVERHEAD + 33);
            assert_eq!(blob[0], SEALED_VERSION);
            let pt = open_with(&k, LABEL_SHARE_TO_ENCLAVE, b"aad", &blob).unwrap();
            assert_eq!(&pt[..], &[i; 33]);
        }
    }

    #[test]
    fn wrong_key_label_aad_or_bit_fails_opaquely() {
        let (k, p) = keypair();
        let (other, _) = keypair();
        let blob = seal_to(&p, LABEL_SHARE_TO_CUSTODIAN, b"aad", b"secret").unwrap();
        let fails = |r: Result<Zeroizing<Vec<u8>>>| matches!(r, Err(CustodyError::DecryptFailed));
        assert!(fails(open_with(
            &other,
            LABEL_SHARE_TO_CUSTODIAN,
            b"aad",
            &blob
        )));
        assert!(fails(open_with(&k, LABEL_SHARE_TO_ENCLAVE, b"aad", &blob)));
        assert!(fails(open_with(
            &k,
            LABEL_SHARE_TO_CUSTODIAN,
            b"aae",
            &blob
        )));
        for i in 1..blob.len() {
            let mut b = blob.clone();
            b[i] ^= 0x01;
            assert!(
                fails(open_with(&k, LABEL_SHARE_TO_CUSTODIAN, b"aad", &b)),
                "byte {i}"
            );
        }
        assert!(fails(open_with(
            &k,
            LABEL_SHARE_TO_CUSTODIAN,
            b"aad",
            &blob[..blob.len() - 1]
        )));
        assert!(fails(open_with(&k, LABEL_SHARE_TO_CUSTODIAN, b"aad", &[])));
        // A P-256 key is refused, not misused.
        let p256 = agreement::PrivateKey::generate(&agreement::ECDH_P256).unwrap();
        assert!(fails(open_with(
            &p256,
            LABEL_SHARE_TO_CUSTODIAN,
            b"aad",
            &blob
        )));
    }

    #[test]
    fn unknown_version_refused() {
        let (k, p) = keypair();
        let mut blob = seal_to(&p, b"l", b"", b"x").unwrap();
        blob[0] = 2;
        assert!(matches!(
            open_with(&k, b"l", b"", &blob),
            Err(CustodyError::UnsupportedVersion(2))
        ));
    }

    #[test]
    fn public_key_parsing() {
        let (k, p) = keypair();
        assert_eq!(P384PublicKey::from_sec1(p.sec1()).unwrap(), p);
        let compressed = k.compute_public_key().unwrap();
        let c: EcPublicKeyCompressedBin<'_> = compressed.as_be_bytes().unwrap();
        assert!(matches!(
            P384PublicKey::from_sec1(c.as_ref()),
            Err(CustodyError::InvalidPublicKey)
        ));
        let mut off_curve = *p.sec1();
        off_curve[96] ^= 1;
        assert!(matches!(
            P384PublicKey::from_sec1(&off_curve),
            Err(CustodyError::InvalidPublicKey)
        ));
        let p256 = agreement::PrivateKey::generate(&agreement::ECDH_P256).unwrap();
        assert!(matches!(
            P384PublicKey::of(&p256),
            Err(CustodyError::InvalidPrivateKey)
        ));
        assert_eq!(p.fingerprint().len(), 16);
        assert!(format!("{p:?}").contains(&hex::encode(p.fingerprint())));
    }

    #[test]
    fn random_bytes_never_panic() {
        let (k, _) = keypair();
        let mut buf = [0u8; 200];
        for i in 0..2000usize {
            aws_lc_rs::rand::fill(&mut buf).unwrap();
            let len = i % buf.len();
            if i % 2 == 0 {
                buf[0] = SEALED_VERSION;
            }
            assert!(open_with(&k, b"l", b"", &buf[..len]).is_err());
            let _ = P384PublicKey::from_sec1(&buf[..len.min(97)]);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]
        #[test]
        fn prop_seal_open(pt in proptest::collection::vec(any::<u8>(), 0..256), aad in proptest::collection::vec(any::<u8>(), 0..64)) {
            let (k, p) = keypair();
            let blob = seal_to(&p, LABEL_SHARE_TO_ENCLAVE, &aad, &pt).unwrap();
            prop_assert_eq!(&open_with(&k, LABEL_SHARE_TO_ENCLAVE, &aad, &blob).unwrap()[..], &pt[..]);
        }
    }
}
