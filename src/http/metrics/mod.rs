//! `GET /metrics`: Prometheus / OpenMetrics text, encoded by
//! prometheus-client at scrape time from the shards' published snapshots
//! ([`crate::proto::stats`]) and the signaling hub's counters.
//!
//! Names follow Prometheus conventions: a `turnpike_` prefix, `_total` on
//! counters (added by the encoder), units in the name. Shard snapshots
//! are at most a heartbeat (250 ms) old.

use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, MetricEncoder};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::info::Info;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};

mod fleet;
mod tls;

use super::app::App;
use super::limits::{ConnectionRefusal, ConnectionTable};
use crate::fleet::{FleetStatus, REVOCATION_OUTCOMES};
use crate::process::http_handover::SharedPortCounts;
use crate::process::status::{ServerStatus, ADMIN_OUTCOMES};
use crate::process::tls::TlsCertificates;
use crate::proto::auth::PASSWORD_ALGORITHMS;
use crate::proto::stats::{
    Traffic, AUTH_FAILURES, CODES, END_REASONS, FAMILIES, METHODS, RATE_LIMITS, REFUSALS, TRANSPORTS,
};
use crate::signaling::protocol::ErrorCode;
use crate::signaling::switchboard::MESSAGE_KINDS;
use crate::signaling::Hub;

/// The registry `/metrics` encodes.
pub fn registry(
    status: ServerStatus,
    hub: Arc<Hub>,
    fleet: Option<Arc<FleetStatus>>,
    connections: Arc<Mutex<ConnectionTable>>,
    shared_port: Option<Arc<SharedPortCounts>>,
    certificates: Option<Arc<TlsCertificates>>,
) -> Registry {
    let mut registry = Registry::default();
    registry.register(
        "turnpike_build",
        "Version of the running binary",
        Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]),
    );
    registry.register_collector(Box::new(TurnpikeCollector {
        status,
        hub,
        fleet,
        connections,
        shared_port,
        certificates,
    }));
    registry
}

/// The OpenMetrics text of `registry`.
pub fn encode(registry: &Registry) -> String {
    let mut text = String::new();
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut text, registry);
    text
}

/// `GET /metrics`: OpenMetrics text for Prometheus.
pub(super) async fn text(State(app): State<Arc<App>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        encode(&app.metrics),
    )
        .into_response()
}

struct TurnpikeCollector {
    status: ServerStatus,
    hub: Arc<Hub>,
    /// With `[fleet]`.
    fleet: Option<Arc<FleetStatus>>,
    connections: Arc<Mutex<ConnectionTable>>,
    /// With a TLS port shared with HTTP: where its connections went.
    shared_port: Option<Arc<SharedPortCounts>>,
    /// When a certificate is served: its expiry, and the ACME client's
    /// counts.
    certificates: Option<Arc<TlsCertificates>>,
}

impl std::fmt::Debug for TurnpikeCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TurnpikeCollector")
    }
}

/// Writes one metric family: `samples` are (labels, value).
pub(super) fn family<'a>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    kind: MetricType,
    samples: impl IntoIterator<Item = (Vec<(&'a str, String)>, u64)>,
) -> std::fmt::Result {
    let metric = encoder.encode_descriptor(name, help, unit, kind)?;
    let samples: Vec<_> = samples.into_iter().collect();
    // A lone sample without labels is written bare (`name 3`, not `name{} 3`).
    if let [(labels, value)] = samples.as_slice() {
        if labels.is_empty() {
            return sample(metric, kind, *value);
        }
    }
    let mut metric = metric;
    for (labels, value) in &samples {
        sample(metric.encode_family(labels)?, kind, *value)?;
    }
    Ok(())
}

pub(super) fn sample(encoder: MetricEncoder<'_>, kind: MetricType, value: u64) -> std::fmt::Result {
    match kind {
        MetricType::Counter => ConstCounter::new(value).encode(encoder),
        _ => ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX)).encode(encoder),
    }
}

pub(super) fn one<'a>(value: u64) -> Vec<(Vec<(&'a str, String)>, u64)> {
    vec![(Vec::new(), value)]
}

