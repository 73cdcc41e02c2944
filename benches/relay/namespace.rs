//! Namespace mode's part of the report (BENCHMARKS.md, "Namespace mode"):
//! its figures, the samples a load phase adds to loopback mode's (the
//! server-side rows, packets/s, packets per server-side CPU-second, the
//! accounting check), the host CPU's raw text, and the fast path's
//! verdicts read from turnpike's /metrics.

use std::collections::BTreeMap;

use crate::host::HostDelta;
use crate::load::Phase;
use crate::report::{self, Figure, Goal, Sample};
use crate::{LARGE, SMALL};

/// The figure groups of namespace mode.
pub const NETNS_GROUPS: [&str; 3] = ["udp", "r2r", "rtt"];

/// Namespace mode's figures (`n` allocations in the many-flow rows): the
/// UDP and relay ↔ relay rows in host CPU, with issue 21's goal for
/// turnpike-xdp ÷ coturn, the same rows on the server's side alone, and
/// for the 64-allocation 100 B phases the relayed packets per second and
/// per server-side CPU-second; then the ping-pong RTT (`pings` round
/// trips) through the veth pair, the fast path's latency.
pub fn figures(n: usize, pings: usize) -> Vec<Figure> {
    let us = "host CPU µs per relayed packet";
    let (udp, r2r) = ("client ↔ relay ↔ UDP peer", "relay ↔ relay");
    let rows: [(&'static str, &str, usize, usize); 8] = [
        ("udp-1-100", udp, 1, SMALL),
        ("udp-n-100", udp, n, SMALL),
        ("udp-1-1200", udp, 1, LARGE),
        ("udp-n-1200", udp, n, LARGE),
        ("r2r-1-100", r2r, 1, SMALL),
        ("r2r-n-100", r2r, n, SMALL),
        ("r2r-1-1200", r2r, 1, LARGE),
        ("r2r-n-1200", r2r, n, LARGE),
    ];
    let mut v: Vec<Figure> = rows
        .into_iter()
        .map(|(key, what, flows, size)| Figure {
            key,
            label: format!("{what}, {}, {size} B", flows_label(what == r2r, flows)),
            unit: us,
            goal: Goal::AtMost(0.2),
        })
        .collect();
    for (key, what, flows, size) in rows {
        v.push(Figure {
            key: side_key(key).unwrap_or(key),
            label: format!("{what}, {}, {size} B", flows_label(what == r2r, flows)),
            unit: "server-side CPU µs per relayed packet (process + its NAPI thread)",
            goal: Goal::Report,
        });
    }
    let pps = "relayed packets/s, closed loop (the generator waits for arrivals)";
    let cap = "relayed packets per CPU-second of the server's side (process + its NAPI thread)";
    for (key, what, unit, goal) in [
        ("pps-udp", udp, pps, Goal::Report),
        ("pps-r2r", r2r, pps, Goal::Report),
        ("cap-udp", udp, cap, Goal::AtLeast(3.0)),
        ("cap-r2r", r2r, cap, Goal::AtLeast(3.0)),
    ] {
        v.push(Figure {
            key,
            label: format!("{what}, {n} allocations, 100 B"),
            unit,
            goal,
        });
    }
    let ping = format!("ping-pong client → relay → peer → relay → client over the veth pair, {pings} pings, 100 B");
    for (key, unit, goal) in [
        ("rtt-p50", "RTT p50 µs", Goal::AtMost(1.0)),
        ("rtt-p99", "RTT p99 µs", Goal::Report),
    ] {
        v.push(Figure {
            key,
            label: ping.clone(),
            unit,
            goal,
        });
    }
    v
}

fn flows_label(relay_to_relay: bool, flows: usize) -> String {
    match (relay_to_relay, flows) {
        (true, 1) => "1 flow (2 allocations)".to_string(),
        (true, n) => format!("{n} allocations ({} pairs)", n / 2),
        (false, 1) => "1 flow".to_string(),
        (false, n) => format!("{n} allocations"),
    }
}

/// Samples of namespace mode's accounting check (in no table): the whole
/// machine's figure over the relaying's, and others' share of busy.
const CHECK_WHOLE: &str = "check-whole";
const CHECK_OTHERS: &str = "check-others";

/// The check's note: per server, the medians over every load phase.
pub fn accounting_note(samples: &[Sample], servers: &[&str]) -> Option<String> {
    let med = |figure: &str, server: &str| {
        report::median(
            samples
                .iter()
                .filter(|s| s.figure == figure && s.server == server)
                .map(|s| s.value)
                .collect(),
        )
    };
    let parts: Vec<String> = servers
        .iter()
        .filter_map(|server| {
            Some(format!(
                "{server} {:.2} (others {:.0} % of busy)",
                med(CHECK_WHOLE, server)?,
                100.0 * med(CHECK_OTHERS, server)?
            ))
        })
        .collect();
    (!parts.is_empty()).then(|| {
        format!(
            "host CPU is the relaying's threads (server process, both veth ends' NAPI threads, ksoftirqd). \
             The whole machine's figure (busy − generator − every other process) over it, medians of the load \
             phases: {}. On a quiet machine that is about 1; where others' share is large it carries their \
             noise (BENCHMARKS.md).",
            parts.join(", ")
        )
    })
}

/// The server-side row of a namespace-mode host CPU row.
fn side_key(key: &str) -> Option<&'static str> {
    Some(match key {
        "udp-1-100" => "side-udp-1-100",
        "udp-n-100" => "side-udp-n-100",
        "udp-1-1200" => "side-udp-1-1200",
        "udp-n-1200" => "side-udp-n-1200",
        "r2r-1-100" => "side-r2r-1-100",
        "r2r-n-100" => "side-r2r-n-100",
        "r2r-1-1200" => "side-r2r-1-1200",
        "r2r-n-1200" => "side-r2r-n-1200",
        _ => return None,
    })
}

