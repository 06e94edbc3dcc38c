//! `Recipient` through the real entry point: what a client enclave gets, what a key policy
//! pinning its measurements lets through, and every document the enclave must refuse before
//! anything is released.

use aws_lc_rs::encoding::AsDer as _;
use aws_lc_rs::rsa::{KeySize, PrivateDecryptingKey};
use ekms_attestation::{MockNsm, SimulationCa, UnixMillis};
use ekms_wire::msg::KmsErrorCode;
use serde_json::{Value, json};

use super::principals::{b64, make};
use super::{Env, OpError};

/// A client enclave app: its RSA key pair (PKCS #8, SPKI) and its image.
struct App {
    pkcs8: Vec<u8>,
    spki: Vec<u8>,
    image: &'static [u8],
}

impl App {
    fn new(image: &'static [u8]) -> Self {
        let private = PrivateDecryptingKey::generate(KeySize::Rsa2048).unwrap();
        Self {
            spki: private.public_key().as_der().unwrap().as_ref().to_vec(),
            pkcs8: private.as_der().unwrap().as_ref().to_vec(),
            image,
        }
    }

    /// PCR0 of its image, hex (what `kms:RecipientAttestation:ImageSha384` holds).
    fn pcr0(&self) -> String {
        crate::domain::hex(
            aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA384, self.image).as_ref(),
        )
    }

    /// Its attestation document, from a mock NSM signing with `ca`, made at `at`.
    fn document_at(&self, ca: &SimulationCa, key: Option<&[u8]>, at: UnixMillis) -> Vec<u8> {
        let ca = SimulationCa::from_bytes(&ca.to_bytes().unwrap()).unwrap();
        MockNsm::from_executable_bytes(ca, self.image)
            .attestation_at(None, None, key, at)
            .unwrap()
    }

    fn document(&self, ca: &SimulationCa) -> Vec<u8> {
        self.document_at(ca, Some(&self.spki), now())
    }

    fn opens(&self, out: &Value) -> Vec<u8> {
        let blob = unb64(out["CiphertextForRecipient"].as_str().expect("no envelope"));
        ekms_attestation::recipient::open(&self.pkcs8, &blob)
            .unwrap()
            .to_vec()
    }
}

fn now() -> UnixMillis {
    UnixMillis::from_system_time(std::time::SystemTime::now()).unwrap()
}

fn unb64(s: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.decode(s).unwrap()
}

fn recipient(doc: &[u8]) -> Value {
    json!({"KeyEncryptionAlgorithm": "RSAES_OAEP_SHA_256", "AttestationDocument": b64(doc)})
}

fn with(mut body: Value, doc: &[u8]) -> Value {
    body["Recipient"] = recipient(doc);
    body
}

fn err(r: Result<Value, OpError>) -> (KmsErrorCode, String) {
    match r {
        Err(OpError::Kms(e)) => (e.code, e.message),
        other => panic!("expected an error, got {other:?}"),
    }
}

fn key_id(out: &Value) -> String {
    out["KeyMetadata"]["KeyId"].as_str().unwrap().to_owned()
}

