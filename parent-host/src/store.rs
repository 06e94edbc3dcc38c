//! The sealed-record store: key records, aliases and principals, all sealed by the enclave.
//! [`Store`] is the seam for other databases (PostgreSQL for a fleet); [`SqliteStore`] is the
//! embedded default, in WAL mode with `synchronous=FULL`, so a committed write is durable
//! before the client hears of it.

use std::{path::Path, sync::Mutex};

use ekms_wire::msg::{SealedBlob, StoreWrite};
use rusqlite::{Connection, OptionalExtension as _, params};

use crate::HostError;

/// One page of a listing.
#[derive(Debug, Default)]
pub struct Page {
    /// Sealed records in order.
    pub records: Vec<SealedBlob>,
    /// The id of the last record, when more follow.
    pub more_after: Option<String>,
}

/// Persistence of sealed records. Nothing stored is plaintext key material.
pub trait Store: Send + Sync + 'static {
    /// A key record.
    fn key(&self, key_id: &str) -> Result<Option<SealedBlob>, HostError>;
    /// An alias record and its target key id.
    fn alias(&self, name: &str) -> Result<Option<(SealedBlob, String)>, HostError>;
    /// A principal record.
    fn principal(&self, access_key_id: &str) -> Result<Option<SealedBlob>, HostError>;
    /// Whether any principal exists.
    fn has_principals(&self) -> Result<bool, HostError>;
    /// Stores a principal record.
    fn put_principal(&self, access_key_id: &str, sealed: &SealedBlob) -> Result<(), HostError>;
    /// Keys in id order after `after`.
    fn list_keys(&self, after: Option<&str>, limit: usize) -> Result<Page, HostError>;
    /// Aliases in name order after `after`, optionally only those targeting `key_id`.
    fn list_aliases(
        &self,
        after: Option<&str>,
        limit: usize,
        key_id: Option<&str>,
    ) -> Result<Page, HostError>;
    /// Applies writes atomically; [`HostError::Conflict`] if any expected generation differs.
    fn apply(&self, writes: &[StoreWrite]) -> Result<(), HostError>;
    /// Keys whose (unauthenticated) index says their deletion date is at or before `now` (Unix
    /// seconds): candidates only; the enclave decides which are due.
    fn due_for_deletion(&self, now: i64, limit: usize) -> Result<Vec<SealedBlob>, HostError>;
    /// Enabled keys whose (unauthenticated) index says their next automatic rotation is at or
    /// before `now` (Unix seconds): candidates only; the enclave decides which are due.
    fn due_for_rotation(&self, now: i64, limit: usize) -> Result<Vec<SealedBlob>, HostError>;
    /// The domain record (the enclave's sealed keyring), if a domain was created.
    fn domain(&self) -> Result<Option<SealedBlob>, HostError>;
    /// Stores the domain record at `generation`: the first one when `expected` is `None`, else
    /// only over generation `expected` ([`HostError::Conflict`] otherwise).
    fn put_domain(
        &self,
        sealed: &SealedBlob,
        generation: u64,
        expected: Option<u64>,
    ) -> Result<(), HostError>;
    /// Records of a table in id order after `after`, for background re-sealing.
    fn scan(&self, table: Table, after: Option<&str>, limit: usize) -> Result<Page, HostError>;
}

/// Every table of sealed records, in the order the enclave loads them.
pub const RECORD_TABLES: [Table; 4] = [
    Table::Keys,
    Table::Aliases,
    Table::Principals,
    Table::Tombstones,
];

/// The record tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Table {
    /// Key records.
    Keys,
    /// Alias records.
    Aliases,
    /// Principal records.
    Principals,
    /// Sealed tombstones of deleted keys and aliases.
    Tombstones,
}

