//! `ekms domain init|status|rotate`: the operator's commands for the key domain, run on the
//! parent host against its own appliance (the appliance takes `init` and `rotate` from loopback
//! only). `init` receives the admin credential sealed to the admin's key and verifies the
//! enclave's attestation for it before it decrypts and writes it.

use std::{
    fs,
    io::Write as _,
    os::unix::fs::OpenOptionsExt as _,
    path::{Path, PathBuf},
    process::ExitCode,
};

use anyhow::{Context as _, anyhow, bail};
use base64::Engine as _;
use ekms_attestation::{PcrPolicy, TrustRoot, UnixMillis};
use ekms_custody::{CustodianKey, CustodianPublicKey};

use crate::{
    attested_secret::{AttestedSecret, Freshness, SealedCredentialFile},
    credentials,
    domain_pin::DomainPin,
};

/// Arguments of `ekms domain init`.
#[derive(clap::Args, Debug)]
pub struct InitArgs {
    /// The appliance, e.g. http://127.0.0.1:8400.
    #[arg(long)]
    pub endpoint: String,
    /// A custodian's public key file (NAME.pub from `ekms custodian keygen`). Repeat for each.
    #[arg(long = "custodian", value_name = "NAME.pub", required = true)]
    pub custodians: Vec<PathBuf>,
    /// Shares needed to unseal the domain after a restart.
    #[arg(long)]
    pub threshold: u8,
    /// Witnesses the domain needs for ever (0: none, and rollback across a restart is
    /// possible). The appliance must be started with as many --witness URLs (docs/state.md).
    #[arg(long, default_value_t = 0)]
    pub witnesses: u8,
    /// Where to write the share files (NAME.share.json, one per custodian).
    #[arg(long, value_name = "DIR", default_value = ".")]
    pub out_dir: PathBuf,
    /// The public key (from `ekms custodian keygen`) the enclave encrypts the admin credential
    /// to. Default: the first --custodian key.
    #[arg(long, value_name = "ADMIN.pub")]
    pub admin_key: Option<PathBuf>,
    /// The admin's private key, to open the credential now. Default: the .key beside the .pub,
    /// if present; without one the sealed credential is saved for `ekms credential open`.
    #[arg(long, value_name = "NAME.key")]
    pub admin_key_private: Option<PathBuf>,
    /// Where to write the admin credential (AWS shared-credentials file, profile ekms; its config
    /// file goes beside it). Default: OUT_DIR/credentials.
    #[arg(long, value_name = "FILE")]
    pub credentials_out: Option<PathBuf>,
    /// Root certificate PEM instead of the built-in AWS Nitro root (a simulation root also needs
    /// --allow-simulation-root).
    #[arg(long, value_name = "PEM")]
    pub root: Option<PathBuf>,
    /// Accept a simulation root. Never in production.
    #[arg(long)]
    pub allow_simulation_root: bool,
    /// The PCRs the enclave must show (`ekms-eif measure` / nitro-cli JSON, or `{"PCR0": "hex"}`).
    #[arg(long, value_name = "PCRS.json")]
    pub policy: Option<PathBuf>,
}

/// Arguments of `ekms domain status`.
#[derive(clap::Args, Debug)]
pub struct StatusArgs {
    /// The appliance, e.g. http://127.0.0.1:8400.
    #[arg(long)]
    pub endpoint: String,
    /// Refuse unless the appliance reports this domain (16 hex).
    #[arg(long, value_name = "ID")]
    pub domain: Option<String>,
}

/// Arguments of `ekms domain rotate`.
#[derive(clap::Args, Debug)]
pub struct EndpointArgs {
    /// The appliance, e.g. http://127.0.0.1:8400.
    #[arg(long)]
    pub endpoint: String,
}

