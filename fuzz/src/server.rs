//! The `server_client_packet` target: a [`Server`] driven by a byte
//! program.
//!
//! # Program format
//!
//! A sequence of operations, each `op len_hi len_lo body[len]` (a short
//! last body takes what is left). The `op` byte:
//!
//! * bits 0–1: which of three clients (3 counts as 0);
//! * bits 2–4: the action, see [`action`];
//! * bits 5–7: how far time moves before the action, see [`ADVANCE`].
//!
//! A *signed* request body is `method_index flags attributes…`: the harness
//! writes a request of [`METHODS`]`[method_index % 8]` with the attributes
//! decoded by [`Harness::write_attrs`], then USERNAME, REALM, the NONCE the
//! server last gave that client (asking for one first if there is none),
//! MESSAGE-INTEGRITY and, if flagged, FINGERPRINT; see [`flag`]. A stale
//! nonce (438) is replaced and the request re-signed once.
//!
//! A *peer* body is `relay_selector peer_selector payload…`.
//!
//! # Checks
//!
//! After each operation every effect is drained: each Transmit goes to the
//! client that spoke (a Binding success with RFC 5780's RESPONSE-PORT to
//! that port of its IP), and there is exactly one per request and none
//! otherwise; it parses as STUN (or is a well-formed RFC 3489 answer to a
//! classic request) and echoes method and transaction id; an
//! authenticated answer ends with FINGERPRINT, an unauthenticated one only
//! if the request did, and is at most twice the request's size (but for
//! a challenge over a stream carrying RFC 8489's offer: streams cannot be
//! spoofed).
//! Authenticated answers verify under the key the harness signed with, and
//! correct credentials never earn 401 unless the failure limits refused a
//! request since. Relayed data goes
//! to a peer the filter allows, from a relay the server handed out;
//! [`ToClient`] ranges lie in the buffer and frame the payload as valid
//! ChannelData or a valid Data indication. Between operations: the quota's
//! count equals the number of allocations, the fake binder holds exactly
//! one port per allocation plus one per unclaimed reservation, and after
//! `handle_timeout(now)` no timer is due.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::sync::Arc;
use std::time::{Duration, Instant};

use turnpike::proto::addr::{ClientAddr, Family, PeerAddr, RelayAddr, RelayProtocol, Transport};
use turnpike::proto::auth::{self, Credentials, CredentialsConfig};
use turnpike::proto::channel_data;
use turnpike::proto::live_relays::LiveRelays;
use turnpike::proto::peer_filter::PeerFilter;
use turnpike::proto::quota::AllocationQuota;
use turnpike::proto::server::{Effect, Server, ServerConfig, ToPeer, PEER_HEADROOM, PEER_TAILROOM};
use turnpike::proto::stats;
use turnpike::proto::stun::{self, attr, method, Class, Message, MessageWriter, TransactionId};
use turnpike::proto::testkit::{self, Cred, FakeBinder};
use turnpike::proto::Now;

use crate::filter::{v4_rules, RELAY_PORTS, RELAY_V4, RELAY_V6, SERVICE_PORT};
use crate::hex;
use crate::message::{self, KNOWN_TYPES, XOR_TYPES};

pub const REALM: &str = "fuzz.example";
pub const USER: &str = "alice";
pub const PASSWORD: &str = "alice-pw";
pub const SECRET: &[u8] = b"fuzz-shared-secret";
pub const SOFTWARE: &str = "turnpike-fuzz";
pub const UNIX_START: u64 = 1_700_000_000;
pub const NONCE_TTL: Duration = Duration::from_secs(3600);
pub const MAX_LIFETIME: Duration = Duration::from_secs(3600);
/// Small limits, so the fuzzer reaches them.
pub const MAX_PERMISSIONS: usize = 4;
pub const MAX_CHANNELS: usize = 3;
pub const MAX_TOTAL_ALLOCATIONS: usize = 2;
pub const MAX_ALLOCATIONS_PER_USER: usize = 2;

/// Actions (bits 2–4 of the op byte); 0/1, 2/3/7 are synonyms so that the
/// common actions are more likely.
pub mod action {
    pub const RAW: u8 = 0;
    pub const SIGNED: u8 = 2;
    pub const PEER: u8 = 4;
    pub const TIMEOUT: u8 = 5;
    pub const RAW_THEN_TIMEOUT: u8 = 6;
}

/// Flags of a signed request (its second body byte).
pub mod flag {
    /// Sign as an ephemeral (shared-secret) user instead of the
    /// configured one.
    pub const EPHEMERAL: u8 = 0x01;
    pub const FINGERPRINT: u8 = 0x02;
    pub const WRONG_PASSWORD: u8 = 0x04;
    pub const NO_REALM: u8 = 0x08;
    /// Reuse the client's previous transaction id.
    pub const RETRANSMIT: u8 = 0x10;
    /// Not a request: a Send indication with the attributes, unsigned.
    pub const SEND_INDICATION: u8 = 0x20;
    /// An ephemeral username whose expiry has passed.
    pub const EXPIRED: u8 = 0x40;
    /// Do not ask for a nonce first; use a bogus one if none is known.
    pub const NO_NONCE_FETCH: u8 = 0x80;
}

