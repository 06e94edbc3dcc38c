//! Nitro attestation documents for Enclave KMS: strict parsing, verification against a pinned
//! root at a caller-given time, PCR policies, the NSM seam, and a mock NSM for simulation.
//!
//! Nothing here trusts a document's own CA bundle, reads a hidden clock, or accepts a
//! simulation root unless the caller built one by name.

mod chain;
mod doc;
mod error;
mod mock;
mod nsm;
mod payload;
mod policy;
pub mod recipient;
pub mod report;
mod root;
mod simca;
#[cfg(test)]
mod testutil;
mod verify;

pub use doc::{AttestationDoc, MAX_DOCUMENT_LEN, PCR_COUNT, Pcr, PcrIndex, UnixMillis};
pub use error::{Error, Result};
pub use mock::{MockNsm, SIMULATED_PCR_PREFIX, executable_pcr0, simulated_pcr};
pub use nsm::{MAX_NSM_INPUT_LEN, MAX_RANDOM_LEN, NitroNsm, Nsm, PcrState};
pub use policy::{POLICY_PCRS, PcrPolicy};
pub use root::{AWS_NITRO_ROOT_PEM, RootKind, TrustRoot};
pub use simca::SimulationCa;
pub use verify::{ValidationTime, VerifiedDoc, verify};
