//! Asymmetric key material: generation (PKCS#8 DER, kept only in sealed records), the public key
//! (DER `SubjectPublicKeyInfo`), signing and verification, all with aws-lc-rs. A `DIGEST`
//! message is signed as the digest it is (never hashed again).

use aws_lc_rs::{
    agreement, digest,
    encoding::AsDer as _,
    rand::SystemRandom,
    rsa,
    signature::{self, EcdsaKeyPair, KeyPair as _, RsaEncoding, UnparsedPublicKey},
};
use zeroize::Zeroizing;

use crate::{
    EnclaveError, external_mu,
    keyspec::{Curve, Family},
    parsed_keys::{self, Parsed, Use},
};

/// What is signed or verified.
#[derive(Debug, Clone, Copy)]
pub enum Message<'a> {
    /// The message itself (hashed by the algorithm).
    Raw(&'a [u8]),
    /// The digest of the message, of the algorithm's hash.
    Digest(&'a [u8]),
    /// ML-DSA's 64-byte message representative mu (AWS's `EXTERNAL_MU`; see [`external_mu`]).
    Mu(&'a [u8]),
}

/// A new private key of `family`, PKCS#8 DER.
pub fn generate(family: Family) -> Result<Zeroizing<Vec<u8>>, EnclaveError> {
    let rng = SystemRandom::new();
    match family {
        Family::Ecc(curve) => {
            let doc = EcdsaKeyPair::generate_pkcs8(ecdsa_signing(curve), &rng)?;
            Ok(Zeroizing::new(doc.as_ref().to_vec()))
        }
        Family::MlDsa(level) => {
            let key = signature::PqdsaKeyPair::generate(ml_dsa_signing(level)?)?;
            let der = key.to_pkcs8v1()?;
            Ok(Zeroizing::new(der.as_ref().to_vec()))
        }
        Family::Ed25519 => {
            let key = signature::Ed25519KeyPair::generate()?;
            let der =
                aws_lc_rs::encoding::AsDer::<aws_lc_rs::encoding::Pkcs8V1Der<'_>>::as_der(&key)?;
            Ok(Zeroizing::new(der.as_ref().to_vec()))
        }
        Family::Rsa(bits) => {
            let size = match bits {
                2048 => rsa::KeySize::Rsa2048,
                3072 => rsa::KeySize::Rsa3072,
                4096 => rsa::KeySize::Rsa4096,
                _ => return Err(EnclaveError::BadInput),
            };
            let key = rsa::KeyPair::generate(size)?;
            let der = key.as_der()?;
            Ok(Zeroizing::new(der.as_ref().to_vec()))
        }
        _ => Err(EnclaveError::BadInput),
    }
}

/// The public key of a private key, DER `SubjectPublicKeyInfo`.
pub fn public_key(family: Family, pkcs8: &[u8]) -> Result<Vec<u8>, EnclaveError> {
    match family {
        Family::Ecc(curve) => {
            let key = EcdsaKeyPair::from_pkcs8(ecdsa_signing(curve), pkcs8)
                .map_err(|_| EnclaveError::BadRecord)?;
            Ok(key.public_key().as_der()?.as_ref().to_vec())
        }
        Family::Rsa(_) => {
            let key = rsa::KeyPair::from_pkcs8(pkcs8).map_err(|_| EnclaveError::BadRecord)?;
            Ok(key.public_key().as_der()?.as_ref().to_vec())
        }
        Family::Ed25519 => {
            let key = signature::Ed25519KeyPair::from_pkcs8_maybe_unchecked(pkcs8)
                .map_err(|_| EnclaveError::BadRecord)?;
            Ok(key.public_key().as_der()?.as_ref().to_vec())
        }
        Family::MlDsa(level) => {
            let key = signature::PqdsaKeyPair::from_pkcs8(ml_dsa_signing(level)?, pkcs8)
                .map_err(|_| EnclaveError::BadRecord)?;
            Ok(key.public_key().as_der()?.as_ref().to_vec())
        }
        _ => Err(EnclaveError::BadInput),
    }
}

/// Signs `message` with `algorithm` (an AWS signing algorithm that fits the key's spec).
pub fn sign(
    family: Family,
    algorithm: &str,
    pkcs8: &[u8],
    message: Message<'_>,
) -> Result<Vec<u8>, EnclaveError> {
    let hash = || hash_of(algorithm).ok_or(EnclaveError::BadInput);
    let key = parsed_keys::get(Use::Sign, family, pkcs8)?;
    match &*key {
        Parsed::Ecdsa(key) => {
            let sig = match message {
                Message::Raw(m) => key.sign(&SystemRandom::new(), m)?,
                Message::Digest(d) => {
                    key.sign_digest(&digest::Digest::import_less_safe(d, hash()?)?)?
                }
                Message::Mu(_) => return Err(EnclaveError::BadInput),
            };
            Ok(sig.as_ref().to_vec())
        }
        Parsed::Ed25519(key) => ed25519_sign(key, message),
        Parsed::MlDsa(key) => match (message, family) {
            // ML-DSA signs the message itself (FIPS 204, empty context) with aws-lc-rs.
            (Message::Raw(m), _) => {
                let mut sig = vec![0u8; 4627];
                let len = key.sign(m, &mut sig)?;
                sig.truncate(len);
                Ok(sig)
            }
            (Message::Mu(mu), Family::MlDsa(level)) => external_mu::sign(level, pkcs8, mu),
            _ => Err(EnclaveError::BadInput),
        },
        Parsed::RsaSigning(key) => {
            let padding = rsa_padding(algorithm).ok_or(EnclaveError::BadInput)?;
            let mut sig = vec![0u8; key.public_modulus_len()];
            match message {
                Message::Raw(m) => key.sign(padding, &SystemRandom::new(), m, &mut sig)?,
                Message::Digest(d) => key.sign_digest(
                    padding,
                    &digest::Digest::import_less_safe(d, hash()?)?,
                    &mut sig,
                )?,
                Message::Mu(_) => return Err(EnclaveError::BadInput),
            }
            Ok(sig)
        }
        _ => Err(EnclaveError::BadInput),
    }
}

/// Whether `sig` is a valid signature of `message` under the public key `spki`.
pub fn verify(
    family: Family,
    algorithm: &str,
    spki: &[u8],
    message: Message<'_>,
    sig: &[u8],
) -> Result<bool, EnclaveError> {
    if let Family::MlDsa(level) = family {
        let m = match message {
            Message::Raw(m) => m,
            Message::Mu(mu) => return external_mu::verify(level, spki, mu, sig),
            Message::Digest(_) => return Err(EnclaveError::BadInput),
        };
        let alg = match level {
            44 => &signature::ML_DSA_44,
            65 => &signature::ML_DSA_65,
            _ => &signature::ML_DSA_87,
        };
        return Ok(UnparsedPublicKey::new(alg, spki).verify(m, sig).is_ok());
    }
    let hash = hash_of(algorithm).ok_or(EnclaveError::BadInput)?;
    if family == Family::Ed25519 {
        return ed25519_verify(spki, message, sig);
    }
    let alg: &'static dyn signature::VerificationAlgorithm = match family {
        Family::Ecc(curve) => ecdsa_verification(curve),
        Family::Rsa(_) => rsa_verification(algorithm).ok_or(EnclaveError::BadInput)?,
        _ => return Err(EnclaveError::BadInput),
    };
    let key = UnparsedPublicKey::new(alg, spki);
    Ok(match message {
        Message::Raw(m) => key.verify(m, sig).is_ok(),
        Message::Digest(d) => key
            .verify_digest(&digest::Digest::import_less_safe(d, hash)?, sig)
            .is_ok(),
        Message::Mu(_) => return Err(EnclaveError::BadInput),
    })
}

/// The ECDH shared secret of the private key and a peer's public key (DER
/// `SubjectPublicKeyInfo` on the same curve); `None` for a peer key that is not one.
pub fn agree(
    curve: Curve,
    pkcs8: &[u8],
    peer_spki: &[u8],
) -> Result<Option<Zeroizing<Vec<u8>>>, EnclaveError> {
    let alg = match curve {
        Curve::P256 => &agreement::ECDH_P256,
        Curve::P384 => &agreement::ECDH_P384,
        Curve::P521 => &agreement::ECDH_P521,
        Curve::K256 => return Err(EnclaveError::BadInput),
    };
    let parsed = parsed_keys::get(Use::Agree, Family::Ecc(curve), pkcs8)?;
    let Parsed::Ecdh(key) = &*parsed else {
        return Err(EnclaveError::BadInput);
    };
    // AWS takes the peer key as DER SubjectPublicKeyInfo only (a SEQUENCE), not a bare point.
    if peer_spki.first() != Some(&0x30) {
        return Ok(None);
    }
    let peer = agreement::UnparsedPublicKey::new(alg, peer_spki);
    Ok(agreement::agree(key, peer, (), |secret| Ok(Zeroizing::new(secret.to_vec()))).ok())
}

pub(crate) fn ml_dsa_signing(
    level: u16,
) -> Result<&'static signature::PqdsaSigningAlgorithm, EnclaveError> {
    match level {
        44 => Ok(&signature::ML_DSA_44_SIGNING),
        65 => Ok(&signature::ML_DSA_65_SIGNING),
        87 => Ok(&signature::ML_DSA_87_SIGNING),
        _ => Err(EnclaveError::BadInput),
    }
}