/// Arguments of `ekms domain accept-state`.
#[derive(clap::Args, Debug)]
pub struct AcceptStateArgs {
    /// The domain's writer, e.g. http://127.0.0.1:8400.
    #[arg(long)]
    pub endpoint: String,
    /// AWS profile whose credential (a principal of the domain) signs the request; default: the
    /// environment's credential, else the default profile.
    #[arg(long)]
    pub profile: Option<String>,
    /// Region the appliance serves.
    #[arg(long, default_value = "us-east-1")]
    pub region: String,
    /// Required: says you accept that a store rolled back while the appliance was down would
    /// now be served as the latest state.
    #[arg(long)]
    pub i_accept_rollback: bool,
}

/// Runs `ekms domain accept-state`.
pub fn run_accept_state(args: &AcceptStateArgs) -> ExitCode {
    run("accept-state", accept_state(args))
}

async fn accept_state(args: &AcceptStateArgs) -> anyhow::Result<()> {
    if !args.i_accept_rollback {
        anyhow::bail!(
            "this makes the writer serve the state its store holds without the witnesses' proof \
             that it is the latest (use it when a quorum of witnesses is lost for good). Add \
             --i-accept-rollback to go on."
        );
    }
    let creds = crate::signed_client::credentials(args.profile.as_deref()).await?;
    let answer = crate::signed_client::call(
        &args.endpoint,
        &args.region,
        "EkmsAcceptUnwitnessedState",
        &serde_json::json!({}),
        creds,
    )
    .await?;
    println!("{answer}");
    eprintln!(
        "ekms: the writer serves its loaded state; writes commit again once a quorum of \
         witnesses is enrolled (start them with --peer and list them with --witness)"
    );
    Ok(())
}

fn share_path(out_dir: &Path, custodian: &Path) -> PathBuf {
    let stem = custodian
        .file_stem()
        .map_or_else(|| "custodian".into(), |s| s.to_string_lossy().into_owned());
    out_dir.join(format!("{stem}.share.json"))
}

/// The admin's keys: the public key file's text, and the private key if at hand.
struct AdminKey {
    public: String,
    fingerprint: String,
    private: Option<CustodianKey>,
}

fn admin_key(args: &InitArgs) -> anyhow::Result<AdminKey> {
    let public_path = args
        .admin_key
        .as_ref()
        .or_else(|| args.custodians.first())
        .ok_or_else(|| anyhow!("no --admin-key and no --custodian"))?;
    let public = fs::read_to_string(public_path)
        .with_context(|| format!("reading {}", public_path.display()))?;
    let fingerprint = CustodianPublicKey::from_json(&public)
        .with_context(|| public_path.display().to_string())?
        .fingerprint_hex();
    let private_path = args
        .admin_key_private
        .clone()
        .or_else(|| Some(public_path.with_extension("key")).filter(|p| p.exists()));
    let private = match private_path {
        Some(p) => {
            let pem = zeroize::Zeroizing::new(
                fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?,
            );
            let key = CustodianKey::from_pem(&pem).with_context(|| p.display().to_string())?;
            if key.public_key().fingerprint_hex() != fingerprint {
                bail!(
                    "{} is not the private half of {} (admin key {fingerprint})",
                    p.display(),
                    public_path.display()
                );
            }
            Some(key)
        }
        None => None,
    };
    Ok(AdminKey {
        public,
        fingerprint,
        private,
    })
}

/// The trust root and PCR policy from `--root`, `--allow-simulation-root` and `--policy`.
pub fn root_and_policy(
    root: Option<&Path>,
    allow_simulation_root: bool,
    policy: Option<&Path>,
) -> anyhow::Result<(TrustRoot, PcrPolicy)> {
    let read = |p: &Path| fs::read_to_string(p).with_context(|| format!("reading {}", p.display()));
    let root = match root {
        Some(p) => TrustRoot::from_operator_pem(&read(p)?, allow_simulation_root)?,
        None => TrustRoot::aws_nitro()?,
    };
    let policy = match policy {
        Some(p) => PcrPolicy::from_json(&read(p)?).context("the policy file")?,
        None => PcrPolicy::new(),
    };
    Ok((root, policy))
}

fn create_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(bytes)?;
    f.sync_all()?;
    Ok(())
}

