//! TCP relays (RFC 6062): [`crate::proto::server::tcp_relay`].

use super::*;
use crate::proto::server::{connection_bind_shard, SpliceDirection, SpliceVerdict, MAX_SPLICE_CHUNK};
use crate::proto::stats::Traffic;

// TCP allocations (RFC 6062)

const TCP: [u8; 4] = [6, 0, 0, 0];

impl Harness {
    /// Sends an authenticated request and returns every effect it caused,
    /// for requests answered later or followed by other effects.
    fn effects_of(
        &mut self,
        client: ClientAddr,
        cred: &Cred,
        method: u16,
        build: impl Fn(&mut MessageWriter<'_>),
    ) -> Vec<Effect> {
        let id = self.next_id();
        let packet = self.authed(client, cred, method, id, build);
        let now = self.now();
        assert_eq!(self.server.handle_client_packet(client, &packet, now), None);
        std::iter::from_fn(|| self.server.poll_effect()).collect()
    }

    fn tcp_allocate(&mut self, client: ClientAddr) -> RelayAddr {
        self.request(client, &alice(), method::ALLOCATE, |w| {
            w.bytes(attr::REQUESTED_TRANSPORT, &TCP);
        })
        .relay()
    }

    /// Connect to `peer`; returns the connection id the server asks the
    /// driver to connect.
    fn connect(&mut self, client: ClientAddr, peer: SocketAddr) -> ConnectionId {
        let effects = self.effects_of(client, &alice(), method::CONNECT, |w| {
            w.xor_address(attr::XOR_PEER_ADDRESS, peer);
        });
        match effects.as_slice() {
            [Effect::ConnectPeer { id, peer: to, .. }] if to.0 == peer => *id,
            other => panic!("expected one ConnectPeer, got {other:?}"),
        }
    }
    /// A TCP allocation for `control` with a connected (pending) peer
    /// connection to `peer`; the Connect answer is taken.
    fn pending_connection(&mut self, control: ClientAddr, peer: SocketAddr) -> ConnectionId {
        self.tcp_allocate(control);
        self.permit(control, &[peer]).assert_success();
        let id = self.connect(control, peer);
        assert!(self.server.handle_peer_connect_result(id, true, self.now().mono));
        let Some(Effect::Transmit { .. }) = self.server.poll_effect() else {
            panic!("Connect not answered")
        };
        id
    }
}

impl Harness {
    /// [`Harness::pending_connection`] bound to data connection `data`,
    /// whose ConnectionBind carries the control connection's nonce.
    fn bound_connection(&mut self, control: ClientAddr, data: ClientAddr, peer: SocketAddr) -> ConnectionId {
        let id = self.pending_connection(control, peer);
        self.nonces.insert(data, self.nonces[&control].clone());
        let effects = self.effects_of(data, &alice(), method::CONNECTION_BIND, bind(id));
        assert!(matches!(effects.as_slice(), [_, Effect::Splice { .. }]), "{effects:?}");
        id
    }

    fn spliced(&mut self, id: ConnectionId, direction: SpliceDirection, len: usize) -> SpliceVerdict {
        let now = self.now().mono;
        let verdict = self.server.handle_spliced_bytes(id, direction, len, now);
        self.assert_quiet();
        verdict
    }

