//! The STUN/TURN server state machine: STUN Binding (RFC 8489 §6.3) and
//! TURN allocations, permissions, channels and relaying (RFC 8656).
//!
//! Contract: the driver calls
//! * [`Server::handle_client_packet`] for every datagram/frame from a client
//!   (STUN or ChannelData); relayed data comes back as a [`ToPeer`]
//!   borrowing the packet, control answers go into the effect queue;
//! * [`Server::handle_peer_packet`] for every datagram a relay socket gets;
//!   the answer [`ToClient`] names the bytes to send, already framed in
//!   place in the buffer's headroom;
//! * [`Server::handle_timeout`] when [`Server::poll_timeout`] is due;
//!
//! and after each call drains [`Server::poll_effect`] until `None`.
//!
//! Control plane and data plane have different shapes on purpose: requests
//! may allocate (a `Vec<u8>` per response), relayed packets never do.
//!
//! TCP allocations (RFC 6062) relay byte streams, not datagrams: the core
//! keeps the state of each peer connection (being connected, waiting for
//! its ConnectionBind, bound to a data connection) and tells the driver to
//! connect, splice or close through [`Effect`]s; the bytes themselves never
//! pass through the core.
//!
//! Invariants:
//! * `by_relay` mirrors `allocations`: `by_relay[r] == client` for every
//!   relay address `r` of every `(client, a)` and nothing else (checked by `debug_assert`s in
//!   `insert_allocation`/`remove_allocation`).
//! * `timers` holds exactly one `(expires, Timer::Allocation(client))` per
//!   allocation, with the allocation's deadline, and one
//!   `(expires, Timer::Reservation(token))` per reservation this core made
//!   (claimed or not: forgetting a claimed one is a no-op).
//! * Permissions and channels are bounded per allocation and expire lazily:
//!   an expired entry is never used and is pruned before counting.
//! * `connections` holds every RFC 6062 peer connection, each listed in its
//!   allocation's `connections`; a pending one has exactly one
//!   `Timer::Connection`, and removing one always emits
//!   `Effect::ClosePeerConnection` so the driver never keeps a stream the
//!   core forgot.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::ops::Range;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ring::hmac;
use tracing::{debug, info, trace};

use super::auth::{Credentials, NonceCheck, UserError};
use super::channel_data::{self, ChannelNumber};
use super::peer_filter::PeerFilter;
use super::stats::{self, AuthFailure, Counters, EndReason, RateLimit, Refusal, Snapshot, Traffic};
use super::stun::{self, attr, method, Class, Message, MessageWriter, TransactionId};
use super::token_bucket::TokenBucket;

/// RFC 8656 §3.2 and §7.2: default and bounds of allocation lifetimes.
pub const DEFAULT_ALLOCATION_LIFETIME: Duration = Duration::from_secs(600);
/// RFC 8656 §9: permissions last 300 s and are refreshed, never extended.
pub const PERMISSION_LIFETIME: Duration = Duration::from_secs(300);
/// RFC 8656 §12: channel bindings last 600 s.
pub const CHANNEL_LIFETIME: Duration = Duration::from_secs(600);
/// RFC 8656 §12: after a binding expires its number and peer stay
/// unavailable to other bindings for 5 minutes, so late packets of the old
/// binding cannot be delivered to a new one.
pub const CHANNEL_COOLDOWN: Duration = Duration::from_secs(300);
/// RFC 8656 §7.2: a reserved even-port partner is held for about 30 s.
pub const RESERVATION_LIFETIME: Duration = Duration::from_secs(30);
/// RFC 6062 §5.2/§5.3: a peer connection must be bound to a data
/// connection (ConnectionBind) within 30 s, and an outgoing connect may
/// take at most that long.
pub const CONNECTION_BIND_TIMEOUT: Duration = Duration::from_secs(30);

/// The current time, sampled once per event by the driver.
#[derive(Clone, Copy, Debug)]
pub struct Now {
    /// For every lifetime and timer.
    pub mono: Instant,
    /// Wall-clock seconds, for nonce and ephemeral credential expiry.
    pub unix_secs: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Transport {
    Udp,
    Tcp,
    Tls,
}

/// A client's 5-tuple: the transport, the server address it reached and
/// its own address. One allocation at most per `ClientAddr`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClientAddr {
    pub transport: Transport,
    pub local: SocketAddr,
    pub remote: SocketAddr,
}

impl fmt::Display for ClientAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}:{}->{}", self.transport, self.remote, self.local)
    }
}

/// A relayed transport address as advertised to the client.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RelayAddr(pub SocketAddr);

/// A peer's transport address, as seen by a relay socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerAddr(pub SocketAddr);

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub fn of(addr: SocketAddr) -> Family {
        if addr.is_ipv4() {
            Family::V4
        } else {
            Family::V6
        }
    }
}

/// What a relayed transport address carries: UDP datagrams (RFC 8656) or
/// TCP connections (RFC 6062).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RelayProtocol {
    Udp,
    Tcp,
}

/// A peer connection of a TCP allocation (RFC 6062 CONNECTION-ID).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnectionId(pub u32);

/// Which relay port an allocation needs (RFC 8656 §7.2 EVEN-PORT).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PortWant {
    Any,
    Even,
    /// An even port `p`, and `p + 1` bound too and held under this
    /// RESERVATION-TOKEN for a later Allocate.
    EvenPair(u64),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RelayBindError {
    #[error("no free relay port")]
    Exhausted,
    #[error("no such reservation")]
    UnknownReservation,
}

/// Opens and closes relay sockets for the core. The driver implements it
/// with real sockets; tests with a fake. Binding is synchronous because a
/// failure must turn into 508 in the very answer to the Allocate.
///
/// Reserved sockets (the odd partner of an EVEN-PORT pair) are held by the
/// binder, not the core, because the Allocate that claims one may come
/// from another 5-tuple and so land in another shard.
pub trait RelayBinder {
    /// Binds a relay socket (two for [`PortWant::EvenPair`]) and returns
    /// its port. A TCP relay listens for peer connections, which the driver
    /// reports with [`Server::handle_incoming_peer_connection`].
    fn bind(&mut self, family: Family, protocol: RelayProtocol, want: PortWant) -> Result<u16, RelayBindError>;
    /// Takes over the socket reserved under `token` for an allocation of
    /// this core; returns its family and port.
    fn claim(&mut self, token: u64) -> Result<(Family, u16), RelayBindError>;
    /// Closes the socket reserved under `token` unless it was claimed.
    fn forget(&mut self, token: u64);
    /// Closes the relay socket on `port`.
    fn release(&mut self, family: Family, port: u16);
}

/// Settings of one core, already validated.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// SOFTWARE attribute; `None` omits it.
    pub software: Option<String>,
    /// The relay IPs advertised in XOR-RELAYED-ADDRESS, per family; a
    /// family without one cannot be allocated (440).
    pub relay_ip_v4: Option<Ipv4Addr>,
    pub relay_ip_v6: Option<Ipv6Addr>,
    pub max_allocation_lifetime: Duration,
    pub max_permissions: usize,
    pub max_channels: usize,
    pub hairpin: RelayHairpin,
    /// Bytes a second one allocation may relay, both directions together;
    /// 0: no limit.
    pub allocation_rate: u64,
}

/// How this server's own relays reach each other.
///
/// When both sides of a call are relayed by this server, each client sends
/// to the other's *advertised* relay address. Behind a 1:1 NAT (the
/// advertised address is `external_ip`) many clouds do not hairpin that
/// address back to the host, and the call fails. So a packet for one of
/// our relay ports on an advertised address goes to the matching local
/// address instead, and a packet arriving from a local address on a relay
/// port is seen as coming from the advertised one. Permissions, the peer
/// filter and XOR-PEER-ADDRESS therefore keep using the advertised
/// addresses the clients know.
#[derive(Clone, Debug)]
pub struct RelayHairpin {
    /// (advertised, local) pairs that differ; usually none.
    pairs: Vec<(IpAddr, IpAddr)>,
    ports: std::ops::RangeInclusive<u16>,
}

impl Default for RelayHairpin {
    /// No mapping at all.
    fn default() -> Self {
        // No pairs, so the port range is never consulted.
        RelayHairpin::new([], 0..=0)
    }
}

impl RelayHairpin {
    pub fn new(pairs: impl IntoIterator<Item = (IpAddr, IpAddr)>, ports: std::ops::RangeInclusive<u16>) -> Self {
        RelayHairpin {
            pairs: pairs.into_iter().filter(|(a, l)| a != l).collect(),
            ports,
        }
    }

