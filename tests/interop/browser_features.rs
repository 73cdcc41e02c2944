//! The demo page's call features in headless Chromium, in one walk
//! (`tests/browser/features.mjs`, playwright-core), every peer connection
//! forced onto turnpike's TURN relay: chat over data channels with unread
//! marks, the stats panel, a 6 MiB file whose SHA-256 is checked on the
//! receiving side, a cancelled one and a file after it, screen sharing and
//! back, a microphone switch, a WebSocket cut and resumed
//! (protocol v1.1) with no peer-left and no signal lost, fresh TURN
//! credentials pushed before expiry, the relays of the first ones ended
//! once they expired (the admin API, as when a TURN server goes away) and
//! the pages' own ICE restart onto fresh relays, and a room of three. The script checks the pages;
//! this test checks its summary again and the server's side: the relays
//! after the restart were allocated with a refreshed credential.
//!
//! Needs Node.js, Debian's `chromium` and `npm ci --prefix tests/browser`
//! (scripts/test.sh does all of that). Screenshots go to
//! `target/test-artifacts/browser-features/`.

#![allow(clippy::disallowed_methods)] // black-box waits use the real clock

use crate::common::*;

use std::time::Duration;

use serde_json::Value;

/// Short-lived TURN credentials, so that the walk outlives the first ones
/// (refreshed at three quarters: 15 s after a join).
const AUTH_TOML: &str = "[auth]\nsecrets = [\"browser-features-secret\"]\ncredential_ttl = \"20s\"\n";
/// The admin API's key, with which the walk ends alice's first relays.
const ADMIN_KEY: &str = "browser-features-admin-key-0123456789";
/// features.mjs stops itself after 150 s; this is the outer bound.
const WALK_LIMIT: Duration = Duration::from_secs(200);

fn str_at<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("summary has no string at {pointer}: {v}"))
}

#[test]
fn chat_files_screen_sharing_stats_and_a_resumed_socket_in_a_relayed_call() {
    let setup = browser_setup("browser-features");
    let admin = format!("127.0.0.1:{}", free_tcp_port());
    let server = TestServer::start(&format!(
        "{AUTH_TOML}\n[admin]\nlisten = \"{admin}\"\nkey = \"{ADMIN_KEY}\"\n"
    ));
    let base_url = format!("http://{}/", server.http_addr());
    let room = format!("browser-features-{}", std::process::id());
    let admin_args = [format!("--admin=http://{admin}/"), format!("--admin-key={ADMIN_KEY}")];
    let admin_args: Vec<&str> = admin_args.iter().map(String::as_str).collect();
    let summary = run_browser_script(&setup, "features.mjs", &base_url, &room, WALK_LIMIT, false, &admin_args);
    let artifacts = &setup.artifacts;

    // What the pages saw, checked again.
    assert_eq!(str_at(&summary, "/chat/atBob/name"), "Alice");
    assert_eq!(summary["chat"]["atBob"]["unread"], Value::Bool(true));
    assert!(
        str_at(&summary, "/stats/pair").starts_with("relay"),
        "{}",
        summary["stats"]
    );
    assert_eq!(
        str_at(&summary, "/file/received/sha256"),
        str_at(&summary, "/file/sha256"),
        "the file arrived altered"
    );
    assert_eq!(summary["file"]["received"]["size"], summary["file"]["bytes"]);
    assert_eq!(str_at(&summary, "/cancel/atBob/state"), "cancelled");
    assert_eq!(summary["cancel"]["small"]["size"], 65536);
    let dimension = |pointer: &str| {
        summary
            .pointer(pointer)
            .and_then(Value::as_i64)
            .unwrap_or_else(|| panic!("no number at {pointer}: {}", summary["screen"]))
    };
    assert!(
        (dimension("/screen/shared/width") - dimension("/screen/capture/width")).abs() <= 16
            && dimension("/screen/shared/height") <= dimension("/screen/capture/height") + 16,
        "bob did not decode the shared screen at its size: {}",
        summary["screen"]
    );
    assert!(
        dimension("/screen/shared/width") > 960,
        "the camera's size, not the screen's"
    );
    assert_eq!(str_at(&summary, "/blip/before/id"), str_at(&summary, "/blip/after/id"));
    assert_eq!(summary["blip"]["after"]["resumes"], 1);
    assert!(
        summary["refresh"]["ended"].as_u64().is_some_and(|n| n >= 1),
        "the admin API ended none of alice's first relays: {}",
        summary["refresh"]
    );
    assert_ne!(
        str_at(&summary, "/refresh/oldRelay"),
        str_at(&summary, "/refresh/newRelay"),
        "the ICE restart kept the old relay"
    );
    for (name, expected) in [
        ("1-chat-unread-bob.png", true),
        ("2-stats-alice.png", true),
        ("3-file-bob.png", true),
        ("3-cancelled-bob.png", true),
        ("4-screen-bob.png", true),
        ("5-reconnecting-bob.png", true),
        ("5-resumed-bob.png", true),
        ("6-refreshed-alice.png", true),
        ("7-three-carol.png", true),
    ] {
        assert_eq!(artifacts.join(name).is_file(), expected, "screenshot {name}");
    }

    // The server's side: the relays gathered after the ICE restart were
    // allocated with a refreshed credential, and the new relay that alice
    // selected is one of them.
    let log = server.stderr_log();
    let refreshed: Vec<&str> = ["alice", "bob"]
        .iter()
        .flat_map(|who| {
            summary["refresh"]["refreshedUsers"][who]
                .as_array()
                .map(|users| users.iter().filter_map(Value::as_str).collect::<Vec<_>>())
                .unwrap_or_default()
        })
        .collect();
    assert!(!refreshed.is_empty(), "no refreshed usernames in {summary}");
    let new_relay = str_at(&summary, "/refresh/newRelay");
    let line = log
        .lines()
        .find(|l| l.contains("allocation created") && l.contains(new_relay))
        .unwrap_or_else(|| panic!("no `allocation created` of relay {new_relay} in the server log:\n{log}"));
    assert!(
        refreshed.iter().any(|user| line.contains(user)),
        "relay {new_relay} was allocated with none of the refreshed credentials {refreshed:?}: {line}"
    );
    assert!(server.is_running(), "turnpike exited during the walk");
}
