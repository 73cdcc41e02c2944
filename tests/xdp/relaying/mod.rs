//! The fast path relaying for real: a server with `fast_path = "xdp"` on
//! `tpx-s` of a [`Topology::for_the_fast_path`], its clients and peers in
//! the far namespace, and what `/metrics` says the program did (its
//! verdict counters) against what the clients saw. Often beside the same
//! run with the fast path off, which must look the same from outside.
//!
//! * [`routes`]: what gets a route (a channel each way, relay ↔ relay) and
//!   how its counts reach the relayed totals and the allocation's log line;
//! * [`uclient`]: coturn's `turnutils_uclient` through it, and off;
//! * [`aiortc`]: a relay-only WebRTC call through it;
//! * [`stops`]: every way a route ends, each at the next datagram;
//! * [`peers`]: a denied peer never reachable, and a reload denying one;
//! * [`ipv6`]: an IPv6 client's channel to an IPv6 peer through it, and an
//!   IPv4 client's to an IPv6 peer (RFC 6156) kept in user space.
//!
//! A route exists only for what user space would relay itself: UDP
//! clients and relays on concrete addresses, no byte-rate limit, one
//! family, a bound channel with a live permission, a peer the filter
//! allows; the servers here are made so, in both families (listening and
//! relaying on 10.211.0.1 and fd21::1).

#![allow(clippy::disallowed_methods)] // waits in black-box tests use the real clock

mod aiortc;
mod ipv6;
mod peers;
mod routes;
mod stops;
mod uclient;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::aiortc_call::log_field;
use crate::common::private_network::Namespace;
use crate::common::turn_client::{Source, TurnClient};
use crate::common::{
    free_tcp_port, run_with_timeout, sample_value, turnpike_bin, CmdOutput, ServerSetup, TestServer,
    LONG_TERM_USER_TOML, METRICS_SETTLE,
};
use crate::topology::{CLIENT, PEER, PEERS_TOML, SERVER_DEVICE, SERVER_IP, SERVER_IP6};

/// The metric family of the program's verdicts, one sample per verdict
/// (the snake_case of `Verdict` in src/net/xdp/maps.rs).
const VERDICTS: &str = "turnpike_fast_path_verdicts_total";
const ADMIN_KEY: &str = "an-admin-key-for-the-xdp-tests";
/// Signaling mints TURN credentials with it.
const SECRET: &str = "xdp-test-secret";
/// How long a datagram that must not arrive is waited for.
const SILENCE: Duration = Duration::from_secs(1);

/// How a server here differs from the base: the far namespace's peers
/// allowed, the long-term user, a secret, the admin API, no rate limit.
pub struct Setup<'a> {
    /// `fast_path = "xdp"` on these interfaces (the inside of a TOML list;
    /// by default `tpx-s`), or `None`: "off".
    pub interfaces: Option<&'a str>,
    /// `server.workers`: 1 puts every allocation on one shard, where
    /// relay ↔ relay has a route.
    pub workers: usize,
    pub peers_toml: &'a str,
    /// TOML after the base (`[limits]`, …).
    pub extra_toml: &'a str,
    /// The HTTP listener's address: [`SERVER_IP`] for clients in the far
    /// namespace that use signaling.
    pub http_ip: Ipv4Addr,
}

impl Default for Setup<'_> {
    fn default() -> Self {
        Setup {
            interfaces: Some("\"tpx-s\""),
            workers: 2,
            peers_toml: PEERS_TOML,
            extra_toml: "",
            http_ip: Ipv4Addr::LOCALHOST,
        }
    }
}

/// Starts the server `setup` describes, in the test thread's namespace,
/// listening and relaying on [`SERVER_IP`] and [`SERVER_IP6`]; with the fast path on, it must
/// have attached the program to `tpx-s`.
pub fn start(setup: &Setup<'_>) -> TestServer {
    let server = start_unchecked(setup);
    if setup.interfaces.is_some() {
        let attached = format!("turnpike_fast_path_attached{{interface=\"{SERVER_DEVICE}\",mode=\"native\"}}");
        assert_eq!(
            server.metric(&attached),
            Some(1.0),
            "not attached: {}",
            server.metrics()
        );
    }
    server
}

