//! One test's world: a network namespace of the test's thread with the
//! device the frames "arrive" on, the routes the program's FIB lookups
//! find, and the program loaded with its maps.
//!
//! ```text
//!  xdp0 02:00:00:00:00:01   192.0.2.1/25, 2001:db8::1/64  (the server: listening and relayed addresses)
//!    gateway 192.0.2.126 / 2001:db8::fe, MAC 02:00:00:00:00:fe (permanent neighbour)
//!      ├─ 198.51.100.0/25, 203.0.113.0/25, 2001:db8:100::/48   peers and clients
//!    gateway 192.0.2.125 / 2001:db8::fd, no neighbour entry
//!      └─ 198.51.100.128/25, 2001:db8:200::/48                  (the lookup finds no MAC)
//!  xdp2 02:00:00:00:00:03   203.0.113.129/25, 2001:db8:300::1/64  another device
//!      neighbours 203.0.113.200 and 2001:db8:300::200            (reached, but not back out of xdp0)
//! ```
//!
//! Forwarding is on (the FIB lookup of an XDP program requires it). The
//! namespace goes with the thread; no packet leaves it (nothing is sent
//! at all: the program only runs under `BPF_PROG_TEST_RUN`).

use std::net::SocketAddr;

use turnpike::net::xdp::{
    ChannelRoute, Outgoing, PeerRoute, RelayMaps, RelayProgram, TestRunResult, Verdict, XdpAction, VERDICTS,
};

use crate::common::private_network::enter_private_network;
pub use crate::common::private_network::ip;

pub const DEVICE: &str = "xdp0";
pub const DEVICE_MAC: [u8; 6] = [2, 0, 0, 0, 0, 1];
pub const GATEWAY_MAC: [u8; 6] = [2, 0, 0, 0, 0, 0xfe];
/// What the program writes: neither the received TTL nor Linux's 64, so
/// that a test sees where it came from.
pub const TTL: u8 = 61;
pub const HOP_LIMIT: u8 = 62;
/// The TTL and hop limit of the frames the tests build.
pub const RECEIVED_HOPS: u8 = 50;
/// Route slots per map in the tests.
pub const MAX_ROUTES: u32 = 1024;

pub fn addr(s: &str) -> SocketAddr {
    s.parse().expect("a socket address")
}

/// The addresses of one family: the server's listening and relayed
/// addresses, a client and a peer behind the gateway, and a second
/// client (relay ↔ relay).
pub struct Family {
    pub server: SocketAddr,
    pub relay: SocketAddr,
    pub other_relay: SocketAddr,
    pub client: SocketAddr,
    pub other_client: SocketAddr,
    pub peer: SocketAddr,
    /// Routed through a gateway with no neighbour entry.
    pub unresolved_peer: SocketAddr,
    /// Reached through the other device.
    pub elsewhere_peer: SocketAddr,
}

pub fn v4() -> Family {
    Family {
        server: addr("192.0.2.1:3478"),
        relay: addr("192.0.2.1:49152"),
        other_relay: addr("192.0.2.1:49153"),
        client: addr("203.0.113.5:40000"),
        other_client: addr("203.0.113.9:41000"),
        peer: addr("198.51.100.7:9000"),
        unresolved_peer: addr("198.51.100.200:9000"),
        elsewhere_peer: addr("203.0.113.200:9000"),
    }
}

pub fn v6() -> Family {
    Family {
        server: addr("[2001:db8::1]:3478"),
        relay: addr("[2001:db8::1]:49152"),
        other_relay: addr("[2001:db8::1]:49153"),
        client: addr("[2001:db8:100::5]:40000"),
        other_client: addr("[2001:db8:100::9]:41000"),
        peer: addr("[2001:db8:100::7]:9000"),
        unresolved_peer: addr("[2001:db8:200::7]:9000"),
        elsewhere_peer: addr("[2001:db8:300::200]:9000"),
    }
}

pub fn both() -> [Family; 2] {
    [v4(), v6()]
}

/// `CLOCK_MONOTONIC` in nanoseconds, the clock of a route's expiry.
pub fn monotonic_ns() -> u64 {
    let mut now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes one timespec, which `now` is.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    assert_eq!(rc, 0, "clock_gettime");
    u64::try_from(now.tv_sec).unwrap() * 1_000_000_000 + u64::try_from(now.tv_nsec).unwrap()
}

/// An expiry an hour away.
pub fn in_an_hour() -> u64 {
    monotonic_ns() + 3600 * 1_000_000_000
}

pub struct Fixture {
    pub program: RelayProgram,
    pub maps: RelayMaps,
    pub ifindex: u32,
}

/// Writes a sysctl of the calling thread's network namespace.
pub fn sysctl(path: &str, value: &str) {
    let file = format!("/proc/sys/{path}");
    std::fs::write(&file, value).unwrap_or_else(|e| panic!("write {value} to {file}: {e}"));
}

