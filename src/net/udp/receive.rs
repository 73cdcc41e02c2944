//! Reading a shard's UDP sockets: its listeners (datagrams from clients)
//! and, through its [`RelayPoll`], its relay sockets (datagrams from
//! peers), in batches of `recvmmsg` into the shard's one [`RecvBatch`].
//!
//! Every UDP socket is read the same way: wait for readiness, then read
//! it in batches, each handed datagram by datagram to the shard
//! ([`Datagrams`]) and flushed before the next, so what a batch relays
//! leaves in as few syscalls as the kernel allows.
//!
//! A socket whose last wake-up brought a single datagram (a sparse flow:
//! a call's media between two packets, the benchmark's ping-pong) is read
//! the way that datagram is relayed soonest: one plain `recvfrom`, the
//! datagram handled and sent at once, and only then the batch read that
//! finds the socket empty (or whatever came since). Its relay socket is
//! also read before the relay poll is asked which sockets are ready, when
//! the last wake-ups of the relay poll named that socket alone (see
//! [`Hot`]). Neither changes what a busy socket costs: its wake-ups bring
//! many datagrams, so it is read in batches from the start.
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
}

impl Seen {
    /// Whether the socket's next wake-up should start with a lone read:
    /// this one brought a single datagram (one that brought none says
    /// nothing new, and keeps `lone`).
    fn lone_next(self, lone: bool) -> bool {
        match self.datagrams {
            0 => lone,
            n => n == 1,
        }
    }
}

/// Hands the first `n` datagrams of `batch` to the shard at one time, and
/// flushes what they relayed.
fn handle<D: Datagrams>(shard: &Rc<D>, mut batch: std::cell::RefMut<'_, RecvBatch>, n: usize, source: Source) {
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
}

/// Reads one datagram of `socket` with [`RecvBatch::recv_one`], handles it
/// and sends what it relayed; returns how many it read (0: none there).
fn read_one<D: Datagrams>(shard: &Rc<D>, socket: &std::net::UdpSocket, source: Source) -> usize {
    let mut batch = shard.recv_batch().borrow_mut();
    match batch.recv_one(socket) {
        Ok(n) => {
            handle(shard, batch, n, source);
            n
        }
        Err(e) => {
            if e.kind() != io::ErrorKind::WouldBlock {
                trace!(error = %e, "recv error");
            }
            0
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
    let mut datagrams = 0;
    if lone {
        datagrams = read_one(shard, socket, source);
        if datagrams == 0 {
            return Seen {
                drained: true,
                datagrams,
            };
        }
    }
    for _ in 0..ROUNDS {
        let mut batch = shard.recv_batch().borrow_mut();
        let n = match batch.recv(socket) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                return Seen {
                    drained: true,
                    datagrams,
                }
            }
            Err(e) => {
                // ICMP errors surface here on some systems; the socket stays usable.
                trace!(error = %e, "recv error");
                continue;
            }
        };
        handle(shard, batch, n, source);
        datagrams += n;
        if n < RECV_BATCH {
            return Seen {
                drained: true,
                datagrams,
            };
        }
    }
    Seen {
        drained: false,
        datagrams,
    }
}

/// Reads the listener `socket`, bound to `local`, for as long as it is open.
pub(in crate::net) async fn listener_loop<D: Datagrams>(shard: Rc<D>, socket: Rc<UdpSock>, local: SocketAddr) {
    let source = Source::Listener(local);
    let mut lone = false;
    loop {
        let mut guard = match socket.readable().await {
            Ok(guard) => guard,
            Err(e) => {
                debug!(%local, error = %e, "listener closed");
                return;
            }
        };
        let seen = read_socket(&shard, socket.get_ref(), source, lone);
        lone = seen.lone_next(lone);
        if seen.drained {
            guard.clear_ready();
        } else {
            drop(guard);
            tokio::task::yield_now().await;
        }
    }
}

/// Wake-ups of the relay poll in a row that named one socket, which
/// brought one datagram, before that socket is read ahead of the poll.
const HOT_AFTER: u32 = 2;

/// The relay socket that the relay poll's last wake-ups named alone, each
/// time with one datagram: a single sparse flow, whose next datagram is
/// most likely on that socket again. The relay loop reads it before it
/// asks the poll (one `epoll_wait` less before that datagram is relayed;
/// the poll is still asked afterwards, for the other sockets and to see
/// them all drained). A wake-up that finds it empty, or that names any
/// other socket, ends the streak, so many sparse flows, whose wake-ups
/// name a different socket each time, never pay for a read ahead that
/// finds nothing.
#[derive(Clone, Copy, Debug, Default)]
struct Hot {
    token: Option<Token>,
    streak: u32,
}

impl Hot {
    /// The socket to read ahead of the poll, if any.
    fn ahead(&self) -> Option<Token> {
        self.token.filter(|_| self.streak >= HOT_AFTER)
    }

    /// Notes what a wake-up saw: `alone`, the one socket it read with
    /// the datagrams it brought, or `None` when it read several sockets.
    fn saw(&mut self, alone: Option<(Token, usize)>) {
        match alone {
            Some((token, 1)) if self.token == Some(token) => self.streak = self.streak.saturating_add(1),
            Some((token, 1)) => {
                *self = Hot {
                    token: Some(token),
                    streak: 1,
                }
            }
            _ => *self = Hot::default(),
        }
    }
}

/// Reads every UDP relay socket of the shard, as `poll` names them.
pub(in crate::net) async fn relay_loop<D: Datagrams>(shard: Weak<D>, poll: Rc<RelayPoll>) {
    let mut ready = Vec::with_capacity(READY_MAX);
    let mut hot = Hot::default();
    loop {
        let Ok(mut guard) = poll.readable().await else {
            return;
        };
        let Some(shard) = shard.upgrade() else {
            return;
        };
        // The sockets this wake-up read, as (token, datagrams) while it is
        // one; `None` once it is several.
        let mut alone = None;
        let mut several = false;
        if let Some(token) = hot.ahead() {
            let read = poll
                .get(token)
                .map_or(0, |(relay, socket)| read_one(&shard, &socket, Source::Relay(relay)));
            if read > 0 {
                alone = Some((token, read));
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
            let seen = read_socket(&shard, &r.socket, Source::Relay(r.relay), r.lone);
            poll.set_lone(r.token, seen.lone_next(r.lone));
            drained &= seen.drained;
            match alone {
                _ if several || seen.datagrams == 0 => {}
                Some((token, n)) if token == r.token => alone = Some((token, n + seen.datagrams)),
                Some(_) => several = true,
                None => alone = Some((r.token, seen.datagrams)),
            }
        }
        hot.saw(alone.filter(|_| !several));
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
