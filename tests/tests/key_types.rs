//! Asymmetric and HMAC keys through the real `aws-sdk-kms`: every signature and shared secret
//! checked by an independent implementation (RustCrypto's `p256`, `p384`, `k256`, `rsa`) against
//! the public key the appliance hands out.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::too_many_lines
)] // test code

mod common;

use aws_sdk_kms::{
    Client,
    error::ProvideErrorMetadata as _,
    primitives::Blob,
    types::{KeySpec, KeyUsageType, MacAlgorithmSpec, MessageType, SigningAlgorithmSpec},
};
use common::admin;
use ekms_tests::Appliance;
use sha2::Digest as _;

async fn create(kms: &Client, spec: KeySpec, usage: KeyUsageType) -> String {
    kms.create_key()
        .key_spec(spec)
        .key_usage(usage)
        .send()
        .await
        .unwrap()
        .key_metadata
        .unwrap()
        .key_id
}

async fn describe(kms: &Client, key: &str) -> aws_sdk_kms::types::KeyMetadata {
    kms.describe_key()
        .key_id(key)
        .send()
        .await
        .unwrap()
        .key_metadata
        .unwrap()
}

async fn public_key(kms: &Client, key: &str) -> Vec<u8> {
    kms.get_public_key()
        .key_id(key)
        .send()
        .await
        .unwrap()
        .public_key
        .unwrap()
        .into_inner()
}

async fn sign(
    kms: &Client,
    key: &str,
    alg: SigningAlgorithmSpec,
    message: &[u8],
    digest: bool,
) -> Vec<u8> {
    let kind = if digest {
        MessageType::Digest
    } else {
        MessageType::Raw
    };
    sign_as(kms, key, alg, message, kind).await
}

async fn sign_as(
    kms: &Client,
    key: &str,
    alg: SigningAlgorithmSpec,
    message: &[u8],
    kind: MessageType,
) -> Vec<u8> {
    kms.sign()
        .key_id(key)
        .signing_algorithm(alg)
        .message(Blob::new(message.to_vec()))
        .message_type(kind)
        .send()
        .await
        .unwrap()
        .signature
        .unwrap()
        .into_inner()
}

async fn verifies(
    kms: &Client,
    key: &str,
    alg: SigningAlgorithmSpec,
    message: &[u8],
    sig: &[u8],
) -> Result<bool, String> {
    kms.verify()
        .key_id(key)
        .signing_algorithm(alg)
        .message(Blob::new(message.to_vec()))
        .signature(Blob::new(sig.to_vec()))
        .send()
        .await
        .map(|r| r.signature_valid)
        .map_err(|e| e.into_service_error().code().unwrap_or("?").to_owned())
}

