//! `ekms credential open`: the admin's side of a credential that `ekms domain init` saved sealed
//! (no private key was at hand then). It verifies the saved attestation document again (chain to
//! the root at the document's time, the nonce recorded when it arrived, the optional PCR policy
//! and domain pin, the binding to this credential) and only then decrypts with the admin's
//! private key and writes an AWS shared-credentials file.

use std::{
    path::{Path, PathBuf},
    process::ExitCode,
};

use anyhow::{Context as _, bail};
use ekms_custody::CustodianKey;

use crate::{
    attested_secret::{Freshness, SealedCredentialFile},
    cli_domain::root_and_policy,
    credentials,
};

/// Arguments of `ekms credential open`.
#[derive(clap::Args, Debug)]
pub struct OpenArgs {
    /// The sealed credential (admin.credential.json from `ekms domain init`).
    #[arg(long, value_name = "FILE")]
    pub file: PathBuf,
    /// The admin's private key (NAME.key from `ekms custodian keygen`).
    #[arg(long, value_name = "NAME.key")]
    pub key: PathBuf,
    /// Root certificate PEM instead of the built-in AWS Nitro root (a simulation root also needs
    /// --allow-simulation-root).
    #[arg(long, value_name = "PEM")]
    pub root: Option<PathBuf>,
    /// Accept a simulation root. Never in production.
    #[arg(long)]
    pub allow_simulation_root: bool,
    /// The PCRs the enclave must have shown (`ekms-eif measure` / nitro-cli JSON).
    #[arg(long, value_name = "PCRS.json")]
    pub policy: Option<PathBuf>,
    /// Refuse unless the credential is for this domain (16 hex).
    #[arg(long, value_name = "ID")]
    pub domain: Option<String>,
    /// Where to write the credential (its config file goes beside it). Default: `credentials`
    /// beside FILE.
    #[arg(long, value_name = "FILE")]
    pub credentials_out: Option<PathBuf>,
}

fn open(args: &OpenArgs) -> anyhow::Result<()> {
    let read =
        |p: &Path| std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()));
    let file = SealedCredentialFile::from_json(&read(&args.file)?)
        .with_context(|| args.file.display().to_string())?;
    let pem = zeroize::Zeroizing::new(read(&args.key)?);
    let key = CustodianKey::from_pem(&pem).context("your key file")?;
    let creds = args.credentials_out.clone().unwrap_or_else(|| {
        args.file
            .parent()
            .unwrap_or_else(|| Path::new("."))
            .join("credentials")
    });
    let config = credentials::config_beside(&creds);
    if let Some(existing) = [&creds, &config].into_iter().find(|p| p.exists()) {
        bail!(
            "{} exists; a credential is never overwritten",
            existing.display()
        );
    }
    let (root, policy) = root_and_policy(
        args.root.as_deref(),
        args.allow_simulation_root,
        args.policy.as_deref(),
    )?;
    let verified =
        file.secret()?
            .verify(&root, policy, Freshness::AsReceived, args.domain.as_deref())?;
    println!("verified: {}", verified.summary);
    if verified.simulation {
        eprintln!(
            "WARNING: verified against a SIMULATION root: this proves nothing about real enclave \
             hardware."
        );
    }
    let secret = verified.open_text(key.agreement_key())?;
    credentials::write(
        &creds,
        &config,
        &file.access_key_id,
        &secret,
        &file.region,
        Some(&file.endpoint),
    )?;
    println!(
        "admin credential {} (profile {}): {} (config: {})",
        file.access_key_id,
        credentials::PROFILE,
        creds.display(),
        config.display()
    );
    Ok(())
}

/// Runs `ekms credential open`.
pub fn run_open(args: &OpenArgs) -> ExitCode {
    match open(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ekms credential open: REFUSED: {e:#}");
            ExitCode::FAILURE
        }
    }
}