/// [`start`], whatever came of the fast path.
pub fn start_unchecked(setup: &Setup<'_>) -> TestServer {
    let relay_keys = match setup.interfaces {
        Some(interfaces) => format!("fast_path = \"xdp\"\nfast_path_interfaces = [{interfaces}]\n"),
        None => "fast_path = \"off\"\n".to_owned(),
    };
    let admin = SocketAddr::from(([127, 0, 0, 1], free_tcp_port()));
    let extra = format!(
        "[auth]\nsecrets = [\"{SECRET}\"]\n{LONG_TERM_USER_TOML}\n[admin]\nlisten = \"{admin}\"\nkey = \"{ADMIN_KEY}\"\n\n{}",
        setup.extra_toml
    );
    TestServer::start_setup(&ServerSetup {
        server_keys: &format!("workers = {}\n", setup.workers),
        listen_ip: SERVER_IP,
        relay_ip: SERVER_IP,
        ipv6: SERVER_IP6,
        http_ip: setup.http_ip,
        relay_keys: &relay_keys,
        peers_toml: setup.peers_toml,
        extra_toml: &extra,
        ..ServerSetup::default()
    })
}

/// `turnpike admin ARGS` against `server`, its URL and key read from the
/// server's config; it must succeed.
pub fn admin(server: &TestServer, args: &[&str]) -> CmdOutput {
    let mut command = Command::new(turnpike_bin());
    command
        .arg("--config")
        .arg(server.config_path())
        .arg("admin")
        .args(args)
        .env_remove("TURNPIKE_ADMIN_KEY");
    let out = run_with_timeout(&mut command, Duration::from_secs(10));
    assert!(out.success(), "turnpike admin {args:?}: {out:?}");
    out
}

/// The program's verdict counters as `/metrics` has them, by the
/// snake_case name of the verdict.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Verdicts(BTreeMap<String, u64>);

impl Verdicts {
    /// Parsed from a `/metrics` text.
    pub fn parse(text: &str) -> Verdicts {
        let mut counts = BTreeMap::new();
        for line in text.lines() {
            let Some(rest) = line.strip_prefix(VERDICTS).and_then(|r| r.strip_prefix('{')) else {
                continue;
            };
            let Some((labels, value)) = rest.rsplit_once("} ") else {
                continue;
            };
            let verdict = labels
                .split(',')
                .find_map(|l| l.strip_prefix("verdict=\"")?.strip_suffix('"'));
            if let (Some(verdict), Ok(value)) = (verdict, value.trim().parse::<f64>()) {
                counts.insert(verdict.to_owned(), value as u64);
            }
        }
        Verdicts(counts)
    }

    pub fn of(server: &TestServer) -> Verdicts {
        Verdicts::parse(&server.metrics())
    }

    pub fn get(&self, verdict: &str) -> u64 {
        self.0.get(verdict).copied().unwrap_or(0)
    }

    /// The datagrams the program sent itself (`tx_*`).
    pub fn tx(&self) -> u64 {
        self.0
            .iter()
            .filter(|(k, _)| k.starts_with("tx_"))
            .map(|(_, v)| v)
            .sum()
    }

    /// What moved since `before`, the verdicts that did not left out.
    pub fn since(&self, before: &Verdicts) -> Verdicts {
        Verdicts(
            self.0
                .iter()
                .map(|(k, v)| (k.clone(), v - before.get(k)))
                .filter(|(_, moved)| *moved > 0)
                .collect(),
        )
    }

    /// Of what moved, the `tx_*` verdicts.
    pub fn tx_only(&self) -> Verdicts {
        Verdicts(
            self.0
                .iter()
                .filter(|(k, _)| k.starts_with("tx_"))
                .map(|(k, v)| (k.clone(), *v))
                .collect(),
        )
    }

    /// The sum of `verdicts`.
    pub fn sum(&self, verdicts: &[&str]) -> u64 {
        verdicts.iter().map(|v| self.get(v)).sum()
    }

    /// `pairs` as counts, for comparisons.
    pub fn of_pairs(pairs: &[(&str, u64)]) -> Verdicts {
        Verdicts(pairs.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect())
    }
}

