//! Relay benchmark: turnpike against coturn on loopback, per CPU core.
//!
//! One command (`scripts/bench.sh [ROUNDS]` or `cargo bench --bench
//! relay`) measures every figure of BENCHMARKS.md on both servers, in
//! several interleaved rounds (turnpike, coturn, bare forwarder, turnpike,
//! coturn, ...), each round with fresh server processes, and prints the
//! medians over the rounds with the ratio turnpike ÷ coturn beside its
//! goal, then every raw measurement.
//!
//! The headline of the data-plane figures is server CPU per relayed packet:
//! utime + stime of the whole server process (all threads, from
//! `/proc/<pid>/stat`) over the datagrams that arrived at the far side. It
//! stays meaningful when the load generator saturates its own core. By
//! default the server (all its threads) is pinned to one CPU and the
//! generator to another (`BENCH_PIN=0` turns that off).
//!
//! Every packet goes to 127.0.0.0/8 only (clients on 127.0.0.2-17, peers
//! on 127.0.0.100, servers on 127.0.0.1); every loop is bounded in time and
//! in count. Without `--bench` on the command line (as under `cargo test
//! --all-targets`) it prints a note and returns. Started as `relay
//! --forwarder ...` it is the bare UDP forwarder (see `forwarder.rs`).
//!
//! Namespace mode (`BENCH_NETNS=1`, `scripts/bench.sh --netns`) runs the
//! UDP, relay ↔ relay and ping-pong RTT figures with the server in a network namespace
//! behind a veth pair (`netns.rs`), turnpike also with the XDP fast path
//! (`turnpike-xdp`), the load in a closed loop, and the headline in host
//! CPU per relayed packet (`host.rs`): the fast path's work is in the
//! kernel, charged to no server process. Its packets never leave the two
//! namespaces it creates and removes.
//!
//! Knobs (environment variables, BENCHMARKS.md lists them all):
//! `BENCH_ROUNDS`, `BENCH_SECS`, `BENCH_FLOWS`, `BENCH_CLIENTS`,
//! `BENCH_RATE`, `BENCH_BATCH`, `BENCH_BURST`, `BENCH_IDLE`,
//! `BENCH_PINGS`, `BENCH_CONNS`, `BENCH_FIGURES`, `BENCH_ONLY`,
//! `BENCH_PIN`, `BENCH_PAIRED_ALSO`, `BENCH_NETNS`, `BENCH_WINDOW`,
//! `TURNPIKE_BIN`, `TURNSERVER_BIN`.

// The benchmark measures wall time: reading the clock is the point here.
#![allow(clippy::disallowed_methods)]

mod burst;
mod forwarder;
mod host;
mod load;
mod namespace;
mod netns;
mod procfs;
mod report;
mod servers;
mod stream;
mod turn;

use std::fs;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use host::HostMeter;
use load::{forward, reverse, run_phase, Meter, Offer, Phase, Sink, Source};
use netns::Topology;
use procfs::{cpu_seconds, fd_count, status_kb, Sockets};
use report::{Columns, Figure, Goal, Sample};
use servers::{Kind, ServerProcess, TlsFiles};
use turn::{channel_data, client_ip, cred, lo, load_mode, raw_payload, CD_HEADER};

/// The two payload sizes: a small audio frame and a full video packet.
const SMALL: usize = 100;
const LARGE: usize = 1200;
/// Hard bounds of the burst and idle figures.
const BURST_MAX: Duration = Duration::from_secs(60);
const RTT_MAX: Duration = Duration::from_secs(30);

struct Settings {
    rounds: usize,
    secs: f64,
    /// Allocations in the "many flows" figures (64).
    flows: usize,
    /// Flows of the paced figure (32).
    paced_flows: usize,
    rate: f64,
    batch: usize,
    burst: usize,
    idle: usize,
    pings: usize,
    conns: usize,
    figures: Option<Vec<String>>,
    only: Option<String>,
    /// CPUs for (server, generator), when pinning.
    pin: Option<(usize, usize)>,
    /// Namespace mode (`BENCH_NETNS=1`): the server behind a veth pair,
    /// host CPU per packet, turnpike also with the XDP fast path.
    netns: bool,
    /// Namespace mode's closed-loop window: datagrams in flight at most.
    window: u64,
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

impl Settings {
    fn from_env() -> Settings {
        let flows = env_or("BENCH_FLOWS", 64usize).clamp(2, 1000) / 2 * 2;
        Settings {
            rounds: env_or("BENCH_ROUNDS", 3usize).clamp(1, 50),
            secs: env_or("BENCH_SECS", 2.0f64).clamp(0.5, 30.0),
            flows,
            paced_flows: env_or("BENCH_CLIENTS", 32usize).clamp(1, flows),
            rate: env_or("BENCH_RATE", 20_000.0f64).clamp(100.0, 1_000_000.0),
            batch: env_or("BENCH_BATCH", 16usize).clamp(1, 256),
            burst: env_or("BENCH_BURST", 4000usize).clamp(1, 50_000),
            idle: env_or("BENCH_IDLE", 10_000usize).clamp(1, 50_000),
            pings: env_or("BENCH_PINGS", 2000usize).clamp(10, 100_000),
            conns: env_or("BENCH_CONNS", 16usize).clamp(1, 256),
            figures: std::env::var("BENCH_FIGURES")
                .ok()
                .filter(|s| !s.is_empty())
                .map(|s| s.split(',').map(|g| g.trim().to_string()).collect()),
            only: std::env::var("BENCH_ONLY").ok().filter(|s| !s.is_empty()),
            pin: if env_or("BENCH_PIN", 1u8) == 1 {
                procfs::two_cpus()
            } else {
                None
            },
            netns: env_or("BENCH_NETNS", 0u8) == 1,
            window: env_or("BENCH_WINDOW", 256u64).clamp(256, 1 << 20),
        }
    }