/// How far time moves before an operation (bits 5–7 of the op byte).
pub const ADVANCE: [Duration; 8] = [
    Duration::ZERO,
    Duration::ZERO,
    Duration::from_millis(1),
    Duration::from_secs(1),
    Duration::from_secs(30),
    Duration::from_secs(300),
    Duration::from_secs(600),
    Duration::from_secs(3601),
];

/// Methods a signed request can have.
pub const METHODS: [u16; 8] = [
    method::ALLOCATE,
    method::REFRESH,
    method::CREATE_PERMISSION,
    method::CHANNEL_BIND,
    method::CONNECT,
    method::CONNECTION_BIND,
    method::BINDING,
    0x00D, // not a method this server knows: 400
];

/// Peers a selector byte picks from (below 0x80, or when no relay address
/// is known yet); from 0x80 up it picks one of the relays handed out.
pub const PEERS: [SocketAddr; 12] = [
    v4(8, 8, 8, 8, 53),
    v4(1, 1, 1, 1, 443),
    v4(127, 0, 0, 1, 5000),
    v4(10, 0, 0, 1, 1234),
    v4(10, 1, 2, 3, 9),
    v4(169, 254, 169, 254, 80),
    SocketAddr::V4(SocketAddrV4::new(RELAY_V4, 50_001)),
    SocketAddr::V4(SocketAddrV4::new(RELAY_V4, SERVICE_PORT)),
    v4(1, 2, 3, 4, 7),
    v6([0x2001, 0x4860, 0x4860, 0, 0, 0, 0, 0x8888], 53),
    v6([0, 0, 0, 0, 0, 0xffff, 0x0808, 0x0404], 53),
    SocketAddr::V6(SocketAddrV6::new(RELAY_V6, 50_002, 0, 0)),
];

const fn v4(a: u8, b: u8, c: u8, d: u8, port: u16) -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(a, b, c, d), port))
}

const fn v6(s: [u16; 8], port: u16) -> SocketAddr {
    SocketAddr::V6(SocketAddrV6::new(
        Ipv6Addr::new(s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7]),
        port,
        0,
        0,
    ))
}

/// The three clients: two ports of one IPv4 host over UDP, and an IPv6
/// client over TCP.
pub fn clients() -> [ClientAddr; 3] {
    let local4 = SocketAddr::from(([192, 0, 2, 1], SERVICE_PORT));
    let local6 = SocketAddr::V6(SocketAddrV6::new(RELAY_V6, SERVICE_PORT, 0, 0));
    [
        ClientAddr {
            transport: Transport::Udp,
            local: local4,
            remote: SocketAddr::from(([198, 51, 100, 1], 40_000)),
        },
        ClientAddr {
            transport: Transport::Udp,
            local: local4,
            remote: SocketAddr::from(([198, 51, 100, 1], 40_001)),
        },
        ClientAddr {
            transport: Transport::Tcp,
            local: local6,
            remote: v6([0x2001, 0xdb8, 5, 0, 0, 0, 0, 9], 50_000),
        },
    ]
}

// ---------------------------------------------------------------------
// The harness

/// A server with one configured user and one shared secret, the clock it
/// is driven with, and what the harness learnt from its answers.
pub struct Harness {
    pub server: Server<FakeBinder>,
    quota: Arc<AllocationQuota>,
    filter: PeerFilter,
    /// The server's live relays, which the filter check of a relayed
    /// packet reads as the server does.
    live: Arc<LiveRelays>,
    clients: [ClientAddr; 3],
    start: Instant,
    elapsed: Duration,
    nonces: [Option<Vec<u8>>; 3],
    last_id: [TransactionId; 3],
    ids: u64,
    /// Every relay address the server has handed out.
    relays: Vec<SocketAddr>,
    /// Every RESERVATION-TOKEN the server has handed out.
    tokens: Vec<[u8; 8]>,
    /// Requests the server refused for too many failures, so far.
    rate_limited_seen: u64,
    pub stats: Stats,
}

/// What a run reached, for tests of the harness and seeds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Success answers to Allocate, Refresh, CreatePermission, ChannelBind.
    pub allocated: usize,
    pub refreshed: usize,
    pub permitted: usize,
    pub bound: usize,
    /// Payloads relayed client to peer, and peer to client as ChannelData
    /// and as Data indications.
    pub to_peer: usize,
    pub channel_data_to_client: usize,
    pub indications_to_client: usize,
    /// Error answers by code.
    pub errors: std::collections::BTreeMap<u16, usize>,
}