    /// Moves the clock to `at` (no timer is due in between).
    fn at_instant(&mut self, at: Instant) {
        self.elapsed = at - self.base;
    }
}

/// The one answer among `effects`, which must be all there is.
fn only_answer(effects: &[Effect]) -> Response {
    match effects {
        [Effect::Transmit { bytes, .. }] => Response(bytes.clone()),
        other => panic!("expected one answer, got {other:?}"),
    }
}

/// CONNECTION-ID of a ConnectionBind.
fn bind(id: ConnectionId) -> impl Fn(&mut MessageWriter<'_>) {
    move |w| {
        w.u32(attr::CONNECTION_ID, id.0);
    }
}

fn connection_id_of(bytes: &[u8]) -> ConnectionId {
    let msg = Message::parse(bytes).expect("STUN");
    ConnectionId(msg.u32_attr(attr::CONNECTION_ID).expect("CONNECTION-ID").unwrap())
}

#[test]
fn tcp_allocations_need_a_stream_control_connection_and_no_udp_options() {
    let mut h = Harness::new();
    let tcp_only = |w: &mut MessageWriter<'_>| {
        w.bytes(attr::REQUESTED_TRANSPORT, &TCP);
    };
    h.request(client(1), &alice(), method::ALLOCATE, tcp_only)
        .assert_code(400);
    let with_even_port = |w: &mut MessageWriter<'_>| {
        w.bytes(attr::REQUESTED_TRANSPORT, &TCP).bytes(attr::EVEN_PORT, &[0]);
    };
    h.request(tcp_client(1), &alice(), method::ALLOCATE, with_even_port)
        .assert_code(400);
    h.tcp_allocate(tcp_client(2));
    // No channels or Send indications on a TCP allocation.
    h.channel_bind(tcp_client(2), 0x4000, peer_a()).assert_code(400);
    h.permit(tcp_client(2), &[peer_a()]).assert_success();
    assert_eq!(h.send(tcp_client(2), peer_a(), b"x"), None);
}

#[test]
fn connect_needs_a_permission_and_answers_after_the_driver_connects() {
    let mut h = Harness::new();
    let c = tcp_client(1);
    let relay = h.tcp_allocate(c);
    let refused = h.effects_of(c, &alice(), method::CONNECT, |w| {
        w.xor_address(attr::XOR_PEER_ADDRESS, peer_a());
    });
    let [Effect::Transmit { bytes, .. }] = refused.as_slice() else {
        panic!("{refused:?}")
    };
    Response(bytes.clone()).assert_code(403);

    h.permit(c, &[peer_a()]).assert_success();
    let id = h.connect(c, peer_a());
    // A second Connect to the same peer while the first is pending: 446.
    let again = h.effects_of(c, &alice(), method::CONNECT, |w| {
        w.xor_address(attr::XOR_PEER_ADDRESS, peer_a());
    });
    let [Effect::Transmit { bytes, .. }] = again.as_slice() else {
        panic!("{again:?}")
    };
    Response(bytes.clone()).assert_code(446);

    assert!(h.server.handle_peer_connect_result(id, true, h.now().mono));
    let Some(Effect::Transmit { to, bytes }) = h.server.poll_effect() else {
        panic!("no answer")
    };
    assert_eq!(to, c);
    let answer = Response(bytes);
    answer.assert_success();
    assert!(answer.msg().verify_integrity(&stun::integrity_key(&alice().key)));
    assert_eq!(connection_id_of(&answer.0), id);
    h.assert_quiet();
    let _ = relay;
}

#[test]
fn a_failed_connect_is_447() {
    let mut h = Harness::new();
    let c = tcp_client(1);
    h.tcp_allocate(c);
    h.permit(c, &[peer_a()]).assert_success();
    let id = h.connect(c, peer_a());
    assert!(!h.server.handle_peer_connect_result(id, false, h.now().mono));
    let Some(Effect::Transmit { bytes, .. }) = h.server.poll_effect() else {
        panic!("no answer")
    };
    Response(bytes).assert_code(447);
    assert_eq!(h.server.poll_effect(), Some(Effect::ClosePeerConnection { id }));
    // The peer may be connected again, but only while its permission lasts.
    let again = h.connect(c, peer_a());
    h.server.handle_peer_connection_closed(again);
    assert_eq!(h.server.poll_effect(), Some(Effect::ClosePeerConnection { id: again }));
    h.at(300);
    let expired = h.effects_of(c, &alice(), method::CONNECT, |w| {
        w.xor_address(attr::XOR_PEER_ADDRESS, peer_a());
    });
    let [Effect::Transmit { bytes, .. }] = expired.as_slice() else {
        panic!("{expired:?}")
    };
    Response(bytes.clone()).assert_code(403);
}

