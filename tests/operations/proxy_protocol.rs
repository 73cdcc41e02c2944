//! PROXY protocol v1 and v2 from trusted sources, with Debian's `haproxy`
//! in front (`mode tcp`, `send-proxy` / `send-proxy-v2`), connecting from
//! 127.0.0.2 (`listen.proxy_protocol_from`) while the test's clients
//! connect from 127.0.0.1 or other loopback addresses, so the address the
//! server sees can only be the client's if it came from the header.
//!
//! Proved from outside: a Binding answer over TCP and TLS through haproxy
//! maps the client's own address and port (v1 and v2), an authenticated
//! Allocate works through it, per-source limits of the TCP and HTTP
//! listeners count the real clients (not haproxy as one source), a PROXY
//! header sent directly from an untrusted address is refused, a trusted
//! address without a header is refused, `/metrics` counts both, and a
//! reload changes the trusted sources for new connections, and on the HTTP
//! listener the PROXY header, the TLS handshake and the first request's
//! headers share one deadline from accept.

// Black-box tests wait for conditions with real deadlines; the clock ban
// is for the sans-IO core.
#![allow(clippy::disallowed_methods)]

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{
    authenticated_request, binding_request, closed_by_server, code_of, die_with_test, free_tcp_port, require_tool,
    stream_binding, tcp_connect, transaction_id, ChildGuard, ScratchDir, ServerSetup, TestServer, LONG_TERM_USER_TOML,
};
use turnpike::proto::stun::{attr, method};

/// The address haproxy connects to turnpike from.
const PROXY_SOURCE: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);

/// The `[listen]` key trusting haproxy's address only.
const TRUST_HAPROXY: &str = "proxy_protocol_from = [\"127.0.0.2/32\"]\n";

/// Where haproxy's readiness probes come from, apart from every client.
const PROBE_SOURCE: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 9);

/// A `haproxy -db` child in `mode tcp`: one frontend on a free loopback
/// port per backend, each backend one server line.
struct Haproxy {
    frontends: Vec<SocketAddr>,
    _child: ChildGuard,
    _dir: ScratchDir,
}