#[tokio::test(flavor = "multi_thread")]
async fn ecdsa_signatures_verify_with_rustcrypto_for_raw_and_digest_messages() {
    use p256::pkcs8::DecodePublicKey as _;
    use signature_traits::*;
    let dir = tempfile::tempdir().unwrap();
    let app = Appliance::start(dir.path());
    let kms = admin(&app);
    let message = b"the release manifest";

    // P-256 / ECDSA_SHA_256.
    let key = create(&kms, KeySpec::EccNistP256, KeyUsageType::SignVerify).await;
    let spki = public_key(&kms, &key).await;
    let vk = p256::ecdsa::VerifyingKey::from_public_key_der(&spki).unwrap();
    let alg = SigningAlgorithmSpec::EcdsaSha256;
    let raw = sign(&kms, &key, alg.clone(), message, false).await;
    let digest = sha2::Sha256::digest(message);
    let pre = sign(&kms, &key, alg.clone(), &digest, true).await;
    for sig in [&raw, &pre] {
        let s = p256::ecdsa::Signature::from_der(sig).unwrap();
        vk.verify(message, &s).unwrap();
        vk.verify_prehash(&digest, &s).unwrap();
    }
    // A signature made outside, with another key, does not verify in the appliance; the
    // appliance's own one does, and one for another message does not.
    assert_eq!(
        verifies(&kms, &key, alg.clone(), message, &raw).await,
        Ok(true)
    );
    assert_eq!(
        verifies(&kms, &key, alg.clone(), b"another manifest", &raw).await,
        Err("KMSInvalidSignatureException".into())
    );
    let stranger = p256::ecdsa::SigningKey::from_slice(&[7u8; 32]).unwrap();
    let theirs: p256::ecdsa::Signature = stranger.sign(message);
    assert_eq!(
        verifies(&kms, &key, alg, message, theirs.to_der().as_bytes()).await,
        Err("KMSInvalidSignatureException".into())
    );

    // P-384 / ECDSA_SHA_384, DIGEST.
    let key = create(&kms, KeySpec::EccNistP384, KeyUsageType::SignVerify).await;
    let vk = p384::ecdsa::VerifyingKey::from_public_key_der(&public_key(&kms, &key).await).unwrap();
    let digest = sha2::Sha384::digest(message);
    let sig = sign(&kms, &key, SigningAlgorithmSpec::EcdsaSha384, &digest, true).await;
    vk.verify(message, &p384::ecdsa::Signature::from_der(&sig).unwrap())
        .unwrap();

    // secp256k1 / ECDSA_SHA_256.
    let key = create(&kms, KeySpec::EccSecgP256K1, KeyUsageType::SignVerify).await;
    let vk = k256::ecdsa::VerifyingKey::from_public_key_der(&public_key(&kms, &key).await).unwrap();
    let sig = sign(
        &kms,
        &key,
        SigningAlgorithmSpec::EcdsaSha256,
        message,
        false,
    )
    .await;
    // k256 verifies only low-S signatures (BIP 62); like AWS KMS, the appliance returns either
    // half, so normalize as every secp256k1 user of AWS KMS does.
    let sig = k256::ecdsa::Signature::from_der(&sig).unwrap();
    vk.verify(message, &sig.normalize_s().unwrap_or(sig))
        .unwrap();

    // P-521: signs and verifies in the appliance (no independent P-521 crate in the tests).
    let key = create(&kms, KeySpec::EccNistP521, KeyUsageType::SignVerify).await;
    let sig = sign(
        &kms,
        &key,
        SigningAlgorithmSpec::EcdsaSha512,
        message,
        false,
    )
    .await;
    assert_eq!(
        verifies(&kms, &key, SigningAlgorithmSpec::EcdsaSha512, message, &sig).await,
        Ok(true)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn rsa_pss_and_pkcs1_signatures_verify_with_rustcrypto() {
    use rsa::{pkcs8::DecodePublicKey as _, signature::Verifier as _};
    let dir = tempfile::tempdir().unwrap();
    let app = Appliance::start(dir.path());
    let kms = admin(&app);
    let key = create(&kms, KeySpec::Rsa2048, KeyUsageType::SignVerify).await;
    let meta = describe(&kms, &key).await;
    assert_eq!(meta.signing_algorithms().len(), 6);
    assert!(meta.encryption_algorithms().is_empty());
    let public = rsa::RsaPublicKey::from_public_key_der(&public_key(&kms, &key).await).unwrap();
    let message = b"firmware image";
    let pss = sign(
        &kms,
        &key,
        SigningAlgorithmSpec::RsassaPssSha256,
        message,
        false,
    )
    .await;
    rsa::pss::VerifyingKey::<sha2::Sha256>::new(public.clone())
        .verify(
            message,
            &rsa::pss::Signature::try_from(pss.as_slice()).unwrap(),
        )
        .unwrap();
    let digest = sha2::Sha512::digest(message);
    let pkcs1 = sign(
        &kms,
        &key,
        SigningAlgorithmSpec::RsassaPkcs1V15Sha512,
        &digest,
        true,
    )
    .await;
    rsa::pkcs1v15::VerifyingKey::<sha2::Sha512>::new(public)
        .verify(
            message,
            &rsa::pkcs1v15::Signature::try_from(pkcs1.as_slice()).unwrap(),
        )
        .unwrap();
    // A digest of the wrong length, as AWS words it.
    let e = kms
        .sign()
        .key_id(&key)
        .signing_algorithm(SigningAlgorithmSpec::RsassaPssSha256)
        .message(Blob::new(vec![0u8; 20]))
        .message_type(MessageType::Digest)
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert_eq!(
        e.message(),
        Some("Digest is invalid length for algorithm RSASSA_PSS_SHA_256.")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn hmac_keys_make_and_check_macs() {
    let dir = tempfile::tempdir().unwrap();
    let app = Appliance::start(dir.path());
    let kms = admin(&app);
    for (spec, alg, len) in [
        (KeySpec::Hmac224, MacAlgorithmSpec::HmacSha224, 28),
        (KeySpec::Hmac256, MacAlgorithmSpec::HmacSha256, 32),
        (KeySpec::Hmac384, MacAlgorithmSpec::HmacSha384, 48),
        (KeySpec::Hmac512, MacAlgorithmSpec::HmacSha512, 64),
    ] {
        let key = create(&kms, spec, KeyUsageType::GenerateVerifyMac).await;
        let mac = kms
            .generate_mac()
            .key_id(&key)
            .mac_algorithm(alg.clone())
            .message(Blob::new(b"token".to_vec()))
            .send()
            .await
            .unwrap()
            .mac
            .unwrap();
        assert_eq!(mac.as_ref().len(), len);
        let ok = kms
            .verify_mac()
            .key_id(&key)
            .mac_algorithm(alg.clone())
            .message(Blob::new(b"token".to_vec()))
            .mac(mac.clone())
            .send()
            .await
            .unwrap();
        assert!(ok.mac_valid);
        let e = kms
            .verify_mac()
            .key_id(&key)
            .mac_algorithm(alg)
            .message(Blob::new(b"tokem".to_vec()))
            .mac(mac)
            .send()
            .await
            .unwrap_err()
            .into_service_error();
        assert_eq!(e.code(), Some("KMSInvalidMacException"));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn ecdh_shared_secrets_equal_an_independent_ecdh() {
    use p256::pkcs8::{DecodePublicKey as _, EncodePublicKey as _};
    let dir = tempfile::tempdir().unwrap();
    let app = Appliance::start(dir.path());
    let kms = admin(&app);
    let key = create(&kms, KeySpec::EccNistP256, KeyUsageType::KeyAgreement).await;
    let meta = describe(&kms, &key).await;
    assert_eq!(meta.key_agreement_algorithms().len(), 1);
    let ours = p256::PublicKey::from_public_key_der(&public_key(&kms, &key).await).unwrap();
    let peer = p256::SecretKey::from_slice(&[9u8; 32]).unwrap();
    let peer_der = peer.public_key().to_public_key_der().unwrap();
    let derived = kms
        .derive_shared_secret()
        .key_id(&key)
        .key_agreement_algorithm(aws_sdk_kms::types::KeyAgreementAlgorithmSpec::Ecdh)
        .public_key(Blob::new(peer_der.as_bytes().to_vec()))
        .send()
        .await
        .unwrap();
    assert_eq!(
        derived.key_origin(),
        Some(&aws_sdk_kms::types::OriginType::AwsKms)
    );
    let expected = p256::ecdh::diffie_hellman(peer.to_nonzero_scalar(), ours.as_affine());
    assert_eq!(
        derived.shared_secret.unwrap().as_ref(),
        expected.raw_secret_bytes().as_slice()
    );
    // A peer key on another curve: ValidationException, as AWS.
    let p384_peer = p384::SecretKey::from_slice(&[9u8; 48]).unwrap();
    let e = kms
        .derive_shared_secret()
        .key_id(&key)
        .key_agreement_algorithm(aws_sdk_kms::types::KeyAgreementAlgorithmSpec::Ecdh)
        .public_key(Blob::new(
            p384_peer
                .public_key()
                .to_public_key_der()
                .unwrap()
                .as_bytes()
                .to_vec(),
        ))
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert_eq!(e.code(), Some("ValidationException"));
    // A signing key cannot agree.
    let signing = create(&kms, KeySpec::EccNistP256, KeyUsageType::SignVerify).await;
    let e = kms
        .derive_shared_secret()
        .key_id(&signing)
        .key_agreement_algorithm(aws_sdk_kms::types::KeyAgreementAlgorithmSpec::Ecdh)
        .public_key(Blob::new(peer_der.as_bytes().to_vec()))
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert_eq!(e.code(), Some("InvalidKeyUsageException"));
    assert!(
        e.message()
            .unwrap()
            .ends_with("key usage is SIGN_VERIFY which is not valid for DeriveSharedSecret.")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn rsa_oaep_encryption_interoperates_with_rustcrypto_and_reencrypts_both_ways() {
    use aws_sdk_kms::types::EncryptionAlgorithmSpec as Alg;
    use rsa::pkcs8::DecodePublicKey as _;
    let dir = tempfile::tempdir().unwrap();
    let app = Appliance::start(dir.path());
    let kms = admin(&app);
    let key = create(&kms, KeySpec::Rsa2048, KeyUsageType::EncryptDecrypt).await;
    let public = rsa::RsaPublicKey::from_public_key_der(&public_key(&kms, &key).await).unwrap();
    let decrypt = |blob: Vec<u8>, alg: Alg| {
        let kms = kms.clone();
        let key = key.clone();
        async move {
            kms.decrypt()
                .key_id(key)
                .encryption_algorithm(alg)
                .ciphertext_blob(Blob::new(blob))
                .send()
                .await
                .map(|r| r.plaintext.unwrap().into_inner())
                .map_err(|e| e.into_service_error().code().unwrap_or("?").to_owned())
        }
    };
    // A ciphertext made offline with the downloaded public key decrypts in the appliance.
    let mut rng = rand_core::OsRng;
    let offline = public
        .encrypt(&mut rng, rsa::Oaep::new::<sha2::Sha256>(), b"made offline")
        .unwrap();
    assert_eq!(
        decrypt(offline.clone(), Alg::RsaesOaepSha256)
            .await
            .unwrap(),
        b"made offline"
    );
    // The wrong hash, or no KeyId, does not decrypt it.
    assert_eq!(
        decrypt(offline.clone(), Alg::RsaesOaepSha1).await,
        Err("InvalidCiphertextException".into())
    );
    let e = kms
        .decrypt()
        .ciphertext_blob(Blob::new(offline))
        .encryption_algorithm(Alg::RsaesOaepSha256)
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert_eq!(e.code(), Some("InvalidCiphertextException"));
    // The appliance's own ciphertext is raw OAEP of the key's size.
    let ct = kms
        .encrypt()
        .key_id(&key)
        .encryption_algorithm(Alg::RsaesOaepSha1)
        .plaintext(Blob::new(vec![1u8; 214]))
        .send()
        .await
        .unwrap()
        .ciphertext_blob
        .unwrap()
        .into_inner();
    assert_eq!(ct.len(), 256);
    assert_eq!(
        decrypt(ct, Alg::RsaesOaepSha1).await.unwrap(),
        vec![1u8; 214]
    );
    let e = kms
        .encrypt()
        .key_id(&key)
        .encryption_algorithm(Alg::RsaesOaepSha1)
        .plaintext(Blob::new(vec![1u8; 215]))
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert_eq!(
        e.message(),
        Some(
            "Algorithm RSAES_OAEP_SHA_1 and key spec RSA_2048 cannot encrypt data larger than 214 bytes."
        )
    );
    // ReEncrypt from a symmetric key to the RSA key and back.
    let sym = common::new_key(&kms).await;
    let blob = common::encrypt(&kms, &sym, b"moving").await;
    let to_rsa = kms
        .re_encrypt()
        .ciphertext_blob(blob)
        .destination_key_id(&key)
        .destination_encryption_algorithm(Alg::RsaesOaepSha256)
        .send()
        .await
        .unwrap();
    assert_eq!(
        to_rsa.destination_encryption_algorithm(),
        Some(&Alg::RsaesOaepSha256)
    );
    let back = kms
        .re_encrypt()
        .ciphertext_blob(to_rsa.ciphertext_blob.unwrap())
        .source_key_id(&key)
        .source_encryption_algorithm(Alg::RsaesOaepSha256)
        .destination_key_id(&sym)
        .send()
        .await
        .unwrap();
    assert_eq!(
        common::decrypt(&kms, back.ciphertext_blob.unwrap()).await,
        b"moving"
    );
    // No data keys under an RSA key.
    let e = kms
        .generate_data_key()
        .key_id(&key)
        .key_spec(aws_sdk_kms::types::DataKeySpec::Aes256)
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert_eq!(e.code(), Some("InvalidKeyUsageException"));
}

#[tokio::test(flavor = "multi_thread")]
async fn data_key_pairs_are_real_pairs_and_their_private_keys_decrypt_with_the_context() {
    use aws_sdk_kms::types::DataKeyPairSpec;
    use p256::pkcs8::{DecodePrivateKey as _, DecodePublicKey as _};
    let dir = tempfile::tempdir().unwrap();
    let app = Appliance::start(dir.path());
    let kms = admin(&app);
    let wrapping = common::new_key(&kms).await;
    let pair = kms
        .generate_data_key_pair()
        .key_id(&wrapping)
        .key_pair_spec(DataKeyPairSpec::EccNistP256)
        .encryption_context("purpose", "device-42")
        .send()
        .await
        .unwrap();
    assert_eq!(pair.key_pair_spec(), Some(&DataKeyPairSpec::EccNistP256));
    let private = pair.private_key_plaintext.clone().unwrap().into_inner();
    let secret = p256::SecretKey::from_pkcs8_der(&private).unwrap();
    let public =
        p256::PublicKey::from_public_key_der(pair.public_key.as_ref().unwrap().as_ref()).unwrap();
    assert_eq!(secret.public_key(), public);
    // The encrypted private key decrypts to the same PKCS#8, only with the context.
    let blob = pair.private_key_ciphertext_blob.clone().unwrap();
    let e = kms
        .decrypt()
        .ciphertext_blob(blob.clone())
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert_eq!(e.code(), Some("InvalidCiphertextException"));
    let opened = kms
        .decrypt()
        .ciphertext_blob(blob)
        .encryption_context("purpose", "device-42")
        .send()
        .await
        .unwrap()
        .plaintext
        .unwrap()
        .into_inner();
    assert_eq!(opened, private);

    // RSA and Ed25519 pairs, without plaintext.
    let pair = kms
        .generate_data_key_pair_without_plaintext()
        .key_id(&wrapping)
        .key_pair_spec(DataKeyPairSpec::Rsa2048)
        .send()
        .await
        .unwrap();
    let private = common::decrypt(&kms, pair.private_key_ciphertext_blob.unwrap()).await;
    let secret = {
        use rsa::pkcs8::DecodePrivateKey as _;
        rsa::RsaPrivateKey::from_pkcs8_der(&private).unwrap()
    };
    let public = {
        use rsa::pkcs8::DecodePublicKey as _;
        rsa::RsaPublicKey::from_public_key_der(pair.public_key.unwrap().as_ref()).unwrap()
    };
    assert_eq!(secret.to_public_key(), public);
    let ed = kms
        .generate_data_key_pair()
        .key_id(&wrapping)
        .key_pair_spec(DataKeyPairSpec::EccNistEdwards25519)
        .send()
        .await
        .unwrap();
    assert_eq!(ed.public_key.unwrap().as_ref().len(), 44);
    // Only under a symmetric key.
    let signing = create(&kms, KeySpec::EccNistP256, KeyUsageType::SignVerify).await;
    let e = kms
        .generate_data_key_pair()
        .key_id(&signing)
        .key_pair_spec(DataKeyPairSpec::EccNistP256)
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert_eq!(e.code(), Some("InvalidKeyUsageException"));
}

#[tokio::test(flavor = "multi_thread")]
async fn ed25519_pure_signatures_verify_with_dalek_and_prehashed_ones_in_the_appliance() {
    use ed25519_dalek::pkcs8::DecodePublicKey as _;
    use signature_traits::Verifier as _;
    let dir = tempfile::tempdir().unwrap();
    let app = Appliance::start(dir.path());
    let kms = admin(&app);
    let key = create(&kms, KeySpec::EccNistEdwards25519, KeyUsageType::SignVerify).await;
    let vk =
        ed25519_dalek::VerifyingKey::from_public_key_der(&public_key(&kms, &key).await).unwrap();
    let message = b"a commit to sign";
    let sig = sign(
        &kms,
        &key,
        SigningAlgorithmSpec::Ed25519Sha512,
        message,
        false,
    )
    .await;
    vk.verify(
        message,
        &ed25519_dalek::Signature::from_slice(&sig).unwrap(),
    )
    .unwrap();
    let digest = sha2::Sha512::digest(message);
    let ph = sign(
        &kms,
        &key,
        SigningAlgorithmSpec::Ed25519PhSha512,
        &digest,
        true,
    )
    .await;
    let mut state = <sha2::Sha512 as sha2::Digest>::new();
    sha2::Digest::update(&mut state, message);
    vk.verify_prehashed(
        state,
        None,
        &ed25519_dalek::Signature::from_slice(&ph).unwrap(),
    )
    .unwrap();
    // Pure Ed25519 takes RAW only.
    let e = kms
        .sign()
        .key_id(&key)
        .signing_algorithm(SigningAlgorithmSpec::Ed25519Sha512)
        .message(Blob::new(digest.to_vec()))
        .message_type(MessageType::Digest)
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert_eq!(e.code(), Some("ValidationException"));
}

#[tokio::test(flavor = "multi_thread")]
async fn ml_dsa_signs_raw_messages_and_external_mu_and_both_verify_with_rustcrypto() {
    use ml_dsa::{MlDsa65, VerifyingKey, pkcs8::spki::DecodePublicKey as _};
    let dir = tempfile::tempdir().unwrap();
    let app = Appliance::start(dir.path());
    let kms = admin(&app);
    let key = create(&kms, KeySpec::MlDsa65, KeyUsageType::SignVerify).await;
    let vk = VerifyingKey::<MlDsa65>::from_public_key_der(&public_key(&kms, &key).await).unwrap();
    let message = b"a firmware image to sign";
    let check = |sig: &[u8]| {
        let sig = ml_dsa::Signature::<MlDsa65>::try_from(sig).unwrap();
        assert!(vk.verify_with_context(message, b"", &sig));
    };
    let raw = sign(
        &kms,
        &key,
        SigningAlgorithmSpec::MlDsaShake256,
        message,
        false,
    )
    .await;
    check(&raw);

    let mu = common::ml_dsa_mu(vk.encode().as_slice(), message);
    let by_mu = sign_as(
        &kms,
        &key,
        SigningAlgorithmSpec::MlDsaShake256,
        &mu,
        MessageType::ExternalMu,
    )
    .await;
    check(&by_mu);
    // The appliance verifies the RAW signature over mu, and refuses it over another mu.
    let verify_mu = |mu: [u8; 64]| {
        kms.verify()
            .key_id(&key)
            .signing_algorithm(SigningAlgorithmSpec::MlDsaShake256)
            .message(Blob::new(mu.to_vec()))
            .message_type(MessageType::ExternalMu)
            .signature(Blob::new(raw.clone()))
            .send()
    };
    assert!(verify_mu(mu).await.unwrap().signature_valid);
    let mut other = mu;
    other[63] ^= 1;
    let e = verify_mu(other).await.unwrap_err().into_service_error();
    assert_eq!(e.code(), Some("KMSInvalidSignatureException"));
    // A mu of the wrong length is refused before any signing.
    let e = kms
        .sign()
        .key_id(&key)
        .signing_algorithm(SigningAlgorithmSpec::MlDsaShake256)
        .message(Blob::new(mu[..48].to_vec()))
        .message_type(MessageType::ExternalMu)
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert_eq!(e.code(), Some("ValidationException"));
}

/// The RustCrypto signature traits, in one place.
mod signature_traits {
    pub(crate) use p256::ecdsa::signature::{Signer, Verifier, hazmat::PrehashVerifier};
}
