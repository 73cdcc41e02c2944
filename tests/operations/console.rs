//! The operator console on the admin listener: its files (served without
//! the key, under a strict CSP), `GET /v1/history` (behind the key), and
//! the page itself in headless Chromium under a known load
//! (`tests/browser/console.mjs`): four UDP allocations relaying known
//! packet rates through an echo peer and one signaling session, whose
//! numbers the console must show as `/metrics` and the load have them,
//! charts that move, a table sorted by rate in the load's order, an
//! allocation ended from the table and a user revoked from it.
//!
//! The browser test needs Node.js, Debian's `chromium` and `npm ci
//! --prefix tests/browser` (scripts/test.sh does all of that).
//! Screenshots go to `target/test-artifacts/console/`.

#![allow(clippy::disallowed_methods)] // black-box waits use the real clock

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::ws_client::connect_url;
use crate::common::*;
use turnpike::proto::stun::{attr, method};

const KEY: &str = "console-admin-key-0123456789abcdef";
/// Packets a second each allocation of the load sends; the echo peer
/// sends every one back.
const RATES: [u64; 4] = [10, 20, 30, 40];
/// Payload bytes of each packet.
const PAYLOAD: usize = 400;
/// console.mjs stops itself after 120 s; this is the outer bound.
const WALK_LIMIT: Duration = Duration::from_secs(160);

/// A server with the admin API (and so the console) on a port of its own,
/// and the long-term user the TURN client signs as.
fn start() -> (TestServer, SocketAddr) {
    let admin = SocketAddr::from(([127, 0, 0, 1], free_tcp_port()));
    let server = TestServer::start(&format!(
        "{LONG_TERM_USER_TOML}\n[admin]\nlisten = \"{admin}\"\nkey = \"{KEY}\"\n"
    ));
    (server, admin)
}

/// Status, head and JSON (or text) body of `GET path` on the admin
/// listener, with `key` if given.
fn get(admin: SocketAddr, path: &str, key: Option<&str>) -> (u16, String, String) {
    let auth = key.map_or(String::new(), |k| format!("Authorization: Bearer {k}\r\n"));
    http_exchange_with_head(
        admin,
        &format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}Connection: close\r\n\r\n"),
    )
}

fn history(admin: SocketAddr, query: &str) -> Value {
    let (status, _, body) = get(admin, &format!("/v1/history{query}"), Some(KEY));
    assert_eq!(status, 200, "GET /v1/history{query}: {body}");
    serde_json::from_str(&body).expect("history JSON")
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        key.eq_ignore_ascii_case(name).then(|| value.trim())
    })
}

#[test]
fn the_console_is_served_without_the_key_and_its_history_only_with_it() {
    let (server, admin) = start();

    // The page and its modules: no key needed, a strict CSP on each.
    for (path, kind) in [
        ("/console", "text/html"),
        ("/console/main.js", "text/javascript"),
        ("/console/vendor/uPlot.esm.js", "text/javascript"),
        ("/console/demo.css", "text/css"),
        ("/console/vendor/LICENSE", "text/plain"),
    ] {
        let (status, head, body) = get(admin, path, None);
        assert_eq!(status, 200, "GET {path}");
        assert!(
            header(&head, "content-type").is_some_and(|t| t.starts_with(kind)),
            "{path}: {head}"
        );
        let csp = header(&head, "content-security-policy").unwrap_or_else(|| panic!("{path} has no CSP"));
        assert!(
            csp.contains("script-src 'self'") && !csp.contains("unsafe"),
            "{path}: {csp}"
        );
        assert!(!body.is_empty());
    }
    let (_, _, page) = get(admin, "/console", None);
    assert!(page.contains("src=\"/console/main.js\""), "{page}");

    // The history: 401 without the key, as every route of the API.
    let (status, head, _) = get(admin, "/v1/history", None);
    assert_eq!(status, 401);
    assert_eq!(header(&head, "www-authenticate"), Some("Bearer"));
    let (status, _, _) = get(admin, "/v1/history", Some("a-wrong-admin-key-0123456789abcdef"));
    assert_eq!(status, 401);
    let (status, _, body) = get(admin, "/v1/history?since=yesterday", Some(KEY));
    assert_eq!(status, 400, "{body}");

    // The first sample is taken at start.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut view = history(admin, "");
    while view["times"].as_array().is_none_or(Vec::is_empty) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        view = history(admin, "");
    }
    assert_eq!(view["interval_s"], 5);
    assert_eq!(view["capacity"], 720);
    let charts: Vec<&str> = view["charts"]
        .as_array()
        .expect("charts")
        .iter()
        .filter_map(|c| c["id"].as_str())
        .collect();
    // An HTTP endpoint (signaling) and no [fleet].
    assert_eq!(
        charts,
        [
            "allocations",
            "relayed_bits",
            "relayed_packets",
            "authentications",
            "shed",
            "signaling"
        ]
    );
    let series: usize = view["charts"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| c["series"].as_array().map_or(0, Vec::len))
        .sum();
    assert_eq!(series, 25);
    assert_eq!(view["bytes"], 25 * 720 * 4 + 720 * 8, "the figure of BENCHMARKS.md");
    let times = view["times"].as_array().expect("times");
    assert!(!times.is_empty(), "no sample within 10 s: {view}");
    for chart in view["charts"].as_array().into_iter().flatten() {
        for s in chart["series"].as_array().into_iter().flatten() {
            assert_eq!(s["values"].as_array().map(Vec::len), Some(times.len()), "{s}");
        }
    }
    // Nothing after the last sample.
    let last = times.last().and_then(Value::as_u64).expect("a time");
    assert_eq!(history(admin, &format!("?since={last}"))["times"], Value::Array(vec![]));
    assert!(server.is_running());
}

