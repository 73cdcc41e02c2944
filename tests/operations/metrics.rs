//! `/metrics` after a known workload: every counter and gauge the workload
//! touches must show exactly what was done. The exposition text is parsed
//! by an independent parser, the Python Prometheus client's OpenMetrics
//! parser, not by string matching.

#![allow(clippy::disallowed_methods)] // waits in black-box tests use the real clock

use std::collections::BTreeMap;
use std::io::Write;
use std::net::UdpSocket;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use turnpike::proto::stun::{attr, method, Class, Message, MessageWriter};

use crate::common::{
    authenticated_request, authenticated_request_as, code_of, id_of, read_stun, stun_binding, tcp_connect,
    transaction_id, ws_client, EchoPeer, TestServer, LONG_TERM_USER_TOML, PASSWORD, USER,
};

/// Every sample of the scrape, keyed `name{label="value",...}` with labels
/// sorted, as the Python OpenMetrics parser reads them.
fn scrape(server: &TestServer) -> BTreeMap<String, f64> {
    let text = server.metrics();
    const PARSE: &str = r#"
import json, sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families
out = {}
for family in text_string_to_metric_families(sys.stdin.read()):
    for s in family.samples:
        labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
        out[f"{s.name}{{{labels}}}"] = s.value
print(json.dumps(out))
"#;
    let mut child = Command::new("python3")
        .args(["-c", PARSE])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run python3");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("feed the scrape");
    let output = child.wait_with_output().expect("parser output");
    assert!(
        output.status.success(),
        "the OpenMetrics parser refused the scrape (pip install -r tests/python/requirements.txt?):\n{}\n{text}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("parser JSON")
}

/// A Send indication to `peer` carrying `payload`.
fn send_indication(peer: std::net::SocketAddr, payload: &[u8]) -> Vec<u8> {
    let mut buf = Vec::new();
    let mut w = MessageWriter::new(&mut buf, Class::Indication, method::SEND, transaction_id());
    w.xor_address(attr::XOR_PEER_ADDRESS, peer).bytes(attr::DATA, payload);
    w.finish(None, false);
    buf
}

#[tokio::test]
async fn metrics_count_a_known_workload_exactly() {
    let server = TestServer::start(LONG_TERM_USER_TOML);
    let peer = EchoPeer::start();
    // The start-up probe's Binding(s) came before the workload; wait
    // (bounded) for the shards to publish them.
    let binding_200 = r#"turnpike_requests_total{code="200",method="binding"}"#;
    let deadline = Instant::now() + Duration::from_secs(5);
    let probes = loop {
        if let Some(n) = scrape(&server).get(binding_200).copied().filter(|n| *n > 0.0) {
            break n;
        }
        assert!(Instant::now() < deadline, "the start-up Binding was never counted");
        std::thread::sleep(Duration::from_millis(50));
    };

    // 3 Bindings over UDP.
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
    for _ in 0..3 {
        assert!(stun_binding(&socket, server.addr(), Duration::from_secs(2)).is_some());
    }

    // Over TCP: Allocate, a permission for the echo peer, a permission for
    // a private address (refused by the filter), five Send indications of
    // 100 bytes echoed back as Data indications, a Refresh with a wrong
    // password and one by an unknown user. Each signed request is sent
    // unsigned first and gets the 401 challenge.
    let mut stream = tcp_connect(server.addr());
    let udp = [17u8, 0, 0, 0];
    let allocate = authenticated_request(&mut stream, method::ALLOCATE, |w| {
        w.bytes(attr::REQUESTED_TRANSPORT, &udp);
    });
    assert_eq!(code_of(&allocate), 200);
    for (ip, expected) in [(peer.addr(), 200), ("10.0.0.1:5000".parse().expect("addr"), 403)] {
        let answer = authenticated_request(&mut stream, method::CREATE_PERMISSION, |w| {
            w.xor_address(attr::XOR_PEER_ADDRESS, ip);
        });
        assert_eq!(code_of(&answer), expected, "CreatePermission {ip}");
    }
    for i in 0..5u8 {
        stream
            .write_all(&send_indication(peer.addr(), &[i; 100]))
            .expect("send");
        let data = read_stun(&mut stream);
        let msg = Message::parse(&data).expect("a Data indication");
        assert_eq!(msg.get(attr::DATA), Some(&[i; 100][..]));
    }
    for (user, password) in [(USER, "wrong"), ("nobody", PASSWORD)] {
        let answer = authenticated_request_as(&mut stream, user, password, method::REFRESH, |_| {});
        assert_eq!(code_of(&answer), 401, "{user}");
    }

    // Signaling: two peers in a room, one signal, one malformed message.
    let mut a = ws_client::connect(&server).await;
    let mut b = ws_client::connect(&server).await;
    let joined = a.join("m", serde_json::json!({})).await;
    b.join("m", serde_json::json!({})).await;
    a.recv().await; // peer-joined
    b.signal(&id_of(&joined), serde_json::json!(1)).await;
    a.recv().await;
    b.send_text("nonsense").await;
    b.recv().await;

    let expected_live: BTreeMap<&str, f64> = [
        (binding_200, probes + 3.0),
        (r#"turnpike_requests_total{code="401",method="allocate"}"#, 1.0),
        (r#"turnpike_requests_total{code="200",method="allocate"}"#, 1.0),
        (r#"turnpike_requests_total{code="401",method="create_permission"}"#, 2.0),
        (r#"turnpike_requests_total{code="200",method="create_permission"}"#, 1.0),
        (r#"turnpike_requests_total{code="403",method="create_permission"}"#, 1.0),
        (r#"turnpike_requests_total{code="401",method="refresh"}"#, 4.0),
        (r#"turnpike_auth_failures_total{reason="bad_integrity"}"#, 1.0),
        (r#"turnpike_auth_failures_total{reason="unknown_user"}"#, 1.0),
        (r#"turnpike_auth_failures_total{reason="stale_nonce"}"#, 0.0),
        (r#"turnpike_peer_refusals_total{}"#, 1.0),
        (r#"turnpike_quota_refusals_total{limit="allocations_per_user"}"#, 0.0),
        (
            r#"turnpike_allocations_created_total{family="ipv4",transport="tcp"}"#,
            1.0,
        ),
        (r#"turnpike_allocations{family="ipv4",transport="tcp"}"#, 1.0),
        (r#"turnpike_allocations{family="ipv4",transport="udp"}"#, 0.0),
        (r#"turnpike_permissions{}"#, 1.0),
        (r#"turnpike_channels{}"#, 0.0),
        (r#"turnpike_relayed_packets_total{direction="to_peer"}"#, 5.0),
        (r#"turnpike_relayed_packets_total{direction="to_client"}"#, 5.0),
        (r#"turnpike_relayed_bytes_total{direction="to_peer"}"#, 500.0),
        (r#"turnpike_relayed_bytes_total{direction="to_client"}"#, 500.0),
        (r#"turnpike_stream_connections{}"#, 1.0),
        (r#"turnpike_signaling_rooms{}"#, 1.0),
        (r#"turnpike_signaling_peers{}"#, 2.0),
        (r#"turnpike_signaling_sessions{}"#, 2.0),
        (r#"turnpike_signaling_messages_total{type="join"}"#, 2.0),
        (r#"turnpike_signaling_messages_total{type="signal"}"#, 1.0),
        (r#"turnpike_signaling_messages_total{type="invalid"}"#, 1.0),
        (r#"turnpike_signaling_errors_total{code="bad-message"}"#, 1.0),
        (r#"turnpike_draining{}"#, 0.0),
        (r#"turnpike_build_info{version="0.1.0"}"#, 1.0),
    ]
    .into();
    let mismatches = |scraped: &BTreeMap<String, f64>, expected: &BTreeMap<&str, f64>| -> Vec<String> {
        expected
            .iter()
            .filter(|(k, v)| scraped.get(**k) != Some(*v))
            .map(|(k, v)| format!("{k}: expected {v}, scraped {:?}", scraped.get(*k)))
            .collect()
    };
    // Shards publish every 250 ms: wait (bounded) for the numbers to settle.
    let settle = |expected: &BTreeMap<&str, f64>| {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let scraped = scrape(&server);
            let wrong = mismatches(&scraped, expected);
            if wrong.is_empty() {
                return scraped;
            }
            assert!(
                Instant::now() < deadline,
                "metrics do not match the workload:\n{}",
                wrong.join("\n")
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    let scraped = settle(&expected_live);
    // Nothing else was counted: the sum of all requests is the workload's.
    let requests: f64 = scraped
        .iter()
        .filter(|(k, _)| k.starts_with("turnpike_requests_total"))
        .map(|(_, v)| v)
        .sum();
    assert_eq!(requests, probes + 13.0, "{scraped:#?}");

    // Closing the connection ends the allocation; the counts stay.
    drop(stream);
    let mut after_close = expected_live.clone();
    for (k, v) in [
        (r#"turnpike_allocations{family="ipv4",transport="tcp"}"#, 0.0),
        (
            r#"turnpike_allocations_ended_total{family="ipv4",reason="connection_closed",transport="tcp"}"#,
            1.0,
        ),
        (r#"turnpike_permissions{}"#, 0.0),
        (r#"turnpike_stream_connections{}"#, 0.0),
    ] {
        after_close.insert(k, v);
    }
    settle(&after_close);
}
