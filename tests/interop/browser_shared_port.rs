//! A Chromium call over one TLS port (`signaling.share_tls_port`), as on
//! a network that lets only HTTPS out: the demo page is
//! `https://127.0.0.1:<port>/`, its signaling `wss://127.0.0.1:<port>/ws`,
//! and the only ICE server it is handed is `turns:127.0.0.1:<port>?transport=tcp`
//! (the server has no UDP, TCP or HTTP listener). Two relay-only pages
//! (`tests/browser/call.mjs`) must get video through relays allocated over
//! TLS on that port.
//!
//! Chromium and the test certificate, as found by trying (Debian's
//! Chromium, headless): its TURN client verifies the `turns:` server's
//! certificate like a page's. Without `--ignore-certificate-errors` a
//! relay-only `RTCPeerConnection` to this server gets no relay candidate:
//! Chromium aborts the handshake with a `certificate_unknown` alert (the
//! server logs "TLS handshake failed") and reports ICE candidate error 701.
//! With the flag (in `harness.mjs`'s flags, for the page and its
//! WebSocket) the same connection is accepted, so no test CA has to be
//! put in an NSS database. It sends no ALPN on a `turns:` connection,
//! so the server tells it from the page's connections by its first bytes
//! (a STUN Allocate, against `GET`).
//!
//! Needs what `browser_call.rs` needs (Node.js, Debian's `chromium`,
//! `npm ci --prefix tests/browser`); fails, never skips, without them.

// The clock rule of clippy.toml is for the sans-IO core; black-box tests
// bound their waits with the real clock.
#![allow(clippy::disallowed_methods)]

use std::time::Duration;

use crate::common::browser_setup;
use crate::common::call_summary::{allocation_line, run_call, text};
use crate::common::shared_port::{dispatched, SharedPortServer};

/// The signaling endpoint mints TURN credentials under this secret.
const AUTH_TOML: &str = "[auth]\nsecrets = [\"browser-test-secret\"]\n";
/// call.mjs stops itself after 90 s; this is the outer bound.
const CALL_LIMIT: Duration = Duration::from_secs(120);

#[test]
fn two_browsers_call_over_one_tls_port_for_page_signaling_and_relay() {
    let setup = browser_setup("browser-shared-port");
    let mut server = SharedPortServer::start(AUTH_TOML);
    let port = server.addr().port();
    let summary = run_call(&setup, &format!("https://{}/", server.addr()), None, CALL_LIMIT);
    for who in ["alice", "bob"] {
        let side = &summary[who];
        // Everything on the one port: the page, its signaling, its only
        // ICE server.
        let origin = format!("https://127.0.0.1:{port}/");
        assert!(text(side, "pageUrl").starts_with(&origin), "{who}: {side}");
        let ws = format!("wss://127.0.0.1:{port}/ws");
        assert!(text(side, "wsUrl").starts_with(&ws), "{who}: {side}");
        let turns = format!("turns:127.0.0.1:{port}?transport=tcp");
        assert_eq!(
            side["iceUrls"],
            serde_json::json!([turns]),
            "{who}: the ICE servers of the page"
        );
        assert_eq!(
            text(side, "relayProtocol"),
            "tls",
            "{who}: the relay candidate was not allocated over TLS: {summary}"
        );
    }

    // The server's side: each page's relay is an allocation made over a TLS
    // connection to the shared port, for that page's peer.
    let log = server.stderr_log();
    for who in ["alice", "bob"] {
        let side = &summary[who];
        let (id, relay) = (text(side, "id"), text(side, "localAddress"));
        let line = allocation_line(&log, id, relay)
            .unwrap_or_else(|| panic!("no `allocation created` of relay {relay} for peer {id}; log:\n{log}"));
        assert!(
            line.contains("client=Tls:") && line.contains(&format!("->127.0.0.1:{port} ")),
            "{who}: the allocation was not made over TLS on port {port}: {line}"
        );
    }
    // And the port dispatched both kinds: the pages' HTTP (page, script,
    // style, WebSockets) and the TURN connections.
    let (status, metrics) = server.get("/metrics");
    assert_eq!(status, 200);
    let count = |to: &str| dispatched(&metrics, to);
    assert!(count("http") >= 2, "two pages and their WebSockets: {metrics}");
    assert!(count("turn") >= 2, "a TURN connection per page: {metrics}");
    assert!(server.is_running(), "turnpike exited during the call");
}
