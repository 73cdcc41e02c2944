//! The TURN test page (`/test`) in headless Chromium
//! (`tests/browser/turn_test.mjs`), against real servers: green on every
//! transport (UDP, TCP, TLS) of turnpike, its credentials from turnpike's
//! own `/ice-servers`, and of coturn, typed in; red, with the right
//! reason, against a wrong password, a TCP port nobody listens on, and a
//! TLS certificate the browser does not trust (a second turnpike whose
//! TCP works). Chromium trusts the certificates of the first turnpike and
//! of coturn only, by their public keys, as a browser trusts a public
//! authority's. The server's side: turnpike's log holds the allocations
//! the green run made, one per transport.
//!
//! Needs Node.js, Debian's `chromium` and `coturn`, and `npm ci --prefix
//! tests/browser` (scripts/test.sh does all of that). Screenshots go to
//! `target/test-artifacts/turn-test/`.

#![allow(clippy::disallowed_methods)] // black-box waits use the real clock

use std::time::Duration;

use serde_json::{json, Value};

use crate::common::coturn::{CoturnAuth, CoturnServer};
use crate::common::*;

const API_KEY: &str = "turn-test-page-api-key-0123456789";
const SECRET: &str = "turn-test-page-shared-secret";
/// turn_test.mjs stops itself after 240 s; this is the outer bound.
const LIMIT: Duration = Duration::from_secs(280);

/// The results of case `name`, which must have one per URL given.
fn results<'a>(summary: &'a Value, name: &str, count: usize) -> &'a [Value] {
    let results = summary["cases"][name]["results"]
        .as_array()
        .unwrap_or_else(|| panic!("no results for {name}: {summary}"));
    assert_eq!(results.len(), count, "{name}: {results:?}");
    results
}

fn of<'a>(results: &'a [Value], transport: &str) -> &'a Value {
    results
        .iter()
        .find(|r| r["transport"] == transport)
        .unwrap_or_else(|| panic!("no {transport} result in {results:?}"))
}

/// A green result: data flowed through a relay on loopback, measured.
fn assert_pass(result: &Value, what: &str) {
    assert_eq!(result["verdict"], "pass", "{what}: {result}");
    assert!(
        result["relay"].as_str().is_some_and(|r| r.starts_with("127.0.0.1:")),
        "{what}: {result}"
    );
    for key in ["rttMs", "throughputBps"] {
        assert!(
            result[key].as_f64().is_some_and(|v| v > 0.0),
            "{what}: {key} in {result}"
        );
    }
    assert!(
        result["lossPercent"]
            .as_f64()
            .is_some_and(|v| (0.0..=100.0).contains(&v)),
        "{what}: {result}"
    );
}

/// A red result whose reason says `reason`.
fn assert_fail(result: &Value, reason: &str, what: &str) {
    assert_eq!(result["verdict"], "fail", "{what}: {result}");
    assert!(
        result["reason"].as_str().is_some_and(|r| r.contains(reason)),
        "{what}: the reason does not say {reason:?}: {result}"
    );
}

