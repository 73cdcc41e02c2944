//! The relay socket binder: the driver's side of the core's
//! [`RelayBinder`]. It opens real sockets for a shard's allocations (UDP
//! sockets from the configured port range, TCP listeners for RFC 6062
//! relays), has the shard read each (UDP sockets through the shard's
//! [`RelayPoll`], TCP listeners in an accept task), and on release closes
//! the socket and stops reading it.
//!
//! Invariants, per shard:
//! * `sockets`, shared with the shard that sends through them, holds every
//!   live UDP relay by advertised address with its [`RelayPoll`] token;
//!   `tasks` holds one accept loop per live TCP relay; a port is used by at
//!   most one relay of either protocol, since the core knows relays by
//!   address alone;
//! * the odd partner of an EVEN-PORT pair is bound at once and waits in the
//!   process-wide [`ReservedSockets`] until it is claimed or forgotten; it
//!   has no receive loop until a shard claims it.
//!
//! The binder does not know the shard: the shard hands it its
//! [`RelayPoll`] and the [`TcpAcceptLoops`] to start, so this file and the
//! event loop do not depend on each other.

use std::cell::RefCell;
use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::sync::{Arc, Mutex};

use tokio::net::TcpListener;
use tokio::task::AbortHandle;

use super::port_pool::PortPool;
use crate::net::socket::{bind_tcp, bind_udp, UdpRole};
use crate::net::udp::relay_poll::{RelayPoll, RelaySocket, Token};
use crate::process::random;
use crate::proto::addr::{Family, RelayAddr, RelayProtocol};
use crate::proto::server::{PortWant, RelayBindError, RelayBinder};
use crate::proto::xorshift::XorShift;

/// Peer connections a TCP relay holds before they are accepted.
const TCP_RELAY_BACKLOG: i32 = 128;

/// Reserved relay sockets (the odd partner of an EVEN-PORT pair) by
/// RESERVATION-TOKEN, shared by all shards: the Allocate that claims one
/// may arrive on another 5-tuple and so in another shard, which then
/// adopts the socket into its own event loop. Locked only when a
/// reservation is made, claimed or expires.
pub(in crate::net) type ReservedSockets = std::sync::Arc<std::sync::Mutex<HashMap<u64, Reserved>>>;
pub(in crate::net) type Reserved = (Family, u16, std::net::UdpSocket);

/// How relay sockets are opened: where they bind, which ports they use and
/// what address they advertise.
#[derive(Clone, Debug)]
pub(in crate::net) struct RelaySocketsConfig {
    /// Bind and advertised address of IPv4 relays.
    pub v4: (std::net::Ipv4Addr, std::net::Ipv4Addr),
    /// The same for IPv6 relays, if IPv6 relaying is on.
    pub v6: Option<(std::net::Ipv6Addr, std::net::Ipv6Addr)>,
    /// Free relay ports, shared by every shard.
    pub pool: Arc<Mutex<PortPool>>,
    pub reserved: ReservedSockets,
}

/// Starts the shard's loop that accepts peers connecting to a TCP relay
/// (RFC 6062 §5.3); returns the handle that stops it on release.
pub(in crate::net) type TcpAcceptLoops = Box<dyn Fn(RelayAddr, TcpListener) -> AbortHandle>;

/// A live UDP relay's socket, and its token in the shard's [`RelayPoll`].
pub(in crate::net) struct UdpRelay {
    pub socket: RelaySocket,
    token: Token,
}

/// The UDP relays of a shard by advertised address.
pub(in crate::net) type UdpRelays = Rc<RefCell<HashMap<RelayAddr, UdpRelay>>>;

/// Ports tried per bind before the range counts as exhausted.
const BIND_ATTEMPTS: usize = 8;

/// Ports of a relay that could not be bound, for the pool to set aside.
struct Unbound {
    port: u16,
    partner: Option<u16>,
}

/// The driver's [`RelayBinder`] for one shard: UDP and TCP relay sockets
/// from the configured port range, each with a receive loop on the shard.
pub(in crate::net) struct RelaySockets {
    config: RelaySocketsConfig,
    poll: Rc<RelayPoll>,
    tcp_accept: TcpAcceptLoops,
    sockets: UdpRelays,
    tasks: HashMap<RelayAddr, AbortHandle>,
    rng: XorShift,
}

