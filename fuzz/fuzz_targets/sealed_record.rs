//! Fuzz target: peeking at and opening a sealed record must never panic (and never succeed
//! for bytes this domain key did not seal).
#![no_main]

use std::sync::OnceLock;

use ekms_enclave::{
    domain::{DomainKey, DomainKeyBytes},
    record::{self, AliasRecord, KeyRecord, Kind},
};
use libfuzzer_sys::fuzz_target;

fn domain() -> Option<&'static DomainKey> {
    static D: OnceLock<Option<DomainKey>> = OnceLock::new();
    D.get_or_init(|| DomainKey::from_bytes(DomainKeyBytes::new([9u8; 32])).ok()).as_ref()
}

fuzz_target!(|data: &[u8]| {
    let _ = record::peek(data);
    if let Some(d) = domain() {
        assert!(record::open::<KeyRecord>(d, Kind::Key, None, data).is_err());
        assert!(record::open::<AliasRecord>(d, Kind::Alias, None, data).is_err());
    }
});
