//! Scenario tests of the TURN core ([`super`]), one file per file of the
//! core, sharing the harness below.
//!
//! The core is driven the way a driver and a real client would drive it:
//! time is moved by hand (`Harness::at`), relay sockets come from the test
//! kit's [`FakeBinder`], which records every bind and release, requests are
//! built with the crate's own [`MessageWriter`] and authenticate with the
//! long-term credential dance (401 with REALM and NONCE, then a retry with
//! MESSAGE-INTEGRITY). Every answer is parsed, and the harness checks the
//! rules shared by all of them: exactly one Transmit to the asking client,
//! same transaction id and method, a FINGERPRINT, MESSAGE-INTEGRITY under
//! the user's key on authenticated answers and none on 401/438.
//!
//! Peer addresses such as 8.8.8.8 are mere values: nothing leaves memory.

mod admin;
mod allocate;
mod authentication;
mod binding;
mod challenge_budget;
mod data_plane;
mod fast_path;
mod hostile_input;
mod nat_discovery;
mod password_algorithms;
mod permissions;
mod reconfigure;
mod tcp_relay;
mod try_alternate;

use std::cell::Ref;
use std::collections::{BTreeSet, HashMap};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{
    Alternates, Effect, NatDiscovery, PortWant, RelayHairpin, Server, ServerConfig, PEER_HEADROOM, PEER_TAILROOM,
};
use crate::proto::addr::{ClientAddr, ConnectionId, Family, PeerAddr, RelayAddr, RelayProtocol, ShardId, Transport};
use crate::proto::auth::{self, Credentials, CredentialsConfig, LongTermKey};
use crate::proto::channel_data::ChannelNumber;
use crate::proto::live_relays::LiveRelays;
use crate::proto::peer_filter::{PeerFilter, PeerRules};
use crate::proto::quota::AllocationQuota;
use crate::proto::stats;
use crate::proto::stun::{self, attr, method, Class, Message, MessageWriter, TransactionId};
use crate::proto::testkit::{self, Challenge, Cred, FakeBinder, FakeBinderState, FakeRoutes};
use crate::proto::Now;

const REALM: &str = "example.org";
const SOFTWARE: &str = "turnpike-test";
const RELAY_IP: Ipv4Addr = testkit::RELAY_IP_V4;
const RELAY_IP_V6: Ipv6Addr = testkit::RELAY_IP_V6;
/// The fake binder hands out `FIRST_PORT..FIRST_PORT + PORTS`; the first
/// port is odd so that EVEN-PORT visibly skips it.
const FIRST_PORT: u16 = 50_001;
const PORTS: u16 = 8;
const UNIX_START: u64 = 1_700_000_000;
const NONCE_TTL: u64 = 3600;
const SECRETS: [&str; 2] = ["new-secret", "old-secret"];
/// `md5("carol:example.org:carol-pw")`, configured as a precomputed key.
const CAROL_KEY: LongTermKey = [
    0x0b, 0x55, 0x30, 0x83, 0xef, 0x25, 0x17, 0x70, 0x17, 0xe8, 0xec, 0xf2, 0x47, 0xd7, 0xc3, 0x43,
];
const UDP: [u8; 4] = [17, 0, 0, 0];

/// The configured users: alice with `alice_password`, carol with her
/// precomputed key.
fn users(alice_password: &str) -> Vec<(String, LongTermKey)> {
    vec![
        ("alice".to_owned(), auth::long_term_key("alice", REALM, alice_password)),
        ("carol".to_owned(), CAROL_KEY),
    ]
}
const IPV6_FAMILY: [u8; 4] = [2, 0, 0, 0];

// Clients, credentials, messages

fn alice() -> Cred {
    Cred::new("alice", REALM, "alice-pw")
}

fn carol() -> Cred {
    Cred::new("carol", REALM, "carol-pw")
}

