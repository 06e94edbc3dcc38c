//! Appliance operations on principals (the IAM side, kept small): create, list, delete, add
//! and retire access keys, and put a principal's identity policy. Each is authorized like an
//! IAM call (`iam:CreateUser` on the user's ARN, …) against the caller's identity policies.
//!
//! A new secret never crosses the host in the clear: it is encrypted to a one-off key that the
//! caller's tool made for this call, with an attestation document over the tool's nonce
//! ([`Core::deliver_credential`](crate::Core)).

use base64::Engine as _;
use ekms_wire::{
    msg::{KmsErrorCode, StoreWrite},
    plan,
};
use serde::Deserialize;
use serde_json::json;

use super::{Ctx, OpError, OpResult, keys::PageInput, parse, reply};
use crate::{
    KmsError,
    core::ceremony::new_access_key,
    ledger::RecordId,
    policy,
    principal::{self, ADMIN_NAME, MAX_ACCESS_KEYS, PrincipalRecord},
};

/// Largest nonce a caller may send for the attestation document.
const MAX_NONCE: usize = 64;
/// Default page size of `EkmsListPrincipals`.
const DEFAULT_LIMIT: usize = 100;

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct NameInput {
    user_name: Option<String>,
    policy_document: Option<String>,
    access_key_id: Option<String>,
    /// The caller's one-off public key (custodian key JSON).
    recipient_public_key: Option<String>,
    /// The caller's nonce, base64.
    nonce: Option<String>,
}

impl NameInput {
    fn name(&self) -> Result<&str, KmsError> {
        let name = self
            .user_name
            .as_deref()
            .ok_or_else(|| KmsError::required("userName"))?;
        if !principal::valid_name(name) {
            return Err(KmsError::validation(format!(
                "1 validation error detected: Value '{name}' at 'userName' failed to satisfy \
                 constraint: Member must satisfy regular expression pattern: [\\w+=,.@-]+ and \
                 have length 1 to 64"
            )));
        }
        Ok(name)
    }

    /// The receiver's key and nonce, checked.
    fn recipient(&self) -> Result<(&str, Vec<u8>), KmsError> {
        receiver(self.recipient_public_key.as_deref(), self.nonce.as_deref())
    }

    fn policy(&self) -> Result<Option<String>, KmsError> {
        self.policy_document
            .as_deref()
            .map(|doc| {
                policy::check_identity(doc).map_err(policy_error)?;
                Ok(doc.to_owned())
            })
            .transpose()
    }
}

/// The one-off key (`RecipientPublicKey`) and nonce (`Nonce`, base64) a new secret is delivered
/// to, checked.
pub(super) fn receiver<'a>(
    key: Option<&'a str>,
    nonce: Option<&str>,
) -> Result<(&'a str, Vec<u8>), KmsError> {
    let key = key.ok_or_else(|| KmsError::required("recipientPublicKey"))?;
    let nonce = nonce.ok_or_else(|| KmsError::required("nonce"))?;
    let nonce = base64::engine::general_purpose::STANDARD
        .decode(nonce)
        .ok()
        .filter(|n| (16..=MAX_NONCE).contains(&n.len()))
        .ok_or_else(|| KmsError::validation("Nonce must be 16 to 64 bytes, base64-encoded."))?;
    Ok((key, nonce))
}

fn policy_error(e: policy::PolicyError) -> KmsError {
    match e {
        policy::PolicyError::Malformed(why) => {
            KmsError::new(KmsErrorCode::MalformedPolicyDocumentException, why)
        }
        policy::PolicyError::TooLarge => KmsError::new(
            KmsErrorCode::LimitExceededException,
            "The policy document exceeds the 32768-byte limit.",
        ),
    }
}

fn no_such(name: &str) -> KmsError {
    KmsError::new(
        KmsErrorCode::NotFoundException,
        format!("The user with name {name} cannot be found."),
    )
}

