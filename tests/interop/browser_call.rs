//! A real WebRTC call through the demo page: two headless Chromium pages
//! (driven by `tests/browser/call.mjs` with playwright-core) join one room
//! with "relay only" on, so that media can only flow through turnpike's
//! TURN relays. The script checks the pages (decoded video, relay <-> relay
//! candidate pair, badge, peer-left); this test checks its summary again
//! and then the server's side: the selected relay addresses are
//! allocations turnpike made for those two peers.
//!
//! A second call puts each page on its own instance of a fleet (`[fleet]`,
//! rooms shared through a real `redis-server`), so signaling crosses
//! instances and each side is relayed by its own instance.
//!
//! Needs Node.js, Debian's `chromium` and `npm ci --prefix tests/browser`
//! (scripts/test.sh does all of that). Screenshots go to
//! `target/test-artifacts/browser/`.

// The clock rule of clippy.toml is for the sans-IO core; black-box tests
// bound their waits with the real clock.
#![allow(clippy::disallowed_methods)]

use crate::common::call_summary::{allocation_line, run_call, text};
use crate::common::*;

use std::time::{Duration, Instant};

/// The signaling endpoint mints TURN credentials under this secret.
const AUTH_TOML: &str = "[auth]\nsecrets = [\"browser-test-secret\"]\n";
/// The same, offering RFC 8489's SHA-256 keys, which Chromium does not
/// know: it must go on with MD5, unchanged.
const OFFERING_TOML: &str =
    "[auth]\nsecrets = [\"browser-test-secret\"]\npassword_algorithms = [\"sha256\", \"md5\"]\n";
/// call.mjs stops itself after 90 s; this is the outer bound.
const CALL_LIMIT: Duration = Duration::from_secs(120);

/// The number after `key=` in a log line.
fn counter(line: &str, key: &str) -> Option<u64> {
    let rest = &line[line.find(&format!(" {key}="))? + key.len() + 2..];
    rest.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
}

#[test]
fn two_browsers_call_each_other_through_the_turn_relay() {
    let server = TestServer::start(OFFERING_TOML);
    call_and_check("browser", &server, &server);
}

/// The same call with each page on its own instance of a fleet (rooms
/// shared through a real `redis-server`): alice signals through instance
/// one and is relayed by it, bob through and by instance two.
#[test]
fn two_browsers_on_two_instances_of_a_fleet_call_each_other() {
    let redis = crate::common::redis_server::RedisServer::start();
    let fleet = format!(
        "{AUTH_TOML}\n[fleet]\nredis_url = \"{}\"\nkey_prefix = \"browser{}\"\n{}",
        redis.url(),
        std::process::id(),
        crate::common::redis_server::fleet_secret_line()
    );
    let (one, two) = (TestServer::start(&fleet), TestServer::start(&fleet));
    for server in [&one, &two] {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !server.http_get("/readyz").1.contains("redis: up") {
            assert!(Instant::now() < deadline, "an instance never reached Redis");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    call_and_check("browser-fleet", &one, &two);
}

/// Runs call.mjs with alice's page on `alice_server` and bob's on
/// `bob_server` (screenshots in `target/test-artifacts/<name>/`), checks
/// its summary, and that each page's selected relay is an allocation its
/// own server made for its peer id and relayed media through.
fn call_and_check(name: &str, alice_server: &TestServer, bob_server: &TestServer) {
    let setup = browser_setup(name);
    let base_url = |server: &TestServer| format!("http://{}/", server.http_addr());
    let summary = run_call(&setup, &base_url(alice_server), Some(&base_url(bob_server)), CALL_LIMIT);
    let (alice, bob) = (&summary["alice"], &summary["bob"]);
    for name in ["call-alice.png", "call-bob.png", "after-leave.png"] {
        assert!(setup.artifacts.join(name).is_file(), "no screenshot {name}");
    }

    // The server's side: each page's selected local candidate is a relay
    // that its server allocated for that page's peer id.
    let sides = [(alice, alice_server), (bob, bob_server)];
    let mut lines = Vec::new();
    for (side, server) in sides {
        let log = server.stderr_log();
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
        let found: Vec<String> = sides
            .iter()
            .filter_map(|(side, server)| {
                let relay = text(side, "localAddress");
                server
                    .stderr_log()
                    .lines()
                    .find(|l| l.contains("allocation deleted") && l.contains(relay))
                    .map(str::to_owned)
            })
            .collect();
        if found.len() == 2 || (!found.is_empty() && Instant::now() >= deadline) {
            break found;
        }
        assert!(
            Instant::now() < deadline,
            "the servers logged no totals for relays {} and {} within 5 s of the call; logs:\n{}\n{}",
            text(alice, "localAddress"),
            text(bob, "localAddress"),
            alice_server.stderr_log(),
            bob_server.stderr_log()
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
    assert!(
        alice_server.is_running() && bob_server.is_running(),
        "turnpike exited during the call"
    );
}
