//! The enclave's audit log, as an auditor and as a hostile host would see it: every call is
//! recorded (allowed, refused, failed) with the request id the client got and the context's
//! keys but never its values; `ekms audit verify` passes an intact log, offline and against the
//! running enclave, and names the first bad record after each edit a host could make.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)] // test code

mod common;

use std::{path::Path, process::Command};

use aws_sdk_kms::{error::ProvideErrorMetadata as _, operation::RequestId as _};
use common::{admin, client, new_key};
use ekms_tests::{Appliance, bin_dir};
use serde_json::Value;

fn ekms(args: &[&str], dir: &Path) -> (i32, String) {
    let out = Command::new(bin_dir().join("ekms"))
        .args(args)
        .arg("--data-dir")
        .arg(dir)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

fn verify(dir: &Path, endpoint: Option<&str>) -> (i32, String) {
    match endpoint {
        Some(e) => ekms(&["audit", "verify", "--endpoint", e], dir),
        None => ekms(&["audit", "verify"], dir),
    }
}

fn records(dir: &Path) -> Vec<Value> {
    let (code, text) = ekms(&["audit", "export"], dir);
    assert_eq!(code, 0, "{text}");
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Records whose `eventName` is `name`.
fn named<'a>(all: &'a [Value], name: &str) -> Vec<&'a Value> {
    all.iter().filter(|r| r["eventName"] == name).collect()
}

/// A copy of a stopped appliance's data dir.
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_file() {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

fn sql(dir: &Path, statement: &str) {
    let c = rusqlite::Connection::open(dir.join("audit.sqlite3")).unwrap();
    c.execute_batch(statement).unwrap();
}

fn rows(dir: &Path, query: &str) -> Vec<i64> {
    let c = rusqlite::Connection::open(dir.join("audit.sqlite3")).unwrap();
    let mut q = c.prepare(query).unwrap();
    q.query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn every_call_is_recorded_and_the_context_values_never_are() {
    let dir = tempfile::tempdir().unwrap();
    let app = Appliance::start(dir.path());
    let kms = admin(&app);
    let key = new_key(&kms).await;
    let out = kms
        .encrypt()
        .key_id(&key)
        .plaintext(aws_sdk_kms::primitives::Blob::new(
            b"top secret plaintext".to_vec(),
        ))
        .encryption_context("tenant", "value-that-must-not-be-logged")
        .send()
        .await
        .unwrap();
    let encrypt_id = out.request_id().unwrap().to_owned();
    // Failed: no such key.
    let err = kms
        .describe_key()
        .key_id("11111111-2222-3333-4444-555555555555")
        .send()
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("NotFoundException"));
    // Refused: a wrong secret for a real access key id.
    let forger = client(
        &app,
        &app.access_key,
        "not-the-secret-not-the-secret-00000000",
    );
    let err = forger.list_keys().send().await.unwrap_err();
    assert!(err.code().is_some());

    let (code, text) = verify(&app.data_dir, Some(&app.endpoint));
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("audit log intact"), "{text}");
    let all = records(&app.data_dir);
    assert_eq!(all[0]["eventName"], "EkmsAuditChainStart");
    let enc = named(&all, "Encrypt");
    assert_eq!(enc.len(), 1);
    let enc = enc[0];
    assert_eq!(enc["requestID"], encrypt_id.as_str());
    assert_eq!(enc["eventSource"], "kms.amazonaws.com");
    assert_eq!(
        enc["userIdentity"]["arn"],
        "arn:aws:iam::111122223333:user/admin"
    );
    assert_eq!(enc["userIdentity"]["accessKeyId"], app.access_key.as_str());
    assert!(
        enc["resources"][0]["ARN"]
            .as_str()
            .unwrap()
            .ends_with(&format!("key/{key}")),
        "{enc}"
    );
    assert_eq!(
        enc["requestParameters"]["encryptionContextKeys"],
        serde_json::json!(["tenant"])
    );
    assert_eq!(enc["errorCode"], Value::Null);
    let described = named(&all, "DescribeKey");
    assert_eq!(described[0]["errorCode"], "NotFoundException");
    // The forger's call names the access key, but nobody is named as the caller: its
    // signature did not verify.
    let refused = named(&all, "ListKeys");
    assert_eq!(refused.len(), 1);
    assert!(refused[0]["errorCode"].is_string(), "{}", refused[0]);
    assert_eq!(refused[0]["userIdentity"]["type"], "Unknown");
    assert_eq!(refused[0]["userIdentity"]["arn"], Value::Null);
    assert_eq!(
        refused[0]["userIdentity"]["accessKeyId"],
        app.access_key.as_str()
    );
    // Neither the context's value nor the plaintext is anywhere in the data dir.
    for e in std::fs::read_dir(&app.data_dir).unwrap() {
        let path = e.unwrap().path();
        if path.is_file() {
            let bytes = std::fs::read(&path).unwrap();
            for secret in [
                &b"value-that-must-not-be-logged"[..],
                b"top secret plaintext",
            ] {
                assert!(
                    !bytes.windows(secret.len()).any(|w| w == secret),
                    "{} holds a secret",
                    path.display()
                );
            }
        }
    }
    let (code, text) = ekms(&["audit", "tail", "-n", "2"], &app.data_dir);
    assert_eq!(code, 0, "{text}");
    assert_eq!(text.lines().count(), 2, "{text}");
    let (code, text) = ekms(&["audit", "export", "--since", "2999-01-01"], &app.data_dir);
    assert_eq!((code, text.as_str()), (0, ""));
}

