//! Fuzz target: the host's planning of a KMS JSON request must never panic.
#![no_main]

use ekms_wire::plan::{AWS_KMS_OPERATIONS, decode_marker, parse_key_ref, plan};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for op in AWS_KMS_OPERATIONS {
        let _ = plan(op, data);
    }
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = parse_key_ref(s);
        let _ = decode_marker(s);
    }
});
