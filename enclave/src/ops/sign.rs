//! Sign and Verify with asymmetric `SIGN_VERIFY` keys (ECDSA, RSA PSS and PKCS#1 v1.5, Ed25519,
//! ML-DSA). `DIGEST` messages are signed as given, never hashed again; an `EXTERNAL_MU` message
//! is ML-DSA's mu, signed as given.

use ekms_wire::msg::KmsErrorCode;
use serde::Deserialize;
use serde_json::json;

use super::{
    Ctx, OpError, OpResult, dry_run, message_input, parse, reply, require_enabled, require_usage,
    to_b64,
};
use crate::{
    KmsError,
    asymmetric::{self, Message},
    external_mu,
    keyspec::{self, SIGNING_ALGORITHMS},
    record::KeyRecord,
};

/// Largest signature accepted by Verify.
const MAX_SIGNATURE: usize = 6144;

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct SignInput {
    key_id: Option<String>,
    message: Option<String>,
    message_type: Option<String>,
    signing_algorithm: Option<String>,
    signature: Option<String>,
    dry_run: Option<bool>,
    #[allow(dead_code)]
    grant_tokens: Option<Vec<String>>,
}

/// What the request's `Message` is (its `MessageType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Raw,
    Digest,
    /// ML-DSA's 64-byte mu (FIPS 204).
    ExternalMu,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Self::Raw => "RAW",
            Self::Digest => "DIGEST",
            Self::ExternalMu => "EXTERNAL_MU",
        }
    }
}

/// The checked pieces of a Sign or Verify request.
struct Checked {
    key: KeyRecord,
    algorithm: String,
    kind: Kind,
    message: zeroize::Zeroizing<Vec<u8>>,
}

fn check(ctx: &Ctx<'_>, input: &SignInput, op: &str) -> Result<Checked, OpError> {
    let key_id = input
        .key_id
        .as_deref()
        .ok_or_else(|| KmsError::required("keyId"))?;
    let message = message_input(input.message.as_deref())?;
    let algorithm = input
        .signing_algorithm
        .clone()
        .ok_or_else(|| KmsError::required("signingAlgorithm"))?;
    if !SIGNING_ALGORITHMS.contains(&algorithm.as_str()) {
        return Err(super::enum_error(&algorithm, "signingAlgorithm", SIGNING_ALGORITHMS).into());
    }
    let kind = match input.message_type.as_deref() {
        None | Some("RAW") => Kind::Raw,
        Some("DIGEST") => Kind::Digest,
        Some("EXTERNAL_MU") => Kind::ExternalMu,
        Some(other) => {
            return Err(
                super::enum_error(other, "messageType", &["RAW", "DIGEST", "EXTERNAL_MU"]).into(),
            );
        }
    };
    ctx.condition("kms:SigningAlgorithm", vec![algorithm.clone()]);
    ctx.condition("kms:MessageType", vec![kind.name().to_owned()]);
    let key = ctx.resolve(key_id)?;
    require_enabled(ctx, &key)?;
    require_usage(ctx, &key, "SIGN_VERIFY", op)?;
    let spec = key.key_spec().ok_or_else(KmsError::internal)?;
    if !spec.signing.contains(&algorithm.as_str()) {
        return Err(KmsError::new(
            KmsErrorCode::InvalidKeyUsageException,
            format!(
                "Algorithm {algorithm} is incompatible with key spec {}.",
                key.spec
            ),
        )
        .into());
    }
    match (algorithm.as_str(), kind) {
        ("ED25519_SHA_512", Kind::Digest | Kind::ExternalMu) => {
            return Err(KmsError::validation(
                "The ED25519_SHA_512 signing algorithm takes MessageType RAW.",
            )
            .into());
        }
        ("ML_DSA_SHAKE_256", Kind::Digest) => {
            return Err(KmsError::validation(
                "The ML_DSA_SHAKE_256 signing algorithm takes MessageType RAW or EXTERNAL_MU.",
            )
            .into());
        }
        ("ED25519_PH_SHA_512", Kind::Raw | Kind::ExternalMu) => {
            return Err(KmsError::validation(
                "The ED25519_PH_SHA_512 signing algorithm takes MessageType DIGEST (a SHA-512 \
                 digest).",
            )
            .into());
        }
        ("ML_DSA_SHAKE_256", _) | (_, Kind::Raw | Kind::Digest) => {}
        (_, Kind::ExternalMu) => {
            return Err(KmsError::validation(format!(
                "MessageType EXTERNAL_MU is valid only with ML_DSA_SHAKE_256, not {algorithm}."
            ))
            .into());
        }
    }
    if kind == Kind::Digest && keyspec::digest_len(&algorithm) != Some(message.len()) {
        return Err(KmsError::validation(format!(
            "Digest is invalid length for algorithm {algorithm}."
        ))
        .into());
    }
    if kind == Kind::ExternalMu && message.len() != external_mu::MU_LEN {
        return Err(KmsError::validation(format!(
            "An EXTERNAL_MU message is the {}-byte mu of FIPS 204; this one is {} bytes.",
            external_mu::MU_LEN,
            message.len()
        ))
        .into());
    }
    Ok(Checked {
        key,
        algorithm,
        kind,
        message,
    })
}

fn private_key(key: &KeyRecord) -> Result<&[u8], KmsError> {
    key.private_key().ok_or_else(KmsError::internal)
}

fn family(key: &KeyRecord) -> Result<keyspec::Family, KmsError> {
    key.key_spec()
        .map(|s| s.family)
        .ok_or_else(KmsError::internal)
}

fn as_message(c: &Checked) -> Message<'_> {
    match c.kind {
        Kind::Raw => Message::Raw(&c.message),
        Kind::Digest => Message::Digest(&c.message),
        Kind::ExternalMu => Message::Mu(&c.message),
    }
}

pub(crate) fn sign(ctx: &Ctx<'_>, body: &[u8]) -> OpResult {
    let input: SignInput = parse(body)?;
    let c = check(ctx, &input, "Sign")?;
    dry_run(input.dry_run)?;
    let sig = asymmetric::sign(
        family(&c.key)?,
        &c.algorithm,
        private_key(&c.key)?,
        as_message(&c),
    )
    .map_err(|_| KmsError::internal())?;
    reply(
        &json!({
            "KeyId": ctx.key_arn(&c.key.key_id),
            "Signature": to_b64(&sig),
            "SigningAlgorithm": c.algorithm,
        }),
        vec![],
    )
}

pub(crate) fn verify(ctx: &Ctx<'_>, body: &[u8]) -> OpResult {
    let input: SignInput = parse(body)?;
    let signature = super::blob_input("Signature", input.signature.as_deref(), MAX_SIGNATURE)?;
    let c = check(ctx, &input, "Verify")?;
    dry_run(input.dry_run)?;
    let f = family(&c.key)?;
    let spki = c
        .key
        .current_material()
        .ok_or_else(KmsError::internal)?
        .public_key(f)
        .map_err(|_| KmsError::internal())?;
    let valid = asymmetric::verify(f, &c.algorithm, &spki, as_message(&c), &signature)
        .map_err(|_| KmsError::internal())?;
    if !valid {
        return Err(KmsError::new(KmsErrorCode::KMSInvalidSignatureException, "").into());
    }
    reply(
        &json!({
            "KeyId": ctx.key_arn(&c.key.key_id),
            "SignatureValid": true,
            "SigningAlgorithm": c.algorithm,
        }),
        vec![],
    )
}
