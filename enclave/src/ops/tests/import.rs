//! Imported key material through the real entry point, as an attacker would try it: a token for
//! another key, a tampered or expired token, material that does not unwrap or does not fit,
//! different material re-imported as the same, a host replaying the record from before the
//! import; expiry by the enclave's clock; several materials of one symmetric key.

use std::time::{Duration, SystemTime};

use aws_lc_rs::{
    hmac,
    key_wrap::{AES_256, AesKek, KeyWrapPadded as _},
    rsa,
    signature::{self, EcdsaKeyPair, KeyPair as _},
};
use base64::Engine as _;
use ekms_wire::msg::KmsErrorCode;
use serde_json::{Value, json};

use super::{Env, OpError, b64e};

const HOUR: Duration = Duration::from_secs(3600);

fn b64d(v: &Value) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(v.as_str().unwrap())
        .unwrap()
}

fn arn(id: &str) -> String {
    format!("arn:aws:kms:us-east-1:111122223333:key/{id}")
}

fn err(r: Result<Value, OpError>) -> (KmsErrorCode, String) {
    match r {
        Err(OpError::Kms(e)) => (e.code, e.message),
        other => panic!("expected an AWS error, got {other:?}"),
    }
}

impl Env {
    fn create_external(&mut self, spec: &str, usage: Option<&str>) -> String {
        let mut body = json!({"Origin": "EXTERNAL", "KeySpec": spec});
        if let Some(u) = usage {
            body["KeyUsage"] = json!(u);
        }
        let out = self.call("CreateKey", body).unwrap();
        assert_eq!(out["KeyMetadata"]["KeyState"], "PendingImport");
        assert_eq!(out["KeyMetadata"]["Enabled"], false);
        assert_eq!(out["KeyMetadata"]["Origin"], "EXTERNAL");
        out["KeyMetadata"]["KeyId"].as_str().unwrap().to_owned()
    }

    /// GetParametersForImport: (public key DER, token base64).
    fn parameters(&mut self, key: &str, alg: &str, spec: &str) -> (Vec<u8>, String) {
        let out = self
            .call(
                "GetParametersForImport",
                json!({"KeyId": key, "WrappingAlgorithm": alg, "WrappingKeySpec": spec}),
            )
            .unwrap();
        assert_eq!(out["KeyId"], arn(key));
        assert!(out["ParametersValidTo"].as_f64().is_some());
        (
            b64d(&out["PublicKey"]),
            out["ImportToken"].as_str().unwrap().to_owned(),
        )
    }

    /// Wraps `material` for `key` with RSAES_OAEP_SHA_256 / RSA_2048 and imports it.
    fn import(&mut self, key: &str, material: &[u8], extra: Value) -> Result<Value, OpError> {
        let (public, token) = self.parameters(key, "RSAES_OAEP_SHA_256", "RSA_2048");
        let wrapped = wrap(&public, "RSAES_OAEP_SHA_256", material);
        self.call(
            "ImportKeyMaterial",
            import_body(key, &token, &wrapped, extra),
        )
    }
}

fn import_body(key: &str, token: &str, wrapped: &[u8], extra: Value) -> Value {
    let mut body = json!({
        "KeyId": key,
        "ImportToken": token,
        "EncryptedKeyMaterial": b64e(wrapped),
    });
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        b.extend(e.clone());
    }
    body
}

/// Wraps `material` as a client does with `openssl pkeyutl` (and AES-KWP for the key-wrap
/// algorithms), independently of the enclave's code.
fn wrap(public_der: &[u8], alg: &str, material: &[u8]) -> Vec<u8> {
    let public =
        rsa::OaepPublicEncryptingKey::new(rsa::PublicEncryptingKey::from_der(public_der).unwrap())
            .unwrap();
    let oaep = if alg.ends_with("SHA_1") {
        &rsa::OAEP_SHA1_MGF1SHA1
    } else {
        &rsa::OAEP_SHA256_MGF1SHA256
    };
    let mut out = vec![0u8; public.ciphertext_size()];
    if alg.starts_with("RSAES_OAEP") {
        public.encrypt(oaep, material, &mut out, None).unwrap();
        return out;
    }
    let aes = [0x5au8; 32];
    public.encrypt(oaep, &aes, &mut out, None).unwrap();
    let mut tail = vec![0u8; material.len() + 15];
    let n = AesKek::new(&AES_256, &aes)
        .unwrap()
        .wrap_with_padding(material, &mut tail)
        .unwrap()
        .len();
    out.extend_from_slice(&tail[..n]);
    out
}

