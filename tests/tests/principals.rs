//! Least-privilege principals end to end: `ekms principal` makes them (the secret verified and
//! opened by the CLI, never seen by the host), and three real clients use them under a key
//! policy and identity policies: aws-sdk-kms, boto3 and the aws CLI. Then rotation, a narrowed
//! policy, deletion, and a host that puts old principal rows back into its store.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::too_many_lines
)] // test code

mod common;

use std::{
    os::unix::fs::PermissionsExt as _,
    path::Path,
    process::{Command, Output},
};

use aws_sdk_kms::{error::ProvideErrorMetadata as _, primitives::Blob};
use common::{admin, client, principal};
use ekms_tests::{Appliance, bin_dir, have};
use serde_json::{Value, json};

fn ok(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "ekms principal failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
}

fn write_json(dir: &Path, name: &str, v: &Value) -> String {
    let p = dir.join(name);
    std::fs::write(&p, v.to_string()).unwrap();
    p.to_str().unwrap().to_owned()
}

/// boto3 as `(akid, secret)`: Decrypt `blob` with encryption context `app`; the error code, or
/// "OK".
fn boto3_decrypt(app: &Appliance, who: (&str, &str), blob: &[u8], ctx: &str) -> String {
    use base64::Engine as _;
    let script = r#"
import sys, base64, boto3, botocore
endpoint, akid, secret, blob, app = sys.argv[1:]
kms = boto3.client("kms", endpoint_url=endpoint, region_name="us-east-1",
                   aws_access_key_id=akid, aws_secret_access_key=secret)
try:
    kms.decrypt(CiphertextBlob=base64.b64decode(blob), EncryptionContext={"app": app})
    print("OK")
except botocore.exceptions.ClientError as e:
    print(e.response["Error"]["Code"])
"#;
    let out = Command::new("python3")
        .args(["-c", script, &app.endpoint, who.0, who.1])
        .arg(base64::engine::general_purpose::STANDARD.encode(blob))
        .arg(ctx)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// The aws CLI as `(akid, secret)`: `kms ARGS…`.
fn aws_cli(app: &Appliance, who: (&str, &str), args: &[&str]) -> Output {
    Command::new("aws")
        .args(["--endpoint-url", &app.endpoint, "--region", "us-east-1"])
        .args(["--output", "json", "kms"])
        .args(args)
        .env("AWS_ACCESS_KEY_ID", who.0)
        .env("AWS_SECRET_ACCESS_KEY", who.1)
        .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
        .env("AWS_CONFIG_FILE", "/nonexistent")
        .env_remove("AWS_PROFILE")
        .output()
        .unwrap()
}

fn code<E: aws_sdk_kms::error::ProvideErrorMetadata>(e: &E) -> String {
    e.code().unwrap_or_default().to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn three_principals_under_key_and_identity_policies_through_real_clients() {
    let dir = tempfile::tempdir().unwrap();
    let app = Appliance::start(dir.path());
    let files = tempfile::tempdir().unwrap();
    let creds_file = files.path().join("team.credentials");

    let alice_policy = write_json(
        files.path(),
        "alice.json",
        &json!({"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": ["kms:Encrypt", "kms:Decrypt", "kms:DescribeKey"], "Resource": "*"}
        ]}),
    );
    let carol_policy = write_json(
        files.path(),
        "carol.json",
        &json!({"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": "kms:*", "Resource": "*"}
        ]}),
    );
    let alice = ok(&principal(
        &app,
        &[
            "create",
            "alice",
            "--policy",
            &alice_policy,
            "--credentials-file",
            creds_file.to_str().unwrap(),
        ],
    ));
    assert_eq!(alice["Arn"], "arn:aws:iam::111122223333:user/alice");
    let alice_key = (
        alice["AccessKeyId"].as_str().unwrap().to_owned(),
        alice["SecretAccessKey"].as_str().unwrap().to_owned(),
    );
    let written = std::fs::read_to_string(&creds_file).unwrap();
    assert!(written.contains("[alice]") && written.contains(&alice_key.1));
    assert_eq!(
        std::fs::metadata(&creds_file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    // The host never had the secret: not in its log, not in its data dir.
    assert!(!String::from_utf8_lossy(&app.output()).contains(&alice_key.1));
    let bob = ok(&principal(&app, &["create", "bob"]));
    let bob_key = (
        bob["AccessKeyId"].as_str().unwrap().to_owned(),
        bob["SecretAccessKey"].as_str().unwrap().to_owned(),
    );
    let carol = ok(&principal(
        &app,
        &["create", "carol", "--policy", &carol_policy],
    ));
    let carol_key = (
        carol["AccessKeyId"].as_str().unwrap().to_owned(),
        carol["SecretAccessKey"].as_str().unwrap().to_owned(),
    );
    // A name taken is refused.
    let again = principal(&app, &["create", "bob"]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("AlreadyExistsException"));

    // The key: the account delegates to identity policies; bob may decrypt billing data
    // directly; carol may never decrypt.
    let key_policy = json!({"Version": "2012-10-17", "Statement": [
        {"Sid": "root", "Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::111122223333:root"},
         "Action": "kms:*", "Resource": "*"},
        {"Sid": "bob", "Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::111122223333:user/bob"},
         "Action": "kms:Decrypt", "Resource": "*",
         "Condition": {"StringEquals": {"kms:EncryptionContext:app": "billing"}}},
        {"Sid": "carol", "Effect": "Deny", "Principal": {"AWS": "arn:aws:iam::111122223333:user/carol"},
         "Action": "kms:Decrypt", "Resource": "*"}
    ]});
    let kms = admin(&app);
    let key = kms
        .create_key()
        .policy(key_policy.to_string())
        .send()
        .await
        .unwrap()
        .key_metadata
        .unwrap()
        .key_id;

    // alice (aws-sdk-kms): allowed by her identity policy through the root statement.
    let a = client(&app, &alice_key.0, &alice_key.1);
    let enc = |ctx: &'static str| {
        let a = a.clone();
        let key = key.clone();
        async move {
            a.encrypt()
                .key_id(&key)
                .plaintext(Blob::new(b"payroll".to_vec()))
                .encryption_context("app", ctx)
                .send()
                .await
                .unwrap()
                .ciphertext_blob
                .unwrap()
        }
    };
    let billing = enc("billing").await;
    let hr = enc("hr").await;
    let plain = a
        .decrypt()
        .ciphertext_blob(billing.clone())
        .encryption_context("app", "billing")
        .send()
        .await
        .unwrap();
    assert_eq!(plain.plaintext.unwrap().as_ref(), b"payroll");
    // Not in her policy: denied with AWS's message.
    let e = a
        .schedule_key_deletion()
        .key_id(&key)
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert_eq!(code(&e), "AccessDeniedException");
    assert!(
        e.message().unwrap().contains(
            "User: arn:aws:iam::111122223333:user/alice is not authorized to perform: \
             kms:ScheduleKeyDeletion on resource: arn:aws:kms:us-east-1:111122223333:key/"
        ),
        "{e:?}"
    );
    // DryRun: would be allowed → DryRunOperationException; not allowed → AccessDenied.
    let e = a
        .encrypt()
        .key_id(&key)
        .plaintext(Blob::new(b"x".to_vec()))
        .dry_run(true)
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert_eq!(code(&e), "DryRunOperationException");
    let b = client(&app, &bob_key.0, &bob_key.1);
    let e = b
        .encrypt()
        .key_id(&key)
        .plaintext(Blob::new(b"x".to_vec()))
        .dry_run(true)
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert_eq!(code(&e), "AccessDeniedException");

    // bob (boto3): only what the key policy grants him, only with its context.
    if have("python3", &["-c", "import boto3"]) {
        let bob_who = (bob_key.0.as_str(), bob_key.1.as_str());
        assert_eq!(
            boto3_decrypt(&app, bob_who, billing.as_ref(), "billing"),
            "OK"
        );
        assert_eq!(
            boto3_decrypt(&app, bob_who, hr.as_ref(), "hr"),
            "AccessDeniedException"
        );
    }

    // carol (aws CLI): everything by her identity policy, but the key policy's Deny wins.
    if have("aws", &["--version"]) {
        let carol_who = (carol_key.0.as_str(), carol_key.1.as_str());
        let out = aws_cli(
            &app,
            carol_who,
            &["encrypt", "--key-id", &key, "--plaintext", "aGk="],
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let blob_file = files.path().join("billing.bin");
        std::fs::write(&blob_file, billing.as_ref()).unwrap();
        let out = aws_cli(
            &app,
            carol_who,
            &[
                "decrypt",
                "--ciphertext-blob",
                &format!("fileb://{}", blob_file.display()),
                "--encryption-context",
                "app=billing",
            ],
        );
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("AccessDeniedException") && err.contains("explicit deny"),
            "{err}"
        );
    }

    // Listing: every principal, from the state view.
    let list = ok(&principal(&app, &["list"]));
    let names: Vec<&str> = list["Users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["UserName"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["admin", "alice", "bob", "carol"]);

    // Rotation: a second key while the first works, then the first retired.
    let db = || {
        rusqlite::Connection::open(app.data_dir.join(ekms_parent_host::store::STORE_FILE)).unwrap()
    };
    let row = |name: &str| -> Vec<u8> {
        db().query_row(
            "SELECT sealed FROM principals WHERE name = ?1",
            [name],
            |r| r.get(0),
        )
        .unwrap()
    };
    let before_rotation = row("alice");
    let rotated = ok(&principal(
        &app,
        &[
            "rotate-key",
            "alice",
            "--credentials-file",
            creds_file.to_str().unwrap(),
        ],
    ));
    let new_key = (
        rotated["AccessKeyId"].as_str().unwrap().to_owned(),
        rotated["SecretAccessKey"].as_str().unwrap().to_owned(),
    );
    assert!(
        std::fs::read_to_string(&creds_file)
            .unwrap()
            .contains(&new_key.0)
    );
    let a2 = client(&app, &new_key.0, &new_key.1);
    a2.describe_key().key_id(&key).send().await.unwrap();
    a.describe_key().key_id(&key).send().await.unwrap();
    ok(&principal(
        &app,
        &["rotate-key", "alice", "--retire", &alice_key.0],
    ));
    let e = a
        .describe_key()
        .key_id(&key)
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert_eq!(code(&e), "UnrecognizedClientException");
    a2.describe_key().key_id(&key).send().await.unwrap();

    // The hostile host puts alice's row from before the retirement back: the old key stays
    // dead (the enclave refuses the stale record), and so does the new one while the row is
    // stale.
    let after_retirement = row("alice");
    db().execute(
        "UPDATE principals SET sealed = ?1 WHERE name = 'alice'",
        [&before_rotation],
    )
    .unwrap();
    db().execute(
        "INSERT OR REPLACE INTO access_keys (access_key_id, principal) VALUES (?1, 'alice')",
        [&alice_key.0],
    )
    .unwrap();
    assert!(a.describe_key().key_id(&key).send().await.is_err());
    db().execute(
        "UPDATE principals SET sealed = ?1 WHERE name = 'alice'",
        [&after_retirement],
    )
    .unwrap();
    // (The host's cache may still hold a row; the enclave's refusal makes it re-read.)
    a2.describe_key().key_id(&key).send().await.unwrap();

    // A narrowed identity policy holds at once.
    let narrow = write_json(
        files.path(),
        "narrow.json",
        &json!({"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": "kms:DescribeKey", "Resource": "*"}
        ]}),
    );
    ok(&principal(&app, &["put-policy", "alice", &narrow]));
    let e = a2
        .decrypt()
        .ciphertext_blob(billing.clone())
        .encryption_context("app", "billing")
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert_eq!(code(&e), "AccessDeniedException");

    // Deletion: carol's key stops working, and her row put back by the host does not revive it.
    let carol_row = row("carol");
    ok(&principal(&app, &["delete", "carol"]));
    let c = client(&app, &carol_key.0, &carol_key.1);
    let e = c.list_keys().send().await.unwrap_err().into_service_error();
    assert_eq!(code(&e), "UnrecognizedClientException");
    db().execute(
        "INSERT INTO principals (id, generation, sealed, name) VALUES ('carol', 0, ?1, 'carol')",
        [&carol_row],
    )
    .unwrap();
    db().execute(
        "INSERT INTO access_keys (access_key_id, principal) VALUES (?1, 'carol')",
        [&carol_key.0],
    )
    .unwrap();
    assert!(c.list_keys().send().await.is_err());
    // A principal cannot make principals unless its policy says so.
    let out = Command::new(bin_dir().join("ekms"))
        .args([
            "principal",
            "create",
            "mallory",
            "--endpoint",
            &app.endpoint,
        ])
        .arg("--data-dir")
        .arg(&app.data_dir)
        .env("AWS_ACCESS_KEY_ID", &new_key.0)
        .env("AWS_SECRET_ACCESS_KEY", &new_key.1)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("AccessDeniedException"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// STS GetCallerIdentity on the KMS endpoint through the aws CLI and boto3: the verified
/// principal's ARN; bad credentials and other STS actions get STS's XML errors.
#[test]
fn sts_get_caller_identity_through_the_aws_cli_and_boto3() {
    let dir = tempfile::tempdir().unwrap();
    let app = Appliance::start(dir.path());
    let alice = ok(&principal(&app, &["create", "alice"]));
    let (akid, secret) = (
        alice["AccessKeyId"].as_str().unwrap(),
        alice["SecretAccessKey"].as_str().unwrap(),
    );
    if have("aws", &["--version"]) {
        let sts = |who: (&str, &str), args: &[&str]| {
            Command::new("aws")
                .args(["--endpoint-url", &app.endpoint, "--region", "us-east-1"])
                .args(["--output", "json", "sts"])
                .args(args)
                .env("AWS_ACCESS_KEY_ID", who.0)
                .env("AWS_SECRET_ACCESS_KEY", who.1)
                .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
                .env("AWS_CONFIG_FILE", "/nonexistent")
                .env_remove("AWS_PROFILE")
                .output()
                .unwrap()
        };
        let out = sts((akid, secret), &["get-caller-identity"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["Arn"], "arn:aws:iam::111122223333:user/alice");
        assert_eq!(v["Account"], "111122223333");
        assert!(v["UserId"].as_str().unwrap().starts_with("AIDA"));
        let admin = sts((&app.access_key, &app.secret_key), &["get-caller-identity"]);
        let v: Value = serde_json::from_slice(&admin.stdout).unwrap();
        assert_eq!(v["Arn"], "arn:aws:iam::111122223333:user/admin");
        let bad = sts((akid, &"x".repeat(40)), &["get-caller-identity"]);
        assert!(!bad.status.success());
        assert!(
            String::from_utf8_lossy(&bad.stderr).contains("SignatureDoesNotMatch"),
            "{}",
            String::from_utf8_lossy(&bad.stderr)
        );
        let unknown = sts(("EKMSNOSUCHKEY0000000", secret), &["get-caller-identity"]);
        assert!(String::from_utf8_lossy(&unknown.stderr).contains("InvalidClientTokenId"));
        let assume = sts(
            (akid, secret),
            &[
                "assume-role",
                "--role-arn",
                "arn:aws:iam::111122223333:role/x",
                "--role-session-name",
                "session",
            ],
        );
        assert!(!assume.status.success());
        assert!(
            String::from_utf8_lossy(&assume.stderr).contains("InvalidAction"),
            "{}",
            String::from_utf8_lossy(&assume.stderr)
        );
    }
    if have("python3", &["-c", "import boto3"]) {
        let script = r#"
import sys, boto3
endpoint, akid, secret = sys.argv[1:]
sts = boto3.client("sts", endpoint_url=endpoint, region_name="us-east-1",
                   aws_access_key_id=akid, aws_secret_access_key=secret)
print(sts.get_caller_identity()["Arn"])
"#;
        let out = Command::new("python3")
            .args(["-c", script, &app.endpoint, akid, secret])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            "arn:aws:iam::111122223333:user/alice"
        );
    }
}
