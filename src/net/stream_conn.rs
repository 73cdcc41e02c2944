//! A TCP or TLS connection as its shard sees it: the bounded outbox the
//! shard writes whole frames into and the connection's task drains (see
//! [`super::stream`]), and the peer stream ConnectionBind hands over
//! (RFC 6062 §5.4).
//!
//! Shard and task share it on one thread, through `Rc`, so its cells are
//! never borrowed across an `.await`. The outbox never holds more than
//! [`OUT_CAP`] bytes, and only whole frames; nothing is queued once the
//! connection is closing.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use tokio::sync::Notify;
use tracing::trace;

use crate::proto::addr::ConnectionId;

/// Bytes a connection may have waiting to be written before more relayed
/// data for it is dropped.
pub(super) const OUT_CAP: usize = 256 * 1024;

/// The write side of a connection as the shard sees it.
pub(super) struct StreamConn {
    pub(super) out: RefCell<Vec<u8>>,
    pub(super) wake: Notify,
    pub(super) closed: Cell<bool>,
    /// Set by ConnectionBind: what to splice with.
    pub(super) splice: RefCell<Option<Splice>>,
}

/// A peer connection a data connection is to be spliced with.
pub(super) struct Splice {
    /// The core's name for it, under which every read is reported.
    pub(super) id: ConnectionId,
    pub(super) peer: tokio::net::TcpStream,
    /// Notified when the core closes the peer connection.
    pub(super) close: Rc<Notify>,
}

impl StreamConn {
    /// Queues `bytes` (one whole frame) for writing, or drops it if the
    /// connection's buffer is full or it is closing.
    pub(super) fn send(&self, bytes: &[u8]) {
        let mut out = self.out.borrow_mut();
        if self.closed.get() || out.len() + bytes.len() > OUT_CAP {
            trace!(len = bytes.len(), "stream frame dropped: buffer full");
            return;
        }
        out.extend_from_slice(bytes);
        self.wake.notify_one();
    }

    /// Turns this connection into the data connection of a peer stream
    /// once the frame being handled has been answered.
    pub(super) fn splice_with(&self, splice: Splice) {
        *self.splice.borrow_mut() = Some(splice);
    }
}
