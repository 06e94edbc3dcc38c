//! Multi-Region keys: ReplicateKey, UpdatePrimaryRegion, and `MultiRegionConfiguration` in
//! DescribeKey. The set is one sealed record (see `replica`): a replica is made by the same
//! write that records it, with the primary's material, and can never diverge from it.

use ekms_wire::msg::KmsErrorCode;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Ctx, OpResult, parse, reply, tags::TagInput};
use crate::{KmsError, record::KeyRecord, replica::Replica};

/// `MultiRegion` details of a multi-Region key's metadata.
pub(crate) fn describe(r: &KeyRecord, m: &mut Value) {
    let Some(mr) = &r.multi_region else {
        return;
    };
    let mut replicas: Vec<&str> = r
        .regions()
        .into_iter()
        .filter(|region| *region != mr.primary)
        .collect();
    replicas.sort_unstable();
    super::set(
        m,
        "MultiRegionConfiguration",
        json!({
            "MultiRegionKeyType": if r.region == mr.primary { "PRIMARY" } else { "REPLICA" },
            "PrimaryKey": {"Arn": r.arn_in(&mr.primary), "Region": mr.primary},
            "ReplicaKeys": replicas
                .iter()
                .map(|region| json!({"Arn": r.arn_in(region), "Region": region}))
                .collect::<Vec<_>>(),
        }),
    );
}

/// AWS's refusal for an operation that needs the primary key of a multi-Region key.
pub(crate) fn not_primary(r: &KeyRecord) -> KmsError {
    KmsError::new(
        KmsErrorCode::UnsupportedOperationException,
        format!("{} is not a multi-region primary key.", r.arn()),
    )
}

/// Whether `r` is a multi-Region replica (not the primary).
pub(crate) fn is_replica(r: &KeyRecord) -> bool {
    r.multi_region
        .as_ref()
        .is_some_and(|m| m.primary != r.region)
}

fn primary(ctx: &Ctx<'_>, key_id: Option<&str>) -> Result<KeyRecord, super::OpError> {
    let rec = ctx.resolve_key_only(key_id.ok_or_else(|| KmsError::required("keyId"))?)?;
    match &rec.multi_region {
        Some(m) if m.primary == rec.region => Ok(rec),
        _ => Err(not_primary(&rec).into()),
    }
}

/// The region a request names, which this appliance must serve.
fn served_region(ctx: &Ctx<'_>, region: Option<&str>, field: &str) -> Result<String, KmsError> {
    let region = region.ok_or_else(|| KmsError::required(field))?;
    if !ctx.core.config.regions.allows(region) {
        return Err(KmsError::validation(format!(
            "1 validation error detected: Value '{region}' at '{field}' failed to satisfy \
             constraint: the region must be one this appliance serves"
        )));
    }
    Ok(region.to_owned())
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ReplicateInput {
    key_id: Option<String>,
    replica_region: Option<String>,
    policy: Option<String>,
    bypass_policy_lockout_safety_check: Option<bool>,
    description: Option<String>,
    tags: Option<Vec<TagInput>>,
}

/// `ReplicateKey`: a replica of the primary in another region, with its own policy,
/// description and tags.
pub(crate) fn replicate_key(ctx: &Ctx<'_>, body: &[u8]) -> OpResult {
    let input: ReplicateInput = parse(body)?;
    let mut rec = primary(ctx, input.key_id.as_deref())?;
    let region = served_region(ctx, input.replica_region.as_deref(), "replicaRegion")?;
    // As AWS: a replica is a new key (with a policy the caller chooses) in the other region, so
    // the caller's identity policies must also allow kms:CreateKey, not only the key's
    // kms:ReplicateKey.
    if let Some(tags) = &input.tags {
        ctx.condition_tags(tags.iter().filter_map(super::tags::TagInput::pair));
    }
    ctx.with_action("kms:CreateKey", || ctx.authorize_account())?;
    super::tags::authorize_new_tags(ctx, input.tags.as_deref())?;
    if rec.regions().contains(&region.as_str()) {
        return Err(KmsError::new(
            KmsErrorCode::AlreadyExistsException,
            format!("Key '{}' already exists", rec.arn_in(&region)),
        )
        .into());
    }
    if let Some(doc) = &input.policy {
        crate::policy::check(doc).map_err(|e| super::key_policy::policy_error(&e))?;
        ctx.lockout_check(
            &rec,
            doc,
            input.bypass_policy_lockout_safety_check == Some(true),
        )?;
    }
    let description = input.description.unwrap_or_default();
    if description.len() > super::keys::MAX_DESCRIPTION {
        return Err(KmsError::validation(
            "1 validation error detected: Value at 'description' failed to satisfy constraint: \
             Member must have length less than or equal to 8192",
        )
        .into());
    }
    let mut tags = Vec::new();
    if let Some(new) = input.tags {
        super::tags::apply_tags(&mut tags, new)?;
    }
    let policy_shown = input
        .policy
        .clone()
        .unwrap_or_else(|| crate::policy::default_policy(&ctx.core.config.account));
    rec.add_replica(
        &region,
        Replica::new(ctx.now_ms, description, input.policy, tags.clone()),
    );
    let write = ctx.put_key(&mut rec)?;
    rec.view_from(&region);
    reply(
        &json!({
            "ReplicaKeyMetadata": super::keys::key_metadata(&rec),
            "ReplicaPolicy": policy_shown,
            "ReplicaTags": tags
                .iter()
                .map(|t| json!({"TagKey": t.key, "TagValue": t.value}))
                .collect::<Vec<_>>(),
        }),
        vec![write],
    )
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct UpdatePrimaryInput {
    key_id: Option<String>,
    primary_region: Option<String>,
}

/// `UpdatePrimaryRegion`: a replica becomes the primary; the primary a replica.
pub(crate) fn update_primary_region(ctx: &Ctx<'_>, body: &[u8]) -> OpResult {
    let input: UpdatePrimaryInput = parse(body)?;
    let mut rec = primary(ctx, input.key_id.as_deref())?;
    let region = served_region(ctx, input.primary_region.as_deref(), "primaryRegion")?;
    if !rec.regions().contains(&region.as_str()) {
        return Err(KmsError::new(
            KmsErrorCode::NotFoundException,
            format!("Key '{}' does not exist", rec.arn_in(&region)),
        )
        .into());
    }
    if region == rec.region {
        return reply(&json!({}), vec![]);
    }
    if let Some(m) = rec.multi_region.as_mut() {
        m.primary = region;
    }
    let write = ctx.put_key(&mut rec)?;
    reply(&json!({}), vec![write])
}
