//! Key material rotation: EnableKeyRotation, DisableKeyRotation, GetKeyRotationStatus,
//! RotateKeyOnDemand, ListKeyRotations, and the automatic rotations this enclave decides by its
//! own clock when the host asks ([`rotate_due`]). The host can delay a rotation, never make one.
//!
//! A rotation completes within the call that makes it (one sealed write), so
//! `OnDemandRotationStartDate` never appears: no rotation is ever in progress.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use ekms_wire::{
    msg::{KmsErrorCode, SealedBlob, StoreWrite},
    plan,
};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{
    Ctx, KeyIdInput, OpResult, enum_error, key_write, out_of_range, parse, reply, require_enabled,
};
use crate::{
    Core, EnclaveError, KmsError,
    domain::Keyring,
    ledger::RecordId,
    material::{RotationType, Schedule},
    ops::keys::{check_page, new_material, page_limit, seconds},
    record::{self, KeyRecord, KeyState, Kind},
};

/// AWS's rotation limits (API reference, `RotationPeriodInDaysType`, and the developer guide's
/// quota of on-demand rotations: 25 today; older pages said 10).
pub(crate) struct Limits {
    /// Shortest automatic rotation period.
    pub(crate) min_period_days: i64,
    /// Longest automatic rotation period.
    pub(crate) max_period_days: i64,
    /// Period when EnableKeyRotation names none.
    pub(crate) default_period_days: i64,
    /// On-demand rotations per key.
    pub(crate) max_on_demand: u32,
    /// ListKeyRotations page size when `Limit` is absent, and its largest value.
    pub(crate) default_list_limit: usize,
    /// Largest `Limit` of ListKeyRotations.
    pub(crate) max_list_limit: i64,
    /// Keys one `RotateDue` request may rotate.
    pub(crate) max_due_per_request: usize,
}

/// The limits in force.
pub(crate) const LIMITS: Limits = Limits {
    min_period_days: 90,
    max_period_days: 2560,
    default_period_days: 365,
    max_on_demand: 25,
    default_list_limit: 100,
    max_list_limit: 1000,
    max_due_per_request: 100,
};

/// AWS's `IncludeKeyMaterial` values.
const INCLUDE_KEY_MATERIAL: &[&str] = &["ALL_KEY_MATERIAL", "ROTATIONS_ONLY"];

/// AWS's error for rotating a key that is not a symmetric encryption key (recorded with an
/// empty message).
fn not_symmetric(key: &KeyRecord) -> Result<(), KmsError> {
    if key.spec == "SYMMETRIC_DEFAULT" {
        return Ok(());
    }
    Err(KmsError::new(
        KmsErrorCode::UnsupportedOperationException,
        "",
    ))
}

