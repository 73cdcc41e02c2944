//! 300 Try Alternate (RFC 8489 §10): which refusals are shed to a sibling,
//! and what the 300 carries.

use super::*;
use crate::proto::server::Sibling;
use crate::proto::stats::LimitRefusal;

const SIBLING: &str = "192.0.2.50:3478";
const SIBLING_TCP: &str = "192.0.2.50:3479";
const SIBLING_TLS: &str = "192.0.2.50:443";
const SIBLING_V6: &str = "[2001:db8::50]:3478";
const SIBLING_V6_TLS: &str = "[2001:db8::50]:5349";

/// A sibling of each family, with an address per transport (as
/// `alternate.servers = [{ udp = …, tcp = …, tls = … }, …]` gives).
fn siblings() -> Vec<Sibling> {
    vec![
        Sibling {
            udp: Some(addr(SIBLING)),
            tcp: Some(addr(SIBLING_TCP)),
            tls: Some(addr(SIBLING_TLS)),
        },
        Sibling {
            tls: Some(addr(SIBLING_V6_TLS)),
            ..Sibling::plain(addr(SIBLING_V6))
        },
    ]
}

fn shedding(max_total: usize) -> Harness {
    Harness::with(Settings {
        max_total,
        alternates: Alternates::new(siblings(), Some("turn2.example.org".into())),
        ..Settings::default()
    })
}

fn over(transport: Transport, n: u8) -> ClientAddr {
    ClientAddr { transport, ..client(n) }
}

/// The address of a plain (not XOR) address attribute.
fn plain_address(value: &[u8]) -> SocketAddr {
    let port = u16::from_be_bytes([value[2], value[3]]);
    match value[1] {
        1 => SocketAddr::from((<[u8; 4]>::try_from(&value[4..8]).unwrap(), port)),
        _ => SocketAddr::from((<[u8; 16]>::try_from(&value[4..20]).unwrap(), port)),
    }
}

fn assert_redirect(answer: &Response, to: &str) {
    answer.assert_code(300);
    let alternate = answer.attr(attr::ALTERNATE_SERVER).expect("ALTERNATE-SERVER");
    assert_eq!(plain_address(alternate), addr(to));
    assert_eq!(answer.attr(attr::REALM), Some(REALM.as_bytes()));
    assert!(answer.attr(attr::NONCE).is_some());
}

#[test]
fn a_full_server_sends_an_authenticated_allocate_to_a_sibling_instead_of_508() {
    let mut h = shedding(1);
    h.allocate(client(1));
    let answer = h.request(client(2), &carol(), method::ALLOCATE, udp);
    assert_redirect(&answer, SIBLING);
    // Signed (the harness checks MESSAGE-INTEGRITY), no ALTERNATE-DOMAIN
    // over UDP, no relay bound, nothing charged.
    assert_eq!(answer.attr(attr::ALTERNATE_DOMAIN), None);
    assert_eq!(h.binder().binds.len(), 1);
    assert_eq!(h.quota.total(), 1);
    let refusals = h.server.snapshot(h.now().mono).counters.refusals;
    assert_eq!(refusals[LimitRefusal::AllocationsTotal as usize], 1);
}

#[test]
fn the_nonce_of_a_300_is_taken_by_a_sibling_sharing_the_nonce_key() {
    let mut h = shedding(1);
    h.allocate(client(1));
    let answer = h.request(client(2), &carol(), method::ALLOCATE, udp);
    let nonce = answer.attr(attr::NONCE).unwrap().to_vec();
    // Both harnesses use one nonce key, as a fleet with auth.nonce_keys.
    let mut sibling = Harness::new();
    sibling.nonces.insert(client(2), nonce);
    sibling
        .request(client(2), &carol(), method::ALLOCATE, udp)
        .assert_success();
}

#[test]
fn draining_and_running_out_of_relay_ports_are_shed_too() {
    let mut h = shedding(100);
    h.server.binder().set_exhausted(true);
    assert_redirect(&h.request(client(1), &alice(), method::ALLOCATE, udp), SIBLING);
    assert_eq!(h.quota.total(), 0, "the refused Allocate holds no quota");
    h.server.binder().set_exhausted(false);
    h.quota.close();
    assert_redirect(&h.request(client(2), &alice(), method::ALLOCATE, udp), SIBLING);
}

