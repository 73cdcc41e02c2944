//! What the console charts: the series of each chart, and how one sample
//! reads them from the sources `/metrics` reads (the shards' summed
//! [`Snapshot`], the signaling hub's counts, the fleet's status), so that
//! a number on the console and the same number in `/metrics` are one.
//!
//! A series is a gauge (its value as read) or a rate (a counter's growth
//! between two samples, per second, in bits for relayed bytes); the
//! history ([`super::History`]) turns counters into rates.

use serde::Serialize;

use crate::proto::stats::{Snapshot, AUTH_FAILURES, CODES, METHODS, TRANSPORTS};

/// The signaling hub's counts (with an HTTP endpoint).
#[derive(Clone, Copy, Debug, Default)]
pub struct Signaling {
    pub rooms: u64,
    pub peers: u64,
    pub sessions: u64,
}

/// The fleet (with `[fleet]`): its instances, and this instance's link.
#[derive(Clone, Copy, Debug, Default)]
pub struct Fleet {
    /// Instances heard from lately, this one included.
    pub instances: u64,
    /// Their allocations together.
    pub allocations: u64,
    pub redis_up: bool,
    pub remote_peers: u64,
    pub sent: u64,
    pub received: u64,
    /// Refused as invalid, undeliverable, or not sent during an outage.
    pub dropped: u64,
}

/// Everything one sample reads.
#[derive(Clone, Copy, Debug)]
pub struct Sources<'a> {
    pub shards: &'a Snapshot,
    pub signaling: Option<Signaling>,
    pub fleet: Option<Fleet>,
}

/// How a series' raw value becomes what is charted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// As read.
    Gauge,
    /// A counter's growth per second.
    PerSecond,
    /// A byte counter's growth per second, times 8.
    BitsPerSecond,
}

/// One chart of the console.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Chart {
    pub id: &'static str,
    pub title: &'static str,
    pub unit: &'static str,
}

/// Every chart, in the console's order (`signaling` and `fleet` only
/// with those sources).
pub const CHARTS: [Chart; 8] = [
    chart("allocations", "Allocations", ""),
    chart("relayed_bits", "Relayed bits/s", "bit/s"),
    chart("relayed_packets", "Relayed packets/s and drops", "/s"),
    chart("authentications", "Authentications and failures", "/s"),
    chart("shed", "Shed (300) and refused (486, 508)", "/s"),
    chart("signaling", "Signaling sessions and rooms", ""),
    chart("fleet", "Fleet: instances and their allocations", ""),
    chart("fleet_link", "Fleet: this instance's link to Redis", ""),
];

const fn chart(id: &'static str, title: &'static str, unit: &'static str) -> Chart {
    Chart { id, title, unit }
}

/// One series' raw value in one sample.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reading {
    /// A [`Chart::id`].
    pub chart: &'static str,
    pub label: &'static str,
    pub kind: Kind,
    pub value: u64,
}

/// Requests answered `code`, over every method.
fn answered(shards: &Snapshot, code: u16) -> u64 {
    let Some(at) = CODES.iter().position(|c| *c == code) else {
        return 0;
    };
    shards.counters.requests.iter().map(|by_code| by_code[at]).sum()
}

/// Every series' raw value now, in the order of [`CHARTS`] (a chart's
/// series together), the same series at every call with the same
/// sources present.
pub fn read(sources: &Sources<'_>) -> Vec<Reading> {
    use Kind::{BitsPerSecond, Gauge, PerSecond};
    let shards = sources.shards;
    let c = &shards.counters;
    let mut out = Vec::with_capacity(32);
    let mut push = |chart, label, kind, value| {
        out.push(Reading {
            chart,
            label,
            kind,
            value,
        })
    };

    let by_transport = shards.allocations.map(|families| families.iter().sum::<u64>());
    push("allocations", "total", Gauge, by_transport.iter().sum());
    for (label, count) in TRANSPORTS.iter().zip(by_transport) {
        push("allocations", label, Gauge, count);
    }

    push("relayed_bits", "to_peer", BitsPerSecond, shards.to_peer.bytes);
    push("relayed_bits", "to_client", BitsPerSecond, shards.to_client.bytes);

    push("relayed_packets", "to_peer", PerSecond, shards.to_peer.packets);
    push("relayed_packets", "to_client", PerSecond, shards.to_client.packets);
    let rate_limited = c.rate_limited.iter().map(|t| t.packets).sum();
    push("relayed_packets", "dropped_rate_limit", PerSecond, rate_limited);
    push("relayed_packets", "dropped_handoff", PerSecond, c.relay_handoff_drops);

    // Every method but Binding (and requests of no method) authenticates;
    // a 200 is a credential accepted.
    let ok = CODES.iter().position(|code| *code == 200).unwrap_or(0);
    let authenticated = c.requests[1..METHODS.len() - 1].iter().map(|by_code| by_code[ok]).sum();
    push("authentications", "accepted", PerSecond, authenticated);
    for (label, count) in AUTH_FAILURES.iter().zip(c.auth_failures) {
        push("authentications", label, PerSecond, count);
    }

    push("shed", "shed_300", PerSecond, answered(shards, 300));
    push("shed", "refused_486", PerSecond, answered(shards, 486));
    push("shed", "refused_508", PerSecond, answered(shards, 508));

    if let Some(s) = sources.signaling {
        push("signaling", "sessions", Gauge, s.sessions);
        push("signaling", "rooms", Gauge, s.rooms);
        push("signaling", "peers", Gauge, s.peers);
    }
    if let Some(f) = sources.fleet {
        push("fleet", "instances", Gauge, f.instances);
        push("fleet", "allocations", Gauge, f.allocations);
        push("fleet_link", "redis_up", Gauge, u64::from(f.redis_up));
        push("fleet_link", "remote_peers", Gauge, f.remote_peers);
        push("fleet_link", "sent", PerSecond, f.sent);
        push("fleet_link", "received", PerSecond, f.received);
        push("fleet_link", "dropped", PerSecond, f.dropped);
    }
    out
}
