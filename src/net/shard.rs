//! One shard: a single-threaded event loop that owns one protocol core,
//! one listening socket per configured UDP, TCP and TLS address
//! (`SO_REUSEPORT` siblings of the other shards' sockets), the connections
//! it accepted (see [`super::stream`]) and the relay sockets of the
//! allocations it created.
//!
//! The kernel hashes a client's 5-tuple to one of the sibling sockets, so a
//! client's allocation, relay socket, permissions and channels all live in
//! one shard and its packets never cross threads: the core sits in a
//! `RefCell` and is borrowed for the length of one synchronous handler
//! call, never across an `.await`.
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
use std::net::{IpAddr, SocketAddr};
use std::rc::{Rc, Weak};
use std::time::Instant;

use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::Notify;
use tokio::task::AbortHandle;
use tracing::{debug, trace};

use super::stream::{self, Security, StreamConn, StreamLimits};
use crate::process::clock;
use crate::process::random;
use crate::process::status::ConnectionCount;
use crate::proto::server::{
    ClientAddr, ConnectionId, Effect, Family, PeerAddr, PortWant, RelayAddr, RelayBindError, RelayBinder,
    RelayProtocol, Server, ToClient, ToPeer, Transport, CONNECTION_BIND_TIMEOUT, PEER_HEADROOM, PEER_TAILROOM,
};

/// Datagrams handled per socket wake-up before yielding to other tasks.
const BUDGET: usize = 64;
/// Largest datagram read: anything a UDP socket can carry.
const MAX_DATAGRAM: usize = 65_535;