#[test]
fn connection_bind_from_a_new_connection_splices_it_after_the_answer() {
    let mut h = Harness::new();
    let (control, data) = (tcp_client(1), tcp_client(2));
    let id = h.pending_connection(control, peer_a());
    let bind = bind(id);
    // Another user cannot take the connection.
    let stolen = h.effects_of(data, &carol(), method::CONNECTION_BIND, &bind);
    let [Effect::Transmit { bytes, .. }] = stolen.as_slice() else {
        panic!("{stolen:?}")
    };
    Response(bytes.clone()).assert_code(441);
    // Its owner can, from a fresh connection: answer first, then splice.
    let effects = h.effects_of(data, &alice(), method::CONNECTION_BIND, &bind);
    let [Effect::Transmit { to, bytes }, Effect::Splice {
        id: spliced,
        data: with,
    }] = effects.as_slice()
    else {
        panic!("{effects:?}")
    };
    assert_eq!((*to, *spliced, *with), (data, id, data));
    Response(bytes.clone()).assert_success();
    // Bound once only.
    let twice = h.effects_of(tcp_client(3), &alice(), method::CONNECTION_BIND, &bind);
    let [Effect::Transmit { bytes, .. }] = twice.as_slice() else {
        panic!("{twice:?}")
    };
    Response(bytes.clone()).assert_code(400);
    // Every answer was counted, the late Connect answer included.
    let requests = h.server.snapshot(h.now().mono).counters.requests;
    let count = |method: usize, code: u16| requests[method][stats::CODES.iter().position(|c| *c == code).unwrap()];
    assert_eq!(count(5, 200), 1, "connect");
    assert_eq!(
        (count(6, 200), count(6, 441), count(6, 400)),
        (1, 1, 1),
        "connection_bind"
    );
    // The data connection closing closes the peer connection.
    h.server.handle_connection_closed(data, h.now().mono);
    assert_eq!(h.server.poll_effect(), Some(Effect::ClosePeerConnection { id }));
}

#[test]
fn incoming_peer_connections_need_a_permission_and_expire_unbound_after_30_s() {
    let mut h = Harness::new();
    let c = tcp_client(1);
    let relay = h.tcp_allocate(c);
    let now = h.now().mono;
    assert_eq!(
        h.server.handle_incoming_peer_connection(relay, PeerAddr(peer_a()), now),
        None
    );
    h.assert_quiet();
    h.permit(c, &[peer_a()]).assert_success();
    let id = h
        .server
        .handle_incoming_peer_connection(relay, PeerAddr(peer_a()), h.now().mono)
        .expect("permitted");
    let Some(Effect::Transmit { to, bytes }) = h.server.poll_effect() else {
        panic!("no ConnectionAttempt")
    };
    assert_eq!(to, c);
    let msg = Message::parse(&bytes).unwrap();
    assert_eq!(
        (msg.class(), msg.method()),
        (Class::Indication, method::CONNECTION_ATTEMPT)
    );
    assert_eq!(msg.xor_address(attr::XOR_PEER_ADDRESS), Some(Ok(peer_a())));
    assert_eq!(connection_id_of(&bytes), id);
    h.at(29);
    let expiry = h.deadline(30).expect("a deadline");
    assert_eq!(h.server.poll_timeout(), Some(expiry));
    h.server.handle_timeout(expiry);
    assert_eq!(h.server.poll_effect(), Some(Effect::ClosePeerConnection { id }));
}