impl Haproxy {
    /// `backends`: (turnpike address, options of its `server` line).
    fn start(backends: &[(SocketAddr, &str)]) -> Haproxy {
        let haproxy = require_tool("haproxy");
        let dir = ScratchDir::new("haproxy");
        let mut cfg = String::from(
            // retries 0: one client connection is one connection to us, so
            // that what the server counts is what the test made.
            "global\n    maxconn 256\n\ndefaults\n    mode tcp\n    timeout connect 5s\n    retries 0\n    \
             timeout client 30s\n    timeout server 30s\n\n",
        );
        let mut frontends = Vec::new();
        for (i, (backend, options)) in backends.iter().enumerate() {
            let frontend = SocketAddr::from((Ipv4Addr::LOCALHOST, free_tcp_port()));
            cfg.push_str(&format!(
                "frontend f{i}\n    bind {frontend}\n    default_backend b{i}\n\n\
                 backend b{i}\n    server turnpike {backend} {options} source {PROXY_SOURCE}\n\n"
            ));
            frontends.push(frontend);
        }
        let cfg_path = dir.path().join("haproxy.cfg");
        std::fs::write(&cfg_path, &cfg).expect("write haproxy.cfg");
        let log = std::fs::File::create(dir.path().join("haproxy.log")).expect("haproxy log");
        let child = die_with_test(&mut Command::new(haproxy))
            .arg("-f")
            .arg(&cfg_path)
            .arg("-db")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn haproxy");
        let mut child = ChildGuard(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        for frontend in &frontends {
            while connect_from(PROBE_SOURCE, *frontend).is_err() {
                let exited = child.0.try_wait().expect("wait for haproxy");
                let log = std::fs::read_to_string(dir.path().join("haproxy.log")).unwrap_or_default();
                assert!(exited.is_none(), "haproxy exited: {log}\n{cfg}");
                assert!(
                    Instant::now() < deadline,
                    "haproxy does not listen on {frontend}: {log}"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        Haproxy {
            frontends,
            _child: child,
            _dir: dir,
        }
    }
}

/// A TCP connection to `to` from `from` (any port), 10 s read timeout.
fn connect_from(from: Ipv4Addr, to: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    socket.bind(&SocketAddr::from((from, 0)).into())?;
    socket.connect_timeout(&to.into(), Duration::from_secs(5))?;
    let stream = TcpStream::from(socket);
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    Ok(stream)
}

fn server(extra_toml: &str) -> TestServer {
    TestServer::start_setup(&ServerSetup {
        listen_keys: TRUST_HAPROXY,
        extra_toml,
        ..ServerSetup::default()
    })
}

#[test]
fn binding_and_allocate_through_haproxy_see_the_real_client_with_v1_and_v2() {
    let server = server(&format!(
        "{LONG_TERM_USER_TOML}\n[limits]\nmax_connections_per_source = 1\n"
    ));
    let haproxy = Haproxy::start(&[(server.addr(), "send-proxy"), (server.addr(), "send-proxy-v2")]);
    // Each from a loopback address of its own: one connection per source.
    for (&frontend, host) in haproxy.frontends.iter().zip([6, 7]) {
        let mut stream = connect_from(Ipv4Addr::new(127, 0, 0, host), frontend).expect("connect through haproxy");
        let mapped = stream_binding(&mut stream).expect("a Binding success through haproxy");
        assert_eq!(mapped, stream.local_addr().unwrap(), "through {frontend}");
        let answer = authenticated_request(&mut stream, method::ALLOCATE, |w| {
            w.bytes(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0]);
        });
        assert_eq!(code_of(&answer), 200, "Allocate through {frontend}");
        let real = stream.local_addr().unwrap().to_string();
        assert!(server.stderr_log().contains(&real), "the log names {real}");
    }
    // One connection per source: haproxy carries three clients' at once,
    // each its own source, and a second of one of them is refused.
    let frontend = haproxy.frontends[1];
    let mut clients: Vec<TcpStream> = [3, 4, 5]
        .map(|host| connect_from(Ipv4Addr::new(127, 0, 0, host), frontend).expect("connect through haproxy"))
        .into();
    for client in &mut clients {
        let mapped = stream_binding(client).expect("each client is served");
        assert_eq!(mapped, client.local_addr().unwrap());
    }
    let mut second = connect_from(Ipv4Addr::new(127, 0, 0, 3), frontend).expect("connect through haproxy");
    second.write_all(&binding_request(&transaction_id())).expect("send");
    assert!(
        closed_by_server(&mut second),
        "a second connection of 127.0.0.3 is over its limit"
    );
    assert!(server.metric("turnpike_proxy_headers_total{outcome=\"accepted\"}") >= Some(6.0));
}

#[test]
fn tls_through_haproxy_reads_the_header_before_the_handshake() {
    let server = server("");
    let haproxy = Haproxy::start(&[(server.tls_addr(), "send-proxy")]);
    let mut stream = server
        .ca()
        .connect(haproxy.frontends[0], &[&rustls::version::TLS13])
        .expect("TLS handshake through haproxy");
    let local = stream.sock.local_addr().unwrap();
    assert_eq!(stream_binding(&mut stream), Some(local));
}

/// `GET /healthz` on `stream`, keeping it open; the status line, or
/// `None` if the connection was closed first.
fn healthz(stream: &mut TcpStream) -> Option<String> {
    let request = "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
    stream.write_all(request.as_bytes()).ok()?;
    let mut response = Vec::new();
    let mut buf = [0u8; 1024];
    while !response.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return None,
            Ok(n) => response.extend_from_slice(&buf[..n]),
        }
    }
    let text = String::from_utf8_lossy(&response);
    text.lines().next().map(str::to_owned)
}

#[test]
fn the_http_listener_limits_each_real_client_behind_haproxy() {
    let server = server("[signaling]\nmax_connections_per_source = 1\n");
    let haproxy = Haproxy::start(&[(server.http_addr(), "send-proxy-v2")]);
    let frontend = haproxy.frontends[0];
    let from = |host: u8| connect_from(Ipv4Addr::new(127, 0, 0, host), frontend).expect("connect through haproxy");
    let mut first = from(3);
    assert_eq!(healthz(&mut first).as_deref(), Some("HTTP/1.1 200 OK"));
    // haproxy itself is no source: another client still gets in.
    let mut other = from(4);
    assert_eq!(healthz(&mut other).as_deref(), Some("HTTP/1.1 200 OK"));
    // 127.0.0.3 holds its one connection (keep-alive).
    let refused_before = server
        .metric("turnpike_http_connections_refused_total{reason=\"source\"}")
        .unwrap_or(0.0);
    let mut second = from(3);
    assert_eq!(healthz(&mut second), None, "over the limit of 127.0.0.3");
    let refused = server
        .metric("turnpike_http_connections_refused_total{reason=\"source\"}")
        .unwrap_or(0.0);
    assert_eq!(refused, refused_before + 1.0);
    drop(first);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut again = from(3);
        if healthz(&mut again).is_some() {
            break;
        }
        assert!(Instant::now() < deadline, "127.0.0.3 never got its place back");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_header_from_an_untrusted_source_and_none_from_a_trusted_one_are_refused() {
    let server = server("");
    let v1 = b"PROXY TCP4 192.0.2.1 127.0.0.1 5000 3478\r\n".to_vec();
    let mut v2 = b"\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x0c".to_vec();
    v2.extend([192, 0, 2, 1, 127, 0, 0, 1, 0x13, 0x88, 0x0d, 0x96]);
    // Directly from 127.0.0.1, which is not trusted.
    for (header, to) in [(&v1, server.addr()), (&v2, server.addr()), (&v1, server.http_addr())] {
        let mut stream = tcp_connect(to);
        let mut bytes = header.clone();
        bytes.extend(binding_request(&transaction_id()));
        stream.write_all(&bytes).expect("send");
        assert!(closed_by_server(&mut stream), "an untrusted PROXY header to {to}");
    }
    // An honest client of the same address is served as ever.
    let mut honest = tcp_connect(server.addr());
    assert_eq!(stream_binding(&mut honest), Some(honest.local_addr().unwrap()));
    // From haproxy's address, without a header.
    for to in [server.addr(), server.http_addr()] {
        let mut stream = connect_from(PROXY_SOURCE, to).expect("connect from 127.0.0.2");
        let bytes = match to == server.addr() {
            true => binding_request(&transaction_id()),
            false => b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".to_vec(),
        };
        stream.write_all(&bytes).expect("send");
        assert!(
            closed_by_server(&mut stream),
            "a trusted source without a header to {to}"
        );
    }
    assert_eq!(
        server.metric("turnpike_proxy_headers_total{outcome=\"untrusted\"}"),
        Some(3.0)
    );
    assert_eq!(
        server.metric("turnpike_proxy_headers_total{outcome=\"invalid\"}"),
        Some(2.0)
    );
}

#[test]
fn a_reload_changes_the_trusted_sources_for_new_connections() {
    let server = server("");
    let haproxy = Haproxy::start(&[(server.addr(), "send-proxy-v2")]);
    let mut kept = tcp_connect(haproxy.frontends[0]);
    assert_eq!(stream_binding(&mut kept), Some(kept.local_addr().unwrap()));
    // haproxy is trusted no more: its headers are refused, while the
    // connection accepted before keeps its client.
    let config = std::fs::read_to_string(server.config_path()).expect("read config");
    let untrusting = config.replace(TRUST_HAPROXY, "proxy_protocol_from = [\"127.0.0.3/32\"]\n");
    std::fs::write(server.config_path(), untrusting).expect("write config");
    server.sighup();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !server.stderr_log().contains("configuration reloaded") {
        assert!(Instant::now() < deadline, "no reload");
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut refused = tcp_connect(haproxy.frontends[0]);
    refused.write_all(&binding_request(&transaction_id())).expect("send");
    assert!(closed_by_server(&mut refused), "haproxy's header is untrusted now");
    assert_eq!(
        server.metric("turnpike_proxy_headers_total{outcome=\"untrusted\"}"),
        Some(1.0)
    );
    assert_eq!(stream_binding(&mut kept), Some(kept.local_addr().unwrap()));
    let log = server.stderr_log();
    assert!(!log.contains("only after a restart"), "nothing needs a restart");
}

/// The HTTP listener's one deadline from accept (`src/http/mod.rs`,
/// docs/signaling.md "Limits"): everything before the first request is
/// served, the PROXY header, the TLS handshake and the request headers
/// together, within 10 s.
const HTTP_FIRST_REQUEST_DEADLINE: Duration = Duration::from_secs(10);

/// What the test allows past a documented deadline for the server to act
/// on it (scheduling on a loaded machine).
const SLACK: Duration = Duration::from_secs(3);

/// True once `stream` is closed by the server (end of stream, a reset, or
/// TLS's end without close_notify), false if `stream`'s read timeout
/// passes first.
fn closed_within_read_timeout(stream: &mut impl Read) -> bool {
    let mut buf = [0u8; 512];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                return false
            }
            Err(_) => return true,
        }
    }
}

