//! GetPublicKey: the DER `SubjectPublicKeyInfo` of an asymmetric key and what it is for.

use ekms_wire::msg::KmsErrorCode;
use serde_json::json;

use super::{Ctx, KeyIdInput, OpResult, parse, reply, require_enabled, to_b64};
use crate::{KmsError, keyspec::Family};

pub(crate) fn get_public_key(ctx: &Ctx<'_>, body: &[u8]) -> OpResult {
    let input: KeyIdInput = parse(body)?;
    let key = ctx.resolve(input.key_id()?)?;
    require_enabled(ctx, &key)?;
    let spec = key.key_spec().ok_or_else(KmsError::internal)?;
    if matches!(spec.family, Family::Symmetric | Family::Hmac(_)) {
        return Err(KmsError::new(
            KmsErrorCode::UnsupportedOperationException,
            format!(
                "{} is a {} key: GetPublicKey needs an asymmetric key.",
                ctx.key_arn(&key.key_id),
                key.spec
            ),
        )
        .into());
    }
    let spki = key
        .current_material()
        .ok_or_else(KmsError::internal)?
        .public_key(spec.family)
        .map_err(|_| KmsError::internal())?;
    let mut out = json!({
        "KeyId": ctx.key_arn(&key.key_id),
        "PublicKey": to_b64(&spki),
        "CustomerMasterKeySpec": key.spec,
        "KeySpec": key.spec,
        "KeyUsage": key.usage,
    });
    let member = match key.usage.as_str() {
        "SIGN_VERIFY" => "SigningAlgorithms",
        "KEY_AGREEMENT" => "KeyAgreementAlgorithms",
        _ => "EncryptionAlgorithms",
    };
    super::set(&mut out, member, json!(spec.algorithms(&key.usage)));
    reply(&out, vec![])
}