impl Stats {
    /// Adds `other`'s counts to these.
    pub fn add(&mut self, other: &Stats) {
        self.allocated += other.allocated;
        self.refreshed += other.refreshed;
        self.permitted += other.permitted;
        self.bound += other.bound;
        self.to_peer += other.to_peer;
        self.channel_data_to_client += other.channel_data_to_client;
        self.indications_to_client += other.indications_to_client;
        for (code, n) in &other.errors {
            *self.errors.entry(*code).or_default() += n;
        }
    }
}

/// What a signed request was signed with.
struct Signer {
    cred: Cred,
    /// Correct credentials, a nonce from the server and nothing in the
    /// attributes that could spoil the check: the answer must not be 401.
    should_authenticate: bool,
}

/// The parts of an answer the signing logic needs.
struct Answer {
    class: Class,
    code: Option<u16>,
}

impl Default for Harness {
    fn default() -> Self {
        Self::new()
    }
}

impl Harness {
    pub fn new() -> Harness {
        let credentials = Credentials::new(CredentialsConfig {
            users: vec![(USER.to_owned(), auth::long_term_key(USER, REALM, PASSWORD))],
            // RFC 8489's offer, SHA-256 keys and USERHASH on, so that
            // their parsing and the size of an offering 401 are fuzzed.
            users_sha256: vec![(USER.to_owned(), auth::sha256_key(USER, REALM, PASSWORD))],
            password_algorithms: vec![auth::PasswordAlgorithm::Sha256, auth::PasswordAlgorithm::Md5],
            userhash: true,
            secrets: vec![SECRET.to_vec()],
            nonce_ttl: NONCE_TTL,
            nonce_key: [0x42; 32],
            ..testkit::core_credentials(REALM)
        });
        let config = ServerConfig {
            software: Some(SOFTWARE.to_owned()),
            max_allocation_lifetime: MAX_LIFETIME,
            max_permissions: MAX_PERMISSIONS,
            max_channels: MAX_CHANNELS,
            ..testkit::core_config()
        };
        let quota = Arc::new(AllocationQuota::new(MAX_TOTAL_ALLOCATIONS, MAX_ALLOCATIONS_PER_USER));
        let filter = PeerFilter::new(v4_rules());
        let live = Arc::new(LiveRelays::default());
        let server = Server::new(
            config,
            credentials,
            filter.clone(),
            quota.clone(),
            live.clone(),
            FakeBinder::new(RELAY_PORTS),
            [7; 32],
        );
        // The only clock reading: a base instant; the program moves time.
        #[allow(clippy::disallowed_methods)]
        let start = Instant::now();
        Harness {
            server,
            quota,
            filter,
            live,
            clients: clients(),
            start,
            elapsed: Duration::ZERO,
            nonces: Default::default(),
            last_id: [[0; 12]; 3],
            ids: 0,
            relays: Vec::new(),
            tokens: Vec::new(),
            rate_limited_seen: 0,
            stats: Stats::default(),
        }
    }

    pub fn now(&self) -> Now {
        Now {
            mono: self.start + self.elapsed,
            unix_secs: UNIX_START + self.elapsed.as_secs(),
        }
    }

    /// Runs a whole program (the fuzz input) on a fresh server.
    pub fn run(data: &[u8]) {
        Harness::run_program(data);
    }

    /// [`Harness::run`], returning the harness for inspection.
    pub fn run_program(data: &[u8]) -> Harness {
        let mut h = Harness::new();
        let mut rest = data;
        while let Some((&op, tail)) = rest.split_first() {
            let (len, tail) = match tail {
                [hi, lo, tail @ ..] => (usize::from(u16::from_be_bytes([*hi, *lo])), tail),
                _ => (tail.len(), tail),
            };
            let (body, tail) = tail.split_at(len.min(tail.len()));
            rest = tail;
            h.step(op, body);
        }
        h
    }

    /// Relay addresses handed out so far.
    pub fn relays(&self) -> &[SocketAddr] {
        &self.relays
    }

    /// RESERVATION-TOKENs handed out so far.
    pub fn tokens(&self) -> &[[u8; 8]] {
        &self.tokens
    }

    pub fn step(&mut self, op: u8, body: &[u8]) {
        let client = usize::from(op & 3) % 3;
        self.elapsed += ADVANCE[usize::from(op >> 5)];
        match (op >> 2) & 7 {
            0 | 1 => {
                self.client_packet(client, body, None);
            }
            2 | 3 | 7 => self.signed(client, body),
            action::PEER => self.peer_packet(body),
            action::TIMEOUT => self.timeout(body.first().is_some_and(|b| b & 1 == 1)),
            _ => {
                self.client_packet(client, body, None);
                self.timeout(false);
            }
        }
        self.check_invariants();
    }

    fn check_invariants(&self) {
        let allocations = self.server.allocation_count();
        assert!(allocations <= MAX_TOTAL_ALLOCATIONS.min(self.clients.len()));
        assert_eq!(
            self.quota.total(),
            allocations + self.quota.reservations(),
            "quota count drifted from the allocations and reservations"
        );
        let binder = self.server.binder().state();
        let relays = self.server.relay_count();
        assert!(
            allocations <= relays && relays <= 2 * allocations,
            "one or two relays per allocation"
        );
        assert_eq!(
            binder.bound.len(),
            relays + binder.reserved.len(),
            "relay ports bound: not one per relay address plus one per reservation"
        );
    }

