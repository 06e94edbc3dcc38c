//! The XKS proxy API through the real entry points: key stores and their credentials made by
//! signed admin calls, XKS calls signed as AWS KMS signs them (service `kms-xks-proxy`), every
//! operation and error of the specification, and the host as an attacker: a credential or key
//! of another key store, an older credential record, a hidden key.

use std::time::SystemTime;

use base64::Engine as _;
use ekms_custody::CustodianKey;
use ekms_wire::msg::{EnclaveResponse, KmsCall, SealedBlob, XksOutcome};
use serde_json::{Value, json};

use super::Env;
use super::principals::{NONCE, b64, open_key};

const PREFIX: &str = "example/uri/path/prefix";

fn unb64(s: &str) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD.decode(s).unwrap()
}

impl Env {
    /// Makes a credential of key store `prefix`; its access key id and secret.
    fn xks_credential(&mut self, prefix: &str) -> (String, String) {
        let receiver = CustodianKey::generate().unwrap();
        let out = self
            .call(
                "EkmsCreateXksCredential",
                json!({"UriPrefix": prefix,
                       "RecipientPublicKey": receiver.public_key().to_json().unwrap(),
                       "Nonce": b64(&NONCE)}),
            )
            .unwrap();
        assert_eq!(out["UriPrefix"], prefix);
        let (akid, secret) = open_key(&out["AccessKey"], &receiver);
        assert!((43..=64).contains(&secret.len()), "{}", secret.len());
        (akid, secret)
    }

    /// Makes a key of `prefix` with `usage`; its id.
    fn xks_key(&mut self, prefix: &str, usage: &[&str]) -> String {
        let out = self
            .call(
                "EkmsCreateXksKey",
                json!({"UriPrefix": prefix, "KeyUsage": usage}),
            )
            .unwrap();
        assert_eq!(out["KeyId"], out["KeyMetadata"]["KeyId"]);
        out["KeyId"].as_str().unwrap().to_owned()
    }

    /// An XKS call as AWS KMS makes it, relayed with the records the host finds: `(status,
    /// body)`, or `None` when the enclave asks for the records again.
    fn xks_raw(
        &mut self,
        path: &str,
        who: (&str, &str),
        body: &Value,
        principal: Option<SealedBlob>,
    ) -> Option<(u16, Value)> {
        self.xks_at(path, who, body, principal, SystemTime::now())
    }

    /// As [`Env::xks_raw`], signed at `at`.
    fn xks_at(
        &mut self,
        path: &str,
        (akid, secret): (&str, &str),
        body: &Value,
        principal: Option<SealedBlob>,
        at: SystemTime,
    ) -> Option<(u16, Value)> {
        let http = crate::auth::tests::sign_request_to(
            path,
            (akid, secret),
            ("kms-xks-proxy", "us-east-1"),
            &[
                ("host", "127.0.0.1:8400"),
                ("content-type", "application/json"),
            ],
            &body.to_string(),
            at,
        );
        let call = KmsCall {
            http,
            principal,
            keys: self.keys.clone(),
            ..Default::default()
        };
        match crate::xks::call(&self.core, &call) {
            EnclaveResponse::Xks(XksOutcome { status, body }) => {
                Some((status, serde_json::from_slice(&body).unwrap()))
            }
            EnclaveResponse::Fault(ekms_wire::msg::Fault::StaleRecord) => None,
            other => panic!("unexpected {other:?}"),
        }
    }

    /// The store's current credential record `xks:PREFIX`, as the host holds it.
    fn store_record(&self, prefix: &str) -> Option<SealedBlob> {
        let name = ekms_wire::xks::credential_record(prefix);
        self.principals
            .iter()
            .find(|s| crate::record::peek(&s.0).is_some_and(|h| h.id == name))
            .cloned()
    }

