//! The administrator credential: stored once, at domain genesis, in the AWS shared-credentials
//! format (profile `[ekms]`, mode 0600) with a matching config file for the region.

use std::{
    fs,
    io::Write as _,
    os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
};

use ekms_wire::msg::Genesis;

use crate::HostError;

/// Profile name written to the credentials file.
pub const PROFILE: &str = "ekms";

/// Paths of the credentials and config files in a data dir.
#[must_use]
pub fn paths(data_dir: &Path) -> (PathBuf, PathBuf) {
    (data_dir.join("credentials"), data_dir.join("config"))
}

/// Fails when `data_dir` already has a credentials file: it may be the only administrator
/// credential of an existing domain, and is never overwritten.
pub fn refuse_existing(data_dir: &Path) -> Result<(), HostError> {
    let (creds, _) = paths(data_dir);
    if creds.exists() {
        return Err(already_exists(&creds));
    }
    Ok(())
}

fn already_exists(path: &Path) -> HostError {
    HostError::Io(std::io::Error::new(
        std::io::ErrorKind::AlreadyExists,
        format!(
            "{} already exists: refusing to overwrite an administrator credential",
            path.display()
        ),
    ))
}

/// Writes the genesis credential (mode 0600; never over an existing one) and a config file
/// naming the region.
pub fn write(data_dir: &Path, genesis: &Genesis, region: &str) -> Result<(), HostError> {
    let (creds, config) = paths(data_dir);
    refuse_existing(data_dir)?;
    let text = zeroize::Zeroizing::new(format!(
        "[{PROFILE}]\naws_access_key_id = {}\naws_secret_access_key = {}\n",
        genesis.access_key_id,
        genesis.secret_access_key.expose()
    ));
    write_private(&creds, text.as_bytes(), false)?;
    write_private(
        &config,
        format!("[profile {PROFILE}]\nregion = {region}\n").as_bytes(),
        true,
    )?;
    Ok(())
}

fn write_private(path: &Path, bytes: &[u8], replace: bool) -> Result<(), HostError> {
    let tmp = path.with_extension("tmp");
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.set_permissions(fs::Permissions::from_mode(0o600))?;
    f.write_all(bytes)?;
    f.sync_all()?;
    if replace {
        fs::rename(&tmp, path)?;
    } else {
        // A hard link fails when `path` exists, so a credential appearing meanwhile survives.
        let linked = fs::hard_link(&tmp, path);
        fs::remove_file(&tmp)?;
        linked.map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => already_exists(path),
            _ => HostError::Io(e),
        })?;
    }
    Ok(())
}

/// The lines `serve` prints so a user can point the AWS tools at the appliance.
#[must_use]
pub fn usage(data_dir: &Path, endpoint: &str) -> String {
    let (creds, config) = paths(data_dir);
    format!(
        "export AWS_SHARED_CREDENTIALS_FILE={} AWS_CONFIG_FILE={}\n\
         aws --endpoint-url {endpoint} --profile {PROFILE} kms create-key",
        creds.display(),
        config.display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use ekms_wire::msg::{SealedBlob, Secret};

    #[test]
    fn written_private_in_the_shared_credentials_format() {
        let dir = tempfile::tempdir().unwrap();
        let g = Genesis {
            principal: SealedBlob(vec![]),
            access_key_id: "EKMSAAAA".into(),
            secret_access_key: Secret::new("s3cr3t".into()),
        };
        write(dir.path(), &g, "us-east-1").unwrap();
        let (c, cfg) = paths(dir.path());
        let text = fs::read_to_string(&c).unwrap();
        assert!(
            text.starts_with(
                "[ekms]\naws_access_key_id = EKMSAAAA\naws_secret_access_key = s3cr3t\n"
            )
        );
        assert_eq!(
            fs::metadata(&c).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert!(
            fs::read_to_string(cfg)
                .unwrap()
                .contains("region = us-east-1")
        );
        // A second genesis never replaces the first credential.
        let other = Genesis {
            principal: SealedBlob(vec![]),
            access_key_id: "EKMSBBBB".into(),
            secret_access_key: Secret::new("other".into()),
        };
        let e = write(dir.path(), &other, "us-east-1").unwrap_err();
        assert!(e.to_string().contains("refusing to overwrite"), "{e}");
        assert!(fs::read_to_string(&c).unwrap().contains("EKMSAAAA"));
        assert!(!c.with_extension("tmp").exists());
    }
}
