//! Key references and the host's plan for a call: which sealed records to fetch before the
//! enclave runs it. The host only plans; the enclave re-parses and decides. A wrong plan costs
//! the host a `NotFoundException`, never a wrong answer.

use base64::Engine as _;
use serde_json::Value;

use crate::blob::BlobHeader;

/// How a request names a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyRef {
    /// A key id (UUID, lower case), given bare or as a key ARN.
    Id(String),
    /// An alias name (`alias/...`), given bare or as an alias ARN.
    Alias(String),
}

/// Parses a `KeyId`-style field: key id, key ARN, alias name or alias ARN. `None` when the
/// string is none of those (the enclave answers `NotFoundException: Invalid keyId`).
#[must_use]
pub fn parse_key_ref(s: &str) -> Option<KeyRef> {
    if let Some(rest) = s.strip_prefix("arn:") {
        // arn:PARTITION:kms:REGION:ACCOUNT:key/ID or ...:alias/NAME
        let mut parts = rest.splitn(5, ':');
        let (_partition, service, _region, _account, resource) = (
            parts.next()?,
            parts.next()?,
            parts.next()?,
            parts.next()?,
            parts.next()?,
        );
        if service != "kms" {
            return None;
        }
        if let Some(id) = resource.strip_prefix("key/") {
            return parse_uuid(id).map(KeyRef::Id);
        }
        if resource.starts_with("alias/") {
            return Some(KeyRef::Alias(resource.to_owned()));
        }
        return None;
    }
    if s.starts_with("alias/") {
        return Some(KeyRef::Alias(s.to_owned()));
    }
    parse_uuid(s).map(KeyRef::Id)
}

/// Canonical form of a key id, or `None`: a UUID (hyphenated, lower case), or a multi-Region
/// key's `mrk-` and 32 lower-case hex digits.
#[must_use]
pub fn parse_uuid(s: &str) -> Option<String> {
    key_id_bytes(s).map(key_id_of)
}

/// The 16 bytes a key id stands for (as ciphertext blobs carry them). Multi-Region key ids are
/// UUIDs of version 8 written as `mrk-` and their 32 hex digits; other key ids are random
/// (version 4) UUIDs written hyphenated. So each 16 bytes have exactly one spelling.
#[must_use]
pub fn key_id_bytes(s: &str) -> Option<[u8; 16]> {
    if let Some(hex) = s.strip_prefix("mrk-") {
        if hex.len() != 32 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let u = uuid::Uuid::try_parse(hex).ok()?;
        return (u.get_version_num() == 8).then(|| *u.as_bytes());
    }
    // Only the hyphenated 36-character form is a KMS key id.
    if s.len() != 36 {
        return None;
    }
    let u = uuid::Uuid::try_parse(s).ok()?;
    (u.get_version_num() != 8).then(|| *u.as_bytes())
}

/// The key id of 16 bytes (see [`key_id_bytes`]).
#[must_use]
pub fn key_id_of(bytes: [u8; 16]) -> String {
    let u = uuid::Uuid::from_bytes(bytes);
    if u.get_version_num() == 8 {
        format!("mrk-{}", u.simple())
    } else {
        u.hyphenated().to_string()
    }
}

/// Whether `key_id` names a multi-Region key.
#[must_use]
pub fn is_multi_region(key_id: &str) -> bool {
    key_id.starts_with("mrk-")
}

/// What the host should fetch for a call.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Keys named by the request.
    pub keys: Vec<KeyRef>,
    /// Aliases named by the request (they are fetched together with their target keys).
    pub aliases: Vec<String>,
    /// Principals named by the request (appliance operations on principals), by name.
    pub principals: Vec<String>,
    /// Grants the request names (key id, grant id): RetireGrant, RevokeGrant, ListGrants.
    pub grants: Vec<(String, String)>,
    /// CreateGrant's `Name` (key id, name): the grants of that name, for idempotency.
    pub grant_name: Option<(String, String)>,
    /// ListGrants' `GranteePrincipal` filter (key id, grantee).
    pub grantee: Option<(String, String)>,
    /// A listing to page through, if the operation lists.
    pub listing: Option<Listing>,
}

