//! Imported key material: GetParametersForImport, ImportKeyMaterial, DeleteImportedKeyMaterial,
//! and the parts of CreateKey, DescribeKey and RotateKeyOnDemand that differ for keys of origin
//! `EXTERNAL`. The formats and the reasoning are in `crate::imported` and `docs/formats.md`.

use ekms_wire::msg::KmsErrorCode;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{
    Ctx, OpError, OpResult, blob_input, enum_error, parse, pending_deletion, reply, to_b64,
    too_long,
};
use crate::{
    KmsError,
    imported::{self, ImportInfo, TokenError, WrappingAlgorithm},
    keyspec::{Family, Spec},
    material::{Rotated, RotationType},
    ops::keys::{new_material, seconds},
    record::{KeyRecord, KeyState},
};

/// AWS's `WrappingAlgorithm` enum, in its order.
const WRAPPING_ALGORITHMS: &[&str] = &[
    "RSAES_PKCS1_V1_5",
    "RSAES_OAEP_SHA_1",
    "RSAES_OAEP_SHA_256",
    "RSA_AES_KEY_WRAP_SHA_1",
    "RSA_AES_KEY_WRAP_SHA_256",
    "SM2PKE",
];
/// AWS's `WrappingKeySpec` enum.
const WRAPPING_KEY_SPECS: &[&str] = &["RSA_2048", "RSA_3072", "RSA_4096", "SM2"];
const EXPIRATION_MODELS: &[&str] = &["KEY_MATERIAL_EXPIRES", "KEY_MATERIAL_DOES_NOT_EXPIRE"];
const IMPORT_TYPES: &[&str] = &["NEW_KEY_MATERIAL", "EXISTING_KEY_MATERIAL"];
/// Largest `ImportToken` and `EncryptedKeyMaterial` (AWS API reference: 6144 bytes each).
const MAX_BLOB: usize = 6144;
/// Longest `KeyMaterialDescription` (AWS API reference).
const MAX_DESCRIPTION: usize = 256;
/// Latest `ValidTo`: 365 days ahead (AWS developer guide, "Setting an expiration time").
const MAX_VALID_MS: i64 = 365 * 86_400_000;

/// `KMSInvalidStateException` for a key pending import (AWS's recorded message).
pub(crate) fn pending_import(ctx: &Ctx<'_>, rec: &KeyRecord) -> KmsError {
    KmsError::new(
        KmsErrorCode::KMSInvalidStateException,
        format!("{} is pending import.", ctx.key_arn(&rec.key_id)),
    )
}

/// Refuses CreateKey with Origin `EXTERNAL` for a spec whose material cannot be imported.
pub(crate) fn external_spec(spec: &Spec) -> Result<(), OpError> {
    match spec.family {
        Family::Symmetric | Family::Hmac(_) | Family::Rsa(_) | Family::Ecc(_) | Family::Ed25519 => {
            Ok(())
        }
        Family::MlDsa(_) | Family::Sm2 => Err(KmsError::new(
            KmsErrorCode::UnsupportedOperationException,
            format!(
                "KeySpec {} with Origin EXTERNAL is not supported by this appliance yet.",
                spec.name
            ),
        )
        .into()),
    }
}

/// AWS's error for an operation on imported material of a key of another origin (recorded).
fn require_external(ctx: &Ctx<'_>, key: &KeyRecord) -> Result<(), KmsError> {
    if key.origin == "EXTERNAL" {
        return Ok(());
    }
    Err(KmsError::new(
        KmsErrorCode::UnsupportedOperationException,
        format!(
            "{} origin is {} which is not valid for this operation.",
            ctx.key_arn(&key.key_id),
            key.origin
        ),
    ))
}