impl Ctx<'_> {
    /// The supplied current record of principal `name`; `None` when the host supplied none
    /// and the state view agrees that there is none.
    pub(crate) fn principal_named(&self, name: &str) -> Result<Option<PrincipalRecord>, OpError> {
        for sealed in &self.call.principals {
            let Ok(mut rec) = crate::principal::open(self.keys, &sealed.0) else {
                continue;
            };
            if rec.name != name {
                continue;
            }
            rec.opened = Some(self.core.ledger()?.check(
                &RecordId::principal(&rec.id),
                rec.generation,
                &sealed.0,
            )?);
            return Ok(Some(rec));
        }
        self.core
            .ledger()?
            .check_absent(&RecordId::principal(name))?;
        Ok(None)
    }

    fn user_arn(&self, name: &str) -> String {
        format!("arn:aws:iam::{}:user/{name}", self.core.config.account)
    }

    /// Authorizes `action` on the user `name` against the caller's identity policies.
    fn authorize_iam(&self, action: &'static str, name: &str) -> Result<(), KmsError> {
        let arn = self.user_arn(name);
        self.with_action(action, || self.authorize_identity(&arn))
    }

    /// Seals a new version of `rec` into a store write.
    pub(super) fn put_principal(&self, rec: &mut PrincipalRecord) -> Result<StoreWrite, OpError> {
        let (write, change) = super::principal_write(self.core, self.keys, rec)?;
        self.record_change(change);
        Ok(write)
    }

    /// Replaces principal record `rec` (opened from the current version) by a tombstone.
    pub(super) fn delete_principal_record(
        &self,
        rec: &PrincipalRecord,
    ) -> Result<StoreWrite, OpError> {
        let opened = rec.opened.ok_or(OpError::Stale)?;
        let (write, change) = super::tombstone_write(
            self.core,
            self.keys,
            crate::record::Kind::Principal,
            &rec.id,
            opened,
            self.now_ms,
        )?;
        self.record_change(change);
        Ok(write)
    }

    fn caller_is(&self, rec: &PrincipalRecord) -> bool {
        self.authz
            .principal
            .as_ref()
            .is_some_and(|p| p.id == rec.id)
    }
}

fn user_json(ctx: &Ctx<'_>, rec: &PrincipalRecord) -> serde_json::Value {
    json!({
        "UserName": rec.name,
        "Arn": rec.arn(&ctx.core.config.account),
        "UserId": rec.user_id,
        "CreateDate": super::keys::seconds(rec.created_ms),
        "AccessKeyIds": rec.key_ids(),
        "HasPolicy": rec.identity_policies.as_ref().is_none_or(|p| !p.is_empty()),
    })
}

/// `{AccessKeyId, SealedSecret, AttestationDocument, DomainId}` for the new key `akid` of `rec`.
pub(super) fn delivered_key(
    ctx: &Ctx<'_>,
    rec: &PrincipalRecord,
    akid: &str,
    recipient: (&str, Vec<u8>),
) -> Result<serde_json::Value, OpError> {
    let secret = rec.secret_of(akid).ok_or_else(KmsError::internal)?;
    let (key, nonce) = recipient;
    let d = ctx
        .core
        .deliver_credential(key, &nonce, akid, secret)
        .map_err(|e| match e {
            crate::EnclaveError::BadInput => KmsError::validation(
                "RecipientPublicKey must be a P-384 public key in the custodian key format.",
            ),
            other => other.into(),
        })?;
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    Ok(json!({
        "AccessKeyId": akid,
        "SealedSecret": b64(&d.sealed),
        "AttestationDocument": b64(&d.document),
        "DomainId": ctx.core.domain_hex(),
    }))
}

/// `EkmsCreatePrincipal`: a new principal with one access key, whose secret only the caller's
/// tool can open.
pub(super) fn create_principal(ctx: &Ctx<'_>, body: &[u8]) -> OpResult {
    let input: NameInput = parse(body)?;
    let name = input.name()?;
    ctx.authorize_iam("iam:CreateUser", name)?;
    let policy = input.policy()?;
    if policy.is_some() {
        ctx.authorize_iam("iam:PutUserPolicy", name)?;
    }
    let recipient = input.recipient()?;
    if name == ADMIN_NAME || ctx.principal_named(name)?.is_some() {
        return Err(KmsError::new(
            KmsErrorCode::AlreadyExistsException,
            format!("User with name {name} already exists."),
        )
        .into());
    }
    let (key, user_id) = new_access_key(ctx.now_ms)?;
    let akid = key.id.clone();
    // A principal made without a policy may do nothing until one is put.
    let mut rec = PrincipalRecord::new(name, user_id, key, policy);
    if rec.identity_policies.is_none() {
        rec.identity_policies = Some(Vec::new());
    }
    let write = ctx.put_principal(&mut rec)?;
    let key = delivered_key(ctx, &rec, &akid, recipient)?;
    reply(
        &json!({ "User": user_json(ctx, &rec), "AccessKey": key }),
        vec![write],
    )
}