/// A listing operation.
#[derive(Debug, PartialEq, Eq)]
pub enum Listing {
    /// `ListKeys`.
    Keys {
        /// Page size.
        limit: usize,
        /// Marker from the previous page.
        marker: Option<String>,
    },
    /// `ListAliases`, optionally for one key.
    Aliases {
        /// Page size.
        limit: usize,
        /// Marker from the previous page.
        marker: Option<String>,
    },
    /// `ListGrants` of a key.
    Grants {
        /// The key id.
        key_id: String,
        /// Page size.
        limit: usize,
        /// Marker from the previous page.
        marker: Option<String>,
    },
    /// `ListRetirableGrants`.
    Retirable {
        /// The retiring principal.
        retiring: String,
        /// Page size.
        limit: usize,
        /// Marker from the previous page.
        marker: Option<String>,
    },
    /// `EkmsListPrincipals`.
    Principals {
        /// Page size.
        limit: usize,
        /// Marker from the previous page.
        marker: Option<String>,
    },
}

/// Default page size of KMS list operations.
pub const DEFAULT_LIMIT: usize = 100;
/// Largest page size of KMS list operations.
pub const MAX_LIMIT: usize = 1000;
/// Default page size of the grant listings.
pub const DEFAULT_GRANT_LIMIT: usize = 50;
/// Largest page size of the grant listings.
pub const MAX_GRANT_LIMIT: usize = 100;
/// Default page size of `ListAliases`.
pub const DEFAULT_ALIAS_LIMIT: usize = 50;
/// Largest page size of `ListAliases`.
pub const MAX_ALIAS_LIMIT: usize = 100;

/// Plans a call from its operation name and JSON body. Never fails: what cannot be planned is
/// left for the enclave to reject.
#[must_use]
pub fn plan(op: &str, body: &[u8]) -> Plan {
    let Ok(Value::Object(obj)) = serde_json::from_slice::<Value>(body) else {
        return Plan::default();
    };
    let mut plan = Plan::default();
    let key_field = |name: &str, plan: &mut Plan| {
        if let Some(Value::String(s)) = obj.get(name) {
            match parse_key_ref(s) {
                Some(KeyRef::Alias(a)) => plan.aliases.push(a),
                Some(r) => plan.keys.push(r),
                None => {}
            }
        }
    };
    for field in ["KeyId", "TargetKeyId", "DestinationKeyId", "SourceKeyId"] {
        key_field(field, &mut plan);
    }
    if let Some(Value::String(name)) = obj.get("AliasName") {
        plan.aliases.push(name.clone());
    }
    if matches!(op, "Decrypt" | "ReEncrypt")
        && let Some(id) = obj
            .get("CiphertextBlob")
            .and_then(Value::as_str)
            .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
            .and_then(|b| BlobHeader::parse(&b).map(|(h, _)| h.key_id))
    {
        plan.keys.push(KeyRef::Id(key_id_of(id)));
    }
    let limit = obj
        .get("Limit")
        .and_then(Value::as_u64)
        .and_then(|l| usize::try_from(l).ok())
        .map_or(DEFAULT_LIMIT, |l| l.clamp(1, MAX_LIMIT));
    let marker = obj.get("Marker").and_then(Value::as_str).map(str::to_owned);
    match op {
        "ListKeys" => plan.listing = Some(Listing::Keys { limit, marker }),
        "ListAliases" => {
            let limit = obj
                .get("Limit")
                .and_then(Value::as_u64)
                .and_then(|l| usize::try_from(l).ok())
                .map_or(DEFAULT_ALIAS_LIMIT, |l| l.clamp(1, MAX_ALIAS_LIMIT));
            plan.listing = Some(Listing::Aliases { limit, marker });
        }
        "EkmsListPrincipals" => plan.listing = Some(Listing::Principals { limit, marker }),
        _ => {}
    }
    if op.starts_with("Ekms")
        && let Some(Value::String(name)) = obj.get("UserName")
    {
        plan.principals.push(name.clone());
    }
    // An external key store's credentials are a principal record named after its prefix.
    if op.starts_with("Ekms")
        && op.contains("Xks")
        && let Some(Value::String(prefix)) = obj.get("UriPrefix")
    {
        plan.principals.push(crate::xks::credential_record(prefix));
    }
    plan_grants(op, &obj, &mut plan);
    plan
}

