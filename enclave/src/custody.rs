//! DEVELOPMENT-ONLY custody of the domain key for the simulated enclave: the key in a file in
//! the data dir, so `ekms serve --sim` survives restarts. Never in production; the attested
//! custody ceremony replaces it. Every start that uses it says so loudly.

use std::{
    fs,
    io::Write as _,
    os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _},
    path::Path,
};

use zeroize::Zeroizing;

use crate::{
    EnclaveError,
    domain::{DomainKey, DomainKeyBytes, hex},
};

/// File name of the development custody file inside the data dir.
pub const DEV_CUSTODY_FILE: &str = "DEV-ONLY-INSECURE-domain-key.custody";
const HEADER: &str = "EKMS DEV-ONLY DOMAIN KEY CUSTODY v1 -- NEVER IN PRODUCTION";

/// Loads the domain key from `path`, or creates a new one there. Returns the key and whether it
/// was created now.
pub fn load_or_create(path: &Path) -> Result<(DomainKey, bool), EnclaveError> {
    match fs::read_to_string(path) {
        Ok(text) => {
            let text = Zeroizing::new(text);
            let mut lines = text.lines();
            if lines.next() != Some(HEADER) {
                return Err(EnclaveError::Custody(
                    "unrecognised custody file header".into(),
                ));
            }
            let hexkey = lines
                .next()
                .ok_or_else(|| EnclaveError::Custody("custody file has no key line".into()))?;
            let mut bytes = DomainKeyBytes::new([0u8; 32]);
            decode_hex32(hexkey.trim(), &mut bytes)?;
            Ok((DomainKey::from_bytes(bytes)?, false))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = DomainKey::generate()?;
            write_atomically(path, &key)?;
            Ok((key, true))
        }
        Err(e) => Err(EnclaveError::Custody(format!(
            "cannot read {}: {e}",
            path.display()
        ))),
    }
}

fn decode_hex32(s: &str, out: &mut DomainKeyBytes) -> Result<(), EnclaveError> {
    let bad = || EnclaveError::Custody("custody key is not 64 hex digits".into());
    if s.len() != 64 {
        return Err(bad());
    }
    let mut bytes = Zeroizing::new([0u8; 32]);
    for (i, b) in bytes.iter_mut().enumerate() {
        let pair = s.get(i * 2..i * 2 + 2).ok_or_else(bad)?;
        *b = u8::from_str_radix(pair, 16).map_err(|_| bad())?;
    }
    *out = DomainKeyBytes::new(*bytes);
    Ok(())
}

fn write_atomically(path: &Path, key: &DomainKey) -> Result<(), EnclaveError> {
    let err =
        |e: std::io::Error| EnclaveError::Custody(format!("cannot write {}: {e}", path.display()));
    let tmp = path.with_extension("tmp");
    let contents = Zeroizing::new(format!("{HEADER}\n{}\n", hex(key.bytes().expose())));
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(err)?;
    f.set_permissions(fs::Permissions::from_mode(0o600))
        .map_err(err)?;
    f.write_all(contents.as_bytes()).map_err(err)?;
    f.sync_all().map_err(err)?;
    fs::rename(&tmp, path).map_err(err)?;
    if let Some(dir) = path.parent() {
        fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(err)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_once_then_reloaded_with_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(DEV_CUSTODY_FILE);
        let (k1, created) = load_or_create(&path).unwrap();
        assert!(created);
        let (k2, created) = load_or_create(&path).unwrap();
        assert!(!created);
        assert_eq!(k1.fingerprint(), k2.fingerprint());
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn corrupt_files_are_refused_without_panic() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(DEV_CUSTODY_FILE);
        for bad in [
            "",
            "garbage",
            &format!("{HEADER}\nzz"),
            &format!("{HEADER}\n{}", "g".repeat(64)),
        ] {
            fs::write(&path, bad).unwrap();
            assert!(load_or_create(&path).is_err());
        }
    }
}