pub(crate) struct Shard {
    core: RefCell<Server<RelaySockets>>,
    listeners: Vec<(SocketAddr, Rc<UdpSocket>)>,
    /// Open TCP connections of this shard, by client 5-tuple.
    streams: RefCell<HashMap<ClientAddr, Rc<StreamConn>>>,
    /// TCP peer connections of TCP allocations (RFC 6062), by id.
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
    /// shard's relay binder, and spawns its tasks on the current
    /// `LocalSet`.
    pub(crate) fn start(
        core_with: impl FnOnce(RelaySockets) -> Server<RelaySockets>,
        binder: RelaySocketsConfig,
        listening: ShardSockets,
        stream_limits: Rc<StreamLimits>,
        connections: ConnectionCount,
    ) -> Rc<Shard> {
        let relays = Rc::new(RefCell::new(HashMap::new()));
        let shard = Rc::new_cyclic(|weak: &Weak<Shard>| {
            let sockets = RelaySockets {
                config: binder,
                shard: weak.clone(),
                sockets: relays.clone(),
                tasks: HashMap::new(),
                rng: random::seed_u64() | 1,
            };
            Shard {
                core: RefCell::new(core_with(sockets)),
                listeners: listening.udp.into_iter().map(|(a, s)| (a, Rc::new(s))).collect(),
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
        for (local, listener, security) in listening.streams {
            tokio::task::spawn_local(stream::accept_loop(
                shard.clone(),
                listener,
                local,
                security,
                stream_limits.clone(),
                connections.clone(),
            ));
        }
        tokio::task::spawn_local(timer_loop(shard.clone()));
        shard
    }

    /// Hands one datagram or stream frame from a client to the core and
    /// carries out the answer.
    pub(crate) fn handle_client_packet(self: &Rc<Self>, client: ClientAddr, packet: &[u8]) {
        let now = clock::now();
        let mut core = self.core.borrow_mut();
        match core.handle_client_packet(client, packet, now) {
            Some(route) => self.send_to_peer(&route),
            None => self.after_control(&mut core),
        }
    }

    pub(crate) fn add_stream(&self, client: ClientAddr, conn: Rc<StreamConn>) {
        self.streams.borrow_mut().insert(client, conn);
    }

    /// Forgets a closed connection and deletes its allocation.
    pub(crate) fn remove_stream(self: &Rc<Self>, client: ClientAddr) {
        self.streams.borrow_mut().remove(&client);
        let mut core = self.core.borrow_mut();
        core.handle_connection_closed(client, clock::mono());
        self.after_control(&mut core);
    }

    /// Applies a reloaded configuration to the core.
    pub(crate) fn reconfigure(
        &self,
        config: crate::proto::server::ServerConfig,
        credentials: crate::proto::auth::Credentials,
        filter: crate::proto::peer_filter::PeerFilter,
    ) {
        self.core.borrow_mut().reconfigure(config, credentials, filter);
    }

    /// The core's counters and gauges now (for metrics).
    pub(crate) fn snapshot(&self) -> crate::proto::stats::Snapshot {
        self.core.borrow().snapshot(clock::mono())
    }

    pub(crate) fn has_allocation(&self, client: ClientAddr) -> bool {
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
                        core.handle_peer_connect_result(id, false, clock::mono());
                        continue;
                    };
                    tokio::task::spawn_local(connect_peer(self.clone(), id, local, peer));
                }
                Effect::Splice { id, data } => {
                    let peer = self.peers.borrow_mut().remove(&id);
                    let conn = self.streams.borrow().get(&data).cloned();
                    match (peer, conn) {
                        (Some(PeerSide::Waiting(stream)), Some(conn)) => {
                            let close = Rc::new(Notify::new());
                            conn.splice_with(stream, close.clone());
                            self.peers.borrow_mut().insert(id, PeerSide::Spliced(close));
                        }
                        _ => core.handle_peer_connection_closed(id),
                    }
                }
                Effect::ClosePeerConnection { id } => {
                    if let Some(PeerSide::Spliced(close)) = self.peers.borrow_mut().remove(&id) {
                        close.notify_one();
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
    if let Some(stream) = stream {
        shard.peers.borrow_mut().insert(id, PeerSide::Waiting(stream));
    }
    core.handle_peer_connect_result(id, shard.peers.borrow().contains_key(&id), clock::mono());
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

/// The listening sockets of one shard.
pub(crate) struct ShardSockets {
    pub udp: Vec<(SocketAddr, UdpSocket)>,
    /// TCP and TLS listeners.
    pub streams: Vec<(SocketAddr, TcpListener, Security)>,
}

/// Reserved relay sockets (the odd partner of an EVEN-PORT pair) by
/// RESERVATION-TOKEN, shared by all shards: the Allocate that claims one
/// may arrive on another 5-tuple and so in another shard, which then
/// adopts the socket into its own event loop. Locked only when a
/// reservation is made, claimed or expires.
pub(crate) type ReservedSockets = std::sync::Arc<std::sync::Mutex<HashMap<u64, Reserved>>>;
pub(crate) type Reserved = (Family, u16, std::net::UdpSocket);

/// How relay sockets are opened: where they bind, which ports they use and
/// what address they advertise.
#[derive(Clone, Debug)]
pub(crate) struct RelaySocketsConfig {
    /// Bind and advertised address of IPv4 relays.
    pub v4: (std::net::Ipv4Addr, std::net::Ipv4Addr),
    /// The same for IPv6 relays, if IPv6 relaying is on.
    pub v6: Option<(std::net::Ipv6Addr, std::net::Ipv6Addr)>,
    pub ports: std::ops::RangeInclusive<u16>,
    pub reserved: ReservedSockets,
}

/// The driver's [`RelayBinder`]: real UDP sockets from the configured port
/// range, each with a receive task on this shard.
pub(crate) struct RelaySockets {
    config: RelaySocketsConfig,
    shard: Weak<Shard>,
    sockets: Rc<RefCell<HashMap<RelayAddr, Rc<UdpSocket>>>>,
    tasks: HashMap<RelayAddr, AbortHandle>,
    rng: u64,
}

impl RelaySockets {
    fn random(&mut self) -> u64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng
    }

    /// (bind, advertised) IP of `family`'s relays, if that family is on.
    fn ips(&self, family: Family) -> Option<(IpAddr, IpAddr)> {
        match family {
            Family::V4 => Some((IpAddr::V4(self.config.v4.0), IpAddr::V4(self.config.v4.1))),
            Family::V6 => self.config.v6.map(|(b, a)| (IpAddr::V6(b), IpAddr::V6(a))),
        }
    }

    fn relay_addr(&self, family: Family, port: u16) -> Option<RelayAddr> {
        self.ips(family)
            .map(|(_, advertised)| RelayAddr(SocketAddr::new(advertised, port)))
    }

    /// The local address a relay's sockets are bound to.
    pub(crate) fn bind_addr(&self, relay: RelayAddr) -> Option<SocketAddr> {
        let (bind, _) = self.ips(Family::of(relay.0))?;
        Some(SocketAddr::new(bind, relay.0.port()))
    }

    /// A TCP relay: a listening socket for peers, sharing its address with
    /// the outgoing connections of Connect (hence `SO_REUSEADDR` and
    /// `SO_REUSEPORT`).
    fn open_tcp(&mut self, family: Family, port: u16) -> io::Result<()> {
        let relay = self.relay_addr(family, port).ok_or(io::ErrorKind::AddrNotAvailable)?;
        let local = self.bind_addr(relay).ok_or(io::ErrorKind::AddrNotAvailable)?;
        let socket = socket2::Socket::new(
            socket2::Domain::for_address(local),
            socket2::Type::STREAM,
            Some(socket2::Protocol::TCP),
        )?;
        if local.is_ipv6() {
            socket.set_only_v6(true)?;
        }
        socket.set_reuse_address(true)?;
        socket.set_reuse_port(true)?;
        socket.set_nonblocking(true)?;
        socket.bind(&local.into())?;
        socket.listen(128)?;
        let listener = TcpListener::from_std(socket.into())?;
        let task = tokio::task::spawn_local(tcp_relay_accept_loop(self.shard.clone(), listener, relay));
        self.tasks.insert(relay, task.abort_handle());
        Ok(())
    }

    fn open(&self, family: Family, port: u16) -> io::Result<std::net::UdpSocket> {
        let (bind, _) = self.ips(family).ok_or(io::ErrorKind::AddrNotAvailable)?;
        super::bind_udp(SocketAddr::new(bind, port), super::UdpRole::Relay)
    }

    /// Adopts a bound socket into this shard's event loop.
    fn register(&mut self, family: Family, port: u16, socket: std::net::UdpSocket) -> io::Result<()> {
        let relay = self.relay_addr(family, port).ok_or(io::ErrorKind::AddrNotAvailable)?;
        let socket = Rc::new(UdpSocket::from_std(socket)?);
        self.sockets.borrow_mut().insert(relay, socket.clone());
        let task = tokio::task::spawn_local(relay_loop(self.shard.clone(), socket, relay));
        self.tasks.insert(relay, task.abort_handle());
        Ok(())
    }

    fn reserved(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Reserved>> {
        // The map holds plain sockets; a panic elsewhere cannot leave it
        // half-updated, so a poisoned lock is still usable.
        self.config.reserved.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl RelayBinder for RelaySockets {
    /// Tries ports from a random starting point (RFC 8656 §7.2 asks for
    /// unpredictable relay ports), walking the whole range once at most.
    fn bind(&mut self, family: Family, protocol: RelayProtocol, want: PortWant) -> Result<u16, RelayBindError> {
        if self.ips(family).is_none() {
            return Err(RelayBindError::Exhausted);
        }
        let (low, high) = (*self.config.ports.start(), *self.config.ports.end());
        let span = u32::from(high) - u32::from(low) + 1;
        let start = (self.random() % u64::from(span)) as u32;
        for i in 0..span {
            let port = (u32::from(low) + (start + i) % span) as u16;
            if want != PortWant::Any && port % 2 != 0 {
                continue;
            }
            let partner = match want {
                PortWant::EvenPair(token) if port < high => Some(token),
                PortWant::EvenPair(_) => continue,
                _ => None,
            };
            // A UDP and a TCP relay of this shard never share a port: the
            // core knows relays by address alone.
            if self
                .relay_addr(family, port)
                .is_some_and(|r| self.tasks.contains_key(&r))
            {
                continue;
            }
            if protocol == RelayProtocol::Tcp {
                if self.open_tcp(family, port).is_ok() {
                    return Ok(port);
                }
                continue;
            }
            let Ok(socket) = self.open(family, port) else {
                continue;
            };
            if let Some(token) = partner {
                let Ok(partner_socket) = self.open(family, port + 1) else {
                    continue;
                };
                self.reserved().insert(token, (family, port + 1, partner_socket));
            }
            if self.register(family, port, socket).is_err() {
                if let Some(token) = partner {
                    self.forget(token);
                }
                continue;
            }
            return Ok(port);
        }
        Err(RelayBindError::Exhausted)
    }

    fn claim(&mut self, token: u64) -> Result<(Family, u16), RelayBindError> {
        let (family, port, socket) = self
            .reserved()
            .remove(&token)
            .ok_or(RelayBindError::UnknownReservation)?;
        self.register(family, port, socket)
            .map_err(|_| RelayBindError::Exhausted)?;
        Ok((family, port))
    }

    fn forget(&mut self, token: u64) {
        self.reserved().remove(&token);
    }

    fn release(&mut self, family: Family, port: u16) {
        let Some(relay) = self.relay_addr(family, port) else {
            return;
        };
        self.sockets.borrow_mut().remove(&relay);
        if let Some(task) = self.tasks.remove(&relay) {
            task.abort();
        }
    }
}