/// AWS's error for automatic rotation of a key whose material KMS did not generate.
fn not_generated(ctx: &Ctx<'_>, key: &KeyRecord) -> Result<(), KmsError> {
    if key.origin == "AWS_KMS" {
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

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct EnableInput {
    key_id: Option<String>,
    rotation_period_in_days: Option<i64>,
}

pub(crate) fn enable_key_rotation(ctx: &Ctx<'_>, body: &[u8]) -> OpResult {
    let input: EnableInput = parse(body)?;
    let key_id = input
        .key_id
        .as_deref()
        .ok_or_else(|| KmsError::required("keyId"))?;
    let days = input
        .rotation_period_in_days
        .unwrap_or(LIMITS.default_period_days);
    if !(LIMITS.min_period_days..=LIMITS.max_period_days).contains(&days) {
        return Err(out_of_range(
            days,
            "rotationPeriodInDays",
            LIMITS.min_period_days,
            LIMITS.max_period_days,
        )
        .into());
    }
    // The effective period, so that a Deny on larger periods also applies to the default.
    ctx.condition("kms:RotationPeriodInDays", vec![days.to_string()]);
    let mut key = ctx.resolve_key_only(key_id)?;
    // A multi-Region key rotates as a set, managed from its primary.
    if super::multi_region::is_replica(&key) {
        return Err(super::multi_region::not_primary(&key).into());
    }
    not_symmetric(&key)?;
    not_generated(ctx, &key)?;
    require_enabled(ctx, &key)?;
    let period_days = u16::try_from(days).map_err(|_| KmsError::internal())?;
    // Enabling starts the period now; a new period on an enabled key runs from the same start
    // (the enabling or the last automatic rotation), and if that is past, the key is due.
    let anchor_ms = key.rotation.map_or(ctx.now_ms, |s| s.anchor_ms);
    let schedule = Schedule {
        period_days,
        anchor_ms,
    };
    if key.rotation == Some(schedule) {
        return reply(&json!({}), vec![]);
    }
    key.rotation = Some(schedule);
    let write = ctx.put_key(&mut key)?;
    reply(&json!({}), vec![write])
}

pub(crate) fn disable_key_rotation(ctx: &Ctx<'_>, body: &[u8]) -> OpResult {
    let input: KeyIdInput = parse(body)?;
    let mut key = ctx.resolve_key_only(input.key_id()?)?;
    // A multi-Region key rotates as a set, managed from its primary.
    if super::multi_region::is_replica(&key) {
        return Err(super::multi_region::not_primary(&key).into());
    }
    not_symmetric(&key)?;
    not_generated(ctx, &key)?;
    require_enabled(ctx, &key)?;
    if key.rotation.is_none() {
        return reply(&json!({}), vec![]);
    }
    key.rotation = None;
    let write = ctx.put_key(&mut key)?;
    reply(&json!({}), vec![write])
}

pub(crate) fn get_key_rotation_status(ctx: &Ctx<'_>, body: &[u8]) -> OpResult {
    let input: KeyIdInput = parse(body)?;
    let key = ctx.resolve_key_only(input.key_id()?)?;
    not_symmetric(&key)?;
    let mut out = json!({
        "KeyId": ctx.key_arn(&key.key_id),
        "KeyRotationEnabled": false,
    });
    // A key pending deletion reports rotation off (and is not rotated); cancelling the
    // deletion brings the schedule back, as in AWS.
    if let (Some(s), false) = (key.rotation, key.state == KeyState::PendingDeletion) {
        super::set(&mut out, "KeyRotationEnabled", json!(true));
        super::set(&mut out, "RotationPeriodInDays", json!(s.period_days));
        super::set(&mut out, "NextRotationDate", json!(seconds(s.next_ms())));
    }
    reply(&out, vec![])
}

pub(crate) fn rotate_key_on_demand(ctx: &Ctx<'_>, body: &[u8]) -> OpResult {
    let input: KeyIdInput = parse(body)?;
    let mut key = ctx.resolve_key_only(input.key_id()?)?;
    // A multi-Region key rotates as a set, managed from its primary.
    if super::multi_region::is_replica(&key) {
        return Err(super::multi_region::not_primary(&key).into());
    }
    not_symmetric(&key)?;
    require_enabled(ctx, &key)?;
    if key.on_demand_rotations >= LIMITS.max_on_demand {
        return Err(KmsError::new(
            KmsErrorCode::LimitExceededException,
            format!(
                "The on-demand rotations limit has been reached for the given keyId. No more \
                 on-demand rotations can be performed for this key: {}",
                ctx.key_arn(&key.key_id)
            ),
        )
        .into());
    }
    if key.origin == "AWS_KMS" {
        let version = key
            .latest_version()
            .checked_add(1)
            .ok_or_else(KmsError::internal)?;
        key.rotate_to(new_material(version)?, ctx.now_ms, RotationType::OnDemand)?;
    } else {
        // Imported material rotates only to material imported for it (NEW_KEY_MATERIAL).
        super::import::rotate_to_pending(ctx, &mut key)?;
    }
    key.on_demand_rotations = key.on_demand_rotations.saturating_add(1);
    let write = ctx.put_key(&mut key)?;
    reply(&json!({ "KeyId": ctx.key_arn(&key.key_id) }), vec![write])
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ListInput {
    key_id: Option<String>,
    include_key_material: Option<String>,
    limit: Option<i64>,
    marker: Option<String>,
}

/// One material as ListKeyRotations shows it.
struct Entry {
    version: u32,
    id: String,
    rotated: Option<crate::material::Rotated>,
}

pub(crate) fn list_key_rotations(ctx: &Ctx<'_>, body: &[u8]) -> OpResult {
    let input: ListInput = parse(body)?;
    let key_id = input
        .key_id
        .as_deref()
        .ok_or_else(|| KmsError::required("keyId"))?;
    let all = match input.include_key_material.as_deref() {
        None | Some("ROTATIONS_ONLY") => false,
        Some("ALL_KEY_MATERIAL") => true,
        Some(other) => {
            return Err(enum_error(other, "includeKeyMaterial", INCLUDE_KEY_MATERIAL).into());
        }
    };
    check_page(
        &super::keys::PageInput {
            limit: input.limit,
            marker: input.marker.clone(),
            key_id: None,
        },
        LIMITS.max_list_limit,
    )?;
    let after = match input.marker.as_deref().and_then(plan::decode_marker) {
        Some(m) => Some(m.parse::<u32>().map_err(|_| {
            KmsError::new(KmsErrorCode::InvalidMarkerException, "Marker is invalid")
        })?),
        None => None,
    };
    let key = ctx.resolve_key_only(key_id)?;
    not_symmetric(&key)?;
    // Oldest first: the retired materials (kept in order), then those the record holds.
    let mut entries = Vec::with_capacity(key.retired.len() + key.materials.len());
    for info in key.retired.infos() {
        let info = info.ok_or_else(KmsError::internal)?;
        entries.push(Entry {
            version: info.version,
            id: info.id,
            rotated: info.rotated,
        });
    }
    let mut held: Vec<&crate::record::Material> = key.materials.iter().collect();
    held.sort_by_key(|m| m.version);
    entries.extend(held.into_iter().map(|m| Entry {
        version: m.version,
        id: m.id.clone(),
        rotated: m.rotated,
    }));
    let limit = page_limit(input.limit, LIMITS.default_list_limit);
    let mut shown = entries
        .iter()
        .filter(|e| all || e.rotated.is_some())
        .filter(|e| after.is_none_or(|a| e.version > a));
    let page: Vec<&Entry> = shown.by_ref().take(limit).collect();
    let more = shown.next().is_some();
    let rotations: Vec<Value> = page
        .iter()
        .map(|e| {
            let mut v = json!({
                "KeyId": key.key_id,
                "KeyMaterialId": e.id,
                "KeyMaterialState": if e.version == key.current { "CURRENT" } else { "NON_CURRENT" },
            });
            if let Some(r) = e.rotated {
                super::set(&mut v, "RotationDate", json!(seconds(r.ms)));
                super::set(&mut v, "RotationType", json!(r.kind.as_str()));
            }
            v
        })
        .collect();
    let mut out = json!({ "Rotations": rotations, "Truncated": more });
    if more && let Some(last) = page.last() {
        super::set(
            &mut out,
            "NextMarker",
            json!(plan::encode_marker(&last.version.to_string())),
        );
    }
    reply(&out, vec![])
}

/// Whether `key` is due for automatic rotation at `now_ms`, by its sealed schedule: enabled
/// rotation, an enabled key (a disabled one resumes when re-enabled), material KMS generated.
pub(crate) fn is_due(key: &KeyRecord, now_ms: i64) -> bool {
    key.state == KeyState::Enabled
        && key.spec == "SYMMETRIC_DEFAULT"
        && key.origin == "AWS_KMS"
        && key.rotation.is_some_and(|s| s.next_ms() <= now_ms)
}

/// The automatic rotations due among `candidates` by this enclave's clock `now`: each due key's
/// next version, sealed, and the token that commits them. Keys not due, not current, not this
/// domain's, or named twice are left alone; so a host can delay a rotation, never cause one.
pub(crate) fn rotate_due(
    core: &Core,
    keys: &Keyring,
    candidates: &[SealedBlob],
    now: DateTime<Utc>,
) -> Result<(Vec<StoreWrite>, u64), EnclaveError> {
    let now_ms = now.timestamp_millis();
    let mut writes = Vec::new();
    let mut changes = Vec::new();
    let mut seen = HashSet::new();
    for sealed in candidates.iter().take(LIMITS.max_due_per_request) {
        let Ok(mut rec) = record::open::<KeyRecord>(keys, Kind::Key, None, &sealed.0) else {
            continue;
        };
        let Some(id) = RecordId::key(&rec.key_id) else {
            continue;
        };
        let Ok(version) = core.ledger()?.check(&id, rec.generation, &sealed.0) else {
            continue;
        };
        if !is_due(&rec, now_ms) || !seen.insert(rec.key_id.clone()) {
            continue;
        }
        rec.opened = Some(version);
        let next = rec
            .latest_version()
            .checked_add(1)
            .ok_or(EnclaveError::Encoding)?;
        rec.rotate_to(new_material(next)?, now_ms, RotationType::Automatic)?;
        if let Some(s) = rec.rotation.as_mut() {
            s.anchor_ms = now_ms;
        }
        let (w, c) = key_write(core, keys, &mut rec)?;
        writes.push(w);
        changes.push(c);
    }
    if changes.is_empty() {
        return Ok((writes, 0));
    }
    let token = core.ledger()?.prepare(changes);
    Ok((writes, token))
}