/// One allocation of the load: its client sends `rate` packets a second
/// over a channel to the echo peer, and reads what comes back.
struct Sender {
    relay: SocketAddr,
    rate: u64,
    thread: JoinHandle<TurnClient>,
}

/// The known load: an allocation per rate of [`RATES`], until `stop`.
fn start_load(server: &TestServer, peer: SocketAddr, stop: &Arc<AtomicBool>) -> Vec<Sender> {
    RATES
        .iter()
        .map(|&rate| {
            let mut client = TurnClient::open(server, Transport::Udp);
            let relay = client.allocate_udp();
            let (number, bound) = client.channel_bind(peer);
            bound.unwrap_or_else(|code| panic!("ChannelBind refused: {code}"));
            let stop = stop.clone();
            let thread = std::thread::spawn(move || {
                let payload = vec![0x5a; PAYLOAD];
                let start = Instant::now();
                let mut sent = 0u64;
                // On a schedule: a late thread catches up, so every window
                // of a few seconds carries `rate` packets a second.
                while !stop.load(Ordering::Relaxed) && start.elapsed() < Duration::from_secs(240) {
                    let due = start + Duration::from_secs_f64(sent as f64 / rate as f64);
                    let now = Instant::now();
                    if now >= due {
                        client.channel_data(number, &payload);
                        sent += 1;
                    } else {
                        client.take_arrivals(due - now);
                    }
                }
                client
            });
            Sender { relay, rate, thread }
        })
        .collect()
}

fn number(v: &Value, pointer: &str) -> f64 {
    v.pointer(pointer)
        .and_then(Value::as_f64)
        .unwrap_or_else(|| panic!("no number at {pointer} in {v}"))
}

/// `seen` is within half of `expected` either way: the console's rates
/// are the load's, not off by a unit (bytes for bits, ms for s) or a
/// direction.
fn about(seen: f64, expected: f64, what: &str) {
    assert!(
        seen > expected * 0.5 && seen < expected * 1.5,
        "{what}: the console shows {seen}, the load is {expected}"
    );
}

