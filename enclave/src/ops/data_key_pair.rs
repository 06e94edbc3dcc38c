//! GenerateDataKeyPair and GenerateDataKeyPairWithoutPlaintext: a key pair made in the enclave,
//! its private key (PKCS#8 DER) returned encrypted under a symmetric KMS key (and, with
//! plaintext, in the clear to the caller), its public key as DER `SubjectPublicKeyInfo`.

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::{
    Ctx, OpResult, SecretB64, crypto, dry_run, enum_error, parse, reply, require_enabled,
    require_usage, to_b64,
};
use crate::{
    KmsError, asymmetric,
    context::EncryptionContext,
    keyspec::{Curve, Family},
};

/// `KeyPairSpec` values, in AWS's message order, with the key each makes.
const PAIR_SPECS: &[(&str, Option<Family>)] = &[
    ("RSA_2048", Some(Family::Rsa(2048))),
    ("RSA_3072", Some(Family::Rsa(3072))),
    ("RSA_4096", Some(Family::Rsa(4096))),
    ("ECC_NIST_P256", Some(Family::Ecc(Curve::P256))),
    ("ECC_NIST_P384", Some(Family::Ecc(Curve::P384))),
    ("ECC_NIST_P521", Some(Family::Ecc(Curve::P521))),
    ("ECC_SECG_P256K1", Some(Family::Ecc(Curve::K256))),
    ("SM2", None),
    ("ECC_NIST_EDWARDS25519", Some(Family::Ed25519)),
];

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Input {
    key_id: Option<String>,
    key_pair_spec: Option<String>,
    encryption_context: Option<EncryptionContext>,
    dry_run: Option<bool>,
    recipient: Option<super::recipient::RecipientInput>,
    #[allow(dead_code)]
    grant_tokens: Option<Vec<String>>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct Output<'a> {
    private_key_ciphertext_blob: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    private_key_plaintext: Option<SecretB64<'a>>,
    public_key: String,
    key_id: String,
    key_pair_spec: String,
    key_material_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    ciphertext_for_recipient: Option<String>,
}

pub(crate) fn generate_data_key_pair(ctx: &Ctx<'_>, body: &[u8], with_plaintext: bool) -> OpResult {
    let input: Input = parse(body)?;
    // GenerateDataKeyPairWithoutPlaintext has no Recipient.
    let recipient = if with_plaintext {
        super::recipient::recipient(ctx, input.recipient.as_ref())?
    } else {
        None
    };
    let key_id = input
        .key_id
        .as_deref()
        .ok_or_else(|| KmsError::required("keyId"))?;
    let spec = input
        .key_pair_spec
        .as_deref()
        .ok_or_else(|| KmsError::required("keyPairSpec"))?;
    let names: Vec<&str> = PAIR_SPECS.iter().map(|(n, _)| *n).collect();
    let Some((_, family)) = PAIR_SPECS.iter().find(|(n, _)| *n == spec) else {
        return Err(enum_error(spec, "keyPairSpec", &names).into());
    };
    let Some(family) = *family else {
        return Err(KmsError::new(
            ekms_wire::msg::KmsErrorCode::UnsupportedOperationException,
            "KeyPairSpec SM2 is available only in the AWS China Regions.",
        )
        .into());
    };
    let op = if with_plaintext {
        "GenerateDataKeyPair"
    } else {
        "GenerateDataKeyPairWithoutPlaintext"
    };
    let key = ctx.resolve(key_id)?;
    require_usage(ctx, &key, "ENCRYPT_DECRYPT", op)?;
    crypto::require_symmetric(ctx, &key, op)?;
    require_enabled(ctx, &key)?;
    dry_run(input.dry_run)?;
    let private: Zeroizing<Vec<u8>> =
        crypto::blocking(|| asymmetric::generate(family)).map_err(|_| KmsError::internal())?;
    let public = asymmetric::public_key(family, &private).map_err(|_| KmsError::internal())?;
    let ec = input.encryption_context.unwrap_or_default();
    crate::context::check_size(&ec)?;
    let blob = crypto::seal_for(&key, &ec, &private)?;
    // For a recipient, the private key (PKCS #8 DER) goes in the envelope.
    let for_recipient = recipient.as_ref().map(|r| r.seal(&private)).transpose()?;
    reply(
        &Output {
            private_key_ciphertext_blob: to_b64(&blob),
            private_key_plaintext: (with_plaintext && for_recipient.is_none())
                .then(|| SecretB64(&private)),
            ciphertext_for_recipient: for_recipient,
            public_key: to_b64(&public),
            key_id: ctx.key_arn(&key.key_id),
            key_pair_spec: spec.to_owned(),
            key_material_id: key
                .current_material()
                .map(|m| m.id.clone())
                .unwrap_or_default(),
        },
        vec![],
    )
}
