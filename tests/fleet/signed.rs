//! What anyone who can write to the fleet's Redis, without the fleet's
//! secret, can no longer do (issue 19, item 2), and records too large to
//! read (item 4): two real instances on a real `redis-server`, WebSocket
//! clients on them, and a raw Redis client (the `redis` crate) that
//! writes fake membership records, publishes unsigned joins, signals and
//! leaves, replays a real signed message captured with SUBSCRIBE, and
//! copies records to other keys or signs them for another `key_prefix`.
//! No client sees a fake peer or a foreign signal, and every refusal is
//! counted (`turnpike_fleet_dropped_total{reason="invalid"}`). A 20 MiB
//! record and 20 MiB revocation entries are invalid, never an outage.
//!
//! Negative results are shown without waiting for silence: after the
//! injections, the test makes something real happen that must come after
//! them (a real signal, on the same channel, published later; a record it
//! signs itself, as an instance would, found by the same sweep that reads
//! the fakes), and asserts that exactly that arrives.

#![allow(clippy::disallowed_methods)] // waits use the real clock

use std::time::Duration;

use redis::Commands;
use serde_json::{json, Value};
use turnpike::signaling::switchboard::fleet_seal::{FleetKeys, Stamp};
use turnpike::signaling::switchboard::fleet_wire::{Membership, WireMessage};

use crate::common::redis_server::{fleet_secret_line, RedisServer, FLEET_SECRET};
use crate::common::ws_client::connect;
use crate::common::{id_of, unix_now, TestServer, WsClient};

/// Bound of any wait for something that must happen.
const WAIT: Duration = Duration::from_secs(10);
const MIB: usize = 1024 * 1024;

/// An instance of the fleet of `prefix` on `redis`, rooms of 16 (the
/// fake records count towards a room's size: the script cannot tell them
/// apart; see docs/signaling.md).
fn instance(redis: &RedisServer, name: &str, prefix: &str) -> TestServer {
    TestServer::start(&format!(
        "[auth]\nsecrets = [\"fleet-signed-secret\"]\n\n[signaling]\nroom_size = 16\n\n\
         [fleet]\nredis_url = \"{}\"\ninstance_id = \"{name}\"\nmembership_ttl = \"3s\"\nkey_prefix = \"{prefix}\"\n{}",
        redis.url(),
        fleet_secret_line()
    ))
}

