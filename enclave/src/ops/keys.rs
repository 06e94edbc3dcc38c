//! Key lifecycle: CreateKey, DescribeKey, ListKeys, EnableKey, DisableKey, ScheduleKeyDeletion,
//! CancelKeyDeletion, UpdateKeyDescription.

use aws_lc_rs::rand;
use ekms_wire::{msg::KmsErrorCode, plan};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{
    Ctx, KeyIdInput, OpError, OpResult, enum_error, out_of_range, parse, reply,
    require_not_pending,
    tags::{TagInput, apply_tags},
    too_long,
};
use crate::{
    EnclaveError, KmsError, asymmetric,
    domain::hex,
    keyspec::{self, Family},
    ledger::{RecordId, key_name},
    record::{KeyMaterial, KeyRecord, KeyState, Material, SecretBytes},
};

const KEY_USAGES: &[&str] = &[
    "ENCRYPT_DECRYPT",
    "SIGN_VERIFY",
    "GENERATE_VERIFY_MAC",
    "KEY_AGREEMENT",
];
const ORIGINS: &[&str] = &["AWS_KMS", "EXTERNAL", "AWS_CLOUDHSM", "EXTERNAL_KEY_STORE"];
pub(crate) const MAX_DESCRIPTION: usize = 8192;

/// `KeyMetadata` of a record, as AWS returns it.
pub(crate) fn key_metadata(r: &KeyRecord) -> Value {
    let mut m = json!({
        "AWSAccountId": r.account,
        "KeyId": r.key_id,
        "Arn": r.arn(),
        "CreationDate": seconds(r.created_ms),
        "Enabled": r.state == KeyState::Enabled,
        "Description": r.description,
        "KeyUsage": r.usage,
        "KeyState": r.state.as_str(),
        "Origin": r.origin,
        "KeyManager": "CUSTOMER",
        "CustomerMasterKeySpec": r.spec,
        "KeySpec": r.spec,
        "MultiRegion": r.is_multi_region(),
    });
    super::multi_region::describe(r, &mut m);
    if let Some(spec) = r.key_spec() {
        let member = match r.usage.as_str() {
            "SIGN_VERIFY" => "SigningAlgorithms",
            "GENERATE_VERIFY_MAC" => "MacAlgorithms",
            "KEY_AGREEMENT" => "KeyAgreementAlgorithms",
            _ => "EncryptionAlgorithms",
        };
        super::set(&mut m, member, json!(spec.algorithms(&r.usage)));
    }
    if let Some(material) = r.current_material() {
        super::set(&mut m, "CurrentKeyMaterialId", json!(material.id));
    }
    super::import::describe(r, &mut m);
    if let (KeyState::PendingDeletion, Some(ms)) = (r.state, r.deletion_ms) {
        super::set(&mut m, "DeletionDate", json!(seconds(ms)));
    }
    m
}

/// AWS timestamps are epoch seconds with a fraction.
#[allow(clippy::cast_precision_loss)] // millisecond timestamps fit f64 exactly for 285k years
pub(crate) fn seconds(ms: i64) -> f64 {
    ms as f64 / 1000.0
}

/// New random key material (version `version`).
pub(crate) fn new_material(version: u32) -> Result<Material, EnclaveError> {
    let mut secret = KeyMaterial([0u8; 32]);
    rand::fill(&mut secret.0)?;
    let mut id = [0u8; 32];
    rand::fill(&mut id)?;
    Ok(Material {
        version,
        id: hex(&id),
        secret,
        private: None,
        public: None,
        rotated: None,
    })
}

