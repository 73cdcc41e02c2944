//! The accept step of the HTTP and admin listeners: the next connection,
//! or `None` once the listener is told to stop. A failed accept (EMFILE and
//! friends) backs off briefly instead of spinning, and is logged at debug
//! level under `what`. TCP and Unix stream listeners alike ([`Accept`]).

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio::sync::watch;
use tracing::debug;

/// How long a failed accept waits before the next.
const BACKOFF: Duration = Duration::from_millis(50);

/// A listener of byte streams: TCP, or a Unix socket.
pub trait Accept {
    type Stream;
    /// Who connected.
    type Peer;
    fn accept_one(&self) -> impl Future<Output = std::io::Result<(Self::Stream, Self::Peer)>> + Send;
}

impl Accept for TcpListener {
    type Stream = TcpStream;
    type Peer = SocketAddr;
    fn accept_one(&self) -> impl Future<Output = std::io::Result<(TcpStream, SocketAddr)>> + Send {
        self.accept()
    }
}

impl Accept for UnixListener {
    type Stream = UnixStream;
    type Peer = tokio::net::unix::SocketAddr;
    fn accept_one(&self) -> impl Future<Output = std::io::Result<(UnixStream, Self::Peer)>> + Send {
        self.accept()
    }
}

pub async fn accept_until_stopped<L: Accept>(
    listener: &L,
    stopped: &mut watch::Receiver<bool>,
    what: &str,
) -> Option<(L::Stream, L::Peer)> {
    loop {
        tokio::select! {
            accepted = listener.accept_one() => match accepted {
                Ok(accepted) => return Some(accepted),
                Err(e) => {
                    debug!("{what} accept failed: {e}");
                    tokio::time::sleep(BACKOFF).await;
                }
            },
            _ = stopped.changed() => return None,
        }
    }
}
