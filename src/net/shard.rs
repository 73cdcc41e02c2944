//! One shard: a single-threaded event loop that owns one protocol core,
//! its `SO_REUSEPORT` sibling of every UDP listener, the TCP and TLS
//! connections it serves (see [`super::stream`]: those it accepted on its
//! own sibling of each stream listener, and the RFC 6062 data connections
//! other shards transferred to it because this core holds their peer
//! connection)
//! and the relay sockets of the allocations it created (opened by
//! [`super::relay::sockets`]).
//!
//! The kernel hashes a UDP client's 5-tuple to one of the sibling sockets
//! every time, and a stream client stays on one shard for as long as its
//! connection lasts, so a client's allocation, relay socket, permissions
//! and channels all live in one shard and its packets never cross
//! threads: the core sits in a `RefCell` and is borrowed for the length of
//! one synchronous handler call, never across an `.await`.
//!
//! Every UDP socket is read the same way (see [`super::udp::receive`],
//! whose loops this shard spawns and feeds through [`Datagrams`]): wait
//! for readiness, then read it in batches of `recvmmsg` into the shard's
//! buffers (with headroom in front, so relayed data is framed in place,
//! see [`super::udp::batch`]). What a batch relays is queued and sent when
//! the batch is done, in as few syscalls as the kernel allows (GSO trains,
//! `sendmmsg`). A send that would block drops the datagram, as a congested
//! router would; nothing queues beyond one batch.
//!
//! A payload for one of this server's own relays skips the kernel: the
//! shard that owns that relay gets it directly (this one at once, any
//! other through [`super::relay::cross_shard`]), as if that relay's socket
//! had received it from the sender's relay. When the other shard's inbox
//! is full, the payload takes the kernel path instead, exactly as it would
//! without the shortcut (the sender's relay socket sends it to the
//! receiver's relay socket), so that one flow's flood fills its own relay
//! socket's queue, not the inbox every other flow to that shard shares.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::ops::Range;
use std::rc::{Rc, Weak};
use std::time::Instant;

use tokio::net::TcpListener;
use tokio::sync::Notify;
use tracing::{debug, trace};

use super::relay::cross_shard::{CrossShardPacket, NotQueued, PacketInbox, PacketOutboxes};
use super::relay::sockets::{RelaySockets, RelaySocketsConfig, TcpAcceptLoops, UdpRelays};
use super::stream::conn::{Splice, StreamConn};
use super::udp::batch::{Kernel, RecvBatch, TxQueue, UdpSock};
use super::udp::receive::{listener_loop, relay_loop, Datagrams, Source};
use super::udp::relay_poll::{RelayPoll, RelaySocket};
use crate::process::clock;
use crate::proto::addr::{ClientAddr, ConnectionId, PeerAddr, RelayAddr, ShardId, Transport};
use crate::proto::server::{
    Effect, Server, SpliceDirection, SpliceVerdict, ToClient, ToPeer, CONNECTION_BIND_TIMEOUT, PEER_HEADROOM,
    PEER_TAILROOM,
};
use crate::proto::Now;

/// Packets from other shards handled per wake-up before yielding.
const CROSS_SHARD_BUDGET: usize = 64;
/// Largest datagram read: anything a UDP socket can carry.
const MAX_DATAGRAM: usize = 65_535;

pub(super) struct Shard {
    core: RefCell<Server<RelaySockets>>,
    listeners: Vec<(SocketAddr, Rc<UdpSock>)>,
    /// Open TCP connections of this shard, by client 5-tuple.
    streams: RefCell<HashMap<ClientAddr, Rc<StreamConn>>>,
    /// TCP peer connections of TCP allocations (RFC 6062), by id: what
    /// the shard holds for each peer connection the core knows (the
    /// connect under way, the stream, or the splice's close signal).
    /// An entry goes on the core's `ClosePeerConnection`, and a stream is
    /// only put in when the core says it still waits for it, so nothing
    /// here outlives the core's connection.
    peers: RefCell<HashMap<ConnectionId, PeerSide>>,
    /// UDP relay sockets by advertised address; shared with the binder
    /// that lives inside the core, which adds and removes entries (and
    /// watches them in `poll`).
    relays: UdpRelays,
    recv: RefCell<RecvBatch>,
    tx: RefCell<TxQueue<RelaySocket>>,
    /// Where a payload for one of our relays is framed for its client.
    scratch: RefCell<Box<[u8]>>,
    outboxes: PacketOutboxes,
    /// Deadline the timer task sleeps until; a handler that makes the
    /// core's next deadline earlier wakes it through `timer_changed`.
    next_wake: Cell<Option<Instant>>,
    /// A batch of datagrams is being handled: answers to UDP clients join
    /// the transmit queue (sent by the batch's flush) instead of leaving
    /// one `sendto` each.
    in_batch: Cell<bool>,
    timer_changed: Notify,
}

