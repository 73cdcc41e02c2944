//! `turnpike selftest` against a running turnpike: every check passing on
//! UDP, TCP and TLS, the relay ↔ relay fallback under the default peer
//! filter, and a deliberately broken server failing each check as it
//! should (the relayed address, the peer filter, the certificate, the
//! password), with the exit codes scripts rely on.

#![allow(clippy::disallowed_methods)] // waits in black-box tests use the real clock

use std::net::{TcpListener, UdpSocket};
use std::time::{Duration, Instant};

use crate::common::selftest_run::{assert_relaying_works, ca_file, check, selftest_json, turnpike, verdict};
use crate::common::{ScratchDir, TestPki, TestServer, LONG_TERM_USER_TOML, PASSWORD, USER};

fn udp_url(server: &TestServer) -> String {
    format!("turn:{}?transport=udp", server.addr())
}

fn tcp_url(server: &TestServer) -> String {
    format!("turn:{}?transport=tcp", server.addr())
}

fn tls_url(server: &TestServer) -> String {
    format!("turns:{}?transport=tcp", server.tls_addr())
}

#[test]
fn every_check_passes_on_udp_tcp_and_tls_through_a_local_peer() {
    let server = TestServer::start(LONG_TERM_USER_TOML);
    let dir = ScratchDir::new("selftest");
    let ca = ca_file(&dir, server.ca());
    let urls = [udp_url(&server), tcp_url(&server), tls_url(&server)];
    let mut args: Vec<&str> = urls.iter().map(String::as_str).collect();
    args.extend(["--user", USER, "--password", PASSWORD, "--ca", ca.to_str().unwrap()]);
    let (code, report) = selftest_json(&args);

    assert_eq!(code, 0, "{report:#}");
    assert_eq!(report["counts"]["fail"], 0, "{report:#}");
    assert_eq!(report["counts"]["skip"], 0, "{report:#}");
    assert_eq!(report["checks"].as_array().unwrap().len(), 7 + 8 + 9, "{report:#}");
    for url in &urls {
        // Loopback peers are allowed: the echo comes from the local peer.
        assert_relaying_works(&report, url, "peer");
        assert_eq!(check(&report, url, "loss")["sent"], 20);
        let relayed = check(&report, url, "allocate")["relayed_address"].as_str().unwrap();
        assert!(relayed.starts_with("127.0.0.1:"), "{report:#}");
    }
    let tls = check(&report, &urls[2], "tls");
    assert_eq!(tls["verdict"], "pass", "{report:#}");
    assert!(tls["days_left"].as_i64().unwrap() > 14, "{report:#}");
    assert!(
        tls["issuer"].as_str().unwrap().contains("turnpike test CA"),
        "{report:#}"
    );
    assert_eq!(verdict(&report, &urls[1], "connect").0, "pass");
}

#[test]
fn from_a_config_it_mints_a_credential_and_falls_back_to_relay_to_relay() {
    // The built-in peer filter refuses loopback peers: the local peer is
    // refused, a second allocation echoes instead.
    let server = TestServer::start_with_peers("", "", "[auth]\nsecrets = [\"selftest-secret\"]\n");
    let dir = ScratchDir::new("selftest");
    let ca = ca_file(&dir, server.ca());
    let config = server.config_path().to_str().unwrap().to_owned();
    let output = turnpike(&["--config", &config, "selftest", "--ca", ca.to_str().unwrap()]);
    let text = &output.stdout;
    assert_eq!(output.status.and_then(|s| s.code()), Some(0), "{output:?}");

    // The config's listeners: UDP and TCP on 127.0.0.1 and ::1, TLS on 127.0.0.1.
    let port = server.addr().port();
    for url in [
        format!("turn:127.0.0.1:{port}?transport=udp"),
        format!("turn:[::1]:{port}?transport=udp"),
        format!("turn:127.0.0.1:{port}?transport=tcp"),
        format!("turn:[::1]:{port}?transport=tcp"),
        tls_url(&server),
    ] {
        assert!(text.contains(&format!("{url}\n")), "{url} not checked:\n{text}");
    }
    let echoes = text
        .lines()
        .filter(|l| l.starts_with("  PASS echo "))
        .collect::<Vec<_>>();
    assert_eq!(echoes.len(), 5, "{text}");
    assert!(echoes.iter().all(|l| l.contains("relay ↔ relay")), "{text}");
    let permissions = text
        .lines()
        .filter(|l| l.starts_with("  PASS permission "))
        .collect::<Vec<_>>();
    assert_eq!(permissions.len(), 5, "{text}");
    // Over IPv4 the local peer was named and refused by the peer filter.
    assert!(permissions.iter().any(|l| l.contains("refused (403")), "{text}");
    // Reached over ::1, an IPv4 relay cannot be compared with the host.
    let compared = text
        .lines()
        .filter(|l| l.starts_with("  WARN relayed_address "))
        .count();
    assert_eq!(compared, 2, "{text}");
    let last = text.lines().last().unwrap_or_default();
    assert!(last.starts_with("WARN: ") && last.contains(" 0 failed"), "{text}");
}

