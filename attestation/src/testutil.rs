//! Shared test fixtures: the real Nitro document and builders for crafted documents.

use coset::cbor::value::Value;
use coset::{CborSerializable as _, CoseSign1Builder, HeaderBuilder, iana};

use crate::doc::{AttestationDoc, UnixMillis};
use crate::mock::sign_document;
use crate::payload::encode_value;
use crate::simca::{P384Signer, SimulationCa};

/// A real document from a Nitro Enclave, 2022-07-06 (untagged COSE_Sign1).
pub(crate) const REAL_DOC: &[u8] = include_bytes!("../testdata/nitro-2022-real.cose");

/// Its timestamp: 2022-07-06T14:18:22.484Z.
pub(crate) const REAL_TS: UnixMillis = UnixMillis::new(1_657_117_102_484);

/// The real document's PCR0, hex.
pub(crate) const REAL_PCR0: &str = "f8bb0133c427bc49aa39f6811a01077ce9ab7e635fa1f5439c9c8bf99754f8230e41b09426b0e595eebdc4d6ed4bc3b6";

/// A COSE_Sign1 around `payload` with a dummy signature of `sig_len` bytes (not verifiable).
pub(crate) fn unsigned_cose(payload: &Value, sig_len: usize) -> Vec<u8> {
    CoseSign1Builder::new()
        .protected(
            HeaderBuilder::new()
                .algorithm(iana::Algorithm::ES384)
                .build(),
        )
        .payload(encode_value(payload).unwrap())
        .signature(vec![7; sig_len])
        .build()
        .to_vec()
        .unwrap()
}

/// The real document's payload as a CBOR map of entries.
pub(crate) fn real_payload_entries() -> Vec<(Value, Value)> {
    let sign1 = coset::CoseSign1::from_slice(REAL_DOC).unwrap();
    let value: Value = coset::cbor::de::from_reader(sign1.payload.unwrap().as_slice()).unwrap();
    match value {
        Value::Map(entries) => entries,
        _ => panic!("real payload is not a map"),
    }
}

/// Replaces (or, with `None`, removes) the entry `key` of a payload map.
pub(crate) fn with_field(key: &str, value: Option<Value>) -> Value {
    let mut entries: Vec<(Value, Value)> = real_payload_entries()
        .into_iter()
        .filter(|(k, _)| k != &Value::Text(key.to_owned()))
        .collect();
    if let Some(v) = value {
        entries.push((Value::Text(key.to_owned()), v));
    }
    Value::Map(entries)
}

/// A fresh simulation CA valid at `REAL_TS` and today.
pub(crate) fn sim_ca() -> SimulationCa {
    SimulationCa::generate_at(UnixMillis::new(1_600_000_000_000)).unwrap()
}

/// A document signed by `ca`'s chain for an arbitrary payload built by `edit` from a
/// plausible starting document at `at`.
pub(crate) fn signed_custom(
    ca: &SimulationCa,
    at: UnixMillis,
    edit: impl FnOnce(&mut AttestationDoc),
) -> Vec<u8> {
    let (leaf_key, _) = P384Signer::generate().unwrap();
    let certificate = ca
        .issue_leaf(leaf_key.public_point(), "custom", at)
        .unwrap();
    let mut doc = AttestationDoc::parse_unverified(REAL_DOC).unwrap();
    doc.timestamp = at;
    doc.certificate = certificate;
    doc.cabundle = vec![ca.root_der().to_vec(), ca.intermediate_der().to_vec()];
    edit(&mut doc);
    sign_document(&leaf_key, doc.to_payload_cbor().unwrap()).unwrap()
}