/// Ed25519 (`RAW`, RFC 8032 pure) with aws-lc-rs, or Ed25519ph (`DIGEST`: a SHA-512 digest,
/// empty context) with ed25519-dalek.
fn ed25519_sign(
    key: &signature::Ed25519KeyPair,
    message: Message<'_>,
) -> Result<Vec<u8>, EnclaveError> {
    match message {
        Message::Raw(m) => Ok(key.sign(m).as_ref().to_vec()),
        Message::Digest(d) => {
            let seed = key.seed()?;
            let seed = aws_lc_rs::encoding::AsBigEndian::as_be_bytes(&seed)?;
            let mut bytes = Zeroizing::new([0u8; 32]);
            if seed.as_ref().len() != 32 {
                return Err(EnclaveError::Crypto);
            }
            bytes.copy_from_slice(seed.as_ref());
            let signing = ed25519_dalek::SigningKey::from_bytes(&bytes);
            let sig = signing
                .sign_prehashed(Prehashed::of(d)?, None)
                .map_err(|_| EnclaveError::Crypto)?;
            Ok(sig.to_bytes().to_vec())
        }
        Message::Mu(_) => Err(EnclaveError::BadInput),
    }
}

fn ed25519_verify(spki: &[u8], message: Message<'_>, sig: &[u8]) -> Result<bool, EnclaveError> {
    // An Ed25519 SubjectPublicKeyInfo is a 12-byte header and the 32-byte key.
    let raw: [u8; 32] = spki
        .get(12..)
        .and_then(|k| k.try_into().ok())
        .ok_or(EnclaveError::BadInput)?;
    Ok(match message {
        Message::Raw(m) => UnparsedPublicKey::new(&signature::ED25519, raw)
            .verify(m, sig)
            .is_ok(),
        Message::Digest(d) => {
            let Ok(vk) = ed25519_dalek::VerifyingKey::from_bytes(&raw) else {
                return Ok(false);
            };
            let Ok(sig) = ed25519_dalek::Signature::from_slice(sig) else {
                return Ok(false);
            };
            vk.verify_prehashed(Prehashed::of(d)?, None, &sig).is_ok()
        }
        Message::Mu(_) => return Err(EnclaveError::BadInput),
    })
}

