//! ML-DSA over an external mu: AWS's `MessageType` `EXTERNAL_MU`, where the caller hands in the
//! 64-byte message representative mu = SHAKE256(SHAKE256(pk, 64) || 0x00 || 0x00 || M, 64)
//! (FIPS 204 Algorithm 7 line 6, empty context) instead of the message.
//!
//! aws-lc-rs 1.19 signs and verifies whole messages only, so this one path uses RustCrypto's
//! pure-Rust `ml-dsa` (its `unsafe` is forbidden too). The key is the same: aws-lc-rs writes an
//! ML-DSA private key as its 32-byte FIPS 204 seed, which `ml-dsa` expands with the same
//! ML-DSA.KeyGen_internal; a unit test holds the two public keys equal. Signing is hedged (fresh
//! randomness from aws-lc-rs), as aws-lc-rs signs.

use ml_dsa::{
    ExpandedSigningKey, MlDsa44, MlDsa65, MlDsa87, MlDsaParams, Signature, VerifyingKey,
    pkcs8::{
        DecodePrivateKey as _,
        der::AnyRef,
        spki::{AssociatedAlgorithmIdentifier, DecodePublicKey as _},
    },
};

use crate::EnclaveError;

/// The length of mu (FIPS 204: 64 bytes at every level).
pub const MU_LEN: usize = 64;

/// Signs the external `mu` with the ML-DSA private key `pkcs8` (aws-lc-rs's seed form) at `level`.
pub fn sign(level: u16, pkcs8: &[u8], mu: &[u8]) -> Result<Vec<u8>, EnclaveError> {
    match level {
        44 => sign_at::<MlDsa44>(pkcs8, mu),
        65 => sign_at::<MlDsa65>(pkcs8, mu),
        87 => sign_at::<MlDsa87>(pkcs8, mu),
        _ => Err(EnclaveError::BadInput),
    }
}

/// Whether `sig` is a valid ML-DSA signature of the external `mu` under `spki` (DER
/// SubjectPublicKeyInfo) at `level`.
pub fn verify(level: u16, spki: &[u8], mu: &[u8], sig: &[u8]) -> Result<bool, EnclaveError> {
    match level {
        44 => verify_at::<MlDsa44>(spki, mu, sig),
        65 => verify_at::<MlDsa65>(spki, mu, sig),
        87 => verify_at::<MlDsa87>(spki, mu, sig),
        _ => Err(EnclaveError::BadInput),
    }
}

fn sign_at<P>(pkcs8: &[u8], mu: &[u8]) -> Result<Vec<u8>, EnclaveError>
where
    P: MlDsaParams + AssociatedAlgorithmIdentifier<Params = AnyRef<'static>>,
{
    let mu = mu.try_into().map_err(|_| EnclaveError::BadInput)?;
    // Expanded once from the PKCS#8 seed by the crate's public decoder (`SigningKey`'s
    // `expanded_key` accessor is `doc(hidden)`, outside its semver promise). Zeroized on drop
    // (ml-dsa's `zeroize` feature), as is the seed the decoder held.
    let expanded =
        ExpandedSigningKey::<P>::from_pkcs8_der(pkcs8).map_err(|_| EnclaveError::BadRecord)?;
    let sig = expanded
        .sign_mu_randomized(&mu, &mut AwsLcRng)
        .map_err(|_| EnclaveError::Crypto)?;
    Ok(sig.encode().to_vec())
}

fn verify_at<P>(spki: &[u8], mu: &[u8], sig: &[u8]) -> Result<bool, EnclaveError>
where
    P: MlDsaParams + AssociatedAlgorithmIdentifier<Params = AnyRef<'static>>,
{
    let mu = mu.try_into().map_err(|_| EnclaveError::BadInput)?;
    let key = VerifyingKey::<P>::from_public_key_der(spki).map_err(|_| EnclaveError::BadRecord)?;
    // A signature of the wrong length or with a malformed hint does not verify.
    let Ok(sig) = Signature::<P>::try_from(sig) else {
        return Ok(false);
    };
    Ok(key.verify_mu(&mu, &sig))
}

/// `rand_core` face of aws-lc-rs's RNG, for the hedged signature's 32 random bytes. A failure
/// is an error, never a zero nonce: `sign_mu_randomized` returns it.
struct AwsLcRng;

impl rand_core::TryRng for AwsLcRng {
    type Error = aws_lc_rs::error::Unspecified;

    fn try_next_u32(&mut self) -> Result<u32, Self::Error> {
        let mut b = [0u8; 4];
        aws_lc_rs::rand::fill(&mut b)?;
        Ok(u32::from_le_bytes(b))
    }