#[test]
fn the_console_shows_a_known_load_and_ends_an_allocation_from_its_table() {
    let setup = browser_setup("console");
    let (server, admin) = start();
    let echo = EchoPeer::start();

    // One signaling session in one room, kept open (and read) meanwhile.
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    let url = format!("ws://{}/ws", server.http_addr());
    let session = runtime.spawn(async move {
        let mut client = connect_url(&url).await;
        client.join("console-room", "ops").await;
        loop {
            client.try_recv(Duration::from_secs(1)).await;
        }
    });
    let sessions = server.wait_metric("turnpike_signaling_sessions", Duration::from_secs(10), |n| n == 1.0);
    assert_eq!(sessions, Some(1.0));

    let stop = Arc::new(AtomicBool::new(false));
    let senders = start_load(&server, echo.addr(), &stop);
    // Which admin id is which sender, by relay address.
    let (status, _, body) = get(admin, "/v1/allocations", Some(KEY));
    assert_eq!(status, 200, "{body}");
    let listed: Value = serde_json::from_str(&body).expect("allocations JSON");
    let rate_of: HashMap<String, u64> = listed["allocations"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|a| {
            let relay = a["relays"][0].as_str().unwrap_or_default();
            let sender = senders
                .iter()
                .find(|s| s.relay.to_string() == relay)
                .unwrap_or_else(|| panic!("allocation {a} is none of the load's"));
            (a["id"].as_str().unwrap_or_default().to_owned(), sender.rate)
        })
        .collect();
    assert_eq!(rate_of.len(), RATES.len());

    let args = [
        format!("--key={KEY}"),
        format!("--metrics=http://{}/metrics", server.http_addr()),
        format!("--allocations={}", RATES.len()),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let summary = run_browser_script(
        &setup,
        "console.mjs",
        &format!("http://{admin}/"),
        USER,
        WALK_LIMIT,
        false,
        &args,
    );
    stop.store(true, Ordering::Relaxed);
    for sender in senders {
        sender.thread.join().expect("a sender thread");
    }
    session.abort();

    // The numbers the console showed, against the load.
    let packets: u64 = RATES.iter().sum();
    let bits = (packets * PAYLOAD as u64 * 8) as f64;
    assert_eq!(number(&summary, "/tiles/allocations/value"), RATES.len() as f64);
    about(number(&summary, "/tiles/to_peer/value"), bits, "bits/s to peers");
    about(number(&summary, "/tiles/to_client/value"), bits, "bits/s to clients");
    about(
        number(&summary, "/tiles/packets/value"),
        2.0 * packets as f64,
        "packets/s",
    );
    assert_eq!(number(&summary, "/tiles/signaling/value"), 1.0);

    // The table, sorted by rate: the load's order, each at its rate (both
    // directions, in bits).
    let sorted = summary["table"]["sorted"].as_array().expect("sorted rows");
    let order: Vec<u64> = sorted
        .iter()
        .map(|row| rate_of[row["id"].as_str().unwrap_or_default()])
        .collect();
    assert_eq!(order, [40, 30, 20, 10], "rows sorted by rate: {sorted:?}");
    for row in sorted {
        let rate = rate_of[row["id"].as_str().unwrap_or_default()];
        about(
            number(row, "/rate"),
            (2 * rate * PAYLOAD as u64 * 8) as f64,
            "a row's rate",
        );
    }

    // The slowest was ended from its row, then the user revoked: every
    // allocation is gone, by the operator's hand, and the user is refused.
    let ended = summary["ended"]["id"].as_str().expect("an ended id");
    assert_eq!(rate_of[ended], 10);
    assert_eq!(summary["ended"]["left"], 3);
    let (_, _, body) = get(admin, "/v1/allocations", Some(KEY));
    assert_eq!(
        serde_json::from_str::<Value>(&body).expect("JSON")["allocations"],
        Value::Array(vec![])
    );
    server.assert_metrics_settle(&[
        ("turnpike_allocations{transport=\"udp\",family=\"ipv4\"}", 0.0),
        (
            "turnpike_allocations_ended_total{transport=\"udp\",family=\"ipv4\",reason=\"operator\"}",
            4.0,
        ),
    ]);
    let (_, _, body) = get(admin, "/v1/revocations", Some(KEY));
    assert!(body.contains(&format!("\"username\":\"{USER}\"")), "{body}");
    // The revoked user's next request, signed with the right password.
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    let answer = udp_request_as(&socket, server.addr(), (USER, PASSWORD), method::ALLOCATE, |w| {
        w.bytes(attr::REQUESTED_TRANSPORT, &REQUESTED_UDP);
    });
    assert_eq!(code_of(&answer), 401, "a revoked user allocated");
    assert!(server.is_running());
}
