//! Reading a shard's UDP sockets: its listeners (datagrams from clients)
//! and, through its [`RelayPoll`], its relay sockets (datagrams from
//! peers), in batches of `recvmmsg` into the shard's one [`RecvBatch`].
//!
//! Every UDP socket is read the same way: wait for readiness, then read
//! it in batches, each handed datagram by datagram to the shard
//! ([`Datagrams`]) and flushed before the next, so what a batch relays
//! leaves in as few syscalls as the kernel allows.
//!
//! Invariants:
//! * a wake-up handles at most [`ROUNDS`] batches before yielding, so one
//!   busy socket cannot starve the others;
//! * the runtime's readiness of a socket (or of the relay poll) is cleared
//!   only when every socket read was seen drained; an event that came in
//!   since is kept by tokio, so none is lost;
//! * every datagram of a batch is handled at the batch's one time, and the
//!   batch is flushed before the next is read.
//!
//! The loops know the shard only through [`Datagrams`], so this file does
//! not depend on the event loop that spawns them.

use std::cell::RefCell;
use std::io;
use std::net::SocketAddr;
use std::ops::Range;
use std::rc::{Rc, Weak};

use tracing::{debug, trace};

use super::batch::{RecvBatch, UdpSock, RECV_BATCH};
use super::relay_poll::{RelayPoll, READY_MAX};
use crate::process::clock;
use crate::proto::addr::RelayAddr;
use crate::proto::Now;

/// `recvmmsg` batches handled per socket wake-up before yielding to other
/// tasks.
pub(in crate::net) const ROUNDS: usize = 2;

/// The socket a datagram was read from.
#[derive(Clone, Copy, Debug)]
pub(in crate::net) enum Source {
    /// A listener, at this address: the datagram is from a client.
    Listener(SocketAddr),
    /// A relay socket: the datagram is from a peer.
    Relay(RelayAddr),
}

/// What the read loops hand each batch to: the shard.
pub(in crate::net) trait Datagrams {
    /// The buffers every UDP socket of the shard is read into.
    fn recv_batch(&self) -> &RefCell<RecvBatch>;
    /// Handles one datagram of a batch: `buf[payload]`, received by
    /// `source` from `from` at `now`.
    fn on_datagram(self: &Rc<Self>, source: Source, buf: &mut [u8], payload: Range<usize>, from: SocketAddr, now: Now);
    /// Marks that a batch's datagrams are being handled (`true`), or that
    /// they all were (`false`).
    fn set_in_batch(&self, in_batch: bool);
    /// Sends what the batch queued.
    fn flush_batch(&self);
}

/// Reads one wake-up's worth of `socket`: up to [`ROUNDS`] batches, each
/// handled and flushed before the next. Returns whether the socket was
/// drained (false: the budget ran out first). A batch shorter than
/// [`RECV_BATCH`] counts as drained: the kernel had no more, and the
/// caller's readiness, which tokio keeps if an event came in since, tells
/// about anything newer; the `recvmmsg` that would only say "would block"
/// is saved.
fn read_batches<D: Datagrams>(shard: &Rc<D>, socket: &std::net::UdpSocket, source: Source) -> bool {
    for _ in 0..ROUNDS {
        let mut batch = shard.recv_batch().borrow_mut();
        let n = match batch.recv(socket) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
            Err(e) => {
                // ICMP errors surface here on some systems; the socket stays usable.
                trace!(error = %e, "recv error");
                continue;
            }
        };
        let now = clock::now();
        shard.set_in_batch(true);
        for i in 0..n {
            let (buf, payload, from) = batch.datagram(i);
            if let Some(from) = from {
                shard.on_datagram(source, buf, payload, from, now);
            }
        }
        shard.set_in_batch(false);
        drop(batch);
        shard.flush_batch();
        if n < RECV_BATCH {
            return true;
        }
    }
    false
}

/// Reads the listener `socket`, bound to `local`, for as long as it is open.
pub(in crate::net) async fn listener_loop<D: Datagrams>(shard: Rc<D>, socket: Rc<UdpSock>, local: SocketAddr) {
    let source = Source::Listener(local);
    loop {
        let mut guard = match socket.readable().await {
            Ok(guard) => guard,
            Err(e) => {
                debug!(%local, error = %e, "listener closed");
                return;
            }
        };
        if read_batches(&shard, socket.get_ref(), source) {
            guard.clear_ready();
        } else {
            drop(guard);
            tokio::task::yield_now().await;
        }
    }
}

/// Reads every UDP relay socket of the shard, as `poll` names them.
pub(in crate::net) async fn relay_loop<D: Datagrams>(shard: Weak<D>, poll: Rc<RelayPoll>) {
    let mut ready = Vec::with_capacity(READY_MAX);
    loop {
        let Ok(mut guard) = poll.readable().await else {
            return;
        };
        let Some(shard) = shard.upgrade() else {
            return;
        };
        let events = match poll.ready(&mut ready) {
            Ok(n) => n,
            Err(e) => {
                debug!(error = %e, "relay poll failed");
                0
            }
        };
        let mut drained = events < READY_MAX;
        for (relay, socket) in ready.drain(..) {
            drained &= read_batches(&shard, &socket, Source::Relay(relay));
        }
        drop(shard);
        if drained {
            guard.clear_ready();
        } else {
            drop(guard);
            tokio::task::yield_now().await;
        }
    }
}
