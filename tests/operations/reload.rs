//! SIGHUP reloads the config file: a rotated shared secret and new limits
//! take effect, live allocations keep relaying, and a broken file is
//! refused with the reason while the server goes on as before.

#![allow(clippy::disallowed_methods)] // waits in black-box tests use the real clock

use std::time::{Duration, Instant};

use crate::common::{
    assert_relay_round_trips, rest_credential, turn_client, unix_now, ws_client, EchoPeer, TestServer,
};

/// Rewrites the `[auth]`/`[limits]` part of the server's config (written
/// last by the test base) and sends SIGHUP; waits for the log line that
/// says how it went and returns it.
fn reload_with(server: &TestServer, tail: &str, expect: &str) -> String {
    let path = server.config_path();
    let text = std::fs::read_to_string(path).expect("read config");
    let (base, _) = text.split_once("# --- reloadable tail ---").expect("marker");
    std::fs::write(path, format!("{base}# --- reloadable tail ---\n{tail}")).expect("write config");
    let seen = server.stderr_log().matches(expect).count();
    server.sighup();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let log = server.stderr_log();
        if log.matches(expect).count() > seen {
            return log.lines().rfind(|l| l.contains(expect)).unwrap_or_default().to_owned();
        }
        assert!(
            Instant::now() < deadline,
            "no {expect:?} in the log after SIGHUP:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn start(tail: &str) -> TestServer {
    TestServer::start(&format!("# --- reloadable tail ---\n{tail}"))
}

const RELOADED: &str = "configuration reloaded";
const REFUSED: &str = "keeping the running configuration";

#[tokio::test]
async fn a_rotated_secret_takes_effect_and_live_allocations_keep_relaying() {
    let server = start("[auth]\nsecrets = [\"old-secret\"]\n");
    let peer = EchoPeer::start();
    let (user, pass) = rest_credential("old-secret", "early", unix_now() + 600);
    let (client, _) = turn_client(server.addr(), &user, &pass).await;
    let relay = client.allocate().await.expect("allocate with the old secret");
    assert_relay_round_trips(&relay, &peer, 3, "before the reload").await;

    reload_with(&server, "[auth]\nsecrets = [\"new-secret\"]\n", RELOADED);

    // The live allocation keeps relaying.
    assert_relay_round_trips(&relay, &peer, 3, "after the reload").await;
    // New allocations need the new secret.
    let (user, pass) = rest_credential("old-secret", "late", unix_now() + 600);
    let (old, _) = turn_client(server.addr(), &user, &pass).await;
    let refused = old.allocate().await.err().expect("the removed secret must be refused");
    assert!(refused.to_string().contains("401"), "{refused}");
    let (user, pass) = rest_credential("new-secret", "late", unix_now() + 600);
    let (new, _) = turn_client(server.addr(), &user, &pass).await;
    new.allocate().await.expect("allocate with the new secret");
    // And signaling mints with it.
    let mut ws = ws_client::connect(&server).await;
    let joined = ws.join("r", serde_json::json!({})).await;
    let turn = &joined["iceServers"][1];
    let username = turn["username"].as_str().expect("username");
    let (expiry, name) = username.split_once(':').expect("expiry:name");
    let (_, password) = rest_credential("new-secret", name, expiry.parse().expect("expiry"));
    assert_eq!(turn["credential"], password.as_str(), "minted with the new secret");
}

#[tokio::test]
async fn new_limits_apply_to_new_allocations_only() {
    let server = start("[auth]\nsecrets = [\"s\"]\n");
    let (user, pass) = rest_credential("s", "quota", unix_now() + 600);
    let (first, _) = turn_client(server.addr(), &user, &pass).await;
    let _one = first.allocate().await.expect("first allocation");
    let (second, _) = turn_client(server.addr(), &user, &pass).await;
    let _two = second.allocate().await.expect("second allocation");

    reload_with(
        &server,
        "[auth]\nsecrets = [\"s\"]\n[limits]\nmax_allocations_per_user = 2\n",
        RELOADED,
    );
    // Two live allocations stay; the third of this user gets 486.
    let (third, _) = turn_client(server.addr(), &user, &pass).await;
    let refused = third.allocate().await.err().expect("over the new per-user quota");
    assert!(refused.to_string().contains("486"), "{refused}");
    let (user, pass) = rest_credential("s", "other", unix_now() + 600);
    let (other, _) = turn_client(server.addr(), &user, &pass).await;
    other.allocate().await.expect("another user is not affected");
}

#[tokio::test]
async fn a_broken_config_is_refused_and_the_old_one_stays() {
    let server = start("[auth]\nsecrets = [\"kept\"]\n");
    for broken in [
        "[auth\nsecrets = [",
        "[auth]\nsecrets = [\"kept\"]\n[limits]\nmax_allocations = 0\n",
        "[auth]\nsecrets = [\"kept\"]\nsecrte = 1\n",
    ] {
        let line = reload_with(&server, broken, REFUSED);
        assert!(line.contains("ERROR"), "{line}");
    }
    assert!(server.is_running());
    let (user, pass) = rest_credential("kept", "after", unix_now() + 600);
    let (client, _) = turn_client(server.addr(), &user, &pass).await;
    let relay = client.allocate().await.expect("the old config still serves");
    assert_relay_round_trips(&relay, &EchoPeer::start(), 3, "after a refused reload").await;
}
