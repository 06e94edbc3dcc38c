//! CreateGrant, ListGrants, ListRetirableGrants, RetireGrant and RevokeGrant. A grant is a
//! sealed record of its own (`crate::grant`); retiring or revoking it leaves a tombstone in the
//! state view, so no copy of it is accepted again.

use std::collections::BTreeMap;

use ekms_wire::{
    msg::{KmsErrorCode, StoreWrite},
    plan,
};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Ctx, OpError, OpResult, dry_run, parse, reply};
use crate::{
    KmsError,
    grant::{self, Constraints, GrantRecord},
    ledger::{Change, RecordId, Version, digest_of},
    record::{self, Kind},
};

/// Default page size of the grant listings (AWS's).
const DEFAULT_LIMIT: usize = 50;
/// Largest page size of the grant listings.
const MAX_LIMIT: i64 = 100;

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ConstraintsInput {
    encryption_context_equals: Option<BTreeMap<String, String>>,
    encryption_context_subset: Option<BTreeMap<String, String>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CreateInput {
    key_id: Option<String>,
    grantee_principal: Option<String>,
    retiring_principal: Option<String>,
    operations: Option<Vec<String>>,
    constraints: Option<ConstraintsInput>,
    name: Option<String>,
    dry_run: Option<bool>,
}

fn principal_arg(v: Option<&str>, member: &str) -> Result<Option<String>, KmsError> {
    match v {
        None => Ok(None),
        Some(p) if p.is_empty() || p.len() > 256 => Err(KmsError::validation(format!(
            "1 validation error detected: Value '{p}' at '{member}' failed to satisfy \
             constraint: Member must have length between 1 and 256"
        ))),
        Some(p) if !p.starts_with("arn:") => Err(KmsError::validation(format!(
            "Invalid {member}: {p} is not a principal ARN"
        ))),
        Some(p) => Ok(Some(p.to_owned())),
    }
}

fn valid_name(name: &str) -> bool {
    (1..=256).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b":/_-".contains(&b))
}

impl Ctx<'_> {
    /// The supplied current record of grant `grant_id` of key `key_id`; `None` when the host
    /// supplied none and the state view agrees that there is none.
    pub(crate) fn grant(
        &self,
        key_id: &str,
        grant_id: &str,
    ) -> Result<Option<GrantRecord>, OpError> {
        let Some(rid) = RecordId::grant(key_id, grant_id) else {
            return Ok(None);
        };
        // The sealed id (public) names key and grant; `grant::open` checks it is the record's.
        let id = format!("{key_id}/{grant_id}");
        for sealed in &self.call.grants {
            if record::peek(&sealed.0).is_some_and(|h| h.id == id)
                && let Some(g) = self.current_grant(&sealed.0)?
            {
                return Ok(Some(g));
            }
        }
        self.core.ledger()?.check_absent(&rid)?;
        Ok(None)
    }

    /// A supplied sealed grant, opened and checked against the state view: `None` when it is
    /// not a grant sealed by this domain, `Stale` when it is not the current version.
    pub(crate) fn current_grant(&self, sealed: &[u8]) -> Result<Option<GrantRecord>, OpError> {
        let Ok(mut g) = grant::open(self.keys, sealed) else {
            return Ok(None);
        };
        let rid = RecordId::grant(&g.key_id, &g.grant_id).ok_or(OpError::Stale)?;
        g.opened = Some(self.core.ledger()?.check(&rid, g.generation, sealed)?);
        Ok(Some(g))
    }

    /// The supplied grants that the state view holds as current (others make the host re-read).
    fn supplied_grants(&self) -> Result<Vec<GrantRecord>, OpError> {
        let mut out = Vec::with_capacity(self.call.grants.len());
        for sealed in &self.call.grants {
            let g = self
                .current_grant(&sealed.0)?
                .ok_or(crate::EnclaveError::BadRecord)?;
            out.push(g);
        }
        Ok(out)
    }

    fn caller_arn(&self) -> String {
        self.authz
            .principal
            .as_ref()
            .map(|p| p.arn(&self.core.config.account))
            .unwrap_or_default()
    }

    /// Replaces grant `g` by its tombstone.
    fn delete_grant(&self, g: &GrantRecord) -> Result<StoreWrite, OpError> {
        let opened = g.opened.ok_or(OpError::Stale)?;
        let (write, change) = super::tombstone_write(
            self.core,
            self.keys,
            Kind::Grant,
            &g.sealed_id(),
            opened,
            self.now_ms,
        )?;
        self.record_change(change);
        Ok(write)
    }
}

