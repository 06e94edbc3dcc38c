//! Symmetric encryption under a KMS key: a per-message AES-256-GCM key from HKDF-SHA256 over
//! the key material with a random salt, the blob header and the canonical encryption context as
//! AAD. The blob is self-describing (see `ekms_wire::blob`), so Decrypt needs no KeyId.

use aws_lc_rs::{
    aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey},
    hkdf, rand,
};
use ekms_wire::blob::{BlobHeader, HEADER_LEN};
use zeroize::Zeroizing;

use crate::{
    EnclaveError,
    context::{EncryptionContext, canonical},
    record::Material,
};

const INFO: &[u8] = b"ekms/v1/message-key";

fn message_key(material: &Material, salt: &[u8; 16]) -> Result<LessSafeKey, EnclaveError> {
    let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, salt).extract(&material.secret.0);
    let okm = prk.expand(&[INFO], &AES_256_GCM)?;
    Ok(LessSafeKey::new(UnboundKey::from(okm)))
}

fn aad(header: &[u8; HEADER_LEN], ctx: &EncryptionContext) -> Vec<u8> {
    let mut aad = header.to_vec();
    aad.extend_from_slice(&canonical(ctx));
    aad
}

/// Encrypts `plaintext` under `material` of key `key_id`.
pub fn encrypt(
    key_id: [u8; 16],
    material: &Material,
    ctx: &EncryptionContext,
    plaintext: &[u8],
) -> Result<Vec<u8>, EnclaveError> {
    // One draw for both (they go into the header in the clear): each call into the DRBG costs
    // as much as the AES-GCM of a short message.
    let mut fresh = [0u8; 28];
    rand::fill(&mut fresh)?;
    let (mut salt, mut nonce) = ([0u8; 16], [0u8; 12]);
    salt.copy_from_slice(fresh.get(..16).ok_or(EnclaveError::Crypto)?);
    nonce.copy_from_slice(fresh.get(16..).ok_or(EnclaveError::Crypto)?);
    let header = BlobHeader {
        key_id,
        material_version: material.version,
        salt,
        nonce,
    }
    .to_bytes();
    let key = message_key(material, &salt)?;
    let mut out = Vec::with_capacity(HEADER_LEN + plaintext.len() + 16);
    out.extend_from_slice(&header);
    out.extend_from_slice(plaintext);
    let tag = key.seal_in_place_separate_tag(
        Nonce::assume_unique_for_key(nonce),
        Aad::from(aad(&header, ctx)),
        out.get_mut(HEADER_LEN..).ok_or(EnclaveError::Crypto)?,
    )?;
    out.extend_from_slice(tag.as_ref());
    Ok(out)
}

/// Decrypts a blob whose header was already parsed. Any failure is the same opaque error.
pub fn decrypt(
    header: &BlobHeader,
    ct_and_tag: &[u8],
    material: &Material,
    ctx: &EncryptionContext,
) -> Result<Zeroizing<Vec<u8>>, EnclaveError> {
    let key = message_key(material, &header.salt)?;
    let mut buf = Zeroizing::new(ct_and_tag.to_vec());
    let len = key
        .open_in_place(
            Nonce::assume_unique_for_key(header.nonce),
            Aad::from(aad(&header.to_bytes(), ctx)),
            &mut buf,
        )
        .map_err(|_| EnclaveError::BadRecord)?
        .len();
    buf.truncate(len);
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::KeyMaterial;
    use proptest::prelude::*;

    fn material(v: u32) -> Material {
        Material {
            version: v,
            id: "m".into(),
            secret: KeyMaterial([u8::try_from(v).unwrap(); 32]),
            private: None,
            public: None,
            rotated: None,
        }
    }

    fn ctx(pairs: &[(&str, &str)]) -> EncryptionContext {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn wrong_context_key_or_tampering_fails() {
        let m = material(1);
        let c = ctx(&[("ab", "c")]);
        let blob = encrypt([9; 16], &m, &c, b"hello").unwrap();
        let (h, body) = BlobHeader::parse(&blob).unwrap();
        assert_eq!(h.key_id, [9; 16]);
        assert_eq!(&decrypt(&h, body, &m, &c).unwrap()[..], b"hello");
        assert!(decrypt(&h, body, &m, &ctx(&[("a", "bc")])).is_err());
        assert!(decrypt(&h, body, &m, &ctx(&[])).is_err());
        assert!(decrypt(&h, body, &material(2), &c).is_err());
        for i in 0..blob.len() {
            let mut t = blob.clone();
            t[i] ^= 1;
            if let Some((h2, b2)) = BlobHeader::parse(&t) {
                assert!(decrypt(&h2, b2, &m, &c).is_err(), "flip at {i}");
            }
        }
    }

    proptest! {
        #[test]
        fn round_trip(pt in proptest::collection::vec(any::<u8>(), 0..300), c in proptest::collection::btree_map(".{0,3}", ".{0,3}", 0..3)) {
            let m = material(3);
            let blob = encrypt([1; 16], &m, &c, &pt).unwrap();
            let (h, body) = BlobHeader::parse(&blob).unwrap();
            prop_assert_eq!(&decrypt(&h, body, &m, &c).unwrap()[..], &pt[..]);
        }
    }
}
