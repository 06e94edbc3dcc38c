//! `ekms attestation verify`: verify a Nitro attestation document and print it as JSON;
//! `ekms attestation mock`: make a SIMULATION-only document for a client enclave app.
//!
//! Thin on purpose: argument parsing, verification, policy and rendering live in
//! `ekms_attestation::report` (verify) and `crate::sim_attestation` (mock), where they are
//! unit-tested. This file reads the clock once and maps the outcome to an exit code; it must
//! never panic on any input.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::SystemTime;

use ekms_attestation::UnixMillis;
use ekms_attestation::report::{self, VerifyRequest};

use crate::domain_pin::DomainPin;
use crate::sim_attestation::{self, MockRequest};

/// Arguments of `ekms attestation verify`.
#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    /// The attestation document (raw `COSE_Sign1` bytes, tagged or untagged).
    #[arg(long, value_name = "FILE")]
    pub doc: PathBuf,
    /// Root certificate PEM to verify against instead of the built-in AWS Nitro root. A root
    /// other than the AWS root also needs --allow-simulation-root.
    #[arg(long, value_name = "PEM")]
    pub root: Option<PathBuf>,
    /// Check certificate validity at this RFC 3339 time, or `document` for the document's own
    /// timestamp. Default: now.
    #[arg(long, value_name = "RFC3339")]
    pub at: Option<String>,
    /// Require PCR N (0-4 or 8) to equal HEX. Repeatable.
    #[arg(long = "pcr", value_name = "N=HEX")]
    pub pcrs: Vec<String>,
    /// Expected PCRs as JSON: nitro-cli / ekms-eif `{"Measurements": {...}}` or `{"PCR0": ...}`.
    #[arg(long, value_name = "FILE.json")]
    pub policy: Option<PathBuf>,
    /// Require the document's nonce to equal HEX.
    #[arg(long, value_name = "HEX")]
    pub nonce: Option<String>,
    /// Accept documents from debug-mode enclaves (all-zero PCR0). Never in production.
    #[arg(long)]
    pub allow_debug: bool,
    /// Accept a root other than the AWS Nitro root (a simulation root). Never in production.
    #[arg(long)]
    pub allow_simulation_root: bool,
    /// Refuse a document whose user data names another key domain (or none); 16 hex.
    #[arg(long, value_name = "ID")]
    pub domain: Option<String>,
}

