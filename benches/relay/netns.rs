//! Namespace mode's network: the server in a network namespace of its
//! own behind a veth pair, the load generator (this process's main thread
//! and every thread it starts afterwards) in another.
//!
//! ```text
//!  tpbench-<pid>-srv                            tpbench-<pid>-gen
//!  server 10.213.0.1 ── tps<n> ═══ veth ═══ tpg<n> ── clients 10.213.0.2-17
//!  (listens and relays;  (XDP here              │       peers   10.213.0.100
//!   forwarding on)        with fast_path=xdp)   └── the bench's generator
//! ```
//!
//! Both ends of the veth pair:
//!
//! * checksum offload off (`ethtool -K tx off rx off`), so every frame
//!   carries a real UDP checksum, which the XDP program updates;
//! * GRO on, which gives the end a NAPI instance (without one veth hands
//!   a received frame to the backlog, in softirq);
//! * NAPI threaded (`/sys/class/net/<dev>/threaded`), the poll thread
//!   pinned to its side's CPU. Without threads veth runs the receiving
//!   end's NAPI poll in softirq inside the *sender's* system call, and
//!   this kernel (tick-based CPU accounting, no
//!   `CONFIG_IRQ_TIME_ACCOUNTING`) charges softirq to the interrupted
//!   task: the server's XDP work would be billed to the generator, whose
//!   CPU the host figure subtracts;
//! * no interrupt moderation: emulated with `gro_flush_timeout` 50 µs and
//!   `napi_defer_hard_irqs` 100 (a poll that found work polls again 50 µs
//!   later instead of being woken by the next frame), it doubled the fast
//!   path's host CPU per packet in this VM, where every timer interrupt
//!   costs an exit to the hypervisor (measured: 4.8-5.6 µs without, 7-12
//!   µs with).
//!
//! The generator's end also has an XDP program that passes everything:
//! turnpike's own, loaded with no route, as `tests/xdp/topology.rs` does
//! (every frame is `PassNoRoute` or `PassNotChannel`). veth queues a frame
//! its peer sent with `XDP_TX` on the receiving end's ring, but schedules
//! that end's NAPI poll only if the end has an XDP program of its own
//! (`veth_xdp_flush` in drivers/net/veth.c). GRO alone gives the ring but not the wake-up:
//! measured, the first 253 relayed frames filled the 256-slot ring and
//! everything after was dropped. It is attached for every server, so all
//! of them relay into the same far end. That end's NAPI thread is
//! real-time (`SCHED_FIFO` 1): it stands for the far hosts, which should
//! lose nothing the relay sent.
//!
//! Static neighbour entries both ways (the program's `bpf_fib_lookup`
//! needs the next hop resolved), IPv4 forwarding on in the server's
//! namespace (`bpf_fib_lookup` for XDP requires it).
//!
//! Nothing leaves the two namespaces: they have no other interface and no
//! route but the veth's /24. Both are deleted when [`Topology`] is
//! dropped (also on a panic); namespaces left by a bench that was killed
//! (`tpbench-<pid>-*` whose process is gone) are deleted at the next start.

use std::ffi::CString;
use std::fs::{self, File};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use aya::programs::XdpMode;
use turnpike::net::xdp::RelayProgram;

use crate::procfs::pin_pid;

/// The subnet of the veth pair: 10.213.0.0/24.
pub const PREFIX: [u8; 3] = [10, 213, 0];
/// Hosts of the generator's end: the clients and the peers (turn.rs).
const GENERATOR_HOSTS: [u8; 17] = [2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 100];
const SERVER_MAC: &str = "02:74:70:00:00:01";
const GENERATOR_MAC: &str = "02:74:70:00:00:02";
/// Longest an `ip`, `ethtool` or `sh` step may take.
const STEP_MAX: Duration = Duration::from_secs(10);
const NS_PREFIX: &str = "tpbench-";

pub struct Topology {
    pub server_ns: String,
    generator_ns: String,
    /// The server's end of the veth pair (`fast_path_interfaces`).
    pub server_dev: String,
    generator_dev: String,
    server_file: Option<File>,
    /// The main thread's namespace before it entered the generator's.
    home: Option<File>,
    /// NAPI poll threads of each end (kernel threads `napi/<dev>-<id>`).
    pub napi_server: Vec<u32>,
    pub napi_generator: Vec<u32>,
    /// The generator's end's pass-everything program (attached while held).
    far_end: Option<RelayProgram>,
}

