//! The peer filter holds on the fast path: a denied peer gets no route
//! and nothing reaches it or comes from it; a reload that denies a peer
//! with a live channel removes its routes, so the next datagram goes to
//! user space, which treats it as it would with the fast path off: it
//! still relays on a channel bound before the reload (docs/operations.md:
//! live permissions and channels stay, new requests meet the new rules),
//! so that is compared, not assumed.

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use crate::common::turn_client::{Source, TurnClient};
use crate::common::TestServer;
use crate::topology::{Topology, CLIENT, DENIED_PEER_IP};

use super::{start, wait_moved, wait_routes, Call, Setup, Verdicts, SILENCE};

#[test]
fn a_denied_peer_gets_no_channel_no_route_and_no_datagram() {
    let topology = Topology::for_the_fast_path();
    let far = &topology.far;
    let server = start(&Setup::default());
    let addr = server.addr();
    let (mut client, denied) = far.within(|| {
        let denied = UdpSocket::bind(SocketAddr::from((DENIED_PEER_IP, 0))).expect("bind the denied peer");
        (TurnClient::open_udp_from(CLIENT, addr), denied)
    });
    let denied_addr = denied.local_addr().unwrap();
    let relayed = client.allocate_udp();
    let (channel, bound) = client.channel_bind(denied_addr);
    assert_eq!(bound, Err(403), "ChannelBind to a denied peer");
    assert_eq!(client.create_permission(denied_addr), Err(403), "CreatePermission");
    wait_routes(&server, 0.0, Some(0.0));

    let before = Verdicts::of(&server);
    client.channel_data(channel, b"to a denied peer");
    client.send_indication(denied_addr, b"to a denied peer");
    denied.send_to(b"#from a denied peer", relayed).expect("send");
    denied.set_read_timeout(Some(SILENCE)).unwrap();
    let mut buf = [0; 64];
    assert!(denied.recv_from(&mut buf).is_err(), "the denied peer got a datagram");
    assert_eq!(
        client.take_arrivals(SILENCE),
        [],
        "the client got the denied peer's datagram"
    );
    // The program saw all three and sent none: the ChannelData on no
    // route, the Send indication and the peer's datagram not ChannelData.
    let expected = Verdicts::of_pairs(&[("pass_no_route", 1), ("pass_not_channel", 2)]);
    let moved = wait_moved(&server, &before, |m| m.sum(&["pass_no_route", "pass_not_channel"]) >= 3);
    assert_eq!(
        (moved.get("pass_no_route"), moved.get("pass_not_channel"), moved.tx()),
        (expected.get("pass_no_route"), expected.get("pass_not_channel"), 0),
        "moved {moved:?}"
    );
}

/// The `[peers]` section before the reload, and after: the peer of the
/// call denied.
const ALLOWING: &str = "[peers]\nallow = [\"10.211.0.0/24\"]\n";
const DENYING: &str = "[peers]\nallow = [\"10.211.0.0/24\"]\ndeny = [\"10.211.0.3/32\"]\n";

/// Rewrites the server's `[peers]` section from [`ALLOWING`] to
/// [`DENYING`] and sends SIGHUP; returns once the log says it applied.
fn reload_denying_the_peer(server: &TestServer) {
    let path = server.config_path();
    let config = std::fs::read_to_string(path).expect("read the config");
    assert!(config.contains(ALLOWING), "{config}");
    std::fs::write(path, config.replace(ALLOWING, DENYING)).expect("write the config");
    let reloaded = "configuration reloaded";
    let seen = server.stderr_log().matches(reloaded).count();
    server.sighup();
    let deadline = Instant::now() + Duration::from_secs(5);
    while server.stderr_log().matches(reloaded).count() == seen {
        assert!(
            Instant::now() < deadline,
            "no {reloaded:?} after SIGHUP:\n{}",
            server.stderr_log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// What one datagram each way on a live channel does after a reload that
/// denies its peer.
#[derive(Debug, PartialEq)]
struct AfterReload {
    to_peer: Option<Vec<u8>>,
    to_client: Vec<(Source, Vec<u8>)>,
}

/// A call (proven on the fast path when it is on), the reload, then one
/// datagram each way: what arrived, and the program's verdicts meanwhile.
fn call_through_a_reload(interfaces: Option<&str>) -> (AfterReload, Verdicts) {
    let topology = Topology::for_the_fast_path();
    let far = &topology.far;
    let server = start(&Setup {
        interfaces,
        peers_toml: ALLOWING,
        ..Setup::default()
    });
    let mut call = Call::open(&server, far);
    if interfaces.is_some() {
        call.prove_fast_path(&server);
    }
    reload_denying_the_peer(&server);
    let before = Verdicts::of(&server);
    let after = AfterReload {
        to_peer: call.send_to_peer(b"after the reload", SILENCE).map(|(data, _)| data),
        to_client: call.send_to_client(b"#after the reload", SILENCE),
    };
    let moved = wait_moved(&server, &before, |m| {
        interfaces.is_none() || m.sum(&["pass_no_route", "pass_not_channel"]) >= 2
    });
    if interfaces.is_some() {
        wait_routes(&server, 0.0, Some(0.0));
    }
    (after, moved)
}

#[test]
fn a_reload_denying_a_peer_takes_its_routes_away_at_the_next_datagram() {
    let (on, moved) = call_through_a_reload(Some("\"tpx-s\""));
    assert_eq!(
        (moved.get("pass_no_route"), moved.get("pass_not_channel"), moved.tx()),
        (1, 1, 0),
        "the datagrams after the reload: moved {moved:?}"
    );
    // User space judges them as it does with the fast path off.
    let (off, _) = call_through_a_reload(None);
    assert_eq!(on, off, "after the reload, with the fast path on and off");
}