/// `EkmsListPrincipals`: every principal, in name order, as the state view says.
pub(super) fn list_principals(ctx: &Ctx<'_>, body: &[u8]) -> OpResult {
    let input: PageInput = parse(body)?;
    super::keys::check_page(&input, 1000)?;
    ctx.authorize_iam("iam:ListUsers", "*")?;
    let after = input.marker.as_deref().and_then(plan::decode_marker);
    let (ids, more) = ctx.core.ledger()?.principal_page(
        after.as_deref(),
        super::keys::page_limit(input.limit, DEFAULT_LIMIT),
    );
    let mut users = Vec::with_capacity(ids.len());
    for id in &ids {
        // Every listed principal must be shown as its current record.
        let rec = ctx
            .call
            .principals
            .iter()
            .filter_map(|s| crate::principal::open(ctx.keys, &s.0).ok().map(|r| (r, s)))
            .find(|(r, _)| r.id == **id)
            .ok_or(OpError::Stale)?;
        ctx.core
            .ledger()?
            .check(&RecordId::principal(&rec.0.id), rec.0.generation, &rec.1.0)?;
        users.push(user_json(ctx, &rec.0));
    }
    let mut out = json!({ "Users": users, "Truncated": more });
    if more && let Some(last) = ids.last() {
        super::set(&mut out, "NextMarker", json!(plan::encode_marker(last)));
    }
    reply(&out, vec![])
}

fn existing(ctx: &Ctx<'_>, input: &NameInput) -> Result<PrincipalRecord, OpError> {
    let name = input.name()?;
    Ok(ctx.principal_named(name)?.ok_or_else(|| no_such(name))?)
}

/// `EkmsDeletePrincipal`: replaces the principal by a tombstone; its keys stop working at once,
/// and no older copy of its record is accepted again.
pub(super) fn delete_principal(ctx: &Ctx<'_>, body: &[u8]) -> OpResult {
    let input: NameInput = parse(body)?;
    ctx.authorize_iam("iam:DeleteUser", input.name()?)?;
    let rec = existing(ctx, &input)?;
    if ctx.caller_is(&rec) {
        return Err(KmsError::new(
            KmsErrorCode::ValidationException,
            "A principal cannot delete itself; another principal allowed iam:DeleteUser can.",
        )
        .into());
    }
    let write = ctx.delete_principal_record(&rec)?;
    reply(&json!({}), vec![write])
}

/// `EkmsCreateAccessKey`: a second access key, while the first still works (rotation).
pub(super) fn create_access_key(ctx: &Ctx<'_>, body: &[u8]) -> OpResult {
    let input: NameInput = parse(body)?;
    ctx.authorize_iam("iam:CreateAccessKey", input.name()?)?;
    let recipient = input.recipient()?;
    let mut rec = existing(ctx, &input)?;
    rec.upgrade();
    if rec.access_keys.len() >= MAX_ACCESS_KEYS {
        return Err(KmsError::new(
            KmsErrorCode::LimitExceededException,
            format!("Cannot exceed quota for AccessKeysPerUser: {MAX_ACCESS_KEYS}"),
        )
        .into());
    }
    let (key, _) = new_access_key(ctx.now_ms)?;
    let akid = key.id.clone();
    rec.access_keys.push(key);
    let write = ctx.put_principal(&mut rec)?;
    let key = delivered_key(ctx, &rec, &akid, recipient)?;
    reply(
        &json!({ "User": user_json(ctx, &rec), "AccessKey": key }),
        vec![write],
    )
}

/// `EkmsDeleteAccessKey`: retires one access key; the principal keeps at least one.
pub(super) fn delete_access_key(ctx: &Ctx<'_>, body: &[u8]) -> OpResult {
    let input: NameInput = parse(body)?;
    ctx.authorize_iam("iam:DeleteAccessKey", input.name()?)?;
    let akid = input
        .access_key_id
        .as_deref()
        .ok_or_else(|| KmsError::required("accessKeyId"))?;
    let mut rec = existing(ctx, &input)?;
    rec.upgrade();
    let before = rec.access_keys.len();
    rec.access_keys.retain(|k| k.id != akid);
    if rec.access_keys.len() == before {
        return Err(KmsError::new(
            KmsErrorCode::NotFoundException,
            format!("The Access Key with id {akid} cannot be found."),
        )
        .into());
    }
    if rec.access_keys.is_empty() {
        return Err(KmsError::new(
            KmsErrorCode::ValidationException,
            "A principal keeps at least one access key: make its next key first \
             (EkmsCreateAccessKey), or delete the principal.",
        )
        .into());
    }
    let write = ctx.put_principal(&mut rec)?;
    reply(&json!({ "User": user_json(ctx, &rec) }), vec![write])
}

/// `EkmsPutPrincipalPolicy`: replaces the principal's identity policy (like an IAM inline
/// policy).
pub(super) fn put_principal_policy(ctx: &Ctx<'_>, body: &[u8]) -> OpResult {
    let input: NameInput = parse(body)?;
    ctx.authorize_iam("iam:PutUserPolicy", input.name()?)?;
    let policy = input
        .policy()?
        .ok_or_else(|| KmsError::required("policyDocument"))?;
    let mut rec = existing(ctx, &input)?;
    rec.upgrade();
    rec.identity_policies = Some(vec![policy]);
    let write = ctx.put_principal(&mut rec)?;
    reply(&json!({ "User": user_json(ctx, &rec) }), vec![write])
}