/// The samples a namespace-mode load phase adds to its host CPU row.
pub fn extra_samples(out: &mut Vec<Sample>, key: &'static str, name: &'static str, round: usize, p: &Phase) {
    let Some(h) = p.host else {
        return;
    };
    if let Some(side) = side_key(key) {
        out.push(Sample::of(
            CHECK_WHOLE,
            name,
            round,
            h.whole() / h.relaying().max(1e-9),
            String::new(),
        ));
        out.push(Sample::of(
            CHECK_OTHERS,
            name,
            round,
            h.others / h.busy.max(1e-9),
            String::new(),
        ));
        let raw = format!(
            "server process {:.2} s + NAPI server end {:.2} s over {} relayed",
            h.server, h.napi_server, p.received
        );
        out.push(Sample::of(
            side,
            name,
            round,
            1e6 * h.server_side() / p.received.max(1) as f64,
            raw,
        ));
    }
    let rates = match key {
        "udp-n-100" => Some(("pps-udp", "cap-udp")),
        "r2r-n-100" => Some(("pps-r2r", "cap-r2r")),
        _ => None,
    };
    if let Some((pps, cap)) = rates {
        let raw = format!(
            "{} relayed in {:.2} s; server CPU {:.0} % busy; server side {:.2} CPU-s",
            p.received,
            p.active_secs,
            p.server_cpu_pct(),
            h.server_side()
        );
        out.push(Sample::of(pps, name, round, p.packets_per_sec(), raw.clone()));
        out.push(Sample::of(
            cap,
            name,
            round,
            p.received as f64 / h.server_side().max(1e-9),
            raw,
        ));
    }
}

/// The host CPU behind a namespace-mode phase.
pub fn host_raw(h: &HostDelta, received: u64) -> String {
    let pct = |t: f64| 100.0 * t / h.wall.max(1e-9);
    let per = |t: f64| 1e6 * t / received.max(1) as f64;
    let cores = h.cpu_busy.map_or(String::new(), |(s, g)| {
        format!("; server CPU {:.0} % busy, generator CPU {:.0} %", pct(s), pct(g))
    });
    format!(
        "; host CPU {:.2} s over {:.2} s = server process {:.2} + NAPI server end {:.2} + NAPI generator end {:.2} \
         + ksoftirqd {:.2}; whole machine {:.2} s ({:.2} µs/pkt) = busy {:.2} − generator {:.2} − others {:.2} \
         (of busy: softirq {:.2}, irq {:.2}, steal {:.2}){cores}",
        h.relaying(),
        h.wall,
        h.server,
        h.napi_server,
        h.napi_generator,
        h.ksoftirqd,
        h.whole(),
        per(h.whole()),
        h.busy,
        h.generator,
        h.others,
        h.softirq,
        h.irq,
        h.steal,
    )
}

/// turnpike's fast-path verdict counters at one instant.
pub enum FastPath {
    Counts(BTreeMap<String, u64>),
    Unreadable(String),
}

impl FastPath {
    /// What the phase between `self` and `after` took through the fast
    /// path, for the raw numbers.
    pub fn since(self, after: Option<FastPath>) -> String {
        let (before, after) = match (self, after) {
            (FastPath::Counts(b), Some(FastPath::Counts(a))) => (b, a),
            (FastPath::Unreadable(e), _) | (_, Some(FastPath::Unreadable(e))) => {
                return format!("; fast path: /metrics unreadable ({e})")
            }
            (_, None) => return String::new(),
        };
        let mut tx = 0;
        let mut parts = Vec::new();
        for (verdict, n) in &after {
            let d = n.saturating_sub(before.get(verdict).copied().unwrap_or(0));
            if verdict.starts_with("tx_") {
                tx += d;
            }
            if d > 0 {
                parts.push(format!("{verdict} {d}"));
            }
        }
        if after.is_empty() {
            return "; fast path: no verdict counters in /metrics (not attached?)".into();
        }
        format!(
            "; fast path: {tx} datagrams relayed by XDP ({})",
            if parts.is_empty() {
                "no frame seen".into()
            } else {
                parts.join(", ")
            }
        )
    }
}

/// `turnpike_fast_path_verdicts_total{verdict="…"} N` lines of /metrics.
pub fn verdicts(metrics: &str) -> BTreeMap<String, u64> {
    metrics
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix("turnpike_fast_path_verdicts_total{verdict=\"")?;
            let (verdict, rest) = rest.split_once('"')?;
            let value = rest.rsplit(' ').next()?.parse::<f64>().ok()?;
            Some((verdict.to_string(), value as u64))
        })
        .collect()
}