/// The `ExpirationModel`, `ValidTo` and (for a key whose current material is gone)
/// `CurrentKeyMaterialId` members of an `EXTERNAL` key's `KeyMetadata`.
pub(crate) fn describe(r: &KeyRecord, m: &mut Value) {
    if r.origin != "EXTERNAL" {
        return;
    }
    let Some(info) = r.imports.iter().find(|i| i.version == r.current) else {
        return;
    };
    if r.current_material().is_none() {
        super::set(m, "CurrentKeyMaterialId", json!(info.id));
        return;
    }
    match info.valid_to_ms {
        Some(ms) => {
            super::set(m, "ExpirationModel", json!("KEY_MATERIAL_EXPIRES"));
            super::set(m, "ValidTo", json!(seconds(ms)));
        }
        None => super::set(m, "ExpirationModel", json!("KEY_MATERIAL_DOES_NOT_EXPIRE")),
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ParametersInput {
    key_id: Option<String>,
    wrapping_algorithm: Option<String>,
    wrapping_key_spec: Option<String>,
}

pub(crate) fn get_parameters_for_import(ctx: &Ctx<'_>, body: &[u8]) -> OpResult {
    let input: ParametersInput = parse(body)?;
    let key_id = input
        .key_id
        .as_deref()
        .ok_or_else(|| KmsError::required("keyId"))?;
    let alg_name = input
        .wrapping_algorithm
        .as_deref()
        .ok_or_else(|| KmsError::required("wrappingAlgorithm"))?;
    let spec_name = input
        .wrapping_key_spec
        .as_deref()
        .ok_or_else(|| KmsError::required("wrappingKeySpec"))?;
    if !WRAPPING_ALGORITHMS.contains(&alg_name) {
        return Err(enum_error(alg_name, "wrappingAlgorithm", WRAPPING_ALGORITHMS).into());
    }
    if !WRAPPING_KEY_SPECS.contains(&spec_name) {
        return Err(enum_error(spec_name, "wrappingKeySpec", WRAPPING_KEY_SPECS).into());
    }
    let key = ctx.resolve_key_only(key_id)?;
    require_external(ctx, &key)?;
    if key.state == KeyState::PendingDeletion {
        return Err(pending_deletion(ctx, &key).into());
    }
    let unsupported = |what: &str| -> OpError {
        KmsError::new(
            KmsErrorCode::UnsupportedOperationException,
            format!("{what} is not supported by this appliance."),
        )
        .into()
    };
    // RSAES_PKCS1_V1_5 is deprecated by AWS; SM2 exists only in the AWS China Regions.
    let Some(algorithm) = WrappingAlgorithm::parse(alg_name) else {
        return Err(unsupported(&format!("WrappingAlgorithm {alg_name}")));
    };
    let bits = match spec_name {
        "RSA_2048" => 2048,
        "RSA_3072" => 3072,
        "RSA_4096" => 4096,
        other => return Err(unsupported(&format!("WrappingKeySpec {other}"))),
    };
    let spec = key.key_spec().ok_or_else(KmsError::internal)?;
    if !algorithm.can_wrap(spec, bits) {
        return Err(KmsError::validation(format!(
            "WrappingAlgorithm {alg_name} with WrappingKeySpec {spec_name} cannot wrap key \
             material of KeySpec {}; use RSA_AES_KEY_WRAP_SHA_256.",
            spec.name
        ))
        .into());
    }
    let issued = super::crypto::blocking(|| {
        imported::issue(ctx.keys, &key.key_id, algorithm, bits, ctx.now_ms)
    })?;
    reply(
        &json!({
            "KeyId": ctx.key_arn(&key.key_id),
            "ImportToken": to_b64(&issued.token),
            "PublicKey": to_b64(&issued.public_key),
            "ParametersValidTo": seconds(issued.valid_to_ms),
        }),
        vec![],
    )
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ImportInput {
    key_id: Option<String>,
    import_token: Option<String>,
    encrypted_key_material: Option<String>,
    valid_to: Option<f64>,
    expiration_model: Option<String>,
    import_type: Option<String>,
    key_material_description: Option<String>,
    key_material_id: Option<String>,
}

/// `ValidTo` in Unix ms, as checked against `ExpirationModel` (`None`: does not expire).
fn valid_to(ctx: &Ctx<'_>, input: &ImportInput) -> Result<Option<i64>, KmsError> {
    let model = input.expiration_model.as_deref();
    if let Some(m) = model
        && !EXPIRATION_MODELS.contains(&m)
    {
        return Err(enum_error(m, "expirationModel", EXPIRATION_MODELS));
    }
    let expires = match (model, input.valid_to) {
        (Some("KEY_MATERIAL_EXPIRES"), None) => {
            return Err(KmsError::validation(
                "A validTo date must be set if the ExpirationModel is KEY_MATERIAL_EXPIRES",
            ));
        }
        (Some("KEY_MATERIAL_DOES_NOT_EXPIRE"), Some(_)) => {
            return Err(KmsError::validation(
                "A validTo date must not be set if the ExpirationModel is \
                 KEY_MATERIAL_DOES_NOT_EXPIRE",
            ));
        }
        (_, None) => return Ok(None),
        (_, Some(s)) => s,
    };
    #[allow(clippy::cast_possible_truncation)] // bounded below before the cast matters
    let ms = if expires.is_finite() && expires.abs() < 1e12 {
        (expires * 1000.0) as i64
    } else {
        i64::MAX
    };
    if ms <= ctx.now_ms || ms > ctx.now_ms.saturating_add(MAX_VALID_MS) {
        return Err(KmsError::validation(
            "ValidTo must be in the future and no more than 365 days from now.",
        ));
    }
    Ok(Some(ms))
}

fn incorrect_material() -> KmsError {
    KmsError::new(
        KmsErrorCode::IncorrectKeyMaterialException,
        "The key material in the request is invalid or is not the same key material that was \
         previously imported into this KMS key.",
    )
}

pub(crate) fn import_key_material(ctx: &Ctx<'_>, body: &[u8]) -> OpResult {
    let input: ImportInput = parse(body)?;
    let key_id = input
        .key_id
        .as_deref()
        .ok_or_else(|| KmsError::required("keyId"))?;
    let token = blob_input("ImportToken", input.import_token.as_deref(), MAX_BLOB)?;
    let wrapped = blob_input(
        "EncryptedKeyMaterial",
        input.encrypted_key_material.as_deref(),
        MAX_BLOB,
    )?;
    if let Some(t) = input.import_type.as_deref()
        && !IMPORT_TYPES.contains(&t)
    {
        return Err(enum_error(t, "importType", IMPORT_TYPES).into());
    }
    if let Some(d) = &input.key_material_description
        && d.len() > MAX_DESCRIPTION
    {
        return Err(too_long(d, "keyMaterialDescription", MAX_DESCRIPTION).into());
    }
    let valid_to_ms = valid_to(ctx, &input)?;
    let mut key = ctx.resolve_key_only(key_id)?;
    require_external(ctx, &key)?;
    if key.state == KeyState::PendingDeletion {
        return Err(pending_deletion(ctx, &key).into());
    }
    let token =
        imported::open_token(ctx.keys, &key.key_id, &token, ctx.now_ms).map_err(|e| match e {
            TokenError::Invalid => KmsError::new(
                KmsErrorCode::InvalidImportTokenException,
                "The import token is invalid or is not for this KMS key.",
            ),
            TokenError::Expired => KmsError::new(
                KmsErrorCode::ExpiredImportTokenException,
                "The import token has expired. Call GetParametersForImport again.",
            ),
        })?;
    let material = token
        .unwrap_material(&wrapped)
        .ok_or_else(KmsError::invalid_ciphertext)?;
    let spec = key.key_spec().ok_or_else(KmsError::internal)?;
    let checked =
        imported::check_material(spec, &key.key_id, &material).ok_or_else(incorrect_material)?;
    drop(material);
    let new = match input.import_type.as_deref() {
        Some("NEW_KEY_MATERIAL") => true,
        Some(_) => false,
        None => key.imports.is_empty(),
    };
    let id = if new || key.imports.is_empty() {
        add_material(ctx, &mut key, checked, valid_to_ms, &input)?
    } else {
        restore_material(ctx, &mut key, checked, valid_to_ms, &input)?
    };
    let write = ctx.put_key(&mut key)?;
    reply(
        &json!({ "KeyId": ctx.key_arn(&key.key_id), "KeyMaterialId": id }),
        vec![write],
    )
}

/// The next material version: above every material the key holds, retired or remembers.
fn next_version(key: &KeyRecord) -> Result<u32, KmsError> {
    key.imports
        .iter()
        .map(|i| i.version)
        .max()
        .unwrap_or(0)
        .max(key.latest_version())
        .checked_add(1)
        .ok_or_else(KmsError::internal)
}

/// The material a record holds, made from checked material.
fn material(
    version: u32,
    id: &str,
    checked: imported::Checked,
    rotated: Option<Rotated>,
) -> Result<crate::record::Material, KmsError> {
    let mut m = new_material(version)?;
    id.clone_into(&mut m.id);
    if let Some(secret) = &checked.secret {
        m.secret.0.copy_from_slice(secret.as_slice());
    }
    m.private = checked.private;
    m.public = checked.public;
    m.rotated = rotated;
    Ok(m)
}

/// `NEW_KEY_MATERIAL`: the key's first material (made current), or, for a symmetric key that
/// has material, a pending one that RotateKeyOnDemand makes current.
fn add_material(
    ctx: &Ctx<'_>,
    key: &mut KeyRecord,
    checked: imported::Checked,
    valid_to_ms: Option<i64>,
    input: &ImportInput,
) -> Result<String, KmsError> {
    let first = key.imports.is_empty();
    let version = next_version(key)?;
    let id = new_material(version)?.id;
    if !first {
        if key.spec != "SYMMETRIC_DEFAULT" {
            return Err(KmsError::new(
                KmsErrorCode::UnsupportedOperationException,
                "ImportType NEW_KEY_MATERIAL is valid only for symmetric encryption keys \
                 that have no key material yet; import the same key material with \
                 EXISTING_KEY_MATERIAL.",
            ));
        }
        if let Some(pending) = key.imports.iter().find(|i| i.version > key.current) {
            return Err(KmsError::new(
                KmsErrorCode::KMSInvalidStateException,
                format!(
                    "New key material (id: {id}) cannot be imported into KMS key {}, because \
                     another key material (id: {}) is pending rotation.",
                    key.key_id, pending.id
                ),
            ));
        }
    }
    let fingerprint = checked.fingerprint;
    key.materials.push(material(version, &id, checked, None)?);
    key.imports.push(ImportInfo {
        version,
        id: id.clone(),
        fingerprint,
        valid_to_ms,
        description: input.key_material_description.clone(),
        imported_ms: ctx.now_ms,
        rotated: None,
    });
    if first {
        key.current = version;
        if key.state == KeyState::PendingImport {
            key.state = KeyState::Enabled;
        }
    }
    Ok(id)
}

/// `EXISTING_KEY_MATERIAL`: the same material again (the current one, or `KeyMaterialId`):
/// it comes back if it was deleted or expired, with the new expiration.
fn restore_material(
    ctx: &Ctx<'_>,
    key: &mut KeyRecord,
    checked: imported::Checked,
    valid_to_ms: Option<i64>,
    input: &ImportInput,
) -> Result<String, KmsError> {
    let pos = match input.key_material_id.as_deref() {
        Some(id) => key.imports.iter().position(|i| i.id == id),
        None => key.imports.iter().position(|i| i.version == key.current),
    }
    .ok_or_else(incorrect_material)?;
    let info = key.imports.get_mut(pos).ok_or_else(KmsError::internal)?;
    if !imported::same_material(&info.fingerprint, &checked.fingerprint) {
        return Err(incorrect_material());
    }
    info.valid_to_ms = valid_to_ms;
    info.imported_ms = ctx.now_ms;
    if input.key_material_description.is_some() {
        info.description.clone_from(&input.key_material_description);
    }
    let (version, id, rotated) = (info.version, info.id.clone(), info.rotated);
    key.materials.retain(|m| m.version != version);
    key.materials
        .push(material(version, &id, checked, rotated)?);
    if version == key.current && key.state == KeyState::PendingImport {
        key.state = KeyState::Enabled;
    }
    Ok(id)
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DeleteInput {
    key_id: Option<String>,
    key_material_id: Option<String>,
}

pub(crate) fn delete_imported_key_material(ctx: &Ctx<'_>, body: &[u8]) -> OpResult {
    let input: DeleteInput = parse(body)?;
    let key_id = input
        .key_id
        .as_deref()
        .ok_or_else(|| KmsError::required("keyId"))?;
    let mut key = ctx.resolve_key_only(key_id)?;
    require_external(ctx, &key)?;
    if key.state == KeyState::PendingDeletion {
        return Err(pending_deletion(ctx, &key).into());
    }
    let pos = match input.key_material_id.as_deref() {
        Some(id) => Some(key.imports.iter().position(|i| i.id == id).ok_or_else(|| {
            KmsError::new(
                KmsErrorCode::NotFoundException,
                format!(
                    "Key material {id} does not exist in {}",
                    ctx.key_arn(&key.key_id)
                ),
            )
        })?),
        None => key.imports.iter().position(|i| i.version == key.current),
    };
    let Some(info) = pos.and_then(|p| key.imports.get(p)) else {
        // Nothing was ever imported: nothing to delete.
        return reply(&json!({ "KeyId": ctx.key_arn(&key.key_id) }), vec![]);
    };
    let (version, id) = (info.version, info.id.clone());
    // Dropping a `Material` zeroizes its secrets.
    key.materials.retain(|m| m.version != version);
    if version > key.current {
        // A pending material never encrypted anything: it is forgotten entirely.
        key.imports.retain(|i| i.version != version);
    }
    if version == key.current && matches!(key.state, KeyState::Enabled | KeyState::Disabled) {
        key.state = KeyState::PendingImport;
    }
    let write = ctx.put_key(&mut key)?;
    reply(
        &json!({ "KeyId": ctx.key_arn(&key.key_id), "KeyMaterialId": id }),
        vec![write],
    )
}

/// RotateKeyOnDemand of an `EXTERNAL` key: the pending imported material becomes current; the
/// old one stays in the record (with its import facts) and still decrypts.
pub(crate) fn rotate_to_pending(ctx: &Ctx<'_>, key: &mut KeyRecord) -> Result<(), KmsError> {
    let none_pending = || {
        KmsError::new(
            KmsErrorCode::KMSInvalidStateException,
            format!(
                "No available key material pending rotation for the key: {}.",
                ctx.key_arn(&key.key_id)
            ),
        )
    };
    let version = key
        .imports
        .iter()
        .filter(|i| i.version > key.current)
        .map(|i| i.version)
        .min()
        .ok_or_else(none_pending)?;
    if key.material(version).is_none() {
        return Err(none_pending());
    }
    let rotated = Some(Rotated {
        ms: ctx.now_ms,
        kind: RotationType::OnDemand,
    });
    for m in key.materials.iter_mut().filter(|m| m.version == version) {
        m.rotated = rotated;
    }
    for i in key.imports.iter_mut().filter(|i| i.version == version) {
        i.rotated = rotated;
    }
    key.current = version;
    Ok(())
}