impl Shard {
    /// Builds the shard around the core that `core_with` makes from this
    /// shard's relay binder, and spawns its tasks (one per UDP listener,
    /// and the timer) on the current `LocalSet`.
    pub(super) fn start(
        core_with: impl FnOnce(RelaySockets) -> Server<RelaySockets>,
        binder: RelaySocketsConfig,
        listeners: Vec<(SocketAddr, UdpSock)>,
        (inbox, outboxes): (PacketInbox, PacketOutboxes),
    ) -> io::Result<Rc<Shard>> {
        let relays = UdpRelays::default();
        let poll = Rc::new(RelayPoll::new()?);
        let shard = Rc::new_cyclic(|weak: &Weak<Shard>| {
            let tcp_shard = weak.clone();
            let tcp_accept: TcpAcceptLoops = Box::new(move |relay, listener| {
                tokio::task::spawn_local(tcp_relay_accept_loop(tcp_shard.clone(), listener, relay)).abort_handle()
            });
            let sockets = RelaySockets::new(binder, poll.clone(), tcp_accept, relays.clone());
            Shard {
                core: RefCell::new(core_with(sockets)),
                listeners: listeners.into_iter().map(|(a, s)| (a, Rc::new(s))).collect(),
                streams: RefCell::new(HashMap::new()),
                peers: RefCell::new(HashMap::new()),
                relays,
                recv: RefCell::new(RecvBatch::new(PEER_HEADROOM, MAX_DATAGRAM, PEER_TAILROOM)),
                tx: RefCell::new(TxQueue::new()),
                scratch: RefCell::new(vec![0u8; PEER_HEADROOM + MAX_DATAGRAM + PEER_TAILROOM].into_boxed_slice()),
                outboxes,
                next_wake: Cell::new(None),
                in_batch: Cell::new(false),
                timer_changed: Notify::new(),
            }
        });
        for (local, socket) in &shard.listeners {
            tokio::task::spawn_local(listener_loop(shard.clone(), socket.clone(), *local));
        }
        tokio::task::spawn_local(timer_loop(shard.clone()));
        tokio::task::spawn_local(cross_shard_loop(shard.clone(), inbox));
        tokio::task::spawn_local(relay_loop(Rc::downgrade(&shard), poll));
        Ok(shard)
    }

    /// Hands one datagram or stream frame from a client to the core,
    /// carries out its answer and queues what it relays (sent by
    /// [`Self::flush`], which the caller owes once its batch is done).
    /// `now` is the batch's: what arrived together is handled at one time.
    pub(super) fn queue_client_packet(self: &Rc<Self>, client: ClientAddr, packet: &[u8], now: Now) {
        let mut core = self.core.borrow_mut();
        match core.handle_client_packet(client, packet, now) {
            Some(route) => self.forward(&mut core, &route, now.mono),
            None => self.after_control(&mut core),
        }
    }

    /// Sends what the last batch queued, and wakes the shards it handed
    /// payloads to.
    pub(super) fn flush(&self) {
        let mut tx = self.tx.borrow_mut();
        if !tx.is_empty() {
            let dropped = tx.flush(&mut Kernel);
            if dropped.0 > 0 {
                trace!(dropped = dropped.0, "datagrams dropped by the kernel");
            }
        }
        self.outboxes.wake();
    }

    /// Queues a client's payload for its peer: through the relay socket,
    /// or straight to the allocation of the relay it is addressed to when
    /// that is one of ours.
    fn forward(&self, core: &mut Server<RelaySockets>, route: &ToPeer<'_>, now: Instant) {
        let to = RelayAddr(route.peer.0);
        match route.local {
            None => {
                if let Some(relay) = self.relays.borrow().get(&route.relay) {
                    self.tx
                        .borrow_mut()
                        .push(&mut Kernel, &relay.socket, route.peer.0, route.payload);
                }
            }
            Some(shard) if shard == core.shard() => self.relay_to_relay(core, to, route.relay, route.payload, now),
            Some(shard) => match self
                .outboxes
                .send(shard, CrossShardPacket::new(to, route.relay, route.payload))
            {
                Ok(()) => {}
                Err(NotQueued::Full) => self.through_kernel(core, to, route.relay, route.payload),
                Err(why @ NotQueued::NoSuchShard) => {
                    trace!(?why, shard = shard.0, "relay-to-relay payload dropped");
                    core.count_relay_handoff_drop();
                }
            },
        }
    }

