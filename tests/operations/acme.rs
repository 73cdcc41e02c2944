//! Certificates from an ACME CA (`[tls.acme]`, RFC 8555) against a real
//! one: Debian's `pebble`, with its DNS server resolving `turn.test` to
//! 127.0.0.1 and validating on the ports of the turnpike under test.
//!
//! * TLS-ALPN-01 (RFC 8737) on a TLS port shared with HTTPS, and HTTP-01
//!   on `listen.http`, each issue a certificate that a client verifying
//!   against pebble's root accepts, and a TURN/TLS allocation over it
//!   relays;
//! * a restart reuses the cached certificate (no new order) and the
//!   cache is private (0700, 0600);
//! * a short-lived certificate is renewed while a TURN/TLS allocation
//!   made with the first one stays up and keeps relaying; when the CA
//!   goes away the next renewal fails, the served certificate stays, and
//!   `/readyz` and `/metrics` say so;
//! * a CA that is down from the start: the server runs (on its
//!   placeholder), logs each failure and retries with a doubling wait.

#![allow(clippy::disallowed_methods)] // waits in black-box tests use the real clock

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

use crate::common::pebble::{Pebble, PebbleSetup};
use crate::common::{
    client_config_trusting, free_tcp_port, tls_connect, turn_client::TurnClient, EchoPeer, ServerSetup, TestServer,
    LONG_TERM_USER_TOML,
};

/// The domain the certificates are for; pebble's DNS server answers
/// 127.0.0.1 for it.
const DOMAIN: &str = "turn.test";

const SUCCESS: &str = "turnpike_acme_renewals_total{outcome=\"success\"}";
const FAILURE: &str = "turnpike_acme_renewals_total{outcome=\"failure\"}";

/// How long an issuance may take (pebble validates at once).
const ISSUANCE: Duration = Duration::from_secs(60);

/// The `[tls]` section asking `pebble` (or whatever `directory` is) for a
/// certificate for [`DOMAIN`] with `challenge`, cached in `cache`.
fn acme_toml(directory: &str, directory_ca: &Path, cache: &Path, challenge: &str) -> String {
    format!(
        "[tls.acme]\ndomains = [\"{DOMAIN}\"]\ncontact = [\"mailto:ops@example.org\"]\n\
         directory = \"{directory}\"\ndirectory_ca = \"{}\"\ncache_dir = \"{}\"\n\
         challenge = \"{challenge}\"\nretry_interval = \"1s\"\n",
        directory_ca.display(),
        cache.display()
    )
}

/// A turnpike on the TLS and HTTP ports `ports` with the `[tls]` section
/// `tls` and `extra` after the base.
fn start(ports: (u16, u16), tls: &str, extra: &str) -> TestServer {
    TestServer::start_setup(&ServerSetup {
        tls_toml: Some(tls),
        stream_ports: Some(ports),
        extra_toml: &format!("{LONG_TERM_USER_TOML}\n{extra}"),
        ..ServerSetup::default()
    })
}

/// A pebble that validates on fresh ports for turnpike, whose
/// certificates last `validity`; and those ports.
fn pebble(validity: Duration) -> (Pebble, (u16, u16)) {
    let ports = (free_tcp_port(), free_tcp_port());
    let pebble = Pebble::start(&PebbleSetup {
        tls_port: ports.0,
        http_port: ports.1,
        validity,
    });
    (pebble, ports)
}

/// Waits until `/metrics` counts `at_least` successful issuances.
fn wait_issued(server: &TestServer, at_least: f64) {
    let seen = server.wait_metric(SUCCESS, ISSUANCE, |n| n >= at_least);
    assert!(
        seen.is_some_and(|n| n >= at_least),
        "{at_least} certificate(s) not issued within {ISSUANCE:?}: {SUCCESS} is {seen:?}; /readyz: {:?}",
        server.http_get("/readyz")
    );
}

/// A TLS connection to the server's TLS port that verifies its
/// certificate for [`DOMAIN`] against `root` (pebble's), and the leaf it
/// was served.
fn verified(server: &TestServer, root: &CertificateDer<'static>) -> (TurnClient, CertificateDer<'static>) {
    let stream = tls_connect(client_config_trusting(root.clone()), DOMAIN, server.tls_addr())
        .unwrap_or_else(|e| panic!("a TLS handshake that verifies {DOMAIN} against pebble's root: {e}"));
    let leaf = stream.conn.peer_certificates().expect("a certificate")[0].clone();
    (TurnClient::over_tls(stream), leaf)
}

