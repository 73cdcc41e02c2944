//! A relay-only WebRTC call between two `aiortc` peers (Python, no browser)
//! through turnpike: both peers take their `iceServers` from the signaling
//! endpoint's `joined` message, negotiate through `signal` messages, and use
//! only TURN relay candidates, so the data channel messages and the audio
//! and video frames all cross the server's relays. The call itself is
//! `tests/python/aiortc_call.py`; this test runs it against a fresh server
//! and checks its JSON summary and the server's log.

// Black-box tests time their runs with the real clock; the clock ban is for
// the sans-IO core.
#![allow(clippy::disallowed_methods)]

use crate::common::*;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

/// Config fragment: a secret, so that signaling mints TURN credentials.
const SECRET_TOML: &str = "[auth]\nsecrets = [\"aiortc-test-secret\"]\n";

/// Longest the Python call may run (it bounds itself to about 60 s).
const CALL_LIMIT: Duration = Duration::from_secs(120);

/// What `aiortc_call.py` sends and requires each way; the summary must
/// report at least this much.
const MESSAGES_EACH_WAY: u64 = 20;
const MIN_VIDEO_FRAMES: u64 = 30;
const MIN_AUDIO_FRAMES: u64 = 50;

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/python/aiortc_call.py")
}

/// Panics with the install hint unless `aiortc` and `websockets` import.
fn require_python_modules() {
    let check = run_with_timeout(
        Command::new("python3").args(["-c", "import aiortc, websockets"]),
        Duration::from_secs(60),
    );
    assert!(
        check.success(),
        "python3 cannot import aiortc/websockets: run `pip install -r tests/python/requirements.txt`\n{}",
        check.combined()
    );
}

/// The last stdout line that is a JSON object.
fn summary_of(stdout: &str) -> Option<serde_json::Value> {
    stdout
        .lines()
        .rev()
        .filter(|line| line.trim_start().starts_with('{'))
        .find_map(|line| serde_json::from_str(line).ok())
}

fn count(summary: &serde_json::Value, key: &str) -> u64 {
    summary[key]
        .as_u64()
        .unwrap_or_else(|| panic!("summary has no count {key:?}: {summary}"))
}

/// The `name=value` field of a tracing log line, as a number.
fn field(line: &str, name: &str) -> Option<u64> {
    let key = format!(" {name}=");
    let rest = &line[line.find(&key)? + key.len()..];
    let end = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
    rest[..end].parse().ok()
}

#[test]
fn log_field_reader_reads_whole_numbers() {
    let line = "INFO allocation deleted user=\"1:ab\" relays=127.0.0.1:20001 packets_to_peer=103 bytes_to_peer=28602 \
                packets_to_client=7";
    assert_eq!(field(line, "packets_to_peer"), Some(103));
    assert_eq!(field(line, "packets_to_client"), Some(7));
    assert_eq!(field(line, "to_peer"), None);
    assert_eq!(field(line, "lifetime_s"), None);
}

#[test]
fn two_aiortc_peers_call_through_the_relay_only() {
    require_python_modules();
    let server = TestServer::start(SECRET_TOML);
    let url = format!("ws://{}/ws", server.http_addr());
    let room = format!("aiortc-{}", std::process::id());

    let _alone = machine::alone();
    let started = Instant::now();
    let out = run_with_timeout(Command::new("python3").arg(script()).arg(&url).arg(&room), CALL_LIMIT);
    let took = started.elapsed();
    eprintln!("---- aiortc_call.py ({took:.1?}) ----\n{}", out.combined());
    assert!(
        out.status.is_some(),
        "aiortc_call.py did not finish within {CALL_LIMIT:?}"
    );
    assert!(out.success(), "aiortc_call.py failed ({:?})", out.status);

    // The call's own account.
    let summary = summary_of(&out.stdout).expect("a JSON summary line on stdout");
    assert_eq!(summary["result"], "ok", "{summary}");
    assert_eq!(summary["room"], room.as_str(), "{summary}");
    assert_eq!(count(&summary, "messages_a_to_b"), MESSAGES_EACH_WAY, "{summary}");
    assert_eq!(count(&summary, "messages_b_to_a"), MESSAGES_EACH_WAY, "{summary}");
    assert!(
        count(&summary, "video_frames_received_by_a") >= MIN_VIDEO_FRAMES,
        "{summary}"
    );
    assert!(
        count(&summary, "audio_frames_received_by_b") >= MIN_AUDIO_FRAMES,
        "{summary}"
    );
    for key in [
        "a_local_candidate_type",
        "a_remote_candidate_type",
        "b_local_candidate_type",
        "b_remote_candidate_type",
    ] {
        assert_eq!(summary[key], "relay", "{key}: {summary}");
    }
    let relay_ports = server.relay_ports();
    for side in ["a_selected_pairs", "b_selected_pairs"] {
        let pairs = summary[side]
            .as_array()
            .unwrap_or_else(|| panic!("summary has no {side}: {summary}"));
        assert!(!pairs.is_empty(), "{side} is empty: {summary}");
        for pair in pairs {
            assert_eq!(pair["local_type"], "relay", "{side}: {pair}");
            assert_eq!(pair["remote_type"], "relay", "{side}: {pair}");
            // Both ends of the pair are relay addresses of this server.
            for end in ["local", "remote"] {
                let addr: std::net::SocketAddr = pair[end]
                    .as_str()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or_else(|| panic!("{side}: bad {end} address in {pair}"));
                assert!(addr.ip().is_loopback(), "{side}: {end} is not on loopback: {pair}");
                assert!(
                    relay_ports.contains(&addr.port()),
                    "{side}: {end} port is not one of the server's relay ports {relay_ports:?}: {pair}"
                );
            }
        }
    }

    // The server's account. Signaling mints TURN usernames
    // `<expiry>:<peer id>`; each peer must have allocated with its own
    // credential, and the allocation holding its selected relay address must
    // have relayed packets both ways: each peer deletes its allocations when
    // it closes (before the script exits) and the server logs their counts
    // then. The call carries at least MIN_VIDEO_FRAMES video packets one way
    // and MIN_AUDIO_FRAMES audio packets the other, so both counts of both
    // allocations are at least MIN_VIDEO_FRAMES.
    let log = server.stderr_log();
    for line in log.lines().filter(|l| l.contains("allocation")) {
        eprintln!("server: {line}");
    }
    for (peer, id_key, pairs_key) in [("A", "a_id", "a_selected_pairs"), ("B", "b_id", "b_selected_pairs")] {
        let id = summary[id_key]
            .as_str()
            .unwrap_or_else(|| panic!("summary has no {id_key}: {summary}"));
        let user = format!(":{id}\"");
        let relay = summary[pairs_key][0]["local"].as_str().expect("checked above");
        let created = log
            .lines()
            .filter(|l| l.contains("allocation created") && l.contains(&user))
            .count();
        assert!(
            created >= 1,
            "the server logged no allocation for {peer}'s minted username *{user}"
        );
        let deleted = log
            .lines()
            .find(|l| l.contains("allocation deleted") && l.contains(&user) && l.contains(&format!(" relays={relay} ")))
            .unwrap_or_else(|| panic!("the server logged no deletion of {peer}'s allocation with relay {relay}"));
        for direction in ["packets_to_peer", "packets_to_client"] {
            let packets = field(deleted, direction).unwrap_or_else(|| panic!("no {direction} in {deleted}"));
            assert!(
                packets >= MIN_VIDEO_FRAMES,
                "{peer}'s allocation relayed only {packets} {direction}: {deleted}"
            );
        }
    }
    eprintln!("call took {took:.1?}");
}
