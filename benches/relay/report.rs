//! The printed report: medians over rounds, turnpike ÷ coturn beside the
//! goal, the bare-forwarder reference, and every raw measurement.

use std::collections::BTreeMap;

/// What a figure's ratio turnpike ÷ coturn should be.
#[derive(Clone, Copy)]
pub enum Goal {
    /// Lower is better, at most this.
    AtMost(f64),
    /// Higher is better, at least this.
    AtLeast(f64),
    /// Lower is better, no goal: reported.
    Report,
}

pub struct Figure {
    pub key: &'static str,
    pub label: String,
    pub unit: &'static str,
    pub goal: Goal,
}

/// One measurement of one figure on one server in one round.
pub struct Sample {
    pub figure: &'static str,
    pub server: &'static str,
    pub round: usize,
    pub value: f64,
    /// The raw numbers behind it, as text.
    pub raw: String,
    /// The server's share of a core, for a full-speed load phase.
    pub share: Option<f64>,
}

impl Sample {
    /// A measurement that is not a full-speed load phase's headline (no
    /// share of a core to flag).
    pub fn of(figure: &'static str, server: &'static str, round: usize, value: f64, raw: String) -> Sample {
        Sample {
            figure,
            server,
            round,
            value,
            raw,
            share: None,
        }
    }
}

/// Server CPU share below which a full-speed phase is flagged as starved.
const STARVED_PCT: f64 = 70.0;

/// A note naming the full-speed measurements in which the server got
/// less than `STARVED_PCT` of its core.
pub fn starved(samples: &[Sample]) -> Option<String> {
    let low: Vec<String> = samples
        .iter()
        .filter_map(|s| {
            let pct = s.share?;
            (pct < STARVED_PCT).then(|| format!("{} {} round {} ({pct:.0} %)", s.server, s.figure, s.round))
        })
        .collect();
    (!low.is_empty()).then(|| {
        let shown = low.len().min(6);
        let more = if low.len() > shown {
            format!(" and {} more (the raw numbers give every share)", low.len() - shown)
        } else {
            String::new()
        };
        format!(
            "in {} of {} full-speed measurements the server had less than {STARVED_PCT:.0} % of its core (the machine \
             was busy, or the server waited on something): {}{more}. CPU per packet stays comparable; loss and rates \
             there say more about the machine.",
            low.len(),
            samples.iter().filter(|s| s.share.is_some()).count(),
            low[..shown].join(", ")
        )
    })
}

pub fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

fn medians(samples: &[Sample]) -> BTreeMap<(&'static str, &'static str), (f64, usize)> {
    let mut by: BTreeMap<(&'static str, &'static str), Vec<f64>> = BTreeMap::new();
    for s in samples {
        by.entry((s.figure, s.server)).or_default().push(s.value);
    }
    by.into_iter()
        .filter_map(|(k, v)| {
            let n = v.len();
            median(v).map(|m| (k, (m, n)))
        })
        .collect()
}

fn fmt(v: f64) -> String {
    if v >= 10_000.0 {
        let digits = (v.round() as u64).to_string();
        let mut out = String::new();
        for (i, c) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i).is_multiple_of(3) {
                out.push(' ');
            }
            out.push(c);
        }
        out
    } else if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else if v >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

/// The servers of the main table: their order, the one every ratio
/// divides by, and the one whose ratio the goal is for.
pub struct Columns {
    pub servers: Vec<&'static str>,
    pub base: &'static str,
    pub goal_for: &'static str,
}

/// The main table: a column per server, a ratio to the base server for
/// each of the others, the goal for `goal_for`'s ratio.
pub fn table(figures: &[Figure], samples: &[Sample], columns: &Columns) -> String {
    let m = medians(samples);
    let others: Vec<&str> = columns.servers.iter().copied().filter(|s| *s != columns.base).collect();
    let mut out = String::from("| figure | unit |");
    for s in &columns.servers {
        out.push_str(&format!(" {s} |"));
    }
    for s in &others {
        out.push_str(&format!(" {s} ÷ {} |", columns.base));
    }
    out.push_str(" goal | met |\n|---|---|");
    out.push_str(&"---:|".repeat(columns.servers.len() + others.len()));
    out.push_str("---|---|\n");
    for f in figures {
        let value = |server: &str| m.get(&(f.key, server)).map(|x| x.0);
        if columns.servers.iter().all(|s| value(s).is_none()) {
            continue;
        }
        let cell = |v: Option<f64>| v.map_or("—".to_string(), fmt);
        let ratio = |server: &str| match (value(server), value(columns.base)) {
            (Some(t), Some(c)) if c > 0.0 => Some(t / c),
            _ => None,
        };
        let (goal, met) = match (f.goal, ratio(columns.goal_for)) {
            (Goal::AtMost(g), r) => (format!("≤ {g}"), r.map_or("", |r| if r <= g { "yes" } else { "no" })),
            (Goal::AtLeast(g), r) => (
                format!("≥ {g} (higher is better)"),
                r.map_or("", |r| if r >= g { "yes" } else { "no" }),
            ),
            (Goal::Report, _) => ("(report)".to_string(), ""),
        };
        out.push_str(&format!("| {} | {} |", f.label, f.unit));
        for s in &columns.servers {
            out.push_str(&format!(" {} |", cell(value(s))));
        }
        for s in &others {
            out.push_str(&format!(
                " {} |",
                ratio(s).map_or("—".to_string(), |r| format!("{r:.2}"))
            ));
        }
        out.push_str(&format!(" {goal} | {met} |\n"));
    }
    out
}

/// The bare-forwarder reference: its CPU per packet against coturn's
/// (and turnpike's against it) on the same UDP figures.
pub fn reference(figures: &[Figure], samples: &[Sample], forwarders: &[(&'static str, &str)]) -> String {
    let m = medians(samples);
    let mut out = String::new();
    out.push_str("| reference | forwarder µs/pkt | coturn µs/pkt | forwarder ÷ coturn | turnpike ÷ forwarder |\n");
    out.push_str("|---|---:|---:|---:|---:|\n");
    let mut any = false;
    for f in figures {
        for (server, what) in forwarders {
            let Some(&(fw, _)) = m.get(&(f.key, *server)) else {
                continue;
            };
            any = true;
            let co = m.get(&(f.key, "coturn")).map(|x| x.0);
            let tp = m.get(&(f.key, "turnpike")).map(|x| x.0);
            let r = |a: Option<f64>, b: Option<f64>| match (a, b) {
                (Some(a), Some(b)) if b > 0.0 => format!("{:.2}", a / b),
                _ => "—".into(),
            };
            out.push_str(&format!(
                "| bare forwarder, {what}: {} | {} | {} | {} | {} |\n",
                f.label,
                fmt(fw),
                co.map_or("—".into(), fmt),
                r(Some(fw), co),
                r(tp, Some(fw)),
            ));
        }
    }
    if any {
        out
    } else {
        String::new()
    }
}

/// Every sample with its raw numbers, figure by figure.
pub fn raw(figures: &[Figure], samples: &[Sample]) -> String {
    let mut out = String::new();
    for f in figures {
        let mut rows: Vec<&Sample> = samples.iter().filter(|s| s.figure == f.key).collect();
        if rows.is_empty() {
            continue;
        }
        rows.sort_by_key(|s| (s.server, s.round));
        out.push_str(&format!("- {} ({}):\n", f.label, f.unit));
        for s in rows {
            out.push_str(&format!(
                "  - {} round {}: {} — {}\n",
                s.server,
                s.round,
                fmt(s.value),
                s.raw
            ));
        }
    }
    out
}
