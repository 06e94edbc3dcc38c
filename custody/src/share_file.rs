//! The envelope a share is kept in: [`ShareFile`] (enclave → custodian, on the custodian's disk);
//! its sibling [`SubmittedShare`] (custodian tool → attested enclave) is in `submitted.rs`.
//! Both are JSON with public metadata in clear and the 32-byte share value sealed with
//! [`crate::seal_to`]; the metadata is the AEAD's AAD, so it cannot be edited or the share moved.

use base64::{Engine as _, engine::general_purpose::STANDARD};
use serde::{Deserialize, Serialize};

use crate::custodian::{CustodianKey, CustodianPublicKey};
use crate::domain::DOMAIN_FINGERPRINT_LEN;
use crate::error::{CustodyError, Result};
use crate::seal::{LABEL_SHARE_TO_CUSTODIAN, P384PublicKey, SEALED_OVERHEAD, open_with, seal_to};
use crate::shamir::{SHARE_LEN, Share};
use crate::submitted::SubmittedShare;

/// Format version of both envelopes.
pub const SHARE_FORMAT_VERSION: u8 = 1;
/// Largest envelope JSON accepted, checked before parsing.
pub const MAX_SHARE_JSON_LEN: usize = 4096;
/// Exact length of a sealed share: a 32-byte value plus the sealing overhead.
const SEALED_SHARE_LEN: usize = SHARE_LEN + SEALED_OVERHEAD;
/// `kind` of a share file.
const FILE_KIND: &str = "ekms-custodian-share";
/// AAD prefix of a share file.
const FILE_AAD_LABEL: &[u8] = b"ekms/v1/share-file";

/// A custodian's share of one domain key, as stored in the custodian's file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShareFile {
    domain_fingerprint: [u8; DOMAIN_FINGERPRINT_LEN],
    custodian_fingerprint: [u8; 16],
    index: u8,
    threshold: u8,
    total: u8,
    sealed_share: Vec<u8>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ShareFileJson {
    kind: String,
    version: u8,
    /// Domain fingerprint, hex (the domain's id for humans).
    domain_id: String,
    /// Custodian public key fingerprint, hex.
    custodian: String,
    index: u8,
    threshold: u8,
    total: u8,
    /// Sealed blob, standard base64.
    sealed_share: String,
}

impl ShareFile {
    /// Seals `share` to the custodian's key, binding domain, custodian, index and parameters.
    pub fn encrypt_for_custodian(
        share: &Share,
        custodian: &CustodianPublicKey,
        domain_fingerprint: [u8; DOMAIN_FINGERPRINT_LEN],
    ) -> Result<Self> {
        let mut file = Self {
            domain_fingerprint,
            custodian_fingerprint: custodian.fingerprint(),
            index: share.index(),
            threshold: share.threshold(),
            total: share.total(),
            sealed_share: Vec::new(),
        };
        file.sealed_share = seal_to(
            custodian.key(),
            LABEL_SHARE_TO_CUSTODIAN,
            &file.aad(),
            share.expose(),
        )?;
        Ok(file)
    }

    /// Opens the share with the custodian's private key.
    pub fn decrypt(&self, key: &CustodianKey) -> Result<Share> {
        let actual = key.public_key().fingerprint();
        if actual != self.custodian_fingerprint {
            return Err(CustodyError::WrongCustodian {
                expected: hex::encode(self.custodian_fingerprint),
                actual: hex::encode(actual),
            });
        }
        let value = open_with(
            key.agreement_key(),
            LABEL_SHARE_TO_CUSTODIAN,
            &self.aad(),
            &self.sealed_share,
        )?;
        let value: [u8; SHARE_LEN] = value
            .as_slice()
            .try_into()
            .map_err(|_| CustodyError::DecryptFailed)?;
        Share::new(self.index, self.threshold, self.total, value)
    }

    /// The custodian tool's step after it verified the enclave's attestation: open this file,
    /// seal the share to the enclave's attested key, bound to `session` (the attestation nonce),
    /// and sign the submission with the same custodian key.
    pub fn reseal_for_enclave(
        &self,
        key: &CustodianKey,
        enclave_key: &P384PublicKey,
        session: &[u8],
    ) -> Result<SubmittedShare> {
        let share = self.decrypt(key)?;
        SubmittedShare::encrypt_for_enclave(
            &share,
            key,
            enclave_key,
            self.domain_fingerprint,
            session,
        )
    }