/// Scrapes until what moved since `before` satisfies `done`, for at most
/// [`METRICS_SETTLE`] (the counts are read from the program's maps, some
/// once a second); returns the last movement seen, which the caller
/// asserts on.
pub fn wait_moved(server: &TestServer, before: &Verdicts, done: impl Fn(&Verdicts) -> bool) -> Verdicts {
    let deadline = Instant::now() + METRICS_SETTLE;
    loop {
        let moved = Verdicts::of(server).since(before);
        if done(&moved) || Instant::now() >= deadline {
            return moved;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Routes installed now in `map` ("channels" or "peers"), as `/metrics`
/// has them.
fn routes(text: &str, map: &str) -> Option<f64> {
    sample_value(text, &format!("turnpike_fast_path_routes{{map=\"{map}\"}}"))
}

/// Waits (at most [`METRICS_SETTLE`]) until `/metrics` shows `channels`
/// routes and (unless `None`) `peers` routes; panics with the scrape if
/// it does not.
pub fn wait_routes(server: &TestServer, channels: f64, peers: Option<f64>) {
    let deadline = Instant::now() + METRICS_SETTLE;
    loop {
        let text = server.metrics();
        let seen = (routes(&text, "channels"), routes(&text, "peers"));
        if seen.0 == Some(channels) && (peers.is_none() || seen.1 == peers) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "routes (channels, peers): expected ({channels}, {peers:?}), scraped {seen:?}\n{text}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `turnpike_relayed_packets_total` and `turnpike_relayed_bytes_total`
/// of `direction` ("to_peer", "to_client").
pub fn relayed(text: &str, direction: &str) -> (Option<f64>, Option<f64>) {
    let label = format!("{{direction=\"{direction}\"}}");
    (
        sample_value(text, &format!("turnpike_relayed_packets_total{label}")),
        sample_value(text, &format!("turnpike_relayed_bytes_total{label}")),
    )
}

/// Waits (at most [`METRICS_SETTLE`]) until the relayed totals (packets,
/// bytes) are `to_peer` and `to_client`; panics with the scrape if they
/// are not.
pub fn wait_relayed(server: &TestServer, to_peer: (f64, f64), to_client: (f64, f64)) {
    let expected = (
        (Some(to_peer.0), Some(to_peer.1)),
        (Some(to_client.0), Some(to_client.1)),
    );
    let deadline = Instant::now() + METRICS_SETTLE;
    loop {
        let text = server.metrics();
        let seen = (relayed(&text, "to_peer"), relayed(&text, "to_client"));
        if seen == expected {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the relayed totals (packets, bytes) to the peer and to the client: {seen:?}, not {expected:?}\n{text}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The counts of the `allocation deleted` line of the allocation whose
/// relay is `relay`: packets and bytes to the peer, then to the client;
/// waits (at most [`METRICS_SETTLE`]) for the line.
pub fn deleted_counts(server: &TestServer, relay: SocketAddr) -> [u64; 4] {
    let relays = format!(" relays={relay} ");
    let deadline = Instant::now() + METRICS_SETTLE;
    loop {
        let log = server.stderr_log();
        if let Some(line) = log
            .lines()
            .find(|l| l.contains("allocation deleted") && l.contains(&relays))
        {
            return [
                "packets_to_peer",
                "bytes_to_peer",
                "packets_to_client",
                "bytes_to_client",
            ]
            .map(|field| log_field(line, field).unwrap_or_else(|| panic!("no {field} in {line}")));
        }
        assert!(
            Instant::now() < deadline,
            "no \"allocation deleted\" line for {relay}:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One UDP allocation from the far namespace with a channel bound to a
/// peer there: the client, the peer's socket, the relayed address.
pub struct Call {
    pub client: TurnClient,
    pub peer: UdpSocket,
    pub relayed: SocketAddr,
    pub channel: u16,
}

impl Call {
    /// Allocates and binds a channel to a new peer socket on `peer_ip`
    /// (the far namespace's [`PEER`] unless a test says otherwise).
    pub fn open(server: &TestServer, far: &Namespace) -> Call {
        Call::open_to(server, far, PEER)
    }

    pub fn open_to(server: &TestServer, far: &Namespace, peer: SocketAddr) -> Call {
        Call::open_between(server, far, CLIENT, peer)
    }

    /// A call from a client on `client` to the server's listener of its
    /// family, with a relay of `peer`'s family (asked for with
    /// REQUESTED-ADDRESS-FAMILY when it is IPv6).
    pub fn open_between(server: &TestServer, far: &Namespace, client: SocketAddr, peer: SocketAddr) -> Call {
        let addr = if client.is_ipv6() {
            server.addr_v6()
        } else {
            server.addr()
        };
        let (mut client, peer) = far.within(|| {
            let peer = UdpSocket::bind(peer).expect("bind the peer");
            (TurnClient::open_udp_from(client, addr), peer)
        });
        peer.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let (relayed, relay_ip) = if peer.local_addr().unwrap().is_ipv6() {
            (client.allocate_udp_v6(), IpAddr::V6(SERVER_IP6))
        } else {
            (client.allocate_udp(), IpAddr::V4(SERVER_IP))
        };
        assert_eq!(relayed.ip(), relay_ip, "relayed address");
        let (channel, bound) = client.channel_bind(peer.local_addr().unwrap());
        assert_eq!(bound, Ok(()), "ChannelBind");
        Call {
            client,
            peer,
            relayed,
            channel,
        }
    }

    /// ChannelData with `payload` from the client; what the peer got
    /// within `wait`, and from where.
    pub fn send_to_peer(&mut self, payload: &[u8], wait: Duration) -> Option<(Vec<u8>, SocketAddr)> {
        self.client.channel_data(self.channel, payload);
        self.peer.set_read_timeout(Some(wait)).unwrap();
        let mut buf = [0; 2048];
        let (n, from) = self.peer.recv_from(&mut buf).ok()?;
        Some((buf[..n].to_vec(), from))
    }

    /// `payload` from the peer to the relayed address; what the client got
    /// within `wait` (waiting no longer once one has come).
    pub fn send_to_client(&mut self, payload: &[u8], wait: Duration) -> Vec<(Source, Vec<u8>)> {
        self.peer.send_to(payload, self.relayed).expect("the peer sends");
        self.client
            .wait_arrivals(1, wait)
            .into_iter()
            .map(|a| (a.source, a.payload))
            .collect()
    }

    /// One datagram each way, each delivered and each sent by the program
    /// (its tx verdict counted once). Peers' payloads start with a byte
    /// that does not look like ChannelData (RFC 8656 §12), so a pass
    /// verdict of theirs is `pass_not_channel`.
    pub fn prove_fast_path(&mut self, server: &TestServer) {
        wait_routes(server, 1.0, Some(1.0));
        let before = Verdicts::of(server);
        let got = self.send_to_peer(b"over the fast path", Duration::from_secs(5));
        assert_eq!(
            got,
            Some((b"over the fast path".to_vec(), self.relayed)),
            "the peer's datagram"
        );
        let got = self.send_to_client(b"#back over the fast path", Duration::from_secs(5));
        assert_eq!(
            got,
            [(Source::Channel(self.channel), b"#back over the fast path".to_vec())],
            "the client's datagram"
        );
        let expected = Verdicts::of_pairs(&[("tx_to_client", 1), ("tx_to_peer", 1)]);
        let moved = wait_moved(server, &before, |m| m.tx_only() == expected);
        assert_eq!(moved.tx_only(), expected, "the program sent both: moved {moved:?}");
    }

    /// After the end of the call's route: the next datagram each way is
    /// seen by the program, which passes it (a route gone or expired), and
    /// user space delivers neither.
    pub fn assert_next_datagrams_stay_off_the_fast_path(&mut self, server: &TestServer) {
        let before = Verdicts::of(server);
        let got = self.send_to_peer(b"after the end", SILENCE);
        assert_eq!(got, None, "the peer got a datagram after the end");
        let moved = wait_moved(server, &before, |m| m.sum(&["pass_no_route", "pass_expired"]) == 1);
        assert_eq!(
            (moved.sum(&["pass_no_route", "pass_expired"]), moved.tx()),
            (1, 0),
            "the client's datagram after the end: moved {moved:?}"
        );
        let before = Verdicts::of(server);
        let got = self.send_to_client(b"#after the end", SILENCE);
        assert_eq!(got, [], "the client got a datagram after the end");
        let moved = wait_moved(server, &before, |m| m.sum(&["pass_not_channel", "pass_expired"]) == 1);
        assert_eq!(
            (moved.sum(&["pass_not_channel", "pass_expired"]), moved.tx()),
            (1, 0),
            "the peer's datagram after the end: moved {moved:?}"
        );
        wait_routes(server, 0.0, Some(0.0));
    }
}
