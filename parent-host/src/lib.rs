//! The parent host of Enclave KMS: untrusted by design. It terminates HTTP (AWS JSON 1.1),
//! relays each signed request to the enclave with the sealed records it needs, makes the
//! enclave's writes durable before answering, and supervises the simulated enclave.
//!
//! It never sees a domain key or key material in plaintext and cannot mint a request: the
//! enclave verifies every signature and every record.

pub mod attested_secret;
pub mod audit;
pub mod cli_attestation;
pub mod cli_audit;
pub mod cli_credential;
pub mod cli_domain;
pub mod cli_principal;
pub mod cli_recipient;
pub mod cli_serve;
pub mod cli_xks;
pub mod client;
pub mod config_file;
pub mod credentials;
pub mod custodian;
pub mod custody;
pub mod data_guard;
pub mod domain_pin;
pub mod edge;
pub mod error;
pub mod fetch;
pub mod http;
pub mod http_client;
pub mod metrics;
pub mod relay;
pub mod serve;
pub mod signed_client;
pub mod sim_attestation;
pub mod store;
pub mod sts;
pub mod supervisor;
pub mod witness;
pub mod xks_http;
pub mod xks_tls;

pub use error::HostError;
