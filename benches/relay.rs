//! Relay benchmark: turnpike against coturn on loopback, per CPU core.
//!
//! One run starts the release `turnpike` binary and then coturn's
//! `turnserver`, each with one relay thread and equivalent settings, and
//! drives the same load through each:
//!
//! 1. `fwd`: N clients blast ChannelData (160-byte payloads) through their
//!    channel to their peer at full speed;
//! 2. `rev`: the N peers blast 160-byte datagrams back through the relay,
//!    which arrive at the clients as ChannelData;
//! 3. `paced`: both directions at once at a fixed total rate (20 000
//!    packets/s by default), where neither server should lose anything and
//!    the question is how much CPU each needs.
//!
//! The headline is relayed packets per CPU-second of the server process
//! (utime + stime of all its threads, from `/proc/<pid>/stat`): on a small
//! machine the load generator and anything else running compete with the
//! server for cores, so raw packets/s says as much about the scheduler as
//! about the server. By default the server (all its threads) is pinned to
//! one CPU and the generator to another (`BENCH_PIN=0` turns that off).
//! The report also splits loss by where the kernel dropped the datagrams
//! (`/proc/net/udp` drop counters of the server's and generator's sockets).
//!
//! Every packet goes to 127.0.0.1 only; every loop is bounded in time and
//! in count. Run it with `scripts/bench.sh` or `cargo bench --bench relay`.
//! Without `--bench` on the command line (as under `cargo test
//! --all-targets`) it prints a note and returns.
//!
//! Environment knobs: `BENCH_CLIENTS` (32), `BENCH_SECS` (5), `BENCH_RATE`
//! (20000), `BENCH_BATCH` (16, datagrams per sendmmsg call), `TURNPIKE_BIN`,
//! `TURNSERVER_BIN`, `BENCH_ONLY` (`turnpike` or `coturn`), `BENCH_PIN` (1).

// The benchmark measures wall time: reading the clock is the point here.
#![allow(clippy::disallowed_methods)]

use std::fmt::Write as _;
use std::fs;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use turnpike::proto::stun::{attr, method, Class, Message, MessageWriter, TransactionId};
use turnpike::proto::testkit::{encode, Challenge, Cred};

const USER: &str = "user";
const PASS: &str = "pass";
const REALM: &str = "turnpike";
/// Payload of every relayed packet: a typical 20 ms audio frame.
const PAYLOAD: usize = 160;
/// ChannelData header.
const CD_HEADER: usize = 4;
/// Datagrams per recvmmsg call and the size of each receive buffer.
const RECV_BATCH: usize = 64;
const RECV_BUF: usize = 2048;
/// Kernel buffers of the generator's sockets, so that loss is the server's.
const SOCK_BUF: libc::c_int = 4 << 20;
/// Time left after a phase, once the server's queues are empty, for
/// packets still in flight.
const DRAIN: Duration = Duration::from_millis(200);
/// Longest wait for the server to work off its queues after a phase.
const SETTLE_MAX: Duration = Duration::from_secs(5);
/// Hard cap on datagrams sent in one phase, whatever the clock says.
const MAX_PACKETS_PER_PHASE: u64 = 200_000_000;

