//! A TCP or TLS connection as its shard sees it: the bounded outbox the
//! shard writes whole frames into and the connection's task drains (see
//! `listener` and `frames`), and the peer stream ConnectionBind hands over
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
pub(in crate::net) const OUT_CAP: usize = 256 * 1024;

/// The write side of a connection as the shard sees it.
pub(in crate::net) struct StreamConn {
    pub(in crate::net) out: RefCell<Vec<u8>>,
    pub(in crate::net) wake: Notify,
    pub(in crate::net) closed: Cell<bool>,
    /// Set by ConnectionBind: what to splice with.
    pub(in crate::net) splice: RefCell<Option<Splice>>,
}

/// A peer connection a data connection is to be spliced with.
pub(in crate::net) struct Splice {
    /// The core's name for it, under which every read is reported.
    pub(in crate::net) id: ConnectionId,
    pub(in crate::net) peer: tokio::net::TcpStream,
    /// Notified when the core closes the peer connection.
    pub(in crate::net) close: Rc<Notify>,
}

impl StreamConn {
    /// Queues `bytes` (one whole frame) for writing, or drops it if the
    /// connection's buffer is full or it is closing.
    pub(in crate::net) fn send(&self, bytes: &[u8]) {
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
    pub(in crate::net) fn splice_with(&self, splice: Splice) {
        *self.splice.borrow_mut() = Some(splice);
    }
}
