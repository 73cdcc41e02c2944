//! One shard: a single-threaded event loop that owns one protocol core,
//! its `SO_REUSEPORT` sibling of every UDP listener, the TCP and TLS
//! connections it serves (see [`super::stream`]: those it accepted on its
//! own sibling of each stream listener, and the RFC 6062 data connections
//! other shards handed it because this core holds their peer connection)
//! and the relay sockets of the allocations it created (opened by
//! [`super::relay_sockets`]).
//!
//! The kernel hashes a UDP client's 5-tuple to one of the sibling sockets
//! every time, and a stream client stays on one shard for as long as its
//! connection lasts, so a client's allocation, relay socket, permissions
//! and channels all live in one shard and its packets never cross
//! threads: the core sits in a `RefCell` and is borrowed for the length of
//! one synchronous handler call, never across an `.await`.
//!
//! Every UDP socket is read the same way: wait for readiness, then drain
//! it with `try_recv_from` into the shard's single buffer (with headroom in
//! front, so relayed data is framed in place), and send with a plain
//! non-blocking `sendto`. A send that would block drops the datagram, as a
//! congested router would; nothing queues without bound. A wake-up handles
//! at most [`BUDGET`] datagrams before yielding so one busy socket cannot
//! starve the others.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::rc::{Rc, Weak};
use std::time::Instant;

use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::Notify;
use tracing::{debug, trace};

use super::relay_sockets::{ReceiveLoops, RelaySockets, RelaySocketsConfig};
use super::stream_conn::{Splice, StreamConn};
use crate::process::clock;
use crate::proto::addr::{ClientAddr, ConnectionId, PeerAddr, RelayAddr, ShardId, Transport};
use crate::proto::server::{
    Effect, Server, SpliceDirection, SpliceVerdict, ToClient, ToPeer, CONNECTION_BIND_TIMEOUT, PEER_HEADROOM,
    PEER_TAILROOM,
};

/// Datagrams handled per socket wake-up before yielding to other tasks.
const BUDGET: usize = 64;
/// Largest datagram read: anything a UDP socket can carry.
const MAX_DATAGRAM: usize = 65_535;

pub(super) struct Shard {
    core: RefCell<Server<RelaySockets>>,
    listeners: Vec<(SocketAddr, Rc<UdpSocket>)>,
    /// Open TCP connections of this shard, by client 5-tuple.
    streams: RefCell<HashMap<ClientAddr, Rc<StreamConn>>>,
    /// TCP peer connections of TCP allocations (RFC 6062), by id: what
    /// the shard holds for each peer connection the core knows (the
    /// connect under way, the stream, or the splice's close signal).
    /// An entry goes on the core's `ClosePeerConnection`, and a stream is
    /// only put in when the core says it still waits for it, so nothing
    /// here outlives the core's connection.
    peers: RefCell<HashMap<ConnectionId, PeerSide>>,
    /// Relay sockets by advertised address; shared with the binder that
    /// lives inside the core, which adds and removes entries.
    relays: Rc<RefCell<HashMap<RelayAddr, Rc<UdpSocket>>>>,
    buf: RefCell<Box<[u8]>>,
    /// Deadline the timer task sleeps until; a handler that makes the
    /// core's next deadline earlier wakes it through `timer_changed`.
    next_wake: Cell<Option<Instant>>,
    timer_changed: Notify,
}

impl Shard {
    /// Builds the shard around the core that `core_with` makes from this
    /// shard's relay binder, and spawns its tasks (one per UDP listener,
    /// and the timer) on the current `LocalSet`.
    pub(super) fn start(
        core_with: impl FnOnce(RelaySockets) -> Server<RelaySockets>,
        binder: RelaySocketsConfig,
        listeners: Vec<(SocketAddr, UdpSocket)>,
    ) -> Rc<Shard> {
        let relays = Rc::new(RefCell::new(HashMap::new()));
        let shard = Rc::new_cyclic(|weak: &Weak<Shard>| {
            let (udp_shard, tcp_shard) = (weak.clone(), weak.clone());
            let receive = ReceiveLoops {
                udp: Box::new(move |relay, socket| {
                    tokio::task::spawn_local(relay_loop(udp_shard.clone(), socket, relay)).abort_handle()
                }),
                tcp: Box::new(move |relay, listener| {
                    tokio::task::spawn_local(tcp_relay_accept_loop(tcp_shard.clone(), listener, relay)).abort_handle()
                }),
            };
            let sockets = RelaySockets::new(binder, receive, relays.clone());
            Shard {
                core: RefCell::new(core_with(sockets)),
                listeners: listeners.into_iter().map(|(a, s)| (a, Rc::new(s))).collect(),
                streams: RefCell::new(HashMap::new()),
                peers: RefCell::new(HashMap::new()),
                relays,
                buf: RefCell::new(vec![0u8; PEER_HEADROOM + MAX_DATAGRAM + PEER_TAILROOM].into_boxed_slice()),
                next_wake: Cell::new(None),
                timer_changed: Notify::new(),
            }
        });
        for (local, socket) in &shard.listeners {
            tokio::task::spawn_local(listener_loop(shard.clone(), socket.clone(), *local));
        }
        tokio::task::spawn_local(timer_loop(shard.clone()));
        shard
    }

