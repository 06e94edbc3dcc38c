//! The host's side of the vsock link: a small pool of connections to the enclave, each with a
//! writer task and a reader task, so many requests are in flight at once and replies are matched
//! by request id. A dead connection fails its pending requests (retryable) and is re-dialled on
//! the next call.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
    time::Duration,
};

use ekms_wire::{
    SocketAddress, Stream,
    frame::{self, Envelope},
    msg::{EnclaveResponse, HostRequest},
};
use tokio::sync::{mpsc, oneshot};

use crate::HostError;

/// How long a request may wait for the enclave.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<EnclaveResponse>>>>;

struct Conn {
    tx: mpsc::Sender<Vec<u8>>,
    pending: Pending,
    alive: Arc<AtomicBool>,
}

/// A pool of multiplexed connections to one enclave.
pub struct EnclaveClient {
    addr: SocketAddress,
    slots: Vec<tokio::sync::Mutex<Option<Arc<Conn>>>>,
    next_slot: AtomicUsize,
    next_id: AtomicU64,
}

impl std::fmt::Debug for EnclaveClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "EnclaveClient({}, {} connections)",
            self.addr,
            self.slots.len()
        )
    }
}

impl EnclaveClient {
    /// A pool of `connections` connections to `addr` (dialled lazily).
    #[must_use]
    pub fn new(addr: SocketAddress, connections: usize) -> Self {
        Self {
            addr,
            slots: (0..connections.max(1))
                .map(|_| tokio::sync::Mutex::new(None))
                .collect(),
            next_slot: AtomicUsize::new(0),
            next_id: AtomicU64::new(1),
        }
    }

    /// The enclave's address.
    #[must_use]
    pub fn addr(&self) -> &SocketAddress {
        &self.addr
    }

    async fn conn(&self) -> Result<Arc<Conn>, HostError> {
        let n = self.next_slot.fetch_add(1, Ordering::Relaxed) % self.slots.len();
        let slot = self
            .slots
            .get(n)
            .ok_or_else(|| HostError::Unavailable("no connection slot".into()))?;
        let mut slot = slot.lock().await;
        if let Some(c) = slot.as_ref()
            && c.alive.load(Ordering::Acquire)
        {
            return Ok(Arc::clone(c));
        }
        let stream = Stream::connect(&self.addr)
            .await
            .map_err(|e| HostError::Unavailable(e.to_string()))?;
        let conn = Arc::new(spawn_conn(stream));
        *slot = Some(Arc::clone(&conn));
        Ok(conn)
    }

    /// Sends a request and waits for its reply.
    pub async fn call(&self, req: &HostRequest) -> Result<EnclaveResponse, HostError> {
        let conn = self.conn().await?;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let frame = frame::encode(id, req).map_err(|e| HostError::Unavailable(e.to_string()))?;
        let (tx, rx) = oneshot::channel();
        if let Ok(mut p) = conn.pending.lock() {
            p.insert(id, tx);
        }
        if conn.tx.send(frame).await.is_err() {
            conn.alive.store(false, Ordering::Release);
            return Err(HostError::Unavailable("connection closed".into()));
        }
        let started = std::time::Instant::now();
        match tokio::time::timeout(CALL_TIMEOUT, rx).await {
            Ok(Ok(resp)) => {
                crate::metrics::enclave_round_trip(started.elapsed().as_secs_f64());
                Ok(resp)
            }
            Ok(Err(_)) => Err(HostError::Unavailable(
                "connection to the enclave was lost".into(),
            )),
            Err(_) => {
                if let Ok(mut p) = conn.pending.lock() {
                    p.remove(&id);
                }
                Err(HostError::Unavailable(
                    "the enclave did not answer in time".into(),
                ))
            }
        }
    }

    /// Waits until the enclave answers a status request, up to `within`.
    pub async fn wait_ready(&self, within: Duration) -> Result<EnclaveResponse, HostError> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match self.call(&HostRequest::Status).await {
                Ok(r) => return Ok(r),
                Err(e) if tokio::time::Instant::now() >= deadline => return Err(e),
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }
}

fn spawn_conn(stream: Stream) -> Conn {
    let (reader, mut writer) = stream.into_split();
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(1024);
    let pending: Pending = Arc::new(Mutex::new(HashMap::new()));
    let alive = Arc::new(AtomicBool::new(true));
    let w_alive = Arc::clone(&alive);
    tokio::spawn(async move {
        if !frame::write_frames(&mut writer, &mut rx, frame::Gather::AfterReadyTasks).await {
            w_alive.store(false, Ordering::Release);
        }
    });
    let r_pending = Arc::clone(&pending);
    let r_alive = Arc::clone(&alive);
    tokio::spawn(async move {
        let mut reader = frame::FrameReader::new(reader);
        loop {
            match reader.next().await {
                Ok(Some(body)) => match frame::decode::<EnclaveResponse>(&body) {
                    Ok(Envelope { id, msg, .. }) => {
                        let waiter = r_pending.lock().ok().and_then(|mut p| p.remove(&id));
                        if let Some(w) = waiter {
                            let _ = w.send(msg);
                        }
                    }
                    Err((_, e)) => {
                        tracing::error!(error = %e, "undecodable reply from the enclave; dropping the connection");
                        break;
                    }
                },
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "enclave connection failed");
                    break;
                }
            }
        }
        r_alive.store(false, Ordering::Release);
        // Dropping the senders wakes every waiter with an error: they are retryable.
        if let Ok(mut p) = r_pending.lock() {
            p.clear();
        }
    });
    Conn { tx, pending, alive }
}
