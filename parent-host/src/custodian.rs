//! `ekms custodian keygen`: a custodian's P-384 key pair for the M-of-N custody ceremony. The
//! private key (PKCS#8 PEM) is written with mode 0600 and never leaves the custodian; the public
//! key file (JSON with its fingerprint) is what the domain's operator collects.

use std::{
    fs,
    io::Write as _,
    os::unix::fs::OpenOptionsExt as _,
    path::{Path, PathBuf},
    process::ExitCode,
};

use anyhow::Context as _;
use ekms_custody::CustodianKey;

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
