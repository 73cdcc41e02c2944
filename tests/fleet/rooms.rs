//! Signaling rooms across a fleet (`[fleet]`): two and three real
//! instances share one real `redis-server` on loopback, and WebSocket
//! clients (tokio-tungstenite) on different instances meet in one room:
//! peer lists (in join order across instances), joins, signals and leaves
//! cross instances, the room size holds fleet-wide (also between instances
//! of different membership lifetimes and room sizes), the peers of an instance killed with SIGKILL are seen
//! leaving once their membership lapses, and rooms go on through a Redis
//! restart (local rooms work meanwhile; afterwards membership is
//! re-published and signals flow again).

#![allow(clippy::disallowed_methods)] // waits use the real clock

use std::time::Duration;

use serde_json::json;

use crate::common::redis_server::{fleet_secret_line, RedisServer};
use crate::common::ws_client::connect;
use crate::common::{id_of, TestServer, WsClient};

/// Membership lifetime of the test fleets: peers of a dead instance leave
/// within it.
const TTL_SECS: u64 = 3;
/// Bound of any wait for a message that must come.
const WAIT: Duration = Duration::from_secs(5);

/// An instance of the fleet on `redis`, named `name`.
fn instance(redis: &RedisServer, name: &str, room_size: usize) -> TestServer {
    instance_with_ttl(redis, name, room_size, TTL_SECS)
}

/// An instance of the fleet on `redis` whose membership lifetime is
/// `ttl_secs`.
fn instance_with_ttl(redis: &RedisServer, name: &str, room_size: usize, ttl_secs: u64) -> TestServer {
    TestServer::start(&format!(
        "[auth]\nsecrets = [\"fleet-rooms-secret\"]\n\n[signaling]\nroom_size = {room_size}\n\n\
         [fleet]\nredis_url = \"{}\"\ninstance_id = \"{name}\"\nmembership_ttl = \"{ttl_secs}s\"\n\
         key_prefix = \"t{}\"\n{}",
        redis.url(),
        std::process::id(),
        fleet_secret_line()
    ))
}

