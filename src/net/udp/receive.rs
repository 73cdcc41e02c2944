//! Reading a shard's UDP sockets: its listeners (datagrams from clients)
//! and, through its [`RelayPoll`], its relay sockets (datagrams from
//! peers), in batches of `recvmmsg` into the shard's one [`RecvBatch`].
//!
//! Every UDP socket is read the same way: wait for readiness, then read
//! it in batches, each handed datagram by datagram to the shard
//! ([`Datagrams`]) and flushed before the next, so what a batch relays
//! leaves in as few syscalls as the kernel allows.
//!
//! A socket that has been serving one sparse flow (its last wake-ups
//! each brought one datagram, from one client to a listener, or to one
//! relay socket alone at the relay poll: one call's media between two
//! packets, the benchmark's ping-pong) is read the way that flow's next
//! datagram is relayed soonest: one plain `recvfrom` (a relay socket's
//! before the relay poll is even asked which sockets are ready), the
//! datagram handled and sent at once, and only then the batch read (or
//! the poll) that finds the rest (see [`Streak`]). A socket serving many
//! flows keeps the batch read alone: its wake-ups bring datagrams of
//! different flows, and a read that finds the socket empty would cost a
//! syscall per datagram.
//!
//! Invariants:
//! * a wake-up handles at most [`ROUNDS`] batches (after at most one lone
//!   datagram) before yielding, so one busy socket cannot starve the
//!   others;
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
use super::relay_poll::{RelayPoll, Token, READY_MAX};
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

/// What one wake-up's read of a socket saw.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Seen {
    /// The socket was read empty (false: the budget ran out first).
    drained: bool,
    /// Datagrams read.
    datagrams: usize,
    /// The sender of the first of them.
    first: Option<SocketAddr>,
}

impl Seen {
    /// The sender of the wake-up's one datagram, if it brought just one.
    fn alone(&self) -> Option<SocketAddr> {
        self.first.filter(|_| self.datagrams == 1)
    }
}

/// Hands the first `n` datagrams of `batch` to the shard at one time, and
/// flushes what they relayed; returns the first one's sender.
fn handle<D: Datagrams>(
    shard: &Rc<D>,
    mut batch: std::cell::RefMut<'_, RecvBatch>,
    n: usize,
    source: Source,
) -> Option<SocketAddr> {
    let now = clock::now();
    let mut first = None;
    shard.set_in_batch(true);
    for i in 0..n {
        let (buf, payload, from) = batch.datagram(i);
        if let Some(from) = from {
            first = first.or(Some(from));
            shard.on_datagram(source, buf, payload, from, now);
        }
    }
    shard.set_in_batch(false);
    drop(batch);
    shard.flush_batch();
    first
}

/// Reads one datagram of `socket` with [`RecvBatch::recv_one`], handles it
/// and sends what it relayed; returns how many it read (0: none there)
/// and its sender.
fn read_one<D: Datagrams>(shard: &Rc<D>, socket: &std::net::UdpSocket, source: Source) -> (usize, Option<SocketAddr>) {
    let mut batch = shard.recv_batch().borrow_mut();
    match batch.recv_one(socket) {
        Ok(n) => (n, handle(shard, batch, n, source)),
        Err(e) => {
            if e.kind() != io::ErrorKind::WouldBlock {
                trace!(error = %e, "recv error");
            }
            (0, None)
        }
    }
}

/// Reads one wake-up's worth of `socket`: with `lone`, first one datagram
/// by itself (see the module doc), then up to [`ROUNDS`] batches, each
/// handled and flushed before the next. A batch shorter than
/// [`RECV_BATCH`] counts as drained: the kernel had no more, and the
/// caller's readiness, which tokio keeps if an event came in since, tells
/// about anything newer; the `recvmmsg` that would only say "would block"
/// is saved.
fn read_socket<D: Datagrams>(shard: &Rc<D>, socket: &std::net::UdpSocket, source: Source, lone: bool) -> Seen {
    let mut seen = Seen {
        drained: false,
        datagrams: 0,
        first: None,
    };
    if lone {
        (seen.datagrams, seen.first) = read_one(shard, socket, source);
        if seen.datagrams == 0 {
            seen.drained = true;
            return seen;
        }
    }
    for _ in 0..ROUNDS {
        let mut batch = shard.recv_batch().borrow_mut();
        let n = match batch.recv(socket) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                seen.drained = true;
                return seen;
            }
            Err(e) => {
                // ICMP errors surface here on some systems; the socket stays usable.
                trace!(error = %e, "recv error");
                continue;
            }
        };
        let first = handle(shard, batch, n, source);
        seen.first = seen.first.or(first);
        seen.datagrams += n;
        if n < RECV_BATCH {
            seen.drained = true;
            return seen;
        }
    }
    seen
}

