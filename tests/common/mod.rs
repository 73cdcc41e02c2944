//! Shared helpers of the black-box tests: a `turnpike` child process on
//! loopback, commands run with a time limit, a UDP echo peer, hand-made STUN
//! Binding requests, short-lived credentials computed independently of the
//! server, and a `turn` crate client.
//!
//! Everything stays on 127.0.0.1, and every wait is bounded in time and in
//! count.

#![allow(dead_code)]
// each test binary uses a different subset
// The clock rule of clippy.toml is for the sans-IO core; black-box tests
// bound their waits with the real clock.
#![allow(clippy::disallowed_methods)]

pub mod call_summary;
pub mod shared_port;

use std::fs;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine;

pub mod redis_server;

/// The long-term user of [`LONG_TERM_USER_TOML`].
pub const USER: &str = "user";
/// The password of [`USER`].
pub const PASSWORD: &str = "pass";
/// The realm the server uses by default.
pub const REALM: &str = "turnpike";
/// Config fragment adding the long-term user [`USER`] / [`PASSWORD`].
pub const LONG_TERM_USER_TOML: &str = "[[auth.users]]\nname = \"user\"\npassword = \"pass\"\n";

/// The `[peers]` section of [`TestServer::start`]: loopback peers allowed,
/// so that tests can relay to peers on 127.0.0.1 and ::1.
pub const LOOPBACK_PEERS_TOML: &str = "[peers]\nallow = [\"127.0.0.0/8\", \"::1/128\"]\n";

/// STUN magic cookie (RFC 8489 §5).
pub const MAGIC_COOKIE: u32 = 0x2112_A442;

/// First relay port handed out to test servers, below the ephemeral range.
const RELAY_PORT_BASE: u16 = 20_000;
/// Relay ports per test server.
const RELAY_PORTS_PER_SERVER: u16 = 300;
/// Number of disjoint relay port slices in 20000-29899.
const RELAY_SLICES: u16 = 33;

static NEXT_SLICE: AtomicU16 = AtomicU16::new(0);
static NEXT_DIR: AtomicUsize = AtomicUsize::new(0);

/// A distinct relay port range for each server of this process; the pid
/// spreads test binaries that might run side by side.
pub fn next_relay_ports() -> RangeInclusive<u16> {
    let offset = (std::process::id() % u32::from(RELAY_SLICES)) as u16;
    let slice = (offset + NEXT_SLICE.fetch_add(1, Ordering::Relaxed)) % RELAY_SLICES;
    let low = RELAY_PORT_BASE + slice * RELAY_PORTS_PER_SERVER;
    low..=low + RELAY_PORTS_PER_SERVER - 1
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_tcp_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("probe a free TCP port")
        .port()
}

/// A throwaway certificate authority for a test server's TLS listener.
pub struct TestPki {
    ca: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
}

