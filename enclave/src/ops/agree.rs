//! DeriveSharedSecret: ECDH between a `KEY_AGREEMENT` key and a peer's public key.

use serde::Deserialize;

use super::{
    Ctx, OpResult, SecretB64, dry_run, enum_error, parse, reply, require_enabled, require_usage,
};
use crate::{KmsError, asymmetric, keyspec::Family};

/// Largest peer public key accepted (a P-521 SPKI is 158 bytes).
const MAX_PUBLIC_KEY: usize = 8192;

#[derive(serde::Serialize)]
#[serde(rename_all = "PascalCase")]
struct Output<'a> {
    key_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    shared_secret: Option<SecretB64<'a>>,
    key_origin: &'a str,
    key_agreement_algorithm: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    ciphertext_for_recipient: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Input {
    key_id: Option<String>,
    key_agreement_algorithm: Option<String>,
    public_key: Option<String>,
    dry_run: Option<bool>,
    #[allow(dead_code)]
    grant_tokens: Option<Vec<String>>,
    recipient: Option<super::recipient::RecipientInput>,
}

pub(crate) fn derive_shared_secret(ctx: &Ctx<'_>, body: &[u8]) -> OpResult {
    let input: Input = parse(body)?;
    let key_id = input
        .key_id
        .as_deref()
        .ok_or_else(|| KmsError::required("keyId"))?;
    let algorithm = input
        .key_agreement_algorithm
        .as_deref()
        .ok_or_else(|| KmsError::required("keyAgreementAlgorithm"))?;
    if algorithm != "ECDH" {
        return Err(enum_error(algorithm, "keyAgreementAlgorithm", &["ECDH"]).into());
    }
    let peer = super::blob_input("PublicKey", input.public_key.as_deref(), MAX_PUBLIC_KEY)?;
    let recipient = super::recipient::recipient(ctx, input.recipient.as_ref())?;
    let key = ctx.resolve(key_id)?;
    require_enabled(ctx, &key)?;
    require_usage(ctx, &key, "KEY_AGREEMENT", "DeriveSharedSecret")?;
    dry_run(input.dry_run)?;
    let Some(Family::Ecc(curve)) = key.key_spec().map(|s| s.family) else {
        return Err(KmsError::internal().into());
    };
    let private = key.private_key().ok_or_else(KmsError::internal)?;
    let secret = asymmetric::agree(curve, private, &peer)
        .map_err(|_| KmsError::internal())?
        // AWS answers a peer key that is not on the key's curve with an empty message.
        .ok_or_else(|| KmsError::validation(""))?;
    let for_recipient = recipient.as_ref().map(|r| r.seal(&secret)).transpose()?;
    reply(
        &Output {
            key_id: ctx.key_arn(&key.key_id),
            shared_secret: for_recipient.is_none().then(|| SecretB64(&secret)),
            ciphertext_for_recipient: for_recipient,
            key_origin: &key.origin,
            key_agreement_algorithm: "ECDH",
        },
        vec![],
    )
}
