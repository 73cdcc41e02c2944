//! The server's side of NAT behaviour discovery (RFC 5780 §6): the four
//! UDP addresses a server needs to answer a CHANGE-REQUEST, and which of
//! them an answer leaves from (§6.1, Table 1).
//!
//! An [`AddressPair`] is a primary address A1:P1 (the first `listen.udp`
//! address of its family) and an alternate A2:P2 (`listen.udp_alternate`)
//! with A1 ≠ A2 and P1 ≠ P2; the driver listens on all four combinations
//! (A1:P1, A1:P2, A2:P1, A2:P2). For a request received on Da:Dp, one of
//! the four, Ca and Cp are the other IP and the other port: OTHER-ADDRESS
//! is always Ca:Cp, and the answer leaves from Da or Ca, Dp or Cp, as the
//! change-IP and change-port flags say.
//!
//! Invariants: every pair has two distinct IPs of one family and two
//! distinct ports, none of them 0 or unspecified ([`AddressPair::new`]
//! refuses anything else, so an OTHER-ADDRESS this server sends names
//! sockets it listens on, §6: "MUST NOT include an OTHER-ADDRESS" without
//! them); a request on an address of no pair gets no OTHER-ADDRESS and its
//! CHANGE-REQUEST is unknown (420).

use std::net::SocketAddr;

/// A1:P1 and A2:P2 of RFC 5780 §6.1.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AddressPair {
    primary: SocketAddr,
    alternate: SocketAddr,
}

impl AddressPair {
    /// `None` unless the two addresses have one family, different IPs,
    /// different ports, and none of them is 0 or the wildcard (a wildcard
    /// socket cannot say which address an answer leaves from).
    pub fn new(primary: SocketAddr, alternate: SocketAddr) -> Option<AddressPair> {
        let usable = |a: SocketAddr| a.port() != 0 && !a.ip().is_unspecified();
        let valid = usable(primary)
            && usable(alternate)
            && primary.is_ipv4() == alternate.is_ipv4()
            && primary.ip() != alternate.ip()
            && primary.port() != alternate.port();
        valid.then_some(AddressPair { primary, alternate })
    }

    pub fn primary(&self) -> SocketAddr {
        self.primary
    }

    pub fn alternate(&self) -> SocketAddr {
        self.alternate
    }

    /// A1:P1, A1:P2, A2:P1, A2:P2: every address the server listens on
    /// for this pair.
    pub fn sockets(&self) -> [SocketAddr; 4] {
        let (a1, a2) = (self.primary.ip(), self.alternate.ip());
        let (p1, p2) = (self.primary.port(), self.alternate.port());
        [
            SocketAddr::new(a1, p1),
            SocketAddr::new(a1, p2),
            SocketAddr::new(a2, p1),
            SocketAddr::new(a2, p2),
        ]
    }

    /// The other IP and the other port than those of `local` (Ca, Cp),
    /// if `local` is one of [`Self::sockets`].
    fn other_than(&self, local: SocketAddr) -> Option<SocketAddr> {
        let (a1, a2) = (self.primary.ip(), self.alternate.ip());
        let (p1, p2) = (self.primary.port(), self.alternate.port());
        let ca = match local.ip() {
            ip if ip == a1 => a2,
            ip if ip == a2 => a1,
            _ => return None,
        };
        let cp = match local.port() {
            port if port == p1 => p2,
            port if port == p2 => p1,
            _ => return None,
        };
        Some(SocketAddr::new(ca, cp))
    }
}

/// The address pairs of a server, at most one per family (the config
/// allows no more).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NatDiscovery {
    pairs: Vec<AddressPair>,
}

/// Where a request arrived, for a server that can answer it from an
/// alternate address: Da:Dp and Ca:Cp of RFC 5780 §6.1.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Quartet {
    /// Da:Dp, where the request arrived.
    pub received: SocketAddr,
    /// Ca:Cp, OTHER-ADDRESS.
    pub other: SocketAddr,
}

impl Quartet {
    /// The address an answer leaves from (Table 1): the other IP for
    /// change-IP, the other port for change-port.
    pub fn source(&self, change_ip: bool, change_port: bool) -> SocketAddr {
        let ip = if change_ip { self.other.ip() } else { self.received.ip() };
        let port = if change_port {
            self.other.port()
        } else {
            self.received.port()
        };
        SocketAddr::new(ip, port)
    }
}

impl NatDiscovery {
    pub fn new(pairs: impl IntoIterator<Item = AddressPair>) -> NatDiscovery {
        NatDiscovery {
            pairs: pairs.into_iter().collect(),
        }
    }

    pub fn pairs(&self) -> &[AddressPair] {
        &self.pairs
    }

    /// The quartet `local` belongs to, if it is one of the four addresses
    /// of a pair.
    pub(super) fn at(&self, local: SocketAddr) -> Option<Quartet> {
        self.pairs
            .iter()
            .find_map(|pair| pair.other_than(local).map(|other| Quartet { received: local, other }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    fn pair() -> AddressPair {
        AddressPair::new(addr("192.0.2.1:3478"), addr("192.0.2.2:3479")).unwrap()
    }

    #[test]
    fn a_pair_needs_two_ips_of_one_family_two_ports_and_no_wildcard() {
        assert!(AddressPair::new(addr("192.0.2.1:3478"), addr("192.0.2.1:3479")).is_none());
        assert!(AddressPair::new(addr("192.0.2.1:3478"), addr("192.0.2.2:3478")).is_none());
        assert!(AddressPair::new(addr("0.0.0.0:3478"), addr("192.0.2.2:3479")).is_none());
        assert!(AddressPair::new(addr("192.0.2.1:3478"), addr("192.0.2.2:0")).is_none());
        assert!(AddressPair::new(addr("192.0.2.1:3478"), addr("[2001:db8::2]:3479")).is_none());
        assert!(AddressPair::new(addr("[2001:db8::1]:3478"), addr("[2001:db8::2]:3479")).is_some());
    }

    #[test]
    fn the_four_sockets_and_table_1_of_rfc_5780() {
        let nat = NatDiscovery::new([pair()]);
        let sockets = pair().sockets();
        assert_eq!(
            sockets,
            [
                addr("192.0.2.1:3478"),
                addr("192.0.2.1:3479"),
                addr("192.0.2.2:3478"),
                addr("192.0.2.2:3479")
            ]
        );
        // Table 1, for a request on each of the four: OTHER-ADDRESS is
        // Ca:Cp whatever the flags; the source follows them.
        for da_dp in sockets {
            let q = nat.at(da_dp).expect("one of the four");
            let other = sockets
                .iter()
                .find(|s| s.ip() != da_dp.ip() && s.port() != da_dp.port());
            assert_eq!(Some(&q.other), other);
            assert_eq!(q.source(false, false), da_dp);
            assert_eq!(q.source(true, false), SocketAddr::new(q.other.ip(), da_dp.port()));
            assert_eq!(q.source(false, true), SocketAddr::new(da_dp.ip(), q.other.port()));
            assert_eq!(q.source(true, true), q.other);
            assert!(sockets.contains(&q.source(true, false)) && sockets.contains(&q.source(false, true)));
        }
        assert_eq!(nat.at(addr("192.0.2.1:5000")), None);
        assert_eq!(nat.at(addr("192.0.2.3:3478")), None);
        assert_eq!(NatDiscovery::default().at(addr("192.0.2.1:3478")), None);
    }
}
