//! [`SubmittedShare`]: a share the custodian's tool re-sealed to an attested enclave's identity
//! key for one session, and signed with the custodian's key. The enclave checks the signature
//! ([`SubmittedShare::verify`]) before it decrypts or keeps anything; only a
//! [`VerifiedSubmission`] can be decrypted. Tests live with the ceremony tests in
//! `share_file.rs`. Must only be made after the attestation verified.

use aws_lc_rs::agreement;
use base64::{Engine as _, engine::general_purpose::STANDARD};
use serde::{Deserialize, Serialize};

use crate::custodian::{CUSTODIAN_SIGNATURE_LEN, CustodianKey, CustodianPublicKey};
use crate::domain::DOMAIN_FINGERPRINT_LEN;
use crate::error::{CustodyError, Result};
use crate::seal::{LABEL_SHARE_TO_ENCLAVE, P384PublicKey, open_with, seal_to};
use crate::shamir::{SHARE_LEN, Share};
use crate::share_file::{check_json_len, check_position, decode_hex, decode_sealed};

/// Longest session binding (attestation nonce or transcript hash) accepted.
pub const MAX_SESSION_LEN: usize = 256;
/// Format version of a submitted share. Version 1 was unsigned; it is refused.
pub const SUBMITTED_VERSION: u8 = 2;
/// `kind` of a submitted share.
const SUBMITTED_KIND: &str = "ekms-submitted-share";
/// AAD prefix of a submitted share.
const SUBMITTED_AAD_LABEL: &[u8] = b"ekms/v1/submitted-share";
/// First bytes of the message a custodian signs (its own label: no other message a custodian
/// key signs or derives starts with it).
const SIGNED_LABEL: &[u8] = b"ekms/v2/custodian-submission";

/// A share sealed to an attested enclave's identity key for one session, signed by its custodian.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubmittedShare {
    // `pub(crate)` so the ceremony tests in `share_file.rs` can relabel a share.
    pub(crate) domain_fingerprint: [u8; DOMAIN_FINGERPRINT_LEN],
    pub(crate) index: u8,
    pub(crate) threshold: u8,
    pub(crate) total: u8,
    /// Fingerprint of the enclave identity key the share is sealed to.
    pub(crate) enclave_key: [u8; 16],
    /// The signer.
    pub(crate) custodian: CustodianPublicKey,
    pub(crate) sealed_share: Vec<u8>,
    pub(crate) signature: [u8; CUSTODIAN_SIGNATURE_LEN],
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SubmittedShareJson {
    kind: String,
    version: u8,
    domain_id: String,
    index: u8,
    threshold: u8,
    total: u8,
    /// Fingerprint of the enclave identity key, hex (32).
    enclave_key: String,
    /// The custodian's P-384 public key, uncompressed SEC1, hex (194).
    custodian_key: String,
    sealed_share: String,
    /// ECDSA P-384/SHA-384, fixed `r ‖ s`, base64.
    signature: String,
}

/// A submission whose signature verified for one enclave key, domain, session and custodian:
/// the only form that can be decrypted.
#[derive(Debug)]
pub struct VerifiedSubmission<'a> {
    submitted: &'a SubmittedShare,
    session: &'a [u8],
}

impl SubmittedShare {
    /// Seals `share` to the enclave's identity key (the SEC1 P-384 key of its verified
    /// attestation document), bound to the domain and to `session` bytes the enclave will be
    /// given with it (the attestation nonce), and signs it with the custodian's key. Call only
    /// after the attestation verified.
    pub fn encrypt_for_enclave(
        share: &Share,
        custodian: &CustodianKey,
        enclave_key: &P384PublicKey,
        domain_fingerprint: [u8; DOMAIN_FINGERPRINT_LEN],
        session: &[u8],
    ) -> Result<Self> {
        let mut s = Self {
            domain_fingerprint,
            index: share.index(),
            threshold: share.threshold(),
            total: share.total(),
            enclave_key: enclave_key.fingerprint(),
            custodian: custodian.public_key().clone(),
            sealed_share: Vec::new(),
            signature: [0; CUSTODIAN_SIGNATURE_LEN],
        };
        let aad = s.aad(session)?;
        s.sealed_share = seal_to(enclave_key, LABEL_SHARE_TO_ENCLAVE, &aad, share.expose())?;
        s.signature = custodian.sign(&s.signed_message(enclave_key, session)?)?;
        Ok(s)
    }

