//! Key material rotation through the real `aws-sdk-kms`, across a restart of the appliance:
//! the schedule, the rotations and every earlier material survive in the sealed record.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)] // test code

mod common;

use aws_sdk_kms::{
    Client,
    error::ProvideErrorMetadata as _,
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
