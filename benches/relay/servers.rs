//! The servers under test: turnpike and coturn started as child processes
//! with equivalent settings, pinned to the server CPU, killed when dropped.
//! In namespace mode they run in the server's network namespace, on its
//! veth address, and turnpike also with the XDP fast path on.

use std::fs::{self, File};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use turnpike::proto::stun::{method, Class, Message, MessageWriter};

use crate::netns::Topology;
use crate::procfs::pin_to;
use crate::turn::{client_ip, lo, new_tid, PASS, REALM, RELAY_PORTS, USER};

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Kind {
    Turnpike,
    /// turnpike with `fast_path = "xdp"` on the server's veth end
    /// (namespace mode only).
    TurnpikeXdp,
    Coturn,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Turnpike => "turnpike",
            Kind::TurnpikeXdp => "turnpike-xdp",
            Kind::Coturn => "coturn",
        }
    }
}

/// The servers' UDP port in namespace mode: the namespace is the bench's
/// alone, and one server runs at a time.
const NETNS_PORT: u16 = 3478;
/// turnpike's HTTP listener (for /metrics) in namespace mode, on the
/// server namespace's loopback.
pub const NETNS_HTTP_PORT: u16 = 8080;

/// Where the TLS listener's certificate and key are.
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A server child process; killed when dropped.
pub struct ServerProcess {
    pub name: &'static str,
    pub child: Child,
    pub udp: SocketAddr,
    pub tcp: Option<SocketAddr>,
    pub tls: Option<SocketAddr>,
    pub log: PathBuf,
    /// turnpike's /metrics port, in the server's namespace (namespace mode).
    pub http: Option<u16>,
}

impl ServerProcess {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log_tail(&self) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// An error if the process has exited.
    pub fn check_alive(&mut self) -> Result<(), String> {
        if let Ok(Some(status)) = self.child.try_wait() {
            return Err(format!("{} exited ({status}):\n{}", self.name, self.log_tail()));
        }
        Ok(())
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A UDP port that was free a moment ago.
pub fn free_udp_port() -> Result<u16, String> {
    let s = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).map_err(|e| e.to_string())?;
    Ok(s.local_addr().map_err(|e| e.to_string())?.port())
}

/// A port free for both UDP and TCP a moment ago (turnpike and coturn
/// listen on one port number for both).
fn free_dual_port() -> Result<u16, String> {
    for _ in 0..50 {
        let port = free_udp_port()?;
        if TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok() {
            return Ok(port);
        }
    }
    Err("no port free for both UDP and TCP".into())
}

fn free_tcp_port() -> Result<u16, String> {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).map_err(|e| e.to_string())?;
    Ok(l.local_addr().map_err(|e| e.to_string())?.port())
}

