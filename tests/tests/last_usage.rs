//! GetKeyLastUsage through the real `aws-sdk-kms`: a use is reported at once with the request id
//! the client was given, and survives a clean stop (the host writes usage back at shutdown) and
//! a crash after the write-back interval (`serve` writes it back every 10 seconds).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)] // test code

mod common;

use aws_sdk_kms::{
    Client, error::ProvideErrorMetadata as _, operation::RequestId as _,
    types::KeyLastUsageTrackingOperation as Op,
};
use common::{admin, new_key};
use ekms_tests::Appliance;

/// The last use of `key`: operation, time (Unix seconds) and request id, if any.
async fn last_use(kms: &Client, key: &str) -> Option<(Op, f64, String)> {
    let out = kms.get_key_last_usage().key_id(key).send().await.unwrap();
    assert_eq!(out.key_id(), Some(key));
    let created = out.key_creation_date().unwrap().as_secs_f64();
    let since = out.tracking_start_date().unwrap().as_secs_f64();
    // Keys made by this appliance are tracked from their creation.
    assert!((since - created).abs() < 0.001, "{since} vs {created}");
    let last = out.key_last_usage()?;
    assert!(last.cloud_trail_event_id().is_none());
    Some((
        last.operation().unwrap().clone(),
        last.timestamp().unwrap().as_secs_f64(),
        last.kms_request_id().unwrap().to_owned(),
    ))
}

/// Encrypts under `key`; the request id the appliance gave the response.
async fn encrypt(kms: &Client, key: &str) -> String {
    let out = kms
        .encrypt()
        .key_id(key)
        .plaintext(aws_sdk_kms::primitives::Blob::new(b"used".to_vec()))
        .send()
        .await
        .unwrap();
    out.request_id().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn last_usage_is_reported_and_survives_a_stop_and_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let mut app = Appliance::start(dir.path());
    let kms = admin(&app);
    let key = new_key(&kms).await;
    assert!(last_use(&kms, &key).await.is_none());

    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let request = encrypt(&kms, &key).await;
    let (op, at, id) = last_use(&kms, &key).await.unwrap();
    assert_eq!(op, Op::Encrypt);
    assert_eq!(id, request);
    assert!((at - before).abs() < 5.0, "{at} vs {before}");

    // An alias is not accepted, as in AWS.
    kms.create_alias()
        .alias_name("alias/used")
        .target_key_id(&key)
        .send()
        .await
        .unwrap();
    let e = kms
        .get_key_last_usage()
        .key_id("alias/used")
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert_eq!(e.code(), Some("NotFoundException"));

    // A clean stop writes usage back before the enclave goes.
    assert!(app.terminate());
    let mut app = Appliance::start(dir.path());
    let kms = admin(&app);
    assert_eq!(last_use(&kms, &key).await, Some((op, at, id)));

    // A crash loses at most what was not written back: after the interval, nothing.
    let request = encrypt(&kms, &key).await;
    tokio::time::sleep(std::time::Duration::from_secs(12)).await;
    app.kill_hard();
    drop(app);
    let app = Appliance::start(dir.path());
    let kms = admin(&app);
    let (op, _, id) = last_use(&kms, &key).await.unwrap();
    assert_eq!(op, Op::Encrypt);
    assert_eq!(id, request);
}
