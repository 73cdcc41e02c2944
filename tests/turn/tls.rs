//! STUN/TURN over TLS (`turns:`): TLS 1.2 and 1.3 with an independent
//! client (rustls' own client with a test CA), certificate reload on SIGHUP
//! that keeps live connections and allocations, a broken certificate
//! refused at start and on reload, and handshakes that never finish. coturn's
//! `turnutils_uclient -t -S` relaying over TLS is in `interop/coturn_tools.rs`.

// Black-box tests wait for conditions with real deadlines; the clock ban
// is for the sans-IO core.
#![allow(clippy::disallowed_methods)]

use std::net::TcpStream;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use crate::common::{
    authenticated_request, closed_by_server, run_with_timeout, stream_binding, tcp_connect, turnpike_bin, ScratchDir,
    TestServer, LONG_TERM_USER_TOML,
};
use rustls::version::{TLS12, TLS13};
use rustls::ProtocolVersion;
use turnpike::proto::stun::{attr, method, Class, Message};

const PATIENCE: Duration = Duration::from_secs(10);

type TlsStream = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

fn peer_certificate(stream: &TlsStream) -> Vec<u8> {
    stream.conn.peer_certificates().expect("a server certificate")[0].to_vec()
}

/// Waits (bounded) until `condition` holds, polling.
fn wait_for(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(25));
    }
}

#[test]
fn binding_is_answered_over_tls_1_2_and_1_3() {
    let server = TestServer::start(LONG_TERM_USER_TOML);
    for (version, expected) in [(&TLS12, ProtocolVersion::TLSv1_2), (&TLS13, ProtocolVersion::TLSv1_3)] {
        let mut stream = server
            .ca()
            .connect(server.tls_addr(), &[version])
            .expect("TLS handshake");
        assert_eq!(stream.conn.protocol_version(), Some(expected));
        let mapped = stream_binding(&mut stream).expect("a Binding success over TLS");
        assert_eq!(mapped, stream.sock.local_addr().unwrap());
    }
}

#[test]
fn sighup_reloads_the_certificate_and_keeps_live_allocations() {
    let server = TestServer::start(LONG_TERM_USER_TOML);
    let mut old = server
        .ca()
        .connect(server.tls_addr(), &[&TLS13])
        .expect("TLS handshake");
    let first_cert = peer_certificate(&old);
    let answer = authenticated_request(&mut old, method::ALLOCATE, |w| {
        w.bytes(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0]);
    });
    assert_eq!(
        Message::parse(&answer).unwrap().class(),
        Class::Success,
        "Allocate over TLS"
    );

    let (cert, key, renewed_der) = server.ca().leaf("renewed");
    server.replace_certificate(&cert, &key);
    server.sighup();
    // A handshake that fails (the machine may be busy) is retried; only
    // never seeing the new certificate fails the test.
    wait_for("the reloaded certificate on new connections", || {
        match server.ca().connect(server.tls_addr(), &[&TLS13]) {
            Ok(fresh) => peer_certificate(&fresh) == renewed_der,
            Err(e) => {
                eprintln!("handshake failed, retrying: {e}");
                false
            }
        }
    });
    assert_ne!(first_cert, renewed_der);

    // The connection made before the reload and its allocation live on.
    let refresh = authenticated_request(&mut old, method::REFRESH, |_| {});
    assert_eq!(
        Message::parse(&refresh).unwrap().class(),
        Class::Success,
        "Refresh after reload"
    );
    assert!(server.stderr_log().contains("configuration reloaded"));
}

#[test]
fn a_broken_certificate_on_sighup_keeps_the_previous_one() {
    let server = TestServer::start(LONG_TERM_USER_TOML);
    let before = peer_certificate(&server.ca().connect(server.tls_addr(), &[&TLS13]).unwrap());
    server.replace_certificate(
        "-----BEGIN CERTIFICATE-----\nbm9wZQ==\n-----END CERTIFICATE-----\n",
        "garbage",
    );
    server.sighup();
    wait_for("the refused reload in the log", || {
        server.stderr_log().contains("keeping the running configuration: TLS")
    });
    let mut stream = server
        .ca()
        .connect(server.tls_addr(), &[&TLS12])
        .expect("TLS still works");
    assert_eq!(peer_certificate(&stream), before);
    assert!(stream_binding(&mut stream).is_some());
    assert!(server.is_running());
}

#[test]
fn server_refuses_to_start_with_a_missing_or_mismatched_certificate() {
    let dir = ScratchDir::new("bad-tls");
    let pki = crate::common::TestPki::new();
    let (cert, _, _) = pki.leaf("a");
    let (_, other_key, _) = pki.leaf("b");
    let cert_path = dir.path().join("cert.pem");
    let key_path = dir.path().join("key.pem");
    std::fs::write(&cert_path, cert).unwrap();
    std::fs::write(&key_path, other_key).unwrap();
    let missing = dir.path().join("missing.pem");
    for (cert, key, expect) in [
        (&missing, &key_path, missing.display().to_string()),
        (&cert_path, &key_path, "not usable together".to_owned()),
    ] {
        let config = dir.write_config(&format!(
            "[listen]\nudp = []\ntcp = []\ntls = [\"127.0.0.1:0\"]\n[tls]\ncert = \"{}\"\nkey = \"{}\"\n",
            cert.display(),
            key.display()
        ));
        // Bounded: a server that wrongly starts would otherwise run forever.
        for subcommand in ["run", "check-config"] {
            let mut command = Command::new(turnpike_bin());
            match subcommand {
                "run" => command.arg("--config").arg(&config),
                _ => command.arg(subcommand).arg(&config),
            };
            let output = run_with_timeout(&mut command, PATIENCE);
            let text = output.combined();
            assert_eq!(output.status.and_then(|s| s.code()), Some(1), "{subcommand}: {text}");
            assert!(text.contains(&expect), "{subcommand}: {text}");
        }
    }
}

#[test]
fn connections_that_never_finish_the_handshake_are_closed() {
    let server = TestServer::start(&format!(
        "{LONG_TERM_USER_TOML}\n[limits]\nconnection_setup_timeout = \"1s\"\n"
    ));
    let mut silent: Vec<TcpStream> = (0..20).map(|_| tcp_connect(server.tls_addr())).collect();
    // Others still get through meanwhile.
    let mut ok = server.ca().connect(server.tls_addr(), &[&TLS13]).unwrap();
    assert!(stream_binding(&mut ok).is_some());
    for stream in &mut silent {
        assert!(
            closed_by_server(stream),
            "a silent TLS connection outlived the setup timeout"
        );
    }
}
