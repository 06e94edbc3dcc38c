//! The Nitro attestation document: a COSE_Sign1 envelope around a CBOR payload, decoded strictly.
//!
//! Decoding here checks shape and AWS's syntactic limits only; it never says a document is
//! genuine. Use [`crate::verify`] for that.

use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use coset::cbor::value::Value;
use coset::{AsCborValue as _, CoseSign1, iana};

use crate::error::{Error, Result};
use crate::payload::decode_payload;

/// Largest document accepted, in bytes.
///
/// The NSM driver's response buffer is `NSM_RESPONSE_MAX_SIZE = 0x3000` bytes
/// (aws-nitro-enclaves-nsm-api, `src/driver/mod.rs`); we allow some slack above it.
pub const MAX_DOCUMENT_LEN: usize = 0x4000;

/// COSE_Sign1 CBOR tag (RFC 9052 §4.2).
const COSE_SIGN1_TAG: u64 = 18;

/// Number of PCRs an NSM exposes; indices are below this (AWS "Verifying the root of trust").
pub const PCR_COUNT: u8 = 32;

/// A time in milliseconds since the Unix epoch (the unit of the document's `timestamp`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UnixMillis(u64);

impl UnixMillis {
    /// Wraps a count of milliseconds since 1970-01-01T00:00:00Z.
    #[must_use]
    pub const fn new(millis: u64) -> Self {
        Self(millis)
    }

    /// Milliseconds since the epoch.
    #[must_use]
    pub const fn as_millis(self) -> u64 {
        self.0
    }

    /// Whole seconds since the epoch (rounded down).
    #[must_use]
    pub const fn as_secs(self) -> u64 {
        self.0 / 1000
    }

    /// Converts a [`SystemTime`]; fails before 1970 or beyond `u64` milliseconds.
    pub fn from_system_time(time: SystemTime) -> Result<Self> {
        let since = time
            .duration_since(UNIX_EPOCH)
            .map_err(|_| Error::InvalidTime("before 1970".to_owned()))?;
        u64::try_from(since.as_millis())
            .map(Self)
            .map_err(|_| Error::InvalidTime("too far in the future".to_owned()))
    }

    /// The same instant as a [`SystemTime`].
    #[must_use]
    pub fn to_system_time(self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(self.0)
    }
}

/// The index of a platform configuration register, below [`PCR_COUNT`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PcrIndex(u8);

impl PcrIndex {
    /// PCR0: the enclave image file.
    pub const IMAGE: Self = Self(0);

    /// A PCR index, or `None` if it is not below [`PCR_COUNT`].
    #[must_use]
    pub const fn new(index: u8) -> Option<Self> {
        if index < PCR_COUNT {
            Some(Self(index))
        } else {
            None
        }
    }

    /// The index as a number.
    #[must_use]
    pub const fn get(self) -> u8 {
        self.0
    }
}

impl fmt::Display for PcrIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A PCR value: 32, 48 (SHA-384, what Nitro uses) or 64 bytes.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Pcr(Vec<u8>);

impl Pcr {
    /// Wraps a PCR value, checking its length is 32, 48 or 64.
    pub fn new(bytes: Vec<u8>) -> Result<Self> {
        if matches!(bytes.len(), 32 | 48 | 64) {
            Ok(Self(bytes))
        } else {
            Err(Error::InvalidField {
                field: "pcrs",
                reason: "PCR value must be 32, 48 or 64 bytes",
            })
        }
    }

    /// The raw value.
    #[must_use]
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Lower-case hex.
    #[must_use]
    pub fn to_hex(&self) -> String {
        hex::encode(&self.0)
    }

    /// True if every byte is zero (what the NSM reports in debug mode).
    #[must_use]
    pub fn is_zero(&self) -> bool {
        self.0.iter().all(|b| *b == 0)
    }
}

impl fmt::Debug for Pcr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Pcr({})", self.to_hex())
    }
}