    /// Whether a group of figures (udp, r2r, paced, rtt, rtt-paired, tcp,
    /// tls, burst, idle, fwd) is to run.
    fn group(&self, name: &str) -> bool {
        if self.netns && !namespace::NETNS_GROUPS.contains(&name) {
            return false;
        }
        self.figures.as_ref().is_none_or(|g| g.iter().any(|x| x == name))
    }

    fn server_cpu(&self) -> Option<usize> {
        self.pin.map(|p| p.0)
    }
}

fn figures(s: &Settings) -> Vec<Figure> {
    if s.netns {
        return namespace::figures(s.flows, s.pings);
    }
    let n = s.flows;
    let c = s.conns;
    let us = "server CPU µs per relayed packet";
    let f = |key, label: String, unit, goal| Figure { key, label, unit, goal };
    vec![
        f(
            "udp-1-100",
            "client ↔ relay ↔ UDP peer, 1 flow, 100 B".into(),
            us,
            Goal::AtMost(0.62),
        ),
        f(
            "udp-n-100",
            format!("client ↔ relay ↔ UDP peer, {n} allocations, 100 B"),
            us,
            Goal::AtMost(0.67),
        ),
        f(
            "udp-1-1200",
            "client ↔ relay ↔ UDP peer, 1 flow, 1200 B".into(),
            us,
            Goal::Report,
        ),
        f(
            "udp-n-1200",
            format!("client ↔ relay ↔ UDP peer, {n} allocations, 1200 B"),
            us,
            Goal::Report,
        ),
        f(
            "r2r-1-100",
            "relay ↔ relay, 1 flow (2 allocations), 100 B".into(),
            us,
            Goal::AtMost(0.40),
        ),
        f(
            "r2r-n-100",
            format!("relay ↔ relay, {n} allocations ({} pairs), 100 B", n / 2),
            us,
            Goal::AtMost(0.40),
        ),
        f(
            "r2r-1-1200",
            "relay ↔ relay, 1 flow (2 allocations), 1200 B".into(),
            us,
            Goal::Report,
        ),
        f(
            "r2r-n-1200",
            format!("relay ↔ relay, {n} allocations ({} pairs), 1200 B", n / 2),
            us,
            Goal::Report,
        ),
        f(
            "alloc-rate",
            format!("Allocate + 401 dance burst, {} clients", s.burst),
            "allocations/s",
            Goal::AtLeast(5.0),
        ),
        f(
            "alloc-cpu",
            format!("Allocate + 401 dance burst, {} clients", s.burst),
            "server CPU ms per allocation",
            Goal::Report,
        ),
        f(
            "idle-mem",
            format!("memory per idle allocation ({} allocations)", s.idle),
            "KiB of VmRSS per allocation",
            Goal::AtMost(0.05),
        ),
        f(
            "paced-cpu",
            format!(
                "paced: {} packets/s in all, half each way, over {} flows, 100 B",
                s.rate, s.paced_flows
            ),
            "server CPU % of one core",
            Goal::Report,
        ),
        f(
            "rtt-p50",
            format!(
                "ping-pong client → relay → peer → relay → client, {} pings, 100 B",
                s.pings
            ),
            "RTT p50 µs",
            Goal::AtMost(1.0),
        ),
        f(
            "rtt-p99",
            format!(
                "ping-pong client → relay → peer → relay → client, {} pings, 100 B",
                s.pings
            ),
            "RTT p99 µs",
            Goal::Report,
        ),
        f(
            "rtt-paired-p50",
            format!(
                "same, both servers running, one ping through each in turn, {} pings each",
                s.pings
            ),
            "RTT p50 µs",
            Goal::AtMost(1.0),
        ),
        f(
            "rtt-paired-p99",
            format!(
                "same, both servers running, one ping through each in turn, {} pings each",
                s.pings
            ),
            "RTT p99 µs",
            Goal::Report,
        ),
        f(
            "tcp-1",
            "TURN/TCP client ↔ relay ↔ UDP peer, 1 connection, 100 B".into(),
            us,
            Goal::Report,
        ),
        f(
            "tcp-n",
            format!("TURN/TCP client ↔ relay ↔ UDP peer, {c} connections, 100 B"),
            us,
            Goal::Report,
        ),
        f(
            "tls-1",
            "TURN/TLS client ↔ relay ↔ UDP peer, 1 connection, 100 B".into(),
            us,
            Goal::Report,
        ),
        f(
            "tls-n",
            format!("TURN/TLS client ↔ relay ↔ UDP peer, {c} connections, 100 B"),
            us,
            Goal::Report,
        ),
    ]
}

/// The bare forwarder's two variants: (server name in the samples, label).
const FORWARDERS: [(&str, &str); 2] = [("fwd-plain", "recvfrom/sendto"), ("fwd-mmsg", "recvmmsg/sendmmsg ×32")];

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--forwarder") {
        std::process::exit(forwarder::main(&args[2..]));
    }
    if !args.iter().any(|a| a == "--bench") {
        println!("relay benchmark: skipped (run `cargo bench --bench relay` or scripts/bench.sh)");
        return;
    }
    if let Err(e) = run() {
        eprintln!("relay benchmark failed: {e}");
        std::process::exit(1);
    }
}

