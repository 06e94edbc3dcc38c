//! Runs the cargo-fuzz seed corpora of the wire parsers (`fuzz/corpus/{vsock_frame,kms_request,
//! ciphertext_blob}`) as regression tests: the same checks as the fuzz targets, on every file.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::path::{Path, PathBuf};

use ekms_wire::{
    blob::BlobHeader,
    frame,
    msg::{EnclaveResponse, HostRequest},
    plan::{AWS_KMS_OPERATIONS, decode_marker, parse_key_ref, plan},
};

fn corpus(name: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(name);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .map(|p| {
            let b = std::fs::read(&p).unwrap();
            (p, b)
        })
        .collect();
    files.sort();
    assert!(files.len() >= 3, "seed corpus {name} is missing");
    files
}

#[test]
fn vsock_frames() {
    for (path, data) in corpus("vsock_frame") {
        let host = frame::decode::<HostRequest>(&data);
        let _ = frame::decode::<EnclaveResponse>(&data);
        if path.ends_with("status.cbor") {
            assert!(matches!(host.unwrap().msg, HostRequest::Status));
        }
    }
}

#[test]
fn kms_requests() {
    for (_, data) in corpus("kms_request") {
        for op in AWS_KMS_OPERATIONS {
            let _ = plan(op, &data);
        }
        if let Ok(s) = std::str::from_utf8(&data) {
            let _ = parse_key_ref(s);
            let _ = decode_marker(s);
        }
    }
}

#[test]
fn ciphertext_blobs() {
    for (path, data) in corpus("ciphertext_blob") {
        let parsed = BlobHeader::parse(&data);
        if let Some((h, rest)) = parsed {
            let mut again = h.to_bytes().to_vec();
            again.extend_from_slice(rest);
            assert_eq!(again, data);
        }
        assert_eq!(
            parsed.is_some(),
            path.ends_with("v1.bin"),
            "{}",
            path.display()
        );
    }
}