/// The private material of a new key of `family` (none for a symmetric key). RSA generation
/// takes tens to hundreds of milliseconds: on the multi-threaded runtime it runs as blocking
/// work, so other requests go on meanwhile.
fn private_material(family: Family) -> Result<Option<SecretBytes>, EnclaveError> {
    let generate = || -> Result<Option<SecretBytes>, EnclaveError> {
        match family {
            Family::Symmetric => Ok(None),
            Family::Hmac(len) => {
                let mut key = vec![0u8; len];
                rand::fill(&mut key)?;
                Ok(Some(SecretBytes(key)))
            }
            other => {
                let pkcs8 = asymmetric::generate(other)?;
                Ok(Some(SecretBytes(pkcs8.to_vec())))
            }
        }
    };
    if matches!(family, Family::Rsa(_)) {
        super::crypto::blocking(generate)
    } else {
        generate()
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CreateKeyInput {
    description: Option<String>,
    key_usage: Option<String>,
    key_spec: Option<String>,
    customer_master_key_spec: Option<String>,
    origin: Option<String>,
    multi_region: Option<bool>,
    policy: Option<String>,
    bypass_policy_lockout_safety_check: Option<bool>,
    custom_key_store_id: Option<String>,
    xks_key_id: Option<String>,
    tags: Option<Vec<TagInput>>,
}

/// The spec, usage and origin of a CreateKey request, checked as AWS checks them.
fn kind_of(input: &CreateKeyInput) -> Result<(&'static keyspec::Spec, String, String), OpError> {
    let spec_name = input
        .key_spec
        .clone()
        .or_else(|| input.customer_master_key_spec.clone())
        .unwrap_or_else(|| "SYMMETRIC_DEFAULT".into());
    let Some(spec) = keyspec::find(&spec_name) else {
        return Err(enum_error(&spec_name, "keySpec", &keyspec::names()).into());
    };
    if let Some(u) = &input.key_usage
        && !KEY_USAGES.contains(&u.as_str())
    {
        return Err(enum_error(u, "keyUsage", KEY_USAGES).into());
    }
    let origin = input.origin.clone().unwrap_or_else(|| "AWS_KMS".into());
    if !ORIGINS.contains(&origin.as_str()) {
        return Err(enum_error(&origin, "origin", ORIGINS).into());
    }
    let unsupported = |what: String| -> OpError {
        KmsError::new(
            KmsErrorCode::UnsupportedOperationException,
            format!("{what} is not supported by this appliance yet."),
        )
        .into()
    };
    let usage = match &input.key_usage {
        Some(u) => u.clone(),
        None if spec.family == Family::Symmetric => "ENCRYPT_DECRYPT".into(),
        None => {
            return Err(KmsError::validation(
                "You must specify a KeyUsage value for all KMS keys except for symmetric \
                 encryption keys.",
            )
            .into());
        }
    };
    if spec.family == Family::Sm2 {
        return Err(KmsError::new(
            KmsErrorCode::UnsupportedOperationException,
            "KeySpec SM2 is available only in the AWS China Regions.",
        )
        .into());
    }
    if !spec.usages.contains(&usage.as_str()) {
        return Err(KmsError::validation(format!(
            "KeyUsage {usage} is not compatible with KeySpec {spec_name}"
        ))
        .into());
    }
    if !spec.supported_usages.contains(&usage.as_str()) {
        return Err(unsupported(format!(
            "KeySpec {spec_name} with KeyUsage {usage}"
        )));
    }
    if origin == "EXTERNAL" {
        super::import::external_spec(spec)?;
    } else if origin != "AWS_KMS" {
        return Err(unsupported(format!("Origin {origin}")));
    }
    if input.custom_key_store_id.is_some() || input.xks_key_id.is_some() {
        return Err(unsupported("A custom key store".into()));
    }
    Ok((spec, usage, origin))
}

pub(crate) fn create_key(ctx: &Ctx<'_>, body: &[u8]) -> OpResult {
    create_key_with(ctx, body, None)
}

/// CreateKey, for a key an external key store uses when `xks` is given (`EkmsCreateXksKey`,
/// which has authorized the caller; the answer then also carries the `KeyId` alone).
pub(crate) fn create_key_with(
    ctx: &Ctx<'_>,
    body: &[u8],
    xks: Option<crate::xks::XksBinding>,
) -> OpResult {
    let input: CreateKeyInput = parse(body)?;
    // CreateKey names no key: the caller's identity policies decide, with the request's tags.
    if let Some(tags) = &input.tags {
        ctx.condition_tags(tags.iter().filter_map(super::tags::TagInput::pair));
    }
    ctx.authorize_account()?;
    super::tags::authorize_new_tags(ctx, input.tags.as_deref())?;
    let (spec, usage, origin) = kind_of(&input)?;
    if let Some(doc) = &input.policy {
        crate::policy::check(doc).map_err(|e| super::key_policy::policy_error(&e))?;
    }
    let description = input.description.unwrap_or_default();
    if description.len() > MAX_DESCRIPTION {
        return Err(too_long(&description, "description", MAX_DESCRIPTION).into());
    }
    let mut tags = Vec::new();
    if let Some(new) = input.tags {
        apply_tags(&mut tags, new)?;
    }
    let mut id = [0u8; 16];
    rand::fill(&mut id).map_err(EnclaveError::from)?;
    // A multi-Region key's id is a version-8 UUID, written `mrk-…` (see `plan::key_id_bytes`).
    let multi_region = input.multi_region == Some(true);
    let key_id = plan::key_id_of(
        *if multi_region {
            uuid::Builder::from_custom_bytes(id)
        } else {
            uuid::Builder::from_random_bytes(id)
        }
        .into_uuid()
        .as_bytes(),
    );
    // An EXTERNAL key has no material until one is imported (version 0 is none).
    let external = origin == "EXTERNAL";
    let mut materials = Vec::new();
    if !external {
        let mut material = new_material(1)?;
        material.private = private_material(spec.family)?;
        if let (Some(private), false) = (
            &material.private,
            matches!(spec.family, Family::Symmetric | Family::Hmac(_)),
        ) {
            material.public = Some(asymmetric::public_key(spec.family, &private.0)?);
        }
        materials.push(material);
    }
    let mut rec = KeyRecord {
        key_id,
        account: ctx.core.config.account.clone(),
        region: ctx.region.clone(),
        created_ms: ctx.now_ms,
        description,
        state: if external {
            KeyState::PendingImport
        } else {
            KeyState::Enabled
        },
        deletion_ms: None,
        spec: spec.name.to_owned(),
        usage,
        origin,
        policy: input.policy,
        tags,
        materials,
        current: u32::from(!external),
        retired: crate::material::Retired::default(),
        rotation: None,
        on_demand_rotations: 0,
        usage_tracked: true,
        imports: Vec::new(),
        xks,
        multi_region: multi_region.then(|| crate::replica::MultiRegion {
            primary: ctx.region.clone(),
            replicas: std::collections::BTreeMap::new(),
        }),
        generation: 0,
        opened: None,
    };
    if let Some(doc) = rec.policy.clone() {
        ctx.lockout_check(
            &rec,
            &doc,
            input.bypass_policy_lockout_safety_check == Some(true),
        )?;
    }
    let write = ctx.put_key(&mut rec)?;
    let mut out = json!({ "KeyMetadata": key_metadata(&rec) });
    if let Some(b) = &rec.xks {
        super::set(&mut out, "KeyId", json!(rec.key_id));
        super::set(&mut out, "UriPrefix", json!(b.prefix));
        super::set(&mut out, "XksKeyUsage", json!(b.usage()));
    }
    reply(&out, vec![write])
}

pub(crate) fn describe_key(ctx: &Ctx<'_>, body: &[u8]) -> OpResult {
    let input: KeyIdInput = parse(body)?;
    let rec = ctx.resolve(input.key_id()?)?;
    reply(&json!({ "KeyMetadata": key_metadata(&rec) }), vec![])
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct PageInput {
    pub(crate) limit: Option<i64>,
    pub(crate) marker: Option<String>,
    pub(crate) key_id: Option<String>,
}

/// Validates `Limit` and `Marker` of a list operation.
pub(crate) fn check_page(input: &PageInput, max: i64) -> Result<(), KmsError> {
    if let Some(limit) = input.limit
        && !(1..=max).contains(&limit)
    {
        return Err(out_of_range(limit, "limit", 1, max));
    }
    if let Some(marker) = &input.marker
        && plan::decode_marker(marker).is_none()
    {
        return Err(KmsError::new(
            KmsErrorCode::InvalidMarkerException,
            "Marker is invalid",
        ));
    }
    Ok(())
}

/// The page size of a list operation (validated by [`check_page`] first).
pub(crate) fn page_limit(limit: Option<i64>, default: usize) -> usize {
    limit
        .and_then(|l| usize::try_from(l).ok())
        .unwrap_or(default)
}

pub(crate) fn list_keys(ctx: &Ctx<'_>, body: &[u8]) -> OpResult {
    let input: PageInput = parse(body)?;
    check_page(&input, 1000)?;
    let after = match input.marker.as_deref().and_then(plan::decode_marker) {
        Some(m) => match RecordId::key(&m) {
            Some(id) => Some(id),
            None => {
                return Err(KmsError::new(
                    KmsErrorCode::InvalidMarkerException,
                    "Marker is invalid",
                )
                .into());
            }
        },
        None => None,
    };
    // The page is what the state view says it is: every live key in order, each shown by the
    // host as its current record. A hidden, added or stale key is refused.
    let (ids, more) = ctx
        .core
        .ledger()
        .map_err(OpError::from)?
        .key_page(after.as_ref(), page_limit(input.limit, plan::DEFAULT_LIMIT));
    let mut keys = Vec::with_capacity(ids.len());
    for id in &ids {
        let name = key_name(*id);
        // A key past its deletion date is gone, whether or not it has been swept.
        if ctx.key_by_id(&name)?.is_some() {
            keys.push(json!({ "KeyId": name, "KeyArn": ctx.key_arn(&name) }));
        }
    }
    let mut out = json!({ "Keys": keys, "Truncated": more });
    if more && let Some(last) = ids.last() {
        super::set(
            &mut out,
            "NextMarker",
            json!(plan::encode_marker(&key_name(*last))),
        );
    }
    reply(&out, vec![])
}

fn set_state(ctx: &Ctx<'_>, body: &[u8], enable: bool) -> OpResult {
    let input: KeyIdInput = parse(body)?;
    let mut rec = ctx.resolve_key_only(input.key_id()?)?;
    require_not_pending(ctx, &rec)?;
    if rec.state == KeyState::PendingImport {
        return Err(super::import::pending_import(ctx, &rec).into());
    }
    let target = if enable {
        KeyState::Enabled
    } else {
        KeyState::Disabled
    };
    if rec.state == target {
        return reply(&json!({}), vec![]);
    }
    rec.state = target;
    let write = ctx.put_key(&mut rec)?;
    reply(&json!({}), vec![write])
}

pub(crate) fn enable_key(ctx: &Ctx<'_>, body: &[u8]) -> OpResult {
    set_state(ctx, body, true)
}

pub(crate) fn disable_key(ctx: &Ctx<'_>, body: &[u8]) -> OpResult {
    set_state(ctx, body, false)
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ScheduleInput {
    key_id: Option<String>,
    pending_window_in_days: Option<i64>,
}

pub(crate) fn schedule_key_deletion(ctx: &Ctx<'_>, body: &[u8]) -> OpResult {
    let input: ScheduleInput = parse(body)?;
    let key_id = input
        .key_id
        .as_deref()
        .ok_or_else(|| KmsError::required("keyId"))?;
    let days = input.pending_window_in_days.unwrap_or(30);
    if !(7..=30).contains(&days) {
        return Err(out_of_range(days, "pendingWindowInDays", 7, 30).into());
    }
    let mut rec = ctx.resolve_key_only(key_id)?;
    require_not_pending(ctx, &rec)?;
    // A multi-Region primary goes after its replicas (AWS holds it in PendingReplicaDeletion
    // meanwhile): its replicas must be pending deletion already, and its own date is no
    // earlier than their last.
    let mut deletion = ctx.now_ms + days * 86_400_000;
    if let Some(m) = rec
        .multi_region
        .as_ref()
        .filter(|m| m.primary == rec.region)
    {
        if m.replicas
            .values()
            .any(|r| r.state != KeyState::PendingDeletion)
        {
            return Err(KmsError::new(
                KmsErrorCode::UnsupportedOperationException,
                format!(
                    "{} is a multi-region primary key with replicas: schedule the deletion of \
                     its replicas first, or make another region the primary \
                     (UpdatePrimaryRegion).",
                    rec.arn()
                ),
            )
            .into());
        }
        deletion = m
            .replicas
            .values()
            .filter_map(|r| r.deletion_ms)
            .fold(deletion, i64::max);
    }
    rec.state = KeyState::PendingDeletion;
    rec.deletion_ms = Some(deletion);
    let write = ctx.put_key(&mut rec)?;
    reply(
        &json!({
            "KeyId": ctx.key_arn(&rec.key_id),
            "DeletionDate": seconds(deletion),
            "KeyState": "PendingDeletion",
            "PendingWindowInDays": days,
        }),
        vec![write],
    )
}

pub(crate) fn cancel_key_deletion(ctx: &Ctx<'_>, body: &[u8]) -> OpResult {
    let input: KeyIdInput = parse(body)?;
    let mut rec = ctx.resolve_key_only(input.key_id()?)?;
    if rec.state != KeyState::PendingDeletion {
        return Err(KmsError::new(
            KmsErrorCode::KMSInvalidStateException,
            format!("{} is not pending deletion.", ctx.key_arn(&rec.key_id)),
        )
        .into());
    }
    rec.state = if rec.current_material().is_some() {
        KeyState::Disabled
    } else {
        KeyState::PendingImport
    };
    rec.deletion_ms = None;
    let write = ctx.put_key(&mut rec)?;
    reply(&json!({ "KeyId": ctx.key_arn(&rec.key_id) }), vec![write])
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DescriptionInput {
    key_id: Option<String>,
    description: Option<String>,
}

pub(crate) fn update_key_description(ctx: &Ctx<'_>, body: &[u8]) -> OpResult {
    let input: DescriptionInput = parse(body)?;
    let key_id = input
        .key_id
        .as_deref()
        .ok_or_else(|| KmsError::required("keyId"))?;
    let description = input
        .description
        .ok_or_else(|| KmsError::required("description"))?;
    if description.len() > MAX_DESCRIPTION {
        return Err(too_long(&description, "description", MAX_DESCRIPTION).into());
    }
    let mut rec = ctx.resolve_key_only(key_id)?;
    require_not_pending(ctx, &rec)?;
    rec.description = description;
    let write = ctx.put_key(&mut rec)?;
    reply(&json!({}), vec![write])
}