struct Settings {
    clients: usize,
    secs: f64,
    rate: f64,
    batch: usize,
    only: Option<String>,
    /// CPUs for (server, generator), when pinning.
    pin: Option<(usize, usize)>,
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

impl Settings {
    fn from_env() -> Settings {
        Settings {
            clients: env_or("BENCH_CLIENTS", 32usize).clamp(1, 1000),
            secs: env_or("BENCH_SECS", 5.0f64).clamp(0.5, 30.0),
            rate: env_or("BENCH_RATE", 20_000.0f64).clamp(100.0, 1_000_000.0),
            batch: env_or("BENCH_BATCH", 16usize).clamp(1, 256),
            only: std::env::var("BENCH_ONLY").ok().filter(|s| !s.is_empty()),
            pin: if env_or("BENCH_PIN", 1u8) == 1 {
                two_cpus()
            } else {
                None
            },
        }
    }
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("relay benchmark: skipped (run `cargo bench --bench relay` or scripts/bench.sh)");
        return;
    }
    if let Err(e) = run() {
        eprintln!("relay benchmark failed: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), String> {
    let settings = Settings::from_env();
    let work = std::env::temp_dir().join(format!("turnpike-bench-{}", std::process::id()));
    fs::create_dir_all(&work).map_err(|e| format!("create {}: {e}", work.display()))?;

    let want = |name: &str| settings.only.as_deref().is_none_or(|o| o == name);
    let turnpike_bin = if want("turnpike") {
        Some(turnpike_binary()?)
    } else {
        None
    };
    let coturn_bin = if want("coturn") {
        let bin = std::env::var("TURNSERVER_BIN").unwrap_or_else(|_| "/usr/bin/turnserver".into());
        if Path::new(&bin).exists() {
            Some(PathBuf::from(bin))
        } else {
            eprintln!("note: {bin} not found (apt-get install coturn); measuring turnpike alone");
            None
        }
    } else {
        None
    };

    if let Some((_, generator_cpu)) = settings.pin {
        // Threads started from now on (the receiver) inherit this.
        pin_to(generator_cpu).map_err(|e| format!("sched_setaffinity: {e}"))?;
    }
    print_header(&settings);
    let mut results: Vec<(&str, ServerResult)> = Vec::new();
    if let Some(bin) = &turnpike_bin {
        let server = start_turnpike(bin, &work, settings.pin.map(|p| p.0))?;
        results.push(("turnpike", measure(server, &settings)?));
    }
    if let Some(bin) = &coturn_bin {
        let server = start_coturn(bin, &work, settings.pin.map(|p| p.0))?;
        results.push(("coturn", measure(server, &settings)?));
    }
    print!("{}", table(&results, &settings));
    let _ = fs::remove_dir_all(&work);
    Ok(())
}

// ---------------------------------------------------------------------------
// The servers

/// A server child process; killed when dropped.
struct ServerProcess {
    name: &'static str,
    child: Child,
    addr: SocketAddr,
    log: PathBuf,
}

impl ServerProcess {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn log_tail(&self) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The release binary, built first with `cargo build --release --bin
/// turnpike` unless `TURNPIKE_BIN` names one. (`cargo bench` builds the
/// library and this bench, not the binary.)
fn turnpike_binary() -> Result<PathBuf, String> {
    if let Ok(bin) = std::env::var("TURNPIKE_BIN") {
        return Ok(PathBuf::from(bin));
    }
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| manifest.join("target"), PathBuf::from);
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    eprintln!("building: cargo build --release --bin turnpike");
    let status = Command::new(cargo)
        .args(["build", "--release", "--quiet", "--bin", "turnpike"])
        .current_dir(manifest)
        .status()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if !status.success() {
        return Err(format!("cargo build --release --bin turnpike failed: {status}"));
    }
    let bin = manifest.join(&target).join("release").join("turnpike");
    if !bin.exists() {
        return Err(format!("{} missing after the build", bin.display()));
    }
    Ok(bin)
}

/// The first two CPUs this process may run on, if there are two.
fn two_cpus() -> Option<(usize, usize)> {
    // SAFETY: cpu_set_t is plain data; sched_getaffinity fills it.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: set is a valid cpu_set_t of the size passed.
    if unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) } != 0 {
        return None;
    }
    // SAFETY: CPU_ISSET only reads the set.
    let mut cpus = (0..libc::CPU_SETSIZE as usize).filter(|&c| unsafe { libc::CPU_ISSET(c, &set) });
    Some((cpus.next()?, cpus.next()?))
}

/// Restricts the calling thread (and threads and processes it starts
/// later) to one CPU.
fn pin_to(cpu: usize) -> io::Result<()> {
    // SAFETY: cpu_set_t is plain data; CPU_ZERO/CPU_SET write within it and
    // sched_setaffinity reads it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_ZERO(&mut set);
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// A UDP port that was free a moment ago.
fn free_port() -> Result<u16, String> {
    let s = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).map_err(|e| e.to_string())?;
    Ok(s.local_addr().map_err(|e| e.to_string())?.port())
}

fn spawn(
    name: &'static str,
    mut cmd: Command,
    log: PathBuf,
    addr: SocketAddr,
    cpu: Option<usize>,
) -> Result<ServerProcess, String> {
    let out = fs::File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
    let err = out.try_clone().map_err(|e| e.to_string())?;
    cmd.stdin(Stdio::null()).stdout(out).stderr(err);
    // SAFETY: prctl and sched_setaffinity are plain system calls, safe
    // between fork and exec. The first makes the server die with the
    // benchmark even if the benchmark itself is killed; the second puts
    // all of the server's threads on its own core.
    unsafe {
        cmd.pre_exec(move || {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            match cpu {
                Some(cpu) => pin_to(cpu),
                None => Ok(()),
            }
        });
    }
    let child = cmd.spawn().map_err(|e| format!("cannot start {name}: {e}"))?;
    let mut server = ServerProcess { name, child, addr, log };
    wait_ready(&mut server)?;
    Ok(server)
}

fn start_turnpike(bin: &Path, work: &Path, cpu: Option<usize>) -> Result<ServerProcess, String> {
    let port = free_port()?;
    let config = format!(
        r#"[server]
realm = "{REALM}"
workers = 1

[listen]
udp = ["127.0.0.1:{port}"]
tcp = []
http = "off"

[relay]
ipv4 = "127.0.0.1"
ports = "30000-30999"

[[auth.users]]
name = "{USER}"
password = "{PASS}"

[peers]
allow = ["127.0.0.0/8"]

[limits]
# One user holds every benchmark allocation (coturn has no per-user quota by default).
max_allocations_per_user = 1000

[log]
level = "warn"
"#
    );
    let path = work.join("turnpike.toml");
    fs::write(&path, config).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut cmd = Command::new(bin);
    cmd.arg("--config").arg(&path);
    spawn(
        "turnpike",
        cmd,
        work.join("turnpike.log"),
        SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
        cpu,
    )
}

fn start_coturn(bin: &Path, work: &Path, cpu: Option<usize>) -> Result<ServerProcess, String> {
    let port = free_port()?;
    let mut cmd = Command::new(bin);
    cmd.args([
        "-n",
        "--no-cli",
        "--listening-ip=127.0.0.1",
        &format!("--listening-port={port}"),
        "--relay-ip=127.0.0.1",
        "--min-port=31000",
        "--max-port=31999",
        "--allow-loopback-peers",
        "--lt-cred-mech",
        &format!("--user={USER}:{PASS}"),
        &format!("--realm={REALM}"),
        "--no-tls",
        "--no-dtls",
        "--no-tcp",
        "--no-tcp-relay",
        // One relay thread (besides the listener, auth and admin threads,
        // which are idle once the allocations exist).
        "--relay-threads=1",
        "--log-file=stdout",
        "--simple-log",
    ]);
    // Keep coturn's pid file and its (unused) SQLite database out of /var.
    cmd.arg(format!("--pidfile={}", work.join("turnserver.pid").display()));
    cmd.arg(format!("--userdb={}", work.join("turndb").display()));
    spawn(
        "coturn",
        cmd,
        work.join("coturn.log"),
        SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
        cpu,
    )
}

/// Waits until the server answers a STUN Binding request (at most 10 s).
fn wait_ready(server: &mut ServerProcess) -> Result<(), String> {
    let sock = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).map_err(|e| e.to_string())?;
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    let tid = new_tid(0);
    MessageWriter::new(&mut buf, Class::Request, method::BINDING, tid).finish(None, false);
    let mut reply = [0u8; 1500];
    for _ in 0..100 {
        if let Ok(Some(status)) = server.child.try_wait() {
            return Err(format!(
                "{} exited at start ({status}):\n{}",
                server.name,
                server.log_tail()
            ));
        }
        let _ = sock.send_to(&buf, server.addr);
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

// ---------------------------------------------------------------------------
// /proc

/// utime + stime of the whole process (all threads), in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the parenthesised command name: state is field 3, so
    // utime (14) and stime (15) are the 12th and 13th after it.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    (ticks(11) + ticks(12)) as f64 / hz
}

/// A `kB` line of /proc/<pid>/status (VmHWM, VmRSS).
fn status_kb(pid: u32, key: &str) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim_start_matches(':').split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Inodes of the sockets a process holds open.
fn socket_inodes(pid: u32) -> Vec<u64> {
    let Ok(dir) = fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Vec::new();
    };
    dir.filter_map(|e| {
        let link = fs::read_link(e.ok()?.path()).ok()?;
        let link = link.to_str()?;
        link.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok()
    })
    .collect()
}

