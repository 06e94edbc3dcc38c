//! Principals: made, used, rotated and deleted through signed requests, and the host's
//! attempts to mint, revive or swap them.

use ekms_custody::{CustodianKey, Delivery};
use ekms_wire::msg::{KmsErrorCode, SealedBlob};
use serde_json::{Value, json};

use super::{Env, OpError};

pub(super) const NONCE: [u8; 32] = [7; 32];

pub(super) fn b64(b: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(b)
}

fn unb64(s: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.decode(s).unwrap()
}

/// Makes principal `name` with `policy` as the admin; returns its access key id and secret,
/// opened from the attested delivery with the one-off key.
pub(super) fn make(env: &mut Env, name: &str, policy: Option<Value>) -> (String, String) {
    let receiver = CustodianKey::generate().unwrap();
    let mut body = json!({
        "UserName": name,
        "RecipientPublicKey": receiver.public_key().to_json().unwrap(),
        "Nonce": b64(&NONCE),
    });
    if let Some(p) = policy {
        body["PolicyDocument"] = json!(p.to_string());
    }
    let out = env.call("EkmsCreatePrincipal", body).unwrap();
    assert_eq!(
        out["User"]["Arn"],
        format!("arn:aws:iam::111122223333:user/{name}")
    );
    open_key(&out["AccessKey"], &receiver)
}

pub(super) fn open_key(key: &Value, receiver: &CustodianKey) -> (String, String) {
    let akid = key["AccessKeyId"].as_str().unwrap().to_owned();
    let hex = key["DomainId"].as_str().unwrap();
    let domain: [u8; 8] = std::array::from_fn(|i| {
        u8::from_str_radix(hex.get(2 * i..2 * i + 2).unwrap(), 16).unwrap()
    });
    let sealed = unb64(key["SealedSecret"].as_str().unwrap());
    let d = Delivery::credential(domain, &akid, &NONCE).unwrap();
    let secret = d.open(receiver.agreement_key(), &sealed).unwrap();
    assert!(!unb64(key["AttestationDocument"].as_str().unwrap()).is_empty());
    (akid, String::from_utf8(secret.to_vec()).unwrap())
}

pub(super) fn allow(actions: &[&str]) -> Value {
    json!({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": actions, "Resource": "*"}
    ]})
}

/// A second access key of user `name`: its id and secret.
fn second_key(env: &mut Env, name: &str) -> (String, String) {
    let receiver = CustodianKey::generate().unwrap();
    let out = env
        .call(
            "EkmsCreateAccessKey",
            json!({"UserName": name, "RecipientPublicKey": receiver.public_key().to_json().unwrap(), "Nonce": b64(&NONCE)}),
        )
        .unwrap();
    open_key(&out["AccessKey"], &receiver)
}

fn code(r: Result<Value, OpError>) -> (KmsErrorCode, String) {
    match r {
        Err(OpError::Kms(e)) => (e.code, e.message),
        other => panic!("expected an AWS error, got {other:?}"),
    }
}

#[test]
fn a_principal_does_what_its_identity_policy_allows_and_nothing_else() {
    let mut env = Env::new();
    let key = env.create();
    let (akid, secret) = make(&mut env, "alice", Some(allow(&["kms:Encrypt"])));
    let alice = (akid.as_str(), secret.as_str());
    let out = env
        .call_as(
            alice,
            "Encrypt",
            json!({"KeyId": key, "Plaintext": b64(b"hi")}),
        )
        .unwrap();
    let blob = out["CiphertextBlob"].as_str().unwrap().to_owned();
    let (c, m) = code(env.call_as(alice, "Decrypt", json!({"CiphertextBlob": blob})));
    assert_eq!(c, KmsErrorCode::AccessDeniedException);
    assert_eq!(
        m,
        format!(
            "User: arn:aws:iam::111122223333:user/alice is not authorized to perform: \
             kms:Decrypt on resource: arn:aws:kms:us-east-1:111122223333:key/{key} because no \
             resource-based policy allows the kms:Decrypt action"
        )
    );
    // Nor may it make principals or keys.
    let (c, m) = code(env.call_as(
        alice,
        "EkmsCreatePrincipal",
        json!({"UserName": "mallory", "RecipientPublicKey": "x", "Nonce": b64(&NONCE)}),
    ));
    assert_eq!(c, KmsErrorCode::AccessDeniedException);
    assert!(m.contains("iam:CreateUser on resource: arn:aws:iam::111122223333:user/mallory because no identity-based policy"), "{m}");
    let (c, _) = code(env.call_as(alice, "CreateKey", json!({})));
    assert_eq!(c, KmsErrorCode::AccessDeniedException);
    // A principal made without a policy may do nothing.
    let (akid, secret) = make(&mut env, "bob", None);
    let (c, _) = code(env.call_as(
        (&akid, &secret),
        "Encrypt",
        json!({"KeyId": key, "Plaintext": b64(b"hi")}),
    ));
    assert_eq!(c, KmsErrorCode::AccessDeniedException);
}

