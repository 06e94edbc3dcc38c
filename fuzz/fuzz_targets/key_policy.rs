//! Fuzz target: the key policy checker must never panic, whatever the document.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(doc) = std::str::from_utf8(data) {
        let _ = ekms_enclave::policy::check(doc);
    }
});