    /// `"ekms/v1/share-file" ‖ version ‖ domain fp (8) ‖ custodian fp (16) ‖ index ‖ threshold ‖ total`.
    fn aad(&self) -> Vec<u8> {
        let mut aad = Vec::with_capacity(FILE_AAD_LABEL.len() + 1 + 8 + 16 + 3);
        aad.extend_from_slice(FILE_AAD_LABEL);
        aad.push(SHARE_FORMAT_VERSION);
        aad.extend_from_slice(&self.domain_fingerprint);
        aad.extend_from_slice(&self.custodian_fingerprint);
        aad.extend_from_slice(&[self.index, self.threshold, self.total]);
        aad
    }

    /// Format version.
    #[must_use]
    pub fn version(&self) -> u8 {
        SHARE_FORMAT_VERSION
    }
    /// Fingerprint of the domain key this is a share of.
    #[must_use]
    pub fn domain_fingerprint(&self) -> [u8; DOMAIN_FINGERPRINT_LEN] {
        self.domain_fingerprint
    }
    /// The domain fingerprint in hex, the domain's name for humans.
    #[must_use]
    pub fn domain_id(&self) -> String {
        hex::encode(self.domain_fingerprint)
    }
    /// Fingerprint of the custodian key this file is sealed to.
    #[must_use]
    pub fn custodian_fingerprint(&self) -> [u8; 16] {
        self.custodian_fingerprint
    }
    /// Share index, 1-based.
    #[must_use]
    pub fn index(&self) -> u8 {
        self.index
    }
    /// Shares needed.
    #[must_use]
    pub fn threshold(&self) -> u8 {
        self.threshold
    }
    /// Shares made.
    #[must_use]
    pub fn total(&self) -> u8 {
        self.total
    }
    /// The sealed blob.
    #[must_use]
    pub fn sealed_share(&self) -> &[u8] {
        &self.sealed_share
    }

    /// The file's JSON (pretty, trailing newline).
    pub fn to_json(&self) -> Result<String> {
        let j = ShareFileJson {
            kind: FILE_KIND.to_owned(),
            version: SHARE_FORMAT_VERSION,
            domain_id: self.domain_id(),
            custodian: hex::encode(self.custodian_fingerprint),
            index: self.index,
            threshold: self.threshold,
            total: self.total,
            sealed_share: STANDARD.encode(&self.sealed_share),
        };
        let mut s =
            serde_json::to_string_pretty(&j).map_err(|_| CustodyError::Malformed("share file"))?;
        s.push('\n');
        Ok(s)
    }

    /// Parses a share file strictly: size cap, known fields only, no duplicates or trailing
    /// data, valid parameters and index, exact sealed length. Does not decrypt.
    pub fn from_json(text: &str) -> Result<Self> {
        check_json_len(text)?;
        let j: ShareFileJson =
            serde_json::from_str(text).map_err(|_| CustodyError::Malformed("share file"))?;
        if j.kind != FILE_KIND {
            return Err(CustodyError::Malformed("share file kind"));
        }
        if j.version != SHARE_FORMAT_VERSION {
            return Err(CustodyError::UnsupportedVersion(j.version));
        }
        check_position(j.index, j.threshold, j.total)?;
        Ok(Self {
            domain_fingerprint: decode_hex(&j.domain_id, "share file domain_id")?,
            custodian_fingerprint: decode_hex(&j.custodian, "share file custodian")?,
            index: j.index,
            threshold: j.threshold,
            total: j.total,
            sealed_share: decode_sealed(&j.sealed_share)?,
        })
    }
}

pub(crate) fn check_json_len(text: &str) -> Result<()> {
    if text.len() > MAX_SHARE_JSON_LEN {
        return Err(CustodyError::TooLarge {
            len: text.len(),
            limit: MAX_SHARE_JSON_LEN,
        });
    }
    Ok(())
}

/// Same rules as [`Share::new`], without a value.
pub(crate) fn check_position(index: u8, threshold: u8, total: u8) -> Result<()> {
    crate::shamir::check_parameters(threshold, total)?;
    if index == 0 || index > total {
        return Err(CustodyError::InvalidShareIndex { index, total });
    }
    Ok(())
}

pub(crate) fn decode_hex<const N: usize>(text: &str, what: &'static str) -> Result<[u8; N]> {
    let mut out = [0u8; N];
    hex::decode_to_slice(text, &mut out).map_err(|_| CustodyError::Malformed(what))?;
    Ok(out)
}

