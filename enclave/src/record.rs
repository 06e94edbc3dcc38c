//! Sealed records: a KMS key, an alias, or a principal, encrypted and authenticated under a
//! domain key so the host can store them but not read, alter or swap them.
//!
//! Byte layout (also in `docs/formats.md`):
//!
//! | offset | len | field |
//! |---|---|---|
//! | 0 | 4 | magic `EKMR` |
//! | 4 | 1 | format version (1) |
//! | 5 | 1 | kind: 1 key, 2 alias, 3 principal, 4 tombstone |
//! | 6 | 8 | domain key fingerprint |
//! | 14 | 2 | id length `n`, big endian |
//! | 16 | n | id (key UUID, alias name or access key id), UTF-8 |
//! | 16+n | 12 | nonce |
//! | 28+n | m | AES-256-GCM ciphertext of the CBOR record |
//! | 28+n+m | 16 | tag |
//!
//! The AAD is every byte before the nonce, so kind, domain and id are bound to the contents.

use std::fmt;

use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::{
    EnclaveError,
    domain::{DomainKey, Keyring},
};

use ekms_wire::sealed::{MAGIC, VERSION};

pub use crate::principal::{AccessKey, PrincipalRecord, PrincipalSecret};

/// What a sealed record holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A KMS key.
    Key = 1,
    /// An alias.
    Alias = 2,
    /// A principal (access key and secret).
    Principal = 3,
    /// What is left of a deleted record: its id and the generation of its deletion.
    Tombstone = 4,
    /// A grant.
    Grant = 5,
    /// An import token: the wrapping key of one `GetParametersForImport`, never stored by the
    /// host (see `imported`).
    ImportToken = 6,
    /// The last use of a key (`GetKeyLastUsage`), sealed under the key's id (see `usage`).
    Usage = 7,
}

pub use ekms_wire::sealed::{SealedHeader, peek};

/// Seals a record of `kind` with `id`.
pub fn seal<T: Serialize>(
    domain: &DomainKey,
    kind: Kind,
    id: &str,
    record: &T,
) -> Result<Vec<u8>, EnclaveError> {
    let id_len = u16::try_from(id.len()).map_err(|_| EnclaveError::Encoding)?;
    let mut aad = Vec::with_capacity(16 + id.len());
    aad.extend_from_slice(MAGIC);
    aad.push(VERSION);
    aad.push(kind as u8);
    aad.extend_from_slice(&domain.fingerprint());
    aad.extend_from_slice(&id_len.to_be_bytes());
    aad.extend_from_slice(id.as_bytes());
    let plaintext = Zeroizing::new(serde_cbor::to_vec(record).map_err(|_| EnclaveError::Encoding)?);
    let body = domain.seal(&aad, plaintext)?;
    aad.extend_from_slice(&body);
    Ok(aad)
}

/// Opens a sealed record, checking its kind, its id and the domain key that sealed it (one of
/// the keyring's).
pub fn open<T: for<'de> Deserialize<'de>>(
    keys: &Keyring,
    kind: Kind,
    expected_id: Option<&str>,
    sealed: &[u8],
) -> Result<T, EnclaveError> {
    let h = peek(sealed).ok_or(EnclaveError::BadRecord)?;
    if h.kind != kind as u8 {
        return Err(EnclaveError::BadRecord);
    }
    let domain = keys.get(h.domain).ok_or(EnclaveError::BadRecord)?;
    if expected_id.is_some_and(|id| id != h.id) {
        return Err(EnclaveError::BadRecord);
    }
    let plaintext = domain.open(h.aad, h.body)?;
    serde_cbor::from_slice(&plaintext).map_err(|_| EnclaveError::BadRecord)
}

/// State of a KMS key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum KeyState {
    /// Usable.
    Enabled,
    /// Refuses cryptographic operations.
    Disabled,
    /// Scheduled for deletion; refuses cryptographic operations.
    PendingDeletion,
    /// An `EXTERNAL` key whose current material was never imported, was deleted or expired.
    PendingImport,
}

impl KeyState {
    /// AWS's name for the state.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Enabled => "Enabled",
            Self::Disabled => "Disabled",
            Self::PendingDeletion => "PendingDeletion",
            Self::PendingImport => "PendingImport",
        }
    }
}

