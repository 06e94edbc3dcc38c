//! Runs fuzz corpora as regression tests: no `sealed_record` seed panics or opens under a domain
//! key that did not seal it; no `peer_input` seed panics, verifies, agrees or decrypts; no `key_policy` seed panics;
//! no `grant_token` seed panics or opens.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::path::Path;

use ekms_enclave::{
    custody::Domain,
    domain::{DomainKey, DomainKeyBytes, Keyring},
    record::{self, AliasRecord, KeyRecord, Kind},
};

#[test]
fn sealed_record_seeds() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/sealed_record");
    let d = Keyring::single(DomainKey::from_bytes(DomainKeyBytes::new([9u8; 32])).unwrap());
    let mut n = 0;
    for e in std::fs::read_dir(dir).unwrap() {
        let data = std::fs::read(e.unwrap().path()).unwrap();
        let _ = record::peek(&data);
        assert!(record::open::<KeyRecord>(&d, Kind::Key, None, &data).is_err());
        assert!(record::open::<AliasRecord>(&d, Kind::Alias, None, &data).is_err());
        assert!(record::index(&d, &data).is_err());
        let secret = ekms_custody::DomainSecret::new([9u8; 32]);
        assert!(Domain::open(secret, &data).is_err());
        n += 1;
    }
    assert!(n >= 3);
}

#[test]
fn peer_input_seeds() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/peer_input");
    let mut n = 0;
    for e in std::fs::read_dir(dir).unwrap() {
        let seed = std::fs::read(e.unwrap().path()).unwrap();
        // As is, and behind every key's selector byte.
        ekms_enclave::asymmetric::peer_input(&seed);
        for key in 0..6u8 {
            ekms_enclave::asymmetric::peer_input(&[&[key][..], &seed].concat());
        }
        n += 1;
    }
    assert!(n >= 5);
}

#[test]
fn key_policy_seeds() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/key_policy");
    let mut n = 0;
    for e in std::fs::read_dir(dir).unwrap() {
        let data = std::fs::read(e.unwrap().path()).unwrap();
        if let Ok(doc) = std::str::from_utf8(&data) {
            let _ = ekms_enclave::policy::check(doc);
        }
        n += 1;
    }
    assert!(n >= 5);
}

#[test]
fn grant_token_seeds() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/grant_token");
    let d = Keyring::single(DomainKey::from_bytes(DomainKeyBytes::new([9u8; 32])).unwrap());
    let mut n = 0;
    for e in std::fs::read_dir(dir).unwrap() {
        let data = std::fs::read(e.unwrap().path()).unwrap();
        if let Ok(token) = std::str::from_utf8(&data)
            && let Some(sealed) = ekms_enclave::grant::token_record(token)
        {
            assert!(ekms_enclave::grant::open(&d, &sealed).is_err());
        }
        assert!(ekms_enclave::grant::open(&d, &data).is_err());
        n += 1;
    }
    assert!(n >= 5);
}
