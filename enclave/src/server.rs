//! The enclave's listener: accepts host connections on vsock (or the mock) and serves frames
//! concurrently: each request runs in its own task and replies carry the request's id. A
//! malformed frame gets an error reply, or the connection is closed; other connections go on.

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
        frame::write_frames(&mut writer, &mut rx).await;
    });
    let mut reader = frame::FrameReader::new(reader);
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
            Ok(Envelope { id, msg, .. }) => {
                let core = Arc::clone(&core);
                let tx = tx.clone();
                tokio::spawn(async move {
                    let response = core.handle(msg).await;
                    send(&tx, id, &response).await;
                });
            }
            Err((Some(id), e)) => {
                tracing::warn!(error = %e, id, "refusing a malformed request");
                let fault = if matches!(e, ekms_wire::WireError::Version(_)) {
                    Fault::Version
                } else {
                    Fault::Malformed
                };
                send(&tx, id, &EnclaveResponse::Fault(fault)).await;
            }
            Err((None, e)) => {
                tracing::warn!(error = %e, "closing connection after an undecodable frame");
                break;
            }
        }
    }
    drop(tx);
    let _ = write_task.await;
}

async fn send(tx: &mpsc::Sender<Vec<u8>>, id: u64, response: &EnclaveResponse) {
    let frame = match frame::encode(id, response) {
        Ok(f) => f,
        Err(e) => {
            tracing::error!(error = %e, "cannot encode a reply");
            match frame::encode(id, &EnclaveResponse::Fault(Fault::Internal)) {
                Ok(f) => f,
                Err(_) => return,
            }
        }
    };
    let _ = tx.send(frame).await;
}