/// What every round shares.
struct Context {
    work: PathBuf,
    tls: TlsFiles,
    tls_client: rustls::ClientConfig,
    /// Idle allocations actually made (the descriptor limit may cap them).
    idle: usize,
    /// Namespace mode's network; this thread is in its generator side.
    netns: Option<Topology>,
}

fn run() -> Result<(), String> {
    let work = std::env::temp_dir().join(format!("turnpike-bench-{}", std::process::id()));
    fs::create_dir_all(&work).map_err(|e| format!("create {}: {e}", work.display()))?;
    match measure_all(&work) {
        Ok(()) => {
            let _ = fs::remove_dir_all(&work);
            Ok(())
        }
        Err(e) => Err(format!("{e}\n(configs and server logs are kept in {})", work.display())),
    }
}

fn measure_all(work: &Path) -> Result<(), String> {
    let mut settings = Settings::from_env();

    let want = |name: &str| settings.only.as_deref().is_none_or(|o| o == name);
    let mut servers: Vec<(Kind, PathBuf)> = Vec::new();
    if want("turnpike") || (settings.netns && want("turnpike-xdp")) {
        let bin = turnpike_binary()?;
        if want("turnpike") {
            servers.push((Kind::Turnpike, bin.clone()));
        }
        if settings.netns && want("turnpike-xdp") {
            servers.push((Kind::TurnpikeXdp, bin));
        }
    }
    if want("coturn") {
        let bin = std::env::var("TURNSERVER_BIN").unwrap_or_else(|_| "/usr/bin/turnserver".into());
        if Path::new(&bin).exists() {
            servers.push((Kind::Coturn, PathBuf::from(bin)));
        } else {
            eprintln!("note: {bin} not found (apt-get install coturn); measuring without coturn");
        }
    }
    // 10 000 idle allocations take a descriptor each in the generator (its
    // client socket) and in the server (the relay socket): raise the soft
    // limit to the hard one, which the servers inherit, and cap the idle
    // figure to what fits.
    let nofile = procfs::raise_nofile() as usize;
    let fit = nofile.saturating_sub(500);
    let mut notes = Vec::new();
    if settings.idle > fit && settings.group("idle") {
        notes.push(format!(
            "the descriptor limit ({nofile}) fits {fit} idle allocations, not {}: measured with {fit} on both servers \
             (raise the hard RLIMIT_NOFILE above {} for the full figure)",
            settings.idle,
            settings.idle + 500
        ));
        settings.idle = fit;
    }
    if let Some(f) = settings.figures.as_ref().filter(|_| settings.netns) {
        let skipped: Vec<&str> = f
            .iter()
            .map(String::as_str)
            .filter(|g| !namespace::NETNS_GROUPS.contains(g))
            .collect();
        if !skipped.is_empty() {
            notes.push(format!(
                "namespace mode measures {} only; not {}",
                namespace::NETNS_GROUPS.join(", "),
                skipped.join(", ")
            ));
        }
    }
    let netns = if settings.netns {
        // Before the first address is used: every client, peer and server
        // address moves to the veth's subnet.
        turn::set_network(netns::PREFIX)?;
        let mut t = Topology::create(settings.pin)?;
        t.enter_generator()?;
        Some(t)
    } else {
        None
    };
    let (tls, ca) = servers::make_pki(work)?;
    let ctx = Context {
        tls_client: turn::tls_client_config(&ca)?,
        tls,
        work: work.to_path_buf(),
        idle: settings.idle,
        netns,
    };
    if let Some((_, generator_cpu)) = settings.pin {
        // Threads started from now on (the receivers) inherit this.
        procfs::pin_to(generator_cpu).map_err(|e| format!("sched_setaffinity: {e}"))?;
    }
    print_header(&settings, nofile);

    let figs = figures(&settings);
    let mut samples: Vec<Sample> = Vec::new();
    let started = Instant::now();
    for round in 1..=settings.rounds {
        for (kind, bin) in &servers {
            eprintln!("== round {round} of {}: {}", settings.rounds, kind.name());
            server_round(*kind, bin, &settings, &ctx, round, &mut samples)?;
        }
        if settings.group("rtt-paired") && !servers.is_empty() {
            eprintln!("== round {round} of {}: paired ping-pong", settings.rounds);
            paired_rtt(&servers, &settings, &ctx, round, &mut samples)?;
        }
        if settings.group("fwd") {
            for (name, _) in FORWARDERS {
                eprintln!("== round {round} of {}: {name}", settings.rounds);
                forwarder_round(name, &settings, &ctx, round, &mut samples)?;
            }
        }
    }
    println!(
        "medians of {} rounds (all rounds took {:.0} s):\n",
        settings.rounds,
        started.elapsed().as_secs_f64()
    );
    let columns = if settings.netns {
        Columns {
            servers: vec!["coturn", "turnpike", "turnpike-xdp"],
            base: "coturn",
            goal_for: "turnpike-xdp",
        }
    } else {
        Columns {
            servers: vec!["turnpike", "coturn"],
            base: "coturn",
            goal_for: "turnpike",
        }
    };
    print!("{}", report::table(&figs, &samples, &columns));
    let reference = report::reference(&figs, &samples, &FORWARDERS);
    if !reference.is_empty() {
        println!("\nreference: a bare UDP forwarder (no protocol) doing the same socket work, medians:\n");
        print!("{reference}");
    }
    println!("\nraw numbers, every round:\n");
    print!("{}", report::raw(&figs, &samples));
    notes.extend(report::starved(&samples));
    if settings.netns {
        notes.extend(namespace::accounting_note(&samples, &columns.servers));
    }
    for n in &notes {
        println!("\nnote: {n}");
    }
    Ok(())
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

// ---------------------------------------------------------------------------
// One round of one server

fn server_round(
    kind: Kind,
    bin: &Path,
    s: &Settings,
    ctx: &Context,
    round: usize,
    out: &mut Vec<Sample>,
) -> Result<(), String> {
    let cpu = s.server_cpu();
    if s.group("udp") || s.group("r2r") || s.group("paced") || s.group("rtt") {
        let netns = ctx.netns.as_ref();
        let server = servers::start(kind, bin, &ctx.work, cpu, None, netns, &format!("udp-{round}"))?;
        data_plane(server, s, ctx, round, out)?;
    }
    if s.group("tcp") || s.group("tls") {
        let server = servers::start(
            kind,
            bin,
            &ctx.work,
            cpu,
            Some(&ctx.tls),
            None,
            &format!("stream-{round}"),
        )?;
        streams(server, s, ctx, round, out)?;
    }
    if s.group("burst") {
        let server = servers::start(kind, bin, &ctx.work, cpu, None, None, &format!("burst-{round}"))?;
        allocate_burst(server, s, round, out)?;
    }
    if s.group("idle") {
        let server = servers::start(kind, bin, &ctx.work, cpu, None, None, &format!("idle-{round}"))?;
        idle_memory(server, ctx.idle, round, out)?;
    }
    Ok(())
}

/// The ping-pong with every server running at once (fresh processes, all
/// pinned to the server CPU, one allocation each), one ping through each
/// in turn: the machine's state, which moves a round's RTT by ±10 % and
/// more, is then the same for both, and their ratio is far steadier than
/// that of the `rtt` figure, whose servers run one after the other.
fn paired_rtt(
    servers: &[(Kind, PathBuf)],
    s: &Settings,
    ctx: &Context,
    round: usize,
    out: &mut Vec<Sample>,
) -> Result<(), String> {
    let cred = cred();
    // `BENCH_PAIRED_ALSO` names another turnpike binary (an earlier build)
    // to run in the same loop: its numbers go to the progress lines only.
    let also = std::env::var("BENCH_PAIRED_ALSO").ok().filter(|b| !b.is_empty());
    let mut running = servers
        .iter()
        .map(|(kind, bin)| {
            servers::start(
                *kind,
                bin,
                &ctx.work,
                s.server_cpu(),
                None,
                None,
                &format!("paired-{round}"),
            )
        })
        .collect::<Result<Vec<_>, _>>()?;
    if let Some(bin) = &also {
        let tag = format!("paired-also-{round}");
        running.push(servers::start(
            Kind::Turnpike,
            Path::new(bin),
            &ctx.work,
            s.server_cpu(),
            None,
            None,
            &tag,
        )?);
    }
    let flows = running
        .iter()
        .map(|server| {
            turn::udp_flow(server.udp, 0, &cred).map_err(|e| format!("{}: {e}\n{}", server.name, server.log_tail()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let pids: Vec<u32> = running.iter().map(|server| server.pid()).collect();
    let rtts = load::ping_pong_paired(&pids, &flows.iter().collect::<Vec<_>>(), s.pings, SMALL, RTT_MAX);
    for (k, (server, r)) in running.iter().zip(rtts).enumerate() {
        let name = if k < servers.len() {
            server.name
        } else {
            "turnpike (BENCH_PAIRED_ALSO)"
        };
        if r.received == 0 {
            return Err(format!("{}: no paired ping came back", server.name));
        }
        let raw = format!(
            "{} pings, {} answered, {:.2} s for all servers, server CPU {:.3} s ({:.1} µs per round trip)",
            r.sent,
            r.received,
            r.wall,
            r.server_cpu,
            1e6 * r.server_cpu / r.received.max(1) as f64
        );
        eprintln!(
            "  {name} rtt-paired: p50 {:.1} µs, p99 {:.1} µs ({raw})",
            r.p50_us, r.p99_us
        );
        if k >= servers.len() {
            continue;
        }
        for (figure, value) in [("rtt-paired-p50", r.p50_us), ("rtt-paired-p99", r.p99_us)] {
            out.push(Sample {
                figure,
                server: server.name,
                round,
                value,
                raw: raw.clone(),
                share: None,
            });
        }
    }
    for mut server in running {
        server.check_alive()?;
    }
    Ok(())
}

/// The raw text of a load phase.
fn phase_raw(p: &Phase) -> String {
    format!(
        "sent {} (→ {}, ← {}), received {} (→ {}, ← {}), loss {:.2} %, server CPU {:.2} s over {:.2} s \
         ({:.0} % of a core), generator CPU {:.2} s, kernel drops server {} / generator {}{}",
        p.sent,
        p.sent_dir[0],
        p.sent_dir[1],
        p.received,
        p.received_dir[0],
        p.received_dir[1],
        p.loss_pct(),
        p.server_cpu,
        p.active_secs,
        p.server_cpu_pct(),
        p.generator_cpu,
        p.drops.server,
        p.drops.generator,
        if p.bad > 0 || p.send_errors > 0 {
            format!(", {} unexpected datagrams, {} failed sends", p.bad, p.send_errors)
        } else {
            String::new()
        } + &if p.stalls > 0 {
            format!(
                ", {} closed-loop stalls (window reopened after 10 ms without an arrival)",
                p.stalls
            )
        } else {
            String::new()
        }
    ) + &p.host.map_or(String::new(), |h| namespace::host_raw(&h, p.received))
}

/// Records a load phase as CPU µs per relayed packet; fails if the
/// server relayed nothing.
fn record_phase(
    out: &mut Vec<Sample>,
    figure: &'static str,
    server: &'static str,
    round: usize,
    p: &Phase,
    extra: &str,
) -> Result<(), String> {
    if p.received == 0 {
        return Err(format!(
            "{server} relayed nothing in figure {figure} (round {round}): {}{extra}",
            phase_raw(p)
        ));
    }
    for (d, arrow) in [(0, "→"), (1, "←")] {
        if p.sent_dir[d] > 0 && p.received_dir[d] == 0 {
            eprintln!(
                "WARNING: {server} relayed nothing {arrow} in figure {figure} (round {round}); only the other direction counts"
            );
        }
    }
    let raw = phase_raw(p) + extra;
    eprintln!("  {figure}: {:.2} µs/pkt ({raw})", p.us_per_packet());
    out.push(Sample {
        figure,
        server,
        round,
        value: p.us_per_packet(),
        raw,
        share: Some(p.server_cpu_pct()),
    });
    Ok(())
}

fn both_ways(flows: &[turn::UdpFlow], payload: usize) -> (Vec<Source>, Vec<Sink>) {
    let (mut sources, mut sinks) = (Vec::new(), Vec::new());
    for (i, f) in flows.iter().enumerate() {
        for (src, sink) in [forward(f, i, payload), reverse(f, i, payload)] {
            sources.push(src);
            sinks.push(sink);
        }
    }
    (sources, sinks)
}

fn relay_ways(pairs: &[turn::RelayPair], payload: usize) -> (Vec<Source>, Vec<Sink>) {
    let (mut sources, mut sinks) = (Vec::new(), Vec::new());
    for (j, p) in pairs.iter().enumerate() {
        let ab = 2 * j as u32;
        let ba = ab + 1;
        // A → B: sent on A's channel, arrives on B's.
        sources.push(Source {
            fd: p.a.as_raw_fd(),
            packet: channel_data(p.chan_a, payload, ab),
        });
        sinks.push(Sink {
            fd: p.b.as_raw_fd(),
            len: CD_HEADER + payload,
            prefix: channel_data(p.chan_b, payload, ab)[..8].to_vec(),
        });
        sources.push(Source {
            fd: p.b.as_raw_fd(),
            packet: channel_data(p.chan_b, payload, ba),
        });
        sinks.push(Sink {
            fd: p.a.as_raw_fd(),
            len: CD_HEADER + payload,
            prefix: channel_data(p.chan_a, payload, ba)[..8].to_vec(),
        });
    }
    (sources, sinks)
}

/// UDP relaying, relay ↔ relay, the paced load and the ping-pong, on one
/// server process.
fn data_plane(
    mut server: ServerProcess,
    s: &Settings,
    ctx: &Context,
    round: usize,
    out: &mut Vec<Sample>,
) -> Result<(), String> {
    let name = server.name;
    let pid = server.pid();
    let cred = cred();
    let t = Instant::now();
    let flows = (0..s.flows)
        .map(|i| {
            turn::udp_flow(server.udp, i, &cred).map_err(|e| format!("{name} client {i}: {e}\n{}", server.log_tail()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let pairs = if s.group("r2r") {
        (0..s.flows / 2)
            .map(|j| {
                turn::relay_pair(server.udp, j, &cred)
                    .map_err(|e| format!("{name} relay pair {j}: {e}\n{}", server.log_tail()))
            })
            .collect::<Result<Vec<_>, _>>()?
    } else {
        Vec::new()
    };
    eprintln!(
        "{name}: pid {pid}, {} allocations with channels in {:.2} s",
        flows.len() + 2 * pairs.len(),
        t.elapsed().as_secs_f64()
    );
    let sockets = Sockets::of(pid);
    let meter = Meter {
        pid,
        host: ctx.netns.as_ref().map(|t| HostMeter {
            cpus: s.pin,
            napi_server: t.napi_server.clone(),
            napi_generator: t.napi_generator.clone(),
        }),
    };
    // The fast path's verdicts (namespace mode), read around each phase.
    let verdicts = || -> Option<namespace::FastPath> {
        if name != Kind::TurnpikeXdp.name() {
            return None;
        }
        let text = ctx.netns.as_ref()?.http_get(server.http?, "/metrics");
        Some(text.map_or_else(namespace::FastPath::Unreadable, |t| {
            namespace::FastPath::Counts(namespace::verdicts(&t))
        }))
    };
    let n = s.flows;
    let mut full_speed = |key: &'static str, sources: &[Source], sinks: Vec<Sink>| -> Result<Phase, String> {
        let before = verdicts();
        let offer = if s.netns { Offer::Window(s.window) } else { Offer::Full };
        let p = run_phase(&meter, &sockets, sources, sinks, s.secs, offer, s.batch);
        let extra = before.map_or(String::new(), |b| b.since(verdicts()));
        record_phase(out, key, name, round, &p, &extra)?;
        namespace::extra_samples(out, key, name, round, &p);
        Ok(p)
    };
    if s.group("udp") {
        for (key, count, payload) in [
            ("udp-1-100", 1, SMALL),
            ("udp-n-100", n, SMALL),
            ("udp-1-1200", 1, LARGE),
            ("udp-n-1200", n, LARGE),
        ] {
            let (sources, sinks) = both_ways(&flows[..count], payload);
            full_speed(key, &sources, sinks)?;
        }
    }
    if s.group("r2r") {
        for (key, count, payload) in [
            ("r2r-1-100", 1, SMALL),
            ("r2r-n-100", n / 2, SMALL),
            ("r2r-1-1200", 1, LARGE),
            ("r2r-n-1200", n / 2, LARGE),
        ] {
            let (sources, sinks) = relay_ways(&pairs[..count], payload);
            full_speed(key, &sources, sinks)?;
        }
    }
    if s.group("paced") {
        let (sources, sinks) = both_ways(&flows[..s.paced_flows], SMALL);
        let p = run_phase(&meter, &sockets, &sources, sinks, s.secs, Offer::Paced(s.rate), s.batch);
        if p.received == 0 {
            return Err(format!("{name} relayed nothing in the paced figure: {}", phase_raw(&p)));
        }
        eprintln!("  paced-cpu: {:.1} % ({})", p.server_cpu_pct(), phase_raw(&p));
        out.push(Sample {
            figure: "paced-cpu",
            server: name,
            round,
            value: p.server_cpu_pct(),
            raw: format!("{:.2} µs/pkt; {}", p.us_per_packet(), phase_raw(&p)),
            share: None,
        });
    }
    if s.group("rtt") {
        // The pings are ChannelData on a bound channel, so with
        // fast_path = "xdp" the program relays both ways; its verdicts
        // around the phase show that it did.
        let before = verdicts();
        let r = load::ping_pong(pid, &flows[0], s.pings, SMALL, RTT_MAX);
        let fast_path = before.map_or(String::new(), |b| b.since(verdicts()));
        if r.received == 0 {
            return Err(format!("{name}: no ping came back"));
        }
        let raw = format!(
            "{} pings, {} answered, {:.2} s, server CPU {:.3} s ({:.1} µs per round trip){fast_path}",
            r.sent,
            r.received,
            r.wall,
            r.server_cpu,
            1e6 * r.server_cpu / r.received.max(1) as f64
        );
        eprintln!("  rtt: p50 {:.1} µs, p99 {:.1} µs ({raw})", r.p50_us, r.p99_us);
        for (figure, value) in [("rtt-p50", r.p50_us), ("rtt-p99", r.p99_us)] {
            out.push(Sample::of(figure, name, round, value, raw.clone()));
        }
    }
    server.check_alive()?;
    report_log(&server);
    Ok(())
}

/// TURN over TCP and over TLS, one and `conns` connections.
fn streams(
    mut server: ServerProcess,
    s: &Settings,
    ctx: &Context,
    round: usize,
    out: &mut Vec<Sample>,
) -> Result<(), String> {
    let name = server.name;
    let pid = server.pid();
    let cred = cred();
    for (group, addr, tls) in [("tcp", server.tcp, None), ("tls", server.tls, Some(&ctx.tls_client))] {
        if !s.group(group) {
            continue;
        }
        let addr = addr.ok_or("no stream listener")?;
        let mut flows = (0..s.conns)
            .map(|i| {
                turn::stream_flow(addr, tls, i, &cred)
                    .map_err(|e| format!("{name} {group} client {i}: {e}\n{}", server.log_tail()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let sockets = Sockets::of(pid);
        for (key, count) in [
            (if group == "tcp" { "tcp-1" } else { "tls-1" }, 1),
            (if group == "tcp" { "tcp-n" } else { "tls-n" }, s.conns),
        ] {
            let p = stream::run_stream_phase(pid, &sockets, &mut flows[..count], SMALL, s.secs, s.batch)
                .map_err(|e| format!("{name} {key}: {e}\n{}", server.log_tail()))?;
            record_phase(out, key, name, round, &p, "")?;
        }
    }
    server.check_alive()?;
    report_log(&server);
    Ok(())
}

/// `s.burst` clients Allocate at once, 256 in flight, each through the 401.
fn allocate_burst(mut server: ServerProcess, s: &Settings, round: usize, out: &mut Vec<Sample>) -> Result<(), String> {
    let name = server.name;
    let pid = server.pid();
    let sockets = burst::sockets(server.udp, s.burst)?;
    let cpu0 = cpu_seconds(pid);
    let gen0 = cpu_seconds(std::process::id());
    let b = burst::allocate_all(sockets, BURST_MAX);
    let cpu = cpu_seconds(pid) - cpu0;
    let gen = cpu_seconds(std::process::id()) - gen0;
    server.check_alive()?;
    if b.done == 0 {
        return Err(format!(
            "{name}: no allocation in the burst ({:?})\n{}",
            b.errors,
            server.log_tail()
        ));
    }
    let rate = b.done as f64 / b.wall.max(1e-6);
    let ms = 1e3 * cpu / b.done as f64;
    let raw = format!(
        "{} of {} allocated in {:.2} s, {} failed, {} retransmissions, server CPU {:.2} s, generator CPU {:.2} s{}",
        b.done,
        s.burst,
        b.wall,
        b.failed,
        b.retransmits,
        cpu,
        gen,
        if b.errors.is_empty() {
            String::new()
        } else {
            format!(", first errors: {}", b.errors.join("; "))
        }
    );
    eprintln!("  alloc: {rate:.0}/s, {ms:.3} ms CPU each ({raw})");
    out.push(Sample {
        figure: "alloc-rate",
        server: name,
        round,
        value: rate,
        raw: raw.clone(),
        share: None,
    });
    out.push(Sample {
        figure: "alloc-cpu",
        server: name,
        round,
        value: ms,
        raw,
        share: None,
    });
    report_log(&server);
    Ok(())
}

/// VmRSS before and after `n` idle allocations.
fn idle_memory(mut server: ServerProcess, n: usize, round: usize, out: &mut Vec<Sample>) -> Result<(), String> {
    let name = server.name;
    let pid = server.pid();
    let sockets = burst::sockets(server.udp, n)?;
    std::thread::sleep(Duration::from_millis(200));
    let rss0 = status_kb(pid, "VmRSS");
    let fds0 = fd_count(pid);
    let b = burst::allocate_all(sockets, BURST_MAX);
    std::thread::sleep(Duration::from_millis(500));
    let rss1 = status_kb(pid, "VmRSS");
    let fds1 = fd_count(pid);
    server.check_alive()?;
    if b.done == 0 {
        return Err(format!(
            "{name}: no idle allocation ({:?})\n{}",
            b.errors,
            server.log_tail()
        ));
    }
    let per = rss1.saturating_sub(rss0) as f64 / b.done as f64;
    let raw = format!(
        "VmRSS {rss0} → {rss1} kB, {} of {n} allocated in {:.2} s ({} failed), descriptors {fds0} → {fds1}{}",
        b.done,
        b.wall,
        b.failed,
        if b.errors.is_empty() {
            String::new()
        } else {
            format!(", first errors: {}", b.errors.join("; "))
        }
    );
    eprintln!("  idle: {per:.2} KiB per allocation ({raw})");
    out.push(Sample {
        figure: "idle-mem",
        server: name,
        round,
        value: per,
        raw,
        share: None,
    });
    report_log(&server);
    Ok(())
}

/// Prints the first warnings and errors of a server's log.
fn report_log(server: &ServerProcess) {
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
}

// ---------------------------------------------------------------------------
// The bare forwarder

fn forwarder_round(
    name: &'static str,
    s: &Settings,
    ctx: &Context,
    round: usize,
    out: &mut Vec<Sample>,
) -> Result<(), String> {
    let mode = if name == "fwd-plain" { "plain" } else { "mmsg" };
    let n = s.flows;
    let clients = (0..n)
        .map(|i| turn::udp_socket(client_ip(i), None))
        .collect::<Result<Vec<_>, _>>()?;
    let peers = (0..n).map(|_| turn::peer_socket()).collect::<Result<Vec<_>, _>>()?;
    // /proc/self/exe is this very binary even if a rebuild replaced the file.
    let mut cmd = Command::new("/proc/self/exe");
    cmd.arg("--forwarder").arg(mode);
    for (c, p) in clients.iter().zip(&peers) {
        let (c, p) = (
            c.local_addr().map_err(|e| e.to_string())?,
            p.local_addr().map_err(|e| e.to_string())?,
        );
        cmd.arg(format!("{c}={p}"));
    }
    let log = ctx.work.join(format!("{name}-{round}.log"));
    let child = servers::spawn_pinned(&mut cmd, &log, s.server_cpu(), None)?;
    let mut server = ServerProcess {
        name,
        child,
        udp: SocketAddr::from((lo(1), 0)),
        tcp: None,
        tls: None,
        log: log.clone(),
        http: None,
    };
    let (listen, ports) = forwarder_ports(&mut server, n)?;
    let pid = server.pid();
    let flows: Vec<turn::UdpFlow> = clients
        .into_iter()
        .zip(peers)
        .zip(ports)
        .map(|((client, peer), port)| -> Result<turn::UdpFlow, String> {
            client.connect((lo(1), listen)).map_err(|e| e.to_string())?;
            peer.connect((lo(1), port)).map_err(|e| e.to_string())?;
            load_mode(&client)?;
            load_mode(&peer)?;
            Ok(turn::UdpFlow {
                client,
                peer,
                channel: 0,
            })
        })
        .collect::<Result<_, _>>()?;
    let sockets = Sockets::of(pid);
    for (key, count) in [("udp-1-100", 1), ("udp-n-100", n)] {
        let (mut sources, mut sinks) = (Vec::new(), Vec::new());
        for (i, f) in flows[..count].iter().enumerate() {
            let packet = raw_payload(SMALL, i as u32);
            for (from, to) in [(&f.client, &f.peer), (&f.peer, &f.client)] {
                sources.push(Source {
                    fd: from.as_raw_fd(),
                    packet: packet.clone(),
                });
                sinks.push(Sink {
                    fd: to.as_raw_fd(),
                    len: SMALL,
                    prefix: packet[..4].to_vec(),
                });
            }
        }
        let meter = Meter { pid, host: None };
        let p = run_phase(&meter, &sockets, &sources, sinks, s.secs, Offer::Full, s.batch);
        record_phase(out, key, name, round, &p, "")?;
    }
    server.check_alive()?;
    Ok(())
}

/// Reads the forwarder's ports from its output (at most 5 s).
fn forwarder_ports(server: &mut ServerProcess, n: usize) -> Result<(u16, Vec<u16>), String> {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        server.check_alive()?;
        let file = fs::File::open(&server.log).map_err(|e| e.to_string())?;
        let lines: Vec<String> = BufReader::new(file).lines().map_while(Result::ok).collect();
        if lines.iter().any(|l| l == "ready") {
            let mut listen = None;
            let mut ports = vec![0u16; n];
            for l in &lines {
                let w: Vec<&str> = l.split_whitespace().collect();
                match w.as_slice() {
                    ["listen", p] => listen = p.parse().ok(),
                    ["forward", i, p] => {
                        if let (Ok(i), Ok(p)) = (i.parse::<usize>(), p.parse()) {
                            if i < n {
                                ports[i] = p;
                            }
                        }
                    }
                    _ => {}
                }
            }
            let listen = listen.ok_or("forwarder printed no listening port")?;
            if ports.contains(&0) {
                return Err("forwarder printed too few ports".into());
            }
            return Ok((listen, ports));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Err(format!("forwarder not ready within 5 s:\n{}", server.log_tail()))
}

// ---------------------------------------------------------------------------
// Header

fn print_header(s: &Settings, nofile: usize) {
    let cpu = fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_else(|| "?".into());
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    // SAFETY: sysconf has no preconditions.
    let cores = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    let load = fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "## turnpike vs coturn relay benchmark{}\n",
        if s.netns { ", namespace mode" } else { "" }
    );
    println!(
        "{cores} cores ({cpu}), kernel {}, load average {}, RLIMIT_NOFILE {nofile}",
        kernel.trim(),
        load.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
    );
    println!(
        "{} rounds ({}, ... with fresh processes each round), {} s per load phase, \
         sendmmsg batch {}, full speed both directions at once unless paced\n",
        s.rounds,
        if s.netns {
            "turnpike, turnpike-xdp, coturn"
        } else {
            "turnpike, coturn, bare forwarder"
        },
        s.secs,
        s.batch
    );
    match s.pin {
        Some((server, generator)) => println!(
            "server pinned to CPU {server}, load generator to CPU {generator} (BENCH_PIN=0 to let the scheduler place them)\n"
        ),
        None => println!("no CPU pinning\n"),
    }
    if s.netns {
        println!(
            "namespace mode: the server in its own network namespace behind a veth pair, the generator in another \
             (BENCHMARKS.md). turnpike = fast_path \"off\", turnpike-xdp = fast_path \"xdp\" on the server's veth end. \
             Host CPU = utime + stime of the server process, of both veth ends' NAPI threads and of ksoftirqd, over \
             the packets that arrived at the far side; the raw numbers also give the whole machine's (every CPU's \
             non-idle time − the generator process − every other process). Server side = the server process and its \
             end's NAPI thread. \
             Ratios ÷ coturn; the goals (issue 21) are for turnpike-xdp: host CPU ≤ 0.2 of coturn's, packets per \
             server-side CPU-second ≥ 3×; turnpike ÷ coturn should match loopback mode's ratios. The RTT figure is \
             loopback mode's ping-pong over the veth pair (one ChannelData ping in flight).\n"
        );
        return;
    }
    println!(
        "ratio = turnpike ÷ coturn for every figure. CPU per packet, memory and RTT: lower is better, \
         so the goal is a ratio at most the number shown. Allocations/s: higher is better, the goal is at least it. \
         Server CPU = utime + stime of the whole server process (/proc/PID/stat) over the packets that arrived \
         at the far side.\n"
    );
}