    /// `addr` with its IP swapped for its partner, if it is one of ours on
    /// a relay port; `to_local` picks the direction.
    fn map(&self, addr: SocketAddr, to_local: bool) -> SocketAddr {
        if self.pairs.is_empty() || !self.ports.contains(&addr.port()) {
            return addr;
        }
        for &(advertised, local) in &self.pairs {
            let (from, to) = if to_local {
                (advertised, local)
            } else {
                (local, advertised)
            };
            if addr.ip() == from {
                return SocketAddr::new(to, addr.port());
            }
        }
        addr
    }

    /// Where a packet for `peer` is actually sent.
    fn outbound(&self, peer: PeerAddr) -> PeerAddr {
        PeerAddr(self.map(peer.0, true))
    }

    /// Who a packet that arrived from `peer` counts as coming from.
    fn inbound(&self, peer: PeerAddr) -> PeerAddr {
        PeerAddr(self.map(peer.0, false))
    }
}

/// Allocation counts shared by every shard (only touched on allocation
/// create and delete, never per packet), and whether new allocations are
/// taken at all: [`close`](Self::close) starts a graceful shutdown, after
/// which every Allocate gets 508 while existing allocations live on.
#[derive(Debug)]
pub struct AllocationQuota {
    max_total: AtomicUsize,
    max_per_user: AtomicUsize,
    total: AtomicUsize,
    per_user: Mutex<HashMap<String, UserShare>>,
    closed: std::sync::atomic::AtomicBool,
    /// Bytes a second all of one user's allocations may relay; 0: no limit.
    user_rate: std::sync::atomic::AtomicU64,
}

/// One user's allocations, and the byte-rate bucket they share.
#[derive(Debug)]
struct UserShare {
    count: usize,
    bucket: Option<SharedBucket>,
}

/// A byte-rate bucket shared by the allocations of one user, which may
/// live on several shards. Only touched per packet when a user rate is
/// configured, and then the lock is uncontended unless the user's
/// allocations are busy on two shards at once.
pub type SharedBucket = Arc<Mutex<TokenBucket>>;

/// The bucket of a byte rate: half a second of traffic may pass in a
/// burst, and at least 16 KiB so that any media packet fits.
pub fn rate_bucket(bytes_per_second: u64, now: Instant) -> TokenBucket {
    TokenBucket::new(bytes_per_second, (bytes_per_second / 2).max(16 * 1024), now)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QuotaExceeded {
    User,
    Total,
    /// The server is shutting down.
    Closed,
}

impl AllocationQuota {
    pub fn new(max_total: usize, max_per_user: usize) -> AllocationQuota {
        AllocationQuota {
            max_total: AtomicUsize::new(max_total),
            max_per_user: AtomicUsize::new(max_per_user),
            total: AtomicUsize::new(0),
            per_user: Mutex::new(HashMap::new()),
            closed: std::sync::atomic::AtomicBool::new(false),
            user_rate: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Allocations on every shard now.
    pub fn total(&self) -> usize {
        self.total.load(Ordering::Relaxed)
    }

    /// New limits (config reload). Allocations over them stay; only new
    /// ones are refused.
    pub fn set_limits(&self, max_total: usize, max_per_user: usize) {
        self.max_total.store(max_total, Ordering::Relaxed);
        self.max_per_user.store(max_per_user, Ordering::Relaxed);
    }

    /// Bytes a second all of one user's allocations may relay together
    /// (0: no limit); applies to users who have no allocation yet.
    pub fn set_user_rate(&self, bytes_per_second: u64) {
        self.user_rate.store(bytes_per_second, Ordering::Relaxed);
    }

    /// Refuses every new allocation from now on (graceful shutdown).
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Counts a new allocation of `user`; returns the user's byte-rate
    /// bucket, if a user rate is set.
    fn try_acquire(&self, user: &str, now: Instant) -> Result<Option<SharedBucket>, QuotaExceeded> {
        if self.is_closed() {
            return Err(QuotaExceeded::Closed);
        }
        // A poisoned lock only means another shard panicked mid-update of
        // plain counters; the counts are still meaningful.
        let mut per_user = self.per_user.lock().unwrap_or_else(|e| e.into_inner());
        let count = per_user.get(user).map_or(0, |share| share.count);
        if count >= self.max_per_user.load(Ordering::Relaxed) {
            return Err(QuotaExceeded::User);
        }
        if self
            .total
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |t| {
                (t < self.max_total.load(Ordering::Relaxed)).then_some(t + 1)
            })
            .is_err()
        {
            return Err(QuotaExceeded::Total);
        }
        let rate = self.user_rate.load(Ordering::Relaxed);
        let share = per_user.entry(user.to_owned()).or_insert_with(|| UserShare {
            count: 0,
            bucket: (rate > 0).then(|| Arc::new(Mutex::new(rate_bucket(rate, now)))),
        });
        share.count += 1;
        Ok(share.bucket.clone())
    }

    fn release(&self, user: &str) {
        let mut per_user = self.per_user.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(share) = per_user.get_mut(user) {
            share.count -= 1;
            if share.count == 0 {
                per_user.remove(user);
            }
            self.total.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// Something the driver must do.
#[derive(Debug, PartialEq, Eq)]
pub enum Effect {
    /// Send `bytes` to the client over the transport it came in on.
    Transmit { to: ClientAddr, bytes: Vec<u8> },
    /// Open a TCP connection from the TCP relay `relay` to `peer` and
    /// report with [`Server::handle_peer_connect_result`] (RFC 6062 §5.2).
    ConnectPeer {
        id: ConnectionId,
        relay: RelayAddr,
        peer: PeerAddr,
    },
    /// After the pending Transmit to `data` (the ConnectionBind answer),
    /// that connection carries raw bytes to and from peer connection `id`.
    Splice { id: ConnectionId, data: ClientAddr },
    /// Close peer connection `id`, and its data connection if it has one.
    ClosePeerConnection { id: ConnectionId },
}

/// A client's payload to forward to a peer through a relay socket.
#[derive(Debug, PartialEq, Eq)]
pub struct ToPeer<'p> {
    pub relay: RelayAddr,
    pub peer: PeerAddr,
    pub payload: &'p [u8],
}

/// A peer's datagram, framed in place, to forward to a client: send
/// `buf[range]` to `client`.
#[derive(Debug, PartialEq, Eq)]
pub struct ToClient {
    pub client: ClientAddr,
    pub range: Range<usize>,
}

/// Bytes of headroom the driver must leave before a peer's payload so that
/// the largest header (a Data indication for an IPv6 peer) fits in place.
pub const PEER_HEADROOM: usize = 48;
/// Bytes after a peer's payload for padding to a 4-byte boundary.
pub const PEER_TAILROOM: usize = 3;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    Allocation(ClientAddr),
    Reservation(u64),
    /// A peer connection not bound in time (RFC 6062 §5.2, §5.3).
    Connection(ConnectionId),
}

/// A TCP peer connection of an allocation (RFC 6062).
struct PeerConnection {
    allocation: ClientAddr,
    peer: PeerAddr,
    state: PeerConnectionState,
}

enum PeerConnectionState {
    /// Our Connect to the peer is under way; the request waits for the
    /// answer, signed with this key.
    Connecting { request: TransactionId, key: hmac::Key },
    /// Connected, waiting for a ConnectionBind until `expires`.
    Pending { expires: Instant },
    /// Spliced with this data connection.
    Bound { data: ClientAddr },
}

struct Permission {
    ip: IpAddr,
    expires: Instant,
}

struct Channel {
    number: ChannelNumber,
    peer: PeerAddr,
    /// Data flows while `now < expires`; the entry stays until
    /// `expires + CHANNEL_COOLDOWN` to keep number and peer reserved.
    expires: Instant,
}

/// An allocation's relayed addresses: at most one per family (a dual
/// allocation, RFC 8656 §7.2, has both).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Relays {
    v4: Option<RelayAddr>,
    v6: Option<RelayAddr>,
}

impl Relays {
    fn slot(&mut self, family: Family) -> &mut Option<RelayAddr> {
        match family {
            Family::V4 => &mut self.v4,
            Family::V6 => &mut self.v6,
        }
    }

    /// The relay that talks to peers of `family`.
    fn get(&self, family: Family) -> Option<RelayAddr> {
        match family {
            Family::V4 => self.v4,
            Family::V6 => self.v6,
        }
    }

    fn iter(&self) -> impl Iterator<Item = RelayAddr> {
        self.v4.into_iter().chain(self.v6)
    }

    /// Index into [`stats::FAMILIES`].
    fn family_index(&self) -> usize {
        match (self.v4, self.v6) {
            (Some(_), None) => 0,
            (None, Some(_)) => 1,
            _ => 2,
        }
    }
}

impl fmt::Display for Relays {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, relay) in self.iter().enumerate() {
            write!(f, "{}{}", if i > 0 { " " } else { "" }, relay.0)?;
        }
        Ok(())
    }
}

