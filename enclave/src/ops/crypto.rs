//! Cryptographic operations: Encrypt, Decrypt, ReEncrypt, GenerateDataKey(WithoutPlaintext),
//! GenerateRandom. Plaintext lives only in `Zeroizing` buffers.

use aws_lc_rs::rand;
use ekms_wire::{blob::BlobHeader, msg::KmsErrorCode};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::{
    Ctx, OpError, OpResult, SecretB64, b64, dry_run, out_of_range, parse,
    recipient::{RecipientInput, recipient},
    reply, require_enabled, require_usage,
};
use crate::{
    EnclaveError, KmsError, asymmetric, ciphertext, context::EncryptionContext, keyspec::Family,
    record::KeyRecord,
};

const MAX_PLAINTEXT: usize = 4096;
const MAX_CIPHERTEXT: usize = 6144;
const ALGORITHMS: &[&str] = &[
    "SYMMETRIC_DEFAULT",
    "RSAES_OAEP_SHA_1",
    "RSAES_OAEP_SHA_256",
    "SM2PKE",
];

/// The effective encryption algorithm of a request for `key` (default `SYMMETRIC_DEFAULT`):
/// one of the key spec's, else AWS's error.
fn check_algorithm(
    ctx: &Ctx<'_>,
    alg: Option<&str>,
    member: &str,
    key: &KeyRecord,
) -> Result<&'static str, KmsError> {
    let a = alg.unwrap_or("SYMMETRIC_DEFAULT");
    let Some(known) = ALGORITHMS.iter().copied().find(|k| *k == a) else {
        return Err(KmsError::validation(format!(
            "1 validation error detected: Value '{a}' at '{member}' failed to satisfy constraint: Member must satisfy enum value set: [{}]",
            ALGORITHMS.join(", ")
        )));
    };
    if key
        .key_spec()
        .is_some_and(|s| s.encryption.contains(&known))
    {
        return Ok(known);
    }
    Err(KmsError::new(
        KmsErrorCode::InvalidKeyUsageException,
        format!(
            "The encryption algorithm {known} is not valid for {}.",
            ctx.key_arn(&key.key_id)
        ),
    ))
}

/// The RSA private key of an RSA `ENCRYPT_DECRYPT` key.
fn rsa_private(key: &KeyRecord) -> Result<&[u8], KmsError> {
    key.private_key().ok_or_else(KmsError::internal)
}

/// AWS's limits for encrypting `len` bytes under `key` with `alg`: an RSA key takes at most
/// the OAEP limit of its size and hash, and no encryption context.
fn check_limits(
    key: &KeyRecord,
    alg: &str,
    ec: &EncryptionContext,
    len: usize,
) -> Result<(), KmsError> {
    if alg == "SYMMETRIC_DEFAULT" {
        return Ok(());
    }
    let Some(Family::Rsa(bits)) = key.key_spec().map(|s| s.family) else {
        return Err(KmsError::internal());
    };
    let max = asymmetric::oaep_max_plaintext(bits, alg);
    if len > max {
        return Err(KmsError::validation(format!(
            "Algorithm {alg} and key spec {} cannot encrypt data larger than {max} bytes.",
            key.spec
        )));
    }
    if !ec.is_empty() {
        return Err(KmsError::validation(
            "EncryptionContext is supported only with symmetric encryption KMS keys.",
        ));
    }
    Ok(())
}

/// Encrypts `plaintext` under `key` with `alg` (checked with [`check_limits`]): a symmetric
/// blob, or a raw RSAES-OAEP ciphertext.
fn encrypt_with(
    key: &KeyRecord,
    alg: &str,
    ec: &EncryptionContext,
    plaintext: &[u8],
) -> Result<Vec<u8>, OpError> {
    if alg == "SYMMETRIC_DEFAULT" {
        return seal_for(key, ec, plaintext);
    }
    asymmetric::rsa_encrypt(rsa_private(key)?, alg, plaintext)
        .map_err(|_| KmsError::internal().into())
}

fn key_bytes(key: &KeyRecord) -> Result<[u8; 16], KmsError> {
    ekms_wire::plan::key_id_bytes(&key.key_id).ok_or_else(KmsError::internal)
}

