//! The HTTP connections of TLS ports shared with TURN
//! (`signaling.share_tls_port`): a shard accepted each, did its TLS
//! handshake and found it speaks HTTP (`net/stream/shared_port.rs`), then sent it
//! here through [`crate::process::http_handover`].
//!
//! Each is registered with this thread's reactor and served exactly as a
//! connection of `listen.http` is, by the same [`super::serve_connection`]
//! with a place in the same [`ConnectionTable`]: the same limits, the same
//! monitoring reserve (a connection refused there is closed at once), the
//! same deadline for its first request's headers (10 s, 2 s on a
//! monitoring slot), counted from its arrival here: a [`HandedHttp`]
//! does not carry the time the shard accepted it. Before that, the
//! shard held its PROXY header, handshake and first bytes to one setup
//! deadline from its accept (`limits.connection_setup_timeout`, 10 s by
//! default), and the queue holds it only as long as this thread takes to
//! take it off; so from the shard's accept to its first request's headers
//! a handed connection is held at most `connection_setup_timeout` + 10 s
//! (plus that queue wait). The bytes the shard read to classify it are
//! read first, so the request reaches hyper whole.

use std::sync::{Arc, Mutex};

use axum::Router;
use tokio::sync::{mpsc, watch};
use tracing::debug;

use super::limits::ConnectionTable;
use crate::process::http_handover::HandedHttp;

/// Serves what arrives on `queue` until `stopped`.
pub(super) async fn serve(
    mut queue: mpsc::Receiver<HandedHttp>,
    router: Router,
    connections: Arc<Mutex<ConnectionTable>>,
    mut stopped: watch::Receiver<bool>,
) {
    loop {
        let mut handed = tokio::select! {
            handed = queue.recv() => match handed {
                Some(handed) => handed,
                None => return,
            },
            _ = stopped.changed() => return,
        };
        if let Err(e) = handed.stream.attach() {
            debug!(remote = %handed.remote, error = %e, "handed HTTP connection lost");
            continue;
        }
        // Dropping the stream when refused closes it.
        let Some(slot) = super::admit(&connections, handed.remote, handed.local) else {
            continue;
        };
        let deadline = tokio::time::Instant::now() + super::timeout_of(slot.admission());
        tokio::spawn(super::serve_connection(handed.stream, router.clone(), slot, deadline));
    }
}