fn ephemeral(secret: &str, now_unix: u64, ttl_secs: u64) -> Cred {
    let minted = auth::mint(
        auth::SecretAlgorithm::Sha1,
        secret.as_bytes(),
        Some("bob"),
        now_unix,
        Duration::from_secs(ttl_secs),
    );
    Cred::new(&minted.username, REALM, &minted.password)
}

fn client(n: u8) -> ClientAddr {
    ClientAddr {
        transport: Transport::Udp,
        local: SocketAddr::from(([192, 0, 2, 1], 3478)),
        remote: SocketAddr::from(([192, 0, 2, 100 + n], 40_000 + u16::from(n))),
    }
}

fn addr(text: &str) -> SocketAddr {
    text.parse().unwrap()
}

fn peer_a() -> SocketAddr {
    addr("8.8.8.8:5000")
}

fn peer_b() -> SocketAddr {
    addr("1.1.1.1:6000")
}

fn relay_at(port: u16) -> SocketAddr {
    SocketAddr::from((RELAY_IP, port))
}

/// A message as a client of [`REALM`] encodes it; `auth` signs it with
/// the credential under a NONCE the server gave.
fn encode(
    class: Class,
    method: u16,
    id: TransactionId,
    build: impl Fn(&mut MessageWriter<'_>),
    auth: Option<(&Cred, &[u8])>,
) -> Vec<u8> {
    let challenge = auth.map(|(_, nonce)| Challenge {
        realm: REALM.as_bytes().to_vec(),
        nonce: nonce.to_vec(),
    });
    let signed = auth
        .zip(challenge.as_ref())
        .map(|((cred, _), challenge)| (cred, challenge));
    testkit::encode(class, method, id, build, signed)
}

fn none(_: &mut MessageWriter<'_>) {}

fn udp(w: &mut MessageWriter<'_>) {
    w.bytes(attr::REQUESTED_TRANSPORT, &UDP);
}

fn udp_and(extra: impl Fn(&mut MessageWriter<'_>)) -> impl Fn(&mut MessageWriter<'_>) {
    move |w| {
        udp(w);
        extra(w);
    }
}

fn peers(list: &[SocketAddr]) -> impl Fn(&mut MessageWriter<'_>) + '_ {
    move |w| {
        for p in list {
            w.xor_address(attr::XOR_PEER_ADDRESS, *p);
        }
    }
}

fn send_indication(peer: SocketAddr, payload: &[u8]) -> Vec<u8> {
    let build = |w: &mut MessageWriter<'_>| {
        w.xor_address(attr::XOR_PEER_ADDRESS, peer).bytes(attr::DATA, payload);
    };
    encode(Class::Indication, method::SEND, [0x11; 12], build, None)
}

/// A ChannelData message, padded to 4 bytes as UDP clients may do.
fn channel_data(number: u16, payload: &[u8]) -> Vec<u8> {
    let mut packet = number.to_be_bytes().to_vec();
    packet.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    packet.extend_from_slice(payload);
    packet.resize(packet.len().next_multiple_of(4), 0);
    packet
}

/// A [`super::ToPeer`] with its payload copied out.
#[derive(Debug, PartialEq, Eq)]
struct Relayed {
    relay: RelayAddr,
    peer: PeerAddr,
    payload: Vec<u8>,
    local: Option<ShardId>,
}

fn relayed(relay: RelayAddr, peer: SocketAddr, payload: &[u8]) -> Option<Relayed> {
    Some(Relayed {
        relay,
        peer: PeerAddr(peer),
        payload: payload.to_vec(),
        local: None,
    })
}

/// Relayed to `peer`, a live relay of this server on shard 0 (the
/// harness's), to be handed over inside the process.
fn relayed_in_process(relay: RelayAddr, peer: SocketAddr, payload: &[u8]) -> Option<Relayed> {
    Some(Relayed {
        local: Some(ShardId(0)),
        ..relayed(relay, peer, payload)?
    })
}

fn assert_data_indication(bytes: &[u8], peer: SocketAddr, payload: &[u8]) {
    let msg = Message::parse(bytes).expect("a well-formed Data indication");
    assert_eq!((msg.class(), msg.method()), (Class::Indication, method::DATA));
    assert!(msg.has_magic_cookie());
    let types: Vec<u16> = msg.attributes().map(|(t, _)| t).collect();
    assert_eq!(types, [attr::XOR_PEER_ADDRESS, attr::DATA]);
    assert_eq!(msg.xor_address(attr::XOR_PEER_ADDRESS), Some(Ok(peer)));
    assert_eq!(msg.get(attr::DATA), Some(payload));
}

/// A parsed answer of the server.
struct Response(Vec<u8>);

impl Response {
    fn msg(&self) -> Message<'_> {
        Message::parse(&self.0).expect("the server's answers parse")
    }

    fn attr(&self, typ: u16) -> Option<&[u8]> {
        self.msg().get(typ)
    }

    /// Attribute types before MESSAGE-INTEGRITY, in order.
    fn types(&self) -> Vec<u16> {
        self.msg().attributes().map(|(t, _)| t).collect()
    }

    fn code(&self) -> Option<u16> {
        let v = self.attr(attr::ERROR_CODE)?;
        // Unauthenticated errors keep small: no reason phrase.
        match self.msg().has_integrity() {
            true => assert!(v.len() > 4, "authenticated ERROR-CODE has a reason phrase"),
            false => assert_eq!(v.len(), 4, "unauthenticated ERROR-CODE has no reason phrase"),
        }
        assert_eq!(v[..2], [0, 0]);
        assert!((3..=6).contains(&v[2]) && v[3] < 100, "bad class/number {v:?}");
        assert!(std::str::from_utf8(&v[4..]).is_ok());
        Some(u16::from(v[2]) * 100 + u16::from(v[3]))
    }

    fn assert_code(&self, code: u16) {
        assert_eq!(self.code(), Some(code));
        assert_eq!(self.msg().class(), Class::Error);
    }

    fn assert_success(&self) {
        assert_eq!(self.code(), None);
        assert_eq!(self.msg().class(), Class::Success);
    }

    /// 401/438: REALM and a fresh NONCE, no MESSAGE-INTEGRITY (RFC 8489 §9.2.4)
    /// and no SOFTWARE (unauthenticated answers stay small).
    fn assert_challenge(&self, code: u16) {
        self.assert_code(code);
        let msg = self.msg();
        assert!(!msg.has_integrity());
        assert_eq!(msg.get(attr::REALM), Some(REALM.as_bytes()));
        let nonce = msg.get(attr::NONCE).map_or(0, <[u8]>::len);
        assert!(
            [auth::NONCE_LEN, auth::COOKIE_LEN + auth::NONCE_LEN].contains(&nonce),
            "{nonce}"
        );
        assert_eq!(msg.get(attr::SOFTWARE), None);
    }

    fn xor(&self, typ: u16) -> SocketAddr {
        self.msg()
            .xor_address(typ)
            .expect("attribute present")
            .expect("valid address")
    }

    fn lifetime(&self) -> u32 {
        self.msg().u32_attr(attr::LIFETIME).expect("LIFETIME").unwrap()
    }

    fn relay(&self) -> RelayAddr {
        self.assert_success();
        RelayAddr(self.xor(attr::XOR_RELAYED_ADDRESS))
    }

    fn has_fingerprint(&self) -> bool {
        // Message::parse has checked the CRC if it is there.
        let n = self.0.len();
        n >= stun::HEADER_LEN + 8 && self.0[n - 8..n - 6] == attr::FINGERPRINT.to_be_bytes()
    }
}

// The harness

struct Settings {
    software: Option<&'static str>,
    relay_ip_v6: Option<Ipv6Addr>,
    max_permissions: usize,
    max_channels: usize,
    max_total: usize,
    max_per_user: usize,
    rules: PeerRules,
    hairpin: RelayHairpin,
    allocation_rate: u64,
    challenge_rate: u64,
    max_peer_connections_per_allocation: usize,
    max_peer_connections: usize,
    alternates: Alternates,
    /// RFC 5780 address pairs.
    nat_discovery: NatDiscovery,
    /// The shard the core runs on.
    shard: ShardId,
    /// The fast path the core installs routes in, if any.
    routes: Option<FakeRoutes>,
    /// `auth.password_algorithms` and `auth.userhash` (RFC 8489 §9.2).
    password_algorithms: Vec<auth::PasswordAlgorithm>,
    userhash: bool,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            software: Some(SOFTWARE),
            relay_ip_v6: None,
            max_permissions: 4,
            max_channels: 4,
            max_total: 100,
            max_per_user: 2,
            rules: PeerRules::default(),
            hairpin: RelayHairpin::default(),
            allocation_rate: 0,
            challenge_rate: 0,
            max_peer_connections_per_allocation: 3,
            max_peer_connections: 5,
            alternates: Alternates::default(),
            nat_discovery: NatDiscovery::default(),
            shard: ShardId::default(),
            routes: None,
            password_algorithms: vec![auth::PasswordAlgorithm::Md5],
            userhash: false,
        }
    }
}

