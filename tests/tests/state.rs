//! A hostile host against the enclave's view of the latest state, within one enclave life: it
//! shows the enclave an older copy of a record, the copy a deleted-and-re-created alias had, a
//! write it prepared but that lost a race, a list with a key left out, and doctored deletion
//! columns. It talks to the enclave directly on the vsock mock (as the host process can) with
//! requests signed by the real client, and reads old records out of SQLite. Every attempt is
//! refused; the honest path keeps working.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::too_many_lines
)] // test code

mod common;

use std::time::Duration;

use aws_sdk_kms::primitives::Blob;
use common::{admin, enclave_of, signed};
use ekms_tests::{Appliance, wait_until};
use ekms_wire::msg::{EnclaveResponse, Fault, HostRequest, KmsCall, KmsOutcome, SealedBlob};
use serde_json::json;

fn db(app: &Appliance) -> rusqlite::Connection {
    rusqlite::Connection::open(app.data_dir.join(ekms_parent_host::store::STORE_FILE)).unwrap()
}

fn key_record(app: &Appliance, key_id: &str) -> SealedBlob {
    SealedBlob(
        db(app)
            .query_row("SELECT sealed FROM keys WHERE key_id = ?1", [key_id], |r| {
                r.get(0)
            })
            .unwrap(),
    )
}

fn alias_record(app: &Appliance, name: &str) -> SealedBlob {
    SealedBlob(
        db(app)
            .query_row("SELECT sealed FROM aliases WHERE name = ?1", [name], |r| {
                r.get(0)
            })
            .unwrap(),
    )
}

fn principal(app: &Appliance) -> SealedBlob {
    SealedBlob(
        db(app)
            .query_row(
                "SELECT p.sealed FROM access_keys a JOIN principals p ON p.id = a.principal
                 WHERE a.access_key_id = ?1",
                [&app.access_key],
                |r| r.get(0),
            )
            .unwrap(),
    )
}

/// Sends a signed call with exactly the records the hostile host chose.
async fn hostile(
    app: &Appliance,
    cid: u32,
    op: &str,
    body: serde_json::Value,
    keys: Vec<SealedBlob>,
    aliases: Vec<SealedBlob>,
) -> EnclaveResponse {
    let call = KmsCall {
        http: signed(app, op, &body),
        principal: Some(principal(app)),
        keys,
        aliases,
        ..KmsCall::default()
    };
    enclave_of(app, cid)
        .call(&HostRequest::Kms(Box::new(call)))
        .await
        .unwrap()
}

/// Encrypt under `key_id` (an id or alias), with exactly the records the hostile host chose.
async fn encrypt_as_host(
    app: &Appliance,
    cid: u32,
    key_id: &str,
    keys: Vec<SealedBlob>,
    aliases: Vec<SealedBlob>,
) -> EnclaveResponse {
    let body = json!({"KeyId": key_id, "Plaintext": "eA=="});
    hostile(app, cid, "Encrypt", body, keys, aliases).await
}

fn is_stale(r: &EnclaveResponse) -> bool {
    matches!(r, EnclaveResponse::Fault(Fault::StaleRecord))
}

async fn create_key(kms: &aws_sdk_kms::Client) -> String {
    // Distinct requests: byte-identical state-changing calls in one second are one request to
    // the enclave (the SDK's throttling retry would sort it out, but slowly).
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    kms.create_key()
        .description(format!("state test key {n}"))
        .send()
        .await
        .unwrap()
        .key_metadata
        .unwrap()
        .key_id
}