/// The decoded payload of a Nitro attestation document.
///
/// Obtained unverified from [`AttestationDoc::parse_unverified`], or verified inside a
/// [`crate::VerifiedDoc`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttestationDoc {
    pub(crate) module_id: String,
    pub(crate) timestamp: UnixMillis,
    pub(crate) pcrs: BTreeMap<PcrIndex, Pcr>,
    pub(crate) certificate: Vec<u8>,
    pub(crate) cabundle: Vec<Vec<u8>>,
    pub(crate) public_key: Option<Vec<u8>>,
    pub(crate) user_data: Option<Vec<u8>>,
    pub(crate) nonce: Option<Vec<u8>>,
}

impl AttestationDoc {
    /// Decodes a document WITHOUT checking its signature or certificate chain.
    ///
    /// Accepts the tagged (tag 18) and untagged COSE_Sign1 forms, rejects trailing bytes and
    /// enforces AWS's field limits. Nothing in the result can be trusted; use
    /// [`crate::verify`] for that.
    pub fn parse_unverified(bytes: &[u8]) -> Result<Self> {
        decode(bytes).map(|envelope| envelope.doc)
    }

    /// The issuing NSM's module id.
    #[must_use]
    pub fn module_id(&self) -> &str {
        &self.module_id
    }

    /// When the NSM produced the document.
    #[must_use]
    pub fn timestamp(&self) -> UnixMillis {
        self.timestamp
    }

    /// All PCRs in the document, by index.
    #[must_use]
    pub fn pcrs(&self) -> &BTreeMap<PcrIndex, Pcr> {
        &self.pcrs
    }

    /// One PCR, if present.
    #[must_use]
    pub fn pcr(&self, index: PcrIndex) -> Option<&Pcr> {
        self.pcrs.get(&index)
    }

    /// The leaf (signing) certificate, DER.
    #[must_use]
    pub fn certificate(&self) -> &[u8] {
        &self.certificate
    }

    /// The CA bundle, DER, root first.
    #[must_use]
    pub fn cabundle(&self) -> &[Vec<u8>] {
        &self.cabundle
    }

    /// The public key the enclave asked to include, if any.
    #[must_use]
    pub fn public_key(&self) -> Option<&[u8]> {
        self.public_key.as_deref()
    }

    /// The user data the enclave asked to include, if any.
    #[must_use]
    pub fn user_data(&self) -> Option<&[u8]> {
        self.user_data.as_deref()
    }

    /// The nonce the enclave asked to include, if any.
    #[must_use]
    pub fn nonce(&self) -> Option<&[u8]> {
        self.nonce.as_deref()
    }

    /// True if PCR0 (the image measurement) is absent or all zeros, as in debug mode.
    #[must_use]
    pub fn is_debug_mode(&self) -> bool {
        self.pcr(PcrIndex::IMAGE).is_none_or(Pcr::is_zero)
    }
}

/// A decoded document together with its COSE envelope, for signature checking.
pub(crate) struct Envelope {
    pub(crate) sign1: CoseSign1,
    pub(crate) doc: AttestationDoc,
}

/// Reads exactly one CBOR item from `bytes`.
pub(crate) fn read_one(bytes: &[u8], what: &'static str) -> Result<Value> {
    let mut rest = bytes;
    let value: Value = coset::cbor::de::from_reader(&mut rest).map_err(|e| match what {
        "payload" => Error::MalformedPayload {
            reason: format!("not CBOR: {e}"),
        },
        _ => Error::MalformedCose {
            reason: format!("not CBOR: {e}"),
        },
    })?;
    if rest.is_empty() {
        Ok(value)
    } else {
        Err(Error::TrailingBytes { what })
    }
}

/// Decodes the envelope and payload, without any cryptographic check.
pub(crate) fn decode(bytes: &[u8]) -> Result<Envelope> {
    if bytes.is_empty() {
        return Err(Error::Empty);
    }
    if bytes.len() > MAX_DOCUMENT_LEN {
        return Err(Error::TooLarge {
            len: bytes.len(),
            max: MAX_DOCUMENT_LEN,
        });
    }
    let value = match read_one(bytes, "document")? {
        Value::Tag(COSE_SIGN1_TAG, inner) => *inner,
        Value::Tag(other, _) => return Err(Error::UnexpectedTag(other)),
        untagged => untagged,
    };
    let sign1 = CoseSign1::from_cbor_value(value).map_err(|e| Error::MalformedCose {
        reason: e.to_string(),
    })?;
    check_header(&sign1)?;
    if sign1.signature.len() != 96 {
        return Err(Error::BadSignatureLength(sign1.signature.len()));
    }
    let payload = sign1.payload.as_deref().ok_or(Error::MissingPayload)?;
    let doc = decode_payload(payload)?;
    Ok(Envelope { sign1, doc })
}

