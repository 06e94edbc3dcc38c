//! Authorization of each operation, in the enclave, from sealed state only: the key's policy (in
//! its record), the caller's identity policies (in its principal record), and the request's
//! verified content. The host asserts nothing that is used here: no source address, no
//! transport flag. See `policy::eval` for the rules.

use std::cell::{Cell, RefCell};

use ekms_wire::msg::KmsErrorCode;

use super::Ctx;
use crate::{
    KmsError,
    context::EncryptionContext,
    grant::{self, GrantRecord},
    ledger::RecordId,
    policy::{
        self, ADMIN_POLICY,
        condition::Context,
        eval::{self, Decision, Request, Uses},
    },
    record::{KeyRecord, PrincipalRecord},
};

use super::OpError;

/// Per-request authorization state of a [`Ctx`].
#[derive(Default)]
pub(crate) struct Authz {
    /// The verified caller (`None` only in tests that call operations without one).
    pub(crate) principal: Option<std::sync::Arc<PrincipalRecord>>,
    /// The operation, as `kms:<Op>`.
    pub(crate) action: String,
    /// An action used instead (ReEncrypt's `kms:ReEncryptFrom` / `kms:ReEncryptTo`).
    pub(crate) override_action: Cell<Option<&'static str>>,
    /// Condition keys the operation set from its verified input.
    pub(crate) conditions: RefCell<Context>,
    /// The request's encryption context (for grant constraints).
    pub(crate) ec: RefCell<EncryptionContext>,
    /// The caller's grants (supplied by the host, or carried by grant tokens), opened once.
    pub(crate) grants: RefCell<Option<Vec<GrantRecord>>>,
    /// The grant that allowed the last decision, when only a grant did.
    pub(crate) by_grant: RefCell<Option<GrantRecord>>,
}

