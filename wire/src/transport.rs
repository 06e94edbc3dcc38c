//! The one module that opens sockets: real AF_VSOCK (Nitro) and the vsock mock (Unix domain
//! sockets addressed by CID and port under a runtime directory), behind one [`SocketAddress`].

use std::{
    fmt,
    path::{Path, PathBuf},
    pin::Pin,
    str::FromStr,
    task::{Context, Poll},
};

use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{UnixListener, UnixStream, unix},
};
use tokio_vsock::{VsockAddr, VsockListener, VsockStream};

use crate::WireError;

/// `VMADDR_CID_ANY` from `<linux/vm_sockets.h>`: listen on every CID.
pub const VMADDR_CID_ANY: u32 = u32::MAX;
/// Default vsock port of the enclave's service.
pub const DEFAULT_ENCLAVE_PORT: u32 = 5000;
/// CID the simulated enclave takes in the mock (Nitro gives enclaves CIDs from 4 up).
pub const SIM_ENCLAVE_CID: u32 = 16;

/// Where an enclave listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SocketAddress {
    /// Real AF_VSOCK.
    Vsock {
        /// Context id.
        cid: u32,
        /// Port.
        port: u32,
    },
    /// The vsock mock: a Unix socket `DIR/vsock-CID-PORT.sock`.
    Mock {
        /// Runtime directory of the mock.
        dir: PathBuf,
        /// Context id.
        cid: u32,
        /// Port.
        port: u32,
    },
}

impl SocketAddress {
    /// Path of the Unix socket that stands for a mock address.
    #[must_use]
    pub fn mock_path(dir: &Path, cid: u32, port: u32) -> PathBuf {
        dir.join(format!("vsock-{cid}-{port}.sock"))
    }
}

impl fmt::Display for SocketAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Vsock { cid, port } => write!(f, "vsock:{cid}:{port}"),
            Self::Mock { dir, cid, port } => write!(f, "mock:{}:{cid}:{port}", dir.display()),
        }
    }
}

impl FromStr for SocketAddress {
    type Err = WireError;
    /// `vsock:CID:PORT` or `mock:DIR:CID:PORT`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || {
            WireError::Address(
                s.to_owned(),
                "expected vsock:CID:PORT or mock:DIR:CID:PORT".into(),
            )
        };
        if let Some(rest) = s.strip_prefix("vsock:") {
            let (cid, port) = rest.split_once(':').ok_or_else(bad)?;
            return Ok(Self::Vsock {
                cid: cid.parse().map_err(|_| bad())?,
                port: port.parse().map_err(|_| bad())?,
            });
        }
        if let Some(rest) = s.strip_prefix("mock:") {
            let mut it = rest.rsplitn(3, ':');
            let port = it.next().ok_or_else(bad)?.parse().map_err(|_| bad())?;
            let cid = it.next().ok_or_else(bad)?.parse().map_err(|_| bad())?;
            let dir = it.next().ok_or_else(bad)?;
            return Ok(Self::Mock {
                dir: dir.into(),
                cid,
                port,
            });
        }
        Err(bad())
    }
}

/// A connected stream of either kind.
#[derive(Debug)]
pub enum Stream {
    /// AF_VSOCK.
    Vsock(VsockStream),
    /// Unix socket of the mock.
    Unix(UnixStream),
}

/// Read half of a [`Stream`].
#[derive(Debug)]
pub enum ReadHalf {
    /// AF_VSOCK.
    Vsock(tokio_vsock::OwnedReadHalf),
    /// Unix socket.
    Unix(unix::OwnedReadHalf),
}

/// Write half of a [`Stream`].
#[derive(Debug)]
pub enum WriteHalf {
    /// AF_VSOCK.
    Vsock(tokio_vsock::OwnedWriteHalf),
    /// Unix socket.
    Unix(unix::OwnedWriteHalf),
}

impl Stream {
    /// Connects to an enclave.
    pub async fn connect(addr: &SocketAddress) -> Result<Self, WireError> {
        match addr {
            SocketAddress::Vsock { cid, port } => Ok(Self::Vsock(
                VsockStream::connect(VsockAddr::new(*cid, *port)).await?,
            )),
            SocketAddress::Mock { dir, cid, port } => Ok(Self::Unix(
                UnixStream::connect(SocketAddress::mock_path(dir, *cid, *port)).await?,
            )),
        }
    }

    /// Splits into owned halves for a reader task and a writer task.
    #[must_use]
    pub fn into_split(self) -> (ReadHalf, WriteHalf) {
        match self {
            Self::Vsock(s) => {
                let (r, w) = s.into_split();
                (ReadHalf::Vsock(r), WriteHalf::Vsock(w))
            }
            Self::Unix(s) => {
                let (r, w) = s.into_split();
                (ReadHalf::Unix(r), WriteHalf::Unix(w))
            }
        }
    }
}

