//! The host's side of the enclave's audit log: it collects what the enclave wrote, in batches
//! and in chain order, stores it, and asks for signed checkpoints. It cannot write a record
//! itself (docs/audit.md).
//!
//! The enclave keeps every call's record until the host drains it ([`DRAIN_INTERVAL`]): a
//! record costs a call neither bytes on its vsock answer nor a hand-over on the host, and one
//! drain is one queue item and one transaction.

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
    audit::{AuditBlock, AuditCheckpoint},
    msg::{EnclaveResponse, HostRequest},
};
use tokio::sync::{mpsc, oneshot};

use crate::{HostError, client::EnclaveClient};

/// The file in a data dir holding the domain's audit public key (hex), written when the
/// enclave first reports it.
pub const PUBLIC_KEY_FILE: &str = "audit-public-key";
/// How often the host asks the enclave for a checkpoint (when records were written since).
pub const CHECKPOINT_INTERVAL: Duration = Duration::from_secs(5);
/// How often the host drains the enclave's audit records.
pub const DRAIN_INTERVAL: Duration = Duration::from_millis(50);
/// Drained batches waiting for the writer before the drain waits for it (each at most
/// `DRAIN_MAX_BYTES`; the enclave then holds the rest, and past its own bound refuses calls).
const QUEUE: usize = 8;

enum Item {
    Batch(Vec<AuditBlock>),
    Checkpoint(AuditCheckpoint),
    Flush(oneshot::Sender<()>),
}

/// Where the host's drains hand the enclave's audit records.
#[derive(Debug, Clone)]
pub struct AuditSink {
    tx: mpsc::Sender<Item>,
    /// Records handed over and not yet written.
    pending: Arc<AtomicU64>,
    /// One drain at a time, from the enclave's answer to the writer's queue, so that batches
    /// reach the table in chain order.
    draining: Arc<tokio::sync::Mutex<()>>,
}

impl std::fmt::Debug for Item {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("audit item")
    }
}

impl AuditSink {
    /// Starts the writer over the audit database of `data_dir`.
    pub fn start(data_dir: &Path) -> Result<Self, HostError> {
        let db = db::AuditDb::open(data_dir)?;
        let (tx, rx) = mpsc::channel(QUEUE);
        let pending = Arc::new(AtomicU64::new(0));
        let p = Arc::clone(&pending);
        std::thread::Builder::new()
            .name("ekms-audit-writer".into())
            .spawn(move || writer(db, rx, &p))?;
        Ok(Self {
            tx,
            pending,
            draining: Arc::default(),
        })
    }

    /// Collects every record the enclave holds and queues them for the writer (waits when
    /// the writer is far behind).
    ///
    /// The enclave lets go of the records it hands over, so a drain must not stop between its
    /// answer and the writer's queue: it runs as a task of its own, which goes on when the
    /// caller is cancelled (a client that hangs up on `/ekms/audit/head`, the drain loop
    /// stopped at shutdown). A drain cut there lost the newest records of a chain, which
    /// `ekms audit verify` then reported as dropped.
    pub async fn drain(&self, enclave: &Arc<EnclaveClient>) {
        let (sink, enclave) = (self.clone(), Arc::clone(enclave));
        if let Err(e) = tokio::spawn(async move { sink.drain_now(&enclave).await }).await {
            tracing::error!(error = %e, "the audit drain failed");
        }
    }

