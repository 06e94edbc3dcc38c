//! `ekms attestation fetch`: asks an appliance for a fresh attestation document bound to the
//! caller's nonce and writes it to a file, for `ekms attestation verify`.

use std::{path::PathBuf, process::ExitCode};

use anyhow::{Context as _, bail};

/// Arguments of `ekms attestation fetch`.
#[derive(clap::Args, Debug)]
pub struct FetchArgs {
    /// The appliance, e.g. http://127.0.0.1:8400.
    #[arg(long)]
    pub endpoint: String,
    /// Your nonce, hex (1 to 512 bytes); choose it fresh and random, then pass it to `verify`.
    #[arg(long, value_name = "HEX")]
    pub nonce: String,
    /// Where to write the document.
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
}

/// Fetches a document over HTTP.
pub async fn fetch(endpoint: &str, nonce_hex: &str) -> anyhow::Result<Vec<u8>> {
    if hex::decode(nonce_hex)
        .ok()
        .is_none_or(|n| n.is_empty() || n.len() > 512)
    {
        bail!("--nonce must be 1 to 512 bytes of hex");
    }
    let (status, body) = crate::http_client::request(
        endpoint,
        http::Method::GET,
        &format!("/ekms/attestation?nonce={nonce_hex}"),
        None,
    )
    .await?;
    if !status.is_success() {
        bail!("HTTP {status}: {}", String::from_utf8_lossy(&body));
    }
    Ok(body.to_vec())
}

/// Runs the command.
pub fn run_fetch(args: &FetchArgs) -> ExitCode {
    let result = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(anyhow::Error::from)
        .and_then(|rt| rt.block_on(fetch(&args.endpoint, &args.nonce)))
        .and_then(|doc| {
            std::fs::write(&args.out, &doc)
                .with_context(|| format!("writing {}", args.out.display()))?;
            Ok(doc.len())
        });
    match result {
        Ok(n) => {
            eprintln!(
                "ekms attestation fetch: wrote {n} bytes to {}; now check it with\n  ekms attestation verify --doc {} --nonce {} --at document --policy PCRS.json",
                args.out.display(),
                args.out.display(),
                args.nonce
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("ekms attestation fetch: {e:#}");
            ExitCode::FAILURE
        }
    }
}
