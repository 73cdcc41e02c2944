//! Signaling rooms across a fleet (`[fleet]`): two and three real
//! instances share one real `redis-server` on loopback, and WebSocket
//! clients (tokio-tungstenite) on different instances meet in one room:
//! peer lists, joins, signals and leaves cross instances, the room size
//! holds fleet-wide, the peers of an instance killed with SIGKILL are seen
//! leaving once their membership lapses, and rooms go on through a Redis
//! restart (local rooms work meanwhile; afterwards membership is
//! re-published and signals flow again).

#![allow(clippy::disallowed_methods)] // waits use the real clock

mod common;

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

use common::redis_server::RedisServer;
use common::TestServer;

/// Membership lifetime of the test fleets: peers of a dead instance leave
/// within it.
const TTL_SECS: u64 = 3;
/// Bound of any wait for a message that must come.
const WAIT: Duration = Duration::from_secs(5);

/// An instance of the fleet on `redis`, named `name`.
fn instance(redis: &RedisServer, name: &str, room_size: usize) -> TestServer {
    TestServer::start(&format!(
        "[auth]\nsecrets = [\"fleet-rooms-secret\"]\n\n[signaling]\nroom_size = {room_size}\n\n\
         [fleet]\nredis_url = \"{}\"\ninstance_id = \"{name}\"\nmembership_ttl = \"{TTL_SECS}s\"\n\
         key_prefix = \"t{}\"\n",
        redis.url(),
        std::process::id()
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

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A signaling client on one instance, with its peer id once joined.
struct Peer {
    socket: Socket,
    id: String,
}

impl Peer {
    /// Connects to `server` and joins `room` as `name`; returns the peer
    /// and the ids of the `peers` of its `joined`.
    async fn join(server: &TestServer, room: &str, name: &str) -> (Peer, Vec<String>) {
        let url = format!("ws://{}/ws", server.http_addr());
        let (socket, _) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(url.as_str()))
            .await
            .expect("WebSocket handshake in time")
            .expect("WebSocket handshake");
        let mut peer = Peer {
            socket,
            id: String::new(),
        };
        peer.put(json!({"type": "join", "room": room, "name": name})).await;
        let joined = peer.take().await;
        assert_eq!(joined["type"], "joined", "{name}: {joined}");
        peer.id = joined["id"].as_str().expect("an id").to_owned();
        let peers = joined["peers"]
            .as_array()
            .expect("peers")
            .iter()
            .map(|p| p["id"].as_str().expect("peer id").to_owned())
            .collect();
        (peer, peers)
    }

    async fn put(&mut self, message: Value) {
        self.socket
            .send(Message::text(message.to_string()))
            .await
            .expect("send to the server");
    }

    /// The next JSON message within `wait`, if one comes.
    async fn maybe(&mut self, wait: Duration) -> Option<Value> {
        loop {
            match tokio::time::timeout(wait, self.socket.next()).await.ok()?? {
                Ok(Message::Text(text)) => return serde_json::from_str(&text).ok(),
                Ok(Message::Ping(_) | Message::Pong(_)) => continue,
                _ => return None,
            }
        }
    }

    /// The next JSON message; panics if none comes within [`WAIT`].
    async fn take(&mut self) -> Value {
        self.maybe(WAIT).await.expect("a message in time")
    }

    async fn signal(&mut self, to: &str, data: Value) {
        self.put(json!({"type": "signal", "to": to, "data": data})).await;
    }

    /// Asserts that the next message is `signal` from `from` with `data`.
    async fn expect_signal(&mut self, from: &str, data: Value) {
        assert_eq!(self.take().await, json!({"type": "signal", "from": from, "data": data}));
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
        alice.take().await,
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
    assert_eq!(alice.take().await["code"], "unknown-peer");

    let metrics = one.http_get("/metrics").1;
    assert!(metrics.contains("turnpike_fleet_redis_up 1"), "{metrics}");
    assert!(metrics.contains("turnpike_fleet_remote_peers 1"), "{metrics}");

    bob.put(json!({"type": "leave"})).await;
    assert_eq!(alice.take().await, json!({"type": "peer-left", "id": bob.id}));
    let (mut carol, before) = Peer::join(&two, "standup", "Carol").await;
    assert_eq!(before, [alice.id.clone()], "bob's membership went with his leave");
    drop(carol.socket.close(None).await);
    assert_eq!(alice.take().await["type"], "peer-joined");
    assert_eq!(alice.take().await, json!({"type": "peer-left", "id": carol.id}));
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
            assert_eq!(earlier.take().await["id"], peer.id.as_str());
        }
        peers.push(peer);
    }
    // A fourth, on any instance, finds the room full.
    let url = format!("ws://{}/ws", servers[0].http_addr());
    let (socket, _) = tokio_tungstenite::connect_async(url.as_str()).await.expect("connect");
    let mut late = Peer {
        socket,
        id: String::new(),
    };
    late.put(json!({"type": "join", "room": "mesh"})).await;
    assert_eq!(late.take().await["code"], "room-full");

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
    let left = alice.maybe(bound).await;
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
    assert_eq!(alice.take().await["id"], carol.id.as_str());
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
        bob.take().await,
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
        assert_eq!(peer.maybe(Duration::from_millis(300)).await, None);
    }
    for server in [&one, &two] {
        let log = server.stderr_log();
        assert_eq!(log.matches("Redis is unreachable").count(), 1, "{log}");
        assert!(log.contains("Redis is reachable again"), "{log}");
    }
}
