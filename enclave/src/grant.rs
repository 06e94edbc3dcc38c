//! Grants: a sealed record that lets one principal (the grantee) use one key for some
//! operations, with optional encryption-context constraints, until it is retired or revoked.
//!
//! A grant record is sealed with the id `"<key id>/<grant id>"`, so it names its key: the host
//! cannot move it to another key, and cannot widen it (it is sealed). Retiring or revoking it
//! replaces it by a sealed tombstone in the state view, so a host that shows the record again,
//! in this enclave's life or after a restart (the view is rebuilt from the store and, with
//! witnesses, proven to be the latest), is refused. See docs/formats.md.
//!
//! A grant token is the sealed record itself (base64url): it works at once, without the host
//! finding the grant, and only while the state view holds that very record as live.

use std::collections::BTreeMap;

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::{EnclaveError, context::EncryptionContext, domain::Keyring, record};

/// Most live grants a key has (AWS's quota).
pub const MAX_GRANTS_PER_KEY: usize = 50_000;
/// Most grant tokens a request carries (AWS's limit).
pub const MAX_GRANT_TOKENS: usize = 10;
/// Longest grant token (AWS's limit).
pub const MAX_TOKEN_LEN: usize = 8192;

/// Every grant operation, by the key usage (and symmetric or not) that allows it (AWS's
/// "Grant operations" table).
pub const OPERATIONS: &[(&str, &[&str])] = &[
    (
        "SYMMETRIC_DEFAULT",
        &[
            "Decrypt",
            "Encrypt",
            "GenerateDataKey",
            "GenerateDataKeyWithoutPlaintext",
            "GenerateDataKeyPair",
            "GenerateDataKeyPairWithoutPlaintext",
            "ReEncryptFrom",
            "ReEncryptTo",
            "CreateGrant",
            "RetireGrant",
            "DescribeKey",
        ],
    ),
    (
        "ENCRYPT_DECRYPT",
        &[
            "Decrypt",
            "Encrypt",
            "ReEncryptFrom",
            "ReEncryptTo",
            "GetPublicKey",
            "CreateGrant",
            "RetireGrant",
            "DescribeKey",
        ],
    ),
    (
        "SIGN_VERIFY",
        &[
            "Sign",
            "Verify",
            "GetPublicKey",
            "CreateGrant",
            "RetireGrant",
            "DescribeKey",
        ],
    ),
    (
        "GENERATE_VERIFY_MAC",
        &[
            "GenerateMac",
            "VerifyMac",
            "CreateGrant",
            "RetireGrant",
            "DescribeKey",
        ],
    ),
    (
        "KEY_AGREEMENT",
        &[
            "DeriveSharedSecret",
            "GetPublicKey",
            "CreateGrant",
            "RetireGrant",
            "DescribeKey",
        ],
    ),
];

/// Operations that take an encryption context: the only ones a constrained grant may have.
pub const CONTEXT_OPERATIONS: &[&str] = &[
    "Decrypt",
    "Encrypt",
    "GenerateDataKey",
    "GenerateDataKeyWithoutPlaintext",
    "GenerateDataKeyPair",
    "GenerateDataKeyPairWithoutPlaintext",
    "ReEncryptFrom",
    "ReEncryptTo",
    "CreateGrant",
    "RetireGrant",
];

/// The grant operations a key of `spec` and `usage` allows.
#[must_use]
pub fn operations_for(spec: &str, usage: &str) -> &'static [&'static str] {
    let row = if spec == "SYMMETRIC_DEFAULT" {
        "SYMMETRIC_DEFAULT"
    } else {
        usage
    };
    OPERATIONS
        .iter()
        .find(|(u, _)| *u == row)
        .map_or(&[], |(_, ops)| ops)
}

/// Whether `op` is a grant operation of any key.
#[must_use]
pub fn is_operation(op: &str) -> bool {
    OPERATIONS.iter().any(|(_, ops)| ops.contains(&op))
}

/// Encryption-context constraints.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Constraints {
    /// The request's context must be exactly this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub equals: Option<BTreeMap<String, String>>,
    /// The request's context must include this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subset: Option<BTreeMap<String, String>>,
}

impl Constraints {
    /// Whether a request with context `ec` satisfies them.
    #[must_use]
    pub fn allow(&self, ec: &EncryptionContext) -> bool {
        self.equals.as_ref().is_none_or(|e| e == ec)
            && self
                .subset
                .as_ref()
                .is_none_or(|s| s.iter().all(|(k, v)| ec.get(k) == Some(v)))
    }

    /// Whether they are at least as strict as `parent` (a grant made through a grant may only
    /// narrow it): every request these allow, `parent` allows.
    #[must_use]
    pub fn within(&self, parent: &Self) -> bool {
        let equals_ok = match (&parent.equals, &self.equals) {
            (None, _) => true,
            (Some(p), Some(c)) => p == c,
            (Some(_), None) => false,
        };
        let subset_ok = match &parent.subset {
            None => true,
            Some(p) => {
                let has = |m: &BTreeMap<String, String>| p.iter().all(|(k, v)| m.get(k) == Some(v));
                self.equals.as_ref().is_some_and(has) || self.subset.as_ref().is_some_and(has)
            }
        };
        equals_ok && subset_ok
    }
}