fn encrypt(env: &mut Env, key: &str) -> Result<Value, OpError> {
    env.call(
        "Encrypt",
        json!({"KeyId": key, "Plaintext": b64e(b"hello")}),
    )
}

fn decrypts(env: &mut Env, blob: &Value) -> Result<Value, OpError> {
    env.call("Decrypt", json!({"CiphertextBlob": blob}))
}

#[test]
fn a_symmetric_key_is_pending_import_then_imported_deleted_and_restored() {
    let mut env = Env::new();
    let key = env.create_external("SYMMETRIC_DEFAULT", None);
    let pending = (
        KmsErrorCode::KMSInvalidStateException,
        format!("{} is pending import.", arn(&key)),
    );
    assert_eq!(err(encrypt(&mut env, &key)), pending);
    assert_eq!(err(env.call("EnableKey", json!({"KeyId": key}))), pending);
    assert_eq!(
        err(env.call("RotateKeyOnDemand", json!({"KeyId": key}))),
        pending
    );

    let material = [0x11u8; 32];
    let out = env.import(&key, &material, json!({})).unwrap();
    assert_eq!(out["KeyId"], arn(&key));
    let material_id = out["KeyMaterialId"].as_str().unwrap().to_owned();
    assert_eq!(material_id.len(), 64);
    let meta = &env.call("DescribeKey", json!({"KeyId": key})).unwrap()["KeyMetadata"];
    assert_eq!(meta["KeyState"], "Enabled");
    assert_eq!(meta["ExpirationModel"], "KEY_MATERIAL_DOES_NOT_EXPIRE");
    assert_eq!(meta["CurrentKeyMaterialId"], material_id.as_str());
    let blob = encrypt(&mut env, &key).unwrap()["CiphertextBlob"].clone();
    assert_eq!(
        decrypts(&mut env, &blob).unwrap()["Plaintext"],
        b64e(b"hello")
    );

    // Deleted: the key is pending import and nothing decrypts.
    let out = env
        .call("DeleteImportedKeyMaterial", json!({"KeyId": key}))
        .unwrap();
    assert_eq!(out["KeyMaterialId"], material_id.as_str());
    let meta = &env.call("DescribeKey", json!({"KeyId": key})).unwrap()["KeyMetadata"];
    assert_eq!(meta["KeyState"], "PendingImport");
    assert_eq!(meta["Enabled"], false);
    assert!(meta.get("ExpirationModel").is_none());
    assert_eq!(err(decrypts(&mut env, &blob)), pending);

    // Other material, as the same: refused. The same material: restored, same id.
    let (code, _) = err(env.import(&key, &[0x22u8; 32], json!({})));
    assert_eq!(code, KmsErrorCode::IncorrectKeyMaterialException);
    let (code, _) = err(env.import(
        &key,
        &[0x22u8; 32],
        json!({"ImportType": "EXISTING_KEY_MATERIAL"}),
    ));
    assert_eq!(code, KmsErrorCode::IncorrectKeyMaterialException);
    let out = env.import(&key, &material, json!({})).unwrap();
    assert_eq!(out["KeyMaterialId"], material_id.as_str());
    assert_eq!(
        decrypts(&mut env, &blob).unwrap()["Plaintext"],
        b64e(b"hello")
    );
}

