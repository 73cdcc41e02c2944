//! Allocate, EVEN-PORT and reservations, lifetimes and Refresh (RFC 8656
//! §7): [`crate::proto::server::allocate`].

use super::*;

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
    h.server.binder().set_exhausted(true);
    h.request(client(1), &alice(), method::ALLOCATE, udp).assert_code(508);
    assert_eq!(h.quota.total(), 0);
    assert_eq!(h.server.allocation_count(), 0);
    assert_eq!(h.server.poll_timeout(), None);
    h.server.binder().set_exhausted(false);
    // With one allocation per user, a leaked count would now give 486.
    h.allocate(client(1));
}

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

#[test]
fn a_relay_is_marked_live_for_every_shard_while_its_allocation_holds_it() {
    let mut h = Harness::new();
    let relay = h.allocate(client(1));
    let port = relay.0.port();
    assert!(h.live.contains(Family::V4, RelayProtocol::Udp, port));
    assert!(!h.live.contains(Family::V4, RelayProtocol::Tcp, port));
    h.refresh(client(1), &alice(), Some(0)).assert_success();
    assert!(!h.live.contains(Family::V4, RelayProtocol::Udp, port));
    // Expiry clears it too.
    let relay = h.allocate(client(2));
    h.at(600);
    assert!(!h.live.contains(Family::V4, RelayProtocol::Udp, relay.0.port()));
}

#[test]
fn a_reservation_is_charged_to_its_creator_until_it_is_claimed_or_expires() {
    let mut h = Harness::with(Settings {
        max_per_user: 2,
        ..Settings::default()
    });
    let token = reserve_pair(&mut h, client(1));
    assert_eq!(h.quota.total(), 2, "the allocation and its reserved partner");
    assert_eq!(h.quota.reservations(), 1);
    // alice's second place is the reservation's: a new allocation is 486.
    h.request(client(2), &alice(), method::ALLOCATE, udp).assert_code(486);
    // Claimed by carol: the place moves from alice to carol.
    h.request(client(3), &carol(), method::ALLOCATE, with_token(token))
        .assert_success();
    assert_eq!((h.quota.total(), h.quota.reservations()), (2, 0));
    // Unclaimed, the charge ends with the reservation.
    h.refresh(client(1), &alice(), Some(0)).assert_success();
    h.request(client(4), &alice(), method::ALLOCATE, even_port(true))
        .assert_success();
    assert_eq!((h.quota.total(), h.quota.reservations()), (3, 1));
    h.at(30);
    assert_eq!((h.quota.total(), h.quota.reservations()), (2, 0));
    h.allocate(client(2));
}

#[test]
fn one_source_address_holds_at_most_its_share_of_allocations_whatever_the_usernames() {
    let mut h = Harness::with(Settings {
        max_per_user: 10,
        ..Settings::default()
    });
    h.quota.set_source_limit(2);
    let from = |port: u16| ClientAddr {
        transport: Transport::Udp,
        local: addr("192.0.2.1:3478"),
        remote: SocketAddr::from(([198, 51, 100, 9], port)),
    };
    h.allocate(from(1000));
    h.allocate_as(from(1001), &carol());
    h.request(from(1002), &alice(), method::ALLOCATE, udp).assert_code(486);
    let refusals = h.server.snapshot(h.now().mono).counters.refusals;
    assert_eq!(refusals[stats::LimitRefusal::AllocationsPerSource as usize], 1);
    // Another address is not affected, and a freed place comes back.
    h.allocate(client(1));
    h.refresh(from(1000), &alice(), Some(0)).assert_success();
    h.allocate(from(1002));
}

#[test]
fn addresses_of_one_ipv6_64_count_as_one_source() {
    let mut h = Harness::new();
    h.quota.set_source_limit(1);
    let from = |remote: &str| ClientAddr {
        transport: Transport::Udp,
        local: addr("[2001:db8::1]:3478"),
        remote: addr(remote),
    };
    h.allocate(from("[2001:db8:1::a]:4000"));
    h.request(from("[2001:db8:1::b]:4000"), &alice(), method::ALLOCATE, udp)
        .assert_code(486);
    h.allocate(from("[2001:db8:2::a]:4000"));
}
