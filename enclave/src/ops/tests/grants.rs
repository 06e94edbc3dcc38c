//! Grants: made, used (also by token, at once), narrowed, listed, retired and revoked; and the
//! host replaying, moving or hiding grant records.

use ekms_wire::msg::KmsErrorCode;
use serde_json::{Value, json};

use super::{
    Env, OpError,
    principals::{b64, make},
};

const ARN: &str = "arn:aws:iam::111122223333:user/";

fn code(r: Result<Value, OpError>) -> KmsErrorCode {
    match r {
        Err(OpError::Kms(e)) => e.code,
        other => panic!("expected an AWS error, got {other:?}"),
    }
}

fn encrypt(
    env: &mut Env,
    who: (&str, &str),
    key: &str,
    team: &str,
    extra: Value,
) -> Result<Value, OpError> {
    let mut body =
        json!({"KeyId": key, "Plaintext": b64(b"x"), "EncryptionContext": {"team": team}});
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        b.extend(e.clone());
    }
    env.call_as(who, "Encrypt", body)
}

fn grant(env: &mut Env, body: Value) -> (String, String) {
    let out = env.call("CreateGrant", body).unwrap();
    (
        out["GrantId"].as_str().unwrap().to_owned(),
        out["GrantToken"].as_str().unwrap().to_owned(),
    )
}

#[test]
fn a_grant_allows_its_grantee_within_its_constraints_and_revocation_holds() {
    let mut env = Env::new();
    let key = env.create();
    let (akid, secret) = make(&mut env, "app", None);
    let app = (akid.as_str(), secret.as_str());
    assert_eq!(
        code(encrypt(&mut env, app, &key, "a", json!({}))),
        KmsErrorCode::AccessDeniedException
    );
    let (id, token) = grant(
        &mut env,
        json!({"KeyId": key, "GranteePrincipal": format!("{ARN}app"), "RetiringPrincipal": format!("{ARN}admin"),
               "Operations": ["Encrypt", "Decrypt"],
               "Constraints": {"EncryptionContextSubset": {"team": "a"}}}),
    );
    assert_eq!(id.len(), 64);
    let blob = encrypt(&mut env, app, &key, "a", json!({})).unwrap()["CiphertextBlob"].clone();
    assert_eq!(
        code(encrypt(&mut env, app, &key, "b", json!({}))),
        KmsErrorCode::AccessDeniedException
    );
    env.call_as(
        app,
        "Decrypt",
        json!({"CiphertextBlob": blob, "EncryptionContext": {"team": "a"}}),
    )
    .unwrap();
    // Not an operation of the grant.
    assert_eq!(
        code(env.call_as(app, "DescribeKey", json!({"KeyId": key}))),
        KmsErrorCode::AccessDeniedException
    );
    // The token works at once, even when the host supplies no grant.
    let stored = std::mem::take(&mut env.grants);
    encrypt(&mut env, app, &key, "a", json!({"GrantTokens": [token]})).unwrap();
    env.grants = stored.clone();

    env.call("RevokeGrant", json!({"KeyId": key, "GrantId": id}))
        .unwrap();
    assert_eq!(
        code(encrypt(&mut env, app, &key, "a", json!({}))),
        KmsErrorCode::AccessDeniedException
    );
    // The host shows the revoked record again: refused (the host re-reads and has none).
    env.grants = stored;
    assert!(matches!(
        encrypt(&mut env, app, &key, "a", json!({})),
        Err(OpError::Stale)
    ));
    env.grants.clear();
    // The revoked grant's token no longer works either.
    assert_eq!(
        code(encrypt(
            &mut env,
            app,
            &key,
            "a",
            json!({"GrantTokens": [token]})
        )),
        KmsErrorCode::AccessDeniedException
    );
    assert_eq!(
        code(env.call("RevokeGrant", json!({"KeyId": key, "GrantId": id}))),
        KmsErrorCode::NotFoundException
    );
}

#[test]
fn a_grant_moved_to_another_key_or_altered_allows_nothing() {
    let mut env = Env::new();
    let a = env.create();
    let b = env.create();
    let (akid, secret) = make(&mut env, "app", None);
    let app = (akid.as_str(), secret.as_str());
    let (_, token) = grant(
        &mut env,
        json!({"KeyId": a, "GranteePrincipal": format!("{ARN}app"), "Operations": ["Encrypt"]}),
    );
    encrypt(&mut env, app, &a, "x", json!({})).unwrap();
    // The host offers key a's grant (and its token) for key b.
    assert_eq!(
        code(encrypt(
            &mut env,
            app,
            &b,
            "x",
            json!({"GrantTokens": [token]})
        )),
        KmsErrorCode::AccessDeniedException
    );
    // A flipped byte: not a grant any more (ignored), so nothing allows the call.
    let mut forged = env.grants[0].clone();
    let n = forged.0.len();
    forged.0[n - 1] ^= 1;
    env.grants = vec![forged];
    assert_eq!(
        code(encrypt(&mut env, app, &a, "x", json!({}))),
        KmsErrorCode::AccessDeniedException
    );
}

