//! The peer filter, black-box (docs/design.md, "Peer filter", issue 10):
//! over UDP, TCP and TLS client connections, every peer form the filter
//! must refuse gets 403 from CreatePermission, ChannelBind and RFC 6062
//! Connect, and neither Send indications nor ChannelData reach loopback
//! sinks this test binds, including services listening on free ports of
//! the server's own relay range; relay ↔ relay between two allocations of
//! the server works until one of them is deleted.
//!
//! Safety rule of the suite: private and public addresses are only ever
//! *named* in requests. Data packets are only aimed at loopback addresses
//! (or spellings that land on loopback: 0.0.0.0, ::, ::ffff:127.x) where
//! this test watches what arrives. Every wait is bounded.

// Black-box tests wait for conditions with real deadlines; the clock ban
// is for the sans-IO core.
#![allow(clippy::disallowed_methods)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, UdpSocket};
use std::thread;
use std::time::{Duration, Instant};

use crate::common::{
    transaction_id, Arrival, Source, TestServer, Transport, TurnClient as Client, LONG_TERM_USER_TOML,
    LOOPBACK_PEERS_TOML,
};
use turnpike::proto::stun::{attr, method, Class, Message, MessageWriter};

/// How long "nothing arrives" is watched for, after the last probe.
const QUIET: Duration = Duration::from_millis(300);
/// How long the expected arrivals (the controls) may take at most.
const ARRIVAL_WAIT: Duration = Duration::from_secs(3);

/// The server configurations the suite runs against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Setup {
    /// No `[peers]` section: the built-in deny list.
    DefaultPolicy,
    /// `peers.allow = ["127.0.0.0/8", "::1/128"]`, what the other tests use.
    LoopbackAllowed,
    /// The built-in deny list, relays advertised at `external_ip =
    /// "127.0.0.2"` while bound to 127.0.0.1: the hairpin rewrites packets
    /// for the advertised address to the local one.
    ExternalIp,
}

impl Setup {
    fn start(self) -> TestServer {
        let (server_keys, peers) = match self {
            Setup::DefaultPolicy => ("", ""),
            Setup::LoopbackAllowed => ("", LOOPBACK_PEERS_TOML),
            Setup::ExternalIp => ("external_ip = \"127.0.0.2\"", ""),
        };
        TestServer::start_with_peers(server_keys, peers, LONG_TERM_USER_TOML)
    }

    /// The IPv4 address relays are advertised at.
    fn advertised(self) -> IpAddr {
        match self {
            Setup::ExternalIp => ip("127.0.0.2"),
            _ => ip("127.0.0.1"),
        }
    }
}

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap_or_else(|e| panic!("{text:?}: {e}"))
}

/// Loopback addresses the suite names as peers and binds sinks on.
const LOOPBACK: [&str; 5] = ["127.0.0.1", "127.0.0.2", "127.1.2.3", "127.255.255.254", "::1"];

/// The host itself, spelled every way the filter must see through:
/// (address, whether `peers.allow = ["127.0.0.0/8", "::1/128"]` covers it).
const OWN_FORMS: [(&str, bool); 12] = [
    ("0.0.0.0", false),
    ("::", false),
    ("127.0.0.1", true),
    ("127.0.0.2", true),
    ("127.1.2.3", true),
    ("127.255.255.254", true),
    ("::1", true),
    // IPv4-mapped, IPv4-compatible, NAT64, 6to4, Teredo (client 127.0.0.1
    // stored inverted): all judged as 127.0.0.1.
    ("::ffff:127.0.0.1", true),
    ("::127.0.0.1", true),
    ("64:ff9b::7f00:1", true),
    ("2002:7f00:1::", true),
    ("2001:0:4136:e378:8000:63bf:80ff:fffe", true),
];

/// Addresses that are not the host's and never globally reachable. Named
/// in requests only.
const FOREIGN_FORMS: [&str; 23] = [
    "::ffff:10.0.0.1",
    "::10.0.0.1",
    "64:ff9b::a00:1",
    "2002:a00:1::",
    // Teredo, client 10.0.0.1 stored inverted.
    "2001:0:4136:e378:8000:63bf:f5ff:fffe",
    "169.254.169.254",
    "169.254.0.1",
    "100.64.0.1",
    "100.127.255.254",
    "10.0.0.1",
    "10.255.255.254",
    "172.16.0.1",
    "172.31.255.254",
    "192.168.0.1",
    "192.168.255.254",
    "224.0.0.1",
    "239.255.255.250",
    "255.255.255.255",
    "ff02::1",
    "fc00::1",
    "fd12:3456::1",
    "fe80::1",
    "febf::1",
];