    fn next_id(&mut self) -> TransactionId {
        self.ids += 1;
        let mut id = [0u8; 12];
        id[..8].copy_from_slice(&self.ids.to_be_bytes());
        id[8..].copy_from_slice(b"fuzz");
        id
    }

    /// A peer address: one of [`PEERS`], or from 0x80 one of the relays.
    fn peer(&self, selector: u8) -> SocketAddr {
        let i = usize::from(selector);
        if selector >= 0x80 && !self.relays.is_empty() {
            self.relays[i % self.relays.len()]
        } else {
            PEERS[i % PEERS.len()]
        }
    }

    /// Sends `packet` from client `c` and checks what comes back.
    /// Returns the parsed answer to a request.
    fn client_packet(&mut self, c: usize, packet: &[u8], signer: Option<&Signer>) -> Option<Answer> {
        let client = self.clients[c];
        let now = self.now();
        let to_peer = self.server.handle_client_packet(client, packet, now);
        if let Some(to_peer) = to_peer {
            self.check_to_peer(&to_peer, packet);
        }
        let answers = self.drain();
        for (to, bytes) in &answers {
            let port = match to.remote.port() == client.remote.port() {
                true => None,
                // RFC 5780: a Binding success goes to RESPONSE-PORT.
                false => Some(to.remote.port()),
            };
            assert_eq!(port, response_port(packet).filter(|_| port.is_some()));
            let to = ClientAddr {
                remote: client.remote,
                ..*to
            };
            assert_eq!(to, client, "answer to {} went elsewhere", hex(bytes));
        }
        let request = Message::parse(packet).ok().filter(|m| m.class() == Class::Request);
        let Some(request) = request else {
            assert!(
                answers.is_empty(),
                "answered a packet that is no request: {}",
                hex(packet)
            );
            return None;
        };
        assert_eq!(answers.len(), 1, "not exactly one answer to request {}", hex(packet));
        let bytes = &answers[0].1;
        if !request.has_magic_cookie() {
            return Some(check_classic_answer(&request, bytes, client.remote));
        }
        Some(self.check_answer(c, &request, bytes, signer))
    }

    fn drain(&mut self) -> Vec<(ClientAddr, Vec<u8>)> {
        let mut out = Vec::new();
        while let Some(effect) = self.server.poll_effect() {
            match effect {
                Effect::Transmit { to, bytes } => out.push((to, bytes)),
                // Complete an RFC 6062 Connect at once, succeeding or
                // failing by the id's parity, so its answer is checked too.
                Effect::ConnectPeer { id, .. } => {
                    let now = self.now().mono;
                    let connected = id.0 % 2 == 0;
                    let kept = self.server.handle_peer_connect_result(id, connected, now);
                    assert_eq!(kept, connected, "a connect the core waits for is kept if it connected");
                }
                Effect::Splice { .. } | Effect::ClosePeerConnection { .. } => {}
            }
        }
        out
    }