#[test]
fn a_grantee_may_only_narrow_its_grant_and_retire_what_it_may() {
    let mut env = Env::new();
    let key = env.create();
    let (akid, secret) = make(&mut env, "svc", None);
    let svc = (akid.as_str(), secret.as_str());
    let (bkid, bsecret) = make(&mut env, "worker", None);
    let worker = (bkid.as_str(), bsecret.as_str());
    grant(
        &mut env,
        json!({"KeyId": key, "GranteePrincipal": format!("{ARN}svc"),
               "Operations": ["Encrypt", "CreateGrant", "RetireGrant"],
               "Constraints": {"EncryptionContextSubset": {"team": "a"}}}),
    );
    let sub = |ops: Value, constraints: Value| {
        json!({"KeyId": key, "GranteePrincipal": format!("{ARN}worker"), "Operations": ops,
               "Constraints": constraints})
    };
    // Wider operations, or looser constraints: refused.
    let wider = env.call_as(
        svc,
        "CreateGrant",
        sub(
            json!(["Encrypt", "Decrypt"]),
            json!({"EncryptionContextSubset": {"team": "a"}}),
        ),
    );
    assert_eq!(code(wider), KmsErrorCode::AccessDeniedException);
    let looser = env.call_as(
        svc,
        "CreateGrant",
        sub(
            json!(["Encrypt"]),
            json!({"EncryptionContextSubset": {"other": "1"}}),
        ),
    );
    assert_eq!(code(looser), KmsErrorCode::AccessDeniedException);
    let out = env
        .call_as(
            svc,
            "CreateGrant",
            sub(
                json!(["Encrypt"]),
                json!({"EncryptionContextEquals": {"team": "a"}}),
            ),
        )
        .unwrap();
    let sub_id = out["GrantId"].as_str().unwrap().to_owned();
    encrypt(&mut env, worker, &key, "a", json!({})).unwrap();
    // The worker may not retire its grant (no RetireGrant in it, not its retiring principal).
    assert_eq!(
        code(env.call_as(
            worker,
            "RetireGrant",
            json!({"KeyId": key, "GrantId": sub_id})
        )),
        KmsErrorCode::AccessDeniedException
    );
    env.call("RetireGrant", json!({"KeyId": key, "GrantId": sub_id}))
        .unwrap();
    assert_eq!(
        code(encrypt(&mut env, worker, &key, "a", json!({}))),
        KmsErrorCode::AccessDeniedException
    );
}

#[test]
fn create_grant_checks_its_input_is_idempotent_by_name_and_honours_dry_run() {
    let mut env = Env::new();
    let key = env.create();
    let base = json!({"KeyId": key, "GranteePrincipal": format!("{ARN}x"), "Operations": ["Encrypt"], "Name": "n1"});
    let (id1, _) = grant(&mut env, base.clone());
    let (id2, token2) = grant(&mut env, base.clone());
    assert_eq!(id1, id2);
    assert!(!token2.is_empty());
    let mut dry = base.clone();
    dry["Name"] = json!("n2");
    dry["DryRun"] = json!(true);
    assert_eq!(
        code(env.call("CreateGrant", dry)),
        KmsErrorCode::DryRunOperationException
    );
    assert_eq!(env.grants.len(), 1);
    let mut bad = base.clone();
    bad["Operations"] = json!(["Sign"]);
    assert_eq!(
        code(env.call("CreateGrant", bad)),
        KmsErrorCode::ValidationException
    );
    bad = base.clone();
    bad["Operations"] = json!(["Frobnicate"]);
    assert_eq!(
        code(env.call("CreateGrant", bad)),
        KmsErrorCode::ValidationException
    );
    bad = base.clone();
    bad["Operations"] = json!(["DescribeKey"]);
    bad["Constraints"] = json!({"EncryptionContextEquals": {"a": "b"}});
    assert_eq!(
        code(env.call("CreateGrant", bad)),
        KmsErrorCode::ValidationException
    );
    bad = base;
    bad["GranteePrincipal"] = json!("alice");
    assert_eq!(
        code(env.call("CreateGrant", bad)),
        KmsErrorCode::ValidationException
    );
}

#[test]
fn listings_come_from_the_state_view() {
    let mut env = Env::new();
    let key = env.create();
    let mut ids = Vec::new();
    for who in ["a", "b", "c"] {
        ids.push(grant(
            &mut env,
            json!({"KeyId": key, "GranteePrincipal": format!("{ARN}{who}"), "RetiringPrincipal": format!("{ARN}r"), "Operations": ["Encrypt"]}),
        ).0);
    }
    ids.sort();
    let out = env
        .call("ListGrants", json!({"KeyId": key, "Limit": 2}))
        .unwrap();
    assert_eq!(out["Truncated"], true);
    let first: Vec<&str> = out["Grants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["GrantId"].as_str().unwrap())
        .collect();
    assert_eq!(first, [ids[0].as_str(), ids[1].as_str()]);
    let rest = env
        .call(
            "ListGrants",
            json!({"KeyId": key, "Marker": out["NextMarker"]}),
        )
        .unwrap();
    assert_eq!(rest["Grants"][0]["GrantId"], ids[2].as_str());
    let only_b = env
        .call(
            "ListGrants",
            json!({"KeyId": key, "GranteePrincipal": format!("{ARN}b")}),
        )
        .unwrap();
    assert_eq!(only_b["Grants"].as_array().unwrap().len(), 1);
    let retirable = env
        .call(
            "ListRetirableGrants",
            json!({"RetiringPrincipal": format!("{ARN}r")}),
        )
        .unwrap();
    assert_eq!(retirable["Grants"].as_array().unwrap().len(), 3);
    // The host hides one: refused.
    env.grants.pop();
    assert!(matches!(
        env.call("ListGrants", json!({"KeyId": key})),
        Err(OpError::Stale)
    ));
}