/// A SHA-512 digest computed by the caller, handed to ed25519-dalek's Ed25519ph as the finished
/// hash state: dalek only calls `finalize` on it (checked by the unit test that signs the same
/// message through dalek's own hashing).
#[derive(Clone)]
struct Prehashed([u8; 64]);

impl Prehashed {
    fn of(d: &[u8]) -> Result<Self, EnclaveError> {
        Ok(Self(d.try_into().map_err(|_| EnclaveError::BadInput)?))
    }
}

impl Default for Prehashed {
    fn default() -> Self {
        Self([0; 64])
    }
}

impl ::digest::HashMarker for Prehashed {}

impl ::digest::OutputSizeUser for Prehashed {
    type OutputSize = ::digest::consts::U64;
}

impl ::digest::Update for Prehashed {
    fn update(&mut self, _data: &[u8]) {
        // The digest is given whole; there is nothing to absorb.
    }
}

impl ::digest::FixedOutput for Prehashed {
    fn finalize_into(self, out: &mut ::digest::Output<Self>) {
        out.copy_from_slice(&self.0);
    }
}

/// The OAEP algorithm of an AWS encryption algorithm name.
fn oaep(algorithm: &str) -> Option<&'static rsa::OaepAlgorithm> {
    match algorithm {
        "RSAES_OAEP_SHA_1" => Some(&rsa::OAEP_SHA1_MGF1SHA1),
        "RSAES_OAEP_SHA_256" => Some(&rsa::OAEP_SHA256_MGF1SHA256),
        _ => None,
    }
}

