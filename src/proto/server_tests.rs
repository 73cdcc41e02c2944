//! Scenario tests of the TURN core ([`super::server`]).
//!
//! The core is driven the way a driver and a real client would drive it:
//! time is moved by hand (`Harness::at`), relay sockets come from a fake
//! [`RelayBinder`] that records every bind and release, requests are built
//! with the crate's own [`MessageWriter`] and authenticate with the
//! long-term credential dance (401 with REALM and NONCE, then a retry with
//! MESSAGE-INTEGRITY). Every answer is parsed, and the harness checks the
//! rules shared by all of them: exactly one Transmit to the asking client,
//! same transaction id and method, a FINGERPRINT, MESSAGE-INTEGRITY under
//! the user's key on authenticated answers and none on 401/438.
//!
//! Peer addresses such as 8.8.8.8 are mere values: nothing leaves memory.

use std::cell::{Ref, RefCell};
use std::collections::{BTreeSet, HashMap};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::auth::{self, Credentials, CredentialsConfig, LongTermKey};
use super::channel_data::ChannelNumber;
use super::peer_filter::{PeerFilter, PeerRules};
use super::server::{
    AllocationQuota, ClientAddr, ConnectionId, Effect, Family, Now, PeerAddr, PortWant, RelayAddr, RelayBindError,
    RelayBinder, RelayHairpin, RelayProtocol, Server, ServerConfig, Transport, PEER_HEADROOM, PEER_TAILROOM,
};
use super::stats;
use super::stun::{self, attr, method, Class, Message, MessageWriter, TransactionId};

const REALM: &str = "example.org";
const SOFTWARE: &str = "turnpike-test";
const RELAY_IP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 7);
const RELAY_IP_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 7);
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
const IPV6_FAMILY: [u8; 4] = [2, 0, 0, 0];

// ---------------------------------------------------------------------
// Fake relay binder

#[derive(Debug, Default)]
struct BinderState {
    bound: BTreeSet<(Family, u16)>,
    binds: Vec<(Family, PortWant, u16)>,
    releases: Vec<(Family, u16)>,
    /// Odd partners of EVEN-PORT pairs, by RESERVATION-TOKEN.
    reserved: HashMap<u64, (Family, u16)>,
    exhausted: bool,
}

/// Shares its state with the harness, which can inspect it and make the
/// next binds fail while the server owns the binder.
struct FakeBinder(Rc<RefCell<BinderState>>);

impl RelayBinder for FakeBinder {
    fn bind(&mut self, family: Family, _protocol: RelayProtocol, want: PortWant) -> Result<u16, RelayBindError> {
        let mut s = self.0.borrow_mut();
        let range = FIRST_PORT..FIRST_PORT + PORTS;
        let free = |p: u16| range.contains(&p) && !s.bound.contains(&(family, p));
        let port = range.clone().find(|&p| match want {
            PortWant::Any => free(p),
            PortWant::Even => p % 2 == 0 && free(p),
            PortWant::EvenPair(_) => p % 2 == 0 && free(p) && free(p + 1),
        });
        let port = match port {
            Some(p) if !s.exhausted => p,
            _ => return Err(RelayBindError::Exhausted),
        };
        s.bound.insert((family, port));
        if let PortWant::EvenPair(token) = want {
            s.bound.insert((family, port + 1));
            assert!(s.reserved.insert(token, (family, port + 1)).is_none(), "token reused");
        }
        s.binds.push((family, want, port));
        Ok(port)
    }

    fn claim(&mut self, token: u64) -> Result<(Family, u16), RelayBindError> {
        let mut s = self.0.borrow_mut();
        s.reserved.remove(&token).ok_or(RelayBindError::UnknownReservation)
    }

    fn forget(&mut self, token: u64) {
        let reserved = self.0.borrow_mut().reserved.remove(&token);
        if let Some((family, port)) = reserved {
            self.release(family, port);
        }
    }

    fn release(&mut self, family: Family, port: u16) {
        let mut s = self.0.borrow_mut();
        assert!(s.bound.remove(&(family, port)), "release of unbound port {port}");
        s.releases.push((family, port));
    }
}

// ---------------------------------------------------------------------
// Clients, credentials, messages

#[derive(Clone)]
struct Cred {
    username: String,
    key: LongTermKey,
}

impl Cred {
    fn new(username: &str, password: &str) -> Cred {
        Cred {
            username: username.to_owned(),
            key: auth::long_term_key(username, REALM, password),
        }
    }
}

fn alice() -> Cred {
    Cred::new("alice", "alice-pw")
}

fn carol() -> Cred {
    Cred::new("carol", "carol-pw")
}