fn grant_json(ctx: &Ctx<'_>, g: &GrantRecord) -> Value {
    let mut v = json!({
        "KeyId": ctx.key_arn(&g.key_id),
        "GrantId": g.grant_id,
        "GranteePrincipal": g.grantee,
        "IssuingAccount": g.issuing_account,
        "Operations": g.operations,
        "CreationDate": super::keys::seconds(g.created_ms),
    });
    if let Some(n) = &g.name {
        super::set(&mut v, "Name", json!(n));
    }
    if let Some(r) = &g.retiring {
        super::set(&mut v, "RetiringPrincipal", json!(r));
    }
    if let Some(c) = &g.constraints {
        let mut cj = json!({});
        if let Some(e) = &c.equals {
            super::set(&mut cj, "EncryptionContextEquals", json!(e));
        }
        if let Some(s) = &c.subset {
            super::set(&mut cj, "EncryptionContextSubset", json!(s));
        }
        super::set(&mut v, "Constraints", cj);
    }
    v
}

/// Seals a new grant into a store write.
fn grant_write(ctx: &Ctx<'_>, g: &mut GrantRecord) -> Result<(StoreWrite, Vec<u8>), OpError> {
    let rid = RecordId::grant(&g.key_id, &g.grant_id).ok_or(OpError::Stale)?;
    g.generation = ctx.core.ledger()?.next_seq();
    let sealed = record::seal(ctx.keys.current(), Kind::Grant, &g.sealed_id(), g)?;
    ctx.record_change(Change {
        id: rid,
        expected: None,
        new: Version {
            seq: g.generation,
            digest: digest_of(&sealed),
        },
        live: true,
        target: None,
    });
    let write = StoreWrite::PutGrant {
        key_id: g.key_id.clone(),
        grant_id: g.grant_id.clone(),
        generation: g.generation,
        expected: None,
        sealed: ekms_wire::msg::SealedBlob(sealed.clone()),
        grantee: g.grantee.clone(),
        retiring: g.retiring.clone(),
        name: g.name.clone(),
    };
    Ok((write, sealed))
}

fn new_grant_id() -> Result<String, KmsError> {
    let mut b = [0u8; 32];
    aws_lc_rs::rand::fill(&mut b).map_err(|_| KmsError::internal())?;
    Ok(b.iter().fold(String::with_capacity(64), |mut out, x| {
        use std::fmt::Write as _;
        let _ = write!(out, "{x:02x}");
        out
    }))
}

/// A checked `CreateGrant` request.
struct Wanted {
    grantee: String,
    retiring: Option<String>,
    operations: Vec<String>,
    constraints: Option<Constraints>,
}

fn checked(input: &CreateInput) -> Result<Wanted, KmsError> {
    let grantee = principal_arg(input.grantee_principal.as_deref(), "granteePrincipal")?
        .ok_or_else(|| KmsError::required("granteePrincipal"))?;
    let retiring = principal_arg(input.retiring_principal.as_deref(), "retiringPrincipal")?;
    let operations = input
        .operations
        .clone()
        .filter(|o| !o.is_empty())
        .ok_or_else(|| KmsError::required("operations"))?;
    if let Some(bad) = operations.iter().find(|o| !grant::is_operation(o)) {
        let mut all: Vec<&str> = Vec::new();
        for o in grant::OPERATIONS.iter().flat_map(|(_, ops)| ops.iter()) {
            if !all.contains(o) {
                all.push(o);
            }
        }
        return Err(super::enum_error(bad, "operations", &all));
    }
    if let Some(n) = &input.name
        && !valid_name(n)
    {
        return Err(KmsError::validation(format!(
            "1 validation error detected: Value '{n}' at 'name' failed to satisfy constraint: \
             Member must satisfy regular expression pattern: ^[a-zA-Z0-9:/_-]+$"
        )));
    }
    let constraints = input.constraints.as_ref().map(|c| Constraints {
        equals: c.encryption_context_equals.clone(),
        subset: c.encryption_context_subset.clone(),
    });
    Ok(Wanted {
        grantee,
        retiring,
        operations,
        constraints,
    })
}

