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

/// Magic of a sealed keyring (the domain record).
pub const DOMAIN_MAGIC: &[u8; 4] = b"EKMD";
/// Version of the sealed keyring written now: its header lists the custodians.
pub const DOMAIN_VERSION: u8 = 2;
/// The first version (still read): no custodian list in the header.
pub const DOMAIN_VERSION_1: u8 = 1;
/// Length of the fixed part of a sealed keyring's header (magic, version, domain id,
/// generation, threshold, total); version 1's whole header. Version 2 adds `total` custodian
/// fingerprints.
pub const DOMAIN_HEADER_LEN: usize = 4 + 1 + 8 + 8 + 2;
/// Length of a custodian fingerprint (SHA-256 of its SEC1 public key, first 16 bytes).
pub const CUSTODIAN_FINGERPRINT_LEN: usize = 16;

/// A custodian fingerprint.
pub type CustodianFingerprint = [u8; CUSTODIAN_FINGERPRINT_LEN];

/// The public header of a sealed keyring: which domain, which generation, which custodians.
/// Every field is the AAD of the keyring, so it is authenticated once the keyring opens; before
/// that it is what the host shows.
#[derive(Debug, PartialEq, Eq)]
pub struct DomainHeader<'a> {
    /// Format version (1 or 2).
    pub version: u8,
    /// Domain id: fingerprint of the domain's custody secret.
    pub domain: [u8; 8],
    /// Keyring generation (each rotation or retirement makes a higher one).
    pub generation: u64,
    /// Shares needed to unseal (authenticated only once the keyring opens: a hint before).
    pub threshold: u8,
    /// Custodians.
    pub total: u8,
    /// Version 2: the custodians' fingerprints in share-index order (share `i` is custodian
    /// `i`, 1-based); `None` for version 1.
    pub custodians: Option<Vec<CustodianFingerprint>>,
    /// Header bytes (the AAD).
    pub aad: &'a [u8],
    /// Nonce, ciphertext and tag.
    pub body: &'a [u8],
}

impl DomainHeader<'_> {
    /// The custodian the header names for share `index` (1-based); `None` for a version 1
    /// header or an index outside the list.
    #[must_use]
    pub fn custodian(&self, index: u8) -> Option<CustodianFingerprint> {
        let i = usize::from(index).checked_sub(1)?;
        self.custodians.as_ref()?.get(i).copied()
    }
}

/// Reads the header of a sealed keyring without opening it; `None` if it is not one.
#[must_use]
pub fn peek_domain(sealed: &[u8]) -> Option<DomainHeader<'_>> {
    let (magic, rest) = sealed.split_first_chunk::<4>()?;
    if magic != DOMAIN_MAGIC {
        return None;
    }
    let (&version, rest) = rest.split_first()?;
    let (domain, rest) = rest.split_first_chunk::<8>()?;
    let (generation, rest) = rest.split_first_chunk::<8>()?;
    let (&[threshold, total], mut rest) = rest.split_first_chunk::<2>()?;
    let (custodians, header_len) = match version {
        DOMAIN_VERSION_1 => (None, DOMAIN_HEADER_LEN),
        DOMAIN_VERSION => {
            let mut list = Vec::with_capacity(usize::from(total));
            for _ in 0..total {
                let (fp, r) = rest.split_first_chunk::<CUSTODIAN_FINGERPRINT_LEN>()?;
                list.push(*fp);
                rest = r;
            }
            (
                Some(list),
                DOMAIN_HEADER_LEN + usize::from(total) * CUSTODIAN_FINGERPRINT_LEN,
            )
        }
        _ => return None,
    };
    Some(DomainHeader {
        version,
        domain: *domain,
        generation: u64::from_be_bytes(*generation),
        threshold,
        total,
        custodians,
        aad: sealed.get(..header_len)?,
        body: sealed.get(header_len..)?,
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

    #[test]
    fn domain_headers_parse() {
        let mut d = b"EKMD\x01".to_vec();
        d.extend_from_slice(&[9; 8]);
        d.extend_from_slice(&5u64.to_be_bytes());
        d.extend_from_slice(&[2, 3]);
        d.extend_from_slice(&[0; 40]);
        let h = peek_domain(&d).unwrap();
        assert_eq!(
            (h.domain, h.generation, h.threshold, h.total, h.body.len()),
            ([9; 8], 5, 2, 3, 40)
        );
        assert_eq!(
            (h.version, h.custodians.as_ref(), h.custodian(1)),
            (1, None, None)
        );
        assert_eq!(h.aad.len(), DOMAIN_HEADER_LEN);
        assert!(peek_domain(&d[..12]).is_none());
        assert!(peek_domain(&rec_like()).is_none());
    }

    #[test]
    fn version_2_domain_headers_carry_the_custodians() {
        let mut d = b"EKMD\x02".to_vec();
        d.extend_from_slice(&[9; 8]);
        d.extend_from_slice(&5u64.to_be_bytes());
        d.extend_from_slice(&[2, 3]);
        for i in 1..=3u8 {
            d.extend_from_slice(&[i; 16]);
        }
        d.extend_from_slice(&[0; 40]);
        let h = peek_domain(&d).unwrap();
        assert_eq!((h.version, h.total, h.body.len()), (2, 3, 40));
        assert_eq!(h.aad.len(), DOMAIN_HEADER_LEN + 48);
        assert_eq!(h.custodian(1), Some([1; 16]));
        assert_eq!(h.custodian(3), Some([3; 16]));
        assert_eq!(h.custodian(0), None);
        assert_eq!(h.custodian(4), None);
        // A list cut short is not a header; nor is an unknown version.
        assert!(peek_domain(&d[..DOMAIN_HEADER_LEN + 40]).is_none());
        d[4] = 3;
        assert!(peek_domain(&d).is_none());
    }

    fn rec_like() -> Vec<u8> {
        b"EKMR\x01\x01aaaaaaaaaaaaaaaaaaaaaaaaaaaa".to_vec()
    }

    proptest! {
        #[test]
        fn peek_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = peek(&bytes);
            let _ = peek_domain(&bytes);
        }
    }
}