    /// As [`Env::xks_raw`], with the principal record the host finds for `akid`.
    fn xks(&mut self, path: &str, who: (&str, &str), body: &Value) -> (u16, Value) {
        let principal = self
            .principals
            .iter()
            .find(|s| {
                crate::principal::open(self.domain.keyring(), &s.0)
                    .is_ok_and(|p| p.secret_of(who.0).is_some())
            })
            .cloned();
        self.xks_raw(path, who, body, principal).unwrap()
    }
}

fn path(prefix: &str, rest: &str) -> String {
    format!("/{prefix}/kms/xks/v1/{rest}")
}

fn meta(op: &str) -> Value {
    json!({"awsPrincipalArn": "arn:aws:iam::123456789012:user/Alice",
           "kmsKeyArn": "arn:aws:kms:us-east-2:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab",
           "kmsOperation": op,
           "kmsRequestId": "4112f4d6-db54-4af4-ae30-c55a22a8dfae",
           "kmsViaService": "ebs"})
}

fn error(r: &(u16, Value)) -> (u16, &str) {
    (r.0, r.1["errorName"].as_str().unwrap_or("none"))
}

#[test]
fn encrypt_and_decrypt_round_trip_with_aad_metadata_and_integrity_value() {
    let mut env = Env::new();
    let (akid, secret) = env.xks_credential(PREFIX);
    let who = (akid.as_str(), secret.as_str());
    let key = env.xks_key(PREFIX, &["ENCRYPT", "DECRYPT"]);

    let health = env.xks(
        &path(PREFIX, "health"),
        who,
        &json!({"requestMetadata": {"kmsOperation": "KmsHealthCheck", "kmsRequestId": "r1"}}),
    );
    assert_eq!(health.0, 200, "{health:?}");
    assert_eq!(health.1["xksProxyFleetSize"], 1);
    assert_eq!(health.1["ekmFleetDetails"][0]["healthStatus"], "ACTIVE");

    let md = env.xks(
        &path(PREFIX, &format!("keys/{key}/metadata")),
        who,
        &json!({"requestMetadata": meta("DescribeKey")}),
    );
    assert_eq!(md.0, 200, "{md:?}");
    assert_eq!(
        md.1,
        json!({"keySpec": "AES_256", "keyUsage": ["ENCRYPT", "DECRYPT"], "keyStatus": "ENABLED"})
    );

    // The specification's sizes: 4,300 bytes of plaintext, 8,192 of AAD.
    let plaintext: Vec<u8> = (0..4300u32).map(|i| (i % 251) as u8).collect();
    let aad = vec![0x5a; 8192];
    let enc = env.xks(
        &path(PREFIX, &format!("keys/{key}/encrypt")),
        who,
        &json!({"requestMetadata": meta("Encrypt"), "plaintext": b64(&plaintext),
                "encryptionAlgorithm": "AES_GCM", "additionalAuthenticatedData": b64(&aad),
                "ciphertextDataIntegrityValueAlgorithm": "SHA_256"}),
    );
    assert_eq!(enc.0, 200, "{enc:?}");
    let o = &enc.1;
    let (ct, iv, tag, md) = (
        unb64(o["ciphertext"].as_str().unwrap()),
        unb64(o["initializationVector"].as_str().unwrap()),
        unb64(o["authenticationTag"].as_str().unwrap()),
        unb64(o["ciphertextMetadata"].as_str().unwrap()),
    );
    assert_eq!((ct.len(), iv.len(), tag.len()), (4300, 12, 16));
    assert!(md.len() <= 20);
    // The integrity value, recomputed independently of the enclave's code.
    let mut all = aad.clone();
    for part in [&md, &iv, &ct, &tag] {
        all.extend_from_slice(part);
    }
    let cdiv = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &all);
    assert_eq!(
        unb64(o["ciphertextDataIntegrityValue"].as_str().unwrap()),
        cdiv.as_ref()
    );
    let decrypt = |ct: &[u8], iv: &[u8], tag: &[u8], aad: &[u8], md: &[u8]| {
        json!({"requestMetadata": meta("Decrypt"), "ciphertext": b64(ct),
               "encryptionAlgorithm": "AES_GCM", "initializationVector": b64(iv),
               "authenticationTag": b64(tag), "additionalAuthenticatedData": b64(aad),
               "ciphertextMetadata": b64(md)})
    };
    let dec_path = path(PREFIX, &format!("keys/{key}/decrypt"));
    let dec = env.xks(&dec_path, who, &decrypt(&ct, &iv, &tag, &aad, &md));
    assert_eq!(dec.0, 200, "{dec:?}");
    assert_eq!(unb64(dec.1["plaintext"].as_str().unwrap()), plaintext);
    // Tampered IV, tag, AAD, metadata or ciphertext: InvalidCiphertextException.
    let flip = |v: &[u8]| {
        let mut v = v.to_vec();
        v[0] ^= 1;
        v
    };
    for body in [
        decrypt(&flip(&ct), &iv, &tag, &aad, &md),
        decrypt(&ct, &flip(&iv), &tag, &aad, &md),
        decrypt(&ct, &iv, &flip(&tag), &aad, &md),
        decrypt(&ct, &iv, &tag, &flip(&aad), &md),
        decrypt(&ct, &iv, &tag, &aad, &flip(&md)),
    ] {
        let r = env.xks(&dec_path, who, &body);
        assert_eq!(error(&r), (400, "InvalidCiphertextException"), "{r:?}");
    }
    // A ciphertext made before a rotation still decrypts.
    env.call("RotateKeyOnDemand", json!({ "KeyId": key }))
        .unwrap();
    let dec = env.xks(&dec_path, who, &decrypt(&ct, &iv, &tag, &aad, &md));
    assert_eq!(dec.0, 200, "{dec:?}");
}