#[test]
fn tokens_for_another_key_tampered_expired_and_bad_material_are_refused() {
    let mut env = Env::new();
    let key = env.create_external("SYMMETRIC_DEFAULT", None);
    let other = env.create_external("SYMMETRIC_DEFAULT", None);
    let (public, token) = env.parameters(&key, "RSAES_OAEP_SHA_1", "RSA_2048");
    let good = wrap(&public, "RSAES_OAEP_SHA_1", &[7u8; 32]);

    // A token for another key.
    let (code, _) = err(env.call(
        "ImportKeyMaterial",
        import_body(&other, &token, &good, json!({})),
    ));
    assert_eq!(code, KmsErrorCode::InvalidImportTokenException);
    // A tampered token: every region of it.
    let raw = b64d(&json!(token));
    for i in [0, 5, 20, raw.len() / 2, raw.len() - 1] {
        let mut t = raw.clone();
        t[i] ^= 0x01;
        let (code, _) = err(env.call(
            "ImportKeyMaterial",
            import_body(&key, &b64e(&t), &good, json!({})),
        ));
        assert_eq!(code, KmsErrorCode::InvalidImportTokenException, "byte {i}");
    }
    // Not a token at all.
    let (code, _) = err(env.call(
        "ImportKeyMaterial",
        import_body(&key, &b64e(b"junk"), &good, json!({})),
    ));
    assert_eq!(code, KmsErrorCode::InvalidImportTokenException);
    // Material that does not unwrap, or is not 32 bytes.
    let (code, msg) = err(env.call(
        "ImportKeyMaterial",
        import_body(&key, &token, &[1u8; 256], json!({})),
    ));
    assert_eq!(
        (code, msg.as_str()),
        (KmsErrorCode::InvalidCiphertextException, "")
    );
    let short = wrap(&public, "RSAES_OAEP_SHA_1", &[7u8; 16]);
    let (code, _) = err(env.call(
        "ImportKeyMaterial",
        import_body(&key, &token, &short, json!({})),
    ));
    assert_eq!(code, KmsErrorCode::IncorrectKeyMaterialException);
    // The token with another algorithm's wrapping: does not unwrap.
    let sha256 = wrap(&public, "RSAES_OAEP_SHA_256", &[7u8; 32]);
    let (code, _) = err(env.call(
        "ImportKeyMaterial",
        import_body(&key, &token, &sha256, json!({})),
    ));
    assert_eq!(code, KmsErrorCode::InvalidCiphertextException);
    // Nothing above changed the key; the good request works (and may be repeated).
    env.call(
        "ImportKeyMaterial",
        import_body(&key, &token, &good, json!({})),
    )
    .unwrap();
    // Expired: 24 hours later by the enclave's clock (checked last: later calls would be
    // before the replay horizon).
    let later = SystemTime::now() + 25 * HOUR;
    let (code, _) = err(env.call_at(
        "ImportKeyMaterial",
        &import_body(&key, &token, &good, json!({})),
        later,
    ));
    assert_eq!(code, KmsErrorCode::ExpiredImportTokenException);
}

#[test]
fn aws_errors_for_wrong_keys_and_parameters() {
    let mut env = Env::new();
    let aws = env.create();
    let (code, msg) = err(env.call(
        "GetParametersForImport",
        json!({"KeyId": aws, "WrappingAlgorithm": "RSAES_OAEP_SHA_256", "WrappingKeySpec": "RSA_2048"}),
    ));
    assert_eq!(code, KmsErrorCode::UnsupportedOperationException);
    assert_eq!(
        msg,
        format!(
            "{} origin is AWS_KMS which is not valid for this operation.",
            arn(&aws)
        )
    );
    let (code, _) = err(env.call("DeleteImportedKeyMaterial", json!({"KeyId": aws})));
    assert_eq!(code, KmsErrorCode::UnsupportedOperationException);
    let key = env.create_external("SYMMETRIC_DEFAULT", None);
    let (code, _) = err(env.call(
        "GetParametersForImport",
        json!({"KeyId": key, "WrappingAlgorithm": "RSA_OAEP", "WrappingKeySpec": "RSA_2048"}),
    ));
    assert_eq!(code, KmsErrorCode::ValidationException);
    let (code, msg) = err(env.call(
        "ImportKeyMaterial",
        json!({"KeyId": key, "ImportToken": b64e(b"t"), "EncryptedKeyMaterial": b64e(b"m"),
               "ExpirationModel": "KEY_MATERIAL_EXPIRES"}),
    ));
    assert_eq!(
        (code, msg.as_str()),
        (
            KmsErrorCode::ValidationException,
            "A validTo date must be set if the ExpirationModel is KEY_MATERIAL_EXPIRES"
        )
    );
    // AWS's table: no RSA private key under OAEP; no P-521 key under OAEP with RSA_2048.
    let rsa = env.create_external("RSA_2048", Some("SIGN_VERIFY"));
    let (code, _) = err(env.call(
        "GetParametersForImport",
        json!({"KeyId": rsa, "WrappingAlgorithm": "RSAES_OAEP_SHA_256", "WrappingKeySpec": "RSA_4096"}),
    ));
    assert_eq!(code, KmsErrorCode::ValidationException);
    let p521 = env.create_external("ECC_NIST_P521", Some("SIGN_VERIFY"));
    let (code, _) = err(env.call(
        "GetParametersForImport",
        json!({"KeyId": p521, "WrappingAlgorithm": "RSAES_OAEP_SHA_1", "WrappingKeySpec": "RSA_2048"}),
    ));
    assert_eq!(code, KmsErrorCode::ValidationException);
    env.parameters(&p521, "RSAES_OAEP_SHA_256", "RSA_3072");
}

