//! Key material versions over a key's life: the automatic rotation schedule, and the materials
//! that rotations retired, packed inside the sealed key record so that a key with hundreds of
//! rotations opens as cheaply as one with none. Retired material is only ever in zeroized memory.
//!
//! A retired material is one fixed-size entry (also in `docs/formats.md`):
//!
//! | offset | len | field |
//! |---|---|---|
//! | 0 | 4 | material version, big endian (ciphertext blobs name it) |
//! | 4 | 32 | key material id (the API shows it as 64 hex digits) |
//! | 36 | 32 | the AES-256 key |
//! | 68 | 8 | rotation date, Unix milliseconds, big endian (0 for the key's first material) |
//! | 76 | 1 | how it became current: 0 first material, 1 automatic, 2 on demand |
//!
//! Entries are kept oldest first, as one CBOR byte string: opening a record copies it once and
//! parses nothing; Decrypt under an old version scans the fixed-size entries without allocating.

use std::{fmt, ops::Deref};

use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::{
    EnclaveError,
    domain::hex,
    record::{KeyMaterial, KeyRecord, Material},
};

/// Bytes of one retired material.
pub const ENTRY_LEN: usize = 77;
/// One day in milliseconds.
const DAY_MS: i64 = 86_400_000;

/// How a rotation was made (AWS's `RotationType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RotationType {
    /// By the schedule of automatic rotation.
    Automatic,
    /// By `RotateKeyOnDemand`.
    OnDemand,
}

impl RotationType {
    /// AWS's name.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Automatic => "AUTOMATIC",
            Self::OnDemand => "ON_DEMAND",
        }
    }

    fn code(self) -> u8 {
        match self {
            Self::Automatic => 1,
            Self::OnDemand => 2,
        }
    }
}

/// When and how a rotation made a material current.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rotated {
    /// Unix milliseconds.
    pub ms: i64,
    /// Automatic or on demand.
    pub kind: RotationType,
}

/// Automatic rotation of a key, when enabled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Schedule {
    /// Days between rotations (AWS: 90 to 2560).
    pub period_days: u16,
    /// When the period runs from: the enabling, or the last automatic rotation (Unix ms).
    pub anchor_ms: i64,
}

impl Schedule {
    /// When the next automatic rotation is due (Unix ms).
    #[must_use]
    pub fn next_ms(&self) -> i64 {
        self.anchor_ms
            .saturating_add(i64::from(self.period_days).saturating_mul(DAY_MS))
    }
}

/// The retired materials of a key, oldest first (see the module doc for the layout).
#[derive(Default, Clone, Zeroize, ZeroizeOnDrop, Serialize, Deserialize)]
pub struct Retired(#[serde(with = "serde_bytes")] Vec<u8>);

impl fmt::Debug for Retired {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Retired({} materials)", self.len())
    }
}

/// A retired material's public facts, for listings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetiredInfo {
    /// Material version.
    pub version: u32,
    /// Key material id (64 hex digits).
    pub id: String,
    /// The rotation that made it current (`None`: the key's first material).
    pub rotated: Option<Rotated>,
}

impl Retired {
    /// Whether no material was retired.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Number of retired materials.
    #[must_use]
    pub fn len(&self) -> usize {
        self.0.len() / ENTRY_LEN
    }

    /// Bytes held.
    #[must_use]
    pub fn byte_len(&self) -> usize {
        self.0.len()
    }

    fn entries(&self) -> impl Iterator<Item = &[u8]> {
        self.0.chunks_exact(ENTRY_LEN)
    }

