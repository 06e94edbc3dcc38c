//! The trusted key core of Enclave KMS. It holds domain keys in memory only, seals every record
//! it hands to the parent host, verifies each client's SigV4 signature itself, enforces key state
//! from sealed metadata, and performs every cryptographic operation (aws-lc-rs only).
//!
//! It must never write a key in plaintext, log a secret, or trust anything the host says that
//! it has not authenticated. No HTTP and no disk here.

pub mod asymmetric;
pub mod attest;
pub mod audit;
pub mod auth;
pub mod ciphertext;
pub mod clock;
pub mod context;
pub mod core;
pub mod custody;
pub mod delivery;
pub mod domain;
pub mod error;
pub mod external_mu;
pub mod grant;
pub mod imported;
pub mod keyspec;
pub mod ledger;
pub mod material;
pub mod opened;
pub mod ops;
pub mod parsed_keys;
pub mod policy;
pub mod principal;
pub mod record;
pub mod replay;
pub mod replica;
pub mod server;
pub mod usage;
pub mod witness;
pub mod xks;

pub use crate::core::{Config, Core};
pub use error::{EnclaveError, KmsError};
