//! `Recipient`: attested release to a client enclave (Decrypt, GenerateDataKey,
//! GenerateDataKeyPair, GenerateRandom, DeriveSharedSecret).
//!
//! The request carries the client's attestation document; this enclave verifies it (one
//! verifier: `ekms_attestation::verify`, through [`crate::attest::Attestor::verify_recipient`])
//! before anything is released, exposes its measurements to the key policy as
//! `kms:RecipientAttestation:ImageSha384` and `kms:RecipientAttestation:PCR<n>`, and answers
//! with `CiphertextForRecipient`, a CMS `EnvelopedData` to the document's RSA key, instead of
//! the plaintext (`ekms_attestation::recipient`). The host sees only what the client could
//! open: nothing.

use std::time::SystemTime;

use crate::KmsError;
use ekms_attestation::UnixMillis;
use serde::Deserialize;

use super::{Ctx, OpError, enum_error, length_error, to_b64};

/// Largest `AttestationDocument` (AWS's `RecipientInfo` constraint).
pub(crate) const MAX_ATTESTATION_DOCUMENT: usize = 262_144;

/// The one key encryption algorithm AWS offers for a recipient.
const KEY_ENCRYPTION_ALGORITHMS: &[&str] = &["RSAES_OAEP_SHA_256"];

/// `RecipientInfo` as a request carries it.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct RecipientInput {
    key_encryption_algorithm: Option<String>,
    attestation_document: Option<String>,
}

/// A recipient whose document verified: what its response is encrypted to.
#[derive(Debug)]
pub(crate) struct Recipient {
    /// The document's RSA public key (DER `SubjectPublicKeyInfo`).
    public_key: Vec<u8>,
}

impl Recipient {
    /// `CiphertextForRecipient` for `plaintext`, base64.
    pub(crate) fn seal(&self, plaintext: &[u8]) -> Result<String, OpError> {
        ekms_attestation::recipient::seal(&self.public_key, plaintext)
            .map(|blob| to_b64(&blob))
            .map_err(|e| {
                tracing::error!(error = %e, "sealing to a verified recipient failed");
                KmsError::internal().into()
            })
    }
}

fn invalid(reason: &str) -> KmsError {
    // AWS documents no error code of its own for a bad attestation document (none is in the
    // recordings); it is a 400 on the request's content, so AWS's generic ValidationException.
    KmsError::validation(format!(
        "The attestation document in the Recipient parameter is not valid: {reason}."
    ))
}

/// Checks a request's `Recipient`, verifies its attestation document, and sets the
/// `kms:RecipientAttestation:*` condition keys from it (so call this before the key is
/// authorized). `None` when the request has no recipient.
pub(crate) fn recipient(
    ctx: &Ctx<'_>,
    input: Option<&RecipientInput>,
) -> Result<Option<Recipient>, OpError> {
    let Some(input) = input else {
        return Ok(None);
    };
    if let Some(alg) = input.key_encryption_algorithm.as_deref()
        && !KEY_ENCRYPTION_ALGORITHMS.contains(&alg)
    {
        return Err(enum_error(
            alg,
            "recipient.keyEncryptionAlgorithm",
            KEY_ENCRYPTION_ALGORITHMS,
        )
        .into());
    }
    let doc = input.attestation_document.as_deref().ok_or_else(|| {
        KmsError::validation("The Recipient parameter must include an AttestationDocument.")
    })?;
    let doc = super::b64("AttestationDocument", doc)?;
    if doc.is_empty() || doc.len() > MAX_ATTESTATION_DOCUMENT {
        return Err(length_error(
            "recipient.attestationDocument",
            doc.len(),
            MAX_ATTESTATION_DOCUMENT,
        )
        .into());
    }
    // Certificates are checked at this machine's time, not a simulated clock offset (as
    // signatures are).
    let now = UnixMillis::from_system_time(SystemTime::now()).map_err(|_| KmsError::internal())?;
    let verified = super::crypto::blocking(|| ctx.core.attestor.verify_recipient(&doc, now))
        .map_err(|reason| invalid(&reason))?;
    let public_key = verified
        .public_key()
        .ok_or_else(|| invalid("it carries no public key"))?;
    ekms_attestation::recipient::recipient_key(public_key).map_err(|e| match e {
        ekms_attestation::Error::Recipient(why) => invalid(why),
        _ => invalid("its public key is not usable"),
    })?;
    if verified.is_simulation() {
        tracing::debug!("released to a recipient attested by the SIMULATION CA");
    }
    for (index, pcr) in verified.pcrs() {
        let hex = pcr.to_hex();
        if index.get() == 0 {
            ctx.condition("kms:RecipientAttestation:ImageSha384", vec![hex.clone()]);
        }
        ctx.condition(
            &format!("kms:RecipientAttestation:PCR{}", index.get()),
            vec![hex],
        );
    }
    Ok(Some(Recipient {
        public_key: public_key.to_vec(),
    }))
}
