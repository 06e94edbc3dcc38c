//! The host's side of the enclave's audit log: it stores what the enclave wrote, in batches,
//! and asks for signed checkpoints. It cannot write a record itself (docs/audit.md).

pub mod db;
pub mod verify;

use std::{
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use ekms_wire::{
    audit::{AuditCheckpoint, AuditEntry},
    msg::{EnclaveResponse, HostRequest},
};
use tokio::sync::{mpsc, oneshot};

use crate::{HostError, client::EnclaveClient};

/// The file in a data dir holding the domain's audit public key (hex), written when the
/// enclave first reports it.
pub const PUBLIC_KEY_FILE: &str = "audit-public-key";
/// How often the host asks the enclave for a checkpoint (when records were written since).
pub const CHECKPOINT_INTERVAL: Duration = Duration::from_secs(5);
/// Records waiting to be written before a request waits for the writer (about 11 MiB of
/// records at most).
const QUEUE: usize = 16_384;
/// Most records per transaction.
const BATCH: usize = 4096;

enum Item {
    Entry(AuditEntry),
    Checkpoint(AuditCheckpoint),
    Flush(oneshot::Sender<()>),
}

/// Where the relay hands the enclave's audit records.
#[derive(Debug, Clone)]
pub struct AuditSink {
    tx: mpsc::Sender<Item>,
    /// Records handed over and not yet written.
    pending: Arc<AtomicU64>,
}

impl std::fmt::Debug for Item {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("audit item")
    }
}

impl AuditSink {
    /// Starts the writer over the database at `path`.
    pub fn start(path: &Path) -> Result<Self, HostError> {
        let db = db::AuditDb::open(path)?;
        let (tx, rx) = mpsc::channel(QUEUE);
        let pending = Arc::new(AtomicU64::new(0));
        let p = Arc::clone(&pending);
        std::thread::Builder::new()
            .name("ekms-audit-writer".into())
            .spawn(move || writer(db, rx, &p))?;
        Ok(Self { tx, pending })
    }

    /// Queues the records of one call (waits only when the writer is far behind).
    pub async fn record(&self, entries: Vec<AuditEntry>) {
        for e in entries {
            self.pending.fetch_add(1, Ordering::Relaxed);
            if self.tx.send(Item::Entry(e)).await.is_err() {
                tracing::error!("the audit writer stopped: a record was not stored");
            }
        }
    }

    /// Queues a checkpoint.
    pub async fn checkpoint(&self, c: AuditCheckpoint) {
        let _ = self.tx.send(Item::Checkpoint(c)).await;
    }

    /// Waits until everything queued before is written.
    pub async fn flush(&self) {
        let (done, wait) = oneshot::channel();
        if self.tx.send(Item::Flush(done)).await.is_ok() {
            let _ = wait.await;
        }
    }

    /// Records handed over and not yet written (the audit lag).
    #[must_use]
    pub fn lag(&self) -> u64 {
        self.pending.load(Ordering::Relaxed)
    }
}

/// How long the writer lets records gather before it writes them: one transaction, and no
/// wake-up per record, however fast they come.
const GATHER: Duration = Duration::from_millis(50);

/// The writer: a thread of its own that wakes every [`GATHER`], takes everything queued and
/// writes it in one transaction. Senders never wake it (it is not waiting on the queue), so a
/// record costs a request one queue push. Ends when every sender is gone.
fn writer(mut db: db::AuditDb, mut rx: mpsc::Receiver<Item>, pending: &AtomicU64) {
    let mut entries = Vec::with_capacity(BATCH);
    let mut checkpoints = Vec::new();
    let mut flushes = Vec::new();
    loop {
        std::thread::sleep(GATHER);
        let mut closed = false;
        loop {
            match rx.try_recv() {
                Ok(Item::Entry(e)) => entries.push(e),
                Ok(Item::Checkpoint(c)) => checkpoints.push(c),
                Ok(Item::Flush(done)) => flushes.push(done),
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => {
                    closed = true;
                    break;
                }
            }
            if entries.len() >= BATCH {
                break;
            }
        }
        if !entries.is_empty() || !checkpoints.is_empty() {
            let n = entries.len() as u64;
            if let Err(e) = db.write(&entries, &checkpoints) {
                tracing::error!(error = %e, records = n, "could not store audit records");
            }
            pending.fetch_sub(n, Ordering::Relaxed);
            entries.clear();
            checkpoints.clear();
        }
        for done in flushes.drain(..) {
            let _ = done.send(());
        }
        if closed {
            return;
        }
    }
}

