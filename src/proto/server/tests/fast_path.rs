//! Routes for the kernel's fast path and its counts folded back:
//! [`crate::proto::server::fast_path`].

use super::*;
use crate::proto::server::{FastRoute, FOLD_INTERVAL};

const CHANNEL: u16 = 0x4000;

fn with_routes() -> (Harness, FakeRoutes) {
    with_routes_and(Settings::default())
}

fn with_routes_and(settings: Settings) -> (Harness, FakeRoutes) {
    let routes = FakeRoutes::default();
    let h = Harness::with(Settings {
        routes: Some(routes.clone()),
        ..settings
    });
    (h, routes)
}

fn number(n: u16) -> ChannelNumber {
    ChannelNumber::new(n).unwrap()
}

/// The two routes of `client`'s channel to `peer` through `relay`.
fn both_ways(client: ClientAddr, relay: RelayAddr, peer: SocketAddr, channel: u16) -> [FastRoute; 2] {
    let peer = PeerAddr(peer);
    let channel = number(channel);
    [
        FastRoute::ToPeer {
            client,
            channel,
            relay,
            peer,
        },
        FastRoute::ToClient {
            relay,
            peer,
            client,
            channel,
        },
    ]
}

fn sorted(mut routes: Vec<FastRoute>) -> Vec<FastRoute> {
    routes.sort_by_key(|r| format!("{r:?}"));
    routes
}

#[test]
fn a_channel_with_its_permission_is_routed_both_ways_until_the_permission_ends() {
    let (mut h, routes) = with_routes();
    let c = client(1);
    let relay = h.allocate(c);
    assert!(routes.routes().is_empty(), "an allocation alone has no route");
    h.permit(c, &[peer_a()]).assert_success();
    assert!(routes.routes().is_empty(), "a permission without a channel has none");
    h.channel_bind(c, CHANNEL, peer_a()).assert_success();
    let expected = both_ways(c, relay, peer_a(), CHANNEL);
    assert_eq!(sorted(routes.routes()), sorted(expected.to_vec()));
    // The permission (300 s) ends before the channel (600 s) and the
    // allocation (600 s).
    for route in &expected {
        assert_eq!(routes.expiry(route), h.deadline(300));
    }
    // Refreshing the permission moves the routes' end with it.
    h.at(200);
    h.permit(c, &[peer_a()]).assert_success();
    for route in &expected {
        assert_eq!(routes.expiry(route), h.deadline(500));
    }
    // A Refresh that ends the allocation before both moves it again.
    h.refresh(c, &alice(), Some(250)).assert_success();
    assert_eq!(h.server.snapshot(h.now().mono).channels, 1);
    // 250 s is under the default of 600 s, which the server grants at least.
    for route in &expected {
        assert_eq!(routes.expiry(route), h.deadline(500));
    }
    // Past the end, the next fold removes them.
    h.at(501);
    assert!(routes.routes().is_empty(), "{:?}", routes.routes());
    assert_eq!(sorted(routes.removed()), sorted(expected.to_vec()));
}

#[test]
fn what_the_kernel_relayed_is_folded_every_interval_and_at_the_end() {
    let (mut h, routes) = with_routes();
    let c = client(1);
    let relay = h.allocate(c);
    h.channel_bind(c, CHANNEL, peer_a()).assert_success();
    let [to_peer, to_client] = both_ways(c, relay, peer_a(), CHANNEL);
    // User space relays some itself (the first packets, before a route).
    assert!(h.client_packet(c, &channel_data(CHANNEL, b"hello")).is_some());
    routes.relay(&to_peer, 10, 1000);
    routes.relay(&to_client, 4, 400);
    let before = h.server.snapshot(h.now().mono);
    assert_eq!(
        (before.to_peer.packets, before.to_client.packets),
        (1, 0),
        "not folded yet"
    );
    assert_eq!(h.server.poll_timeout(), Some(h.now().mono + FOLD_INTERVAL));
    h.at(1);
    let folded = h.server.snapshot(h.now().mono);
    assert_eq!((folded.to_peer.packets, folded.to_peer.bytes), (11, 1005));
    assert_eq!((folded.to_client.packets, folded.to_client.bytes), (4, 400));
    let listed = &h.server.allocation_summaries(h.now().mono)[0];
    assert_eq!((listed.to_peer.packets, listed.to_client.packets), (11, 4));
    // Folding again adds only what is new.
    routes.relay(&to_peer, 1, 50);
    h.at(2);
    assert_eq!(h.server.snapshot(h.now().mono).to_peer.packets, 12);
    // What the kernel relayed after the last fold counts at the end.
    routes.relay(&to_client, 2, 20);
    h.refresh(c, &alice(), Some(0)).assert_success();
    assert!(routes.routes().is_empty());
    let ended = h.server.snapshot(h.now().mono);
    assert_eq!((ended.to_peer.packets, ended.to_client.packets), (12, 6));
    assert_eq!(ended.counters.ended_to_client.bytes, 420);
}

