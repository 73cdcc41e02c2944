//! The accept step of the HTTP and admin listeners: the next connection,
//! or `None` once the listener is told to stop. A failed accept (EMFILE and
//! friends) backs off briefly instead of spinning, and is logged at debug
//! level under `what`.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tracing::debug;

/// How long a failed accept waits before the next.
const BACKOFF: Duration = Duration::from_millis(50);

pub async fn accept_until_stopped(
    listener: &TcpListener,
    stopped: &mut watch::Receiver<bool>,
    what: &str,
) -> Option<(TcpStream, SocketAddr)> {
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
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
