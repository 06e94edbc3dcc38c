//! Key policies through aws-sdk-kms: AWS's default, a policy set at creation and replaced, each
//! read back byte for byte (Terraform compares them), malformed ones refused.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod common;

use aws_sdk_kms::error::ProvideErrorMetadata as _;
use common::admin;
use ekms_tests::Appliance;

#[tokio::test(flavor = "multi_thread")]
async fn key_policies_round_trip_exactly_and_malformed_ones_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let app = Appliance::start(dir.path());
    let kms = admin(&app);
    let policy = r#"{
  "Version": "2012-10-17",
  "Statement": [
    {"Sid": "root", "Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::111122223333:root"},
     "Action": "kms:*", "Resource": "*"},
    {"Sid": "app", "Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::111122223333:user/app"},
     "Action": ["kms:Encrypt", "kms:Decrypt"], "Resource": "*",
     "Condition": {"StringEquals": {"kms:EncryptionContext:app": "billing"}}}
  ]
}"#;
    let key = kms
        .create_key()
        .policy(policy)
        .send()
        .await
        .unwrap()
        .key_metadata
        .unwrap()
        .key_id;
    let got = kms.get_key_policy().key_id(&key).send().await.unwrap();
    assert_eq!(got.policy(), Some(policy));
    assert_eq!(got.policy_name(), Some("default"));
    let names = kms.list_key_policies().key_id(&key).send().await.unwrap();
    assert_eq!(names.policy_names(), ["default"]);

    let replaced = policy.replace("billing", "payroll");
    kms.put_key_policy()
        .key_id(&key)
        .policy(&replaced)
        .send()
        .await
        .unwrap();
    let got = kms.get_key_policy().key_id(&key).send().await.unwrap();
    assert_eq!(got.policy(), Some(replaced.as_str()));

    for bad in [
        "{}",
        r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"kms:*","Resource":"*"}]}"#,
        r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":"*","Action":"kms:*","Resource":"*","Bogus":1}]}"#,
    ] {
        let e = kms
            .put_key_policy()
            .key_id(&key)
            .policy(bad)
            .send()
            .await
            .unwrap_err()
            .into_service_error();
        assert_eq!(e.code(), Some("MalformedPolicyDocumentException"), "{bad}");
    }
    // A key made without a policy has AWS's default.
    let plain = common::new_key(&kms).await;
    let default = kms.get_key_policy().key_id(&plain).send().await.unwrap();
    let v: serde_json::Value = serde_json::from_str(default.policy().unwrap()).unwrap();
    assert_eq!(v["Statement"][0]["Action"], "kms:*");
    assert_eq!(
        v["Statement"][0]["Principal"]["AWS"],
        "arn:aws:iam::111122223333:root"
    );
}