/// Waits until `/readyz` of `server` says `redis: <state>`.
async fn wait_redis(server: &TestServer, state: &str) {
    let want = format!("redis: {state}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (code, body) = server.http_get("/readyz");
        assert_eq!(code, 200, "readyz stays 200 whatever Redis does: {body}");
        if body.contains(&want) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "readyz never said {want:?}: {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A signaling client on one instance, with its peer id once joined.
struct Peer {
    socket: WsClient,
    id: String,
}

impl Peer {
    /// Connects to `server` and joins `room` as `name`; returns the peer
    /// and the ids of the `peers` of its `joined`.
    async fn join(server: &TestServer, room: &str, name: &str) -> (Peer, Vec<String>) {
        let mut socket = connect(server).await;
        let joined = socket.join(room, name).await;
        let peers = joined["peers"]
            .as_array()
            .expect("peers")
            .iter()
            .map(|p| p["id"].as_str().expect("peer id").to_owned())
            .collect();
        let id = id_of(&joined);
        (Peer { socket, id }, peers)
    }
}

impl std::ops::Deref for Peer {
    type Target = WsClient;
    fn deref(&self) -> &WsClient {
        &self.socket
    }
}

impl std::ops::DerefMut for Peer {
    fn deref_mut(&mut self) -> &mut WsClient {
        &mut self.socket
    }
}

/// A Redis and two instances of rooms of six on it, both connected.
async fn two_instances() -> (RedisServer, TestServer, TestServer) {
    let redis = RedisServer::start();
    let (one, two) = (instance(&redis, "one", 6), instance(&redis, "two", 6));
    wait_redis(&one, "up").await;
    wait_redis(&two, "up").await;
    (redis, one, two)
}

/// Alice joins `room` on `one`, then Bob on `two`: Bob's `joined` lists
/// Alice, and Alice hears that Bob joined.
async fn meet(one: &TestServer, two: &TestServer, room: &str) -> (Peer, Peer) {
    let (mut alice, before) = Peer::join(one, room, "Alice").await;
    assert!(before.is_empty());
    let (bob, before) = Peer::join(two, room, "Bob").await;
    assert_eq!(
        before,
        [alice.id.clone()],
        "bob on instance two lists alice of instance one"
    );
    assert_eq!(
        alice.recv().await,
        json!({"type": "peer-joined", "id": bob.id, "name": "Bob"})
    );
    (alice, bob)
}

#[tokio::test]
async fn two_instances_share_a_room_with_joins_signals_and_leaves() {
    let (_redis, one, two) = two_instances().await;
    let (mut alice, mut bob) = meet(&one, &two, "standup").await;

    let offer = json!({"description": {"type": "offer", "sdp": "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\n"}});
    bob.signal(&alice.id, offer.clone()).await;
    alice.expect_signal(&bob.id, offer).await;
    alice.signal(&bob.id, json!(null)).await;
    bob.expect_signal(&alice.id, json!(null)).await;
    alice.signal("0123456789abcdef", json!(1)).await;
    assert_eq!(alice.recv().await["code"], "unknown-peer");

    let metrics = one.http_get("/metrics").1;
    assert!(metrics.contains("turnpike_fleet_redis_up 1"), "{metrics}");
    assert!(metrics.contains("turnpike_fleet_remote_peers 1"), "{metrics}");

    bob.send(json!({"type": "leave"})).await;
    assert_eq!(alice.recv().await, json!({"type": "peer-left", "id": bob.id}));
    let (mut carol, before) = Peer::join(&two, "standup", "Carol").await;
    assert_eq!(before, [alice.id.clone()], "bob's membership went with his leave");
    drop(carol.socket.ws.close(None).await);
    assert_eq!(alice.recv().await["type"], "peer-joined");
    assert_eq!(alice.recv().await, json!({"type": "peer-left", "id": carol.id}));
}

#[tokio::test]
async fn three_instances_make_a_full_mesh_and_the_room_size_holds_fleet_wide() {
    let redis = RedisServer::start();
    let servers = [
        instance(&redis, "one", 3),
        instance(&redis, "two", 3),
        instance(&redis, "three", 3),
    ];
    for server in &servers {
        wait_redis(server, "up").await;
    }
    let mut peers: Vec<Peer> = Vec::new();
    for (i, server) in servers.iter().enumerate() {
        let (peer, before) = Peer::join(server, "mesh", &format!("p{i}")).await;
        let ids: Vec<String> = peers.iter().map(|p| p.id.clone()).collect();
        assert_eq!(before, ids, "joined lists the others in join order");
        for earlier in &mut peers {
            assert_eq!(earlier.recv().await["id"], peer.id.as_str());
        }
        peers.push(peer);
    }
    // A fourth, on any instance, finds the room full.
    let mut late = connect(&servers[0]).await;
    late.send(json!({"type": "join", "room": "mesh"})).await;
    assert_eq!(late.recv().await["code"], "room-full");

    // Everyone signals everyone, across the three instances.
    for from in 0..3 {
        for to in 0..3 {
            if from != to {
                let to_id = peers[to].id.clone();
                peers[from].signal(&to_id, json!({"n": from * 10 + to})).await;
                let from_id = peers[from].id.clone();
                peers[to].expect_signal(&from_id, json!({"n": from * 10 + to})).await;
            }
        }
    }
    for server in &servers {
        let log = server.stderr_log();
        assert!(!log.contains("Redis is unreachable"), "{log}");
    }
}

/// Joins in `order` (`'a'` on `one`, `'b'` on `two`) to `room`: each
/// newcomer's `joined` lists everyone before it, of both instances, in
/// the order they joined, and each of them hears the newcomer.
async fn join_in_order(one: &TestServer, two: &TestServer, room: &str, order: &str) {
    let mut peers: Vec<Peer> = Vec::new();
    for (i, side) in order.chars().enumerate() {
        let server = if side == 'a' { one } else { two };
        let (peer, before) = Peer::join(server, room, &format!("{side}{i}")).await;
        let ids: Vec<String> = peers.iter().map(|p| p.id.clone()).collect();
        assert_eq!(
            before, ids,
            "joins {order:?}: the newcomer {i} lists the others in join order"
        );
        for earlier in &mut peers {
            assert_eq!(
                earlier.recv().await,
                json!({"type": "peer-joined", "id": peer.id, "name": format!("{side}{i}")})
            );
        }
        peers.push(peer);
    }
}

#[tokio::test]
async fn joined_lists_the_peers_of_both_instances_in_join_order() {
    let (_redis, one, two) = two_instances().await;
    for (n, order) in ["aba", "bab", "aab", "abb", "baa", "abab", "abba", "bbaa", "aabba"]
        .iter()
        .enumerate()
    {
        join_in_order(&one, &two, &format!("order{n}"), order).await;
    }
}

/// `fleet.membership_ttl` of 4 s on one instance and 30 s on the other:
/// each record is judged by its writer's lifetime, so both see each
/// other's peers, signals flow both ways, and the room size (3) holds for
/// a fourth join on either.
#[tokio::test]
async fn instances_with_different_membership_lifetimes_share_rooms_and_the_room_size() {
    let redis = RedisServer::start();
    let (one, two) = (
        instance_with_ttl(&redis, "short", 3, 4),
        instance_with_ttl(&redis, "long", 3, 30),
    );
    wait_redis(&one, "up").await;
    wait_redis(&two, "up").await;
    let (mut alice, mut bob) = meet(&one, &two, "mixed").await;
    let (mut carol, before) = Peer::join(&one, "mixed", "Carol").await;
    assert_eq!(before, [alice.id.clone(), bob.id.clone()]);
    assert_eq!(alice.recv().await["id"], carol.id.as_str());
    assert_eq!(bob.recv().await["id"], carol.id.as_str());
    // Longer than the short lifetime: the long-lived instance still counts
    // the short-lived one's peers (refreshed every third of their own 4 s).
    tokio::time::sleep(Duration::from_secs(5)).await;
    for server in [&two, &one] {
        let mut late = connect(server).await;
        late.send(json!({"type": "join", "room": "mixed"})).await;
        late.expect_error("room-full").await;
    }
    for (from, to) in [(0, 1), (1, 0), (1, 2), (2, 1)] {
        let peers = [&mut alice, &mut bob, &mut carol];
        let from_id = peers[from].id.clone();
        let to_id = peers[to].id.clone();
        peers[from].signal(&to_id, json!({"from": from, "to": to})).await;
        peers[to].expect_signal(&from_id, json!({"from": from, "to": to})).await;
    }
    for peer in [&mut alice, &mut bob, &mut carol] {
        peer.quiet("nobody left").await;
    }
}

/// `signaling.room_size` of 2 on one instance and 6 on the other: a room
/// holding a peer of the instance of 2 takes no more than 2 peers, on
/// either instance (the smallest size of its members wins).
#[tokio::test]
async fn the_smallest_room_size_of_a_rooms_members_holds_fleet_wide() {
    let redis = RedisServer::start();
    let (small, large) = (instance(&redis, "small", 2), instance(&redis, "large", 6));
    wait_redis(&small, "up").await;
    wait_redis(&large, "up").await;
    let (_alice, _bob) = meet(&small, &large, "pair").await;
    for server in [&large, &small] {
        let mut late = connect(server).await;
        late.send(json!({"type": "join", "room": "pair"})).await;
        late.expect_error("room-full").await;
    }
    // A room of the large instance's peers alone takes its six.
    let mut six = Vec::new();
    for i in 0..6 {
        six.push(Peer::join(&large, "six", &format!("p{i}")).await.0);
    }
    let mut late = connect(&small).await;
    late.send(json!({"type": "join", "room": "six"})).await;
    late.expect_error("room-full").await;
}

#[tokio::test]
async fn the_peers_of_an_instance_killed_mid_call_leave_within_the_membership_expiry() {
    let (_redis, one, two) = two_instances().await;
    let (mut alice, mut bob) = meet(&one, &two, "call").await;
    bob.signal(&alice.id, json!("hello")).await;
    alice.expect_signal(&bob.id, json!("hello")).await;

    let killed = std::time::Instant::now();
    two.signal(libc::SIGKILL);
    // The wait is the bound: the lifetime, and a second for the sweep to
    // run and deliver on a busy machine.
    let bound = Duration::from_secs(TTL_SECS + 1);
    let left = alice.try_recv(bound).await;
    assert_eq!(
        left,
        Some(json!({"type": "peer-left", "id": bob.id})),
        "alice was not told bob left within {bound:?} of his instance dying"
    );
    eprintln!("peer-left {:?} after the SIGKILL", killed.elapsed());
    assert!(two.wait_exit(WAIT).is_some(), "instance two did not die");
    // The room is alice's alone again.
    let (_, before) = Peer::join(&one, "call", "Carol").await;
    assert_eq!(before, [alice.id.clone()]);
}

/// A Redis that hangs without closing a connection (SIGSTOP) counts as
/// down when the instance's next report (published every 5 s, with the
/// fleet's 2 s command bound) gets no answer, long before its next
/// membership sweep (a third of 60 s) would have run into it; and as up
/// again once Redis answers.
#[tokio::test]
async fn a_frozen_redis_counts_as_down_at_the_next_report() {
    let redis = RedisServer::start();
    let server = instance_with_ttl(&redis, "frozen", 4, 60);
    wait_redis(&server, "up").await;
    redis.pause();
    wait_redis(&server, "down").await;
    redis.resume();
    wait_redis(&server, "up").await;
    let log = server.stderr_log();
    assert!(log.contains("Redis is unreachable"), "{log}");
    assert!(log.contains("Redis is reachable again"), "{log}");
}

#[tokio::test]
async fn rooms_go_on_through_a_redis_restart_and_signals_flow_again() {
    let (mut redis, one, two) = two_instances().await;
    let (mut alice, mut bob) = meet(&one, &two, "blip").await;

    redis.stop();
    wait_redis(&one, "down").await;
    wait_redis(&two, "down").await;
    // Local rooms keep working: carol joins alice's instance and sees
    // alice and bob; alice and carol signal each other.
    let (mut carol, before) = Peer::join(&one, "blip", "Carol").await;
    assert_eq!(before, [alice.id.clone(), bob.id.clone()]);
    assert_eq!(alice.recv().await["id"], carol.id.as_str());
    carol.signal(&alice.id, json!("during")).await;
    alice.expect_signal(&carol.id, json!("during")).await;
    // Longer than a membership lifetime: nobody is taken for gone.
    tokio::time::sleep(Duration::from_secs(TTL_SECS + 1)).await;

    redis.restart();
    wait_redis(&one, "up").await;
    wait_redis(&two, "up").await;
    // Membership is re-published: bob's instance learns of carol from
    // Redis, and the sorted set holds all three.
    assert_eq!(
        bob.recv().await,
        json!({"type": "peer-joined", "id": carol.id, "name": "Carol"})
    );
    let mut conn = redis.connection();
    let key = format!("t{}:room:blip", std::process::id());
    let mut members: Vec<String> = redis::cmd("ZRANGE")
        .arg(&key)
        .arg(0)
        .arg(-1)
        .query(&mut conn)
        .expect("ZRANGE");
    members.sort();
    let mut want = vec![alice.id.clone(), bob.id.clone(), carol.id.clone()];
    want.sort();
    assert_eq!(members, want);
    // Signals flow across instances again, both ways.
    alice.signal(&bob.id, json!({"after": 1})).await;
    bob.expect_signal(&alice.id, json!({"after": 1})).await;
    bob.signal(&carol.id, json!({"after": 2})).await;
    carol.expect_signal(&bob.id, json!({"after": 2})).await;
    // Nobody saw anyone leave, and each instance warned once.
    for peer in [&mut alice, &mut bob, &mut carol] {
        assert_eq!(peer.try_recv(Duration::from_millis(300)).await, None);
    }
    for server in [&one, &two] {
        let log = server.stderr_log();
        assert_eq!(log.matches("Redis is unreachable").count(), 1, "{log}");
        assert!(log.contains("Redis is reachable again"), "{log}");
    }
}
