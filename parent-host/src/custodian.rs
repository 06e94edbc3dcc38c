//! The custodian's tools for the M-of-N custody ceremony.
//!
//! `ekms custodian keygen` makes a P-384 key pair: the private key (PKCS#8 PEM) is written with
//! mode 0600 and never leaves the custodian; the public key file (JSON with its fingerprint) is
//! what the domain's operator collects.
//!
//! `ekms custodian unseal` asks the appliance for an attestation document bound to a fresh nonce
//! of its own, verifies it (chain to the root, signature, the custodian's PCR policy, nonce,
//! age, the domain named in the document), and only then opens its share, re-encrypts it to
//! the identity key in the document (only the enclave that was measured can read it) and signs
//! the submission with the custodian's key: the enclave takes share `i` only from the custodian
//! its domain record lists at `i`.

use std::{
    fs,
    io::Write as _,
    os::unix::fs::OpenOptionsExt as _,
    path::{Path, PathBuf},
    process::ExitCode,
};

use anyhow::{Context as _, anyhow, bail};
use ekms_attestation::{PcrPolicy, TrustRoot, UnixMillis, ValidationTime, verify};
use ekms_custody::{CustodianKey, P384PublicKey, ShareFile};

/// Oldest attestation document a custodian accepts.
const MAX_DOC_AGE: std::time::Duration = std::time::Duration::from_mins(5);

/// Arguments of `ekms custodian keygen`.
#[derive(clap::Args, Debug)]
pub struct KeygenArgs {
    /// Base name: writes NAME.key (private, 0600) and NAME.pub (public).
    #[arg(long, value_name = "NAME")]
    pub out: PathBuf,
}

fn with_suffix(base: &Path, suffix: &str) -> PathBuf {
    let mut s = base.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// Makes a key pair and writes both files; refuses to overwrite an existing key.
pub fn keygen(base: &Path) -> anyhow::Result<(PathBuf, PathBuf, String)> {
    let (key_path, pub_path) = (with_suffix(base, ".key"), with_suffix(base, ".pub"));
    let key = CustodianKey::generate()?;
    let pem = key.to_pem()?;
    let public = key.public_key().to_json()?;
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&key_path)
        .with_context(|| {
            format!(
                "creating {} (an existing key is never overwritten)",
                key_path.display()
            )
        })?;
    f.write_all(pem.as_bytes())?;
    f.sync_all()?;
    fs::write(&pub_path, public).with_context(|| format!("writing {}", pub_path.display()))?;
    Ok((key_path, pub_path, key.public_key().fingerprint_hex()))
}

