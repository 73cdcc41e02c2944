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

use std::process::Command;

use crate::common::aiortc_call::{log_field as field, pair_ends, require_python_modules, run_call, MIN_VIDEO_FRAMES};
use crate::common::*;

/// Config fragment: a secret, so that signaling mints TURN credentials,
/// and RFC 8489's offer of SHA-256 keys, which aioice does not know: it
/// must go on with MD5, unchanged.
const SECRET_TOML: &str = "[auth]\nsecrets = [\"aiortc-test-secret\"]\npassword_algorithms = [\"sha256\", \"md5\"]\n";

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
    let summary = run_call(Command::new("python3"), &url, &room);
    // Both ends of every selected pair are relay addresses of this server.
    let relay_ports = server.relay_ports();
    for side in ["a_selected_pairs", "b_selected_pairs"] {
        for addr in pair_ends(&summary, side) {
            assert!(addr.ip().is_loopback(), "{side}: {addr} is not on loopback: {summary}");
            assert!(
                relay_ports.contains(&addr.port()),
                "{side}: {addr} is not on one of the server's relay ports {relay_ports:?}: {summary}"
            );
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
    for line in log
        .lines()
        .filter(|l| l.contains("allocation") || l.contains("RFC 8489"))
    {
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
}
