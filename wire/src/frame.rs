//! Frames: `u32` big-endian length, then a CBOR [`Envelope`] of that many bytes.
//!
//! The length is checked against [`MAX_FRAME_LEN`] before any buffer is allocated, and the CBOR
//! decoder rejects trailing bytes, so a hostile peer can neither exhaust memory nor smuggle data.

use serde::{Deserialize, Serialize, de::DeserializeOwned};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::WireError;

/// Version of the envelope and message schema; bumped on any incompatible change.
pub const PROTOCOL_VERSION: u16 = 1;

/// Largest frame body either side accepts (4 MiB): a page of 1000 sealed records is far below it.
pub const MAX_FRAME_LEN: usize = 4 * 1024 * 1024;

/// One message with its request id, so many requests can be in flight on one connection.
#[derive(Debug, Serialize, Deserialize)]
pub struct Envelope<T> {
    /// [`PROTOCOL_VERSION`] of the sender.
    pub v: u16,
    /// Request id chosen by the host; a response carries the id of its request.
    pub id: u64,
    /// The message.
    pub msg: T,
}

/// Encodes an envelope into a complete frame (length prefix included).
pub fn encode<T: Serialize>(id: u64, msg: &T) -> Result<Vec<u8>, WireError> {
    let mut out = vec![0u8; 4];
    serde_cbor::to_writer(
        &mut out,
        &Envelope {
            v: PROTOCOL_VERSION,
            id,
            msg,
        },
    )
    .map_err(|e| WireError::Malformed(e.to_string()))?;
    let len = out.len() - 4;
    if len > MAX_FRAME_LEN {
        return Err(WireError::FrameTooLarge {
            len,
            max: MAX_FRAME_LEN,
        });
    }
    let prefix = u32::try_from(len).map_err(|_| WireError::FrameTooLarge {
        len,
        max: MAX_FRAME_LEN,
    })?;
    if let Some(head) = out.get_mut(..4) {
        head.copy_from_slice(&prefix.to_be_bytes());
    }
    Ok(out)
}

/// Reads one raw frame body. `Ok(None)` on a clean end of stream between frames.
pub async fn read_body<R: AsyncRead + Unpin>(r: &mut R) -> Result<Option<Vec<u8>>, WireError> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_FRAME_LEN {
        return Err(WireError::FrameTooLarge {
            len,
            max: MAX_FRAME_LEN,
        });
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).await.map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            WireError::Closed
        } else {
            e.into()
        }
    })?;
    Ok(Some(body))
}

/// Only the header of an envelope, for answering a frame whose message does not decode.
#[derive(Deserialize)]
struct Header {
    v: u16,
    id: u64,
}

/// Decodes a frame body. On a bad message the request id is returned when it could be read, so
/// the receiver can answer that request with an error instead of dropping the connection.
pub fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<Envelope<T>, (Option<u64>, WireError)> {
    match serde_cbor::from_slice::<Envelope<T>>(body) {
        Ok(env) if env.v == PROTOCOL_VERSION => Ok(env),
        Ok(env) => Err((Some(env.id), WireError::Version(env.v))),
        Err(e) => {
            let id = serde_cbor::from_slice::<Header>(body).ok().map(|h| {
                // The id is only trusted for addressing the error reply.
                let _ = h.v;
                h.id
            });
            Err((id, WireError::Malformed(e.to_string())))
        }
    }
}

/// Writes a complete frame produced by [`encode`].
pub async fn write_frame<W: AsyncWrite + Unpin>(w: &mut W, frame: &[u8]) -> Result<(), WireError> {
    w.write_all(frame).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::msg::{HostRequest, SealedBlob};
    use proptest::prelude::*;

    #[tokio::test]
    async fn round_trip_through_a_pipe() {
        let (mut a, mut b) = tokio::io::duplex(1024);
        let frame = encode(7, &HostRequest::Status).unwrap();
        write_frame(&mut a, &frame).await.unwrap();
        let body = read_body(&mut b).await.unwrap().unwrap();
        let env: Envelope<HostRequest> = decode(&body).unwrap();
        assert_eq!(env.id, 7);
        assert!(matches!(env.msg, HostRequest::Status));
    }

    #[tokio::test]
    async fn oversized_length_is_refused_before_allocation() {
        let (mut a, mut b) = tokio::io::duplex(64);
        a.write_all(&u32::MAX.to_be_bytes()).await.unwrap();
        let err = read_body(&mut b).await.unwrap_err();
        assert!(matches!(err, WireError::FrameTooLarge { .. }));
    }

    #[tokio::test]
    async fn truncated_body_is_an_error_and_clean_eof_is_none() {
        let (mut a, mut b) = tokio::io::duplex(64);
        a.write_all(&10u32.to_be_bytes()).await.unwrap();
        a.write_all(b"abc").await.unwrap();
        drop(a);
        assert!(matches!(read_body(&mut b).await, Err(WireError::Closed)));
        let (a, mut b) = tokio::io::duplex(64);
        drop(a);
        assert!(read_body(&mut b).await.unwrap().is_none());
    }

    #[test]
    fn wrong_version_and_garbage_are_refused_with_the_id_when_known() {
        let body = serde_cbor::to_vec(&Envelope {
            v: 99,
            id: 5,
            msg: HostRequest::Status,
        })
        .unwrap();
        let (id, err) = decode::<HostRequest>(&body).unwrap_err();
        assert_eq!(id, Some(5));
        assert!(matches!(err, WireError::Version(99)));
        let body = serde_cbor::to_vec(&Envelope {
            v: 1,
            id: 6,
            msg: "not a request",
        })
        .unwrap();
        let (id, err) = decode::<HostRequest>(&body).unwrap_err();
        assert_eq!(id, Some(6));
        assert!(matches!(err, WireError::Malformed(_)));
        assert!(matches!(
            decode::<HostRequest>(b"\xff\x00garbage"),
            Err((None, WireError::Malformed(_)))
        ));
    }

    #[test]
    fn trailing_bytes_are_refused() {
        let mut body = serde_cbor::to_vec(&Envelope {
            v: 1,
            id: 1,
            msg: HostRequest::Status,
        })
        .unwrap();
        body.push(0);
        assert!(decode::<HostRequest>(&body).is_err());
    }

    proptest! {
        #[test]
        fn encode_decode_round_trip(id in any::<u64>(), bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let msg = HostRequest::Open { sealed: SealedBlob(bytes.clone()) };
            let frame = encode(id, &msg).unwrap();
            let env: Envelope<HostRequest> = decode(&frame[4..]).unwrap();
            prop_assert_eq!(env.id, id);
            match env.msg { HostRequest::Open { sealed } => prop_assert_eq!(sealed.0, bytes), _ => prop_assert!(false) }
        }

        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode::<HostRequest>(&bytes);
        }
    }
}
