//! Builds the Enclave KMS enclave image file (EIF) reproducibly and reports its PCR measurements,
//! with the official `aws-nitro-enclaves-image-format` crate. It never runs the enclave executable,
//! never reaches the network, and never writes anything but the requested EIF.
//!
//! `build` makes the two ramdisks (bootstrap: Nitro `init` + `nsm.ko`; application: our static
//! executable under `rootfs/` with the init's `cmd` and `env`), writes the EIF and returns
//! PCR0/1/2 (+PCR8 when signed); `measure` reads an EIF back. See `docs/eif.md`.

mod blobs;
mod elf;
mod error;
mod image;
mod input;
mod measure;
mod measurements;
mod ramdisk;
mod signing;

pub use blobs::{DEFAULT_BLOBS_DIR, NitroBlobs};
pub use elf::{Arch, check_static_executable};
pub use error::EifError;
pub use image::{BuildOptions, BuildOutcome, DEFAULT_VSOCK_PORT, build, default_cmd, parse_cmd};
pub use measure::measure;
pub use measurements::{HASH_ALGORITHM, MeasurementDoc, Measurements};
pub use ramdisk::{
    ROOTFS_DIRS, Ramdisk, application as application_ramdisk, bootstrap as bootstrap_ramdisk,
};
pub use signing::SigningFiles;
