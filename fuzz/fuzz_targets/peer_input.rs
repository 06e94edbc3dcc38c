//! Fuzz target: what a client hands the enclave for its asymmetric keys (a peer's public key for
//! ECDH, a signature to verify, an RSA ciphertext to decrypt) must never panic, and never
//! verify or decrypt by accident.
#![no_main]

use ekms_enclave::asymmetric::peer_input;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    peer_input(data);
});
