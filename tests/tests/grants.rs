//! Grants end to end with aws-sdk-kms: the admin grants a least-privilege principal Encrypt and
//! Decrypt under an encryption-context constraint; the grantee uses it (also by its token),
//! lists and retires; a revoked grant's row put back into the store by the host allows nothing.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::too_many_lines
)] // test code

mod common;

use aws_sdk_kms::{
    error::ProvideErrorMetadata as _,
    primitives::Blob,
    types::{GrantConstraints, GrantOperation},
};
use common::{admin, client, new_key};
use ekms_tests::Appliance;

fn make_principal(app: &Appliance, name: &str) -> (String, String) {
    let out = common::principal(app, &["create", name]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    (
        v["AccessKeyId"].as_str().unwrap().to_owned(),
        v["SecretAccessKey"].as_str().unwrap().to_owned(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_grant_lets_its_grantee_in_until_retired_or_revoked() {
    let dir = tempfile::tempdir().unwrap();
    let app = Appliance::start(dir.path());
    let kms = admin(&app);
    let key = new_key(&kms).await;
    let (akid, secret) = make_principal(&app, "app");
    let app_kms = client(&app, &akid, &secret);
    let arn = "arn:aws:iam::111122223333:user/app";
    let encrypt = |team: &'static str| {
        let c = app_kms.clone();
        let key = key.clone();
        async move {
            c.encrypt()
                .key_id(&key)
                .plaintext(Blob::new(b"x".to_vec()))
                .encryption_context("team", team)
                .send()
                .await
        }
    };
    let e = encrypt("a").await.unwrap_err().into_service_error();
    assert_eq!(e.code(), Some("AccessDeniedException"));

    let made = kms
        .create_grant()
        .key_id(&key)
        .grantee_principal(arn)
        .retiring_principal(arn)
        .operations(GrantOperation::Encrypt)
        .operations(GrantOperation::Decrypt)
        .constraints(
            GrantConstraints::builder()
                .encryption_context_subset("team", "a")
                .build(),
        )
        .name("app-a")
        .send()
        .await
        .unwrap();
    let (grant_id, token) = (made.grant_id.unwrap(), made.grant_token.unwrap());
    let blob = encrypt("a").await.unwrap().ciphertext_blob.unwrap();
    let e = encrypt("b").await.unwrap_err().into_service_error();
    assert_eq!(e.code(), Some("AccessDeniedException"));
    let plain = app_kms
        .decrypt()
        .ciphertext_blob(blob.clone())
        .encryption_context("team", "a")
        .grant_tokens(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(plain.plaintext.unwrap().as_ref(), b"x");
    // The same name and parameters: the same grant. (A byte-identical request signed in the
    // same second would be a replay: wait for the next second.)
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let again = kms
        .create_grant()
        .key_id(&key)
        .grantee_principal(arn)
        .retiring_principal(arn)
        .operations(GrantOperation::Encrypt)
        .operations(GrantOperation::Decrypt)
        .constraints(
            GrantConstraints::builder()
                .encryption_context_subset("team", "a")
                .build(),
        )
        .name("app-a")
        .send()
        .await
        .unwrap();
    assert_eq!(again.grant_id.as_deref(), Some(grant_id.as_str()));
    let listed = kms.list_grants().key_id(&key).send().await.unwrap();
    let grants = listed.grants();
    assert_eq!(grants.len(), 1);
    assert_eq!(grants[0].grantee_principal(), Some(arn));
    assert_eq!(grants[0].name(), Some("app-a"));
    let retirable = kms
        .list_retirable_grants()
        .retiring_principal(arn)
        .send()
        .await
        .unwrap();
    assert_eq!(retirable.grants().len(), 1);

    // The grantee, its retiring principal, retires it by token; it allows nothing after.
    app_kms
        .retire_grant()
        .grant_token(&token)
        .send()
        .await
        .unwrap();
    let e = encrypt("a").await.unwrap_err().into_service_error();
    assert_eq!(e.code(), Some("AccessDeniedException"));

    // A second grant, revoked by the admin; the host then puts its row back: refused.
    let g2 = kms
        .create_grant()
        .key_id(&key)
        .grantee_principal(arn)
        .operations(GrantOperation::Encrypt)
        .send()
        .await
        .unwrap()
        .grant_id
        .unwrap();
    encrypt("z").await.unwrap();
    let db = || {
        rusqlite::Connection::open(app.data_dir.join(ekms_parent_host::store::STORE_FILE)).unwrap()
    };
    let row: (String, String, String, i64, Vec<u8>, String) = db()
        .query_row(
            "SELECT id, key_id, grant_id, generation, sealed, grantee FROM grants",
            [],
            |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                ))
            },
        )
        .unwrap();
    kms.revoke_grant()
        .key_id(&key)
        .grant_id(&g2)
        .send()
        .await
        .unwrap();
    let e = encrypt("z").await.unwrap_err().into_service_error();
    assert_eq!(e.code(), Some("AccessDeniedException"));
    db().execute(
        "INSERT INTO grants (id, key_id, grant_id, generation, sealed, grantee) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        rusqlite::params![row.0, row.1, row.2, row.3, row.4, row.5],
    )
    .unwrap();
    assert!(encrypt("z").await.is_err());
    // DryRun: allowed → DryRunOperationException, and nothing is made.
    let e = kms
        .create_grant()
        .key_id(&key)
        .grantee_principal(arn)
        .operations(GrantOperation::Encrypt)
        .dry_run(true)
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert_eq!(e.code(), Some("DryRunOperationException"));
}