/// Datagrams the kernel discarded because a socket's receive buffer was
/// full (the `drops` column of /proc/net/udp), summed per owner.
#[derive(Clone, Copy, Default)]
struct Drops {
    /// The server's sockets on its listening port (coturn also binds its
    /// per-client sockets there).
    listener: u64,
    /// The server's relay sockets.
    relay: u64,
    /// The generator's client and peer sockets.
    generator: u64,
}

impl Drops {
    fn since(self, before: Drops) -> Drops {
        Drops {
            listener: self.listener.saturating_sub(before.listener),
            relay: self.relay.saturating_sub(before.relay),
            generator: self.generator.saturating_sub(before.generator),
        }
    }
}

/// Drop counters now, and the bytes waiting in the server's receive queues.
fn udp_table(target: &Target<'_>) -> (Drops, u64) {
    let table = fs::read_to_string("/proc/net/udp").unwrap_or_default();
    let mut d = Drops::default();
    let mut queued = 0;
    for line in table.lines().skip(1) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (Some(local), Some(inode), Some(drops)) = (fields.get(1), fields.get(9), fields.last()) else {
            continue;
        };
        let port = local
            .rsplit_once(':')
            .and_then(|(_, p)| u16::from_str_radix(p, 16).ok());
        let (Ok(inode), Ok(drops)) = (inode.parse::<u64>(), drops.parse::<u64>()) else {
            continue;
        };
        if target.server_sockets.contains(&inode) {
            // "tx_queue:rx_queue" in hex.
            let rx = fields.get(4).and_then(|q| q.split_once(':'));
            queued += rx.and_then(|(_, rx)| u64::from_str_radix(rx, 16).ok()).unwrap_or(0);
            if port == Some(target.listen_port) {
                d.listener += drops;
            } else {
                d.relay += drops;
            }
        } else if target.generator_sockets.contains(&inode) {
            d.generator += drops;
        }
    }
    (d, queued)
}

fn drops_now(target: &Target<'_>) -> Drops {
    udp_table(target).0
}