#[test]
fn a_relayed_address_other_than_the_servers_fails_while_relaying_works() {
    // Relay sockets on 127.0.0.1, advertised as 127.0.0.2: still local.
    let server = TestServer::start_with("external_ip = \"127.0.0.2\"", LONG_TERM_USER_TOML);
    let url = udp_url(&server);
    let (code, report) = selftest_json(&[&url, "--user", USER, "--password", PASSWORD]);
    assert_eq!(code, 1, "{report:#}");
    let (relayed, detail) = verdict(&report, &url, "relayed_address");
    assert_eq!(relayed, "fail", "{report:#}");
    assert!(detail.starts_with("127.0.0.2 is not"), "{detail}");
    assert!(detail.contains("(127.0.0.1)"), "{detail}");
    assert_eq!(verdict(&report, &url, "echo").0, "pass", "{report:#}");
    assert_eq!(report["counts"]["fail"], 1, "{report:#}");

    // Told that this address is meant, the same server passes.
    let (code, report) = selftest_json(&[
        &url,
        "--user",
        USER,
        "--password",
        PASSWORD,
        "--expect-relay-ip",
        "127.0.0.2",
    ]);
    assert_eq!(verdict(&report, &url, "relayed_address").0, "pass", "{report:#}");
    assert_eq!(code, 0, "{report:#}");

    // From the server's own config, its external address is the one meant.
    let config = server.config_path().to_str().unwrap().to_owned();
    let output = turnpike(&["--config", &config, "selftest", "--json"]);
    let report: serde_json::Value = serde_json::from_str(&output.stdout).unwrap_or_else(|e| panic!("{e}: {output:?}"));
    let udp = report["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .find(|c| c["check"] == "relayed_address" && c["url"].as_str().is_some_and(|u| u.ends_with("transport=udp")))
        .unwrap_or_else(|| panic!("no relayed_address check: {report:#}"));
    assert_eq!(udp["verdict"], "pass", "{report:#}");
}

#[test]
fn a_peer_filter_denying_the_relay_range_fails_the_permission_with_the_reason() {
    let server = TestServer::start_with_peers("", "[peers]\ndeny = [\"127.0.0.0/8\"]\n", LONG_TERM_USER_TOML);
    let url = udp_url(&server);
    let (code, report) = selftest_json(&[&url, "--user", USER, "--password", PASSWORD]);
    assert_eq!(code, 1, "{report:#}");
    let (permission, detail) = verdict(&report, &url, "permission");
    assert_eq!(permission, "fail", "{report:#}");
    assert!(detail.contains("the local peer 127.0.0.1:"), "{detail}");
    assert!(detail.contains("relay ↔ relay"), "{detail}");
    assert_eq!(detail.matches("(403 Forbidden)").count(), 2, "{detail}");
    assert!(detail.contains("peer filter"), "{detail}");
    for name in ["echo", "loss", "refresh"] {
        let (skipped, why) = verdict(&report, &url, name);
        assert_eq!(
            (skipped, why),
            ("skip", "not run: no echo through the relay"),
            "{report:#}"
        );
    }
    assert_eq!(verdict(&report, &url, "allocate").0, "pass");
}

#[test]
fn an_untrusted_or_expired_certificate_fails_the_tls_check_with_the_reason() {
    let server = TestServer::start(LONG_TERM_USER_TOML);
    let dir = ScratchDir::new("selftest");
    let url = tls_url(&server);
    let credential = ["--user", USER, "--password", PASSWORD];

    let other_ca = ca_file(&dir, &TestPki::new());
    let mut args = vec![url.as_str(), "--ca", other_ca.to_str().unwrap()];
    args.extend(credential);
    let (code, report) = selftest_json(&args);
    assert_eq!(code, 1, "{report:#}");
    let (tls, detail) = verdict(&report, &url, "tls");
    assert_eq!(tls, "fail", "{report:#}");
    assert!(
        detail.contains("not trusted") && detail.contains("turnpike test CA"),
        "{detail}"
    );
    assert_eq!(verdict(&report, &url, "binding").0, "skip", "nothing is sent over it");

    let (cert, key) = server.ca().expired_leaf("expired");
    server.replace_certificate(&cert, &key);
    server.sighup();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !server.stderr_log().contains("configuration reloaded") {
        assert!(
            Instant::now() < deadline,
            "no reload within 10 s:\n{}",
            server.stderr_log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let ca = ca_file(&dir, server.ca());
    let mut args = vec![url.as_str(), "--ca", ca.to_str().unwrap()];
    args.extend(credential);
    let (code, report) = selftest_json(&args);
    assert_eq!(code, 1, "{report:#}");
    let expired = check(&report, &url, "tls");
    assert_eq!(expired["verdict"], "fail", "{report:#}");
    let detail = expired["detail"].as_str().unwrap();
    assert!(detail.starts_with("certificate expired on 2021-01-01"), "{detail}");
    assert!(expired["days_left"].as_i64().unwrap() < 0, "{report:#}");
}

#[test]
fn a_wrong_password_is_a_refused_credential() {
    let server = TestServer::start(LONG_TERM_USER_TOML);
    let url = tcp_url(&server);
    let (code, report) = selftest_json(&[&url, "--user", USER, "--password", "wrong"]);
    assert_eq!(code, 1, "{report:#}");
    assert_eq!(verdict(&report, &url, "binding").0, "pass", "{report:#}");
    assert_eq!(
        verdict(&report, &url, "allocate"),
        ("fail", "credential refused (401 Unauthorized)"),
        "{report:#}"
    );
    assert_eq!(verdict(&report, &url, "echo"), ("skip", "not run: no allocation"));
}

#[test]
fn a_server_that_does_not_answer_fails_within_the_timeout() {
    // A UDP socket that never reads, and a TCP listener that never
    // accepts (the kernel completes the handshake; nothing answers).
    let silent_udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let silent_tcp = TcpListener::bind("127.0.0.1:0").unwrap();
    let udp = format!("turn:{}?transport=udp", silent_udp.local_addr().unwrap());
    let tcp = format!("turn:{}?transport=tcp", silent_tcp.local_addr().unwrap());
    let (code, report) = selftest_json(&[&udp, &tcp, "--user", "u", "--password", "p", "--timeout", "1s"]);
    assert_eq!(code, 1, "{report:#}");
    for url in [&udp, &tcp] {
        assert_eq!(
            verdict(&report, url, "binding"),
            ("fail", "no answer within 1 s"),
            "{report:#}"
        );
        assert_eq!(
            verdict(&report, url, "allocate"),
            ("skip", "not run: the server did not answer")
        );
    }
    assert_eq!(verdict(&report, &tcp, "connect").0, "pass");
}

#[test]
fn usage_and_config_errors_exit_2_before_any_check() {
    let cases: [&[&str]; 6] = [
        &["selftest", "turn:host?transport=sctp", "--user", "u", "--password", "p"],
        &["selftest", "http://host", "--user", "u", "--password", "p"],
        &["selftest", "turn:127.0.0.1:9"],
        &["selftest", "turn:127.0.0.1:9", "--user", "u"],
        &[
            "selftest",
            "turns:127.0.0.1:9",
            "--user",
            "u",
            "--password",
            "p",
            "--ca",
            "/nonexistent/ca.pem",
        ],
        &["--config", "/nonexistent/turnpike.toml", "selftest"],
    ];
    for args in cases {
        let output = turnpike(args);
        assert_eq!(output.status.and_then(|s| s.code()), Some(2), "{args:?}: {output:?}");
        assert!(output.stderr.starts_with("Error: "), "{args:?}: {output:?}");
        assert_eq!(output.stdout, "", "{args:?}: nothing checked");
    }
    let clap = turnpike(&["selftest", "--count", "0", "turn:h"]);
    assert_eq!(clap.status.and_then(|s| s.code()), Some(2), "{clap:?}");
}