struct Harness {
    server: Server<FakeBinder>,
    quota: Arc<AllocationQuota>,
    /// The relays the core has marked live (shared with it).
    live: Arc<LiveRelays>,
    software: Option<&'static str>,
    base: Instant,
    elapsed: Duration,
    /// The last NONCE each client got, as a real client keeps it.
    nonces: HashMap<ClientAddr, Vec<u8>>,
    ids: u32,
}

impl Harness {
    fn new() -> Harness {
        Harness::with(Settings::default())
    }

    fn with(s: Settings) -> Harness {
        let config = ServerConfig {
            software: s.software.map(str::to_owned),
            relay_ip_v6: s.relay_ip_v6,
            max_permissions: s.max_permissions,
            max_channels: s.max_channels,
            hairpin: s.hairpin,
            allocation_rate: s.allocation_rate,
            challenge_rate: s.challenge_rate,
            max_peer_connections_per_allocation: s.max_peer_connections_per_allocation,
            max_peer_connections: s.max_peer_connections,
            alternates: s.alternates,
            nat_discovery: s.nat_discovery,
            ..testkit::core_config()
        };
        let credentials = Credentials::new(CredentialsConfig {
            users: users("alice-pw"),
            secrets: SECRETS.iter().map(|s| s.as_bytes().to_vec()).collect(),
            nonce_ttl: Duration::from_secs(NONCE_TTL),
            // Alice has both keys; carol only her precomputed MD5 key.
            users_sha256: vec![("alice".to_owned(), auth::sha256_key("alice", REALM, "alice-pw"))],
            password_algorithms: s.password_algorithms,
            userhash: s.userhash,
            ..testkit::core_credentials(REALM)
        });
        let quota = Arc::new(AllocationQuota::new(s.max_total, s.max_per_user));
        let live = Arc::new(LiveRelays::default());
        let server = Server::new(
            config,
            credentials,
            PeerFilter::new(s.rules),
            quota.clone(),
            live.clone(),
            FakeBinder::new(FIRST_PORT..=FIRST_PORT + PORTS - 1),
            [9; 32],
        )
        .on_shard(s.shard);
        let server = match s.routes {
            Some(routes) => server.with_fast_path(Box::new(routes)),
            None => server,
        };
        // The one real clock read: an arbitrary origin for fake time.
        #[allow(clippy::disallowed_methods)]
        let base = Instant::now();
        Harness {
            server,
            quota,
            live,
            software: s.software,
            base,
            elapsed: Duration::ZERO,
            nonces: HashMap::new(),
            ids: 0,
        }
    }

