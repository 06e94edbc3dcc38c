//! The `ekms-eif` binary: build and measure print the same nitro-cli-shaped JSON, errors are one
//! line on stderr with a failure status, never a panic.

mod common;

use std::process::Command;

use common::Fixture;
use ekms_eif_build::Measurements;

fn ekms_eif() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ekms-eif"))
}

#[test]
fn build_then_measure_print_the_same_json() {
    let f = Fixture::new();
    let out = ekms_eif()
        .args(["build", "--enclave-bin"])
        .arg(f.enclave())
        .arg("--blobs")
        .arg(f.blobs())
        .arg("--output")
        .arg(f.path("x.eif"))
        .args([
            "--cmd",
            "/ekms-enclave --vsock-port 5000",
            "--env",
            "RUST_LOG=info",
        ])
        .env_remove("SOURCE_DATE_EPOCH")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let built = String::from_utf8(out.stdout).unwrap();
    assert!(
        built.starts_with("{\n  \"Measurements\": {\n    \"HashAlgorithm\": \"Sha384 { ... }\"")
    );
    Measurements::from_json(&built).unwrap();

    let out = ekms_eif()
        .arg("measure")
        .arg(f.path("x.eif"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8(out.stdout).unwrap(), built);
}

#[test]
fn source_date_epoch_sets_build_time_only() {
    let f = Fixture::new();
    let run = |out: &str, epoch: &str| {
        let o = ekms_eif()
            .args(["build", "--enclave-bin"])
            .arg(f.enclave())
            .arg("--blobs")
            .arg(f.blobs())
            .arg("--output")
            .arg(f.path(out))
            .env("SOURCE_DATE_EPOCH", epoch)
            .output()
            .unwrap();
        (
            o.status.success(),
            String::from_utf8(o.stdout).unwrap(),
            String::from_utf8(o.stderr).unwrap(),
        )
    };
    let a = run("a.eif", "0");
    let b = run("b.eif", "1700000000");
    assert!(a.0 && b.0);
    assert_eq!(a.1, b.1);
    let bad = run("c.eif", "yesterday");
    assert!(!bad.0);
    assert!(bad.2.contains("SOURCE_DATE_EPOCH"), "{}", bad.2);
}

#[test]
fn dynamic_binary_gives_a_clear_error_not_a_panic() {
    let f = Fixture::new();
    if !std::path::Path::new("/bin/true").exists() {
        eprintln!("note: /bin/true not present; skipping");
        return;
    }
    let out = ekms_eif()
        .args(["build", "--enclave-bin", "/bin/true", "--blobs"])
        .arg(f.blobs())
        .arg("--output")
        .arg(f.path("x.eif"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.starts_with("ekms-eif: error: enclave executable /bin/true is dynamically linked"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn missing_blobs_dir_gives_a_clear_error() {
    let f = Fixture::new();
    let out = ekms_eif()
        .args(["build", "--enclave-bin"])
        .arg(f.enclave())
        .args(["--blobs", "/nonexistent/nitro/blobs", "--output"])
        .arg(f.path("x.eif"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains("Nitro blobs directory not found: /nonexistent/nitro/blobs"),
        "{err}"
    );
}

#[test]
fn signing_flags_come_in_pairs() {
    let out = ekms_eif()
        .args([
            "build",
            "--enclave-bin",
            "x",
            "--output",
            "y",
            "--signing-cert",
            "c.pem",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--private-key"));
}