/// Encrypts under the key's current material.
pub(crate) fn seal_for(
    key: &KeyRecord,
    ctx_ec: &EncryptionContext,
    plaintext: &[u8],
) -> Result<Vec<u8>, OpError> {
    let material = key.current_material().ok_or_else(KmsError::internal)?;
    Ok(ciphertext::encrypt(
        key_bytes(key)?,
        material,
        ctx_ec,
        plaintext,
    )?)
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct EncryptInput {
    key_id: Option<String>,
    plaintext: Option<String>,
    encryption_context: Option<EncryptionContext>,
    encryption_algorithm: Option<String>,
    dry_run: Option<bool>,
    #[allow(dead_code)]
    grant_tokens: Option<Vec<String>>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct EncryptOutput {
    ciphertext_blob: String,
    key_id: String,
    encryption_algorithm: &'static str,
}

pub(crate) fn encrypt(ctx: &Ctx<'_>, body: &[u8]) -> OpResult {
    let input: EncryptInput = parse(body)?;
    let key_id = input
        .key_id
        .as_deref()
        .ok_or_else(|| KmsError::required("keyId"))?;
    let plaintext = b64(
        "Plaintext",
        input
            .plaintext
            .as_deref()
            .ok_or_else(|| KmsError::required("plaintext"))?,
    )?;
    if plaintext.is_empty() {
        return Err(KmsError::validation("1 validation error detected: Value at 'plaintext' failed to satisfy constraint: Member must have length greater than or equal to 1").into());
    }
    if plaintext.len() > MAX_PLAINTEXT {
        return Err(KmsError::validation("1 validation error detected: Value at 'plaintext' failed to satisfy constraint: Member must have length less than or equal to 4096").into());
    }
    if let Some(ec) = &input.encryption_context {
        ctx.condition_ec(ec)?;
    }
    ctx.condition(
        "kms:EncryptionAlgorithm",
        vec![
            input
                .encryption_algorithm
                .clone()
                .unwrap_or_else(|| "SYMMETRIC_DEFAULT".into()),
        ],
    );
    let key = ctx.resolve(key_id)?;
    require_usage(ctx, &key, "ENCRYPT_DECRYPT", "Encrypt")?;
    let alg = check_algorithm(
        ctx,
        input.encryption_algorithm.as_deref(),
        "encryptionAlgorithm",
        &key,
    )?;
    require_enabled(ctx, &key)?;
    let ec = input.encryption_context.unwrap_or_default();
    check_limits(&key, alg, &ec, plaintext.len())?;
    dry_run(input.dry_run)?;
    let blob = encrypt_with(&key, alg, &ec, &plaintext)?;
    reply(
        &EncryptOutput {
            ciphertext_blob: super::to_b64(&blob),
            key_id: ctx.key_arn(&key.key_id),
            encryption_algorithm: alg,
        },
        vec![],
    )
}

/// A decrypted blob with the key that opened it.
struct Opened {
    key: KeyRecord,
    material_id: String,
    plaintext: Zeroizing<Vec<u8>>,
    algorithm: &'static str,
}

/// Decrypts a blob, checking the optional `KeyId` against the key the blob names.
fn open_blob(
    ctx: &Ctx<'_>,
    blob_b64: Option<&str>,
    member: &str,
    key_id: Option<&str>,
    ec: &EncryptionContext,
    alg: Option<&str>,
    op: &str,
) -> Result<Opened, OpError> {
    let blob = b64(
        member,
        blob_b64.ok_or_else(|| KmsError::required(&lower_first(member)))?,
    )?;
    if blob.is_empty() || blob.len() > MAX_CIPHERTEXT {
        return Err(KmsError::validation(format!(
            "1 validation error detected: Value at '{}' failed to satisfy constraint: Member must have length {}",
            lower_first(member),
            if blob.is_empty() { "greater than or equal to 1" } else { "less than or equal to 6144" }
        ))
        .into());
    }
    let requested = match key_id {
        Some(k) => Some(ctx.resolve(k)?),
        None => None,
    };
    if let Some(key) = requested.as_ref().filter(|k| k.spec.starts_with("RSA_")) {
        // An RSA ciphertext is raw OAEP: only a request naming its key can decrypt it.
        require_usage(ctx, key, "ENCRYPT_DECRYPT", op)?;
        let algorithm = check_algorithm(ctx, alg, "encryptionAlgorithm", key)?;
        require_enabled(ctx, key)?;
        if algorithm == "SYMMETRIC_DEFAULT" || !ec.is_empty() {
            return Err(KmsError::invalid_ciphertext().into());
        }
        let plaintext = asymmetric::rsa_decrypt(rsa_private(key)?, algorithm, &blob)
            .map_err(|_| KmsError::internal())?
            .ok_or_else(KmsError::invalid_ciphertext)?;
        let key = requested.ok_or_else(KmsError::internal)?;
        let material_id = key
            .current_material()
            .map(|m| m.id.clone())
            .unwrap_or_default();
        return Ok(Opened {
            key,
            material_id,
            plaintext,
            algorithm,
        });
    }
    let (header, body) = BlobHeader::parse(&blob).ok_or_else(KmsError::invalid_ciphertext)?;
    let blob_key_id = ekms_wire::plan::key_id_of(header.key_id);
    if let Some(r) = &requested
        && r.key_id != blob_key_id
    {
        return Err(KmsError::new(
            KmsErrorCode::IncorrectKeyException,
            "The key ID in the request does not identify a CMK that can perform this operation.",
        )
        .into());
    }
    let key = if let Some(r) = requested {
        r
    } else {
        // A blob naming a key this domain does not have cannot be opened: no more is said.
        let key = ctx
            .key_by_id(&blob_key_id)?
            .ok_or_else(KmsError::invalid_ciphertext)?;
        ctx.authorize(&key)?;
        key
    };
    require_usage(ctx, &key, "ENCRYPT_DECRYPT", op)?;
    check_algorithm(ctx, alg, "encryptionAlgorithm", &key)?;
    require_enabled(ctx, &key)?;
    let material = key
        .find_material(header.material_version)
        .ok_or_else(KmsError::invalid_ciphertext)?;
    let plaintext = ciphertext::decrypt(&header, body, &material, ec).map_err(|e| match e {
        EnclaveError::BadRecord => KmsError::invalid_ciphertext(),
        _ => KmsError::internal(),
    })?;
    let material_id = material.id.clone();
    Ok(Opened {
        key,
        material_id,
        plaintext,
        algorithm: "SYMMETRIC_DEFAULT",
    })
}

/// Runs `f` as blocking work on the multi-threaded runtime (RSA key generation takes tens to
/// hundreds of milliseconds), so other requests go on meanwhile; directly elsewhere.
pub(crate) fn blocking<T>(f: impl FnOnce() -> T) -> T {
    let multi_thread = tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
    if multi_thread {
        tokio::task::block_in_place(f)
    } else {
        f()
    }
}

/// `InvalidKeyUsageException` for an operation that needs a symmetric encryption key.
pub(crate) fn require_symmetric(ctx: &Ctx<'_>, key: &KeyRecord, op: &str) -> Result<(), KmsError> {
    if key.spec == "SYMMETRIC_DEFAULT" {
        return Ok(());
    }
    Err(KmsError::new(
        KmsErrorCode::InvalidKeyUsageException,
        format!(
            "{} key spec is {} which is not valid for {op}.",
            ctx.key_arn(&key.key_id),
            key.spec
        ),
    ))
}

fn lower_first(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_ascii_lowercase().to_string() + c.as_str())
        .unwrap_or_default()
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DecryptInput {
    ciphertext_blob: Option<String>,
    key_id: Option<String>,
    encryption_context: Option<EncryptionContext>,
    encryption_algorithm: Option<String>,
    dry_run: Option<bool>,
    recipient: Option<RecipientInput>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct DecryptOutput<'a> {
    key_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    plaintext: Option<SecretB64<'a>>,
    encryption_algorithm: &'static str,
    key_material_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    ciphertext_for_recipient: Option<String>,
}

pub(crate) fn decrypt(ctx: &Ctx<'_>, body: &[u8]) -> OpResult {
    let input: DecryptInput = parse(body)?;
    let recipient = recipient(ctx, input.recipient.as_ref())?;
    let ec = input.encryption_context.unwrap_or_default();
    ctx.condition_ec(&ec)?;
    let opened = open_blob(
        ctx,
        input.ciphertext_blob.as_deref(),
        "CiphertextBlob",
        input.key_id.as_deref(),
        &ec,
        input.encryption_algorithm.as_deref(),
        "Decrypt",
    )?;
    dry_run(input.dry_run)?;
    let for_recipient = recipient
        .as_ref()
        .map(|r| r.seal(&opened.plaintext))
        .transpose()?;
    reply(
        &DecryptOutput {
            key_id: ctx.key_arn(&opened.key.key_id),
            plaintext: for_recipient
                .is_none()
                .then(|| SecretB64(&opened.plaintext)),
            encryption_algorithm: opened.algorithm,
            key_material_id: opened.material_id,
            ciphertext_for_recipient: for_recipient,
        },
        vec![],
    )
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ReEncryptInput {
    ciphertext_blob: Option<String>,
    source_encryption_context: Option<EncryptionContext>,
    source_key_id: Option<String>,
    destination_key_id: Option<String>,
    destination_encryption_context: Option<EncryptionContext>,
    source_encryption_algorithm: Option<String>,
    destination_encryption_algorithm: Option<String>,
    dry_run: Option<bool>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct ReEncryptOutput {
    ciphertext_blob: String,
    source_key_id: String,
    key_id: String,
    source_encryption_algorithm: &'static str,
    destination_encryption_algorithm: &'static str,
    source_key_material_id: String,
    destination_key_material_id: String,
}

pub(crate) fn re_encrypt(ctx: &Ctx<'_>, body: &[u8]) -> OpResult {
    let input: ReEncryptInput = parse(body)?;
    let dest_id = input
        .destination_key_id
        .as_deref()
        .ok_or_else(|| KmsError::required("destinationKeyId"))?;
    let src_ec = input.source_encryption_context.unwrap_or_default();
    ctx.condition_ec(&src_ec)?;
    let opened = ctx.with_action("kms:ReEncryptFrom", || {
        open_blob(
            ctx,
            input.ciphertext_blob.as_deref(),
            "CiphertextBlob",
            input.source_key_id.as_deref(),
            &src_ec,
            input.source_encryption_algorithm.as_deref(),
            "ReEncrypt",
        )
    })?;
    let dest_ec_conditions = input
        .destination_encryption_context
        .clone()
        .unwrap_or_default();
    ctx.authz.conditions.borrow_mut().clear();
    ctx.condition_ec(&dest_ec_conditions)?;
    let dest = ctx.with_action("kms:ReEncryptTo", || ctx.resolve(dest_id))?;
    require_usage(ctx, &dest, "ENCRYPT_DECRYPT", "ReEncrypt")?;
    let dest_alg = check_algorithm(
        ctx,
        input.destination_encryption_algorithm.as_deref(),
        "destinationEncryptionAlgorithm",
        &dest,
    )?;
    require_enabled(ctx, &dest)?;
    let dest_ec = input.destination_encryption_context.unwrap_or_default();
    check_limits(&dest, dest_alg, &dest_ec, opened.plaintext.len())?;
    dry_run(input.dry_run)?;
    let blob = encrypt_with(&dest, dest_alg, &dest_ec, &opened.plaintext)?;
    let dest_material = dest
        .current_material()
        .map(|m| m.id.clone())
        .unwrap_or_default();
    reply(
        &ReEncryptOutput {
            ciphertext_blob: super::to_b64(&blob),
            source_key_id: ctx.key_arn(&opened.key.key_id),
            key_id: ctx.key_arn(&dest.key_id),
            source_encryption_algorithm: opened.algorithm,
            destination_encryption_algorithm: dest_alg,
            source_key_material_id: opened.material_id,
            destination_key_material_id: dest_material,
        },
        vec![],
    )
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DataKeyInput {
    key_id: Option<String>,
    number_of_bytes: Option<i64>,
    key_spec: Option<String>,
    encryption_context: Option<EncryptionContext>,
    dry_run: Option<bool>,
    recipient: Option<RecipientInput>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct DataKeyOutput<'a> {
    ciphertext_blob: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    plaintext: Option<SecretB64<'a>>,
    key_id: String,
    key_material_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    ciphertext_for_recipient: Option<String>,
}

pub(crate) fn generate_data_key(ctx: &Ctx<'_>, body: &[u8], with_plaintext: bool) -> OpResult {
    let input: DataKeyInput = parse(body)?;
    // GenerateDataKeyWithoutPlaintext has no Recipient (AWS ignores members a request does not
    // have).
    let recipient = if with_plaintext {
        recipient(ctx, input.recipient.as_ref())?
    } else {
        None
    };
    let key_id = input
        .key_id
        .as_deref()
        .ok_or_else(|| KmsError::required("keyId"))?;
    let len = match (input.number_of_bytes, input.key_spec.as_deref()) {
        (Some(n), None) => {
            if !(1..=1024).contains(&n) {
                return Err(out_of_range(n, "numberOfBytes", 1, 1024).into());
            }
            usize::try_from(n).map_err(|_| KmsError::internal())?
        }
        (None, Some("AES_256")) => 32,
        (None, Some("AES_128")) => 16,
        (None, Some(other)) => {
            return Err(KmsError::validation(format!(
                "1 validation error detected: Value '{other}' at 'keySpec' failed to satisfy constraint: Member must satisfy enum value set: [AES_256, AES_128]"
            ))
            .into());
        }
        _ => {
            return Err(
                KmsError::validation("Please specify either number of bytes or key spec.").into(),
            );
        }
    };
    if let Some(ec) = &input.encryption_context {
        ctx.condition_ec(ec)?;
    }
    let key = ctx.resolve(key_id)?;
    let op = if with_plaintext {
        "GenerateDataKey"
    } else {
        "GenerateDataKeyWithoutPlaintext"
    };
    require_usage(ctx, &key, "ENCRYPT_DECRYPT", op)?;
    require_symmetric(ctx, &key, op)?;
    require_enabled(ctx, &key)?;
    dry_run(input.dry_run)?;
    let mut data_key = Zeroizing::new(vec![0u8; len]);
    rand::fill(&mut data_key).map_err(EnclaveError::from)?;
    let ec = input.encryption_context.unwrap_or_default();
    let blob = seal_for(&key, &ec, &data_key)?;
    let for_recipient = recipient.as_ref().map(|r| r.seal(&data_key)).transpose()?;
    reply(
        &DataKeyOutput {
            ciphertext_blob: super::to_b64(&blob),
            plaintext: (with_plaintext && for_recipient.is_none()).then(|| SecretB64(&data_key)),
            ciphertext_for_recipient: for_recipient,
            key_id: ctx.key_arn(&key.key_id),
            key_material_id: key
                .current_material()
                .map(|m| m.id.clone())
                .unwrap_or_default(),
        },
        vec![],
    )
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RandomInput {
    number_of_bytes: Option<i64>,
    custom_key_store_id: Option<String>,
    recipient: Option<RecipientInput>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct RandomOutput<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    plaintext: Option<SecretB64<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ciphertext_for_recipient: Option<String>,
}

pub(crate) fn generate_random(ctx: &Ctx<'_>, body: &[u8]) -> OpResult {
    let input: RandomInput = parse(body)?;
    let recipient = recipient(ctx, input.recipient.as_ref())?;
    // No key: the caller's identity policies decide, with the recipient's attestation.
    ctx.authorize_account()?;
    if input.custom_key_store_id.is_some() {
        return Err(KmsError::new(
            KmsErrorCode::UnsupportedOperationException,
            "A custom key store is not supported by this appliance yet.",
        )
        .into());
    }
    let n = input
        .number_of_bytes
        .ok_or_else(|| KmsError::validation("NumberOfBytes is required."))?;
    if !(1..=1024).contains(&n) {
        return Err(out_of_range(n, "numberOfBytes", 1, 1024).into());
    }
    let mut bytes = Zeroizing::new(vec![
        0u8;
        usize::try_from(n).map_err(|_| KmsError::internal())?
    ]);
    rand::fill(&mut bytes).map_err(EnclaveError::from)?;
    let for_recipient = recipient.as_ref().map(|r| r.seal(&bytes)).transpose()?;
    reply(
        &RandomOutput {
            plaintext: for_recipient.is_none().then(|| SecretB64(&bytes)),
            ciphertext_for_recipient: for_recipient,
        },
        vec![],
    )
}