/// After the generator stops: waits until the server has emptied its
/// receive queues (at most `SETTLE_MAX`), then a little longer for the
/// last relayed datagrams to land, so that one phase's backlog neither
/// spills into the next nor escapes the CPU accounting.
fn settle(target: &Target<'_>) {
    let start = Instant::now();
    while start.elapsed() < SETTLE_MAX && udp_table(target).1 > 0 {
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(DRAIN);
}

fn self_pid() -> u32 {
    std::process::id()
}

// ---------------------------------------------------------------------------
// TURN client setup (turnpike's own codec builds the requests)

/// One client with its allocation, a channel to its own peer, and the peer.
struct Flow {
    client: UdpSocket,
    peer: UdpSocket,
    channel: u16,
}

/// A transaction id unique within this run (uniqueness is all a load
/// generator needs).
fn new_tid(seq: u32) -> TransactionId {
    static COUNTER: AtomicU32 = AtomicU32::new(1);
    let mut tid = [0u8; 12];
    tid[..4].copy_from_slice(&self_pid().to_be_bytes());
    tid[4..8].copy_from_slice(&seq.to_be_bytes());
    tid[8..].copy_from_slice(&COUNTER.fetch_add(1, Ordering::Relaxed).to_be_bytes());
    tid
}

/// Sends a request (retransmitted up to 4 times, 500 ms apart) and returns
/// the matching response's bytes.
fn transact(sock: &UdpSocket, request: &[u8], tid: TransactionId) -> Result<Vec<u8>, String> {
    let mut buf = [0u8; 1500];
    for _ in 0..4 {
        sock.send(request).map_err(|e| format!("send: {e}"))?;
        let deadline = Instant::now() + Duration::from_millis(500);
        while Instant::now() < deadline {
            match sock.recv(&mut buf) {
                Ok(n) => {
                    if Message::parse(&buf[..n]).is_ok_and(|m| m.transaction_id() == tid) {
                        return Ok(buf[..n].to_vec());
                    }
                }
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {}
                Err(e) => return Err(format!("recv: {e}")),
            }
        }
    }
    Err("no response after 4 attempts".into())
}

fn error_code(m: &Message<'_>) -> Option<u16> {
    m.get(attr::ERROR_CODE)
        .filter(|v| v.len() >= 4)
        .map(|v| u16::from(v[2] & 7) * 100 + u16::from(v[3]))
}

/// Builds and runs one request; with `auth`, signs it with the long-term
/// credential. Returns the response bytes.
fn request(
    sock: &UdpSocket,
    seq: u32,
    meth: u16,
    auth: Option<&Challenge>,
    attrs: &dyn Fn(&mut MessageWriter<'_>),
) -> Result<Vec<u8>, String> {
    let tid = new_tid(seq);
    let cred = auth.map(|challenge| (Cred::new(USER, challenge.realm(), PASS), challenge));
    let buf = encode(Class::Request, meth, tid, attrs, cred.as_ref().map(|(c, ch)| (c, *ch)));
    transact(sock, &buf, tid)
}

fn setup_flow(server: SocketAddr, index: usize) -> Result<Flow, String> {
    let client = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).map_err(|e| e.to_string())?;
    client
        .set_read_timeout(Some(Duration::from_millis(100)))
        .map_err(|e| e.to_string())?;
    client.connect(server).map_err(|e| e.to_string())?;
    let peer = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).map_err(|e| e.to_string())?;
    let peer_addr = peer.local_addr().map_err(|e| e.to_string())?;
    let seq = (index as u32) << 8;

    let udp = |w: &mut MessageWriter<'_>| {
        w.u32(attr::REQUESTED_TRANSPORT, 17 << 24);
    };
    // Allocate: the first attempt is refused with 401 and the realm and nonce.
    let first = request(&client, seq, method::ALLOCATE, None, &udp)?;
    let m = Message::parse(&first).map_err(|e| e.to_string())?;
    if error_code(&m) != Some(401) {
        return Err(format!(
            "unauthenticated Allocate: expected 401, got {:?}",
            error_code(&m)
        ));
    }
    let auth = Challenge::of(&first).ok_or("401 without REALM and NONCE")?;
    let resp = request(&client, seq + 1, method::ALLOCATE, Some(&auth), &udp)?;
    let m = Message::parse(&resp).map_err(|e| e.to_string())?;
    if m.class() != Class::Success {
        return Err(format!("Allocate failed with {:?}", error_code(&m)));
    }
    let relay = m
        .xor_address(attr::XOR_RELAYED_ADDRESS)
        .ok_or("Allocate success without XOR-RELAYED-ADDRESS")?
        .map_err(|e| e.to_string())?;
    if !relay.ip().is_loopback() {
        return Err(format!("relay address {relay} is not loopback; refusing to send there"));
    }

    let channel = 0x4000 + index as u16;
    let bind = |w: &mut MessageWriter<'_>| {
        w.u32(attr::CHANNEL_NUMBER, u32::from(channel) << 16);
        w.xor_address(attr::XOR_PEER_ADDRESS, peer_addr);
    };
    let resp = request(&client, seq + 2, method::CHANNEL_BIND, Some(&auth), &bind)?;
    let m = Message::parse(&resp).map_err(|e| e.to_string())?;
    if m.class() != Class::Success {
        return Err(format!("ChannelBind failed with {:?}", error_code(&m)));
    }

    peer.connect(relay).map_err(|e| e.to_string())?;
    for s in [&client, &peer] {
        s.set_nonblocking(true).map_err(|e| e.to_string())?;
        set_buffers(s.as_raw_fd());
    }
    Ok(Flow { client, peer, channel })
}

