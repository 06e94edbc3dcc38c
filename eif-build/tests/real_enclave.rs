//! Builds an EIF from the real static `ekms-enclave` (target/x86_64-unknown-linux-gnu/enclave/
//! ekms-enclave). In CI (`CI` set) the test builds it with `cargo enclave-static` when it is
//! missing, so this always runs there; elsewhere a missing binary skips the test with a note
//! (the build takes minutes).

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)] // test code

mod common;

use std::path::PathBuf;

use common::Fixture;
use ekms_eif_build::{BuildOptions, build, measure};

fn static_enclave() -> Option<PathBuf> {
    let workspace = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut candidates =
        vec![workspace.join("target/x86_64-unknown-linux-gnu/enclave/ekms-enclave")];
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        candidates.insert(
            0,
            PathBuf::from(dir).join("x86_64-unknown-linux-gnu/enclave/ekms-enclave"),
        );
    }
    if let Some(path) = std::env::var_os("EKMS_ENCLAVE_STATIC") {
        candidates.insert(0, PathBuf::from(path));
    }
    if let Some(found) = candidates.iter().find(|p| p.is_file()) {
        return Some(found.clone());
    }
    if std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false") {
        let status = std::process::Command::new(env!("CARGO"))
            .arg("enclave-static")
            .current_dir(&workspace)
            .status()
            .expect("run cargo enclave-static");
        assert!(status.success(), "cargo enclave-static failed");
        return candidates.into_iter().find(|p| p.is_file());
    }
    None
}

#[test]
fn real_static_enclave_builds_reproducibly() {
    let Some(enclave) = static_enclave() else {
        eprintln!(
            "note: static ekms-enclave not built (run `cargo enclave-static`, or set \
             EKMS_ENCLAVE_STATIC); skipping the real-binary EIF test"
        );
        return;
    };
    let f = Fixture::new();
    let options = |out: &str| BuildOptions {
        enclave_bin: enclave.clone(),
        blobs_dir: f.blobs(),
        output: f.path(out),
        cmd: None,
        env: Vec::new(),
        signing: None,
        build_time: 0,
    };
    let a = build(&options("a.eif")).unwrap();
    let b = build(&options("b.eif")).unwrap();
    assert_eq!(a, b);
    assert_eq!(a.cmd, ["/ekms-enclave", "--vsock-port", "5000"]);
    assert_eq!(
        std::fs::read(f.path("a.eif")).unwrap(),
        std::fs::read(f.path("b.eif")).unwrap()
    );
    assert_eq!(measure(&f.path("a.eif")).unwrap(), a.measurements);
    eprintln!(
        "real ekms-enclave (stand-in blobs) PCR2 = {}",
        a.measurements.pcr2
    );
}
