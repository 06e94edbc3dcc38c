//! `ekms attestation verify`: verify a Nitro attestation document and print it as JSON.
//!
//! Thin on purpose: argument parsing, verification, policy and rendering live in
//! `ekms_attestation::report`, where they are unit-tested. This file reads the clock once and
//! maps the outcome to an exit code; it must never panic on any input.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::SystemTime;

use ekms_attestation::UnixMillis;
use ekms_attestation::report::{self, VerifyRequest};

use crate::domain_pin::DomainPin;

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

/// Writes a line to stderr; a closed stderr is ignored rather than a panic.
fn warn(line: &str) {
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}
