//! The administrator credential in the AWS shared-credentials format (profile `[ekms]`, mode
//! 0600) with a matching config file for the region (and the endpoint, when known). The operator's
//! CLI writes it after it verified and opened the credential the enclave sealed to the admin key;
//! the host writes it only in simulation with the development custodian.

use std::{
    fs,
    io::Write as _,
    os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
};

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

/// The config file that goes with a credentials file: `config` beside a file named
/// `credentials`, else the credentials path with `.config` appended.
#[must_use]
pub fn config_beside(credentials: &Path) -> PathBuf {
    if credentials.file_name().is_some_and(|n| n == "credentials") {
        credentials.with_file_name("config")
    } else {
        let mut s = credentials.as_os_str().to_owned();
        s.push(".config");
        PathBuf::from(s)
    }
}

/// Writes a credential to `credentials` (mode 0600; never over an existing file) and a config
/// file naming the region and, when given, the endpoint (`endpoint_url`) to `config`.
pub fn write(
    credentials: &Path,
    config: &Path,
    access_key_id: &str,
    secret_access_key: &str,
    region: &str,
    endpoint: Option<&str>,
) -> Result<(), HostError> {
    let text = zeroize::Zeroizing::new(format!(
        "[{PROFILE}]\naws_access_key_id = {access_key_id}\naws_secret_access_key = {secret_access_key}\n"
    ));
    write_new_private(credentials, text.as_bytes())?;
    write_config(config, region, endpoint)
}

/// Writes the profile's config file: the region and, when known, the endpoint, so that every
/// client that reads `endpoint_url` from its profile (the aws CLI, boto3 and the tools built on
/// it, the AWS SDKs) reaches the appliance without an endpoint flag.
pub fn write_config(config: &Path, region: &str, endpoint: Option<&str>) -> Result<(), HostError> {
    let endpoint = endpoint.map_or_else(String::new, |e| format!("endpoint_url = {e}\n"));
    let cfg = format!("[profile {PROFILE}]\nregion = {region}\n{endpoint}");
    write_private(config, cfg.as_bytes())
}

/// Writes `bytes` to a new file `path` with mode 0600; fails if `path` exists (a hard link of a
/// temporary file, so a credential appearing meanwhile survives too).
pub fn write_new_private(path: &Path, bytes: &[u8]) -> Result<(), HostError> {
    let tmp = temp_private(path, bytes)?;
    let linked = fs::hard_link(&tmp, path);
    fs::remove_file(&tmp)?;
    linked.map_err(|e| match e.kind() {
        std::io::ErrorKind::AlreadyExists => already_exists(path),
        _ => HostError::Io(e),
    })
}

/// Writes `bytes` to `path` with mode 0600 (through a temporary file and a rename).
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<(), HostError> {
    let tmp = temp_private(path, bytes)?;
    fs::rename(&tmp, path)?;
    Ok(())
}

/// `bytes` in a synced temporary file (mode 0600) beside `path`.
fn temp_private(path: &Path, bytes: &[u8]) -> Result<PathBuf, HostError> {
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
    Ok(tmp)
}

/// The lines `serve` prints so a user can point the AWS tools at the appliance.
#[must_use]
pub fn usage(data_dir: &Path, endpoint: &str) -> String {
    let (creds, config) = paths(data_dir);
    format!(
        "export AWS_SHARED_CREDENTIALS_FILE={} AWS_CONFIG_FILE={}\n\
         aws --profile {PROFILE} kms create-key    # the profile names endpoint_url = {endpoint}",
        creds.display(),
        config.display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_private_in_the_shared_credentials_format() {
        let dir = tempfile::tempdir().unwrap();
        let (c, cfg) = paths(dir.path());
        assert_eq!(config_beside(&c), cfg);
        assert_eq!(
            config_beside(Path::new("/x/admin.creds")),
            Path::new("/x/admin.creds.config")
        );
        write(
            &c,
            &cfg,
            "EKMSAAAA",
            "s3cr3t",
            "us-east-1",
            Some("http://127.0.0.1:1"),
        )
        .unwrap();
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
        let cfg = fs::read_to_string(cfg).unwrap();
        assert!(cfg.contains("region = us-east-1"), "{cfg}");
        assert!(cfg.contains("endpoint_url = http://127.0.0.1:1"), "{cfg}");
        // A second credential never replaces the first.
        let e = write(
            &c,
            &config_beside(&c),
            "EKMSBBBB",
            "other",
            "us-east-1",
            None,
        )
        .unwrap_err();
        assert!(e.to_string().contains("refusing to overwrite"), "{e}");
        assert!(fs::read_to_string(&c).unwrap().contains("EKMSAAAA"));
        assert!(!c.with_extension("tmp").exists());
        assert!(refuse_existing(dir.path()).is_err());
    }
}
