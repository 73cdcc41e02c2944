//! RFC 5780 NAT behaviour discovery through real NATs: the server with
//! its two addresses, a client of the RFC's mapping and filtering tests
//! ([`crate::common::nat_behaviour`], written from the RFC), and between
//! them a Linux router that an nftables ruleset makes into each kind of
//! NAT the tests tell apart:
//!
//! ```text
//!  the test thread's namespace           tp-nat-…: the NAT                     tp-lan-…: the client
//!  turnpike 10.212.0.1:P1 ─ tpn-s ══ veth ══ wan 10.212.0.254 ─ nft ─ lan 192.168.77.1 ══ veth ══ cl 192.168.77.2
//!  and      10.212.0.2:P2
//! ```
//!
//! | NAT (ruleset)                                  | mapping               | filtering            |
//! |------------------------------------------------|-----------------------|----------------------|
//! | none (the client beside the server)            | not NATed             | endpoint-independent |
//! | `masquerade`, every UDP datagram in forwarded  | endpoint-independent  | endpoint-independent |
//! | `masquerade`, in from what the port has sent to| endpoint-independent  | address-dependent    |
//! | `masquerade` (conntrack alone)                 | endpoint-independent  | address and port     |
//! | `masquerade fully-random`                      | address and port      | address and port     |
//!
//! What the NAT refuses reaches its input chain, which counts and drops
//! it: an unanswered test is an answer that was sent and filtered, not
//! one that was lost. All of it lives in namespaces the test makes and
//! removes.

use std::net::{Ipv4Addr, SocketAddr};

use crate::common::nat_behaviour::{Behaviour, Mapping, Probe};
use crate::common::private_network::{enter_private_network, ip, Namespace};
use crate::common::{free_udp_port, ScratchDir, ServerSetup, TestServer};

const PRIMARY_IP: Ipv4Addr = Ipv4Addr::new(10, 212, 0, 1);
const ALTERNATE_IP: Ipv4Addr = Ipv4Addr::new(10, 212, 0, 2);
const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 77, 2);

/// Everything of the NAT but its translation: forwarding the client's
/// datagrams out with its own address, and counting and dropping what
/// arrives for it from outside unforwarded.
const NAT_BASE: &str = "
table ip natbox {
    chain input {
        type filter hook input priority filter;
        iifname \"wan\" meta l4proto udp counter drop
    }
}
";

/// Endpoint-independent filtering: every UDP datagram that reaches the
/// NAT's outside is forwarded to the client (a \"DMZ host\").
const FULL_CONE: &str = "
table ip natbox {
    chain prerouting {
        type nat hook prerouting priority dstnat;
        iifname \"wan\" meta l4proto udp dnat to 192.168.77.2
    }
    chain postrouting {
        type nat hook postrouting priority srcnat;
        oifname \"wan\" masquerade
    }
}
";

/// Address-dependent filtering (RFC 4787 §5): a datagram from outside
/// comes in if the client's port has sent to that address, at any port.
const RESTRICTED_CONE: &str = "
table ip natbox {
    set contacted {
        type inet_service . ipv4_addr
        flags dynamic
    }
    chain forward {
        type filter hook forward priority filter;
        oifname \"wan\" meta l4proto udp update @contacted { udp sport . ip daddr }
    }
    chain prerouting {
        type nat hook prerouting priority dstnat;
        iifname \"wan\" udp dport . ip saddr @contacted dnat to 192.168.77.2
    }
    chain postrouting {
        type nat hook postrouting priority srcnat;
        oifname \"wan\" masquerade
    }
}
";

/// Conntrack alone: only answers from the exact address and port.
const PORT_RESTRICTED_CONE: &str = "
table ip natbox {
    chain postrouting {
        type nat hook postrouting priority srcnat;
        oifname \"wan\" masquerade
    }
}
";

/// A random outside port for every new destination.
const SYMMETRIC: &str = "
table ip natbox {
    chain postrouting {
        type nat hook postrouting priority srcnat;
        oifname \"wan\" masquerade fully-random
    }
}
";

/// The server on 10.212.0.1 with the alternate address 10.212.0.2, in the
/// test thread's namespace (which the caller has entered), on one end of
/// a veth pair whose other end, `tpn-x`, a [`Nat`] takes.
fn server() -> TestServer {
    let alternate = SocketAddr::from((ALTERNATE_IP, free_udp_port()));
    let listen_keys = format!("udp_alternate = [\"{alternate}\"]\n");
    ip(&["link", "add", "tpn-s", "type", "veth", "peer", "name", "tpn-x"]);
    for step in [
        &["addr", "add", "10.212.0.1/24", "dev", "tpn-s"][..],
        &["addr", "add", "10.212.0.2/24", "dev", "tpn-s"],
        &["link", "set", "tpn-s", "up"],
        &["link", "set", "tpn-x", "up"],
    ] {
        ip(step);
    }
    TestServer::start_setup(&ServerSetup {
        listen_ip: PRIMARY_IP,
        relay_ip: PRIMARY_IP,
        listen_keys: &listen_keys,
        ..ServerSetup::default()
    })
}

/// The router and the client's namespace, wired to the server's link
/// (`tpn-x`, the far end of `tpn-s`), translating as `ruleset` says.
struct Nat {
    router: Namespace,
    lan: Namespace,
    _rules: ScratchDir,
}