fn ephemeral(secret: &str, now_unix: u64, ttl_secs: u64) -> Cred {
    let minted = auth::mint(secret.as_bytes(), Some("bob"), now_unix, Duration::from_secs(ttl_secs));
    Cred::new(&minted.username, &minted.password)
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

fn encode(
    class: Class,
    method: u16,
    id: TransactionId,
    build: impl Fn(&mut MessageWriter<'_>),
    auth: Option<(&Cred, &[u8])>,
) -> Vec<u8> {
    let mut buf = Vec::new();
    let mut w = MessageWriter::new(&mut buf, class, method, id);
    build(&mut w);
    match auth {
        None => w.finish(None, true),
        Some((cred, nonce)) => {
            w.bytes(attr::USERNAME, cred.username.as_bytes())
                .bytes(attr::REALM, REALM.as_bytes())
                .bytes(attr::NONCE, nonce);
            w.finish(Some(&stun::integrity_key(&cred.key)), true);
        }
    }
    buf
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

/// A [`super::server::ToPeer`] with its payload copied out.
#[derive(Debug, PartialEq, Eq)]
struct Relayed {
    relay: RelayAddr,
    peer: PeerAddr,
    payload: Vec<u8>,
}

fn relayed(relay: RelayAddr, peer: SocketAddr, payload: &[u8]) -> Option<Relayed> {
    Some(Relayed {
        relay,
        peer: PeerAddr(peer),
        payload: payload.to_vec(),
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
        assert!(v.len() > 4, "ERROR-CODE has a reason phrase");
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
        assert_eq!(msg.get(attr::NONCE).map(<[u8]>::len), Some(auth::NONCE_LEN));
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

// ---------------------------------------------------------------------
// Harness

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
        }
    }
}

struct Harness {
    server: Server<FakeBinder>,
    binder: Rc<RefCell<BinderState>>,
    quota: Arc<AllocationQuota>,
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
            relay_ip_v4: Some(RELAY_IP),
            relay_ip_v6: s.relay_ip_v6,
            max_allocation_lifetime: Duration::from_secs(3600),
            max_permissions: s.max_permissions,
            max_channels: s.max_channels,
            hairpin: s.hairpin,
            allocation_rate: s.allocation_rate,
        };
        let credentials = Credentials::new(CredentialsConfig {
            realm: REALM.to_owned(),
            users: vec![
                ("alice".to_owned(), auth::long_term_key("alice", REALM, "alice-pw")),
                ("carol".to_owned(), CAROL_KEY),
            ],
            secrets: SECRETS.iter().map(|s| s.as_bytes().to_vec()).collect(),
            nonce_ttl: Duration::from_secs(NONCE_TTL),
            nonce_key: [3; 32],
        });
        let quota = Arc::new(AllocationQuota::new(s.max_total, s.max_per_user));
        let binder = Rc::new(RefCell::new(BinderState::default()));
        let server = Server::new(
            config,
            credentials,
            PeerFilter::new(s.rules),
            quota.clone(),
            FakeBinder(binder.clone()),
            [9; 32],
        );
        // The one real clock read: an arbitrary origin for fake time.
        #[allow(clippy::disallowed_methods)]
        let base = Instant::now();
        Harness {
            server,
            binder,
            quota,
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

    fn binder(&self) -> Ref<'_, BinderState> {
        self.binder.borrow()
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
            });
        self.assert_quiet();
        out
    }

    /// Sends a request and returns the one answer, which must go to
    /// `client` and be the only effect.
    fn exchange_raw(&mut self, client: ClientAddr, packet: &[u8]) -> Vec<u8> {
        let now = self.now();
        assert_eq!(self.server.handle_client_packet(client, packet, now), None);
        let Some(Effect::Transmit { to, bytes }) = self.server.poll_effect() else {
            panic!("request not answered");
        };
        assert_eq!(to, client);
        self.assert_quiet();
        bytes
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
        if !self.nonces.contains_key(&client) {
            self.challenge(client, method, &build);
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

// ---------------------------------------------------------------------
// Binding (RFC 8489 §6.3)

fn binding_request(id: TransactionId, build: impl Fn(&mut MessageWriter<'_>)) -> Vec<u8> {
    encode(Class::Request, method::BINDING, id, build, None)
}

#[test]
fn binding_answers_with_the_clients_address_software_and_fingerprint() {
    let mut h = Harness::new();
    let v6 = ClientAddr {
        transport: Transport::Udp,
        local: addr("[2001:db8::1]:3478"),
        remote: addr("[2001:db8::99]:40000"),
    };
    for c in [client(1), v6] {
        let response = h.exchange(c, &binding_request([1; 12], none));
        response.assert_success();
        assert_eq!(response.types(), [attr::XOR_MAPPED_ADDRESS, attr::SOFTWARE]);
        assert_eq!(response.xor(attr::XOR_MAPPED_ADDRESS), c.remote);
        assert_eq!(response.attr(attr::SOFTWARE), Some(SOFTWARE.as_bytes()));
        assert!(!response.msg().has_integrity());
    }
    assert_eq!(h.server.allocation_count(), 0);
}

#[test]
fn binding_omits_software_when_none_is_configured() {
    let mut h = Harness::with(Settings {
        software: None,
        ..Settings::default()
    });
    let response = h.exchange(client(1), &binding_request([1; 12], none));
    response.assert_success();
    assert_eq!(response.types(), [attr::XOR_MAPPED_ADDRESS]);
    assert!(response.has_fingerprint());
}

#[test]
fn binding_with_unknown_comprehension_required_attribute_gets_420() {
    let mut h = Harness::new();
    // CHANGE-REQUEST (RFC 5780) is comprehension-required and not ours;
    // an unknown comprehension-optional one is ignored.
    let request = binding_request([1; 12], |w| {
        w.u32(0x0003, 0).u32(0x8055, 0);
    });
    let response = h.exchange(client(1), &request);
    response.assert_code(420);
    assert_eq!(response.attr(attr::UNKNOWN_ATTRIBUTES), Some(&[0x00, 0x03][..]));
    assert!(!response.msg().has_integrity());
}

#[test]
fn classic_binding_request_gets_mapped_address_and_its_16_byte_id_back() {
    let mut h = Harness::new();
    let c = client(1);
    let id: [u8; 16] = *b"RFC3489-client!!";
    let mut request = vec![0x00, 0x01, 0x00, 0x00];
    request.extend_from_slice(&id);
    let response = h.exchange_raw(c, &request);

    let mut expected = vec![0x01, 0x01, 0x00, 0x0C];
    expected.extend_from_slice(&id);
    expected.extend_from_slice(&[0x00, 0x01, 0x00, 0x08, 0x00, 0x01]);
    expected.extend_from_slice(&c.remote.port().to_be_bytes());
    expected.extend_from_slice(&[192, 0, 2, 101]);
    assert_eq!(response, expected);
    assert_eq!(stun::decode_address(&response[24..]), Ok(c.remote));
}

#[test]
fn request_of_an_unsupported_method_gets_400_without_integrity() {
    let mut h = Harness::new();
    let request = encode(Class::Request, method::SEND, [1; 12], udp, None);
    let response = h.exchange(client(1), &request);
    response.assert_code(400);
    assert!(!response.msg().has_integrity());
}

// ---------------------------------------------------------------------
// Long-term credentials (RFC 8489 §9.2)

#[test]
fn request_without_integrity_is_challenged_with_realm_and_nonce() {
    let mut h = Harness::new();
    let response = h.challenge(client(1), method::ALLOCATE, udp);
    assert_eq!(response.types(), [attr::ERROR_CODE, attr::REALM, attr::NONCE]);
    assert_eq!(h.server.allocation_count(), 0);
    assert!(h.binder().binds.is_empty());
}

#[test]
fn wrong_password_is_refused_with_401() {
    let mut h = Harness::new();
    h.request(client(1), &Cred::new("alice", "guess"), method::ALLOCATE, udp)
        .assert_challenge(401);
    assert_eq!(h.server.allocation_count(), 0);
}

#[test]
fn unknown_user_is_refused_with_401() {
    let mut h = Harness::new();
    h.request(client(1), &Cred::new("mallory", "alice-pw"), method::ALLOCATE, udp)
        .assert_challenge(401);
    assert_eq!(h.server.allocation_count(), 0);
}

#[test]
fn integrity_without_nonce_is_a_bad_request() {
    let mut h = Harness::new();
    let mut request = Vec::new();
    let mut w = MessageWriter::new(&mut request, Class::Request, method::ALLOCATE, [1; 12]);
    w.bytes(attr::REQUESTED_TRANSPORT, &UDP)
        .bytes(attr::USERNAME, b"alice")
        .bytes(attr::REALM, REALM.as_bytes());
    w.finish(Some(&stun::integrity_key(&alice().key)), true);

    let response = h.exchange(client(1), &request);
    response.assert_code(400);
    assert!(!response.msg().has_integrity());
    assert_eq!(response.attr(attr::NONCE), None);
    assert_eq!(h.server.allocation_count(), 0);
}

#[test]
fn nonce_is_stale_after_its_ttl_and_the_438_carries_a_fresh_one() {
    let mut h = Harness::new();
    let c = client(1);
    // CreatePermission without an allocation: 437 shows the nonce passed.
    h.permit(c, &[peer_a()]).assert_code(437);
    h.at(NONCE_TTL - 1);
    h.permit(c, &[peer_a()]).assert_code(437);
    h.at(NONCE_TTL);
    let old = h.nonces[&c].clone();
    let response = h.permit(c, &[peer_a()]);
    response.assert_challenge(438);
    assert_ne!(response.attr(attr::NONCE), Some(&old[..]));
    // The harness kept the new nonce, as a client does: the retry passes.
    h.permit(c, &[peer_a()]).assert_code(437);
}

#[test]
fn nonce_issued_to_another_client_address_is_stale() {
    let mut h = Harness::new();
    h.challenge(client(1), method::ALLOCATE, udp);
    let stolen = h.nonces[&client(1)].clone();
    h.nonces.insert(client(2), stolen);
    h.request(client(2), &alice(), method::ALLOCATE, udp)
        .assert_challenge(438);
    assert_eq!(h.server.allocation_count(), 0);
    h.allocate(client(2));
}

#[test]
fn precomputed_key_user_authenticates_like_a_password_user() {
    let mut h = Harness::new();
    h.request(client(1), &Cred::new("carol", "alice-pw"), method::ALLOCATE, udp)
        .assert_challenge(401);
    let relay = h.allocate_as(client(1), &carol());
    assert_eq!(relay.0, relay_at(FIRST_PORT));
}

#[test]
fn ephemeral_credential_is_accepted_until_it_expires() {
    let mut h = Harness::new();
    let bob = ephemeral(SECRETS[0], h.unix_now(), 120);
    h.allocate_as(client(1), &bob);
    h.at(119);
    h.allocate_as(client(2), &bob);
    h.at(120);
    h.request(client(3), &bob, method::ALLOCATE, udp).assert_challenge(401);
    h.refresh(client(1), &bob, None).assert_challenge(401);
    assert_eq!(h.server.allocation_count(), 2);
}

#[test]
fn ephemeral_credentials_of_both_shared_secrets_verify() {
    let mut h = Harness::new();
    let now = h.unix_now();
    h.allocate_as(client(1), &ephemeral(SECRETS[0], now, 60));
    h.allocate_as(client(2), &ephemeral(SECRETS[1], now, 60));
    h.request(client(3), &ephemeral("not-configured", now, 60), method::ALLOCATE, udp)
        .assert_challenge(401);
    assert_eq!(h.server.allocation_count(), 2);
}

// ---------------------------------------------------------------------
// Allocate (RFC 8656 §7.2)

#[test]
fn allocate_answers_with_relayed_address_lifetime_and_mapped_address() {
    let mut h = Harness::new();
    let c = client(1);
    let response = h.request(c, &alice(), method::ALLOCATE, udp);
    response.assert_success();
    assert_eq!(
        response.types(),
        [
            attr::XOR_RELAYED_ADDRESS,
            attr::LIFETIME,
            attr::XOR_MAPPED_ADDRESS,
            attr::SOFTWARE
        ]
    );
    assert_eq!(response.xor(attr::XOR_RELAYED_ADDRESS), relay_at(FIRST_PORT));
    assert_eq!(response.lifetime(), 600);
    assert_eq!(response.xor(attr::XOR_MAPPED_ADDRESS), c.remote);
    assert_eq!(h.binder().binds, [(Family::V4, PortWant::Any, FIRST_PORT)]);
    assert_eq!(h.server.allocation_count(), 1);
    assert_eq!(h.quota.total(), 1);
    assert_eq!(h.server.poll_timeout(), h.deadline(600));
}

#[test]
fn retransmitted_allocate_gets_the_identical_answer_and_no_second_bind() {
    let mut h = Harness::new();
    let c = client(1);
    let id = h.next_id();
    let request = h.authed(c, &alice(), method::ALLOCATE, id, udp);
    let first = h.exchange(c, &request);
    first.assert_success();
    h.at(2);
    let again = h.exchange(c, &request);
    assert_eq!(again.0, first.0);
    assert_eq!(h.binder().binds.len(), 1);
    assert_eq!(h.quota.total(), 1);
}

/// Found by the `server_client_packet` fuzz target: the stored answer of a
/// retransmitted Allocate must never go to another user.
#[test]
fn allocate_with_the_creators_transaction_id_from_another_user_is_441() {
    let mut h = Harness::new();
    let c = client(1);
    let id = h.next_id();
    let request = h.authed(c, &alice(), method::ALLOCATE, id, udp);
    h.exchange(c, &request).assert_success();
    let from_carol = h.authed(c, &carol(), method::ALLOCATE, id, udp);
    let answer = h.exchange(c, &from_carol);
    answer.assert_code(441);
    assert!(answer.msg().verify_integrity(&stun::integrity_key(&carol().key)));
    assert_eq!(h.binder().binds.len(), 1);
}

#[test]
fn second_allocate_on_the_same_five_tuple_is_437() {
    let mut h = Harness::new();
    let c = client(1);
    h.allocate(c);
    h.request(c, &alice(), method::ALLOCATE, udp).assert_code(437);
    assert_eq!(h.binder().binds.len(), 1);
    assert_eq!(h.quota.total(), 1);
}

#[test]
fn allocate_without_requested_transport_is_400() {
    let mut h = Harness::new();
    h.request(client(1), &alice(), method::ALLOCATE, none).assert_code(400);
    assert!(h.binder().binds.is_empty());
}

#[test]
fn allocate_for_an_unknown_transport_is_442() {
    let mut h = Harness::new();
    // 132 is SCTP: neither UDP (RFC 8656) nor TCP (RFC 6062).
    h.request(client(1), &alice(), method::ALLOCATE, |w| {
        w.bytes(attr::REQUESTED_TRANSPORT, &[132, 0, 0, 0]);
    })
    .assert_code(442);
    assert!(h.binder().binds.is_empty());
}

#[test]
fn allocate_for_ipv6_without_an_ipv6_relay_is_440() {
    let mut h = Harness::new();
    let ask_v6 = udp_and(|w| {
        w.bytes(attr::REQUESTED_ADDRESS_FAMILY, &IPV6_FAMILY);
    });
    h.request(client(1), &alice(), method::ALLOCATE, ask_v6)
        .assert_code(440);
    assert!(h.binder().binds.is_empty());
    assert_eq!(h.quota.total(), 0);
}

#[test]
fn allocate_for_ipv6_with_an_ipv6_relay_binds_an_ipv6_port() {
    let mut h = Harness::with(Settings {
        relay_ip_v6: Some(RELAY_IP_V6),
        ..Settings::default()
    });
    let ask_v6 = udp_and(|w| {
        w.bytes(attr::REQUESTED_ADDRESS_FAMILY, &IPV6_FAMILY);
    });
    let relay = h.request(client(1), &alice(), method::ALLOCATE, ask_v6).relay();
    assert_eq!(relay.0, SocketAddr::from((RELAY_IP_V6, FIRST_PORT)));
    assert_eq!(h.binder().binds, [(Family::V6, PortWant::Any, FIRST_PORT)]);
}

#[test]
fn additional_ipv6_family_gets_an_ipv4_relay_and_address_error_code_440() {
    let mut h = Harness::new();
    let also_v6 = udp_and(|w| {
        w.bytes(attr::ADDITIONAL_ADDRESS_FAMILY, &IPV6_FAMILY);
    });
    let response = h.request(client(1), &alice(), method::ALLOCATE, also_v6);
    assert_eq!(response.relay().0, relay_at(FIRST_PORT));
    let error = response.attr(attr::ADDRESS_ERROR_CODE).expect("ADDRESS-ERROR-CODE");
    assert_eq!(error[..4], [2, 0, 4, 40]);
}

fn v6_harness() -> Harness {
    Harness::with(Settings {
        relay_ip_v6: Some(RELAY_IP_V6),
        ..Settings::default()
    })
}

/// Allocates with ADDITIONAL-ADDRESS-FAMILY IPv6; returns both relays.
fn dual_allocate(h: &mut Harness, c: ClientAddr) -> (RelayAddr, RelayAddr) {
    let also_v6 = udp_and(|w| {
        w.bytes(attr::ADDITIONAL_ADDRESS_FAMILY, &IPV6_FAMILY);
    });
    let response = h.request(c, &alice(), method::ALLOCATE, also_v6);
    response.assert_success();
    assert_eq!(response.attr(attr::ADDRESS_ERROR_CODE), None);
    let relays: Vec<SocketAddr> = response
        .msg()
        .xor_addresses(attr::XOR_RELAYED_ADDRESS)
        .map(|r| r.expect("valid address"))
        .collect();
    assert_eq!(relays.len(), 2, "one relay per family");
    assert!(relays[0].is_ipv4() && relays[1].is_ipv6());
    (RelayAddr(relays[0]), RelayAddr(relays[1]))
}

fn peer_v6() -> SocketAddr {
    addr("[2606:4700::1111]:7000")
}

/// RFC 8656 §7.2: a dual allocation relays IPv4 peers through its IPv4
/// relay and IPv6 peers through its IPv6 relay, never across.
#[test]
fn dual_allocation_relays_each_family_through_its_own_relay() {
    let mut h = v6_harness();
    let c = client(1);
    let (v4, v6) = dual_allocate(&mut h, c);
    assert_eq!(v6.0, SocketAddr::from((RELAY_IP_V6, v6.0.port())));
    assert_eq!(h.binder().binds.len(), 2);
    h.permit(c, &[peer_a(), peer_v6()]).assert_success();
    assert_eq!(h.send(c, peer_a(), b"four"), relayed(v4, peer_a(), b"four"));
    assert_eq!(h.send(c, peer_v6(), b"six"), relayed(v6, peer_v6(), b"six"));
    h.assert_data_from_peer(v6, peer_v6(), c);
    h.assert_data_from_peer(v4, peer_a(), c);
    h.channel_bind(c, 0x4002, peer_v6()).assert_success();
    let packet = channel_data(0x4002, b"via channel");
    assert_eq!(h.client_packet(c, &packet), relayed(v6, peer_v6(), b"via channel"));
    // Deleting the allocation frees both relays.
    h.refresh(c, &alice(), Some(0)).assert_success();
    assert_eq!(h.binder().releases.len(), 2);
}

#[test]
fn single_family_allocation_refuses_peers_of_the_other_family_with_443() {
    let mut h = v6_harness();
    let c = client(1);
    h.allocate(c);
    h.permit(c, &[peer_v6()]).assert_code(443);
    h.channel_bind(c, 0x4001, peer_v6()).assert_code(443);
}

/// RFC 8656 §7.3: Refresh with LIFETIME 0 and REQUESTED-ADDRESS-FAMILY
/// deletes that family of a dual allocation and keeps the other.
#[test]
fn refresh_to_zero_for_one_family_keeps_the_other_relay() {
    let mut h = v6_harness();
    let c = client(1);
    let (v4, v6) = dual_allocate(&mut h, c);
    h.permit(c, &[peer_a(), peer_v6()]).assert_success();
    let drop_v6 = |w: &mut MessageWriter<'_>| {
        w.u32(attr::LIFETIME, 0)
            .bytes(attr::REQUESTED_ADDRESS_FAMILY, &IPV6_FAMILY);
    };
    h.request(c, &alice(), method::REFRESH, drop_v6).assert_success();
    assert_eq!(h.binder().releases, [(Family::V6, v6.0.port())]);
    assert_eq!(h.send(c, peer_v6(), b"gone"), None);
    assert_eq!(h.peer_sends(v6, peer_v6(), b"gone"), None);
    assert_eq!(h.send(c, peer_a(), b"kept"), relayed(v4, peer_a(), b"kept"));
    // The IPv6 family is no longer there to refresh.
    h.request(c, &alice(), method::REFRESH, drop_v6).assert_code(443);
    assert!(h.server.has_allocation(&c));
}

#[test]
fn requested_lifetime_is_capped_at_the_maximum_and_raised_to_the_default() {
    let mut h = Harness::with(Settings {
        max_per_user: 4,
        ..Settings::default()
    });
    for (n, asked, granted) in [(1, 7200, 3600), (2, 60, 600), (3, 1800, 1800), (4, 0, 600)] {
        let response = h.request(
            client(n),
            &alice(),
            method::ALLOCATE,
            udp_and(move |w| {
                w.u32(attr::LIFETIME, asked);
            }),
        );
        response.assert_success();
        assert_eq!(response.lifetime(), granted);
    }
    assert_eq!(h.server.poll_timeout(), h.deadline(600));
    h.at(600);
    assert_eq!(h.server.allocation_count(), 2);
    h.at(1800);
    assert_eq!(h.server.poll_timeout(), h.deadline(3600));
    assert_eq!(h.server.allocation_count(), 1);
}

#[test]
fn dont_fragment_is_accepted() {
    let mut h = Harness::new();
    let df = udp_and(|w| {
        w.bytes(attr::DONT_FRAGMENT, &[]);
    });
    h.request(client(1), &alice(), method::ALLOCATE, df).assert_success();
}

#[test]
fn unknown_attribute_in_an_authenticated_allocate_is_420_with_integrity() {
    let mut h = Harness::new();
    let odd = udp_and(|w| {
        w.u32(0x0003, 0);
    });
    let response = h.request(client(1), &alice(), method::ALLOCATE, odd);
    response.assert_code(420);
    assert_eq!(response.attr(attr::UNKNOWN_ATTRIBUTES), Some(&[0x00, 0x03][..]));
    assert!(response.msg().has_integrity());
    assert!(h.binder().binds.is_empty());
}

#[test]
fn per_user_quota_gives_486_until_an_allocation_is_deleted() {
    let mut h = Harness::new();
    h.allocate(client(1));
    h.allocate(client(2));
    h.request(client(3), &alice(), method::ALLOCATE, udp).assert_code(486);
    assert_eq!(h.binder().binds.len(), 2);
    // Another user is not affected.
    h.allocate_as(client(4), &carol());
    h.refresh(client(1), &alice(), Some(0)).assert_success();
    h.allocate(client(3));
    assert_eq!(h.quota.total(), 3);
}

#[test]
fn total_quota_gives_508() {
    let mut h = Harness::with(Settings {
        max_total: 2,
        ..Settings::default()
    });
    h.allocate(client(1));
    h.allocate_as(client(2), &carol());
    h.request(client(3), &alice(), method::ALLOCATE, udp).assert_code(508);
    assert_eq!(h.binder().binds.len(), 2);
    h.refresh(client(2), &carol(), Some(0)).assert_success();
    h.allocate(client(3));
}

#[test]
fn a_closed_quota_refuses_new_allocations_and_keeps_the_old_ones() {
    let mut h = Harness::new();
    h.allocate(client(1));
    h.quota.close();
    h.request(client(2), &carol(), method::ALLOCATE, udp).assert_code(508);
    assert_eq!(h.binder().binds.len(), 1, "no relay bound for a refused Allocate");
    // The live allocation goes on: refreshed, then deleted, which the
    // drain waits for.
    h.refresh(client(1), &alice(), Some(600)).assert_success();
    assert_eq!(h.quota.total(), 1);
    h.refresh(client(1), &alice(), Some(0)).assert_success();
    assert_eq!(h.quota.total(), 0);
}

#[test]
fn exhausted_binder_gives_508_and_leaks_no_quota() {
    let mut h = Harness::with(Settings {
        max_per_user: 1,
        ..Settings::default()
    });
    h.binder.borrow_mut().exhausted = true;
    h.request(client(1), &alice(), method::ALLOCATE, udp).assert_code(508);
    assert_eq!(h.quota.total(), 0);
    assert_eq!(h.server.allocation_count(), 0);
    assert_eq!(h.server.poll_timeout(), None);
    h.binder.borrow_mut().exhausted = false;
    // With one allocation per user, a leaked count would now give 486.
    h.allocate(client(1));
}

// ---------------------------------------------------------------------
// EVEN-PORT and RESERVATION-TOKEN (RFC 8656 §7.2, §18.8, §18.9)

fn even_port(reserve: bool) -> impl Fn(&mut MessageWriter<'_>) {
    udp_and(move |w| {
        w.bytes(attr::EVEN_PORT, &[if reserve { 0x80 } else { 0 }]);
    })
}

fn with_token(token: Vec<u8>) -> impl Fn(&mut MessageWriter<'_>) {
    udp_and(move |w| {
        w.bytes(attr::RESERVATION_TOKEN, &token);
    })
}

/// Allocates with EVEN-PORT and the R bit; returns the token.
fn reserve_pair(h: &mut Harness, c: ClientAddr) -> Vec<u8> {
    let response = h.request(c, &alice(), method::ALLOCATE, even_port(true));
    assert_eq!(response.relay().0, relay_at(FIRST_PORT + 1));
    let token = response.attr(attr::RESERVATION_TOKEN).expect("RESERVATION-TOKEN");
    let want = PortWant::EvenPair(u64::from_be_bytes(token.try_into().expect("8 bytes")));
    assert_eq!(h.binder().binds, [(Family::V4, want, FIRST_PORT + 1)]);
    assert!(h.binder().bound.contains(&(Family::V4, FIRST_PORT + 2)));
    token.to_vec()
}

#[test]
fn even_port_allocates_an_even_port() {
    let mut h = Harness::new();
    let response = h.request(client(1), &alice(), method::ALLOCATE, even_port(false));
    assert_eq!(response.relay().0, relay_at(FIRST_PORT + 1));
    assert_eq!(response.attr(attr::RESERVATION_TOKEN), None);
    assert_eq!(h.binder().binds, [(Family::V4, PortWant::Even, FIRST_PORT + 1)]);
}

#[test]
fn even_port_with_r_bit_reserves_the_next_port_for_the_token_holder() {
    let mut h = Harness::new();
    let token = reserve_pair(&mut h, client(1));
    assert_eq!(h.server.poll_timeout(), h.deadline(30));

    let response = h.request(client(2), &carol(), method::ALLOCATE, with_token(token.clone()));
    assert_eq!(response.relay().0, relay_at(FIRST_PORT + 2));
    assert_eq!(response.attr(attr::RESERVATION_TOKEN), None);
    assert_eq!(h.binder().binds.len(), 1, "the reserved port is used, not bound again");
    // The reservation is consumed: when its timer fires nothing is released.
    h.at(30);
    assert!(h.binder().releases.is_empty());
    h.request(client(3), &carol(), method::ALLOCATE, with_token(token))
        .assert_code(508);
    h.at(600);
    assert_eq!(
        h.binder().releases,
        [(Family::V4, FIRST_PORT + 1), (Family::V4, FIRST_PORT + 2)]
    );
}

#[test]
fn unknown_reservation_token_is_508() {
    let mut h = Harness::new();
    let response = h.request(client(1), &alice(), method::ALLOCATE, with_token(vec![7; 8]));
    response.assert_code(508);
    assert_eq!(h.quota.total(), 0);
    assert!(h.binder().binds.is_empty());
}

#[test]
fn reservation_expires_after_30_seconds() {
    let mut h = Harness::new();
    let token = reserve_pair(&mut h, client(1));
    h.at(29);
    assert!(h.binder().releases.is_empty());
    h.at(30);
    assert_eq!(h.binder().releases, [(Family::V4, FIRST_PORT + 2)]);
    assert_eq!(h.server.poll_timeout(), h.deadline(600));
    h.request(client(2), &alice(), method::ALLOCATE, with_token(token))
        .assert_code(508);
}

#[test]
fn even_port_together_with_a_reservation_token_is_400() {
    let mut h = Harness::new();
    let token = reserve_pair(&mut h, client(1));
    let both = udp_and(move |w| {
        w.bytes(attr::EVEN_PORT, &[0]).bytes(attr::RESERVATION_TOKEN, &token);
    });
    h.request(client(2), &carol(), method::ALLOCATE, both).assert_code(400);
    assert_eq!(h.server.allocation_count(), 1);
}

// ---------------------------------------------------------------------
// Lifetimes and Refresh (RFC 8656 §7.3)

#[test]
fn allocation_is_freed_after_its_lifetime() {
    let mut h = Harness::new();
    let c = client(1);
    h.allocate(c);
    assert_eq!(h.server.poll_timeout(), h.deadline(600));
    h.at(599);
    assert_eq!(h.server.allocation_count(), 1);
    assert!(h.binder().releases.is_empty());
    h.at(600);
    assert_eq!(h.server.allocation_count(), 0);
    assert_eq!(h.binder().releases, [(Family::V4, FIRST_PORT)]);
    assert_eq!(h.quota.total(), 0);
    assert_eq!(h.server.poll_timeout(), None);
    h.refresh(c, &alice(), None).assert_code(437);
}

#[test]
fn refresh_extends_the_allocation() {
    let mut h = Harness::new();
    let c = client(1);
    h.allocate(c);
    h.at(500);
    let response = h.refresh(c, &alice(), None);
    response.assert_success();
    assert_eq!(response.types(), [attr::LIFETIME, attr::SOFTWARE]);
    assert_eq!(response.lifetime(), 600);
    assert_eq!(h.server.poll_timeout(), h.deadline(1100));
    h.at(1099);
    assert_eq!(h.server.allocation_count(), 1);
    h.at(1100);
    assert_eq!(h.server.allocation_count(), 0);
    assert_eq!(h.binder().releases, [(Family::V4, FIRST_PORT)]);
}

#[test]
fn refresh_with_lifetime_zero_deletes_at_once_and_a_retransmission_gets_437() {
    let mut h = Harness::new();
    let c = client(1);
    let relay = h.allocate(c);
    h.permit(c, &[peer_a()]).assert_success();
    let id = h.next_id();
    let delete = |w: &mut MessageWriter<'_>| {
        w.u32(attr::LIFETIME, 0);
    };
    let response = h.request_with_id(c, &alice(), method::REFRESH, id, delete);
    response.assert_success();
    assert_eq!(response.lifetime(), 0);
    assert_eq!(h.server.allocation_count(), 0);
    assert_eq!(h.binder().releases, [(Family::V4, FIRST_PORT)]);
    assert_eq!(h.quota.total(), 0);
    assert_eq!(h.server.poll_timeout(), None);
    assert_eq!(h.peer_sends(relay, peer_a(), b"late"), None);
    h.request_with_id(c, &alice(), method::REFRESH, id, delete)
        .assert_code(437);
}

#[test]
fn refresh_by_another_user_on_the_same_five_tuple_is_441() {
    let mut h = Harness::new();
    let c = client(1);
    h.allocate(c);
    h.refresh(c, &carol(), Some(0)).assert_code(441);
    assert_eq!(h.server.allocation_count(), 1);
    assert_eq!(h.server.poll_timeout(), h.deadline(600));
}

#[test]
fn refresh_without_an_allocation_is_437() {
    let mut h = Harness::new();
    h.refresh(client(1), &alice(), None).assert_code(437);
}

// ---------------------------------------------------------------------
// CreatePermission (RFC 8656 §9)

#[test]
fn create_permission_without_a_peer_address_is_400() {
    let mut h = Harness::new();
    h.allocate(client(1));
    h.permit(client(1), &[]).assert_code(400);
}

#[test]
fn refused_peers_get_403_and_nothing_is_installed() {
    let mut h = Harness::new();
    let c = client(1);
    let relay = h.allocate(c);
    for refused in ["10.0.0.1:5000", "127.0.0.1:5000", "169.254.169.254:80"] {
        let refused = addr(refused);
        h.permit(c, &[peer_a(), refused]).assert_code(403);
        h.channel_bind(c, 0x4000, refused).assert_code(403);
        assert_eq!(
            h.send(c, peer_a(), b"x"),
            None,
            "the good peer got no permission either"
        );
        assert_eq!(h.send(c, refused, b"x"), None);
        assert_eq!(h.peer_sends(relay, refused, b"x"), None);
    }
}

#[test]
fn ipv6_peer_on_an_ipv4_allocation_is_443() {
    let mut h = Harness::new();
    h.allocate(client(1));
    h.permit(client(1), &[addr("[2606:4700:4700::1111]:53")])
        .assert_code(443);
}

#[test]
fn more_permissions_than_the_limit_is_508() {
    let mut h = Harness::new();
    let c = client(1);
    let four = ["8.8.8.8:1", "8.8.4.4:1", "1.1.1.1:1", "1.0.0.1:1"].map(addr);
    h.allocate(c);
    h.permit(c, &four).assert_success();
    h.permit(c, &[addr("9.9.9.9:1")]).assert_code(508);
    // Refreshing an existing one needs no room.
    h.permit(c, &[four[0]]).assert_success();
    // Expired ones make room again.
    h.at(300);
    h.permit(c, &[addr("9.9.9.9:1")]).assert_success();
}

// ---------------------------------------------------------------------
// Send and Data indications (RFC 8656 §11)

#[test]
fn send_indication_without_permission_is_dropped() {
    let mut h = Harness::new();
    let c = client(1);
    assert_eq!(h.send(c, peer_a(), b"hi"), None, "no allocation");
    h.allocate(c);
    assert_eq!(h.send(c, peer_a(), b"hi"), None);
}

#[test]
fn send_indication_with_permission_reaches_the_peer() {
    let mut h = Harness::new();
    let c = client(1);
    let relay = h.allocate(c);
    h.permit(c, &[peer_a()]).assert_success();
    assert_eq!(h.send(c, peer_a(), b"hello"), relayed(relay, peer_a(), b"hello"));
    // A permission is for the IP, whatever the port.
    let other_port = addr("8.8.8.8:9999");
    assert_eq!(h.send(c, other_port, b"x"), relayed(relay, other_port, b"x"));
    assert_eq!(h.send(c, peer_b(), b"x"), None);
}

#[test]
fn peer_packet_without_permission_is_dropped() {
    let mut h = Harness::new();
    let relay = h.allocate(client(1));
    assert_eq!(h.peer_sends(relay, peer_a(), b"hello"), None);
    let unknown_relay = RelayAddr(relay_at(FIRST_PORT + 5));
    assert_eq!(h.peer_sends(unknown_relay, peer_a(), b"hello"), None);
}

#[test]
fn peer_packet_with_permission_becomes_a_data_indication_in_place() {
    let mut h = Harness::new();
    let c = client(1);
    let relay = h.allocate(c);
    h.permit(c, &[peer_a()]).assert_success();
    for payload in [&b""[..], b"x", b"hello", b"four", &[0u8; 1200]] {
        let (to, bytes) = h.peer_sends(relay, peer_a(), payload).expect("relayed");
        assert_eq!(to, c);
        assert_data_indication(&bytes, peer_a(), payload);
    }
    h.assert_data_from_peer(relay, addr("8.8.8.8:9999"), c);
}

#[test]
fn permission_expires_after_300_seconds_and_create_permission_refreshes_it() {
    let mut h = Harness::new();
    let c = client(1);
    let relay = h.allocate(c);
    h.permit(c, &[peer_a()]).assert_success();
    h.at(200);
    h.permit(c, &[peer_a()]).assert_success();
    h.at(300);
    assert!(h.send(c, peer_a(), b"x").is_some(), "refreshed at 200 s");
    h.at(499);
    assert!(h.send(c, peer_a(), b"x").is_some());
    h.assert_data_from_peer(relay, peer_a(), c);
    h.at(500);
    assert_eq!(h.send(c, peer_a(), b"x"), None);
    assert_eq!(h.peer_sends(relay, peer_a(), b"y"), None);
}

#[test]
fn send_indication_to_a_service_port_of_an_own_address_is_dropped_despite_a_permission() {
    // Relay-to-relay on this server is allowed, and permissions are per
    // IP; a Send indication must still not reach the server's own
    // service ports through that permission.
    let rules = PeerRules {
        relay_ports: FIRST_PORT..=FIRST_PORT + PORTS - 1,
        service_ports: vec![3478],
        ..PeerRules::default()
    };
    let mut h = Harness::with(Settings {
        rules,
        ..Settings::default()
    });
    let c = client(1);
    let relay = h.allocate(c);
    let other_relay = addr("127.0.0.1:50005");
    let turn_port = addr("127.0.0.1:3478");
    h.permit(c, &[other_relay]).assert_success();
    assert_eq!(h.send(c, other_relay, b"hi"), relayed(relay, other_relay, b"hi"));
    h.permit(c, &[turn_port]).assert_code(403);
    h.channel_bind(c, 0x4000, turn_port).assert_code(403);
    assert_eq!(h.send(c, turn_port, b"hi"), None);
    assert_eq!(h.send(c, addr("127.0.0.1:22"), b"hi"), None);
}

/// Behind a 1:1 NAT the advertised relay IP (external_ip) may not hairpin:
/// relay-to-relay packets go to the local address and come back from it,
/// while clients and permissions only ever see the advertised address.
#[test]
fn relay_to_relay_goes_through_the_local_address_when_the_advertised_one_does_not_hairpin() {
    let local = std::net::IpAddr::from([10, 9, 9, 9]);
    let rules = PeerRules {
        own_ips: vec![RELAY_IP.into(), local],
        relay_ports: FIRST_PORT..=FIRST_PORT + PORTS - 1,
        ..PeerRules::default()
    };
    let mut h = Harness::with(Settings {
        rules,
        hairpin: RelayHairpin::new([(RELAY_IP.into(), local)], FIRST_PORT..=FIRST_PORT + PORTS - 1),
        ..Settings::default()
    });
    let (a, b) = (client(1), client(2));
    let (relay_a, relay_b) = (h.allocate(a), h.allocate(b));
    h.permit(a, &[relay_b.0]).assert_success();
    h.permit(b, &[relay_a.0]).assert_success();
    // Sent to B's local address rather than the advertised one...
    let on_the_wire = SocketAddr::new(local, relay_b.0.port());
    assert_eq!(h.send(a, relay_b.0, b"hi"), relayed(relay_a, on_the_wire, b"hi"));
    // ...it arrives at B's relay from A's local address, and B's client
    // sees A's advertised relay address, for which it has a permission.
    let from_the_wire = SocketAddr::new(local, relay_a.0.port());
    let (to, bytes) = h.peer_sends(relay_b, from_the_wire, b"hi").expect("relayed");
    assert_eq!(to, b);
    assert_data_indication(&bytes, relay_a.0, b"hi");
    // Outside the relay port range nothing is rewritten.
    let elsewhere = SocketAddr::new(RELAY_IP.into(), 3478);
    h.permit(a, &[elsewhere]).assert_code(403);
}

// ---------------------------------------------------------------------
// Channels (RFC 8656 §12)

#[test]
fn channel_number_outside_the_bindable_range_is_400() {
    // RFC 8656 narrowed the range to 0x4000-0x4FFF; channel_data.rs
    // deliberately still accepts RFC 5766's 0x4000-0x7FFF.
    let mut h = Harness::new();
    let c = client(1);
    h.allocate(c);
    let (min, max) = (ChannelNumber::MIN, ChannelNumber::MAX);
    for bad in [0x0000, min - 1, max + 1, 0xFFFF] {
        h.channel_bind(c, bad, peer_a()).assert_code(400);
    }
    h.channel_bind(c, min, peer_a()).assert_success();
    h.channel_bind(c, 0x4FFF, peer_b()).assert_success();
    h.channel_bind(c, max, addr("9.9.9.9:1")).assert_success();
}

#[test]
fn channel_bind_relays_channel_data_both_ways() {
    let mut h = Harness::new();
    let c = client(1);
    let relay = h.allocate(c);
    let response = h.channel_bind(c, 0x4001, peer_a());
    response.assert_success();
    assert_eq!(response.types(), [attr::SOFTWARE]);

    let packet = channel_data(0x4001, b"hello");
    assert_eq!(h.client_packet(c, &packet), relayed(relay, peer_a(), b"hello"));
    let (to, bytes) = h.peer_sends(relay, peer_a(), b"world!").expect("relayed");
    assert_eq!(to, c);
    assert_eq!(bytes, [&[0x40, 0x01, 0x00, 0x06][..], b"world!"].concat());
    // Another port of the same IP has the permission but not the channel.
    h.assert_data_from_peer(relay, addr("8.8.8.8:9999"), c);
    // ChannelData from another 5-tuple goes nowhere.
    assert_eq!(h.client_packet(client(2), &packet), None);
}

fn tcp_client(n: u8) -> ClientAddr {
    ClientAddr {
        transport: Transport::Tcp,
        ..client(n)
    }
}

/// RFC 8656 §12.5: on a stream, ChannelData is padded to 4 bytes (so the
/// reader can find the next frame); over UDP it is not.
#[test]
fn channel_data_to_a_tcp_client_is_padded_to_four_bytes() {
    let mut h = Harness::new();
    let c = tcp_client(1);
    let relay = h.allocate(c);
    h.channel_bind(c, 0x4001, peer_a()).assert_success();
    let (to, bytes) = h.peer_sends(relay, peer_a(), b"world!").expect("relayed");
    assert_eq!(to, c);
    assert_eq!(bytes, [&[0x40, 0x01, 0x00, 0x06][..], b"world!", &[0, 0]].concat());
    let (_, bytes) = h.peer_sends(relay, peer_a(), b"four").expect("relayed");
    assert_eq!(bytes, [&[0x40, 0x01, 0x00, 0x04][..], b"four"].concat());
}

/// RFC 8656 §3.1: a TCP/TLS allocation lives and dies with its connection.
#[test]
fn closing_a_stream_connection_deletes_its_allocation_at_once() {
    let mut h = Harness::new();
    let (c, other) = (tcp_client(1), tcp_client(2));
    let relay = h.allocate(c);
    h.allocate(other);
    h.server.handle_connection_closed(c, h.now().mono);
    h.assert_quiet();
    assert!(!h.server.has_allocation(&c));
    assert!(h.server.has_allocation(&other));
    assert_eq!(h.binder().releases, [(Family::V4, relay.0.port())]);
    assert_eq!(h.quota.total(), 1);
    // A connection without an allocation closing is a no-op.
    h.server.handle_connection_closed(tcp_client(3), h.now().mono);
    assert_eq!(h.binder().releases.len(), 1);
}

#[test]
fn channel_bind_installs_a_permission() {
    let mut h = Harness::new();
    let c = client(1);
    let relay = h.allocate(c);
    h.channel_bind(c, 0x4001, peer_a()).assert_success();
    assert_eq!(h.send(c, peer_a(), b"x"), relayed(relay, peer_a(), b"x"));
    h.assert_data_from_peer(relay, addr("8.8.8.8:1"), c);
}

#[test]
fn binding_a_number_to_another_peer_or_a_peer_to_another_number_is_400() {
    let mut h = Harness::new();
    let c = client(1);
    let relay = h.allocate(c);
    h.channel_bind(c, 0x4001, peer_a()).assert_success();
    h.channel_bind(c, 0x4001, peer_b()).assert_code(400);
    h.channel_bind(c, 0x4002, peer_a()).assert_code(400);
    assert_eq!(h.client_packet(c, &channel_data(0x4002, b"x")), None);
    assert_eq!(
        h.client_packet(c, &channel_data(0x4001, b"x")),
        relayed(relay, peer_a(), b"x")
    );
}

#[test]
fn rebinding_the_same_number_and_peer_refreshes_the_channel() {
    let mut h = Harness::new();
    let c = client(1);
    let relay = h.allocate(c);
    h.refresh(c, &alice(), Some(3600)).assert_success();
    h.channel_bind(c, 0x4001, peer_a()).assert_success();
    h.at(500);
    h.channel_bind(c, 0x4001, peer_a()).assert_success();
    h.at(700);
    let packet = channel_data(0x4001, b"x");
    assert_eq!(h.client_packet(c, &packet), relayed(relay, peer_a(), b"x"));
    let (_, bytes) = h.peer_sends(relay, peer_a(), b"y").unwrap();
    assert_eq!(bytes, [0x40, 0x01, 0x00, 0x01, b'y']);
}

#[test]
fn channel_stops_relaying_after_600_seconds() {
    let mut h = Harness::new();
    let c = client(1);
    let relay = h.allocate(c);
    h.refresh(c, &alice(), Some(3600)).assert_success();
    h.channel_bind(c, 0x4001, peer_a()).assert_success();
    // Keep the permission alive on its own, so only the channel expires.
    h.at(290);
    h.permit(c, &[peer_a()]).assert_success();
    h.at(580);
    h.permit(c, &[peer_a()]).assert_success();
    let packet = channel_data(0x4001, b"x");
    h.at(599);
    assert_eq!(h.client_packet(c, &packet), relayed(relay, peer_a(), b"x"));
    assert_eq!(
        h.peer_sends(relay, peer_a(), b"y").unwrap().1,
        [0x40, 0x01, 0x00, 0x01, b'y']
    );
    h.at(600);
    assert_eq!(h.client_packet(c, &packet), None);
    // The peer is still permitted, so its data comes as Data indications.
    h.assert_data_from_peer(relay, peer_a(), c);
}

#[test]
fn expired_channel_number_and_peer_stay_reserved_for_five_minutes() {
    let mut h = Harness::new();
    let c = client(1);
    h.allocate(c);
    h.refresh(c, &alice(), Some(3600)).assert_success();
    h.channel_bind(c, 0x4001, peer_a()).assert_success();
    h.at(899);
    h.channel_bind(c, 0x4001, peer_b()).assert_code(400);
    h.channel_bind(c, 0x4002, peer_a()).assert_code(400);
    h.at(900);
    h.channel_bind(c, 0x4001, peer_b()).assert_success();
    h.channel_bind(c, 0x4002, peer_a()).assert_success();
}

#[test]
fn more_channels_than_the_limit_is_508() {
    let mut h = Harness::with(Settings {
        max_channels: 2,
        ..Settings::default()
    });
    let c = client(1);
    h.allocate(c);
    h.channel_bind(c, 0x4001, peer_a()).assert_success();
    h.channel_bind(c, 0x4002, peer_b()).assert_success();
    h.channel_bind(c, 0x4003, addr("9.9.9.9:1")).assert_code(508);
    h.channel_bind(c, 0x4001, peer_a()).assert_success();
}

// ---------------------------------------------------------------------
// Hostile and malformed input

#[test]
fn malformed_client_packets_never_panic_and_produce_nothing() {
    let mut h = Harness::new();
    let c = client(1);
    h.allocate(c);
    h.channel_bind(c, 0x4001, peer_a()).assert_success();
    let binding = binding_request([1; 12], none);
    let mut bad_length = binding.clone();
    bad_length[2..4].copy_from_slice(&0xFFFCu16.to_be_bytes());
    let mut bad_fingerprint = binding.clone();
    *bad_fingerprint.last_mut().unwrap() ^= 1;
    let mut overrun = encode(
        Class::Request,
        method::BINDING,
        [1; 12],
        |w| {
            w.bytes(attr::SOFTWARE, b"abcd");
        },
        None,
    );
    overrun[22..24].copy_from_slice(&0x0100u16.to_be_bytes());
    let mut classic_allocate = vec![0x00, 0x03, 0x00, 0x00];
    classic_allocate.extend_from_slice(&[7; 16]);
    let success = encode(Class::Success, method::BINDING, [1; 12], none, None);
    let keepalive = encode(Class::Indication, method::BINDING, [1; 12], none, None);
    let cases: Vec<Vec<u8>> = vec![
        vec![],
        vec![0x00],
        binding[..19].to_vec(),
        binding[..binding.len() - 4].to_vec(),
        bad_length,
        bad_fingerprint,
        overrun,
        classic_allocate,
        success,
        keepalive,
        vec![0xFF; 64],
        vec![0x80; 3],
        b"GET / HTTP/1.1\r\n\r\n".to_vec(),
        channel_data(0x4002, b"unbound"),
        channel_data(0x8001, b"not a channel"),
        vec![0x40, 0x01, 0x00, 0x10, 1, 2],
        vec![0x40, 0x01],
    ];
    for case in &cases {
        assert_eq!(h.client_packet(c, case), None, "{case:02x?}");
    }
    // Every truncation and every bit flip of a valid authenticated request
    // breaks its length or its FINGERPRINT. (Flipping FINGERPRINT's own
    // type turns it into an unknown attribute after MESSAGE-INTEGRITY,
    // which RFC 8489 §14.5 says to ignore, so those bytes are skipped.)
    let id = h.next_id();
    let request = h.authed(client(2), &alice(), method::ALLOCATE, id, udp);
    for n in 0..request.len() {
        assert_eq!(h.client_packet(client(2), &request[..n]), None);
    }
    let fingerprint_type = request.len() - 8..request.len() - 6;
    for i in (0..request.len()).filter(|i| !fingerprint_type.contains(i)) {
        for bit in [0x01, 0x40, 0x80] {
            let mut flipped = request.clone();
            flipped[i] ^= bit;
            assert_eq!(h.client_packet(client(2), &flipped), None, "byte {i} bit {bit:#x}");
        }
    }
    assert_eq!(h.server.allocation_count(), 1);
}

#[test]
fn peer_packets_without_room_for_their_framing_are_dropped_not_panicking() {
    let mut h = Harness::new();
    let c = client(1);
    let relay = h.allocate(c);
    h.channel_bind(c, 0x4001, peer_a()).assert_success();
    h.permit(c, &[peer_b()]).assert_success();
    let now = h.now().mono;
    let mut handle = |peer: SocketAddr, buf: &mut [u8], payload| {
        h.server.handle_peer_packet(relay, PeerAddr(peer), buf, payload, now)
    };
    // No headroom: neither a ChannelData nor a Data indication header fits.
    for peer in [peer_a(), peer_b()] {
        assert_eq!(handle(peer, &mut b"hello".clone(), 0..5), None);
    }
    // No tailroom for an odd payload: a Data indication cannot be padded,
    // ChannelData over UDP needs no padding.
    let mut buf = vec![0; PEER_HEADROOM + 5];
    let payload = PEER_HEADROOM..PEER_HEADROOM + 5;
    assert_eq!(handle(peer_b(), &mut buf, payload.clone()), None);
    let out = handle(peer_a(), &mut buf, payload).expect("relayed");
    assert_eq!(out.range, PEER_HEADROOM - 4..PEER_HEADROOM + 5);
    // Too big for a ChannelData or STUN length field.
    let big = vec![0; 70_000];
    assert_eq!(h.peer_sends(relay, peer_a(), &big), None);
    assert_eq!(h.peer_sends(relay, peer_b(), &big), None);
    h.assert_quiet();
}

// ---------------------------------------------------------------------
// Reflection: answers to unauthenticated sources stay small

/// A spoofed source must not get a much larger answer than it sent
/// (DESIGN.md, security defaults): whatever an unauthenticated request
/// carries, the answer is a fixed-size challenge or error of at most 100
/// bytes, so even the smallest (20-byte) request is amplified less than 5x.
#[test]
fn unauthenticated_answers_are_small_whatever_the_request_carries() {
    let mut h = Harness::new();
    let big_unknown = |w: &mut MessageWriter<'_>| {
        for t in 0x0030..0x0050u16 {
            w.bytes(t, &[0xAB; 40]);
        }
    };
    for method in [
        method::ALLOCATE,
        method::REFRESH,
        method::CREATE_PERMISSION,
        method::CHANNEL_BIND,
        0x0FF,
    ] {
        for build in [&none as &dyn Fn(&mut MessageWriter<'_>), &big_unknown] {
            let id = h.next_id();
            let request = encode(Class::Request, method, id, build, None);
            let answer = h.exchange_raw(client(1), &request);
            assert!(answer.len() <= 100, "method {method:#x}: {} byte answer", answer.len());
        }
    }
    let id = h.next_id();
    let binding = encode(Class::Request, method::BINDING, id, big_unknown, None);
    let answer = h.exchange(client(1), &binding);
    answer.assert_code(420);
    assert!(answer.0.len() <= 100, "420 answer of {} bytes", answer.0.len());
}

// ---------------------------------------------------------------------
// TCP allocations (RFC 6062)

const TCP: [u8; 4] = [6, 0, 0, 0];

impl Harness {
    /// Sends an authenticated request and returns every effect it caused,
    /// for requests answered later or followed by other effects.
    fn effects_of(
        &mut self,
        client: ClientAddr,
        cred: &Cred,
        method: u16,
        build: impl Fn(&mut MessageWriter<'_>),
    ) -> Vec<Effect> {
        let id = self.next_id();
        let packet = self.authed(client, cred, method, id, build);
        let now = self.now();
        assert_eq!(self.server.handle_client_packet(client, &packet, now), None);
        std::iter::from_fn(|| self.server.poll_effect()).collect()
    }

    fn tcp_allocate(&mut self, client: ClientAddr) -> RelayAddr {
        self.request(client, &alice(), method::ALLOCATE, |w| {
            w.bytes(attr::REQUESTED_TRANSPORT, &TCP);
        })
        .relay()
    }

    /// Connect to `peer`; returns the connection id the server asks the
    /// driver to connect.
    fn connect(&mut self, client: ClientAddr, peer: SocketAddr) -> ConnectionId {
        let effects = self.effects_of(client, &alice(), method::CONNECT, |w| {
            w.xor_address(attr::XOR_PEER_ADDRESS, peer);
        });
        match effects.as_slice() {
            [Effect::ConnectPeer { id, peer: to, .. }] if to.0 == peer => *id,
            other => panic!("expected one ConnectPeer, got {other:?}"),
        }
    }
}

fn connection_id_of(bytes: &[u8]) -> ConnectionId {
    let msg = Message::parse(bytes).expect("STUN");
    ConnectionId(msg.u32_attr(attr::CONNECTION_ID).expect("CONNECTION-ID").unwrap())
}

#[test]
fn tcp_allocations_need_a_stream_control_connection_and_no_udp_options() {
    let mut h = Harness::new();
    let tcp_only = |w: &mut MessageWriter<'_>| {
        w.bytes(attr::REQUESTED_TRANSPORT, &TCP);
    };
    h.request(client(1), &alice(), method::ALLOCATE, tcp_only)
        .assert_code(400);
    let with_even_port = |w: &mut MessageWriter<'_>| {
        w.bytes(attr::REQUESTED_TRANSPORT, &TCP).bytes(attr::EVEN_PORT, &[0]);
    };
    h.request(tcp_client(1), &alice(), method::ALLOCATE, with_even_port)
        .assert_code(400);
    h.tcp_allocate(tcp_client(2));
    // No channels or Send indications on a TCP allocation.
    h.channel_bind(tcp_client(2), 0x4000, peer_a()).assert_code(400);
    h.permit(tcp_client(2), &[peer_a()]).assert_success();
    assert_eq!(h.send(tcp_client(2), peer_a(), b"x"), None);
}

#[test]
fn connect_needs_a_permission_and_answers_after_the_driver_connects() {
    let mut h = Harness::new();
    let c = tcp_client(1);
    let relay = h.tcp_allocate(c);
    let refused = h.effects_of(c, &alice(), method::CONNECT, |w| {
        w.xor_address(attr::XOR_PEER_ADDRESS, peer_a());
    });
    let [Effect::Transmit { bytes, .. }] = refused.as_slice() else {
        panic!("{refused:?}")
    };
    Response(bytes.clone()).assert_code(403);

    h.permit(c, &[peer_a()]).assert_success();
    let id = h.connect(c, peer_a());
    // A second Connect to the same peer while the first is pending: 446.
    let again = h.effects_of(c, &alice(), method::CONNECT, |w| {
        w.xor_address(attr::XOR_PEER_ADDRESS, peer_a());
    });
    let [Effect::Transmit { bytes, .. }] = again.as_slice() else {
        panic!("{again:?}")
    };
    Response(bytes.clone()).assert_code(446);

    h.server.handle_peer_connect_result(id, true, h.now().mono);
    let Some(Effect::Transmit { to, bytes }) = h.server.poll_effect() else {
        panic!("no answer")
    };
    assert_eq!(to, c);
    let answer = Response(bytes);
    answer.assert_success();
    assert!(answer.msg().verify_integrity(&stun::integrity_key(&alice().key)));
    assert_eq!(connection_id_of(&answer.0), id);
    h.assert_quiet();
    let _ = relay;
}

#[test]
fn a_failed_connect_is_447() {
    let mut h = Harness::new();
    let c = tcp_client(1);
    h.tcp_allocate(c);
    h.permit(c, &[peer_a()]).assert_success();
    let id = h.connect(c, peer_a());
    h.server.handle_peer_connect_result(id, false, h.now().mono);
    let Some(Effect::Transmit { bytes, .. }) = h.server.poll_effect() else {
        panic!("no answer")
    };
    Response(bytes).assert_code(447);
    assert_eq!(h.server.poll_effect(), Some(Effect::ClosePeerConnection { id }));
    // The peer may be connected again, but only while its permission lasts.
    let again = h.connect(c, peer_a());
    h.server.handle_peer_connection_closed(again);
    assert_eq!(h.server.poll_effect(), Some(Effect::ClosePeerConnection { id: again }));
    h.at(300);
    let expired = h.effects_of(c, &alice(), method::CONNECT, |w| {
        w.xor_address(attr::XOR_PEER_ADDRESS, peer_a());
    });
    let [Effect::Transmit { bytes, .. }] = expired.as_slice() else {
        panic!("{expired:?}")
    };
    Response(bytes.clone()).assert_code(403);
}

#[test]
fn connection_bind_from_a_new_connection_splices_it_after_the_answer() {
    let mut h = Harness::new();
    let (control, data) = (tcp_client(1), tcp_client(2));
    h.tcp_allocate(control);
    h.permit(control, &[peer_a()]).assert_success();
    let id = h.connect(control, peer_a());
    h.server.handle_peer_connect_result(id, true, h.now().mono);
    let _ = h.server.poll_effect();
    let bind = |w: &mut MessageWriter<'_>| {
        w.u32(attr::CONNECTION_ID, id.0);
    };
    // Another user cannot take the connection.
    let stolen = h.effects_of(data, &carol(), method::CONNECTION_BIND, bind);
    let [Effect::Transmit { bytes, .. }] = stolen.as_slice() else {
        panic!("{stolen:?}")
    };
    Response(bytes.clone()).assert_code(441);
    // Its owner can, from a fresh connection: answer first, then splice.
    let effects = h.effects_of(data, &alice(), method::CONNECTION_BIND, bind);
    let [Effect::Transmit { to, bytes }, Effect::Splice {
        id: spliced,
        data: with,
    }] = effects.as_slice()
    else {
        panic!("{effects:?}")
    };
    assert_eq!((*to, *spliced, *with), (data, id, data));
    Response(bytes.clone()).assert_success();
    // Bound once only.
    let twice = h.effects_of(tcp_client(3), &alice(), method::CONNECTION_BIND, bind);
    let [Effect::Transmit { bytes, .. }] = twice.as_slice() else {
        panic!("{twice:?}")
    };
    Response(bytes.clone()).assert_code(400);
    // Every answer was counted, the late Connect answer included.
    let requests = h.server.snapshot(h.now().mono).counters.requests;
    let count = |method: usize, code: u16| requests[method][stats::CODES.iter().position(|c| *c == code).unwrap()];
    assert_eq!(count(5, 200), 1, "connect");
    assert_eq!(
        (count(6, 200), count(6, 441), count(6, 400)),
        (1, 1, 1),
        "connection_bind"
    );
    // The data connection closing closes the peer connection.
    h.server.handle_connection_closed(data, h.now().mono);
    assert_eq!(h.server.poll_effect(), Some(Effect::ClosePeerConnection { id }));
}

