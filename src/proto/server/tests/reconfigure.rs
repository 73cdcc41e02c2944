//! Reloading the configuration of a running core.

use super::*;

#[test]
fn reconfigure_keeps_allocations_and_judges_new_requests_by_the_new_rules() {
    let mut h = Harness::new();
    h.allocate(client(1));
    h.permit(client(1), &[peer_a()]).assert_success();
    // Reload: alice's password changes, peer_b's network is denied, and an
    // allocation may hold one permission.
    let credentials = Credentials::new(CredentialsConfig {
        users: users("new-pw"),
        nonce_ttl: Duration::from_secs(NONCE_TTL),
        ..testkit::core_credentials(REALM)
    });
    let rules = PeerRules {
        deny: vec!["1.1.1.0/24".parse().expect("cidr")],
        ..PeerRules::default()
    };
    let config = ServerConfig {
        software: h.software.map(str::to_owned),
        relay_ip_v6: None,
        max_permissions: 1,
        max_channels: 1,
        max_peer_connections_per_allocation: 1,
        max_peer_connections: 1,
        ..testkit::core_config()
    };
    h.server
        .reconfigure(config, credentials, PeerFilter::new(rules), h.now().mono);
    assert!(h.server.has_allocation(&client(1)), "the allocation survived");
    // Its traffic still flows through the permission it had.
    let packet = send_indication(peer_a(), b"still here");
    assert!(h.client_packet(client(1), &packet).is_some());
    // The old password no longer signs; carol (unchanged) still allocates.
    h.request(client(2), &alice(), method::ALLOCATE, udp).assert_code(401);
    h.allocate_as(client(3), &carol());
    // The new filter and the new permission cap apply to new requests.
    h.request(client(3), &carol(), method::CREATE_PERMISSION, peers(&[peer_b()]))
        .assert_code(403);
    h.request(client(3), &carol(), method::CREATE_PERMISSION, peers(&[peer_a()]))
        .assert_success();
    h.request(
        client(3),
        &carol(),
        method::CREATE_PERMISSION,
        peers(&[addr("9.9.9.9:1")]),
    )
    .assert_code(508);
}
