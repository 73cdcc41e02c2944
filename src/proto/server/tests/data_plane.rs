//! Send and Data indications, ChannelData, byte rates (RFC 8656 §11,
//! §12): [`crate::proto::server::data_plane`].

use super::*;

// Send and Data indications (RFC 8656 §11)

#[test]
fn send_indication_without_permission_is_dropped() {
    let mut h = Harness::new();
    let c = client(1);
    assert_eq!(h.send(c, peer_a(), b"hi"), None, "no allocation");
    h.allocate(c);
    assert_eq!(h.send(c, peer_a(), b"hi"), None);
}

#[test]
fn send_indication_with_permission_reaches_the_peer() {
    let mut h = Harness::new();
    let c = client(1);
    let relay = h.allocate(c);
    h.permit(c, &[peer_a()]).assert_success();
    assert_eq!(h.send(c, peer_a(), b"hello"), relayed(relay, peer_a(), b"hello"));
    // A permission is for the IP, whatever the port.
    let other_port = addr("8.8.8.8:9999");
    assert_eq!(h.send(c, other_port, b"x"), relayed(relay, other_port, b"x"));
    assert_eq!(h.send(c, peer_b(), b"x"), None);
}

#[test]
fn peer_packet_without_permission_is_dropped() {
    let mut h = Harness::new();
    let relay = h.allocate(client(1));
    assert_eq!(h.peer_sends(relay, peer_a(), b"hello"), None);
    let unknown_relay = RelayAddr(relay_at(FIRST_PORT + 5));
    assert_eq!(h.peer_sends(unknown_relay, peer_a(), b"hello"), None);
}

#[test]
fn peer_packet_with_permission_becomes_a_data_indication_in_place() {
    let mut h = Harness::new();
    let c = client(1);
    let relay = h.allocate(c);
    h.permit(c, &[peer_a()]).assert_success();
    for payload in [&b""[..], b"x", b"hello", b"four", &[0u8; 1200]] {
        let (to, bytes) = h.peer_sends(relay, peer_a(), payload).expect("relayed");
        assert_eq!(to, c);
        assert_data_indication(&bytes, peer_a(), payload);
    }
    h.assert_data_from_peer(relay, addr("8.8.8.8:9999"), c);
}

#[test]
fn permission_expires_after_300_seconds_and_create_permission_refreshes_it() {
    let mut h = Harness::new();
    let c = client(1);
    let relay = h.allocate(c);
    h.permit(c, &[peer_a()]).assert_success();
    h.at(200);
    h.permit(c, &[peer_a()]).assert_success();
    h.at(300);
    assert!(h.send(c, peer_a(), b"x").is_some(), "refreshed at 200 s");
    h.at(499);
    assert!(h.send(c, peer_a(), b"x").is_some());
    h.assert_data_from_peer(relay, peer_a(), c);
    h.at(500);
    assert_eq!(h.send(c, peer_a(), b"x"), None);
    assert_eq!(h.peer_sends(relay, peer_a(), b"y"), None);
}

#[test]
fn send_indication_to_a_service_port_of_an_own_address_is_dropped_despite_a_permission() {
    // Relay-to-relay on this server is allowed, and permissions are per
    // IP; a Send indication must still not reach the server's own
    // service ports through that permission.
    let mut h = Harness::with(Settings {
        rules: own_relay_rules(vec![3478]),
        ..Settings::default()
    });
    let c = client(1);
    let relay = h.allocate(c);
    let other_relay = h.allocate(client(2)).0;
    let turn_port = SocketAddr::new(RELAY_IP.into(), 3478);
    h.permit(c, &[other_relay]).assert_success();
    assert_eq!(
        h.send(c, other_relay, b"hi"),
        relayed_in_process(relay, other_relay, b"hi")
    );
    h.permit(c, &[turn_port]).assert_code(403);
    h.channel_bind(c, 0x4000, turn_port).assert_code(403);
    assert_eq!(h.send(c, turn_port, b"hi"), None);
    assert_eq!(h.send(c, SocketAddr::new(RELAY_IP.into(), 22), b"hi"), None);
}