// ---- a TURN client over UDP, TCP or TLS -------------------------------

/// A probe payload: a STUN Binding request (so that a STUN server reached
/// by mistake answers, and the answer shows up relayed) whose SOFTWARE
/// attribute names the probe.
fn probe(tag: &str) -> Vec<u8> {
    let mut buf = Vec::new();
    let mut w = MessageWriter::new(&mut buf, Class::Request, method::BINDING, transaction_id());
    w.bytes(attr::SOFTWARE, tag.as_bytes());
    w.finish(None, false);
    buf
}

/// What a payload says it is: the tag of a [`probe`], or a description.
fn tag_of(payload: &[u8]) -> String {
    match Message::parse(payload) {
        Ok(msg) => match (msg.class(), msg.get(attr::SOFTWARE)) {
            (Class::Request, Some(tag)) => String::from_utf8_lossy(tag).into_owned(),
            (class, _) => format!("a STUN {class:?} of method {:#05x}", msg.method()),
        },
        Err(_) => format!("{} bytes: {:02x?}", payload.len(), &payload[..payload.len().min(32)]),
    }
}

// ---- sinks --------------------------------------------------------------

/// A UDP socket or TCP listener on a loopback address this test holds:
/// what reached it, and what was expected to (the controls).
struct Sink<S> {
    addr: SocketAddr,
    socket: S,
    expected: Vec<String>,
    got: Vec<String>,
}

impl<S> Sink<S> {
    fn new(addr: SocketAddr, socket: S) -> Sink<S> {
        Sink {
            addr,
            socket,
            expected: Vec::new(),
            got: Vec::new(),
        }
    }
}

#[derive(Default)]
struct Sinks {
    udp: Vec<Sink<UdpSocket>>,
    tcp: Vec<Sink<TcpListener>>,
}

impl Sinks {
    /// Binds a UDP sink and a TCP listener on `addr`, each if it can (the
    /// server or another program may hold it); true if both are bound.
    fn bind(&mut self, addr: SocketAddr) -> bool {
        let udp = UdpSocket::bind(addr).and_then(|s| s.set_nonblocking(true).map(|()| s));
        let tcp = TcpListener::bind(addr).and_then(|l| l.set_nonblocking(true).map(|()| l));
        let both = udp.is_ok() && tcp.is_ok();
        self.udp.extend(udp.ok().map(|socket| Sink::new(addr, socket)));
        self.tcp.extend(tcp.ok().map(|socket| Sink::new(addr, socket)));
        both
    }

    fn watches_udp(&self, addr: SocketAddr) -> bool {
        self.udp.iter().any(|s| s.addr == addr)
    }

    fn expect_udp(&mut self, addr: SocketAddr, tag: &str) {
        let sink = self.udp.iter_mut().find(|s| s.addr == addr).expect("a UDP sink there");
        sink.expected.push(tag.to_owned());
    }

    fn expect_accept(&mut self, addr: SocketAddr) {
        let sink = self.tcp.iter_mut().find(|s| s.addr == addr).expect("a TCP sink there");
        sink.expected.push("a connection".to_owned());
    }

    /// Takes what is waiting on every sink (bounded per sink).
    fn poll(&mut self) {
        let mut buf = vec![0u8; 65_536];
        for sink in &mut self.udp {
            for _ in 0..1000 {
                let Ok((n, from)) = sink.socket.recv_from(&mut buf) else {
                    break;
                };
                sink.got.push(format!("{} (from {from})", tag_of(&buf[..n])));
            }
        }
        for sink in &mut self.tcp {
            for _ in 0..1000 {
                let Ok((_stream, from)) = sink.socket.accept() else {
                    break;
                };
                sink.got.push(format!("a connection (from {from})"));
            }
        }
    }

    fn all_expected_arrived(&self) -> bool {
        self.udp.iter().all(|s| s.expected.len() <= s.got.len())
            && self.tcp.iter().all(|s| s.expected.len() <= s.got.len())
    }