    fn try_next_u64(&mut self) -> Result<u64, Self::Error> {
        let mut b = [0u8; 8];
        aws_lc_rs::rand::fill(&mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Self::Error> {
        aws_lc_rs::rand::fill(dst)
    }
}

impl rand_core::TryCryptoRng for AwsLcRng {}

#[cfg(test)]
pub(crate) mod tests {
    use aws_lc_rs::signature::{self as lc, KeyPair as _, UnparsedPublicKey};
    use shake::digest::{ExtendableOutput as _, Update as _};

    use super::*;
    use crate::{asymmetric, keyspec::Family};

    /// mu of `message` under the raw public key `pk`, empty context (FIPS 204 Algorithm 2 and 7).
    pub(crate) fn mu_of(pk: &[u8], message: &[u8]) -> [u8; 64] {
        let mut tr = [0u8; 64];
        shake::Shake256::default()
            .chain(pk)
            .finalize_xof_into(&mut tr);
        let mut mu = [0u8; 64];
        shake::Shake256::default()
            .chain(tr)
            .chain([0u8, 0u8])
            .chain(message)
            .finalize_xof_into(&mut mu);
        mu
    }

    /// The raw public key that `ml-dsa` expands from aws-lc-rs's PKCS#8 seed.
    fn raw_public_key<P>(pkcs8: &[u8]) -> Vec<u8>
    where
        P: MlDsaParams + AssociatedAlgorithmIdentifier<Params = AnyRef<'static>>,
    {
        use ml_dsa::{Keypair as _, SigningKey};
        let key = SigningKey::<P>::from_pkcs8_der(pkcs8).unwrap();
        key.verifying_key().encode().to_vec()
    }

    #[test]
    fn a_mu_signature_is_the_message_signature_at_every_level() {
        for level in [44u16, 65, 87] {
            let pkcs8 = asymmetric::generate(Family::MlDsa(level)).unwrap();
            let spki = asymmetric::public_key(Family::MlDsa(level), &pkcs8).unwrap();
            let alg = asymmetric::ml_dsa_signing(level).unwrap();
            let lc_key = lc::PqdsaKeyPair::from_pkcs8(alg, &pkcs8).unwrap();
            let pk = lc_key.public_key().as_ref().to_vec();
            // The same seed expands to the same key in both implementations.
            let ours = match level {
                44 => raw_public_key::<MlDsa44>(&pkcs8),
                65 => raw_public_key::<MlDsa65>(&pkcs8),
                _ => raw_public_key::<MlDsa87>(&pkcs8),
            };
            assert_eq!(ours, pk);
            let message = b"signed as mu, verified as the message";
            let mu = mu_of(&pk, message);

            // Signed here over mu, verified by aws-lc-rs over the message itself.
            let sig = sign(level, &pkcs8, &mu).unwrap();
            let verifier = match level {
                44 => &lc::ML_DSA_44,
                65 => &lc::ML_DSA_65,
                _ => &lc::ML_DSA_87,
            };
            UnparsedPublicKey::new(verifier, &spki)
                .verify(message, &sig)
                .unwrap();

            // Signed by aws-lc-rs over the message, verified here over mu.
            let mut lc_sig = vec![0u8; 4627];
            let n = lc_key.sign(message, &mut lc_sig).unwrap();
            lc_sig.truncate(n);
            assert!(verify(level, &spki, &mu, &lc_sig).unwrap());

            // Another mu, a cut or flipped signature: refused.
            let mut other = mu;
            other[0] ^= 1;
            assert!(!verify(level, &spki, &other, &sig).unwrap());
            assert!(!verify(level, &spki, &mu, &sig[1..]).unwrap());
            let mut flipped = sig.clone();
            flipped[10] ^= 0x80;
            assert!(!verify(level, &spki, &mu, &flipped).unwrap());
        }
    }

    #[test]
    fn mu_must_be_64_bytes_and_the_key_must_fit_the_level() {
        let pkcs8 = asymmetric::generate(Family::MlDsa(44)).unwrap();
        let spki = asymmetric::public_key(Family::MlDsa(44), &pkcs8).unwrap();
        assert!(matches!(
            sign(44, &pkcs8, &[0u8; 32]),
            Err(EnclaveError::BadInput)
        ));
        assert!(matches!(
            sign(44, &pkcs8, &[0u8; 65]),
            Err(EnclaveError::BadInput)
        ));
        assert!(matches!(
            sign(65, &pkcs8, &[0u8; MU_LEN]),
            Err(EnclaveError::BadRecord)
        ));
        assert!(matches!(
            verify(87, &spki, &[0u8; MU_LEN], &[0u8; 4627]),
            Err(EnclaveError::BadRecord)
        ));
        assert!(matches!(
            sign(50, &pkcs8, &[0u8; MU_LEN]),
            Err(EnclaveError::BadInput)
        ));
    }
}