    /// Sends `payload`, which our relay `from` sent to our relay `to` of a
    /// shard whose inbox is full, the way it goes without the in-process
    /// shortcut: a datagram from `from`'s socket to `to`'s (at the address
    /// it is bound to, which a 1:1 NAT's advertised address may not
    /// hairpin; its core maps the source back, `RelayHairpin`). Queued
    /// for [`Self::flush`]; a full socket buffer then drops it, as any
    /// datagram. Counted apart from the drops
    /// (`turnpike_relay_handoff_fallbacks_total`).
    fn through_kernel(&self, core: &mut Server<RelaySockets>, to: RelayAddr, from: RelayAddr, payload: &[u8]) {
        let dest = core.binder().bind_addr(to).unwrap_or(to.0);
        let Some(relay) = self.relays.borrow().get(&from).map(|r| r.socket.clone()) else {
            trace!(relay = %from.0, "relay-to-relay payload dropped: the sending relay is gone");
            core.count_relay_handoff_drop();
            return;
        };
        self.tx.borrow_mut().push(&mut Kernel, &relay, dest, payload);
        core.count_relay_handoff_fallback();
    }

    /// Delivers a payload another shard handed over for one of our relays.
    fn deliver(&self, packet: &CrossShardPacket) {
        let mut core = self.core.borrow_mut();
        self.relay_to_relay(&mut core, packet.to, packet.from, packet.payload(), clock::mono());
    }

    /// Hands `payload`, which our relay `from` sent to our relay `to`, to
    /// `to`'s allocation, framed in the scratch buffer's headroom, and
    /// queues what its client gets.
    fn relay_to_relay(
        &self,
        core: &mut Server<RelaySockets>,
        to: RelayAddr,
        from: RelayAddr,
        payload: &[u8],
        now: Instant,
    ) {
        let mut scratch = self.scratch.borrow_mut();
        let range = PEER_HEADROOM..PEER_HEADROOM + payload.len();
        scratch[range.clone()].copy_from_slice(payload);
        if let Some(out) = core.handle_relay_to_relay(to, from, &mut scratch, range, now) {
            self.queue_to_client(out.client, &scratch[out.range]);
        }
    }

    /// Registers a connection; false, and nothing changed, if its 5-tuple
    /// is served already. The kernel never accepts two alike, but a PROXY
    /// header names the client, and two proxies can name the same one.
    pub(super) fn add_stream(&self, client: ClientAddr, conn: Rc<StreamConn>) -> bool {
        match self.streams.borrow_mut().entry(client) {
            std::collections::hash_map::Entry::Occupied(_) => false,
            std::collections::hash_map::Entry::Vacant(entry) => {
                entry.insert(conn);
                true
            }
        }
    }

    /// Forgets a closed connection and deletes its allocation.
    pub(super) fn remove_stream(self: &Rc<Self>, client: ClientAddr) {
        self.streams.borrow_mut().remove(&client);
        let mut core = self.core.borrow_mut();
        core.handle_connection_closed(client, clock::mono());
        self.after_control(&mut core);
    }

    /// Applies a reloaded configuration to the core.
    pub(super) fn reconfigure(
        self: &Rc<Self>,
        config: crate::proto::server::ServerConfig,
        credentials: crate::proto::auth::Credentials,
        filter: crate::proto::peer_filter::PeerFilter,
    ) {
        let mut core = self.core.borrow_mut();
        core.reconfigure(config, credentials, filter, clock::mono());
        self.after_control(&mut core);
    }

    /// Runs `f` on the core and carries out the effects it queued (for
    /// the operator's commands, see [`super::admin`]).
    pub(super) fn with_core<R>(self: &Rc<Self>, f: impl FnOnce(&mut Server<RelaySockets>) -> R) -> R {
        let mut core = self.core.borrow_mut();
        let result = f(&mut core);
        self.after_control(&mut core);
        result
    }

    /// The core's counters and gauges now (for metrics).
    pub(super) fn snapshot(&self) -> crate::proto::stats::Snapshot {
        self.core.borrow().snapshot(clock::mono())
    }

    /// Reports `len` bytes read from one side of splice `id` to the core
    /// (which counts them and paces them by the byte rates).
    pub(super) fn spliced_bytes(&self, id: ConnectionId, direction: SpliceDirection, len: usize) -> SpliceVerdict {
        self.core
            .borrow_mut()
            .handle_spliced_bytes(id, direction, len, clock::mono())
    }