    /// The enclave side, before anything is decrypted or kept. Checks, in this order, with a
    /// distinct error each: the domain ([`CustodyError::DomainMismatch`]), that the share is
    /// sealed to `enclave_key` ([`CustodyError::WrongEnclave`]), that the signer is `custodian`,
    /// the key the domain lists at this share's index ([`CustodyError::NotTheCustodian`]; `None`
    /// only for a legacy domain record that lists none), and the signature over everything,
    /// this enclave's full identity key and `session` included ([`CustodyError::BadSignature`]).
    pub fn verify<'a>(
        &'a self,
        enclave_key: &P384PublicKey,
        expected_domain: [u8; DOMAIN_FINGERPRINT_LEN],
        custodian: Option<[u8; 16]>,
        session: &'a [u8],
    ) -> Result<VerifiedSubmission<'a>> {
        if self.domain_fingerprint != expected_domain {
            return Err(CustodyError::DomainMismatch {
                expected: hex::encode(expected_domain),
                actual: hex::encode(self.domain_fingerprint),
            });
        }
        if self.enclave_key != enclave_key.fingerprint() {
            return Err(CustodyError::WrongEnclave {
                expected: hex::encode(enclave_key.fingerprint()),
                actual: hex::encode(self.enclave_key),
            });
        }
        if let Some(expected) = custodian
            && expected != self.custodian.fingerprint()
        {
            return Err(CustodyError::NotTheCustodian {
                index: self.index,
                expected: hex::encode(expected),
                actual: self.custodian.fingerprint_hex(),
            });
        }
        self.custodian
            .verify(&self.signed_message(enclave_key, session)?, &self.signature)?;
        Ok(VerifiedSubmission {
            submitted: self,
            session,
        })
    }

    /// `"ekms/v1/submitted-share" ‖ version ‖ domain fp (8) ‖ index ‖ threshold ‖ total ‖
    /// session length (u16 BE) ‖ session`.
    fn aad(&self, session: &[u8]) -> Result<Vec<u8>> {
        let len = session_len(session)?;
        let mut aad = Vec::with_capacity(SUBMITTED_AAD_LABEL.len() + 14 + session.len());
        aad.extend_from_slice(SUBMITTED_AAD_LABEL);
        aad.push(SUBMITTED_VERSION);
        aad.extend_from_slice(&self.domain_fingerprint);
        aad.extend_from_slice(&[self.index, self.threshold, self.total]);
        aad.extend_from_slice(&len.to_be_bytes());
        aad.extend_from_slice(session);
        Ok(aad)
    }

    /// What the custodian signs (byte table in docs/custody.md): `"ekms/v2/custodian-submission"
    /// ‖ version ‖ domain fp (8) ‖ enclave identity key SEC1 (97) ‖ custodian fp (16) ‖ index ‖
    /// threshold ‖ total ‖ session length (u16 BE) ‖ session ‖ sealed length (u16 BE) ‖ sealed
    /// share`. Every field is fixed-length or length-prefixed, so no two submissions share one.
    pub(crate) fn signed_message(
        &self,
        enclave_key: &P384PublicKey,
        session: &[u8],
    ) -> Result<Vec<u8>> {
        let session_len = session_len(session)?;
        let sealed_len = u16::try_from(self.sealed_share.len())
            .map_err(|_| CustodyError::Malformed("sealed_share length"))?;
        let mut m = Vec::with_capacity(
            SIGNED_LABEL.len() + 1 + 8 + 97 + 16 + 3 + 4 + session.len() + self.sealed_share.len(),
        );
        m.extend_from_slice(SIGNED_LABEL);
        m.push(SUBMITTED_VERSION);
        m.extend_from_slice(&self.domain_fingerprint);
        m.extend_from_slice(enclave_key.sec1());
        m.extend_from_slice(&self.custodian.fingerprint());
        m.extend_from_slice(&[self.index, self.threshold, self.total]);
        m.extend_from_slice(&session_len.to_be_bytes());
        m.extend_from_slice(session);
        m.extend_from_slice(&sealed_len.to_be_bytes());
        m.extend_from_slice(&self.sealed_share);
        Ok(m)
    }

    /// Format version.
    #[must_use]
    pub fn version(&self) -> u8 {
        SUBMITTED_VERSION
    }
    /// Fingerprint of the domain key this is a share of.
    #[must_use]
    pub fn domain_fingerprint(&self) -> [u8; DOMAIN_FINGERPRINT_LEN] {
        self.domain_fingerprint
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
    /// The key that signed it (unverified until [`SubmittedShare::verify`]).
    #[must_use]
    pub fn custodian(&self) -> &CustodianPublicKey {
        &self.custodian
    }
    /// Fingerprint of the enclave identity key it is sealed to.
    #[must_use]
    pub fn enclave_key(&self) -> [u8; 16] {
        self.enclave_key
    }
    /// The sealed blob.
    #[must_use]
    pub fn sealed_share(&self) -> &[u8] {
        &self.sealed_share
    }

    /// The JSON form (compact).
    pub fn to_json(&self) -> Result<String> {
        let j = SubmittedShareJson {
            kind: SUBMITTED_KIND.to_owned(),
            version: SUBMITTED_VERSION,
            domain_id: hex::encode(self.domain_fingerprint),
            index: self.index,
            threshold: self.threshold,
            total: self.total,
            enclave_key: hex::encode(self.enclave_key),
            custodian_key: hex::encode(self.custodian.key().sec1()),
            sealed_share: STANDARD.encode(&self.sealed_share),
            signature: STANDARD.encode(self.signature),
        };
        serde_json::to_string(&j).map_err(|_| CustodyError::Malformed("submitted share"))
    }

    /// Parses the JSON form with the same strictness as [`crate::ShareFile::from_json`]. Does
    /// not verify: see [`SubmittedShare::verify`].
    pub fn from_json(text: &str) -> Result<Self> {
        check_json_len(text)?;
        // The version first, so that an unsigned version 1 submission is named as such.
        if let Ok(v) = serde_json::from_str::<VersionOnly>(text)
            && v.kind == SUBMITTED_KIND
            && v.version != SUBMITTED_VERSION
        {
            return Err(CustodyError::UnsupportedVersion(v.version));
        }
        let j: SubmittedShareJson =
            serde_json::from_str(text).map_err(|_| CustodyError::Malformed("submitted share"))?;
        if j.kind != SUBMITTED_KIND {
            return Err(CustodyError::Malformed("submitted share kind"));
        }
        if j.version != SUBMITTED_VERSION {
            return Err(CustodyError::UnsupportedVersion(j.version));
        }
        check_position(j.index, j.threshold, j.total)?;
        let custodian_key =
            hex::decode(&j.custodian_key).map_err(|_| CustodyError::InvalidPublicKey)?;
        let signature = STANDARD
            .decode(&j.signature)
            .ok()
            .and_then(|s| <[u8; CUSTODIAN_SIGNATURE_LEN]>::try_from(s).ok())
            .ok_or(CustodyError::Malformed("submitted share signature"))?;
        Ok(Self {
            domain_fingerprint: decode_hex(&j.domain_id, "submitted share domain_id")?,
            index: j.index,
            threshold: j.threshold,
            total: j.total,
            enclave_key: decode_hex(&j.enclave_key, "submitted share enclave_key")?,
            custodian: CustodianPublicKey::new(P384PublicKey::from_sec1(&custodian_key)?),
            sealed_share: decode_sealed(&j.sealed_share)?,
            signature,
        })
    }
}

