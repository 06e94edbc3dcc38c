//! AWS's evaluation of a KMS request against a key policy, the caller's identity policies and
//! its grants ("Determining access to an AWS KMS key" in the KMS developer guide; "Policy
//! evaluation logic" in the IAM user guide):
//!
//! 1. An explicit `Deny` in any applicable policy wins.
//! 2. Otherwise the request is allowed when the key policy allows the caller directly, or a
//!    grant allows it, or the key policy allows the caller's account (its root, or the bare
//!    account id) *and* one of the caller's identity policies allows it.
//! 3. Otherwise it is denied implicitly.

use serde_json::Value;

use super::condition::{Context, glob, glob_tokens, matches, substitute};

/// A request as the policies see it.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// The caller, e.g. `arn:aws:iam::111122223333:user/alice`.
    pub principal: &'a str,
    /// The caller's account.
    pub account: &'a str,
    /// The action, e.g. `kms:Decrypt`.
    pub action: &'a str,
    /// The key ARN.
    pub resource: &'a str,
    /// Condition keys (lower case) and their values.
    pub context: &'a Context,
}

/// The outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Allowed.
    Allow,
    /// An explicit `Deny` applies.
    ExplicitDeny,
    /// Nothing allows it.
    ImplicitDeny,
}

/// What one set of statements says about a request.
#[derive(Debug, Default, Clone, Copy)]
struct Verdict {
    deny: bool,
    /// An `Allow` naming the caller (or everyone).
    allow: bool,
    /// An `Allow` naming the caller's account, which delegates to identity policies.
    allow_account: bool,
}

/// Decides `req` against a key policy, the caller's identity policies and whether a grant
/// allows it. Documents that do not parse allow nothing.
#[must_use]
pub fn decide(
    key_policy: &str,
    identity: &[&str],
    grant_allows: bool,
    req: &Request<'_>,
) -> Decision {
    decide_lazy(key_policy, identity, req, || grant_allows)
}

/// As [`decide`], asking `grant_allows` only when a grant would change the answer (nothing
/// denies explicitly and no policy allows): each document is read once.
pub fn decide_lazy(
    key_policy: &str,
    identity: &[&str],
    req: &Request<'_>,
    grant_allows: impl FnOnce() -> bool,
) -> Decision {
    let k = verdict(key_policy, req, true);
    let i = identity
        .iter()
        .map(|doc| verdict(doc, req, false))
        .fold(Verdict::default(), |a, b| Verdict {
            deny: a.deny || b.deny,
            allow: a.allow || b.allow,
            allow_account: a.allow_account || b.allow_account,
        });
    if k.deny || i.deny {
        Decision::ExplicitDeny
    } else if k.allow || (k.allow_account && i.allow) || grant_allows() {
        Decision::Allow
    } else {
        Decision::ImplicitDeny
    }
}

/// Decides an action that names no key (CreateKey, ListKeys, ListAliases, GenerateRandom):
/// identity policies alone, as IAM does for actions without a resource policy.
#[must_use]
pub fn decide_identity(identity: &[&str], req: &Request<'_>) -> Decision {
    let verdicts: Vec<Verdict> = identity.iter().map(|d| verdict(d, req, false)).collect();
    if verdicts.iter().any(|v| v.deny) {
        Decision::ExplicitDeny
    } else if verdicts.iter().any(|v| v.allow) {
        Decision::Allow
    } else {
        Decision::ImplicitDeny
    }
}

fn statements(doc: &Value) -> Vec<&Value> {
    match doc.get("Statement") {
        Some(Value::Array(a)) => a.iter().collect(),
        Some(s @ Value::Object(_)) => vec![s],
        _ => Vec::new(),
    }
}

/// Parsed policy documents by their text: a key's policy is read on every call that is not
/// decided by the fast path, and parsing it costs more than evaluating it. Bounded by
/// [`CACHE_BYTES`] of document text (dropped and refilled when full). Holds only what sealed
/// records hold; nothing secret.
static PARSED: std::sync::OnceLock<std::sync::RwLock<Parsed>> = std::sync::OnceLock::new();
/// Most policy text kept parsed.
const CACHE_BYTES: usize = 4 << 20;

#[derive(Default)]
struct Parsed {
    docs: std::collections::HashMap<Box<str>, std::sync::Arc<Doc>>,
    bytes: usize,
}

/// A parsed document, and which of the costly condition keys it mentions.
struct Doc {
    value: Value,
    uses: Uses,
}

/// Condition keys whose values cost something to work out (a lookup in the state view, a
/// clock reading formatted): the request sets them only when some document mentions them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Uses {
    /// `kms:ResourceAliases`.
    pub resource_aliases: bool,
    /// `aws:CurrentTime`.
    pub current_time: bool,
    /// `aws:EpochTime`.
    pub epoch_time: bool,
}

impl Uses {
    /// What `doc` mentions, anywhere (a condition key, or a policy variable), ignoring case.
    fn of(doc: &str) -> Self {
        let lower = doc.to_ascii_lowercase();
        Self {
            resource_aliases: lower.contains("kms:resourcealiases"),
            current_time: lower.contains("aws:currenttime"),
            epoch_time: lower.contains("aws:epochtime"),
        }
    }