#[test]
fn incoming_peer_connections_need_a_permission_and_expire_unbound_after_30_s() {
    let mut h = Harness::new();
    let c = tcp_client(1);
    let relay = h.tcp_allocate(c);
    let now = h.now().mono;
    assert_eq!(
        h.server.handle_incoming_peer_connection(relay, PeerAddr(peer_a()), now),
        None
    );
    h.assert_quiet();
    h.permit(c, &[peer_a()]).assert_success();
    let id = h
        .server
        .handle_incoming_peer_connection(relay, PeerAddr(peer_a()), h.now().mono)
        .expect("permitted");
    let Some(Effect::Transmit { to, bytes }) = h.server.poll_effect() else {
        panic!("no ConnectionAttempt")
    };
    assert_eq!(to, c);
    let msg = Message::parse(&bytes).unwrap();
    assert_eq!(
        (msg.class(), msg.method()),
        (Class::Indication, method::CONNECTION_ATTEMPT)
    );
    assert_eq!(msg.xor_address(attr::XOR_PEER_ADDRESS), Some(Ok(peer_a())));
    assert_eq!(connection_id_of(&bytes), id);
    h.at(29);
    let expiry = h.deadline(30).expect("a deadline");
    assert_eq!(h.server.poll_timeout(), Some(expiry));
    h.server.handle_timeout(expiry);
    assert_eq!(h.server.poll_effect(), Some(Effect::ClosePeerConnection { id }));
}

