//! The server builder: a `turnpike` child on loopback with a config
//! built from the test base and what a test changes ([`ServerSetup`]).

use std::fs;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::{
    die_with_test, free_tcp_port, free_udp_port, http_exchange, next_relay_ports, stun_binding, turnpike_bin,
    ScratchDir, TestPki,
};

/// The `[peers]` section of [`TestServer::start`]: loopback peers allowed,
/// so that tests can relay to peers on 127.0.0.1 and ::1.
pub const LOOPBACK_PEERS_TOML: &str = "[peers]\nallow = [\"127.0.0.0/8\", \"::1/128\"]\n";

/// How a [`TestServer`] differs from the loopback test base.
pub struct ServerSetup<'a> {
    /// Keys added to `[server]` (`workers` among them replaces the base's 2).
    pub server_keys: &'a str,
    /// Keys added to `[listen]` (not the listener addresses, which are
    /// picked here).
    pub listen_keys: &'a str,
    /// The whole `[peers]` section; by default [`LOOPBACK_PEERS_TOML`].
    pub peers_toml: &'a str,
    /// TOML after the base, typically `[auth]` or `[limits]` settings.
    pub extra_toml: &'a str,
    /// The relay port range; by default a slice of 300 ports of its own.
    pub relay_ports: Option<RangeInclusive<u16>>,
    /// `RUST_LOG` of the server; by default everything of turnpike, down
    /// to `trace`.
    pub log_filter: &'a str,
    /// The IPv4 address of the UDP and TCP listeners; by default
    /// 127.0.0.1 (another one exists only in a namespace of
    /// [`enter_private_network`]).
    pub listen_ip: Ipv4Addr,
    /// `relay.ipv4`; by default 127.0.0.1 (another one, like
    /// `listen_ip`, only in a namespace of the test's own).
    pub relay_ip: Ipv4Addr,
    /// The IPv6 address of the UDP and TCP listeners
    /// ([`TestServer::addr_v6`]) and `relay.ipv6`; by default ::1
    /// (another one, like `listen_ip`, only in a namespace of the test's
    /// own, where it must be usable before the server binds it: no
    /// duplicate address detection pending).
    pub ipv6: Ipv6Addr,
    /// The address of the HTTP listener (signaling, `/metrics`); by
    /// default 127.0.0.1 (another one, like `listen_ip`, only in a
    /// namespace of the test's own, for clients in another namespace).
    pub http_ip: Ipv4Addr,
    /// Keys added to `[relay]` (`fast_path`, …).
    pub relay_keys: &'a str,
    /// The whole `[tls]` section (e.g. `[tls.acme]`); by default the
    /// certificate and key of [`TestServer::ca`].
    pub tls_toml: Option<&'a str>,
    /// The ports of the TLS and HTTP listeners, when the test has to know
    /// them before the server starts (an ACME CA validates on them); by
    /// default probed free ports.
    pub stream_ports: Option<(u16, u16)>,
}

impl Default for ServerSetup<'_> {
    fn default() -> Self {
        ServerSetup {
            server_keys: "",
            listen_keys: "",
            peers_toml: LOOPBACK_PEERS_TOML,
            extra_toml: "",
            relay_ports: None,
            log_filter: "turnpike=trace,debug",
            listen_ip: Ipv4Addr::LOCALHOST,
            relay_ip: Ipv4Addr::LOCALHOST,
            ipv6: Ipv6Addr::LOCALHOST,
            http_ip: Ipv4Addr::LOCALHOST,
            relay_keys: "",
            tls_toml: None,
            stream_ports: None,
        }
    }
}

/// A `turnpike` child process serving STUN/TURN on 127.0.0.1, relaying on
/// 127.0.0.1 and (unless started with [`TestServer::start_with_peers`])
/// allowing loopback peers. Killed on drop; if the test is
/// failing, its config and log are printed.
pub struct TestServer {
    child: Mutex<Child>,
    addr: SocketAddr,
    addr_v6: SocketAddr,
    tls_addr: SocketAddr,
    http_addr: SocketAddr,
    pki: TestPki,
    cert_path: PathBuf,
    key_path: PathBuf,
    config_path: PathBuf,
    stderr_path: PathBuf,
    relay_ports: RangeInclusive<u16>,
    /// Holds the config and the log; dropped after the child is killed.
    _dir: ScratchDir,
}

impl TestServer {
    /// Starts a server whose config is the loopback test base followed by
    /// `extra_toml` (typically `[auth]` settings), and waits until it answers
    /// a STUN Binding request. Panics if it does not start within a few
    /// seconds.
    pub fn start(extra_toml: &str) -> TestServer {
        TestServer::start_with("", extra_toml)
    }

    /// Like [`TestServer::start`], with `server_keys` added to `[server]`.
    pub fn start_with(server_keys: &str, extra_toml: &str) -> TestServer {
        TestServer::start_setup(&ServerSetup {
            server_keys,
            extra_toml,
            ..ServerSetup::default()
        })
    }

