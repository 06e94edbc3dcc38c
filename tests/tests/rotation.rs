//! Key material rotation through the real `aws-sdk-kms`, across restarts of the appliance: the
//! schedule, the rotations and every earlier material survive in the sealed record; keys that
//! fell due while it was down rotate as soon as it serves (its simulated enclave's clock set
//! ahead); a crash in the middle of rotations loses no acknowledged one.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::too_many_lines
)] // test code

mod common;

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use aws_sdk_kms::{
    Client,
    error::ProvideErrorMetadata as _,
    primitives::Blob,
    types::{IncludeKeyMaterial, RotationType},
};
use common::{admin, decrypt, encrypt, new_key};
use ekms_tests::Appliance;

async fn current_material(kms: &Client, key: &str) -> String {
    kms.describe_key()
        .key_id(key)
        .send()
        .await
        .unwrap()
        .key_metadata
        .unwrap()
        .current_key_material_id
        .unwrap()
}

async fn rotations(kms: &Client, key: &str) -> Vec<aws_sdk_kms::types::RotationsListEntry> {
    kms.list_key_rotations()
        .key_id(key)
        .include_key_material(IncludeKeyMaterial::AllKeyMaterial)
        .send()
        .await
        .unwrap()
        .rotations
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn rotations_and_old_ciphertexts_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut app = Appliance::start(dir.path());
    let kms = admin(&app);
    let key = new_key(&kms).await;
    kms.enable_key_rotation()
        .key_id(&key)
        .rotation_period_in_days(90)
        .send()
        .await
        .unwrap();
    let status = kms
        .get_key_rotation_status()
        .key_id(&key)
        .send()
        .await
        .unwrap();
    assert!(status.key_rotation_enabled);
    assert_eq!(status.rotation_period_in_days, Some(90));
    let next = status.next_rotation_date.unwrap().secs();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let now = i64::try_from(now).unwrap();
    assert!((next - now - 90 * 86_400).abs() < 120, "{next} vs {now}");

    let mut blobs = Vec::new();
    let mut materials = Vec::new();
    for i in 0..4u8 {
        if i > 0 {
            // Two equal requests signed in the same second are one request (replay refusal).
            tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
            let out = kms
                .rotate_key_on_demand()
                .key_id(&key)
                .send()
                .await
                .unwrap();
            assert!(out.key_id.unwrap().ends_with(&key));
        }
        materials.push(current_material(&kms, &key).await);
        blobs.push(encrypt(&kms, &key, &[i; 20]).await);
    }
    let before = rotations(&kms, &key).await;
    assert_eq!(before.len(), 4);
    assert!(before[0].rotation_type.is_none());
    assert!(
        before[1..]
            .iter()
            .all(|r| r.rotation_type == Some(RotationType::OnDemand))
    );

    assert!(app.terminate());
    let app = Appliance::start(dir.path());
    let kms = admin(&app);
    for (i, blob) in blobs.into_iter().enumerate() {
        let out = kms
            .decrypt()
            .ciphertext_blob(blob.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(out.key_material_id.as_deref(), Some(materials[i].as_str()));
        assert_eq!(
            decrypt(&kms, blob).await,
            vec![u8::try_from(i).unwrap(); 20]
        );
    }
    assert_eq!(current_material(&kms, &key).await, materials[3]);
    let after = rotations(&kms, &key).await;
    assert_eq!(
        after
            .iter()
            .map(|r| r.key_material_id.clone().unwrap())
            .collect::<Vec<_>>(),
        materials
    );
    let status = kms
        .get_key_rotation_status()
        .key_id(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(status.rotation_period_in_days, Some(90));
    assert_eq!(status.next_rotation_date.unwrap().secs(), next);
    // A bad period gets AWS's validation message through the SDK.
    let e = kms
        .enable_key_rotation()
        .key_id(&key)
        .rotation_period_in_days(3000)
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert_eq!(e.code(), Some("ValidationException"));
}

fn unix_now() -> i64 {
    i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    )
    .unwrap()
}

const DAY: i64 = 86_400;

/// Polls until `key` has an AUTOMATIC rotation; how long that took.
async fn until_rotated_automatically(kms: &Client, key: &str, within: Duration) -> Duration {
    let start = Instant::now();
    loop {
        if rotations(kms, key)
            .await
            .iter()
            .any(|r| r.rotation_type == Some(RotationType::Automatic))
        {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < within,
            "{key} did not rotate within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Issue 11: "after a restart, keys that fell due while the appliance was down rotate
/// promptly", by the enclave's clock. The appliance comes back with its simulated enclave 91 days
/// ahead (`--sim-clock-offset-days`, simulation only): the host's first rotation pass, as soon as
/// the enclave serves, rotates the 90-day key and leaves the 180-day one alone.
#[tokio::test(flavor = "multi_thread")]
async fn keys_that_fell_due_while_down_rotate_promptly_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut app = Appliance::start(dir.path());
    let kms = admin(&app);
    let due = new_key(&kms).await;
    let later = new_key(&kms).await;
    for (key, days) in [(&due, 90), (&later, 180)] {
        kms.enable_key_rotation()
            .key_id(key)
            .rotation_period_in_days(days)
            .send()
            .await
            .unwrap();
        // What Terraform reads back after enabling: what it set.
        let status = kms
            .get_key_rotation_status()
            .key_id(key)
            .send()
            .await
            .unwrap();
        assert!(status.key_rotation_enabled);
        assert_eq!(status.rotation_period_in_days, Some(days));
    }
    let first = current_material(&kms, &due).await;
    let blob = encrypt(&kms, &due, b"from before the restart").await;
    assert!(app.terminate());

    let app = Appliance::start_with(dir.path(), &["--sim-clock-offset-days", "91"]);
    let kms = admin(&app);
    let took = until_rotated_automatically(&kms, &due, Duration::from_secs(20)).await;
    // The first pass runs when the enclave serves, not a minute later.
    assert!(took < Duration::from_secs(10), "{took:?}");
    let output = String::from_utf8_lossy(&app.output()).into_owned();
    assert!(output.contains("SIMULATION CLOCK"), "{output}");
    assert!(output.contains("91 days AHEAD"), "{output}");

    let list = rotations(&kms, &due).await;
    assert_eq!(list.len(), 2);
    assert_eq!(list[1].rotation_type, Some(RotationType::Automatic));
    let second = list[1].key_material_id.clone().unwrap();
    assert_ne!(second, first);
    assert_eq!(current_material(&kms, &due).await, second);
    // Dated by the enclave's clock, and the next one a period after it.
    let rotated = list[1].rotation_date.unwrap().secs();
    assert!((rotated - unix_now() - 91 * DAY).abs() < 120, "{rotated}");
    let status = kms
        .get_key_rotation_status()
        .key_id(&due)
        .send()
        .await
        .unwrap();
    assert_eq!(status.rotation_period_in_days, Some(90));
    assert_eq!(
        status.next_rotation_date.unwrap().secs(),
        rotated + 90 * DAY
    );
    let out = kms.decrypt().ciphertext_blob(blob).send().await.unwrap();
    assert_eq!(out.key_material_id.as_deref(), Some(first.as_str()));
    assert_eq!(out.plaintext.unwrap().as_ref(), b"from before the restart");
    // The 180-day key is not due at day 91.
    assert_eq!(rotations(&kms, &later).await.len(), 1);
}

/// Issue 11: "a restart in the middle of a rotation loses nothing". The appliance comes back
/// with 120 keys due (more than one rotation batch) while clients rotate on demand and encrypt;
/// host and enclave are killed together (SIGKILL) right after the first round of
/// RotateKeyOnDemand is acknowledged, while the start's rotation pass runs. After the next start every acknowledged rotation is there, every key rotated
/// automatically exactly once, and every acknowledged ciphertext decrypts.
#[tokio::test(flavor = "multi_thread")]
async fn a_crash_during_rotations_loses_no_acknowledged_rotation() {
    const KEYS: usize = 120;
    const BUSY: usize = 8;
    let dir = tempfile::tempdir().unwrap();
    let mut app = Appliance::start(dir.path());
    let kms = admin(&app);
    let mut keys = Vec::new();
    for i in 0..KEYS {
        // Distinct bodies: equal requests signed in the same second are one request.
        let key = kms
            .create_key()
            .description(format!("key {i}"))
            .send()
            .await
            .unwrap()
            .key_metadata
            .unwrap()
            .key_id;
        kms.enable_key_rotation()
            .key_id(&key)
            .rotation_period_in_days(90)
            .send()
            .await
            .unwrap();
        keys.push(key);
    }
    let mut blobs = Vec::new();
    for key in &keys[..BUSY] {
        blobs.push((
            key.clone(),
            b"before".to_vec(),
            encrypt(&kms, key, b"before").await,
        ));
    }
    assert!(app.terminate());

    // Clients rotate and encrypt on BUSY keys while the start's automatic rotations run.
    let mut app = Appliance::start_with(dir.path(), &["--sim-clock-offset-days", "91"]);
    let kms = admin(&app);
    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    let sealed = Arc::new(Mutex::new(Vec::new()));
    let (kill_tx, mut kill_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let mut tasks = Vec::new();
    for (i, key) in keys[..BUSY].iter().cloned().enumerate() {
        let (kms, acked, sealed, kill) = (
            kms.clone(),
            Arc::clone(&acked),
            Arc::clone(&sealed),
            kill_tx.clone(),
        );
        tasks.push(tokio::spawn(async move {
            for round in 0u8.. {
                if kms
                    .rotate_key_on_demand()
                    .key_id(&key)
                    .send()
                    .await
                    .is_err()
                {
                    return;
                }
                let total = {
                    let mut a = acked.lock().unwrap();
                    a.push(key.clone());
                    a.len()
                };
                if total == BUSY {
                    let _ = kill.send(());
                }
                let plain = vec![u8::try_from(i).unwrap(), round];
                let Ok(out) = kms
                    .encrypt()
                    .key_id(&key)
                    .plaintext(Blob::new(plain.clone()))
                    .send()
                    .await
                else {
                    return;
                };
                sealed
                    .lock()
                    .unwrap()
                    .push((key.clone(), plain, out.ciphertext_blob.unwrap()));
                // Two equal requests signed in the same second are one (replay refusal).
                tokio::time::sleep(Duration::from_millis(1050)).await;
            }
        }));
    }
    tokio::time::timeout(Duration::from_secs(60), kill_rx.recv())
        .await
        .unwrap();
    app.kill_all_hard();
    for t in tasks {
        t.abort();
    }
    // Where the crash fell in the start's automatic rotations (the host's index, for the log).
    let store =
        rusqlite::Connection::open(dir.path().join(ekms_parent_host::store::STORE_FILE)).unwrap();
    let pending: i64 = store
        .query_row(
            "SELECT COUNT(*) FROM keys WHERE rotation_date <= ?1",
            [unix_now() + 91 * DAY],
            |r| r.get(0),
        )
        .unwrap();
    eprintln!("killed with {pending} of {KEYS} keys still due");
    drop(store);
    let acked = acked.lock().unwrap().clone();
    blobs.extend(sealed.lock().unwrap().drain(..));

    let app = Appliance::start_with(dir.path(), &["--sim-clock-offset-days", "91"]);
    let kms = admin(&app);
    // Keys whose rotation the crash cut off rotate at this start.
    until_rotated_automatically(&kms, keys.last().unwrap(), Duration::from_secs(20)).await;
    for key in &keys {
        let list = rotations(&kms, key).await;
        let automatic = list
            .iter()
            .filter(|r| r.rotation_type == Some(RotationType::Automatic))
            .count();
        let on_demand = list
            .iter()
            .filter(|r| r.rotation_type == Some(RotationType::OnDemand))
            .count();
        let acks = acked.iter().filter(|k| *k == key).count();
        assert_eq!(automatic, 1, "{key}: {list:?}");
        // An acknowledged rotation is durable; one cut off unacknowledged may or may not be.
        assert!(
            on_demand >= acks,
            "{key}: {on_demand} < {acks} acknowledged"
        );
        assert!(on_demand <= acks + 1, "{key}: {on_demand} > {acks} + 1");
        assert_eq!(
            list.last().unwrap().key_material_id,
            Some(current_material(&kms, key).await)
        );
    }
    for (key, plain, blob) in blobs {
        assert_eq!(decrypt(&kms, blob).await, plain, "{key}");
    }
}

/// The clock offset exists only in simulation: neither binary takes it for a real enclave.
#[test]
fn the_clock_offset_is_refused_outside_simulation() {
    let dir = tempfile::tempdir().unwrap();
    let host = common::ekms(&[
        "serve",
        "--enclave-cid",
        "16",
        "--sim-clock-offset-days",
        "91",
        "--data-dir",
        dir.path().to_str().unwrap(),
    ]);
    assert!(!host.status.success());
    // Refused before it touches anything.
    assert!(std::fs::read_dir(dir.path()).unwrap().next().is_none());
    assert!(
        common::text(&host).contains("--sim"),
        "{}",
        common::text(&host)
    );
    let enclave = std::process::Command::new(ekms_tests::bin_dir().join("ekms-enclave"))
        .args(["--sim-clock-offset-days", "91"])
        .output()
        .unwrap();
    assert!(!enclave.status.success());
    let text = common::text(&enclave);
    assert!(text.contains("--mock-vsock-dir"), "{text}");
}
