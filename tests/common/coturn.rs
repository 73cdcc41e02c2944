//! coturn's `turnserver` (Debian's `coturn` package) as a second TURN
//! server on loopback, for clients of ours that must work against other
//! servers too (`turnpike selftest`, the `/test` page): shared-secret
//! credentials or the tests' long-term user, UDP and TCP on one port, TLS
//! on another, relays on 127.0.0.1, loopback peers allowed.

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use super::{
    die_with_test, free_tcp_port, free_udp_port, next_relay_ports, require_tool, wait_answering, ChildGuard,
    ScratchDir, TestPki, PASSWORD, USER,
};

/// The realm the coturn server names.
pub const COTURN_REALM: &str = "coturn-test";

/// How clients authenticate to it.
pub enum CoturnAuth<'a> {
    /// Short-lived credentials minted from this secret (`use-auth-secret`).
    Secret(&'a str),
    /// The tests' long-term user, [`USER`] with [`PASSWORD`].
    TestUser,
}

/// A running `turnserver`, killed on drop (its log printed if the test is
/// failing).
pub struct CoturnServer {
    child: ChildGuard,
    addr: SocketAddr,
    tls_addr: SocketAddr,
    pki: TestPki,
    cert_pem: String,
    log: std::path::PathBuf,
    _dir: ScratchDir,
}

impl CoturnServer {
    /// Starts `turnserver` verifying short-lived credentials of `secret`
    /// (`use-auth-secret`) and waits until it answers Binding over UDP and
    /// accepts TLS connections.
    pub fn start(secret: &str) -> CoturnServer {
        CoturnServer::start_with(CoturnAuth::Secret(secret))
    }

    /// Starts `turnserver` taking `auth`'s credentials, as [`Self::start`].
    pub fn start_with(auth: CoturnAuth<'_>) -> CoturnServer {
        let credentials = match auth {
            CoturnAuth::Secret(secret) => {
                vec!["--use-auth-secret".to_owned(), format!("--static-auth-secret={secret}")]
            }
            CoturnAuth::TestUser => vec!["--lt-cred-mech".to_owned(), format!("--user={USER}:{PASSWORD}")],
        };
        let tool = require_tool("turnserver");
        for _attempt in 0..3 {
            let dir = ScratchDir::new("coturn");
            let pki = TestPki::new();
            let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
            pki.write_leaf("coturn test server", &cert, &key);
            let (port, tls_port) = (free_udp_port(), free_tcp_port());
            let relays = next_relay_ports();
            let log = dir.path().join("turnserver.log");
            let stdout = std::fs::File::create(&log).expect("create the coturn log");
            let stderr = stdout.try_clone().expect("clone the log handle");
            let child = die_with_test(&mut Command::new(&tool))
                .args(["-n", "--no-cli", "--no-dtls", "--simple-log", "--log-file=stdout"])
                .args([
                    "--listening-ip=127.0.0.1",
                    "--relay-ip=127.0.0.1",
                    "--allow-loopback-peers",
                ])
                .arg(format!("--listening-port={port}"))
                .arg(format!("--tls-listening-port={tls_port}"))
                .arg(format!("--min-port={}", relays.start()))
                .arg(format!("--max-port={}", relays.end()))
                .arg(format!("--realm={COTURN_REALM}"))
                .args(&credentials)
                .arg(format!("--cert={}", cert.display()))
                .arg(format!("--pkey={}", key.display()))
                .arg(format!("--db={}", dir.path().join("turndb").display()))
                .arg(format!("--pidfile={}", dir.path().join("turnserver.pid").display()))
                .stdin(Stdio::null())
                .stdout(stdout)
                .stderr(stderr)
                .spawn()
                .expect("spawn turnserver");
            let cert_pem = std::fs::read_to_string(&cert).expect("read coturn's certificate");
            let mut server = CoturnServer {
                child: ChildGuard(child),
                addr: SocketAddr::from(([127, 0, 0, 1], port)),
                tls_addr: SocketAddr::from(([127, 0, 0, 1], tls_port)),
                pki,
                cert_pem,
                log,
                _dir: dir,
            };
            if server.wait_ready(Duration::from_secs(10)) {
                return server;
            }
            eprintln!("turnserver did not get ready, retrying; log:\n{}", server.log_text());
        }
        panic!("turnserver failed to start three times");
    }

    /// Binding over UDP answered, then a TCP connection to the TLS port
    /// accepted; false if the child exits or `limit` passes first.
    fn wait_ready(&mut self, limit: Duration) -> bool {
        let (udp, tls) = (self.addr, self.tls_addr);
        wait_answering(udp, tls, limit, || matches!(self.child.0.try_wait(), Ok(None)))
    }

    /// UDP and TCP listen on this address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// TLS listens here.
    pub fn tls_addr(&self) -> SocketAddr {
        self.tls_addr
    }

    /// Its TLS certificate (PEM).
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA that signed its certificate.
    pub fn ca(&self) -> &TestPki {
        &self.pki
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for CoturnServer {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "---- turnserver log ----\n{}\n---- end of turnserver log ----",
                self.log_text()
            );
        }
    }
}
