//! Fuzz target: a grant token (and a sealed grant) from a client must never panic, and never
//! open under a domain key that did not seal it.
#![no_main]

use ekms_enclave::domain::{DomainKey, DomainKeyBytes, Keyring};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let keys = Keyring::single(DomainKey::from_bytes(DomainKeyBytes::new([9u8; 32])).unwrap());
    if let Ok(token) = std::str::from_utf8(data)
        && let Some(sealed) = ekms_enclave::grant::token_record(token)
    {
        assert!(ekms_enclave::grant::open(&keys, &sealed).is_err());
    }
    assert!(ekms_enclave::grant::open(&keys, data).is_err());
});