    /// Unexpected arrivals as leaks, missing expected ones as failed
    /// controls.
    fn judge(&self, report: &mut Vec<String>) {
        for (kind, addr, expected, got) in self
            .udp
            .iter()
            .map(|s| ("UDP sink", s.addr, &s.expected, &s.got))
            .chain(self.tcp.iter().map(|s| ("TCP listener", s.addr, &s.expected, &s.got)))
        {
            let mut unmatched = expected.clone();
            for arrival in got {
                match unmatched.iter().position(|e| arrival.starts_with(e.as_str())) {
                    Some(i) => {
                        unmatched.swap_remove(i);
                    }
                    None => report.push(format!("LEAK: {kind} {addr} got {arrival}")),
                }
            }
            for missing in unmatched {
                report.push(format!("control failed: {kind} {addr} never got {missing}"));
            }
        }
    }
}

/// Polls `sinks`, `clients` and `helper` for [`QUIET`], and longer (up
/// to [`ARRIVAL_WAIT`]) while expected arrivals are missing.
fn watch(sinks: &mut Sinks, clients: &mut [Client], helper: &mut Client, helper_expected: usize) {
    let start = Instant::now();
    loop {
        sinks.poll();
        for client in clients.iter_mut() {
            client.poll();
        }
        helper.poll();
        let complete = sinks.all_expected_arrived() && helper.arrivals.len() >= helper_expected;
        let elapsed = start.elapsed();
        if elapsed >= ARRIVAL_WAIT || elapsed >= QUIET && complete {
            return;
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// A port free on every [`LOOPBACK`] address for UDP and TCP, taken by
/// sinks there: from `candidates`, the first that all of them can bind.
fn claim_port(sinks: &mut Sinks, candidates: impl IntoIterator<Item = u16>) -> u16 {
    for port in candidates.into_iter().take(200) {
        let mut trial = Sinks::default();
        if LOOPBACK.iter().all(|a| trial.bind(SocketAddr::new(ip(a), port))) {
            sinks.udp.append(&mut trial.udp);
            sinks.tcp.append(&mut trial.tcp);
            return port;
        }
    }
    panic!("no port free on every loopback address for UDP and TCP");
}

/// Where a packet for `peer` lands if it is sent at all, when that is a
/// loopback address: 0.0.0.0 and :: reach the local host, and an
/// IPv4-mapped 127.x is 127.x. `None` for anything else, which the suite
/// never sends data to.
fn landing(peer: SocketAddr) -> Option<SocketAddr> {
    let ip = match peer.ip() {
        IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V4(v4) if v4.is_loopback() => peer.ip(),
        IpAddr::V6(v6) if v6.is_unspecified() || v6.is_loopback() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) if v4.is_loopback() => IpAddr::V4(v4),
            _ => return None,
        },
        IpAddr::V4(_) => return None,
    };
    Some(SocketAddr::new(ip, peer.port()))
}

fn assert_clean(report: &[String], context: &str) {
    assert!(
        report.is_empty(),
        "{context}: {} problem(s):\n  {}",
        report.len(),
        report.join("\n  ")
    );
}

// ---- the denied forms ---------------------------------------------------

/// A peer the suite names and expects refused.
struct Named {
    peer: SocketAddr,
    what: String,
}

/// The ports of the server and of the test that own forms are named on.
struct Ports {
    free_relay: u16,
    ephemeral: u16,
    listener: u16,
    tls: u16,
    http: u16,
}

/// Every peer a relay must refuse under `setup`. `live` are live relays
/// of this server (IPv4, IPv6) of the relay's protocol, `live_other` one
/// of the other protocol.
fn denied_peers(setup: Setup, ports: &Ports, live: (SocketAddr, SocketAddr), live_other: SocketAddr) -> Vec<Named> {
    let (live_same, live_same_v6) = live;
    let mut named = Vec::new();
    let mut name = |peer: SocketAddr, what: String| named.push(Named { peer, what });
    let port_roles = [
        (ports.free_relay, "a free relay-range port"),
        (ports.listener, "the server's UDP/TCP listener port"),
        (ports.tls, "the server's TLS port"),
        (ports.http, "the server's HTTP port"),
        (ports.ephemeral, "an ephemeral port outside the relay range"),
    ];
    for (form, allow_listed) in OWN_FORMS {
        for (port, role) in port_roles {
            // On a port that is neither a relay nor a service port, an
            // address in `peers.allow` is the operator's explicit allow.
            if setup == Setup::LoopbackAllowed && allow_listed && port == ports.ephemeral {
                continue;
            }
            name(SocketAddr::new(ip(form), port), format!("{form} on {role}"));
        }
    }
    // A live relay is reached only at its advertised address, its family
    // and its protocol.
    let live_port = live_same.port();
    name(
        SocketAddr::new(live_same.ip(), live_other.port()),
        format!("{} on the port of a live relay of the other protocol", live_same.ip()),
    );
    if live_same_v6.port() != live_port {
        name(
            SocketAddr::new(ip("::1"), live_port),
            "::1 on the port of a live IPv4 relay".into(),
        );
    }
    // Behind `external_ip`, 127.0.0.1 is where the relay is bound, not
    // where it is advertised.
    let other_loopback = match live_same.ip() == ip("127.0.0.1") {
        true => "127.0.0.2",
        false => "127.0.0.1",
    };
    let mapped = match live_same.ip() {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().to_string(),
        IpAddr::V6(v6) => v6.to_string(),
    };
    for form in [other_loopback, "0.0.0.0", &mapped, "::"] {
        name(
            SocketAddr::new(ip(form), live_port),
            format!("{form} on the port of a live relay at {}", live_same.ip()),
        );
    }
    for form in FOREIGN_FORMS {
        name(SocketAddr::new(ip(form), ports.free_relay), form.to_owned());
    }
    named
}

/// One server under one [`Setup`], with the live relays, sinks and
/// clients of a run of the denied forms, and what went wrong so far.
struct Run {
    setup: Setup,
    server: TestServer,
    report: Vec<String>,
    sinks: Sinks,
    ports: Ports,
    /// A UDP client with a dual allocation: its relays are the live UDP
    /// relays the probes name, and it receives the control data.
    helper: Client,
    helper_expected: Vec<String>,
    live: (SocketAddr, SocketAddr),
    /// Live TCP relays (IPv4, IPv6), each with its client.
    live_tcp: (SocketAddr, SocketAddr),
    _tcp_helpers: [Client; 2],
    /// Where data may be aimed although no sink can be bound there,
    /// because a leak shows at a client: the server's own STUN port (it
    /// would answer the probe's Binding request, relayed back) and the
    /// helper's relay sockets (behind the hairpin, 127.0.0.1 is where the
    /// relay is bound, not where it is advertised).
    observed: [SocketAddr; 4],
    /// Sinks off the relay range on every loopback address: reachable
    /// under [`Setup::LoopbackAllowed`].
    allowed_sinks: Vec<SocketAddr>,
    clients: Vec<Client>,
}

impl Run {
    fn start(setup: Setup) -> Run {
        let server = setup.start();
        let mut helper = Client::open(&server, Transport::Udp);
        let live = helper.allocate_udp_dual();
        assert_eq!(live.0.ip(), setup.advertised(), "the advertised relay address");
        let mut tcp_helpers = [
            Client::open(&server, Transport::Tcp),
            Client::open(&server, Transport::Tcp),
        ];
        let live_tcp = (tcp_helpers[0].allocate_tcp(false), tcp_helpers[1].allocate_tcp(true));

        // Sinks on every loopback address: a free port of the relay range,
        // an ephemeral port, the server's ports (where it does not hold
        // them) and the live relays' ports (in the protocols and families
        // they are not live in).
        let mut sinks = Sinks::default();
        let range = server.relay_ports();
        let free_relay = claim_port(&mut sinks, range.clone().rev());
        let ephemeral = claim_port(
            &mut sinks,
            (0..200)
                .map(|_| crate::common::free_udp_port())
                .filter(|p| !range.contains(p)),
        );
        let ports = Ports {
            free_relay,
            ephemeral,
            listener: server.addr().port(),
            tls: server.tls_addr().port(),
            http: server.http_addr().port(),
        };
        for port in [ports.listener, ports.tls, ports.http, live.0.port(), live_tcp.0.port()] {
            for address in LOOPBACK {
                sinks.bind(SocketAddr::new(ip(address), port));
            }
        }
        let observed = [
            server.addr(),
            server.addr_v6(),
            SocketAddr::new(ip("127.0.0.1"), live.0.port()),
            live.1,
        ];
        let allowed_sinks = LOOPBACK
            .iter()
            .map(|a| SocketAddr::new(ip(a), ports.ephemeral))
            .collect();
        Run {
            setup,
            server,
            report: Vec::new(),
            sinks,
            ports,
            helper,
            helper_expected: Vec::new(),
            live,
            live_tcp,
            _tcp_helpers: tcp_helpers,
            observed,
            allowed_sinks,
            clients: Vec::new(),
        }
    }

    fn expect_ok(&mut self, what: &str, result: Result<(), u16>) {
        if let Err(code) = result {
            self.report.push(format!("control failed: {what} got {code}"));
        }
    }

    /// Records a leak or a wrong code unless `result` is 403.
    fn expect_403(&mut self, what: &str, result: Result<(), u16>) {
        match result {
            Err(403) => {}
            Ok(()) => self.report.push(format!("LEAK: {what} was allowed")),
            Err(code) => self.report.push(format!("{what} got {code} instead of 403")),
        }
    }

    /// A UDP relay in each family over `transport`: the controls (data to
    /// live relays; under [`Setup::LoopbackAllowed`] to the allowed sinks
    /// too), then every denied peer in CreatePermission and ChannelBind,
    /// and Send and ChannelData to those that land on loopback.
    fn probe_udp_relay(&mut self, transport: Transport) {
        let mut client = Client::open(&self.server, transport);
        let (relay4, relay6) = client.allocate_udp_dual();
        // The helper takes data from this client's relays (live relays, so
        // allowed under any setup).
        for relay in [relay4, relay6] {
            let result = self.helper.create_permission(relay);
            self.expect_ok(&format!("the helper's CreatePermission to live relay {relay}"), result);
        }
        let live = [self.live.0, self.live.1];
        let allowed = match self.setup {
            Setup::LoopbackAllowed => self.allowed_sinks.clone(),
            _ => Vec::new(),
        };
        for peer in live.into_iter().chain(allowed.iter().copied()) {
            let what = format!("{transport:?}: CreatePermission to {peer}");
            let result = client.create_permission(peer);
            self.expect_ok(&what, result);
            let (number, bound) = client.channel_bind(peer);
            self.expect_ok(&format!("{transport:?}: ChannelBind to {peer}"), bound);
            for kind in ["Send", "ChannelData"] {
                let tag = format!("control: {kind} via {transport:?} to {peer}");
                match kind {
                    "Send" => client.send_indication(peer, &probe(&tag)),
                    _ => client.channel_data(number, &probe(&tag)),
                }
                match live.contains(&peer) {
                    true => self.helper_expected.push(tag),
                    false => self.sinks.expect_udp(peer, &tag),
                }
            }
        }
        if self.setup == Setup::LoopbackAllowed {
            // The operator's list also matches the IPv4 inside a mapped
            // address; if the server permits that spelling too, the Sends
            // to it below meet the filter rather than a missing permission.
            let _ = client.create_permission(SocketAddr::new(ip("::ffff:127.0.0.1"), self.ports.ephemeral));
        }
        // From here on, 127.0.0.1 and ::1 (all of 127/8 where allowed) have
        // permissions: only the filter stands between a Send and the sinks.
        for Named { peer, what } in denied_peers(self.setup, &self.ports, self.live, self.live_tcp.0) {
            let context = format!("{transport:?}, UDP relay: {peer} ({what})");
            let result = client.create_permission(peer);
            self.expect_403(&format!("CreatePermission {context}"), result);
            let (number, bound) = client.channel_bind(peer);
            self.expect_403(&format!("ChannelBind {context}"), bound);
            let Some(lands) = landing(peer) else {
                continue; // never aim data at a non-loopback address
            };
            if self.sinks.watches_udp(lands) || self.observed.contains(&lands) {
                client.send_indication(peer, &probe(&format!("Send {context}")));
                client.channel_data(number, &probe(&format!("ChannelData {context}")));
            }
        }
        self.clients.push(client);
    }

    /// An RFC 6062 TCP relay of one family over `transport` (TCP or TLS):
    /// the controls (Connect to a live TCP relay; under
    /// [`Setup::LoopbackAllowed`] to the allowed listeners too), then every
    /// denied peer of that family in CreatePermission and Connect.
    fn probe_tcp_relay(&mut self, transport: Transport, v6: bool) {
        let mut client = Client::open(&self.server, transport);
        client.allocate_tcp(v6);
        let live = if v6 { self.live_tcp.1 } else { self.live_tcp.0 };
        let allowed = match self.setup {
            Setup::LoopbackAllowed => self.allowed_sinks.clone(),
            _ => Vec::new(),
        };
        for peer in [live]
            .into_iter()
            .chain(allowed.into_iter().filter(|s| s.is_ipv6() == v6))
        {
            let result = client.create_permission(peer);
            self.expect_ok(&format!("{transport:?}: CreatePermission to {peer}"), result);
            let result = client.connect(peer);
            self.expect_ok(&format!("{transport:?}: Connect to {peer}"), result);
            if peer != live {
                self.sinks.expect_accept(peer);
            }
        }
        let denied = denied_peers(self.setup, &self.ports, self.live_tcp, self.live.0);
        for Named { peer, what } in denied.into_iter().filter(|n| n.peer.is_ipv6() == v6) {
            let context = format!("{transport:?}, TCP relay: {peer} ({what})");
            let result = client.create_permission(peer);
            self.expect_403(&format!("CreatePermission {context}"), result);
            let result = client.connect(peer);
            self.expect_403(&format!("Connect {context}"), result);
        }
        self.clients.push(client);
    }

    /// Watches what arrives: the controls, and nothing else.
    fn judge(mut self) {
        watch(
            &mut self.sinks,
            &mut self.clients,
            &mut self.helper,
            self.helper_expected.len(),
        );
        self.sinks.judge(&mut self.report);
        let mut helper_got = self.helper.take_arrivals(Duration::ZERO);
        for tag in &self.helper_expected {
            match helper_got.iter().position(|a| tag_of(&a.payload) == *tag) {
                Some(i) => {
                    helper_got.swap_remove(i);
                }
                None => self
                    .report
                    .push(format!("control failed: the live relay never got \"{tag}\"")),
            }
        }
        for arrival in helper_got {
            self.report.push(format!(
                "LEAK: the live relay got {} from {:?}",
                tag_of(&arrival.payload),
                arrival.source
            ));
        }
        for client in &mut self.clients {
            for arrival in client.take_arrivals(Duration::ZERO) {
                self.report.push(format!(
                    "LEAK: {:?} client got {} from {:?} (relayed back from a refused peer)",
                    client.transport,
                    tag_of(&arrival.payload),
                    arrival.source
                ));
            }
        }
        assert!(self.server.is_running(), "the server died");
        assert_clean(&self.report, &format!("{:?}", self.setup));
    }
}

/// Every denied form over every client transport, under `setup`.
fn denied_forms_are_refused(setup: Setup) {
    let mut run = Run::start(setup);
    for transport in [Transport::Udp, Transport::Tcp, Transport::Tls] {
        run.probe_udp_relay(transport);
        if transport != Transport::Udp {
            // RFC 6062 needs a TCP or TLS control connection.
            run.probe_tcp_relay(transport, false);
            run.probe_tcp_relay(transport, true);
        }
    }
    run.judge();
}

#[test]
fn every_denied_peer_form_is_refused_over_udp_tcp_and_tls_under_the_default_policy() {
    denied_forms_are_refused(Setup::DefaultPolicy);
}

#[test]
fn a_free_relay_range_port_stays_refused_when_loopback_is_allowed_while_an_ephemeral_loopback_sink_is_reachable() {
    denied_forms_are_refused(Setup::LoopbackAllowed);
}

#[test]
fn behind_an_external_ip_the_hairpin_reaches_live_relays_only() {
    denied_forms_are_refused(Setup::ExternalIp);
}

// ---- relay ↔ relay --------------------------------------------------------

/// True if `arrivals` hold `tag` from one of `sources`.
fn has(arrivals: &[Arrival], tag: &str, sources: &[Source]) -> bool {
    arrivals
        .iter()
        .any(|a| tag_of(&a.payload) == tag && sources.contains(&a.source))
}

/// Waits (bounded) until `client` has received every one of `tags` from
/// one of `sources`: a peer's Data indication or a channel's ChannelData,
/// whichever the server uses.
fn assert_receives(client: &mut Client, tags: &[&str], sources: &[Source]) {
    let deadline = Instant::now() + ARRIVAL_WAIT;
    let mut got = Vec::new();
    while !tags.iter().all(|t| has(&got, t, sources)) && Instant::now() < deadline {
        got.extend(client.take_arrivals(Duration::from_millis(50)));
    }
    for tag in tags {
        assert!(
            has(&got, tag, sources),
            "\"{tag}\" not relayed from {sources:?}; got {got:?}"
        );
    }
}

#[test]
fn relay_to_relay_works_both_ways_until_one_allocation_is_deleted() {
    let server = Setup::DefaultPolicy.start();
    let mut a = Client::open(&server, Transport::Udp);
    let mut b = Client::open(&server, Transport::Udp);
    let (relay_a, relay_b) = (a.allocate_udp(), b.allocate_udp());
    assert_eq!(a.create_permission(relay_b), Ok(()), "a permits b's relay");
    assert_eq!(b.create_permission(relay_a), Ok(()), "b permits a's relay");
    let (a_to_b, bound) = a.channel_bind(relay_b);
    assert_eq!(bound, Ok(()));
    let (b_to_a, bound) = b.channel_bind(relay_a);
    assert_eq!(bound, Ok(()));

    a.send_indication(relay_b, &probe("a to b, Send"));
    a.channel_data(a_to_b, &probe("a to b, ChannelData"));
    b.send_indication(relay_a, &probe("b to a, Send"));
    b.channel_data(b_to_a, &probe("b to a, ChannelData"));
    let from_a = [Source::Peer(relay_a), Source::Channel(b_to_a)];
    let from_b = [Source::Peer(relay_b), Source::Channel(a_to_b)];
    assert_receives(&mut b, &["a to b, Send", "a to b, ChannelData"], &from_a);
    assert_receives(&mut a, &["b to a, Send", "b to a, ChannelData"], &from_b);

    // b's allocation goes; a's channel and permission still name its relay.
    assert_eq!(b.delete_allocation(), Ok(()), "Refresh LIFETIME 0");
    let deadline = Instant::now() + ARRIVAL_WAIT;
    let sink = loop {
        match UdpSocket::bind(relay_b) {
            Ok(sink) => break Some(sink),
            Err(_) if Instant::now() < deadline => thread::sleep(Duration::from_millis(20)),
            Err(e) => {
                eprintln!("the freed relay port {relay_b} stayed bound ({e}); watching b's client only");
                break None;
            }
        }
    };
    a.send_indication(relay_b, &probe("a to the freed relay, Send"));
    a.channel_data(a_to_b, &probe("a to the freed relay, ChannelData"));

    // A new allocation shows that a still relays to live relays.
    let mut c = Client::open(&server, Transport::Udp);
    let relay_c = c.allocate_udp();
    assert_eq!(c.create_permission(relay_a), Ok(()), "c permits a's relay");
    let (a_to_c, bound) = a.channel_bind(relay_c);
    assert_eq!(bound, Ok(()), "a binds a channel to a new live relay");
    a.channel_data(a_to_c, &probe("a to c, ChannelData"));
    assert_receives(&mut c, &["a to c, ChannelData"], &[Source::Peer(relay_a)]);

    let mut leaks = Vec::new();
    if let Some(sink) = &sink {
        sink.set_read_timeout(Some(QUIET)).expect("set_read_timeout");
        let mut buf = [0u8; 2048];
        for _ in 0..100 {
            let Ok((n, from)) = sink.recv_from(&mut buf) else {
                break;
            };
            leaks.push(format!(
                "LEAK: a sink on the freed relay port got {} from {from}",
                tag_of(&buf[..n])
            ));
        }
    }
    for arrival in b.take_arrivals(QUIET) {
        leaks.push(format!(
            "LEAK: b, whose allocation is gone, got {} from {:?}",
            tag_of(&arrival.payload),
            arrival.source
        ));
    }
    assert_clean(&leaks, "after the delete");
}