#[test]
fn the_specifications_errors() {
    let mut env = Env::new();
    let (akid, secret) = env.xks_credential(PREFIX);
    let who = (akid.as_str(), secret.as_str());
    let health = path(PREFIX, "health");
    let good = json!({"requestMetadata": {"kmsOperation": "KmsHealthCheck", "kmsRequestId": "r"}});
    // No requestMetadata, an empty one, or a missing member: ValidationException.
    for body in [json!({}), json!({"requestMetadata": {}})] {
        assert_eq!(
            error(&env.xks(&health, who, &body)),
            (400, "ValidationException")
        );
    }
    // An unknown kmsOperation is accepted.
    let r = env.xks(
        &health,
        who,
        &json!({"requestMetadata": {"kmsOperation": "SomethingNew", "kmsRequestId": "r"}}),
    );
    assert_eq!(r.0, 200);
    // A wrong secret, an unknown access key: AuthenticationFailedException.
    let wrong = format!("{secret}x");
    assert_eq!(
        error(&env.xks(&health, (&akid, &wrong), &good)),
        (401, "AuthenticationFailedException")
    );
    assert_eq!(
        error(
            &env.xks_raw(&health, ("EKMSNOSUCHKEY0000000", &secret), &good, None)
                .unwrap()
        ),
        (401, "AuthenticationFailedException")
    );
    // A prefix with no key store: InvalidUriPathException.
    assert_eq!(
        error(&env.xks(&path(&format!("{PREFIX}/invalid"), "health"), who, &good)),
        (404, "InvalidUriPathException")
    );
}