    /// Hands one datagram or stream frame from a client to the core and
    /// carries out the answer.
    pub(super) fn handle_client_packet(self: &Rc<Self>, client: ClientAddr, packet: &[u8]) {
        let now = clock::now();
        let mut core = self.core.borrow_mut();
        match core.handle_client_packet(client, packet, now) {
            Some(route) => self.send_to_peer(&route),
            None => self.after_control(&mut core),
        }
    }

    pub(super) fn add_stream(&self, client: ClientAddr, conn: Rc<StreamConn>) {
        self.streams.borrow_mut().insert(client, conn);
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
        &self,
        config: crate::proto::server::ServerConfig,
        credentials: crate::proto::auth::Credentials,
        filter: crate::proto::peer_filter::PeerFilter,
    ) {
        self.core.borrow_mut().reconfigure(config, credentials, filter);
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

    fn listener(&self, local: SocketAddr) -> Option<&UdpSocket> {
        self.listeners.iter().find(|(a, _)| *a == local).map(|(_, s)| &**s)
    }

    fn send_to_client(&self, to: ClientAddr, bytes: &[u8]) {
        match to.transport {
            Transport::Udp => match self.listener(to.local) {
                Some(socket) => send_or_drop(socket, bytes, to.remote),
                None => debug!(client = %to, "no listener for client"),
            },
            Transport::Tcp | Transport::Tls => match self.streams.borrow().get(&to) {
                Some(conn) => conn.send(bytes),
                None => trace!(client = %to, "connection already gone"),
            },
        }
    }

    fn send_to_peer(&self, route: &ToPeer<'_>) {
        let relays = self.relays.borrow();
        if let Some(socket) = relays.get(&route.relay) {
            send_or_drop(socket, route.payload, route.peer.0);
        }
    }

    /// Carries out the core's queued effects and wakes the timer task if
    /// the core now wants to be woken earlier.
    fn after_control(self: &Rc<Self>, core: &mut Server<RelaySockets>) {
        while let Some(effect) = core.poll_effect() {
            match effect {
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

/// Sends one datagram with a plain non-blocking `sendto`. tokio's
/// `try_send_to` is not used because it answers "would block" without a
/// syscall until the reactor has seen the socket writable, which drops the
/// first datagrams through a fresh relay socket. Would-block here means the
/// kernel's buffer is full: the datagram is dropped, as a router would.
fn send_or_drop(socket: &UdpSocket, bytes: &[u8], to: SocketAddr) {
    if let Err(e) = socket2::SockRef::from(socket).send_to(bytes, &to.into()) {
        trace!(%to, error = %e, "datagram dropped");
    }
}

async fn listener_loop(shard: Rc<Shard>, socket: Rc<UdpSocket>, local: SocketAddr) {
    loop {
        if let Err(e) = socket.readable().await {
            debug!(%local, error = %e, "listener closed");
            return;
        }
        let mut drained = false;
        for _ in 0..BUDGET {
            let mut buf = shard.buf.borrow_mut();
            let (n, remote) = match socket.try_recv_from(&mut buf[..MAX_DATAGRAM]) {
                Ok(r) => r,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    drained = true;
                    break;
                }
                Err(e) => {
                    // ICMP errors surface here on some systems; the socket stays usable.
                    trace!(%local, error = %e, "recv error");
                    continue;
                }
            };
            let client = ClientAddr {
                transport: Transport::Udp,
                local,
                remote,
            };
            shard.handle_client_packet(client, &buf[..n]);
        }
        if !drained {
            tokio::task::yield_now().await;
        }
    }
}

async fn relay_loop(shard: Weak<Shard>, socket: Rc<UdpSocket>, relay: RelayAddr) {
    let payload_start = PEER_HEADROOM;
    loop {
        if socket.readable().await.is_err() {
            return;
        }
        let Some(shard) = shard.upgrade() else {
            return;
        };
        let mut drained = false;
        for _ in 0..BUDGET {
            let mut buf = shard.buf.borrow_mut();
            let (n, from) = match socket.try_recv_from(&mut buf[payload_start..payload_start + MAX_DATAGRAM]) {
                Ok(r) => r,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    drained = true;
                    break;
                }
                Err(e) => {
                    trace!(relay = %relay.0, error = %e, "relay recv error");
                    continue;
                }
            };
            let now = clock::mono();
            let route = shard.core.borrow_mut().handle_peer_packet(
                relay,
                PeerAddr(from),
                &mut buf,
                payload_start..payload_start + n,
                now,
            );
            if let Some(ToClient { client, range }) = route {
                shard.send_to_client(client, &buf[range]);
            }
        }
        drop(shard);
        if !drained {
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
