//! Pure cryptographic core of the M-of-N custody ceremony: Shamir shares of a domain key,
//! custodian P-384 keys (and their signatures on submitted shares), hybrid encryption to a P-384 key, the share envelopes, and the binding
//! of a secret the enclave delivers to a receiver's key.
//! No I/O: callers pass bytes and keys in. Only aws-lc-rs does cryptography (blahaj does the
//! GF(256) sharing arithmetic with aws-lc-rs randomness). Never logs or serializes a secret.

mod custodian;
mod delivery;
mod domain;
mod error;
mod seal;
mod shamir;
mod share_file;
mod submitted;

pub use custodian::{CUSTODIAN_SIGNATURE_LEN, CustodianKey, CustodianPublicKey, MAX_KEY_FILE_LEN};
pub use delivery::{
    DELIVERY_VERSION, Delivery, LABEL_CREDENTIAL, MAX_DELIVERY_ID_LEN, MAX_DELIVERY_NONCE_LEN,
    SecretKind, sealed_digest_hex,
};
pub use domain::{DOMAIN_FINGERPRINT_LEN, DomainSecret, fingerprint};
pub use error::{CustodyError, Result};
pub use seal::{
    LABEL_SHARE_TO_CUSTODIAN, LABEL_SHARE_TO_ENCLAVE, P384_SEC1_LEN, P384PublicKey,
    SEALED_OVERHEAD, SEALED_VERSION, open_with, seal_to,
};
pub use shamir::{MAX_SHARES, SHARE_LEN, Share, combine, combine_checked, split};
pub use share_file::{MAX_SHARE_JSON_LEN, SHARE_FORMAT_VERSION, ShareFile};
pub use submitted::{MAX_SESSION_LEN, SUBMITTED_VERSION, SubmittedShare, VerifiedSubmission};