/// The rules `net` derives for a server whose advertised relay address is
/// [`RELAY_IP`], relaying from the fake binder's ports.
fn own_relay_rules(service_ports: Vec<u16>) -> PeerRules {
    PeerRules {
        own_ips: vec![RELAY_IP.into()],
        relay_ports: FIRST_PORT..=FIRST_PORT + PORTS - 1,
        relay_ips: vec![RELAY_IP.into()],
        service_ports,
        ..PeerRules::default()
    }
}

#[test]
fn own_addresses_are_peers_only_while_exactly_a_live_relay_of_this_server() {
    let mut h = Harness::with(Settings {
        rules: own_relay_rules(vec![3478]),
        ..Settings::default()
    });
    let (a, b) = (client(1), client(2));
    let relay_a = h.allocate(a);
    let relay_b = h.allocate(b);
    // A port of the relay range that holds no relay is the host's.
    let free_port = SocketAddr::new(RELAY_IP.into(), FIRST_PORT + PORTS - 1);
    h.permit(a, &[free_port]).assert_code(403);
    h.channel_bind(a, 0x4001, free_port).assert_code(403);
    // B's relay is reachable, by Send and over a channel...
    h.channel_bind(a, 0x4000, relay_b.0).assert_success();
    assert_eq!(h.send(a, relay_b.0, b"s"), relayed_in_process(relay_a, relay_b.0, b"s"));
    assert_eq!(
        h.client_packet(a, &channel_data(0x4000, b"c")),
        relayed_in_process(relay_a, relay_b.0, b"c")
    );
    // ...until B's allocation goes: from the next packet on, neither the
    // permission nor the channel reaches the port it held.
    h.refresh(b, &alice(), Some(0)).assert_success();
    assert_eq!(h.send(a, relay_b.0, b"s"), None);
    assert_eq!(h.client_packet(a, &channel_data(0x4000, b"c")), None);
    assert_eq!(h.server.snapshot(h.now().mono).counters.peer_refusals, 4);
}

/// Behind a 1:1 NAT the advertised relay IP (external_ip) may not hairpin.
/// A UDP payload for one of our relays never goes on the wire (it is
/// handed over in the process, at the advertised address); one that comes
/// from a relay's local address through the kernel all the same is seen
/// as from the advertised one. Clients and permissions only ever see the
/// advertised address.
#[test]
fn relay_to_relay_stays_in_the_process_and_a_local_sender_counts_as_advertised() {
    let local = std::net::IpAddr::from([10, 9, 9, 9]);
    let rules = PeerRules {
        own_ips: vec![RELAY_IP.into(), local],
        ..own_relay_rules(Vec::new())
    };
    let mut h = Harness::with(Settings {
        rules,
        hairpin: RelayHairpin::new([(RELAY_IP.into(), local)], FIRST_PORT..=FIRST_PORT + PORTS - 1),
        ..Settings::default()
    });
    let (a, b) = (client(1), client(2));
    let (relay_a, relay_b) = (h.allocate(a), h.allocate(b));
    h.permit(a, &[relay_b.0]).assert_success();
    h.permit(b, &[relay_a.0]).assert_success();
    assert_eq!(
        h.send(a, relay_b.0, b"hi"),
        relayed_in_process(relay_a, relay_b.0, b"hi")
    );
    // From A's local address through the kernel, B's client sees A's
    // advertised relay address, for which it has a permission.
    let from_the_wire = SocketAddr::new(local, relay_a.0.port());
    let (to, bytes) = h.peer_sends(relay_b, from_the_wire, b"hi").expect("relayed");
    assert_eq!(to, b);
    assert_data_indication(&bytes, relay_a.0, b"hi");
    // Handed over in the process, the same.
    let mut buf = vec![0u8; PEER_HEADROOM + 2 + PEER_TAILROOM];
    buf[PEER_HEADROOM..PEER_HEADROOM + 2].copy_from_slice(b"hi");
    let now = h.now().mono;
    let out = h
        .server
        .handle_relay_to_relay(relay_b, relay_a, &mut buf, PEER_HEADROOM..PEER_HEADROOM + 2, now)
        .expect("relayed");
    assert_eq!(out.client, b);
    assert_data_indication(&buf[out.range], relay_a.0, b"hi");
    assert_eq!(h.server.snapshot(now).counters.relayed_in_process, 1);
    // Outside the relay port range nothing is rewritten.
    let elsewhere = SocketAddr::new(RELAY_IP.into(), 3478);
    h.permit(a, &[elsewhere]).assert_code(403);
}

