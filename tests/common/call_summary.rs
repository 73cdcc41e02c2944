//! What the browser call scripts report (`tests/browser/call.mjs` prints
//! a JSON summary of each page's side of the call), checked the same way
//! by every test that runs one, and the server log line that backs it.

use std::time::Duration;

use serde_json::Value;

use super::{run_browser_script, BrowserSetup};

/// Runs `call.mjs` on the demo page at `base_url` (a room of its own)
/// within `limit`, and returns its summary once both pages are checked
/// ([`check_side`]) and agree on each other's relay.
pub fn run_call(setup: &BrowserSetup, base_url: &str, bob_url: Option<&str>, limit: Duration) -> Value {
    let room = format!("browser-call-{}", std::process::id());
    let bob: Vec<&str> = bob_url.into_iter().collect();
    let summary = run_browser_script(setup, "call.mjs", base_url, &room, limit, true, &bob);
    check_side(&summary, "alice");
    check_side(&summary, "bob");
    let (alice, bob) = (&summary["alice"], &summary["bob"]);
    assert_eq!(
        text(alice, "localAddress"),
        text(bob, "remoteAddress"),
        "the two pages disagree on alice's relay"
    );
    assert_eq!(
        text(bob, "localAddress"),
        text(alice, "remoteAddress"),
        "the two pages disagree on bob's relay"
    );
    summary
}

pub fn text<'a>(side: &'a Value, key: &str) -> &'a str {
    side[key]
        .as_str()
        .unwrap_or_else(|| panic!("summary has no string {key:?}: {side}"))
}

/// Asserts what one page saw: video frames decoded and growing, over a
/// relay <-> relay pair, and a badge that says so.
pub fn check_side(summary: &Value, who: &str) {
    let side = &summary[who];
    let frames: Vec<u64> = side["framesDecoded"]
        .as_array()
        .unwrap_or_else(|| panic!("{who}: no framesDecoded samples in {summary}"))
        .iter()
        .map(|v| v.as_u64().unwrap_or(0))
        .collect();
    assert!(
        frames.len() == 2 && frames[0] > 0 && frames[1] > frames[0],
        "{who}: remote video framesDecoded did not grow between two samples: {frames:?}"
    );
    assert_eq!(text(side, "localType"), "relay", "{who}: local candidate type");
    assert_eq!(text(side, "remoteType"), "relay", "{who}: remote candidate type");
    assert!(
        text(side, "badge").contains("relay"),
        "{who}: the connection badge does not show relay: {side}"
    );
    for key in ["localAddress", "remoteAddress"] {
        assert!(
            text(side, key).starts_with("127.0.0.1:"),
            "{who}: {key} is not a loopback relay address: {side}"
        );
    }
}

/// The `allocation created` line of the server log for peer `id` (its
/// TURN username is `<expiry>:<id>`) whose relay is `relay`.
pub fn allocation_line<'a>(log: &'a str, id: &str, relay: &str) -> Option<&'a str> {
    let user = format!(":{id}\"");
    log.lines()
        .find(|line| line.contains("allocation created") && line.contains(&user) && line.contains(relay))
}