    /// Appends `m`, a symmetric material with a 64-hex-digit id. The old buffer is wiped (no
    /// copy of key material is left behind by a reallocation).
    pub fn push(&mut self, m: &Material) -> Result<(), EnclaveError> {
        if m.private.is_some() || m.public.is_some() || !self.0.len().is_multiple_of(ENTRY_LEN) {
            return Err(EnclaveError::Encoding);
        }
        let id = unhex32(&m.id).ok_or(EnclaveError::Encoding)?;
        let mut next = Vec::with_capacity(self.0.len() + ENTRY_LEN);
        next.extend_from_slice(&self.0);
        next.extend_from_slice(&m.version.to_be_bytes());
        next.extend_from_slice(&id);
        next.extend_from_slice(&m.secret.0);
        let (ms, kind) = m.rotated.map_or((0, 0), |r| (r.ms, r.kind.code()));
        next.extend_from_slice(&ms.to_be_bytes());
        next.push(kind);
        self.0.zeroize();
        self.0 = next;
        Ok(())
    }

    /// The retired material of `version`, if there is one (and the entries are well formed).
    #[must_use]
    pub fn find(&self, version: u32) -> Option<Material> {
        let wanted = version.to_be_bytes();
        let entry = self
            .entries()
            .find(|e| e.get(0..4).is_some_and(|v| v == wanted))?;
        let (version, id, rotated) = info(entry)?;
        let mut secret = KeyMaterial([0u8; 32]);
        secret.0.copy_from_slice(entry.get(36..68)?);
        Some(Material {
            version,
            id: hex(&id),
            secret,
            private: None,
            public: None,
            rotated,
        })
    }

    /// The public facts of every retired material, oldest first (`None` for a malformed entry).
    pub fn infos(&self) -> impl Iterator<Item = Option<RetiredInfo>> + '_ {
        self.entries().map(|e| {
            info(e).map(|(version, id, rotated)| RetiredInfo {
                version,
                id: hex(&id),
                rotated,
            })
        })
    }

    /// The highest retired version.
    #[must_use]
    pub fn max_version(&self) -> Option<u32> {
        self.entries()
            .filter_map(|e| e.get(0..4)?.try_into().ok().map(u32::from_be_bytes))
            .max()
    }
}

/// Version, id and rotation of an entry; `None` if it is malformed.
fn info(entry: &[u8]) -> Option<(u32, [u8; 32], Option<Rotated>)> {
    let version = u32::from_be_bytes(entry.get(0..4)?.try_into().ok()?);
    let id: [u8; 32] = entry.get(4..36)?.try_into().ok()?;
    let ms = i64::from_be_bytes(entry.get(68..76)?.try_into().ok()?);
    let rotated = match entry.get(76)? {
        0 => None,
        1 => Some(Rotated {
            ms,
            kind: RotationType::Automatic,
        }),
        2 => Some(Rotated {
            ms,
            kind: RotationType::OnDemand,
        }),
        _ => return None,
    };
    Some((version, id, rotated))
}

fn unhex32(s: &str) -> Option<[u8; 32]> {
    let bytes = s.as_bytes();
    if bytes.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (o, pair) in out.iter_mut().zip(bytes.chunks_exact(2)) {
        let hi = char::from(*pair.first()?).to_digit(16)?;
        let lo = char::from(*pair.get(1)?).to_digit(16)?;
        *o = u8::try_from(hi * 16 + lo).ok()?;
    }
    Some(out)
}

/// A material of a key: one the record holds parsed, or one rebuilt from a retired entry.
pub enum MaterialRef<'a> {
    /// The current material (or any in the record's `materials`).
    Held(&'a Material),
    /// A retired material, rebuilt (its key zeroized on drop).
    Retired(Material),
}

impl Deref for MaterialRef<'_> {
    type Target = Material;
    fn deref(&self) -> &Material {
        match self {
            Self::Held(m) => m,
            Self::Retired(m) => m,
        }
    }
}

