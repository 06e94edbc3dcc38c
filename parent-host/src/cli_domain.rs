//! `ekms domain init|status|rotate`: the operator's commands for the key domain, run on the
//! parent host against its own appliance (the appliance takes `init` and `rotate` from loopback
//! only).

use std::{
    fs,
    io::Write as _,
    os::unix::fs::OpenOptionsExt as _,
    path::{Path, PathBuf},
    process::ExitCode,
};

use anyhow::{Context as _, anyhow, bail};
use ekms_custody::CustodianPublicKey;

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
    /// Where to write the share files (NAME.share.json, one per custodian).
    #[arg(long, value_name = "DIR", default_value = ".")]
    pub out_dir: PathBuf,
}

/// Arguments of `ekms domain status` and `ekms domain rotate`.
#[derive(clap::Args, Debug)]
pub struct EndpointArgs {
    /// The appliance, e.g. http://127.0.0.1:8400.
    #[arg(long)]
    pub endpoint: String,
}

fn share_path(out_dir: &Path, custodian: &Path) -> PathBuf {
    let stem = custodian
        .file_stem()
        .map_or_else(|| "custodian".into(), |s| s.to_string_lossy().into_owned());
    out_dir.join(format!("{stem}.share.json"))
}

async fn init(args: &InitArgs) -> anyhow::Result<()> {
    let mut keys = Vec::new();
    for p in &args.custodians {
        let text = fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
        let key = CustodianPublicKey::from_json(&text).with_context(|| p.display().to_string())?;
        keys.push((p, text, key.fingerprint_hex()));
    }
    let outs: Vec<PathBuf> = keys
        .iter()
        .map(|(p, _, _)| share_path(&args.out_dir, p))
        .collect();
    if let Some(existing) = outs.iter().find(|p| p.exists()) {
        bail!(
            "{} exists; a share file is never overwritten",
            existing.display()
        );
    }
    let answer = crate::http_client::post_json(
        &args.endpoint,
        "/ekms/domain/init",
        &serde_json::json!({
            "custodians": keys.iter().map(|(_, t, _)| t.as_str()).collect::<Vec<_>>(),
            "threshold": args.threshold,
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
    for ((share, out), (_, _, fp)) in shares.iter().zip(&outs).zip(&keys) {
        let text = share
            .as_str()
            .ok_or_else(|| anyhow!("a share file is not text"))?;
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(out)
            .with_context(|| format!("creating {}", out.display()))?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        println!("  share for custodian {fp}: {}", out.display());
    }
    if let Some(c) = answer
        .get("credentials")
        .and_then(serde_json::Value::as_str)
    {
        println!("admin credential (profile ekms): {c}");
    }
    println!(
        "Give each custodian their share file. After a restart the enclave is sealed until \
         {} of them run `ekms custodian unseal`.",
        args.threshold
    );
    Ok(())
}

async fn status(args: &EndpointArgs) -> anyhow::Result<()> {
    let v = crate::http_client::get_json(&args.endpoint, "/ekms/custody").await?;
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
    let result = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(anyhow::Error::from)
        .and_then(|rt| rt.block_on(f));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ekms domain {name}: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs `ekms domain init`.
pub fn run_init(args: &InitArgs) -> ExitCode {
    run("init", init(args))
}

/// Runs `ekms domain status`.
pub fn run_status(args: &EndpointArgs) -> ExitCode {
    run("status", status(args))
}

/// Runs `ekms domain rotate`.
pub fn run_rotate(args: &EndpointArgs) -> ExitCode {
    run("rotate", rotate(args))
}
