//! Appliance operations that set up external key stores (the XKS proxy API, `crate::xks`):
//! a URI prefix's credentials (at most two, so they can be rotated) and the keys it may use.
//! Each is a signed KMS-protocol call, authorized by the caller's identity policies
//! (`kms:EkmsCreateXksCredential`, …; the administrator may); a new secret reaches only the
//! caller's tool, encrypted to its one-off key under an attestation document, as a principal's
//! does.

use ekms_wire::{msg::KmsErrorCode, xks};
use serde::Deserialize;
use serde_json::json;

use super::{Ctx, OpError, OpResult, parse, principals, reply};
use crate::{
    KmsError,
    core::ceremony::{ALNUM, BASE32, random_string},
    principal::{AccessKey, MAX_ACCESS_KEYS, PrincipalRecord},
    record::PrincipalSecret,
    xks::XksBinding,
};

/// Length of an XKS secret access key (the specification allows 43 to 64 characters).
const SECRET_LEN: usize = 48;

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Input {
    uri_prefix: Option<String>,
    recipient_public_key: Option<String>,
    nonce: Option<String>,
    access_key_id: Option<String>,
    key_usage: Option<Vec<String>>,
    description: Option<String>,
    aws_principal_arns: Option<Vec<String>>,
    kms_key_arns: Option<Vec<String>>,
    kms_operations: Option<Vec<String>>,
}

impl Input {
    fn prefix(&self) -> Result<&str, KmsError> {
        let p = self
            .uri_prefix
            .as_deref()
            .ok_or_else(|| KmsError::required("uriPrefix"))?;
        if !xks::valid_prefix(p) {
            return Err(KmsError::validation(format!(
                "UriPrefix must be one or more path segments of A-Z a-z 0-9 - . _ ~ joined by /, \
                 at most {} characters, without a leading or trailing slash.",
                xks::MAX_PREFIX
            )));
        }
        Ok(p)
    }
}

/// The credential record of `prefix`, if the key store exists.
fn credentials(ctx: &Ctx<'_>, prefix: &str) -> Result<Option<PrincipalRecord>, OpError> {
    let rec = ctx.principal_named(&xks::credential_record(prefix))?;
    match rec {
        Some(r) if r.xks_prefix.as_deref() == Some(prefix) => Ok(Some(r)),
        Some(_) => Err(KmsError::internal().into()),
        None => Ok(None),
    }
}

fn no_store(prefix: &str) -> KmsError {
    KmsError::new(
        KmsErrorCode::NotFoundException,
        format!("No external key store has the URI prefix {prefix}."),
    )
}

fn new_key(now_ms: i64) -> Result<AccessKey, OpError> {
    Ok(AccessKey {
        id: format!("EKMS{}", random_string(BASE32, 16)?),
        secret: PrincipalSecret(random_string(ALNUM, SECRET_LEN)?),
        created_ms: now_ms,
    })
}

/// `EkmsCreateXksCredential`: a credential of the key store `UriPrefix`, which comes into
/// existence with its first; a second one while the first still works (rotation).
pub(super) fn create_credential(ctx: &Ctx<'_>, body: &[u8]) -> OpResult {
    let input: Input = parse(body)?;
    let prefix = input.prefix()?;
    ctx.authorize_account()?;
    let receiver = principals::receiver(
        input.recipient_public_key.as_deref(),
        input.nonce.as_deref(),
    )?;
    let key = new_key(ctx.now_ms)?;
    let akid = key.id.clone();
    let mut rec = if let Some(mut rec) = credentials(ctx, prefix)? {
        if rec.access_keys.len() >= MAX_ACCESS_KEYS {
            return Err(KmsError::new(
                KmsErrorCode::LimitExceededException,
                format!(
                    "The key store {prefix} has {MAX_ACCESS_KEYS} credentials: delete one \
                     (EkmsDeleteXksCredential) before making another."
                ),
            )
            .into());
        }
        rec.access_keys.push(key);
        rec
    } else {
        let user_id = format!("AIDA{}", random_string(BASE32, 17)?);
        let mut rec = PrincipalRecord::new(&xks::credential_record(prefix), user_id, key, None);
        // It signs XKS calls of its key store, and no KMS call.
        rec.identity_policies = Some(Vec::new());
        rec.xks_prefix = Some(prefix.to_owned());
        rec
    };
    let write = ctx.put_principal(&mut rec)?;
    let delivered = principals::delivered_key(ctx, &rec, &akid, receiver)?;
    reply(
        &json!({ "UriPrefix": prefix, "AccessKey": delivered }),
        vec![write],
    )
}

