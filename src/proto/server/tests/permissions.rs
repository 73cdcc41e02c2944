//! CreatePermission and ChannelBind (RFC 8656 §9, §12):
//! [`crate::proto::server::permissions`].

use super::*;

// CreatePermission (RFC 8656 §9)

#[test]
fn create_permission_without_a_peer_address_is_400() {
    let mut h = Harness::new();
    h.allocate(client(1));
    h.permit(client(1), &[]).assert_code(400);
}

#[test]
fn refused_peers_get_403_and_nothing_is_installed() {
    let mut h = Harness::new();
    let c = client(1);
    let relay = h.allocate(c);
    for refused in ["10.0.0.1:5000", "127.0.0.1:5000", "169.254.169.254:80"] {
        let refused = addr(refused);
        h.permit(c, &[peer_a(), refused]).assert_code(403);
        h.channel_bind(c, 0x4000, refused).assert_code(403);
        assert_eq!(
            h.send(c, peer_a(), b"x"),
            None,
            "the good peer got no permission either"
        );
        assert_eq!(h.send(c, refused, b"x"), None);
        assert_eq!(h.peer_sends(relay, refused, b"x"), None);
    }
}

#[test]
fn ipv6_peer_on_an_ipv4_allocation_is_443() {
    let mut h = Harness::new();
    h.allocate(client(1));
    h.permit(client(1), &[addr("[2606:4700:4700::1111]:53")])
        .assert_code(443);
}

#[test]
fn more_permissions_than_the_limit_is_508() {
    let mut h = Harness::new();
    let c = client(1);
    let four = ["8.8.8.8:1", "8.8.4.4:1", "1.1.1.1:1", "1.0.0.1:1"].map(addr);
    h.allocate(c);
    h.permit(c, &four).assert_success();
    h.permit(c, &[addr("9.9.9.9:1")]).assert_code(508);
    // Refreshing an existing one needs no room.
    h.permit(c, &[four[0]]).assert_success();
    // Expired ones make room again.
    h.at(300);
    h.permit(c, &[addr("9.9.9.9:1")]).assert_success();
}

// Channels (RFC 8656 §12)

#[test]
fn channel_number_outside_the_bindable_range_is_400() {
    // RFC 8656 narrowed the range to 0x4000-0x4FFF; channel_data.rs
    // deliberately still accepts RFC 5766's 0x4000-0x7FFF.
    let mut h = Harness::new();
    let c = client(1);
    h.allocate(c);
    let (min, max) = (ChannelNumber::MIN, ChannelNumber::MAX);
    for bad in [0x0000, min - 1, max + 1, 0xFFFF] {
        h.channel_bind(c, bad, peer_a()).assert_code(400);
    }
    h.channel_bind(c, min, peer_a()).assert_success();
    h.channel_bind(c, 0x4FFF, peer_b()).assert_success();
    h.channel_bind(c, max, addr("9.9.9.9:1")).assert_success();
}

#[test]
fn channel_bind_relays_channel_data_both_ways() {
    let mut h = Harness::new();
    let c = client(1);
    let relay = h.allocate(c);
    let response = h.channel_bind(c, 0x4001, peer_a());
    response.assert_success();
    assert_eq!(response.types(), [attr::SOFTWARE]);

    let packet = channel_data(0x4001, b"hello");
    assert_eq!(h.client_packet(c, &packet), relayed(relay, peer_a(), b"hello"));
    let (to, bytes) = h.peer_sends(relay, peer_a(), b"world!").expect("relayed");
    assert_eq!(to, c);
    assert_eq!(bytes, [&[0x40, 0x01, 0x00, 0x06][..], b"world!"].concat());
    // Another port of the same IP has the permission but not the channel.
    h.assert_data_from_peer(relay, addr("8.8.8.8:9999"), c);
    // ChannelData from another 5-tuple goes nowhere.
    assert_eq!(h.client_packet(client(2), &packet), None);
}

/// RFC 8656 §12.5: on a stream, ChannelData is padded to 4 bytes (so the
/// reader can find the next frame); over UDP it is not.
#[test]
fn channel_data_to_a_tcp_client_is_padded_to_four_bytes() {
    let mut h = Harness::new();
    let c = tcp_client(1);
    let relay = h.allocate(c);
    h.channel_bind(c, 0x4001, peer_a()).assert_success();
    let (to, bytes) = h.peer_sends(relay, peer_a(), b"world!").expect("relayed");
    assert_eq!(to, c);
    assert_eq!(bytes, [&[0x40, 0x01, 0x00, 0x06][..], b"world!", &[0, 0]].concat());
    let (_, bytes) = h.peer_sends(relay, peer_a(), b"four").expect("relayed");
    assert_eq!(bytes, [&[0x40, 0x01, 0x00, 0x04][..], b"four"].concat());
}