/// SQLite in the data dir.
#[derive(Debug)]
pub struct SqliteStore {
    conn: Mutex<Connection>,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS keys (
    key_id TEXT PRIMARY KEY,
    generation INTEGER NOT NULL,
    sealed BLOB NOT NULL,
    state TEXT NOT NULL,
    deletion_date INTEGER
);
CREATE TABLE IF NOT EXISTS aliases (
    name TEXT PRIMARY KEY,
    key_id TEXT NOT NULL,
    generation INTEGER NOT NULL,
    sealed BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS aliases_by_key ON aliases(key_id);
CREATE TABLE IF NOT EXISTS principals (
    access_key_id TEXT PRIMARY KEY,
    sealed BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS domain (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    generation INTEGER NOT NULL,
    sealed BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS tombstones (
    id TEXT PRIMARY KEY,
    generation INTEGER NOT NULL,
    sealed BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v TEXT NOT NULL);
INSERT OR IGNORE INTO meta (k, v) VALUES ('schema_version', '1');
";

impl SqliteStore {
    /// Opens (or creates) the database at `path`.
    pub fn open(path: &Path) -> Result<Self, HostError> {
        let conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.execute_batch(SCHEMA)?;
        add_rotation_index(&conn)?;
        let version: String =
            conn.query_row("SELECT v FROM meta WHERE k = 'schema_version'", [], |r| {
                r.get(0)
            })?;
        if version != "1" {
            return Err(HostError::Startup(format!(
                "unsupported store schema version {version}"
            )));
        }
        Ok(Self {
            conn: Mutex::new(conn),
        })
    }

    fn with<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, HostError>,
    ) -> Result<T, HostError> {
        let mut conn = self
            .conn
            .lock()
            .map_err(|_| HostError::Startup("store lock poisoned".into()))?;
        f(&mut conn)
    }
}

/// The `rotation_date` column (next automatic rotation, Unix seconds) and its index, added to
/// stores made before rotation existed (NULL: no rotation scheduled).
fn add_rotation_index(conn: &Connection) -> Result<(), HostError> {
    let has: bool = conn.query_row(
        "SELECT COUNT(*) FROM pragma_table_info('keys') WHERE name = 'rotation_date'",
        [],
        |r| r.get::<_, i64>(0).map(|n| n > 0),
    )?;
    if !has {
        conn.execute_batch("ALTER TABLE keys ADD COLUMN rotation_date INTEGER")?;
    }
    conn.execute_batch(
        "CREATE INDEX IF NOT EXISTS keys_by_rotation ON keys(rotation_date) WHERE rotation_date IS NOT NULL",
    )?;
    Ok(())
}

/// SQLite integers are signed; generations and limits never come near `i64::MAX`.
fn sql(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn page(rows: Vec<(String, Vec<u8>)>, limit: usize) -> Page {
    let more = rows.len() > limit;
    let mut records = Vec::with_capacity(limit.min(rows.len()));
    let mut last = None;
    for (id, sealed) in rows.into_iter().take(limit) {
        last = Some(id);
        records.push(SealedBlob(sealed));
    }
    Page {
        records,
        more_after: if more { last } else { None },
    }
}

impl Store for SqliteStore {
    fn key(&self, key_id: &str) -> Result<Option<SealedBlob>, HostError> {
        self.with(|c| {
            Ok(
                c.prepare_cached("SELECT sealed FROM keys WHERE key_id = ?1")?
                    .query_row([key_id], |r| r.get(0))
                    .optional()?
                    .map(SealedBlob),
            )
        })
    }

    fn alias(&self, name: &str) -> Result<Option<(SealedBlob, String)>, HostError> {
        self.with(|c| {
            Ok(
                c.prepare_cached("SELECT sealed, key_id FROM aliases WHERE name = ?1")?
                    .query_row([name], |r| Ok((SealedBlob(r.get(0)?), r.get(1)?)))
                    .optional()?,
            )
        })
    }

    fn principal(&self, access_key_id: &str) -> Result<Option<SealedBlob>, HostError> {
        self.with(|c| {
            Ok(
                c.prepare_cached("SELECT sealed FROM principals WHERE access_key_id = ?1")?
                    .query_row([access_key_id], |r| r.get(0))
                    .optional()?
                    .map(SealedBlob),
            )
        })
    }

    fn has_principals(&self) -> Result<bool, HostError> {
        self.with(
            |c| Ok(c.query_row("SELECT EXISTS (SELECT 1 FROM principals)", [], |r| r.get(0))?),
        )
    }

    fn put_principal(&self, access_key_id: &str, sealed: &SealedBlob) -> Result<(), HostError> {
        self.with(|c| {
            c.execute(
                "INSERT INTO principals (access_key_id, sealed) VALUES (?1, ?2)",
                params![access_key_id, sealed.0],
            )?;
            Ok(())
        })
    }

    fn list_keys(&self, after: Option<&str>, limit: usize) -> Result<Page, HostError> {
        self.with(|c| {
            let mut st = c.prepare_cached(
                "SELECT key_id, sealed FROM keys WHERE key_id > ?1 ORDER BY key_id LIMIT ?2",
            )?;
            let rows = st
                .query_map(
                    params![after.unwrap_or(""), sql(limit as u64).saturating_add(1)],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(page(rows, limit))
        })
    }

    fn list_aliases(
        &self,
        after: Option<&str>,
        limit: usize,
        key_id: Option<&str>,
    ) -> Result<Page, HostError> {
        self.with(|c| {
            let mut st = c.prepare_cached(
                "SELECT name, sealed FROM aliases WHERE name > ?1 AND (?2 IS NULL OR key_id = ?2)
                 ORDER BY name LIMIT ?3",
            )?;
            let rows = st
                .query_map(
                    params![
                        after.unwrap_or(""),
                        key_id,
                        sql(limit as u64).saturating_add(1)
                    ],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(page(rows, limit))
        })
    }

    fn apply(&self, writes: &[StoreWrite]) -> Result<(), HostError> {
        self.with(|c| {
            let tx = c.transaction()?;
            for w in writes {
                let changed = match w {
                    StoreWrite::PutKey { key_id, generation, expected: None, sealed, state, deletion_date, rotation_date } => {
                        tx.execute("DELETE FROM tombstones WHERE id = ?1", [format!("1:{key_id}")])?;
                        tx.execute(
                            "INSERT OR IGNORE INTO keys (key_id, generation, sealed, state, deletion_date, rotation_date)
                             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                            params![key_id, sql(*generation), sealed.0, state, deletion_date, rotation_date],
                        )?
                    }
                    StoreWrite::PutKey { key_id, generation, expected: Some(prev), sealed, state, deletion_date, rotation_date } => tx
                        .execute(
                            "UPDATE keys SET generation = ?2, sealed = ?3, state = ?4, deletion_date = ?5, rotation_date = ?7
                             WHERE key_id = ?1 AND generation = ?6",
                            params![key_id, sql(*generation), sealed.0, state, deletion_date, sql(*prev), rotation_date],
                        )?,
                    StoreWrite::PutAlias { name, key_id, generation, expected: None, sealed } => {
                        tx.execute("DELETE FROM tombstones WHERE id = ?1", [format!("2:{name}")])?;
                        tx.execute(
                            "INSERT OR IGNORE INTO aliases (name, key_id, generation, sealed) VALUES (?1, ?2, ?3, ?4)",
                            params![name, key_id, sql(*generation), sealed.0],
                        )?
                    }
                    StoreWrite::PutAlias { name, key_id, generation, expected: Some(prev), sealed } => tx.execute(
                        "UPDATE aliases SET key_id = ?2, generation = ?3, sealed = ?4 WHERE name = ?1 AND generation = ?5",
                        params![name, key_id, sql(*generation), sealed.0, sql(*prev)],
                    )?,
                    StoreWrite::PutPrincipal { access_key_id, sealed } => tx.execute(
                        "UPDATE principals SET sealed = ?2 WHERE access_key_id = ?1",
                        params![access_key_id, sealed.0],
                    )?,
                    StoreWrite::DeleteAlias { name, expected, generation, tombstone } => {
                        let n = tx.execute(
                            "DELETE FROM aliases WHERE name = ?1 AND generation = ?2",
                            params![name, sql(*expected)],
                        )?;
                        put_tombstone(&tx, &format!("2:{name}"), *generation, tombstone)?;
                        n
                    }
                    StoreWrite::PutTombstone { id, generation, expected, sealed } => tx.execute(
                        "UPDATE tombstones SET generation = ?2, sealed = ?3 WHERE id = ?1 AND generation = ?4",
                        params![id, sql(*generation), sealed.0, sql(*expected)],
                    )?,
                    StoreWrite::DeleteKey { key_id, expected, generation, tombstone } => {
                        let n = tx.execute(
                            "DELETE FROM keys WHERE key_id = ?1 AND generation = ?2",
                            params![key_id, sql(*expected)],
                        )?;
                        put_tombstone(&tx, &format!("1:{key_id}"), *generation, tombstone)?;
                        n
                    }
                };
                if changed != 1 {
                    // Dropping the transaction rolls every write of this request back.
                    return Err(HostError::Conflict);
                }
            }
            tx.commit()?;
            Ok(())
        })
    }

    fn due_for_deletion(&self, now: i64, limit: usize) -> Result<Vec<SealedBlob>, HostError> {
        self.with(|c| {
            Ok(c.prepare_cached(
                "SELECT sealed FROM keys WHERE state = 'PendingDeletion' AND deletion_date <= ?1
                     ORDER BY key_id LIMIT ?2",
            )?
            .query_map(params![now, sql(limit as u64)], |r| {
                Ok(SealedBlob(r.get(0)?))
            })?
            .collect::<Result<Vec<_>, _>>()?)
        })
    }

    fn due_for_rotation(&self, now: i64, limit: usize) -> Result<Vec<SealedBlob>, HostError> {
        self.with(|c| {
            Ok(c.prepare_cached(
                "SELECT sealed FROM keys WHERE rotation_date <= ?1 AND state = 'Enabled'
                     ORDER BY rotation_date, key_id LIMIT ?2",
            )?
            .query_map(params![now, sql(limit as u64)], |r| {
                Ok(SealedBlob(r.get(0)?))
            })?
            .collect::<Result<Vec<_>, _>>()?)
        })
    }

    fn domain(&self) -> Result<Option<SealedBlob>, HostError> {
        self.with(|c| {
            Ok(
                c.query_row("SELECT sealed FROM domain WHERE id = 1", [], |r| r.get(0))
                    .optional()?
                    .map(SealedBlob),
            )
        })
    }

    fn put_domain(
        &self,
        sealed: &SealedBlob,
        generation: u64,
        expected: Option<u64>,
    ) -> Result<(), HostError> {
        self.with(|c| {
            let changed = match expected {
                None => c.execute(
                    "INSERT OR IGNORE INTO domain (id, generation, sealed) VALUES (1, ?1, ?2)",
                    params![sql(generation), sealed.0],
                )?,
                Some(prev) => c.execute(
                    "UPDATE domain SET generation = ?1, sealed = ?2 WHERE id = 1 AND generation = ?3",
                    params![sql(generation), sealed.0, sql(prev)],
                )?,
            };
            if changed == 1 {
                Ok(())
            } else {
                Err(HostError::Conflict)
            }
        })
    }

    fn scan(&self, table: Table, after: Option<&str>, limit: usize) -> Result<Page, HostError> {
        let query = match table {
            Table::Keys => {
                "SELECT key_id, sealed FROM keys WHERE key_id > ?1 ORDER BY key_id LIMIT ?2"
            }
            Table::Aliases => {
                "SELECT name, sealed FROM aliases WHERE name > ?1 ORDER BY name LIMIT ?2"
            }
            Table::Principals => {
                "SELECT access_key_id, sealed FROM principals WHERE access_key_id > ?1
                 ORDER BY access_key_id LIMIT ?2"
            }
            Table::Tombstones => {
                "SELECT id, sealed FROM tombstones WHERE id > ?1 ORDER BY id LIMIT ?2"
            }
        };
        self.with(|c| {
            let mut st = c.prepare_cached(query)?;
            let rows = st
                .query_map(
                    params![after.unwrap_or(""), sql(limit as u64).saturating_add(1)],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(page(rows, limit))
        })
    }
}

/// Stores the tombstone of a deleted record, over any older one.
fn put_tombstone(
    tx: &rusqlite::Transaction<'_>,
    id: &str,
    generation: u64,
    sealed: &SealedBlob,
) -> Result<(), HostError> {
    tx.execute(
        "INSERT INTO tombstones (id, generation, sealed) VALUES (?1, ?2, ?3)
         ON CONFLICT(id) DO UPDATE SET generation = excluded.generation, sealed = excluded.sealed",
        params![id, sql(generation), sealed.0],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(
        id: &str,
        generation: u64,
        expected: Option<u64>,
        state: &str,
        deletion: Option<i64>,
    ) -> StoreWrite {
        StoreWrite::PutKey {
            key_id: id.into(),
            generation,
            expected,
            sealed: SealedBlob(generation.to_be_bytes().to_vec()),
            state: state.into(),
            deletion_date: deletion,
            rotation_date: None,
        }
    }

    #[test]
    fn the_domain_record_is_written_once_then_only_over_its_generation() {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStore::open(&dir.path().join("db")).unwrap();
        assert!(s.domain().unwrap().is_none());
        s.put_domain(&SealedBlob(vec![1]), 1, None).unwrap();
        assert!(matches!(
            s.put_domain(&SealedBlob(vec![9]), 1, None),
            Err(HostError::Conflict)
        ));
        assert!(matches!(
            s.put_domain(&SealedBlob(vec![9]), 3, Some(2)),
            Err(HostError::Conflict)
        ));
        s.put_domain(&SealedBlob(vec![2]), 2, Some(1)).unwrap();
        assert_eq!(s.domain().unwrap(), Some(SealedBlob(vec![2])));
        s.put_principal("AK", &SealedBlob(vec![1])).unwrap();
        let p = s.scan(Table::Principals, None, 10).unwrap();
        assert_eq!(p.records, vec![SealedBlob(vec![1])]);
    }

    #[test]
    fn a_store_made_before_rotation_gets_its_index() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        {
            let c = Connection::open(&path).unwrap();
            c.execute_batch(
                "CREATE TABLE keys (key_id TEXT PRIMARY KEY, generation INTEGER NOT NULL,
                 sealed BLOB NOT NULL, state TEXT NOT NULL, deletion_date INTEGER);
                 INSERT INTO keys VALUES ('old', 1, x'01', 'Enabled', NULL);",
            )
            .unwrap();
        }
        let s = SqliteStore::open(&path).unwrap();
        assert!(s.due_for_rotation(i64::MAX, 10).unwrap().is_empty());
        s.apply(&[put("old", 2, Some(1), "Enabled", None)]).unwrap();
        // Opening again leaves the column as it is.
        drop(s);
        SqliteStore::open(&path).unwrap();
    }

    #[test]
    fn conditional_writes_detect_races_and_roll_back() {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStore::open(&dir.path().join("db")).unwrap();
        s.apply(&[put("a", 1, None, "Enabled", None)]).unwrap();
        assert!(matches!(
            s.apply(&[put("a", 1, None, "Enabled", None)]),
            Err(HostError::Conflict)
        ));
        s.apply(&[put("a", 2, Some(1), "Disabled", None)]).unwrap();
        // A second writer that read generation 1 loses, and its other writes roll back.
        let r = s.apply(&[
            put("b", 1, None, "Enabled", None),
            put("a", 2, Some(1), "Enabled", None),
        ]);
        assert!(matches!(r, Err(HostError::Conflict)));
        assert!(s.key("b").unwrap().is_none());
        assert_eq!(s.key("a").unwrap().unwrap().0, 2u64.to_be_bytes().to_vec());
    }

    #[test]
    fn survives_reopen_lists_in_pages_and_sweeps() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        {
            let s = SqliteStore::open(&path).unwrap();
            for id in ["a", "b", "c"] {
                s.apply(&[put(id, 1, None, "Enabled", None)]).unwrap();
            }
            s.apply(&[StoreWrite::PutAlias {
                name: "alias/x".into(),
                key_id: "c".into(),
                generation: 1,
                expected: None,
                sealed: SealedBlob(vec![9]),
            }])
            .unwrap();
            s.apply(&[put("c", 2, Some(1), "PendingDeletion", Some(100))])
                .unwrap();
        }
        let s = SqliteStore::open(&path).unwrap();
        let p = s.list_keys(None, 2).unwrap();
        assert_eq!(p.records.len(), 2);
        assert_eq!(p.more_after.as_deref(), Some("b"));
        let p = s.list_keys(Some("b"), 2).unwrap();
        assert_eq!(p.records.len(), 1);
        assert!(p.more_after.is_none());
        assert_eq!(
            s.list_aliases(None, 10, Some("c")).unwrap().records.len(),
            1
        );
        assert_eq!(
            s.list_aliases(None, 10, Some("a")).unwrap().records.len(),
            0
        );
        assert!(s.due_for_deletion(99, 10).unwrap().is_empty());
        assert_eq!(s.due_for_deletion(100, 10).unwrap().len(), 1);
        s.apply(&[
            StoreWrite::DeleteAlias {
                name: "alias/x".into(),
                expected: 1,
                generation: 3,
                tombstone: SealedBlob(vec![3]),
            },
            StoreWrite::DeleteKey {
                key_id: "c".into(),
                expected: 2,
                generation: 4,
                tombstone: SealedBlob(vec![4]),
            },
        ])
        .unwrap();
        assert!(s.key("c").unwrap().is_none());
        assert!(s.alias("alias/x").unwrap().is_none());
        assert_eq!(
            s.scan(Table::Tombstones, None, 10).unwrap().records.len(),
            2
        );
        // Rotation candidates: enabled keys whose next rotation date passed, oldest first.
        let scheduled = |generation, state: &str| {
            let mut w = put("a", generation, Some(generation - 1), state, None);
            if let StoreWrite::PutKey { rotation_date, .. } = &mut w {
                *rotation_date = Some(500);
            }
            w
        };
        s.apply(&[scheduled(2, "Enabled")]).unwrap();
        assert!(s.due_for_rotation(499, 10).unwrap().is_empty());
        assert_eq!(s.due_for_rotation(500, 10).unwrap().len(), 1);
        // A disabled key is not rotated (it resumes when enabled).
        s.apply(&[scheduled(3, "Disabled")]).unwrap();
        assert!(s.due_for_rotation(1000, 10).unwrap().is_empty());
        // Re-created above its tombstone: the tombstone goes.
        s.apply(&[put("c", 5, None, "Enabled", None)]).unwrap();
        assert_eq!(
            s.scan(Table::Tombstones, None, 10).unwrap().records.len(),
            1
        );
    }
}
