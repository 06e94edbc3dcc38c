//! The XKS ciphertext (`Encrypt` / `Decrypt` of the XKS proxy API): AES-256-GCM with a random
//! 12-byte IV and a 16-byte tag, under a key derived from the KMS key's material for this use
//! alone, so that an XKS ciphertext and an appliance ciphertext blob never share a key.
//!
//! `ciphertextMetadata` (returned by Encrypt, stored by AWS KMS with the ciphertext and passed
//! back to Decrypt) names the material: a format byte and the material's version, so that
//! ciphertexts made before a rotation still decrypt. It is authenticated, with the request's
//! `additionalAuthenticatedData`, through the GCM AAD:
//!
//! ```text
//! "ekms-xks-v1" || be16(len(aad)) || SHA-256(aad) (only if aad is present)
//!               || u8(len(metadata)) || metadata
//! ```
//!
//! (the AAD is hashed so that any size is one fixed-size input; lengths keep the parts apart).

use aws_lc_rs::{
    aead::{AES_256_GCM, Aad, Nonce, RandomizedNonceKey},
    digest::{SHA256, digest},
    hkdf,
};
use zeroize::Zeroizing;

use crate::record::Material;

/// IV length (the specification's).
pub(crate) const IV_LEN: usize = 12;
/// Tag length (the specification's).
pub(crate) const TAG_LEN: usize = 16;
/// Longest `ciphertextMetadata` (the specification's).
pub(crate) const MAX_METADATA: usize = 20;
/// The metadata format this enclave writes.
const FORMAT: u8 = 1;
/// Domain separation of the derived key and of the AAD.
const LABEL: &[u8] = b"ekms-xks-v1";

/// The `ciphertextMetadata` of a ciphertext under material `version`.
pub(crate) fn metadata_for(version: u32) -> [u8; 5] {
    let v = version.to_be_bytes();
    [FORMAT, v[0], v[1], v[2], v[3]]
}

/// The material version a `ciphertextMetadata` names, if it is this enclave's.
pub(crate) fn version_of(metadata: &[u8]) -> Option<u32> {
    match metadata {
        [FORMAT, a, b, c, d] => Some(u32::from_be_bytes([*a, *b, *c, *d])),
        _ => None,
    }
}

fn key(material: &Material) -> Option<RandomizedNonceKey> {
    let mut k = Zeroizing::new([0u8; 32]);
    hkdf::Salt::new(hkdf::HKDF_SHA256, LABEL)
        .extract(&material.secret.0)
        .expand(&[b"aes-256-gcm"], hkdf::HKDF_SHA256)
        .ok()?
        .fill(k.as_mut_slice())
        .ok()?;
    RandomizedNonceKey::new(&AES_256_GCM, k.as_slice()).ok()
}

fn gcm_aad(aad: Option<&[u8]>, metadata: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(LABEL.len() + 2 + 32 + 1 + metadata.len());
    out.extend_from_slice(LABEL);
    let len = aad.map_or(0, <[u8]>::len);
    out.extend_from_slice(&u16::try_from(len).ok()?.to_be_bytes());
    if let Some(a) = aad {
        out.extend_from_slice(digest(&SHA256, a).as_ref());
    }
    out.push(u8::try_from(metadata.len()).ok()?);
    out.extend_from_slice(metadata);
    Some(out)
}

/// Encrypts `plaintext`: `(iv, ciphertext, tag)`. `None` if a length is out of range or the
/// primitive fails.
pub(crate) fn seal(
    material: &Material,
    aad: Option<&[u8]>,
    metadata: &[u8],
    plaintext: &[u8],
) -> Option<([u8; IV_LEN], Vec<u8>, [u8; TAG_LEN])> {
    let key = key(material)?;
    let aad = gcm_aad(aad, metadata)?;
    let mut data = plaintext.to_vec();
    let (nonce, tag) = key
        .seal_in_place_separate_tag(Aad::from(aad.as_slice()), &mut data)
        .ok()?;
    let iv: [u8; IV_LEN] = *nonce.as_ref();
    let tag: [u8; TAG_LEN] = tag.as_ref().try_into().ok()?;
    Some((iv, data, tag))
}

/// Decrypts; `None` if anything does not authenticate.
pub(crate) fn open(
    material: &Material,
    aad: Option<&[u8]>,
    metadata: &[u8],
    iv: &[u8],
    ciphertext: &[u8],
    tag: &[u8],
) -> Option<Zeroizing<Vec<u8>>> {
    let key = key(material)?;
    let aad = gcm_aad(aad, metadata)?;
    let nonce = Nonce::try_assume_unique_for_key(iv).ok()?;
    if tag.len() != TAG_LEN {
        return None;
    }
    let mut data = Zeroizing::new(Vec::with_capacity(ciphertext.len() + TAG_LEN));
    data.extend_from_slice(ciphertext);
    data.extend_from_slice(tag);
    let len = key
        .open_in_place(nonce, Aad::from(aad.as_slice()), &mut data)
        .ok()?
        .len();
    data.truncate(len);
    Some(data)
}

/// `ciphertextDataIntegrityValue`: SHA-256 over AAD ‖ metadata ‖ IV ‖ ciphertext ‖ tag.
pub(crate) fn integrity_value(
    aad: Option<&[u8]>,
    metadata: &[u8],
    iv: &[u8],
    ciphertext: &[u8],
    tag: &[u8],
) -> [u8; 32] {
    let mut ctx = aws_lc_rs::digest::Context::new(&SHA256);
    for part in [aad.unwrap_or_default(), metadata, iv, ciphertext, tag] {
        ctx.update(part);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn material(byte: u8) -> Material {
        let mut m = crate::ops::keys::new_material(1).unwrap();
        m.secret.0 = [byte; 32];
        m
    }

    #[test]
    fn only_the_same_material_aad_and_metadata_open_it() {
        let m = material(7);
        let meta = metadata_for(1);
        let (iv, ct, tag) = seal(&m, Some(b"aad"), &meta, b"plaintext").unwrap();
        assert_eq!(
            open(&m, Some(b"aad"), &meta, &iv, &ct, &tag)
                .unwrap()
                .as_slice(),
            b"plaintext"
        );
        assert!(open(&material(8), Some(b"aad"), &meta, &iv, &ct, &tag).is_none());
        assert!(open(&m, Some(b"aaD"), &meta, &iv, &ct, &tag).is_none());
        assert!(open(&m, None, &meta, &iv, &ct, &tag).is_none());
        assert!(open(&m, Some(b"aad"), &metadata_for(2), &iv, &ct, &tag).is_none());
        let mut bad_iv = iv;
        bad_iv[0] ^= 1;
        assert!(open(&m, Some(b"aad"), &meta, &bad_iv, &ct, &tag).is_none());
        let mut bad_tag = tag;
        bad_tag[15] ^= 1;
        assert!(open(&m, Some(b"aad"), &meta, &iv, &ct, &bad_tag).is_none());
        assert!(open(&m, Some(b"aad"), &meta, &iv[..11], &ct, &tag).is_none());
        assert!(open(&m, Some(b"aad"), &meta, &iv, &ct, &tag[..15]).is_none());
        // An empty AAD is not an absent one.
        let (iv, ct, tag) = seal(&m, Some(b""), &meta, b"x").unwrap();
        assert!(open(&m, None, &meta, &iv, &ct, &tag).is_none());
        assert_eq!(version_of(&meta), Some(1));
        assert_eq!(version_of(b"other"), None);
    }
}