    async fn drain_now(&self, enclave: &EnclaveClient) {
        let _one = self.draining.lock().await;
        loop {
            let (blocks, more) = match enclave.call(&HostRequest::AuditDrain).await {
                Ok(EnclaveResponse::AuditRecords { blocks, more }) => (blocks, more),
                Ok(_) => return,
                Err(e) => {
                    tracing::debug!(error = %e, "no audit drain");
                    return;
                }
            };
            if !blocks.is_empty() {
                let n: usize = blocks.iter().map(AuditBlock::len).sum();
                self.pending.fetch_add(n as u64, Ordering::Relaxed);
                if self.tx.send(Item::Batch(blocks)).await.is_err() {
                    tracing::error!("the audit writer stopped: records were not stored");
                }
            }
            if !more {
                return;
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

/// The writer: a thread of its own that takes everything queued (a drain's batches, the
/// checkpoints) and writes it in one transaction. Ends when every sender is gone.
fn writer(mut db: db::AuditDb, mut rx: mpsc::Receiver<Item>, pending: &AtomicU64) {
    let mut blocks = Vec::new();
    let mut checkpoints = Vec::new();
    let mut flushes = Vec::new();
    while let Some(first) = rx.blocking_recv() {
        let mut next = Some(first);
        while let Some(item) = next.take() {
            match item {
                Item::Batch(b) => blocks.extend(b),
                Item::Checkpoint(c) => checkpoints.push(c),
                Item::Flush(done) => flushes.push(done),
            }
            next = rx.try_recv().ok();
        }
        if !blocks.is_empty() || !checkpoints.is_empty() {
            let n: usize = blocks.iter().map(AuditBlock::len).sum();
            if let Err(e) = db.write(&blocks, &checkpoints) {
                tracing::error!(error = %e, records = n, "could not store audit records");
            }
            pending.fetch_sub(n as u64, Ordering::Relaxed);
            blocks.clear();
            checkpoints.clear();
        }
        for done in flushes.drain(..) {
            let _ = done.send(());
        }
    }
}

/// The audit drain, writer and checkpoint loop of a serving appliance.
#[derive(Debug)]
pub struct Running {
    sink: AuditSink,
    checkpoints: tokio::task::JoinHandle<()>,
    drains: tokio::task::JoinHandle<()>,
}

impl Running {
    /// Starts collecting the enclave's audit records every [`DRAIN_INTERVAL`] into the data
    /// dir's database, with a checkpoint every [`CHECKPOINT_INTERVAL`].
    pub fn start(relay: &crate::relay::Relay, data_dir: &Path) -> Result<Self, HostError> {
        let sink = AuditSink::start(data_dir)?;
        relay.set_audit(sink.clone());
        let checkpoints = tokio::spawn(checkpoint_loop(
            relay.enclave_arc(),
            sink.clone(),
            data_dir.to_owned(),
        ));
        let drains = tokio::spawn(drain_loop(relay.enclave_arc(), sink.clone()));
        Ok(Self {
            sink,
            checkpoints,
            drains,
        })
    }

    /// At shutdown: the newest records get a checkpoint, and everything the enclave holds is
    /// collected and written, before the enclave stops.
    pub async fn stop(self, relay: &crate::relay::Relay) {
        self.checkpoints.abort();
        // A drain under way finishes in its own task (see `AuditSink::drain`); the one below
        // waits for it.
        self.drains.abort();
        checkpoint_once(relay.enclave(), &self.sink, false).await;
        self.sink.drain(&relay.enclave_arc()).await;
        self.sink.flush().await;
    }
}

/// Drains the enclave's audit records every [`DRAIN_INTERVAL`].
async fn drain_loop(enclave: Arc<EnclaveClient>, sink: AuditSink) {
    let mut tick = tokio::time::interval(DRAIN_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        sink.drain(&enclave).await;
    }
}

/// Tells the enclave which stored record is the newest (its next chain names it), and writes
/// the domain's audit public key to the data dir when the enclave reports one.
pub async fn resume(enclave: &EnclaveClient, data_dir: &Path) {
    let dir = data_dir.to_owned();
    let newest = tokio::task::spawn_blocking(move || {
        db::AuditDb::open_read_only(&dir).and_then(|db| db.newest())
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // test code

    use std::time::Duration;

    use ekms_wire::{
        Listener, SocketAddress,
        frame::{self, Envelope},
    };
    use tokio::io::AsyncWriteExt as _;

    use super::*;

    /// An enclave that answers one `AuditDrain`, after `delay`, with six records it then no
    /// longer holds.
    fn slow_enclave(addr: &SocketAddress, delay: Duration) {
        let listener = Listener::bind(addr).unwrap();
        tokio::spawn(async move {
            let stream = listener.accept().await.unwrap();
            let (reader, mut writer) = stream.into_split();
            let mut reader = frame::FrameReader::new(reader);
            while let Ok(Some(body)) = reader.next().await {
                let Envelope { id, msg, .. } = frame::decode::<HostRequest>(&body).unwrap();
                assert!(matches!(msg, HostRequest::AuditDrain));
                tokio::time::sleep(delay).await;
                let reply = EnclaveResponse::AuditRecords {
                    blocks: vec![db::tests::block(0..6)],
                    more: false,
                };
                writer
                    .write_all(&frame::encode(id, &reply).unwrap())
                    .await
                    .unwrap();
            }
        });
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_drain_whose_caller_gives_up_still_stores_what_the_enclave_handed_over() {
        let dir = tempfile::tempdir().unwrap();
        let addr = SocketAddress::Mock {
            dir: dir.path().to_owned(),
            cid: 16,
            port: 5000,
        };
        slow_enclave(&addr, Duration::from_millis(300));
        let enclave = Arc::new(EnclaveClient::new(addr, 1));
        let sink = AuditSink::start(dir.path()).unwrap();
        // The caller stops waiting (a client hanging up, the drain loop stopped at shutdown)
        // while the enclave's answer is on its way.
        let cut = tokio::time::timeout(Duration::from_millis(50), sink.drain(&enclave)).await;
        assert!(cut.is_err());
        // The next drain waits for the one under way; then everything is written.
        tokio::time::timeout(Duration::from_secs(5), async {
            let _one = sink.draining.lock().await;
        })
        .await
        .unwrap();
        sink.flush().await;
        let db = db::AuditDb::open_read_only(dir.path()).unwrap();
        let seqs: Vec<i64> = db
            .records_after(0, 10)
            .unwrap()
            .iter()
            .map(|r| r.seq)
            .collect();
        assert_eq!(seqs, [0, 1, 2, 3, 4, 5]);
    }
}