fn check_header(sign1: &CoseSign1) -> Result<()> {
    let header = &sign1.protected.header;
    if header.alg
        != Some(coset::RegisteredLabelWithPrivate::Assigned(
            iana::Algorithm::ES384,
        ))
    {
        return Err(Error::UnsupportedHeader {
            reason: "protected alg must be ES384",
        });
    }
    if !header.crit.is_empty() {
        return Err(Error::UnsupportedHeader {
            reason: "critical header parameters are not supported",
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::payload::encode_value;
    use crate::testutil::{REAL_DOC, REAL_TS, unsigned_cose, with_field};
    use proptest::prelude::*;

    use coset::{CoseSign1Builder, HeaderBuilder};

    #[test]
    fn envelope_problems_are_refused() {
        let payload = with_field("nonce", None);
        let err = AttestationDoc::parse_unverified(&unsigned_cose(&payload, 64)).unwrap_err();
        assert!(matches!(err, Error::BadSignatureLength(64)), "{err}");

        let no_payload = CoseSign1Builder::new()
            .protected(
                HeaderBuilder::new()
                    .algorithm(iana::Algorithm::ES384)
                    .build(),
            )
            .signature(vec![0; 96])
            .build();
        let err =
            AttestationDoc::parse_unverified(&coset::CborSerializable::to_vec(no_payload).unwrap())
                .unwrap_err();
        assert!(matches!(err, Error::MissingPayload), "{err}");

        for header in [
            HeaderBuilder::new()
                .algorithm(iana::Algorithm::ES256)
                .build(),
            HeaderBuilder::new().build(),
            HeaderBuilder::new()
                .algorithm(iana::Algorithm::ES384)
                .add_critical(iana::HeaderParameter::Kid)
                .build(),
        ] {
            let cose = CoseSign1Builder::new()
                .protected(header)
                .payload(encode_value(&payload).unwrap())
                .signature(vec![0; 96])
                .build();
            let err =
                AttestationDoc::parse_unverified(&coset::CborSerializable::to_vec(cose).unwrap())
                    .unwrap_err();
            assert!(matches!(err, Error::UnsupportedHeader { .. }), "{err}");
        }
    }

    #[test]
    fn unix_millis_conversions() {
        let t = UnixMillis::from_system_time(REAL_TS.to_system_time()).unwrap();
        assert_eq!(t, REAL_TS);
        assert_eq!(t.as_secs(), 1_657_117_102);
        let before = UNIX_EPOCH - Duration::from_secs(1);
        assert!(matches!(
            UnixMillis::from_system_time(before),
            Err(Error::InvalidTime(_))
        ));
        assert!(PcrIndex::new(32).is_none());
        assert_eq!(PcrIndex::new(31).map(PcrIndex::get), Some(31));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
            let _ = AttestationDoc::parse_unverified(&bytes);
            let root = crate::TrustRoot::aws_nitro().unwrap();
            let _ = crate::verify(&bytes, &root, crate::ValidationTime::DocumentTimestamp);
        }

        #[test]
        fn mutated_real_documents_never_panic(
            edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
            cut in proptest::option::of(any::<prop::sample::Index>()),
        ) {
            let mut doc = REAL_DOC.to_vec();
            for (index, byte) in edits {
                let i = index.index(doc.len());
                doc[i] = byte;
            }
            if let Some(cut) = cut {
                doc.truncate(cut.index(doc.len()) + 1);
            }
            let root = crate::TrustRoot::aws_nitro().unwrap();
            let result = crate::verify(&doc, &root, crate::ValidationTime::DocumentTimestamp);
            // A mutated document must never verify unless the mutations were no-ops.
            if result.is_ok() {
                prop_assert_eq!(&doc[..], REAL_DOC);
            }
        }
    }
}