impl Ctx<'_> {
    /// Sets a condition key (lower-cased) from the request.
    pub(crate) fn condition(&self, key: &str, values: Vec<String>) {
        self.authz
            .conditions
            .borrow_mut()
            .insert(key.to_ascii_lowercase(), values);
    }

    /// Sets `kms:EncryptionContext:<k>` and `kms:EncryptionContextKeys` from a context.
    /// Refuses a context over AWS's size limit.
    pub(crate) fn condition_ec(&self, ec: &EncryptionContext) -> Result<(), KmsError> {
        crate::context::check_size(ec)?;
        self.authz.ec.borrow_mut().clone_from(ec);
        let mut keys = Vec::new();
        for (k, v) in ec {
            self.condition(&format!("kms:EncryptionContext:{k}"), vec![v.to_owned()]);
            keys.push(k.to_owned());
        }
        if !keys.is_empty() {
            self.condition("kms:EncryptionContextKeys", keys);
        }
        Ok(())
    }

    /// Sets `aws:RequestTag/<k>` and `aws:TagKeys` from the tags a request carries.
    pub(crate) fn condition_tags<'t>(&self, tags: impl Iterator<Item = (&'t str, &'t str)>) {
        let mut keys = Vec::new();
        for (k, v) in tags {
            self.condition(&format!("aws:RequestTag/{k}"), vec![v.to_owned()]);
            keys.push(k.to_owned());
        }
        self.condition("aws:TagKeys", keys);
    }

    /// Runs `f` with `action` in place of the operation's own.
    pub(crate) fn with_action<T>(&self, action: &'static str, f: impl FnOnce() -> T) -> T {
        let before = self.authz.override_action.replace(Some(action));
        let out = f();
        self.authz.override_action.set(before);
        out
    }

    fn action(&self) -> String {
        self.authz
            .override_action
            .get()
            .map_or_else(|| self.authz.action.clone(), str::to_owned)
    }

    /// The caller's ARN and identity policies (`None` only for a call without a caller).
    fn subject(&self) -> Option<(String, Vec<&str>)> {
        let p = self.authz.principal.as_ref()?;
        let identity = match &p.identity_policies {
            Some(docs) => docs.iter().map(String::as_str).collect(),
            None => vec![ADMIN_POLICY],
        };
        Some((p.arn(&self.core.config.account), identity))
    }

    /// The request's condition keys, with the caller's (`arn`) and the costly ones that
    /// `uses` asks for.
    fn context(&self, arn: &str, uses: Uses) -> Context {
        let account = &self.core.config.account;
        let mut ctx = self.authz.conditions.borrow().clone();
        ctx.insert("kms:calleraccount".into(), vec![account.clone()]);
        ctx.insert("aws:principalarn".into(), vec![arn.to_owned()]);
        if let Some(p) = &self.authz.principal {
            ctx.insert("aws:username".into(), vec![p.name.clone()]);
        }
        if uses.current_time {
            let now = chrono::DateTime::from_timestamp_millis(self.now_ms)
                .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
                .unwrap_or_default();
            ctx.insert("aws:currenttime".into(), vec![now]);
        }
        if uses.epoch_time {
            ctx.insert(
                "aws:epochtime".into(),
                vec![self.now_ms.div_euclid(1000).to_string()],
            );
        }
        ctx
    }

    /// Whether the caller may do this operation with `key`; AWS's `AccessDeniedException` if
    /// not.
    pub(crate) fn authorize(&self, key: &KeyRecord) -> Result<(), OpError> {
        self.authorize_with(key, key.policy.as_deref())?;
        self.note_use(key);
        Ok(())
    }

    /// The caller's grants: those the host supplied (each must be the current record: an old
    /// one, say revoked since, makes the host re-read) and those the request's grant tokens
    /// carry (used only while the state view holds them live).
    fn caller_grants(&self) -> Result<std::cell::Ref<'_, [GrantRecord]>, OpError> {
        if self.authz.grants.borrow().is_none() {
            let mut out = Vec::new();
            for sealed in &self.call.grants {
                out.extend(self.current_grant(&sealed.0)?);
            }
            for token in grant_tokens(&self.call.http.body) {
                let Some(sealed) = grant::token_record(&token) else {
                    continue;
                };
                // A token that is no longer the current record (revoked) allows nothing.
                match self.current_grant(&sealed) {
                    Ok(g) => out.extend(g),
                    Err(OpError::Stale) => {}
                    Err(e) => return Err(e),
                }
            }
            *self.authz.grants.borrow_mut() = Some(out);
        }
        Ok(std::cell::Ref::map(self.authz.grants.borrow(), |g| {
            g.as_deref().unwrap_or_default()
        }))
    }

    /// A grant of the caller's that allows `action` on `key` for this request.
    fn grant_for(
        &self,
        key: &KeyRecord,
        arn: &str,
        action: &str,
    ) -> Result<Option<GrantRecord>, OpError> {
        let Some(op) = action.strip_prefix("kms:") else {
            return Ok(None);
        };
        let ec = self.authz.ec.borrow();
        Ok(self
            .caller_grants()?
            .iter()
            .find(|g| g.in_region(&key.region) && g.allows(&key.key_id, arn, op, &ec))
            .cloned())
    }

    /// Whether the caller's only identity policy is the administrator's (everything).
    fn caller_may_do_everything(&self) -> bool {
        self.authz
            .principal
            .as_ref()
            .is_none_or(|p| match &p.identity_policies {
                None => true,
                Some(docs) => docs.len() == 1 && docs.first().is_some_and(|d| d == ADMIN_POLICY),
            })
    }

    /// As [`Ctx::authorize`], with `key_policy` as the key's policy (the lockout check).
    fn authorize_with(&self, key: &KeyRecord, key_policy: Option<&str>) -> Result<(), OpError> {
        if self.audited_key.borrow().is_none() {
            *self.audited_key.borrow_mut() = Some(self.key_arn(&key.key_id));
        }
        // AWS's default key policy (the account may do everything, as its identity policies
        // say) with an identity policy that allows everything: allowed, whatever the request.
        // The same answer as the evaluation below, without parsing either document.
        if key_policy.is_none() && self.caller_may_do_everything() {
            return Ok(());
        }
        let Some((arn, identity)) = self.subject() else {
            return Ok(());
        };
        let resource = self.key_arn(&key.key_id);
        let action = self.action();
        let policy = key_policy.map_or_else(
            || policy::default_policy(&self.core.config.account),
            str::to_owned,
        );
        let uses = eval::uses(std::iter::once(policy.as_str()).chain(identity.iter().copied()));
        let mut ctx = self.context(&arn, uses);
        ctx.insert("kms:keyspec".into(), vec![key.spec.clone()]);
        ctx.insert("kms:keyusage".into(), vec![key.usage.clone()]);
        ctx.insert("kms:keyorigin".into(), vec![key.origin.clone()]);
        for t in &key.tags {
            ctx.insert(
                format!("aws:resourcetag/{}", t.key.to_ascii_lowercase()),
                vec![t.value.clone()],
            );
        }
        // kms:ResourceAliases: the key's aliases as the state view holds them (looked up only
        // when a policy asks).
        if uses.resource_aliases
            && let Some(k) = RecordId::key(&key.key_id).and_then(|r| r.key_bits())
        {
            let (names, _) = self.core.ledger()?.aliases_of(k, None, usize::MAX);
            ctx.insert(
                "kms:resourcealiases".into(),
                names
                    .iter()
                    .map(|n| ekms_wire::region::alias_display(n).to_owned())
                    .collect(),
            );
        }
        let req = Request {
            principal: &arn,
            account: &self.core.config.account,
            action: &action,
            resource: &resource,
            context: &ctx,
        };
        // A grant is looked at only when no policy allows and none denies.
        let mut by_grant = None;
        let mut failed = None;
        let decision = eval::decide_lazy(&policy, &identity, &req, || {
            match self.grant_for(key, &arn, &action) {
                Ok(g) => {
                    let found = g.is_some();
                    by_grant = g;
                    found
                }
                Err(e) => {
                    failed = Some(e);
                    false
                }
            }
        });
        if let Some(e) = failed {
            return Err(e);
        }
        match decision {
            Decision::Allow => {
                *self.authz.by_grant.borrow_mut() = by_grant;
                Ok(())
            }
            d => Err(denied(&arn, &action, &resource, d).into()),
        }
    }

    /// Whether the caller may do an operation that names no key (identity policies only).
    pub(crate) fn authorize_account(&self) -> Result<(), KmsError> {
        self.authorize_identity("*")
    }

    /// Whether the caller's identity policies allow the action on `resource` (an operation on
    /// something other than a key: a principal, or nothing in particular).
    pub(crate) fn authorize_identity(&self, resource: &str) -> Result<(), KmsError> {
        if self.caller_may_do_everything() {
            return Ok(());
        }
        let Some((arn, identity)) = self.subject() else {
            return Ok(());
        };
        let ctx = self.context(&arn, eval::uses(identity.iter().copied()));
        let action = self.action();
        let req = Request {
            principal: &arn,
            account: &self.core.config.account,
            action: &action,
            resource,
            context: &ctx,
        };
        match eval::decide_identity(&identity, &req) {
            Decision::Allow => Ok(()),
            d => Err(denied_by(&arn, &action, resource, d, "identity-based")),
        }
    }

    /// AWS's policy lockout safety check: the new `policy` must still let the caller put a key
    /// policy, unless `bypass`.
    pub(crate) fn lockout_check(
        &self,
        key: &KeyRecord,
        policy: &str,
        bypass: bool,
    ) -> Result<(), KmsError> {
        if bypass {
            return Ok(());
        }
        let allowed = self.with_action("kms:PutKeyPolicy", || {
            self.authorize_with(key, Some(policy)).is_ok()
        });
        if allowed {
            Ok(())
        } else {
            Err(KmsError::new(
                KmsErrorCode::MalformedPolicyDocumentException,
                "The new key policy will not allow you to update the key policy in the future.",
            ))
        }
    }
}

