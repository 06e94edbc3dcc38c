//! Key policy documents: AWS's grammar checked on the way in (CreateKey, PutKeyPolicy), stored
//! verbatim in the sealed key record, returned byte for byte (GetKeyPolicy), and AWS's default
//! policy for keys created without one.
//!
//! Evaluation ([`eval`]) is AWS's: an explicit Deny wins; a key policy may allow a principal
//! directly, or allow the account (its root) and so delegate to the principal's identity
//! policies. `ops::authz` calls it for every operation. Identity policies (a principal's, like
//! IAM inline policies) follow the same grammar without `Principal`.

use serde_json::Value;

pub mod condition;
pub mod eval;
#[cfg(test)]
mod table_tests;

/// The identity policy of the domain's administrator (made with the domain): everything.
pub const ADMIN_POLICY: &str =
    r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"*","Resource":"*"}]}"#;

/// Largest key policy AWS accepts, in bytes.
pub const MAX_POLICY: usize = 32_768;

/// Why a document is not a key policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PolicyError {
    /// Not a key policy (`MalformedPolicyDocumentException`), with the reason.
    Malformed(String),
    /// Larger than [`MAX_POLICY`] (`LimitExceededException`).
    TooLarge,
}

const TOP_LEVEL: &[&str] = &["Version", "Id", "Statement"];
const STATEMENT: &[&str] = &[
    "Sid",
    "Effect",
    "Principal",
    "NotPrincipal",
    "Action",
    "NotAction",
    "Resource",
    "NotResource",
    "Condition",
];
const VERSIONS: &[&str] = &["2012-10-17", "2008-10-17"];

/// Checks `doc` against AWS's key policy grammar.
pub fn check(doc: &str) -> Result<(), PolicyError> {
    check_doc(doc, true)
}

/// Checks `doc` against IAM's identity policy grammar: a key policy's, without `Principal`.
pub fn check_identity(doc: &str) -> Result<(), PolicyError> {
    check_doc(doc, false)
}

fn check_doc(doc: &str, resource_based: bool) -> Result<(), PolicyError> {
    if doc.len() > MAX_POLICY {
        return Err(PolicyError::TooLarge);
    }
    let malformed = |why: &str| PolicyError::Malformed(why.to_owned());
    let v: Value =
        serde_json::from_str(doc).map_err(|_| malformed("The policy is not valid JSON."))?;
    let obj = v
        .as_object()
        .ok_or_else(|| malformed("The policy must be a JSON object."))?;
    if let Some(k) = obj.keys().find(|k| !TOP_LEVEL.contains(&k.as_str())) {
        return Err(PolicyError::Malformed(format!(
            "The policy contains an unknown element: {k}."
        )));
    }
    if let Some(version) = obj.get("Version")
        && !version.as_str().is_some_and(|s| VERSIONS.contains(&s))
    {
        return Err(malformed(
            "The policy Version must be 2012-10-17 or 2008-10-17.",
        ));
    }
    if obj.get("Id").is_some_and(|id| !id.is_string()) {
        return Err(malformed("The policy Id must be a string."));
    }
    let statements: Vec<&Value> = match obj.get("Statement") {
        Some(Value::Array(a)) if !a.is_empty() => a.iter().collect(),
        Some(s @ Value::Object(_)) => vec![s],
        _ => return Err(malformed("The policy must contain at least one Statement.")),
    };
    for s in statements {
        statement(s, resource_based)?;
    }
    Ok(())
}

fn statement(s: &Value, resource_based: bool) -> Result<(), PolicyError> {
    let malformed = |why: String| PolicyError::Malformed(why);
    let obj = s
        .as_object()
        .ok_or_else(|| malformed("Each Statement must be a JSON object.".into()))?;
    if let Some(k) = obj.keys().find(|k| !STATEMENT.contains(&k.as_str())) {
        return Err(malformed(format!(
            "A policy statement contains an unknown element: {k}."
        )));
    }
    if obj.get("Sid").is_some_and(|v| !v.is_string()) {
        return Err(malformed("A statement's Sid must be a string.".into()));
    }
    match obj.get("Effect").and_then(Value::as_str) {
        Some("Allow" | "Deny") => {}
        _ => {
            return Err(malformed(
                "A statement's Effect must be Allow or Deny.".into(),
            ));
        }
    }
    if resource_based {
        exactly_one(obj, "Principal", "NotPrincipal")?;
    } else if obj.contains_key("Principal") || obj.contains_key("NotPrincipal") {
        return Err(malformed(
            "Policy document should not specify a principal.".into(),
        ));
    }
    exactly_one(obj, "Action", "NotAction")?;
    exactly_one(obj, "Resource", "NotResource")?;
    for name in ["Principal", "NotPrincipal"] {
        if let Some(p) = obj.get(name) {
            principal(p)?;
        }
    }
    for name in ["Action", "NotAction", "Resource", "NotResource"] {
        if let Some(v) = obj.get(name)
            && !strings(v)
        {
            return Err(malformed(format!(
                "A statement's {name} must be a string or a list of strings."
            )));
        }
    }
    if let Some(c) = obj.get("Condition") {
        condition(c)?;
    }
    Ok(())
}

