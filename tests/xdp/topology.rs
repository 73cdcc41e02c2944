//! The world of the tests that run a server with the program attached:
//! the test thread's namespace holds the server and one end of a veth
//! pair, a named namespace on the other end holds its clients and peers.
//!
//! ```text
//!  the test thread's namespace            tp-xdp-<pid>-<n> (named, removed on drop)
//!  turnpike on 10.211.0.1 ── tpx-s ═══ veth ═══ tpx-c ── client        10.211.0.2, fd21::2
//!      and fd21::1                                        peer          10.211.0.3, fd21::3
//!  (listening and relaying)                               denied peer   10.211.0.4
//! ```
//!
//! The IPv6 addresses are unique local ones (RFC 4193), added without
//! duplicate address detection so that they can be bound at once.
//!
//! Every datagram the server gets from the far side arrives on `tpx-s`
//! through the program. [`Topology::for_the_fast_path`] makes it one the
//! program can relay in, as docs/xdp.md says an operator's host must be:
//! forwarding on `tpx-s` (its FIB lookups need it; for IPv6 the switch
//! is `all`'s) and permanent neighbours for the far addresses (a lookup
//! finds no MAC address before ARP or neighbour discovery has run; the
//! program then passes, which would blur the counts); `tpx-s`'s IPv6 hop
//! limit set to [`HOP_LIMIT`], the host default the program writes; and,
//! on the far end, what a physical link gives for free:
//! checksums computed in software (veth otherwise hands the far side's
//! datagrams over with the UDP checksum only begun, which the program
//! would update as if it were whole) and an XDP program of its own, which
//! passes everything: veth wakes the receiving end for a frame `XDP_TX`
//! sent back only when that end has one (without, the frame waits in its
//! ring until the next ordinary packet comes). That program is turnpike's
//! own, loaded here with no route. No packet leaves the two namespaces.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use aya::programs::XdpMode;
use turnpike::net::xdp::RelayProgram;

use crate::common::private_network::{enter_private_network, Namespace};
use crate::common::process::run_with_timeout;
use crate::fixture::{ip, sysctl};

pub const SERVER_IP: Ipv4Addr = Ipv4Addr::new(10, 211, 0, 1);
pub const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(10, 211, 0, 2);
pub const PEER_IP: Ipv4Addr = Ipv4Addr::new(10, 211, 0, 3);
/// Never allowed by [`PEERS_TOML`].
pub const DENIED_PEER_IP: Ipv4Addr = Ipv4Addr::new(10, 211, 0, 4);
/// The client and the peer: any port.
pub const CLIENT: SocketAddr = SocketAddr::new(IpAddr::V4(CLIENT_IP), 0);
pub const PEER: SocketAddr = SocketAddr::new(IpAddr::V4(PEER_IP), 0);
pub const SERVER_IP6: Ipv6Addr = Ipv6Addr::new(0xfd21, 0, 0, 0, 0, 0, 0, 1);
pub const CLIENT_IP6: Ipv6Addr = Ipv6Addr::new(0xfd21, 0, 0, 0, 0, 0, 0, 2);
pub const PEER_IP6: Ipv6Addr = Ipv6Addr::new(0xfd21, 0, 0, 0, 0, 0, 0, 3);
/// The IPv6 client and peer: any port.
pub const CLIENT6: SocketAddr = SocketAddr::new(IpAddr::V6(CLIENT_IP6), 0);
pub const PEER6: SocketAddr = SocketAddr::new(IpAddr::V6(PEER_IP6), 0);
/// The hop limit of `tpx-s` with [`Topology::for_the_fast_path`]: not
/// Linux's 64, which the far end's datagrams arrive with, so that a peer
/// sees where the hop limit of what it got came from.
pub const HOP_LIMIT: u8 = 47;
pub const SERVER_DEVICE: &str = "tpx-s";
pub const FAR_DEVICE: &str = "tpx-c";
const SERVER_MAC: &str = "02:00:00:21:00:01";
const FAR_MAC: &str = "02:00:00:21:00:02";

