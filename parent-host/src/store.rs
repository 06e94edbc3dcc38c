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
    /// The record and name of the principal holding access key `access_key_id`.
    fn principal(&self, access_key_id: &str) -> Result<Option<(SealedBlob, String)>, HostError>;
    /// The record of the principal named `name`.
    fn principal_named(&self, name: &str) -> Result<Option<SealedBlob>, HostError>;
    /// Whether any principal exists.
    fn has_principals(&self) -> Result<bool, HostError>;
    /// Stores the first principal of a domain (its administrator), with its access key ids.
    fn put_principal(
        &self,
        sealed: &SealedBlob,
        access_key_ids: &[String],
    ) -> Result<(), HostError>;
    /// Principals in id order after `after`.
    fn list_principals(&self, after: Option<&str>, limit: usize) -> Result<Page, HostError>;
    /// The grants of key `key_id` whose grantee is `grantee`.
    fn grants_for(&self, key_id: &str, grantee: &str) -> Result<Vec<SealedBlob>, HostError>;
    /// Grant `grant_id` of key `key_id`.
    fn grant(&self, key_id: &str, grant_id: &str) -> Result<Option<SealedBlob>, HostError>;
    /// The grants of key `key_id` named `name`.
    fn grants_named(&self, key_id: &str, name: &str) -> Result<Vec<SealedBlob>, HostError>;
    /// The grants of key `key_id` in grant-id order after `after`.
    fn list_grants(
        &self,
        key_id: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Page, HostError>;
    /// The grants `retiring` may retire, in `<key id>/<grant id>` order after `after`.
    fn retirable_grants(
        &self,
        retiring: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Page, HostError>;
    /// The keys that have grants.
    fn keys_with_grants(&self) -> Result<Vec<String>, HostError>;
    /// Keys in id order after `after`.
    fn list_keys(&self, after: Option<&str>, limit: usize) -> Result<Page, HostError>;
    /// Aliases whose names start with `prefix` (one region's), in name order after `after`,
    /// optionally only those targeting `key_id`.
    fn list_aliases(
        &self,
        prefix: &str,
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
    /// The sealed last-usage record of a key (`GetKeyLastUsage`).
    fn usage(&self, key_id: &str) -> Result<Option<SealedBlob>, HostError>;
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
pub const RECORD_TABLES: [Table; 6] = [
    Table::Keys,
    Table::Aliases,
    Table::Principals,
    Table::Grants,
    Table::Tombstones,
    Table::Usage,
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
    /// Grant records.
    Grants,
    /// Sealed tombstones of deleted keys and aliases.
    Tombstones,
    /// Sealed last-usage records of keys.
    Usage,
}

/// The key store's file in a data dir.
pub const STORE_FILE: &str = "ekms.sqlite3";

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
    id TEXT PRIMARY KEY,
    generation INTEGER NOT NULL DEFAULT 0,
    sealed BLOB NOT NULL,
    name TEXT
);
CREATE UNIQUE INDEX IF NOT EXISTS principals_by_name ON principals(name);
CREATE TABLE IF NOT EXISTS access_keys (
    access_key_id TEXT PRIMARY KEY,
    principal TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS access_keys_by_principal ON access_keys(principal);
CREATE TABLE IF NOT EXISTS grants (
    id TEXT PRIMARY KEY,
    key_id TEXT NOT NULL,
    grant_id TEXT NOT NULL,
    generation INTEGER NOT NULL,
    sealed BLOB NOT NULL,
    grantee TEXT NOT NULL,
    retiring TEXT,
    name TEXT
);
CREATE INDEX IF NOT EXISTS grants_by_grantee ON grants(key_id, grantee);
CREATE INDEX IF NOT EXISTS grants_by_retiring ON grants(retiring, id);
CREATE INDEX IF NOT EXISTS grants_by_name ON grants(key_id, name);
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
CREATE TABLE IF NOT EXISTS key_usage (
    key_id TEXT PRIMARY KEY,
    generation INTEGER NOT NULL,
    sealed BLOB NOT NULL
);
";

/// The schema version this host writes.
const SCHEMA_VERSION: &str = "2";

/// Version 1 kept principals by access key id, one key each: only the domain's administrator.
/// Its record keeps that id; the access key index and the name are added beside it.
const MIGRATE_1_TO_2: &str = "
ALTER TABLE principals RENAME COLUMN access_key_id TO id;
ALTER TABLE principals ADD COLUMN generation INTEGER NOT NULL DEFAULT 0;
ALTER TABLE principals ADD COLUMN name TEXT;
UPDATE principals SET name = 'admin';
CREATE UNIQUE INDEX principals_by_name ON principals(name);
CREATE TABLE access_keys (
    access_key_id TEXT PRIMARY KEY,
    principal TEXT NOT NULL
);
CREATE INDEX access_keys_by_principal ON access_keys(principal);
INSERT INTO access_keys (access_key_id, principal) SELECT id, id FROM principals;
UPDATE meta SET v = '2' WHERE k = 'schema_version';
";

impl SqliteStore {
    /// Opens (or creates) the database at `path`.
    pub fn open(path: &Path) -> Result<Self, HostError> {
        let mut conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        let existing: Option<String> = conn
            .query_row("SELECT v FROM meta WHERE k = 'schema_version'", [], |r| {
                r.get(0)
            })
            .optional()
            .or_else(|e| match e {
                // No meta table: a new store.
                rusqlite::Error::SqliteFailure(_, _) => Ok(None),
                other => Err(other),
            })?;
        match existing.as_deref() {
            None => {
                conn.execute_batch(SCHEMA)?;
                conn.execute(
                    "INSERT OR IGNORE INTO meta (k, v) VALUES ('schema_version', ?1)",
                    [SCHEMA_VERSION],
                )?;
            }
            Some("1") => {
                let tx = conn.transaction()?;
                tx.execute_batch(MIGRATE_1_TO_2)?;
                tx.execute_batch(SCHEMA)?;
                tx.commit()?;
            }
            Some(SCHEMA_VERSION) => conn.execute_batch(SCHEMA)?,
            Some(other) => {
                return Err(HostError::Startup(format!(
                    "unsupported store schema version {other}"
                )));
            }
        }
        add_rotation_index(&conn)?;
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

    fn principal(&self, access_key_id: &str) -> Result<Option<(SealedBlob, String)>, HostError> {
        self.with(|c| {
            Ok(c.prepare_cached(
                "SELECT p.sealed, COALESCE(p.name, p.id) FROM access_keys a
                     JOIN principals p ON p.id = a.principal WHERE a.access_key_id = ?1",
            )?
            .query_row([access_key_id], |r| Ok((SealedBlob(r.get(0)?), r.get(1)?)))
            .optional()?)
        })
    }

    fn principal_named(&self, name: &str) -> Result<Option<SealedBlob>, HostError> {
        self.with(|c| {
            Ok(
                c.prepare_cached("SELECT sealed FROM principals WHERE name = ?1")?
                    .query_row([name], |r| r.get(0))
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

    fn put_principal(
        &self,
        sealed: &SealedBlob,
        access_key_ids: &[String],
    ) -> Result<(), HostError> {
        let id = ekms_wire::sealed::peek(&sealed.0)
            .map(|h| h.id.to_owned())
            .ok_or_else(|| HostError::Startup("the enclave sent a malformed principal".into()))?;
        self.with(|c| {
            let tx = c.transaction()?;
            tx.execute(
                "INSERT INTO principals (id, generation, sealed, name) VALUES (?1, 0, ?2, ?1)",
                params![id, sealed.0],
            )?;
            index_access_keys(&tx, &id, access_key_ids)?;
            tx.commit()?;
            Ok(())
        })
    }

    fn list_principals(&self, after: Option<&str>, limit: usize) -> Result<Page, HostError> {
        self.scan(Table::Principals, after, limit)
    }

    fn grants_for(&self, key_id: &str, grantee: &str) -> Result<Vec<SealedBlob>, HostError> {
        self.with(|c| {
            Ok(
                c.prepare_cached("SELECT sealed FROM grants WHERE key_id = ?1 AND grantee = ?2")?
                    .query_map([key_id, grantee], |r| Ok(SealedBlob(r.get(0)?)))?
                    .collect::<Result<Vec<_>, _>>()?,
            )
        })
    }

    fn grant(&self, key_id: &str, grant_id: &str) -> Result<Option<SealedBlob>, HostError> {
        self.with(|c| {
            Ok(c.prepare_cached("SELECT sealed FROM grants WHERE id = ?1")?
                .query_row([format!("{key_id}/{grant_id}")], |r| r.get(0))
                .optional()?
                .map(SealedBlob))
        })
    }

    fn grants_named(&self, key_id: &str, name: &str) -> Result<Vec<SealedBlob>, HostError> {
        self.with(|c| {
            Ok(
                c.prepare_cached("SELECT sealed FROM grants WHERE key_id = ?1 AND name = ?2")?
                    .query_map([key_id, name], |r| Ok(SealedBlob(r.get(0)?)))?
                    .collect::<Result<Vec<_>, _>>()?,
            )
        })
    }

    fn list_grants(
        &self,
        key_id: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Page, HostError> {
        self.with(|c| {
            let rows = c
                .prepare_cached(
                    "SELECT grant_id, sealed FROM grants WHERE key_id = ?1 AND grant_id > ?2
                     ORDER BY grant_id LIMIT ?3",
                )?
                .query_map(
                    params![
                        key_id,
                        after.unwrap_or(""),
                        sql(limit as u64).saturating_add(1)
                    ],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(page(rows, limit))
        })
    }

    fn retirable_grants(
        &self,
        retiring: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Page, HostError> {
        self.with(|c| {
            let rows = c
                .prepare_cached(
                    "SELECT id, sealed FROM grants WHERE retiring = ?1 AND id > ?2
                     ORDER BY id LIMIT ?3",
                )?
                .query_map(
                    params![
                        retiring,
                        after.unwrap_or(""),
                        sql(limit as u64).saturating_add(1)
                    ],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(page(rows, limit))
        })
    }

    fn keys_with_grants(&self) -> Result<Vec<String>, HostError> {
        self.with(|c| {
            Ok(c.prepare_cached("SELECT DISTINCT key_id FROM grants")?
                .query_map([], |r| r.get(0))?
                .collect::<Result<Vec<_>, _>>()?)
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
        prefix: &str,
        after: Option<&str>,
        limit: usize,
        key_id: Option<&str>,
    ) -> Result<Page, HostError> {
        // One region's names: those from `prefix` up to (not including) `prefix` with its last
        // character ('/') raised by one.
        let end = format!("{}0", prefix.strip_suffix('/').unwrap_or(prefix));
        self.with(|c| {
            let mut st = c.prepare_cached(
                "SELECT name, sealed FROM aliases
                 WHERE name > ?1 AND name >= ?4 AND name < ?5 AND (?2 IS NULL OR key_id = ?2)
                 ORDER BY name LIMIT ?3",
            )?;
            let rows = st
                .query_map(
                    params![
                        after.unwrap_or(""),
                        key_id,
                        sql(limit as u64).saturating_add(1),
                        prefix,
                        end
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
                    StoreWrite::PutPrincipal { id, generation, expected: None, sealed, access_key_ids } => {
                        tx.execute("DELETE FROM tombstones WHERE id = ?1", [format!("3:{id}")])?;
                        let n = tx.execute(
                            "INSERT OR IGNORE INTO principals (id, generation, sealed, name)
                             VALUES (?1, ?2, ?3, ?1)",
                            params![id, sql(*generation), sealed.0],
                        )?;
                        index_access_keys(&tx, id, access_key_ids)?;
                        n
                    }
                    // Generation 0: a row of schema version 1, which did not keep it.
                    StoreWrite::PutPrincipal { id, generation, expected: Some(prev), sealed, access_key_ids } => {
                        let n = tx.execute(
                            "UPDATE principals SET generation = ?2, sealed = ?3
                             WHERE id = ?1 AND generation IN (?4, 0)",
                            params![id, sql(*generation), sealed.0, sql(*prev)],
                        )?;
                        index_access_keys(&tx, id, access_key_ids)?;
                        n
                    }
                    StoreWrite::PutGrant { .. } | StoreWrite::DeleteGrant { .. } => apply_grant(&tx, w)?,
                    StoreWrite::DeletePrincipal { id, expected, generation, tombstone } => {
                        let n = tx.execute(
                            "DELETE FROM principals WHERE id = ?1 AND generation IN (?2, 0)",
                            params![id, sql(*expected)],
                        )?;
                        index_access_keys(&tx, id, &[])?;
                        put_tombstone(&tx, &format!("3:{id}"), *generation, tombstone)?;
                        n
                    }
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
                    StoreWrite::PutUsage { key_id, generation, expected: None, sealed } => tx.execute(
                        "INSERT OR IGNORE INTO key_usage (key_id, generation, sealed) VALUES (?1, ?2, ?3)",
                        params![key_id, sql(*generation), sealed.0],
                    )?,
                    StoreWrite::PutUsage { key_id, generation, expected: Some(prev), sealed } => tx.execute(
                        "UPDATE key_usage SET generation = ?2, sealed = ?3 WHERE key_id = ?1 AND generation = ?4",
                        params![key_id, sql(*generation), sealed.0, sql(*prev)],
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
                    tracing::warn!(
                        write = ?w,
                        "a conditional store write did not apply (another writer changed the \
                         record); the request's writes are rolled back"
                    );
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
                // Any key with a deletion date: a multi-Region key's replica may be pending
                // deletion while the view its record was last written in is not.
                "SELECT sealed FROM keys WHERE deletion_date IS NOT NULL AND deletion_date <= ?1
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

    fn usage(&self, key_id: &str) -> Result<Option<SealedBlob>, HostError> {
        self.with(|c| {
            Ok(
                c.prepare_cached("SELECT sealed FROM key_usage WHERE key_id = ?1")?
                    .query_row([key_id], |r| r.get(0))
                    .optional()?
                    .map(SealedBlob),
            )
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
                "SELECT id, sealed FROM principals WHERE id > ?1 ORDER BY id LIMIT ?2"
            }
            Table::Grants => "SELECT id, sealed FROM grants WHERE id > ?1 ORDER BY id LIMIT ?2",
            Table::Tombstones => {
                "SELECT id, sealed FROM tombstones WHERE id > ?1 ORDER BY id LIMIT ?2"
            }
            Table::Usage => {
                "SELECT key_id, sealed FROM key_usage WHERE key_id > ?1 ORDER BY key_id LIMIT ?2"
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

/// Applies a grant write; the rows it changed.
fn apply_grant(tx: &rusqlite::Transaction<'_>, w: &StoreWrite) -> Result<usize, HostError> {
    Ok(match w {
        StoreWrite::PutGrant {
            key_id,
            grant_id,
            generation,
            expected,
            sealed,
            grantee,
            retiring,
            name,
        } => {
            let id = format!("{key_id}/{grant_id}");
            match expected {
                            None => {
                                tx.execute("DELETE FROM tombstones WHERE id = ?1", [format!("5:{id}")])?;
                                tx.execute(
                                    "INSERT OR IGNORE INTO grants
                                     (id, key_id, grant_id, generation, sealed, grantee, retiring, name)
                                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                                    params![id, key_id, grant_id, sql(*generation), sealed.0, grantee, retiring, name],
                                )?
                            }
                            Some(prev) => tx.execute(
                                "UPDATE grants SET generation = ?2, sealed = ?3 WHERE id = ?1 AND generation = ?4",
                                params![id, sql(*generation), sealed.0, sql(*prev)],
                            )?,
                        }
        }
        StoreWrite::DeleteGrant {
            key_id,
            grant_id,
            expected,
            generation,
            tombstone,
        } => {
            let id = format!("{key_id}/{grant_id}");
            let n = tx.execute(
                "DELETE FROM grants WHERE id = ?1 AND generation = ?2",
                params![id, sql(*expected)],
            )?;
            put_tombstone(tx, &format!("5:{id}"), *generation, tombstone)?;
            n
        }
        _ => 0,
    })
}

/// Makes `access_key_ids` the access keys that find principal `id`.
fn index_access_keys(
    tx: &rusqlite::Transaction<'_>,
    id: &str,
    access_key_ids: &[String],
) -> Result<(), HostError> {
    tx.execute("DELETE FROM access_keys WHERE principal = ?1", [id])?;
    for akid in access_key_ids {
        tx.execute(
            "INSERT OR REPLACE INTO access_keys (access_key_id, principal) VALUES (?1, ?2)",
            params![akid, id],
        )?;
    }
    Ok(())
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

    /// A record with a valid public header (and no valid body).
    fn header(kind: u8, id: &str) -> Vec<u8> {
        let mut v = ekms_wire::sealed::MAGIC.to_vec();
        v.extend([ekms_wire::sealed::VERSION, kind]);
        v.extend([0; 8]);
        v.extend(u16::try_from(id.len()).unwrap().to_be_bytes());
        v.extend(id.as_bytes());
        v.extend([7; 28]);
        v
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
        let admin = SealedBlob(header(3, "admin"));
        s.put_principal(&admin, &["AK".into()]).unwrap();
        let p = s.scan(Table::Principals, None, 10).unwrap();
        assert_eq!(p.records, vec![admin.clone()]);
        assert_eq!(
            s.principal("AK").unwrap(),
            Some((admin.clone(), "admin".into()))
        );
        assert_eq!(s.principal_named("admin").unwrap(), Some(admin));
        assert!(s.principal("AK2").unwrap().is_none());
    }

    #[test]
    fn a_schema_1_store_migrates_and_its_admin_is_found_by_key_and_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        {
            let c = Connection::open(&path).unwrap();
            c.execute_batch(
                "CREATE TABLE principals (access_key_id TEXT PRIMARY KEY, sealed BLOB NOT NULL);
                 CREATE TABLE meta (k TEXT PRIMARY KEY, v TEXT NOT NULL);
                 INSERT INTO meta (k, v) VALUES ('schema_version', '1');
                 INSERT INTO principals VALUES ('EKMSOLD', x'01');",
            )
            .unwrap();
        }
        let s = SqliteStore::open(&path).unwrap();
        assert_eq!(
            s.principal("EKMSOLD").unwrap(),
            Some((SealedBlob(vec![1]), "admin".into()))
        );
        assert_eq!(
            s.principal_named("admin").unwrap(),
            Some(SealedBlob(vec![1]))
        );
        // Its next version replaces it under the same id, whatever generation it had.
        s.apply(&[StoreWrite::PutPrincipal {
            id: "EKMSOLD".into(),
            generation: 9,
            expected: Some(4),
            sealed: SealedBlob(vec![2]),
            access_key_ids: vec!["EKMSOLD".into(), "EKMSNEW".into()],
        }])
        .unwrap();
        drop(s);
        let s = SqliteStore::open(&path).unwrap();
        assert_eq!(
            s.principal("EKMSNEW").unwrap().map(|p| p.0),
            Some(SealedBlob(vec![2]))
        );
        assert_eq!(
            s.principal_named("admin").unwrap(),
            Some(SealedBlob(vec![2]))
        );
    }

    #[test]
    fn usage_records_are_written_over_their_generation_only() {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStore::open(&dir.path().join("db")).unwrap();
        let put = |generation, expected, byte| StoreWrite::PutUsage {
            key_id: "k".into(),
            generation,
            expected,
            sealed: SealedBlob(vec![byte]),
        };
        assert!(s.usage("k").unwrap().is_none());
        s.apply(&[put(3, None, 1)]).unwrap();
        assert!(matches!(
            s.apply(&[put(4, None, 2)]),
            Err(HostError::Conflict)
        ));
        assert!(matches!(
            s.apply(&[put(5, Some(2), 2)]),
            Err(HostError::Conflict)
        ));
        s.apply(&[put(5, Some(3), 3)]).unwrap();
        assert_eq!(s.usage("k").unwrap(), Some(SealedBlob(vec![3])));
        assert_eq!(s.scan(Table::Usage, None, 10).unwrap().records.len(), 1);
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
            s.list_aliases("alias/", None, 10, Some("c"))
                .unwrap()
                .records
                .len(),
            1
        );
        assert_eq!(
            s.list_aliases("alias/", None, 10, Some("a"))
                .unwrap()
                .records
                .len(),
            0
        );
        // One region's aliases: the home region's plain names, another's prefixed.
        s.apply(&[StoreWrite::PutAlias {
            name: "eu-west-1/alias/x".into(),
            key_id: "c".into(),
            generation: 3,
            expected: None,
            sealed: SealedBlob(vec![8]),
        }])
        .unwrap();
        let names = |prefix: &str| -> Vec<String> {
            s.list_aliases(prefix, None, 10, None)
                .unwrap()
                .records
                .iter()
                .map(|r| r.0.len().to_string())
                .collect()
        };
        assert_eq!(names("alias/").len(), 1);
        assert_eq!(names("eu-west-1/alias/").len(), 1);
        assert!(names("eu-west-2/alias/").is_empty());
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
