//! Fuzz target: parsing a ciphertext blob header must never panic, and must round-trip.
#![no_main]

use ekms_wire::blob::BlobHeader;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some((h, rest)) = BlobHeader::parse(data) {
        let mut again = h.to_bytes().to_vec();
        again.extend_from_slice(rest);
        assert_eq!(again, data);
    }
});