/// Largest plaintext RSAES-OAEP encrypts under a key of `bits` with `algorithm`'s hash
/// (`k - 2·hLen - 2`, RFC 8017).
#[must_use]
pub fn oaep_max_plaintext(bits: u32, algorithm: &str) -> usize {
    let k = usize::try_from(bits / 8).unwrap_or(0);
    let h = if algorithm == "RSAES_OAEP_SHA_1" {
        20
    } else {
        32
    };
    k.saturating_sub(2 * h + 2)
}

/// RSAES-OAEP encryption with the public half of `pkcs8`: the raw ciphertext, as AWS returns
/// it.
pub fn rsa_encrypt(
    pkcs8: &[u8],
    algorithm: &str,
    plaintext: &[u8],
) -> Result<Vec<u8>, EnclaveError> {
    let alg = oaep(algorithm).ok_or(EnclaveError::BadInput)?;
    let private = rsa_decrypting(pkcs8)?;
    let public = rsa::OaepPublicEncryptingKey::new(private.public_key())?;
    let mut out = vec![0u8; public.ciphertext_size()];
    let len = public.encrypt(alg, plaintext, &mut out, None)?.len();
    out.truncate(len);
    Ok(out)
}

/// RSAES-OAEP decryption; `None` when the ciphertext does not decrypt.
pub fn rsa_decrypt(
    pkcs8: &[u8],
    algorithm: &str,
    ciphertext: &[u8],
) -> Result<Option<Zeroizing<Vec<u8>>>, EnclaveError> {
    rsa_decrypt_with(
        &rsa::OaepPrivateDecryptingKey::new(rsa_decrypting(pkcs8)?)?,
        algorithm,
        ciphertext,
    )
}

/// The RSA decryption key of `pkcs8` (from [`parsed_keys`]; a clone shares the parsed key).
fn rsa_decrypting(pkcs8: &[u8]) -> Result<rsa::PrivateDecryptingKey, EnclaveError> {
    // The family's size is not part of the parse; 0 names "RSA, any size" in the cache.
    let parsed = parsed_keys::get(Use::Decrypt, Family::Rsa(0), pkcs8)?;
    match &*parsed {
        Parsed::RsaDecrypting(key) => Ok(key.clone()),
        _ => Err(EnclaveError::BadInput),
    }
}

/// [`rsa_decrypt`] with a parsed key.
fn rsa_decrypt_with(
    key: &rsa::OaepPrivateDecryptingKey,
    algorithm: &str,
    ciphertext: &[u8],
) -> Result<Option<Zeroizing<Vec<u8>>>, EnclaveError> {
    let alg = oaep(algorithm).ok_or(EnclaveError::BadInput)?;
    let mut out = Zeroizing::new(vec![0u8; key.min_output_size()]);
    let Ok(len) = key
        .decrypt(alg, ciphertext, &mut out, None)
        .map(|p| p.len())
    else {
        return Ok(None);
    };
    out.truncate(len);
    Ok(Some(out))
}