#[test]
fn a_saturated_server_sheds_new_allocations_and_keeps_its_live_ones() {
    let mut h = shedding(100);
    h.allocate(client(1));
    h.quota.set_saturated(true);
    assert_redirect(&h.request(client(2), &carol(), method::ALLOCATE, udp), SIBLING);
    h.refresh(client(1), &alice(), Some(600)).assert_success();
    h.quota.set_saturated(false);
    h.allocate_as(client(2), &carol());
}

#[test]
fn quotas_of_one_user_or_source_are_not_shed() {
    let mut h = shedding(100);
    h.allocate(client(1));
    h.allocate(client(2));
    h.request(client(3), &alice(), method::ALLOCATE, udp).assert_code(486);
}

#[test]
fn udp_tcp_and_tls_clients_each_get_the_sibling_address_of_their_transport() {
    let mut h = shedding(0);
    let udp_answer = h.request(over(Transport::Udp, 1), &alice(), method::ALLOCATE, udp);
    assert_redirect(&udp_answer, SIBLING);
    assert_eq!(udp_answer.attr(attr::ALTERNATE_DOMAIN), None);
    let tcp_answer = h.request(over(Transport::Tcp, 2), &alice(), method::ALLOCATE, udp);
    assert_redirect(&tcp_answer, SIBLING_TCP);
    assert_eq!(tcp_answer.attr(attr::ALTERNATE_DOMAIN), None);
    let tls_answer = h.request(over(Transport::Tls, 3), &alice(), method::ALLOCATE, udp);
    assert_redirect(&tls_answer, SIBLING_TLS);
    assert_eq!(tls_answer.attr(attr::ALTERNATE_DOMAIN), Some(&b"turn2.example.org"[..]));
}

#[test]
fn an_ipv6_tls_client_is_sent_to_the_tls_port_of_an_ipv6_sibling_with_alternate_domain() {
    let mut h = shedding(0);
    let v6_tls = ClientAddr {
        transport: Transport::Tls,
        local: addr("[2001:db8::1]:5349"),
        remote: addr("[2001:db8:7::9]:40000"),
    };
    let answer = h.request(v6_tls, &alice(), method::ALLOCATE, udp);
    assert_redirect(&answer, SIBLING_V6_TLS);
    assert_eq!(answer.attr(attr::ALTERNATE_DOMAIN), Some(&b"turn2.example.org"[..]));
}

#[test]
fn a_tls_client_is_never_sent_to_a_plain_port() {
    // The siblings of `alternate.servers = ["192.0.2.50:3478"]`: UDP and
    // TCP only. A TLS client gets its 508, not a port without TLS.
    let mut h = Harness::with(Settings {
        max_total: 0,
        alternates: Alternates::new(vec![Sibling::plain(addr(SIBLING))], Some("turn2.example.org".into())),
        ..Settings::default()
    });
    h.request(over(Transport::Tls, 1), &alice(), method::ALLOCATE, udp)
        .assert_code(508);
    assert_redirect(
        &h.request(over(Transport::Tcp, 2), &alice(), method::ALLOCATE, udp),
        SIBLING,
    );
    assert_redirect(
        &h.request(over(Transport::Udp, 3), &alice(), method::ALLOCATE, udp),
        SIBLING,
    );
}

#[test]
fn without_a_sibling_of_the_client_family_the_answer_stays_508() {
    let mut h = Harness::with(Settings {
        max_total: 0,
        alternates: Alternates::new(vec![Sibling::plain(addr(SIBLING_V6))], None),
        ..Settings::default()
    });
    h.request(client(1), &alice(), method::ALLOCATE, udp).assert_code(508);
}

#[test]
fn siblings_take_the_shed_allocates_in_turn() {
    let second = "192.0.2.51:3478";
    let mut h = Harness::with(Settings {
        max_total: 0,
        alternates: Alternates::new(vec![Sibling::plain(addr(SIBLING)), Sibling::plain(addr(second))], None),
        ..Settings::default()
    });
    assert_redirect(&h.request(client(1), &alice(), method::ALLOCATE, udp), SIBLING);
    assert_redirect(&h.request(client(2), &alice(), method::ALLOCATE, udp), second);
    assert_redirect(&h.request(client(3), &alice(), method::ALLOCATE, udp), SIBLING);
}
