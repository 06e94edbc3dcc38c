//! Tags: TagResource, UntagResource, ListResourceTags. Tags live in the sealed key record.

use ekms_wire::{msg::KmsErrorCode, plan};
use serde::Deserialize;
use serde_json::json;

use super::{
    Ctx, KeyIdInput, OpResult,
    keys::{PageInput, check_page},
    parse, reply, require_not_pending, too_long,
};
use crate::{KmsError, record::Tag};

const MAX_TAGS: usize = 50;
const MAX_TAG_KEY: usize = 128;
const MAX_TAG_VALUE: usize = 256;

/// A tag as clients send it.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct TagInput {
    tag_key: Option<String>,
    tag_value: Option<String>,
}

impl TagInput {
    /// Its key and value, when both are given.
    pub(crate) fn pair(&self) -> Option<(&str, &str)> {
        Some((self.tag_key.as_deref()?, self.tag_value.as_deref()?))
    }
}

/// Validates `new` and merges it into `tags` (existing keys get the new value).
pub(crate) fn apply_tags(tags: &mut Vec<Tag>, new: Vec<TagInput>) -> Result<(), KmsError> {
    let mut checked: Vec<Tag> = Vec::with_capacity(new.len());
    for (i, t) in new.into_iter().enumerate() {
        let n = i + 1;
        let key = t
            .tag_key
            .ok_or_else(|| KmsError::required(&format!("tags.{n}.member.tagKey")))?;
        let value = t
            .tag_value
            .ok_or_else(|| KmsError::required(&format!("tags.{n}.member.tagValue")))?;
        if key.is_empty() || key.chars().count() > MAX_TAG_KEY {
            return Err(too_long(
                &key,
                &format!("tags.{n}.member.tagKey"),
                MAX_TAG_KEY,
            ));
        }
        if value.chars().count() > MAX_TAG_VALUE {
            return Err(too_long(
                &value,
                &format!("tags.{n}.member.tagValue"),
                MAX_TAG_VALUE,
            ));
        }
        if key.get(..4).is_some_and(|p| p.eq_ignore_ascii_case("aws:")) {
            return Err(KmsError::new(
                KmsErrorCode::TagException,
                "Tags beginning with aws: are reserved",
            ));
        }
        if checked.iter().any(|c| c.key == key) {
            return Err(KmsError::new(
                KmsErrorCode::TagException,
                "Duplicate tag keys",
            ));
        }
        checked.push(Tag { key, value });
    }
    let mut merged = tags.clone();
    for t in checked {
        match merged.iter_mut().find(|m| m.key == t.key) {
            Some(m) => m.value = t.value,
            None => merged.push(t),
        }
    }
    if merged.len() > MAX_TAGS {
        return Err(KmsError::new(KmsErrorCode::TagException, "Too many tags"));
    }
    *tags = merged;
    Ok(())
}

/// For an operation that makes a key and tags it (CreateKey, ReplicateKey): with tags, the
/// caller's identity policies must also allow `kms:TagResource` (AWS: "To use the Tags
/// parameter, you must have kms:TagResource permission in an IAM policy"), with the tags as
/// `aws:RequestTag` / `aws:TagKeys`.
pub(crate) fn authorize_new_tags(ctx: &Ctx<'_>, tags: Option<&[TagInput]>) -> Result<(), KmsError> {
    match tags {
        Some(tags) if !tags.is_empty() => {
            ctx.condition_tags(tags.iter().filter_map(TagInput::pair));
            ctx.with_action("kms:TagResource", || ctx.authorize_account())
        }
        _ => Ok(()),
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct TagResourceInput {
    key_id: Option<String>,
    tags: Option<Vec<TagInput>>,
}

pub(crate) fn tag_resource(ctx: &Ctx<'_>, body: &[u8]) -> OpResult {
    let input: TagResourceInput = parse(body)?;
    let key_id = input
        .key_id
        .as_deref()
        .ok_or_else(|| KmsError::required("keyId"))?;
    let tags = input.tags.ok_or_else(|| KmsError::required("tags"))?;
    ctx.condition_tags(tags.iter().filter_map(TagInput::pair));
    let mut rec = ctx.resolve_key_only(key_id)?;
    require_not_pending(ctx, &rec)?;
    apply_tags(&mut rec.tags, tags)?;
    let write = ctx.put_key(&mut rec)?;
    reply(&json!({}), vec![write])
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct UntagInput {
    key_id: Option<String>,
    tag_keys: Option<Vec<String>>,
}

pub(crate) fn untag_resource(ctx: &Ctx<'_>, body: &[u8]) -> OpResult {
    let input: UntagInput = parse(body)?;
    let key_id = input
        .key_id
        .as_deref()
        .ok_or_else(|| KmsError::required("keyId"))?;
    let keys = input
        .tag_keys
        .ok_or_else(|| KmsError::required("tagKeys"))?;
    ctx.condition("aws:TagKeys", keys.clone());
    let mut rec = ctx.resolve_key_only(key_id)?;
    require_not_pending(ctx, &rec)?;
    rec.tags.retain(|t| !keys.contains(&t.key));
    let write = ctx.put_key(&mut rec)?;
    reply(&json!({}), vec![write])
}

pub(crate) fn list_resource_tags(ctx: &Ctx<'_>, body: &[u8]) -> OpResult {
    let input: PageInput = parse(body)?;
    check_page(&input, 50)?;
    let key_id = KeyIdInput {
        key_id: input.key_id.clone(),
    };
    let rec = ctx.resolve_key_only(key_id.key_id()?)?;
    let start = input
        .marker
        .as_deref()
        .and_then(plan::decode_marker)
        .and_then(|m| m.parse::<usize>().ok())
        .unwrap_or(0);
    let limit = input
        .limit
        .and_then(|l| usize::try_from(l).ok())
        .unwrap_or(50);
    let page: Vec<_> = rec
        .tags
        .iter()
        .skip(start)
        .take(limit)
        .map(|t| json!({ "TagKey": t.key, "TagValue": t.value }))
        .collect();
    let end = start + page.len();
    let mut out = json!({ "Tags": page, "Truncated": end < rec.tags.len() });
    if end < rec.tags.len() {
        super::set(
            &mut out,
            "NextMarker",
            json!(plan::encode_marker(&end.to_string())),
        );
    }
    reply(&out, vec![])
}