/// The grant records a grant operation needs.
fn plan_grants(op: &str, obj: &serde_json::Map<String, Value>, plan: &mut Plan) {
    let s = |k: &str| obj.get(k).and_then(Value::as_str).map(str::to_owned);
    let key = plan.keys.iter().find_map(|k| match k {
        KeyRef::Id(id) => Some(id.clone()),
        KeyRef::Alias(_) => None,
    });
    let limit = obj
        .get("Limit")
        .and_then(Value::as_u64)
        .and_then(|l| usize::try_from(l).ok())
        .map_or(DEFAULT_GRANT_LIMIT, |l| l.clamp(1, MAX_GRANT_LIMIT));
    let marker = s("Marker");
    match op {
        "RetireGrant" => {
            // A grant token is a sealed grant record: its public header names key and grant.
            let from_token = s("GrantToken")
                .and_then(|t| {
                    base64::engine::general_purpose::URL_SAFE_NO_PAD
                        .decode(t)
                        .ok()
                })
                .and_then(|b| {
                    crate::sealed::peek(&b).and_then(|h| {
                        h.id.split_once('/')
                            .map(|(k, g)| (k.to_owned(), g.to_owned()))
                    })
                });
            if let Some((k, g)) = from_token {
                plan.keys.push(KeyRef::Id(k.clone()));
                plan.grants.push((k, g));
            } else if let (Some(k), Some(g)) = (key, s("GrantId")) {
                plan.grants.push((k, g));
            }
        }
        "RevokeGrant" => {
            if let (Some(k), Some(g)) = (key, s("GrantId")) {
                plan.grants.push((k, g));
            }
        }
        "CreateGrant" => {
            if let (Some(k), Some(n)) = (key, s("Name")) {
                plan.grant_name = Some((k, n));
            }
        }
        "ListGrants" => {
            if let Some(k) = key {
                if let Some(g) = s("GrantId") {
                    plan.grants.push((k, g));
                } else if let Some(p) = s("GranteePrincipal") {
                    plan.grantee = Some((k, p));
                } else {
                    plan.listing = Some(Listing::Grants {
                        key_id: k,
                        limit,
                        marker,
                    });
                }
            }
        }
        "ListRetirableGrants" => {
            if let Some(r) = s("RetiringPrincipal") {
                plan.listing = Some(Listing::Retirable {
                    retiring: r,
                    limit,
                    marker,
                });
            }
        }
        _ => {}
    }
}

/// Every operation of the AWS KMS API (`TrentService.<Op>`), for telling an operation this
/// appliance does not support yet (`UnsupportedOperationException`) from one that does not exist
/// (`UnknownOperationException`).
pub const AWS_KMS_OPERATIONS: &[&str] = &[
    "CancelKeyDeletion",
    "ConnectCustomKeyStore",
    "CreateAlias",
    "CreateCustomKeyStore",
    "CreateGrant",
    "CreateKey",
    "Decrypt",
    "DeleteAlias",
    "DeleteCustomKeyStore",
    "DeleteImportedKeyMaterial",
    "DeriveSharedSecret",
    "DescribeCustomKeyStores",
    "DescribeKey",
    "DisableKey",
    "DisableKeyRotation",
    "DisconnectCustomKeyStore",
    "EnableKey",
    "EnableKeyRotation",
    "Encrypt",
    "GenerateDataKey",
    "GenerateDataKeyPair",
    "GenerateDataKeyPairWithoutPlaintext",
    "GenerateDataKeyWithoutPlaintext",
    "GenerateMac",
    "GenerateRandom",
    "GetKeyLastUsage",
    "GetKeyPolicy",
    "GetKeyRotationStatus",
    "GetParametersForImport",
    "GetPublicKey",
    "ImportKeyMaterial",
    "ListAliases",
    "ListGrants",
    "ListKeyPolicies",
    "ListKeyRotations",
    "ListKeys",
    "ListResourceTags",
    "ListRetirableGrants",
    "PutKeyPolicy",
    "ReEncrypt",
    "ReplicateKey",
    "RetireGrant",
    "RevokeGrant",
    "RotateKeyOnDemand",
    "ScheduleKeyDeletion",
    "Sign",
    "TagResource",
    "UntagResource",
    "UpdateAlias",
    "UpdateCustomKeyStore",
    "UpdateKeyDescription",
    "UpdatePrimaryRegion",
    "Verify",
    "VerifyMac",
];