impl Wanted {
    /// The condition keys a policy may put on `CreateGrant`.
    fn set_conditions(&self, ctx: &Ctx<'_>) {
        ctx.condition("kms:GrantOperations", self.operations.clone());
        ctx.condition("kms:GranteePrincipal", vec![self.grantee.clone()]);
        if let Some(r) = &self.retiring {
            ctx.condition("kms:RetiringPrincipal", vec![r.clone()]);
        }
        if let Some(c) = &self.constraints {
            let mut kinds = Vec::new();
            if c.equals.is_some() {
                kinds.push("EncryptionContextEquals".to_owned());
            }
            if c.subset.is_some() {
                kinds.push("EncryptionContextSubset".to_owned());
            }
            ctx.condition("kms:GrantConstraintType", kinds);
        }
        ctx.condition("kms:GrantIsForAWSResource", vec!["false".into()]);
    }

    /// What the key's type allows, and, when only the caller's own grant allowed the call,
    /// nothing wider than that grant.
    fn check_for(&self, ctx: &Ctx<'_>, key: &crate::record::KeyRecord) -> Result<(), KmsError> {
        let allowed = grant::operations_for(&key.spec, &key.usage);
        if let Some(bad) = self
            .operations
            .iter()
            .find(|o| !allowed.contains(&o.as_str()))
        {
            return Err(KmsError::validation(format!(
                "Grant operation {bad} is not valid for a KMS key with KeySpec {} and KeyUsage {}.",
                key.spec, key.usage
            )));
        }
        if self.constraints.is_some()
            && (key.spec != "SYMMETRIC_DEFAULT"
                || self
                    .operations
                    .iter()
                    .any(|o| !grant::CONTEXT_OPERATIONS.contains(&o.as_str())))
        {
            return Err(KmsError::validation(
                "Grant constraints are allowed only on symmetric encryption KMS keys, and only \
                 with operations that take an encryption context.",
            ));
        }
        if let Some(parent) = ctx.authz.by_grant.borrow().as_ref() {
            let wider = self
                .operations
                .iter()
                .any(|o| !parent.operations.contains(o));
            let looser = parent
                .constraints
                .as_ref()
                .is_some_and(|p| !self.constraints.as_ref().is_some_and(|c| c.within(p)));
            if wider || looser {
                return Err(KmsError::new(
                    KmsErrorCode::AccessDeniedException,
                    format!(
                        "User: {} is not authorized to perform: kms:CreateGrant on resource: {} \
                         because a grant may only create grants narrower than itself",
                        ctx.caller_arn(),
                        ctx.key_arn(&key.key_id)
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The grant of this key with `name` and these very parameters, as sealed, if the host
    /// supplied one (`CreateGrant` is idempotent by name).
    fn same_named(
        &self,
        ctx: &Ctx<'_>,
        key_id: &str,
        name: &str,
    ) -> Result<Option<(String, String)>, OpError> {
        for sealed in &ctx.call.grants {
            let Ok(g) = grant::open(ctx.keys, &sealed.0) else {
                continue;
            };
            let same = g.key_id == key_id
                && g.name.as_deref() == Some(name)
                && g.grantee == self.grantee
                && g.retiring == self.retiring
                && g.operations == self.operations
                && g.constraints == self.constraints;
            if same {
                let rid = RecordId::grant(&g.key_id, &g.grant_id).ok_or(OpError::Stale)?;
                ctx.core.ledger()?.check(&rid, g.generation, &sealed.0)?;
                return Ok(Some((g.grant_id, grant::token(&sealed.0))));
            }
        }
        Ok(None)
    }
}

/// `CreateGrant`.
pub(super) fn create_grant(ctx: &Ctx<'_>, body: &[u8]) -> OpResult {
    let input: CreateInput = parse(body)?;
    let key_id = input
        .key_id
        .as_deref()
        .ok_or_else(|| KmsError::required("keyId"))?;
    let wanted = checked(&input)?;
    wanted.set_conditions(ctx);
    let key = ctx.resolve(key_id)?;
    super::require_not_pending(ctx, &key)?;
    wanted.check_for(ctx, &key)?;
    if let Some(name) = &input.name
        && let Some((grant_id, token)) = wanted.same_named(ctx, &key.key_id, name)?
    {
        dry_run(input.dry_run)?;
        return reply(&json!({"GrantId": grant_id, "GrantToken": token}), vec![]);
    }
    let Some(k) = RecordId::key(&key.key_id).and_then(|r| r.key_bits()) else {
        return Err(OpError::Stale);
    };
    if ctx.core.ledger()?.grant_count(k) >= grant::MAX_GRANTS_PER_KEY {
        return Err(KmsError::new(
            KmsErrorCode::LimitExceededException,
            format!(
                "The request would exceed the quota of {} grants for KMS key {}.",
                grant::MAX_GRANTS_PER_KEY,
                ctx.key_arn(&key.key_id)
            ),
        )
        .into());
    }
    dry_run(input.dry_run)?;
    let mut g = GrantRecord {
        grant_id: new_grant_id()?,
        key_id: key.key_id.clone(),
        name: input.name,
        grantee: wanted.grantee,
        retiring: wanted.retiring,
        operations: wanted.operations,
        constraints: wanted.constraints,
        issuing_account: format!("arn:aws:iam::{}:root", ctx.core.config.account),
        created_ms: ctx.now_ms,
        region: Some(key.region.clone()),
        generation: 0,
        opened: None,
    };
    let (write, sealed) = grant_write(ctx, &mut g)?;
    reply(
        &json!({"GrantId": g.grant_id, "GrantToken": grant::token(&sealed)}),
        vec![write],
    )
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ListInput {
    key_id: Option<String>,
    limit: Option<i64>,
    marker: Option<String>,
    grant_id: Option<String>,
    grantee_principal: Option<String>,
    retiring_principal: Option<String>,
}

fn page_of(
    ctx: &Ctx<'_>,
    grants: &[GrantRecord],
    more: bool,
    marker: impl Fn(&GrantRecord) -> String,
) -> OpResult {
    let list: Vec<Value> = grants.iter().map(|g| grant_json(ctx, g)).collect();
    let mut out = json!({ "Grants": list, "Truncated": more });
    if more && let Some(last) = grants.last() {
        super::set(
            &mut out,
            "NextMarker",
            json!(plan::encode_marker(&marker(last))),
        );
    }
    reply(&out, vec![])
}

fn limit(input: &ListInput) -> Result<usize, KmsError> {
    match input.limit {
        Some(l) if !(1..=MAX_LIMIT).contains(&l) => {
            Err(super::out_of_range(l, "limit", 1, MAX_LIMIT))
        }
        l => Ok(super::keys::page_limit(l, DEFAULT_LIMIT)),
    }
}

fn marker(input: &ListInput) -> Result<Option<String>, KmsError> {
    input
        .marker
        .as_deref()
        .map(|m| {
            plan::decode_marker(m).ok_or_else(|| {
                KmsError::new(KmsErrorCode::InvalidMarkerException, "Marker is invalid")
            })
        })
        .transpose()
}

/// `ListGrants`: the key's live grants in grant-id order, as the state view says (a hidden or
/// revived grant is refused); with a `GrantId` or `GranteePrincipal` filter, those of the
/// supplied grants that match, each checked current.
pub(super) fn list_grants(ctx: &Ctx<'_>, body: &[u8]) -> OpResult {
    let input: ListInput = parse(body)?;
    let key_id = input
        .key_id
        .as_deref()
        .ok_or_else(|| KmsError::required("keyId"))?;
    let limit = limit(&input)?;
    let after = marker(&input)?;
    let key = ctx.resolve(key_id)?;
    let Some(k) = RecordId::key(&key.key_id).and_then(|r| r.key_bits()) else {
        return Err(OpError::Stale);
    };
    if input.grant_id.is_some() || input.grantee_principal.is_some() {
        let mut found: Vec<GrantRecord> = ctx
            .supplied_grants()?
            .into_iter()
            .filter(|g| g.key_id == key.key_id && g.in_region(&key.region))
            .filter(|g| input.grant_id.as_ref().is_none_or(|id| *id == g.grant_id))
            .filter(|g| {
                input
                    .grantee_principal
                    .as_ref()
                    .is_none_or(|p| *p == g.grantee)
            })
            .filter(|g| after.as_ref().is_none_or(|a| g.grant_id > *a))
            .collect();
        found.sort_by(|a, b| a.grant_id.cmp(&b.grant_id));
        let more = found.len() > limit;
        found.truncate(limit);
        return page_of(ctx, &found, more, |g| g.grant_id.clone());
    }
    let (ids, more) = ctx.core.ledger()?.grant_page(k, after.as_deref(), limit);
    let mut page = Vec::with_capacity(ids.len());
    for id in &ids {
        let g = ctx.grant(&key.key_id, id)?.ok_or(OpError::Stale)?;
        // A multi-Region key's other replicas' grants are theirs (the page may come out short).
        if g.in_region(&key.region) {
            page.push(g);
        }
    }
    page_of(ctx, &page, more, |g| g.grant_id.clone())
}

/// `ListRetirableGrants`: the grants `RetiringPrincipal` may retire, across keys, in key and
/// grant-id order; each checked current (the host could only leave some out).
pub(super) fn list_retirable_grants(ctx: &Ctx<'_>, body: &[u8]) -> OpResult {
    let input: ListInput = parse(body)?;
    let retiring = principal_arg(input.retiring_principal.as_deref(), "retiringPrincipal")?
        .ok_or_else(|| KmsError::required("retiringPrincipal"))?;
    let limit = limit(&input)?;
    let after = marker(&input)?;
    ctx.authorize_account()?;
    let mut found: Vec<GrantRecord> = ctx
        .supplied_grants()?
        .into_iter()
        .filter(|g| g.retiring.as_deref() == Some(retiring.as_str()))
        // AWS: the grants of the account *and Region* (a grant names its key by an ARN of the
        // request's region, which a key of another region does not have).
        .filter(|g| g.region_or(&ctx.core.config.region) == ctx.region)
        .filter(|g| after.as_ref().is_none_or(|a| g.sealed_id() > *a))
        .collect();
    found.sort_by_key(GrantRecord::sealed_id);
    let more = found.len() > limit;
    found.truncate(limit);
    page_of(ctx, &found, more, GrantRecord::sealed_id)
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RetireInput {
    grant_token: Option<String>,
    key_id: Option<String>,
    grant_id: Option<String>,
    dry_run: Option<bool>,
}

/// `RetireGrant`: by its token, or by key and grant id; by the retiring principal, the grantee
/// when the grant includes `RetireGrant`, or a caller whose policies allow `kms:RetireGrant`.
pub(super) fn retire_grant(ctx: &Ctx<'_>, body: &[u8]) -> OpResult {
    let input: RetireInput = parse(body)?;
    let (key_id, grant_id) = match (&input.grant_token, &input.key_id, &input.grant_id) {
        (Some(t), _, _) => {
            let sealed = grant::token_record(t).ok_or_else(|| {
                KmsError::new(
                    KmsErrorCode::InvalidGrantTokenException,
                    "Invalid grant token",
                )
            })?;
            let g = grant::open(ctx.keys, &sealed).map_err(|_| {
                KmsError::new(
                    KmsErrorCode::InvalidGrantTokenException,
                    "Invalid grant token",
                )
            })?;
            (g.key_id, g.grant_id)
        }
        (None, Some(k), Some(g)) => {
            let Some(plan::KeyRef::Id(key)) = plan::parse_key_ref(k) else {
                return Err(super::not_found_invalid(k).into());
            };
            (key, g.clone())
        }
        _ => {
            return Err(KmsError::validation(
                "Either GrantToken, or both KeyId and GrantId, must be specified.",
            )
            .into());
        }
    };
    let g = ctx.grant(&key_id, &grant_id)?.ok_or_else(|| {
        KmsError::new(
            KmsErrorCode::NotFoundException,
            format!("Grant ID {grant_id} not found"),
        )
    })?;
    let caller = ctx.caller_arn();
    let may = g.retiring.as_deref() == Some(caller.as_str())
        || (g.grantee == caller && g.operations.iter().any(|o| o == "RetireGrant"));
    if !may {
        // Otherwise the key's policies decide.
        ctx.resolve(&key_id)?;
    }
    dry_run(input.dry_run)?;
    let write = ctx.delete_grant(&g)?;
    reply(&json!({}), vec![write])
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RevokeInput {
    key_id: Option<String>,
    grant_id: Option<String>,
    dry_run: Option<bool>,
}

/// `RevokeGrant`: by a caller whose policies allow `kms:RevokeGrant` on the key.
pub(super) fn revoke_grant(ctx: &Ctx<'_>, body: &[u8]) -> OpResult {
    let input: RevokeInput = parse(body)?;
    let key_id = input
        .key_id
        .as_deref()
        .ok_or_else(|| KmsError::required("keyId"))?;
    let grant_id = input
        .grant_id
        .as_deref()
        .ok_or_else(|| KmsError::required("grantId"))?;
    let key = ctx.resolve(key_id)?;
    let g = ctx.grant(&key.key_id, grant_id)?.ok_or_else(|| {
        KmsError::new(
            KmsErrorCode::NotFoundException,
            format!("Grant ID {grant_id} not found"),
        )
    })?;
    dry_run(input.dry_run)?;
    let write = ctx.delete_grant(&g)?;
    reply(&json!({}), vec![write])
}
