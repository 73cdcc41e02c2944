//! A `turnpike` child whose only listener is one TLS port shared by TURN
//! and HTTPS (`signaling.share_tls_port`, `listen.http = "off"`, no UDP or
//! TCP listener), relaying on 127.0.0.1 with loopback peers allowed: what
//! a network that lets only HTTPS out gets. Killed on drop; its config and
//! log are printed if the test is failing.

use std::fs;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::Child;
use std::time::{Duration, Instant};

use super::{
    free_tcp_port, http_get_on, next_relay_ports, ready_or_retry, spawn_turnpike, stop_and_report, ScratchDir, TestPki,
};

pub struct SharedPortServer {
    child: Child,
    addr: SocketAddr,
    pki: TestPki,
    config_path: PathBuf,
    stderr_path: PathBuf,
    _dir: ScratchDir,
}

impl SharedPortServer {
    /// Starts one with `extra_toml` after its base config (no `[signaling]`
    /// table there: the base has one; `[auth]` and `[limits]` are fine),
    /// and waits until `GET /healthz` over the TLS port answers 200.
    pub fn start(extra_toml: &str) -> SharedPortServer {
        let relay_ports = next_relay_ports();
        for _attempt in 0..3 {
            let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, free_tcp_port()));
            let dir = ScratchDir::new("shared-port");
            let pki = TestPki::new();
            let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
            pki.write_leaf("turnpike shared port", &cert_path, &key_path);
            let config = format!(
                "[server]\nworkers = 2\n\n[listen]\nudp = []\ntcp = []\ntls = [\"{addr}\"]\nhttp = \"off\"\n\n\
                 [tls]\ncert = \"{}\"\nkey = \"{}\"\n\n\
                 [relay]\nipv4 = \"127.0.0.1\"\nipv6 = \"off\"\nports = \"{}-{}\"\n\n\
                 [peers]\nallow = [\"127.0.0.0/8\"]\n\n\
                 [signaling]\nshare_tls_port = true\n\n{extra_toml}",
                cert_path.display(),
                key_path.display(),
                relay_ports.start(),
                relay_ports.end()
            );
            let (child, config_path, stderr_path) = spawn_turnpike(&dir, &config, "turnpike=debug,info");
            let mut server = SharedPortServer {
                child,
                addr,
                pki,
                config_path,
                stderr_path,
                _dir: dir,
            };
            let ready = server.wait_ready(Duration::from_secs(5));
            let running = server.is_running();
            if ready_or_retry(ready, running, "answer /healthz on its shared TLS port", || {
                server.stderr_log()
            }) {
                return server;
            }
        }
        panic!("turnpike with a shared TLS port failed to start three times");
    }

    fn wait_ready(&mut self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline && self.is_running() {
            if let Ok(mut stream) = self.pki.connect(self.addr, &[&rustls::version::TLS13]) {
                if http_get_on(&mut stream, "/healthz").0 == 200 {
                    return true;
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    /// The shared TLS port.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The CA that signed its certificate.
    pub fn ca(&self) -> &TestPki {
        &self.pki
    }

    /// Status and body of `GET path` over the shared port (no ALPN).
    pub fn get(&self, path: &str) -> (u16, String) {
        let mut stream = self
            .pki
            .connect(self.addr, &[&rustls::version::TLS13])
            .expect("TLS handshake on the shared port");
        http_get_on(&mut stream, path)
    }

    pub fn stderr_log(&self) -> String {
        fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for SharedPortServer {
    fn drop(&mut self) {
        stop_and_report(&mut self.child, &self.config_path, &self.stderr_path);
    }
}

/// The count of connections of shared TLS ports that went `to` ("turn",
/// "http", "closed"), from the `/metrics` text `metrics`.
pub fn dispatched(metrics: &str, to: &str) -> u64 {
    let sample = format!("turnpike_shared_tls_port_connections_total{{to=\"{to}\"}}");
    super::sample_value(metrics, &sample).unwrap_or_else(|| panic!("no {sample} in /metrics:\n{metrics}")) as u64
}
