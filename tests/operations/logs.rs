//! Structured logs: with `log.format = "json"` every line is a JSON object,
//! and each allocation gets one line when created (user, 5-tuple, relay
//! address, lifetime) and one when it ends (why, age, packets and bytes
//! each way). Secrets and passwords never appear.

#![allow(clippy::disallowed_methods)] // waits in black-box tests use the real clock

use crate::common::{assert_relay_round_trips, rest_credential, turn_client, unix_now, EchoPeer, TestServer};
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

/// Starts the binary on a minimal config with stderr into `log` and the
/// environment `env` (and nothing of the test runner's `NO_COLOR` or
/// `JOURNAL_STREAM`); returns what it logged once it listens.
fn start_log(dir: &crate::common::ScratchDir, env: &[(&str, String)]) -> String {
    let port = crate::common::free_udp_port();
    let ports = crate::common::next_relay_ports();
    let config = dir.write_config(&format!(
        "[listen]\nudp = [\"127.0.0.1:{port}\"]\ntcp = []\nhttp = \"off\"\n\n[relay]\nipv4 = \"127.0.0.1\"\nports = \"{}-{}\"\n\n[log]\nlevel = \"info\"\n",
        ports.start(),
        ports.end()
    ));
    let log_path = dir.path().join("stderr.log");
    let mut cmd = crate::common::turnpike_command(&config, &log_path);
    cmd.env_remove("NO_COLOR")
        .env_remove("JOURNAL_STREAM")
        .env_remove("RUST_LOG");
    for (key, value) in env {
        cmd.env(key, value);
    }
    let _child = crate::common::ChildGuard(cmd.spawn().expect("spawn turnpike"));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(&log_path).unwrap_or_default();
        if text.contains("listening for STUN/TURN over UDP") {
            return text;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the server did not start:\n{text}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[test]
fn text_logs_to_a_file_carry_no_colour_codes() {
    let dir = crate::common::ScratchDir::new("log-file");
    let text = start_log(&dir, &[]);
    assert!(!text.contains('\u{1b}'), "colour codes in a log file:\n{text:?}");
    // Each line still starts with its timestamp.
    assert!(text.lines().all(|l| l.starts_with("20")), "{text}");
}

#[test]
fn under_systemd_lines_carry_journal_priorities_and_no_timestamp() {
    use std::os::unix::fs::MetadataExt;
    let dir = crate::common::ScratchDir::new("log-journal");
    // The file the server's stderr will be, stat'ed as systemd would
    // describe its journal stream: created first, so the inode is known.
    let log_path = dir.path().join("stderr.log");
    std::fs::File::create(&log_path).expect("log file");
    let meta = std::fs::metadata(&log_path).expect("stat");
    let text = start_log(&dir, &[("JOURNAL_STREAM", format!("{}:{}", meta.dev(), meta.ino()))]);
    assert!(!text.contains('\u{1b}'), "{text:?}");
    for line in text.lines() {
        let (priority, rest) = line
            .strip_prefix('<')
            .and_then(|l| l.split_once('>'))
            .unwrap_or_else(|| panic!("no <priority> prefix: {line}"));
        assert!(["3", "4", "6", "7"].contains(&priority), "{line}");
        assert!(!rest.trim_start().starts_with("20"), "a second timestamp: {line}");
    }
    let listening = text
        .lines()
        .find(|l| l.contains("listening for STUN/TURN over UDP"))
        .expect("the listening line");
    assert!(listening.starts_with("<6>"), "info is priority 6: {listening}");
    let loopback = text
        .lines()
        .find(|l| l.contains("relay address is loopback"))
        .expect("the warning");
    assert!(loopback.starts_with("<4>"), "a warning is priority 4: {loopback}");
}