    fn check_answer(&mut self, c: usize, request: &Message<'_>, bytes: &[u8], signer: Option<&Signer>) -> Answer {
        let client = self.clients[c];
        let msg = Message::parse(bytes).unwrap_or_else(|e| {
            panic!(
                "the server's answer does not parse ({e}): {}\nrequest: {}",
                hex(bytes),
                hex(request.bytes())
            )
        });
        message::exercise(&msg);
        assert!(
            matches!(msg.class(), Class::Success | Class::Error),
            "answered with {:?}",
            msg.class()
        );
        assert_eq!(msg.method(), request.method(), "answer of another method");
        assert_eq!(msg.transaction_id(), request.transaction_id());
        assert!(msg.has_magic_cookie());
        // Authenticated answers always end in FINGERPRINT; unauthenticated
        // ones only when the request did, and within twice its size.
        if msg.has_integrity() {
            assert!(msg.has_fingerprint(), "answer without FINGERPRINT: {}", hex(bytes));
        } else {
            assert_eq!(
                msg.has_fingerprint(),
                request.has_fingerprint(),
                "FINGERPRINT not mirrored: {}",
                hex(bytes)
            );
            // Over a stream, which cannot be spoofed, a challenge may carry
            // RFC 8489's offer beyond that (docs/turn.md).
            let offer_on_a_stream = client.transport.is_stream() && msg.has(attr::PASSWORD_ALGORITHMS);
            assert!(
                offer_on_a_stream || bytes.len() <= 2 * request.bytes().len(),
                "unauthenticated answer of {} bytes to {}: {}",
                bytes.len(),
                request.bytes().len(),
                hex(bytes)
            );
        }

        let code = msg.get(attr::ERROR_CODE).map(|v| {
            assert!(v.len() >= 4, "short ERROR-CODE");
            assert!(
                msg.has_integrity() || v.len() == 4,
                "unauthenticated error with a reason phrase"
            );
            assert_eq!(v[..2], [0, 0]);
            assert!((3..=6).contains(&v[2]) && v[3] < 100, "bad ERROR-CODE {v:?}");
            assert!(std::str::from_utf8(&v[4..]).is_ok());
            u16::from(v[2]) * 100 + u16::from(v[3])
        });
        assert_eq!(code.is_some(), msg.class() == Class::Error);
        if let Some(code) = code {
            *self.stats.errors.entry(code).or_default() += 1;
        }

        if let Some(nonce) = msg.get(attr::NONCE) {
            // RFC 5389's nonce, or with RFC 8489's cookie announcing the
            // offer, which comes with PASSWORD-ALGORITHMS.
            let offered = nonce.len() == auth::COOKIE_LEN + auth::NONCE_LEN;
            assert!(offered || nonce.len() == auth::NONCE_LEN, "nonce of {} bytes", nonce.len());
            assert_eq!(offered, msg.has(attr::PASSWORD_ALGORITHMS), "offer without its list, or a list alone");
            self.nonces[c] = Some(nonce.to_vec());
        }
        match code {
            Some(401 | 438) => {
                assert!(!msg.has_integrity(), "challenge with MESSAGE-INTEGRITY");
                assert_eq!(msg.get(attr::REALM), Some(REALM.as_bytes()));
                assert!(msg.has(attr::NONCE), "challenge without NONCE");
            }
            Some(420) => {
                let list = msg.get(attr::UNKNOWN_ATTRIBUTES).expect("420 lists the types");
                assert!(!list.is_empty() && list.len().is_multiple_of(2));
                for t in list.chunks_exact(2) {
                    let t = u16::from_be_bytes([t[0], t[1]]);
                    assert!(!attr::is_understood(t) && request.has(t));
                }
            }
            _ => {}
        }

        if msg.method() == method::BINDING {
            assert!(!msg.has_integrity());
            if msg.class() == Class::Success {
                assert_eq!(msg.xor_address(attr::XOR_MAPPED_ADDRESS), Some(Ok(client.remote)));
            }
        } else if msg.class() == Class::Success {
            assert!(msg.has_integrity(), "authenticated success without MESSAGE-INTEGRITY");
        }

        if let Some(signer) = signer {
            // Correct credentials are refused only once the username or
            // the source has failed too often (the failure limits).
            let limited =
                self.server.snapshot(self.now().mono).counters.auth_failures[stats::AuthFailure::RateLimited as usize];
            if signer.should_authenticate && limited == self.rate_limited_seen {
                assert_ne!(code, Some(401), "correct credentials refused: {}", hex(request.bytes()));
            }
            self.rate_limited_seen = limited;
            if msg.has_integrity() {
                assert!(
                    msg.verify_integrity(&signer.cred.integrity_key()),
                    "answer to {} signed with an unexpected key: {}\nrequest: {}",
                    signer.cred.username,
                    hex(bytes),
                    hex(request.bytes())
                );
            }
        }

        if msg.class() == Class::Success {
            match msg.method() {
                method::ALLOCATE => self.stats.allocated += 1,
                method::REFRESH => self.stats.refreshed += 1,
                method::CREATE_PERMISSION => self.stats.permitted += 1,
                method::CHANNEL_BIND => self.stats.bound += 1,
                _ => {}
            }
        }
        if msg.class() == Class::Success && msg.method() == method::ALLOCATE {
            let relay = msg
                .xor_address(attr::XOR_RELAYED_ADDRESS)
                .expect("Allocate success without XOR-RELAYED-ADDRESS")
                .expect("valid XOR-RELAYED-ADDRESS");
            assert!(RELAY_PORTS.contains(&relay.port()));
            assert!(relay.ip() == IpAddr::V4(RELAY_V4) || relay.ip() == IpAddr::V6(RELAY_V6));
            assert_eq!(msg.xor_address(attr::XOR_MAPPED_ADDRESS), Some(Ok(client.remote)));
            let lifetime = msg.u32_attr(attr::LIFETIME).expect("LIFETIME").unwrap();
            assert!(lifetime > 0 && u64::from(lifetime) <= MAX_LIFETIME.as_secs());
            if !self.relays.contains(&relay) && self.relays.len() < 64 {
                self.relays.push(relay);
            }
            if let Some(token) = msg.get(attr::RESERVATION_TOKEN) {
                let token: [u8; 8] = token.try_into().expect("8-byte RESERVATION-TOKEN");
                if !self.tokens.contains(&token) && self.tokens.len() < 64 {
                    self.tokens.push(token);
                }
            }
        }
        Answer {
            class: msg.class(),
            code,
        }
    }