fn set_buffers(fd: RawFd) {
    for (force, plain) in [
        (libc::SO_RCVBUFFORCE, libc::SO_RCVBUF),
        (libc::SO_SNDBUFFORCE, libc::SO_SNDBUF),
    ] {
        let size = SOCK_BUF;
        let len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        let ptr = (&size as *const libc::c_int).cast();
        // SAFETY: fd is an open socket and ptr/len describe a c_int.
        unsafe {
            if libc::setsockopt(fd, libc::SOL_SOCKET, force, ptr, len) != 0 {
                libc::setsockopt(fd, libc::SOL_SOCKET, plain, ptr, len);
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Load phases

/// A socket the generator sends from, with the one datagram it repeats.
struct Source {
    fd: RawFd,
    packet: Vec<u8>,
}

/// A socket the generator receives on, with what every datagram must be.
struct Sink {
    fd: RawFd,
    len: usize,
    prefix: Vec<u8>,
}

#[derive(Clone, Copy, Default)]
struct Phase {
    sent: u64,
    send_errors: u64,
    received: u64,
    /// Datagrams of the wrong size or for the wrong flow.
    bad: u64,
    /// From the first send to the last datagram received (the server may
    /// still be working off its queues after the generator stops).
    active_secs: f64,
    server_cpu: f64,
    generator_cpu: f64,
    /// Datagrams the kernel dropped at the server's / generator's full
    /// receive buffers during the phase.
    drops: Drops,
}

impl Phase {
    fn loss_pct(&self) -> f64 {
        if self.sent == 0 {
            return 0.0;
        }
        100.0 * (self.sent.saturating_sub(self.received)) as f64 / self.sent as f64
    }
    fn rx_pps(&self) -> f64 {
        self.received as f64 / self.active_secs.max(1e-9)
    }
    fn per_cpu_sec(&self) -> f64 {
        self.received as f64 / self.server_cpu.max(1e-9)
    }
    fn server_cpu_pct(&self) -> f64 {
        100.0 * self.server_cpu / self.active_secs.max(1e-9)
    }
    fn generator_cpu_pct(&self) -> f64 {
        100.0 * self.generator_cpu / self.active_secs.max(1e-9)
    }
}

/// Runs one phase: `sources` send for `secs` seconds, at full speed
/// (`rate` None, `batch` datagrams per sendmmsg) or paced at `rate`
/// datagrams/s in total; a receiver thread counts what reaches `sinks`.
fn run_phase(target: &Target<'_>, sources: &[Source], sinks: Vec<Sink>, secs: f64, rate: Option<f64>) -> Phase {
    let pid = target.pid;
    let stop = Arc::new(AtomicBool::new(false));
    let receiver = {
        let stop = stop.clone();
        std::thread::spawn(move || receive(&sinks, &stop))
    };
    // Let the receiver reach its loop before the clock starts.
    std::thread::sleep(Duration::from_millis(50));

    let drops0 = drops_now(target);
    let cpu0 = cpu_seconds(pid);
    let gen0 = cpu_seconds(self_pid());
    let start = Instant::now();
    let duration = Duration::from_secs_f64(secs);
    let (sent, send_errors) = match rate {
        None => blast(sources, target.batch, start + duration),
        Some(rate) => paced(sources, rate, start, duration),
    };
    let send_secs = start.elapsed().as_secs_f64();
    settle(target);
    stop.store(true, Ordering::Relaxed);
    let (received, bad, last) = receiver.join().unwrap_or((0, 0, None));
    let active_secs = last.map_or(send_secs, |t| t.duration_since(start).as_secs_f64().max(send_secs));
    let drops = drops_now(target).since(drops0);
    Phase {
        sent,
        send_errors,
        received,
        bad,
        active_secs,
        server_cpu: cpu_seconds(pid) - cpu0,
        generator_cpu: cpu_seconds(self_pid()) - gen0,
        drops,
    }
}

/// What a phase measures against.
struct Target<'a> {
    pid: u32,
    listen_port: u16,
    server_sockets: Vec<u64>,
    generator_sockets: &'a [u64],
    batch: usize,
}

/// Full speed: one sendmmsg of `batch` copies per source, round after round.
fn blast(sources: &[Source], batch: usize, deadline: Instant) -> (u64, u64) {
    let mut iovs: Vec<libc::iovec> = sources
        .iter()
        .map(|s| libc::iovec {
            iov_base: s.packet.as_ptr() as *mut libc::c_void,
            iov_len: s.packet.len(),
        })
        .collect();
    // SAFETY: mmsghdr is plain data; all-zero is a valid empty header.
    let mut msgs: Vec<Vec<libc::mmsghdr>> = sources
        .iter()
        .map(|_| vec![unsafe { std::mem::zeroed() }; batch])
        .collect();
    for (i, per_source) in msgs.iter_mut().enumerate() {
        for m in per_source.iter_mut() {
            m.msg_hdr.msg_iov = &mut iovs[i];
            m.msg_hdr.msg_iovlen = 1;
        }
    }
    let (mut sent, mut errors) = (0u64, 0u64);
    while sent < MAX_PACKETS_PER_PHASE && Instant::now() < deadline {
        for (s, per_source) in sources.iter().zip(msgs.iter_mut()) {
            // SAFETY: the headers point at iovecs and packets that outlive
            // the call; the sockets are connected, so no address is needed.
            let n = unsafe { libc::sendmmsg(s.fd, per_source.as_mut_ptr(), batch as libc::c_uint, 0) };
            if n > 0 {
                sent += n as u64;
            } else {
                errors += 1;
            }
        }
    }
    (sent, errors)
}

/// Paced: `rate` datagrams/s in total, one per source in turn, sent in
/// the small bursts that a ~0.2 ms sleep granularity allows.
fn paced(sources: &[Source], rate: f64, start: Instant, duration: Duration) -> (u64, u64) {
    let (mut sent, mut errors, mut next) = (0u64, 0u64, 0usize);
    let total = (rate * duration.as_secs_f64()) as u64;
    loop {
        let elapsed = start.elapsed();
        if elapsed >= duration || sent >= total {
            break;
        }
        let due = ((rate * elapsed.as_secs_f64()) as u64).min(total);
        while sent < due {
            let s = &sources[next];
            next = (next + 1) % sources.len();
            // SAFETY: fd is a connected socket and the buffer is valid.
            let n = unsafe { libc::send(s.fd, s.packet.as_ptr().cast(), s.packet.len(), 0) };
            if n < 0 {
                errors += 1;
            }
            sent += 1;
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    (sent, errors)
}

/// Counts datagrams on `sinks` with recvmmsg until `stop` and then until
/// the sockets are empty. Returns (good, bad, time of the last good one).
fn receive(sinks: &[Sink], stop: &AtomicBool) -> (u64, u64, Option<Instant>) {
    let mut bufs = vec![[0u8; RECV_BUF]; RECV_BATCH];
    let mut iovs: Vec<libc::iovec> = bufs
        .iter_mut()
        .map(|b| libc::iovec {
            iov_base: b.as_mut_ptr().cast(),
            iov_len: RECV_BUF,
        })
        .collect();
    // SAFETY: mmsghdr is plain data; all-zero is a valid empty header.
    let mut msgs: Vec<libc::mmsghdr> = vec![unsafe { std::mem::zeroed() }; RECV_BATCH];
    for (m, iov) in msgs.iter_mut().zip(iovs.iter_mut()) {
        m.msg_hdr.msg_iov = iov;
        m.msg_hdr.msg_iovlen = 1;
    }
    let mut pollfds: Vec<libc::pollfd> = sinks
        .iter()
        .map(|s| libc::pollfd {
            fd: s.fd,
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    let hard_deadline = Instant::now() + Duration::from_secs(120);
    let (mut good, mut bad, mut last) = (0u64, 0u64, None);
    loop {
        let stopping = stop.load(Ordering::Relaxed);
        let mut got = 0usize;
        for sink in sinks {
            for _ in 0..16 {
                // SAFETY: msgs point at RECV_BATCH valid buffers owned above.
                let n = unsafe {
                    libc::recvmmsg(
                        sink.fd,
                        msgs.as_mut_ptr(),
                        RECV_BATCH as libc::c_uint,
                        libc::MSG_DONTWAIT,
                        std::ptr::null_mut(),
                    )
                };
                if n <= 0 {
                    break;
                }
                let n = n as usize;
                got += n;
                last = Some(Instant::now());
                for (m, buf) in msgs[..n].iter().zip(bufs.iter()) {
                    let len = m.msg_len as usize;
                    if len == sink.len && buf[..sink.prefix.len()] == sink.prefix[..] {
                        good += 1;
                    } else {
                        bad += 1;
                    }
                }
                if n < RECV_BATCH {
                    break;
                }
            }
        }
        if got == 0 {
            if stopping || Instant::now() > hard_deadline {
                return (good, bad, last);
            }
            // SAFETY: pollfds is a valid array of pollfd.
            unsafe { libc::poll(pollfds.as_mut_ptr(), pollfds.len() as libc::nfds_t, 5) };
        }
    }
}

fn forward_source(f: &Flow, index: usize) -> Source {
    let mut packet = vec![0xA5u8; CD_HEADER + PAYLOAD];
    packet[..2].copy_from_slice(&f.channel.to_be_bytes());
    packet[2..4].copy_from_slice(&(PAYLOAD as u16).to_be_bytes());
    packet[4..8].copy_from_slice(&(index as u32).to_be_bytes());
    Source {
        fd: f.client.as_raw_fd(),
        packet,
    }
}

fn forward_sink(f: &Flow, index: usize) -> Sink {
    Sink {
        fd: f.peer.as_raw_fd(),
        len: PAYLOAD,
        prefix: (index as u32).to_be_bytes().to_vec(),
    }
}

fn reverse_source(f: &Flow, index: usize) -> Source {
    let mut packet = vec![0x5Au8; PAYLOAD];
    packet[..4].copy_from_slice(&(index as u32).to_be_bytes());
    Source {
        fd: f.peer.as_raw_fd(),
        packet,
    }
}

fn reverse_sink(f: &Flow, index: usize) -> Sink {
    let mut prefix = Vec::with_capacity(8);
    prefix.extend_from_slice(&f.channel.to_be_bytes());
    prefix.extend_from_slice(&(PAYLOAD as u16).to_be_bytes());
    prefix.extend_from_slice(&(index as u32).to_be_bytes());
    Sink {
        fd: f.client.as_raw_fd(),
        len: CD_HEADER + PAYLOAD,
        prefix,
    }
}

struct ServerResult {
    setup_secs: f64,
    forward: Phase,
    reverse: Phase,
    paced: Phase,
    rss_start_kb: u64,
    peak_rss_kb: u64,
    threads: u64,
}

fn measure(mut server: ServerProcess, s: &Settings) -> Result<ServerResult, String> {
    let pid = server.pid();
    eprintln!("{}: pid {pid}, listening on {}", server.name, server.addr);
    let rss_start_kb = status_kb(pid, "VmRSS");
    let t = Instant::now();
    let flows = (0..s.clients)
        .map(|i| {
            setup_flow(server.addr, i).map_err(|e| format!("{} client {i}: {e}\n{}", server.name, server.log_tail()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let setup_secs = t.elapsed().as_secs_f64();
    eprintln!(
        "{}: {} allocations with channels in {setup_secs:.2} s",
        server.name,
        flows.len()
    );

    // Every socket the generator holds now is a client or peer socket.
    let generator_sockets = socket_inodes(self_pid());
    let target = Target {
        pid,
        listen_port: server.addr.port(),
        server_sockets: socket_inodes(pid),
        generator_sockets: &generator_sockets,
        batch: s.batch,
    };
    let each = |f: fn(&Flow, usize) -> Source| flows.iter().enumerate().map(|(i, fl)| f(fl, i)).collect::<Vec<_>>();
    let sinks = |f: fn(&Flow, usize) -> Sink| flows.iter().enumerate().map(|(i, fl)| f(fl, i)).collect::<Vec<_>>();

    eprintln!("{}: fwd (client -> peer) at full speed for {} s", server.name, s.secs);
    let forward = run_phase(&target, &each(forward_source), sinks(forward_sink), s.secs, None);
    eprintln!("{}: rev (peer -> client) at full speed for {} s", server.name, s.secs);
    let reverse = run_phase(&target, &each(reverse_source), sinks(reverse_sink), s.secs, None);
    eprintln!(
        "{}: both directions paced at {} packets/s for {} s",
        server.name, s.rate, s.secs
    );
    let mut sources = each(forward_source);
    sources.extend(each(reverse_source));
    let mut both = sinks(forward_sink);
    both.extend(sinks(reverse_sink));
    let paced = run_phase(&target, &sources, both, s.secs, Some(s.rate));

    let threads = status_kb(pid, "Threads");
    let peak_rss_kb = status_kb(pid, "VmHWM");
    if let Ok(Some(status)) = server.child.try_wait() {
        return Err(format!(
            "{} exited during the run ({status}):\n{}",
            server.name,
            server.log_tail()
        ));
    }
    let log = fs::read_to_string(&server.log).unwrap_or_default();
    let complaints: Vec<&str> = log
        .lines()
        .filter(|l| {
            let l = l.to_ascii_lowercase();
            (l.contains("error") || l.contains("warn"))
                && !l.contains("config warning")
                && !l.contains("change_request")
                && !l.contains("relay address is loopback")
        })
        .take(5)
        .collect();
    if !complaints.is_empty() {
        eprintln!("{} log (first complaints):\n  {}", server.name, complaints.join("\n  "));
    }
    drop(flows);
    drop(server);
    Ok(ServerResult {
        setup_secs,
        forward,
        reverse,
        paced,
        rss_start_kb,
        peak_rss_kb,
        threads,
    })
}

// ---------------------------------------------------------------------------
// Report

fn print_header(s: &Settings) {
    let cpu = fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_else(|| "?".into());
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let cores = online_cpus();
    let load = fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("## turnpike vs coturn relay benchmark\n");
    println!(
        "{cores} cores ({cpu}), kernel {}, load average {}",
        kernel.trim(),
        load.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
    );
    println!(
        "{} clients, one channel each, {PAYLOAD}-byte payloads, {} s per phase, paced phase {} packets/s in total \
         (half each way), sendmmsg batch {}\n",
        s.clients, s.secs, s.rate, s.batch
    );
    match s.pin {
        Some((server, generator)) => println!(
            "server pinned to CPU {server}, load generator (sender + receiver threads) to CPU {generator} \
             (BENCH_PIN=0 to let the scheduler place them)\n"
        ),
        None => println!("no CPU pinning\n"),
    }
}

fn online_cpus() -> i64 {
    // SAFETY: sysconf has no preconditions.
    unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) }
}

fn fmt_count(v: f64) -> String {
    let v = v.round() as u64;
    let digits = v.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(' ');
        }
        out.push(c);
    }
    out
}

enum Better {
    Higher,
    Lower,
    Neither,
}

fn table(results: &[(&str, ServerResult)], s: &Settings) -> String {
    let mut out = String::new();
    let names: Vec<&str> = results.iter().map(|(n, _)| *n).collect();
    let pair = names == ["turnpike", "coturn"];
    let _ = write!(out, "| metric |");
    for n in &names {
        let _ = write!(out, " {n} |");
    }
    if pair {
        let _ = write!(out, " ratio (>1: turnpike better) |");
    }
    let _ = write!(out, "\n|---|");
    for _ in &names {
        let _ = write!(out, "---:|");
    }
    if pair {
        let _ = write!(out, "---:|");
    }
    out.push('\n');

    let mut row = |label: &str, f: &dyn Fn(&ServerResult) -> f64, fmt: &dyn Fn(f64) -> String, better: Better| {
        let _ = write!(out, "| {label} |");
        let vals: Vec<f64> = results.iter().map(|(_, r)| f(r)).collect();
        for v in &vals {
            let _ = write!(out, " {} |", fmt(*v));
        }
        if pair {
            let (t, c) = (vals[0], vals[1]);
            let ratio = match better {
                Better::Higher if c > 0.0 => format!("{:.2} (tp/co)", t / c),
                Better::Lower if t > 0.0 => format!("{:.2} (co/tp)", c / t),
                _ => "—".into(),
            };
            let _ = write!(out, " {ratio} |");
        }
        out.push('\n');
    };
    let count = |v: f64| fmt_count(v);
    let pct = |v: f64| format!("{v:.2} %");
    let pct1 = |v: f64| format!("{v:.1} %");
    let secs = |v: f64| format!("{v:.2} s");
    let mib = |v: f64| format!("{:.1} MiB", v / 1024.0);

    for (name, phase) in [
        ("fwd", (|r: &ServerResult| r.forward) as fn(&ServerResult) -> Phase),
        ("rev", |r: &ServerResult| r.reverse),
    ] {
        let dir = if name == "fwd" {
            "client→peer, full speed"
        } else {
            "peer→client, full speed"
        };
        row(
            &format!("**{name}** ({dir}): sent"),
            &|r| phase(r).sent as f64,
            &count,
            Better::Neither,
        );
        row(
            &format!("{name}: received"),
            &|r| phase(r).received as f64,
            &count,
            Better::Higher,
        );
        row(
            &format!("{name}: loss"),
            &|r| phase(r).loss_pct(),
            &pct,
            Better::Neither,
        );
        row(
            &format!("{name}: dropped at server listening socket buffers"),
            &|r| phase(r).drops.listener as f64,
            &count,
            Better::Neither,
        );
        row(
            &format!("{name}: dropped at server relay socket buffers"),
            &|r| phase(r).drops.relay as f64,
            &count,
            Better::Neither,
        );
        row(
            &format!("{name}: dropped at generator socket buffers"),
            &|r| phase(r).drops.generator as f64,
            &count,
            Better::Neither,
        );
        row(
            &format!("{name}: received packets/s"),
            &|r| phase(r).rx_pps(),
            &count,
            Better::Higher,
        );
        row(
            &format!("{name}: server CPU"),
            &|r| phase(r).server_cpu,
            &secs,
            Better::Neither,
        );
        row(
            &format!("{name}: server CPU % of one core"),
            &|r| phase(r).server_cpu_pct(),
            &pct1,
            Better::Neither,
        );
        row(
            &format!("{name}: generator CPU % of one core"),
            &|r| phase(r).generator_cpu_pct(),
            &pct1,
            Better::Neither,
        );
        row(
            &format!("**{name}: relayed packets per server CPU-second**"),
            &|r| phase(r).per_cpu_sec(),
            &|v| format!("**{}**", fmt_count(v)),
            Better::Higher,
        );
    }
    let rate = fmt_count(s.rate);
    row(
        &format!("**paced** ({rate}/s, both ways): sent"),
        &|r| r.paced.sent as f64,
        &count,
        Better::Neither,
    );
    row("paced: received", &|r| r.paced.received as f64, &count, Better::Neither);
    row("paced: loss", &|r| r.paced.loss_pct(), &pct, Better::Neither);
    row(
        "paced: dropped at server listening socket buffers",
        &|r| r.paced.drops.listener as f64,
        &count,
        Better::Neither,
    );
    row(
        "paced: dropped at server relay socket buffers",
        &|r| r.paced.drops.relay as f64,
        &count,
        Better::Neither,
    );
    row(
        "paced: dropped at generator socket buffers",
        &|r| r.paced.drops.generator as f64,
        &count,
        Better::Neither,
    );
    row(
        &format!("**paced: server CPU % of one core at {rate} packets/s**"),
        &|r| r.paced.server_cpu_pct(),
        &|v| format!("**{v:.1} %**"),
        Better::Lower,
    );
    row(
        "paced: server CPU µs per relayed packet",
        &|r| 1e6 * r.paced.server_cpu / r.paced.received.max(1) as f64,
        &|v| format!("{v:.2}"),
        Better::Lower,
    );
    row("RSS after start", &|r| r.rss_start_kb as f64, &mib, Better::Lower);
    row("peak RSS (VmHWM)", &|r| r.peak_rss_kb as f64, &mib, Better::Lower);
    row("server threads", &|r| r.threads as f64, &count, Better::Neither);
    row(
        &format!("setup: {} Allocate + ChannelBind", s.clients),
        &|r| r.setup_secs,
        &secs,
        Better::Neither,
    );
    let anomalies: Vec<String> = results
        .iter()
        .flat_map(|(n, r)| {
            [("fwd", r.forward), ("rev", r.reverse), ("paced", r.paced)]
                .into_iter()
                .filter(|(_, p)| p.bad > 0 || p.send_errors > 0)
                .map(move |(ph, p)| {
                    format!(
                        "{n} {ph}: {} unexpected datagrams, {} failed sends",
                        p.bad, p.send_errors
                    )
                })
        })
        .collect();
    if !anomalies.is_empty() {
        let _ = writeln!(out, "\nanomalies: {}", anomalies.join("; "));
    }
    // A server that got much less than its core during a full-speed phase
    // was sharing it with something else: its loss and packets/s then say
    // more about the machine than about the server.
    let mut starved = Vec::new();
    for (n, r) in results {
        for (ph, p) in [("fwd", r.forward), ("rev", r.reverse)] {
            if p.server_cpu_pct() < STARVED_PCT {
                starved.push(format!("{n} {ph} {:.0} %", p.server_cpu_pct()));
            }
        }
    }
    if !starved.is_empty() {
        let _ = writeln!(
            out,
            "\nnote: in full-speed phases a server below {STARVED_PCT:.0} % of its core was short of CPU ({}); \
             compare relayed packets per CPU-second there, not loss or packets/s",
            starved.join(", ")
        );
    }
    out
}

/// Server CPU share below which a full-speed phase is flagged as starved.
const STARVED_PCT: f64 = 70.0;
