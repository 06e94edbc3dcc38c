//! GenerateMac and VerifyMac with `GENERATE_VERIFY_MAC` (HMAC) keys.

use aws_lc_rs::hmac;
use ekms_wire::msg::KmsErrorCode;
use serde::Deserialize;
use serde_json::json;

use super::{
    Ctx, OpError, OpResult, dry_run, message_input, parse, reply, require_enabled, require_usage,
    to_b64,
};
use crate::{KmsError, keyspec::MAC_ALGORITHMS, record::KeyRecord};

/// Largest MAC accepted by VerifyMac.
const MAX_MAC: usize = 6144;

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct MacInput {
    key_id: Option<String>,
    message: Option<String>,
    mac_algorithm: Option<String>,
    mac: Option<String>,
    dry_run: Option<bool>,
    #[allow(dead_code)]
    grant_tokens: Option<Vec<String>>,
}

/// Checks the request; the key, the algorithm and the MAC of the message.
fn compute(
    ctx: &Ctx<'_>,
    input: &MacInput,
    op: &str,
) -> Result<(KeyRecord, String, hmac::Tag), OpError> {
    let key_id = input
        .key_id
        .as_deref()
        .ok_or_else(|| KmsError::required("keyId"))?;
    let message = message_input(input.message.as_deref())?;
    let algorithm = input
        .mac_algorithm
        .clone()
        .ok_or_else(|| KmsError::required("macAlgorithm"))?;
    if !MAC_ALGORITHMS.contains(&algorithm.as_str()) {
        return Err(super::enum_error(&algorithm, "macAlgorithm", MAC_ALGORITHMS).into());
    }
    ctx.condition("kms:MacAlgorithm", vec![algorithm.clone()]);
    let key = ctx.resolve(key_id)?;
    require_enabled(ctx, &key)?;
    require_usage(ctx, &key, "GENERATE_VERIFY_MAC", op)?;
    let spec = key.key_spec().ok_or_else(KmsError::internal)?;
    if !spec.mac.contains(&algorithm.as_str()) {
        return Err(KmsError::new(
            KmsErrorCode::InvalidKeyUsageException,
            format!(
                "Algorithm {algorithm} is incompatible with key spec {}.",
                key.spec
            ),
        )
        .into());
    }
    let alg = match algorithm.as_str() {
        "HMAC_SHA_224" => hmac::HMAC_SHA224,
        "HMAC_SHA_256" => hmac::HMAC_SHA256,
        "HMAC_SHA_384" => hmac::HMAC_SHA384,
        _ => hmac::HMAC_SHA512,
    };
    let secret = key.private_key().ok_or_else(KmsError::internal)?;
    let tag = hmac::sign(&hmac::Key::new(alg, secret), &message);
    Ok((key, algorithm, tag))
}

pub(crate) fn generate_mac(ctx: &Ctx<'_>, body: &[u8]) -> OpResult {
    let input: MacInput = parse(body)?;
    let (key, algorithm, tag) = compute(ctx, &input, "GenerateMac")?;
    dry_run(input.dry_run)?;
    reply(
        &json!({
            "KeyId": ctx.key_arn(&key.key_id),
            "Mac": to_b64(tag.as_ref()),
            "MacAlgorithm": algorithm,
        }),
        vec![],
    )
}

pub(crate) fn verify_mac(ctx: &Ctx<'_>, body: &[u8]) -> OpResult {
    let input: MacInput = parse(body)?;
    let mac = super::blob_input("Mac", input.mac.as_deref(), MAX_MAC)?;
    let (key, algorithm, tag) = compute(ctx, &input, "VerifyMac")?;
    dry_run(input.dry_run)?;
    if aws_lc_rs::constant_time::verify_slices_are_equal(tag.as_ref(), &mac).is_err() {
        return Err(KmsError::new(KmsErrorCode::KMSInvalidMacException, "").into());
    }
    reply(
        &json!({
            "KeyId": ctx.key_arn(&key.key_id),
            "MacValid": true,
            "MacAlgorithm": algorithm,
        }),
        vec![],
    )
}