impl TestPki {
    pub fn new() -> TestPki {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "turnpike test CA");
        let key = rcgen::KeyPair::generate().expect("CA key");
        TestPki {
            ca: rcgen::CertifiedIssuer::self_signed(params, key).expect("CA certificate"),
        }
    }

    /// The CA certificate, for a client's trust store.
    pub fn ca_der(&self) -> rustls::pki_types::CertificateDer<'static> {
        self.ca.der().clone()
    }

    /// A new leaf for `localhost` and 127.0.0.1 signed by this CA, as
    /// (certificate PEM, key PEM, certificate DER).
    pub fn leaf(&self, common_name: &str) -> (String, String, Vec<u8>) {
        let mut params =
            rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).expect("leaf params");
        params.distinguished_name.push(rcgen::DnType::CommonName, common_name);
        let key = rcgen::KeyPair::generate().expect("leaf key");
        let cert = params.signed_by(&key, &self.ca).expect("leaf certificate");
        (cert.pem(), key.serialize_pem(), cert.der().to_vec())
    }

    fn write_leaf(&self, common_name: &str, cert_path: &Path, key_path: &Path) {
        let (cert, key, _) = self.leaf(common_name);
        fs::write(cert_path, cert).expect("write cert");
        fs::write(key_path, key).expect("write key");
    }

    /// A client config trusting only this CA, limited to `versions`,
    /// offering the ALPN protocols `alpn` (none if empty).
    pub fn client_config(
        &self,
        versions: &[&'static rustls::SupportedProtocolVersion],
        alpn: &[&[u8]],
    ) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca_der()).expect("trust the test CA");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .expect("protocol versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Arc::new(config)
    }

    /// A TLS client connection to `addr` trusting only this CA, limited to
    /// `versions`; blocking, so the stream helpers below work on it.
    pub fn connect(
        &self,
        addr: SocketAddr,
        versions: &[&'static rustls::SupportedProtocolVersion],
    ) -> std::io::Result<rustls::StreamOwned<rustls::ClientConnection, std::net::TcpStream>> {
        self.connect_alpn(addr, versions, &[])
    }

    /// [`TestPki::connect`], offering the ALPN protocols `alpn`.
    pub fn connect_alpn(
        &self,
        addr: SocketAddr,
        versions: &[&'static rustls::SupportedProtocolVersion],
        alpn: &[&[u8]],
    ) -> std::io::Result<rustls::StreamOwned<rustls::ClientConnection, std::net::TcpStream>> {
        let config = self.client_config(versions, alpn);
        let name = rustls::pki_types::ServerName::try_from("localhost").expect("server name");
        let conn = rustls::ClientConnection::new(config, name).map_err(std::io::Error::other)?;
        let tcp = std::net::TcpStream::connect(addr)?;
        tcp.set_read_timeout(Some(Duration::from_secs(10)))?;
        let mut stream = rustls::StreamOwned::new(conn, tcp);
        // Drive the handshake now so that failures show here.
        while stream.conn.is_handshaking() {
            stream.conn.complete_io(&mut stream.sock)?;
        }
        Ok(stream)
    }
}

/// A TCP connection to `addr`, with Nagle off and a 10 s read timeout
/// so that no read can hang a test.
pub fn tcp_connect(addr: SocketAddr) -> std::net::TcpStream {
    let stream = std::net::TcpStream::connect(addr).expect("connect over TCP");
    stream.set_nodelay(true).expect("nodelay");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("read timeout");
    stream
}

/// True once the server has closed the stream (EOF or reset), read within
/// the stream's read timeout.
pub fn closed_by_server(stream: &mut impl Read) -> bool {
    let mut byte = [0u8; 1];
    match stream.read(&mut byte) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => matches!(
            e.kind(),
            std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::ConnectionAborted
        ),
    }
}

/// Reads one STUN message framed on a stream (20-byte header, then the
/// length it states).
pub fn read_stun(stream: &mut impl Read) -> Vec<u8> {
    let mut msg = vec![0u8; 20];
    stream.read_exact(&mut msg).expect("read a STUN header");
    let len = usize::from(u16::from_be_bytes([msg[2], msg[3]]));
    msg.resize(20 + len, 0);
    stream.read_exact(&mut msg[20..]).expect("read a STUN body");
    msg
}

/// Sends a Binding request on a stream and returns the mapped address of
/// the answer.
pub fn stream_binding(stream: &mut (impl Read + Write)) -> Option<SocketAddr> {
    let txid = transaction_id();
    stream.write_all(&binding_request(&txid)).expect("send Binding");
    stream.flush().expect("flush");
    parse_binding_success(&read_stun(stream), &txid)
}

