//! Fuzz target: the attestation document parser and verifier must never panic.
#![no_main]

use std::sync::OnceLock;

use ekms_attestation::{AttestationDoc, TrustRoot, ValidationTime, verify};
use libfuzzer_sys::fuzz_target;

fn aws_root() -> Option<&'static TrustRoot> {
    static ROOT: OnceLock<Option<TrustRoot>> = OnceLock::new();
    ROOT.get_or_init(|| TrustRoot::aws_nitro().ok()).as_ref()
}

fuzz_target!(|data: &[u8]| {
    let parsed = AttestationDoc::parse_unverified(data);
    if let Some(root) = aws_root() {
        let verified = verify(data, root, ValidationTime::DocumentTimestamp);
        // Verification implies parsing.
        assert!(verified.is_err() || parsed.is_ok());
    }
});