/// `[transport][family]` tables as labelled samples.
fn by_transport_family<'a>(
    table: &[[u64; FAMILIES.len()]; TRANSPORTS.len()],
    extra: Option<(&'a str, &'a str)>,
) -> Vec<(Vec<(&'a str, String)>, u64)> {
    let mut out = Vec::new();
    for (t, row) in table.iter().enumerate() {
        for (f, value) in row.iter().enumerate() {
            let mut labels = vec![
                ("transport", TRANSPORTS[t].to_owned()),
                ("family", FAMILIES[f].to_owned()),
            ];
            labels.extend(extra.map(|(k, v)| (k, v.to_owned())));
            out.push((labels, *value));
        }
    }
    out
}

/// One sample per value of label `name`, `counts` in the order of `values`.
pub(super) fn by_label<'a>(
    name: &'a str,
    values: &[&str],
    counts: impl IntoIterator<Item = u64>,
) -> Vec<(Vec<(&'a str, String)>, u64)> {
    values
        .iter()
        .zip(counts)
        .map(|(value, count)| (vec![(name, (*value).to_owned())], count))
        .collect()
}

fn directions<'a>(to_peer: u64, to_client: u64) -> Vec<(Vec<(&'a str, String)>, u64)> {
    vec![
        (vec![("direction", "to_peer".to_owned())], to_peer),
        (vec![("direction", "to_client".to_owned())], to_client),
    ]
}

