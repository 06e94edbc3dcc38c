//! The public header of a sealed record, readable without any key: both sides use it to find
//! records by id; only the enclave can open them. Byte table in `docs/formats.md`.

/// Magic of a sealed record.
pub const MAGIC: &[u8; 4] = b"EKMR";
/// Sealed-record format version.
pub const VERSION: u8 = 1;

/// The public header of a sealed record.
#[derive(Debug, PartialEq, Eq)]
pub struct SealedHeader<'a> {
    /// Record kind (1 key, 2 alias, 3 principal).
    pub kind: u8,
    /// Fingerprint of the domain key that sealed it.
    pub domain: [u8; 8],
    /// Record id.
    pub id: &'a str,
    /// Header bytes (the AAD).
    pub aad: &'a [u8],
    /// Nonce, ciphertext and tag.
    pub body: &'a [u8],
}

/// Reads the header of a sealed record without opening it; `None` if it is not one.
#[must_use]
pub fn peek(sealed: &[u8]) -> Option<SealedHeader<'_>> {
    let (magic, rest) = sealed.split_first_chunk::<4>()?;
    if magic != MAGIC {
        return None;
    }
    let (&version, rest) = rest.split_first()?;
    if version != VERSION {
        return None;
    }
    let (&kind, rest) = rest.split_first()?;
    let (domain, rest) = rest.split_first_chunk::<8>()?;
    let (len, rest) = rest.split_first_chunk::<2>()?;
    let len = usize::from(u16::from_be_bytes(*len));
    let id = std::str::from_utf8(rest.get(..len)?).ok()?;
    let aad_len = 16 + len;
    Some(SealedHeader {
        kind,
        domain: *domain,
        id,
        aad: sealed.get(..aad_len)?,
        body: sealed.get(aad_len..)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn headers_parse_and_foreign_bytes_do_not() {
        let mut rec = b"EKMR\x01\x02".to_vec();
        rec.extend_from_slice(&[7; 8]);
        rec.extend_from_slice(&7u16.to_be_bytes());
        rec.extend_from_slice(b"alias/a");
        rec.extend_from_slice(&[0; 28]);
        let h = peek(&rec).unwrap();
        assert_eq!(
            (h.kind, h.id, h.aad.len(), h.body.len()),
            (2, "alias/a", 23, 28)
        );
        assert!(peek(b"").is_none());
        assert!(peek(b"EKMR\x02\x01").is_none());
        assert!(peek(&rec[..20]).is_none());
    }

    proptest! {
        #[test]
        fn peek_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = peek(&bytes);
        }
    }
}