#[test]
fn an_explicit_deny_wins_and_conditions_hold() {
    let mut env = Env::new();
    let key = env.create();
    let policy = json!({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "kms:*", "Resource": "*"},
        {"Effect": "Deny", "Action": "kms:Decrypt", "Resource": "*",
         "Condition": {"StringNotEquals": {"kms:EncryptionContext:app": "billing"}}}
    ]});
    let (akid, secret) = make(&mut env, "svc", Some(policy));
    let svc = (akid.as_str(), secret.as_str());
    let enc = |env: &mut Env, app: &str| {
        env.call_as(
            svc,
            "Encrypt",
            json!({"KeyId": key, "Plaintext": b64(b"x"), "EncryptionContext": {"app": app}}),
        )
        .unwrap()["CiphertextBlob"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let billing = enc(&mut env, "billing");
    let other = enc(&mut env, "hr");
    env.call_as(
        svc,
        "Decrypt",
        json!({"CiphertextBlob": billing, "EncryptionContext": {"app": "billing"}}),
    )
    .unwrap();
    let (c, m) = code(env.call_as(
        svc,
        "Decrypt",
        json!({"CiphertextBlob": other, "EncryptionContext": {"app": "hr"}}),
    ));
    assert_eq!(c, KmsErrorCode::AccessDeniedException);
    assert!(m.ends_with("with an explicit deny in a policy"), "{m}");
}

#[test]
fn rotation_keeps_the_old_key_until_it_is_retired_and_the_host_cannot_revive_it() {
    let mut env = Env::new();
    let (old, old_secret) = make(&mut env, "ci", Some(allow(&["kms:ListKeys"])));
    let before = env.principals.clone();
    let receiver = CustodianKey::generate().unwrap();
    let out = env
        .call(
            "EkmsCreateAccessKey",
            json!({"UserName": "ci", "RecipientPublicKey": receiver.public_key().to_json().unwrap(), "Nonce": b64(&NONCE)}),
        )
        .unwrap();
    let (new, new_secret) = open_key(&out["AccessKey"], &receiver);
    assert_eq!(out["User"]["AccessKeyIds"], json!([old, new]));
    // Both work while rotating; a third is refused.
    env.call_as((&old, &old_secret), "ListKeys", json!({}))
        .unwrap();
    env.call_as((&new, &new_secret), "ListKeys", json!({}))
        .unwrap();
    let (c, m) = code(env.call(
        "EkmsCreateAccessKey",
        json!({"UserName": "ci", "RecipientPublicKey": receiver.public_key().to_json().unwrap(), "Nonce": b64(&NONCE)}),
    ));
    assert_eq!(
        (c, m.as_str()),
        (
            KmsErrorCode::LimitExceededException,
            "Cannot exceed quota for AccessKeysPerUser: 2"
        )
    );
    env.call(
        "EkmsDeleteAccessKey",
        json!({"UserName": "ci", "AccessKeyId": old}),
    )
    .unwrap();
    let (c, _) = code(env.call_as((&old, &old_secret), "ListKeys", json!({})));
    assert_eq!(c, KmsErrorCode::UnrecognizedClientException);
    env.call_as((&new, &new_secret), "ListKeys", json!({}))
        .unwrap();
    // The host shows the record from before the retirement: refused as stale.
    let current = std::mem::replace(&mut env.principals, before);
    assert!(matches!(
        env.call_as((&old, &old_secret), "ListKeys", json!({})),
        Err(OpError::Stale)
    ));
    env.principals = current;
    // The last key stays.
    let (c, _) = code(env.call(
        "EkmsDeleteAccessKey",
        json!({"UserName": "ci", "AccessKeyId": new}),
    ));
    assert_eq!(c, KmsErrorCode::ValidationException);
}

#[test]
fn a_retired_access_keys_kept_signing_key_is_never_used_again() {
    let mut env = Env::new();
    let (old, old_secret) = make(&mut env, "ci", Some(allow(&["kms:ListKeys"])));
    let (new, new_secret) = second_key(&mut env, "ci");
    // The old key signs a request today: its signing key is kept (`crate::opened`).
    env.call_as((&old, &old_secret), "ListKeys", json!({}))
        .unwrap();
    assert!(env.core.opened.signing_keys() >= 1);
    env.call(
        "EkmsDeleteAccessKey",
        json!({"UserName": "ci", "AccessKeyId": old}),
    )
    .unwrap();
    // The host supplies the principal's current record (which no longer holds the old key) with
    // a new request signed by the old key: the key kept for the old version is not used.
    let current = env.principal_holding(&new);
    let at = std::time::SystemTime::now() + std::time::Duration::from_secs(3600);
    let http = crate::auth::tests::signed_as(&old, "ListKeys", "{}", &old_secret, at);
    let (c, _) = code(env.run_with(current.clone(), http, at));
    assert_eq!(c, KmsErrorCode::UnrecognizedClientException);
    // The new key, through the same record, works.
    let http = crate::auth::tests::signed_as(&new, "ListKeys", "{}", &new_secret, at);
    env.run_with(current, http, at).unwrap();
}

#[test]
fn a_deleted_principal_stays_deleted_whatever_the_host_shows() {
    let mut env = Env::new();
    let (akid, secret) = make(&mut env, "temp", Some(allow(&["kms:*"])));
    let before = env.principals.clone();
    env.call("EkmsDeletePrincipal", json!({"UserName": "temp"}))
        .unwrap();
    let (c, _) = code(env.call_as((&akid, &secret), "ListKeys", json!({})));
    assert_eq!(c, KmsErrorCode::UnrecognizedClientException);
    // The host brings the deleted record back.
    env.principals = before;
    assert!(matches!(
        env.call_as((&akid, &secret), "ListKeys", json!({})),
        Err(OpError::Stale)
    ));
    // And the name is free again, for a new principal with another id.
    let kept = env.principals.clone();
    env.principals
        .retain(|s| ekms_wire::sealed::peek(&s.0).unwrap().id != "temp");
    make(&mut env, "temp", None);
    assert_ne!(
        env.principal_record("temp").unwrap().access_keys[0].id,
        akid
    );
    drop(kept);
}

#[test]
fn an_older_policy_replayed_by_the_host_is_refused() {
    let mut env = Env::new();
    let key = env.create();
    let (akid, secret) = make(
        &mut env,
        "app",
        Some(allow(&["kms:Encrypt", "kms:Decrypt"])),
    );
    let app = (akid.as_str(), secret.as_str());
    let encrypt = |env: &mut Env| {
        env.call_as(
            app,
            "Encrypt",
            json!({"KeyId": key, "Plaintext": b64(b"x")}),
        )
        .unwrap()["CiphertextBlob"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    // The wide version serves two calls, so the enclave keeps it opened (`crate::opened`): the
    // refusals below hold for a kept copy as for a freshly opened one.
    let blob = encrypt(&mut env);
    env.call_as(app, "Decrypt", json!({"CiphertextBlob": blob}))
        .unwrap();
    assert!(!env.core.opened.is_empty());
    let wide = env.principals.clone();
    env.call(
        "EkmsPutPrincipalPolicy",
        json!({"UserName": "app", "PolicyDocument": allow(&["kms:Encrypt"]).to_string()}),
    )
    .unwrap();
    let blob = encrypt(&mut env);
    let (c, _) = code(env.call_as(app, "Decrypt", json!({"CiphertextBlob": blob})));
    assert_eq!(c, KmsErrorCode::AccessDeniedException);
    // The host shows the wide version again.
    let narrow = std::mem::replace(&mut env.principals, wide.clone());
    assert!(matches!(
        env.call_as(app, "Decrypt", json!({"CiphertextBlob": blob})),
        Err(OpError::Stale)
    ));
    // Deleted, the principal stays deleted, whichever version the host shows.
    env.principals = narrow;
    env.call("EkmsDeletePrincipal", json!({"UserName": "app"}))
        .unwrap();
    env.principals = wide;
    assert!(matches!(
        env.call_as(
            app,
            "Encrypt",
            json!({"KeyId": key, "Plaintext": b64(b"x")})
        ),
        Err(OpError::Stale)
    ));
}

#[test]
fn the_host_cannot_pass_one_principal_off_as_another() {
    let mut env = Env::new();
    let (a, a_secret) = make(&mut env, "a", Some(allow(&["kms:ListKeys"])));
    make(&mut env, "b", Some(allow(&["kms:*"])));
    // A request signed by `a`, sent with `b`'s record: `a`'s key is not in it.
    let b_record = env
        .principals
        .iter()
        .find(|s| ekms_wire::sealed::peek(&s.0).unwrap().id == "b")
        .cloned()
        .unwrap();
    let at = std::time::SystemTime::now();
    let http = crate::auth::tests::signed_as(&a, "CreateKey", "{}", &a_secret, at);
    env.principals = vec![b_record];
    let (c, _) = code(env.run_as("unused", http, at));
    assert_eq!(c, KmsErrorCode::UnrecognizedClientException);
    // A record the enclave never sealed is not a principal.
    let forged = SealedBlob(b"EKMR\x01\x03........\x00\x01bxxxxxxxxxxxxxxxxxxxxxxxxxxxx".to_vec());
    env.principals = vec![forged];
    let http = crate::auth::tests::signed_as(&a, "ListKeys", "{}", &a_secret, at);
    let (c, _) = code(env.run_as("unused", http, at));
    assert_eq!(c, KmsErrorCode::UnrecognizedClientException);
}

#[test]
fn names_policies_and_the_admin_are_checked() {
    let mut env = Env::new();
    let receiver = CustodianKey::generate().unwrap();
    let pk = receiver.public_key().to_json().unwrap();
    let mut create = |name: &str, policy: Option<&str>| {
        let mut body = json!({"UserName": name, "RecipientPublicKey": pk, "Nonce": b64(&NONCE)});
        if let Some(p) = policy {
            body["PolicyDocument"] = json!(p);
        }
        code(env.call("EkmsCreatePrincipal", body))
    };
    assert_eq!(
        create("admin", None).0,
        KmsErrorCode::AlreadyExistsException
    );
    assert_eq!(create("a b", None).0, KmsErrorCode::ValidationException);
    assert_eq!(create("", None).0, KmsErrorCode::ValidationException);
    let (c, m) = create(
        "p",
        Some(
            r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":"*","Action":"kms:*","Resource":"*"}]}"#,
        ),
    );
    assert_eq!(
        (c, m.as_str()),
        (
            KmsErrorCode::MalformedPolicyDocumentException,
            "Policy document should not specify a principal."
        )
    );
    assert_eq!(
        create("p", Some("not json")).0,
        KmsErrorCode::MalformedPolicyDocumentException
    );
    let (c, _) = code(env.call(
        "EkmsCreatePrincipal",
        json!({"UserName": "q", "RecipientPublicKey": "{}", "Nonce": b64(&NONCE)}),
    ));
    assert_eq!(c, KmsErrorCode::ValidationException);
    let (c, _) = code(env.call(
        "EkmsCreatePrincipal",
        json!({"UserName": "q", "RecipientPublicKey": pk, "Nonce": b64(b"short")}),
    ));
    assert_eq!(c, KmsErrorCode::ValidationException);
    make(&mut env, "dup", None);
    let (c, m) = code(env.call(
        "EkmsCreatePrincipal",
        json!({"UserName": "dup", "RecipientPublicKey": pk, "Nonce": b64(&NONCE)}),
    ));
    assert_eq!(
        (c, m.as_str()),
        (
            KmsErrorCode::AlreadyExistsException,
            "User with name dup already exists."
        )
    );
    // The admin cannot delete itself.
    let (c, _) = code(env.call("EkmsDeletePrincipal", json!({"UserName": "admin"})));
    assert_eq!(c, KmsErrorCode::ValidationException);
    let (c, _) = code(env.call("EkmsDeletePrincipal", json!({"UserName": "nobody"})));
    assert_eq!(c, KmsErrorCode::NotFoundException);
}

#[test]
fn the_listing_is_the_state_views_and_the_host_cannot_hide_one() {
    let mut env = Env::new();
    make(&mut env, "x", None);
    make(&mut env, "y", None);
    let out = env.call("EkmsListPrincipals", json!({})).unwrap();
    let names: Vec<&str> = out["Users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["UserName"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["admin", "x", "y"]);
    let page = env.call("EkmsListPrincipals", json!({"Limit": 2})).unwrap();
    assert_eq!(page["Truncated"], true);
    let rest = env
        .call("EkmsListPrincipals", json!({"Marker": page["NextMarker"]}))
        .unwrap();
    assert_eq!(rest["Users"][0]["UserName"], "y");
    env.principals
        .retain(|s| ekms_wire::sealed::peek(&s.0).unwrap().id != "x");
    assert!(matches!(
        env.call("EkmsListPrincipals", json!({})),
        Err(OpError::Stale)
    ));
}

#[test]
fn an_older_key_policy_replayed_by_the_host_is_refused() {
    let mut env = Env::new();
    let (akid, secret) = make(&mut env, "alice", None);
    let alice = (akid.as_str(), secret.as_str());
    let policy = |who: &str| {
        json!({"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::111122223333:root"}, "Action": "kms:*", "Resource": "*"},
            {"Effect": "Allow", "Principal": {"AWS": format!("arn:aws:iam::111122223333:user/{who}")}, "Action": "kms:Encrypt", "Resource": "*"}
        ]})
        .to_string()
    };
    let out = env
        .call("CreateKey", json!({"Policy": policy("alice")}))
        .unwrap();
    let key = out["KeyMetadata"]["KeyId"].as_str().unwrap().to_owned();
    env.call_as(
        alice,
        "Encrypt",
        json!({"KeyId": key, "Plaintext": b64(b"x")}),
    )
    .unwrap();
    let allowed_her = env.keys.clone();
    env.call(
        "PutKeyPolicy",
        json!({"KeyId": key, "PolicyName": "default", "Policy": policy("bob")}),
    )
    .unwrap();
    let (c, _) = code(env.call_as(
        alice,
        "Encrypt",
        json!({"KeyId": key, "Plaintext": b64(b"x")}),
    ));
    assert_eq!(c, KmsErrorCode::AccessDeniedException);
    // The host shows the key record from before the policy changed: refused as stale.
    env.keys = allowed_her;
    assert!(matches!(
        env.call_as(
            alice,
            "Encrypt",
            json!({"KeyId": key, "Plaintext": b64(b"x")})
        ),
        Err(OpError::Stale)
    ));
}

#[test]
fn request_tags_tag_keys_and_resource_aliases_condition_the_call() {
    let mut env = Env::new();
    let policy = json!({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "kms:CreateKey", "Resource": "*",
         "Condition": {"StringEquals": {"aws:RequestTag/team": "a"}}},
        {"Effect": "Allow", "Action": "kms:TagResource", "Resource": "*",
         "Condition": {"ForAllValues:StringEquals": {"aws:TagKeys": ["team"]}}},
        {"Effect": "Allow", "Action": "kms:Encrypt", "Resource": "*",
         "Condition": {"ForAnyValue:StringEquals": {"kms:ResourceAliases": "alias/app"}}}
    ]});
    let (akid, secret) = make(&mut env, "alice", Some(policy));
    let alice = (akid.as_str(), secret.as_str());
    let tagged = |team: &str| json!({"Tags": [{"TagKey": "team", "TagValue": team}]});
    let out = env.call_as(alice, "CreateKey", tagged("a")).unwrap();
    let key = out["KeyMetadata"]["KeyId"].as_str().unwrap().to_owned();
    let (c, _) = code(env.call_as(alice, "CreateKey", tagged("b")));
    assert_eq!(c, KmsErrorCode::AccessDeniedException);
    let (c, _) = code(env.call_as(alice, "CreateKey", json!({})));
    assert_eq!(c, KmsErrorCode::AccessDeniedException);
    env.call_as(
        alice,
        "TagResource",
        json!({"KeyId": key, "Tags": [{"TagKey": "team", "TagValue": "b"}]}),
    )
    .unwrap();
    let (c, _) = code(env.call_as(
        alice,
        "TagResource",
        json!({"KeyId": key, "Tags": [{"TagKey": "owner", "TagValue": "x"}]}),
    ));
    assert_eq!(c, KmsErrorCode::AccessDeniedException);
    // Encrypt only through a key that has the alias.
    let enc = json!({"KeyId": key, "Plaintext": b64(b"x")});
    let (c, _) = code(env.call_as(alice, "Encrypt", enc.clone()));
    assert_eq!(c, KmsErrorCode::AccessDeniedException);
    env.call(
        "CreateAlias",
        json!({"AliasName": "alias/app", "TargetKeyId": key}),
    )
    .unwrap();
    env.call_as(alice, "Encrypt", enc).unwrap();
}

