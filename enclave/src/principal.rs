//! Principals, the IAM side kept small: a named user with up to two access keys and an inline
//! identity policy, sealed like a key so the host can store it but never mint, alter, copy or
//! revive one.
//!
//! A principal record is sealed with its name as id. Records made before principals had names
//! of their own (the genesis administrator of older domains) are sealed with their access key
//! id and hold that one key in `access_key_id` / `secret`; they keep that id for life, and
//! [`PrincipalRecord::keys`] shows both forms alike.

use std::fmt;

use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, ZeroizeOnDrop};

/// Most access keys a principal has at once (IAM's limit): a second one while rotating.
pub const MAX_ACCESS_KEYS: usize = 2;
/// Longest principal name (IAM's limit for a user name).
pub const MAX_NAME: usize = 64;
/// The name of the domain's first administrator; no other principal may take it.
pub const ADMIN_NAME: &str = "admin";

/// A secret access key.
#[derive(Zeroize, ZeroizeOnDrop, Serialize, Deserialize)]
pub struct PrincipalSecret(pub String);

impl fmt::Debug for PrincipalSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PrincipalSecret(<redacted>)")
    }
}

/// One access key of a principal.
#[derive(Debug, Serialize, Deserialize)]
pub struct AccessKey {
    /// Access key id (`EKMS` and 16 base-32 characters).
    pub id: String,
    /// Its secret.
    pub secret: PrincipalSecret,
    /// When it was made, Unix milliseconds.
    pub created_ms: i64,
}

/// A principal.
#[derive(Serialize, Deserialize)]
pub struct PrincipalRecord {
    /// User name; the ARN is `arn:aws:iam::ACCOUNT:user/NAME`.
    pub name: String,
    /// IAM-style unique id (`AIDA…`): a principal deleted and made again under the same name is
    /// another principal.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub user_id: String,
    /// Its access keys (at most [`MAX_ACCESS_KEYS`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub access_keys: Vec<AccessKey>,
    /// When it was made, Unix milliseconds (0 in older records).
    #[serde(default)]
    pub created_ms: i64,
    /// Domain-wide sequence number of this version (0 in records made before there was one).
    #[serde(default)]
    pub generation: u64,
    /// Identity policies (JSON documents, like IAM inline policies). `None` in records made
    /// before principals had policies: the domain's administrator, who may do everything.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity_policies: Option<Vec<String>>,
    /// For the credentials of an external key store: its URI prefix (`ekms_wire::xks`). Such a
    /// principal signs XKS proxy calls of that key store only, never a KMS call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub xks_prefix: Option<String>,
    /// For an external key store: its secondary authorization rule, if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub xks_rule: Option<crate::xks::XksRule>,
    /// The one access key id of an older record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_key_id: Option<String>,
    /// The one secret of an older record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<PrincipalSecret>,
    /// The id the record is sealed under (not sealed): the name, or an older record's access
    /// key id.
    #[serde(skip)]
    pub id: String,
    /// The version this record was opened from (not sealed).
    #[serde(skip)]
    pub opened: Option<crate::ledger::Version>,
}

impl PrincipalRecord {
    /// A new principal `name` with one access key.
    #[must_use]
    pub fn new(name: &str, user_id: String, key: AccessKey, policy: Option<String>) -> Self {
        Self {
            name: name.to_owned(),
            user_id,
            created_ms: key.created_ms,
            access_keys: vec![key],
            generation: 0,
            identity_policies: policy.map(|p| vec![p]),
            xks_prefix: None,
            xks_rule: None,
            access_key_id: None,
            secret: None,
            id: name.to_owned(),
            opened: None,
        }
    }

    /// The principal's ARN in `account`.
    #[must_use]
    pub fn arn(&self, account: &str) -> String {
        format!("arn:aws:iam::{account}:user/{}", self.name)
    }

    /// Its access keys: ids and secrets.
    pub fn keys(&self) -> impl Iterator<Item = (&str, &PrincipalSecret)> {
        let older = self
            .access_key_id
            .as_deref()
            .zip(self.secret.as_ref())
            .into_iter();
        self.access_keys
            .iter()
            .map(|k| (k.id.as_str(), &k.secret))
            .chain(older)
    }

    /// Its access key ids.
    #[must_use]
    pub fn key_ids(&self) -> Vec<String> {
        self.keys().map(|(id, _)| id.to_owned()).collect()
    }

    /// The secret of access key `akid`, if it is one of this principal's.
    #[must_use]
    pub fn secret_of(&self, akid: &str) -> Option<&PrincipalSecret> {
        self.keys().find(|(id, _)| *id == akid).map(|(_, s)| s)
    }

    /// Moves an older record's one key into `access_keys` (before a new version is sealed).
    pub fn upgrade(&mut self) {
        if let (Some(id), Some(secret)) = (self.access_key_id.take(), self.secret.take()) {
            self.access_keys.insert(
                0,
                AccessKey {
                    id,
                    secret,
                    created_ms: self.created_ms,
                },
            );
        }
    }
}

impl fmt::Debug for PrincipalRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PrincipalRecord({}, {:?})", self.name, self.key_ids())
    }
}

/// Opens a sealed principal record (either form), noting the id it is sealed under.
pub fn open(
    keys: &crate::domain::Keyring,
    sealed: &[u8],
) -> Result<PrincipalRecord, crate::EnclaveError> {
    let h = crate::record::peek(sealed).ok_or(crate::EnclaveError::BadRecord)?;
    let id = h.id.to_owned();
    let mut rec: PrincipalRecord =
        crate::record::open(keys, crate::record::Kind::Principal, None, sealed)?;
    // A record of the current form is sealed under its name.
    if rec.access_key_id.is_none() && rec.name != id {
        return Err(crate::EnclaveError::BadRecord);
    }
    rec.id = id;
    Ok(rec)
}

/// Whether `name` is a valid principal name (IAM's user name rule: 1 to 64 of letters, digits
/// and `+=,.@_-`).
#[must_use]
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+=,.@_-".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(id: &str) -> AccessKey {
        AccessKey {
            id: id.into(),
            secret: PrincipalSecret("s".into()),
            created_ms: 1,
        }
    }

    #[test]
    fn older_records_show_their_one_key_and_upgrade_to_the_list() {
        let mut p = PrincipalRecord::new("admin", "AIDA".into(), key("EKMSB"), None);
        p.access_keys.clear();
        p.access_key_id = Some("EKMSA".into());
        p.secret = Some(PrincipalSecret("old".into()));
        assert_eq!(p.key_ids(), ["EKMSA"]);
        assert!(p.secret_of("EKMSA").is_some_and(|s| s.0 == "old"));
        p.upgrade();
        p.access_keys.push(key("EKMSB"));
        assert_eq!(p.key_ids(), ["EKMSA", "EKMSB"]);
        assert!(p.access_key_id.is_none() && p.secret.is_none());
    }

    #[test]
    fn names_follow_iam() {
        assert!(valid_name("alice"));
        assert!(valid_name("svc+ci=1,a.b@c_d-e"));
        for bad in ["", "a b", "a/b", "é", &"a".repeat(65)] {
            assert!(!valid_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn debug_hides_secrets() {
        let p = PrincipalRecord::new("alice", "AIDA".into(), key("EKMSA"), None);
        let shown = format!("{p:?} {:?}", p.access_keys);
        assert!(!shown.contains("\"s\""), "{shown}");
        assert!(shown.contains("<redacted>"));
    }
}
