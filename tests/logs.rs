//! Structured logs: with `log.format = "json"` every line is a JSON object,
//! and each allocation gets one line when created (user, 5-tuple, relay
//! address, lifetime) and one when it ends (why, age, packets and bytes
//! each way). Secrets and passwords never appear.

#![allow(clippy::disallowed_methods)] // waits in black-box tests use the real clock

mod common;

use common::{assert_relay_round_trips, rest_credential, turn_client, unix_now, EchoPeer, TestServer};
use serde_json::Value;
use webrtc_util::Conn;

const SECRET: &str = "log-secret-do-not-print";

#[tokio::test]
async fn json_logs_carry_one_line_per_allocation_event_and_no_secret() {
    let server = TestServer::start(&format!("[auth]\nsecrets = [\"{SECRET}\"]\n[log]\nformat = \"json\"\n"));
    let (user, pass) = rest_credential(SECRET, "logged", unix_now() + 600);
    let (client, socket) = turn_client(server.addr(), &user, &pass).await;
    let relay = client.allocate().await.expect("allocate");
    let relay_addr = relay.local_addr().expect("relay address");
    let peer = EchoPeer::start();
    assert_relay_round_trips(&relay, &peer, 4, "logged").await;
    relay.close().await.expect("release the allocation");

    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let (created, deleted) = loop {
        let lines: Vec<Value> = server
            .stderr_log()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
            .collect();
        let find = |message: &str| {
            lines
                .iter()
                .find(|l| l["fields"]["message"] == message && l["fields"]["user"] == user.as_str())
                .cloned()
        };
        if let (Some(c), Some(d)) = (find("allocation created"), find("allocation deleted")) {
            break (c, d);
        }
        assert!(
            std::time::Instant::now() < deadline,
            "allocation lines missing:\n{}",
            server.stderr_log()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let client_addr = socket.local_addr().expect("client address").to_string();
    let c = &created["fields"];
    assert!(
        c["client"].as_str().is_some_and(|s| s.contains(&client_addr)),
        "{created}"
    );
    assert!(
        c["relays"]
            .as_str()
            .is_some_and(|s| s.contains(&relay_addr.to_string())),
        "{created}"
    );
    assert!(c["lifetime_s"].as_u64().is_some_and(|l| l > 0), "{created}");
    let d = &deleted["fields"];
    assert_eq!(d["why"], "deleted", "{deleted}");
    assert!(d["age_s"].is_u64(), "{deleted}");
    assert_eq!(d["packets_to_peer"], 4, "{deleted}");
    assert_eq!(d["packets_to_client"], 4, "{deleted}");
    assert!(d["bytes_to_peer"].as_u64().is_some_and(|b| b > 4 * 100), "{deleted}");
    assert_eq!(d["bytes_to_peer"], d["bytes_to_client"], "an echo returns what it got");

    let log = server.stderr_log();
    assert!(!log.contains(SECRET), "the shared secret was logged");
    assert!(!log.contains(&pass), "a password was logged");
}
