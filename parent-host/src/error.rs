//! Errors of the host, and the one mapping from enclave error codes to AWS's HTTP errors.

use ekms_wire::msg::KmsErrorCode;
use thiserror::Error;

/// Failures inside the host.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum HostError {
    /// The store failed.
    #[error("store: {0}")]
    Store(#[from] rusqlite::Error),
    /// A conditional write lost a race; the request is retried with fresh records.
    #[error("store write conflict")]
    Conflict,
    /// The enclave cannot be reached or did not answer; retryable.
    #[error("enclave unavailable: {0}")]
    Unavailable(String),
    /// The enclave refused the frame.
    #[error("enclave fault: {0:?}")]
    Fault(ekms_wire::msg::Fault),
    /// File system trouble (data dir, credentials file).
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// Startup could not complete.
    #[error("{0}")]
    Startup(String),
    /// A witnessed round did not complete (public text from the enclave); retryable.
    #[error("witnesses: {0}")]
    Witness(String),
    /// The XKS listener's TLS setup is unusable: its certificate, key or client CA.
    #[error("XKS TLS: {0}")]
    Tls(String),
}

impl HostError {
    /// The same failure for another waiting client (store and I/O errors keep only their text).
    #[must_use]
    pub fn clone_for_client(&self) -> Self {
        match self {
            Self::Conflict => Self::Conflict,
            Self::Fault(f) => Self::Fault(*f),
            Self::Witness(w) => Self::Witness(w.clone()),
            Self::Unavailable(u) => Self::Unavailable(u.clone()),
            other => Self::Startup(other.to_string()),
        }
    }
}

/// HTTP status AWS uses for an error code: 400 for client errors, 5xx only for retryable faults.
#[must_use]
pub fn http_status(code: KmsErrorCode) -> u16 {
    match code {
        KmsErrorCode::KMSInternalException => 500,
        _ => 400,
    }
}