/// Sends `payload` to the echo `peer` through `client`'s allocation and
/// waits for it to come back.
fn relays(client: &mut TurnClient, peer: &EchoPeer, payload: &[u8]) {
    client.send_indication(peer.addr(), payload);
    let arrivals = client.wait_arrivals(1, Duration::from_secs(5));
    assert!(
        arrivals.iter().any(|a| a.payload == payload),
        "{:?} did not come back through the allocation: {arrivals:?}",
        String::from_utf8_lossy(payload)
    );
    client.arrivals.clear();
}

/// An allocation on `client` with a permission for `peer`.
fn allocate_to(client: &mut TurnClient, peer: &EchoPeer) {
    client.allocate_udp();
    client.create_permission(peer.addr()).expect("CreatePermission");
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

#[test]
fn tls_alpn_01_on_a_shared_tls_port_issues_a_certificate_a_restart_reuses() {
    let (pebble, ports) = pebble(Duration::from_secs(3600));
    let cache = pebble.dir().join("acme-cache");
    let tls = acme_toml(&pebble.directory_url(), pebble.https_ca_path(), &cache, "tls-alpn-01");
    let shared = "[signaling]\nshare_tls_port = true\n";
    let root = {
        let server = start(ports, &tls, shared);
        wait_issued(&server, 1.0);
        let log = server.stderr_log();
        assert!(
            log.contains("self-signed placeholder"),
            "the placeholder until the first certificate is logged"
        );
        assert!(
            log.contains("ACME: TLS-ALPN-01 validation answered"),
            "pebble validated on the shared TLS port"
        );
        let root = pebble.issuing_root();
        let (mut client, leaf) = verified(&server, &root);
        let peer = EchoPeer::start();
        allocate_to(&mut client, &peer);
        relays(&mut client, &peer, b"over a certificate pebble issued");
        let (status, ready) = server.http_get("/readyz");
        assert_eq!(status, 200);
        assert!(
            ready.contains("acme: ok (serving the certificate valid until"),
            "{ready}"
        );
        let expiry = server
            .metric("turnpike_tls_certificate_expiry_timestamp_seconds")
            .expect("the expiry metric");
        let served = turnpike::process::tls::Leaf::parse(&leaf).expect("the served leaf");
        assert_eq!(expiry as u64, served.expiry_unix_secs());
        assert_eq!(served.names, [DOMAIN]);
        assert_eq!(server.metric(FAILURE), Some(0.0));
        // The validation connections never reached TURN or HTTP.
        let metrics = server.metrics();
        let closed = crate::common::shared_port::dispatched(&metrics, "closed");
        assert_eq!(closed, 0, "a validation handshake was dispatched:\n{metrics}");
        root
    };
    assert_eq!(mode(&cache), 0o700);
    for file in ["account.json", "certificate.pem", "certificate.key.pem"] {
        assert_eq!(mode(&cache.join(file)), 0o600, "{file}");
    }
    let cached = std::fs::read(cache.join("certificate.pem")).expect("the cached chain");
    let cached = CertificateDer::pem_slice_iter(&cached)
        .next()
        .expect("a certificate in the cache")
        .expect("PEM");
    // A restart serves the cached certificate and orders nothing.
    let server = start(ports, &tls, shared);
    let (mut client, leaf) = verified(&server, &root);
    assert_eq!(leaf, cached, "the restarted server serves the cached certificate");
    let peer = EchoPeer::start();
    allocate_to(&mut client, &peer);
    relays(&mut client, &peer, b"after a restart");
    assert_eq!(server.metric(SUCCESS), Some(0.0), "a restart ordered a certificate");
    assert!(server.stderr_log().contains("serving the cached certificate"));
}

#[test]
fn http_01_on_listen_http_issues_a_certificate() {
    let (pebble, ports) = pebble(Duration::from_secs(3600));
    let cache = pebble.dir().join("acme-cache");
    let tls = acme_toml(&pebble.directory_url(), pebble.https_ca_path(), &cache, "http-01");
    let server = start(ports, &tls, "");
    assert_eq!(
        server.http_get("/.well-known/acme-challenge/not-a-pending-token").0,
        404
    );
    wait_issued(&server, 1.0);
    let (mut client, _) = verified(&server, &pebble.issuing_root());
    let peer = EchoPeer::start();
    allocate_to(&mut client, &peer);
    relays(&mut client, &peer, b"over a certificate validated by HTTP-01");
    assert!(
        pebble
            .log()
            .contains("Attempting to validate w/ HTTP: http://turn.test:"),
        "pebble validated with HTTP-01:\n{}",
        pebble.log()
    );
}

#[test]
fn a_short_lived_certificate_is_renewed_under_a_live_allocation_and_kept_when_the_ca_fails() {
    // Renewal is due after two thirds of the lifetime: about 14 s.
    let (mut pebble, ports) = pebble(Duration::from_secs(21));
    let cache = pebble.dir().join("acme-cache");
    let tls = acme_toml(&pebble.directory_url(), pebble.https_ca_path(), &cache, "tls-alpn-01");
    let server = start(ports, &tls, "");
    wait_issued(&server, 1.0);
    let root = pebble.issuing_root();
    let (mut client, first) = verified(&server, &root);
    let peer = EchoPeer::start();
    allocate_to(&mut client, &peer);
    relays(&mut client, &peer, b"before the renewal");
    wait_issued(&server, 2.0);
    let (_, second) = verified(&server, &root);
    assert_ne!(first, second, "a new handshake gets the renewed certificate");
    relays(
        &mut client,
        &peer,
        b"after the renewal, on the first certificate's connection",
    );
    // The CA goes away: the next renewal fails, and the renewed
    // certificate is still what new handshakes get.
    pebble.stop();
    let failed = server.wait_metric(FAILURE, ISSUANCE, |n| n >= 1.0);
    assert!(failed.is_some_and(|n| n >= 1.0), "no failed renewal: {failed:?}");
    let stream = tls_connect(client_config_trusting(root.clone()), DOMAIN, server.tls_addr())
        .expect("the renewed certificate is still served and still valid");
    assert_eq!(stream.conn.peer_certificates().expect("a certificate")[0], second);
    let (status, ready) = server.http_get("/readyz");
    assert_eq!(status, 200, "a failing renewal does not take the server out");
    assert!(
        ready.contains("acme: failing (") && ready.contains("serving the certificate valid until"),
        "{ready}"
    );
    assert!(server
        .metric("turnpike_acme_consecutive_failures")
        .is_some_and(|n| n >= 1.0));
    assert!(server.stderr_log().contains("keeping the certificate valid until"));
    relays(&mut client, &peer, b"while renewal fails");
}

#[test]
fn a_ca_that_is_down_is_retried_with_a_doubling_wait_while_the_server_runs() {
    // Nothing listens on the directory's port.
    let dir = crate::common::ScratchDir::new("acme-down");
    let ca = crate::common::TestPki::new();
    let ca_path = dir.path().join("ca.pem");
    std::fs::write(&ca_path, crate::common::pebble::pem("CERTIFICATE", &ca.ca_der())).expect("write CA");
    let directory = format!("https://127.0.0.1:{}/dir", free_tcp_port());
    let tls = acme_toml(&directory, &ca_path, &dir.path().join("cache"), "tls-alpn-01");
    let server = start((free_tcp_port(), free_tcp_port()), &tls, "");
    let failures = server.wait_metric(FAILURE, Duration::from_secs(30), |n| n >= 3.0);
    assert!(
        failures.is_some_and(|n| n >= 3.0),
        "three failed attempts: {failures:?}"
    );
    // Still serving: TURN, readiness.
    let mut udp = TurnClient::open(&server, crate::common::turn_client::Transport::Udp);
    udp.allocate_udp();
    let (status, ready) = server.http_get("/readyz");
    assert_eq!(status, 200);
    assert!(
        ready.contains("acme: failing (") && ready.contains("self-signed placeholder"),
        "{ready}"
    );
    assert_eq!(server.metric(SUCCESS), Some(0.0));
    assert_eq!(
        server.metric("turnpike_tls_certificate_expiry_timestamp_seconds"),
        Some(0.0),
        "the placeholder has no expiry to report"
    );
    // Each failure is logged with the wait before the next: 1s, 2s, 4s.
    let log = server.stderr_log();
    let waits: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("ACME: obtaining a certificate for turn.test failed"))
        .filter_map(|l| l.rsplit_once("retrying in ").map(|(_, wait)| wait.trim()))
        .collect();
    assert!(
        waits.starts_with(&["1s", "2s", "4s"]),
        "the waits after each failure: {waits:?}\n{log}"
    );
}