struct Allocation {
    relays: Relays,
    protocol: RelayProtocol,
    /// Ids of its TCP peer connections; mirrors `Server::connections`.
    connections: Vec<ConnectionId>,
    username: String,
    created: Instant,
    expires: Instant,
    /// Transaction that created it and the answer it got, so that a
    /// retransmitted Allocate gets the same answer (RFC 8656 §7.2).
    created_by: TransactionId,
    created_response: Vec<u8>,
    permissions: Vec<Permission>,
    channels: Vec<Channel>,
    to_peer: Traffic,
    to_client: Traffic,
    /// Byte rate of this allocation, both directions together.
    rate: Option<TokenBucket>,
    /// Byte rate shared by all allocations of its user.
    user_rate: Option<SharedBucket>,
}

impl Allocation {
    /// Takes `len` bytes from the allocation's and the user's byte rates,
    /// or says which one is exhausted (and takes from neither).
    fn within_rate(&mut self, len: usize, now: Instant) -> Result<(), RateLimit> {
        let n = len as u64;
        if let Some(bucket) = &mut self.rate {
            if !bucket.has(n, now) {
                return Err(RateLimit::Allocation);
            }
        }
        if let Some(shared) = &self.user_rate {
            if !shared.lock().unwrap_or_else(|e| e.into_inner()).try_take(n, now) {
                return Err(RateLimit::User);
            }
        }
        if let Some(bucket) = &mut self.rate {
            bucket.try_take(n, now);
        }
        Ok(())
    }

    fn permits(&self, ip: IpAddr, now: Instant) -> bool {
        self.permissions.iter().any(|p| p.ip == ip && p.expires > now)
    }

    fn bound_channel_for(&self, peer: PeerAddr, now: Instant) -> Option<ChannelNumber> {
        self.channels
            .iter()
            .find(|c| c.peer == peer && c.expires > now)
            .map(|c| c.number)
    }
}

/// Transaction ids for the indications the server sends (Data,
/// ConnectionAttempt): they carry no security meaning but should not
/// repeat, so an xorshift over a random seed suffices.
struct IndicationIds(u64);

impl IndicationIds {
    fn next(&mut self) -> TransactionId {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        let mut id = [0u8; 12];
        id[..8].copy_from_slice(&self.0.to_le_bytes());
        id
    }
}

/// An error answer, before it is encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Failure {
    /// 401 or 438 with REALM and a fresh NONCE (RFC 8489 §9.2.4).
    Challenge(ErrorCode),
    /// 420 with the unknown attribute types.
    UnknownAttributes([u16; 8], usize),
    Code(ErrorCode),
}

/// STUN/TURN error codes this server sends (RFC 8489 §14.8, RFC 8656 §19).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorCode {
    BadRequest,
    Unauthorized,
    Forbidden,
    UnknownAttribute,
    AllocationMismatch,
    StaleNonce,
    AddressFamilyNotSupported,
    WrongCredentials,
    UnsupportedTransport,
    PeerAddressFamilyMismatch,
    AllocationQuotaReached,
    ConnectionAlreadyExists,
    ConnectionTimeoutOrFailure,
    InsufficientCapacity,
}

impl ErrorCode {
    pub fn code(self) -> u16 {
        match self {
            ErrorCode::BadRequest => 400,
            ErrorCode::Unauthorized => 401,
            ErrorCode::Forbidden => 403,
            ErrorCode::UnknownAttribute => 420,
            ErrorCode::AllocationMismatch => 437,
            ErrorCode::StaleNonce => 438,
            ErrorCode::AddressFamilyNotSupported => 440,
            ErrorCode::WrongCredentials => 441,
            ErrorCode::UnsupportedTransport => 442,
            ErrorCode::PeerAddressFamilyMismatch => 443,
            ErrorCode::AllocationQuotaReached => 486,
            ErrorCode::ConnectionAlreadyExists => 446,
            ErrorCode::ConnectionTimeoutOrFailure => 447,
            ErrorCode::InsufficientCapacity => 508,
        }
    }

    pub fn reason(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "Bad Request",
            ErrorCode::Unauthorized => "Unauthorized",
            ErrorCode::Forbidden => "Forbidden",
            ErrorCode::UnknownAttribute => "Unknown Attribute",
            ErrorCode::AllocationMismatch => "Allocation Mismatch",
            ErrorCode::StaleNonce => "Stale Nonce",
            ErrorCode::AddressFamilyNotSupported => "Address Family not Supported",
            ErrorCode::WrongCredentials => "Wrong Credentials",
            ErrorCode::UnsupportedTransport => "Unsupported Transport Protocol",
            ErrorCode::PeerAddressFamilyMismatch => "Peer Address Family Mismatch",
            ErrorCode::AllocationQuotaReached => "Allocation Quota Reached",
            ErrorCode::ConnectionAlreadyExists => "Connection Already Exists",
            ErrorCode::ConnectionTimeoutOrFailure => "Connection Timeout or Failure",
            ErrorCode::InsufficientCapacity => "Insufficient Capacity",
        }
    }
}

impl From<ErrorCode> for Failure {
    fn from(code: ErrorCode) -> Failure {
        Failure::Code(code)
    }
}

/// A request that passed the long-term credential check.
struct Authenticated<'m> {
    username: &'m str,
    key: hmac::Key,
}

/// REQUESTED-TRANSPORT protocol numbers (RFC 8656 §18.11, RFC 6062 §6.2).
const PROTOCOL_UDP: u8 = 17;
const PROTOCOL_TCP: u8 = 6;
const FAMILY_V4: u8 = 0x01;
const FAMILY_V6: u8 = 0x02;

pub struct Server<B> {
    config: ServerConfig,
    credentials: Credentials,
    filter: PeerFilter,
    quota: Arc<AllocationQuota>,
    binder: B,
    allocations: HashMap<ClientAddr, Allocation>,
    by_relay: HashMap<RelayAddr, ClientAddr>,
    /// TCP peer connections (RFC 6062) by id; each is listed in its
    /// allocation's `connections`.
    connections: HashMap<ConnectionId, PeerConnection>,
    next_connection: u32,
    timers: BTreeSet<(Instant, Timer)>,
    effects: VecDeque<Effect>,
    /// Keyed PRF for reservation tokens, so they cannot be guessed.
    token_key: hmac::Key,
    token_counter: u64,
    indication_ids: IndicationIds,
    counters: Counters,
}

impl<B: RelayBinder> Server<B> {
    /// `seed` is 32 random bytes from the driver (the core has no RNG).
    pub fn new(
        config: ServerConfig,
        credentials: Credentials,
        filter: PeerFilter,
        quota: Arc<AllocationQuota>,
        binder: B,
        seed: [u8; 32],
    ) -> Server<B> {
        let mut xorshift = [0u8; 8];
        xorshift.copy_from_slice(&seed[..8]);
        Server {
            config,
            credentials,
            filter,
            quota,
            binder,
            allocations: HashMap::new(),
            by_relay: HashMap::new(),
            connections: HashMap::new(),
            next_connection: 0,
            timers: BTreeSet::new(),
            effects: VecDeque::new(),
            token_key: hmac::Key::new(hmac::HMAC_SHA256, &seed),
            token_counter: 0,
            indication_ids: IndicationIds(u64::from_le_bytes(xorshift) | 1),
            counters: Counters::default(),
        }
    }

    pub fn binder(&self) -> &B {
        &self.binder
    }

    pub fn has_allocation(&self, client: &ClientAddr) -> bool {
        self.allocations.contains_key(client)
    }

    /// Relayed transport addresses in use (a dual allocation has two).
    pub fn relay_count(&self) -> usize {
        self.by_relay.len()
    }

    pub fn allocation_count(&self) -> usize {
        self.allocations.len()
    }

    /// Applies a reloaded configuration: credentials, peer filter, SOFTWARE
    /// and the per-allocation limits. The relay addresses and the NAT
    /// mapping stay (they are bound to the running sockets). Existing
    /// allocations, permissions and channels are kept, also where they
    /// exceed new limits; new requests are judged by the new rules.
    pub fn reconfigure(&mut self, config: ServerConfig, credentials: Credentials, filter: PeerFilter) {
        self.config.software = config.software;
        self.config.max_allocation_lifetime = config.max_allocation_lifetime;
        self.config.max_permissions = config.max_permissions;
        self.config.max_channels = config.max_channels;
        self.config.allocation_rate = config.allocation_rate;
        self.credentials = credentials;
        self.filter = filter;
    }

