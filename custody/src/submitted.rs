//! [`SubmittedShare`]: a share the custodian's tool re-sealed to an attested enclave's identity
//! key for one session. Metadata and session bytes are the AAD; tests live with the ceremony
//! tests in `share_file.rs`. Must only be made after the attestation verified.

use aws_lc_rs::agreement;
use base64::{Engine as _, engine::general_purpose::STANDARD};
use serde::{Deserialize, Serialize};

use crate::domain::DOMAIN_FINGERPRINT_LEN;
use crate::error::{CustodyError, Result};
use crate::seal::{LABEL_SHARE_TO_ENCLAVE, P384PublicKey, open_with, seal_to};
use crate::shamir::{SHARE_LEN, Share};
use crate::share_file::{
    SHARE_FORMAT_VERSION, check_json_len, check_position, decode_hex, decode_sealed,
};

/// Longest session binding (attestation nonce or transcript hash) accepted.
pub const MAX_SESSION_LEN: usize = 256;
/// `kind` of a submitted share.
const SUBMITTED_KIND: &str = "ekms-submitted-share";
/// AAD prefix of a submitted share.
const SUBMITTED_AAD_LABEL: &[u8] = b"ekms/v1/submitted-share";

/// A share sealed to an attested enclave's identity key for one session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubmittedShare {
    // `pub(crate)` so the ceremony tests in `share_file.rs` can relabel a share.
    pub(crate) domain_fingerprint: [u8; DOMAIN_FINGERPRINT_LEN],
    pub(crate) index: u8,
    pub(crate) threshold: u8,
    pub(crate) total: u8,
    pub(crate) sealed_share: Vec<u8>,
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
    sealed_share: String,
}

impl SubmittedShare {
    /// Seals `share` to the enclave's identity key (the SEC1 P-384 key of its verified
    /// attestation document), bound to the domain and to `session` bytes the enclave will
    /// expect (its attestation nonce). Call only after the attestation verified.
    pub fn encrypt_for_enclave(
        share: &Share,
        enclave_key: &P384PublicKey,
        domain_fingerprint: [u8; DOMAIN_FINGERPRINT_LEN],
        session: &[u8],
    ) -> Result<Self> {
        let mut s = Self {
            domain_fingerprint,
            index: share.index(),
            threshold: share.threshold(),
            total: share.total(),
            sealed_share: Vec::new(),
        };
        let aad = s.aad(session)?;
        s.sealed_share = seal_to(enclave_key, LABEL_SHARE_TO_ENCLAVE, &aad, share.expose())?;
        Ok(s)
    }

    /// The enclave side: refuses a share of another domain, then opens it with the identity key
    /// (usable for every share of the session) and the session bytes it issued.
    pub fn decrypt(
        &self,
        enclave_key: &agreement::PrivateKey,
        expected_domain: [u8; DOMAIN_FINGERPRINT_LEN],
        session: &[u8],
    ) -> Result<Share> {
        if self.domain_fingerprint != expected_domain {
            return Err(CustodyError::DomainMismatch {
                expected: hex::encode(expected_domain),
                actual: hex::encode(self.domain_fingerprint),
            });
        }
        let aad = self.aad(session)?;
        let value = open_with(
            enclave_key,
            LABEL_SHARE_TO_ENCLAVE,
            &aad,
            &self.sealed_share,
        )?;
        let value: [u8; SHARE_LEN] = value
            .as_slice()
            .try_into()
            .map_err(|_| CustodyError::DecryptFailed)?;
        Share::new(self.index, self.threshold, self.total, value)
    }

    /// `"ekms/v1/submitted-share" ‖ version ‖ domain fp (8) ‖ index ‖ threshold ‖ total ‖
    /// session length (u16 BE) ‖ session`.
    fn aad(&self, session: &[u8]) -> Result<Vec<u8>> {
        if session.len() > MAX_SESSION_LEN {
            return Err(CustodyError::TooLarge {
                len: session.len(),
                limit: MAX_SESSION_LEN,
            });
        }
        let len = u16::try_from(session.len()).map_err(|_| CustodyError::TooLarge {
            len: session.len(),
            limit: MAX_SESSION_LEN,
        })?;
        let mut aad = Vec::with_capacity(SUBMITTED_AAD_LABEL.len() + 14 + session.len());
        aad.extend_from_slice(SUBMITTED_AAD_LABEL);
        aad.push(SHARE_FORMAT_VERSION);
        aad.extend_from_slice(&self.domain_fingerprint);
        aad.extend_from_slice(&[self.index, self.threshold, self.total]);
        aad.extend_from_slice(&len.to_be_bytes());
        aad.extend_from_slice(session);
        Ok(aad)
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

    /// The JSON form (compact).
    pub fn to_json(&self) -> Result<String> {
        let j = SubmittedShareJson {
            kind: SUBMITTED_KIND.to_owned(),
            version: SHARE_FORMAT_VERSION,
            domain_id: hex::encode(self.domain_fingerprint),
            index: self.index,
            threshold: self.threshold,
            total: self.total,
            sealed_share: STANDARD.encode(&self.sealed_share),
        };
        serde_json::to_string(&j).map_err(|_| CustodyError::Malformed("submitted share"))
    }

    /// Parses the JSON form with the same strictness as [`crate::ShareFile::from_json`].
    pub fn from_json(text: &str) -> Result<Self> {
        check_json_len(text)?;
        let j: SubmittedShareJson =
            serde_json::from_str(text).map_err(|_| CustodyError::Malformed("submitted share"))?;
        if j.kind != SUBMITTED_KIND {
            return Err(CustodyError::Malformed("submitted share kind"));
        }
        if j.version != SHARE_FORMAT_VERSION {
            return Err(CustodyError::UnsupportedVersion(j.version));
        }
        check_position(j.index, j.threshold, j.total)?;
        Ok(Self {
            domain_fingerprint: decode_hex(&j.domain_id, "submitted share domain_id")?,
            index: j.index,
            threshold: j.threshold,
            total: j.total,
            sealed_share: decode_sealed(&j.sealed_share)?,
        })
    }
}