/// Verifies the delivered credential (now) and writes it as a shared-credentials file, or, with
/// no private key, saves it sealed. Returns the lines to print.
fn receive_credential(
    secret: AttestedSecret,
    admin: &AdminKey,
    (root, policy): (TrustRoot, PcrPolicy),
    (creds, sealed_out): (&Path, &Path),
    (region, endpoint): (&str, &str),
) -> anyhow::Result<Vec<String>> {
    let saved = SealedCredentialFile::new(&secret, region, endpoint);
    let save = || create_private(sealed_out, saved.to_json()?.as_bytes());
    let now = UnixMillis::from_system_time(std::time::SystemTime::now())?;
    let verified = match secret.verify(&root, policy, Freshness::Now(now), None) {
        Ok(v) => v,
        Err(e) => {
            save()?;
            bail!(
                "REFUSED: {e:#}. Nothing was decrypted; the sealed credential is saved in {} \
                 (open it with `ekms credential open` once you trust the appliance)",
                sealed_out.display()
            );
        }
    };
    let mut lines = vec![format!("verified: {}", verified.summary)];
    if verified.simulation {
        lines.push(
            "WARNING: verified against a SIMULATION root: this proves nothing about real enclave \
             hardware."
                .into(),
        );
    }
    if let Some(key) = &admin.private {
        let text = verified.open_text(key.agreement_key())?;
        let config = credentials::config_beside(creds);
        credentials::write(
            creds,
            &config,
            verified.secret().id(),
            &text,
            region,
            Some(endpoint),
        )?;
        lines.push(format!(
            "admin credential {} (profile {}): {} (config: {})",
            verified.secret().id(),
            credentials::PROFILE,
            creds.display(),
            config.display()
        ));
    } else {
        save()?;
        lines.push(format!(
            "admin credential {} is sealed to admin key {} in {}; its holder opens it with \
             `ekms credential open --file {} --key ADMIN.key`",
            verified.secret().id(),
            admin.fingerprint,
            sealed_out.display(),
            sealed_out.display()
        ));
    }
    Ok(lines)
}

/// The region and the delivered admin credential in the appliance's answer to init.
fn parse_answer(
    answer: &serde_json::Value,
    nonce: &[u8],
) -> anyhow::Result<(String, AttestedSecret)> {
    let str_field = |name: &str| {
        answer
            .get(name)
            .and_then(serde_json::Value::as_str)
            .ok_or_else(|| anyhow!("the appliance's answer has no {name}"))
    };
    let b64_field = |name: &str| {
        str_field(name).and_then(|s| {
            base64::engine::general_purpose::STANDARD
                .decode(s)
                .with_context(|| format!("the appliance's {name}"))
        })
    };
    let secret = AttestedSecret::credential(
        str_field("domain")?,
        str_field("access_key_id")?,
        nonce,
        b64_field("sealed_credential")?,
        b64_field("document")?,
    )?;
    Ok((str_field("region")?.to_owned(), secret))
}

