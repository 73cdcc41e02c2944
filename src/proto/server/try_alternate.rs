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
//!   the client must be able to reach it the way it reached us); with no
//!   sibling of that family the Allocate gets its 508 as before;
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
use crate::proto::stats::LimitRefusal;
use crate::proto::stun::{attr, MessageWriter};

/// The configured siblings, and the TLS name they share.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Alternates {
    servers: Vec<SocketAddr>,
    domain: Option<String>,
}

impl Alternates {
    pub fn new(servers: Vec<SocketAddr>, domain: Option<String>) -> Alternates {
        Alternates { servers, domain }
    }

    /// The `turn`-th sibling (wrapping) of the family of `client`.
    fn pick(&self, client: SocketAddr, turn: usize) -> Option<SocketAddr> {
        let v6 = client.ip().to_canonical().is_ipv6();
        let count = self.servers.iter().filter(|s| s.is_ipv6() == v6).count();
        if count == 0 {
            return None;
        }
        self.servers
            .iter()
            .filter(|s| s.is_ipv6() == v6)
            .nth(turn % count)
            .copied()
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
            .then(|| self.config.alternates.pick(client.remote, self.alternate_turn))
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
        w.bytes(attr::REALM, self.credentials.realm().as_bytes())
            .bytes(attr::NONCE, &self.credentials.make_nonce(client.remote, unix_secs));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn siblings_of_the_client_family_are_taken_in_turn() {
        let a: SocketAddr = "192.0.2.1:3478".parse().unwrap();
        let b: SocketAddr = "192.0.2.2:3478".parse().unwrap();
        let v6: SocketAddr = "[2001:db8::1]:3478".parse().unwrap();
        let alternates = Alternates::new(vec![a, v6, b], None);
        let client4: SocketAddr = "198.51.100.7:5000".parse().unwrap();
        let mapped: SocketAddr = "[::ffff:198.51.100.7]:5000".parse().unwrap();
        let client6: SocketAddr = "[2001:db8:1::7]:5000".parse().unwrap();
        assert_eq!(alternates.pick(client4, 0), Some(a));
        assert_eq!(alternates.pick(client4, 1), Some(b));
        assert_eq!(alternates.pick(client4, 2), Some(a));
        assert_eq!(
            alternates.pick(mapped, 1),
            Some(b),
            "a v4-mapped client is an IPv4 client"
        );
        assert_eq!(alternates.pick(client6, 5), Some(v6));
        let only_v4 = Alternates::new(vec![a], None);
        assert_eq!(only_v4.pick(client6, 0), None);
        assert_eq!(Alternates::default().pick(client4, 0), None);
    }
}
