//! AWS's documented request limits, through the real `aws-sdk-kms`: each one is accepted at the
//! limit and refused with a `ValidationException` just past it.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::too_many_lines
)] // test code

mod common;

use aws_sdk_kms::{Client, error::ProvideErrorMetadata as _, primitives::Blob, types::Tag};
use common::{admin, new_key};
use ekms_tests::Appliance;

/// `n` characters of context: one key of 8 characters, the rest in values (two-byte
/// characters included, since characters, not bytes, count).
fn context_of(n: usize) -> Vec<(String, String)> {
    let mut out = vec![("tenant-é".to_owned(), "é".repeat(1000))];
    let mut left = n - 8 - 1000;
    let mut i = 0;
    while left > 0 {
        let key = format!("k{i:07}");
        let take = (left - key.chars().count()).min(2000);
        left -= key.chars().count() + take;
        out.push((key, "v".repeat(take)));
        i += 1;
    }
    out
}

async fn encrypt_with(kms: &Client, key: &str, ctx: &[(String, String)]) -> Result<Blob, String> {
    let mut req = kms
        .encrypt()
        .key_id(key)
        .plaintext(Blob::new(b"x".to_vec()));
    for (k, v) in ctx {
        req = req.encryption_context(k, v);
    }
    req.send()
        .await
        .map(|o| o.ciphertext_blob.unwrap())
        .map_err(|e| format!("{}: {}", e.code().unwrap_or("?"), e.message().unwrap_or("")))
}

fn refused<T: std::fmt::Debug>(r: Result<T, String>, what: &str) {
    let e = r.expect_err(what);
    assert!(e.starts_with("ValidationException"), "{what}: {e}");
}

#[tokio::test(flavor = "multi_thread")]
async fn every_documented_limit_holds_at_the_limit_and_refuses_past_it() {
    let dir = tempfile::tempdir().unwrap();
    let app = Appliance::start(dir.path());
    let kms = admin(&app);
    let key = new_key(&kms).await;

    // Encryption context: 8,192 characters, keys and values together.
    let at = context_of(8192);
    assert_eq!(
        at.iter()
            .map(|(k, v)| k.chars().count() + v.chars().count())
            .sum::<usize>(),
        8192
    );
    let blob = encrypt_with(&kms, &key, &at).await.unwrap();
    let mut dec = kms.decrypt().ciphertext_blob(blob);
    for (k, v) in &at {
        dec = dec.encryption_context(k, v);
    }
    dec.send().await.unwrap();
    let past = context_of(8193);
    let e = encrypt_with(&kms, &key, &past).await.unwrap_err();
    assert!(
        e.starts_with("ValidationException") && e.contains("8192"),
        "{e}"
    );
    // The same limit on every operation that takes a context.
    let mut gdk = kms.generate_data_key().key_id(&key).number_of_bytes(32);
    for (k, v) in &past {
        gdk = gdk.encryption_context(k, v);
    }
    refused(
        gdk.send()
            .await
            .map_err(|e| e.code().unwrap_or("?").to_owned()),
        "GenerateDataKey",
    );
    let mut pair = kms
        .generate_data_key_pair()
        .key_id(&key)
        .key_pair_spec(aws_sdk_kms::types::DataKeyPairSpec::EccNistP256);
    for (k, v) in &past {
        pair = pair.encryption_context(k, v);
    }
    refused(
        pair.send()
            .await
            .map_err(|e| e.code().unwrap_or("?").to_owned()),
        "GenerateDataKeyPair",
    );

    // Plaintext: 4,096 bytes.
    kms.encrypt()
        .key_id(&key)
        .plaintext(Blob::new(vec![7; 4096]))
        .send()
        .await
        .unwrap();
    refused(
        kms.encrypt()
            .key_id(&key)
            .plaintext(Blob::new(vec![7; 4097]))
            .send()
            .await
            .map_err(|e| e.code().unwrap_or("?").to_owned()),
        "plaintext 4097",
    );

    // GenerateRandom and GenerateDataKey: 1,024 bytes.
    kms.generate_random()
        .number_of_bytes(1024)
        .send()
        .await
        .unwrap();
    refused(
        kms.generate_random()
            .number_of_bytes(1025)
            .send()
            .await
            .map_err(|e| e.code().unwrap_or("?").to_owned()),
        "random 1025",
    );
    kms.generate_data_key()
        .key_id(&key)
        .number_of_bytes(1024)
        .send()
        .await
        .unwrap();
    refused(
        kms.generate_data_key()
            .key_id(&key)
            .number_of_bytes(1025)
            .send()
            .await
            .map_err(|e| e.code().unwrap_or("?").to_owned()),
        "data key 1025",
    );

    // Description: 8,192 characters.
    kms.create_key()
        .description("d".repeat(8192))
        .send()
        .await
        .unwrap();
    refused(
        kms.create_key()
            .description("d".repeat(8193))
            .send()
            .await
            .map_err(|e| e.code().unwrap_or("?").to_owned()),
        "description 8193",
    );

    // Tags: 50 per key; keys of 128 characters, values of 256.
    let tags = |n: usize, key_len: usize, value_len: usize| -> Vec<Tag> {
        (0..n)
            .map(|i| {
                let k = format!("{i:03}{}", "k".repeat(key_len - 3));
                Tag::builder()
                    .tag_key(k)
                    .tag_value("v".repeat(value_len))
                    .build()
                    .unwrap()
            })
            .collect()
    };
    kms.tag_resource()
        .key_id(&key)
        .set_tags(Some(tags(50, 128, 256)))
        .send()
        .await
        .unwrap();
    for (n, k, v, what) in [
        (51, 10, 10, "51 tags"),
        (1, 129, 10, "tag key 129"),
        (1, 10, 257, "tag value 257"),
    ] {
        let other = new_key(&kms).await;
        let r = kms
            .tag_resource()
            .key_id(&other)
            .set_tags(Some(tags(n, k, v)))
            .send()
            .await
            .map_err(|e| e.code().unwrap_or("?").to_owned());
        let e = r.expect_err(what);
        assert!(
            e == "ValidationException" || e == "TagException" || e == "LimitExceededException",
            "{what}: {e}"
        );
    }

    // Grant tokens: at most 10, each at most 8,192 characters (unknown tokens are ignored).
    let tokens =
        |n: usize, len: usize| -> Vec<String> { (0..n).map(|_| "t".repeat(len)).collect() };
    kms.encrypt()
        .key_id(&key)
        .plaintext(Blob::new(b"x".to_vec()))
        .set_grant_tokens(Some(tokens(10, 8192)))
        .send()
        .await
        .unwrap();
    for (n, len, what) in [(11, 10, "11 grant tokens"), (1, 8193, "a token of 8193")] {
        refused(
            kms.encrypt()
                .key_id(&key)
                .plaintext(Blob::new(b"x".to_vec()))
                .set_grant_tokens(Some(tokens(n, len)))
                .send()
                .await
                .map_err(|e| e.code().unwrap_or("?").to_owned()),
            what,
        );
    }

    // Alias names: 256 characters with the `alias/` prefix.
    let name = format!("alias/{}", "a".repeat(250));
    kms.create_alias()
        .alias_name(&name)
        .target_key_id(&key)
        .send()
        .await
        .unwrap();
    refused(
        kms.create_alias()
            .alias_name(format!("alias/{}", "a".repeat(251)))
            .target_key_id(&key)
            .send()
            .await
            .map_err(|e| e.code().unwrap_or("?").to_owned()),
        "alias 257",
    );
}
