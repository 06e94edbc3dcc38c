//! Runs the cargo-fuzz seed corpus (`fuzz/corpus/attestation_doc`) as a regression test.
//!
//! `ok-*` files must verify against the AWS root at their own timestamp, `bad-*` files must be
//! refused, and any other file (added by a fuzzing run) must simply not panic.

use std::path::Path;

use ekms_attestation::{AttestationDoc, TrustRoot, ValidationTime, verify};

#[test]
fn seed_corpus_parses_and_verifies_as_labelled_without_panicking() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/attestation_doc");
    let root = TrustRoot::aws_nitro().unwrap();
    let mut labelled = 0;
    let mut entries: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    entries.sort();
    for path in entries {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let bytes = std::fs::read(&path).unwrap();
        let parsed = AttestationDoc::parse_unverified(&bytes);
        let verified = verify(&bytes, &root, ValidationTime::DocumentTimestamp);
        assert!(
            verified.is_err() || parsed.is_ok(),
            "{name}: verified but did not parse"
        );
        if name.starts_with("ok-") {
            labelled += 1;
            let doc = verified.unwrap_or_else(|e| panic!("{name} should verify: {e}"));
            assert!(!doc.is_simulation(), "{name}");
        } else if name.starts_with("bad-") {
            labelled += 1;
            assert!(verified.is_err(), "{name} should be refused");
        }
    }
    assert!(
        labelled >= 10,
        "seed corpus is missing files: found {labelled}"
    );
}
