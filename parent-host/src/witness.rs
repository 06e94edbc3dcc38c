//! The host's part in witnessed commits (`docs/state.md`): it carries opaque, enclave-made
//! messages between the writer's enclave and the witnesses' hosts, and makes writes durable
//! between a round's intent and its confirmation. It decides nothing: every quorum is counted
//! in the enclave, and a host that drops, replays or forges messages only delays the writer.
//!
//! One task (the committer) runs the rounds one at a time, each carrying every write that
//! arrived while the previous one ran (group commit: the witness round trips and the store's
//! fsync are paid once per batch). Between batches it queries the witnesses: after a restart
//! that proves the loaded state, later it enrols new witnesses in place of restarted ones.

use std::{sync::Arc, time::Duration};

use base64::Engine as _;
use ekms_wire::msg::{EnclaveResponse, Fault, HostRequest, Round, StoreWrite};
use tokio::sync::{mpsc, oneshot};

use crate::{HostError, client::EnclaveClient, store::Store};

/// How long a witness may take to answer one message.
const WITNESS_TIMEOUT: Duration = Duration::from_secs(2);
/// Pause between witness queries when no write is waiting.
const SYNC_EVERY: Duration = Duration::from_secs(1);
/// Most writes carried by one round.
const MAX_BATCH: usize = 512;
/// Ratification attempts before the waiting clients are answered with a retryable error (the
/// round itself is retried until it is ratified).
const RATIFY_ATTEMPTS: u32 = 20;

/// The witnesses' hosts, by URL.
#[derive(Debug, Clone, Default)]
pub struct Witnesses {
    urls: Vec<String>,
}

impl Witnesses {
    /// The witnesses at `urls` (appliance URLs like `http://10.0.0.6:8400`).
    #[must_use]
    pub fn new(urls: Vec<String>) -> Self {
        Self { urls }
    }

    /// Whether none is configured.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.urls.is_empty()
    }

    /// Sends `message` to every witness at once; the replies of those that answered in time.
    pub async fn broadcast(&self, message: &[u8]) -> Vec<Vec<u8>> {
        let b64 = base64::engine::general_purpose::STANDARD;
        let body = serde_json::json!({ "message": b64.encode(message) });
        let mut sends = tokio::task::JoinSet::new();
        for url in &self.urls {
            let (url, body) = (url.clone(), body.clone());
            let b64 = b64.clone();
            sends.spawn(async move {
                let sent = tokio::time::timeout(
                    WITNESS_TIMEOUT,
                    crate::http_client::post_json(&url, "/ekms/witness", &body),
                )
                .await;
                match sent {
                    Ok(Ok(v)) => v
                        .get("message")
                        .and_then(serde_json::Value::as_str)
                        .and_then(|s| b64.decode(s).ok()),
                    Ok(Err(e)) => {
                        tracing::debug!(%url, error = %e, "a witness refused or failed");
                        None
                    }
                    Err(_) => {
                        tracing::debug!(%url, "a witness did not answer in time");
                        None
                    }
                }
            });
        }
        let mut replies = Vec::with_capacity(self.urls.len());
        while let Some(r) = sends.join_next().await {
            if let Ok(Some(m)) = r {
                replies.push(m);
            }
        }
        replies
    }
}

/// One write waiting for its round.
struct Job {
    writes: Vec<StoreWrite>,
    token: u64,
    done: oneshot::Sender<Result<(), HostError>>,
}

/// The committer's handle.
#[derive(Debug, Clone)]
pub struct Committer {
    jobs: mpsc::Sender<JobBox>,
}

/// A job, boxed so the channel stays small.
struct JobBox(Box<Job>);

impl std::fmt::Debug for JobBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Job(token {})", self.0.token)
    }
}

impl Committer {
    /// Starts the committer over `store`, `enclave` and `witnesses`.
    #[must_use]
    pub fn start(
        store: Arc<dyn Store>,
        enclave: Arc<EnclaveClient>,
        witnesses: Witnesses,
    ) -> (Self, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(4 * MAX_BATCH);
        let task = tokio::spawn(
            Worker {
                store,
                enclave,
                witnesses,
                note: String::new(),
                unfinished: None,
            }
            .run(rx),
        );
        (Self { jobs: tx }, task)
    }

