//! Revocations across a fleet (`[fleet]` and `[admin]`): instances share
//! one real `redis-server` on loopback and one shared secret. A minted
//! username revoked through the admin API of instance A is refused (401)
//! by instance B within a bounded wait, B's allocation of that user made
//! before is ended (its Refresh gets 437), and an instance started after
//! the revocation refuses it too (it loads the set on connecting). Junk
//! written straight into that Redis (as anyone who can write to it could)
//! is clamped to `auth.max_credential_lifetime`, applied at a bounded rate,
//! and never keeps the operator from revoking.

#![allow(clippy::disallowed_methods)] // waits use the real clock

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use crate::common::redis_server::{fleet_secret_line, RedisServer, FLEET_SECRET};
use crate::common::{code_of, free_tcp_port, http_exchange, rest_credential, udp_request_as, unix_now, TestServer};
use serde_json::Value;
use turnpike::fleet::revocation_wire::SharedRevocation;
use turnpike::proto::stun::{attr, method};
use turnpike::signaling::switchboard::fleet_seal::{FleetKeys, Stamp};

const KEY: &str = "an-admin-key-for-fleet-tests-0123456789";
const SECRET: &str = "a-shared-secret-for-fleet-revocations";
/// Bound of every wait for something that must happen.
const WAIT: Duration = Duration::from_secs(10);

/// An instance on `redis` named `name`, with its admin API. Each probe of
/// [`wait_refused`] that is let through leaves an allocation, so the
/// per-user quota is above what a whole wait can make.
fn instance(redis: &RedisServer, name: &str) -> (TestServer, SocketAddr) {
    instance_with(redis, name, "")
}

/// [`instance`] with more lines of `[auth]`.
fn instance_with(redis: &RedisServer, name: &str, auth: &str) -> (TestServer, SocketAddr) {
    let admin = SocketAddr::from(([127, 0, 0, 1], free_tcp_port()));
    let server = TestServer::start(&format!(
        "[auth]\nsecrets = [\"{SECRET}\"]\n{auth}\n[limits]\nmax_allocations_per_user = 1000\n\n[admin]\nlisten = \"{admin}\"\nkey = \"{KEY}\"\n\n\
         [fleet]\nredis_url = \"{}\"\ninstance_id = \"{name}\"\nkey_prefix = \"r{}\"\n{}",
        redis.url(),
        std::process::id(),
        fleet_secret_line()
    ));
    (server, admin)
}

fn call(admin: SocketAddr, method: &str, path: &str, body: &str) -> (u16, Value) {
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {KEY}\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let (status, text) = http_exchange(admin, &request);
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

fn udp_socket() -> UdpSocket {
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
    socket.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    socket
}

/// The code of a signed `method` from `socket` to `server` as `user`.
fn request(socket: &UdpSocket, server: &TestServer, (user, password): (&str, &str), method: u16) -> u16 {
    code_of(&udp_request_as(socket, server.addr(), (user, password), method, |w| {
        if method == method::ALLOCATE {
            w.bytes(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0]);
        }
    }))
}

