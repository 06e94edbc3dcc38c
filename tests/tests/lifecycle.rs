//! Process lifecycle: restart persistence, a killed enclave, clean shutdown, no orphans.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::too_many_lines,
    clippy::format_push_string
)] // test code

mod common;

use std::time::Duration;

use aws_sdk_kms::primitives::Blob;
use common::admin;
use ekms_tests::{Appliance, alive, wait_until};

#[tokio::test(flavor = "multi_thread")]
async fn keys_survive_a_restart_and_the_credential_is_reused() {
    let dir = tempfile::tempdir().unwrap();
    let mut app = Appliance::start(dir.path());
    let kms = admin(&app);
    let id = kms
        .create_key()
        .send()
        .await
        .unwrap()
        .key_metadata
        .unwrap()
        .key_id()
        .to_owned();
    kms.create_alias()
        .alias_name("alias/keep")
        .target_key_id(&id)
        .send()
        .await
        .unwrap();
    let blob = kms
        .encrypt()
        .key_id("alias/keep")
        .plaintext(Blob::new(b"persist me".to_vec()))
        .send()
        .await
        .unwrap()
        .ciphertext_blob
        .unwrap();
    let enclaves = app.enclave_pids();
    assert_eq!(enclaves.len(), 1);
    assert!(app.terminate(), "ekms exits cleanly on SIGTERM");
    assert!(
        wait_until(Duration::from_secs(10), || enclaves
            .iter()
            .all(|p| !alive(*p))),
        "no orphan enclave"
    );

    let (ak, sk) = (app.access_key.clone(), app.secret_key.clone());
    let app = Appliance::start(dir.path());
    assert_eq!(
        (ak, sk),
        (app.access_key.clone(), app.secret_key.clone()),
        "the credential is kept"
    );
    let kms = admin(&app);
    let out = kms.decrypt().ciphertext_blob(blob).send().await.unwrap();
    assert_eq!(out.plaintext().unwrap().as_ref(), b"persist me");
    kms.describe_key()
        .key_id("alias/keep")
        .send()
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_enclave_is_restarted_and_service_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let app = Appliance::start(dir.path());
    let kms = admin(&app);
    let id = kms
        .create_key()
        .send()
        .await
        .unwrap()
        .key_metadata
        .unwrap()
        .key_id()
        .to_owned();
    let before = app.enclave_pids();
    assert_eq!(before.len(), 1);
    std::process::Command::new("kill")
        .args(["-KILL", &before[0].to_string()])
        .status()
        .unwrap();
    // Right after the kill a request may fail, but only with the retryable internal error.
    let raw = aws_sdk_kms::Client::from_conf(
        kms.config()
            .to_builder()
            .retry_config(aws_sdk_kms::config::retry::RetryConfig::disabled())
            .build(),
    );
    match raw
        .encrypt()
        .key_id(&id)
        .plaintext(Blob::new(b"x".to_vec()))
        .send()
        .await
    {
        Ok(_) => {}
        Err(e) => {
            let e = e.into_service_error();
            assert_eq!(
                aws_sdk_kms::error::ProvideErrorMetadata::code(&e),
                Some("KMSInternalException")
            );
        }
    }
    assert!(
        wait_until(Duration::from_secs(15), || {
            let now = app.enclave_pids();
            now.len() == 1 && now != before
        }),
        "the enclave is restarted"
    );
    // The SDK's own retries carry it over; service resumes with the same keys.
    let mut ok = false;
    for _ in 0..50 {
        if kms
            .encrypt()
            .key_id(&id)
            .plaintext(Blob::new(b"x".to_vec()))
            .send()
            .await
            .is_ok()
        {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ok, "service resumes after the enclave restarts");
}

#[test]
fn a_hard_killed_host_leaves_no_enclave_behind() {
    let dir = tempfile::tempdir().unwrap();
    let mut app = Appliance::start(dir.path());
    let enclaves = app.enclave_pids();
    assert_eq!(enclaves.len(), 1);
    app.kill_hard();
    assert!(
        wait_until(Duration::from_secs(10), || enclaves
            .iter()
            .all(|p| !alive(*p))),
        "the enclave exits when its parent dies"
    );
}