impl Nat {
    fn new(ruleset: &str) -> Nat {
        let router = Namespace::create("nat");
        let lan = Namespace::create("lan");
        ip(&["link", "set", "tpn-x", "netns", router.name()]);
        router.ip(&["link", "set", "tpn-x", "name", "wan"]);
        router.ip(&[
            "link",
            "add",
            "lan",
            "type",
            "veth",
            "peer",
            "name",
            "cl",
            "netns",
            lan.name(),
        ]);
        for step in [
            &["addr", "add", "10.212.0.254/24", "dev", "wan"][..],
            &["addr", "add", "192.168.77.1/24", "dev", "lan"],
            &["link", "set", "wan", "up"],
            &["link", "set", "lan", "up"],
            &["link", "set", "lo", "up"],
        ] {
            router.ip(step);
        }
        for step in [
            &["addr", "add", "192.168.77.2/24", "dev", "cl"][..],
            &["link", "set", "cl", "up"],
            &["link", "set", "lo", "up"],
            &["route", "add", "default", "via", "192.168.77.1"],
        ] {
            lan.ip(step);
        }
        in_namespace(&router, || {
            std::fs::write("/proc/sys/net/ipv4/ip_forward", "1").expect("turn forwarding on in the router");
        });
        let rules = ScratchDir::new("nft");
        let path = rules.path().join("nat.nft");
        std::fs::write(&path, format!("{NAT_BASE}{ruleset}")).expect("write the ruleset");
        let out = router.exec("nft", &["-f", path.to_str().expect("a UTF-8 path")]);
        assert!(out.success(), "nft -f: {}", out.combined());
        Nat {
            router,
            lan,
            _rules: rules,
        }
    }

    /// The mapping and filtering tests from the client, each from a fresh
    /// port (RFC 5780 §4.1).
    fn classify(&self, primary: SocketAddr) -> (Mapping, Behaviour) {
        in_namespace(&self.lan, || {
            let local = SocketAddr::from((CLIENT_IP, 0));
            let mapping = Probe::bind(local).mapping(primary).expect("the mapping test");
            let filtering = Probe::bind(local).filtering(primary).expect("the filtering test");
            (mapping, filtering)
        })
    }

    /// Datagrams from outside the NAT dropped (its input chain's count).
    fn dropped(&self) -> u64 {
        let out = self.router.exec("nft", &["list", "chain", "ip", "natbox", "input"]);
        assert!(out.success(), "nft list: {}", out.combined());
        let words: Vec<&str> = out.stdout.split_whitespace().collect();
        let at = words.iter().position(|w| *w == "packets").expect("a counter");
        words[at + 1].parse().expect("a packet count")
    }
}

/// Runs `f` on a thread inside `namespace`.
fn in_namespace<T: Send>(namespace: &Namespace, f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(|| {
            namespace.enter();
            f()
        })
        .join()
        .expect("the thread in the namespace")
    })
}

fn mapping(natted: bool, behaviour: Behaviour) -> Mapping {
    Mapping { natted, behaviour }
}

fn through(ruleset: &str) -> (Mapping, Behaviour, u64) {
    enter_private_network(&[]);
    let turnpike = server();
    let nat = Nat::new(ruleset);
    let (mapping, filtering) = nat.classify(turnpike.addr());
    (mapping, filtering, nat.dropped())
}

#[test]
fn without_a_nat_the_client_is_told_it_is_not_natted_and_unfiltered() {
    enter_private_network(&[]);
    let turnpike = server();
    // Beside the server: its own address is what the server maps.
    let local = SocketAddr::from((PRIMARY_IP, 0));
    let found = Probe::bind(local).mapping(turnpike.addr());
    assert_eq!(found, Ok(mapping(false, Behaviour::EndpointIndependent)));
    let filtering = Probe::bind(local).filtering(turnpike.addr());
    assert_eq!(filtering, Ok(Behaviour::EndpointIndependent));
}

#[test]
fn a_nat_forwarding_everything_is_endpoint_independent_both_ways() {
    let (mapping_found, filtering, dropped) = through(FULL_CONE);
    assert_eq!(mapping_found, mapping(true, Behaviour::EndpointIndependent));
    assert_eq!(filtering, Behaviour::EndpointIndependent);
    assert_eq!(dropped, 0);
}

#[test]
fn a_nat_letting_in_what_the_port_has_contacted_filters_by_address() {
    let (mapping_found, filtering, dropped) = through(RESTRICTED_CONE);
    assert_eq!(mapping_found, mapping(true, Behaviour::EndpointIndependent));
    assert_eq!(filtering, Behaviour::AddressDependent);
    assert!(dropped >= 1, "test II's answer reached the NAT: {dropped}");
}

#[test]
fn conntrack_alone_maps_independently_and_filters_by_address_and_port() {
    let (mapping_found, filtering, dropped) = through(PORT_RESTRICTED_CONE);
    assert_eq!(mapping_found, mapping(true, Behaviour::EndpointIndependent));
    assert_eq!(filtering, Behaviour::AddressAndPortDependent);
    assert!(
        dropped >= 2,
        "the answers to tests II and III reached the NAT: {dropped}"
    );
}

#[test]
fn a_random_port_for_every_destination_is_address_and_port_dependent_mapping() {
    let (mapping_found, filtering, dropped) = through(SYMMETRIC);
    assert_eq!(mapping_found, mapping(true, Behaviour::AddressAndPortDependent));
    assert_eq!(filtering, Behaviour::AddressAndPortDependent);
    assert!(
        dropped >= 2,
        "the answers to tests II and III reached the NAT: {dropped}"
    );
}
