//! Parsed private keys, so that a Sign, an RSA Encrypt or Decrypt, or a DeriveSharedSecret does
//! not parse its key's PKCS#8 again on every call. Parsing is most of a call's cryptography: an
//! ECDSA or Ed25519 parse computes the public point, an RSA parse checks the key and its first
//! use sets up the Montgomery contexts and blinding that a kept key reuses.
//!
//! An entry is found by the SHA-256 of the PKCS#8 bytes, with the family and use: it is only
//! ever the parse of exactly the bytes the caller holds, and those came from a record that was
//! just opened and checked against the enclave's view of the latest state. So the cache cannot
//! serve a changed, stale or substituted key; it saves work, never a check. It lives in enclave
//! memory only and holds at most [`CAPACITY`] keys; aws-lc cleanses a key's memory when it is
//! freed (`OPENSSL_free`), when an evicted entry's last user is done with it.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, OnceLock},
};

use aws_lc_rs::{
    agreement, digest, rsa,
    signature::{self, EcdsaKeyPair},
};

use crate::{
    EnclaveError,
    asymmetric::{ecdsa_signing, ml_dsa_signing},
    keyspec::{Curve, Family},
};

/// How many parsed keys the cache holds (a parsed RSA-4096 key with its Montgomery contexts is
/// about 10 KiB, so at most a few MiB).
pub const CAPACITY: usize = 256;

/// What a key is parsed for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Use {
    /// Signing (ECDSA, Ed25519, ML-DSA, RSASSA).
    Sign,
    /// RSAES-OAEP (decryption, and encryption with its public half).
    Decrypt,
    /// ECDH.
    Agree,
}

/// A private key, parsed for one [`Use`].
pub enum Parsed {
    /// An ECDSA signing key.
    Ecdsa(EcdsaKeyPair),
    /// An Ed25519 signing key.
    Ed25519(signature::Ed25519KeyPair),
    /// An ML-DSA signing key.
    MlDsa(signature::PqdsaKeyPair),
    /// An RSA signing key.
    RsaSigning(rsa::KeyPair),
    /// An RSA decryption key.
    RsaDecrypting(rsa::PrivateDecryptingKey),
    /// An ECDH key.
    Ecdh(agreement::PrivateKey),
}

impl std::fmt::Debug for Parsed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Parsed(<redacted>)")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Name {
    use_: Use,
    family: Family,
    digest: [u8; 32],
}

type Map = HashMap<Name, Arc<Parsed>>;

fn cache() -> &'static Mutex<Map> {
    static CACHE: OnceLock<Mutex<Map>> = OnceLock::new();
    CACHE.get_or_init(|| Mutex::new(HashMap::with_capacity(CAPACITY)))
}

/// `pkcs8`, a private key of `family`, parsed for `use_`: from the cache when these very bytes
/// were parsed for it before. [`EnclaveError::BadRecord`] when they do not parse as such a key;
/// [`EnclaveError::BadInput`] for a family that has no such use.
pub fn get(use_: Use, family: Family, pkcs8: &[u8]) -> Result<Arc<Parsed>, EnclaveError> {
    let mut d = [0u8; 32];
    d.copy_from_slice(digest::digest(&digest::SHA256, pkcs8).as_ref());
    let name = Name {
        use_,
        family,
        digest: d,
    };
    if let Some(found) = cache().lock().ok().and_then(|m| m.get(&name).cloned()) {
        return Ok(found);
    }
    // Parsed outside the lock: an RSA check takes a while, and other keys need not wait.
    let parsed = Arc::new(parse(use_, family, pkcs8)?);
    if let Ok(mut m) = cache().lock() {
        if m.len() >= CAPACITY
            && !m.contains_key(&name)
            && let Some(evict) = m.keys().next().copied()
        {
            m.remove(&evict);
        }
        m.insert(name, Arc::clone(&parsed));
    }
    Ok(parsed)
}

/// How many keys the cache holds.
#[must_use]
pub fn len() -> usize {
    cache().lock().map_or(0, |m| m.len())
}