/// 256-bit symmetric key material.
#[derive(Clone, Zeroize, ZeroizeOnDrop, Serialize, Deserialize)]
pub struct KeyMaterial(#[serde(with = "serde_bytes")] pub [u8; 32]);

impl fmt::Debug for KeyMaterial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KeyMaterial(<redacted>)")
    }
}

/// Variable-length secret key material: a PKCS#8 DER private key or an HMAC key.
#[derive(Clone, Zeroize, ZeroizeOnDrop, Serialize, Deserialize)]
pub struct SecretBytes(#[serde(with = "serde_bytes")] pub Vec<u8>);

impl fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretBytes(<redacted>)")
    }
}

/// One version of a key's material.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Material {
    /// Version number, referenced by ciphertext blobs.
    pub version: u32,
    /// AWS-style key material id (64 hex digits).
    pub id: String,
    /// The AES-256 key of a symmetric key (random and unused for other specs).
    pub secret: KeyMaterial,
    /// The private key (PKCS#8 DER) of an asymmetric key, or the key of an HMAC key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private: Option<SecretBytes>,
    /// The public key (DER `SubjectPublicKeyInfo`) of an asymmetric key, kept so that Verify and
    /// GetPublicKey need not parse the private key.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "serde_bytes")]
    pub public: Option<Vec<u8>>,
    /// When and how a rotation made this material current (`None`: the key's first material).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotated: Option<crate::material::Rotated>,
}

impl Material {
    /// The public key of an asymmetric key of `family`: the stored one, else derived.
    pub fn public_key(
        &self,
        family: crate::keyspec::Family,
    ) -> Result<std::borrow::Cow<'_, [u8]>, EnclaveError> {
        if let Some(p) = &self.public {
            return Ok(std::borrow::Cow::Borrowed(p));
        }
        let private = self.private.as_ref().ok_or(EnclaveError::BadRecord)?;
        crate::asymmetric::public_key(family, &private.0).map(std::borrow::Cow::Owned)
    }
}

/// A tag.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tag {
    /// Tag key.
    pub key: String,
    /// Tag value.
    pub value: String,
}

/// A KMS key: metadata and material, sealed as one record. A clone (an operation's own copy of
/// a kept record, `crate::opened`) zeroizes its material when dropped, as the original does.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeyRecord {
    /// Key id (UUID).
    pub key_id: String,
    /// Account id.
    pub account: String,
    /// Region.
    pub region: String,
    /// Creation time, Unix milliseconds.
    pub created_ms: i64,
    /// Description.
    pub description: String,
    /// State.
    pub state: KeyState,
    /// Deletion time for keys pending deletion, Unix milliseconds.
    pub deletion_ms: Option<i64>,
    /// Key spec (`SYMMETRIC_DEFAULT`).
    pub spec: String,
    /// Key usage (`ENCRYPT_DECRYPT`).
    pub usage: String,
    /// Origin (`AWS_KMS`).
    pub origin: String,
    /// Key policy document as given at creation.
    pub policy: Option<String>,
    /// Tags in insertion order.
    pub tags: Vec<Tag>,
    /// Every material version; old versions still decrypt.
    pub materials: Vec<Material>,
    /// Version used for new encryptions.
    pub current: u32,
    /// Materials that rotations replaced: they only decrypt (packed, see `material`).
    #[serde(default, skip_serializing_if = "crate::material::Retired::is_empty")]
    pub retired: crate::material::Retired,
    /// Automatic rotation, when enabled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotation: Option<crate::material::Schedule>,
    /// On-demand rotations made so far (AWS allows a limited number per key).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub on_demand_rotations: u32,
    /// Whether the enclave has tracked this key's last usage since its creation (true for keys
    /// made since `GetKeyLastUsage` exists; an older key is tracked from the enclave's start).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub usage_tracked: bool,
    /// For an `EXTERNAL` key: what is known of each material ever imported, kept when the
    /// material itself is deleted or expires (see `imported`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub imports: Vec<crate::imported::ImportInfo>,
    /// For a key an external key store uses (XKS proxy API): its URI prefix and key usage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub xks: Option<crate::xks::XksBinding>,
    /// For a multi-Region key: the primary's region and the other regions' replicas (see
    /// `replica`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub multi_region: Option<crate::replica::MultiRegion>,
    /// The domain-wide sequence number of this version; the host's store checks it and the
    /// enclave's state view refuses any other version.
    pub generation: u64,
    /// The version this record was opened from (not sealed; set when the view checked it).
    #[serde(skip)]
    pub opened: Option<crate::ledger::Version>,
}