#[tokio::test(flavor = "multi_thread")]
async fn an_old_alias_copy_is_refused_after_delete_and_recreate() {
    let dir = tempfile::tempdir().unwrap();
    let app = Appliance::start(dir.path());
    let kms = admin(&app);
    let (a, b) = (create_key(&kms).await, create_key(&kms).await);
    kms.create_alias()
        .alias_name("alias/app")
        .target_key_id(&a)
        .send()
        .await
        .unwrap();
    let old = alias_record(&app, "alias/app");
    kms.delete_alias()
        .alias_name("alias/app")
        .send()
        .await
        .unwrap();
    // The deletion left a sealed tombstone in the store.
    let tombstones: i64 = db(&app)
        .query_row(
            "SELECT COUNT(*) FROM tombstones WHERE id = '2:alias/app'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(tombstones, 1);
    // While deleted, the old copy does not resurrect it.
    let r = encrypt_as_host(
        &app,
        16,
        "alias/app",
        vec![key_record(&app, &a)],
        vec![old.clone()],
    )
    .await;
    assert!(is_stale(&r), "{r:?}");
    kms.create_alias()
        .alias_name("alias/app")
        .target_key_id(&b)
        .send()
        .await
        .unwrap();
    let new = alias_record(&app, "alias/app");
    let gen_of = |blob: &SealedBlob| -> i64 {
        db(&app)
            .query_row(
                "SELECT generation FROM aliases WHERE sealed = ?1",
                [&blob.0],
                |r| r.get(0),
            )
            .unwrap_or(-1)
    };
    assert!(gen_of(&new) > 0);
    // The host replays the alias's first life: refused, never encrypted under key a.
    let r = encrypt_as_host(&app, 16, "alias/app", vec![key_record(&app, &a)], vec![old]).await;
    assert!(is_stale(&r), "{r:?}");
    // Hiding the alias is refused too (not answered with NotFound).
    let r = encrypt_as_host(&app, 16, "alias/app", vec![], vec![]).await;
    assert!(is_stale(&r), "{r:?}");
    // The current copy works, through the host and directly.
    let r = encrypt_as_host(&app, 16, "alias/app", vec![key_record(&app, &b)], vec![new]).await;
    let EnclaveResponse::Kms(KmsOutcome::Ok { body, .. }) = r else {
        panic!("{r:?}")
    };
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert!(v["KeyId"].as_str().unwrap().ends_with(&b));
    let out = kms
        .encrypt()
        .key_id("alias/app")
        .plaintext(Blob::new(b"x".to_vec()))
        .send()
        .await
        .unwrap();
    assert!(out.key_id.unwrap().ends_with(&b));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_write_that_lost_the_race_and_older_copies_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let app = Appliance::start(dir.path());
    let kms = admin(&app);
    let k = create_key(&kms).await;
    let enabled = key_record(&app, &k);
    // The hostile host runs a delayed UpdateKeyDescription on the Enabled copy and holds its
    // write back...
    let r = hostile(
        &app,
        16,
        "UpdateKeyDescription",
        json!({"KeyId": k, "Description": "late"}),
        vec![enabled.clone()],
        vec![],
    )
    .await;
    let EnclaveResponse::Kms(KmsOutcome::Ok { writes, token, .. }) = r else {
        panic!("{r:?}")
    };
    let late = match &writes[0] {
        ekms_wire::msg::StoreWrite::PutKey { sealed, .. } => sealed.clone(),
        other => panic!("{other:?}"),
    };
    // ...while the client disables the key through the honest path.
    kms.disable_key().key_id(&k).send().await.unwrap();
    let disabled = key_record(&app, &k);
    // Committing the held write now is refused: it was prepared from a version that is gone.
    let enclave = enclave_of(&app, 16);
    let r = enclave
        .call(&HostRequest::Commit {
            tokens: vec![token],
        })
        .await
        .unwrap();
    assert!(is_stale(&r), "{r:?}");
    // Neither the Enabled copy it read nor the Enabled copy it wrote can be used.
    for copy in [enabled, late] {
        let r = encrypt_as_host(&app, 16, &k, vec![copy], vec![]).await;
        assert!(is_stale(&r), "{r:?}");
    }
    // A commit token never issued, or replayed, is refused too.
    let r = enclave
        .call(&HostRequest::Commit {
            tokens: vec![u64::MAX],
        })
        .await
        .unwrap();
    assert!(is_stale(&r), "{r:?}");
    // The current copy says Disabled.
    let r = encrypt_as_host(&app, 16, &k, vec![disabled], vec![]).await;
    let EnclaveResponse::Kms(KmsOutcome::Err { code, .. }) = r else {
        panic!("{r:?}")
    };
    assert_eq!(code.name(), "DisabledException");
    let e = kms
        .encrypt()
        .key_id(&k)
        .plaintext(Blob::new(b"x".to_vec()))
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert_eq!(
        aws_sdk_kms::error::ProvideErrorMetadata::code(&e),
        Some("DisabledException")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_listing_with_a_key_left_out_or_added_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let app = Appliance::start(dir.path());
    let kms = admin(&app);
    let mut ids = vec![
        create_key(&kms).await,
        create_key(&kms).await,
        create_key(&kms).await,
    ];
    ids.sort();
    let all: Vec<SealedBlob> = ids.iter().map(|k| key_record(&app, k)).collect();
    let r = hostile(&app, 16, "ListKeys", json!({}), all.clone(), vec![]).await;
    let EnclaveResponse::Kms(KmsOutcome::Ok { body, .. }) = r else {
        panic!("{r:?}")
    };
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["Keys"].as_array().unwrap().len(), 3);
    // One key left out of the page: refused rather than listed short.
    let r = hostile(&app, 16, "ListKeys", json!({}), all[1..].to_vec(), vec![]).await;
    assert!(is_stale(&r), "{r:?}");
    // A page of one, then the next page from the enclave's own marker.
    let r = hostile(
        &app,
        16,
        "ListKeys",
        json!({"Limit": 1}),
        all.clone(),
        vec![],
    )
    .await;
    let EnclaveResponse::Kms(KmsOutcome::Ok { body, .. }) = r else {
        panic!("{r:?}")
    };
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["Keys"][0]["KeyId"], ids[0]);
    assert_eq!(v["Truncated"], true);
    // Hiding a key from a single-key call is refused rather than answered NotFound.
    let r = hostile(
        &app,
        16,
        "DescribeKey",
        json!({"KeyId": ids[2]}),
        vec![],
        vec![],
    )
    .await;
    assert!(is_stale(&r), "{r:?}");
    // Through the honest host, pages add up to every key.
    let mut seen = Vec::new();
    let mut marker = None;
    loop {
        let out = kms
            .list_keys()
            .limit(2)
            .set_marker(marker.clone())
            .send()
            .await
            .unwrap();
        seen.extend(out.keys().iter().map(|k| k.key_id().unwrap().to_owned()));
        if !out.truncated() {
            break;
        }
        marker = out.next_marker;
    }
    assert_eq!(seen, ids);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_doctored_deletion_column_deletes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut app = Appliance::start(dir.path());
    let kms = admin(&app);
    let k = create_key(&kms).await;
    kms.create_alias()
        .alias_name("alias/kept")
        .target_key_id(&k)
        .send()
        .await
        .unwrap();
    // Whoever can write the database marks the key as due for deletion long ago.
    db(&app)
        .execute(
            "UPDATE keys SET state = 'PendingDeletion', deletion_date = 0 WHERE key_id = ?1",
            [&k],
        )
        .unwrap();
    // The enclave decides: the sealed state says Enabled, so nothing is deleted.
    let r = enclave_of(&app, 16)
        .call(&HostRequest::Sweep {
            keys: vec![key_record(&app, &k)],
        })
        .await
        .unwrap();
    let EnclaveResponse::Swept { writes, .. } = r else {
        panic!("{r:?}")
    };
    assert!(writes.is_empty());
    // The honest sweeper runs at start: restart, give it time, the key and alias are intact.
    assert!(app.terminate());
    let app = Appliance::start(dir.path());
    let kms = admin(&app);
    std::thread::sleep(Duration::from_secs(2));
    let d = kms.describe_key().key_id(&k).send().await.unwrap();
    assert_eq!(
        d.key_metadata.unwrap().key_state().unwrap().as_str(),
        "Enabled"
    );
    assert!(wait_until(Duration::from_secs(5), || {
        db(&app)
            .query_row("SELECT COUNT(*) FROM aliases", [], |r| r.get::<_, i64>(0))
            .unwrap()
            == 1
    }));
    kms.encrypt()
        .key_id("alias/kept")
        .plaintext(Blob::new(b"x".to_vec()))
        .send()
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_enclave_of_the_domain_serves_nothing_from_its_own_view() {
    let dir = tempfile::tempdir().unwrap();
    let first = Appliance::start(dir.path());
    let kms = admin(&first);
    let k = create_key(&kms).await;
    let enabled = key_record(&first, &k);
    let blob = kms
        .encrypt()
        .key_id(&k)
        .plaintext(Blob::new(b"fleet".to_vec()))
        .send()
        .await
        .unwrap()
        .ciphertext_blob
        .unwrap();
    // A second appliance on the same store gets the domain from the first by attestation...
    let second = Appliance::start_with(dir.path(), &["--sim-cid", "17", "--peer", &first.endpoint]);
    let second_enclave = enclave_of(&second, 17);
    let mut joined = false;
    for _ in 0..120 {
        if let Ok(EnclaveResponse::Status(s)) = second_enclave.call(&HostRequest::Status).await
            && s.follower
        {
            joined = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(joined, "the second enclave did not join");
    // ...and the client disables the key on the writer.
    kms.disable_key().key_id(&k).send().await.unwrap();
    // The hostile host shows the second enclave the Enabled copy: it serves no KMS call at all,
    // so there is no second view to roll back or fork.
    for copy in [enabled, key_record(&first, &k)] {
        let r = encrypt_as_host(&second, 17, &k, vec![copy], vec![]).await;
        assert!(
            matches!(r, EnclaveResponse::Fault(Fault::NotWriter)),
            "{r:?}"
        );
    }
    // A call another appliance already forwarded is not forwarded again (no loop between two
    // followers that each take the other for the writer).
    let (status, _, body) = ekms_parent_host::http_client::forward(
        &second.endpoint,
        &signed(&second, "DescribeKey", &json!({"KeyId": k})),
    )
    .await
    .unwrap();
    assert_eq!(status, 500);
    assert!(
        String::from_utf8_lossy(&body).contains("does not forward a forwarded call"),
        "{}",
        String::from_utf8_lossy(&body)
    );
    // The honest second host forwards calls, exactly as signed, to the writer.
    let via_second = admin(&second);
    let e = via_second
        .encrypt()
        .key_id(&k)
        .plaintext(Blob::new(b"x".to_vec()))
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert_eq!(
        aws_sdk_kms::error::ProvideErrorMetadata::code(&e),
        Some("DisabledException")
    );
    kms.enable_key().key_id(&k).send().await.unwrap();
    let plain = via_second
        .decrypt()
        .ciphertext_blob(blob)
        .send()
        .await
        .unwrap()
        .plaintext
        .unwrap();
    assert_eq!(plain.as_ref(), b"fleet");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_write_made_durable_but_never_committed_is_accepted_when_shown() {
    // A host that crashed between its store commit and its Commit, while the enclave (on Nitro)
    // kept running: the new host shows the durable record, and the enclave takes that as the
    // commit instead of refusing the record for good.
    let dir = tempfile::tempdir().unwrap();
    let app = Appliance::start(dir.path());
    let kms = admin(&app);
    let k = create_key(&kms).await;
    let before = key_record(&app, &k);
    let r = hostile(
        &app,
        16,
        "DisableKey",
        json!({"KeyId": k}),
        vec![before.clone()],
        vec![],
    )
    .await;
    let EnclaveResponse::Kms(KmsOutcome::Ok { writes, token, .. }) = r else {
        panic!("{r:?}")
    };
    let disabled = match &writes[0] {
        ekms_wire::msg::StoreWrite::PutKey { sealed, .. } => sealed.clone(),
        other => panic!("{other:?}"),
    };
    // Shown before any Commit: the Disabled copy is the state now...
    let r = encrypt_as_host(&app, 16, &k, vec![disabled], vec![]).await;
    let EnclaveResponse::Kms(KmsOutcome::Err { code, .. }) = r else {
        panic!("{r:?}")
    };
    assert_eq!(code.name(), "DisabledException");
    // ...the Enabled copy is refused from now on, and the late Commit still succeeds once.
    let r = encrypt_as_host(&app, 16, &k, vec![before], vec![]).await;
    assert!(is_stale(&r), "{r:?}");
    let enclave = enclave_of(&app, 16);
    let r = enclave
        .call(&HostRequest::Commit {
            tokens: vec![token],
        })
        .await
        .unwrap();
    assert!(matches!(r, EnclaveResponse::Committed), "{r:?}");
    let r = enclave
        .call(&HostRequest::Commit {
            tokens: vec![token],
        })
        .await
        .unwrap();
    assert!(is_stale(&r), "{r:?}");
}