fn network() {
    enter_private_network(&[]);
    let steps: &[&[&str]] = &[
        &[
            "link",
            "add",
            "xdp0",
            "address",
            "02:00:00:00:00:01",
            "type",
            "veth",
            "peer",
            "name",
            "xdp1",
        ],
        &[
            "link",
            "add",
            "xdp2",
            "address",
            "02:00:00:00:00:03",
            "type",
            "veth",
            "peer",
            "name",
            "xdp3",
        ],
        &["link", "set", "xdp0", "up"],
        &["link", "set", "xdp1", "up"],
        &["link", "set", "xdp2", "up"],
        &["link", "set", "xdp3", "up"],
        &["addr", "add", "192.0.2.1/25", "dev", "xdp0"],
        &["-6", "addr", "add", "2001:db8::1/64", "dev", "xdp0", "nodad"],
        &["addr", "add", "203.0.113.129/25", "dev", "xdp2"],
        &["-6", "addr", "add", "2001:db8:300::1/64", "dev", "xdp2", "nodad"],
        &[
            "neigh",
            "add",
            "192.0.2.126",
            "lladdr",
            "02:00:00:00:00:fe",
            "dev",
            "xdp0",
            "nud",
            "permanent",
        ],
        &[
            "-6",
            "neigh",
            "add",
            "2001:db8::fe",
            "lladdr",
            "02:00:00:00:00:fe",
            "dev",
            "xdp0",
            "nud",
            "permanent",
        ],
        &[
            "neigh",
            "add",
            "203.0.113.200",
            "lladdr",
            "02:00:00:00:00:fc",
            "dev",
            "xdp2",
            "nud",
            "permanent",
        ],
        &[
            "-6",
            "neigh",
            "add",
            "2001:db8:300::200",
            "lladdr",
            "02:00:00:00:00:fc",
            "dev",
            "xdp2",
            "nud",
            "permanent",
        ],
        &["route", "add", "198.51.100.0/25", "via", "192.0.2.126"],
        &["route", "add", "203.0.113.0/25", "via", "192.0.2.126"],
        &["route", "add", "198.51.100.128/25", "via", "192.0.2.125"],
        &["-6", "route", "add", "2001:db8:100::/48", "via", "2001:db8::fe"],
        &["-6", "route", "add", "2001:db8:200::/48", "via", "2001:db8::fd"],
    ];
    for step in steps {
        ip(step);
    }
    sysctl("net/ipv4/ip_forward", "1");
    sysctl("net/ipv6/conf/all/forwarding", "1");
}

impl Fixture {
    /// The namespace and the program, configured with [`TTL`] and
    /// [`HOP_LIMIT`].
    pub fn new() -> Fixture {
        let mut fixture = Fixture::unconfigured();
        fixture.maps.configure(TTL, HOP_LIMIT).expect("configure");
        fixture
    }

    /// The same, before user space has set the TTL and hop limit.
    pub fn unconfigured() -> Fixture {
        network();
        let name = std::ffi::CString::new(DEVICE).unwrap();
        // SAFETY: a NUL-terminated name; the call reads nothing else.
        let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
        assert_ne!(ifindex, 0, "{DEVICE} has no index");
        let (program, maps) = RelayProgram::load(MAX_ROUTES).expect("load the XDP program (needs root)");
        Fixture { program, maps, ifindex }
    }

    /// Installs, for family `f`, the client's channel 0x4001 to the peer
    /// and the peer's route back on the same channel.
    pub fn install_both_ways(&mut self, f: &Family) {
        let channel = ChannelRoute {
            client: f.client,
            server: f.server,
            channel: 0x4001,
        };
        let to_peer = Outgoing::ToPeer {
            relay: f.relay,
            peer: f.peer,
        };
        self.maps.install_channel(channel, to_peer, in_an_hour()).unwrap();
        let peer = PeerRoute {
            relay: f.relay,
            peer: f.peer,
        };
        let to_client = Outgoing::ToClient {
            server: f.server,
            client: f.client,
            channel: 0x4001,
        };
        self.maps.install_peer(peer, to_client, in_an_hour()).unwrap();
    }

    pub fn run(&self, frame: &[u8]) -> TestRunResult {
        self.program.test_run(frame, self.ifindex).expect("BPF_PROG_TEST_RUN")
    }

    /// Runs `frame` and checks the verdict: the action and the one verdict
    /// counter that moved, by exactly one.
    fn run_expecting(&self, frame: &[u8], action: XdpAction, why: Verdict) -> Vec<u8> {
        let before = self.maps.verdicts().expect("read the verdicts");
        let result = self.run(frame);
        let after = self.maps.verdicts().expect("read the verdicts");
        let mut moved = [0; VERDICTS];
        for (i, m) in moved.iter_mut().enumerate() {
            *m = after[i] - before[i];
        }
        let mut expected = [0; VERDICTS];
        expected[why as usize] = 1;
        assert_eq!(
            (result.action, moved),
            (action, expected),
            "expected {action:?} for {why:?}; the counters are indexed by Verdict"
        );
        result.frame
    }

    /// The program passes `frame` for `why`, untouched.
    pub fn expect_pass(&self, frame: &[u8], why: Verdict) {
        let out = self.run_expecting(frame, XdpAction::Pass, why);
        assert!(out == frame, "a passed frame must be left as it came");
    }

    /// The program sends `frame`'s rewrite back out; returns it.
    pub fn expect_tx(&self, frame: &[u8], why: Verdict) -> Vec<u8> {
        self.run_expecting(frame, XdpAction::Tx, why)
    }
}