#[test]
fn key_errors_follow_the_specification() {
    let mut env = Env::new();
    let (akid, secret) = env.xks_credential(PREFIX);
    let who = (akid.as_str(), secret.as_str());
    // Keys: unknown, another store's, and usage or state that forbid the operation.
    let md = |k: &str| path(PREFIX, &format!("keys/{k}/metadata"));
    let mbody = json!({"requestMetadata": meta("DescribeKey")});
    assert_eq!(
        error(&env.xks(&md("non_existing_key"), who, &mbody)),
        (404, "KeyNotFoundException")
    );
    let plain_kms_key = env.create();
    assert_eq!(
        error(&env.xks(&md(&plain_kms_key), who, &mbody)),
        (404, "KeyNotFoundException")
    );
    let _ = env.xks_credential("other/store");
    let other = env.xks_key("other/store", &["ENCRYPT", "DECRYPT"]);
    assert_eq!(
        error(&env.xks(&md(&other), who, &mbody)),
        (404, "KeyNotFoundException")
    );
    let enc_only = env.xks_key(PREFIX, &["ENCRYPT"]);
    let impotent = env.xks_key(PREFIX, &[]);
    let encrypt = |k: &str| path(PREFIX, &format!("keys/{k}/encrypt"));
    let decrypt = |k: &str| path(PREFIX, &format!("keys/{k}/decrypt"));
    let ebody = json!({"requestMetadata": meta("Encrypt"), "plaintext": b64(b"x"),
                       "encryptionAlgorithm": "AES_GCM"});
    let enc = env.xks(&encrypt(&enc_only), who, &ebody);
    assert_eq!(enc.0, 200, "{enc:?}");
    let dbody = json!({"requestMetadata": meta("Decrypt"), "ciphertext": enc.1["ciphertext"],
                       "encryptionAlgorithm": "AES_GCM",
                       "initializationVector": enc.1["initializationVector"],
                       "authenticationTag": enc.1["authenticationTag"],
                       "ciphertextMetadata": enc.1["ciphertextMetadata"]});
    assert_eq!(
        error(&env.xks(&decrypt(&enc_only), who, &dbody)),
        (400, "InvalidKeyUsageException")
    );
    assert_eq!(
        error(&env.xks(&encrypt(&impotent), who, &ebody)),
        (400, "InvalidKeyUsageException")
    );
    // An integrity value vouches that the ciphertext decrypts: not for an encrypt-only key.
    let mut with_cdiv = ebody.clone();
    with_cdiv["ciphertextDataIntegrityValueAlgorithm"] = json!("SHA_256");
    assert_eq!(
        error(&env.xks(&encrypt(&enc_only), who, &with_cdiv)),
        (400, "InvalidKeyUsageException")
    );
    assert_eq!(
        env.xks(&md(&impotent), who, &mbody).1["keyUsage"],
        json!([])
    );
    env.call("DisableKey", json!({ "KeyId": enc_only }))
        .unwrap();
    assert_eq!(
        error(&env.xks(&encrypt(&enc_only), who, &ebody)),
        (400, "InvalidStateException")
    );
    assert_eq!(
        env.xks(&md(&enc_only), who, &mbody).1["keyStatus"],
        "DISABLED"
    );
    // Another algorithm: UnsupportedOperationException; a bad IV length: InvalidCiphertext.
    let mut bad = ebody.clone();
    bad["encryptionAlgorithm"] = json!("AES_CBC");
    let both = env.xks_key(PREFIX, &["ENCRYPT", "DECRYPT"]);
    assert_eq!(
        error(&env.xks(&encrypt(&both), who, &bad)),
        (501, "UnsupportedOperationException")
    );
    let mut bad = dbody.clone();
    bad["initializationVector"] = json!(b64(&[0; 16]));
    assert_eq!(
        error(&env.xks(&decrypt(&both), who, &bad)),
        (400, "InvalidCiphertextException")
    );
}

