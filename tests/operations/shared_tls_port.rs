//! One TLS port for TURN and HTTPS (`signaling.share_tls_port`), told
//! apart by ALPN (`stun.turn`, RFC 7443, or `http/1.1`, RFC 7301) and, when
//! the client offers none, by the first bytes: an independent rustls
//! client speaks STUN/TURN, plain HTTP requests and a WebSocket over the
//! one port, and what is neither is closed; an HTTP connection is held to
//! one deadline from the shard's accept (not from its hand-over to the
//! HTTP thread). The Chromium call over that
//! one port is in `interop/browser_shared_port.rs`.

// Black-box tests bound their waits with the real clock.
#![allow(clippy::disallowed_methods)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::common::shared_port::{dispatched, SharedPortServer};
use crate::common::{
    authenticated_request, code_of, http_get_on, stream_binding, TestServer, WsClient, LONG_TERM_USER_TOML,
};
use rustls::version::{TLS12, TLS13};
use turnpike::proto::stun::{attr, method};

const SHARED: &str = "[signaling]\nshare_tls_port = true\n";

type Tls = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

fn start() -> TestServer {
    TestServer::start(&format!("{LONG_TERM_USER_TOML}\n{SHARED}"))
}

fn connect(server: &TestServer, alpn: &[&[u8]]) -> Tls {
    server
        .ca()
        .connect_alpn(server.tls_addr(), &[&TLS13], alpn)
        .expect("TLS handshake on the shared port")
}

/// True once the server has closed `stream`: an end of stream, with its
/// close_notify or without (a connection dropped after the handshake), or
/// a reset, within the stream's read timeout.
fn closed(stream: &mut Tls) -> bool {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionReset, UnexpectedEof};
    let mut byte = [0u8; 1];
    match stream.read(&mut byte) {
        Ok(n) => n == 0,
        Err(e) => matches!(e.kind(), UnexpectedEof | ConnectionReset | ConnectionAborted),
    }
}

#[test]
fn alpn_stun_turn_is_served_as_turn_with_allocations() {
    let server = start();
    let mut stream = connect(&server, &[b"stun.turn"]);
    assert_eq!(stream.conn.alpn_protocol(), Some(&b"stun.turn"[..]));
    let mapped = stream_binding(&mut stream).expect("a Binding success");
    assert_eq!(mapped, stream.sock.local_addr().unwrap());
    let answer = authenticated_request(&mut stream, method::ALLOCATE, |w| {
        w.bytes(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0]);
    });
    assert_eq!(code_of(&answer), 200, "Allocate over the shared port");
}

#[test]
fn alpn_http_1_1_is_served_as_http() {
    let server = start();
    let mut stream = connect(&server, &[b"http/1.1"]);
    assert_eq!(stream.conn.alpn_protocol(), Some(&b"http/1.1"[..]));
    assert_eq!(http_get_on(&mut stream, "/healthz").0, 200);
    // Both offered: the server prefers TURN (its order), as RFC 7301
    // lets it; a client that wants HTTP offers only that.
    let stream = connect(&server, &[b"http/1.1", b"stun.turn"]);
    assert_eq!(stream.conn.alpn_protocol(), Some(&b"stun.turn"[..]));
}

#[test]
fn without_alpn_the_first_bytes_decide() {
    let server = start();
    let mut turn = connect(&server, &[]);
    assert_eq!(turn.conn.alpn_protocol(), None);
    assert!(stream_binding(&mut turn).is_some(), "STUN first: served as TURN");
    assert!(stream_binding(&mut turn).is_some(), "and stays TURN");

    let mut http = connect(&server, &[]);
    assert_eq!(http_get_on(&mut http, "/healthz").0, 200, "GET first: served as HTTP");
    let mut page = connect(&server, &[]);
    let (status, body) = http_get_on(&mut page, "/");
    assert_eq!(status, 200, "the demo page");
    assert!(body.to_ascii_lowercase().contains("<html"), "{body:.200}");
}