#[test]
fn tags_on_a_new_key_or_replica_need_tag_resource_too() {
    let mut env = Env::new();
    let (akid, secret) = make(
        &mut env,
        "maker",
        Some(allow(&[
            "kms:CreateKey",
            "kms:ReplicateKey",
            "kms:DescribeKey",
        ])),
    );
    let maker = (akid.as_str(), secret.as_str());
    let tags = json!([{"TagKey": "team", "TagValue": "a"}]);
    let (c, m) = code(env.call_as(maker, "CreateKey", json!({"Tags": tags})));
    assert_eq!(c, KmsErrorCode::AccessDeniedException);
    assert!(m.contains("kms:TagResource"), "{m}");
    let key = env
        .call_as(maker, "CreateKey", json!({"MultiRegion": true, "Tags": []}))
        .unwrap()["KeyMetadata"]["KeyId"]
        .as_str()
        .unwrap()
        .to_owned();
    let replicate = |tags: Value| json!({"KeyId": key, "ReplicaRegion": "eu-west-1", "Tags": tags});
    let (c, m) = code(env.call_as(maker, "ReplicateKey", replicate(tags.clone())));
    assert_eq!(c, KmsErrorCode::AccessDeniedException);
    assert!(m.contains("kms:TagResource"), "{m}");
    // Allowed to tag: both go through.
    let (akid, secret) = make(
        &mut env,
        "tagger",
        Some(allow(&[
            "kms:CreateKey",
            "kms:ReplicateKey",
            "kms:TagResource",
        ])),
    );
    let tagger = (akid.as_str(), secret.as_str());
    env.call_as(tagger, "CreateKey", json!({"Tags": tags}))
        .unwrap();
    env.call_as(tagger, "ReplicateKey", replicate(tags))
        .unwrap();
}