async fn init(args: &InitArgs) -> anyhow::Result<()> {
    let mut keys = Vec::new();
    for p in &args.custodians {
        let text = fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
        let key = CustodianPublicKey::from_json(&text).with_context(|| p.display().to_string())?;
        keys.push((p, text, key.fingerprint_hex()));
    }
    let admin = admin_key(args)?;
    let trust = root_and_policy(
        args.root.as_deref(),
        args.allow_simulation_root,
        args.policy.as_deref(),
    )?;
    let mut outs: Vec<PathBuf> = keys
        .iter()
        .map(|(p, _, _)| share_path(&args.out_dir, p))
        .collect();
    let creds = args
        .credentials_out
        .clone()
        .unwrap_or_else(|| args.out_dir.join("credentials"));
    let sealed_out = args.out_dir.join("admin.credential.json");
    let mut never_overwritten = outs.clone();
    never_overwritten.push(sealed_out.clone());
    if admin.private.is_some() {
        never_overwritten.push(credentials::config_beside(&creds));
        never_overwritten.push(creds.clone());
    }
    if let Some(existing) = never_overwritten.iter().find(|p| p.exists()) {
        bail!(
            "{} exists; a share file or credential is never overwritten",
            existing.display()
        );
    }
    let nonce = crate::custodian::fresh_nonce()?;
    let answer = crate::http_client::post_json(
        &args.endpoint,
        "/ekms/domain/init",
        &serde_json::json!({
            "custodians": keys.iter().map(|(_, t, _)| t.as_str()).collect::<Vec<_>>(),
            "threshold": args.threshold,
            "admin_key": admin.public,
            "nonce": hex::encode(&nonce),
            "witnesses": args.witnesses,
        }),
    )
    .await?;
    let shares = answer
        .get("shares")
        .and_then(serde_json::Value::as_array)
        .filter(|s| s.len() == keys.len())
        .ok_or_else(|| anyhow!("the appliance returned no share files"))?;
    fs::create_dir_all(&args.out_dir)?;
    let domain = answer
        .get("domain")
        .and_then(serde_json::Value::as_str)
        .unwrap_or("?");
    println!(
        "created domain {domain}: {}-of-{} custody",
        args.threshold,
        keys.len()
    );
    for ((share, out), (_, _, fp)) in shares.iter().zip(outs.drain(..)).zip(&keys) {
        let text = share
            .as_str()
            .ok_or_else(|| anyhow!("a share file is not text"))?;
        create_private(&out, text.as_bytes())?;
        println!("  share for custodian {fp}: {}", out.display());
    }
    // The shares are written first: the domain exists now, whatever the credential's fate.
    let (region, secret) = parse_answer(&answer, &nonce)?;
    for line in receive_credential(
        secret,
        &admin,
        trust,
        (&creds, &sealed_out),
        (&region, &args.endpoint),
    )? {
        println!("{line}");
    }
    println!(
        "Give each custodian their share file. After a restart the enclave is sealed until \
         {} of them run `ekms custodian unseal`.",
        args.threshold
    );
    Ok(())
}

async fn status(args: &StatusArgs) -> anyhow::Result<()> {
    let pin = args.domain.as_deref().map(DomainPin::parse).transpose()?;
    let v = crate::http_client::get_json(&args.endpoint, "/ekms/custody").await?;
    if let Some(pin) = pin {
        pin.check(
            v.get("domain").and_then(serde_json::Value::as_str),
            "the appliance",
        )?;
    }
    println!("{}", crate::custodian::describe_state(&v));
    println!("{}", serde_json::to_string_pretty(&v)?);
    Ok(())
}

async fn rotate(args: &EndpointArgs) -> anyhow::Result<()> {
    let v = crate::http_client::post_json(
        &args.endpoint,
        "/ekms/domain/rotate",
        &serde_json::json!({}),
    )
    .await?;
    let keys = v.get("keys").and_then(serde_json::Value::as_array);
    println!(
        "rotated: new records are sealed under domain key {}; {} records are being re-sealed in \
         the background, then older keys are retired (see `ekms domain status`)",
        keys.and_then(|k| k.last())
            .and_then(serde_json::Value::as_str)
            .unwrap_or("?"),
        v.get("on_older_keys")
            .and_then(serde_json::Value::as_u64)
            .unwrap_or(0)
    );
    Ok(())
}

fn run(name: &str, f: impl std::future::Future<Output = anyhow::Result<()>>) -> ExitCode {
    crate::signed_client::run_command(&format!("ekms domain {name}"), f)
}

/// Runs `ekms domain init`.
pub fn run_init(args: &InitArgs) -> ExitCode {
    run("init", init(args))
}

/// Runs `ekms domain status`.
pub fn run_status(args: &StatusArgs) -> ExitCode {
    run("status", status(args))
}

/// Runs `ekms domain rotate`.
pub fn run_rotate(args: &EndpointArgs) -> ExitCode {
    run("rotate", rotate(args))
}