#[tokio::test(flavor = "multi_thread")]
async fn every_edit_a_host_can_make_is_detected() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // Two runs: two chains, the second naming the first.
    for _ in 0..2 {
        let mut app = Appliance::start(&data);
        let kms = admin(&app);
        let key = new_key(&kms).await;
        for _ in 0..4 {
            common::encrypt(&kms, &key, b"x").await;
        }
        assert!(app.terminate());
    }
    let (code, text) = verify(&data, None);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("in 2 chains"), "{text}");
    let ids = rows(&data, "SELECT id FROM audit_log ORDER BY id");
    assert!(ids.len() >= 12, "{ids:?}");
    let second_chain_start = rows(
        &data,
        "SELECT id FROM audit_log WHERE seq = 0 ORDER BY id DESC LIMIT 1",
    )[0];
    let last = *ids.last().unwrap();
    let cases: Vec<(&str, String, Option<i64>, &str)> = vec![
        (
            "edit",
            "UPDATE audit_log SET record = replace(record, '\"Encrypt\"', '\"Decrypt\"') WHERE id = 4"
                .into(),
            Some(4),
            "edited",
        ),
        (
            "delete",
            "DELETE FROM audit_log WHERE id = 4".into(),
            Some(5),
            "missing",
        ),
        (
            "reorder",
            "UPDATE audit_log SET id = -4 WHERE id = 4; UPDATE audit_log SET id = 4 WHERE id = 5; \
             UPDATE audit_log SET id = 5 WHERE id = -4;"
                .into(),
            Some(4),
            "out of order",
        ),
        (
            "insert a copy",
            "INSERT INTO audit_log (chain, seq, time_ms, record) \
             SELECT chain, seq, time_ms, record FROM audit_log WHERE id = 3"
                .into(),
            Some(last + 1),
            "repeated",
        ),
        (
            "truncate the newest",
            format!("DELETE FROM audit_log WHERE id > {}", last - 2),
            None,
            "newest records were dropped",
        ),
        (
            "delete the first chain",
            format!("DELETE FROM audit_log WHERE id < {second_chain_start}"),
            Some(second_chain_start),
            "not in the log",
        ),
        (
            "forge a checkpoint",
            "UPDATE audit_checkpoints SET signature = replace(signature, substr(signature, 1, 2), \
             CASE substr(signature, 1, 2) WHEN '00' THEN '01' ELSE '00' END) \
             WHERE id = (SELECT MAX(id) FROM audit_checkpoints)"
                .into(),
            None,
            "forged",
        ),
    ];
    for (name, statement, row, why) in cases {
        let copy = dir.path().join(name.replace(' ', "-"));
        copy_dir(&data, &copy);
        sql(&copy, &statement);
        let (code, text) = verify(&copy, None);
        assert_eq!(code, 1, "{name}: {text}");
        match row {
            Some(row) => assert!(
                text.contains(&format!("FIRST BAD RECORD: row {row}:")),
                "{name}: {text}"
            ),
            None => assert!(text.contains("AUDIT LOG BROKEN"), "{name}: {text}"),
        }
        assert!(text.contains(why), "{name}: {text}");
    }
    // Another key cannot stand in: a verifier given another public key refuses every chain.
    let (code, text) = ekms(
        &["audit", "verify", "--public-key", &"ab".repeat(32)],
        &data,
    );
    assert_eq!(code, 1, "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn dropping_the_newest_records_is_detected_against_the_running_enclave() {
    let dir = tempfile::tempdir().unwrap();
    let app = Appliance::start(dir.path());
    let kms = admin(&app);
    let key = new_key(&kms).await;
    for _ in 0..3 {
        common::encrypt(&kms, &key, b"x").await;
    }
    let (code, text) = verify(&app.data_dir, Some(&app.endpoint));
    assert_eq!(code, 0, "{text}");
    // Newer calls, then the host drops their records before any checkpoint is stored with
    // them: offline, the log looks whole; the enclave's current head says otherwise.
    common::encrypt(&kms, &key, b"y").await;
    common::encrypt(&kms, &key, b"z").await;
    assert!(ekms_tests::wait_until(
        std::time::Duration::from_secs(10),
        || {
            records(&app.data_dir)
                .iter()
                .filter(|r| r["eventName"] == "Encrypt")
                .count()
                == 5
        }
    ));
    sql(
        &app.data_dir,
        "DELETE FROM audit_log WHERE id > (SELECT MAX(id) - 2 FROM audit_log); \
         DELETE FROM audit_checkpoints WHERE seq > (SELECT MAX(seq) FROM audit_log);",
    );
    let (code, text) = verify(&app.data_dir, None);
    assert_eq!(code, 0, "offline, nothing signed covers them: {text}");
    let (code, text) = verify(&app.data_dir, Some(&app.endpoint));
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("newest records were dropped"), "{text}");
}