pub(crate) fn ecdsa_signing(curve: Curve) -> &'static signature::EcdsaSigningAlgorithm {
    match curve {
        Curve::P256 => &signature::ECDSA_P256_SHA256_ASN1_SIGNING,
        Curve::P384 => &signature::ECDSA_P384_SHA384_ASN1_SIGNING,
        Curve::P521 => &signature::ECDSA_P521_SHA512_ASN1_SIGNING,
        Curve::K256 => &signature::ECDSA_P256K1_SHA256_ASN1_SIGNING,
    }
}

fn ecdsa_verification(curve: Curve) -> &'static signature::EcdsaVerificationAlgorithm {
    match curve {
        Curve::P256 => &signature::ECDSA_P256_SHA256_ASN1,
        Curve::P384 => &signature::ECDSA_P384_SHA384_ASN1,
        Curve::P521 => &signature::ECDSA_P521_SHA512_ASN1,
        Curve::K256 => &signature::ECDSA_P256K1_SHA256_ASN1,
    }
}

fn hash_of(algorithm: &str) -> Option<&'static digest::Algorithm> {
    match crate::keyspec::digest_len(algorithm)? {
        32 => Some(&digest::SHA256),
        48 => Some(&digest::SHA384),
        64 => Some(&digest::SHA512),
        _ => None,
    }
}

fn rsa_padding(algorithm: &str) -> Option<&'static dyn RsaEncoding> {
    Some(match algorithm {
        "RSASSA_PSS_SHA_256" => &signature::RSA_PSS_SHA256,
        "RSASSA_PSS_SHA_384" => &signature::RSA_PSS_SHA384,
        "RSASSA_PSS_SHA_512" => &signature::RSA_PSS_SHA512,
        "RSASSA_PKCS1_V1_5_SHA_256" => &signature::RSA_PKCS1_SHA256,
        "RSASSA_PKCS1_V1_5_SHA_384" => &signature::RSA_PKCS1_SHA384,
        "RSASSA_PKCS1_V1_5_SHA_512" => &signature::RSA_PKCS1_SHA512,
        _ => return None,
    })
}

fn rsa_verification(algorithm: &str) -> Option<&'static signature::RsaParameters> {
    Some(match algorithm {
        "RSASSA_PSS_SHA_256" => &signature::RSA_PSS_2048_8192_SHA256,
        "RSASSA_PSS_SHA_384" => &signature::RSA_PSS_2048_8192_SHA384,
        "RSASSA_PSS_SHA_512" => &signature::RSA_PSS_2048_8192_SHA512,
        "RSASSA_PKCS1_V1_5_SHA_256" => &signature::RSA_PKCS1_2048_8192_SHA256,
        "RSASSA_PKCS1_V1_5_SHA_384" => &signature::RSA_PKCS1_2048_8192_SHA384,
        "RSASSA_PKCS1_V1_5_SHA_512" => &signature::RSA_PKCS1_2048_8192_SHA512,
        _ => return None,
    })
}