#[test]
fn the_host_cannot_cross_key_stores_revive_credentials_or_hide_keys() {
    let mut env = Env::new();
    let (akid, secret) = env.xks_credential(PREFIX);
    let who = (akid.as_str(), secret.as_str());
    let (other_akid, other_secret) = env.xks_credential("other/store");
    let good = json!({"requestMetadata": {"kmsOperation": "KmsHealthCheck", "kmsRequestId": "r"}});
    let health = path(PREFIX, "health");
    // Another store's valid credential, on this store's path: refused.
    assert_eq!(
        error(&env.xks(&health, (&other_akid, &other_secret), &good)),
        (401, "AuthenticationFailedException")
    );
    // A KMS principal's credential: refused; and an XKS credential cannot make KMS calls.
    assert_eq!(
        error(&env.xks(
            &health,
            (crate::auth::tests::AKID, crate::auth::tests::SECRET),
            &good
        )),
        (401, "AuthenticationFailedException")
    );
    // A second credential (rotation); both work; a third is refused.
    let old_record = env.store_record(PREFIX).unwrap();
    let (akid2, secret2) = env.xks_credential(PREFIX);
    assert_eq!(env.xks(&health, (&akid2, &secret2), &good).0, 200);
    assert_eq!(env.xks(&health, who, &good).0, 200);
    let receiver = CustodianKey::generate().unwrap();
    let third = env.call(
        "EkmsCreateXksCredential",
        json!({"UriPrefix": PREFIX, "RecipientPublicKey": receiver.public_key().to_json().unwrap(),
               "Nonce": b64(&NONCE)}),
    );
    assert!(third.is_err());
    let listed = env
        .call("EkmsListXksCredentials", json!({"UriPrefix": PREFIX}))
        .unwrap();
    assert_eq!(listed["Credentials"].as_array().unwrap().len(), 2);
    // Retire the first; the host shows the older record, which still had it: refused.
    env.call(
        "EkmsDeleteXksCredential",
        json!({"UriPrefix": PREFIX, "AccessKeyId": akid}),
    )
    .unwrap();
    assert_eq!(
        error(&env.xks(&health, who, &good)),
        (401, "AuthenticationFailedException")
    );
    assert!(env.xks_raw(&health, who, &good, Some(old_record)).is_none());
    // Hiding a key this store has: refused as stale, not answered as unknown.
    let key = env.xks_key(PREFIX, &["ENCRYPT"]);
    let keys = std::mem::take(&mut env.keys);
    let md = json!({"requestMetadata": meta("DescribeKey")});
    let principal = env.store_record(PREFIX);
    assert!(
        env.xks_raw(
            &path(PREFIX, &format!("keys/{key}/metadata")),
            (&akid2, &secret2),
            &md,
            principal
        )
        .is_none()
    );
    env.keys = keys;
    // With its last credential gone the store no longer exists.
    env.call(
        "EkmsDeleteXksCredential",
        json!({"UriPrefix": PREFIX, "AccessKeyId": akid2}),
    )
    .unwrap();
    assert_eq!(
        error(&env.xks(&health, (&akid2, &secret2), &good)),
        (404, "InvalidUriPathException")
    );
}