#[test]
fn closing_the_control_connection_closes_its_peer_connections() {
    let mut h = Harness::new();
    let c = tcp_client(1);
    h.tcp_allocate(c);
    h.permit(c, &[peer_a(), peer_b()]).assert_success();
    let (a, b) = (h.connect(c, peer_a()), h.connect(c, peer_b()));
    h.server.handle_connection_closed(c, h.now().mono);
    let closed: BTreeSet<_> = std::iter::from_fn(|| h.server.poll_effect())
        .collect::<Vec<_>>()
        .into_iter()
        .map(|e| match e {
            Effect::ClosePeerConnection { id } => id,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(closed, BTreeSet::from([a, b]));
    assert_eq!(h.binder().releases.len(), 1);
}

#[test]
fn reconfigure_keeps_allocations_and_judges_new_requests_by_the_new_rules() {
    let mut h = Harness::new();
    h.allocate(client(1));
    h.permit(client(1), &[peer_a()]).assert_success();
    // Reload: alice's password changes, peer_b's network is denied, and an
    // allocation may hold one permission.
    let credentials = Credentials::new(CredentialsConfig {
        realm: REALM.to_owned(),
        users: vec![
            ("alice".to_owned(), auth::long_term_key("alice", REALM, "new-pw")),
            ("carol".to_owned(), CAROL_KEY),
        ],
        secrets: Vec::new(),
        nonce_ttl: Duration::from_secs(NONCE_TTL),
        nonce_key: [3; 32],
    });
    let rules = PeerRules {
        deny: vec!["1.1.1.0/24".parse().expect("cidr")],
        ..PeerRules::default()
    };
    let config = ServerConfig {
        software: h.software.map(str::to_owned),
        relay_ip_v4: Some(RELAY_IP),
        relay_ip_v6: None,
        max_allocation_lifetime: Duration::from_secs(3600),
        max_permissions: 1,
        max_channels: 1,
        hairpin: RelayHairpin::default(),
        allocation_rate: 0,
    };
    h.server.reconfigure(config, credentials, PeerFilter::new(rules));
    assert!(h.server.has_allocation(&client(1)), "the allocation survived");
    // Its traffic still flows through the permission it had.
    let packet = send_indication(peer_a(), b"still here");
    assert!(h.client_packet(client(1), &packet).is_some());
    // The old password no longer signs; carol (unchanged) still allocates.
    h.request(client(2), &alice(), method::ALLOCATE, udp).assert_code(401);
    h.allocate_as(client(3), &carol());
    // The new filter and the new permission cap apply to new requests.
    h.request(client(3), &carol(), method::CREATE_PERMISSION, peers(&[peer_b()]))
        .assert_code(403);
    h.request(client(3), &carol(), method::CREATE_PERMISSION, peers(&[peer_a()]))
        .assert_success();
    h.request(
        client(3),
        &carol(),
        method::CREATE_PERMISSION,
        peers(&[addr("9.9.9.9:1")]),
    )
    .assert_code(508);
}

#[test]
fn an_allocation_byte_rate_drops_what_exceeds_it_in_both_directions() {
    let mut h = Harness::with(Settings {
        allocation_rate: 20_000,
        ..Settings::default()
    });
    let relay = h.allocate(client(1));
    h.permit(client(1), &[peer_a()]).assert_success();
    // The burst is max(rate / 2, 16 KiB) = 16384 bytes: 16 packets of
    // 1000 bytes pass at once, the rest are dropped.
    let payload = [7u8; 1000];
    let sent = (0..20)
        .filter(|_| h.send(client(1), peer_a(), &payload).is_some())
        .count();
    assert_eq!(sent, 16);
    // Traffic from the peer draws on the same bucket.
    assert!(h.peer_sends(relay, peer_a(), &payload).is_none());
    // Half a second refills 10 000 bytes.
    h.elapsed += Duration::from_millis(500);
    let passed = (0..20)
        .filter(|_| h.peer_sends(relay, peer_a(), &payload).is_some())
        .count();
    assert_eq!(passed, 10);
    let snapshot = h.server.snapshot(h.now().mono);
    assert_eq!(snapshot.counters.rate_limited[0].packets, 4 + 1 + 10);
    assert_eq!(snapshot.counters.rate_limited[0].bytes, 15_000);
    assert_eq!((snapshot.to_peer.packets, snapshot.to_client.packets), (16, 10));
}

#[test]
fn a_user_byte_rate_is_shared_by_all_allocations_of_the_user() {
    let mut h = Harness::new();
    h.quota.set_user_rate(20_000);
    h.allocate(client(1));
    h.allocate(client(2));
    h.allocate_as(client(3), &carol());
    let payload = [1u8; 1000];
    let mut sent = 0;
    for (c, cred) in [(client(1), alice()), (client(2), alice()), (client(3), carol())] {
        h.request(c, &cred, method::CREATE_PERMISSION, peers(&[peer_a()]))
            .assert_success();
    }
    for _ in 0..10 {
        for c in [client(1), client(2)] {
            sent += usize::from(h.send(c, peer_a(), &payload).is_some());
        }
    }
    assert_eq!(sent, 16, "alice's two allocations share one 16 KiB burst");
    // Carol has a bucket of her own.
    let carol_sent = (0..10)
        .filter(|_| h.send(client(3), peer_a(), &payload).is_some())
        .count();
    assert_eq!(carol_sent, 10);
    assert_eq!(h.server.snapshot(h.now().mono).counters.rate_limited[1].packets, 4);
}
