//! Simulation: runs `ekms-enclave` as a child process on the vsock mock, restarts it when it
//! dies, and stops it on shutdown. The child's stdin is a pipe from us; the enclave exits when
//! it closes, so it never outlives this process, even after a SIGKILL.

use std::{
    path::PathBuf,
    process::Stdio,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use tokio::{process::Command, sync::Notify};

/// How to start the simulated enclave.
#[derive(Debug, Clone)]
pub struct EnclaveCommand {
    /// The `ekms-enclave` executable.
    pub program: PathBuf,
    /// Its arguments.
    pub args: Vec<String>,
}

/// A running, supervised enclave process.
#[derive(Debug)]
pub struct Supervisor {
    stopping: Arc<AtomicBool>,
    stop: Arc<Notify>,
    task: tokio::task::JoinHandle<()>,
}

impl Supervisor {
    /// Starts the enclave and keeps it running.
    pub fn start(cmd: EnclaveCommand) -> std::io::Result<Self> {
        let stopping = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(Notify::new());
        let mut child = spawn(&cmd)?;
        // `Child::wait` closes the child's stdin; keep our end apart so it stays open while we
        // live (the enclave exits when it closes).
        let mut stdin = child.stdin.take();
        let (s, n) = (Arc::clone(&stopping), Arc::clone(&stop));
        let task = tokio::spawn(async move {
            let mut backoff = Duration::from_millis(100);
            loop {
                tokio::select! {
                    status = child.wait() => {
                        if s.load(Ordering::Acquire) {
                            return;
                        }
                        tracing::error!(?status, "the enclave process exited; restarting it");
                    }
                    () = n.notified() => {
                        drop(stdin.take());
                        let _ = child.start_kill();
                        let _ = child.wait().await;
                        return;
                    }
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
                match spawn(&cmd) {
                    Ok(mut c) => {
                        stdin = c.stdin.take();
                        child = c;
                        backoff = Duration::from_millis(100);
                    }
                    Err(e) => tracing::error!(error = %e, "cannot restart the enclave"),
                }
            }
        });
        Ok(Self {
            stopping,
            stop,
            task,
        })
    }

    /// Stops the enclave and waits for it to exit.
    pub async fn stop(self) {
        self.stopping.store(true, Ordering::Release);
        self.stop.notify_one();
        let _ = self.task.await;
    }
}

fn spawn(cmd: &EnclaveCommand) -> std::io::Result<tokio::process::Child> {
    let child = Command::new(&cmd.program)
        .args(&cmd.args)
        .stdin(Stdio::piped())
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()?;
    tracing::info!(pid = child.id(), program = %cmd.program.display(), "enclave process started");
    Ok(child)
}
