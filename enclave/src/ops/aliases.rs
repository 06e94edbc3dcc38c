//! Aliases: CreateAlias, UpdateAlias, DeleteAlias, ListAliases. Alias records are sealed too,
//! so the host cannot point an alias at another key.

use ekms_wire::{
    msg::KmsErrorCode,
    plan::{self, KeyRef, parse_key_ref},
    region,
};
use serde::Deserialize;
use serde_json::json;

use super::{
    Ctx, OpResult,
    keys::{PageInput, check_page, page_limit, seconds},
    parse, reply, require_not_pending,
};
use crate::{KmsError, ledger::RecordId, record::AliasRecord};

const ALIAS_PREFIX_MSG: &str = "Alias must start with the prefix \"alias/\". Please see https://docs.aws.amazon.com/kms/latest/developerguide/kms-alias.html";

fn check_name(name: &str) -> Result<(), KmsError> {
    if name.is_empty() || name.len() > 256 {
        return Err(KmsError::validation(format!(
            "1 validation error detected: Value '{name}' at 'aliasName' failed to satisfy constraint: Member must have length less than or equal to 256"
        )));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b':' | b'/' | b'_' | b'-'))
    {
        return Err(KmsError::validation(format!(
            "1 validation error detected: Value '{name}' at 'aliasName' failed to satisfy constraint: Member must satisfy regular expression pattern: ^[a-zA-Z0-9:/_-]+$"
        )));
    }
    if !name.starts_with("alias/") || name.len() == "alias/".len() {
        return Err(KmsError::validation(ALIAS_PREFIX_MSG));
    }
    if name.starts_with("alias/aws/") {
        return Err(KmsError::new(
            KmsErrorCode::InvalidAliasNameException,
            format!("{name} is reserved for AWS managed keys."),
        ));
    }
    Ok(())
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct AliasInput {
    alias_name: Option<String>,
    target_key_id: Option<String>,
}

fn target(ctx: &Ctx<'_>, target_key_id: &str) -> Result<crate::record::KeyRecord, super::OpError> {
    // An alias must point at a key id or key ARN, never at another alias.
    if matches!(parse_key_ref(target_key_id), Some(KeyRef::Alias(_))) {
        return Err(KmsError::validation("Aliases must refer to keys. Not aliases").into());
    }
    let rec = ctx.resolve_key_only(target_key_id)?;
    require_not_pending(ctx, &rec)?;
    Ok(rec)
}

pub(crate) fn create_alias(ctx: &Ctx<'_>, body: &[u8]) -> OpResult {
    let input: AliasInput = parse(body)?;
    let name = input
        .alias_name
        .ok_or_else(|| KmsError::required("aliasName"))?;
    let target_id = input
        .target_key_id
        .ok_or_else(|| KmsError::required("targetKeyId"))?;
    check_name(&name)?;
    let key = target(ctx, &target_id)?;
    if ctx.alias(&name)?.is_some() {
        return Err(KmsError::new(
            KmsErrorCode::AlreadyExistsException,
            format!(
                "An alias with the name {} already exists",
                ctx.alias_arn(&name)
            ),
        )
        .into());
    }
    let mut rec = AliasRecord {
        name: ctx.alias_record_name(&name),
        target: key.key_id,
        created_ms: ctx.now_ms,
        updated_ms: ctx.now_ms,
        generation: 0,
        opened: None,
    };
    let write = ctx.put_alias(&mut rec)?;
    reply(&json!({}), vec![write])
}

fn existing(ctx: &Ctx<'_>, name: &str) -> Result<AliasRecord, super::OpError> {
    ctx.alias(name)?.ok_or_else(|| {
        KmsError::new(
            KmsErrorCode::NotFoundException,
            format!("Alias {} is not found.", ctx.alias_arn(name)),
        )
        .into()
    })
}

pub(crate) fn update_alias(ctx: &Ctx<'_>, body: &[u8]) -> OpResult {
    let input: AliasInput = parse(body)?;
    let name = input
        .alias_name
        .ok_or_else(|| KmsError::required("aliasName"))?;
    let target_id = input
        .target_key_id
        .ok_or_else(|| KmsError::required("targetKeyId"))?;
    check_name(&name)?;
    let mut rec = existing(ctx, &name)?;
    let key = target(ctx, &target_id)?;
    rec.target = key.key_id;
    rec.updated_ms = ctx.now_ms;
    let write = ctx.put_alias(&mut rec)?;
    reply(&json!({}), vec![write])
}

pub(crate) fn delete_alias(ctx: &Ctx<'_>, body: &[u8]) -> OpResult {
    let input: AliasInput = parse(body)?;
    let name = input
        .alias_name
        .ok_or_else(|| KmsError::required("aliasName"))?;
    check_name(&name)?;
    let rec = existing(ctx, &name)?;
    let write = ctx.delete_alias(&rec)?;
    reply(&json!({}), vec![write])
}

pub(crate) fn list_aliases(ctx: &Ctx<'_>, body: &[u8]) -> OpResult {
    let input: PageInput = parse(body)?;
    check_page(&input, 100)?;
    let filter = match input.key_id.as_deref() {
        Some(k) => Some(ctx.resolve_key_only(k)?.key_id),
        None => None,
    };
    // Markers carry alias names; the state view orders the store's names of this region's
    // aliases (see `ekms_wire::region`).
    let after = input
        .marker
        .as_deref()
        .and_then(plan::decode_marker)
        .map(|a| ctx.alias_record_name(&a));
    let limit = page_limit(input.limit, plan::DEFAULT_ALIAS_LIMIT);
    // The page is what the state view says it is: the host can neither hide nor add an alias.
    let (names, more) = {
        let ledger = ctx.core.ledger().map_err(super::OpError::from)?;
        match filter
            .as_deref()
            .and_then(RecordId::key)
            .and_then(|r| r.key_bits())
        {
            Some(t) => ledger.aliases_of(t, after.as_deref(), limit),
            _ => ledger.alias_page(
                &region::alias_prefix(&ctx.core.config.region, &ctx.region),
                after.as_deref(),
                limit,
            ),
        }
    };
    let mut aliases = Vec::with_capacity(names.len());
    for name in &names {
        let a = ctx.listed_alias(name)?;
        let shown = region::alias_display(&a.name);
        aliases.push(json!({
            "AliasName": shown,
            "AliasArn": ctx.alias_arn(shown),
            "TargetKeyId": a.target,
            "CreationDate": seconds(a.created_ms),
            "LastUpdatedDate": seconds(a.updated_ms),
        }));
    }
    let mut out = json!({ "Aliases": aliases, "Truncated": more });
    if more && let Some(last) = names.last() {
        super::set(
            &mut out,
            "NextMarker",
            json!(plan::encode_marker(region::alias_display(last))),
        );
    }
    reply(&out, vec![])
}