impl KeyRecord {
    /// The key ARN.
    #[must_use]
    pub fn arn(&self) -> String {
        self.arn_in(&self.region)
    }

    /// The ARN of this key in `region` (a multi-Region key's replica there).
    #[must_use]
    pub fn arn_in(&self, region: &str) -> String {
        format!("arn:aws:kms:{region}:{}:key/{}", self.account, self.key_id)
    }
    /// The material of a version.
    #[must_use]
    pub fn material(&self, version: u32) -> Option<&Material> {
        self.materials.iter().find(|m| m.version == version)
    }
    /// The current material.
    #[must_use]
    pub fn current_material(&self) -> Option<&Material> {
        self.material(self.current)
    }
    /// The current private key (PKCS#8 DER) or HMAC key, for keys other than symmetric ones.
    #[must_use]
    pub fn private_key(&self) -> Option<&[u8]> {
        self.current_material()
            .and_then(|m| m.private.as_ref())
            .map(|p| p.0.as_slice())
    }
    /// What the key's spec allows (`None` only for a record naming an unknown spec).
    #[must_use]
    pub fn key_spec(&self) -> Option<&'static crate::keyspec::Spec> {
        crate::keyspec::find(&self.spec)
    }
}

#[allow(clippy::trivially_copy_pass_by_ref)] // serde's skip_serializing_if passes a reference
fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// An alias: a name that points at a key.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AliasRecord {
    /// `alias/...`.
    pub name: String,
    /// Target key id.
    pub target: String,
    /// Creation time, Unix milliseconds.
    pub created_ms: i64,
    /// Last update, Unix milliseconds.
    pub updated_ms: i64,
    /// Domain-wide sequence number of this version.
    pub generation: u64,
    /// The version this record was opened from (not sealed).
    #[serde(skip)]
    pub opened: Option<crate::ledger::Version>,
}

/// What is left of a deleted key, alias or principal. Sealed with the id `"<kind>:<id>"` (kind
/// 1 key, 2 alias, 3 principal), so it never collides with a live record's id.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TombstoneRecord {
    /// Kind of the deleted record.
    pub kind: u8,
    /// Its id.
    pub id: String,
    /// Domain-wide sequence number of the deletion.
    pub generation: u64,
    /// When it was deleted, Unix milliseconds.
    pub deleted_ms: i64,
}

impl TombstoneRecord {
    /// The kind and state-view id of the deleted record.
    pub fn of(&self) -> Result<(Kind, crate::ledger::RecordId), EnclaveError> {
        use crate::ledger::RecordId;
        Ok(match self.kind {
            1 => (
                Kind::Key,
                RecordId::key(&self.id).ok_or(EnclaveError::BadRecord)?,
            ),
            2 => (Kind::Alias, RecordId::alias(&self.id)),
            3 => (Kind::Principal, RecordId::principal(&self.id)),
            5 => (Kind::Grant, grant_id(&self.id)?),
            _ => return Err(EnclaveError::BadRecord),
        })
    }

    /// The sealed id of the tombstone of `kind`/`id`.
    #[must_use]
    pub fn sealed_id(kind: Kind, id: &str) -> String {
        format!("{}:{id}", kind as u8)
    }
}

/// The state-view id of a grant sealed with id `"<key id>/<grant id>"`.
pub fn grant_id(sealed_id: &str) -> Result<crate::ledger::RecordId, EnclaveError> {
    let (key, grant) = sealed_id.split_once('/').ok_or(EnclaveError::BadRecord)?;
    crate::ledger::RecordId::grant(key, grant).ok_or(EnclaveError::BadRecord)
}

/// The generation field every record kind has, read without the rest (when the state view is
/// loaded).
#[derive(Deserialize)]
struct GenerationOnly {
    #[serde(default)]
    generation: u64,
}

/// What the state view needs of any stored record.
#[derive(Debug)]
pub struct Indexed {
    /// The record (for a tombstone: the deleted record).
    pub id: crate::ledger::RecordId,
    /// Its generation.
    pub generation: u64,
    /// False for a tombstone.
    pub live: bool,
    /// For an alias: its target key.
    pub target: Option<u128>,
}

