//! The audit log's tables in the store's SQLite database (`audit_log`, `audit_checkpoints`),
//! on a connection of their own, so that batched audit writes and the CLI's reads do not wait
//! for the record store's lock.

use std::path::Path;

use ::hex::encode as hex;
use ekms_wire::audit::{AuditCheckpoint, AuditEntry};
use rusqlite::{Connection, OpenFlags, OptionalExtension as _, params};

use crate::HostError;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS audit_log (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    chain TEXT NOT NULL,
    seq INTEGER NOT NULL,
    time_ms INTEGER NOT NULL,
    record TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS audit_checkpoints (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    chain TEXT NOT NULL,
    seq INTEGER NOT NULL,
    head TEXT NOT NULL,
    time_ms INTEGER NOT NULL,
    public_key TEXT NOT NULL,
    signature TEXT NOT NULL
);
";

/// One stored record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRecord {
    /// Row id (arrival order).
    pub id: i64,
    /// Chain id, hex (the host's copy; the verifier trusts the one inside the record).
    pub chain: String,
    /// Sequence number (the host's copy).
    pub seq: i64,
    /// Time, Unix milliseconds (the host's copy).
    pub time_ms: i64,
    /// The record line.
    pub record: String,
}

/// A connection to the audit tables.
#[derive(Debug)]
pub struct AuditDb {
    conn: Connection,
}

impl AuditDb {
    /// Opens (and creates) the audit tables in the database at `path`, for writing.
    pub fn open(path: &Path) -> Result<Self, HostError> {
        let conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        // Batches are made durable by the WAL's checkpoints, not one fsync each: a record
        // lost to a power cut ends its chain early (the next chain names what was kept), the
        // same as records a crash lost before their batch was written (docs/audit.md).
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        // Appended records rewrite the table's last pages in every batch: checkpointing the WAL
        // less often copies each page back once instead of once per version (64 MiB of WAL at
        // most, then SQLite's own checkpoint).
        conn.pragma_update(None, "wal_autocheckpoint", 16_384)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.execute_batch(SCHEMA)?;
        Ok(Self { conn })
    }

    /// Opens the database at `path` read-only (a running appliance's, or an offline copy).
    pub fn open_read_only(path: &Path) -> Result<Self, HostError> {
        if !path.exists() {
            return Err(HostError::Startup(format!(
                "no store at {}",
                path.display()
            )));
        }
        let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        let has: Option<String> = conn
            .query_row(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'audit_log'",
                [],
                |r| r.get(0),
            )
            .optional()?;
        if has.is_none() {
            return Err(HostError::Startup(format!(
                "{} has no audit_log table (made by an appliance before the audit log)",
                path.display()
            )));
        }
        Ok(Self { conn })
    }

    /// Stores a batch of records and checkpoints in one transaction. The table has no index
    /// but its row id: records are appended, and read in arrival order.
    pub fn write(
        &mut self,
        entries: &[AuditEntry],
        checkpoints: &[AuditCheckpoint],
    ) -> Result<(), HostError> {
        let tx = self.conn.transaction()?;
        {
            let mut rec = tx.prepare_cached(
                "INSERT INTO audit_log (chain, seq, time_ms, record) VALUES (?1, ?2, ?3, ?4)",
            )?;
            for e in entries {
                rec.execute(params![
                    hex(&e.chain),
                    i64::try_from(e.seq).unwrap_or(i64::MAX),
                    e.time_ms,
                    e.record
                ])?;
            }
            let mut cp = tx.prepare_cached(
                "INSERT INTO audit_checkpoints (chain, seq, head, time_ms, public_key, signature)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?;
            for c in checkpoints
                .iter()
                .chain(entries.iter().filter_map(|e| e.checkpoint.as_ref()))
            {
                cp.execute(params![
                    hex(&c.chain),
                    i64::try_from(c.seq).unwrap_or(i64::MAX),
                    hex(&c.head),
                    c.time_ms,
                    hex(&c.public_key),
                    hex(&c.signature)
                ])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// The newest stored record (by arrival): its chain, seq and line.
    pub fn newest(&self) -> Result<Option<StoredRecord>, HostError> {
        Ok(self
            .conn
            .query_row(
                "SELECT id, chain, seq, time_ms, record FROM audit_log ORDER BY id DESC LIMIT 1",
                [],
                row,
            )
            .optional()?)
    }

    /// Records in arrival order with row id above `after`, at most `limit`.
    pub fn records_after(&self, after: i64, limit: usize) -> Result<Vec<StoredRecord>, HostError> {
        let mut q = self.conn.prepare_cached(
            "SELECT id, chain, seq, time_ms, record FROM audit_log WHERE id > ?1
             ORDER BY id LIMIT ?2",
        )?;
        let rows = q.query_map(
            params![after, i64::try_from(limit).unwrap_or(i64::MAX)],
            row,
        )?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The row id of the first record at or after `time_ms` (0 when none is older).
    pub fn first_id_since(&self, time_ms: i64) -> Result<i64, HostError> {
        let id: Option<i64> = self.conn.query_row(
            "SELECT MIN(id) FROM audit_log WHERE time_ms >= ?1",
            [time_ms],
            |r| r.get(0),
        )?;
        Ok(id.map_or(i64::MAX, |i| i - 1))
    }

    /// The row id before the newest `n` records.
    pub fn id_before_last(&self, n: usize) -> Result<i64, HostError> {
        let id: Option<i64> = self
            .conn
            .query_row(
                "SELECT id FROM audit_log ORDER BY id DESC LIMIT 1 OFFSET ?1",
                [i64::try_from(n).unwrap_or(i64::MAX)],
                |r| r.get(0),
            )
            .optional()?;
        Ok(id.unwrap_or(0))
    }

    /// Every stored checkpoint, in arrival order.
    pub fn checkpoints(&self) -> Result<Vec<AuditCheckpoint>, HostError> {
        let mut q = self.conn.prepare(
            "SELECT chain, seq, head, time_ms, public_key, signature FROM audit_checkpoints
             ORDER BY id",
        )?;
        let rows = q.query_map([], |r| {
            let text = |i: usize| -> rusqlite::Result<Vec<u8>> {
                let s: String = r.get(i)?;
                Ok(::hex::decode(s).unwrap_or_default())
            };
            Ok(AuditCheckpoint {
                chain: text(0)?,
                seq: u64::try_from(r.get::<_, i64>(1)?).unwrap_or(u64::MAX),
                head: text(2)?,
                time_ms: r.get(3)?,
                public_key: text(4)?,
                signature: text(5)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<StoredRecord> {
    Ok(StoredRecord {
        id: r.get(0)?,
        chain: r.get(1)?,
        seq: r.get(2)?,
        time_ms: r.get(3)?,
        record: r.get(4)?,
    })
}