    /// A payload a client sent on: it lies in the packet, goes through a
    /// relay the server handed out, to a peer of the relay's family that
    /// the filter allows.
    fn check_to_peer(&mut self, to_peer: &ToPeer<'_>, packet: &[u8]) {
        self.stats.to_peer += 1;
        let whole = packet.as_ptr_range();
        let p = to_peer.payload.as_ptr_range();
        assert!(
            whole.start <= p.start && p.end <= whole.end,
            "payload outside the packet"
        );
        let peer = to_peer.peer.0;
        assert!(
            self.relays.contains(&to_peer.relay.0),
            "relay {} never handed out",
            to_peer.relay.0
        );
        assert_eq!(Family::of(to_peer.relay.0), Family::of(peer));
        assert!(
            self.filter.check(peer, RelayProtocol::Udp, &self.live).is_ok(),
            "relayed to refused peer {peer}: {}",
            hex(packet)
        );
        if packet[0] >> 6 == 1 {
            let (_, payload) = channel_data::parse(packet).expect("relayed ChannelData parses");
            assert_eq!(payload.as_ptr_range(), p);
        } else {
            let msg = Message::parse(packet).expect("relayed Send indication parses");
            assert_eq!((msg.class(), msg.method()), (Class::Indication, method::SEND));
            assert_eq!(msg.get(attr::DATA).map(<[u8]>::as_ptr_range), Some(p));
            assert_eq!(msg.xor_address(attr::XOR_PEER_ADDRESS), Some(Ok(peer)));
        }
    }

    fn timeout(&mut self, jump: bool) {
        if jump {
            if let Some(due) = self.server.poll_timeout() {
                let now = self.now().mono;
                if due > now {
                    self.elapsed += due - now;
                }
            }
        }
        let now = self.now().mono;
        self.server.handle_timeout(now);
        assert!(
            self.server.poll_timeout().is_none_or(|due| due > now),
            "a timer is still due after handle_timeout"
        );
        assert!(self.drain().is_empty(), "a timeout produced a Transmit");
    }

    /// A datagram from a peer to a relay address.
    fn peer_packet(&mut self, body: &[u8]) {
        let (relay_sel, peer_sel, payload) = match body {
            [r, p, rest @ ..] => (*r, *p, rest),
            [r] => (*r, 0, &[][..]),
            [] => (0, 0, &[][..]),
        };
        let relay = if self.relays.is_empty() || relay_sel == 0xFF {
            SocketAddr::new(IpAddr::V4(RELAY_V4), 50_000 + u16::from(relay_sel % 8))
        } else {
            self.relays[usize::from(relay_sel) % self.relays.len()]
        };
        let peer = self.peer(peer_sel);
        // Selector bit 6 of the peer byte: too little headroom/tailroom,
        // which the server must refuse rather than overrun.
        let (head, tail) = if peer_sel & 0x40 != 0 {
            (
                usize::from(relay_sel) % PEER_HEADROOM,
                usize::from(relay_sel >> 6) % PEER_TAILROOM,
            )
        } else {
            (PEER_HEADROOM, PEER_TAILROOM)
        };
        let mut buf = vec![0xEE; head + payload.len() + tail];
        buf[head..head + payload.len()].copy_from_slice(payload);
        let range = head..head + payload.len();
        let now = self.now().mono;
        let out = self
            .server
            .handle_peer_packet(RelayAddr(relay), PeerAddr(peer), &mut buf, range.clone(), now);
        assert!(self.drain().is_empty(), "a peer packet produced a Transmit");
        let Some(to_client) = out else {
            return;
        };
        let r = to_client.range.clone();
        assert!(
            r.start <= range.start && range.end <= r.end && r.end <= buf.len(),
            "ToClient range {r:?} not inside buffer of {} around payload {range:?}",
            buf.len()
        );
        assert!(self.clients.contains(&to_client.client));
        assert!(
            self.relays.contains(&relay),
            "data through relay {relay} never handed out"
        );
        let framed = &buf[r];
        match framed[0] >> 6 {
            0b01 => {
                let (_, got) = channel_data::parse(framed).expect("framed ChannelData parses");
                assert_eq!(got, payload);
                // Padded to 4 bytes on streams only (RFC 8656 §12.5).
                let padding = match to_client.client.transport {
                    Transport::Udp => 0,
                    Transport::Tcp | Transport::Tls => (4 - payload.len() % 4) % 4,
                };
                assert_eq!(framed.len(), channel_data::HEADER_LEN + payload.len() + padding);
                self.stats.channel_data_to_client += 1;
            }
            0b00 => {
                let msg = Message::parse(framed)
                    .unwrap_or_else(|e| panic!("Data indication does not parse ({e}): {}", hex(framed)));
                message::exercise(&msg);
                assert_eq!((msg.class(), msg.method()), (Class::Indication, method::DATA));
                assert_eq!(msg.get(attr::DATA), Some(payload));
                assert_eq!(msg.xor_address(attr::XOR_PEER_ADDRESS), Some(Ok(peer)));
                self.stats.indications_to_client += 1;
            }
            _ => panic!("framed peer data is neither STUN nor ChannelData: {}", hex(framed)),
        }
    }