fn exactly_one(obj: &serde_json::Map<String, Value>, a: &str, b: &str) -> Result<(), PolicyError> {
    match (obj.contains_key(a), obj.contains_key(b)) {
        (true, false) | (false, true) => Ok(()),
        _ => Err(PolicyError::Malformed(format!(
            "Each statement of a key policy needs exactly one of {a} and {b}."
        ))),
    }
}

/// A string, or a non-empty list of strings.
fn strings(v: &Value) -> bool {
    match v {
        Value::String(_) => true,
        Value::Array(a) => !a.is_empty() && a.iter().all(Value::is_string),
        _ => false,
    }
}

fn principal(p: &Value) -> Result<(), PolicyError> {
    if p.as_str() == Some("*") {
        return Ok(());
    }
    let ok = p.as_object().is_some_and(|o| {
        !o.is_empty()
            && o.iter().all(|(k, v)| {
                matches!(
                    k.as_str(),
                    "AWS" | "Service" | "Federated" | "CanonicalUser"
                ) && strings(v)
            })
    });
    if ok {
        Ok(())
    } else {
        Err(PolicyError::Malformed(
            "Policy contains a statement with one or more invalid principals.".into(),
        ))
    }
}

fn condition(c: &Value) -> Result<(), PolicyError> {
    let ok = c.as_object().is_some_and(|ops| {
        ops.values().all(|keys| {
            keys.as_object().is_some_and(|k| {
                !k.is_empty()
                    && k.values().all(|v| {
                        matches!(v, Value::String(_) | Value::Bool(_) | Value::Number(_))
                            || v.as_array().is_some_and(|a| {
                                a.iter().all(|x| {
                                    matches!(
                                        x,
                                        Value::String(_) | Value::Bool(_) | Value::Number(_)
                                    )
                                })
                            })
                    })
            })
        })
    });
    if ok {
        Ok(())
    } else {
        Err(PolicyError::Malformed(
            "A statement's Condition must map operators to keys and values.".into(),
        ))
    }
}

/// AWS's default key policy for `account`, formatted as AWS returns it: the account's root may
/// do everything, which delegates to identity policies.
#[must_use]
pub fn default_policy(account: &str) -> String {
    format!(
        "{{\n  \"Version\" : \"2012-10-17\",\n  \"Id\" : \"key-default-1\",\n  \"Statement\" : [ {{\n    \"Sid\" : \"Enable IAM User Permissions\",\n    \"Effect\" : \"Allow\",\n    \"Principal\" : {{\n      \"AWS\" : \"arn:aws:iam::{account}:root\"\n    }},\n    \"Action\" : \"kms:*\",\n    \"Resource\" : \"*\"\n  }} ]\n}}"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_policy_is_a_valid_policy() {
        let p = default_policy("111122223333");
        check(&p).unwrap();
        let v: Value = serde_json::from_str(&p).unwrap();
        assert_eq!(
            v["Statement"][0]["Principal"]["AWS"],
            "arn:aws:iam::111122223333:root"
        );
    }

    #[test]
    fn malformed_documents_are_refused_with_a_reason() {
        let ok = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"AWS":"*"},"Action":["kms:Decrypt","kms:Encrypt"],"Resource":"*","Condition":{"StringEquals":{"kms:EncryptionContext:app":"x"}}}]}"#;
        check(ok).unwrap();
        for bad in [
            "not json",
            "[]",
            r#"{"Statement":[]}"#,
            r#"{"Version":"2012-10-17","Statement":[{"Effect":"Maybe","Principal":"*","Action":"kms:*","Resource":"*"}]}"#,
            r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"kms:*","Resource":"*"}]}"#,
            r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":"*","Action":"kms:*","NotAction":"kms:Decrypt","Resource":"*"}]}"#,
            r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Bob":"x"},"Action":"kms:*","Resource":"*"}]}"#,
            r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":"*","Action":"kms:*","Resource":"*","Frobnicate":1}]}"#,
            r#"{"Version":"2012-10-17","Extra":1,"Statement":[{"Effect":"Allow","Principal":"*","Action":"kms:*","Resource":"*"}]}"#,
            r#"{"Version":"1999-01-01","Statement":[{"Effect":"Allow","Principal":"*","Action":"kms:*","Resource":"*"}]}"#,
            r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":"*","Action":[],"Resource":"*"}]}"#,
            r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":"*","Action":"kms:*","Resource":"*","Condition":{"StringEquals":"x"}}]}"#,
        ] {
            assert!(
                matches!(check(bad), Err(PolicyError::Malformed(_))),
                "{bad}"
            );
        }
        let big = format!(
            r#"{{"Version":"2012-10-17","Statement":[{{"Sid":"{}","Effect":"Allow","Principal":"*","Action":"kms:*","Resource":"*"}}]}}"#,
            "x".repeat(MAX_POLICY)
        );
        assert_eq!(check(&big), Err(PolicyError::TooLarge));
    }
}