#[test]
fn every_release_goes_only_to_the_attested_key() {
    let mut env = Env::new();
    let app = App::new(b"client app v1");
    let doc = app.document(&env.ca);
    let key = key_id(&env.call("CreateKey", json!({})).unwrap());

    // Decrypt: the envelope holds what a plain Decrypt returns, and nothing else is shown.
    let blob = env
        .call(
            "Encrypt",
            json!({"KeyId": key, "Plaintext": b64(b"the secret")}),
        )
        .unwrap()["CiphertextBlob"]
        .clone();
    let plain = env
        .call("Decrypt", json!({"CiphertextBlob": blob}))
        .unwrap();
    let out = env
        .call("Decrypt", with(json!({"CiphertextBlob": blob}), &doc))
        .unwrap();
    assert!(out.get("Plaintext").is_none(), "{out}");
    assert_eq!(app.opens(&out), b"the secret");
    assert_eq!(unb64(plain["Plaintext"].as_str().unwrap()), app.opens(&out));
    assert_eq!(out["KeyId"], plain["KeyId"]);
    assert_eq!(out["KeyMaterialId"], plain["KeyMaterialId"]);
    // Another app's key cannot open it.
    let other = App::new(b"client app v1");
    assert!(
        ekms_attestation::recipient::open(
            &other.pkcs8,
            &unb64(out["CiphertextForRecipient"].as_str().unwrap())
        )
        .is_err()
    );

    // GenerateDataKey: the envelope holds the data key that CiphertextBlob decrypts to.
    let out = env
        .call(
            "GenerateDataKey",
            with(json!({"KeyId": key, "KeySpec": "AES_256"}), &doc),
        )
        .unwrap();
    assert!(out.get("Plaintext").is_none());
    let data_key = app.opens(&out);
    assert_eq!(data_key.len(), 32);
    let back = env
        .call("Decrypt", json!({"CiphertextBlob": out["CiphertextBlob"]}))
        .unwrap();
    assert_eq!(unb64(back["Plaintext"].as_str().unwrap()), data_key);

    // GenerateDataKeyPair: the envelope holds the private key (PKCS #8) of PublicKey.
    let out = env
        .call(
            "GenerateDataKeyPair",
            with(json!({"KeyId": key, "KeyPairSpec": "ECC_NIST_P256"}), &doc),
        )
        .unwrap();
    assert!(out.get("PrivateKeyPlaintext").is_none());
    let private = app.opens(&out);
    let pair = aws_lc_rs::signature::EcdsaKeyPair::from_pkcs8(
        &aws_lc_rs::signature::ECDSA_P256_SHA256_ASN1_SIGNING,
        &private,
    )
    .unwrap();
    let public = aws_lc_rs::signature::KeyPair::public_key(&pair)
        .as_der()
        .unwrap();
    assert_eq!(public.as_ref(), unb64(out["PublicKey"].as_str().unwrap()));

    // GenerateRandom.
    let out = env
        .call("GenerateRandom", with(json!({"NumberOfBytes": 48}), &doc))
        .unwrap();
    assert!(out.get("Plaintext").is_none());
    assert_eq!(app.opens(&out).len(), 48);

    // DeriveSharedSecret: the envelope holds the secret a plain call derives.
    let ka = key_id(
        &env.call(
            "CreateKey",
            json!({"KeySpec": "ECC_NIST_P256", "KeyUsage": "KEY_AGREEMENT"}),
        )
        .unwrap(),
    );
    let peer = aws_lc_rs::agreement::PrivateKey::generate(&aws_lc_rs::agreement::ECDH_P256)
        .unwrap()
        .compute_public_key()
        .unwrap()
        .as_der()
        .unwrap()
        .as_ref()
        .to_vec();
    let derive = json!({"KeyId": ka, "KeyAgreementAlgorithm": "ECDH", "PublicKey": b64(&peer)});
    let plain = env.call("DeriveSharedSecret", derive.clone()).unwrap();
    let out = env.call("DeriveSharedSecret", with(derive, &doc)).unwrap();
    assert!(out.get("SharedSecret").is_none());
    assert_eq!(
        app.opens(&out),
        unb64(plain["SharedSecret"].as_str().unwrap())
    );
}