impl Topology {
    /// Creates the namespaces and the veth pair and sets both ends up;
    /// with `pin` (server CPU, generator CPU), pins each end's NAPI thread
    /// to its side's CPU.
    pub fn create(pin: Option<(usize, usize)>) -> Result<Topology, String> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Err("namespace mode needs root (ip netns, setns, XDP)".into());
        }
        for tool in ["ip", "ethtool"] {
            if which(tool).is_none() {
                return Err(format!(
                    "namespace mode needs `{tool}` (scripts/bench.sh --netns installs ethtool and iproute2)"
                ));
            }
        }
        sweep_stale();
        let pid = std::process::id();
        let n = pid % 100_000;
        let mut t = Topology {
            server_ns: format!("{NS_PREFIX}{pid}-srv"),
            generator_ns: format!("{NS_PREFIX}{pid}-gen"),
            server_dev: format!("tps{n}"),
            generator_dev: format!("tpg{n}"),
            server_file: None,
            home: None,
            napi_server: Vec::new(),
            napi_generator: Vec::new(),
            far_end: None,
        };
        // From here on, dropping `t` removes whatever was made.
        run("ip", &["netns", "add", &t.server_ns])?;
        run("ip", &["netns", "add", &t.generator_ns])?;
        let (s, g) = (t.server_ns.clone(), t.generator_ns.clone());
        let (sd, gd) = (t.server_dev.clone(), t.generator_dev.clone());
        #[rustfmt::skip]
        run("ip", &[
            "link", "add", &sd, "address", SERVER_MAC, "netns", &s,
            "type", "veth", "peer", "name", &gd, "address", GENERATOR_MAC, "netns", &g,
        ])?;
        let host = |n: u8| format!("{}.{}.{}.{n}", PREFIX[0], PREFIX[1], PREFIX[2]);
        run("ip", &["-n", &s, "addr", "add", &format!("{}/24", host(1)), "dev", &sd])?;
        for h in GENERATOR_HOSTS {
            run("ip", &["-n", &g, "addr", "add", &format!("{}/24", host(h)), "dev", &gd])?;
            #[rustfmt::skip]
            run("ip", &["-n", &s, "neigh", "replace", &host(h), "lladdr", GENERATOR_MAC, "dev", &sd, "nud", "permanent"])?;
        }
        #[rustfmt::skip]
        run("ip", &["-n", &g, "neigh", "replace", &host(1), "lladdr", SERVER_MAC, "dev", &gd, "nud", "permanent"])?;
        for (ns, dev) in [(&s, &sd), (&g, &gd)] {
            run("ip", &["-n", ns, "link", "set", "lo", "up"])?;
            run("ip", &["-n", ns, "link", "set", dev, "up"])?;
            run(
                "ip",
                &[
                    "netns", "exec", ns, "ethtool", "-K", dev, "tx", "off", "rx", "off", "gro", "on",
                ],
            )?;
            let threaded = format!("echo 1 > /sys/class/net/{dev}/threaded");
            run("ip", &["netns", "exec", ns, "sh", "-c", &threaded])?;
        }
        t.far_end = Some(pass_everything(&open_ns(&g)?, &gd)?);
        let forwarding = format!(
            "echo 1 > /proc/sys/net/ipv4/conf/all/forwarding && echo 1 > /proc/sys/net/ipv4/conf/{sd}/forwarding"
        );
        run("ip", &["netns", "exec", &s, "sh", "-c", &forwarding])?;
        t.napi_server = kernel_threads(&format!("napi/{sd}-"));
        t.napi_generator = kernel_threads(&format!("napi/{gd}-"));
        if t.napi_server.is_empty() || t.napi_generator.is_empty() {
            return Err(format!(
                "no NAPI thread for {sd} or {gd} after `threaded` was set (found {:?} and {:?})",
                t.napi_server, t.napi_generator
            ));
        }
        if let Some((server_cpu, generator_cpu)) = pin {
            for (pids, cpu) in [(&t.napi_server, server_cpu), (&t.napi_generator, generator_cpu)] {
                for &p in pids {
                    pin_pid(p, cpu).map_err(|e| format!("pin NAPI thread {p} to CPU {cpu}: {e}"))?;
                }
            }
        }
        for &p in &t.napi_generator {
            realtime(p)?;
        }
        t.server_file = Some(open_ns(&s)?);
        Ok(t)
    }

    /// The server's namespace, for `setns` in a child before exec.
    pub fn server_file(&self) -> Option<&File> {
        self.server_file.as_ref()
    }

    /// Moves the calling thread into the generator's namespace: sockets it
    /// opens and threads it starts from now on live there. Call it on the
    /// thread that drops the topology, which moves it back.
    pub fn enter_generator(&mut self) -> Result<(), String> {
        let home = File::open("/proc/thread-self/ns/net").map_err(|e| format!("/proc/thread-self/ns/net: {e}"))?;
        setns(&open_ns(&self.generator_ns)?)?;
        self.home = Some(home);
        Ok(())
    }

    /// GET `path` from `port` on the server namespace's loopback, from a
    /// thread that enters that namespace (turnpike's /metrics never leaves
    /// it); at most 5 s.
    pub fn http_get(&self, port: u16, path: &str) -> Result<String, String> {
        let ns = self.server_file.as_ref().ok_or("no server namespace")?;
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    setns(ns)?;
                    http_get(SocketAddr::from(([127, 0, 0, 1], port)), path)
                })
                .join()
                .map_err(|_| "the HTTP thread panicked".to_string())?
        })
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        // Back home first: a namespace this thread is in would outlive
        // its name, veth and all.
        if let Some(home) = self.home.take() {
            let _ = setns(&home);
        }
        self.far_end = None;
        self.server_file = None;
        for ns in [&self.server_ns, &self.generator_ns] {
            let _ = run("ip", &["netns", "delete", ns]);
        }
    }
}