impl AsyncRead for ReadHalf {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Self::Vsock(s) => Pin::new(s).poll_read(cx, buf),
            Self::Unix(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for WriteHalf {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Self::Vsock(s) => Pin::new(s).poll_write(cx, buf),
            Self::Unix(s) => Pin::new(s).poll_write(cx, buf),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Self::Vsock(s) => Pin::new(s).poll_flush(cx),
            Self::Unix(s) => Pin::new(s).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Self::Vsock(s) => Pin::new(s).poll_shutdown(cx),
            Self::Unix(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

/// A listening socket of either kind.
#[derive(Debug)]
pub enum Listener {
    /// AF_VSOCK.
    Vsock(VsockListener),
    /// Unix socket of the mock, removed again on drop.
    Unix(UnixListener, PathBuf),
}

impl Listener {
    /// Binds an address. For the mock, the runtime directory is created (mode 0700) and a stale
    /// socket file of an earlier run is replaced.
    pub fn bind(addr: &SocketAddress) -> Result<Self, WireError> {
        match addr {
            SocketAddress::Vsock { cid, port } => Ok(Self::Vsock(
                VsockListener::bind(VsockAddr::new(*cid, *port))
                    .map_err(|e| WireError::Address(addr.to_string(), e.to_string()))?,
            )),
            SocketAddress::Mock { dir, cid, port } => {
                std::fs::create_dir_all(dir)?;
                set_private(dir)?;
                let path = SocketAddress::mock_path(dir, *cid, *port);
                match std::fs::remove_file(&path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e.into()),
                }
                Ok(Self::Unix(UnixListener::bind(&path)?, path))
            }
        }
    }

    /// Accepts one connection.
    pub async fn accept(&self) -> Result<Stream, WireError> {
        match self {
            Self::Vsock(l) => Ok(Stream::Vsock(l.accept().await?.0)),
            Self::Unix(l, _) => Ok(Stream::Unix(l.accept().await?.0)),
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Self::Unix(_, path) = self {
            let _ = std::fs::remove_file(path);
        }
    }
}

fn set_private(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn addresses_parse_and_print() {
        let a: SocketAddress = "vsock:16:5000".parse().unwrap();
        assert_eq!(
            a,
            SocketAddress::Vsock {
                cid: 16,
                port: 5000
            }
        );
        assert_eq!(a.to_string(), "vsock:16:5000");
        let m: SocketAddress = "mock:/tmp/x:y:3:5000".parse().unwrap();
        assert_eq!(
            m,
            SocketAddress::Mock {
                dir: "/tmp/x:y".into(),
                cid: 3,
                port: 5000
            }
        );
        assert!("vsock:x:1".parse::<SocketAddress>().is_err());
        assert!("tcp:1".parse::<SocketAddress>().is_err());
        assert!("mock:5000".parse::<SocketAddress>().is_err());
    }

    #[tokio::test]
    async fn mock_listener_connects_and_cleans_up() {
        let dir = tempfile::tempdir().unwrap();
        let addr = SocketAddress::Mock {
            dir: dir.path().join("run"),
            cid: 16,
            port: 5000,
        };
        let listener = Listener::bind(&addr).unwrap();
        // A second bind replaces a stale socket instead of failing.
        let path = SocketAddress::mock_path(&dir.path().join("run"), 16, 5000);
        assert!(path.exists());
        let server = tokio::spawn(async move {
            let s = listener.accept().await.unwrap();
            let (mut r, mut w) = s.into_split();
            let mut buf = [0u8; 5];
            r.read_exact(&mut buf).await.unwrap();
            w.write_all(&buf).await.unwrap();
            listener
        });
        let (mut r, mut w) = Stream::connect(&addr).await.unwrap().into_split();
        w.write_all(b"hello").await.unwrap();
        let mut buf = [0u8; 5];
        r.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"hello");
        drop(server.await.unwrap());
        assert!(
            !path.exists(),
            "the socket file is removed with the listener"
        );
        assert!(Stream::connect(&addr).await.is_err());
    }

    #[tokio::test]
    async fn real_vsock_fails_cleanly_where_there_is_no_vsock() {
        // This machine has no vsock loopback: binding CID 1 must give an error, not a panic.
        // On a Nitro parent it may succeed; both are fine, a panic is not.
        match Listener::bind(&SocketAddress::Vsock { cid: 1, port: 5999 }) {
            Ok(_) | Err(WireError::Address(..)) => {}
            Err(e) => panic!("unexpected error kind: {e}"),
        }
        let r = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            Stream::connect(&SocketAddress::Vsock { cid: 1, port: 5999 }),
        )
        .await;
        assert!(matches!(r, Ok(Err(_)) | Err(_)));
    }
}