#[test]
fn a_key_policy_pinning_the_image_releases_only_to_that_image() {
    let mut env = Env::new();
    let app = App::new(b"the measured app");
    let impostor = App::new(b"another app");
    let policy = json!({"Version": "2012-10-17", "Statement": [
        {"Sid": "admin", "Effect": "Allow",
         "Principal": {"AWS": "arn:aws:iam::111122223333:root"},
         "Action": ["kms:Encrypt", "kms:DescribeKey", "kms:GetKeyPolicy", "kms:PutKeyPolicy",
                    "kms:GenerateDataKeyWithoutPlaintext"],
         "Resource": "*"},
        {"Sid": "enclave only", "Effect": "Allow",
         "Principal": {"AWS": "arn:aws:iam::111122223333:root"},
         "Action": ["kms:Decrypt", "kms:GenerateDataKey"],
         "Resource": "*",
         "Condition": {"StringEqualsIgnoreCase": {
             "kms:RecipientAttestation:ImageSha384": app.pcr0().to_uppercase()}}}
    ]});
    let key = key_id(
        &env.call("CreateKey", json!({"Policy": policy.to_string()}))
            .unwrap(),
    );
    let blob = env
        .call(
            "Encrypt",
            json!({"KeyId": key, "Plaintext": b64(b"pinned")}),
        )
        .unwrap()["CiphertextBlob"]
        .clone();
    let decrypt = json!({"CiphertextBlob": blob});
    // The measured app: released.
    let out = env
        .call("Decrypt", with(decrypt.clone(), &app.document(&env.ca)))
        .unwrap();
    assert_eq!(app.opens(&out), b"pinned");
    // Without a Recipient: denied.
    let (code, _) = err(env.call("Decrypt", decrypt.clone()));
    assert_eq!(code, KmsErrorCode::AccessDeniedException);
    // Another image, validly attested: denied.
    let (code, _) = err(env.call(
        "Decrypt",
        with(decrypt.clone(), &impostor.document(&env.ca)),
    ));
    assert_eq!(code, KmsErrorCode::AccessDeniedException);
    let (code, _) = err(env.call(
        "GenerateDataKey",
        with(
            json!({"KeyId": key, "NumberOfBytes": 16}),
            &impostor.document(&env.ca),
        ),
    ));
    assert_eq!(code, KmsErrorCode::AccessDeniedException);
    // The impostor's document with the measured app's key inside is still the impostor's.
    let mixed = impostor.document_at(&env.ca, Some(&app.spki), now());
    let (code, _) = err(env.call("Decrypt", with(decrypt, &mixed)));
    assert_eq!(code, KmsErrorCode::AccessDeniedException);
}

#[test]
fn pcr_conditions_hold_in_identity_policies_too() {
    let mut env = Env::new();
    let app = App::new(b"random app");
    let pcr1 = crate::domain::hex(&[0u8; 48]);
    let policy = json!({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "kms:GenerateRandom", "Resource": "*",
         "Condition": {"StringEquals": {
             "kms:RecipientAttestation:PCR0": app.pcr0(),
             "kms:RecipientAttestation:PCR1": pcr1}}}
    ]});
    let (akid, secret) = make(&mut env, "app-role", Some(policy));
    let who = (akid.as_str(), secret.as_str());
    let body = json!({"NumberOfBytes": 16});
    let (code, _) = err(env.call_as(who, "GenerateRandom", body.clone()));
    assert_eq!(code, KmsErrorCode::AccessDeniedException);
    let out = env
        .call_as(who, "GenerateRandom", with(body, &app.document(&env.ca)))
        .unwrap();
    assert_eq!(app.opens(&out).len(), 16);
}

/// A 1024-bit RSA public key (SPKI DER, base64): too short for a recipient.
const RSA_1024_SPKI: &str = "MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQDIEsfP3ovuXQdqfACH3vx2etqprrr42RFQJE6U9lUC8bo7EsfDxrVrDUeY8bzgywRpIJlqN+hI4p2e3/hH6yM9T8Yn8O0lQfNGZ1DvgyEt8ld/cEVbMHYKy8DAxJCy4MF8E4mZvaRcdnByj6TUeLkgI72vKqwpY52evg/lMVveZQIDAQAB";