/// Starts `cmd` with its output in `log`, the server CPU as its only CPU,
/// death with the bench and, with `netns`, in that network namespace.
pub fn spawn_pinned(cmd: &mut Command, log: &Path, cpu: Option<usize>, netns: Option<&File>) -> Result<Child, String> {
    let out = fs::File::create(log).map_err(|e| format!("{}: {e}", log.display()))?;
    let err = out.try_clone().map_err(|e| e.to_string())?;
    cmd.stdin(Stdio::null()).stdout(out).stderr(err);
    // Stays open in the parent until spawn returns (close-on-exec).
    let ns_fd = netns.map(|f| f.as_raw_fd());
    // SAFETY: prctl, sched_setaffinity and setns are plain system calls,
    // safe between fork and exec. The first makes the server die with the
    // benchmark even if the benchmark itself is killed; the second puts
    // all of the server's threads on its own core; the third moves it
    // into the server's namespace.
    unsafe {
        cmd.pre_exec(move || {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            if let Some(fd) = ns_fd {
                if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            match cpu {
                Some(cpu) => pin_to(cpu),
                None => Ok(()),
            }
        });
    }
    cmd.spawn()
        .map_err(|e| format!("cannot start {}: {e}", cmd.get_program().to_string_lossy()))
}

/// Starts a server; with `tls`, also with TCP and TLS listeners; with
/// `netns`, in the server's namespace (UDP only).
pub fn start(
    kind: Kind,
    bin: &Path,
    work: &Path,
    cpu: Option<usize>,
    tls: Option<&TlsFiles>,
    netns: Option<&Topology>,
    tag: &str,
) -> Result<ServerProcess, String> {
    let name = kind.name();
    let port = if netns.is_some() {
        NETNS_PORT
    } else if tls.is_some() {
        free_dual_port()?
    } else {
        free_udp_port()?
    };
    let tls_port = match tls {
        Some(_) => Some(free_tcp_port()?),
        None => None,
    };
    let log = work.join(format!("{name}-{tag}.log"));
    let mut cmd = Command::new(bin);
    let mut http = None;
    match kind {
        Kind::Turnpike | Kind::TurnpikeXdp => {
            let path = work.join(format!("{name}-{tag}.toml"));
            let mut config = turnpike_config(port, tls_port, tls);
            if let Some(t) = netns {
                config = netns_config(&config, kind, &t.server_dev);
                http = Some(NETNS_HTTP_PORT);
            }
            fs::write(&path, config).map_err(|e| format!("{}: {e}", path.display()))?;
            cmd.arg("--config").arg(&path);
        }
        Kind::Coturn => {
            let mut args = coturn_args(port, tls_port, tls, work);
            if netns.is_some() {
                let ip = lo(1);
                for a in &mut args {
                    if a.starts_with("--listening-ip=") || a.starts_with("--relay-ip=") {
                        *a = a.replace("127.0.0.1", &ip.to_string());
                    }
                }
            }
            cmd.args(args);
        }
    }
    let child = spawn_pinned(&mut cmd, &log, cpu, netns.and_then(Topology::server_file))?;
    // Host 1 of the bench's network: 127.0.0.1, or the server's veth end.
    let at = |p: u16| SocketAddr::from((lo(1), p));
    let mut server = ServerProcess {
        name,
        child,
        udp: at(port),
        tcp: tls.map(|_| at(port)),
        tls: tls_port.map(at),
        log,
        http,
    };
    wait_ready(&mut server)?;
    if let Some(addr) = server.tls {
        wait_tcp(&mut server, addr)?;
    }
    Ok(server)
}

/// The bench's turnpike configuration (BENCHMARKS.md shows it).
pub fn turnpike_config(port: u16, tls_port: Option<u16>, tls: Option<&TlsFiles>) -> String {
    let (lo, hi) = RELAY_PORTS;
    let (tcp, tls_listen, tls_section) = match (tls_port, tls) {
        (Some(tp), Some(files)) => (
            format!("[\"127.0.0.1:{port}\"]"),
            format!("[\"127.0.0.1:{tp}\"]"),
            format!(
                "\n[tls]\ncert = \"{}\"\nkey = \"{}\"\n",
                files.cert.display(),
                files.key.display()
            ),
        ),
        _ => ("[]".to_string(), "[]".to_string(), String::new()),
    };
    format!(
        r#"[server]
realm = "{REALM}"
workers = 1

[listen]
udp = ["127.0.0.1:{port}"]
tcp = {tcp}
tls = {tls_listen}
http = "off"
{tls_section}
[relay]
ipv4 = "127.0.0.1"
ports = "{lo}-{hi}"

[[auth.users]]
name = "{USER}"
password = "{PASS}"

[peers]
allow = ["127.0.0.0/8"]

[limits]
# One user and a few source addresses hold every bench allocation; coturn
# has no per-user, per-source or total quota by default.
max_allocations = 100000
max_allocations_per_user = 100000
max_allocations_per_source = 100000
# The per-source budget for 401 challenges (16384 B/s by default) would
# throttle the Allocate burst, which comes from 16 loopback addresses.
challenge_bytes_per_second = 0
# Likewise the TLS handshake rate per source (20/s by default).
tls_handshakes_per_source = 1000

[log]
level = "warn"
"#
    )
}

/// Namespace mode's changes to the bench's turnpike configuration
/// (BENCHMARKS.md shows them): the addresses of the server's veth end,
/// whose subnet the peer filter allows, the fast path for
/// `TurnpikeXdp`, and the HTTP listener for /metrics on both variants,
/// so that they differ in `fast_path` alone.
pub fn netns_config(loopback: &str, kind: Kind, device: &str) -> String {
    let ip = lo(1);
    let [a, b, c, _] = ip.octets();
    let fast_path = if kind == Kind::TurnpikeXdp {
        format!("fast_path = \"xdp\"\nfast_path_interfaces = [\"{device}\"]\n")
    } else {
        "fast_path = \"off\"\n".to_string()
    };
    loopback
        .replace("udp = [\"127.0.0.1:", &format!("udp = [\"{ip}:"))
        .replace("http = \"off\"", &format!("http = \"127.0.0.1:{NETNS_HTTP_PORT}\""))
        .replace(
            "ipv4 = \"127.0.0.1\"\n",
            &format!("ipv4 = \"{ip}\"\nipv6 = \"off\"\n{fast_path}"),
        )
        .replace("allow = [\"127.0.0.0/8\"]", &format!("allow = [\"{a}.{b}.{c}.0/24\"]"))
}

/// The bench's coturn command line (BENCHMARKS.md shows it).
pub fn coturn_args(port: u16, tls_port: Option<u16>, tls: Option<&TlsFiles>, work: &Path) -> Vec<String> {
    let (lo, hi) = RELAY_PORTS;
    let mut args: Vec<String> = [
        "-n",
        "--no-cli",
        "--listening-ip=127.0.0.1",
        "--relay-ip=127.0.0.1",
        "--allow-loopback-peers",
        "--lt-cred-mech",
        "--no-dtls",
        "--no-tcp-relay",
        // One relay thread (besides the listener, auth and admin threads,
        // which are idle once the allocations exist).
        "--relay-threads=1",
        "--log-file=stdout",
        "--simple-log",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.push(format!("--listening-port={port}"));
    args.push(format!("--min-port={lo}"));
    args.push(format!("--max-port={hi}"));
    args.push(format!("--user={USER}:{PASS}"));
    args.push(format!("--realm={REALM}"));
    match (tls_port, tls) {
        (Some(tp), Some(files)) => {
            args.push(format!("--tls-listening-port={tp}"));
            args.push(format!("--cert={}", files.cert.display()));
            args.push(format!("--pkey={}", files.key.display()));
        }
        _ => {
            args.push("--no-tls".into());
            args.push("--no-tcp".into());
        }
    }
    // Keep coturn's pid file and its (unused) SQLite database out of /var.
    args.push(format!("--pidfile={}", work.join("turnserver.pid").display()));
    args.push(format!("--userdb={}", work.join("turndb").display()));
    args
}

/// Waits until the server answers a STUN Binding request (at most 10 s).
fn wait_ready(server: &mut ServerProcess) -> Result<(), String> {
    let sock = UdpSocket::bind((client_ip(0), 0)).map_err(|e| e.to_string())?;
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    let tid = new_tid(0);
    MessageWriter::new(&mut buf, Class::Request, method::BINDING, tid).finish(None, false);
    let mut reply = [0u8; 1500];
    for _ in 0..100 {
        server.check_alive()?;
        let _ = sock.send_to(&buf, server.udp);
        if let Ok((n, _)) = sock.recv_from(&mut reply) {
            if Message::parse(&reply[..n]).is_ok_and(|m| m.transaction_id() == tid) {
                return Ok(());
            }
        }
    }
    Err(format!(
        "{} did not answer a Binding request within 10 s:\n{}",
        server.name,
        server.log_tail()
    ))
}

/// Waits until a TCP listener accepts (at most 5 s).
fn wait_tcp(server: &mut ServerProcess, addr: SocketAddr) -> Result<(), String> {
    for _ in 0..50 {
        server.check_alive()?;
        if std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err(format!(
        "{} does not accept on {addr}:\n{}",
        server.name,
        server.log_tail()
    ))
}

/// A throwaway CA and a leaf for 127.0.0.1 signed by it, written to
/// `work`; returns the files and the CA certificate (DER) to trust.
pub fn make_pki(work: &Path) -> Result<(TlsFiles, Vec<u8>), String> {
    let e = |e: rcgen::Error| e.to_string();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(e)?;
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "turnpike bench CA");
    let ca_key = rcgen::KeyPair::generate().map_err(e)?;
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).map_err(e)?;
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).map_err(e)?;
    params.distinguished_name.push(rcgen::DnType::CommonName, "localhost");
    let key = rcgen::KeyPair::generate().map_err(e)?;
    let cert = params.signed_by(&key, &ca).map_err(e)?;
    let files = TlsFiles {
        cert: work.join("cert.pem"),
        key: work.join("key.pem"),
    };
    fs::write(&files.cert, cert.pem()).map_err(|e| e.to_string())?;
    fs::write(&files.key, key.serialize_pem()).map_err(|e| e.to_string())?;
    // turnpike warns about a key that others may read.
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&files.key, fs::Permissions::from_mode(0o600)).map_err(|e| e.to_string())?;
    Ok((files, ca.der().to_vec()))
}
