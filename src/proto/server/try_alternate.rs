//! Load shedding: an Allocate this server cannot take, because it is at
//! its allocation cap, out of relay ports, draining, or relaying more than
//! its configured bandwidth, is sent to a sibling with 300 Try Alternate
//! and ALTERNATE-SERVER (RFC 8489 §10, §14.15) instead of failing with
//! 508, when `[alternate]` names one of the client's address family.
//!
//! Rules:
//! * only Allocate is redirected, and only once it has authenticated, so
//!   the 300 is signed with the user's key: an off-path attacker cannot
//!   forge one to send clients elsewhere (RFC 8489 §10 lets the client
//!   skip the check, but a checking client is protected);
//! * ALTERNATE-SERVER has the family of the client's own address (§10:
//!   the client must be able to reach it the way it reached us) and is
//!   the sibling's address for the request's transport ([`Sibling`]): a
//!   UDP client gets a UDP port, a TCP client a TCP port, and a TLS client
//!   a TLS port, never a plain one, where its handshake would find no TLS;
//!   with no sibling of that family and transport the Allocate gets its
//!   508 as before;
//! * over TLS the 300 also carries ALTERNATE-DOMAIN (§14.16), the name the
//!   client checks the sibling's certificate against;
//! * it carries REALM and a fresh NONCE, as a 401 would: a client that
//!   takes them (Chromium does) sends its next Allocate already signed,
//!   and a sibling that shares `auth.nonce_keys` accepts that nonce, so
//!   the redirection costs one round trip and no second challenge;
//! * siblings are taken in turn, so that the shed load spreads over them.
//!   The per-user and per-source quotas (486) are not shed: they would
//!   hold at the sibling too.
//!
//! Loops: a client remembers the servers it was sent from (RFC 8489 §10
//! lets it refuse a server it already tried; Chromium does), so two full
//! siblings pointing at each other cost a client two round trips, not a
//! loop.

use std::net::SocketAddr;

use super::answer::{Failure, Redirect};
use super::{RelayBinder, Server};
use crate::proto::addr::{ClientAddr, Transport};
use crate::proto::auth::Features;
use crate::proto::stats::LimitRefusal;
use crate::proto::stun::{attr, MessageWriter};

/// One sibling instance: where the clients of each transport reach it.
/// A transport it has no address for is never sent to it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sibling {
    /// Its UDP listener.
    pub udp: Option<SocketAddr>,
    /// Its TCP listener.
    pub tcp: Option<SocketAddr>,
    /// Its TLS listener.
    pub tls: Option<SocketAddr>,
}

impl Sibling {
    /// A sibling reached at `addr` over UDP and TCP (a TLS listener needs
    /// a port of its own, so it has none).
    pub fn plain(addr: SocketAddr) -> Sibling {
        Sibling {
            udp: Some(addr),
            tcp: Some(addr),
            tls: None,
        }
    }

    /// Its address for clients of `transport`.
    pub fn address(&self, transport: Transport) -> Option<SocketAddr> {
        match transport {
            Transport::Udp => self.udp,
            Transport::Tcp => self.tcp,
            Transport::Tls => self.tls,
        }
    }
}

/// The configured siblings, and the TLS name they share.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Alternates {
    servers: Vec<Sibling>,
    domain: Option<String>,
}

impl Alternates {
    pub fn new(servers: Vec<Sibling>, domain: Option<String>) -> Alternates {
        Alternates { servers, domain }
    }

    /// The `turn`-th (wrapping) of the siblings' addresses for a client at
    /// `client` over `transport`: of that transport and of the client's
    /// family.
    fn pick(&self, client: SocketAddr, transport: Transport, turn: usize) -> Option<SocketAddr> {
        let v6 = client.ip().to_canonical().is_ipv6();
        let fits = || {
            self.servers
                .iter()
                .filter_map(move |s| s.address(transport))
                .filter(move |a| a.is_ipv6() == v6)
        };
        let count = fits().count();
        if count == 0 {
            return None;
        }
        fits().nth(turn % count)
    }
}