/// A grant.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GrantRecord {
    /// Grant id (64 hex digits).
    pub grant_id: String,
    /// The key it is for.
    pub key_id: String,
    /// Its name (idempotency of `CreateGrant`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Who may use it.
    pub grantee: String,
    /// Who may retire it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retiring: Option<String>,
    /// What it allows.
    pub operations: Vec<String>,
    /// Its encryption-context constraints.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub constraints: Option<Constraints>,
    /// The account that made it (`arn:aws:iam::ACCOUNT:root`).
    pub issuing_account: String,
    /// When it was made, Unix milliseconds.
    pub created_ms: i64,
    /// The region of the key it is for: each replica of a multi-Region key has its own grants
    /// (absent in grants made before regions: that key's only region).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Domain-wide sequence number of this record.
    pub generation: u64,
    /// The version this record was opened from (not sealed).
    #[serde(skip)]
    pub opened: Option<crate::ledger::Version>,
}

impl GrantRecord {
    /// Whether it is a grant of the key as seen from `region`.
    #[must_use]
    pub fn in_region(&self, region: &str) -> bool {
        self.region.as_deref().is_none_or(|r| r == region)
    }

    /// The region of its key, `home` for a grant made before regions (every key was then in
    /// the home region).
    #[must_use]
    pub fn region_or<'a>(&'a self, home: &'a str) -> &'a str {
        self.region.as_deref().unwrap_or(home)
    }

    /// The id it is sealed under.
    #[must_use]
    pub fn sealed_id(&self) -> String {
        format!("{}/{}", self.key_id, self.grant_id)
    }

    /// Whether it lets `grantee` do `op` on key `key_id` with context `ec`. Constraints apply
    /// to the operations that carry a context; `CreateGrant` through a constrained grant must
    /// instead make a grant at least as constrained (checked by the operation).
    #[must_use]
    pub fn allows(&self, key_id: &str, grantee: &str, op: &str, ec: &EncryptionContext) -> bool {
        let no_context = matches!(op, "CreateGrant" | "RetireGrant");
        self.key_id == key_id
            && self.grantee == grantee
            && self.operations.iter().any(|o| o == op)
            && (no_context || self.constraints.as_ref().is_none_or(|c| c.allow(ec)))
    }
}

/// Opens a sealed grant, checking that its sealed id names its own key and grant id.
pub fn open(keys: &Keyring, sealed: &[u8]) -> Result<GrantRecord, EnclaveError> {
    let h = record::peek(sealed).ok_or(EnclaveError::BadRecord)?;
    let id = h.id.to_owned();
    let g: GrantRecord = record::open(keys, record::Kind::Grant, None, sealed)?;
    if g.sealed_id() != id {
        return Err(EnclaveError::BadRecord);
    }
    Ok(g)
}

/// The grant token of a sealed grant record.
#[must_use]
pub fn token(sealed: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sealed)
}

/// The sealed record a grant token carries (not yet opened); `None` if it is not a token.
#[must_use]
pub fn token_record(token: &str) -> Option<Vec<u8>> {
    if token.is_empty() || token.len() > MAX_TOKEN_LEN {
        return None;
    }
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .ok()?;
    (record::peek(&bytes)?.kind == record::Kind::Grant as u8).then_some(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn constraints_follow_aws() {
        let eq = Constraints {
            equals: Some(map(&[("a", "1")])),
            subset: None,
        };
        assert!(eq.allow(&map(&[("a", "1")])));
        assert!(!eq.allow(&map(&[("a", "1"), ("b", "2")])));
        let sub = Constraints {
            equals: None,
            subset: Some(map(&[("a", "1")])),
        };
        assert!(sub.allow(&map(&[("a", "1"), ("b", "2")])));
        assert!(!sub.allow(&map(&[("b", "2")])));
        assert!(Constraints::default().allow(&map(&[])));
        // Narrowing: a subset parent admits an equal child holding its pairs, not a wider one.
        assert!(eq.within(&sub));
        assert!(!Constraints::default().within(&sub));
        assert!(sub.within(&Constraints::default()));
        assert!(!sub.within(&eq));
    }

    #[test]
    fn operations_per_key_type_are_data() {
        assert!(
            operations_for("SYMMETRIC_DEFAULT", "ENCRYPT_DECRYPT").contains(&"GenerateDataKey")
        );
        assert!(!operations_for("RSA_2048", "ENCRYPT_DECRYPT").contains(&"GenerateDataKey"));
        assert!(operations_for("ECC_NIST_P256", "SIGN_VERIFY").contains(&"Sign"));
        assert!(operations_for("HMAC_256", "GENERATE_VERIFY_MAC").contains(&"VerifyMac"));
        assert!(is_operation("DeriveSharedSecret"));
        assert!(!is_operation("ScheduleKeyDeletion"));
    }

    #[test]
    fn tokens_are_sealed_grants_or_nothing() {
        assert!(token_record("").is_none());
        assert!(token_record("!!!").is_none());
        assert!(token_record(&"A".repeat(MAX_TOKEN_LEN + 1)).is_none());
        assert!(token_record(&token(b"EKMR\x01\x01........\x00\x01k")).is_none());
    }
}
