//! The ciphertext blob's public header, so the host can find the key a blob names (Decrypt
//! needs no KeyId). Byte table in `docs/formats.md`:
//!
//! | offset | len | field |
//! |---|---|---|
//! | 0 | 1 | format version (1) |
//! | 1 | 16 | key id (UUID bytes) |
//! | 17 | 4 | key-material version, big endian |
//! | 21 | 16 | HKDF salt |
//! | 37 | 12 | AES-GCM nonce |
//! | 49 | n | ciphertext |
//! | 49+n | 16 | AES-GCM tag |

/// Current blob format version.
pub const BLOB_VERSION: u8 = 1;
/// Length of the header (everything before the ciphertext).
pub const HEADER_LEN: usize = 49;
/// Length of the AES-GCM tag.
pub const TAG_LEN: usize = 16;

/// The parsed public header of a ciphertext blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlobHeader {
    /// Key id (UUID bytes).
    pub key_id: [u8; 16],
    /// Key-material version inside the key record.
    pub material_version: u32,
    /// HKDF salt for the per-message key.
    pub salt: [u8; 16],
    /// AES-GCM nonce.
    pub nonce: [u8; 12],
}

impl BlobHeader {
    /// Serializes the header.
    #[must_use]
    pub fn to_bytes(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        let (v, rest) = out.split_at_mut(1);
        v.copy_from_slice(&[BLOB_VERSION]);
        let (k, rest) = rest.split_at_mut(16);
        k.copy_from_slice(&self.key_id);
        let (m, rest) = rest.split_at_mut(4);
        m.copy_from_slice(&self.material_version.to_be_bytes());
        let (s, n) = rest.split_at_mut(16);
        s.copy_from_slice(&self.salt);
        n.copy_from_slice(&self.nonce);
        out
    }

    /// Splits a blob into its header and the ciphertext-with-tag. `None` for anything that is
    /// not a version-1 blob long enough to hold a tag.
    #[must_use]
    pub fn parse(blob: &[u8]) -> Option<(Self, &[u8])> {
        if blob.len() < HEADER_LEN + TAG_LEN {
            return None;
        }
        let (&version, rest) = blob.split_first()?;
        if version != BLOB_VERSION {
            return None;
        }
        let (key_id, rest) = rest.split_first_chunk::<16>()?;
        let (mv, rest) = rest.split_first_chunk::<4>()?;
        let (salt, rest) = rest.split_first_chunk::<16>()?;
        let (nonce, rest) = rest.split_first_chunk::<12>()?;
        Some((
            Self {
                key_id: *key_id,
                material_version: u32::from_be_bytes(*mv),
                salt: *salt,
                nonce: *nonce,
            },
            rest,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn short_or_foreign_blobs_are_refused() {
        assert!(BlobHeader::parse(&[]).is_none());
        assert!(BlobHeader::parse(&[1u8; HEADER_LEN + TAG_LEN - 1]).is_none());
        assert!(BlobHeader::parse(&[2u8; 100]).is_none());
    }

    proptest! {
        #[test]
        fn header_round_trip(key_id in any::<[u8;16]>(), mv in any::<u32>(), salt in any::<[u8;16]>(), nonce in any::<[u8;12]>(), body in proptest::collection::vec(any::<u8>(), 16..64)) {
            let h = BlobHeader { key_id, material_version: mv, salt, nonce };
            let mut blob = h.to_bytes().to_vec();
            blob.extend_from_slice(&body);
            let (parsed, rest) = BlobHeader::parse(&blob).unwrap();
            prop_assert_eq!(parsed, h);
            prop_assert_eq!(rest, &body[..]);
        }

        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..128)) {
            let _ = BlobHeader::parse(&bytes);
        }
    }
}
