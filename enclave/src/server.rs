//! The enclave's listener: accepts host connections on vsock (or the mock) and serves frames;
//! replies carry the request's id. A malformed frame gets an error reply, or the connection is
//! closed; other connections go on.
//!
//! The short calls of [`INLINE`] run in the connection's own task, one after another, and the
//! replies to the frames that came in one read go back in one write: under load a task and a
//! wake-up per request, and a system call per reply, cost more than the call itself. Every
//! other request (a key generation can take a second) runs in a task of its own, so it never
//! holds up the connection. The host keeps several connections, which run in parallel.

use std::sync::Arc;

use ekms_wire::{
    Listener,
    frame::{self, Envelope},
    msg::{EnclaveResponse, Fault, HostRequest},
};
use tokio::sync::mpsc;
use zeroize::Zeroize as _;

use crate::Core;

/// Serves forever.
pub async fn serve(listener: Listener, core: Arc<Core>) {
    loop {
        match listener.accept().await {
            Ok(stream) => {
                tokio::spawn(connection(stream, Arc::clone(&core)));
            }
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}

async fn connection(stream: ekms_wire::Stream, core: Arc<Core>) {
    let (reader, mut writer) = stream.into_split();
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(1024);
    // Replies may carry plaintext (Decrypt): write_frames wipes them once written.
    let write_task = tokio::spawn(async move {
        frame::write_frames(&mut writer, &mut rx, frame::Gather::Queued).await;
    });
    let mut reader = frame::FrameReader::new(reader);
    // Replies of inline calls not yet handed to the writer (wiped by it once written).
    let mut replies = Vec::new();
    loop {
        let mut body = match reader.next().await {
            Ok(Some(body)) => body,
            Ok(None) => break,
            Err(e) => {
                tracing::warn!(error = %e, "closing connection after a bad frame");
                break;
            }
        };
        let decoded = frame::decode::<HostRequest>(&body);
        body.zeroize();
        match decoded {
            Ok(Envelope { id, msg, .. }) if runs_inline(&msg) => {
                let response = core.handle(msg);
                replies.extend_from_slice(&reply(id, &response));
            }
            Ok(Envelope { id, msg, .. }) => {
                let core = Arc::clone(&core);
                let tx = tx.clone();
                tokio::spawn(async move {
                    let response = core.handle(msg);
                    hand_over(&tx, reply(id, &response)).await;
                });
            }
            Err((Some(id), e)) => {
                tracing::warn!(error = %e, id, "refusing a malformed request");
                let fault = if matches!(e, ekms_wire::WireError::Version(_)) {
                    Fault::Version
                } else {
                    Fault::Malformed
                };
                replies.extend_from_slice(&reply(id, &EnclaveResponse::Fault(fault)));
            }
            Err((None, e)) => {
                tracing::warn!(error = %e, "closing connection after an undecodable frame");
                break;
            }
        }
        // Out once this read's frames are answered (or enough has piled up), before waiting
        // for more.
        if !replies.is_empty() && (!reader.has_frame() || replies.len() >= FLUSH_AT) {
            hand_over(&tx, std::mem::take(&mut replies)).await;
        }
    }
    if !replies.is_empty() {
        hand_over(&tx, replies).await;
    }
    drop(tx);
    let _ = write_task.await;
}

/// Bytes of inline replies after which they go out even while more frames are waiting.
const FLUSH_AT: usize = 64 * 1024;

/// The KMS operations run inline: each takes microseconds (at most a few milliseconds for an
/// RSA-4096 signature), whatever the key. Key generation (`CreateKey`, `GenerateDataKeyPair`,
/// `GetParametersForImport`), listings and administration run in tasks of their own.
const INLINE: &[&str] = &[
    "Decrypt",
    "DescribeKey",
    "Encrypt",
    "GenerateDataKey",
    "GenerateDataKeyWithoutPlaintext",
    "GenerateMac",
    "GenerateRandom",
    "GetPublicKey",
    "ReEncrypt",
    "Sign",
    "Verify",
    "VerifyMac",
];

/// Whether `msg` is short enough to run in the connection's task.
fn runs_inline(msg: &HostRequest) -> bool {
    match msg {
        HostRequest::Status => true,
        HostRequest::Kms(call) => call
            .http
            .kms_target()
            .is_some_and(|op| INLINE.contains(&op)),
        _ => false,
    }
}

/// Hands frames to the writer, which wipes them once written; wiped here if the connection is
/// gone (replies carry plaintext).
async fn hand_over(tx: &mpsc::Sender<Vec<u8>>, frames: Vec<u8>) {
    if let Err(mpsc::error::SendError(mut frames)) = tx.send(frames).await {
        frames.zeroize();
    }
}

/// The frame that answers request `id`.
fn reply(id: u64, response: &EnclaveResponse) -> Vec<u8> {
    frame::encode(id, response).unwrap_or_else(|e| {
        tracing::error!(error = %e, "cannot encode a reply");
        frame::encode(id, &EnclaveResponse::Fault(Fault::Internal)).unwrap_or_default()
    })
}