/// The `GrantTokens` of a request body, if it has any (the body is parsed again only then).
/// AWS's limits on `GrantTokens`: at most 10, each 1 to 8,192 characters. Checked for every
/// operation, before anything else reads the tokens.
pub(crate) fn check_grant_tokens(body: &[u8]) -> Result<(), KmsError> {
    #[derive(serde::Deserialize)]
    struct Tokens {
        #[serde(rename = "GrantTokens", default)]
        grant_tokens: Vec<String>,
    }
    if !body.windows(11).any(|w| w == b"GrantTokens") {
        return Ok(());
    }
    let Ok(t) = serde_json::from_slice::<Tokens>(body) else {
        // The operation's own parser says what is wrong with the body.
        return Ok(());
    };
    if t.grant_tokens.len() > grant::MAX_GRANT_TOKENS {
        return Err(KmsError::validation(format!(
            "1 validation error detected: Value at 'grantTokens' failed to satisfy constraint: \
             Member must have length less than or equal to {}",
            grant::MAX_GRANT_TOKENS
        )));
    }
    if t.grant_tokens
        .iter()
        .any(|g| g.is_empty() || g.chars().count() > 8192)
    {
        return Err(KmsError::validation(
            "1 validation error detected: Value at 'grantTokens' failed to satisfy constraint: \
             Member must satisfy constraint: [Member must have length less than or equal to \
             8192, Member must have length greater than or equal to 1]",
        ));
    }
    Ok(())
}

fn grant_tokens(body: &[u8]) -> Vec<String> {
    #[derive(serde::Deserialize)]
    struct Tokens {
        #[serde(rename = "GrantTokens", default)]
        grant_tokens: Vec<String>,
    }
    if !body.windows(11).any(|w| w == b"GrantTokens") {
        return Vec::new();
    }
    serde_json::from_slice::<Tokens>(body)
        .map(|t| t.grant_tokens)
        .unwrap_or_default()
        .into_iter()
        .take(grant::MAX_GRANT_TOKENS)
        .collect()
}

/// AWS's `AccessDeniedException`.
fn denied(arn: &str, action: &str, resource: &str, d: Decision) -> KmsError {
    denied_by(arn, action, resource, d, "resource-based")
}

/// AWS's `AccessDeniedException` for a decision of `kind` policies (resource- or
/// identity-based).
fn denied_by(arn: &str, action: &str, resource: &str, d: Decision, kind: &str) -> KmsError {
    let why = match d {
        Decision::ExplicitDeny => "with an explicit deny in a policy".to_owned(),
        _ => format!("because no {kind} policy allows the {action} action"),
    };
    KmsError::new(
        KmsErrorCode::AccessDeniedException,
        format!("User: {arn} is not authorized to perform: {action} on resource: {resource} {why}"),
    )
}