/// `EkmsListXksCredentials`: the access key ids of the key store `UriPrefix`.
pub(super) fn list_credentials(ctx: &Ctx<'_>, body: &[u8]) -> OpResult {
    let input: Input = parse(body)?;
    let prefix = input.prefix()?;
    ctx.authorize_account()?;
    let rec = credentials(ctx, prefix)?.ok_or_else(|| no_store(prefix))?;
    let list: Vec<_> = rec
        .access_keys
        .iter()
        .map(|k| {
            json!({
                "UriPrefix": prefix,
                "AccessKeyId": k.id,
                "CreateDate": super::keys::seconds(k.created_ms),
            })
        })
        .collect();
    reply(&json!({ "Credentials": list }), vec![])
}

/// `EkmsDeleteXksCredential`: retires one credential at once; with the last one the key store
/// ceases to exist (its keys stay, unseen, until a credential of that prefix is made again).
pub(super) fn delete_credential(ctx: &Ctx<'_>, body: &[u8]) -> OpResult {
    let input: Input = parse(body)?;
    let prefix = input.prefix()?;
    ctx.authorize_account()?;
    let akid = input
        .access_key_id
        .as_deref()
        .ok_or_else(|| KmsError::required("accessKeyId"))?;
    let mut rec = credentials(ctx, prefix)?.ok_or_else(|| no_store(prefix))?;
    let before = rec.access_keys.len();
    rec.access_keys.retain(|k| k.id != akid);
    if rec.access_keys.len() == before {
        return Err(KmsError::new(
            KmsErrorCode::NotFoundException,
            format!("The key store {prefix} has no credential {akid}."),
        )
        .into());
    }
    let write = if rec.access_keys.is_empty() {
        ctx.delete_principal_record(&rec)?
    } else {
        ctx.put_principal(&mut rec)?
    };
    reply(&json!({}), vec![write])
}

/// `EkmsCreateXksKey`: a new symmetric key of the domain that the key store `UriPrefix` uses,
/// with XKS key usage `KeyUsage` (`ENCRYPT`, `DECRYPT`, both, or none).
pub(super) fn create_key(ctx: &Ctx<'_>, body: &[u8]) -> OpResult {
    let input: Input = parse(body)?;
    let prefix = input.prefix()?.to_owned();
    ctx.authorize_account()?;
    let usage = input
        .key_usage
        .clone()
        .unwrap_or_else(|| vec!["ENCRYPT".into(), "DECRYPT".into()]);
    let mut binding = XksBinding {
        prefix: prefix.clone(),
        encrypt: false,
        decrypt: false,
    };
    for u in &usage {
        match u.as_str() {
            "ENCRYPT" => binding.encrypt = true,
            "DECRYPT" => binding.decrypt = true,
            other => {
                return Err(
                    super::enum_error(other, "keyUsage.member", &["ENCRYPT", "DECRYPT"]).into(),
                );
            }
        }
    }
    if credentials(ctx, &prefix)?.is_none() {
        return Err(no_store(&prefix).into());
    }
    let description = input
        .description
        .unwrap_or_else(|| format!("External key store key of {prefix}"));
    let create = json!({ "Description": description }).to_string();
    super::keys::create_key_with(ctx, create.as_bytes(), Some(binding))
}

/// `EkmsPutXksAccessRule`: the key store's secondary authorization rule — the
/// `AwsPrincipalArns` and `KmsKeyArns` patterns and the `KmsOperations` its requests'
/// `requestMetadata` must name (each absent or empty: any; all three absent removes the rule).
pub(super) fn put_rule(ctx: &Ctx<'_>, body: &[u8]) -> OpResult {
    let input: Input = parse(body)?;
    let prefix = input.prefix()?;
    ctx.authorize_account()?;
    let mut rec = credentials(ctx, prefix)?.ok_or_else(|| no_store(prefix))?;
    let rule = crate::xks::XksRule {
        principal_arns: input.aws_principal_arns.clone().unwrap_or_default(),
        key_arns: input.kms_key_arns.clone().unwrap_or_default(),
        operations: input.kms_operations.clone().unwrap_or_default(),
    };
    for v in rule
        .principal_arns
        .iter()
        .chain(&rule.key_arns)
        .chain(&rule.operations)
    {
        if v.is_empty() || v.len() > 2048 {
            return Err(KmsError::validation("Each rule entry has 1 to 2048 characters.").into());
        }
    }
    let count = rule.principal_arns.len() + rule.key_arns.len() + rule.operations.len();
    if count > 100 {
        return Err(KmsError::validation("A rule has at most 100 entries.").into());
    }
    rec.xks_rule = (rule != crate::xks::XksRule::default()).then_some(rule);
    let write = ctx.put_principal(&mut rec)?;
    reply(
        &json!({ "UriPrefix": prefix, "Rule": rec.xks_rule }),
        vec![write],
    )
}
