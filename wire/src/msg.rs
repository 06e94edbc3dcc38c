//! The messages carried in frames: host → enclave ([`HostRequest`]) and enclave → host
//! ([`EnclaveResponse`]). Pure serde data; a sealed record is an opaque [`SealedBlob`] here.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A record sealed by the enclave (key, alias or principal). Opaque to the host.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedBlob(#[serde(with = "serde_bytes")] pub Vec<u8>);

impl fmt::Debug for SealedBlob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SealedBlob({} bytes)", self.0.len())
    }
}

/// A request from the host.
#[derive(Debug, Serialize, Deserialize)]
pub enum HostRequest {
    /// Health and identity of the enclave; also delivers the one-time genesis credential.
    Status,
    /// A client's signed KMS call with the sealed records it needs.
    Kms(Box<KmsCall>),
    /// A fresh attestation document bound to the client's nonce, carrying the enclave's per-boot
    /// identity public key.
    Attest {
        /// The client's nonce (at most 512 bytes).
        #[serde(with = "serde_bytes")]
        nonce: Vec<u8>,
    },
    /// Ask the enclave to check that a sealed record is authentic (used by tests and tooling).
    Open {
        /// The record.
        sealed: SealedBlob,
    },
}

/// The HTTP request exactly as the client sent it; the enclave verifies its SigV4 signature.
#[derive(Clone, Serialize, Deserialize)]
pub struct HttpRequest {
    /// HTTP method.
    pub method: String,
    /// Path and query.
    pub uri: String,
    /// Header names (lower case) and raw values, in arrival order.
    pub headers: Vec<(String, serde_bytes::ByteBuf)>,
    /// The body.
    #[serde(with = "serde_bytes")]
    pub body: Vec<u8>,
}

impl fmt::Debug for HttpRequest {
    // Bodies may hold plaintext: never print them.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "HttpRequest({} {}, {} headers, {} body bytes)",
            self.method,
            self.uri,
            self.headers.len(),
            self.body.len()
        )
    }
}

/// A KMS call relayed by the host.
#[derive(Debug, Serialize, Deserialize)]
pub struct KmsCall {
    /// The signed request.
    pub http: HttpRequest,
    /// The sealed principal named by the request's access key id, if the host has one.
    pub principal: Option<SealedBlob>,
    /// Sealed key records the call refers to (and, for listings, the page of keys).
    pub keys: Vec<SealedBlob>,
    /// Sealed alias records the call refers to (and, for listings, the page of aliases).
    pub aliases: Vec<SealedBlob>,
    /// For list operations: the marker of the next page, if there is one.
    pub next_marker: Option<String>,
}

/// A reply from the enclave.
#[derive(Debug, Serialize, Deserialize)]
pub enum EnclaveResponse {
    /// Answer to [`HostRequest::Status`].
    Status(StatusInfo),
    /// Answer to [`HostRequest::Kms`].
    Kms(KmsOutcome),
    /// Answer to [`HostRequest::Open`]: the record is authentic and of this kind and id.
    Opened {
        /// "key", "alias" or "principal".
        kind: String,
        /// The record's id.
        id: String,
    },
    /// Answer to [`HostRequest::Attest`]: the document (untagged COSE_Sign1).
    Attestation {
        /// The document.
        #[serde(with = "serde_bytes")]
        document: Vec<u8>,
    },
    /// The request could not be processed at all.
    Fault(Fault),
}

/// Typed failure of a frame (never free text about secrets).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Fault {
    /// The frame did not decode.
    Malformed,
    /// The frame's protocol version is not supported.
    Version,
    /// The enclave has no domain key loaded.
    Sealed,
    /// A sealed record failed authentication.
    BadRecord,
    /// A sealed record is older than one the enclave already opened: the host must re-read its
    /// store and retry (a stale cache, or a rollback attempt).
    StaleRecord,
    /// The request's input is out of bounds (for example an oversized nonce).
    BadInput,
    /// An internal failure; retryable.
    Internal,
}

/// Identity and state of an enclave.
#[derive(Debug, Serialize, Deserialize)]
pub struct StatusInfo {
    /// Region the enclave serves.
    pub region: String,
    /// Account id the enclave serves.
    pub account: String,
    /// Public fingerprint of the current domain key (hex).
    pub domain_fingerprint: String,
    /// True when the domain key came from the development custody file.
    pub dev_custody: bool,
    /// Present exactly once per domain: the administrator credential made at domain creation.
    pub genesis: Option<Genesis>,
}

/// The administrator credential created with a new domain.
#[derive(Serialize, Deserialize)]
pub struct Genesis {
    /// The sealed principal record for the host to store.
    pub principal: SealedBlob,
    /// Access key id.
    pub access_key_id: String,
    /// Secret access key, handed to the operator once.
    pub secret_access_key: Secret,
}

impl fmt::Debug for Genesis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Genesis({})", self.access_key_id)
    }
}