/// The `[peers]` section of the servers here: the far namespace's
/// addresses are private (RFC 1918) and unique local (RFC 4193), which
/// the built-in filter refuses.
pub const PEERS_TOML: &str = "[peers]\nallow = [\"10.211.0.0/24\", \"fd21::/64\"]\ndeny = [\"10.211.0.4/32\"]\n";

/// The two namespaces and the veth pair between them.
pub struct Topology {
    pub far: Namespace,
    /// The far end's program, with [`Topology::for_the_fast_path`].
    _far_end: Option<RelayProgram>,
}

impl Topology {
    /// Moves the test thread into a namespace of its own with `tpx-s`,
    /// its veth peer in a new named namespace with the client's and the
    /// peers' addresses. Nothing forwards.
    pub fn new() -> Topology {
        enter_private_network(&[]);
        let far = Namespace::create("xdp");
        let n = far.name();
        ip(&[
            "link",
            "add",
            SERVER_DEVICE,
            "address",
            SERVER_MAC,
            "type",
            "veth",
            "peer",
            "name",
            FAR_DEVICE,
            "address",
            FAR_MAC,
            "netns",
            n,
        ]);
        ip(&["addr", "add", "10.211.0.1/24", "dev", SERVER_DEVICE]);
        ip(&["addr", "add", "fd21::1/64", "dev", SERVER_DEVICE, "nodad"]);
        ip(&["link", "set", SERVER_DEVICE, "up"]);
        for step in [
            &["addr", "add", "10.211.0.2/24", "dev", FAR_DEVICE][..],
            &["addr", "add", "10.211.0.3/24", "dev", FAR_DEVICE],
            &["addr", "add", "10.211.0.4/24", "dev", FAR_DEVICE],
            &["addr", "add", "fd21::2/64", "dev", FAR_DEVICE, "nodad"],
            &["addr", "add", "fd21::3/64", "dev", FAR_DEVICE, "nodad"],
            &["link", "set", FAR_DEVICE, "up"],
            &["link", "set", "lo", "up"],
        ] {
            ip(&[&["-n", n][..], step].concat());
        }
        Topology { far, _far_end: None }
    }

    /// [`Topology::new`], made a host the program relays in (the module
    /// doc says why each step).
    pub fn for_the_fast_path() -> Topology {
        let mut topology = Topology::new();
        sysctl("net/ipv4/ip_forward", "1");
        sysctl("net/ipv6/conf/all/forwarding", "1");
        sysctl(
            &format!("net/ipv6/conf/{SERVER_DEVICE}/hop_limit"),
            &HOP_LIMIT.to_string(),
        );
        let far_ips = [CLIENT_IP, PEER_IP, DENIED_PEER_IP].map(IpAddr::V4);
        for far_ip in far_ips.into_iter().chain([CLIENT_IP6, PEER_IP6].map(IpAddr::V6)) {
            let far_ip = far_ip.to_string();
            ip(&[
                "neigh",
                "add",
                &far_ip,
                "lladdr",
                FAR_MAC,
                "dev",
                SERVER_DEVICE,
                "nud",
                "permanent",
            ]);
        }
        for server_ip in [IpAddr::V4(SERVER_IP), IpAddr::V6(SERVER_IP6)] {
            ip(&[
                "-n",
                topology.far.name(),
                "neigh",
                "add",
                &server_ip.to_string(),
                "lladdr",
                SERVER_MAC,
                "dev",
                FAR_DEVICE,
                "nud",
                "permanent",
            ]);
        }
        let mut ethtool = topology.far.command("ethtool");
        let out = run_with_timeout(ethtool.args(["-K", FAR_DEVICE, "tx", "off"]), Duration::from_secs(10));
        assert!(out.success(), "ethtool -K {FAR_DEVICE} tx off: {}", out.combined());
        topology._far_end = Some(topology.far.within(|| {
            let (mut program, _no_routes) = RelayProgram::load(16).expect("load the far end's program");
            let name = std::ffi::CString::new(FAR_DEVICE).unwrap();
            // SAFETY: a NUL-terminated name; the call reads nothing else.
            let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
            assert_ne!(ifindex, 0, "{FAR_DEVICE} has no index");
            program
                .attach(ifindex, XdpMode::Driver)
                .expect("attach the far end's program");
            program
        }));
        topology
    }
}