    /// The shard this is (its core's).
    pub(super) fn id(&self) -> ShardId {
        self.core.borrow().shard()
    }

    pub(super) fn has_allocation(&self, client: ClientAddr) -> bool {
        self.core.borrow().has_allocation(&client)
    }

    /// This shard's sibling of the UDP listener bound to `local`: the one
    /// a Transmit names in `to.local`, which for an RFC 5780 Binding
    /// answer may be another than the one the request arrived on (every
    /// shard has a sibling of all four addresses of an address pair).
    fn listener(&self, local: SocketAddr) -> Option<&Rc<UdpSock>> {
        self.listeners.iter().find(|(a, _)| *a == local).map(|(_, s)| s)
    }

    /// Sends a control answer to a client at once.
    fn send_to_client(&self, to: ClientAddr, bytes: &[u8]) {
        match to.transport {
            Transport::Udp => match self.listener(to.local) {
                Some(socket) => send_or_drop(socket, bytes, to.remote),
                None => debug!(client = %to, "no listener for client"),
            },
            Transport::Tcp | Transport::Tls => self.send_to_stream(to, bytes),
        }
    }

    /// Queues relayed data for a client (sent by [`Self::flush`]).
    fn queue_to_client(&self, to: ClientAddr, bytes: &[u8]) {
        match to.transport {
            Transport::Udp => match self.listener(to.local) {
                Some(socket) => {
                    self.tx
                        .borrow_mut()
                        .push(&mut Kernel, socket.get_ref(), to.remote, bytes);
                }
                None => debug!(client = %to, "no listener for client"),
            },
            Transport::Tcp | Transport::Tls => self.send_to_stream(to, bytes),
        }
    }

    fn send_to_stream(&self, to: ClientAddr, bytes: &[u8]) {
        match self.streams.borrow().get(&to) {
            Some(conn) => conn.send(bytes),
            None => trace!(client = %to, "connection already gone"),
        }
    }

    /// Carries out the core's queued effects and wakes the timer task if
    /// the core now wants to be woken earlier.
    fn after_control(self: &Rc<Self>, core: &mut Server<RelaySockets>) {
        while let Some(effect) = core.poll_effect() {
            match effect {
                Effect::Transmit { to, bytes } if self.in_batch.get() => self.queue_to_client(to, &bytes),
                Effect::Transmit { to, bytes } => self.send_to_client(to, &bytes),
                Effect::ConnectPeer { id, relay, peer } => {
                    let Some(local) = core.binder().bind_addr(relay) else {
                        let kept = core.handle_peer_connect_result(id, false, clock::mono());
                        debug_assert!(!kept, "a failed connect has no stream");
                        continue;
                    };
                    // The task cannot run before this handler returns, so
                    // its handle is in place before it could finish.
                    let task = tokio::task::spawn_local(connect_peer(self.clone(), id, local, peer));
                    self.peers
                        .borrow_mut()
                        .insert(id, PeerSide::Connecting(task.abort_handle()));
                }
                Effect::Splice { id, data } => {
                    let peer = self.peers.borrow_mut().remove(&id);
                    let conn = self.streams.borrow().get(&data).cloned();
                    match (peer, conn) {
                        (Some(PeerSide::Waiting(peer)), Some(conn)) => {
                            let close = Rc::new(Notify::new());
                            conn.splice_with(Splice {
                                id,
                                peer,
                                close: close.clone(),
                            });
                            self.peers.borrow_mut().insert(id, PeerSide::Spliced(close));
                        }
                        _ => core.handle_peer_connection_closed(id),
                    }
                }
                Effect::ClosePeerConnection { id } => {
                    let side = self.peers.borrow_mut().remove(&id);
                    match side {
                        // Dropping the connect future closes its socket.
                        Some(PeerSide::Connecting(task)) => task.abort(),
                        Some(PeerSide::Spliced(close)) => close.notify_one(),
                        Some(PeerSide::Waiting(stream)) => drop(stream),
                        None => {}
                    }
                }
            }
        }
        let next = core.poll_timeout();
        if next.is_some() && (self.next_wake.get().is_none() || next < self.next_wake.get()) {
            self.timer_changed.notify_one();
        }
    }
}

/// Sends one datagram with a plain non-blocking `sendto`. Would-block
/// means the kernel's buffer is full: the datagram is dropped, as a router
/// would.
fn send_or_drop(socket: &UdpSock, bytes: &[u8], to: SocketAddr) {
    if let Err(e) = socket.get_ref().send_to(bytes, to) {
        trace!(%to, error = %e, "datagram dropped");
    }
}

impl Datagrams for Shard {
    fn recv_batch(&self) -> &RefCell<RecvBatch> {
        &self.recv
    }