/// Only the kind and version of a submission, read first.
#[derive(Deserialize)]
struct VersionOnly {
    kind: String,
    version: u8,
}

impl VerifiedSubmission<'_> {
    /// Opens the share with the enclave's identity key (usable for every share of the session).
    pub fn decrypt(&self, enclave_key: &agreement::PrivateKey) -> Result<Share> {
        let s = self.submitted;
        let value = open_with(
            enclave_key,
            LABEL_SHARE_TO_ENCLAVE,
            &s.aad(self.session)?,
            &s.sealed_share,
        )?;
        let value: [u8; SHARE_LEN] = value
            .as_slice()
            .try_into()
            .map_err(|_| CustodyError::DecryptFailed)?;
        Share::new(s.index, s.threshold, s.total, value)
    }

    /// Fingerprint of the custodian whose signature verified.
    #[must_use]
    pub fn signer(&self) -> [u8; 16] {
        self.submitted.custodian.fingerprint()
    }

    /// The submission.
    #[must_use]
    pub fn submitted(&self) -> &SubmittedShare {
        self.submitted
    }
}

fn session_len(session: &[u8]) -> Result<u16> {
    if session.len() > MAX_SESSION_LEN {
        return Err(CustodyError::TooLarge {
            len: session.len(),
            limit: MAX_SESSION_LEN,
        });
    }
    u16::try_from(session.len()).map_err(|_| CustodyError::TooLarge {
        len: session.len(),
        limit: MAX_SESSION_LEN,
    })
}