    /// The counters and what is live now, for metrics. Walks every
    /// allocation, so call it now and then, not per packet.
    pub fn snapshot(&self, now: Instant) -> Snapshot {
        let mut snapshot = Snapshot {
            counters: self.counters.clone(),
            to_peer: self.counters.ended_to_peer,
            to_client: self.counters.ended_to_client,
            peer_connections: self.connections.len() as u64,
            ..Snapshot::default()
        };
        for (client, a) in &self.allocations {
            snapshot.allocations[stats::transport_index(client.transport)][a.relays.family_index()] += 1;
            snapshot.permissions += a.permissions.iter().filter(|p| p.expires > now).count() as u64;
            snapshot.channels += a.channels.iter().filter(|c| c.expires > now).count() as u64;
            snapshot.to_peer.add(a.to_peer);
            snapshot.to_client.add(a.to_client);
        }
        snapshot
    }

    /// Counts a successful answer to a request of `method` (errors are
    /// counted where they are encoded, in `encode_failure`).
    fn count_success(&mut self, method: u16) {
        self.counters.request(method_index(method), 200);
    }

    #[must_use]
    pub fn poll_effect(&mut self) -> Option<Effect> {
        self.effects.pop_front()
    }

    /// The next instant [`Server::handle_timeout`] has work to do.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.first().map(|(at, _)| *at)
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(&(at, timer)) = self.timers.first() {
            if at > now {
                break;
            }
            match timer {
                Timer::Allocation(client) => self.remove_allocation(client, EndReason::Expired, now),
                Timer::Reservation(token) => {
                    self.timers.pop_first();
                    self.binder.forget(token);
                }
                Timer::Connection(id) => {
                    self.timers.pop_first();
                    if matches!(self.connections.get(&id), Some(c) if matches!(c.state, PeerConnectionState::Pending { .. }))
                    {
                        debug!(id = id.0, "peer connection not bound in time");
                        self.remove_connection(id);
                    }
                }
            }
        }
    }

    /// A stream client's connection is gone: its allocation goes with it
    /// (RFC 8656 §3.1: a TCP/TLS allocation lives on one connection), and
    /// if it was an RFC 6062 data connection, so does its peer connection.
    pub fn handle_connection_closed(&mut self, client: ClientAddr, now: Instant) {
        self.remove_allocation(client, EndReason::ConnectionClosed, now);
        let spliced = self.connections.iter().find_map(|(id, c)| match c.state {
            PeerConnectionState::Bound { data } if data == client => Some(*id),
            _ => None,
        });
        if let Some(id) = spliced {
            self.remove_connection(id);
        }
    }

    /// A peer connected to TCP relay `relay` (RFC 6062 §5.3). If its
    /// allocation permits the peer, the client is told with a
    /// ConnectionAttempt indication and the returned id names the
    /// connection from now on; otherwise the driver closes it.
    pub fn handle_incoming_peer_connection(
        &mut self,
        relay: RelayAddr,
        peer: PeerAddr,
        now: Instant,
    ) -> Option<ConnectionId> {
        let peer = self.config.hairpin.inbound(peer);
        let client = *self.by_relay.get(&relay)?;
        let allocation = self.allocations.get(&client)?;
        if allocation.protocol != RelayProtocol::Tcp || !allocation.permits(peer.0.ip(), now) {
            debug!(%client, peer = %peer.0, "incoming peer connection refused");
            return None;
        }
        let expires = now + CONNECTION_BIND_TIMEOUT;
        let id = self.insert_connection(client, peer, PeerConnectionState::Pending { expires });
        self.timers.insert((expires, Timer::Connection(id)));
        let mut bytes = Vec::with_capacity(64);
        let mut w = MessageWriter::new(
            &mut bytes,
            Class::Indication,
            method::CONNECTION_ATTEMPT,
            self.indication_ids.next(),
        );
        w.xor_address(attr::XOR_PEER_ADDRESS, peer.0)
            .u32(attr::CONNECTION_ID, id.0);
        w.finish(None, true);
        self.effects.push_back(Effect::Transmit { to: client, bytes });
        Some(id)
    }

    /// The outcome of an [`Effect::ConnectPeer`]: answers the waiting
    /// Connect request with the CONNECTION-ID or 447 (RFC 6062 §5.2).
    pub fn handle_peer_connect_result(&mut self, id: ConnectionId, connected: bool, now: Instant) {
        let Some(connection) = self.connections.get_mut(&id) else {
            // The allocation went away meanwhile; the driver closes it.
            return;
        };
        let expires = now + CONNECTION_BIND_TIMEOUT;
        let previous = std::mem::replace(&mut connection.state, PeerConnectionState::Pending { expires });
        let PeerConnectionState::Connecting { request, key } = previous else {
            connection.state = previous;
            return;
        };
        let client = connection.allocation;
        let mut bytes = Vec::with_capacity(96);
        let class = if connected { Class::Success } else { Class::Error };
        let mut w = MessageWriter::new(&mut bytes, class, method::CONNECT, request);
        if connected {
            w.u32(attr::CONNECTION_ID, id.0);
            self.timers.insert((expires, Timer::Connection(id)));
        } else {
            let code = ErrorCode::ConnectionTimeoutOrFailure;
            w.error_code(code.code(), code.reason());
        }
        self.finish_authenticated(w, &key);
        let code = if connected {
            200
        } else {
            ErrorCode::ConnectionTimeoutOrFailure.code()
        };
        self.counters.request(method_index(method::CONNECT), code);
        self.effects.push_back(Effect::Transmit { to: client, bytes });
        if !connected {
            self.remove_connection(id);
        }
    }

    /// The peer side of connection `id` closed (or failed).
    pub fn handle_peer_connection_closed(&mut self, id: ConnectionId) {
        if self.connections.contains_key(&id) {
            self.remove_connection(id);
        }
    }

    /// Handles one packet from a client: a STUN message or ChannelData.
    pub fn handle_client_packet<'p>(&mut self, client: ClientAddr, packet: &'p [u8], now: Now) -> Option<ToPeer<'p>> {
        let mut route = match packet.first()? >> 6 {
            0b01 => self.client_channel_data(client, packet, now.mono),
            0b00 => match Message::parse(packet) {
                Ok(msg) => self.client_stun(client, &msg, now),
                Err(e) => {
                    trace!(%client, error = %e, "dropping malformed STUN message");
                    None
                }
            },
            _ => None,
        }?;
        route.peer = self.config.hairpin.outbound(route.peer);
        Some(route)
    }

    fn client_channel_data<'p>(&mut self, client: ClientAddr, packet: &'p [u8], now: Instant) -> Option<ToPeer<'p>> {
        let (number, payload) = channel_data::parse(packet).ok()?;
        let allocation = self.allocations.get_mut(&client)?;
        if allocation.protocol != RelayProtocol::Udp {
            return None;
        }
        let channel = allocation
            .channels
            .iter()
            .find(|c| c.number == number && c.expires > now)?;
        let peer = channel.peer;
        let relay = allocation.relays.get(Family::of(peer.0))?;
        if !allocation.permits(peer.0.ip(), now) {
            return None;
        }
        if let Err(limit) = allocation.within_rate(payload.len(), now) {
            self.counters.rate_limited[limit as usize].count(payload.len());
            return None;
        }
        allocation.to_peer.count(payload.len());
        Some(ToPeer { relay, peer, payload })
    }

    fn client_stun<'p>(&mut self, client: ClientAddr, msg: &Message<'p>, now: Now) -> Option<ToPeer<'p>> {
        match msg.class() {
            Class::Request => {
                if let Some(bytes) = self.request(client, msg, now) {
                    self.effects.push_back(Effect::Transmit { to: client, bytes });
                }
                None
            }
            Class::Indication if msg.method() == method::SEND => self.send_indication(client, msg, now.mono),
            // Binding indications are keepalives; responses are not ours.
            _ => None,
        }
    }

    /// Send indication (RFC 8656 §11.2): silently dropped unless it is
    /// well-formed, comes from an allocation's 5-tuple and the peer has a
    /// permission.
    fn send_indication<'p>(&mut self, client: ClientAddr, msg: &Message<'p>, now: Instant) -> Option<ToPeer<'p>> {
        if msg.unknown_required(&mut [0; 1]) > 0 {
            return None;
        }
        let allocation = self.allocations.get_mut(&client)?;
        if allocation.protocol != RelayProtocol::Udp {
            return None;
        }
        let peer = msg.xor_address(attr::XOR_PEER_ADDRESS)?.ok()?;
        let payload = msg.get(attr::DATA)?;
        if !allocation.permits(peer.ip(), now) {
            trace!(%client, %peer, "Send indication without permission dropped");
            return None;
        }
        // Permissions are per IP, but the filter also judges the port (a
        // service port on one of our own addresses), so check it here too.
        if self.filter.check(peer).is_err() {
            self.counters.peer_refusals += 1;
            trace!(%client, %peer, "Send indication to a refused peer dropped");
            return None;
        }
        let relay = allocation.relays.get(Family::of(peer))?;
        if let Err(limit) = allocation.within_rate(payload.len(), now) {
            self.counters.rate_limited[limit as usize].count(payload.len());
            return None;
        }
        allocation.to_peer.count(payload.len());
        Some(ToPeer {
            relay,
            peer: PeerAddr(peer),
            payload,
        })
    }

    /// Handles a datagram that relay socket `relay` received from `peer`.
    /// The payload is `buf[payload]`; `buf` must have [`PEER_HEADROOM`]
    /// bytes before it and [`PEER_TAILROOM`] after it. On success the
    /// header has been written in place and `buf[range]` is to be sent.
    pub fn handle_peer_packet(
        &mut self,
        relay: RelayAddr,
        peer: PeerAddr,
        buf: &mut [u8],
        payload: Range<usize>,
        now: Instant,
    ) -> Option<ToClient> {
        if payload.end > buf.len() {
            return None;
        }
        let peer = self.config.hairpin.inbound(peer);
        let client = *self.by_relay.get(&relay)?;
        let allocation = self.allocations.get_mut(&client)?;
        if !allocation.permits(peer.0.ip(), now) {
            trace!(%client, peer = %peer.0, "peer packet without permission dropped");
            return None;
        }
        let len = payload.len();
        let len16 = u16::try_from(len).ok()?;
        if let Err(limit) = allocation.within_rate(len, now) {
            self.counters.rate_limited[limit as usize].count(len);
            return None;
        }
        let (start, end) = match allocation.bound_channel_for(peer, now) {
            Some(number) => {
                // ChannelData is padded to 4 bytes on streams only
                // (RFC 8656 §12.5); over UDP the padding would be waste.
                let start = payload.start.checked_sub(channel_data::HEADER_LEN)?;
                let header = buf.get_mut(start..payload.start)?.try_into().ok()?;
                channel_data::write_header(header, number, len16);
                let end = match client.transport {
                    Transport::Udp => payload.end,
                    Transport::Tcp | Transport::Tls => payload.end + stun::padding(len),
                };
                buf.get_mut(payload.end..end)?.fill(0);
                (start, end)
            }
            None => {
                let headroom = buf.get_mut(..payload.start)?;
                let header_len = stun::write_data_indication_header(headroom, peer.0, self.indication_ids.next(), len)?;
                let end = payload.end + stun::padding(len);
                buf.get_mut(payload.end..end)?.fill(0);
                (payload.start - header_len, end)
            }
        };
        allocation.to_client.count(len);
        Some(ToClient {
            client,
            range: start..end,
        })
    }

    /// The answer to a request; `None` when it is queued by the handler
    /// itself (Connect answers later, ConnectionBind before a Splice).
    fn request(&mut self, client: ClientAddr, msg: &Message<'_>, now: Now) -> Option<Vec<u8>> {
        if msg.method() == method::BINDING {
            return Some(self.binding(client, msg));
        }
        let turn_method = matches!(
            msg.method(),
            method::ALLOCATE
                | method::REFRESH
                | method::CREATE_PERMISSION
                | method::CHANNEL_BIND
                | method::CONNECT
                | method::CONNECTION_BIND
        );
        if !turn_method {
            let failure = Failure::Code(ErrorCode::BadRequest);
            return Some(self.encode_failure(client, msg, failure, None, now.unix_secs));
        }
        let auth = match self.authenticate(client, msg, now) {
            Ok(auth) => auth,
            Err(failure) => return Some(self.encode_failure(client, msg, failure, None, now.unix_secs)),
        };
        let result = self.check_unknown(msg).and_then(|()| match msg.method() {
            method::ALLOCATE => self.allocate(client, msg, &auth, now.mono).map(Some),
            method::REFRESH => self.refresh(client, msg, &auth, now.mono).map(Some),
            method::CREATE_PERMISSION => self.create_permission(client, msg, &auth, now.mono).map(Some),
            method::CHANNEL_BIND => self.channel_bind(client, msg, &auth, now.mono).map(Some),
            method::CONNECT => self.connect(client, msg, &auth, now.mono).map(|()| None),
            _ => self.connection_bind(client, msg, &auth).map(|()| None),
        });
        match result {
            Ok(answer) => {
                if answer.is_some() {
                    self.count_success(msg.method());
                }
                answer
            }
            Err(failure) => {
                debug!(%client, method = msg.method(), ?failure, "request refused");
                Some(self.encode_failure(client, msg, failure, Some(&auth.key), now.unix_secs))
            }
        }
    }

    /// Binding (RFC 8489 §6.3): no authentication, XOR-MAPPED-ADDRESS, or
    /// MAPPED-ADDRESS for RFC 3489 clients without the magic cookie.
    fn binding(&mut self, client: ClientAddr, msg: &Message<'_>) -> Vec<u8> {
        let mut buf = Vec::with_capacity(64);
        if !msg.has_magic_cookie() {
            MessageWriter::classic_binding_success(&mut buf, msg, client.remote);
            self.count_success(msg.method());
            return buf;
        }
        let mut unknown = [0u16; 8];
        let n = msg.unknown_required(&mut unknown);
        if n > 0 {
            return self.encode_failure(client, msg, Failure::UnknownAttributes(unknown, n), None, 0);
        }
        self.count_success(msg.method());
        let mut w = MessageWriter::new(&mut buf, Class::Success, msg.method(), msg.transaction_id());
        w.xor_address(attr::XOR_MAPPED_ADDRESS, client.remote);
        if let Some(software) = &self.config.software {
            w.bytes(attr::SOFTWARE, software.as_bytes());
        }
        w.finish(None, true);
        buf
    }

    fn check_unknown(&self, msg: &Message<'_>) -> Result<(), Failure> {
        let mut unknown = [0u16; 8];
        match msg.unknown_required(&mut unknown) {
            0 => Ok(()),
            n => Err(Failure::UnknownAttributes(unknown, n)),
        }
    }

    /// Long-term credential check in the order of RFC 8489 §9.2.4.
    fn authenticate<'m>(
        &mut self,
        client: ClientAddr,
        msg: &Message<'m>,
        now: Now,
    ) -> Result<Authenticated<'m>, Failure> {
        if !msg.has_integrity() {
            return Err(Failure::Challenge(ErrorCode::Unauthorized));
        }
        let (Some(username), Some(_realm), Some(nonce)) =
            (msg.get(attr::USERNAME), msg.get(attr::REALM), msg.get(attr::NONCE))
        else {
            return Err(Failure::Code(ErrorCode::BadRequest));
        };
        if self.credentials.check_nonce(nonce, client.remote, now.unix_secs) == NonceCheck::Stale {
            self.count_auth_failure(AuthFailure::StaleNonce);
            return Err(Failure::Challenge(ErrorCode::StaleNonce));
        }
        let username = std::str::from_utf8(username).map_err(|_| Failure::Challenge(ErrorCode::Unauthorized))?;
        let keys = match self.credentials.keys_for(username, now.unix_secs) {
            Ok(keys) => keys,
            Err(e) => {
                debug!(%client, username, reason = e.reason(), "authentication failed");
                self.count_auth_failure(match e {
                    UserError::Unknown => AuthFailure::UnknownUser,
                    UserError::Expired => AuthFailure::ExpiredCredential,
                });
                return Err(Failure::Challenge(ErrorCode::Unauthorized));
            }
        };
        for long_term in keys {
            let key = stun::integrity_key(&long_term);
            if msg.verify_integrity(&key) {
                return Ok(Authenticated { username, key });
            }
        }
        debug!(%client, username, reason = "bad message integrity", "authentication failed");
        self.count_auth_failure(AuthFailure::BadIntegrity);
        Err(Failure::Challenge(ErrorCode::Unauthorized))
    }

    fn count_auth_failure(&mut self, why: AuthFailure) {
        self.counters.auth_failures[why as usize] += 1;
    }

    fn refuse(&mut self, why: Refusal) -> Failure {
        self.counters.refusals[why as usize] += 1;
        match why {
            Refusal::AllocationsPerUser => ErrorCode::AllocationQuotaReached.into(),
            _ => ErrorCode::InsufficientCapacity.into(),
        }
    }

    /// Allocate (RFC 8656 §7.2).
    fn allocate(
        &mut self,
        client: ClientAddr,
        msg: &Message<'_>,
        auth: &Authenticated<'_>,
        now: Instant,
    ) -> Result<Vec<u8>, Failure> {
        if let Some(existing) = self.allocations.get(&client) {
            // Another user on this 5-tuple must never see the creator's
            // signed answer, retransmission or not.
            if existing.username != auth.username {
                return Err(ErrorCode::WrongCredentials.into());
            }
            if existing.created_by == msg.transaction_id() {
                return Ok(existing.created_response.clone());
            }
            return Err(ErrorCode::AllocationMismatch.into());
        }
        let transport = msg.get(attr::REQUESTED_TRANSPORT).ok_or(ErrorCode::BadRequest)?;
        let protocol = match transport {
            [PROTOCOL_UDP, _, _, _] => RelayProtocol::Udp,
            [PROTOCOL_TCP, _, _, _] => RelayProtocol::Tcp,
            [_, _, _, _] => return Err(ErrorCode::UnsupportedTransport.into()),
            _ => return Err(ErrorCode::BadRequest.into()),
        };
        // RFC 6062 §5.1: a TCP allocation needs a TCP or TLS control
        // connection, and has no use for even ports, reservations or
        // DONT-FRAGMENT; we also keep it to one family.
        if protocol == RelayProtocol::Tcp
            && (client.transport == Transport::Udp
                || [
                    attr::EVEN_PORT,
                    attr::RESERVATION_TOKEN,
                    attr::DONT_FRAGMENT,
                    attr::ADDITIONAL_ADDRESS_FAMILY,
                ]
                .iter()
                .any(|a| msg.has(*a)))
        {
            return Err(ErrorCode::BadRequest.into());
        }
        let even_port = match msg.get(attr::EVEN_PORT) {
            None => None,
            Some([flags]) => Some(flags & 0x80 != 0),
            Some(_) => return Err(ErrorCode::BadRequest.into()),
        };
        let token = match msg.get(attr::RESERVATION_TOKEN) {
            None => None,
            Some(t) => Some(u64::from_be_bytes(t.try_into().map_err(|_| ErrorCode::BadRequest)?)),
        };
        let requested_family = match msg.get(attr::REQUESTED_ADDRESS_FAMILY) {
            None => None,
            Some([FAMILY_V4, _, _, _]) => Some(Family::V4),
            Some([FAMILY_V6, _, _, _]) => Some(Family::V6),
            Some([_, _, _, _]) => return Err(ErrorCode::AddressFamilyNotSupported.into()),
            Some(_) => return Err(ErrorCode::BadRequest.into()),
        };
        // ADDITIONAL-ADDRESS-FAMILY asks for a dual allocation: IPv4 and
        // IPv6 relays, one lifetime (§7.2); only IPv6 may be "additional".
        let additional_v6 = match msg.get(attr::ADDITIONAL_ADDRESS_FAMILY) {
            None => false,
            Some([FAMILY_V6, _, _, _]) => true,
            Some(_) => return Err(ErrorCode::BadRequest.into()),
        };
        // RFC 8656 §7.2: these combinations are contradictory.
        if token.is_some() && (even_port.is_some() || requested_family.is_some() || additional_v6)
            || additional_v6 && requested_family.is_some()
        {
            return Err(ErrorCode::BadRequest.into());
        }
        // A zero LIFETIME only means "delete" in a Refresh; in an Allocate
        // it is just below the default, which is what it gets (§7.2).
        let lifetime = match self.granted_lifetime(msg)? {
            zero if zero.is_zero() => DEFAULT_ALLOCATION_LIFETIME.min(self.config.max_allocation_lifetime),
            lifetime => lifetime,
        };

        let family = requested_family.unwrap_or(Family::V4);
        if token.is_none() && self.relay_ip(family).is_none() {
            return Err(ErrorCode::AddressFamilyNotSupported.into());
        }
        let user_bucket = match self.quota.try_acquire(auth.username, now) {
            Ok(bucket) => bucket,
            Err(e) => {
                return Err(self.refuse(match e {
                    QuotaExceeded::User => Refusal::AllocationsPerUser,
                    QuotaExceeded::Total => Refusal::AllocationsTotal,
                    QuotaExceeded::Closed => Refusal::Draining,
                }))
            }
        };
        let new_token = (even_port == Some(true)).then(|| self.next_token());
        let bound = match (token, even_port, new_token) {
            (Some(token), _, _) => self.binder.claim(token),
            (None, None, _) => self
                .binder
                .bind(family, protocol, PortWant::Any)
                .map(|port| (family, port)),
            (None, Some(_), None) => self
                .binder
                .bind(family, protocol, PortWant::Even)
                .map(|port| (family, port)),
            (None, Some(_), Some(new)) => self
                .binder
                .bind(family, protocol, PortWant::EvenPair(new))
                .map(|port| (family, port)),
        };
        let relay_ip = bound.ok().and_then(|(family, _)| self.relay_ip(family));
        let (Ok((_, port)), Some(relay_ip)) = (bound, relay_ip) else {
            if let Ok((family, port)) = bound {
                self.binder.release(family, port);
            }
            self.quota.release(auth.username);
            debug!(%client, ?bound, "allocation refused: no relay port");
            return Err(self.refuse(Refusal::RelayPorts));
        };
        if let Some(token) = new_token {
            self.timers
                .insert((now + RESERVATION_LIFETIME, Timer::Reservation(token)));
        }
        let first = RelayAddr(SocketAddr::new(relay_ip, port));
        let mut relays = Relays::default();
        *relays.slot(Family::of(first.0)) = Some(first);
        // The additional family is best effort: if it cannot be had, the
        // first one is still granted and ADDRESS-ERROR-CODE says why.
        let additional_error = match (additional_v6, self.relay_ip(Family::V6)) {
            (false, _) => None,
            (true, None) => Some(ErrorCode::AddressFamilyNotSupported),
            (true, Some(ip)) => match self.binder.bind(Family::V6, protocol, PortWant::Any) {
                Ok(port) => {
                    relays.v6 = Some(RelayAddr(SocketAddr::new(ip, port)));
                    None
                }
                Err(_) => Some(ErrorCode::InsufficientCapacity),
            },
        };

        let mut buf = Vec::with_capacity(160);
        let mut w = MessageWriter::new(&mut buf, Class::Success, msg.method(), msg.transaction_id());
        for relay in relays.iter() {
            w.xor_address(attr::XOR_RELAYED_ADDRESS, relay.0);
        }
        w.u32(attr::LIFETIME, lifetime.as_secs() as u32);
        if let Some(token) = new_token {
            w.bytes(attr::RESERVATION_TOKEN, &token.to_be_bytes());
        }
        if let Some(code) = additional_error {
            w.address_error_code(true, code.code(), code.reason());
        }
        w.xor_address(attr::XOR_MAPPED_ADDRESS, client.remote);
        self.finish_authenticated(w, &auth.key);

        info!(%client, user = auth.username, %relays, lifetime_s = lifetime.as_secs(), "allocation created");
        self.counters.allocations_created[stats::transport_index(client.transport)][relays.family_index()] += 1;
        self.insert_allocation(
            client,
            Allocation {
                relays,
                protocol,
                connections: Vec::new(),
                username: auth.username.to_owned(),
                created: now,
                expires: now + lifetime,
                created_by: msg.transaction_id(),
                created_response: buf.clone(),
                permissions: Vec::new(),
                channels: Vec::new(),
                to_peer: Traffic::default(),
                to_client: Traffic::default(),
                rate: (self.config.allocation_rate > 0).then(|| rate_bucket(self.config.allocation_rate, now)),
                user_rate: user_bucket,
            },
        );
        Ok(buf)
    }

    fn relay_ip(&self, family: Family) -> Option<IpAddr> {
        match family {
            Family::V4 => self.config.relay_ip_v4.map(IpAddr::V4),
            Family::V6 => self.config.relay_ip_v6.map(IpAddr::V6),
        }
    }

    fn next_token(&mut self) -> u64 {
        self.token_counter += 1;
        let tag = hmac::sign(&self.token_key, &self.token_counter.to_be_bytes());
        let mut token = [0u8; 8];
        token.copy_from_slice(&tag.as_ref()[..8]);
        u64::from_be_bytes(token)
    }

    /// RFC 8656 §7.2/§7.3: the requested lifetime capped at the maximum,
    /// never below the default; zero stays zero (Refresh deletes).
    fn granted_lifetime(&self, msg: &Message<'_>) -> Result<Duration, Failure> {
        let max = self.config.max_allocation_lifetime;
        let requested = match msg.u32_attr(attr::LIFETIME) {
            None => return Ok(DEFAULT_ALLOCATION_LIFETIME.min(max)),
            Some(Err(_)) => return Err(ErrorCode::BadRequest.into()),
            Some(Ok(0)) => return Ok(Duration::ZERO),
            Some(Ok(secs)) => Duration::from_secs(u64::from(secs)),
        };
        Ok(requested.min(max).max(DEFAULT_ALLOCATION_LIFETIME).min(max))
    }

    /// The allocation of `client` for a non-Allocate request: 437 if there
    /// is none, 441 if it belongs to another username (RFC 8656 §5).
    fn allocation_of(&mut self, client: ClientAddr, auth: &Authenticated<'_>) -> Result<&mut Allocation, Failure> {
        let allocation = self.allocations.get_mut(&client).ok_or(ErrorCode::AllocationMismatch)?;
        if allocation.username != auth.username {
            return Err(ErrorCode::WrongCredentials.into());
        }
        Ok(allocation)
    }

    /// Refresh (RFC 8656 §7.3); lifetime 0 deletes the allocation, and a
    /// retransmission then gets 437, which clients treat as success.
    fn refresh(
        &mut self,
        client: ClientAddr,
        msg: &Message<'_>,
        auth: &Authenticated<'_>,
        now: Instant,
    ) -> Result<Vec<u8>, Failure> {
        let lifetime = self.granted_lifetime(msg)?;
        let allocation = self.allocation_of(client, auth)?;
        // REQUESTED-ADDRESS-FAMILY names one family of a dual allocation:
        // deleting it (lifetime 0) keeps the other (RFC 8656 §7.3).
        let family = match msg.get(attr::REQUESTED_ADDRESS_FAMILY) {
            None => None,
            Some([FAMILY_V4, _, _, _]) => Some(Family::V4),
            Some([FAMILY_V6, _, _, _]) => Some(Family::V6),
            Some(_) => return Err(ErrorCode::BadRequest.into()),
        };
        if family.is_some_and(|f| allocation.relays.get(f).is_none()) {
            return Err(ErrorCode::PeerAddressFamilyMismatch.into());
        }
        let dual = allocation.relays.iter().count() == 2;
        if lifetime.is_zero() && dual && family.is_some() {
            let relay = family.and_then(|f| allocation.relays.slot(f).take());
            if let Some(relay) = relay {
                self.by_relay.remove(&relay);
                self.binder.release(Family::of(relay.0), relay.0.port());
                info!(%client, relay = %relay.0, "relay of one family deleted by client");
            }
        } else if lifetime.is_zero() {
            self.remove_allocation(client, EndReason::Deleted, now);
        } else {
            let old = std::mem::replace(&mut allocation.expires, now + lifetime);
            self.timers.remove(&(old, Timer::Allocation(client)));
            self.timers.insert((now + lifetime, Timer::Allocation(client)));
        }
        let mut buf = Vec::with_capacity(64);
        let mut w = MessageWriter::new(&mut buf, Class::Success, msg.method(), msg.transaction_id());
        w.u32(attr::LIFETIME, lifetime.as_secs() as u32);
        self.finish_authenticated(w, &auth.key);
        Ok(buf)
    }

    /// Checks a peer address for an allocation: it needs a relay of its
    /// family (443: a relay never crosses families) and the peer filter
    /// must allow it (403).
    fn check_peer(&mut self, relays: Relays, peer: SocketAddr) -> Result<(), Failure> {
        if relays.get(Family::of(peer)).is_none() {
            return Err(ErrorCode::PeerAddressFamilyMismatch.into());
        }
        self.filter.check(peer).map_err(|refusal| {
            debug!(%peer, reason = refusal.reason(), "peer refused");
            self.counters.peer_refusals += 1;
            Failure::Code(ErrorCode::Forbidden)
        })
    }

    /// CreatePermission (RFC 8656 §9): all XOR-PEER-ADDRESSes are checked
    /// before any is installed, so a refused one installs nothing.
    fn create_permission(
        &mut self,
        client: ClientAddr,
        msg: &Message<'_>,
        auth: &Authenticated<'_>,
        now: Instant,
    ) -> Result<Vec<u8>, Failure> {
        let relays = self.allocation_of(client, auth)?.relays;
        let mut peers: Vec<IpAddr> = Vec::new();
        for peer in msg.xor_addresses(attr::XOR_PEER_ADDRESS) {
            let peer = peer.map_err(|_| ErrorCode::BadRequest)?;
            self.check_peer(relays, peer)?;
            if !peers.contains(&peer.ip()) {
                peers.push(peer.ip());
            }
        }
        if peers.is_empty() {
            return Err(ErrorCode::BadRequest.into());
        }
        let max = self.config.max_permissions;
        let allocation = self.allocation_of(client, auth)?;
        allocation.permissions.retain(|p| p.expires > now);
        let new = peers
            .iter()
            .filter(|ip| !allocation.permissions.iter().any(|p| p.ip == **ip))
            .count();
        if allocation.permissions.len() + new > max {
            return Err(self.refuse(Refusal::Permissions));
        }
        for ip in peers {
            install_permission(allocation, ip, now);
        }
        Ok(self.empty_success(msg, &auth.key))
    }

    /// ChannelBind (RFC 8656 §12.2): binds or refreshes a channel, and
    /// installs or refreshes the peer's permission with it.
    fn channel_bind(
        &mut self,
        client: ClientAddr,
        msg: &Message<'_>,
        auth: &Authenticated<'_>,
        now: Instant,
    ) -> Result<Vec<u8>, Failure> {
        let allocation = self.allocation_of(client, auth)?;
        if allocation.protocol != RelayProtocol::Udp {
            return Err(ErrorCode::BadRequest.into());
        }
        let relays = allocation.relays;
        let number = match msg.get(attr::CHANNEL_NUMBER) {
            Some([a, b, _, _]) => ChannelNumber::new(u16::from_be_bytes([*a, *b])).ok_or(ErrorCode::BadRequest)?,
            _ => return Err(ErrorCode::BadRequest.into()),
        };
        let peer = match msg.xor_address(attr::XOR_PEER_ADDRESS) {
            Some(Ok(peer)) => PeerAddr(peer),
            _ => return Err(ErrorCode::BadRequest.into()),
        };
        self.check_peer(relays, peer.0)?;
        let (max_channels, max_permissions) = (self.config.max_channels, self.config.max_permissions);
        let allocation = self.allocation_of(client, auth)?;
        allocation.channels.retain(|c| c.expires + CHANNEL_COOLDOWN > now);
        let by_number = allocation.channels.iter().position(|c| c.number == number);
        let by_peer = allocation.channels.iter().position(|c| c.peer == peer);
        let index = match (by_number, by_peer) {
            (Some(i), Some(j)) if i == j => Some(i),
            (None, None) => None,
            // The number is bound to another peer or the peer to another
            // number (possibly still cooling down): §12.2 says 400.
            _ => {
                debug!(%client, %number, peer = %peer.0, "channel number or peer already bound otherwise");
                return Err(ErrorCode::BadRequest.into());
            }
        };
        allocation.permissions.retain(|p| p.expires > now);
        let needs_permission = !allocation.permissions.iter().any(|p| p.ip == peer.0.ip());
        let channels_full = index.is_none() && allocation.channels.len() >= max_channels;
        if channels_full || needs_permission && allocation.permissions.len() >= max_permissions {
            return Err(self.refuse(match channels_full {
                true => Refusal::Channels,
                false => Refusal::Permissions,
            }));
        }
        let expires = now + CHANNEL_LIFETIME;
        match index {
            Some(i) => allocation.channels[i].expires = expires,
            None => allocation.channels.push(Channel { number, peer, expires }),
        }
        install_permission(allocation, peer.0.ip(), now);
        Ok(self.empty_success(msg, &auth.key))
    }

    /// Connect (RFC 6062 §5.2): asks the driver to connect the TCP relay
    /// to a permitted peer; the answer follows the connect's outcome.
    fn connect(
        &mut self,
        client: ClientAddr,
        msg: &Message<'_>,
        auth: &Authenticated<'_>,
        now: Instant,
    ) -> Result<(), Failure> {
        let allocation = self.allocation_of(client, auth)?;
        if allocation.protocol != RelayProtocol::Tcp {
            return Err(ErrorCode::BadRequest.into());
        }
        let relays = allocation.relays;
        let peer = match msg.xor_address(attr::XOR_PEER_ADDRESS) {
            Some(Ok(peer)) => PeerAddr(peer),
            _ => return Err(ErrorCode::BadRequest.into()),
        };
        self.check_peer(relays, peer.0)?;
        let allocation = self.allocation_of(client, auth)?;
        // RFC 6062 leans on TURN permissions: connecting out needs one,
        // just like sending a datagram would.
        if !allocation.permits(peer.0.ip(), now) {
            return Err(ErrorCode::Forbidden.into());
        }
        let connected = |a: &Allocation| {
            a.connections
                .iter()
                .any(|id| self.connections.get(id).is_some_and(|c| c.peer == peer))
        };
        if self.allocations.get(&client).is_some_and(connected) {
            return Err(ErrorCode::ConnectionAlreadyExists.into());
        }
        let relay = relays
            .get(Family::of(peer.0))
            .ok_or(ErrorCode::PeerAddressFamilyMismatch)?;
        let state = PeerConnectionState::Connecting {
            request: msg.transaction_id(),
            key: auth.key.clone(),
        };
        let id = self.insert_connection(client, peer, state);
        let wire_peer = self.config.hairpin.outbound(peer);
        self.effects.push_back(Effect::ConnectPeer {
            id,
            relay,
            peer: wire_peer,
        });
        Ok(())
    }

    /// ConnectionBind (RFC 6062 §5.4), on a new connection of the same
    /// user: that connection becomes the data connection of a pending
    /// peer connection.
    fn connection_bind(
        &mut self,
        client: ClientAddr,
        msg: &Message<'_>,
        auth: &Authenticated<'_>,
    ) -> Result<(), Failure> {
        if client.transport == Transport::Udp || self.allocations.contains_key(&client) {
            return Err(ErrorCode::BadRequest.into());
        }
        let id = match msg.u32_attr(attr::CONNECTION_ID) {
            Some(Ok(id)) => ConnectionId(id),
            _ => return Err(ErrorCode::BadRequest.into()),
        };
        let connection = self.connections.get_mut(&id).ok_or(ErrorCode::BadRequest)?;
        let PeerConnectionState::Pending { expires } = connection.state else {
            return Err(ErrorCode::BadRequest.into());
        };
        let owner = self
            .allocations
            .get(&connection.allocation)
            .map(|a| a.username.as_str());
        if owner != Some(auth.username) {
            return Err(ErrorCode::WrongCredentials.into());
        }
        connection.state = PeerConnectionState::Bound { data: client };
        self.timers.remove(&(expires, Timer::Connection(id)));
        let answer = self.empty_success(msg, &auth.key);
        self.count_success(msg.method());
        // The answer goes out framed; the splice starts right after it.
        self.effects.push_back(Effect::Transmit {
            to: client,
            bytes: answer,
        });
        self.effects.push_back(Effect::Splice { id, data: client });
        info!(%client, id = id.0, "data connection bound");
        Ok(())
    }

    fn insert_connection(&mut self, client: ClientAddr, peer: PeerAddr, state: PeerConnectionState) -> ConnectionId {
        // Ids are never reused while the server runs (2^32 connections).
        self.next_connection = self.next_connection.wrapping_add(1);
        let id = ConnectionId(self.next_connection);
        self.connections.insert(
            id,
            PeerConnection {
                allocation: client,
                peer,
                state,
            },
        );
        if let Some(allocation) = self.allocations.get_mut(&client) {
            allocation.connections.push(id);
        }
        id
    }

    /// Forgets peer connection `id` and tells the driver to close it.
    fn remove_connection(&mut self, id: ConnectionId) {
        let Some(connection) = self.connections.remove(&id) else {
            return;
        };
        if let PeerConnectionState::Pending { expires } = connection.state {
            self.timers.remove(&(expires, Timer::Connection(id)));
        }
        if let Some(allocation) = self.allocations.get_mut(&connection.allocation) {
            allocation.connections.retain(|c| *c != id);
        }
        self.effects.push_back(Effect::ClosePeerConnection { id });
    }

    fn empty_success(&self, msg: &Message<'_>, key: &hmac::Key) -> Vec<u8> {
        let mut buf = Vec::with_capacity(64);
        let w = MessageWriter::new(&mut buf, Class::Success, msg.method(), msg.transaction_id());
        self.finish_authenticated(w, key);
        buf
    }

    /// SOFTWARE, MESSAGE-INTEGRITY, FINGERPRINT: the tail of every answer
    /// to an authenticated request.
    fn finish_authenticated(&self, mut w: MessageWriter<'_>, key: &hmac::Key) {
        if let Some(software) = &self.config.software {
            w.bytes(attr::SOFTWARE, software.as_bytes());
        }
        w.finish(Some(key), true);
    }

    /// Encodes an error. Unauthenticated errors carry no SOFTWARE so that
    /// an answer to a spoofed source stays close to the request's size.
    /// The error answer to `msg`, counted by method and code.
    fn encode_failure(
        &mut self,
        client: ClientAddr,
        msg: &Message<'_>,
        failure: Failure,
        key: Option<&hmac::Key>,
        unix_secs: u64,
    ) -> Vec<u8> {
        let code = match failure {
            Failure::Challenge(code) | Failure::Code(code) => code,
            Failure::UnknownAttributes(..) => ErrorCode::UnknownAttribute,
        };
        self.counters.request(method_index(msg.method()), code.code());
        let mut buf = Vec::with_capacity(96);
        let mut w = MessageWriter::new(&mut buf, Class::Error, msg.method(), msg.transaction_id());
        match failure {
            Failure::Challenge(code) => {
                w.error_code(code.code(), code.reason())
                    .bytes(attr::REALM, self.credentials.realm().as_bytes())
                    .bytes(attr::NONCE, &self.credentials.make_nonce(client.remote, unix_secs));
            }
            Failure::UnknownAttributes(types, n) => {
                let code = ErrorCode::UnknownAttribute;
                w.error_code(code.code(), code.reason()).unknown_attributes(&types[..n]);
            }
            Failure::Code(code) => {
                w.error_code(code.code(), code.reason());
            }
        }
        match key {
            Some(key) => self.finish_authenticated(w, key),
            None => w.finish(None, true),
        }
        buf
    }

    fn insert_allocation(&mut self, client: ClientAddr, allocation: Allocation) {
        self.timers.insert((allocation.expires, Timer::Allocation(client)));
        for relay in allocation.relays.iter() {
            let previous = self.by_relay.insert(relay, client);
            debug_assert!(previous.is_none(), "relay address handed out twice");
        }
        let previous = self.allocations.insert(client, allocation);
        debug_assert!(previous.is_none(), "two allocations for one 5-tuple");
    }

    fn remove_allocation(&mut self, client: ClientAddr, why: EndReason, now: Instant) {
        let Some(a) = self.allocations.remove(&client) else {
            return;
        };
        self.counters.allocations_ended[why as usize][stats::transport_index(client.transport)]
            [a.relays.family_index()] += 1;
        self.counters.ended_to_peer.add(a.to_peer);
        self.counters.ended_to_client.add(a.to_client);
        let removed = self.timers.remove(&(a.expires, Timer::Allocation(client)));
        debug_assert!(removed, "allocation without its timer");
        for relay in a.relays.iter() {
            let removed = self.by_relay.remove(&relay);
            debug_assert_eq!(removed, Some(client));
            self.binder.release(Family::of(relay.0), relay.0.port());
        }
        for id in a.connections {
            self.remove_connection(id);
        }
        self.quota.release(&a.username);
        info!(
            %client,
            user = a.username,
            relays = %a.relays,
            why = stats::END_REASONS[why as usize],
            age_s = now.saturating_duration_since(a.created).as_secs(),
            packets_to_peer = a.to_peer.packets,
            bytes_to_peer = a.to_peer.bytes,
            packets_to_client = a.to_client.packets,
            bytes_to_client = a.to_client.bytes,
            "allocation deleted"
        );
    }
}

fn install_permission(allocation: &mut Allocation, ip: IpAddr, now: Instant) {
    let expires = now + PERMISSION_LIFETIME;
    match allocation.permissions.iter_mut().find(|p| p.ip == ip) {
        Some(p) => p.expires = expires,
        None => allocation.permissions.push(Permission { ip, expires }),
    }
}

/// Index of `method` in [`stats::METHODS`].
fn method_index(m: u16) -> usize {
    match m {
        method::BINDING => 0,
        method::ALLOCATE => 1,
        method::REFRESH => 2,
        method::CREATE_PERMISSION => 3,
        method::CHANNEL_BIND => 4,
        method::CONNECT => 5,
        method::CONNECTION_BIND => 6,
        _ => 7,
    }
}