#[test]
fn an_xks_credential_makes_no_kms_call() {
    let mut env = Env::new();
    let (akid, secret) = env.xks_credential(PREFIX);
    let at = SystemTime::now() + std::time::Duration::from_secs(1);
    let http = crate::auth::tests::signed_as(&akid, "ListKeys", "{}", &secret, at);
    let r = env.run_as(&akid, http, at);
    match r {
        Err(super::OpError::Kms(e)) => {
            assert_eq!(
                e.code,
                ekms_wire::msg::KmsErrorCode::UnrecognizedClientException
            );
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn the_secondary_authorization_rule_holds_for_every_call_but_health() {
    let mut env = Env::new();
    let (akid, secret) = env.xks_credential(PREFIX);
    let who = (akid.as_str(), secret.as_str());
    let key = env.xks_key(PREFIX, &["ENCRYPT", "DECRYPT"]);
    env.call(
        "EkmsPutXksAccessRule",
        json!({"UriPrefix": PREFIX,
               "AwsPrincipalArns": ["arn:aws:iam::123456789012:user/*"],
               "KmsOperations": ["Encrypt", "GenerateDataKey", "DescribeKey"]}),
    )
    .unwrap();
    let enc = path(PREFIX, &format!("keys/{key}/encrypt"));
    let body = |m: Value| json!({"requestMetadata": m, "plaintext": b64(b"x"), "encryptionAlgorithm": "AES_GCM"});
    assert_eq!(env.xks(&enc, who, &body(meta("Encrypt"))).0, 200);
    // An operation the rule does not name; a principal it does not match.
    assert_eq!(
        error(&env.xks(&enc, who, &body(meta("ReEncrypt")))),
        (403, "AccessDeniedException")
    );
    let mut m = meta("Encrypt");
    m["awsPrincipalArn"] = json!("arn:aws:iam::999999999999:role/Other");
    assert_eq!(
        error(&env.xks(&enc, who, &body(m))),
        (403, "AccessDeniedException")
    );
    // Health is never subject to it.
    let h = env.xks(
        &path(PREFIX, "health"),
        who,
        &json!({"requestMetadata": {"kmsOperation": "KmsHealthCheck", "kmsRequestId": "r"}}),
    );
    assert_eq!(h.0, 200);
    // Removed: anything goes again.
    env.call("EkmsPutXksAccessRule", json!({"UriPrefix": PREFIX}))
        .unwrap();
    assert_eq!(env.xks(&enc, who, &body(meta("ReEncrypt"))).0, 200);
}

#[test]
fn signatures_outside_five_minutes_are_refused() {
    let mut env = Env::new();
    let (akid, secret) = env.xks_credential(PREFIX);
    let who = (akid.as_str(), secret.as_str());
    let health = path(PREFIX, "health");
    let good = json!({"requestMetadata": {"kmsOperation": "KmsHealthCheck", "kmsRequestId": "r"}});
    // Signed six minutes ago or ahead: outside the specification's five minutes of skew.
    let principal = env.store_record(PREFIX);
    for shift in [-360i64, 360] {
        let at = if shift < 0 {
            SystemTime::now() - std::time::Duration::from_secs(360)
        } else {
            SystemTime::now() + std::time::Duration::from_secs(360)
        };
        let r = env
            .xks_at(&health, who, &good, principal.clone(), at)
            .unwrap();
        assert_eq!(error(&r), (401, "AuthenticationFailedException"), "{shift}");
    }
    let at = SystemTime::now() - std::time::Duration::from_secs(240);
    assert_eq!(
        env.xks_at(&health, who, &good, principal, at).unwrap().0,
        200
    );
}

#[test]
fn a_sealed_enclave_reports_unavailable_and_serves_nothing() {
    let core = crate::Core::new(
        crate::Config {
            region: "us-east-1".into(),
            regions: ekms_wire::region::Regions::Any,
            account: "111122223333".into(),
        },
        crate::core::test_attestor(),
    );
    let call = |path: &str| KmsCall {
        http: crate::auth::tests::sign_request_to(
            path,
            (
                "EKMSANYKEY0000000000",
                "secret-of-no-one-secret-of-no-one-secret-of-n",
            ),
            ("kms-xks-proxy", "us-east-1"),
            &[("host", "127.0.0.1:8400")],
            "{}",
            SystemTime::now(),
        ),
        ..Default::default()
    };
    let EnclaveResponse::Xks(h) = crate::xks::call(&core, &call(&path(PREFIX, "health"))) else {
        panic!("not an XKS answer")
    };
    assert_eq!(h.status, 200);
    let v: Value = serde_json::from_slice(&h.body).unwrap();
    assert_eq!(v["ekmFleetDetails"][0]["healthStatus"], "UNAVAILABLE");
    let EnclaveResponse::Xks(e) = crate::xks::call(&core, &call(&path(PREFIX, "keys/k/encrypt")))
    else {
        panic!("not an XKS answer")
    };
    assert_eq!(e.status, 500);
}