/// RFC 8656 §3.1: a TCP/TLS allocation lives and dies with its connection.
#[test]
fn closing_a_stream_connection_deletes_its_allocation_at_once() {
    let mut h = Harness::new();
    let (c, other) = (tcp_client(1), tcp_client(2));
    let relay = h.allocate(c);
    h.allocate(other);
    h.server.handle_connection_closed(c, h.now().mono);
    h.assert_quiet();
    assert!(!h.server.has_allocation(&c));
    assert!(h.server.has_allocation(&other));
    assert_eq!(h.binder().releases, [(Family::V4, relay.0.port())]);
    assert_eq!(h.quota.total(), 1);
    // A connection without an allocation closing is a no-op.
    h.server.handle_connection_closed(tcp_client(3), h.now().mono);
    assert_eq!(h.binder().releases.len(), 1);
}

#[test]
fn channel_bind_installs_a_permission() {
    let mut h = Harness::new();
    let c = client(1);
    let relay = h.allocate(c);
    h.channel_bind(c, 0x4001, peer_a()).assert_success();
    assert_eq!(h.send(c, peer_a(), b"x"), relayed(relay, peer_a(), b"x"));
    h.assert_data_from_peer(relay, addr("8.8.8.8:1"), c);
}

#[test]
fn binding_a_number_to_another_peer_or_a_peer_to_another_number_is_400() {
    let mut h = Harness::new();
    let c = client(1);
    let relay = h.allocate(c);
    h.channel_bind(c, 0x4001, peer_a()).assert_success();
    h.channel_bind(c, 0x4001, peer_b()).assert_code(400);
    h.channel_bind(c, 0x4002, peer_a()).assert_code(400);
    assert_eq!(h.client_packet(c, &channel_data(0x4002, b"x")), None);
    assert_eq!(
        h.client_packet(c, &channel_data(0x4001, b"x")),
        relayed(relay, peer_a(), b"x")
    );
}

#[test]
fn rebinding_the_same_number_and_peer_refreshes_the_channel() {
    let mut h = Harness::new();
    let c = client(1);
    let relay = h.allocate(c);
    h.refresh(c, &alice(), Some(3600)).assert_success();
    h.channel_bind(c, 0x4001, peer_a()).assert_success();
    h.at(500);
    h.channel_bind(c, 0x4001, peer_a()).assert_success();
    h.at(700);
    let packet = channel_data(0x4001, b"x");
    assert_eq!(h.client_packet(c, &packet), relayed(relay, peer_a(), b"x"));
    let (_, bytes) = h.peer_sends(relay, peer_a(), b"y").unwrap();
    assert_eq!(bytes, [0x40, 0x01, 0x00, 0x01, b'y']);
}

#[test]
fn channel_stops_relaying_after_600_seconds() {
    let mut h = Harness::new();
    let c = client(1);
    let relay = h.allocate(c);
    h.refresh(c, &alice(), Some(3600)).assert_success();
    h.channel_bind(c, 0x4001, peer_a()).assert_success();
    // Keep the permission alive on its own, so only the channel expires.
    h.at(290);
    h.permit(c, &[peer_a()]).assert_success();
    h.at(580);
    h.permit(c, &[peer_a()]).assert_success();
    let packet = channel_data(0x4001, b"x");
    h.at(599);
    assert_eq!(h.client_packet(c, &packet), relayed(relay, peer_a(), b"x"));
    assert_eq!(
        h.peer_sends(relay, peer_a(), b"y").unwrap().1,
        [0x40, 0x01, 0x00, 0x01, b'y']
    );
    h.at(600);
    assert_eq!(h.client_packet(c, &packet), None);
    // The peer is still permitted, so its data comes as Data indications.
    h.assert_data_from_peer(relay, peer_a(), c);
}

#[test]
fn expired_channel_number_and_peer_stay_reserved_for_five_minutes() {
    let mut h = Harness::new();
    let c = client(1);
    h.allocate(c);
    h.refresh(c, &alice(), Some(3600)).assert_success();
    h.channel_bind(c, 0x4001, peer_a()).assert_success();
    h.at(899);
    h.channel_bind(c, 0x4001, peer_b()).assert_code(400);
    h.channel_bind(c, 0x4002, peer_a()).assert_code(400);
    h.at(900);
    h.channel_bind(c, 0x4001, peer_b()).assert_success();
    h.channel_bind(c, 0x4002, peer_a()).assert_success();
}

#[test]
fn more_channels_than_the_limit_is_508() {
    let mut h = Harness::with(Settings {
        max_channels: 2,
        ..Settings::default()
    });
    let c = client(1);
    h.allocate(c);
    h.channel_bind(c, 0x4001, peer_a()).assert_success();
    h.channel_bind(c, 0x4002, peer_b()).assert_success();
    h.channel_bind(c, 0x4003, addr("9.9.9.9:1")).assert_code(508);
    h.channel_bind(c, 0x4001, peer_a()).assert_success();
}