/// Feeds `data` as client input to the parsers of this module, as the fuzz target `peer_input`
/// and its corpus test do: its first byte picks a key (every family), the rest is a peer public
/// key (ECDH), a signature (raw and digest) and an RSA ciphertext. Nothing may panic, verify or
/// decrypt.
///
/// # Panics
/// When fuzzed input verifies, agrees or decrypts (the fuzzer's finding).
pub fn peer_input(data: &[u8]) {
    use std::sync::OnceLock;
    /// A throwaway key of the fuzz run: family, private key, public key, and the RSA key
    /// parsed once (parsing checks the key, which would otherwise be most of each run).
    type FuzzKey = (
        Family,
        Zeroizing<Vec<u8>>,
        Vec<u8>,
        Option<rsa::OaepPrivateDecryptingKey>,
    );
    static KEYS: OnceLock<Vec<FuzzKey>> = OnceLock::new();
    let keys = KEYS.get_or_init(|| {
        [
            Family::Ecc(Curve::P256),
            Family::Ecc(Curve::P384),
            Family::Ecc(Curve::K256),
            Family::Rsa(2048),
            Family::Ed25519,
            Family::MlDsa(44),
        ]
        .into_iter()
        .filter_map(|f| {
            let private = generate(f).ok()?;
            let public = public_key(f, &private).ok()?;
            let oaep = matches!(f, Family::Rsa(_))
                .then(|| rsa::PrivateDecryptingKey::from_pkcs8(&private).ok())
                .flatten()
                .and_then(|k| rsa::OaepPrivateDecryptingKey::new(k).ok());
            Some((f, private, public, oaep))
        })
        .collect()
    });
    // The first byte picks the key, so that each run does one key's work and the fuzzer
    // learns which byte leads where; the rest is the input.
    let Some((&pick, data)) = data.split_first() else {
        return;
    };
    let Some((f, private, public, oaep)) = keys.get(usize::from(pick) % keys.len().max(1)) else {
        return;
    };
    let algs: &[&str] = match f {
        Family::Ecc(Curve::P384) => &["ECDSA_SHA_384"],
        Family::Ecc(_) => &["ECDSA_SHA_256"],
        Family::Rsa(_) => &["RSASSA_PSS_SHA_256", "RSASSA_PKCS1_V1_5_SHA_512"],
        Family::Ed25519 => &["ED25519_SHA_512", "ED25519_PH_SHA_512"],
        _ => &["ML_DSA_SHAKE_256"],
    };
    let zeros = [0u8; 64];
    for alg in algs {
        let digest = crate::keyspec::digest_len(alg).and_then(|n| zeros.get(..n));
        let messages = [Some(Message::Raw(b"fuzz")), digest.map(Message::Digest)];
        for msg in messages.into_iter().flatten() {
            assert!(!verify(*f, alg, public, msg, data).unwrap_or(false));
            // The fuzzed bytes as the public key too.
            let _ = verify(*f, alg, data, msg, b"signature");
        }
    }
    match f {
        Family::Ecc(c @ (Curve::P256 | Curve::P384)) => {
            let _ = agree(*c, private, data);
        }
        Family::Rsa(_) => {
            if let Some(key) = oaep {
                for alg in ["RSAES_OAEP_SHA_1", "RSAES_OAEP_SHA_256"] {
                    assert!(rsa_decrypt_with(key, alg, data).is_ok_and(|p| p.is_none()));
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_ecdsa_curve_signs_raw_and_digest_and_verifies() {
        for (curve, alg) in [
            (Curve::P256, "ECDSA_SHA_256"),
            (Curve::P384, "ECDSA_SHA_384"),
            (Curve::P521, "ECDSA_SHA_512"),
            (Curve::K256, "ECDSA_SHA_256"),
        ] {
            let f = Family::Ecc(curve);
            let key = generate(f).unwrap();
            let spki = public_key(f, &key).unwrap();
            let msg = b"message";
            let d = digest::digest(hash_of(alg).unwrap(), msg);
            let raw = sign(f, alg, &key, Message::Raw(msg)).unwrap();
            let pre = sign(f, alg, &key, Message::Digest(d.as_ref())).unwrap();
            for sig in [&raw, &pre] {
                // A signature of the digest is a signature of the message: DIGEST is not hashed
                // again.
                assert!(verify(f, alg, &spki, Message::Raw(msg), sig).unwrap());
                assert!(verify(f, alg, &spki, Message::Digest(d.as_ref()), sig).unwrap());
                assert!(!verify(f, alg, &spki, Message::Raw(b"other"), sig).unwrap());
            }
            assert!(sign(f, alg, &key, Message::Digest(&[0u8; 5])).is_err());
            let mut bad = raw.clone();
            *bad.last_mut().unwrap() ^= 1;
            assert!(!verify(f, alg, &spki, Message::Raw(msg), &bad).unwrap());
        }
    }

    #[test]
    fn ecdh_secrets_agree_both_ways_and_refuse_other_curves() {
        let f = Family::Ecc(Curve::P256);
        let (a, b) = (generate(f).unwrap(), generate(f).unwrap());
        let (pa, pb) = (public_key(f, &a).unwrap(), public_key(f, &b).unwrap());
        let ab = agree(Curve::P256, &a, &pb).unwrap().unwrap();
        let ba = agree(Curve::P256, &b, &pa).unwrap().unwrap();
        assert_eq!(ab.as_slice(), ba.as_slice());
        assert_eq!(ab.len(), 32);
        let other = public_key(
            Family::Ecc(Curve::P384),
            &generate(Family::Ecc(Curve::P384)).unwrap(),
        )
        .unwrap();
        assert!(agree(Curve::P256, &a, &other).unwrap().is_none());
        assert!(agree(Curve::P256, &a, b"garbage").unwrap().is_none());
        // A bare point is not DER SPKI.
        assert!(
            agree(Curve::P256, &a, &pb[pb.len() - 65..])
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn ed25519_signs_pure_and_prehashed_as_rfc_8032() {
        use sha2::Digest as _;
        let f = Family::Ed25519;
        let key = generate(f).unwrap();
        let spki = public_key(f, &key).unwrap();
        let raw = sign(f, "ED25519_SHA_512", &key, Message::Raw(b"abc")).unwrap();
        assert!(verify(f, "ED25519_SHA_512", &spki, Message::Raw(b"abc"), &raw).unwrap());
        assert!(!verify(f, "ED25519_SHA_512", &spki, Message::Raw(b"abd"), &raw).unwrap());
        let d = sha2::Sha512::digest(b"abc");
        let ph = sign(f, "ED25519_PH_SHA_512", &key, Message::Digest(&d)).unwrap();
        assert_ne!(ph, raw);
        // The same signature as dalek's own Ed25519ph over the message (deterministic), so the
        // given digest is used exactly as the finished hash.
        let pair = signature::Ed25519KeyPair::from_pkcs8_maybe_unchecked(&key).unwrap();
        let seed = aws_lc_rs::encoding::AsBigEndian::as_be_bytes(&pair.seed().unwrap()).unwrap();
        let dalek = ed25519_dalek::SigningKey::from_bytes(&seed.as_ref().try_into().unwrap());
        let mut h = sha2::Sha512::new();
        h.update(b"abc");
        assert_eq!(
            dalek.sign_prehashed(h, None).unwrap().to_bytes().to_vec(),
            ph
        );
        assert!(verify(f, "ED25519_PH_SHA_512", &spki, Message::Digest(&d), &ph).unwrap());
        let other = sha2::Sha512::digest(b"abd");
        assert!(!verify(f, "ED25519_PH_SHA_512", &spki, Message::Digest(&other), &ph).unwrap());
        assert!(!verify(f, "ED25519_PH_SHA_512", &spki, Message::Digest(&d), &raw).unwrap());
    }

    #[test]
    fn ed25519ph_matches_the_rfc_8032_vector() {
        use sha2::Digest as _;
        // RFC 8032 section 7.3, TEST abc.
        let hex = |s: &str| {
            (0..s.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
                .collect::<Vec<u8>>()
        };
        let seed = hex("833fe62409237b9d62ec77587520911e9a759cec1d19755b7da901b96dca3d42");
        let expected = hex(
            "98a70222f0b8121aa9d30f813d683f809e462b469c7ff87639499bb94e6dae41\
             31f85042463c2a355a2003d062adf5aaa10b8c61e636062aaad11c2a26083406",
        );
        let pair = signature::Ed25519KeyPair::from_seed_unchecked(&seed).unwrap();
        let pkcs8 =
            aws_lc_rs::encoding::AsDer::<aws_lc_rs::encoding::Pkcs8V1Der<'_>>::as_der(&pair)
                .unwrap();
        let d = sha2::Sha512::digest(b"abc");
        let sig = sign(
            Family::Ed25519,
            "ED25519_PH_SHA_512",
            pkcs8.as_ref(),
            Message::Digest(&d),
        )
        .unwrap();
        assert_eq!(sig, expected);
        let spki = public_key(Family::Ed25519, pkcs8.as_ref()).unwrap();
        assert_eq!(
            spki[12..],
            hex("ec172b93ad5e563bf4932c70e1245034c35467ef2efd4d64ebf819683467e2bf")[..]
        );
    }

    #[test]
    fn ml_dsa_signs_and_verifies_at_every_level() {
        for level in [44, 65, 87] {
            let f = Family::MlDsa(level);
            let key = generate(f).unwrap();
            let spki = public_key(f, &key).unwrap();
            let sig = sign(f, "ML_DSA_SHAKE_256", &key, Message::Raw(b"m")).unwrap();
            assert!(verify(f, "ML_DSA_SHAKE_256", &spki, Message::Raw(b"m"), &sig).unwrap());
            assert!(!verify(f, "ML_DSA_SHAKE_256", &spki, Message::Raw(b"n"), &sig).unwrap());
            assert!(sign(f, "ML_DSA_SHAKE_256", &key, Message::Digest(&[0; 64])).is_err());
        }
    }

    #[test]
    fn ed25519_pairs_have_pkcs8_and_spki() {
        let key = generate(Family::Ed25519).unwrap();
        let spki = public_key(Family::Ed25519, &key).unwrap();
        assert_eq!(spki.len(), 44);
        let pair = signature::Ed25519KeyPair::from_pkcs8_maybe_unchecked(&key).unwrap();
        let sig = pair.sign(b"m");
        UnparsedPublicKey::new(&signature::ED25519, &spki[12..])
            .verify(b"m", sig.as_ref())
            .unwrap();
    }

    #[test]
    fn rsa_oaep_round_trips_up_to_the_aws_limits() {
        let key = generate(Family::Rsa(2048)).unwrap();
        for (alg, max) in [("RSAES_OAEP_SHA_1", 214), ("RSAES_OAEP_SHA_256", 190)] {
            assert_eq!(oaep_max_plaintext(2048, alg), max);
            let ct = rsa_encrypt(&key, alg, &vec![7u8; max]).unwrap();
            assert_eq!(ct.len(), 256);
            assert_eq!(
                rsa_decrypt(&key, alg, &ct).unwrap().unwrap().as_slice(),
                &vec![7u8; max][..]
            );
            assert!(rsa_encrypt(&key, alg, &vec![7u8; max + 1]).is_err());
            let mut bad = ct.clone();
            bad[10] ^= 1;
            assert!(rsa_decrypt(&key, alg, &bad).unwrap().is_none());
        }
        let ct = rsa_encrypt(&key, "RSAES_OAEP_SHA_1", b"x").unwrap();
        assert!(
            rsa_decrypt(&key, "RSAES_OAEP_SHA_256", &ct)
                .unwrap()
                .is_none()
        );
        assert_eq!(oaep_max_plaintext(4096, "RSAES_OAEP_SHA_256"), 446);
    }

    #[test]
    fn rsa_signs_pss_and_pkcs1_over_raw_and_digest() {
        let f = Family::Rsa(2048);
        let key = generate(f).unwrap();
        let spki = public_key(f, &key).unwrap();
        for alg in [
            "RSASSA_PSS_SHA_256",
            "RSASSA_PSS_SHA_512",
            "RSASSA_PKCS1_V1_5_SHA_256",
            "RSASSA_PKCS1_V1_5_SHA_384",
        ] {
            let msg = b"message";
            let d = digest::digest(hash_of(alg).unwrap(), msg);
            let raw = sign(f, alg, &key, Message::Raw(msg)).unwrap();
            assert_eq!(raw.len(), 256);
            let pre = sign(f, alg, &key, Message::Digest(d.as_ref())).unwrap();
            for sig in [&raw, &pre] {
                assert!(
                    verify(f, alg, &spki, Message::Raw(msg), sig).unwrap(),
                    "{alg}"
                );
                assert!(!verify(f, alg, &spki, Message::Raw(b"x"), sig).unwrap());
            }
        }
    }
}