#[test]
fn a_host_replaying_the_record_from_before_the_import_is_refused() {
    let mut env = Env::new();
    let key = env.create_external("SYMMETRIC_DEFAULT", None);
    let before = env.keys.clone();
    env.import(&key, &[3u8; 32], json!({})).unwrap();
    let after = std::mem::replace(&mut env.keys, before);
    assert!(matches!(encrypt(&mut env, &key), Err(OpError::Stale)));
    // And the record from before a deletion: still usable there, so refused as stale.
    env.keys = after;
    let imported = env.keys.clone();
    env.call("DeleteImportedKeyMaterial", json!({"KeyId": key}))
        .unwrap();
    env.keys = imported;
    assert!(matches!(encrypt(&mut env, &key), Err(OpError::Stale)));
}

#[test]
fn material_expires_by_the_enclave_clock_and_comes_back_when_reimported() {
    let mut env = Env::new();
    let key = env.create_external("SYMMETRIC_DEFAULT", None);
    let now = SystemTime::now();
    let valid_to = now + 2 * HOUR;
    let secs = valid_to
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let material = [9u8; 32];
    env.import(
        &key,
        &material,
        json!({"ExpirationModel": "KEY_MATERIAL_EXPIRES", "ValidTo": secs}),
    )
    .unwrap();
    let meta = &env.call("DescribeKey", json!({"KeyId": key})).unwrap()["KeyMetadata"];
    assert_eq!(meta["ExpirationModel"], "KEY_MATERIAL_EXPIRES");
    assert_eq!(
        meta["ValidTo"],
        json!(f64::from(u32::try_from(secs).unwrap()))
    );
    let blob = encrypt(&mut env, &key).unwrap()["CiphertextBlob"].clone();

    // Three hours on, by the enclave's clock: pending import, nothing decrypts.
    let t = now + 3 * HOUR;
    let body = json!({"KeyId": key, "Plaintext": b64e(b"x")});
    let (code, msg) = err(env.call_at("Encrypt", &body, t));
    assert_eq!(code, KmsErrorCode::KMSInvalidStateException);
    assert!(msg.ends_with("is pending import."));
    let (code, _) = err(env.call_at("Decrypt", &json!({"CiphertextBlob": blob}), t));
    assert_eq!(code, KmsErrorCode::KMSInvalidStateException);
    let out = env
        .call_at(
            "DescribeKey",
            &json!({"KeyId": key}),
            t + Duration::from_secs(1),
        )
        .unwrap();
    assert_eq!(out["KeyMetadata"]["KeyState"], "PendingImport");

    // Re-import the same material (a fresh token at that time): old ciphertexts decrypt.
    let out = env
        .call_at(
            "GetParametersForImport",
            &json!({"KeyId": key, "WrappingAlgorithm": "RSA_AES_KEY_WRAP_SHA_256", "WrappingKeySpec": "RSA_2048"}),
            t + Duration::from_secs(2),
        )
        .unwrap();
    let wrapped = wrap(
        &b64d(&out["PublicKey"]),
        "RSA_AES_KEY_WRAP_SHA_256",
        &material,
    );
    let token = out["ImportToken"].as_str().unwrap().to_owned();
    env.call_at(
        "ImportKeyMaterial",
        &import_body(&key, &token, &wrapped, json!({})),
        t + Duration::from_secs(3),
    )
    .unwrap();
    let out = env
        .call_at(
            "Decrypt",
            &json!({"CiphertextBlob": blob}),
            t + Duration::from_secs(4),
        )
        .unwrap();
    assert_eq!(out["Plaintext"], b64e(b"hello"));
}

