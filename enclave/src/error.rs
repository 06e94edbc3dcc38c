//! Errors of the enclave: [`KmsError`] is what a client gets (an AWS error code and a message of
//! public values); [`EnclaveError`] is internal and never leaves the enclave as text.

use ekms_wire::msg::KmsErrorCode;
use thiserror::Error;

/// An AWS KMS error for the client.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{code:?}: {message}")]
pub struct KmsError {
    /// The AWS error code.
    pub code: KmsErrorCode,
    /// Message; public values only (ids, ARNs, limits), never key material or plaintext.
    pub message: String,
}

impl KmsError {
    /// Builds an error.
    pub fn new(code: KmsErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
    /// `ValidationException`.
    pub fn validation(message: impl Into<String>) -> Self {
        Self::new(KmsErrorCode::ValidationException, message)
    }
    /// `ValidationException` for a missing required member, in AWS's words.
    pub fn required(member: &str) -> Self {
        Self::validation(format!(
            "1 validation error detected: Value null at '{member}' failed to satisfy constraint: Member must not be null"
        ))
    }
    /// `InvalidCiphertextException` with AWS's empty message: no hint of what failed.
    pub fn invalid_ciphertext() -> Self {
        Self::new(KmsErrorCode::InvalidCiphertextException, "")
    }
    /// `KMSInternalException`: retryable.
    pub fn internal() -> Self {
        Self::new(
            KmsErrorCode::KMSInternalException,
            "An internal error occurred in the enclave; retry the request.",
        )
    }
}

/// Internal failures of the enclave.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum EnclaveError {
    /// A sealed record failed authentication or does not parse. Deliberately opaque.
    #[error("sealed record is not authentic")]
    BadRecord,
    /// A sealed record is older than one this enclave has already opened (rollback).
    #[error("sealed record is stale")]
    StaleRecord,
    /// The random generator or a primitive failed.
    #[error("cryptographic primitive failed")]
    Crypto,
    /// No domain key is loaded.
    #[error("the enclave is sealed: no domain key is loaded")]
    Sealed,
    /// An input is out of bounds.
    #[error("input out of bounds")]
    BadInput,
    /// Serializing a record failed.
    #[error("record encoding failed")]
    Encoding,
    /// A simulation-only setting (a clock offset) was asked of an enclave on real hardware.
    #[error("this setting exists only in simulation (mock NSM)")]
    SimulationOnly,
}

impl From<aws_lc_rs::error::Unspecified> for EnclaveError {
    fn from(_: aws_lc_rs::error::Unspecified) -> Self {
        Self::Crypto
    }
}

impl From<EnclaveError> for KmsError {
    fn from(e: EnclaveError) -> Self {
        match e {
            EnclaveError::BadRecord => Self::new(
                KmsErrorCode::KMSInvalidStateException,
                "The key record presented by the host failed authentication.",
            ),
            _ => Self::internal(),
        }
    }
}