impl KeyRecord {
    /// The material of `version`, current or retired.
    #[must_use]
    pub fn find_material(&self, version: u32) -> Option<MaterialRef<'_>> {
        if let Some(m) = self.material(version) {
            return Some(MaterialRef::Held(m));
        }
        self.retired.find(version).map(MaterialRef::Retired)
    }

    /// The highest material version the key has.
    #[must_use]
    pub fn latest_version(&self) -> u32 {
        let held = self.materials.iter().map(|m| m.version).max().unwrap_or(0);
        held.max(self.retired.max_version().unwrap_or(0))
    }

    /// Replaces the current material by `new` (made for version [`Self::latest_version`] + 1),
    /// made current by a rotation at `now_ms`: the old material is retired and still decrypts.
    pub fn rotate_to(
        &mut self,
        mut new: Material,
        now_ms: i64,
        kind: RotationType,
    ) -> Result<(), EnclaveError> {
        let pos = self
            .materials
            .iter()
            .position(|m| m.version == self.current)
            .ok_or(EnclaveError::BadRecord)?;
        let old = self.materials.get(pos).ok_or(EnclaveError::BadRecord)?;
        let version = self
            .latest_version()
            .checked_add(1)
            .ok_or(EnclaveError::Encoding)?;
        if new.version != version {
            return Err(EnclaveError::Encoding);
        }
        self.retired.push(old)?;
        self.materials.remove(pos);
        new.rotated = Some(Rotated { ms: now_ms, kind });
        self.current = new.version;
        self.materials.push(new);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn material(version: u32, byte: u8) -> Material {
        Material {
            version,
            id: hex(&[byte; 32]),
            secret: KeyMaterial([byte; 32]),
            private: None,
            public: None,
            rotated: None,
        }
    }

    #[test]
    fn retired_entries_round_trip_and_are_found_by_version() {
        let mut r = Retired::default();
        r.push(&material(1, 1)).unwrap();
        let mut second = material(2, 2);
        second.rotated = Some(Rotated {
            ms: 1_700_000_000_000,
            kind: RotationType::OnDemand,
        });
        r.push(&second).unwrap();
        assert_eq!(r.len(), 2);
        assert_eq!(r.byte_len(), 2 * ENTRY_LEN);
        let found = r.find(2).unwrap();
        assert_eq!(found.secret.0, [2; 32]);
        assert_eq!(found.id, second.id);
        assert_eq!(found.rotated, second.rotated);
        assert!(r.find(1).unwrap().rotated.is_none());
        assert!(r.find(3).is_none());
        assert_eq!(r.max_version(), Some(2));
        let infos: Vec<_> = r.infos().map(Option::unwrap).collect();
        assert_eq!(infos.len(), 2);
        assert_eq!(infos[1].version, 2);
        // Through CBOR, as inside a sealed record.
        let bytes = serde_cbor::to_vec(&r).unwrap();
        let back: Retired = serde_cbor::from_slice(&bytes).unwrap();
        assert_eq!(back.find(1).unwrap().secret.0, [1; 32]);
    }

    #[test]
    fn only_symmetric_materials_with_aws_ids_are_retired() {
        let mut r = Retired::default();
        let mut m = material(1, 1);
        m.id = "not-hex".into();
        assert!(r.push(&m).is_err());
        let mut m = material(1, 1);
        m.private = Some(crate::record::SecretBytes(vec![1]));
        assert!(r.push(&m).is_err());
        assert!(r.is_empty());
    }

    #[test]
    fn a_malformed_entry_is_never_a_material() {
        let mut r = Retired::default();
        r.push(&material(1, 1)).unwrap();
        let mut bytes = serde_cbor::to_vec(&r).unwrap();
        // The last byte is the rotation kind: 9 is no kind.
        *bytes.last_mut().unwrap() = 9;
        let bad: Retired = serde_cbor::from_slice(&bytes).unwrap();
        assert!(bad.find(1).is_none());
        assert_eq!(bad.infos().next(), Some(None));
    }

    #[test]
    fn debug_shows_no_material() {
        let mut r = Retired::default();
        r.push(&material(1, 0xAB)).unwrap();
        assert_eq!(format!("{r:?}"), "Retired(1 materials)");
    }

    #[test]
    fn schedules_count_days_without_overflow() {
        let s = Schedule {
            period_days: 90,
            anchor_ms: 0,
        };
        assert_eq!(s.next_ms(), 90 * DAY_MS);
        let far = Schedule {
            period_days: u16::MAX,
            anchor_ms: i64::MAX - 1,
        };
        assert_eq!(far.next_ms(), i64::MAX);
    }
}