/// A secret string that is wiped from memory when dropped and never printed.
#[derive(Serialize, Deserialize, Default)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    #[must_use]
    pub fn new(s: String) -> Self {
        Self(s)
    }
    /// The secret, for the one place that must write it out.
    #[must_use]
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl Drop for Secret {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.0);
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// The result of a KMS call.
#[derive(Serialize, Deserialize)]
pub enum KmsOutcome {
    /// Success: the JSON response body, and the writes the host must make durable first.
    Ok {
        /// AWS JSON 1.1 response body. May contain plaintext (Decrypt): never logged.
        #[serde(with = "serde_bytes")]
        body: Vec<u8>,
        /// Store writes, applied in one transaction before the response is released.
        writes: Vec<StoreWrite>,
    },
    /// An AWS KMS error.
    Err {
        /// The error code.
        code: KmsErrorCode,
        /// AWS-style message; public values only.
        message: String,
    },
}

impl fmt::Debug for KmsOutcome {
    // A success body may hold plaintext (Decrypt, GenerateDataKey): never print it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Ok { body, writes } => {
                write!(f, "Ok({} body bytes, {} writes)", body.len(), writes.len())
            }
            Self::Err { code, message } => write!(f, "Err({code:?}: {message})"),
        }
    }
}

/// A durable change the enclave asks the host to make.
#[derive(Debug, Serialize, Deserialize)]
pub enum StoreWrite {
    /// Insert or replace a key record.
    PutKey {
        /// Key id (UUID).
        key_id: String,
        /// Generation of the new record; the store holds `expected` before the write.
        generation: u64,
        /// Generation the store must hold now (`None`: the key must not exist).
        expected: Option<u64>,
        /// The sealed record.
        sealed: SealedBlob,
        /// Key state, public index for the deletion sweeper and listings.
        state: String,
        /// Deletion date (Unix seconds) for keys pending deletion.
        deletion_date: Option<i64>,
    },
    /// Insert or replace an alias record.
    PutAlias {
        /// Alias name (`alias/...`).
        name: String,
        /// Target key id (UUID), public index for listings.
        key_id: String,
        /// Generation of the new record.
        generation: u64,
        /// Generation the store must hold now (`None`: the alias must not exist).
        expected: Option<u64>,
        /// The sealed record.
        sealed: SealedBlob,
    },
    /// Remove an alias.
    DeleteAlias {
        /// Alias name.
        name: String,
        /// Generation the store must hold now.
        expected: u64,
    },
}

/// AWS KMS error codes the enclave produces. Their `__type` names and HTTP statuses are mapped
/// at the host's HTTP edge only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
#[allow(missing_docs)] // the variant names are AWS's own error codes
pub enum KmsErrorCode {
    AccessDeniedException,
    AlreadyExistsException,
    DisabledException,
    DryRunOperationException,
    IncompleteSignatureException,
    IncorrectKeyException,
    InvalidAliasNameException,
    InvalidArnException,
    InvalidCiphertextException,
    InvalidKeyUsageException,
    InvalidMarkerException,
    InvalidSignatureException,
    KMSInternalException,
    KMSInvalidStateException,
    LimitExceededException,
    MissingAuthenticationTokenException,
    NotFoundException,
    SerializationException,
    TagException,
    UnknownOperationException,
    UnrecognizedClientException,
    UnsupportedOperationException,
    ValidationException,
}

impl KmsErrorCode {
    /// The AWS `__type` name.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::AccessDeniedException => "AccessDeniedException",
            Self::AlreadyExistsException => "AlreadyExistsException",
            Self::DisabledException => "DisabledException",
            Self::DryRunOperationException => "DryRunOperationException",
            Self::IncompleteSignatureException => "IncompleteSignatureException",
            Self::IncorrectKeyException => "IncorrectKeyException",
            Self::InvalidAliasNameException => "InvalidAliasNameException",
            Self::InvalidArnException => "InvalidArnException",
            Self::InvalidCiphertextException => "InvalidCiphertextException",
            Self::InvalidKeyUsageException => "InvalidKeyUsageException",
            Self::InvalidMarkerException => "InvalidMarkerException",
            Self::InvalidSignatureException => "InvalidSignatureException",
            Self::KMSInternalException => "KMSInternalException",
            Self::KMSInvalidStateException => "KMSInvalidStateException",
            Self::LimitExceededException => "LimitExceededException",
            Self::MissingAuthenticationTokenException => "MissingAuthenticationTokenException",
            Self::NotFoundException => "NotFoundException",
            Self::SerializationException => "SerializationException",
            Self::TagException => "TagException",
            Self::UnknownOperationException => "UnknownOperationException",
            Self::UnrecognizedClientException => "UnrecognizedClientException",
            Self::UnsupportedOperationException => "UnsupportedOperationException",
            Self::ValidationException => "ValidationException",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_prints_bodies_or_secrets() {
        let ok = KmsOutcome::Ok {
            body: b"{\"Plaintext\":\"c2VjcmV0\"}".to_vec(),
            writes: vec![],
        };
        assert!(!format!("{ok:?}").contains("c2VjcmV0"));
        let http = HttpRequest {
            method: "POST".into(),
            uri: "/".into(),
            headers: vec![],
            body: b"c2VjcmV0".to_vec(),
        };
        assert!(!format!("{http:?}").contains("c2VjcmV0"));
        assert_eq!(
            format!("{:?}", Secret::new("hunter2".into())),
            "Secret(<redacted>)"
        );
    }
}