    fn on_datagram(self: &Rc<Self>, source: Source, buf: &mut [u8], payload: Range<usize>, from: SocketAddr, now: Now) {
        match source {
            Source::Listener(local) => {
                let client = ClientAddr {
                    transport: Transport::Udp,
                    local,
                    remote: from,
                };
                self.queue_client_packet(client, &buf[payload], now);
            }
            Source::Relay(relay) => {
                let route = self
                    .core
                    .borrow_mut()
                    .handle_peer_packet(relay, PeerAddr(from), buf, payload, now.mono);
                if let Some(ToClient { client, range }) = route {
                    self.queue_to_client(client, &buf[range]);
                }
            }
        }
    }

    fn set_in_batch(&self, in_batch: bool) {
        self.in_batch.set(in_batch);
    }

    fn flush_batch(&self) {
        self.flush();
    }
}

/// Delivers what other shards handed over for this shard's relays.
async fn cross_shard_loop(shard: Rc<Shard>, inbox: PacketInbox) {
    loop {
        inbox.woken().await;
        loop {
            let mut handled = 0;
            while handled < CROSS_SHARD_BUDGET {
                let Some(packet) = inbox.next() else {
                    break;
                };
                shard.deliver(&packet);
                handled += 1;
            }
            shard.flush();
            if handled < CROSS_SHARD_BUDGET {
                break;
            }
            tokio::task::yield_now().await;
        }
    }
}

/// A TCP peer connection held by the shard (RFC 6062).
enum PeerSide {
    /// Our Connect to the peer is under way in this task.
    Connecting(tokio::task::AbortHandle),
    /// Connected, waiting for the client's data connection.
    Waiting(tokio::net::TcpStream),
    /// Spliced with a data connection; notifying closes both.
    Spliced(Rc<Notify>),
}

/// Connects TCP relay `local` to `peer` (RFC 6062 §5.2) and reports the
/// outcome to the core.
async fn connect_peer(shard: Rc<Shard>, id: ConnectionId, local: SocketAddr, peer: PeerAddr) {
    let connect = async {
        let socket = match local {
            SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
            SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
        };
        // The relay's listening socket holds the same local address; Linux
        // lets a connecting socket share it only with both options set.
        socket.set_reuseaddr(true)?;
        socket.set_reuseport(true)?;
        socket.bind(local)?;
        socket.connect(peer.0).await
    };
    let stream = match tokio::time::timeout(CONNECTION_BIND_TIMEOUT, connect).await {
        Ok(Ok(stream)) => Some(stream),
        Ok(Err(e)) => {
            debug!(%local, peer = %peer.0, error = %e, "peer connect failed");
            None
        }
        Err(_) => {
            debug!(%local, peer = %peer.0, "peer connect timed out");
            None
        }
    };
    let mut core = shard.core.borrow_mut();
    // This task ends here, and its abort handle with it.
    shard.peers.borrow_mut().remove(&id);
    let keep = core.handle_peer_connect_result(id, stream.is_some(), clock::mono());
    if let (true, Some(stream)) = (keep, stream) {
        shard.peers.borrow_mut().insert(id, PeerSide::Waiting(stream));
    }
    shard.after_control(&mut core);
}

/// Accepts peer connections on a TCP relay (RFC 6062 §5.3).
async fn tcp_relay_accept_loop(shard: Weak<Shard>, listener: TcpListener, relay: RelayAddr) {
    loop {
        let Ok((stream, from)) = listener.accept().await else {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            continue;
        };
        let Some(shard) = shard.upgrade() else {
            return;
        };
        let mut core = shard.core.borrow_mut();
        if let Some(id) = core.handle_incoming_peer_connection(relay, PeerAddr(from), clock::mono()) {
            shard.peers.borrow_mut().insert(id, PeerSide::Waiting(stream));
        }
        shard.after_control(&mut core);
    }
}

/// Sleeps until the core's next deadline (no periodic tick), and is woken
/// early when a handler makes that deadline earlier.
async fn timer_loop(shard: Rc<Shard>) {
    loop {
        let deadline = shard.core.borrow().poll_timeout();
        shard.next_wake.set(deadline);
        let changed = shard.timer_changed.notified();
        match deadline {
            Some(at) => {
                tokio::select! {
                    _ = tokio::time::sleep_until(at.into()) => {
                        let mut core = shard.core.borrow_mut();
                        core.handle_timeout(clock::mono());
                        shard.after_control(&mut core);
                    }
                    _ = changed => {}
                }
            }
            None => changed.await,
        }
    }
}