#[test]
fn bad_documents_are_refused_and_nothing_is_released() {
    let mut env = Env::new();
    let app = App::new(b"app");
    let key = key_id(&env.call("CreateKey", json!({})).unwrap());
    let body = json!({"KeyId": key, "NumberOfBytes": 32});
    let refused = |env: &mut Env, doc: &[u8], why: &str| {
        let (code, message) = err(env.call("GenerateDataKey", with(body.clone(), doc)));
        assert_eq!(code, KmsErrorCode::ValidationException, "{why}: {message}");
        assert!(
            message.contains("attestation document") && message.contains(why),
            "{why}: {message}"
        );
    };
    // Signed by a CA this appliance does not know.
    let stranger = SimulationCa::generate().unwrap();
    refused(&mut env, &app.document(&stranger), "root");
    // Expired: made four hours ago, its certificate (three hours) has lapsed.
    let old = UnixMillis::new(now().as_millis() - 4 * 3600 * 1000);
    let doc = app.document_at(&env.ca, Some(&app.spki), old);
    refused(&mut env, &doc, "valid");
    // Modified after signing: one byte of the payload (the public key) changed.
    let mut doc = app.document(&env.ca);
    let at = doc
        .windows(app.spki.len())
        .position(|w| w == app.spki.as_slice())
        .unwrap();
    doc[at + 40] ^= 1;
    refused(&mut env, &doc, "signature");
    // Debug mode: all-zero PCRs.
    let ca = SimulationCa::from_bytes(&env.ca.to_bytes().unwrap()).unwrap();
    let debug = MockNsm::debug_mode(ca)
        .attestation_at(None, None, Some(&app.spki), now())
        .unwrap();
    refused(&mut env, &debug, "debug");
    // No public key; a key under 2048 bits; a key that is not RSA.
    let doc = app.document_at(&env.ca, None, now());
    refused(&mut env, &doc, "public key");
    let short = unb64(RSA_1024_SPKI);
    let doc = app.document_at(&env.ca, Some(&short), now());
    refused(&mut env, &doc, "2048");
    let ec = aws_lc_rs::agreement::PrivateKey::generate(&aws_lc_rs::agreement::ECDH_P256)
        .unwrap()
        .compute_public_key()
        .unwrap()
        .as_der()
        .unwrap()
        .as_ref()
        .to_vec();
    let doc = app.document_at(&env.ca, Some(&ec), now());
    refused(&mut env, &doc, "2048");
    // Not a document at all.
    refused(&mut env, b"\xd2\x84 not cose", "COSE");

    // Request shape: AWS's validation errors.
    let (code, m) = err(env.call(
        "GenerateDataKey",
        json!({"KeyId": key, "NumberOfBytes": 32,
               "Recipient": {"KeyEncryptionAlgorithm": "RSAES_OAEP_SHA_1",
                             "AttestationDocument": b64(&app.document(&env.ca))}}),
    ));
    assert_eq!(code, KmsErrorCode::ValidationException);
    assert!(m.contains("recipient.keyEncryptionAlgorithm"), "{m}");
    let (code, _) = err(env.call(
        "GenerateDataKey",
        json!({"KeyId": key, "NumberOfBytes": 32, "Recipient": {}}),
    ));
    assert_eq!(code, KmsErrorCode::ValidationException);
    let (code, m) = err(env.call("GenerateDataKey", with(body.clone(), &vec![0u8; 262_145])));
    assert_eq!(code, KmsErrorCode::ValidationException);
    assert!(m.contains("262144"), "{m}");

    // The refusals released nothing and changed nothing: the same call with a good document
    // still works.
    let out = env
        .call("GenerateDataKey", with(body, &app.document(&env.ca)))
        .unwrap();
    assert_eq!(app.opens(&out).len(), 32);
}

#[test]
fn an_enclave_outside_simulation_trusts_only_the_aws_root() {
    // A Nitro enclave's attestor pins the AWS root: a document from any simulation CA is
    // refused, whatever it claims.
    let ca = SimulationCa::generate().unwrap();
    let nitro = crate::attest::Attestor::new(
        Box::new(MockNsm::from_executable_bytes(
            SimulationCa::from_bytes(&ca.to_bytes().unwrap()).unwrap(),
            b"enclave",
        )),
        ekms_attestation::TrustRoot::aws_nitro().unwrap(),
    )
    .unwrap();
    let app = App::new(b"app");
    let reason = nitro
        .verify_recipient(&app.document(&ca), now())
        .unwrap_err();
    assert!(reason.contains("root"), "{reason}");
    // The genuine AWS document of testdata verifies at its own time (the Nitro path with real
    // bytes). Its app put a PEM key in it, not the DER SubjectPublicKeyInfo that AWS KMS
    // requires of a recipient, so the release is refused on the key.
    let real = include_bytes!("../../../../attestation/testdata/nitro-2022-real.cose");
    let at = UnixMillis::new(1_657_117_102_484);
    let verified = nitro.verify_recipient(real, at).unwrap();
    assert!(!verified.is_simulation());
    let key = verified.public_key().unwrap();
    assert!(key.starts_with(b"-----BEGIN PUBLIC KEY-----"));
    assert!(ekms_attestation::recipient::recipient_key(key).is_err());
    // And not at today's date: its certificates expired long ago.
    assert!(nitro.verify_recipient(real, now()).is_err());
}