#[test]
fn the_test_page_is_green_on_every_transport_of_turnpike_and_coturn_and_red_with_each_failures_reason() {
    let setup = browser_setup("turn-test");
    let turnpike = TestServer::start(&format!(
        "[auth]\nsecrets = [\"{SECRET}\"]\n{LONG_TERM_USER_TOML}\n[signaling]\napi_key = \"{API_KEY}\"\n"
    ));
    // Another PKI's certificate: one the browser does not trust.
    let untrusted = TestServer::start(LONG_TERM_USER_TOML);
    let coturn = CoturnServer::start_with(CoturnAuth::TestUser);
    let closed = free_tcp_port();

    let url =
        |scheme: &str, addr: std::net::SocketAddr, transport: &str| format!("{scheme}:{addr}?transport={transport}");
    let plan = json!({
        "trust": [turnpike.cert_pem(), coturn.cert_pem()],
        "cases": [
            {"name": "turnpike", "source": "server", "apiKey": API_KEY},
            {"name": "coturn", "source": "typed", "username": USER, "credential": PASSWORD, "urls": [
                url("turn", coturn.addr(), "udp"), url("turn", coturn.addr(), "tcp"), url("turns", coturn.tls_addr(), "tcp"),
            ]},
            {"name": "wrong-password", "source": "typed", "username": USER, "credential": "not-the-password", "urls": [
                url("turn", turnpike.addr(), "udp"), url("turn", turnpike.addr(), "tcp"),
            ]},
            {"name": "blocked-tcp", "source": "typed", "username": USER, "credential": PASSWORD, "urls": [
                format!("turn:127.0.0.1:{closed}?transport=tcp"),
            ]},
            {"name": "untrusted-certificate", "source": "typed", "username": USER, "credential": PASSWORD, "urls": [
                url("turns", untrusted.tls_addr(), "tcp"), url("turn", untrusted.addr(), "tcp"),
            ]},
        ],
    });
    let dir = ScratchDir::new("turn-test");
    let cases = dir.path().join("cases.json");
    std::fs::write(&cases, plan.to_string()).expect("write the cases");
    let cases_arg = format!("--cases={}", cases.display());
    let base = format!("http://{}/", turnpike.http_addr());
    let summary = run_browser_script(&setup, "turn_test.mjs", &base, "turn-test", LIMIT, false, &[&cases_arg]);

    // Green: every transport of turnpike (from its /ice-servers) and of
    // coturn.
    let green = results(&summary, "turnpike", 3);
    for transport in ["udp", "tcp", "tls"] {
        assert_pass(of(green, transport), &format!("turnpike {transport}"));
        assert_pass(
            of(results(&summary, "coturn", 3), transport),
            &format!("coturn {transport}"),
        );
    }
    // Beside them, the server's own check (`/test/self-check`, turnpike
    // selftest against its own /ice-servers): turn: over UDP and TCP
    // relays end to end; turns: fails at the certificate, whose test CA
    // is not among the system's roots the server trusts, as a browser's
    // would be without the test's trust list. Typed-in servers get none.
    let server = &summary["cases"]["turnpike"]["server"];
    let checks = server["checks"]
        .as_array()
        .unwrap_or_else(|| panic!("no server view: {server}"));
    for (prefix, transport) in [("turn:", "udp"), ("turn:", "tcp")] {
        let of_url: Vec<&Value> = checks
            .iter()
            .filter(|c| {
                let url = c["url"].as_str().unwrap_or_default();
                url.starts_with(prefix) && url.ends_with(&format!("transport={transport}"))
            })
            .collect();
        let echo = of_url.iter().find(|c| c["check"] == "echo");
        assert_eq!(
            echo.map(|c| &c["verdict"]),
            Some(&json!("pass")),
            "{transport}: {server}"
        );
        for check in &of_url {
            assert!(
                check["verdict"] == "pass" || check["verdict"] == "warn",
                "{transport}: {check}"
            );
        }
    }
    let tls = checks
        .iter()
        .find(|c| c["url"].as_str().is_some_and(|u| u.starts_with("turns:")) && c["check"] == "tls");
    assert_eq!(tls.map(|c| &c["verdict"]), Some(&json!("fail")), "{server}");
    assert_eq!(server["verdict"], "fail", "{server}");
    assert!(
        summary["cases"]["coturn"]["server"].is_null(),
        "typed-in servers are checked by the browser only"
    );

    // Red, each with its reason.
    for result in results(&summary, "wrong-password", 2) {
        assert_fail(result, "wrong credential", "a wrong password");
        assert!(result["errors"].to_string().contains("401"), "{result}");
    }
    assert_fail(
        &results(&summary, "blocked-tcp", 1)[0],
        &format!("cannot connect to 127.0.0.1:{closed} over TCP"),
        "a closed TCP port",
    );
    let untrusted_results = results(&summary, "untrusted-certificate", 2);
    assert_pass(of(untrusted_results, "tcp"), "the untrusted server's TCP");
    assert_fail(
        of(untrusted_results, "tls"),
        "certificate: ",
        "an untrusted certificate",
    );

    // The server's side: the green run allocated on each transport with a
    // credential minted by /ice-servers (`<expiry>:api`).
    let log = turnpike.stderr_log();
    for transport in ["Udp", "Tcp", "Tls"] {
        assert!(
            log.lines().any(|l| l.contains("allocation created")
                && l.contains(&format!("client={transport}:"))
                && l.contains(":api\"")),
            "no {transport} allocation with a minted credential in turnpike's log:\n{log}"
        );
    }
    assert!(turnpike.is_running() && untrusted.is_running());
}