impl<B: RelayBinder> Server<B> {
    /// The answer to an Allocate refused for `why`: 300 towards a sibling
    /// if this refusal is one that a sibling can relieve and one is
    /// configured for the client's family; the refusal's own code
    /// otherwise. Counted either way, as `why` and under its code.
    pub(super) fn shed(&mut self, why: LimitRefusal, client: ClientAddr) -> Failure {
        let sheddable = matches!(
            why,
            LimitRefusal::AllocationsTotal
                | LimitRefusal::Draining
                | LimitRefusal::RelayPorts
                | LimitRefusal::Bandwidth
        );
        let target = sheddable
            .then(|| {
                self.config
                    .alternates
                    .pick(client.remote, client.transport, self.alternate_turn)
            })
            .flatten();
        match target {
            Some(server) => {
                self.alternate_turn = self.alternate_turn.wrapping_add(1);
                self.count_refusal(why);
                Failure::TryAlternate(Redirect(server))
            }
            None => self.refuse(why),
        }
    }

    /// The attributes of a 300 besides ERROR-CODE.
    pub(super) fn write_redirect(&self, w: &mut MessageWriter<'_>, client: ClientAddr, to: Redirect, unix_secs: u64) {
        w.address(attr::ALTERNATE_SERVER, to.0);
        if client.transport == Transport::Tls {
            if let Some(domain) = &self.config.alternates.domain {
                w.bytes(attr::ALTERNATE_DOMAIN, domain.as_bytes());
            }
        }
        w.bytes(attr::REALM, self.credentials.realm().as_bytes()).bytes(
            attr::NONCE,
            &self.credentials.make_nonce(client.remote, unix_secs, Features::NONE),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    #[test]
    fn siblings_of_the_client_family_are_taken_in_turn() {
        let (a, b, v6) = (
            addr("192.0.2.1:3478"),
            addr("192.0.2.2:3478"),
            addr("[2001:db8::1]:3478"),
        );
        let alternates = Alternates::new(vec![Sibling::plain(a), Sibling::plain(v6), Sibling::plain(b)], None);
        let client4 = addr("198.51.100.7:5000");
        let mapped = addr("[::ffff:198.51.100.7]:5000");
        let client6 = addr("[2001:db8:1::7]:5000");
        let udp = Transport::Udp;
        assert_eq!(alternates.pick(client4, udp, 0), Some(a));
        assert_eq!(alternates.pick(client4, udp, 1), Some(b));
        assert_eq!(alternates.pick(client4, udp, 2), Some(a));
        assert_eq!(
            alternates.pick(mapped, udp, 1),
            Some(b),
            "a v4-mapped client is an IPv4 client"
        );
        assert_eq!(alternates.pick(client6, Transport::Tcp, 5), Some(v6));
        let only_v4 = Alternates::new(vec![Sibling::plain(a)], None);
        assert_eq!(only_v4.pick(client6, udp, 0), None);
        assert_eq!(Alternates::default().pick(client4, udp, 0), None);
    }

    #[test]
    fn each_transport_gets_its_own_port_and_a_plain_sibling_gets_no_tls_client() {
        let full = Sibling {
            udp: Some(addr("192.0.2.1:3478")),
            tcp: Some(addr("192.0.2.1:3479")),
            tls: Some(addr("192.0.2.1:443")),
        };
        let plain = Sibling::plain(addr("192.0.2.2:3478"));
        let alternates = Alternates::new(vec![plain, full], None);
        let client = addr("198.51.100.7:5000");
        assert_eq!(alternates.pick(client, Transport::Udp, 1), full.udp);
        assert_eq!(alternates.pick(client, Transport::Tcp, 1), full.tcp);
        for turn in 0..3 {
            assert_eq!(alternates.pick(client, Transport::Tls, turn), full.tls);
        }
        let plain_only = Alternates::new(vec![plain], None);
        assert_eq!(plain_only.pick(client, Transport::Tls, 0), None);
        assert_eq!(plain_only.pick(client, Transport::Tcp, 0), plain.tcp);
    }
}