impl Collector for TurnpikeCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        use MetricType::{Counter, Gauge};
        let snapshot = self.status.snapshot();
        let c = &snapshot.counters;
        let e = &mut encoder;

        let requests = METHODS.iter().enumerate().flat_map(|(m, method)| {
            CODES.iter().enumerate().filter_map(move |(i, code)| {
                let value = c.requests[m][i];
                (value > 0).then(|| {
                    (
                        vec![("method", (*method).to_owned()), ("code", code.to_string())],
                        value,
                    )
                })
            })
        });
        family(
            e,
            "turnpike_requests",
            "STUN/TURN requests answered, by method and response code (200 = success)",
            None,
            Counter,
            requests,
        )?;
        let auth = by_label("reason", &AUTH_FAILURES, c.auth_failures);
        family(
            e,
            "turnpike_auth_failures",
            "Requests refused by authentication, by reason",
            None,
            Counter,
            auth,
        )?;
        let authentications = by_label("algorithm", &PASSWORD_ALGORITHMS, c.authentications);
        family(
            e,
            "turnpike_authentications",
            "Requests that passed the long-term credential check, by password algorithm (RFC 8489 §9.2: md5 or sha256)",
            None,
            Counter,
            authentications,
        )?;
        let refusals = by_label("limit", &REFUSALS, c.refusals);
        family(
            e,
            "turnpike_quota_refusals",
            "Requests refused by a quota or limit (486 or 508), and TCP peer connections refused by a cap, by limit",
            None,
            Counter,
            refusals,
        )?;
        family(
            e,
            "turnpike_peer_refusals",
            "Peer addresses refused by the peer filter (403)",
            None,
            Counter,
            one(c.peer_refusals),
        )?;
        family(
            e,
            "turnpike_relayed_in_process_packets",
            "Packets one of this server's relays sent to another of its relays, handed over inside the process instead of through the kernel",
            None,
            Counter,
            one(c.relayed_in_process),
        )?;
        family(
            e,
            "turnpike_relay_handoff_drops",
            "Relay-to-relay packets that had no way to their shard (no such shard, or the sending relay is gone); a full queue falls back to the kernel instead",
            None,
            Counter,
            one(c.relay_handoff_drops),
        )?;
        family(
            e,
            "turnpike_relay_handoff_fallbacks",
            "Relay-to-relay packets sent through the kernel because the receiving shard's queue was full",
            None,
            Counter,
            one(c.relay_handoff_fallbacks),
        )?;

        family(
            e,
            "turnpike_allocations",
            "Allocations now, by client transport and relay family",
            None,
            Gauge,
            by_transport_family(&snapshot.allocations, None),
        )?;
        family(
            e,
            "turnpike_allocations_created",
            "Allocations created, by client transport and relay family",
            None,
            Counter,
            by_transport_family(&c.allocations_created, None),
        )?;
        let ended = END_REASONS
            .iter()
            .enumerate()
            .flat_map(|(r, reason)| by_transport_family(&c.allocations_ended[r], Some(("reason", reason))));
        family(
            e,
            "turnpike_allocations_ended",
            "Allocations ended, by reason (expired, deleted by the client, connection closed, ended by the operator), transport and family",
            None,
            Counter,
            ended,
        )?;
        family(
            e,
            "turnpike_permissions",
            "Permissions installed now",
            None,
            Gauge,
            one(snapshot.permissions),
        )?;
        family(
            e,
            "turnpike_channels",
            "Channels bound now",
            None,
            Gauge,
            one(snapshot.channels),
        )?;
        family(
            e,
            "turnpike_peer_connections",
            "TCP peer connections of TCP relays (RFC 6062) now",
            None,
            Gauge,
            one(snapshot.peer_connections),
        )?;
        let admin = by_label("outcome", &ADMIN_OUTCOMES, self.status.admin_requests());
        family(
            e,
            "turnpike_admin_requests",
            "Admin API requests answered, by outcome",
            None,
            Counter,
            admin,
        )?;
        let revocations = self.fleet.as_ref().map(|fleet| fleet.revocations()).unwrap_or_default();
        let fleet_revocations = by_label("outcome", &REVOCATION_OUTCOMES, revocations);
        family(
            e,
            "turnpike_fleet_revocations",
            "Revocations shared through the fleet's Redis, by outcome (shared: written; applied: heard and held here; invalid: refused input; dropped: never shared; limited: heard, not held here: over the apply rate or the fleet's part full)",
            None,
            Counter,
            fleet_revocations,
        )?;
        family(
            e,
            "turnpike_revoked_usernames",
            "Usernames revoked through the admin API (expired ones are forgotten lazily)",
            None,
            Gauge,
            one(self.status.revoked_usernames() as u64),
        )?;
        let attached = self.status.fast_path();
        if !attached.is_empty() {
            let samples = attached
                .iter()
                .map(|(interface, mode)| (vec![("interface", interface.clone()), ("mode", (*mode).to_owned())], 1));
            let help = "1 for each interface the XDP fast path is attached to, by mode (native or generic); absent with relay.fast_path off or when it attached nowhere";
            family(e, "turnpike_fast_path_attached", help, None, Gauge, samples)?;
        }
        if let Some(counts) = self.status.fast_path_counts() {
            let verdicts = counts
                .verdicts
                .iter()
                .map(|(verdict, n)| (vec![("verdict", (*verdict).to_owned())], *n));
            let help = "Frames the XDP fast path saw, by verdict: tx_* relayed in the kernel, pass_* handed to user space and why (docs/xdp.md)";
            family(e, "turnpike_fast_path_verdicts", help, None, Counter, verdicts)?;
            let routes = [("channels", counts.channel_routes), ("peers", counts.peer_routes)]
                .map(|(map, n)| (vec![("map", map.to_owned())], n));
            let help = "Routes installed in the XDP fast path: clients' channels and peers' addresses";
            family(e, "turnpike_fast_path_routes", help, None, Gauge, routes)?;
        }

        let (to_peer, to_client): (Traffic, Traffic) = (snapshot.to_peer, snapshot.to_client);
        family(
            e,
            "turnpike_relayed_packets",
            "Relayed packets, by direction",
            None,
            Counter,
            directions(to_peer.packets, to_client.packets),
        )?;
        family(
            e,
            "turnpike_relayed",
            "Relayed payload bytes, by direction",
            Some(&Unit::Bytes),
            Counter,
            directions(to_peer.bytes, to_client.bytes),
        )?;
        let limited = |f: fn(&Traffic) -> u64| {
            RATE_LIMITS
                .iter()
                .zip(&c.rate_limited)
                .map(move |(limit, t)| (vec![("limit", (*limit).to_owned())], f(t)))
        };
        family(
            e,
            "turnpike_rate_limited_packets",
            "Relayed packets dropped by a byte rate (limits.*_bytes_per_second), by limit",
            None,
            Counter,
            limited(|t| t.packets),
        )?;
        family(
            e,
            "turnpike_rate_limited",
            "Relayed payload bytes dropped by a byte rate, by limit",
            Some(&Unit::Bytes),
            Counter,
            limited(|t| t.bytes),
        )?;
        family(
            e,
            "turnpike_stream_connections",
            "TCP and TLS client connections open now",
            None,
            Gauge,
            one(self.status.stream_connections() as u64),
        )?;
        let draining = u64::from(self.status.draining());
        family(
            e,
            "turnpike_draining",
            "1 while shutting down (new allocations refused)",
            None,
            Gauge,
            one(draining),
        )?;

        let (rooms, peers, sessions) = self.hub.counts();
        family(
            e,
            "turnpike_signaling_rooms",
            "Signaling rooms now",
            None,
            Gauge,
            one(rooms as u64),
        )?;
        family(
            e,
            "turnpike_signaling_peers",
            "Signaling peers in a room now",
            None,
            Gauge,
            one(peers as u64),
        )?;
        family(
            e,
            "turnpike_signaling_sessions",
            "Signaling sessions now, detached ones waiting for a resume included",
            None,
            Gauge,
            one(sessions as u64),
        )?;
        family(
            e,
            "turnpike_signaling_detached_sessions",
            "Signaling sessions kept for resume after their socket dropped, each holding its connection's slot",
            None,
            Gauge,
            one(self.hub.detached_count() as u64),
        )?;
        let counters = self.hub.counters();
        let messages = by_label("type", &MESSAGE_KINDS, counters.messages);
        family(
            e,
            "turnpike_signaling_messages",
            "Signaling messages from clients, by type",
            None,
            Counter,
            messages,
        )?;
        let errors = by_label("code", &ErrorCode::ALL, counters.errors);
        family(
            e,
            "turnpike_signaling_errors",
            "Signaling errors sent to clients, by code",
            None,
            Counter,
            errors,
        )?;
        family(
            e,
            "turnpike_signaling_evictions",
            "Signaling sessions dropped because their outbox was full (a client that does not read)",
            None,
            Counter,
            one(counters.evictions),
        )?;
        family(
            e,
            "turnpike_signaling_resumes",
            "Signaling sessions resumed on a new WebSocket (protocol v1.1)",
            None,
            Counter,
            one(counters.resumes),
        )?;
        family(
            e,
            "turnpike_signaling_grace_expiries",
            "Detached signaling sessions whose resume grace period ran out (their room heard peer-left)",
            None,
            Counter,
            one(counters.grace_expiries),
        )?;
        if let Some(fleet) = &self.fleet {
            let (instances, _) = fleet.live_instances(crate::process::clock::unix_millis());
            fleet::encode_fleet(e, fleet.room_counts(), counters.fleet_dropped, self.hub.remote_count())?;
            family(
                e,
                "turnpike_fleet_instances",
                "Instances of the fleet heard from in the last 15 s (their reports on Redis), this one included",
                None,
                Gauge,
                one(instances),
            )?;
        }
        let (live, refused) = {
            let table = self.connections.lock().unwrap_or_else(|e| e.into_inner());
            (table.live(), table.refused())
        };
        family(
            e,
            "turnpike_http_connections",
            "HTTP connections open now, WebSockets included, by pool (general, or the monitoring reserve)",
            None,
            Gauge,
            [("general", live.0), ("monitoring", live.1)].map(|(pool, n)| (vec![("pool", pool.to_owned())], n as u64)),
        )?;
        let refused = by_label("reason", &ConnectionRefusal::ALL, refused);
        family(
            e,
            "turnpike_http_connections_refused",
            "HTTP connections closed at accept, by the limit they hit (per source, or in total)",
            None,
            Counter,
            refused,
        )?;
        let proxy = self.status.proxy_protocol();
        family(
            e,
            "turnpike_proxy_headers",
            "TCP, TLS and HTTP connections seen by the PROXY protocol step, by outcome (a trusted source's header \
             accepted, or local: it kept its own address; untrusted: a header from another source, refused; \
             invalid or timeout: a trusted source's header missing, malformed or late, refused)",
            None,
            Counter,
            proxy
                .counts()
                .map(|(outcome, n)| (vec![("outcome", outcome.to_owned())], n)),
        )?;
        if let Some(certificates) = &self.certificates {
            tls::encode_tls(e, certificates)?;
        }
        if let Some(shared) = &self.shared_port {
            let load = |n: &std::sync::atomic::AtomicU64| n.load(std::sync::atomic::Ordering::Relaxed);
            let dispatched = [
                ("turn", &shared.turn),
                ("http", &shared.http),
                ("closed", &shared.closed),
            ]
            .map(|(to, n)| (vec![("to", to.to_owned())], load(n)));
            family(
                e,
                "turnpike_shared_tls_port_connections",
                "Connections of TLS ports shared with HTTP after their handshake, by where they went \
                 (served as TURN, handed to HTTP, or closed: neither, silent, or the HTTP queue full)",
                None,
                Counter,
                dispatched,
            )?;
        }
        Ok(())
    }
}