    fn now(&self) -> Now {
        Now {
            mono: self.base + self.elapsed,
            unix_secs: self.unix_now(),
        }
    }

    fn unix_now(&self) -> u64 {
        UNIX_START + self.elapsed.as_secs()
    }

    /// Moves the clock to `secs` after the start and fires due timers, as
    /// the driver does.
    fn at(&mut self, secs: u64) {
        self.elapsed = Duration::from_secs(secs);
        self.server.handle_timeout(self.now().mono);
        self.assert_quiet();
    }

    fn deadline(&self, secs: u64) -> Option<Instant> {
        Some(self.base + Duration::from_secs(secs))
    }

    fn binder(&self) -> Ref<'_, FakeBinderState> {
        self.server.binder().state()
    }

    fn next_id(&mut self) -> TransactionId {
        self.ids += 1;
        let mut id = [0x5a; 12];
        id[8..].copy_from_slice(&self.ids.to_be_bytes());
        id
    }

    fn assert_quiet(&mut self) {
        assert_eq!(self.server.poll_effect(), None);
    }

    /// A client packet that relays nothing and must not be answered.
    fn client_packet(&mut self, client: ClientAddr, packet: &[u8]) -> Option<Relayed> {
        let out = self
            .server
            .handle_client_packet(client, packet, self.now())
            .map(|to| Relayed {
                relay: to.relay,
                peer: to.peer,
                payload: to.payload.to_vec(),
                local: to.local,
            });
        self.assert_quiet();
        out
    }

    /// Sends a request and returns the one answer, which must go to
    /// `client` and be the only effect.
    fn exchange_raw(&mut self, client: ClientAddr, packet: &[u8]) -> Vec<u8> {
        let (to, bytes) = self.exchange_anywhere(client, packet);
        assert_eq!(to, client);
        bytes
    }

    /// Sends a request and returns the one answer and where it goes (an
    /// RFC 5780 Binding answer may leave from another address, to
    /// another port).
    fn exchange_anywhere(&mut self, client: ClientAddr, packet: &[u8]) -> (ClientAddr, Vec<u8>) {
        let now = self.now();
        assert_eq!(self.server.handle_client_packet(client, packet, now), None);
        let Some(Effect::Transmit { to, bytes }) = self.server.poll_effect() else {
            panic!("request not answered");
        };
        self.assert_quiet();
        (to, bytes)
    }

    fn exchange(&mut self, client: ClientAddr, packet: &[u8]) -> Response {
        let response = Response(self.exchange_raw(client, packet));
        let request = Message::parse(packet).unwrap();
        let msg = response.msg();
        assert_eq!(msg.transaction_id(), request.transaction_id());
        assert_eq!(msg.method(), request.method());
        assert!(response.has_fingerprint());
        response
    }

    /// A client's first try: the request without credentials, which earns
    /// a 401 whose NONCE the client keeps.
    fn challenge(&mut self, client: ClientAddr, method: u16, build: impl Fn(&mut MessageWriter<'_>)) -> Response {
        let id = self.next_id();
        let response = self.exchange(client, &encode(Class::Request, method, id, build, None));
        response.assert_challenge(401);
        self.nonces.insert(client, response.attr(attr::NONCE).unwrap().to_vec());
        response
    }

    /// An authenticated request with the client's current nonce (fetched
    /// with a challenge first if it has none).
    fn authed(
        &mut self,
        client: ClientAddr,
        cred: &Cred,
        method: u16,
        id: TransactionId,
        build: impl Fn(&mut MessageWriter<'_>),
    ) -> Vec<u8> {
        // A nonce is not tied to a method; a client learns it from its
        // first Allocate, the one request that is challenged without an
        // allocation.
        if !self.nonces.contains_key(&client) {
            self.challenge(client, method::ALLOCATE, udp);
        }
        encode(Class::Request, method, id, build, Some((cred, &self.nonces[&client])))
    }

    fn request_with_id(
        &mut self,
        client: ClientAddr,
        cred: &Cred,
        method: u16,
        id: TransactionId,
        build: impl Fn(&mut MessageWriter<'_>),
    ) -> Response {
        let packet = self.authed(client, cred, method, id, build);
        let response = self.exchange(client, &packet);
        match response.code() {
            Some(401 | 438) => {
                response.assert_challenge(response.code().unwrap());
                self.nonces.insert(client, response.attr(attr::NONCE).unwrap().to_vec());
            }
            _ => {
                let msg = response.msg();
                assert!(
                    msg.verify_integrity(&stun::integrity_key(&cred.key)),
                    "MESSAGE-INTEGRITY under the user's key"
                );
                assert_eq!(msg.get(attr::SOFTWARE), self.software.map(str::as_bytes));
            }
        }
        response
    }

    fn request(
        &mut self,
        client: ClientAddr,
        cred: &Cred,
        method: u16,
        build: impl Fn(&mut MessageWriter<'_>),
    ) -> Response {
        let id = self.next_id();
        self.request_with_id(client, cred, method, id, build)
    }

    fn allocate(&mut self, client: ClientAddr) -> RelayAddr {
        self.allocate_as(client, &alice())
    }

    fn allocate_as(&mut self, client: ClientAddr, cred: &Cred) -> RelayAddr {
        self.request(client, cred, method::ALLOCATE, udp).relay()
    }

    fn refresh(&mut self, client: ClientAddr, cred: &Cred, lifetime: Option<u32>) -> Response {
        self.request(client, cred, method::REFRESH, |w| {
            if let Some(secs) = lifetime {
                w.u32(attr::LIFETIME, secs);
            }
        })
    }

    fn permit(&mut self, client: ClientAddr, list: &[SocketAddr]) -> Response {
        self.request(client, &alice(), method::CREATE_PERMISSION, peers(list))
    }

    fn channel_bind(&mut self, client: ClientAddr, number: u16, peer: SocketAddr) -> Response {
        let [hi, lo] = number.to_be_bytes();
        self.request(client, &alice(), method::CHANNEL_BIND, |w| {
            w.bytes(attr::CHANNEL_NUMBER, &[hi, lo, 0, 0])
                .xor_address(attr::XOR_PEER_ADDRESS, peer);
        })
    }

    fn send(&mut self, client: ClientAddr, peer: SocketAddr, payload: &[u8]) -> Option<Relayed> {
        self.client_packet(client, &send_indication(peer, payload))
    }

    /// A peer's datagram arriving at `relay`, read with the headroom and
    /// tailroom the driver leaves; returns the client and the bytes to send.
    fn peer_sends(&mut self, relay: RelayAddr, peer: SocketAddr, payload: &[u8]) -> Option<(ClientAddr, Vec<u8>)> {
        // Junk around the payload, so that missing padding would show.
        let mut buf = vec![0xEE; PEER_HEADROOM + payload.len() + PEER_TAILROOM];
        let range = PEER_HEADROOM..PEER_HEADROOM + payload.len();
        buf[range.clone()].copy_from_slice(payload);
        let out = self
            .server
            .handle_peer_packet(relay, PeerAddr(peer), &mut buf, range, self.now().mono);
        self.assert_quiet();
        out.map(|to| (to.client, buf[to.range].to_vec()))
    }

    /// Asserts that the peer's datagram reaches `client` as a Data indication.
    fn assert_data_from_peer(&mut self, relay: RelayAddr, peer: SocketAddr, client: ClientAddr) {
        let (to, bytes) = self.peer_sends(relay, peer, b"hello").expect("relayed");
        assert_eq!(to, client);
        assert_data_indication(&bytes, peer, b"hello");
    }
}

fn binding_request(id: TransactionId, build: impl Fn(&mut MessageWriter<'_>)) -> Vec<u8> {
    encode(Class::Request, method::BINDING, id, build, None)
}

fn tcp_client(n: u8) -> ClientAddr {
    ClientAddr {
        transport: Transport::Tcp,
        ..client(n)
    }
}
