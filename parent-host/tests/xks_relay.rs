//! `Relay::xks` against a scripted peer on the enclave's socket (the real vsock mock and real
//! frames; the enclave's XKS side is not built yet): which sealed records go with a call, that a
//! stale record is read again from the store, and that faults become 500 InternalException.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)] // test code

use std::{path::Path, sync::Arc};

use ekms_parent_host::{client::EnclaveClient, relay::Relay, store::SqliteStore, store::Store};
use ekms_wire::{
    SocketAddress, frame,
    msg::{EnclaveResponse, Fault, HostRequest, HttpRequest, SealedBlob, StoreWrite, XksOutcome},
    transport::Listener,
};
use tokio::sync::mpsc;

const KEY: &str = "1234abcd-12ab-34cd-56ef-1234567890ab";
const AKID: &str = "EKMSXKSTEST1";

/// What the scripted enclave saw of one call: the principal and keys sent with it.
#[derive(Debug, PartialEq)]
struct Seen {
    uri: String,
    principal: Option<Vec<u8>>,
    keys: Vec<Vec<u8>>,
}

/// Serves the enclave's socket in `dir`: answers the n-th XKS call with `answers[n]`.
fn scripted_enclave(dir: &Path, answers: Vec<EnclaveResponse>) -> mpsc::UnboundedReceiver<Seen> {
    let listener = Listener::bind(&address(dir)).unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let (mut r, mut w) = listener.accept().await.unwrap().into_split();
        let mut answers = answers.into_iter();
        while let Some(body) = frame::read_body(&mut r).await.unwrap() {
            let env = frame::decode::<HostRequest>(&body).unwrap();
            let HostRequest::Xks(call) = env.msg else {
                panic!("not an XKS call: {:?}", env.msg);
            };
            tx.send(Seen {
                uri: call.http.uri.clone(),
                principal: call.principal.map(|p| p.0),
                keys: call.keys.into_iter().map(|k| k.0).collect(),
            })
            .unwrap();
            let answer = answers.next().unwrap();
            frame::write_frame(&mut w, &frame::encode(env.id, &answer).unwrap())
                .await
                .unwrap();
        }
        drop(listener);
    });
    rx
}

fn address(dir: &Path) -> SocketAddress {
    SocketAddress::Mock {
        dir: dir.join("run"),
        cid: 77,
        port: 5000,
    }
}

fn put_key(store: &dyn Store, generation: u64, sealed: &[u8]) {
    store
        .apply(&[StoreWrite::PutKey {
            key_id: KEY.into(),
            generation,
            expected: generation.checked_sub(1).filter(|g| *g > 0),
            sealed: SealedBlob(sealed.to_vec()),
            state: "Enabled".into(),
            deletion_date: None,
            rotation_date: None,
        }])
        .unwrap();
}

fn setup(dir: &Path) -> (Arc<SqliteStore>, Relay) {
    let store =
        Arc::new(SqliteStore::open(&dir.join(ekms_parent_host::store::STORE_FILE)).unwrap());
    put_key(store.as_ref(), 1, b"key v1");
    store
        .apply(&[StoreWrite::PutPrincipal {
            id: "kms-xks".into(),
            generation: 1,
            expected: None,
            sealed: SealedBlob(b"principal v1".to_vec()),
            access_key_ids: vec![AKID.into()],
        }])
        .unwrap();
    let enclave = Arc::new(EnclaveClient::new(address(dir), 1));
    let relay = Relay::new(Arc::clone(&store) as Arc<dyn Store>, enclave);
    (store, relay)
}

fn request(path: &str, authorization: &str) -> HttpRequest {
    HttpRequest {
        method: "POST".into(),
        uri: path.into(),
        headers: vec![(
            "authorization".into(),
            serde_bytes::ByteBuf::from(authorization.as_bytes().to_vec()),
        )],
        body: b"{}".to_vec(),
    }
}

fn signed() -> String {
    format!(
        "AWS4-HMAC-SHA256 Credential={AKID}/20261130/us-east-1/kms-xks-proxy/aws4_request, \
         SignedHeaders=host;x-amz-date, Signature={}",
        "0".repeat(64)
    )
}

fn ok(body: &str) -> EnclaveResponse {
    EnclaveResponse::Xks(XksOutcome {
        status: 200,
        body: body.as_bytes().to_vec(),
    })
}

