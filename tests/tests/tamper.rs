//! A hostile host: sealed records edited or swapped on disk, and malformed frames on the vsock
//! mock. The enclave must refuse the records and keep serving.
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
    os::unix::net::UnixStream,
    time::Duration,
};

use aws_sdk_kms::{error::ProvideErrorMetadata, primitives::Blob};
use common::admin;
use ekms_tests::Appliance;

#[tokio::test(flavor = "multi_thread")]
async fn edited_or_swapped_records_are_refused() {
    // Each CreateKey says which key it is: equal state-changing calls in the same second would
    // be one signed request, which the enclave runs once.
    let dir = tempfile::tempdir().unwrap();
    let mut app = Appliance::start(dir.path());
    let kms = admin(&app);
    let a = kms
        .create_key()
        .description("a")
        .send()
        .await
        .unwrap()
        .key_metadata
        .unwrap()
        .key_id()
        .to_owned();
    let b = kms
        .create_key()
        .description("b")
        .send()
        .await
        .unwrap()
        .key_metadata
        .unwrap()
        .key_id()
        .to_owned();
    let c = kms
        .create_key()
        .description("c")
        .send()
        .await
        .unwrap()
        .key_metadata
        .unwrap()
        .key_id()
        .to_owned();
    kms.disable_key().key_id(&c).send().await.unwrap();
    assert!(app.terminate());

    // The host edits key a's record, gives key b the record of a key it likes better, and
    // rolls key c back to its enabled generation... which it no longer has; instead it edits
    // the state column it can see (which the enclave ignores).
    {
        let db = rusqlite::Connection::open(dir.path().join(ekms_parent_host::store::STORE_FILE))
            .unwrap();
        let mut sealed: Vec<u8> = db
            .query_row("SELECT sealed FROM keys WHERE key_id = ?1", [&a], |r| {
                r.get(0)
            })
            .unwrap();
        let mid = sealed.len() / 2;
        sealed[mid] ^= 0x01;
        db.execute(
            "UPDATE keys SET sealed = ?1 WHERE key_id = ?2",
            rusqlite::params![sealed, a],
        )
        .unwrap();
        let a_record: Vec<u8> = db
            .query_row("SELECT sealed FROM keys WHERE key_id = ?1", [&c], |r| {
                r.get(0)
            })
            .unwrap();
        db.execute(
            "UPDATE keys SET sealed = ?1 WHERE key_id = ?2",
            rusqlite::params![a_record, b],
        )
        .unwrap();
        db.execute("UPDATE keys SET state = 'Enabled' WHERE key_id = ?1", [&c])
            .unwrap();
    }
    let app = Appliance::start(dir.path());
    let kms = admin(&app);
    // The edited record fails authentication.
    let e = kms
        .describe_key()
        .key_id(&a)
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert_eq!(e.code(), Some("KMSInvalidStateException"));
    let e = kms
        .encrypt()
        .key_id(&a)
        .plaintext(Blob::new(b"x".to_vec()))
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        e.into_service_error().code(),
        Some("KMSInvalidStateException")
    );
    // The swapped record is bound to key c's id: for key b the enclave has no record at all,
    // and it never encrypts under c's material in b's name.
    let e = kms
        .encrypt()
        .key_id(&b)
        .plaintext(Blob::new(b"x".to_vec()))
        .send()
        .await
        .unwrap_err();
    assert_eq!(e.into_service_error().code(), Some("NotFoundException"));
    let e = kms
        .encrypt()
        .key_id(&c)
        .plaintext(Blob::new(b"x".to_vec()))
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        e.into_service_error().code(),
        Some("DisabledException"),
        "state comes from the sealed record"
    );
    // ListKeys lists the enclave's own view of the state: the key whose record no longer opens
    // and the key whose record was replaced are not listed, the forged row is not listed twice.
    let listed: Vec<String> = kms
        .list_keys()
        .send()
        .await
        .unwrap()
        .keys()
        .iter()
        .map(|k| k.key_id().unwrap().to_owned())
        .collect();
    assert_eq!(listed, vec![c.clone()]);
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_frames_do_not_stop_the_enclave() {
    let dir = tempfile::tempdir().unwrap();
    let app = Appliance::start(dir.path());
    let sock = dir.path().join("run").join("vsock-16-5000.sock");
    // Oversized length prefix: the enclave closes the connection without allocating.
    let mut s = UnixStream::connect(&sock).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(&u32::MAX.to_be_bytes()).unwrap();
    let mut buf = [0u8; 16];
    assert_eq!(s.read(&mut buf).unwrap_or(0), 0, "connection closed");
    // Garbage body: closed as well.
    let mut s = UnixStream::connect(&sock).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(&8u32.to_be_bytes()).unwrap();
    s.write_all(b"\xff\xfe\xfd\xfc\xfb\xfa\xf9\xf8").unwrap();
    assert_eq!(s.read(&mut buf).unwrap_or(0), 0);
    // A truncated frame followed by a hang-up.
    let mut s = UnixStream::connect(&sock).unwrap();
    s.write_all(&100u32.to_be_bytes()).unwrap();
    s.write_all(b"abc").unwrap();
    drop(s);
    // A well-formed envelope with a bad message gets an error reply with its id.
    let mut s = UnixStream::connect(&sock).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    // CBOR map {"v": 1, "id": 42, "msg": "nonsense"}
    let body = b"\xa3\x61v\x01\x62id\x18\x2a\x63msg\x68nonsense";
    s.write_all(&u32::try_from(body.len()).unwrap().to_be_bytes())
        .unwrap();
    s.write_all(body).unwrap();
    let mut len = [0u8; 4];
    s.read_exact(&mut len).unwrap();
    let mut reply = vec![0u8; u32::from_be_bytes(len) as usize];
    s.read_exact(&mut reply).unwrap();
    let text = String::from_utf8_lossy(&reply);
    assert!(
        text.contains("Fault") && text.contains("Malformed"),
        "{text}"
    );
    // The appliance still serves.
    let kms = admin(&app);
    kms.create_key().send().await.unwrap();
    assert_eq!(app.enclave_pids().len(), 1);
}
