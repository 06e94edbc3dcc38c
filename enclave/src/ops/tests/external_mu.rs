//! Sign and Verify with `MessageType` `EXTERNAL_MU` through the operation layer: the mu of a
//! message signs as the message, and every other pairing of message type and algorithm, or a mu
//! of the wrong length, is AWS's `ValidationException`.

use ekms_wire::msg::KmsErrorCode;
use serde_json::json;

use super::{Env, principals::b64};

fn unb64(s: &serde_json::Value) -> Vec<u8> {
    base64::Engine::decode(
        &base64::engine::general_purpose::STANDARD,
        s.as_str().unwrap(),
    )
    .unwrap()
}

/// FIPS 204 mu of `message` (empty context) under the ML-DSA-44 key whose SPKI is `spki`.
fn mu_of(spki: &[u8], message: &[u8]) -> Vec<u8> {
    // ML-DSA-44's SubjectPublicKeyInfo ends with the 1,312-byte raw public key.
    crate::external_mu::tests::mu_of(&spki[spki.len() - 1312..], message).to_vec()
}

#[test]
fn an_external_mu_signs_as_its_message_and_fits_ml_dsa_only() {
    let mut env = Env::new();
    let create = |env: &mut Env, spec: &str| {
        env.call(
            "CreateKey",
            json!({"KeySpec": spec, "KeyUsage": "SIGN_VERIFY"}),
        )
        .unwrap()["KeyMetadata"]["KeyId"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let id = create(&mut env, "ML_DSA_44");
    let spki = unb64(&env.call("GetPublicKey", json!({"KeyId": id})).unwrap()["PublicKey"]);
    let message = b"a message signed through its mu";
    let mu = mu_of(&spki, message);
    let alg = "ML_DSA_SHAKE_256";

    let signed = env
        .call(
            "Sign",
            json!({"KeyId": id, "Message": b64(&mu), "MessageType": "EXTERNAL_MU", "SigningAlgorithm": alg}),
        )
        .unwrap();
    let sig = signed["Signature"].as_str().unwrap().to_owned();
    // The mu signature is a signature of the message, and verifies over the mu too.
    for (m, kind) in [(message.as_slice(), "RAW"), (mu.as_slice(), "EXTERNAL_MU")] {
        let ok = env
            .call(
                "Verify",
                json!({"KeyId": id, "Message": b64(m), "MessageType": kind, "Signature": sig, "SigningAlgorithm": alg}),
            )
            .unwrap();
        assert_eq!(ok["SignatureValid"], true, "{kind}");
    }
    let mut other = mu.clone();
    other[63] ^= 1;
    assert_eq!(
        env.err(
            "Verify",
            json!({"KeyId": id, "Message": b64(&other), "MessageType": "EXTERNAL_MU", "Signature": sig, "SigningAlgorithm": alg}),
        )
        .0,
        KmsErrorCode::KMSInvalidSignatureException
    );
    assert_eq!(
        env.err(
            "Sign",
            json!({"KeyId": id, "Message": b64(&mu[..32]), "MessageType": "EXTERNAL_MU", "SigningAlgorithm": alg}),
        ),
        (
            KmsErrorCode::ValidationException,
            "An EXTERNAL_MU message is the 64-byte mu of FIPS 204; this one is 32 bytes.".into()
        )
    );
    assert_eq!(
        env.err(
            "Sign",
            json!({"KeyId": id, "Message": b64(&mu), "MessageType": "DIGEST", "SigningAlgorithm": alg}),
        )
        .0,
        KmsErrorCode::ValidationException
    );

    // EXTERNAL_MU with any other algorithm.
    let ec = create(&mut env, "ECC_NIST_P256");
    assert_eq!(
        env.err(
            "Sign",
            json!({"KeyId": ec, "Message": b64(&mu), "MessageType": "EXTERNAL_MU", "SigningAlgorithm": "ECDSA_SHA_256"}),
        ),
        (
            KmsErrorCode::ValidationException,
            "MessageType EXTERNAL_MU is valid only with ML_DSA_SHAKE_256, not ECDSA_SHA_256."
                .into()
        )
    );
}