#[tokio::test]
async fn the_principal_and_key_go_with_the_call_and_the_answer_comes_back_whole() {
    let dir = tempfile::tempdir().unwrap();
    let (_store, relay) = setup(dir.path());
    let not_found = EnclaveResponse::Xks(XksOutcome {
        status: 404,
        body: br#"{"errorName":"KeyNotFoundException","errorMessage":"x"}"#.to_vec(),
    });
    let mut seen = scripted_enclave(
        dir.path(),
        vec![
            ok(r#"{"ciphertext":"AA=="}"#),
            not_found,
            ok("{}"),
            ok("{}"),
        ],
    );

    let path = format!("/a/b/kms/xks/v1/keys/{KEY}/encrypt");
    let (status, body) = relay.xks(request(&path, &signed())).await;
    assert_eq!(
        (status, body.as_slice()),
        (200, &br#"{"ciphertext":"AA=="}"#[..])
    );
    assert_eq!(
        seen.recv().await.unwrap(),
        Seen {
            uri: path,
            principal: Some(b"principal v1".to_vec()),
            keys: vec![b"key v1".to_vec()],
        }
    );

    // A {keyId} that is no key id fetches no record (the enclave says KeyNotFound); nor does an
    // unknown access key id fetch a principal.
    let (status, _) = relay
        .xks(request(
            "/p/kms/xks/v1/keys/no-such-key/metadata",
            "Credential=NOBODY/x",
        ))
        .await;
    assert_eq!(status, 404);
    let s = seen.recv().await.unwrap();
    assert_eq!((s.principal, s.keys.len()), (None, 0));

    // Health names no key.
    let (status, _) = relay.xks(request("/p/kms/xks/v1/health", &signed())).await;
    assert_eq!(status, 200);
    let s = seen.recv().await.unwrap();
    assert_eq!(
        (s.principal.as_deref(), s.keys.len()),
        (Some(&b"principal v1"[..]), 0)
    );

    // No Authorization header: no principal.
    let mut unsigned = request("/p/kms/xks/v1/health", "");
    unsigned.headers.clear();
    assert_eq!(relay.xks(unsigned).await.0, 200);
    assert_eq!(seen.recv().await.unwrap().principal, None);
}

#[tokio::test]
async fn a_stale_record_is_read_again_from_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let (store, relay) = setup(dir.path());
    let stale = EnclaveResponse::Fault(Fault::StaleRecord);
    let mut seen = scripted_enclave(dir.path(), vec![ok("{}"), stale, ok(r#"{"x":1}"#)]);
    let path = format!("/p/kms/xks/v1/keys/{KEY}/decrypt");
    // The first call caches version 1 of the key.
    assert_eq!(relay.xks(request(&path, &signed())).await.0, 200);
    assert_eq!(seen.recv().await.unwrap().keys, vec![b"key v1".to_vec()]);
    // Another host writes version 2; this one's cache still holds version 1, which the enclave
    // calls stale: the retry reads version 2 from the store.
    put_key(store.as_ref(), 2, b"key v2");
    let (status, body) = relay.xks(request(&path, &signed())).await;
    assert_eq!((status, body), (200, br#"{"x":1}"#.to_vec()));
    assert_eq!(seen.recv().await.unwrap().keys, vec![b"key v1".to_vec()]);
    assert_eq!(seen.recv().await.unwrap().keys, vec![b"key v2".to_vec()]);
}

#[tokio::test]
async fn faults_and_strange_replies_are_internal_exceptions() {
    let dir = tempfile::tempdir().unwrap();
    let (_store, relay) = setup(dir.path());
    let _seen = scripted_enclave(
        dir.path(),
        vec![
            EnclaveResponse::Fault(Fault::Sealed),
            EnclaveResponse::Fault(Fault::NotWriter),
            EnclaveResponse::Committed,
        ],
    );
    for _ in 0..3 {
        let (status, body) = relay.xks(request("/p/kms/xks/v1/health", &signed())).await;
        assert_eq!(status, 500);
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["errorName"], "InternalException");
    }
}

#[tokio::test]
async fn records_that_stay_stale_end_in_an_internal_exception() {
    let dir = tempfile::tempdir().unwrap();
    let (_store, relay) = setup(dir.path());
    let stale: Vec<_> = (0..10)
        .map(|_| EnclaveResponse::Fault(Fault::StaleRecord))
        .collect();
    let mut seen = scripted_enclave(dir.path(), stale);
    let (status, _) = relay.xks(request("/p/kms/xks/v1/health", &signed())).await;
    assert_eq!(status, 500);
    let mut calls = 0;
    while seen.try_recv().is_ok() {
        calls += 1;
    }
    assert_eq!(calls, 10);
}