impl RelaySockets {
    /// `sockets` is the shard's map of UDP relays, which the binder fills
    /// and empties.
    pub(in crate::net) fn new(
        config: RelaySocketsConfig,
        poll: Rc<RelayPoll>,
        tcp_accept: TcpAcceptLoops,
        sockets: UdpRelays,
    ) -> RelaySockets {
        RelaySockets {
            config,
            poll,
            tcp_accept,
            sockets,
            tasks: HashMap::new(),
            rng: XorShift::new(random::seed_u64()),
        }
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
    pub(in crate::net) fn bind_addr(&self, relay: RelayAddr) -> Option<SocketAddr> {
        let (bind, _) = self.ips(Family::of(relay.0))?;
        Some(SocketAddr::new(bind, relay.0.port()))
    }

    /// A TCP relay: a listening socket for peers, sharing its address with
    /// the outgoing connections of Connect (hence `SO_REUSEADDR` and
    /// `SO_REUSEPORT`).
    fn open_tcp(&mut self, family: Family, port: u16) -> io::Result<()> {
        let relay = self.relay_addr(family, port).ok_or(io::ErrorKind::AddrNotAvailable)?;
        let local = self.bind_addr(relay).ok_or(io::ErrorKind::AddrNotAvailable)?;
        let listener = TcpListener::from_std(bind_tcp(local, true, TCP_RELAY_BACKLOG)?)?;
        let task = (self.tcp_accept)(relay, listener);
        self.tasks.insert(relay, task);
        Ok(())
    }

    fn open(&self, family: Family, port: u16) -> io::Result<std::net::UdpSocket> {
        let (bind, _) = self.ips(family).ok_or(io::ErrorKind::AddrNotAvailable)?;
        bind_udp(SocketAddr::new(bind, port), UdpRole::Relay)
    }

    /// Adopts a bound socket into this shard's event loop.
    fn register(&mut self, family: Family, port: u16, socket: std::net::UdpSocket) -> io::Result<()> {
        let relay = self.relay_addr(family, port).ok_or(io::ErrorKind::AddrNotAvailable)?;
        let socket = Rc::new(socket);
        let token = self.poll.add(relay, &socket)?;
        self.sockets.borrow_mut().insert(relay, UdpRelay { socket, token });
        Ok(())
    }

    /// Opens the relay on `port` (and, under `partner`, reserves `port +
    /// 1`), with its receive loop. On failure nothing stays open, and the
    /// ports that could not be bound are named.
    fn open_relay(
        &mut self,
        family: Family,
        protocol: RelayProtocol,
        port: u16,
        partner: Option<u64>,
    ) -> Result<(), Unbound> {
        let unbound = |port, partner: Option<u16>| Unbound { port, partner };
        if protocol == RelayProtocol::Tcp {
            return self.open_tcp(family, port).map_err(|_| unbound(port, None));
        }
        let socket = self
            .open(family, port)
            .map_err(|_| unbound(port, partner.map(|_| port + 1)))?;
        if let Some(token) = partner {
            let partner_socket = self.open(family, port + 1).map_err(|_| unbound(port, Some(port + 1)))?;
            self.reserved().insert(token, (family, port + 1, partner_socket));
        }
        if self.register(family, port, socket).is_err() {
            if let Some(token) = partner {
                self.reserved().remove(&token);
            }
            return Err(unbound(port, partner.map(|_| port + 1)));
        }
        Ok(())
    }

    fn pool(&self) -> std::sync::MutexGuard<'_, PortPool> {
        // Plain bits; a panic elsewhere cannot leave them half-updated.
        self.config.pool.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn reserved(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Reserved>> {
        // The map holds plain sockets; a panic elsewhere cannot leave it
        // half-updated, so a poisoned lock is still usable.
        self.config.reserved.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl RelayBinder for RelaySockets {
    /// Takes a port from the shared [`PortPool`] (random, as RFC 8656 §7.2
    /// asks) and binds it; a port another process holds is set aside and
    /// the next one tried, [`BIND_ATTEMPTS`] times at most, so an Allocate
    /// near exhaustion costs a few `bind()` calls, not the whole range.
    fn bind(&mut self, family: Family, protocol: RelayProtocol, want: PortWant) -> Result<u16, RelayBindError> {
        if self.ips(family).is_none() {
            return Err(RelayBindError::Exhausted);
        }
        for _ in 0..BIND_ATTEMPTS {
            let start = self.rng.next_u64();
            let port = self.pool().take(family, want, start).ok_or(RelayBindError::Exhausted)?;
            let partner = match want {
                PortWant::EvenPair(token) => Some(token),
                _ => None,
            };
            match self.open_relay(family, protocol, port, partner) {
                Ok(()) => return Ok(port),
                Err(Unbound { port, partner }) => {
                    let mut pool = self.pool();
                    pool.foreign(family, port);
                    if let Some(partner) = partner {
                        pool.foreign(family, partner);
                    }
                }
            }
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
        let reserved = self.reserved().remove(&token);
        if let Some((family, port, socket)) = reserved {
            drop(socket);
            self.pool().give_back(family, port);
        }
    }

    fn release(&mut self, family: Family, port: u16) {
        let Some(relay) = self.relay_addr(family, port) else {
            return;
        };
        if let Some(udp) = self.sockets.borrow_mut().remove(&relay) {
            self.poll.remove(udp.token);
        }
        if let Some(task) = self.tasks.remove(&relay) {
            task.abort();
        }
        self.pool().give_back(family, port);
    }
}
