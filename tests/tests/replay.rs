//! Issue #8 end to end. A host that captured a signed state-changing request cannot run it a
//! second time; and development mode never creates a new domain over an earlier domain's data.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::too_many_lines,
    clippy::format_push_string
)] // test code

mod common;

use std::{
    io::{Read as _, Write as _},
    net::TcpStream,
};

use aws_sdk_kms::primitives::Blob;
use common::admin;
use ekms_tests::Appliance;

/// The bytes of a signed KMS request exactly as a client puts them on the wire (and as the
/// host receives them).
fn signed_request(app: &Appliance, op: &str, body: &str) -> Vec<u8> {
    let signed = common::signed(app, op, &serde_json::from_str(body).unwrap());
    let mut req = format!(
        "POST / HTTP/1.1\r\ncontent-length: {}\r\nconnection: close\r\n",
        signed.body.len()
    );
    for (k, v) in &signed.headers {
        req.push_str(&format!("{k}: {}\r\n", String::from_utf8_lossy(v)));
    }
    req.push_str("\r\n");
    let mut bytes = req.into_bytes();
    bytes.extend_from_slice(&signed.body);
    bytes
}

/// Sends raw request bytes; returns the status and the JSON body.
fn send(app: &Appliance, bytes: &[u8]) -> (u16, serde_json::Value) {
    let mut s = TcpStream::connect(app.endpoint.trim_start_matches("http://")).unwrap();
    s.write_all(bytes).unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    let text = String::from_utf8_lossy(&out).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (
        status,
        serde_json::from_str(body).unwrap_or(serde_json::Value::Null),
    )
}

async fn key_state(kms: &aws_sdk_kms::Client, id: &str) -> String {
    kms.describe_key()
        .key_id(id)
        .send()
        .await
        .unwrap()
        .key_metadata
        .unwrap()
        .key_state()
        .unwrap()
        .as_str()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_captured_disable_key_cannot_be_replayed_after_the_key_was_enabled() {
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
    // The owner disables the key; the host keeps the request's bytes.
    let disable = signed_request(&app, "DisableKey", &format!(r#"{{"KeyId":"{id}"}}"#));
    let (status, body) = send(&app, &disable);
    assert_eq!(status, 200, "{body}");
    assert_eq!(key_state(&kms, &id).await, "Disabled");
    // The owner enables it again with a new request.
    kms.enable_key().key_id(&id).send().await.unwrap();
    assert_eq!(key_state(&kms, &id).await, "Enabled");

    // The host sends the old DisableKey again, well within the 15-minute skew window.
    let (status, body) = send(&app, &disable);
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["__type"], "ThrottlingException");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("already executed"),
        "{body}"
    );
    assert_eq!(key_state(&kms, &id).await, "Enabled");
    kms.encrypt()
        .key_id(&id)
        .plaintext(Blob::new(b"still usable".to_vec()))
        .send()
        .await
        .unwrap();

    // A read may be sent any number of times.
    let describe = signed_request(&app, "DescribeKey", &format!(r#"{{"KeyId":"{id}"}}"#));
    for _ in 0..2 {
        let (status, body) = send(&app, &describe);
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["KeyMetadata"]["KeyState"], "Enabled");
    }
}

fn db(dir: &std::path::Path) -> rusqlite::Connection {
    rusqlite::Connection::open(dir.join(ekms_parent_host::store::STORE_FILE)).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn dev_mode_never_creates_a_domain_over_an_earlier_domains_data() {
    let dir = tempfile::tempdir().unwrap();
    let share = dir.path().join("SIMULATION-ONLY-dev-custodian.share.json");
    let creds = dir.path().join("credentials");
    let (id, blob) = {
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
        let blob = kms
            .encrypt()
            .key_id(&id)
            .plaintext(Blob::new(b"keep me".to_vec()))
            .send()
            .await
            .unwrap()
            .ciphertext_blob
            .unwrap();
        assert!(app.terminate());
        (id, blob)
    };
    let share_before = std::fs::read(&share).unwrap();
    let creds_before = std::fs::read(&creds).unwrap();

    // The domain record is lost (a bad restore, a stray DELETE); everything else is there.
    let (generation, sealed): (i64, Vec<u8>) = db(dir.path())
        .query_row("SELECT generation, sealed FROM domain", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    db(dir.path()).execute("DELETE FROM domain", []).unwrap();

    let mut app = Appliance::start(dir.path());
    // It stays up and answers that there is no domain, without crash-looping.
    let (status, body) = send(&app, &signed_request(&app, "ListKeys", "{}"));
    assert_eq!(status, 500, "{body}");
    assert_eq!(body["__type"], "KMSInternalException");
    assert!(
        body["message"].as_str().unwrap().contains("no key domain"),
        "{body}"
    );
    assert!(ekms_tests::alive(app.pid().unwrap()));
    assert!(app.terminate());
    let said = String::from_utf8_lossy(&app.output()).into_owned();
    assert!(
        said.contains("REFUSING to create a new key domain"),
        "{said}"
    );
    assert!(said.contains(&share.display().to_string()), "{said}");
    assert!(said.contains(&creds.display().to_string()), "{said}");
    assert!(said.contains("key records in the store"), "{said}");
    assert!(said.contains("move the data dir away"), "{said}");
    assert_eq!(std::fs::read(&share).unwrap(), share_before);
    assert_eq!(std::fs::read(&creds).unwrap(), creds_before);
    let conn = db(dir.path());
    let domains: i64 = conn
        .query_row("SELECT count(*) FROM domain", [], |r| r.get(0))
        .unwrap();
    assert_eq!(domains, 0, "no new domain was created");
    let keys: i64 = conn
        .query_row("SELECT count(*) FROM keys WHERE key_id = ?1", [&id], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(keys, 1);

    // The operator restores the domain record: the key works again.
    conn.execute(
        "INSERT INTO domain (id, generation, sealed) VALUES (1, ?1, ?2)",
        rusqlite::params![generation, sealed],
    )
    .unwrap();
    drop(conn);
    let app = Appliance::start(dir.path());
    let kms = admin(&app);
    let d = kms
        .describe_key()
        .key_id(&id)
        .send()
        .await
        .unwrap()
        .key_metadata
        .unwrap();
    assert_eq!(d.key_state().unwrap().as_str(), "Enabled");
    let pt = kms
        .decrypt()
        .ciphertext_blob(blob)
        .send()
        .await
        .unwrap()
        .plaintext
        .unwrap();
    assert_eq!(pt.as_ref(), b"keep me");
}