#[test]
fn a_request_cut_into_single_bytes_is_still_recognised() {
    let server = start();
    let mut stream = connect(&server, &[]);
    for byte in b"GET " {
        stream.write_all(&[*byte]).unwrap();
        stream.flush().unwrap();
        std::thread::sleep(Duration::from_millis(20));
    }
    write!(
        stream,
        "/healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    stream.flush().unwrap();
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    assert!(
        response.starts_with(b"HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&response)
    );
}

#[test]
fn what_is_neither_turn_nor_http_is_closed_and_counted() {
    let server = TestServer::start(&format!(
        "{LONG_TERM_USER_TOML}\n[limits]\nconnection_setup_timeout = \"1s\"\n{SHARED}"
    ));
    for junk in [&b"hello world\r\n"[..], b"\xff\xff\xff\xff", b"SSH-2.0-OpenSSH\r\n"] {
        let mut stream = connect(&server, &[]);
        stream.write_all(junk).unwrap();
        stream.flush().unwrap();
        let started = Instant::now();
        assert!(closed(&mut stream), "{junk:?} was not closed");
        assert!(
            started.elapsed() < Duration::from_millis(900),
            "{junk:?}: closed only by the timeout"
        );
    }
    // Silent after the handshake: closed by the setup deadline.
    let mut silent = connect(&server, &[]);
    let started = Instant::now();
    assert!(closed(&mut silent), "a silent connection stayed open");
    assert!(started.elapsed() < Duration::from_secs(5));
    // A client that offers only protocols the port does not serve fails the
    // handshake (no_application_protocol, RFC 7301 §3.2).
    let refused = server.ca().connect_alpn(server.tls_addr(), &[&TLS12], &[b"h2"]);
    assert!(refused.is_err(), "an h2-only handshake succeeded");

    let mut turn = connect(&server, &[b"stun.turn"]);
    assert!(stream_binding(&mut turn).is_some());
    let mut http = connect(&server, &[]);
    assert_eq!(http_get_on(&mut http, "/healthz").0, 200);
    let (status, metrics) = server.http_get("/metrics");
    assert_eq!(status, 200);
    let count = |to: &str| dispatched(&metrics, to);
    assert_eq!(count("closed"), 4, "three kinds of junk and one silent connection");
    assert_eq!(count("turn"), 1);
    assert_eq!(count("http"), 1);
}

#[test]
fn the_shared_port_holds_its_http_connections_to_signaling_max_connections() {
    let server = TestServer::start(&format!(
        "{LONG_TERM_USER_TOML}\n{SHARED}max_connections = 1\nmax_connections_per_source = 1\n"
    ));
    // One keep-alive connection holds the only place of 127.0.0.1 (the
    // start-up probe of the test server may hold it for a moment).
    let deadline = Instant::now() + Duration::from_secs(5);
    let _held = loop {
        let mut held = connect(&server, &[b"http/1.1"]);
        write!(held, "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").unwrap();
        held.flush().unwrap();
        let mut first = [0u8; 12];
        if held.read_exact(&mut first).is_ok() && &first == b"HTTP/1.1 200" {
            break held;
        }
        assert!(Instant::now() < deadline, "no HTTP connection got the only place");
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut refused = connect(&server, &[b"http/1.1"]);
    write!(refused, "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").unwrap();
    refused.flush().unwrap();
    assert!(
        closed(&mut refused),
        "a second HTTP connection of the source was served"
    );
    // TURN on the same port is not held to the HTTP limits.
    let mut turn = connect(&server, &[b"stun.turn"]);
    assert!(stream_binding(&mut turn).is_some());
}

#[tokio::test]
async fn a_websocket_over_the_shared_port_joins_and_is_handed_turns_on_that_port() {
    // A shared secret, so that `joined` carries TURN credentials and URLs.
    let server = TestServer::start(&format!("[auth]\nsecrets = [\"shared-port-secret\"]\n{SHARED}"));
    let port = server.tls_addr().port();
    let config = server.ca().client_config(&[&TLS13], &[]);
    let tcp = tokio::net::TcpStream::connect(server.tls_addr()).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let tls = tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .expect("TLS handshake");
    let url = format!("wss://localhost:{port}/ws");
    let (ws, _) = tokio::time::timeout(Duration::from_secs(10), tokio_tungstenite::client_async(url, tls))
        .await
        .expect("upgrade in time")
        .expect("WebSocket upgrade over the shared port");
    let mut ws = WsClient::new(ws);
    let joined = ws.join("shared", serde_json::json!({})).await;
    let urls: Vec<&str> = joined["iceServers"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s["urls"].as_array().unwrap().iter().filter_map(|u| u.as_str()))
        .collect();
    let turns = format!("turns:localhost:{port}?transport=tcp");
    assert!(urls.contains(&turns.as_str()), "{turns} not in {urls:?}");
    ws.assert_usable().await;
}

/// The shared port works with `listen.http` off and no UDP or TCP
/// listener: the only port there is.
#[test]
fn with_listen_http_off_the_tls_port_serves_both_alone() {
    let server = SharedPortServer::start("");
    assert_eq!(server.get("/healthz").0, 200);
    let mut turn = server
        .ca()
        .connect_alpn(server.addr(), &[&TLS13], &[b"stun.turn"])
        .expect("TLS handshake");
    assert!(stream_binding(&mut turn).is_some());
}

/// The HTTP side's one deadline for everything before a first request.
const HTTP_DEADLINE: Duration = Duration::from_secs(10);
/// When the late connections start their handshake, after their accept:
/// within the shard's setup deadline (20 s here), near the HTTP one.
const LATE_HANDSHAKE: Duration = Duration::from_secs(8);
/// Scheduling slack on the HTTP deadline.
const SLACK: Duration = Duration::from_secs(3);

/// A TLS client offering `http/1.1` over an already connected `tcp`, its
/// handshake driven to the end.
fn handshake_on(server: &TestServer, tcp: TcpStream) -> Tls {
    let config = server.ca().client_config(&[&TLS13], &[b"http/1.1"]);
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("server name");
    let conn = rustls::ClientConnection::new(config, name).expect("a client connection");
    let mut stream = rustls::StreamOwned::new(conn, tcp);
    while stream.conn.is_handshaking() {
        stream
            .conn
            .complete_io(&mut stream.sock)
            .expect("a late handshake, within the setup deadline");
    }
    stream
}

#[test]
fn a_handed_http_connection_gets_one_deadline_from_the_shards_accept() {
    let server = TestServer::start(&format!(
        "{LONG_TERM_USER_TOML}\n[limits]\nconnection_setup_timeout = \"20s\"\n{SHARED}"
    ));
    // Two connections accepted now, silent until late in the HTTP
    // deadline: one then asks at once (and is served), the other sends
    // its request's headers a byte at a time and never ends them.
    let slow = TcpStream::connect(server.tls_addr()).expect("connect");
    let accepted = Instant::now();
    let prompt = TcpStream::connect(server.tls_addr()).expect("connect");
    std::thread::sleep(LATE_HANDSHAKE);
    let mut prompt = handshake_on(&server, prompt);
    let mut slow = handshake_on(&server, slow);
    assert_eq!(
        http_get_on(&mut prompt, "/healthz").0,
        200,
        "a request within the deadline is served"
    );
    slow.sock
        .set_read_timeout(Some(Duration::from_millis(250)))
        .expect("timeout");
    let _ = write!(slow, "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n").and_then(|()| slow.flush());
    let header = b"X-Slow: a header that never ends";
    let mut closed_after = None;
    for byte in header.iter().cycle().take(200) {
        if slow.write_all(&[*byte]).and_then(|()| slow.flush()).is_err() {
            closed_after = Some(accepted.elapsed());
            break;
        }
        let mut buf = [0u8; 64];
        match slow.read(&mut buf) {
            Ok(_) => {
                // An answer (408, or an end of stream): the server gave up.
                closed_after = Some(accepted.elapsed());
                break;
            }
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(_) => {
                closed_after = Some(accepted.elapsed());
                break;
            }
        }
        if accepted.elapsed() > HTTP_DEADLINE + SLACK {
            break;
        }
    }
    let closed_after = closed_after.unwrap_or_else(|| accepted.elapsed());
    assert!(
        closed_after <= HTTP_DEADLINE + SLACK,
        "a connection handed over {LATE_HANDSHAKE:?} after its accept was still open \
         {closed_after:?} after it, past the {HTTP_DEADLINE:?} deadline from accept"
    );
}