/// Sends a request of `method` and, if the answer is a 401 challenge,
/// signs it as [`USER`] with the challenge's REALM and NONCE and sends it
/// again; returns the final answer.
pub fn authenticated_request(
    stream: &mut (impl Read + Write),
    method: u16,
    build: impl Fn(&mut turnpike::proto::stun::MessageWriter<'_>),
) -> Vec<u8> {
    authenticated_request_as(stream, USER, PASSWORD, method, build)
}

/// [`authenticated_request`] signed as `user` with `password`.
pub fn authenticated_request_as(
    stream: &mut (impl Read + Write),
    user: &str,
    password: &str,
    method: u16,
    build: impl Fn(&mut turnpike::proto::stun::MessageWriter<'_>),
) -> Vec<u8> {
    use turnpike::proto::testkit::{client, Cred};
    let answer = client::authenticated(
        method,
        build,
        transaction_id,
        |realm| Cred::new(user, realm, password),
        |request| {
            stream.write_all(request)?;
            stream.flush()?;
            Ok::<_, std::io::Error>(read_stun(stream))
        },
    );
    answer.expect("send request")
}

/// The code of a STUN answer: 200 for success, else its ERROR-CODE.
pub fn code_of(answer: &[u8]) -> u16 {
    use turnpike::proto::stun::{attr, Class, Message};
    let msg = Message::parse(answer).expect("a STUN answer");
    match msg.class() {
        Class::Success => 200,
        _ => msg
            .get(attr::ERROR_CODE)
            .map(|v| u16::from(v[2] & 7) * 100 + u16::from(v[3]))
            .expect("ERROR-CODE"),
    }
}

/// Sends `request` (a whole HTTP/1.1 request that asks for `Connection:
/// close`) to `addr` and returns the status and body of the answer, read
/// to its end within 5 s.
pub fn http_exchange(addr: SocketAddr, request: &str) -> (u16, String) {
    let mut stream = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect to HTTP");
    stream.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    stream.write_all(request.as_bytes()).expect("send");
    read_http_response(&mut stream)
}

/// Status and body of what arrives on `stream` until the server closes it
/// (an error at the end, such as TLS without close_notify, keeps what came
/// before).
fn read_http_response(stream: &mut impl Read) -> (u16, String) {
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    let response = String::from_utf8_lossy(&response).into_owned();
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP status in {response:?}"));
    let body = response.split_once("\r\n\r\n").map_or("", |(_, b)| b).to_owned();
    (status, body)
}

/// An authenticated request of `method`, its attributes written by
/// `build`, over UDP from `socket` to `server` as `user`: the 401 dance,
/// each answer awaited within the socket's read timeout.
pub fn udp_request_as(
    socket: &UdpSocket,
    server: SocketAddr,
    (user, password): (&str, &str),
    method: u16,
    build: impl Fn(&mut turnpike::proto::stun::MessageWriter<'_>),
) -> Vec<u8> {
    use turnpike::proto::testkit::{client, Cred};
    client::authenticated(
        method,
        build,
        transaction_id,
        |realm| Cred::new(user, realm, password),
        |request| {
            socket.send_to(request, server)?;
            let mut buf = [0u8; 1500];
            let (n, _) = socket.recv_from(&mut buf)?;
            Ok::<_, std::io::Error>(buf[..n].to_vec())
        },
    )
    .expect("an answer over UDP")
}

/// A UDP port on 127.0.0.1 that was free a moment ago.
pub fn free_udp_port() -> u16 {
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    socket.local_addr().expect("local_addr").port()
}

/// A fresh directory under the system temp dir, removed on drop (a failing
/// test prints what it needs from it first).
pub struct ScratchDir(PathBuf);

impl ScratchDir {
    pub fn new(label: &str) -> ScratchDir {
        let dir = std::env::temp_dir().join(format!(
            "turnpike-test-{}-{}-{label}",
            std::process::id(),
            NEXT_DIR.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("create scratch dir");
        ScratchDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

/// Makes the child started by `cmd` be killed if the thread that starts it
/// (the test) goes away without dropping its guard, e.g. when the test
/// binary itself is killed by an outer timeout.
pub fn die_with_test(cmd: &mut Command) -> &mut Command {
    use std::os::unix::process::CommandExt;
    // SAFETY: prctl is async-signal-safe and touches no memory of ours.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        })
    }
}

/// The path of the `turnpike` binary cargo built for these tests.
pub fn turnpike_bin() -> &'static str {
    env!("CARGO_BIN_EXE_turnpike")
}

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
            let tls_port = free_tcp_port();
            let http_port = free_tcp_port();
            let dir = ScratchDir::new("server");
            let pki = TestPki::new();
            let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
            pki.write_leaf("turnpike test server", &cert_path, &key_path);
            let config = format!(
                "[server]\n{workers}{server_keys}\n\n[listen]\nudp = [\"{listen_ip}:{port}\", \"[::1]:{port}\"]\n\
                 tcp = [\"{listen_ip}:{port}\", \"[::1]:{port}\"]\ntls = [\"127.0.0.1:{tls_port}\"]\nhttp = \"127.0.0.1:{http_port}\"\n{listen_keys}\n\n\
                 [tls]\ncert = \"{}\"\nkey = \"{}\"\n\n\
                 [relay]\nipv4 = \"127.0.0.1\"\nipv6 = \"::1\"\nports = \"{}-{}\"\n\n\
                 {peers_toml}\n\n{extra_toml}",
                cert_path.display(),
                key_path.display(),
                relay_ports.start(),
                relay_ports.end()
            );
            let (child, config_path, stderr_path) = spawn_turnpike(&dir, &config, log_filter);
            let server = TestServer {
                child: Mutex::new(child),
                addr: SocketAddr::from((listen_ip, port)),
                tls_addr: SocketAddr::from((Ipv4Addr::LOCALHOST, tls_port)),
                http_addr: SocketAddr::from((Ipv4Addr::LOCALHOST, http_port)),
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

    /// Sends Binding requests until one is answered, then connects to the
    /// HTTP endpoint until that works; false if the child exits or `limit`
    /// passes first.
    fn wait_ready(&self, limit: Duration) -> bool {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind probe socket");
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline && self.is_running() {
            if stun_binding(&socket, self.addr, Duration::from_millis(100)).is_some() {
                break;
            }
        }
        while Instant::now() < deadline && self.is_running() {
            if std::net::TcpStream::connect_timeout(&self.http_addr, Duration::from_millis(100)).is_ok() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The same listener port on IPv6 loopback.
    pub fn addr_v6(&self) -> SocketAddr {
        SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, self.addr.port()))
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
    let config_path = dir.path().join("turnpike.toml");
    let stderr_path = dir.path().join("stderr.log");
    fs::write(&config_path, config).expect("write config");
    let stderr = fs::File::create(&stderr_path).expect("create log file");
    let child = die_with_test(&mut Command::new(turnpike_bin()))
        .arg("--config")
        .arg(&config_path)
        .env("RUST_LOG", log_filter)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .expect("spawn turnpike");
    (child, config_path, stderr_path)
}

/// After one attempt to start a server on probed ports: true if it is
/// `ready`; false if it exited, to be tried again on fresh ports (another
/// socket may have taken one); a panic with its `log` if it runs but did
/// not get ready (`waited_for`) in time.
fn ready_or_retry(ready: bool, running: bool, waited_for: &str, log: impl FnOnce() -> String) -> bool {
    if ready {
        return true;
    }
    let log = log();
    assert!(!running, "turnpike did not {waited_for} within 5 s; log:\n{log}");
    eprintln!("turnpike exited at start (a port taken?), retrying; log:\n{log}");
    false
}

/// Status and body of `GET path` sent on `stream` with `Connection:
/// close`.
pub fn http_get_on(stream: &mut (impl Read + Write), path: &str) -> (u16, String) {
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .expect("send");
    stream.flush().expect("flush");
    read_http_response(stream)
}

/// A child process killed when dropped (e.g. `turnutils_peer`).
pub struct ChildGuard(pub Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The path of an external tool, or a panic saying how to install it.
pub fn require_tool(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin"), PathBuf::from("/usr/local/bin")])
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| {
            panic!(
                "`{name}` is not installed: `./scripts/test.sh` installs the Debian packages the \
                 tests drive (`coturn` for the turnutils_* tools, `haproxy`, `redis-server`, …)"
            )
        })
}

/// What a command run by [`run_with_timeout`] did.
#[derive(Debug)]
pub struct CmdOutput {
    /// Exit status; `None` if it was killed at the time limit.
    pub status: Option<ExitStatus>,
    pub stdout: String,
    pub stderr: String,
}

impl CmdOutput {
    /// True if the command ran to the end and exited with status 0.
    pub fn success(&self) -> bool {
        self.status.is_some_and(|s| s.success())
    }

    /// Stdout followed by stderr.
    pub fn combined(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

fn read_all(mut pipe: impl Read + Send + 'static) -> JoinHandle<String> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

/// Runs `cmd` with stdin closed, captures its output, and kills it if it
/// has not exited after `limit`.
pub fn run_with_timeout(cmd: &mut Command, limit: Duration) -> CmdOutput {
    let mut child = die_with_test(cmd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let stdout = read_all(child.stdout.take().expect("stdout pipe"));
    let stderr = read_all(child.stderr.take().expect("stderr pipe"));
    let deadline = Instant::now() + limit;
    let status = loop {
        match child.try_wait().expect("wait for child") {
            Some(status) => break Some(status),
            None if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            None => std::thread::sleep(Duration::from_millis(10)),
        }
    };
    CmdOutput {
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    }
}

/// A UDP socket on 127.0.0.1 that sends every datagram back to its sender,
/// on its own thread, until dropped (or for at most two minutes, unless
/// started with [`EchoPeer::start_for`]).
pub struct EchoPeer {
    addr: SocketAddr,
    received: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl EchoPeer {
    pub fn start() -> EchoPeer {
        EchoPeer::start_on("127.0.0.1:0")
    }

    /// An echo peer bound to `addr` (e.g. `"[::1]:0"`).
    pub fn start_on(addr: &str) -> EchoPeer {
        EchoPeer::start_bounded(addr, Duration::from_secs(120))
    }

    /// An echo peer on 127.0.0.1 that answers for at most `limit`.
    pub fn start_for(limit: Duration) -> EchoPeer {
        EchoPeer::start_bounded("127.0.0.1:0", limit)
    }

    fn start_bounded(addr: &str, limit: Duration) -> EchoPeer {
        let socket = UdpSocket::bind(addr).expect("bind echo peer");
        socket
            .set_read_timeout(Some(Duration::from_millis(20)))
            .expect("set_read_timeout");
        let addr = socket.local_addr().expect("local_addr");
        let received = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (received, stop) = (received.clone(), stop.clone());
            std::thread::spawn(move || {
                let deadline = Instant::now() + limit;
                let mut buf = [0u8; 65_536];
                while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                    if let Ok((n, from)) = socket.recv_from(&mut buf) {
                        received.fetch_add(1, Ordering::Relaxed);
                        let _ = socket.send_to(&buf[..n], from);
                    }
                }
            })
        };
        EchoPeer {
            addr,
            received,
            stop,
            thread: Some(thread),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Datagrams received (and echoed) so far.
    pub fn received(&self) -> usize {
        self.received.load(Ordering::Relaxed)
    }
}

impl Drop for EchoPeer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The core's xorshift, for reproducible test data.
pub use turnpike::proto::xorshift::XorShift;

/// A 12-byte transaction id that differs on every call.
pub fn transaction_id() -> [u8; 12] {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let mut rng = XorShift::new(
        nanos
            ^ (u64::from(std::process::id()) << 32)
            ^ (COUNTER.fetch_add(1, Ordering::Relaxed) as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15),
    );
    let mut id = [0u8; 12];
    rng.fill(&mut id);
    id
}

/// A 20-byte STUN header.
pub fn stun_header(msg_type: u16, length: u16, cookie: u32, txid: &[u8; 12]) -> Vec<u8> {
    let mut out = Vec::with_capacity(20);
    out.extend_from_slice(&msg_type.to_be_bytes());
    out.extend_from_slice(&length.to_be_bytes());
    out.extend_from_slice(&cookie.to_be_bytes());
    out.extend_from_slice(txid);
    out
}

/// A Binding request with no attributes.
pub fn binding_request(txid: &[u8; 12]) -> Vec<u8> {
    stun_header(0x0001, 0, MAGIC_COOKIE, txid)
}

/// The XOR-MAPPED-ADDRESS (IPv4) of a Binding success response to `txid`,
/// decoded by hand; `None` if `packet` is anything else.
pub fn parse_binding_success(packet: &[u8], txid: &[u8; 12]) -> Option<SocketAddr> {
    let header = packet.get(..20)?;
    if header[0..2] != [0x01, 0x01] || header[4..8] != MAGIC_COOKIE.to_be_bytes() || header[8..20] != txid[..] {
        return None;
    }
    let length = usize::from(u16::from_be_bytes([header[2], header[3]]));
    let mut attrs = packet.get(20..20 + length)?;
    while attrs.len() >= 4 {
        let kind = u16::from_be_bytes([attrs[0], attrs[1]]);
        let len = usize::from(u16::from_be_bytes([attrs[2], attrs[3]]));
        let value = attrs.get(4..4 + len)?;
        if kind == 0x0020 && len == 8 && value[1] == 0x01 {
            let port = u16::from_be_bytes([value[2], value[3]]) ^ (MAGIC_COOKIE >> 16) as u16;
            let ip = u32::from_be_bytes([value[4], value[5], value[6], value[7]]) ^ MAGIC_COOKIE;
            return Some(SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::from(ip), port)));
        }
        attrs = attrs.get((4 + len).div_ceil(4) * 4..).unwrap_or_default();
    }
    None
}

/// Sends one Binding request from `socket` to `server` and waits up to
/// `wait` for its success response; returns the XOR-MAPPED-ADDRESS.
/// Datagrams that are not the answer are skipped (at most 1000 of them).
pub fn stun_binding(socket: &UdpSocket, server: SocketAddr, wait: Duration) -> Option<SocketAddr> {
    let txid = transaction_id();
    socket.send_to(&binding_request(&txid), server).ok()?;
    let deadline = Instant::now() + wait;
    let mut buf = [0u8; 2048];
    for _ in 0..1000 {
        let left = deadline.checked_duration_since(Instant::now())?;
        socket.set_read_timeout(Some(left.max(Duration::from_millis(1)))).ok()?;
        let (n, from) = socket.recv_from(&mut buf).ok()?;
        if from == server {
            if let Some(mapped) = parse_binding_success(&buf[..n], &txid) {
                return Some(mapped);
            }
        }
    }
    None
}

/// Sends a Binding request from `socket` and reads until its answer comes,
/// returning every other datagram received before it. The server handles
/// one client's datagrams in order, so anything it answered to what
/// `socket` sent earlier arrives before the answer. Resends the request a
/// few times (loopback can drop under load); panics if none is answered.
pub fn sync_with_server(socket: &UdpSocket, server: SocketAddr) -> Vec<Vec<u8>> {
    let mut others = Vec::new();
    let mut buf = [0u8; 65_536];
    for _attempt in 0..5 {
        let txid = transaction_id();
        socket.send_to(&binding_request(&txid), server).expect("send Binding");
        socket
            .set_read_timeout(Some(Duration::from_secs(2)))
            .expect("set_read_timeout");
        for _ in 0..10_000 {
            let Ok((n, from)) = socket.recv_from(&mut buf) else {
                break; // timed out: send a new request
            };
            if from == server && parse_binding_success(&buf[..n], &txid).is_some() {
                return others;
            }
            others.push(buf[..n].to_vec());
        }
    }
    panic!("server {server} answered none of 5 Binding requests");
}

/// A short-lived ("TURN REST API") credential computed here, independently
/// of the server: username `<expiry>:<name>`, password
/// base64(HMAC-SHA1(secret, username)).
pub fn rest_credential(secret: &str, name: &str, expiry: u64) -> (String, String) {
    rest_credential_with(ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, secret, name, expiry)
}

/// [`rest_credential`] with another HMAC (`auth.secret_algorithms`).
pub fn rest_credential_with(
    algorithm: ring::hmac::Algorithm,
    secret: &str,
    name: &str,
    expiry: u64,
) -> (String, String) {
    let username = format!("{expiry}:{name}");
    let key = ring::hmac::Key::new(algorithm, secret.as_bytes());
    let tag = ring::hmac::sign(&key, username.as_bytes());
    let password = base64::engine::general_purpose::STANDARD.encode(tag.as_ref());
    (username, password)
}

/// A `turn` crate (webrtc-rs) client of `server`, listening, on a fresh
/// socket bound to 127.0.0.1. Also returns that socket, so a test can send
/// raw packets from the client's own address.
pub async fn turn_client(
    server: SocketAddr,
    username: &str,
    password: &str,
) -> (turn::client::Client, Arc<tokio::net::UdpSocket>) {
    let socket = Arc::new(
        tokio::net::UdpSocket::bind("127.0.0.1:0")
            .await
            .expect("bind client socket"),
    );
    let config = turn::client::ClientConfig {
        stun_serv_addr: server.to_string(),
        turn_serv_addr: server.to_string(),
        username: username.to_owned(),
        password: password.to_owned(),
        realm: REALM.to_owned(),
        software: String::new(),
        rto_in_ms: 0,
        conn: socket.clone(),
        vnet: None,
    };
    let client = turn::client::Client::new(config).await.expect("create TURN client");
    client.listen().await.expect("TURN client listen");
    (client, socket)
}

/// Sends `count` distinct datagrams through `relay` to `peer`, one at a
/// time, and asserts that each comes back intact from the peer. `tag` makes
/// payloads of different rounds differ.
pub async fn assert_relay_round_trips(
    relay: &(impl webrtc_util::Conn + ?Sized),
    peer: &EchoPeer,
    count: usize,
    tag: &str,
) {
    let mut buf = vec![0u8; 2048];
    for i in 0..count {
        let payload: Vec<u8> = format!("{tag} datagram {i} ")
            .bytes()
            .chain((0..100 + i).map(|b| b as u8))
            .collect();
        relay
            .send_to(&payload, peer.addr())
            .await
            .unwrap_or_else(|e| panic!("{tag}: relay send_to {} failed for datagram {i}: {e}", peer.addr()));
        let (n, from) = tokio::time::timeout(Duration::from_secs(5), relay.recv_from(&mut buf))
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "{tag}: datagram {i} did not come back through the relay within 5 s \
                     (the peer has received {} datagram(s) in all)",
                    peer.received()
                )
            })
            .unwrap_or_else(|e| panic!("{tag}: relay recv_from failed: {e}"));
        assert_eq!(
            from,
            peer.addr(),
            "{tag}: datagram {i} came back from the wrong address"
        );
        assert_eq!(&buf[..n], &payload[..], "{tag}: datagram {i} came back altered");
    }
}

/// What a headless-Chromium test needs: `tests/browser` (with
/// playwright-core installed), Debian's Chromium (or `$CHROMIUM`), and an
/// empty `target/test-artifacts/<name>` for its screenshots.
pub struct BrowserSetup {
    pub dir: PathBuf,
    pub chromium: PathBuf,
    pub artifacts: PathBuf,
}

/// Moves the calling thread into a network namespace of its own, with
/// its loopback interface up and `addresses` (IPv4, /32) added to it, so
/// that a test can use addresses that are not loopback ones (Chromium
/// refuses to be redirected to a loopback TURN server) without a packet
/// leaving the namespace. Processes the thread spawns from now on live
/// there too; the namespace goes when they and the thread are gone. Needs
/// root (CI runs as root) and `ip` from iproute2.
pub fn enter_private_network(addresses: &[Ipv4Addr]) {
    // SAFETY: unshare changes only the calling thread's namespace.
    let unshared = unsafe { libc::unshare(libc::CLONE_NEWNET) };
    assert_eq!(
        unshared,
        0,
        "unshare(CLONE_NEWNET): {} (the test needs root)",
        std::io::Error::last_os_error()
    );
    let ip = require_tool("ip");
    let mut steps = vec![vec!["link".to_owned(), "set".into(), "lo".into(), "up".into()]];
    for address in addresses {
        steps.push(vec![
            "addr".into(),
            "add".into(),
            format!("{address}/32"),
            "dev".into(),
            "lo".into(),
        ]);
    }
    for step in steps {
        let out = run_with_timeout(Command::new(&ip).args(&step), Duration::from_secs(10));
        assert!(out.success(), "ip {}: {}", step.join(" "), out.combined());
    }
}

/// Checks what a browser test needs and empties its artifacts dir `name`.
pub fn browser_setup(name: &str) -> BrowserSetup {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = root.join("tests").join("browser");
    assert!(
        dir.join("node_modules").join("playwright-core").is_dir(),
        "tests/browser/node_modules is missing: run `npm ci --prefix tests/browser` first \
         (scripts/test.sh does it)"
    );
    let chromium = std::env::var_os("CHROMIUM").map_or_else(|| PathBuf::from("/usr/bin/chromium"), PathBuf::from);
    assert!(
        chromium.is_file(),
        "no Chromium at {}: install Debian's `chromium` package or set CHROMIUM",
        chromium.display()
    );
    let artifacts = root.join("target").join("test-artifacts").join(name);
    let _ = fs::remove_dir_all(&artifacts);
    fs::create_dir_all(&artifacts).expect("create the artifacts dir");
    BrowserSetup {
        dir,
        chromium,
        artifacts,
    }
}

/// Runs browser script `script` of `tests/browser` on the demo page at
/// `base_url` in `room` within `limit` (with the browser console on
/// stderr when `verbose`), and returns its JSON summary, which must say
/// `"ok": true`.
pub fn run_browser_script(
    setup: &BrowserSetup,
    script: &str,
    base_url: &str,
    room: &str,
    limit: Duration,
    verbose: bool,
    extra_args: &[&str],
) -> serde_json::Value {
    let BrowserSetup {
        dir,
        chromium,
        artifacts,
    } = setup;
    let mut command = Command::new("node");
    command
        .arg(dir.join(script))
        .arg(base_url)
        .arg(room)
        .arg(artifacts)
        .args(extra_args)
        .env("CHROMIUM", chromium)
        .current_dir(dir);
    if verbose {
        command.env("TURNPIKE_BROWSER_VERBOSE", "1");
    }
    let started = Instant::now();
    let out = run_with_timeout(&mut command, limit);
    eprintln!(
        "{script} ran for {:.1} s; screenshots in {}",
        started.elapsed().as_secs_f64(),
        artifacts.display()
    );
    assert!(
        out.success(),
        "{script} failed ({}):\n{}",
        out.status
            .map_or_else(|| format!("killed after {limit:?}"), |s| s.to_string()),
        out.combined()
    );
    if verbose {
        eprintln!("---- {script} stderr ----\n{}---- end ----", out.stderr);
    }
    let summary = json_summary(&out, script);
    eprintln!("summary: {summary}");
    assert_eq!(summary["ok"], serde_json::Value::Bool(true), "summary: {summary}");
    summary
}

/// The last stdout line of browser script `script` that is a JSON object.
pub fn json_summary(out: &CmdOutput, script: &str) -> serde_json::Value {
    out.stdout
        .lines()
        .rev()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line.trim()).ok())
        .find(serde_json::Value::is_object)
        .unwrap_or_else(|| panic!("{script} printed no JSON summary line; its output:\n{}", out.combined()))
}