/// The audit writer and checkpoint loop of a serving appliance.
#[derive(Debug)]
pub struct Running {
    sink: AuditSink,
    checkpoints: tokio::task::JoinHandle<()>,
}

impl Running {
    /// Starts storing `relay`'s audit records in the data dir's database, with a checkpoint
    /// every [`CHECKPOINT_INTERVAL`].
    pub fn start(relay: &crate::relay::Relay, data_dir: &Path) -> Result<Self, HostError> {
        let sink = AuditSink::start(&data_dir.join("ekms.sqlite3"))?;
        relay.set_audit(sink.clone());
        let checkpoints = tokio::spawn(checkpoint_loop(
            relay.enclave_arc(),
            sink.clone(),
            data_dir.to_owned(),
        ));
        Ok(Self { sink, checkpoints })
    }

    /// At shutdown: the newest records get a checkpoint, and everything queued is written,
    /// before the enclave stops.
    pub async fn stop(self, relay: &crate::relay::Relay) {
        self.checkpoints.abort();
        checkpoint_once(relay.enclave(), &self.sink, false).await;
        self.sink.flush().await;
    }
}

/// Tells the enclave which stored record is the newest (its next chain names it), and writes
/// the domain's audit public key to the data dir when the enclave reports one.
pub async fn resume(enclave: &EnclaveClient, data_dir: &Path) {
    let path = data_dir.join("ekms.sqlite3");
    let newest = tokio::task::spawn_blocking(move || {
        db::AuditDb::open_read_only(&path).and_then(|db| db.newest())
    })
    .await;
    if let Ok(Ok(Some(r))) = newest {
        let head = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, r.record.as_bytes());
        let request = HostRequest::AuditResume {
            chain: ::hex::decode(&r.chain).unwrap_or_default(),
            seq: u64::try_from(r.seq).unwrap_or(0),
            head: head.as_ref().to_vec(),
        };
        if let Err(e) = enclave.call(&request).await {
            tracing::warn!(error = %e, "could not tell the enclave the newest audit record");
        }
    }
    write_public_key(enclave, data_dir).await;
}

/// Writes `DIR/audit-public-key` from the enclave's status, once a domain is open.
pub async fn write_public_key(enclave: &EnclaveClient, data_dir: &Path) {
    let file = public_key_path(data_dir);
    if file.exists() {
        return;
    }
    if let Ok(EnclaveResponse::Status(s)) = enclave.call(&HostRequest::Status).await
        && let Some(key) = s.audit_key
        && let Err(e) = std::fs::write(&file, format!("{}\n", ::hex::encode(key)))
    {
        tracing::warn!(error = %e, "could not write the audit public key");
    }
}

/// `DIR/audit-public-key`.
#[must_use]
pub fn public_key_path(data_dir: &Path) -> PathBuf {
    data_dir.join(PUBLIC_KEY_FILE)
}

/// Asks the enclave for a checkpoint every [`CHECKPOINT_INTERVAL`] (when it wrote records
/// since the last) and stores it; also writes the public key file once the domain opens.
pub async fn checkpoint_loop(enclave: Arc<EnclaveClient>, sink: AuditSink, data_dir: PathBuf) {
    loop {
        tokio::time::sleep(CHECKPOINT_INTERVAL).await;
        checkpoint_once(&enclave, &sink, false).await;
        write_public_key(&enclave, &data_dir).await;
    }
}

/// One checkpoint request (`force`: even when nothing is new); stores what the enclave signed.
pub async fn checkpoint_once(
    enclave: &EnclaveClient,
    sink: &AuditSink,
    force: bool,
) -> Option<AuditCheckpoint> {
    match enclave.call(&HostRequest::AuditCheckpoint { force }).await {
        Ok(EnclaveResponse::AuditCheckpoint(Some(c))) => {
            sink.checkpoint(c.clone()).await;
            Some(c)
        }
        Ok(_) => None,
        Err(e) => {
            tracing::debug!(error = %e, "no audit checkpoint");
            None
        }
    }
}
