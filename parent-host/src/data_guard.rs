//! Development mode never destroys data: before the development custodian creates a domain
//! because the store has no domain record, this checks that the data dir holds nothing of an
//! earlier domain (its share file, an administrator credential, sealed records). A new domain
//! could open none of it and would replace the share and the credential. This module only
//! looks; it must never move, delete or overwrite anything.

use std::path::{Path, PathBuf};

use crate::{
    HostError, credentials,
    custody::DevCustodian,
    store::{Store, Table},
};

/// Something of an earlier domain found in a data dir.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Leftover {
    /// The development custodian's share file.
    DevShare(PathBuf),
    /// An administrator credentials file.
    Credentials(PathBuf),
    /// Sealed records in the store.
    Records(Table),
}

impl std::fmt::Display for Leftover {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::DevShare(p) => write!(f, "{} (the development custodian's share)", p.display()),
            Self::Credentials(p) => write!(f, "{} (an administrator credential)", p.display()),
            Self::Records(Table::Keys) => f.write_str("key records in the store"),
            Self::Records(Table::Aliases) => f.write_str("alias records in the store"),
            Self::Records(Table::Principals) => f.write_str("principal records in the store"),
            Self::Records(Table::Grants) => f.write_str("grant records in the store"),
            Self::Records(Table::Usage) => f.write_str("key usage records in the store"),
            Self::Records(Table::Tombstones) => {
                f.write_str("tombstones of deleted records in the store")
            }
        }
    }
}

/// What `data_dir` and `store` hold of an earlier domain.
///
/// # Errors
/// When the store cannot be read.
pub fn survey(
    data_dir: &Path,
    dev: &DevCustodian,
    store: &dyn Store,
) -> Result<Vec<Leftover>, HostError> {
    let mut found = Vec::new();
    if dev.share.exists() {
        found.push(Leftover::DevShare(dev.share.clone()));
    }
    let (creds, _) = credentials::paths(data_dir);
    if creds.exists() {
        found.push(Leftover::Credentials(creds));
    }
    for table in crate::store::RECORD_TABLES {
        if !store.scan(table, None, 1)?.records.is_empty() {
            found.push(Leftover::Records(table));
        }
    }
    Ok(found)
}

/// Why `serve` will not create a domain over `found`, and how to recover.
#[must_use]
pub fn refusal(data_dir: &Path, found: &[Leftover]) -> String {
    let mut text = format!(
        "REFUSING to create a new key domain: the store has no domain record, but the data dir \
         {} holds data of an earlier domain:",
        data_dir.display()
    );
    for item in found {
        text.push_str("\nekms:   - ");
        text.push_str(&item.to_string());
    }
    text.push_str(
        "\nekms: A new domain could open none of it and would replace the share and the \
         credential, so nothing was created or changed.\
         \nekms: To recover, restore the domain record from a backup (the `domain` table of \
         ekms.sqlite3) and restart;\
         \nekms: or, to start afresh, stop ekms and move the data dir away (keep it: its records \
         open only with the old domain).\
         \nekms: Until then KMS calls fail with KMSInternalException.",
    );
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::SqliteStore;
    use ekms_wire::msg::SealedBlob;

    #[test]
    fn an_empty_data_dir_has_nothing_and_each_leftover_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join(crate::store::STORE_FILE)).unwrap();
        let dev = DevCustodian::in_dir(dir.path(), Path::new("/nonexistent"));
        assert!(survey(dir.path(), &dev, &store).unwrap().is_empty());

        std::fs::write(&dev.share, b"{}").unwrap();
        std::fs::write(dir.path().join("credentials"), b"[ekms]").unwrap();
        store
            .apply(&[ekms_wire::msg::StoreWrite::PutPrincipal {
                id: "admin".into(),
                generation: 1,
                expected: None,
                sealed: SealedBlob(vec![1, 2, 3]),
                access_key_ids: vec!["EKMSAAAA".into()],
            }])
            .unwrap();
        let found = survey(dir.path(), &dev, &store).unwrap();
        assert_eq!(
            found,
            vec![
                Leftover::DevShare(dev.share.clone()),
                Leftover::Credentials(dir.path().join("credentials")),
                Leftover::Records(Table::Principals),
            ]
        );
        let text = refusal(dir.path(), &found);
        assert!(
            text.contains("SIMULATION-ONLY-dev-custodian.share.json"),
            "{text}"
        );
        assert!(text.contains("principal records in the store"), "{text}");
        assert!(text.contains("move the data dir away"), "{text}");
    }
}
