//! Parent-host <-> enclave wire: versioned, length-prefixed CBOR frames, the message types
//! they carry, and the transport that moves them (AF_VSOCK on Nitro, a Unix-socket mock in
//! simulation).
//!
//! Everything here is pure data or I/O: no cryptography, no secrets, no key material in the
//! clear. Both sides depend on this crate; the enclave never depends on the host, nor the host on
//! the enclave's internals.

pub mod audit;
pub mod blob;
pub mod error;
pub mod frame;
pub mod msg;
pub mod plan;
pub mod region;
pub mod sealed;
pub mod sts;
pub mod transport;
pub mod xks;

pub use error::WireError;
pub use frame::{Envelope, MAX_FRAME_LEN, PROTOCOL_VERSION};
pub use transport::{Listener, SocketAddress, Stream};