    /// Makes `writes` durable and commits `token` through a witnessed round.
    pub async fn commit(&self, writes: Vec<StoreWrite>, token: u64) -> Result<(), HostError> {
        let (done, wait) = oneshot::channel();
        self.jobs
            .send(JobBox(Box::new(Job {
                writes,
                token,
                done,
            })))
            .await
            .map_err(|_| HostError::Startup("the committer stopped".into()))?;
        wait.await
            .map_err(|_| HostError::Startup("the committer stopped".into()))?
    }
}

struct Worker {
    store: Arc<dyn Store>,
    enclave: Arc<EnclaveClient>,
    witnesses: Witnesses,
    /// The last witness note printed (printed again only when it changes).
    note: String,
    /// A round whose writes are durable but that a quorum has not confirmed yet: it is retried
    /// before anything else (the enclave takes no other round meanwhile).
    unfinished: Option<(u64, Vec<u8>)>,
}

/// Why a batch failed, for its clients.
fn refused(why: &str) -> HostError {
    HostError::Witness(why.to_owned())
}

impl Worker {
    async fn run(mut self, mut rx: mpsc::Receiver<JobBox>) {
        loop {
            let first = tokio::select! {
                job = rx.recv() => match job {
                    Some(j) => Some(j),
                    None => return,
                },
                () = tokio::time::sleep(SYNC_EVERY) => None,
            };
            if let Some((round, confirm)) = self.unfinished.take()
                && let Err(e) = self.ratify(round, &confirm, 1).await
            {
                tracing::debug!(error = %e, "an unfinished round is still not confirmed");
            }
            let Some(first) = first else {
                self.sync().await;
                continue;
            };
            let mut jobs = vec![*first.0];
            while jobs.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(j) => jobs.push(*j.0),
                    Err(_) => break,
                }
            }
            self.batch(jobs).await;
        }
    }

    async fn call(&self, req: &HostRequest) -> Result<EnclaveResponse, HostError> {
        self.enclave.call(req).await
    }

    /// One round for `jobs`.
    async fn batch(&mut self, jobs: Vec<Job>) {
        let tokens: Vec<u64> = jobs.iter().map(|j| j.token).collect();
        let (round, refused_tokens) = match self.call(&HostRequest::Propose { tokens }).await {
            Ok(EnclaveResponse::Proposed { round, refused }) => (round, refused),
            Ok(EnclaveResponse::Refused(why)) => return finish(jobs, &Err(refused(&why))),
            Ok(EnclaveResponse::Fault(Fault::Busy)) => {
                // A round this committer does not know: left by a host that restarted while the
                // enclave kept running. Only an enclave restart resolves it safely.
                return finish(
                    jobs,
                    &Err(refused(
                        "a round from before this host restarted is unresolved; restart the \
                         enclave",
                    )),
                );
            }
            Ok(EnclaveResponse::Fault(f)) => return finish(jobs, &Err(HostError::Fault(f))),
            Ok(other) => {
                tracing::error!(?other, "unexpected reply to a proposal");
                return finish(jobs, &Err(HostError::Fault(Fault::Internal)));
            }
            Err(e) => return finish(jobs, &Err(e)),
        };
        let (lost, jobs): (Vec<_>, Vec<_>) = jobs
            .into_iter()
            .partition(|j| refused_tokens.contains(&j.token));
        finish(lost, &Err(HostError::Conflict));
        let Some(round) = round else {
            return finish(jobs, &Ok(()));
        };
        let writes: Vec<StoreWrite> = jobs.iter().flat_map(|j| j.writes.clone()).collect();
        let result = self.run_round(&round, Some(writes)).await;
        finish(jobs, &result);
    }

    /// Intent, durable writes, confirmation, ratification.
    async fn run_round(
        &mut self,
        round: &Round,
        writes: Option<Vec<StoreWrite>>,
    ) -> Result<(), HostError> {
        let confirm = if round.confirm.is_empty() {
            let acks = self.witnesses.broadcast(&round.intent).await;
            let confirm = match self
                .call(&HostRequest::Confirm {
                    round: round.id,
                    acks,
                })
                .await?
            {
                EnclaveResponse::Confirmation { message } => message,
                other => {
                    self.abandon(round.id).await;
                    return Err(reply_error(other));
                }
            };
            if let Some(writes) = writes {
                let store = Arc::clone(&self.store);
                let durable = tokio::task::spawn_blocking(move || store.apply(&writes))
                    .await
                    .map_err(|e| HostError::Startup(e.to_string()))
                    .and_then(|r| r);
                if let Err(e) = durable {
                    // The confirmation was never sent: the round is dropped, nothing changed.
                    self.abandon(round.id).await;
                    return Err(e);
                }
            }
            confirm
        } else {
            round.confirm.clone()
        };
        self.ratify(round.id, &confirm, RATIFY_ATTEMPTS).await
    }

    /// Sends the confirmation and ratifies, up to `attempts` times. A round still unconfirmed
    /// after them is kept to retry (its writes are durable); the clients get a retryable error.
    async fn ratify(&mut self, round: u64, confirm: &[u8], attempts: u32) -> Result<(), HostError> {
        let mut attempt = 0;
        loop {
            let acks = self.witnesses.broadcast(confirm).await;
            match self.call(&HostRequest::Ratify { round, acks }).await? {
                EnclaveResponse::Committed => return Ok(()),
                EnclaveResponse::Refused(why) => {
                    attempt += 1;
                    self.say(&format!(
                        "ekms: a durable write waits for its witnesses: {why}"
                    ));
                    if attempt >= attempts {
                        self.unfinished = Some((round, confirm.to_vec()));
                        return Err(refused(&why));
                    }
                    tokio::time::sleep(Duration::from_millis(100 * u64::from(attempt.min(10))))
                        .await;
                }
                other => return Err(reply_error(other)),
            }
        }
    }

    async fn abandon(&self, round: u64) {
        if let Err(e) = self.call(&HostRequest::Abandon { round }).await {
            tracing::warn!(error = %e, "abandoning a round failed");
        }
    }

    /// Queries the witnesses: proves the loaded state after a restart, enrols new witnesses,
    /// finishes a round left in flight.
    async fn sync(&mut self) {
        let query = match self.call(&HostRequest::WitnessQuery).await {
            Ok(EnclaveResponse::WitnessQuery { message }) => message,
            Ok(EnclaveResponse::Fault(Fault::Sealed | Fault::NotWriter)) => return,
            Ok(other) => {
                tracing::debug!(?other, "no witness query");
                return;
            }
            Err(e) => {
                tracing::debug!(error = %e, "no witness query");
                return;
            }
        };
        let answers = self.witnesses.broadcast(&query).await;
        let status = match self.call(&HostRequest::WitnessAnswers { answers }).await {
            Ok(EnclaveResponse::WitnessStatus(s)) => s,
            Ok(EnclaveResponse::Fault(Fault::NotLoaded)) => return,
            Ok(other) => {
                tracing::debug!(?other, "witness answers not taken");
                return;
            }
            Err(e) => {
                tracing::debug!(error = %e, "witness answers not taken");
                return;
            }
        };
        if !status.fresh && status.round.is_none() {
            self.say(&format!(
                "ekms: the enclave does not serve until its witnesses confirm the latest state: {}",
                status.note
            ));
        }
        if let Some(round) = status.round {
            match self.run_round(&round, None).await {
                Ok(()) => self.say(&format!("ekms: witnesses: {}; done", status.note)),
                Err(e) => self.say(&format!("ekms: witnesses: {}: {e}", status.note)),
            }
        } else if status.fresh {
            self.say(&format!(
                "ekms: witnesses: {}; the enclave serves",
                status.note
            ));
        }
    }

    fn say(&mut self, line: &str) {
        if line != self.note {
            eprintln!("{line}");
            line.clone_into(&mut self.note);
        }
    }
}

fn reply_error(r: EnclaveResponse) -> HostError {
    match r {
        EnclaveResponse::Refused(why) => refused(&why),
        EnclaveResponse::Fault(f) => HostError::Fault(f),
        other => {
            tracing::error!(?other, "unexpected reply in a witnessed round");
            HostError::Fault(Fault::Internal)
        }
    }
}

fn finish(jobs: Vec<Job>, result: &Result<(), HostError>) {
    for j in jobs {
        let r = match result {
            Ok(()) => Ok(()),
            Err(e) => Err(e.clone_for_client()),
        };
        let _ = j.done.send(r);
    }
}