/// A way to end client's allocation.
type Ending = fn(&mut Harness, ClientAddr);

#[test]
fn every_way_an_allocation_ends_removes_its_routes() {
    let (mut h, routes) = with_routes();
    let ends: [(&str, Ending); 4] = [
        ("refresh 0", |h, c| h.refresh(c, &alice(), Some(0)).assert_success()),
        ("operator", |h, _| {
            let now = h.now().mono;
            let id = h.server.allocation_summaries(now)[0].id;
            assert!(h.server.end_allocation(id, now));
        }),
        ("revocation", |h, _| {
            let now = h.now().mono;
            assert_eq!(h.server.end_user_allocations("alice", now), 1);
        }),
        ("connection closed", |h, c| {
            h.server.handle_connection_closed(c, h.now().mono)
        }),
    ];
    for (how, end) in ends {
        let c = client(1);
        h.allocate(c);
        h.channel_bind(c, CHANNEL, peer_a()).assert_success();
        assert_eq!(routes.routes().len(), 2, "{how}");
        end(&mut h, c);
        assert!(!h.server.has_allocation(&c), "{how}");
        assert!(routes.routes().is_empty(), "{how}: {:?}", routes.routes());
    }
    // And expiry, at the allocation's timer.
    let c = client(1);
    h.allocate(c);
    h.channel_bind(c, CHANNEL, peer_a()).assert_success();
    h.permit(c, &[peer_a()]).assert_success();
    h.at(590);
    h.permit(c, &[peer_a()]).assert_success();
    assert_eq!(
        routes.expiry(&routes.routes()[0]),
        h.deadline(600),
        "the allocation ends first"
    );
    h.at(600);
    assert!(!h.server.has_allocation(&c));
    assert!(routes.routes().is_empty());
}

#[test]
fn no_route_where_the_kernel_cannot_do_what_user_space_does() {
    // A byte rate: the program holds no token bucket.
    let (mut h, routes) = with_routes_and(Settings {
        allocation_rate: 100_000,
        ..Settings::default()
    });
    h.allocate(client(1));
    h.channel_bind(client(1), CHANNEL, peer_a()).assert_success();
    assert!(routes.routes().is_empty(), "rate-limited");
    // A user byte rate likewise.
    let (mut h, routes) = with_routes();
    h.quota.set_user_rate(100_000);
    h.allocate(client(1));
    h.channel_bind(client(1), CHANNEL, peer_a()).assert_success();
    assert!(routes.routes().is_empty(), "user rate");
    // A TCP client: ChannelData on a stream.
    let (mut h, routes) = with_routes();
    h.allocate(tcp_client(1));
    h.channel_bind(tcp_client(1), CHANNEL, peer_a()).assert_success();
    assert!(routes.routes().is_empty(), "stream client");
    // An IPv4 client relaying to an IPv6 peer (RFC 6156 translation).
    let (mut h, routes) = with_routes_and(Settings {
        relay_ip_v6: Some(RELAY_IP_V6),
        ..Settings::default()
    });
    let c = client(1);
    h.request(
        c,
        &alice(),
        method::ALLOCATE,
        udp_and(|w| {
            w.bytes(attr::REQUESTED_ADDRESS_FAMILY, &IPV6_FAMILY);
        }),
    )
    .assert_success();
    h.channel_bind(c, CHANNEL, addr("[2001:4860::8888]:5000"))
        .assert_success();
    assert!(routes.routes().is_empty(), "translating families");
}

