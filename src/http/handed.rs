//! The HTTP connections of TLS ports shared with TURN
//! (`signaling.share_tls_port`): a shard accepted each, did its TLS
//! handshake and found it speaks HTTP (`net/stream/shared_port.rs`), then sent it
//! here through [`crate::process::http_handover`].
//!
//! Each is registered with this thread's reactor and served exactly as a
//! connection of `listen.http` is, by the same [`super::serve_connection`]
//! with a place in the same [`ConnectionTable`]: the same limits, the same
//! monitoring reserve (a connection refused there is closed at once), and
//! the same one deadline for everything before its first request is
//! served (10 s, 2 s on a monitoring slot), counted from the same moment:
//! its accept, which the shard did ([`HandedHttp::accepted`]). So the
//! PROXY header, handshake and first bytes on the shard (which held them
//! to its own setup deadline, `limits.connection_setup_timeout`), the
//! wait in the queue and the first request's headers here together take
//! at most 10 s from the shard's accept; one that arrives here with its
//! deadline passed is closed at once. The bytes the shard read to classify
//! it are read first, so the request reaches hyper whole.

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
        let deadline = tokio::time::Instant::from_std(handed.accepted) + super::timeout_of(slot.admission());
        tokio::spawn(super::serve_connection(handed.stream, router.clone(), slot, deadline));
    }
}
