//! Errors of the wire layer.

use thiserror::Error;

/// Everything that can go wrong while moving a frame.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum WireError {
    /// The socket failed.
    #[error("transport I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// The peer announced a frame longer than the limit; it was refused before allocation.
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    FrameTooLarge {
        /// Announced length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The frame body is not a valid CBOR envelope.
    #[error("malformed frame: {0}")]
    Malformed(String),
    /// The peer speaks another protocol version.
    #[error("unsupported protocol version {0}")]
    Version(u16),
    /// The peer closed the connection.
    #[error("connection closed")]
    Closed,
    /// The address cannot be used on this machine (for example AF_VSOCK without a vsock device).
    #[error("address {0} is not usable: {1}")]
    Address(String, String),
}