/// Wake-ups in a row that brought one datagram of one flow (from one
/// sender to a listener, or to one relay socket alone) before that flow's
/// next datagram is read by itself, ahead of the batch read.
const HOT_AFTER: u32 = 2;

/// The one sparse flow a socket (or the relay poll) has been serving: the
/// last [`HOT_AFTER`] or more wake-ups each brought a single datagram, all
/// of the same `K` (a client's address at a listener, a relay socket's
/// token at the relay poll). Its next datagram most likely comes alone
/// again, so the reader takes it with the cheapest read and relays it
/// before anything else (see the module doc). A wake-up that brings more,
/// or another flow's datagram, ends the streak: a socket that serves many
/// flows, whose wake-ups bring a datagram of a different one each time or
/// several at once, is read in batches only, and pays nothing for reads
/// that would find the socket empty.
#[derive(Clone, Copy, Debug)]
struct Streak<K> {
    key: Option<K>,
    count: u32,
}

impl<K: Copy + PartialEq> Streak<K> {
    fn new() -> Streak<K> {
        Streak { key: None, count: 0 }
    }

    /// The flow to read ahead, if the streak is long enough.
    fn ahead(&self) -> Option<K> {
        self.key.filter(|_| self.count >= HOT_AFTER)
    }

    /// Notes a wake-up that brought datagrams: `alone`, the one flow of its
    /// single datagram, or `None` (several, or of several flows).
    fn saw(&mut self, alone: Option<K>) {
        match alone {
            Some(key) if self.key == Some(key) => self.count = self.count.saturating_add(1),
            Some(key) => {
                *self = Streak {
                    key: Some(key),
                    count: 1,
                }
            }
            None => *self = Streak::new(),
        }
    }
}

/// Reads the listener `socket`, bound to `local`, for as long as it is open.
pub(in crate::net) async fn listener_loop<D: Datagrams>(shard: Rc<D>, socket: Rc<UdpSock>, local: SocketAddr) {
    let source = Source::Listener(local);
    let mut flow = Streak::new();
    loop {
        let mut guard = match socket.readable().await {
            Ok(guard) => guard,
            Err(e) => {
                debug!(%local, error = %e, "listener closed");
                return;
            }
        };
        let seen = read_socket(&shard, socket.get_ref(), source, flow.ahead().is_some());
        if seen.datagrams > 0 {
            flow.saw(seen.alone());
        }
        if seen.drained {
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
    let mut hot = Streak::new();
    loop {
        let Ok(mut guard) = poll.readable().await else {
            return;
        };
        let Some(shard) = shard.upgrade() else {
            return;
        };
        // The one relay this wake-up read and its datagrams, while it is
        // one (`several` once it is more).
        let mut alone: Option<(Token, usize)> = None;
        let mut several = false;
        if let Some(token) = hot.ahead() {
            // Read before the poll is asked: one `epoll_wait` less in front
            // of this datagram; the poll is asked right after, for the
            // others and to see every socket drained.
            if let Some((relay, socket)) = poll.get(token) {
                let (read, _) = read_one(&shard, &socket, Source::Relay(relay));
                if read > 0 {
                    alone = Some((token, read));
                }
            }
        }
        let events = match poll.ready(&mut ready) {
            Ok(n) => n,
            Err(e) => {
                debug!(error = %e, "relay poll failed");
                0
            }
        };
        let mut drained = events < READY_MAX;
        for r in ready.drain(..) {
            let seen = read_socket(&shard, &r.socket, Source::Relay(r.relay), false);
            drained &= seen.drained;
            match alone {
                _ if several || seen.datagrams == 0 => {}
                Some((token, n)) if token == r.token => alone = Some((token, n + seen.datagrams)),
                Some(_) => several = true,
                None => alone = Some((r.token, seen.datagrams)),
            }
        }
        if several || alone.is_some() {
            hot.saw(alone.filter(|&(_, n)| n == 1 && !several).map(|(token, _)| token));
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

#[cfg(test)]
mod tests;