#[test]
fn closing_the_control_connection_closes_its_peer_connections() {
    let mut h = Harness::new();
    let c = tcp_client(1);
    h.tcp_allocate(c);
    h.permit(c, &[peer_a(), peer_b()]).assert_success();
    let (a, b) = (h.connect(c, peer_a()), h.connect(c, peer_b()));
    h.server.handle_connection_closed(c, h.now().mono);
    let closed: BTreeSet<_> = std::iter::from_fn(|| h.server.poll_effect())
        .collect::<Vec<_>>()
        .into_iter()
        .map(|e| match e {
            Effect::ClosePeerConnection { id } => id,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(closed, BTreeSet::from([a, b]));
    assert_eq!(h.binder().releases.len(), 1);
}

#[test]
fn an_allocation_the_operator_ends_closes_its_peer_connections_and_keeps_the_control_connection() {
    let mut h = Harness::new();
    let c = tcp_client(1);
    let id = h.pending_connection(c, peer_a());
    let allocation = h.server.allocation_summaries(h.now().mono)[0].id;
    assert!(h.server.end_allocation(allocation, h.now().mono));
    assert_eq!(h.server.poll_effect(), Some(Effect::ClosePeerConnection { id }));
    h.assert_quiet();
    assert_eq!(h.binder().releases.len(), 1);
    // The control connection is the client's: it is told 437 on it.
    h.refresh(c, &alice(), None).assert_code(437);
}

/// The data connection's ConnectionBind signed with the nonce of the
/// control connection (as coturn's uclient sends it) binds at once: a 438
/// there broke clients that read the data connection as raw bytes.
#[test]
fn connection_bind_takes_the_nonce_of_its_control_connection() {
    let mut h = Harness::new();
    let (control, data, stranger) = (tcp_client(1), tcp_client(2), tcp_client(3));
    let id = h.pending_connection(control, peer_a());
    // Another client's nonce is stale on the data connection.
    h.challenge(stranger, method::ALLOCATE, udp);
    h.nonces.insert(data, h.nonces[&stranger].clone());
    only_answer(&h.effects_of(data, &alice(), method::CONNECTION_BIND, bind(id))).assert_challenge(438);
    // The control connection's nonce is not: answer, then splice.
    h.nonces.insert(data, h.nonces[&control].clone());
    let effects = h.effects_of(data, &alice(), method::CONNECTION_BIND, bind(id));
    let [Effect::Transmit { to, bytes }, Effect::Splice { id: spliced, .. }] = effects.as_slice() else {
        panic!("{effects:?}")
    };
    assert_eq!((*to, *spliced), (data, id));
    Response(bytes.clone()).assert_success();
    // Only for ConnectionBind: other requests on a new connection still
    // need a nonce of their own.
    h.nonces.insert(tcp_client(4), h.nonces[&control].clone());
    only_answer(&h.effects_of(tcp_client(4), &alice(), method::REFRESH, none)).assert_challenge(438);
}

/// A bound connection no longer lends its control nonce: a second bind
/// under it is 438, not a second splice.
#[test]
fn a_bound_connection_lends_no_nonce() {
    let mut h = Harness::new();
    let (control, data) = (tcp_client(1), tcp_client(2));
    let id = h.pending_connection(control, peer_a());
    h.nonces.insert(data, h.nonces[&control].clone());
    assert_eq!(h.effects_of(data, &alice(), method::CONNECTION_BIND, bind(id)).len(), 2);
    h.nonces.insert(tcp_client(5), h.nonces[&control].clone());
    only_answer(&h.effects_of(tcp_client(5), &alice(), method::CONNECTION_BIND, bind(id))).assert_challenge(438);
}

fn refusals(h: &Harness, why: stats::LimitRefusal) -> u64 {
    h.server.snapshot(h.now().mono).counters.refusals[why as usize]
}

/// 8.8.8.8 on port `port`: peers of one permission.
fn peer_at(port: u16) -> SocketAddr {
    SocketAddr::from(([8, 8, 8, 8], port))
}

#[test]
fn connects_beyond_the_allocation_cap_get_508_until_a_connection_ends() {
    let mut h = Harness::new(); // 3 per allocation
    let c = tcp_client(1);
    h.tcp_allocate(c);
    h.permit(c, &[peer_a()]).assert_success();
    let pending = h.connect(c, peer_at(1));
    assert!(h.server.handle_peer_connect_result(pending, true, h.now().mono));
    let _ = h.server.poll_effect();
    let connecting = [h.connect(c, peer_at(2)), h.connect(c, peer_at(3))];
    // Connecting, pending and bound connections all count.
    let refused = h.effects_of(c, &alice(), method::CONNECT, |w| {
        w.xor_address(attr::XOR_PEER_ADDRESS, peer_at(4));
    });
    let answer = only_answer(&refused);
    answer.assert_code(508);
    assert!(answer.msg().verify_integrity(&stun::integrity_key(&alice().key)));
    assert_eq!(refusals(&h, stats::LimitRefusal::PeerConnectionsPerAllocation), 1);
    // A failed connect frees its slot, as does a closed connection.
    assert!(!h.server.handle_peer_connect_result(connecting[0], false, h.now().mono));
    let _ = h.server.poll_effect();
    assert_eq!(
        h.server.poll_effect(),
        Some(Effect::ClosePeerConnection { id: connecting[0] })
    );
    h.connect(c, peer_at(4));
    h.server.handle_peer_connection_closed(pending);
    assert_eq!(
        h.server.poll_effect(),
        Some(Effect::ClosePeerConnection { id: pending })
    );
    h.connect(c, peer_at(5));
    assert_eq!(refusals(&h, stats::LimitRefusal::PeerConnectionsPerAllocation), 1);
}

#[test]
fn the_total_cap_refuses_connects_and_peers_connecting_in() {
    let mut h = Harness::new(); // 3 per allocation, 5 in all
    let (full, other) = (tcp_client(1), tcp_client(2));
    let full_relay = h.tcp_allocate(full);
    let other_relay = h.tcp_allocate(other);
    h.permit(full, &[peer_a()]).assert_success();
    h.permit(other, &[peer_a()]).assert_success();
    for port in 1..=3 {
        h.connect(full, peer_at(port));
    }
    // A peer connecting in counts like a Connect.
    let incoming = h
        .server
        .handle_incoming_peer_connection(other_relay, PeerAddr(peer_at(10)), h.now().mono);
    assert!(incoming.is_some());
    let _ = h.server.poll_effect(); // ConnectionAttempt
    h.connect(other, peer_at(1));
    // Five in all: the other allocation, with room of its own, gets 508.
    let refused = h.effects_of(other, &alice(), method::CONNECT, |w| {
        w.xor_address(attr::XOR_PEER_ADDRESS, peer_at(2));
    });
    only_answer(&refused).assert_code(508);
    assert_eq!(refusals(&h, stats::LimitRefusal::PeerConnectionsTotal), 1);
    // Peers connecting in are refused before the client hears of them:
    // by the total cap, and by the allocation's own cap first.
    let now = h.now().mono;
    assert_eq!(
        h.server
            .handle_incoming_peer_connection(other_relay, PeerAddr(peer_at(11)), now),
        None
    );
    assert_eq!(
        h.server
            .handle_incoming_peer_connection(full_relay, PeerAddr(peer_at(12)), now),
        None
    );
    h.assert_quiet();
    assert_eq!(refusals(&h, stats::LimitRefusal::PeerConnectionsTotal), 2);
    assert_eq!(refusals(&h, stats::LimitRefusal::PeerConnectionsPerAllocation), 1);
    assert_eq!(h.server.snapshot(now).peer_connections, 5);
    // An allocation that goes frees its connections for everyone.
    h.server.handle_connection_closed(full, now);
    assert_eq!(std::iter::from_fn(|| h.server.poll_effect()).count(), 3);
    h.connect(other, peer_at(2));
}

/// A connect that completes after its allocation is gone: the core has
/// already told the driver to close the connection, answers nobody, and
/// tells the driver to drop the stream it got.
#[test]
fn a_connect_finishing_after_its_allocation_is_gone_is_dropped() {
    let mut h = Harness::new();
    let c = tcp_client(1);
    h.tcp_allocate(c);
    h.permit(c, &[peer_a()]).assert_success();
    let (late, failed) = (h.connect(c, peer_at(1)), h.connect(c, peer_at(2)));
    h.server.handle_connection_closed(c, h.now().mono);
    let closed: BTreeSet<_> = std::iter::from_fn(|| h.server.poll_effect())
        .map(|e| match e {
            Effect::ClosePeerConnection { id } => id,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(closed, BTreeSet::from([late, failed]));
    let now = h.now().mono;
    assert!(
        !h.server.handle_peer_connect_result(late, true, now),
        "a stream nobody waits for is kept"
    );
    assert!(!h.server.handle_peer_connect_result(failed, false, now));
    h.assert_quiet();
    // Nor does a second report of a live connection keep a second stream.
    let c = tcp_client(2);
    let id = h.pending_connection(c, peer_a());
    assert!(!h.server.handle_peer_connect_result(id, true, h.now().mono));
    h.assert_quiet();
}

#[test]
fn spliced_bytes_count_as_the_allocations_traffic() {
    let mut h = Harness::new();
    let (control, data) = (tcp_client(1), tcp_client(2));
    let id = h.bound_connection(control, data, peer_a());
    for len in [1000, 24] {
        assert_eq!(h.spliced(id, SpliceDirection::ToPeer, len), SpliceVerdict::Forward);
    }
    assert_eq!(h.spliced(id, SpliceDirection::ToClient, 500), SpliceVerdict::Forward);
    let snapshot = h.server.snapshot(h.now().mono);
    assert_eq!(
        snapshot.to_peer,
        Traffic {
            packets: 2,
            bytes: 1024
        }
    );
    assert_eq!(snapshot.to_client, Traffic { packets: 1, bytes: 500 });
    // They stay counted once the allocation has ended.
    h.server.handle_connection_closed(control, h.now().mono);
    assert_eq!(h.server.poll_effect(), Some(Effect::ClosePeerConnection { id }));
    let ended = h.server.snapshot(h.now().mono);
    assert_eq!((ended.to_peer.bytes, ended.to_client.bytes), (1024, 500));
    // A splice the core closed is told to end.
    assert_eq!(h.spliced(id, SpliceDirection::ToPeer, 1), SpliceVerdict::Close);
}

#[test]
fn only_bound_connections_splice() {
    let mut h = Harness::new();
    let id = h.pending_connection(tcp_client(1), peer_a());
    assert_eq!(h.spliced(id, SpliceDirection::ToPeer, 1), SpliceVerdict::Close);
    assert_eq!(
        h.spliced(ConnectionId(999), SpliceDirection::ToClient, 1),
        SpliceVerdict::Close
    );
    assert_eq!(h.server.snapshot(h.now().mono).to_peer, Traffic::default());
}

/// 32 KiB/s with its 16 KiB burst: a full read passes at once, the next
/// waits exactly as long as the rate needs, and nothing is counted (or
/// dropped) while it waits. Both directions draw on one rate.
#[test]
fn a_splice_waits_for_the_allocation_byte_rate_instead_of_dropping() {
    let mut h = Harness::with(Settings {
        allocation_rate: 32 * 1024,
        ..Settings::default()
    });
    let id = h.bound_connection(tcp_client(1), tcp_client(2), peer_a());
    let start = h.now().mono;
    assert_eq!(
        h.spliced(id, SpliceDirection::ToPeer, MAX_SPLICE_CHUNK),
        SpliceVerdict::Forward
    );
    let due = start + Duration::from_millis(250);
    assert_eq!(
        h.spliced(id, SpliceDirection::ToClient, 8 * 1024),
        SpliceVerdict::WaitUntil(due)
    );
    h.at_instant(due - Duration::from_millis(1));
    assert_eq!(
        h.spliced(id, SpliceDirection::ToClient, 8 * 1024),
        SpliceVerdict::WaitUntil(due)
    );
    let snapshot = h.server.snapshot(h.now().mono);
    assert_eq!((snapshot.to_peer.bytes, snapshot.to_client.bytes), (16 * 1024, 0));
    assert_eq!(
        snapshot.counters.rate_limited,
        [Traffic::default(); 2],
        "nothing dropped"
    );
    h.at_instant(due);
    assert_eq!(
        h.spliced(id, SpliceDirection::ToClient, 8 * 1024),
        SpliceVerdict::Forward
    );
    assert_eq!(h.server.snapshot(h.now().mono).to_client.bytes, 8 * 1024);
}

/// The user's rate is shared by all its allocations, splices included.
#[test]
fn splices_of_one_user_share_its_byte_rate() {
    let mut h = Harness::new();
    h.quota.set_user_rate(32 * 1024);
    let a = h.bound_connection(tcp_client(1), tcp_client(2), peer_a());
    let b = h.bound_connection(tcp_client(3), tcp_client(4), peer_b());
    assert_eq!(
        h.spliced(a, SpliceDirection::ToPeer, MAX_SPLICE_CHUNK),
        SpliceVerdict::Forward
    );
    let due = h.now().mono + Duration::from_millis(125);
    assert_eq!(
        h.spliced(b, SpliceDirection::ToPeer, 4 * 1024),
        SpliceVerdict::WaitUntil(due)
    );
    h.at_instant(due);
    assert_eq!(h.spliced(b, SpliceDirection::ToPeer, 4 * 1024), SpliceVerdict::Forward);
}

// Connection ids across shards (see `ConnectionId`)

#[test]
fn connection_ids_name_the_shard_of_the_core_that_issued_them() {
    let mut h = Harness::with(Settings {
        shard: ShardId(3),
        ..Settings::default()
    });
    let control = tcp_client(1);
    let first = h.pending_connection(control, peer_a());
    h.permit(control, &[peer_b()]).assert_success();
    let second = h.connect(control, peer_b());
    assert_eq!((first.shard(), second.shard()), (ShardId(3), ShardId(3)));
    assert_ne!(first, second);
    assert_eq!(first.0 >> 24, 3, "the shard is the top byte on the wire");
}

#[test]
fn a_connection_bind_names_the_shard_to_hand_its_connection_to() {
    let mut h = Harness::with(Settings {
        shard: ShardId(2),
        ..Settings::default()
    });
    let (control, data) = (tcp_client(1), tcp_client(2));
    let id = h.pending_connection(control, peer_a());
    h.nonces.insert(data, h.nonces[&control].clone());
    let tid = h.next_id();
    let signed = h.authed(data, &alice(), method::CONNECTION_BIND, tid, bind(id));
    assert_eq!(connection_bind_shard(&signed), Some(ShardId(2)));
    // Unsigned too: the owner, not the accepting shard, challenges it.
    let unsigned = encode(Class::Request, method::CONNECTION_BIND, tid, bind(id), None);
    assert_eq!(connection_bind_shard(&unsigned), Some(ShardId(2)));
    let other = ConnectionId::new(ShardId(200), 7);
    let made_up = encode(Class::Request, method::CONNECTION_BIND, tid, bind(other), None);
    assert_eq!(connection_bind_shard(&made_up), Some(ShardId(200)));
}

#[test]
fn anything_but_a_connection_bind_request_with_an_id_stays_where_it_was_accepted() {
    let tid = [7; 12];
    let id = ConnectionId::new(ShardId(1), 1);
    let without_id = encode(Class::Request, method::CONNECTION_BIND, tid, |_| {}, None);
    let binding = encode(Class::Request, method::BINDING, tid, |_| {}, None);
    let allocate = encode(Class::Request, method::ALLOCATE, tid, bind(id), None);
    let indication = encode(Class::Indication, method::CONNECTION_BIND, tid, bind(id), None);
    let bound = encode(Class::Request, method::CONNECTION_BIND, tid, bind(id), None);
    for frame in [&without_id, &binding, &allocate, &indication] {
        assert_eq!(connection_bind_shard(frame), None, "{frame:02x?}");
    }
    // Truncated or garbled: no parse, no panic, no hand-off.
    for len in 0..bound.len() {
        assert_eq!(connection_bind_shard(&bound[..len]), None, "cut at {len}");
    }
    assert_eq!(connection_bind_shard(&[0x00, 0x0b, 0xff]), None);
    assert_eq!(connection_bind_shard(&[0x40, 0x00, 0x00, 0x04, 1, 2, 3, 4]), None);
}

#[test]
fn a_connection_bind_for_an_id_of_another_shard_gets_400_here() {
    // What a core answers when the driver could not hand the connection
    // on (no such shard runs): the same as for any unknown id.
    let mut h = Harness::with(Settings {
        shard: ShardId(1),
        ..Settings::default()
    });
    let (control, data) = (tcp_client(1), tcp_client(2));
    let id = h.pending_connection(control, peer_a());
    let foreign = ConnectionId::new(ShardId(0), id.serial());
    // Unknown here, so it lends no nonce: a fresh one first, then 400.
    h.nonces.insert(data, h.nonces[&control].clone());
    let stale = only_answer(&h.effects_of(data, &alice(), method::CONNECTION_BIND, bind(foreign)));
    stale.assert_challenge(438);
    h.nonces.insert(data, stale.attr(attr::NONCE).unwrap().to_vec());
    let answer = only_answer(&h.effects_of(data, &alice(), method::CONNECTION_BIND, bind(foreign)));
    answer.assert_code(400);
    // The real one still binds.
    assert_eq!(h.effects_of(data, &alice(), method::CONNECTION_BIND, bind(id)).len(), 2);
}