#[test]
fn a_route_the_fast_path_refuses_stays_with_user_space() {
    let (mut h, routes) = with_routes();
    routes.refuse(true);
    let c = client(1);
    let relay = h.allocate(c);
    h.channel_bind(c, CHANNEL, peer_a()).assert_success();
    assert!(routes.routes().is_empty());
    assert_eq!(h.server.poll_timeout(), h.deadline(600), "no fold timer without routes");
    assert!(h.client_packet(c, &channel_data(CHANNEL, b"x")).is_some());
    // Taken at the next change that derives the routes again.
    routes.refuse(false);
    h.channel_bind(c, CHANNEL, peer_a()).assert_success();
    assert_eq!(routes.routes().len(), 2);
    let _ = relay;
}

#[test]
fn a_reload_whose_filter_denies_a_routed_peer_removes_its_routes() {
    let (mut h, routes) = with_routes();
    let c = client(1);
    h.allocate(c);
    h.channel_bind(c, CHANNEL, peer_a()).assert_success();
    h.channel_bind(c, CHANNEL + 1, peer_b()).assert_success();
    assert_eq!(routes.routes().len(), 4);
    let rules = PeerRules {
        deny: vec!["8.8.8.0/24".parse().unwrap()],
        ..PeerRules::default()
    };
    let credentials = Credentials::new(CredentialsConfig {
        users: users("alice-pw"),
        ..testkit::core_credentials(REALM)
    });
    let now = h.now().mono;
    h.server
        .reconfigure(testkit::core_config(), credentials, PeerFilter::new(rules), now);
    let left = routes.routes();
    assert_eq!(left.len(), 2, "{left:?}");
    assert!(left
        .iter()
        .all(|r| matches!(r, FastRoute::ToPeer { peer, .. } | FastRoute::ToClient { peer, .. } if peer.0 == peer_b())));
}

#[test]
fn relay_to_relay_on_one_core_is_one_route_each_way_and_counts_on_both_sides() {
    let (mut h, routes) = with_routes_and(Settings {
        rules: PeerRules {
            own_ips: vec![RELAY_IP.into()],
            relay_ports: FIRST_PORT..=FIRST_PORT + PORTS - 1,
            relay_ips: vec![RELAY_IP.into()],
            ..PeerRules::default()
        },
        ..Settings::default()
    });
    let (a, b) = (client(1), client(2));
    let (relay_a, relay_b) = (h.allocate(a), h.allocate(b));
    h.channel_bind(a, CHANNEL, relay_b.0).assert_success();
    assert!(
        routes.routes().is_empty(),
        "b would answer with a Data indication: no channel for a yet"
    );
    h.channel_bind(b, CHANNEL + 7, relay_a.0).assert_success();
    let a_to_b = FastRoute::Across {
        client: a,
        channel: number(CHANNEL),
        to: b,
        to_channel: number(CHANNEL + 7),
    };
    let b_to_a = FastRoute::Across {
        client: b,
        channel: number(CHANNEL + 7),
        to: a,
        to_channel: number(CHANNEL),
    };
    assert_eq!(sorted(routes.routes()), sorted(vec![a_to_b, b_to_a]));
    routes.relay(&a_to_b, 3, 300);
    h.at(1);
    let summaries = h.server.allocation_summaries(h.now().mono);
    let of = |c: ClientAddr| summaries.iter().find(|s| s.client == c).unwrap();
    assert_eq!((of(a).to_peer.packets, of(b).to_client.bytes), (3, 300));
    assert_eq!(h.server.snapshot(h.now().mono).counters.relayed_in_process, 3);
    // One side going takes both routes: b's frames a's relay, a's is gone.
    routes.relay(&a_to_b, 1, 100);
    h.refresh(b, &alice(), Some(0)).assert_success();
    assert!(routes.routes().is_empty(), "{:?}", routes.routes());
    let ended = h.server.snapshot(h.now().mono);
    assert_eq!(
        ended.counters.ended_to_client.bytes, 400,
        "b's last count folded before it ended"
    );
}