#[test]
fn the_http_listener_holds_proxy_header_handshake_and_headers_to_one_deadline_from_accept() {
    let server = TestServer::start_setup(&ServerSetup {
        listen_keys: TRUST_HAPROXY,
        extra_toml: "[signaling]\ntls = true\n",
        ..ServerSetup::default()
    });
    // The slowest path a listed proxy's client may take: each step well
    // within 10 s of the one before, 8 s in all before the first header
    // line, and the headers never finished.
    let step = Duration::from_secs(3);
    let mut tcp = connect_from(PROXY_SOURCE, server.http_addr()).expect("connect from 127.0.0.2");
    let connected = Instant::now();
    std::thread::sleep(step);
    let port = server.http_addr().port();
    tcp.write_all(format!("PROXY TCP4 192.0.2.7 127.0.0.1 40000 {port}\r\n").as_bytes())
        .expect("send the PROXY header");
    std::thread::sleep(step);
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("server name");
    let config = server.ca().client_config(&[&rustls::version::TLS13], &[]);
    let conn = rustls::ClientConnection::new(config, name).expect("a TLS client");
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    while tls.conn.is_handshaking() {
        tls.conn
            .complete_io(&mut tls.sock)
            .expect("the TLS handshake, 6 s after accept");
    }
    std::thread::sleep(Duration::from_secs(2));
    tls.write_all(b"GET /healthz HTTP/1.1\r\n")
        .expect("the first header line, 8 s after accept");
    tls.flush().expect("flush");
    tls.sock
        .set_read_timeout(Some(HTTP_FIRST_REQUEST_DEADLINE + SLACK * 2))
        .expect("read timeout");
    let closed = closed_within_read_timeout(&mut tls);
    let held = connected.elapsed();
    assert!(closed, "the connection is still open {held:?} after accept");
    assert!(
        held <= HTTP_FIRST_REQUEST_DEADLINE + SLACK,
        "closed {held:?} after accept, not by its deadline of {HTTP_FIRST_REQUEST_DEADLINE:?} (+ {SLACK:?})"
    );
}