    /// Like [`TestServer::start_with`], with `peers_toml` as the whole
    /// `[peers]` section instead of [`LOOPBACK_PEERS_TOML`]; `""` keeps the
    /// built-in peer policy (loopback refused).
    pub fn start_with_peers(server_keys: &str, peers_toml: &str, extra_toml: &str) -> TestServer {
        TestServer::start_setup(&ServerSetup {
            server_keys,
            peers_toml,
            extra_toml,
            ..ServerSetup::default()
        })
    }

    /// Starts a server as [`TestServer::start`] does, changed as `setup`
    /// says.
    pub fn start_setup(setup: &ServerSetup<'_>) -> TestServer {
        let ServerSetup {
            server_keys,
            listen_keys,
            peers_toml,
            extra_toml,
            ref relay_ports,
            log_filter,
            listen_ip,
            relay_ip,
            ipv6,
            http_ip,
            relay_keys,
            tls_toml,
            stream_ports,
        } = *setup;
        let relay_ports = relay_ports.clone().unwrap_or_else(next_relay_ports);
        // The listen port is picked by probing, so another socket can take it
        // in between; a server that exits at start is retried on a new port.
        // Two shards unless `server_keys` says how many.
        let workers = if server_keys.contains("workers") {
            ""
        } else {
            "workers = 2\n"
        };
        for _attempt in 0..3 {
            let port = free_udp_port();
            let (tls_port, http_port) = stream_ports.unwrap_or_else(|| (free_tcp_port(), free_tcp_port()));
            let dir = ScratchDir::new("server");
            let pki = TestPki::new();
            let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
            pki.write_leaf("turnpike test server", &cert_path, &key_path);
            let tls_toml = tls_toml.map_or_else(
                || {
                    format!(
                        "[tls]\ncert = \"{}\"\nkey = \"{}\"\n",
                        cert_path.display(),
                        key_path.display()
                    )
                },
                str::to_owned,
            );
            let config = format!(
                "[server]\n{workers}{server_keys}\n\n[listen]\nudp = [\"{listen_ip}:{port}\", \"[{ipv6}]:{port}\"]\n\
                 tcp = [\"{listen_ip}:{port}\", \"[{ipv6}]:{port}\"]\ntls = [\"127.0.0.1:{tls_port}\"]\nhttp = \"{http_ip}:{http_port}\"\n{listen_keys}\n\n\
                 {tls_toml}\n\
                 [relay]\nipv4 = \"{relay_ip}\"\nipv6 = \"{ipv6}\"\nports = \"{}-{}\"\n{relay_keys}\n\n\
                 {peers_toml}\n\n{extra_toml}",
                relay_ports.start(),
                relay_ports.end()
            );
            let (child, config_path, stderr_path) = spawn_turnpike(&dir, &config, log_filter);
            let server = TestServer {
                child: Mutex::new(child),
                addr: SocketAddr::from((listen_ip, port)),
                addr_v6: SocketAddr::from((ipv6, port)),
                tls_addr: SocketAddr::from((Ipv4Addr::LOCALHOST, tls_port)),
                http_addr: SocketAddr::from((http_ip, http_port)),
                pki,
                cert_path,
                key_path,
                config_path,
                stderr_path,
                relay_ports: relay_ports.clone(),
                _dir: dir,
            };
            let ready = server.wait_ready(Duration::from_secs(5));
            if ready_or_retry(ready, server.is_running(), "answer a Binding request", || {
                server.stderr_log()
            }) {
                return server;
            }
        }
        panic!("turnpike failed to start three times");
    }

    /// Waits until it answers Binding and its HTTP endpoint accepts.
    fn wait_ready(&self, limit: Duration) -> bool {
        wait_answering(self.addr, self.http_addr, limit, || self.is_running())
    }

    /// Its TLS certificate (PEM), a leaf of [`TestServer::ca`].
    pub fn cert_pem(&self) -> String {
        fs::read_to_string(&self.cert_path).expect("read the server's certificate")
    }

    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The IPv6 listener ([`ServerSetup::ipv6`], by default loopback),
    /// on the same port.
    pub fn addr_v6(&self) -> SocketAddr {
        self.addr_v6
    }

    /// The address of its HTTP endpoint (signaling, demo page).
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// The address of its TLS listener.
    pub fn tls_addr(&self) -> SocketAddr {
        self.tls_addr
    }

    /// The CA that signed its TLS certificate, for clients to trust.
    pub fn ca(&self) -> &TestPki {
        &self.pki
    }

    /// Replaces the certificate files with `cert_pem`/`key_pem` (for
    /// reload tests), as a renewal tool would.
    pub fn replace_certificate(&self, cert_pem: &str, key_pem: &str) {
        fs::write(&self.cert_path, cert_pem).expect("write cert");
        fs::write(&self.key_path, key_pem).expect("write key");
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.lock().unwrap_or_else(|e| e.into_inner()).id()
    }

