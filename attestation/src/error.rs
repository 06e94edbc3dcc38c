//! The one error type of this crate.
//!
//! Variants carry public values only (field names, certificate positions, PCR hex, times);
//! never key material, and never the simulation CA's private key.

use crate::PcrIndex;

/// Why a document, policy, trust root, NSM call or simulation CA was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The input was empty.
    #[error("attestation document is empty")]
    Empty,

    /// The input is longer than any document an NSM can produce.
    #[error("attestation document is {len} bytes, more than the {max}-byte limit")]
    TooLarge {
        /// Length of the input.
        len: usize,
        /// The limit.
        max: usize,
    },

    /// The outer COSE_Sign1 structure did not decode.
    #[error("malformed COSE_Sign1: {reason}")]
    MalformedCose {
        /// What the decoder said (describes the structure, not secrets).
        reason: String,
    },

    /// Bytes follow the CBOR item (outer document or payload).
    #[error("trailing bytes after the CBOR {what}")]
    TrailingBytes {
        /// Which item had trailing bytes.
        what: &'static str,
    },

    /// The document carries a CBOR tag other than COSE_Sign1 (18).
    #[error("unexpected CBOR tag {0}; expected COSE_Sign1 (18) or untagged")]
    UnexpectedTag(u64),

    /// The protected header does not say ES384, or carries unexpected parameters.
    #[error("unsupported COSE header: {reason}")]
    UnsupportedHeader {
        /// What was wrong with the header.
        reason: &'static str,
    },

    /// The COSE_Sign1 has no (or a detached) payload.
    #[error("COSE_Sign1 has no payload")]
    MissingPayload,

    /// The payload is not a CBOR map of the expected shape.
    #[error("malformed attestation payload: {reason}")]
    MalformedPayload {
        /// What was wrong.
        reason: String,
    },

    /// A required payload field is absent.
    #[error("attestation payload lacks required field `{0}`")]
    MissingField(&'static str),

    /// A payload map (or the PCR map) repeats a key.
    #[error("attestation payload repeats key `{0}`")]
    DuplicateKey(String),

    /// The payload carries a field that the Nitro format does not define.
    #[error("attestation payload has unknown field `{0}`")]
    UnknownField(String),

    /// A payload field breaks AWS's syntactic limits.
    #[error("attestation field `{field}` is invalid: {reason}")]
    InvalidField {
        /// The field.
        field: &'static str,
        /// Which limit it broke.
        reason: &'static str,
    },

    /// The COSE signature is not a raw 96-byte P-384 r‖s value.
    #[error("COSE signature is {0} bytes; ES384 needs 96")]
    BadSignatureLength(usize),

    /// The ES384 signature over the document does not verify with the leaf certificate's key.
    #[error("attestation document signature is invalid")]
    DocumentSignatureInvalid,

    /// A certificate did not parse as X.509 DER.
    #[error("certificate {position} is malformed: {reason}")]
    MalformedCertificate {
        /// Position in the chain (0 = root, last = leaf).
        position: usize,
        /// What the parser said.
        reason: String,
    },

    /// `cabundle[0]` is not the pinned trust root.
    #[error("the document's root certificate is not the pinned {expected} root")]
    RootMismatch {
        /// Which root was expected.
        expected: &'static str,
    },

    /// A certificate's issuer name is not its parent's subject.
    #[error("certificate {position}: issuer does not match the subject of its parent")]
    IssuerMismatch {
        /// Position in the chain.
        position: usize,
    },

    /// A certificate uses a signature or key algorithm other than ECDSA P-384 / SHA-384.
    #[error("certificate {position}: unsupported algorithm ({what})")]
    UnsupportedCertificateAlgorithm {
        /// Position in the chain.
        position: usize,
        /// Which algorithm field.
        what: &'static str,
    },

    /// A certificate's signature does not verify with its parent's key.
    #[error("certificate {position}: signature does not verify with its issuer's key")]
    CertificateSignatureInvalid {
        /// Position in the chain.
        position: usize,
    },

    /// The validation time is before a certificate's notBefore.
    #[error(
        "certificate {position} is not valid until {}; checked at {}",
        rfc3339(*not_before_unix),
        rfc3339(*at_unix)
    )]
    CertificateNotYetValid {
        /// Position in the chain.
        position: usize,
        /// notBefore, unix seconds.
        not_before_unix: u64,
        /// Validation time, unix seconds.
        at_unix: u64,
    },

    /// The validation time is after a certificate's notAfter.
    #[error(
        "certificate {position} expired at {}; checked at {}",
        rfc3339(*not_after_unix),
        rfc3339(*at_unix)
    )]
    CertificateExpired {
        /// Position in the chain.
        position: usize,
        /// notAfter, unix seconds.
        not_after_unix: u64,
        /// Validation time, unix seconds.
        at_unix: u64,
    },

    /// An issuing certificate lacks basicConstraints CA=true.
    #[error("certificate {position} issues certificates but is not a CA")]
    NotCa {
        /// Position in the chain.
        position: usize,
    },

    /// A CA's pathLenConstraint is exceeded by the intermediates below it.
    #[error("certificate {position}: path length constraint exceeded")]
    PathLenExceeded {
        /// Position of the constraining CA.
        position: usize,
    },

    /// A keyUsage extension is present but lacks the needed bit.
    #[error("certificate {position}: keyUsage lacks {usage}")]
    KeyUsageMissing {
        /// Position in the chain.
        position: usize,
        /// The missing usage.
        usage: &'static str,
    },

    /// A certificate has a critical extension this verifier does not understand (RFC 5280 §4.2).
    #[error("certificate {position}: unknown critical extension {oid}")]
    UnknownCriticalExtension {
        /// Position in the chain.
        position: usize,
        /// The extension's OID.
        oid: String,
    },

    /// A time could not be represented (before 1970, out of range, or unparsable).
    #[error("invalid time: {0}")]
    InvalidTime(String),

    /// A PCR value required by the policy differs from the document's.
    #[error("PCR{index} mismatch: expected {expected}, document has {actual}")]
    PcrMismatch {
        /// The PCR.
        index: PcrIndex,
        /// Expected value, hex.
        expected: String,
        /// Value in the document, hex.
        actual: String,
    },

    /// A PCR required by the policy is absent from the document.
    #[error("PCR{0} is required by the policy but absent from the document")]
    PcrMissing(PcrIndex),

    /// The document's nonce differs from the expected one.
    #[error("nonce mismatch: expected {expected}, document has {actual}")]
    NonceMismatch {
        /// Expected nonce, hex.
        expected: String,
        /// The document's nonce, hex, or "none".
        actual: String,
    },

    /// The document is older than the policy's maximum age.
    #[error("document is {age_ms} ms old; the policy allows {max_age_ms} ms")]
    TooOld {
        /// Age of the document.
        age_ms: u64,
        /// The policy's limit.
        max_age_ms: u64,
    },

    /// The document's timestamp is later than "now" by more than the policy's maximum age.
    #[error("document timestamp is {ahead_ms} ms in the future")]
    FromTheFuture {
        /// How far ahead.
        ahead_ms: u64,
    },

    /// The document comes from an enclave in debug mode (PCR0 all zero) and the policy forbids it.
    #[error("document is from a debug-mode enclave (PCR0 is all zeros)")]
    DebugMode,

    /// A PCR policy could not be built (bad JSON, hex, index or length).
    #[error("invalid PCR policy: {0}")]
    InvalidPolicy(String),

    /// A trust root PEM/DER did not parse or is not a CA certificate.
    #[error("invalid trust root: {0}")]
    InvalidTrustRoot(String),

    /// A root other than the AWS root was given without explicitly allowing simulation roots.
    #[error(
        "the given root is not the AWS Nitro root; simulation roots must be allowed explicitly"
    )]
    SimulationRootNotAllowed,

    /// A hex argument did not decode.
    #[error("invalid hex in {what}")]
    InvalidHex {
        /// Which argument.
        what: &'static str,
    },

    /// /dev/nsm could not be opened (not inside a Nitro Enclave).
    #[error("NSM device unavailable: {0}")]
    NsmUnavailable(String),

    /// The NSM answered with an error code.
    #[error("NSM returned an error: {0}")]
    NsmFailed(String),

    /// The NSM answered with a response of the wrong kind.
    #[error("NSM returned an unexpected response to {0}")]
    NsmUnexpectedResponse(&'static str),

    /// A PCR index is outside the NSM's bank.
    #[error("PCR index {0} is out of range")]
    PcrIndexOutOfRange(u16),

    /// The PCR is locked (read-only) and cannot be extended.
    #[error("PCR{0} is locked")]
    PcrLocked(u16),

    /// An NSM request argument exceeds the NSM's limit.
    #[error("NSM input `{what}` is {len} bytes, more than {max}")]
    NsmInputTooLarge {
        /// Which input.
        what: &'static str,
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },

    /// A cryptographic primitive (key generation, signing, RNG) failed.
    #[error("cryptographic operation failed: {0}")]
    Crypto(&'static str),

    /// A recipient's key or a `CiphertextForRecipient` envelope was refused.
    #[error("recipient: {0}")]
    Recipient(&'static str),

    /// The simulation CA could not be generated or issue a certificate.
    #[error("simulation CA error: {0}")]
    SimulationCa(String),

    /// A persisted simulation CA did not decode.
    #[error("persisted simulation CA is malformed: {0}")]
    MalformedSimulationCa(&'static str),

    /// Reading or writing a file failed.
    #[error("I/O error on {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
}

/// Formats unix seconds as RFC 3339 for messages.
fn rfc3339(secs: u64) -> String {
    crate::report::format_rfc3339(crate::UnixMillis::new(secs.saturating_mul(1000)))
}

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