    fn or(self, o: Self) -> Self {
        Self {
            resource_aliases: self.resource_aliases || o.resource_aliases,
            current_time: self.current_time || o.current_time,
            epoch_time: self.epoch_time || o.epoch_time,
        }
    }
}

/// The costly condition keys that any of `docs` mentions (a document that is not JSON
/// mentions none: it allows nothing).
pub fn uses<'d>(docs: impl IntoIterator<Item = &'d str>) -> Uses {
    docs.into_iter()
        .filter_map(parsed)
        .fold(Uses::default(), |a, d| a.or(d.uses))
}

/// `doc` parsed, from the cache when it was parsed before; `None` when it is not JSON.
fn parsed(doc: &str) -> Option<std::sync::Arc<Doc>> {
    let cache = PARSED.get_or_init(Default::default);
    if let Some(v) = cache.read().ok().and_then(|c| c.docs.get(doc).cloned()) {
        return Some(v);
    }
    let v = std::sync::Arc::new(Doc {
        value: serde_json::from_str::<Value>(doc).ok()?,
        uses: Uses::of(doc),
    });
    if let Ok(mut c) = cache.write() {
        if c.bytes + doc.len() > CACHE_BYTES {
            c.docs.clear();
            c.bytes = 0;
        }
        c.bytes += doc.len();
        c.docs.insert(doc.into(), std::sync::Arc::clone(&v));
    }
    Some(v)
}

fn verdict(doc: &str, req: &Request<'_>, resource_policy: bool) -> Verdict {
    let Some(parsed) = parsed(doc) else {
        return Verdict::default();
    };
    let doc = &parsed.value;
    let action = lower(req.action);
    // Policy variables exist in version 2012-10-17 only (in 2008-10-17 `${…}` is literal).
    let variables = doc.get("Version").and_then(Value::as_str) == Some("2012-10-17");
    let mut v = Verdict::default();
    for s in statements(doc) {
        let Some(who) = (if resource_policy {
            principal_match(s, req)
        } else {
            Some(Who::Caller)
        }) else {
            continue;
        };
        if !action_match(s, &action)
            || !resource_match(s, req, variables)
            || !s
                .get("Condition")
                .is_none_or(|c| matches(c, req.context, variables))
        {
            continue;
        }
        match s.get("Effect").and_then(Value::as_str) {
            // A Deny naming the account applies to every identity in it.
            Some("Deny") => v.deny = true,
            Some("Allow") => match who {
                Who::Caller => v.allow = true,
                Who::Account => v.allow_account = true,
            },
            _ => {}
        }
    }
    v
}

/// How a statement's principal covers the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Who {
    /// By name, or everyone.
    Caller,
    /// Through its account.
    Account,
}

fn principal_match(s: &Value, req: &Request<'_>) -> Option<Who> {
    if let Some(p) = s.get("Principal") {
        return covers(p, req);
    }
    // NotPrincipal: everyone but those named.
    let named = covers(s.get("NotPrincipal")?, req);
    named.is_none().then_some(Who::Caller)
}

fn covers(p: &Value, req: &Request<'_>) -> Option<Who> {
    if p.as_str() == Some("*") {
        return Some(Who::Caller);
    }
    let is_root = |name: &str| {
        name.strip_prefix("arn:aws:iam::")
            .and_then(|r| r.strip_suffix(":root"))
            == Some(req.account)
    };
    let mut best = None;
    for name in list(p.get("AWS")?) {
        if name == "*" || name == req.principal {
            return Some(Who::Caller);
        }
        if is_root(name) || name == req.account {
            best = Some(if is_root(req.principal) {
                Who::Caller
            } else {
                Who::Account
            });
        }
    }
    best
}

fn list(v: &Value) -> impl Iterator<Item = &str> {
    let (one, many): (Option<&str>, &[Value]) = match v {
        Value::String(s) => (Some(s.as_str()), &[]),
        Value::Array(a) => (None, a.as_slice()),
        _ => (None, &[]),
    };
    one.into_iter().chain(many.iter().filter_map(Value::as_str))
}

/// `s` in lower case, copied only when it has an upper-case letter.
fn lower(s: &str) -> std::borrow::Cow<'_, str> {
    if s.bytes().any(|b| b.is_ascii_uppercase()) {
        std::borrow::Cow::Owned(s.to_ascii_lowercase())
    } else {
        std::borrow::Cow::Borrowed(s)
    }
}

/// Whether the statement's `Action` (or `NotAction`) covers `action` (lower case).
fn action_match(s: &Value, action: &str) -> bool {
    let any = |v: &Value| list(v).any(|a| glob(&lower(a), action));
    match (s.get("Action"), s.get("NotAction")) {
        (Some(a), _) => any(a),
        (None, Some(n)) => !any(n),
        (None, None) => false,
    }
}

fn resource_match(s: &Value, req: &Request<'_>, variables: bool) -> bool {
    let one = |r: &str| {
        if variables {
            substitute(r, req.context).is_some_and(|p| glob_tokens(&p, req.resource))
        } else {
            glob(r, req.resource)
        }
    };
    let any = |v: &Value| list(v).any(one);
    match (s.get("Resource"), s.get("NotResource")) {
        (Some(r), _) => any(r),
        (None, Some(n)) => !any(n),
        // Identity policies always name one; a statement without is malformed.
        (None, None) => false,
    }
}