/// Runs the command.
pub fn run_keygen(args: &KeygenArgs) -> ExitCode {
    match keygen(&args.out) {
        Ok((key, public, fp)) => {
            println!(
                "custodian key {fp}\n  private: {} (mode 0600; keep it offline, never share it)\n  public:  {} (give this to the domain operator)",
                key.display(),
                public.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("ekms custodian keygen: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Arguments of `ekms custodian unseal`.
#[derive(clap::Args, Debug)]
pub struct UnsealArgs {
    /// Your share file (from `ekms domain init`).
    #[arg(long, value_name = "FILE")]
    pub share: PathBuf,
    /// Your private key (NAME.key from `ekms custodian keygen`).
    #[arg(long, value_name = "PRIV")]
    pub key: PathBuf,
    /// The PCRs the enclave must show: `ekms-eif measure` / nitro-cli JSON, or `{"PCR0": "hex"}`.
    #[arg(long, value_name = "PCRS.json")]
    pub policy: PathBuf,
    /// The appliance, e.g. http://127.0.0.1:8400.
    #[arg(long)]
    pub endpoint: String,
    /// Root certificate PEM instead of the built-in AWS Nitro root (a simulation root also needs
    /// --allow-simulation-root).
    #[arg(long, value_name = "PEM")]
    pub root: Option<PathBuf>,
    /// Accept a simulation root. Never in production.
    #[arg(long)]
    pub allow_simulation_root: bool,
    /// Refuse unless the share and the enclave's document are of this domain (16 hex).
    #[arg(long, value_name = "ID")]
    pub domain: Option<String>,
}

/// A share ready to submit, and what was verified to get there.
#[derive(Debug)]
pub struct Prepared {
    /// The submitted share (JSON), sealed to the attested identity key and signed with the
    /// custodian's key.
    pub submission: String,
    /// Domain id (hex).
    pub domain: String,
    /// One line saying what was verified.
    pub verified: String,
}

/// 32 fresh random bytes.
pub fn fresh_nonce() -> anyhow::Result<Vec<u8>> {
    let mut n = vec![0u8; 32];
    aws_lc_rs::rand::fill(&mut n).map_err(|_| anyhow!("the random generator failed"))?;
    Ok(n)
}

/// The custodian's checks and re-encryption: verifies `document` against `root`, `policy`, our
/// `nonce` and the share's domain, then seals the share to the document's identity key and signs
/// the submission (bound to that key and `nonce`) with `key`.
pub fn prepare(
    document: &[u8],
    nonce: &[u8],
    root: &TrustRoot,
    policy: PcrPolicy,
    share: &ShareFile,
    key: &CustodianKey,
) -> anyhow::Result<Prepared> {
    // Our own share first: a wrong key file is the custodian's mistake, not the enclave's.
    share
        .decrypt(key)
        .context("opening your share with your key")?;
    let now = UnixMillis::from_system_time(std::time::SystemTime::now())?;
    let verified = verify(document, root, ValidationTime::At(now))
        .context("the enclave's attestation document did not verify")?;
    let pinned: Vec<String> = policy
        .expected_pcrs()
        .keys()
        .map(|i| format!("PCR{i}"))
        .collect();
    policy
        .expect_nonce(nonce)
        .max_age(MAX_DOC_AGE)
        .check(&verified, now)
        .context("the enclave does not satisfy your policy")?;
    let domain = share.domain_id();
    let user_data = verified.doc().user_data().unwrap_or_default();
    let expected = format!("ekms/v1 domain={domain} state=");
    let state = std::str::from_utf8(user_data)
        .ok()
        .and_then(|u| u.strip_prefix(&expected))
        .ok_or_else(|| {
            anyhow!(
                "the enclave serves another domain ({:?}); your share is for {domain}",
                String::from_utf8_lossy(user_data)
            )
        })?;
    if state != "sealed" {
        bail!("the enclave's domain {domain} is {state}, not sealed: nothing to do");
    }
    let identity = verified
        .doc()
        .public_key()
        .ok_or_else(|| anyhow!("the document carries no identity key"))
        .and_then(|k| P384PublicKey::from_sec1(k).map_err(anyhow::Error::from))?;
    let submitted = share.reseal_for_enclave(key, &identity, nonce)?;
    let root_note = if verified.is_simulation() {
        "a SIMULATION root (never in production)"
    } else {
        "the AWS Nitro root"
    };
    Ok(Prepared {
        submission: submitted.to_json()?,
        domain,
        verified: format!(
            "signature and certificate chain to {root_note}; {} match your policy; your nonce; \
             {} ms old; enclave identity key {}",
            pinned.join(", "),
            now.as_millis()
                .saturating_sub(verified.doc().timestamp().as_millis()),
            hex::encode(identity.fingerprint())
        ),
    })
}

async fn unseal(args: &UnsealArgs) -> anyhow::Result<()> {
    let read = |p: &Path| fs::read_to_string(p).with_context(|| format!("reading {}", p.display()));
    let share = ShareFile::from_json(&read(&args.share)?).context("your share file")?;
    if let Some(pin) = &args.domain {
        let pin = crate::domain_pin::DomainPin::parse(pin)?;
        pin.check(Some(share.domain_id().as_str()), "your share file")?;
    }
    let key = CustodianKey::from_pem(&read(&args.key)?).context("your key file")?;
    let (root, policy) = crate::cli_domain::root_and_policy(
        args.root.as_deref(),
        args.allow_simulation_root,
        Some(&args.policy),
    )?;
    println!(
        "share {} of a {}-of-{} sharing of domain {}",
        share.index(),
        share.threshold(),
        share.total(),
        share.domain_id()
    );
    let nonce = fresh_nonce()?;
    let document = crate::fetch::fetch(&args.endpoint, &hex::encode(&nonce)).await?;
    let prepared = prepare(&document, &nonce, &root, policy, &share, &key)?;
    println!("verified: {}", prepared.verified);
    if root.kind() == ekms_attestation::RootKind::Simulation {
        eprintln!(
            "WARNING: verified against a SIMULATION root: this proves nothing about real enclave hardware."
        );
    }
    let answer = crate::http_client::post_json(
        &args.endpoint,
        "/ekms/custody/share",
        &serde_json::json!({ "session": hex::encode(&nonce), "share": prepared.submission }),
    )
    .await
    .context("the enclave refused the share")?;
    println!(
        "submitted: your share, encrypted to the attested enclave key and signed with your key"
    );
    println!("{}", describe_state(&answer));
    Ok(())
}

/// One line about a custody state as the appliance reports it.
#[must_use]
pub fn describe_state(v: &serde_json::Value) -> String {
    let s = |k: &str| {
        v.get(k)
            .and_then(serde_json::Value::as_str)
            .unwrap_or("?")
            .to_owned()
    };
    let n = |k: &str| v.get(k).and_then(serde_json::Value::as_u64);
    match s("state").as_str() {
        "sealed" => format!(
            "domain {} is still SEALED: the enclave holds {} of {} shares needed",
            s("domain"),
            n("have").unwrap_or(0),
            n("need").map_or_else(|| "?".into(), |n| n.to_string())
        ),
        "unsealed" => format!(
            "domain {} is UNSEALED: the threshold was reached and the enclave serves",
            s("domain")
        ),
        other => format!("state: {other}"),
    }
}

/// Runs `ekms custodian unseal`.
pub fn run_unseal(args: &UnsealArgs) -> ExitCode {
    let result = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(anyhow::Error::from)
        .and_then(|rt| rt.block_on(unseal(args)));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ekms custodian unseal: REFUSED: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ekms_custody::CustodianPublicKey;
    use std::os::unix::fs::PermissionsExt as _;

    #[test]
    fn writes_a_private_key_0600_and_a_matching_public_key_once() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("alice");
        let (key, public, fp) = keygen(&base).unwrap();
        assert_eq!(
            fs::metadata(&key).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let k = CustodianKey::from_pem(&fs::read_to_string(&key).unwrap()).unwrap();
        let p = CustodianPublicKey::from_json(&fs::read_to_string(&public).unwrap()).unwrap();
        assert_eq!(p.fingerprint_hex(), fp);
        assert_eq!(k.public_key().fingerprint_hex(), fp);
        assert!(keygen(&base).is_err(), "an existing key is not overwritten");
    }
}