pub(crate) fn decode_sealed(text: &str) -> Result<Vec<u8>> {
    let sealed = STANDARD
        .decode(text)
        .map_err(|_| CustodyError::Malformed("sealed_share"))?;
    if sealed.len() != SEALED_SHARE_LEN {
        return Err(CustodyError::Malformed("sealed_share length"));
    }
    Ok(sealed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::DomainSecret;
    use crate::shamir::{combine_checked, split};
    use crate::submitted::MAX_SESSION_LEN;
    use aws_lc_rs::agreement;
    use aws_lc_rs::agreement::ECDH_P384;
    use proptest::prelude::*;

    struct Ceremony {
        secret: DomainSecret,
        custodians: Vec<CustodianKey>,
        files: Vec<ShareFile>,
    }

    fn ceremony(t: u8, n: u8) -> Ceremony {
        let mut k = [0u8; 32];
        aws_lc_rs::rand::fill(&mut k).unwrap();
        let secret = DomainSecret::new(k);
        let custodians: Vec<CustodianKey> =
            (0..n).map(|_| CustodianKey::generate().unwrap()).collect();
        let files = split(&secret, t, n)
            .unwrap()
            .iter()
            .zip(&custodians)
            .map(|(s, c)| {
                ShareFile::encrypt_for_custodian(s, c.public_key(), secret.fingerprint()).unwrap()
            })
            .collect();
        Ceremony {
            secret,
            custodians,
            files,
        }
    }

    fn enclave_key() -> (agreement::PrivateKey, P384PublicKey) {
        let k = agreement::PrivateKey::generate(&ECDH_P384).unwrap();
        let p = P384PublicKey::of(&k).unwrap();
        (k, p)
    }

    #[test]
    fn full_ceremony_2_of_3() {
        let c = ceremony(2, 3);
        let fp = c.secret.fingerprint();
        let (ek, ep) = enclave_key();
        let nonce = b"attestation-nonce-0001";
        // Custodians 3 and 1 come; the enclave opens both with one identity key.
        let shares: Vec<Share> = [2usize, 0]
            .iter()
            .map(|&i| {
                let json = c.files[i].to_json().unwrap();
                let file = ShareFile::from_json(&json).unwrap();
                assert_eq!(file, c.files[i]);
                assert_eq!(file.domain_id(), hex::encode(fp));
                let sub = file
                    .reseal_for_enclave(&c.custodians[i], &ep, nonce)
                    .unwrap();
                let sub = SubmittedShare::from_json(&sub.to_json().unwrap()).unwrap();
                let expected = c.custodians[i].public_key().fingerprint();
                sub.verify(&ep, fp, Some(expected), nonce)
                    .unwrap()
                    .decrypt(&ek)
                    .unwrap()
            })
            .collect();
        assert_eq!(
            combine_checked(&shares, fp).unwrap().expose(),
            c.secret.expose()
        );
    }

    #[test]
    fn one_of_one_ceremony() {
        let c = ceremony(1, 1);
        let share = c.files[0].decrypt(&c.custodians[0]).unwrap();
        assert_eq!(share.expose(), c.secret.expose());
    }

    #[test]
    fn wrong_custodian_key_refused() {
        let c = ceremony(2, 3);
        assert!(matches!(
            c.files[0].decrypt(&c.custodians[1]),
            Err(CustodyError::WrongCustodian { .. })
        ));
        // Even with the file relabelled to the wrong key, the AEAD refuses it.
        let mut moved = c.files[0].clone();
        moved.custodian_fingerprint = c.custodians[1].public_key().fingerprint();
        assert!(matches!(
            moved.decrypt(&c.custodians[1]),
            Err(CustodyError::DecryptFailed)
        ));
    }

    #[test]
    fn edited_metadata_fails_to_decrypt() {
        let c = ceremony(3, 5);
        let key = &c.custodians[1];
        let base: serde_json::Value = serde_json::from_str(&c.files[1].to_json().unwrap()).unwrap();
        let edits: [(&str, serde_json::Value); 4] = [
            ("index", 3.into()),
            ("threshold", 2.into()),
            ("total", 4.into()),
            ("domain_id", "0011223344556677".into()),
        ];
        for (field, v) in edits {
            let mut j = base.clone();
            j[field] = v;
            let file = ShareFile::from_json(&j.to_string()).unwrap();
            assert!(
                matches!(file.decrypt(key), Err(CustodyError::DecryptFailed)),
                "{field}"
            );
        }
        // A flipped ciphertext byte too.
        let mut f = c.files[1].clone();
        f.sealed_share[120] ^= 1;
        assert!(matches!(f.decrypt(key), Err(CustodyError::DecryptFailed)));
    }

    #[test]
    fn submitted_share_wrong_enclave_domain_or_session_refused() {
        let c = ceremony(2, 2);
        let fp = c.secret.fingerprint();
        let (ek, ep) = enclave_key();
        let (_, other) = enclave_key();
        let alice = Some(c.custodians[0].public_key().fingerprint());
        let sub = c.files[0]
            .reseal_for_enclave(&c.custodians[0], &ep, b"n1")
            .unwrap();
        sub.verify(&ep, fp, alice, b"n1").unwrap();
        // Another enclave key (an earlier boot): refused by name before the signature.
        assert!(matches!(
            sub.verify(&other, fp, alice, b"n1"),
            Err(CustodyError::WrongEnclave { .. })
        ));
        // Relabelled to claim the other key: the signature covers the full key.
        let mut relabelled = sub.clone();
        relabelled.enclave_key = other.fingerprint();
        assert!(matches!(
            relabelled.verify(&other, fp, alice, b"n1"),
            Err(CustodyError::BadSignature)
        ));
        // Another session.
        assert!(matches!(
            sub.verify(&ep, fp, alice, b"n2"),
            Err(CustodyError::BadSignature)
        ));
        assert!(matches!(
            sub.verify(&ep, [0; 8], alice, b"n1"),
            Err(CustodyError::DomainMismatch { .. })
        ));
        // Relabelled to another domain or position: the signature refuses it.
        let mut moved = sub.clone();
        moved.domain_fingerprint = [9; 8];
        assert!(matches!(
            moved.verify(&ep, [9; 8], alice, b"n1"),
            Err(CustodyError::BadSignature)
        ));
        let mut moved = sub.clone();
        moved.index = 2;
        assert!(matches!(
            moved.verify(&ep, fp, alice, b"n1"),
            Err(CustodyError::BadSignature)
        ));
        // ... and a position that is another custodian's names who it belongs to.
        let bob = Some(c.custodians[1].public_key().fingerprint());
        assert!(matches!(
            moved.verify(&ep, fp, bob, b"n1"),
            Err(CustodyError::NotTheCustodian { index: 2, .. })
        ));
        // A share-file blob is not a submitted share (different label), even to the same key,
        // and a re-signed submission of it still does not open.
        let ck = &c.custodians[0];
        let mut cross = SubmittedShare {
            sealed_share: c.files[0].sealed_share.clone(),
            enclave_key: ck.public_key().fingerprint(),
            ..sub.clone()
        };
        let ck_pub = ck.public_key().key().clone();
        cross.signature = ck
            .sign(&cross.signed_message(&ck_pub, b"n1").unwrap())
            .unwrap();
        assert!(matches!(
            cross
                .verify(&ck_pub, fp, alice, b"n1")
                .unwrap()
                .decrypt(ck.agreement_key()),
            Err(CustodyError::DecryptFailed)
        ));
        // Verified, but opened with another enclave's private key: opaque failure.
        let (wrong, _) = enclave_key();
        let v = sub.verify(&ep, fp, alice, b"n1").unwrap();
        assert_eq!(v.signer(), ck.public_key().fingerprint());
        assert!(matches!(
            v.decrypt(&wrong),
            Err(CustodyError::DecryptFailed)
        ));
        assert!(v.decrypt(&ek).is_ok());
        let long = [0u8; MAX_SESSION_LEN + 1];
        assert!(matches!(
            SubmittedShare::encrypt_for_enclave(
                &c.files[0].decrypt(ck).unwrap(),
                ck,
                &ep,
                fp,
                &long
            ),
            Err(CustodyError::TooLarge { .. })
        ));
    }

    #[test]
    fn forged_submissions_refused() {
        let c = ceremony(2, 3);
        let fp = c.secret.fingerprint();
        let (_, ep) = enclave_key();
        let alice = Some(c.custodians[0].public_key().fingerprint());
        let good = c.files[0]
            .reseal_for_enclave(&c.custodians[0], &ep, b"s")
            .unwrap();
        // An attacker seals a share of its own to the enclave's (public) key and signs with its
        // own key: not the custodian of index 1.
        let mallory = CustodianKey::generate().unwrap();
        let fake = Share::new(1, 2, 3, [7; 32]).unwrap();
        let forged = SubmittedShare::encrypt_for_enclave(&fake, &mallory, &ep, fp, b"s").unwrap();
        assert!(matches!(
            forged.verify(&ep, fp, alice, b"s"),
            Err(CustodyError::NotTheCustodian { index: 1, .. })
        ));
        // It claims to be alice (her public key), with its own signature: refused.
        let mut claimed = forged.clone();
        claimed.custodian = c.custodians[0].public_key().clone();
        assert!(matches!(
            claimed.verify(&ep, fp, alice, b"s"),
            Err(CustodyError::BadSignature)
        ));
        // Alice's real submission with the sealed share swapped for the attacker's.
        let mut swapped = good.clone();
        swapped.sealed_share = forged.sealed_share.clone();
        assert!(matches!(
            swapped.verify(&ep, fp, alice, b"s"),
            Err(CustodyError::BadSignature)
        ));
        // A flipped signature bit.
        let mut flipped = good.clone();
        flipped.signature[10] ^= 1;
        assert!(matches!(
            flipped.verify(&ep, fp, alice, b"s"),
            Err(CustodyError::BadSignature)
        ));
        // A legacy domain (no custodian list) still needs a valid signature by the key named.
        forged.verify(&ep, fp, None, b"s").unwrap();
        assert!(claimed.verify(&ep, fp, None, b"s").is_err());
    }

    #[test]
    fn unsigned_version_1_submissions_refused() {
        let v1 = r#"{"kind":"ekms-submitted-share","version":1,"domain_id":"0011223344556677","index":1,"threshold":2,"total":3,"sealed_share":"AAAA"}"#;
        assert!(matches!(
            SubmittedShare::from_json(v1),
            Err(CustodyError::UnsupportedVersion(1))
        ));
    }

    #[test]
    fn malformed_submissions_refused() {
        let c = ceremony(2, 3);
        let (_, ep) = enclave_key();
        let sub = c.files[0]
            .reseal_for_enclave(&c.custodians[0], &ep, b"s")
            .unwrap();
        let base: serde_json::Value = serde_json::from_str(&sub.to_json().unwrap()).unwrap();
        let with = |field: &str, v: serde_json::Value| {
            let mut j = base.clone();
            j[field] = v;
            SubmittedShare::from_json(&j.to_string())
        };
        assert!(matches!(
            with("version", 3.into()),
            Err(CustodyError::UnsupportedVersion(3))
        ));
        assert!(matches!(
            with("kind", "ekms-custodian-share".into()),
            Err(CustodyError::Malformed(_))
        ));
        assert!(matches!(
            with("custodian_key", "04".into()),
            Err(CustodyError::InvalidPublicKey)
        ));
        assert!(matches!(
            with("enclave_key", "00".into()),
            Err(CustodyError::Malformed(_))
        ));
        assert!(matches!(
            with("signature", "AAAA".into()),
            Err(CustodyError::Malformed(_))
        ));
        assert!(matches!(
            with("index", 4.into()),
            Err(CustodyError::InvalidShareIndex { .. })
        ));
        assert!(matches!(
            with("extra", 1.into()),
            Err(CustodyError::Malformed(_))
        ));
        let mut missing = base.clone();
        missing.as_object_mut().unwrap().remove("signature");
        assert!(matches!(
            SubmittedShare::from_json(&missing.to_string()),
            Err(CustodyError::Malformed(_))
        ));
    }

    #[test]
    fn shares_of_two_domains_detected() {
        let a = ceremony(2, 2);
        let b = ceremony(2, 2);
        let mixed = [
            a.files[0].decrypt(&a.custodians[0]).unwrap(),
            b.files[1].decrypt(&b.custodians[1]).unwrap(),
        ];
        assert!(matches!(
            combine_checked(&mixed, a.secret.fingerprint()),
            Err(CustodyError::DomainMismatch { .. })
        ));
    }

    #[test]
    fn malformed_json_refused() {
        let c = ceremony(2, 3);
        let base: serde_json::Value = serde_json::from_str(&c.files[0].to_json().unwrap()).unwrap();
        let with = |field: &str, v: serde_json::Value| {
            let mut j = base.clone();
            j[field] = v;
            ShareFile::from_json(&j.to_string())
        };
        assert!(matches!(
            with("kind", "ekms-submitted-share".into()),
            Err(CustodyError::Malformed(_))
        ));
        assert!(matches!(
            with("version", 2.into()),
            Err(CustodyError::UnsupportedVersion(2))
        ));
        assert!(matches!(
            with("index", 0.into()),
            Err(CustodyError::InvalidShareIndex { .. })
        ));
        assert!(matches!(
            with("index", 4.into()),
            Err(CustodyError::InvalidShareIndex { .. })
        ));
        assert!(matches!(
            with("threshold", 1.into()),
            Err(CustodyError::InvalidParameters { .. })
        ));
        assert!(matches!(
            with("total", 17.into()),
            Err(CustodyError::InvalidParameters { .. })
        ));
        assert!(matches!(
            with("domain_id", "abc".into()),
            Err(CustodyError::Malformed(_))
        ));
        assert!(matches!(
            with("custodian", "00".into()),
            Err(CustodyError::Malformed(_))
        ));
        assert!(matches!(
            with("sealed_share", "AAAA".into()),
            Err(CustodyError::Malformed(_))
        ));
        assert!(matches!(
            with("sealed_share", "!".into()),
            Err(CustodyError::Malformed(_))
        ));
        assert!(matches!(
            with("extra", 1.into()),
            Err(CustodyError::Malformed(_))
        ));
        let text = base.to_string();
        assert!(matches!(
            ShareFile::from_json(&format!("{text}x")),
            Err(CustodyError::Malformed(_))
        ));
        let dup = text.replacen('{', "{\"index\":2,", 1);
        assert!(matches!(
            ShareFile::from_json(&dup),
            Err(CustodyError::Malformed(_))
        ));
        assert!(matches!(
            ShareFile::from_json(&" ".repeat(MAX_SHARE_JSON_LEN + 1)),
            Err(CustodyError::TooLarge { .. })
        ));
        assert!(matches!(
            SubmittedShare::from_json(&text),
            Err(CustodyError::Malformed(_))
        ));
    }

    #[test]
    fn random_bytes_never_panic() {
        let c = ceremony(2, 2);
        let valid = c.files[0].to_json().unwrap();
        let mut buf = [0u8; 512];
        for i in 0..3000usize {
            aws_lc_rs::rand::fill(&mut buf).unwrap();
            let text = String::from_utf8_lossy(&buf[..i % buf.len()]);
            assert!(ShareFile::from_json(&text).is_err());
            assert!(SubmittedShare::from_json(&text).is_err());
            // Mutate one byte of a valid file: must never panic, and decrypt never succeeds
            // with a changed meaning.
            let mut bytes = valid.clone().into_bytes();
            let pos = i % bytes.len();
            bytes[pos] = buf[0];
            if let Ok(t) = String::from_utf8(bytes)
                && let Ok(f) = ShareFile::from_json(&t)
                && f.decrypt(&c.custodians[0]).is_ok()
            {
                assert_eq!(f, c.files[0]);
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(16))]
        #[test]
        fn prop_file_round_trip(value in any::<[u8; 32]>(), n in 1u8..=16, i in any::<u8>(), fp in any::<[u8; 8]>(), session in proptest::collection::vec(any::<u8>(), 0..64)) {
            let t = if n == 1 { 1 } else { 2 };
            let share = Share::new(1 + i % n, t, n, value).unwrap();
            let key = CustodianKey::generate().unwrap();
            let file = ShareFile::encrypt_for_custodian(&share, key.public_key(), fp).unwrap();
            let back = ShareFile::from_json(&file.to_json().unwrap()).unwrap();
            let opened = back.decrypt(&key).unwrap();
            prop_assert_eq!(opened.expose(), &value);
            prop_assert_eq!((opened.index(), opened.threshold(), opened.total()), (share.index(), t, n));
            let (ek, ep) = enclave_key();
            let sub = back.reseal_for_enclave(&key, &ep, &session).unwrap();
            let back = SubmittedShare::from_json(&sub.to_json().unwrap()).unwrap();
            prop_assert_eq!(&back, &sub);
            let got = back.verify(&ep, fp, Some(key.public_key().fingerprint()), &session).unwrap().decrypt(&ek).unwrap();
            prop_assert_eq!(got.expose(), &value);
        }
    }
}