#[test]
fn new_material_is_pending_until_rotated_and_old_ciphertexts_still_decrypt() {
    let mut env = Env::new();
    let key = env.create_external("SYMMETRIC_DEFAULT", None);
    let first = env.import(&key, &[1u8; 32], json!({})).unwrap()["KeyMaterialId"].clone();
    let old = encrypt(&mut env, &key).unwrap()["CiphertextBlob"].clone();
    let (code, _) = err(env.call("RotateKeyOnDemand", json!({"KeyId": key})));
    assert_eq!(code, KmsErrorCode::KMSInvalidStateException);
    let second = env
        .import(&key, &[2u8; 32], json!({"ImportType": "NEW_KEY_MATERIAL"}))
        .unwrap()["KeyMaterialId"]
        .clone();
    assert_ne!(first, second);
    let meta = &env.call("DescribeKey", json!({"KeyId": key})).unwrap()["KeyMetadata"];
    assert_eq!(meta["CurrentKeyMaterialId"], first);
    // A second pending material: AWS's message.
    let (code, msg) = err(env.import(&key, &[3u8; 32], json!({"ImportType": "NEW_KEY_MATERIAL"})));
    assert_eq!(code, KmsErrorCode::KMSInvalidStateException);
    assert!(msg.ends_with(&format!(
        "cannot be imported into KMS key {key}, because another key material (id: {}) is pending rotation.",
        second.as_str().unwrap()
    )));
    env.call("RotateKeyOnDemand", json!({"KeyId": key}))
        .unwrap();
    let meta = &env.call("DescribeKey", json!({"KeyId": key})).unwrap()["KeyMetadata"];
    assert_eq!(meta["CurrentKeyMaterialId"], second);
    let new = encrypt(&mut env, &key).unwrap()["CiphertextBlob"].clone();
    assert_eq!(decrypts(&mut env, &old).unwrap()["KeyMaterialId"], first);
    assert_eq!(decrypts(&mut env, &new).unwrap()["KeyMaterialId"], second);
    let rotations = env.call("ListKeyRotations", json!({"KeyId": key})).unwrap();
    assert_eq!(rotations["Rotations"].as_array().unwrap().len(), 1);
    assert_eq!(rotations["Rotations"][0]["KeyMaterialId"], second);
    // Deleting the old material: its ciphertexts no longer decrypt, the key stays enabled.
    env.call(
        "DeleteImportedKeyMaterial",
        json!({"KeyId": key, "KeyMaterialId": first}),
    )
    .unwrap();
    assert!(decrypts(&mut env, &old).is_err());
    assert!(decrypts(&mut env, &new).is_ok());
}

#[test]
fn imported_hmac_and_ec_keys_match_an_independent_library() {
    let mut env = Env::new();
    // HMAC_256 with 40 bytes of material, by RSA_AES_KEY_WRAP_SHA_1 under RSA_3072.
    let key = env.create_external("HMAC_256", Some("GENERATE_VERIFY_MAC"));
    let material = [0x42u8; 40];
    let (public, token) = env.parameters(&key, "RSA_AES_KEY_WRAP_SHA_1", "RSA_3072");
    let wrapped = wrap(&public, "RSA_AES_KEY_WRAP_SHA_1", &material);
    env.call(
        "ImportKeyMaterial",
        import_body(&key, &token, &wrapped, json!({})),
    )
    .unwrap();
    let out = env
        .call(
            "GenerateMac",
            json!({"KeyId": key, "Message": b64e(b"msg"), "MacAlgorithm": "HMAC_SHA_256"}),
        )
        .unwrap();
    let expected = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, &material), b"msg");
    assert_eq!(b64d(&out["Mac"]), expected.as_ref());

    // ECC_NIST_P256: a PKCS#8 key made elsewhere; signatures verify under its public key.
    let key = env.create_external("ECC_NIST_P256", Some("SIGN_VERIFY"));
    let rng = aws_lc_rs::rand::SystemRandom::new();
    let pkcs8 =
        EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_ASN1_SIGNING, &rng).unwrap();
    let pair = EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref())
        .unwrap();
    // A P-384 key does not fit the spec.
    let p384 =
        EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P384_SHA384_ASN1_SIGNING, &rng).unwrap();
    let (code, _) = err(env.import(&key, p384.as_ref(), json!({})));
    assert_eq!(code, KmsErrorCode::IncorrectKeyMaterialException);
    env.import(&key, pkcs8.as_ref(), json!({})).unwrap();
    let out = env
        .call(
            "Sign",
            json!({"KeyId": key, "Message": b64e(b"msg"), "SigningAlgorithm": "ECDSA_SHA_256"}),
        )
        .unwrap();
    signature::UnparsedPublicKey::new(
        &signature::ECDSA_P256_SHA256_ASN1,
        pair.public_key().as_ref(),
    )
    .verify(b"msg", &b64d(&out["Signature"]))
    .unwrap();
    // NEW_KEY_MATERIAL on an asymmetric key that has material is refused.
    let (code, _) = err(env.import(
        &key,
        pkcs8.as_ref(),
        json!({"ImportType": "NEW_KEY_MATERIAL"}),
    ));
    assert_eq!(code, KmsErrorCode::UnsupportedOperationException);
}
