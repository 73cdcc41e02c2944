//! A real coturn (`turnserver`, Debian's `coturn` package) on loopback,
//! for tests that hold turnpike and coturn to the same client: UDP and
//! TCP on one port, TLS on another with a leaf of a [`TestPki`], one
//! long-term user, loopback peers allowed. Killed with the test.

use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::{
    die_with_test, free_tcp_port, free_udp_port, next_relay_ports, require_tool, stun_binding, ChildGuard, ScratchDir,
    TestPki, PASSWORD, USER,
};

pub struct CoturnServer {
    /// UDP and TCP.
    pub addr: SocketAddr,
    pub tls_addr: SocketAddr,
    /// Its TLS certificate (PEM).
    pub cert_pem: String,
    _child: ChildGuard,
    _dir: ScratchDir,
}

impl CoturnServer {
    /// Starts one with a certificate of `pki`, and waits until it answers
    /// a Binding request and takes TLS connections; panics after 10 s.
    pub fn start(pki: &TestPki) -> CoturnServer {
        let binary = require_tool("turnserver");
        let dir = ScratchDir::new("coturn");
        let (cert_pem, key_pem, _) = pki.leaf("coturn test server");
        let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        std::fs::write(&cert, &cert_pem).expect("write coturn's certificate");
        std::fs::write(&key, key_pem).expect("write coturn's key");
        let port = free_udp_port();
        let tls_port = free_tcp_port();
        let relays = next_relay_ports();
        let child = die_with_test(&mut Command::new(binary))
            .args(["-n", "--no-cli", "--listening-ip=127.0.0.1", "--relay-ip=127.0.0.1"])
            .args(["--allow-loopback-peers", "--lt-cred-mech", "--no-dtls", "--realm=test"])
            .arg(format!("--listening-port={port}"))
            .arg(format!("--tls-listening-port={tls_port}"))
            .arg(format!("--min-port={}", relays.start()))
            .arg(format!("--max-port={}", relays.end()))
            .arg(format!("--user={USER}:{PASSWORD}"))
            .arg(format!("--cert={}", cert.display()))
            .arg(format!("--pkey={}", key.display()))
            .arg(format!("--pidfile={}", dir.path().join("turnserver.pid").display()))
            .arg(format!("--userdb={}", dir.path().join("turndb").display()))
            .args(["--log-file=stdout", "--simple-log"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn turnserver");
        let server = CoturnServer {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            tls_addr: SocketAddr::from(([127, 0, 0, 1], tls_port)),
            cert_pem,
            _child: ChildGuard(child),
            _dir: dir,
        };
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind a probe socket");
        let deadline = Instant::now() + Duration::from_secs(10);
        while stun_binding(&socket, server.addr, Duration::from_millis(100)).is_none() {
            assert!(
                Instant::now() < deadline,
                "coturn did not answer a Binding request within 10 s"
            );
        }
        while TcpStream::connect_timeout(&server.tls_addr, Duration::from_millis(100)).is_err() {
            assert!(
                Instant::now() < deadline,
                "coturn did not take TLS connections within 10 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        server
    }
}