#[test]
fn an_allocation_byte_rate_drops_what_exceeds_it_in_both_directions() {
    let mut h = Harness::with(Settings {
        allocation_rate: 20_000,
        ..Settings::default()
    });
    let relay = h.allocate(client(1));
    h.permit(client(1), &[peer_a()]).assert_success();
    // The burst is max(rate / 2, 16 KiB) = 16384 bytes: 16 packets of
    // 1000 bytes pass at once, the rest are dropped.
    let payload = [7u8; 1000];
    let sent = (0..20)
        .filter(|_| h.send(client(1), peer_a(), &payload).is_some())
        .count();
    assert_eq!(sent, 16);
    // Traffic from the peer draws on the same bucket.
    assert!(h.peer_sends(relay, peer_a(), &payload).is_none());
    // Half a second refills 10 000 bytes.
    h.elapsed += Duration::from_millis(500);
    let passed = (0..20)
        .filter(|_| h.peer_sends(relay, peer_a(), &payload).is_some())
        .count();
    assert_eq!(passed, 10);
    let snapshot = h.server.snapshot(h.now().mono);
    assert_eq!(snapshot.counters.rate_limited[0].packets, 4 + 1 + 10);
    assert_eq!(snapshot.counters.rate_limited[0].bytes, 15_000);
    assert_eq!((snapshot.to_peer.packets, snapshot.to_client.packets), (16, 10));
}

#[test]
fn a_user_byte_rate_is_shared_by_all_allocations_of_the_user() {
    let mut h = Harness::new();
    h.quota.set_user_rate(20_000);
    h.allocate(client(1));
    h.allocate(client(2));
    h.allocate_as(client(3), &carol());
    let payload = [1u8; 1000];
    let mut sent = 0;
    for (c, cred) in [(client(1), alice()), (client(2), alice()), (client(3), carol())] {
        h.request(c, &cred, method::CREATE_PERMISSION, peers(&[peer_a()]))
            .assert_success();
    }
    for _ in 0..10 {
        for c in [client(1), client(2)] {
            sent += usize::from(h.send(c, peer_a(), &payload).is_some());
        }
    }
    assert_eq!(sent, 16, "alice's two allocations share one 16 KiB burst");
    // Carol has a bucket of her own.
    let carol_sent = (0..10)
        .filter(|_| h.send(client(3), peer_a(), &payload).is_some())
        .count();
    assert_eq!(carol_sent, 10);
    assert_eq!(h.server.snapshot(h.now().mono).counters.rate_limited[1].packets, 4);
}

/// A live relay held by another shard is marked with that shard, for the
/// driver to hand the payload over to; it is never sent to the wire.
#[test]
fn a_payload_for_a_relay_of_another_shard_names_that_shard() {
    let mut h = Harness::with(Settings {
        rules: own_relay_rules(vec![3478]),
        ..Settings::default()
    });
    let a = client(1);
    let relay_a = h.allocate(a);
    let elsewhere = SocketAddr::new(RELAY_IP.into(), FIRST_PORT + PORTS - 1);
    h.live
        .insert(Family::V4, RelayProtocol::Udp, elsewhere.port(), ShardId(3));
    h.permit(a, &[elsewhere]).assert_success();
    let routed = h.send(a, elsewhere, b"x").expect("relayed");
    assert_eq!(routed.local, Some(ShardId(3)));
    assert_eq!((routed.relay, routed.peer.0), (relay_a, elsewhere));
    // Gone from the table, it is the host's port again.
    h.live.remove(Family::V4, RelayProtocol::Udp, elsewhere.port());
    assert_eq!(h.send(a, elsewhere, b"x"), None);
}