/// Opens any sealed record of the domain and returns what the state view keeps of it.
pub fn index(keys: &Keyring, sealed: &[u8]) -> Result<Indexed, EnclaveError> {
    use crate::ledger::RecordId;
    let h = peek(sealed).ok_or(EnclaveError::BadRecord)?;
    let id = h.id.to_owned();
    let indexed = match h.kind {
        1 => Indexed {
            id: RecordId::key(&id).ok_or(EnclaveError::BadRecord)?,
            generation: open::<GenerationOnly>(keys, Kind::Key, None, sealed)?.generation,
            live: true,
            target: None,
        },
        2 => {
            let a: AliasRecord = open(keys, Kind::Alias, None, sealed)?;
            Indexed {
                id: RecordId::alias(&id),
                generation: a.generation,
                live: true,
                target: RecordId::key(&a.target).and_then(|t| t.key_bits()),
            }
        }
        3 => Indexed {
            id: RecordId::principal(&id),
            generation: open::<GenerationOnly>(keys, Kind::Principal, None, sealed)?.generation,
            live: true,
            target: None,
        },
        7 => Indexed {
            id: RecordId::usage_named(&id).ok_or(EnclaveError::BadRecord)?,
            generation: open::<crate::usage::UsageRecord>(keys, Kind::Usage, None, sealed)?
                .checked(&id)?
                .generation,
            live: true,
            target: None,
        },
        5 => Indexed {
            id: grant_id(&id)?,
            generation: open::<GenerationOnly>(keys, Kind::Grant, None, sealed)?.generation,
            live: true,
            target: None,
        },
        4 => {
            let t: TombstoneRecord = open(keys, Kind::Tombstone, None, sealed)?;
            let (kind, of) = t.of()?;
            if TombstoneRecord::sealed_id(kind, &t.id) != id {
                return Err(EnclaveError::BadRecord);
            }
            Indexed {
                id: of,
                generation: t.generation,
                live: false,
                target: None,
            }
        }
        _ => return Err(EnclaveError::BadRecord),
    };
    Ok(indexed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alias() -> AliasRecord {
        AliasRecord {
            name: "alias/a".into(),
            target: "k".into(),
            created_ms: 1,
            updated_ms: 2,
            generation: 1,
            opened: None,
        }
    }

    #[test]
    fn records_round_trip_and_bind_kind_and_id() {
        let d = Keyring::single(DomainKey::generate().unwrap());
        let s = seal(d.current(), Kind::Alias, "alias/a", &alias()).unwrap();
        let h = peek(&s).unwrap();
        assert_eq!(h.id, "alias/a");
        let a: AliasRecord = open(&d, Kind::Alias, Some("alias/a"), &s).unwrap();
        assert_eq!(a.target, "k");
        assert!(open::<AliasRecord>(&d, Kind::Key, None, &s).is_err());
        assert!(open::<AliasRecord>(&d, Kind::Alias, Some("alias/b"), &s).is_err());
    }

    #[test]
    fn an_edited_header_or_body_is_refused() {
        let d = Keyring::single(DomainKey::generate().unwrap());
        let s = seal(d.current(), Kind::Alias, "alias/a", &alias()).unwrap();
        // Rename the record to another id of the same length: the AAD no longer matches.
        let mut renamed = s.clone();
        let pos = 16 + "alias/".len();
        renamed[pos] = b'b';
        assert_eq!(peek(&renamed).unwrap().id, "alias/b");
        assert!(open::<AliasRecord>(&d, Kind::Alias, None, &renamed).is_err());
        for i in 0..s.len() {
            let mut t = s.clone();
            t[i] ^= 0x40;
            assert!(
                open::<AliasRecord>(&d, Kind::Alias, Some("alias/a"), &t).is_err(),
                "byte {i}"
            );
        }
        assert!(peek(b"").is_none());
        assert!(peek(b"EKMR\x01\x02").is_none());
    }

    #[test]
    fn older_keys_of_the_keyring_open_their_records() {
        let old = DomainKey::generate().unwrap();
        let s = seal(&old, Kind::Alias, "alias/a", &alias()).unwrap();
        let keys = Keyring::new(vec![old, DomainKey::generate().unwrap()]).unwrap();
        assert!(open::<AliasRecord>(&keys, Kind::Alias, None, &s).is_ok());
        let other = Keyring::single(DomainKey::generate().unwrap());
        assert!(open::<AliasRecord>(&other, Kind::Alias, None, &s).is_err());
    }

    #[test]
    fn key_material_debug_is_redacted() {
        assert_eq!(
            format!("{:?}", KeyMaterial([1; 32])),
            "KeyMaterial(<redacted>)"
        );
    }
}
