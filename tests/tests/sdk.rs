//! End to end with the official Rust SDK (`aws-sdk-kms`): every operation of the foundation and
//! its errors, against the real binaries.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::too_many_lines,
    clippy::format_push_string
)] // test code

mod common;

use aws_sdk_kms::{
    error::ProvideErrorMetadata,
    primitives::Blob,
    types::{DataKeySpec, Tag},
};
use common::{admin, client};
use ekms_tests::Appliance;

fn code<E: ProvideErrorMetadata>(e: &E) -> String {
    e.code().unwrap_or_default().to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn every_operation_works_through_the_sdk() {
    let dir = tempfile::tempdir().unwrap();
    let app = Appliance::start(dir.path());
    let kms = admin(&app);

    // CreateKey with tags, DescribeKey by id, ARN and alias.
    let md = kms
        .create_key()
        .description("app key")
        .tags(
            Tag::builder()
                .tag_key("team")
                .tag_value("a")
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap()
        .key_metadata
        .unwrap();
    let id = md.key_id().to_owned();
    let arn = md.arn().unwrap().to_owned();
    assert_eq!(arn, format!("arn:aws:kms:us-east-1:111122223333:key/{id}"));
    assert_eq!(md.key_state().unwrap().as_str(), "Enabled");
    kms.create_alias()
        .alias_name("alias/app")
        .target_key_id(&id)
        .send()
        .await
        .unwrap();
    for k in [
        id.as_str(),
        arn.as_str(),
        "alias/app",
        "arn:aws:kms:us-east-1:111122223333:alias/app",
    ] {
        let d = kms.describe_key().key_id(k).send().await.unwrap();
        assert_eq!(d.key_metadata().unwrap().key_id(), id);
    }

    // Encrypt/Decrypt with a context; Decrypt needs no KeyId.
    let enc = kms
        .encrypt()
        .key_id("alias/app")
        .plaintext(Blob::new(b"top secret".to_vec()))
        .encryption_context("purpose", "test")
        .send()
        .await
        .unwrap();
    assert_eq!(enc.key_id(), Some(arn.as_str()));
    let blob = enc.ciphertext_blob().unwrap().clone();
    let dec = kms
        .decrypt()
        .ciphertext_blob(blob.clone())
        .encryption_context("purpose", "test")
        .send()
        .await
        .unwrap();
    assert_eq!(dec.plaintext().unwrap().as_ref(), b"top secret");
    assert_eq!(dec.key_id(), Some(arn.as_str()));

    // Wrong context, garbage, truncated and tampered blobs: InvalidCiphertextException.
    let e = kms
        .decrypt()
        .ciphertext_blob(blob.clone())
        .encryption_context("purpose", "other")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e.into_service_error()), "InvalidCiphertextException");
    let raw = blob.as_ref().to_vec();
    let mut tampered = raw.clone();
    *tampered.last_mut().unwrap() ^= 1;
    for bad in [vec![7u8; 80], raw[..raw.len() - 5].to_vec(), tampered] {
        let e = kms
            .decrypt()
            .ciphertext_blob(Blob::new(bad))
            .encryption_context("purpose", "test")
            .send()
            .await
            .unwrap_err();
        assert_eq!(code(&e.into_service_error()), "InvalidCiphertextException");
    }

    // A second key: IncorrectKeyException, ReEncrypt.
    let other = kms
        .create_key()
        .send()
        .await
        .unwrap()
        .key_metadata
        .unwrap()
        .key_id()
        .to_owned();
    let e = kms
        .decrypt()
        .ciphertext_blob(blob.clone())
        .key_id(&other)
        .encryption_context("purpose", "test")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e.into_service_error()), "IncorrectKeyException");
    let re = kms
        .re_encrypt()
        .ciphertext_blob(blob.clone())
        .source_encryption_context("purpose", "test")
        .destination_key_id(&other)
        .send()
        .await
        .unwrap();
    assert_eq!(re.source_key_id(), Some(arn.as_str()));
    let dec = kms
        .decrypt()
        .ciphertext_blob(re.ciphertext_blob().unwrap().clone())
        .send()
        .await
        .unwrap();
    assert_eq!(dec.plaintext().unwrap().as_ref(), b"top secret");

    // Data keys and randomness.
    let dk = kms
        .generate_data_key()
        .key_id(&id)
        .key_spec(DataKeySpec::Aes256)
        .send()
        .await
        .unwrap();
    assert_eq!(dk.plaintext().unwrap().as_ref().len(), 32);
    let back = kms
        .decrypt()
        .ciphertext_blob(dk.ciphertext_blob().unwrap().clone())
        .send()
        .await
        .unwrap();
    assert_eq!(
        back.plaintext().unwrap().as_ref(),
        dk.plaintext().unwrap().as_ref()
    );
    let wp = kms
        .generate_data_key_without_plaintext()
        .key_id(&id)
        .number_of_bytes(64)
        .send()
        .await
        .unwrap();
    let back = kms
        .decrypt()
        .ciphertext_blob(wp.ciphertext_blob().unwrap().clone())
        .send()
        .await
        .unwrap();
    assert_eq!(back.plaintext().unwrap().as_ref().len(), 64);
    let r = kms
        .generate_random()
        .number_of_bytes(100)
        .send()
        .await
        .unwrap();
    assert_eq!(r.plaintext().unwrap().as_ref().len(), 100);
    let e = kms
        .generate_random()
        .number_of_bytes(1025)
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert_eq!(code(&e), "ValidationException");

    // Description, tags.
    kms.update_key_description()
        .key_id(&id)
        .description("renamed")
        .send()
        .await
        .unwrap();
    kms.tag_resource()
        .key_id(&id)
        .tags(
            Tag::builder()
                .tag_key("env")
                .tag_value("prod")
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    kms.untag_resource()
        .key_id(&id)
        .tag_keys("team")
        .send()
        .await
        .unwrap();
    let tags = kms.list_resource_tags().key_id(&id).send().await.unwrap();
    let tags: Vec<_> = tags
        .tags()
        .iter()
        .map(|t| (t.tag_key().to_owned(), t.tag_value().to_owned()))
        .collect();
    assert_eq!(tags, vec![("env".to_owned(), "prod".to_owned())]);
    let e = kms
        .tag_resource()
        .key_id(&id)
        .tags(
            Tag::builder()
                .tag_key("aws:x")
                .tag_value("1")
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e.into_service_error()), "TagException");
    assert_eq!(
        kms.describe_key()
            .key_id(&id)
            .send()
            .await
            .unwrap()
            .key_metadata()
            .unwrap()
            .description(),
        Some("renamed")
    );

    // Aliases: update, list, delete.
    kms.update_alias()
        .alias_name("alias/app")
        .target_key_id(&other)
        .send()
        .await
        .unwrap();
    let aliases = kms.list_aliases().send().await.unwrap();
    let a = aliases
        .aliases()
        .iter()
        .find(|a| a.alias_name() == Some("alias/app"))
        .unwrap();
    assert_eq!(a.target_key_id(), Some(other.as_str()));
    // Not the first CreateAlias again: within the same second that would be the same signed
    // request, which the enclave refuses as a replay.
    let e = kms
        .create_alias()
        .alias_name("alias/app")
        .target_key_id(&other)
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e.into_service_error()), "AlreadyExistsException");
    let e = kms
        .create_alias()
        .alias_name("nope")
        .target_key_id(&id)
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e.into_service_error()), "ValidationException");
    kms.delete_alias()
        .alias_name("alias/app")
        .send()
        .await
        .unwrap();
    let e = kms
        .describe_key()
        .key_id("alias/app")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e.into_service_error()), "NotFoundException");

    // ListKeys pages.
    let page = kms.list_keys().limit(1).send().await.unwrap();
    assert!(page.truncated());
    let next = kms
        .list_keys()
        .limit(1)
        .marker(page.next_marker().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(page.keys().len() + next.keys().len(), 2);
    assert_ne!(page.keys()[0].key_id(), next.keys()[0].key_id());
    assert!(!next.truncated());

    // States: Disabled, PendingDeletion, Cancel -> Disabled, Enable.
    kms.disable_key().key_id(&id).send().await.unwrap();
    let e = kms
        .encrypt()
        .key_id(&id)
        .plaintext(Blob::new(b"x".to_vec()))
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e.into_service_error()), "DisabledException");
    let e = kms
        .decrypt()
        .ciphertext_blob(blob.clone())
        .encryption_context("purpose", "test")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e.into_service_error()), "DisabledException");
    let s = kms
        .schedule_key_deletion()
        .key_id(&id)
        .pending_window_in_days(7)
        .send()
        .await
        .unwrap();
    assert_eq!(s.key_state().unwrap().as_str(), "PendingDeletion");
    let e = kms
        .encrypt()
        .key_id(&id)
        .plaintext(Blob::new(b"x".to_vec()))
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e.into_service_error()), "KMSInvalidStateException");
    let e = kms
        .schedule_key_deletion()
        .key_id(&other)
        .pending_window_in_days(31)
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e.into_service_error()), "ValidationException");
    kms.cancel_key_deletion().key_id(&id).send().await.unwrap();
    let d = kms.describe_key().key_id(&id).send().await.unwrap();
    assert_eq!(
        d.key_metadata().unwrap().key_state().unwrap().as_str(),
        "Disabled"
    );
    kms.enable_key().key_id(&id).send().await.unwrap();
    kms.encrypt()
        .key_id(&id)
        .plaintext(Blob::new(b"x".to_vec()))
        .send()
        .await
        .unwrap();

    // Not found, invalid id, unsupported operation.
    let e = kms
        .describe_key()
        .key_id("11111111-2222-3333-4444-555555555555")
        .send()
        .await
        .unwrap_err();
    let e = e.into_service_error();
    assert_eq!(code(&e), "NotFoundException");
    assert_eq!(
        e.message(),
        Some(
            "Key 'arn:aws:kms:us-east-1:111122223333:key/11111111-2222-3333-4444-555555555555' does not exist"
        )
    );
    let e = kms
        .describe_key()
        .key_id("fake-key-id")
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert_eq!(e.message(), Some("Invalid keyId 'fake-key-id'"));
    let e = kms.describe_custom_key_stores().send().await.unwrap_err();
    assert_eq!(
        code(&e.into_service_error()),
        "UnsupportedOperationException"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_credentials_get_aws_error_codes() {
    let dir = tempfile::tempdir().unwrap();
    let app = Appliance::start(dir.path());
    let wrong_secret = client(
        &app,
        &app.access_key,
        "0000000000000000000000000000000000000000",
    );
    let e = wrong_secret.list_keys().send().await.unwrap_err();
    assert_eq!(code(&e.into_service_error()), "InvalidSignatureException");
    let unknown = client(&app, "EKMSUNKNOWNKEY000000", &app.secret_key);
    let e = unknown.list_keys().send().await.unwrap_err();
    let e = e.into_service_error();
    assert_eq!(code(&e), "UnrecognizedClientException");
    assert_eq!(
        e.message(),
        Some("The security token included in the request is invalid.")
    );
}