    /// Asks for a nonce the way a client does: an unauthenticated request.
    /// Asks for a nonce the way a client does, with an unsigned Allocate
    /// (the one request challenged without an allocation).
    fn fetch_nonce(&mut self, c: usize) {
        let mut buf = Vec::new();
        let id = self.next_id();
        let mut w = MessageWriter::new(&mut buf, Class::Request, method::ALLOCATE, id);
        w.bytes(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0]);
        w.finish(None, false);
        self.client_packet(c, &buf, None);
    }

    fn signed(&mut self, c: usize, body: &[u8]) {
        let (selector, flags, attrs) = match body {
            [s, f, rest @ ..] => (*s, *f, rest),
            [s] => (*s, 0, &[][..]),
            [] => (0, 0, &[][..]),
        };
        if flags & flag::SEND_INDICATION != 0 {
            let mut buf = Vec::new();
            let id = self.next_id();
            let mut w = MessageWriter::new(&mut buf, Class::Indication, method::SEND, id);
            self.write_attrs(&mut w, attrs);
            w.finish(None, flags & flag::FINGERPRINT != 0);
            self.client_packet(c, &buf, None);
            return;
        }
        let method = METHODS[usize::from(selector) % METHODS.len()];
        let turn = method != method::BINDING && method != 0x00D;
        if self.nonces[c].is_none() && flags & flag::NO_NONCE_FETCH == 0 && turn {
            self.fetch_nonce(c);
        }
        for attempt in 0..2 {
            let unix = self.now().unix_secs;
            let (username, password) = if flags & flag::EXPIRED != 0 {
                let m = auth::mint(
                    auth::SecretAlgorithm::Sha1,
                    SECRET,
                    Some("old"),
                    unix - 7200,
                    Duration::from_secs(3600),
                );
                (m.username, m.password)
            } else if flags & flag::EPHEMERAL != 0 {
                let m = auth::mint(
                    auth::SecretAlgorithm::Sha1,
                    SECRET,
                    Some("fuzz"),
                    unix,
                    Duration::from_secs(3600),
                );
                (m.username, m.password)
            } else {
                (USER.to_owned(), PASSWORD.to_owned())
            };
            let password = if flags & flag::WRONG_PASSWORD != 0 {
                "wrong".to_owned()
            } else {
                password
            };
            let cred = Cred::new(&username, REALM, &password);
            let nonce = self.nonces[c].clone();
            let id = if flags & flag::RETRANSMIT != 0 && attempt == 0 {
                self.last_id[c]
            } else {
                self.next_id()
            };
            self.last_id[c] = id;

            let mut buf = Vec::new();
            let mut w = MessageWriter::new(&mut buf, Class::Request, method, id);
            w.bytes(attr::USERNAME, username.as_bytes());
            if flags & flag::NO_REALM == 0 {
                w.bytes(attr::REALM, REALM.as_bytes());
            }
            w.bytes(
                attr::NONCE,
                nonce.as_deref().unwrap_or(b"0000000000000000ffffffffffffffff"),
            );
            let spoiled = self.write_attrs(&mut w, attrs);
            w.finish(Some(&cred.integrity_key()), flags & flag::FINGERPRINT != 0);
            let signer = Signer {
                cred,
                should_authenticate: turn
                    && nonce.is_some()
                    && !spoiled
                    && flags & (flag::WRONG_PASSWORD | flag::NO_REALM | flag::EXPIRED) == 0,
            };
            let answer = self.client_packet(c, &buf, Some(&signer));
            match answer {
                Some(Answer {
                    class: Class::Error,
                    code: Some(438),
                }) if flags & flag::NO_NONCE_FETCH == 0 => {
                    assert_eq!(attempt, 0, "a fresh nonce was stale");
                }
                _ => break,
            }
        }
    }

    /// Appends the attributes `input` describes; see
    /// [`crate::program::Attrs`] for the encoding. Returns true if one of
    /// them is MESSAGE-INTEGRITY or FINGERPRINT, which spoil the signature.
    fn write_attrs(&self, w: &mut MessageWriter<'_>, mut input: &[u8]) -> bool {
        fn take(input: &mut &[u8], n: usize) -> Vec<u8> {
            let n = n.min(input.len());
            let (head, tail) = input.split_at(n);
            *input = tail;
            head.to_vec()
        }
        let mut spoiled = false;
        let mut count = 0;
        while let Some((&tag, rest)) = input.split_first() {
            input = rest;
            count += 1;
            if count > 48 {
                break;
            }
            match tag {
                0x00..=0x5F => {
                    let typ = if tag < 0x40 {
                        KNOWN_TYPES[usize::from(tag) % KNOWN_TYPES.len()]
                    } else {
                        let t = take(&mut input, 2);
                        u16::from_be_bytes([t.first().copied().unwrap_or(0), t.get(1).copied().unwrap_or(0)])
                    };
                    let len = take(&mut input, 1).first().copied().unwrap_or(0);
                    let value = take(&mut input, usize::from(len));
                    // Integrity the harness did not compute, or a password
                    // algorithm other than the MD5 it signs with.
                    spoiled |= [
                        attr::MESSAGE_INTEGRITY,
                        attr::MESSAGE_INTEGRITY_SHA256,
                        attr::FINGERPRINT,
                        attr::PASSWORD_ALGORITHM,
                    ]
                    .contains(&typ);
                    w.bytes(typ, &value);
                }
                0x60..=0x6F => {
                    let sel = take(&mut input, 1).first().copied().unwrap_or(0);
                    let token = if self.tokens.is_empty() {
                        [0; 8]
                    } else {
                        self.tokens[usize::from(sel) % self.tokens.len()]
                    };
                    w.bytes(attr::RESERVATION_TOKEN, &token);
                }
                0x70 => {
                    w.bytes(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0]);
                }
                0x71 => {
                    let n = take(&mut input, 1).first().copied().unwrap_or(0);
                    w.bytes(attr::CHANNEL_NUMBER, &[0x40, n, 0, 0]);
                }
                0x72 => {
                    w.bytes(attr::EVEN_PORT, &[0x80]);
                }
                0x73 => {
                    w.bytes(attr::REQUESTED_ADDRESS_FAMILY, &[2, 0, 0, 0]);
                }
                0x74 => {
                    w.u32(attr::LIFETIME, 0);
                }
                0x75 => {
                    let len = take(&mut input, 1).first().copied().unwrap_or(0);
                    let value = take(&mut input, usize::from(len));
                    w.bytes(attr::DATA, &value);
                }
                0x76 => {
                    w.bytes(attr::ADDITIONAL_ADDRESS_FAMILY, &[2, 0, 0, 0]);
                }
                0x77..=0x7F => {
                    let t = take(&mut input, 2);
                    let secs = u16::from_be_bytes([t.first().copied().unwrap_or(0), t.get(1).copied().unwrap_or(0)]);
                    w.u32(attr::LIFETIME, u32::from(secs));
                }
                0x80..=0xBF => {
                    let sel = take(&mut input, 1).first().copied().unwrap_or(0);
                    w.xor_address(attr::XOR_PEER_ADDRESS, self.peer(sel));
                }
                0xC0..=0xDF => {
                    let b = take(&mut input, 6);
                    let mut a = [0u8; 6];
                    a[..b.len()].copy_from_slice(&b);
                    let addr = SocketAddr::from(([a[0], a[1], a[2], a[3]], u16::from_be_bytes([a[4], a[5]])));
                    w.xor_address(XOR_TYPES[usize::from(tag) % 3], addr);
                }
                0xE0..=0xFF => {
                    let b = take(&mut input, 18);
                    let mut a = [0u8; 18];
                    a[..b.len()].copy_from_slice(&b);
                    let mut ip = [0u8; 16];
                    ip.copy_from_slice(&a[..16]);
                    let addr = SocketAddr::new(IpAddr::V6(Ipv6Addr::from(ip)), u16::from_be_bytes([a[16], a[17]]));
                    w.xor_address(XOR_TYPES[usize::from(tag) % 3], addr);
                }
            }
        }
        spoiled
    }
}

