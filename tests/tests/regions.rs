//! Regions end to end, with `aws-sdk-kms` and the aws CLI: an appliance serving two regions
//! keeps their keys and aliases apart, carries the region in every ARN, refuses a region it
//! does not serve, and keeps it all across a restart.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::too_many_lines
)] // test code

mod common;

use std::process::Command;

use aws_sdk_kms::{Client, error::ProvideErrorMetadata};
use common::client_in;
use ekms_tests::{Appliance, tools_required};

const REGIONS: [&str; 2] = ["--regions", "us-east-1,eu-west-1"];

fn kms(app: &Appliance, region: &str) -> Client {
    client_in(app, region, (&app.access_key, &app.secret_key))
}

async fn key_arns(kms: &Client) -> Vec<String> {
    kms.list_keys()
        .send()
        .await
        .unwrap()
        .keys()
        .iter()
        .map(|k| k.key_arn().unwrap().to_owned())
        .collect()
}

async fn alias_target(kms: &Client, alias: &str) -> String {
    kms.describe_key()
        .key_id(alias)
        .send()
        .await
        .unwrap()
        .key_metadata
        .unwrap()
        .key_id
}

#[tokio::test(flavor = "multi_thread")]
async fn two_regions_keep_their_keys_and_aliases_apart_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut app = Appliance::start_with(dir.path(), &REGIONS);
    let (us, eu) = (kms(&app, "us-east-1"), kms(&app, "eu-west-1"));
    let mut ids = Vec::new();
    for (region, c) in [("us-east-1", &us), ("eu-west-1", &eu)] {
        let md = c.create_key().send().await.unwrap().key_metadata.unwrap();
        assert_eq!(
            md.arn().unwrap(),
            format!("arn:aws:kms:{region}:111122223333:key/{}", md.key_id())
        );
        c.create_alias()
            .alias_name("alias/app")
            .target_key_id(md.key_id())
            .send()
            .await
            .unwrap();
        ids.push(md.key_id().to_owned());
    }
    let (us_id, eu_id) = (&ids[0], &ids[1]);
    assert_eq!(
        key_arns(&eu).await,
        vec![format!("arn:aws:kms:eu-west-1:111122223333:key/{eu_id}")]
    );
    let e = eu
        .describe_key()
        .key_id(us_id)
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert_eq!(e.code(), Some("NotFoundException"));
    // A region the appliance does not serve: refused at the signature.
    let e = kms(&app, "ap-south-1")
        .list_keys()
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert_eq!(e.code(), Some("InvalidSignatureException"), "{e:?}");
    assert!(
        e.message()
            .unwrap_or_default()
            .contains("Credential should be scoped to a valid region"),
        "{e:?}"
    );

    // The aws CLI, as an operator would use it, sees the same.
    if cli_available() {
        let out = Command::new("aws")
            .args(["--endpoint-url", &app.endpoint, "--profile", "ekms"])
            .args(["--region", "eu-west-1", "--output", "json"])
            .args(["kms", "list-aliases"])
            .env(
                "AWS_SHARED_CREDENTIALS_FILE",
                app.data_dir.join("credentials"),
            )
            .env("AWS_CONFIG_FILE", app.data_dir.join("config"))
            .env_remove("AWS_ACCESS_KEY_ID")
            .env_remove("AWS_SECRET_ACCESS_KEY")
            .env_remove("AWS_PROFILE")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["Aliases"].as_array().unwrap().len(), 1);
        assert_eq!(
            v["Aliases"][0]["AliasArn"],
            "arn:aws:kms:eu-west-1:111122223333:alias/app"
        );
        assert_eq!(v["Aliases"][0]["TargetKeyId"], eu_id.as_str());
    }

    // A multi-Region key: replicated to eu-west-1, one material across both.
    let mrk = us
        .create_key()
        .multi_region(true)
        .send()
        .await
        .unwrap()
        .key_metadata
        .unwrap()
        .key_id;
    assert!(mrk.starts_with("mrk-"), "{mrk}");
    let replica = us
        .replicate_key()
        .key_id(&mrk)
        .replica_region("eu-west-1")
        .send()
        .await
        .unwrap()
        .replica_key_metadata
        .unwrap();
    assert_eq!(
        replica.arn().unwrap(),
        format!("arn:aws:kms:eu-west-1:111122223333:key/{mrk}")
    );
    let config = eu
        .describe_key()
        .key_id(&mrk)
        .send()
        .await
        .unwrap()
        .key_metadata
        .unwrap()
        .multi_region_configuration
        .unwrap();
    assert_eq!(config.multi_region_key_type().unwrap().as_str(), "REPLICA");
    assert_eq!(config.primary_key().unwrap().region(), Some("us-east-1"));
    let mrk_blob = common::encrypt(&us, &mrk, b"across regions").await;
    assert_eq!(
        common::decrypt(&eu, mrk_blob.clone()).await,
        b"across regions"
    );
    // Each replica has its own last use (AWS tracks them apart), before and after a restart.
    let last_op = |client: &aws_sdk_kms::Client| {
        let (client, mrk) = (client.clone(), mrk.clone());
        async move {
            client
                .get_key_last_usage()
                .key_id(&mrk)
                .send()
                .await
                .unwrap()
                .key_last_usage
                .and_then(|u| u.operation)
                .map(|o| o.as_str().to_owned())
        }
    };
    assert_eq!(last_op(&us).await.as_deref(), Some("Encrypt"));
    assert_eq!(last_op(&eu).await.as_deref(), Some("Decrypt"));

    // After a restart, each region's alias still names its own key.
    assert!(app.terminate());
    let app = Appliance::start_with(dir.path(), &REGIONS);
    let (us, eu) = (kms(&app, "us-east-1"), kms(&app, "eu-west-1"));
    assert_eq!(&alias_target(&us, "alias/app").await, us_id);
    assert_eq!(&alias_target(&eu, "alias/app").await, eu_id);
    let blob = common::encrypt(&eu, "alias/app", b"hello").await;
    assert_eq!(common::decrypt(&eu, blob).await, b"hello");
    // Written back at shutdown, read back from the store per replica.
    assert_eq!(last_op(&us).await.as_deref(), Some("Encrypt"));
    assert_eq!(last_op(&eu).await.as_deref(), Some("Decrypt"));
    assert_eq!(common::decrypt(&eu, mrk_blob).await, b"across regions");
}

fn cli_available() -> bool {
    let ok = Command::new("aws")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(ok || !tools_required(), "aws is required in CI");
    ok
}