/// Waits until a fresh Allocate as `user` on `server` is refused with 401.
fn wait_refused(server: &TestServer, user: (&str, &str), who: &str) {
    let deadline = Instant::now() + WAIT;
    loop {
        let code = request(&udp_socket(), server, user, method::ALLOCATE);
        if code == 401 {
            return;
        }
        assert_eq!(code, 200, "{who}: an Allocate is either allowed or refused");
        assert!(
            Instant::now() < deadline,
            "{who} still allows the revoked username after {WAIT:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn allocations_of(admin: SocketAddr, user: &str) -> usize {
    let (status, body) = call(admin, "GET", &format!("/v1/allocations?user={user}"), "");
    assert_eq!(status, 200, "{body}");
    body["allocations"].as_array().expect("a list").len()
}

#[test]
fn a_revocation_made_on_one_instance_is_refused_by_the_whole_fleet() {
    let redis = RedisServer::start();
    let (a, a_admin) = instance(&redis, "rev-a");
    let (b, b_admin) = instance(&redis, "rev-b");
    let (user, password) = rest_credential(SECRET, "mallory", unix_now() + 3600);
    let (other, other_pw) = rest_credential(SECRET, "trent", unix_now() + 3600);
    let cred = (user.as_str(), password.as_str());

    // Before: B serves the user, and A does too.
    let held = udp_socket();
    assert_eq!(request(&held, &b, cred, method::ALLOCATE), 200);
    assert_eq!(request(&udp_socket(), &a, cred, method::ALLOCATE), 200);
    assert_eq!(allocations_of(b_admin, &user), 1);

    let body = serde_json::json!({ "username": user }).to_string();
    let (status, answer) = call(a_admin, "POST", "/v1/revocations", &body);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["ended"], 1, "A's own allocation ended: {answer}");

    // B hears of it: new Allocates are refused, its old allocation ended.
    wait_refused(&b, cred, "instance B");
    let deadline = Instant::now() + WAIT;
    while allocations_of(b_admin, &user) != 0 {
        assert!(Instant::now() < deadline, "B's allocation of the user was not ended");
        std::thread::sleep(Duration::from_millis(100));
    }
    // No allocation left for this 5-tuple: 437 before any credential check.
    assert_eq!(request(&held, &b, cred, method::REFRESH), 437);
    let (status, listed) = call(b_admin, "GET", "/v1/revocations", "");
    assert_eq!(status, 200);
    assert_eq!(listed["revocations"][0]["username"], user.as_str(), "{listed}");
    // Another user is untouched.
    assert_eq!(request(&udp_socket(), &b, (&other, &other_pw), method::ALLOCATE), 200);

    // Redis holds it, bounded by the username's own expiry.
    let mut redis_conn = redis.connection();
    let score: Option<f64> = redis::cmd("ZSCORE")
        .arg(format!("r{}:revoked", std::process::id()))
        .arg(&user)
        .query(&mut redis_conn)
        .expect("ZSCORE");
    let expiry: u64 = user.split(':').next().and_then(|e| e.parse().ok()).expect("an expiry");
    assert_eq!(score, Some(expiry as f64));

    // B applied what it heard; A wrote it to Redis. Each is counted just
    // after the allocations are ended, so wait for it.
    let applied = r#"turnpike_fleet_revocations_total{outcome="applied"}"#;
    assert_eq!(b.wait_metric(applied, WAIT, |n| n >= 1.0), Some(1.0), "{}", b.metrics());
    let shared = r#"turnpike_fleet_revocations_total{outcome="shared"}"#;
    assert_eq!(a.wait_metric(shared, WAIT, |n| n >= 1.0), Some(1.0), "{}", a.metrics());

    // An instance started after the revocation loads it.
    let (c, _c_admin) = instance(&redis, "rev-c");
    wait_refused(&c, cred, "instance C, started after the revocation");
    assert_eq!(request(&udp_socket(), &c, (&other, &other_pw), method::ALLOCATE), 200);
    drop(a);
}

#[test]
fn without_redis_a_revocation_still_holds_locally() {
    // Redis is configured but down: the admin API still revokes here.
    let mut redis = RedisServer::start();
    redis.stop();
    let (a, a_admin) = instance(&redis, "rev-lone");
    let (user, password) = rest_credential(SECRET, "eve", unix_now() + 3600);
    let cred = (user.as_str(), password.as_str());
    assert_eq!(request(&udp_socket(), &a, cred, method::ALLOCATE), 200);
    let body = serde_json::json!({ "username": user }).to_string();
    let (status, answer) = call(a_admin, "POST", "/v1/revocations", &body);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(request(&udp_socket(), &a, cred, method::ALLOCATE), 401);
    // Once Redis is back, what was revoked meanwhile reaches the fleet.
    redis.restart();
    let (b, _b_admin) = instance(&redis, "rev-late");
    wait_refused(&b, cred, "an instance started once Redis is back");
    // A said once that revocations were not shared, whatever its retries.
    // (It logs that it is back just after writing, so that may come last.)
    let deadline = Instant::now() + WAIT;
    let log = loop {
        let log = a.stderr_log();
        if log.contains("revocations are shared with the fleet again") {
            break log;
        }
        assert!(Instant::now() < deadline, "A never said Redis was back: {log}");
        std::thread::sleep(Duration::from_millis(50));
    };
    let warned = log.matches("revocations are not shared with the fleet while Redis is down");
    assert_eq!(warned.count(), 1, "{log}");
}

/// Unix second 100 000 000 000, in the year 5138: the issue's junk.
const YEAR_5138: u64 = 100_000_000_000;
/// `auth.max_credential_lifetime` of [`junk_from_redis_is_clamped_rate_limited_and_never_crowds_out_the_operator`].
const MAX_LIFETIME: u64 = 7200;
/// `fleet::revocations::MAX_SHARED`, `APPLY_BURST` and `APPLY_RATE`.
const MAX_SHARED: u64 = 10_000;
const APPLY_RATE: u64 = 200;
/// How long an instance may take to load and apply a whole set.
const LOAD_WAIT: Duration = Duration::from_secs(120);

fn revocation_outcome(server: &TestServer, outcome: &str) -> f64 {
    let sample = format!("turnpike_fleet_revocations_total{{outcome=\"{outcome}\"}}");
    server.metric(&sample).unwrap_or(0.0)
}

/// What a rogue instance holding the fleet's secret writes: `username`
/// refused until `until`, sealed for `place` (the channel, or the set for
/// an entry), stamped now with sequence `seq`.
fn signed_revocation(prefix: &str, place: &str, username: &str, until: u64, seq: u64) -> String {
    let keys = FleetKeys::new(&[FLEET_SECRET]).expect("a secret");
    let revocation = SharedRevocation {
        username: username.to_owned(),
        until_unix: until,
    };
    let stamp = Stamp {
        ts: unix_now() * 1000,
        boot: 5138,
        seq,
    };
    revocation.seal(&keys, prefix, place, "rogue", stamp)
}

/// Junk in the set and on the channel, as a rogue instance would write it
/// (signed with the fleet's secret: unsigned junk is refused outright, see
/// `tests/fleet/signed.rs`).
#[test]
fn junk_from_redis_is_clamped_rate_limited_and_never_crowds_out_the_operator() {
    let redis = RedisServer::start();
    let prefix = format!("r{}", std::process::id());
    let (set, signed) = (format!("{prefix}:revoked"), format!("{prefix}:revoked:signed"));
    let now = unix_now();
    let soon = format!("{}:soon", now + 1800);
    let gone = format!("{}:gone", now - 5);
    // The set: more junk than an instance loads (10 000), held until the
    // year 5138, and two short-lived usernames (which sort first).
    let mut conn = redis.connection();
    let mut junk = redis::pipe();
    let names = (0..12_000).map(|i| format!("junk-{i:05}"));
    for (i, username) in names.chain([soon.clone(), gone.clone()]).enumerate() {
        let entry = signed_revocation(&prefix, &set, &username, YEAR_5138, i as u64);
        junk.cmd("ZADD").arg(&set).arg(YEAR_5138).arg(&username).ignore();
        junk.cmd("HSET").arg(&signed).arg(&username).arg(entry).ignore();
    }
    let () = junk.query(&mut conn).expect("ZADD the junk");

    let started = Instant::now();
    let auth = format!("credential_ttl = \"1h\"\nmax_credential_lifetime = \"{MAX_LIFETIME}s\"\n");
    let (a, a_admin) = instance_with(&redis, "junk-a", &auth);
    let (b, b_admin) = instance_with(&redis, "junk-b", &auth);
    for (server, who) in [(&a, "A"), (&b, "B")] {
        let applied = r#"turnpike_fleet_revocations_total{outcome="applied"}"#;
        let loaded = server.wait_metric(applied, LOAD_WAIT, |n| n >= MAX_SHARED as f64);
        assert_eq!(loaded, Some(MAX_SHARED as f64), "{who} loads the set's first 10 000");
    }

    // Then a flood on the channel, each a new username until 5138.
    const FLOOD: u64 = 5_000;
    let mut flood = redis::pipe();
    let channel = format!("{prefix}:revocations");
    for i in 0..FLOOD {
        let message = signed_revocation(&prefix, &channel, &format!("flood-{i}"), YEAR_5138, 100_000 + i);
        flood.cmd("PUBLISH").arg(&channel).arg(message).ignore();
    }
    let () = flood.query(&mut conn).expect("PUBLISH the flood");
    // Every one is counted once, one way or another (applied, limited, or
    // invalid when the channel's queue was full).
    for (server, who) in [(&a, "A"), (&b, "B")] {
        let deadline = Instant::now() + LOAD_WAIT;
        while server.metric_sum("turnpike_fleet_revocations_total", &[]) < (MAX_SHARED + FLOOD) as f64 {
            assert!(
                Instant::now() < deadline,
                "{who} never heard the flood: {}",
                server.metrics()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    // What was applied stayed within the rate: a burst of a whole set, and
    // 200 a second since the instances started.
    let bound = (MAX_SHARED + APPLY_RATE * (started.elapsed().as_secs() + 1)) as f64;
    for (server, who) in [(&a, "A"), (&b, "B")] {
        let applied = revocation_outcome(server, "applied");
        let limited = revocation_outcome(server, "limited");
        assert!(
            applied <= bound,
            "{who} applied {applied} > {bound}: {}",
            server.metrics()
        );
        eprintln!("{who}: applied {applied}, limited {limited}");
    }

    // The operator's own revocations still fit, on both instances.
    let (user, password) = rest_credential(SECRET, "mallory", unix_now() + 3600);
    let (other, other_pw) = rest_credential(SECRET, "trent", unix_now() + 3600);
    for (admin, username) in [(a_admin, &user), (b_admin, &other)] {
        let body = serde_json::json!({ "username": username }).to_string();
        let (status, answer) = call(admin, "POST", "/v1/revocations", &body);
        assert_eq!(status, 200, "{answer}");
    }
    assert_eq!(request(&udp_socket(), &a, (&user, &password), method::ALLOCATE), 401);
    assert_eq!(request(&udp_socket(), &b, (&other, &other_pw), method::ALLOCATE), 401);
    // … and still reach the fleet.
    wait_refused(&b, (&user, &password), "instance B after the flood");
    wait_refused(&a, (&other, &other_pw), "instance A after the flood");

    // Nothing from Redis is held beyond the credential lifetime, nor a
    // short-lived username beyond its own expiry (one just past: only
    // long enough to end its allocations).
    for (admin, who) in [(a_admin, "A"), (b_admin, "B")] {
        let (status, listed) = call(admin, "GET", "/v1/revocations", "");
        assert_eq!(status, 200, "{who}");
        let listed = listed["revocations"].as_array().expect("a list").clone();
        let until_of = |name: &str| {
            listed
                .iter()
                .find(|r| r["username"] == name)
                .and_then(|r| r["until_unix"].as_u64())
        };
        let latest = unix_now() + MAX_LIFETIME;
        for entry in &listed {
            let until = entry["until_unix"].as_u64().expect("until_unix");
            assert!(until <= latest, "{who} holds {entry} beyond {latest}");
        }
        assert!(until_of("junk-00000").is_some(), "{who} loaded the junk, clamped");
        assert_eq!(until_of(&soon), Some(now + 1800), "{who}: its own expiry");
        assert!(
            until_of(&gone).is_none_or(|until| until <= unix_now() + 60),
            "{who}: {gone}"
        );
    }

    // Honest clients are served.
    let (honest, honest_pw) = rest_credential(SECRET, "honest", unix_now() + 3600);
    for server in [&a, &b] {
        assert_eq!(
            request(&udp_socket(), server, (&honest, &honest_pw), method::ALLOCATE),
            200
        );
    }
}

/// Issue 19, item 2: whoever writes to Redis without the fleet's secret
/// cannot revoke. Set entries that are unsigned, signed for another
/// fleet's key_prefix or with another secret, or copied to another
/// username, and messages unsigned, of another fleet, or a replay of a
/// real one captured with SUBSCRIBE, are all refused and counted; the
/// usernames they name are still served, while real revocations made
/// after them reach the other instance.
#[test]
fn a_redis_writer_without_the_secret_cannot_revoke() {
    let redis = RedisServer::start();
    // The prefix `instance` gives its instances.
    let prefix = format!("r{}", std::process::id());
    let (set, signed, channel) = (
        format!("{prefix}:revoked"),
        format!("{prefix}:revoked:signed"),
        format!("{prefix}:revocations"),
    );
    let expiry = unix_now() + 3600;
    let victims: Vec<(String, String)> = (0..6)
        .map(|i| rest_credential(SECRET, &format!("victim{i}"), expiry))
        .collect();
    let theirs = FleetKeys::new(&["the-secret-of-another-fleet-0123"]).expect("a secret");
    let ours = FleetKeys::new(&[FLEET_SECRET]).expect("a secret");
    let revocation = |user: &str| SharedRevocation {
        username: user.to_owned(),
        until_unix: expiry,
    };
    let stamp = |seq| Stamp {
        ts: unix_now() * 1000,
        boot: 666,
        seq,
    };
    // In the set before the instances start (they load it on connecting).
    let mut conn = redis.connection();
    let entries = [
        (&victims[0].0, None),
        (
            &victims[1].0,
            Some(format!(
                r#"{{"t":"revoke","user":"{}","until":{expiry}}}"#,
                victims[1].0
            )),
        ),
        (
            &victims[2].0,
            Some(revocation(&victims[2].0).seal(&ours, "other", "other:revoked", "evil", stamp(1))),
        ),
        (
            &victims[3].0,
            Some(revocation(&victims[3].0).seal(&theirs, &prefix, &set, "evil", stamp(2))),
        ),
        (
            &victims[4].0,
            Some(revocation("someone-else").seal(&ours, &prefix, &set, "evil", stamp(3))),
        ),
    ];
    let mut pipe = redis::pipe();
    for (user, value) in &entries {
        pipe.cmd("ZADD").arg(&set).arg(expiry).arg(*user).ignore();
        if let Some(value) = value {
            pipe.cmd("HSET").arg(&signed).arg(*user).arg(value).ignore();
        }
    }
    let () = pipe.query(&mut conn).expect("write the fake entries");

    let captured = redis.capture(&channel);
    let (a, a_admin) = instance(&redis, "w-a");
    let (b, _b_admin) = instance(&redis, "w-b");
    let invalid = r#"turnpike_fleet_revocations_total{outcome="invalid"}"#;
    for server in [&a, &b] {
        let loaded = server.wait_metric(invalid, WAIT, |n| n >= 5.0);
        assert_eq!(loaded, Some(5.0), "the five fake entries: {}", server.metrics());
    }

    // A real revocation, captured on its way.
    let (user, password) = rest_credential(SECRET, "mallory", expiry);
    let body = serde_json::json!({ "username": user }).to_string();
    assert_eq!(call(a_admin, "POST", "/v1/revocations", &body).0, 200);
    wait_refused(&b, (&user, &password), "B, the real revocation");
    let real = captured.recv_timeout(WAIT).expect("the real revocation's message");
    assert!(real.starts_with(b"v1."), "{}", String::from_utf8_lossy(&real));

    // Messages: unsigned, of another fleet, another secret, and the replay.
    let unsigned = format!(r#"{{"t":"revoke","user":"{}","until":{expiry}}}"#, victims[5].0);
    let messages: Vec<Vec<u8>> = vec![
        unsigned.into_bytes(),
        revocation(&victims[5].0)
            .seal(&ours, "other", "other:revocations", "evil", stamp(4))
            .into_bytes(),
        revocation(&victims[5].0)
            .seal(&theirs, &prefix, &channel, "evil", stamp(5))
            .into_bytes(),
        real,
    ];
    for message in &messages {
        let _: i64 = redis::cmd("PUBLISH")
            .arg(&channel)
            .arg(message)
            .query(&mut conn)
            .expect("PUBLISH");
    }
    // After them, a real one: once B holds it, B has read them all.
    let (later, later_pw) = rest_credential(SECRET, "trent", expiry);
    let body = serde_json::json!({ "username": later }).to_string();
    assert_eq!(call(a_admin, "POST", "/v1/revocations", &body).0, 200);
    wait_refused(&b, (&later, &later_pw), "B, the later revocation");

    for server in [&a, &b] {
        for (victim, pw) in &victims {
            let code = request(&udp_socket(), server, (victim, pw), method::ALLOCATE);
            assert_eq!(code, 200, "{victim} is not revoked by a Redis writer");
        }
        let seen = server.wait_metric(invalid, WAIT, |n| n >= 9.0);
        assert_eq!(seen, Some(9.0), "five entries and four messages: {}", server.metrics());
    }
}