/// An RFC 3489 answer (no magic cookie), which our parser does not accept
/// by design: Binding success, the request's 16-byte id, MAPPED-ADDRESS.
fn check_classic_answer(request: &Message<'_>, bytes: &[u8], remote: SocketAddr) -> Answer {
    assert!(bytes.len() >= stun::HEADER_LEN, "short classic answer");
    let length = usize::from(u16::from_be_bytes([bytes[2], bytes[3]]));
    assert_eq!(bytes.len(), stun::HEADER_LEN + length);
    assert_eq!(bytes[4..20], request.bytes()[4..20], "classic id not echoed");
    // Without an alternate address (RFC 5780), only a CHANGE-REQUEST is
    // refused, in RFC 3489's form (checked by the nat_discovery target).
    if bytes[..2] == [0x01, 0x11] {
        assert!(
            request.has(attr::CHANGE_REQUEST),
            "classic error to {}",
            hex(request.bytes())
        );
        return Answer {
            class: Class::Error,
            code: None,
        };
    }
    assert_eq!(bytes[..2], [0x01, 0x01], "classic answer is not a Binding success");
    assert_eq!(bytes[20..22], attr::MAPPED_ADDRESS.to_be_bytes());
    let len = usize::from(u16::from_be_bytes([bytes[22], bytes[23]]));
    assert_eq!(len + 24, bytes.len());
    assert_eq!(stun::decode_address(&bytes[24..]), Ok(remote));
    Answer {
        class: Class::Success,
        code: None,
    }
}

/// RESPONSE-PORT's port, if `packet` is a request carrying one.
fn response_port(packet: &[u8]) -> Option<u16> {
    let request = Message::parse(packet).ok()?;
    match request.get(attr::RESPONSE_PORT)? {
        &[hi, lo, _, _] => Some(u16::from_be_bytes([hi, lo])),
        _ => None,
    }
}