#[test]
fn time_conditions_read_the_enclave_clock() {
    let mut env = Env::new();
    // aws:CurrentTime and aws:EpochTime are set only when a policy mentions them (in any
    // case): both must be present and right here.
    let policy = json!({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "kms:Encrypt", "Resource": "*",
         "Condition": {
            "DateGreaterThan": {"aws:currentTime": "2020-01-01T00:00:00Z"},
            "NumericGreaterThan": {"AWS:EpochTime": "1577836800"},
            "Null": {"aws:EpochTime": "false", "aws:CurrentTime": "false"}}},
        {"Effect": "Allow", "Action": "kms:Decrypt", "Resource": "*",
         "Condition": {"DateLessThan": {"aws:CurrentTime": "2020-01-01T00:00:00Z"}}}
    ]});
    let (akid, secret) = make(&mut env, "alice", Some(policy));
    let alice = (akid.as_str(), secret.as_str());
    let key = env.call("CreateKey", json!({})).unwrap()["KeyMetadata"]["KeyId"]
        .as_str()
        .unwrap()
        .to_owned();
    let out = env
        .call_as(
            alice,
            "Encrypt",
            json!({"KeyId": key, "Plaintext": b64(b"x")}),
        )
        .unwrap();
    let (c, _) = code(env.call_as(
        alice,
        "Decrypt",
        json!({"CiphertextBlob": out["CiphertextBlob"]}),
    ));
    assert_eq!(c, KmsErrorCode::AccessDeniedException);
}
