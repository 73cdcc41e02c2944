//! A real WebRTC call through the demo page: two headless Chromium pages
//! (driven by `tests/browser/call.mjs` with playwright-core) join one room
//! with "relay only" on, so that media can only flow through turnpike's
//! TURN relays. The script checks the pages (decoded video, relay <-> relay
//! candidate pair, badge, peer-left); this test checks its summary again
//! and then the server's side: the selected relay addresses are
//! allocations turnpike made for those two peers.
//!
//! Needs Node.js, Debian's `chromium` and `npm ci --prefix tests/browser`
//! (scripts/test.sh does all of that). Screenshots go to
//! `target/test-artifacts/browser/`.

// The clock rule of clippy.toml is for the sans-IO core; black-box tests
// bound their waits with the real clock.
#![allow(clippy::disallowed_methods)]

mod common;
use common::call_summary::{allocation_line, run_call, text};
use common::*;

use std::time::{Duration, Instant};

/// The signaling endpoint mints TURN credentials under this secret.
const AUTH_TOML: &str = "[auth]\nsecrets = [\"browser-test-secret\"]\n";
/// call.mjs stops itself after 90 s; this is the outer bound.
const CALL_LIMIT: Duration = Duration::from_secs(120);

/// The number after `key=` in a log line.
fn counter(line: &str, key: &str) -> Option<u64> {
    let rest = &line[line.find(&format!(" {key}="))? + key.len() + 2..];
    rest.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
}

#[test]
fn two_browsers_call_each_other_through_the_turn_relay() {
    let setup = browser_setup("browser");
    let server = TestServer::start(AUTH_TOML);
    let base_url = format!("http://{}/", server.http_addr());
    let summary = run_call(&setup, &base_url, CALL_LIMIT);
    let (alice, bob) = (&summary["alice"], &summary["bob"]);
    let artifacts = &setup.artifacts;
    for name in ["call-alice.png", "call-bob.png", "after-leave.png"] {
        assert!(artifacts.join(name).is_file(), "no screenshot {name}");
    }

    // The server's side: each page's selected local candidate is a relay
    // that turnpike allocated for that page's peer id.
    let log = server.stderr_log();
    let mut lines = Vec::new();
    for side in [alice, bob] {
        let (id, relay) = (text(side, "id"), text(side, "localAddress"));
        let line = allocation_line(&log, id, relay).unwrap_or_else(|| {
            panic!("the server log has no `allocation created` of relay {relay} for peer {id}; log:\n{log}")
        });
        lines.push(line.to_owned());
    }
    eprintln!("server allocations used by the call:\n{}", lines.join("\n"));

    // When a page closes, Chromium deletes its allocations and the server
    // logs what went through them. Bob's page was closed mid-test and the
    // browser has exited since, so at least one of the two relays' totals
    // should show up; each one that does must show media both ways.
    let deadline = Instant::now() + Duration::from_secs(5);
    let totals = loop {
        let log = server.stderr_log();
        let found: Vec<String> = [alice, bob]
            .iter()
            .filter_map(|side| {
                let relay = text(side, "localAddress");
                log.lines()
                    .find(|l| l.contains("allocation deleted") && l.contains(relay))
                    .map(str::to_owned)
            })
            .collect();
        if found.len() == 2 || (!found.is_empty() && Instant::now() >= deadline) {
            break found;
        }
        assert!(
            Instant::now() < deadline,
            "the server logged no totals for relays {} and {} within 5 s of the call; log:\n{log}",
            text(alice, "localAddress"),
            text(bob, "localAddress")
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    for line in &totals {
        for key in ["packets_to_peer", "packets_to_client"] {
            let n = counter(line, key).unwrap_or_else(|| panic!("no {key} in {line}"));
            assert!(n >= 10, "only {n} {key} through a relay of the call: {line}");
        }
    }
    eprintln!("relay totals:\n{}", totals.join("\n"));
    assert!(server.is_running(), "turnpike exited during the call");
}
