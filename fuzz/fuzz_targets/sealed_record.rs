//! Fuzz target: peeking at and opening a sealed record or a sealed keyring must never panic (and
//! never succeed for bytes this domain did not seal).
#![no_main]

use std::sync::OnceLock;

use ekms_enclave::{
    custody::Domain,
    domain::{DomainKey, DomainKeyBytes, Keyring},
    record::{self, AliasRecord, KeyRecord, Kind},
};
use libfuzzer_sys::fuzz_target;

fn keys() -> Option<&'static Keyring> {
    static D: OnceLock<Option<Keyring>> = OnceLock::new();
    D.get_or_init(|| {
        DomainKey::from_bytes(DomainKeyBytes::new([9u8; 32]))
            .ok()
            .map(Keyring::single)
    })
    .as_ref()
}

fuzz_target!(|data: &[u8]| {
    let _ = record::peek(data);
    let _ = ekms_wire::sealed::peek_domain(data);
    if let Some(d) = keys() {
        assert!(record::open::<KeyRecord>(d, Kind::Key, None, data).is_err());
        assert!(record::open::<AliasRecord>(d, Kind::Alias, None, data).is_err());
        // Any kind, tombstones included, as the state view loads them.
        assert!(record::index(d, data).is_err());
    }
    assert!(Domain::open(ekms_custody::DomainSecret::new([9u8; 32]), data).is_err());
});