/// The operations whose success counts as a use of the key for `GetKeyLastUsage` (AWS's
/// `KeyLastUsageTrackingOperation` enum). ReEncrypt uses, and counts for, both of its keys.
pub const LAST_USAGE_OPERATIONS: &[&str] = &[
    "Decrypt",
    "DeriveSharedSecret",
    "Encrypt",
    "GenerateDataKey",
    "GenerateDataKeyPair",
    "GenerateDataKeyPairWithoutPlaintext",
    "GenerateDataKeyWithoutPlaintext",
    "GenerateMac",
    "ReEncrypt",
    "Sign",
    "Verify",
    "VerifyMac",
];

/// The request id of a signed request, as the appliance shows it (`x-amzn-RequestId`, and
/// `KmsRequestId` in `GetKeyLastUsage`): the first 16 bytes of SHA-256 of the request's `SigV4`
/// signature (64 lower-case hex digits), written as a UUID. Both sides compute the digest (this
/// crate does no cryptography) and format it here, so the enclave records exactly the id the
/// client was shown, and the host cannot choose it.
#[must_use]
pub fn request_id(digest16: [u8; 16]) -> String {
    uuid::Uuid::from_bytes(digest16).hyphenated().to_string()
}

/// The `SigV4` signature an `Authorization` header names, when it is well formed (64 lower-case
/// hex digits, the one spelling a verified signature has): what [`request_id`] is derived from.
#[must_use]
pub fn signature_of(authorization: &str) -> Option<&str> {
    let sig = authorization
        .split("Signature=")
        .nth(1)?
        .split(',')
        .next()?
        .trim();
    (sig.len() == 64 && sig.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))).then_some(sig)
}

/// The operations of [`AWS_KMS_OPERATIONS`] that change state (keys, aliases, tags, policies,
/// grants, rotation, key material, custom key stores). The enclave runs a signed request of one
/// of these at most once within the `SigV4` skew window (replay refusal); every other operation
/// only reads, and may be repeated. The one place this is decided: a new state-changing
/// operation goes here, and a unit test fails until every AWS operation is classified.
pub const STATE_CHANGING_OPERATIONS: &[&str] = &[
    "CancelKeyDeletion",
    "ConnectCustomKeyStore",
    "CreateAlias",
    "CreateCustomKeyStore",
    "CreateGrant",
    "CreateKey",
    "DeleteAlias",
    "DeleteCustomKeyStore",
    "DeleteImportedKeyMaterial",
    "DisableKey",
    "DisableKeyRotation",
    "DisconnectCustomKeyStore",
    "EnableKey",
    "EnableKeyRotation",
    "ImportKeyMaterial",
    "PutKeyPolicy",
    "ReplicateKey",
    "RetireGrant",
    "RevokeGrant",
    "RotateKeyOnDemand",
    "ScheduleKeyDeletion",
    "TagResource",
    "UntagResource",
    "UpdateAlias",
    "UpdateCustomKeyStore",
    "UpdateKeyDescription",
    "UpdatePrimaryRegion",
];

/// Operations of this appliance beyond AWS KMS's, on the same protocol (`TrentService.<Op>`,
/// `SigV4` for service `kms`). All but [`APPLIANCE_READS`] change state.
pub const APPLIANCE_OPERATIONS: &[&str] = &[
    // A witnessed writer that cannot prove its state (a quorum of witnesses lost) serves the
    // state it loaded, on a signed request of a principal; docs/state.md.
    "EkmsAcceptUnwitnessedState",
    // Principals (the IAM side): docs/authorization.md.
    "EkmsCreateAccessKey",
    "EkmsCreatePrincipal",
    "EkmsDeleteAccessKey",
    "EkmsDeletePrincipal",
    "EkmsListPrincipals",
    "EkmsPutPrincipalPolicy",
    // External key stores (the XKS proxy API): docs/xks.md.
    "EkmsCreateXksCredential",
    "EkmsCreateXksKey",
    "EkmsDeleteXksCredential",
    "EkmsListXksCredentials",
    "EkmsPutXksAccessRule",
];

/// The operations of [`APPLIANCE_OPERATIONS`] that only read.
pub const APPLIANCE_READS: &[&str] = &["EkmsListPrincipals", "EkmsListXksCredentials"];

