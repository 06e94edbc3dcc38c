//! Attestation on the wire: a client fetches a fresh document bound to its nonce with the real
//! `ekms attestation fetch`, and verifies it with `ekms attestation verify`: simulation root,
//! nonce, PCR0 = SHA-384 of the running `ekms-enclave`, the per-boot identity key, and the
//! `--domain` pin.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::too_many_lines
)] // test code

use std::process::Command;

use ekms_tests::{Appliance, bin_dir};

fn ekms(args: &[&str]) -> std::process::Output {
    Command::new(bin_dir().join("ekms"))
        .args(args)
        .output()
        .unwrap()
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

#[test]
fn a_fetched_document_verifies_against_the_simulation_root_only() {
    let dir = tempfile::tempdir().unwrap();
    let app = Appliance::start(dir.path());
    let doc = dir.path().join("doc.cose");
    let root = dir.path().join("simulation-root.pem");
    let (doc_s, root_s) = (doc.to_str().unwrap(), root.to_str().unwrap());
    let out = ekms(&[
        "attestation",
        "fetch",
        "--endpoint",
        &app.endpoint,
        "--nonce",
        "c0ffee01",
        "--out",
        doc_s,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let enclave = std::fs::read(bin_dir().join("ekms-enclave")).unwrap();
    let pcr0 = hex(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA384, &enclave).as_ref());
    let pcr = format!("0={pcr0}");
    let verify = |extra: &[&str]| {
        let mut args = vec!["attestation", "verify", "--doc", doc_s, "--at", "document"];
        args.extend_from_slice(extra);
        ekms(&args)
    };
    let out = verify(&[
        "--root",
        root_s,
        "--allow-simulation-root",
        "--nonce",
        "c0ffee01",
        "--pcr",
        &pcr,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["simulation"], true);
    assert_eq!(report["nonce"], "c0ffee01");
    assert_eq!(report["pcrs"]["0"], pcr0.as_str());
    let public_key = report["public_key"].as_str().unwrap();
    assert_eq!(
        public_key.len(),
        97 * 2,
        "an uncompressed P-384 identity key"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("SIMULATION"));

    // The same identity key on the next document of this boot; a fresh nonce each time.
    let doc2 = dir.path().join("doc2.cose");
    assert!(
        ekms(&[
            "attestation",
            "fetch",
            "--endpoint",
            &app.endpoint,
            "--nonce",
            "c0ffee02",
            "--out",
            doc2.to_str().unwrap()
        ])
        .status
        .success()
    );
    let out2 = ekms(&[
        "attestation",
        "verify",
        "--doc",
        doc2.to_str().unwrap(),
        "--at",
        "document",
        "--root",
        root_s,
        "--allow-simulation-root",
    ]);
    let report2: serde_json::Value = serde_json::from_slice(&out2.stdout).unwrap();
    assert_eq!(report2["public_key"], public_key);

    // Refused: the AWS root (default), a wrong nonce, a wrong PCR0, a simulation root not allowed.
    assert!(!verify(&[]).status.success());
    assert!(
        !verify(&[
            "--root",
            root_s,
            "--allow-simulation-root",
            "--nonce",
            "c0ffee02"
        ])
        .status
        .success()
    );
    assert!(
        !verify(&[
            "--root",
            root_s,
            "--allow-simulation-root",
            "--pcr",
            &format!("0={}", "00".repeat(48))
        ])
        .status
        .success()
    );
    assert!(!verify(&["--root", root_s]).status.success());
    // --domain pins the key domain named in the document's user data.
    let user_data = report["user_data"].as_str().unwrap();
    let user_data = String::from_utf8(
        (0..user_data.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&user_data[i..i + 2], 16).unwrap())
            .collect(),
    )
    .unwrap();
    let domain = user_data
        .split(' ')
        .find_map(|w| w.strip_prefix("domain="))
        .unwrap();
    let pinned = |id: &str| verify(&["--root", root_s, "--allow-simulation-root", "--domain", id]);
    let out = pinned(domain);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = pinned("0123456789abcdef");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("names domain"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Bad nonces never reach the enclave.
    for bad in ["", "xyz", &"00".repeat(513)] {
        let out = ekms(&[
            "attestation",
            "fetch",
            "--endpoint",
            &app.endpoint,
            "--nonce",
            bad,
            "--out",
            doc_s,
        ]);
        assert!(!out.status.success());
    }
}