/// turnpike's program with no route, attached natively to `device` in
/// the namespace `ns`, from a thread that enters it.
fn pass_everything(ns: &File, device: &str) -> Result<RelayProgram, String> {
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                setns(ns)?;
                let (mut program, _no_routes) =
                    RelayProgram::load(16).map_err(|e| format!("load the far end's XDP program: {e}"))?;
                let name = CString::new(device).map_err(|e| e.to_string())?;
                // SAFETY: a NUL-terminated name; the call reads nothing else.
                let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
                if ifindex == 0 {
                    return Err(format!("{device} has no interface index"));
                }
                program
                    .attach(ifindex, XdpMode::Driver)
                    .map_err(|e| format!("attach the far end's XDP program to {device}: {e}"))?;
                Ok(program)
            })
            .join()
            .map_err(|_| "the far end's loader panicked".to_string())?
    })
}

fn open_ns(name: &str) -> Result<File, String> {
    let path = format!("/run/netns/{name}");
    File::open(&path).map_err(|e| format!("{path}: {e}"))
}

/// Moves the calling thread into the network namespace `ns`.
pub fn setns(ns: &File) -> Result<(), String> {
    // SAFETY: setns on an open namespace file changes only the calling
    // thread's network namespace.
    if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(format!("setns: {}", std::io::Error::last_os_error()));
    }
    Ok(())
}

/// Deletes the namespaces of benches that are gone (killed before their
/// guard ran).
fn sweep_stale() {
    let Ok(dir) = fs::read_dir("/run/netns") else {
        return;
    };
    for entry in dir.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(NS_PREFIX)
            .and_then(|r| r.split('-').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            eprintln!("deleting namespace {name} left by bench process {pid}");
            let _ = run("ip", &["netns", "delete", &name]);
        }
    }
}

/// Gives a thread `SCHED_FIFO` priority 1: the generator's end delivers
/// every relayed frame into the generator's sockets as soon as it comes,
/// ahead of the generator's own sending on the same CPU. Otherwise the
/// sender, busy at full speed, can hold that CPU for a scheduler slice
/// (milliseconds) while the end's 256-slot ring overflows, and the
/// relayed frames it drops would count as the server's loss (measured:
/// 42 % of the fast path's frames at 100 kpps).
fn realtime(pid: u32) -> Result<(), String> {
    let param = libc::sched_param { sched_priority: 1 };
    // SAFETY: param is a valid sched_param for the call.
    if unsafe { libc::sched_setscheduler(pid as libc::pid_t, libc::SCHED_FIFO, &param) } != 0 {
        return Err(format!(
            "SCHED_FIFO for NAPI thread {pid}: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

/// Pids of the kernel threads whose name starts with `prefix`.
fn kernel_threads(prefix: &str) -> Vec<u32> {
    // The name is cut at 15 bytes.
    let prefix = &prefix[..prefix.len().min(15)];
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| {
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            let comm = fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
            comm.starts_with(prefix).then_some(pid)
        })
        .collect()
}

fn which(tool: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/sbin:/usr/bin:/sbin:/bin".into());
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
}

/// Runs one setup step, at most `STEP_MAX`; an error with its output if
/// it fails.
fn run(tool: &str, args: &[&str]) -> Result<(), String> {
    let bin = which(tool).ok_or_else(|| format!("`{tool}` not found"))?;
    let mut child = Command::new(&bin)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("{tool}: {e}"))?;
    let deadline = Instant::now() + STEP_MAX;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("{tool} {} did not finish within {STEP_MAX:?}", args.join(" ")));
            }
        }
    };
    if status.success() {
        return Ok(());
    }
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    Err(format!("{tool} {}: {status}: {}", args.join(" "), err.trim()))
}

/// A plain HTTP/1.0 GET; the body of a 200.
fn http_get(addr: SocketAddr, path: &str) -> Result<String, String> {
    let timeout = Duration::from_secs(5);
    let mut s = TcpStream::connect_timeout(&addr, timeout).map_err(|e| format!("connect {addr}: {e}"))?;
    s.set_read_timeout(Some(timeout)).map_err(|e| e.to_string())?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").map_err(|e| e.to_string())?;
    let mut text = String::new();
    s.take(16 << 20)
        .read_to_string(&mut text)
        .map_err(|e| format!("read {path}: {e}"))?;
    let (head, body) = text.split_once("\r\n\r\n").ok_or("no HTTP header end")?;
    if !head.starts_with("HTTP/1.1 200") && !head.starts_with("HTTP/1.0 200") {
        return Err(format!("GET {path}: {}", head.lines().next().unwrap_or("")));
    }
    Ok(body.to_string())
}
