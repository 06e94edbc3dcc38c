//! GetKeyPolicy, PutKeyPolicy, ListKeyPolicies: the key policy document, checked against AWS's
//! grammar, kept verbatim in the sealed key record.

use ekms_wire::msg::KmsErrorCode;
use serde::Deserialize;
use serde_json::json;

use super::{Ctx, OpError, OpResult, parse, reply, require_not_pending};
use crate::{
    KmsError,
    policy::{self, PolicyError},
};

/// The one policy name AWS has.
const DEFAULT: &str = "default";

/// AWS's error for a document that is not a key policy.
pub(crate) fn policy_error(e: &PolicyError) -> KmsError {
    match e {
        PolicyError::Malformed(why) => {
            KmsError::new(KmsErrorCode::MalformedPolicyDocumentException, why.clone())
        }
        PolicyError::TooLarge => KmsError::new(
            KmsErrorCode::LimitExceededException,
            format!(
                "The key policy exceeds the maximum size of {} bytes.",
                policy::MAX_POLICY
            ),
        ),
    }
}

/// The stored policy of a key record (AWS's default for keys made without one).
pub(crate) fn policy_of(ctx: &Ctx<'_>, policy: Option<&str>) -> String {
    policy.map_or_else(
        || policy::default_policy(&ctx.core.config.account),
        str::to_owned,
    )
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Input {
    key_id: Option<String>,
    policy_name: Option<String>,
    policy: Option<String>,
    bypass_policy_lockout_safety_check: Option<bool>,
    limit: Option<i64>,
    marker: Option<String>,
}

fn name_ok(name: Option<&str>) -> Result<(), KmsError> {
    match name {
        None | Some(DEFAULT) => Ok(()),
        Some(other) if other.is_empty() || other.len() > 128 => Err(KmsError::validation(format!(
            "1 validation error detected: Value '{other}' at 'policyName' failed to satisfy constraint: Member must have length between 1 and 128"
        ))),
        Some(_) => Err(KmsError::new(
            KmsErrorCode::NotFoundException,
            "No such policy exists",
        )),
    }
}

fn key_id(input: &Input) -> Result<&str, KmsError> {
    input
        .key_id
        .as_deref()
        .ok_or_else(|| KmsError::required("keyId"))
}

pub(crate) fn get_key_policy(ctx: &Ctx<'_>, body: &[u8]) -> OpResult {
    let input: Input = parse(body)?;
    let key = ctx.resolve_key_only(key_id(&input)?)?;
    name_ok(input.policy_name.as_deref())?;
    reply(
        &json!({
            "Policy": policy_of(ctx, key.policy.as_deref()),
            "PolicyName": DEFAULT,
        }),
        vec![],
    )
}

pub(crate) fn put_key_policy(ctx: &Ctx<'_>, body: &[u8]) -> OpResult {
    let input: Input = parse(body)?;
    let id = key_id(&input)?;
    let doc = input
        .policy
        .as_deref()
        .ok_or_else(|| KmsError::required("policy"))?;
    name_ok(input.policy_name.as_deref())?;
    policy::check(doc).map_err(|e| policy_error(&e))?;
    let mut rec = ctx.resolve_key_only(id)?;
    require_not_pending(ctx, &rec)?;
    ctx.lockout_check(
        &rec,
        doc,
        input.bypass_policy_lockout_safety_check == Some(true),
    )?;
    rec.policy = Some(doc.to_owned());
    let write = ctx.put_key(&mut rec)?;
    reply(&json!({}), vec![write])
}

pub(crate) fn list_key_policies(ctx: &Ctx<'_>, body: &[u8]) -> OpResult {
    let input: Input = parse(body)?;
    if let Some(l) = input.limit
        && !(1..=1000).contains(&l)
    {
        return Err(OpError::from(super::out_of_range(l, "limit", 1, 1000)));
    }
    let _ = input.marker;
    ctx.resolve_key_only(key_id(&input)?)?;
    reply(
        &json!({ "PolicyNames": [DEFAULT], "Truncated": false }),
        vec![],
    )
}