    /// File descriptors the server process holds now (`/proc/<pid>/fd`).
    pub fn fd_count(&self) -> usize {
        fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .expect("read the server's /proc/<pid>/fd")
            .count()
    }

    /// Sends SIGHUP to the server process.
    pub fn sighup(&self) {
        self.signal(libc::SIGHUP);
    }

    /// Sends `signal` to the server process.
    pub fn signal(&self, signal: libc::c_int) {
        let pid = self.pid();
        // SAFETY: kill(2) with a pid we spawned and still hold.
        let rc = unsafe { libc::kill(pid as libc::pid_t, signal) };
        assert_eq!(rc, 0, "kill -{signal} {pid}");
    }

    /// Waits up to `limit` for the process to exit; its status, or `None`
    /// if it is still running.
    pub fn wait_exit(&self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            let mut child = self.child.lock().unwrap_or_else(|e| e.into_inner());
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            drop(child);
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Status and body of `GET path` on the HTTP endpoint.
    pub fn http_get(&self, path: &str) -> (u16, String) {
        http_exchange(
            self.http_addr,
            &format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"),
        )
    }

    /// The config file the server was started with.
    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// The relay port range in its config.
    pub fn relay_ports(&self) -> RangeInclusive<u16> {
        self.relay_ports.clone()
    }

    /// Everything the server logged so far.
    pub fn stderr_log(&self) -> String {
        fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// The server's resident set size in KiB (`VmRSS` of
    /// /proc/<pid>/status).
    pub fn rss_kib(&self) -> u64 {
        let pid = self.child.lock().unwrap_or_else(|e| e.into_inner()).id();
        let status = fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc/<pid>/status");
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("no VmRSS in /proc/{pid}/status"))
    }

    /// True while the child process has not exited.
    pub fn is_running(&self) -> bool {
        let mut child = self.child.lock().unwrap_or_else(|e| e.into_inner());
        matches!(child.try_wait(), Ok(None))
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        let child = self.child.get_mut().unwrap_or_else(|e| e.into_inner());
        stop_and_report(child, &self.config_path, &self.stderr_path);
    }
}

/// Sends Binding requests to `stun` until one is answered, then connects
/// to `tcp` until that works; false if `running` turns false or `limit`
/// passes first.
pub fn wait_answering(stun: SocketAddr, tcp: SocketAddr, limit: Duration, mut running: impl FnMut() -> bool) -> bool {
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind probe socket");
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline && running() {
        if stun_binding(&socket, stun, Duration::from_millis(100)).is_some() {
            break;
        }
    }
    while Instant::now() < deadline && running() {
        if std::net::TcpStream::connect_timeout(&tcp, Duration::from_millis(100)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// Kills a server started by [`spawn_turnpike`] and, if the test is
/// failing, prints its config and log.
pub fn stop_and_report(child: &mut Child, config_path: &Path, stderr_path: &Path) {
    let _ = child.kill();
    let _ = child.wait();
    if std::thread::panicking() {
        eprintln!(
            "---- turnpike config ({}) ----\n{}\n---- turnpike log ----\n{}\n---- end of turnpike log ----",
            config_path.display(),
            fs::read_to_string(config_path).unwrap_or_default(),
            fs::read_to_string(stderr_path).unwrap_or_default()
        );
    }
}

/// Writes `config` into `dir` and starts `turnpike` on it with
/// `RUST_LOG=log_filter` and its stderr in a file of `dir`; returns the
/// child, the config's path and the log's.
pub fn spawn_turnpike(dir: &ScratchDir, config: &str, log_filter: &str) -> (Child, PathBuf, PathBuf) {
    let config_path = dir.write_config(config);
    let stderr_path = dir.path().join("stderr.log");
    let child = turnpike_command(&config_path, &stderr_path)
        .env("RUST_LOG", log_filter)
        .env("NO_COLOR", "1")
        .spawn()
        .expect("spawn turnpike");
    (child, config_path, stderr_path)
}

/// `turnpike --config <config>`, killed if the test dies, with no stdin,
/// stdout thrown away and stderr written to a new file at `stderr_path`;
/// the caller adds the environment and spawns it.
pub fn turnpike_command(config: &Path, stderr_path: &Path) -> Command {
    let stderr = fs::File::create(stderr_path).expect("create log file");
    let mut command = Command::new(turnpike_bin());
    die_with_test(&mut command)
        .arg("--config")
        .arg(config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr);
    command
}

/// After one attempt to start a server on probed ports: true if it is
/// `ready`; false if it exited, to be tried again on fresh ports (another
/// socket may have taken one); a panic with its `log` if it runs but did
/// not get ready (`waited_for`) in time.
pub fn ready_or_retry(ready: bool, running: bool, waited_for: &str, log: impl FnOnce() -> String) -> bool {
    if ready {
        return true;
    }
    let log = log();
    assert!(!running, "turnpike did not {waited_for} within 5 s; log:\n{log}");
    eprintln!("turnpike exited at start (a port taken?), retrying; log:\n{log}");
    false
}