/// Waits until `/readyz` of `server` says `redis: up`.
fn wait_up(server: &TestServer) {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let (code, body) = server.http_get("/readyz");
        assert_eq!(code, 200, "{body}");
        if body.contains("redis: up") {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "readyz never said redis: up: {body}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn invalid_rooms(server: &TestServer) -> f64 {
    server.metric_sum("turnpike_fleet_dropped_total", &["reason=\"invalid\""])
}

fn keys(secret: &str) -> FleetKeys {
    FleetKeys::new(&[secret]).expect("a secret")
}

/// Messages of `client` until `want` are all seen (in any order); panics
/// on anything else, or if one does not come.
async fn expect_exactly(client: &mut WsClient, mut want: Vec<Value>, what: &str) {
    while !want.is_empty() {
        let got = client
            .try_recv(WAIT)
            .await
            .unwrap_or_else(|| panic!("{what}: still waiting for {want:?}"));
        let Some(i) = want.iter().position(|w| *w == got) else {
            panic!("{what}: got {got}, which no instance of the fleet sent (waiting for {want:?})");
        };
        want.remove(i);
    }
}

#[tokio::test]
async fn a_redis_writer_without_the_secret_neither_joins_nor_reads_nor_answers() {
    let redis = RedisServer::start();
    let prefix = format!("s{}", std::process::id());
    let (one, two) = (instance(&redis, "one", &prefix), instance(&redis, "two", &prefix));
    wait_up(&one);
    wait_up(&two);
    let channel = format!("{prefix}:inst:one");
    let captured = redis.capture(&channel);

    let mut alice = connect(&one).await;
    let alice_id = id_of(&alice.join("standup", "Alice").await);
    let mut bob = connect(&two).await;
    let joined = bob.join("standup", "Bob").await;
    let bob_id = id_of(&joined);
    assert_eq!(joined["peers"], json!([{"id": alice_id, "name": "Alice"}]));
    assert_eq!(
        alice.recv().await,
        json!({"type": "peer-joined", "id": bob_id, "name": "Bob"})
    );
    let offer = json!({"description": {"type": "offer", "sdp": "v=0\r\n"}});
    bob.signal(&alice_id, offer.clone()).await;
    alice.expect_signal(&bob_id, offer).await;
    // What travelled on one's channel: bob's join and his signal, signed.
    let real: Vec<Vec<u8>> = (0..2)
        .map(|_| captured.recv_timeout(WAIT).expect("a captured message"))
        .collect();
    let real_signal = real[1].clone();
    let text = String::from_utf8_lossy(&real_signal);
    assert!(text.starts_with("v1.") && text.contains(r#""t":"signal""#), "{text}");

    let mut conn = redis.connection();
    let now_ms = unix_now() * 1000;
    let (room_key, peer_key) = (format!("{prefix}:room:standup"), |id: &str| {
        format!("{prefix}:peer:{id}")
    });
    let (ours, theirs) = (keys(FLEET_SECRET), keys("the-secret-of-another-fleet-0123"));
    let invalid_before = invalid_rooms(&one);

    // Fake members: an unsigned record, one signed for another fleet's
    // key_prefix, bob's real record copied to another key, one signed with
    // another secret.
    let fake = Membership {
        room: "standup".to_owned(),
        inst: "two".to_owned(),
        name: Some("Mallory".to_owned()),
        ttl_ms: Some(10_000),
        // The room script reads a record's size unverified (it cannot check
        // a MAC): a fake record may shrink a room, so these keep it at 16.
        size: Some(16),
        ts: now_ms,
    };
    let bob_record: Vec<u8> = conn.get(peer_key(&bob_id)).expect("GET bob's record");
    let fakes: [(&str, Vec<u8>); 4] = [
        ("fa11", fake.encode().into_bytes()),
        ("fa12", fake.seal(&ours, "other", "other:peer:fa12").into_bytes()),
        ("fa13", bob_record),
        ("fa14", fake.seal(&theirs, &prefix, &peer_key("fa14")).into_bytes()),
    ];
    for (i, (id, record)) in fakes.iter().enumerate() {
        let () = conn.pset_ex(peer_key(id), record, 60_000).expect("SET a fake record");
        let _: i64 = conn
            .zadd(&room_key, *id, 1_000_000_000_000_000 + i as u64)
            .expect("ZADD");
    }

    // Published to one's channel: an unsigned join, signal (as bob) and
    // leave (of bob); a join signed for another fleet; the real signal
    // again (a replay); a signal as bob signed with the secret but
    // published by another instance than bob's (a rogue instance).
    let evil = json!({"description": {"type": "answer", "sdp": "v=0\r\nevil"}});
    let join = |id: &str, inst: &str| WireMessage::Join {
        room: "standup".to_owned(),
        id: id.to_owned(),
        name: Some("Mallory".to_owned()),
        instance: inst.to_owned(),
    };
    let signal_as_bob = WireMessage::parse(
        json!({"t": "signal", "room": "standup", "from": bob_id, "to": alice_id, "data": evil})
            .to_string()
            .as_bytes(),
        4096,
    )
    .expect("a signal");
    let stamp = |seq| Stamp {
        ts: now_ms,
        boot: 666,
        seq,
    };
    let published: Vec<Vec<u8>> = vec![
        join("fa21", "evil").encode().into_bytes(),
        signal_as_bob.encode().into_bytes(),
        json!({"t": "leave", "room": "standup", "id": bob_id})
            .to_string()
            .into_bytes(),
        join("fa22", "evil")
            .seal(&ours, "other", "other:inst:one", "evil", stamp(1))
            .into_bytes(),
        real_signal,
        signal_as_bob
            .seal(&ours, &prefix, &channel, "three", stamp(2))
            .into_bytes(),
    ];
    for message in &published {
        let _: i64 = conn.publish(&channel, message).expect("PUBLISH");
    }

    // Then something real: bob signals again (after the injections, on the
    // same channel), and a record the test signs as an instance "three"
    // would, after the fakes, which a sweep of one reads with them.
    let sentinel = Membership {
        inst: "three".to_owned(),
        name: Some("Sentinel".to_owned()),
        ..fake.clone()
    };
    let record = sentinel.seal(&ours, &prefix, &peer_key("5e471e1"));
    let () = conn.pset_ex(peer_key("5e471e1"), record, 60_000).expect("SET");
    let _: i64 = conn.zadd(&room_key, "5e471e1", 2_000_000_000_000_000u64).expect("ZADD");
    bob.signal(&alice_id, json!("after")).await;
    expect_exactly(
        &mut alice,
        vec![
            json!({"type": "signal", "from": bob_id, "data": "after"}),
            json!({"type": "peer-joined", "id": "5e471e1", "name": "Sentinel"}),
        ],
        "alice",
    )
    .await;

    // A newcomer's joined lists the real members only, in join order.
    let mut carol = connect(&one).await;
    let joined = carol.join("standup", "Carol").await;
    let ids: Vec<&str> = joined["peers"]
        .as_array()
        .expect("peers")
        .iter()
        .map(|p| p["id"].as_str().expect("id"))
        .collect();
    assert_eq!(ids, [alice_id.as_str(), bob_id.as_str(), "5e471e1"]);
    drop(carol);

    // Every refusal is counted: five messages, and four records a sweep.
    let invalid = invalid_rooms(&one) - invalid_before;
    assert!(invalid >= 9.0, "{invalid} counted invalid: {}", one.metrics());
    let undeliverable = one.metric_sum("turnpike_fleet_dropped_total", &["reason=\"undeliverable\""]);
    assert!(undeliverable >= 1.0, "the rogue instance's signal: {}", one.metrics());
    for server in [&one, &two] {
        let log = server.stderr_log();
        assert!(!log.contains("Redis is unreachable"), "{log}");
        assert!(!log.contains(FLEET_SECRET), "the secret is never logged: {log}");
    }
}

/// Peak resident memory of `server`, in bytes (`VmHWM`).
fn peak_rss(server: &TestServer) -> usize {
    let status = std::fs::read_to_string(format!("/proc/{}/status", server.pid())).expect("read status");
    let kib: usize = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM");
    kib * 1024
}

/// Issue 19, item 4: records and revocation entries of 20 MiB in Redis are
/// refused inside the scripts, without being read: the fleet stays up
/// (`redis: up`, no outage in the log), they are counted invalid, and the
/// instance's peak memory stays within a few MiB of that of an instance of
/// a clean fleet (the issue saw 72 MiB more for two such records).
#[tokio::test]
async fn records_of_20_mib_are_invalid_never_an_outage() {
    let redis = RedisServer::start();
    let pid = std::process::id();
    let (prefix, clean_prefix) = (format!("big{pid}"), format!("clean{pid}"));
    let mut conn = redis.connection();
    let huge = "x".repeat(20 * MIB);
    let until = unix_now() + 3600;
    let mut pipe = redis::pipe();
    // Revocations: three usernames of 20 MiB, one signed entry of 20 MiB.
    for i in 0..3 {
        let member = format!("{i}{huge}");
        pipe.cmd("ZADD")
            .arg(format!("{prefix}:revoked"))
            .arg(until)
            .arg(member)
            .ignore();
    }
    pipe.cmd("ZADD")
        .arg(format!("{prefix}:revoked"))
        .arg(until)
        .arg("plain")
        .ignore();
    pipe.cmd("HSET")
        .arg(format!("{prefix}:revoked:signed"))
        .arg("plain")
        .arg(&huge)
        .ignore();
    // Rooms: a member of 20 MiB and a member id of 20 MiB in room "big".
    pipe.cmd("SET").arg(format!("{prefix}:peer:b16")).arg(&huge).ignore();
    pipe.cmd("ZADD")
        .arg(format!("{prefix}:room:big"))
        .arg(1)
        .arg("b16")
        .ignore();
    pipe.cmd("ZADD")
        .arg(format!("{prefix}:room:big"))
        .arg(2)
        .arg(&huge)
        .ignore();
    let () = pipe.query(&mut conn).expect("write the huge records");
    drop(huge);

    let big = instance(&redis, "big", &prefix);
    let clean = instance(&redis, "clean", &clean_prefix);
    wait_up(&big);
    wait_up(&clean);
    let invalid_revocations = r#"turnpike_fleet_revocations_total{outcome="invalid"}"#;
    let seen = big.wait_metric(invalid_revocations, WAIT, |n| n >= 4.0);
    assert_eq!(
        seen,
        Some(4.0),
        "the four oversized entries are counted, once: {}",
        big.metrics()
    );

    let mut alice = connect(&big).await;
    let joined = alice.join("big", "Alice").await;
    assert_eq!(joined["peers"], json!([]), "neither oversized member is listed");
    let mut other = connect(&clean).await;
    other.join("big", "Other").await;
    // A sweep (every second) reads the room again: the record is counted.
    let deadline = std::time::Instant::now() + WAIT;
    while invalid_rooms(&big) < 2.0 {
        assert!(std::time::Instant::now() < deadline, "{}", big.metrics());
        std::thread::sleep(Duration::from_millis(50));
    }
    alice.assert_usable().await;

    for server in [&big, &clean] {
        let (_, body) = server.http_get("/readyz");
        assert!(body.contains("redis: up"), "{body}");
        let log = server.stderr_log();
        assert!(!log.contains("Redis is unreachable"), "{log}");
    }
    let (big_peak, clean_peak) = (peak_rss(&big), peak_rss(&clean));
    assert!(
        big_peak < clean_peak + 16 * MIB,
        "peak RSS {} MiB with the huge records, {} MiB without",
        big_peak / MIB,
        clean_peak / MIB
    );
}

/// Issue 19, item 4, "under the connection": messages of 20 MiB published
/// on an instance's own channel and on the revocations channel are
/// skipped as they stream past, never held: each is counted invalid once,
/// the fleet stays up with no outage in the log, a real signal published
/// after them still arrives, and the peak memory stays within a few MiB
/// of that of an instance that heard none of them. (20 MiB stays under
/// Redis's own 32 MiB output limit for a subscriber, past which Redis
/// itself would cut the connection.)
#[tokio::test]
async fn published_messages_of_20_mib_are_skipped_unread() {
    let redis = RedisServer::start();
    let prefix = format!("pub{}", std::process::id());
    let big = instance(&redis, "big", &prefix);
    let clean = instance(&redis, "clean", &format!("{prefix}clean"));
    let other = instance(&redis, "other", &prefix);
    for server in [&big, &clean, &other] {
        wait_up(server);
    }
    let mut alice = connect(&big).await;
    alice.join("room", "Alice").await;

    let mut conn = redis.connection();
    let huge = vec![b'{'; 20 * MIB];
    let invalid_revocations = r#"turnpike_fleet_revocations_total{outcome="invalid"}"#;
    for round in 1..=2 {
        let () = conn.publish(format!("{prefix}:inst:big"), &huge).expect("publish");
        let rooms = big.wait_metric(r#"turnpike_fleet_dropped_total{reason="invalid"}"#, WAIT, |n| {
            n >= f64::from(round)
        });
        assert_eq!(rooms, Some(f64::from(round)), "{}", big.metrics());
        let () = conn.publish(format!("{prefix}:revocations"), &huge).expect("publish");
        let revocations = big.wait_metric(invalid_revocations, WAIT, |n| n >= f64::from(round));
        assert_eq!(revocations, Some(f64::from(round)), "{}", big.metrics());
    }
    drop(huge);

    // The subscription goes on: a join on the other instance reaches Alice.
    let mut bob = connect(&other).await;
    bob.join("room", "Bob").await;
    let joined = alice.try_recv(WAIT).await.expect("Bob's join reaches Alice");
    assert_eq!(joined["type"], "peer-joined", "{joined}");
    assert_eq!(joined["name"], "Bob", "{joined}");

    let (_, body) = big.http_get("/readyz");
    assert!(body.contains("redis: up"), "{body}");
    let log = big.stderr_log();
    assert!(!log.contains("Redis is unreachable"), "{log}");
    let (big_peak, clean_peak) = (peak_rss(&big), peak_rss(&clean));
    assert!(
        big_peak < clean_peak + 16 * MIB,
        "peak RSS {} MiB after the huge messages, {} MiB without",
        big_peak / MIB,
        clean_peak / MIB
    );
}