/// Whether `op` is an operation of AWS KMS or of this appliance.
#[must_use]
pub fn is_known(op: &str) -> bool {
    AWS_KMS_OPERATIONS.contains(&op) || APPLIANCE_OPERATIONS.contains(&op)
}

/// Whether `op` (an operation name without the `TrentService.` prefix) changes state.
#[must_use]
pub fn changes_state(op: &str) -> bool {
    STATE_CHANGING_OPERATIONS.contains(&op)
        || (APPLIANCE_OPERATIONS.contains(&op) && !APPLIANCE_READS.contains(&op))
}

/// Encodes a list position as an opaque marker.
#[must_use]
pub fn encode_marker(last: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(last.as_bytes())
}

/// Decodes a marker made by [`encode_marker`]; `None` for anything else.
#[must_use]
pub fn decode_marker(marker: &str) -> Option<String> {
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(marker)
        .ok()?;
    String::from_utf8(bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "1234abcd-12ab-34cd-56ef-1234567890ab";

    #[test]
    fn key_refs_in_every_form() {
        assert_eq!(parse_key_ref(ID), Some(KeyRef::Id(ID.into())));
        assert_eq!(
            parse_key_ref(&format!("arn:aws:kms:us-east-1:111122223333:key/{ID}")),
            Some(KeyRef::Id(ID.into()))
        );
        assert_eq!(
            parse_key_ref("alias/app"),
            Some(KeyRef::Alias("alias/app".into()))
        );
        assert_eq!(
            parse_key_ref("arn:aws:kms:us-east-1:111122223333:alias/app"),
            Some(KeyRef::Alias("alias/app".into()))
        );
        assert_eq!(parse_key_ref("fake-key-id"), None);
        assert_eq!(parse_key_ref("134f2428cec14b25a1ae9048164dba47"), None);
        assert_eq!(parse_key_ref("arn:aws:s3:::bucket"), None);
        assert_eq!(parse_key_ref("arn:aws:kms"), None);
    }

    #[test]
    fn every_aws_operation_is_classified_as_read_or_state_changing() {
        // Reads only: repeating one changes nothing (GetParametersForImport hands out a fresh
        // wrapping key each time and changes no key).
        const READS: &[&str] = &[
            "Decrypt",
            "DeriveSharedSecret",
            "DescribeCustomKeyStores",
            "DescribeKey",
            "Encrypt",
            "GenerateDataKey",
            "GenerateDataKeyPair",
            "GenerateDataKeyPairWithoutPlaintext",
            "GenerateDataKeyWithoutPlaintext",
            "GenerateMac",
            "GenerateRandom",
            "GetKeyLastUsage",
            "GetKeyPolicy",
            "GetKeyRotationStatus",
            "GetParametersForImport",
            "GetPublicKey",
            "ListAliases",
            "ListGrants",
            "ListKeyPolicies",
            "ListKeyRotations",
            "ListKeys",
            "ListResourceTags",
            "ListRetirableGrants",
            "ReEncrypt",
            "Sign",
            "Verify",
            "VerifyMac",
        ];
        for op in AWS_KMS_OPERATIONS {
            assert!(
                changes_state(op) != READS.contains(op),
                "{op} must be in exactly one of STATE_CHANGING_OPERATIONS and READS"
            );
        }
        for op in STATE_CHANGING_OPERATIONS.iter().chain(READS) {
            assert!(
                AWS_KMS_OPERATIONS.contains(op),
                "{op} is not an AWS operation"
            );
        }
        assert!(changes_state("DisableKey"));
        assert!(!changes_state("Encrypt"));
        assert!(!changes_state("Frobnicate"));
    }

    #[test]
    fn plans_follow_the_operation() {
        let p = plan(
            "ReEncrypt",
            br#"{"DestinationKeyId":"alias/b","SourceKeyId":"1234abcd-12ab-34cd-56ef-1234567890ab"}"#,
        );
        assert_eq!(p.aliases, vec!["alias/b".to_string()]);
        assert_eq!(p.keys, vec![KeyRef::Id(ID.into())]);
        let p = plan("ListKeys", br#"{"Limit": 5000, "Marker": "m"}"#);
        assert_eq!(
            p.listing,
            Some(Listing::Keys {
                limit: MAX_LIMIT,
                marker: Some("m".into())
            })
        );
        assert_eq!(plan("Encrypt", b"not json"), Plan::default());
    }
}