fn parse(use_: Use, family: Family, pkcs8: &[u8]) -> Result<Parsed, EnclaveError> {
    let bad = |_| EnclaveError::BadRecord;
    Ok(match (use_, family) {
        (Use::Sign, Family::Ecc(curve)) => {
            Parsed::Ecdsa(EcdsaKeyPair::from_pkcs8(ecdsa_signing(curve), pkcs8).map_err(bad)?)
        }
        (Use::Sign, Family::Ed25519) => Parsed::Ed25519(
            signature::Ed25519KeyPair::from_pkcs8_maybe_unchecked(pkcs8).map_err(bad)?,
        ),
        (Use::Sign, Family::MlDsa(level)) => Parsed::MlDsa(
            signature::PqdsaKeyPair::from_pkcs8(ml_dsa_signing(level)?, pkcs8).map_err(bad)?,
        ),
        (Use::Sign, Family::Rsa(_)) => {
            Parsed::RsaSigning(rsa::KeyPair::from_pkcs8(pkcs8).map_err(bad)?)
        }
        (Use::Decrypt, Family::Rsa(_)) => {
            Parsed::RsaDecrypting(rsa::PrivateDecryptingKey::from_pkcs8(pkcs8).map_err(bad)?)
        }
        (Use::Agree, Family::Ecc(curve)) => {
            let alg = match curve {
                Curve::P256 => &agreement::ECDH_P256,
                Curve::P384 => &agreement::ECDH_P384,
                Curve::P521 => &agreement::ECDH_P521,
                Curve::K256 => return Err(EnclaveError::BadInput),
            };
            Parsed::Ecdh(agreement::PrivateKey::from_private_key_der(alg, pkcs8).map_err(bad)?)
        }
        _ => return Err(EnclaveError::BadInput),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use aws_lc_rs::signature::KeyPair as _;

    use super::*;
    use crate::asymmetric;

    #[test]
    fn each_key_is_its_own_entry_and_a_changed_key_is_never_served_from_another() {
        let family = Family::Ecc(Curve::P256);
        let a = asymmetric::generate(family).unwrap();
        let b = asymmetric::generate(family).unwrap();
        let pa = get(Use::Sign, family, &a).unwrap();
        assert!(Arc::ptr_eq(&pa, &get(Use::Sign, family, &a).unwrap()));
        let pb = get(Use::Sign, family, &b).unwrap();
        assert!(!Arc::ptr_eq(&pa, &pb));
        let (Parsed::Ecdsa(ka), Parsed::Ecdsa(kb)) = (&*pa, &*pb) else {
            panic!("not ECDSA keys");
        };
        assert_eq!(
            ka.public_key().as_ref(),
            EcdsaKeyPair::from_pkcs8(ecdsa_signing(Curve::P256), &a)
                .unwrap()
                .public_key()
                .as_ref()
        );
        assert_ne!(ka.public_key().as_ref(), kb.public_key().as_ref());
        // One flipped byte is another document: it is parsed (and here refused), not served.
        let mut edited = a.to_vec();
        if let Some(last) = edited.last_mut() {
            *last ^= 1;
        }
        assert!(!matches!(
            get(Use::Sign, family, &edited).map(|p| Arc::ptr_eq(&p, &pa)),
            Ok(true)
        ));
    }

    #[test]
    fn the_same_bytes_for_another_use_or_family_are_parsed_for_it() {
        let rsa = asymmetric::generate(Family::Rsa(2048)).unwrap();
        assert!(matches!(
            *get(Use::Sign, Family::Rsa(2048), &rsa).unwrap(),
            Parsed::RsaSigning(_)
        ));
        assert!(matches!(
            *get(Use::Decrypt, Family::Rsa(2048), &rsa).unwrap(),
            Parsed::RsaDecrypting(_)
        ));
        assert!(matches!(
            get(Use::Agree, Family::Rsa(2048), &rsa),
            Err(EnclaveError::BadInput)
        ));
        assert!(matches!(
            get(Use::Sign, Family::Ecc(Curve::P384), &rsa),
            Err(EnclaveError::BadRecord)
        ));
        let ec = asymmetric::generate(Family::Ecc(Curve::P384)).unwrap();
        assert!(matches!(
            *get(Use::Agree, Family::Ecc(Curve::P384), &ec).unwrap(),
            Parsed::Ecdh(_)
        ));
        assert!(matches!(
            *get(Use::Sign, Family::Ecc(Curve::P384), &ec).unwrap(),
            Parsed::Ecdsa(_)
        ));
    }

    #[test]
    fn the_cache_stays_within_its_capacity() {
        let family = Family::Ed25519;
        for _ in 0..CAPACITY + 20 {
            let k = asymmetric::generate(family).unwrap();
            get(Use::Sign, family, &k).unwrap();
            assert!(len() <= CAPACITY);
        }
        let k = asymmetric::generate(family).unwrap();
        assert!(format!("{:?}", get(Use::Sign, family, &k).unwrap()).contains("redacted"));
    }
}