/// Runs `ekms attestation verify`; prints the decoded document as JSON on success.
#[must_use]
pub fn run_verify(args: &VerifyArgs) -> ExitCode {
    let now = match UnixMillis::from_system_time(SystemTime::now()) {
        Ok(now) => now,
        Err(e) => {
            warn(&format!(
                "ekms attestation verify: cannot read the clock: {e}"
            ));
            return ExitCode::from(2);
        }
    };
    let request = VerifyRequest {
        doc: args.doc.clone(),
        root: args.root.clone(),
        at: args.at.clone(),
        pcrs: args.pcrs.clone(),
        policy: args.policy.clone(),
        nonce: args.nonce.clone(),
        allow_debug: args.allow_debug,
        allow_simulation_root: args.allow_simulation_root,
    };
    let pin = match args.domain.as_deref().map(DomainPin::parse).transpose() {
        Ok(pin) => pin,
        Err(e) => {
            warn(&format!("ekms attestation verify: {e}"));
            return ExitCode::from(2);
        }
    };
    let outcome = report::run_verify(&request, now)
        .map_err(|e| e.to_string())
        .and_then(|verified| {
            if let Some(pin) = &pin {
                let user_data = verified
                    .user_data
                    .as_deref()
                    .and_then(|h| hex::decode(h).ok());
                pin.check_user_data(user_data.as_deref())
                    .map_err(|e| format!("{e:#}"))?;
            }
            let json = verified.to_json().map_err(|e| e.to_string())?;
            Ok((verified.simulation, json))
        });
    let (simulation, json) = match outcome {
        Ok(done) => done,
        Err(e) => {
            warn(&format!("ekms attestation verify: REFUSED: {e}"));
            return ExitCode::FAILURE;
        }
    };
    if simulation {
        warn(
            "WARNING: verified against a SIMULATION root. This document proves nothing about \
             real enclave hardware. Never in production.",
        );
    }
    // writeln!, not println!: a closed stdout (e.g. `| head`) must not panic.
    if writeln!(std::io::stdout().lock(), "{json}").is_err() {
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

/// Arguments of `ekms attestation mock`. SIMULATION ONLY: the document verifies against the
/// data dir's simulation root, never against the AWS root.
///
/// The document lists PCRs 0–15, as a real NSM does, plus any PCR 16–31 given with --pcr. A PCR
/// not given is SHA-384 of the ASCII text `ekms simulated PCR<n>` (e.g. `ekms simulated PCR0`):
/// fixed, documented and non-zero (`ekms_attestation::simulated_pcr`).
#[derive(Debug, clap::Args)]
#[command(
    after_help = "PCRs not given: PCR n = SHA-384 of the ASCII text `ekms simulated \
PCR<n>`, e.g. PCR0 = SHA-384(\"ekms simulated PCR0\") = 2b1a40e18def05955398795432ebb09cee3f5d9c\
84c1f326e60f34581fac249fc1d768a36ff8f7430712e0898bca9bef. Never zero: an all-zero PCR0 \
(debug mode) is refused."
)]
pub struct MockArgs {
    /// The simulation data dir (of `ekms serve --sim`) whose CA signs the document. It must
    /// already hold SIMULATION-ONLY-attestation-ca.secret; this command never creates one.
    #[arg(long, value_name = "DIR")]
    pub data_dir: PathBuf,
    /// Your enclave app's RSA public key (2048 bits or more): DER SubjectPublicKeyInfo or PEM
    /// ("-----BEGIN PUBLIC KEY-----").
    #[arg(long, value_name = "KEY")]
    pub public_key: PathBuf,
    /// Set PCR N (0-31) to HEX (48 bytes). Repeatable. A PCR 16-31 given here appears in the
    /// document. Not given: SHA-384 of "ekms simulated PCR<N>".
    #[arg(long = "pcr", value_name = "N=HEX")]
    pub pcrs: Vec<String>,
    /// PCR0, the SHA-384 of your enclave image (same as --pcr 0=HEX). An all-zero PCR0 (debug
    /// mode) is refused.
    #[arg(long, value_name = "HEX")]
    pub image_sha384: Option<String>,
    /// The document's nonce, hex (at most 512 bytes).
    #[arg(long, value_name = "HEX")]
    pub nonce: Option<String>,
    /// The document's user data, hex (at most 512 bytes).
    #[arg(long, value_name = "HEX")]
    pub user_data: Option<String>,
    /// Where to write the document (raw COSE_Sign1 bytes, as an NSM returns them).
    #[arg(long, value_name = "DOC")]
    pub out: PathBuf,
}

/// Runs `ekms attestation mock`: writes the document and says on stderr that it is a
/// SIMULATION-only one and which PCR0 it carries.
#[must_use]
pub fn run_mock(args: &MockArgs) -> ExitCode {
    let outcome = UnixMillis::from_system_time(SystemTime::now())
        .map_err(anyhow::Error::from)
        .and_then(|now| {
            let request = MockRequest {
                data_dir: args.data_dir.clone(),
                public_key: args.public_key.clone(),
                pcrs: args.pcrs.clone(),
                image_sha384: args.image_sha384.clone(),
                nonce: args.nonce.clone(),
                user_data: args.user_data.clone(),
            };
            sim_attestation::mock_document(&request, now)
        })
        .and_then(|doc| {
            std::fs::write(&args.out, &doc.bytes)
                .map_err(|e| anyhow::anyhow!("writing {}: {e}", args.out.display()))?;
            Ok(doc)
        });
    match outcome {
        Ok(doc) => {
            warn(&format!(
                "ekms attestation mock: wrote {}: a SIMULATION-ONLY attestation document (signed \
                 by {}'s simulation CA; never valid against the AWS root) with PCR0 {}",
                args.out.display(),
                args.data_dir.display(),
                hex::encode(doc.pcr0)
            ));
            ExitCode::SUCCESS
        }
        Err(e) => {
            warn(&format!("ekms attestation mock: REFUSED: {e:#}"));
            ExitCode::FAILURE
        }
    }
}

/// Writes a line to stderr; a closed stderr is ignored rather than a panic.
fn warn(line: &str) {
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}
