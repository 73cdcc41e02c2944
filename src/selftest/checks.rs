//! The steps of one URL, in order, each becoming a [`Check`].
//!
//! A step that fails in a way later steps depend on (no connection, no
//! answer, no allocation, no echo) ends the URL's run: the steps left are
//! reported as skipped with that reason. A refusal (an error answer) of
//! Binding does not: the server answered, so Allocate is still worth a try.
//! The permission and echo steps are [`super::path`]'s.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use serde_json::{Map, Value};
use tokio::time::Instant;

use super::path::find_path;
use super::probe::{burst, Pace};
use super::report::{Check, Step, Verdict};
use super::session::{Allocation, Session};
use super::url::{Transport, TurnUrl};
use super::wire::{resolve, secs, tcp_connect, Wire};
use super::Plan;
use crate::process::clock::unix_secs;

/// The checks of one URL so far, and the steps it will have.
pub(super) struct Checks {
    url: String,
    steps: Vec<Step>,
    done: Vec<Check>,
}

impl Checks {
    fn new(url: &TurnUrl) -> Checks {
        let mut steps = Vec::new();
        if url.transport == Transport::Tcp {
            steps.push(Step::Connect);
        }
        if url.scheme.is_secure() {
            steps.push(Step::Tls);
        }
        steps.push(Step::Binding);
        if url.scheme.is_turn() {
            steps.extend([
                Step::Allocate,
                Step::RelayedAddress,
                Step::Permission,
                Step::Echo,
                Step::Loss,
                Step::Refresh,
            ]);
        }
        Checks {
            url: url.to_string(),
            steps,
            done: Vec::new(),
        }
    }

    pub(super) fn push(&mut self, step: Step, verdict: Verdict, detail: impl Into<String>, values: Map<String, Value>) {
        self.done.push(Check {
            url: self.url.clone(),
            step,
            verdict,
            detail: detail.into(),
            values,
        });
    }

    /// The first step not yet reported.
    fn next_step(&self) -> Step {
        let done = |step: &&Step| self.done.iter().any(|c| c.step == **step);
        self.steps.iter().find(|s| !done(s)).copied().unwrap_or(Step::Binding)
    }

    /// Every check, the steps not reported skipped for `reason`.
    fn skip_rest(mut self, reason: &str) -> Vec<Check> {
        for step in self.steps.clone() {
            if !self.done.iter().any(|c| c.step == step) {
                self.push(step, Verdict::Skip, format!("not run: {reason}"), Map::new());
            }
        }
        self.done
    }
}

pub(super) fn values<const N: usize>(pairs: [(&str, Value); N]) -> Map<String, Value> {
    pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
}

pub(super) fn ms(d: Duration) -> Value {
    Value::from((d.as_secs_f64() * 1e6).round() / 1e3)
}

pub(super) fn ms_text(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

/// Runs every step of `url` and returns its checks.
pub async fn check_url(url: &TurnUrl, plan: &Plan) -> Vec<Check> {
    let mut checks = Checks::new(url);
    let addrs = match resolve(&url.host, url.port, plan.timeout).await {
        Ok(addrs) => addrs,
        Err(e) => {
            let step = checks.next_step();
            checks.push(
                step,
                Verdict::Fail,
                format!("cannot resolve {}: {e}", url.host),
                Map::new(),
            );
            return checks.skip_rest("the host has no address");
        }
    };
    let Some(wire) = open(url, &addrs, plan, &mut checks).await else {
        return checks.skip_rest("no connection");
    };
    let mut session = Session::new(wire, plan.credential.clone(), plan.timeout);

    let started = Instant::now();
    let mapped = match session.binding().await {
        Ok(mapped) => {
            let took = started.elapsed();
            checks.push(
                Step::Binding,
                Verdict::Pass,
                format!("reflexive address {mapped} ({})", ms_text(took)),
                values([("mapped_address", mapped.to_string().into()), ("rtt_ms", ms(took))]),
            );
            Some(mapped)
        }
        Err(e) => {
            let answered = e.server_answered();
            checks.push(Step::Binding, Verdict::Fail, e.to_string(), Map::new());
            if !answered {
                return checks.skip_rest("the server did not answer");
            }
            None
        }
    };
    if !url.scheme.is_turn() {
        return checks.done;
    }

    let allocation = match session.allocate().await {
        Ok(allocation) => allocation,
        Err(e) => {
            checks.push(Step::Allocate, Verdict::Fail, e.to_string(), Map::new());
            return checks.skip_rest("no allocation");
        }
    };
    report_allocation(&mut checks, &allocation, plan);
    report_relayed_address(&mut checks, &allocation, &addrs, plan);

    let mapped_ip = mapped.or(allocation.mapped).map(|a| a.ip());
    let peer_ip = mapped_ip.unwrap_or_else(|| session.local_addr().ip());
    let Some(path) = find_path(&mut checks, &mut session, &allocation, peer_ip, url, &addrs, plan).await else {
        session.delete_allocation().await.ok();
        return checks.skip_rest("no echo through the relay");
    };

    let pace = Pace {
        count: plan.count,
        interval: plan.interval,
        wait: plan.timeout,
        first_only: false,
    };
    match burst(&mut session, path.target, pace).await {
        Ok(found) => {
            let mut stats = values([
                ("path", path.name.into()),
                ("sent", found.sent.into()),
                ("received", found.received().into()),
                ("loss_percent", Value::from(found.loss_percent())),
            ]);
            for (key, rtt) in [
                ("rtt_median_ms", found.median()),
                ("rtt_min_ms", found.min()),
                ("rtt_max_ms", found.max()),
            ] {
                stats.insert(key.to_owned(), rtt.map_or(Value::Null, ms));
            }
            let rtt = match (found.median(), found.min(), found.max()) {
                (Some(median), Some(min), Some(max)) => format!(
                    ", round trip median {} (min {}, max {})",
                    ms_text(median),
                    ms_text(min),
                    ms_text(max)
                ),
                _ => String::new(),
            };
            let (verdict, what) = match found.received() {
                0 => (
                    Verdict::Fail,
                    format!("none of {} packets answered within {}", found.sent, secs(plan.timeout)),
                ),
                n if n == found.sent => (Verdict::Pass, format!("{n} of {n} packets answered")),
                n => (
                    Verdict::Warn,
                    format!(
                        "{} of {} packets lost ({:.0}%)",
                        found.sent - n,
                        found.sent,
                        found.loss_percent()
                    ),
                ),
            };
            checks.push(Step::Loss, verdict, format!("{what}{rtt}"), stats);
        }
        Err(e) => checks.push(Step::Loss, Verdict::Fail, e.to_string(), Map::new()),
    }
    if let Some(echo) = path.relay_echo {
        if let Some(mut second) = echo.stop().await {
            second.delete_allocation().await.ok();
        }
    }
    match session.delete_allocation().await {
        Ok(()) => checks.push(
            Step::Refresh,
            Verdict::Pass,
            "allocation deleted (Refresh with LIFETIME 0)",
            Map::new(),
        ),
        Err(e) => checks.push(Step::Refresh, Verdict::Fail, e.to_string(), Map::new()),
    }
    checks.done
}

/// Connects to the first of `addrs` that accepts (streams) or the first
/// (UDP), with the TLS handshake for secure URLs; reports the connect and
/// TLS steps.
async fn open(url: &TurnUrl, addrs: &[SocketAddr], plan: &Plan, checks: &mut Checks) -> Option<Wire> {
    match connect(url, addrs, plan).await {
        Ok((wire, report)) => {
            for (step, verdict, detail, values) in report {
                checks.push(step, verdict, detail, values);
            }
            Some(wire)
        }
        Err(report) => {
            for (step, verdict, detail, values) in report {
                checks.push(step, verdict, detail, values);
            }
            None
        }
    }
}

type Reported = Vec<(Step, Verdict, String, Map<String, Value>)>;

/// A wire to the server of `url`, and what its setup is to report; or
/// only the latter, ending in a failure.
pub(super) async fn connect(url: &TurnUrl, addrs: &[SocketAddr], plan: &Plan) -> Result<(Wire, Reported), Reported> {
    let mut reported = Reported::new();
    if url.transport == Transport::Udp {
        let addr = addrs[0];
        return match Wire::udp(addr).await {
            Ok(wire) => Ok((wire, reported)),
            Err(e) => {
                let detail = format!("cannot open a UDP socket towards {addr}: {e}");
                reported.push((Step::Binding, Verdict::Fail, detail, Map::new()));
                Err(reported)
            }
        };
    }
    let mut failures = Vec::new();
    let mut connected = None;
    for addr in addrs {
        let started = Instant::now();
        match tcp_connect(*addr, plan.timeout).await {
            Ok(stream) => {
                connected = Some((stream, *addr, started.elapsed()));
                break;
            }
            Err(e) => failures.push(format!("{addr}: {e}")),
        }
    }
    let Some((tcp, addr, took)) = connected else {
        let detail = format!("cannot connect to {}", failures.join("; "));
        reported.push((Step::Connect, Verdict::Fail, detail, Map::new()));
        return Err(reported);
    };
    reported.push((
        Step::Connect,
        Verdict::Pass,
        format!("connected to {addr} ({})", ms_text(took)),
        values([("address", addr.to_string().into()), ("ms", ms(took))]),
    ));
    let local = match tcp.local_addr() {
        Ok(local) => local,
        Err(e) => {
            reported.push((Step::Connect, Verdict::Fail, e.to_string(), Map::new()));
            return Err(reported);
        }
    };
    if !url.scheme.is_secure() {
        return Ok((Wire::stream(tcp, local), reported));
    }
    let Some(tls) = &plan.tls else {
        reported.push((
            Step::Tls,
            Verdict::Fail,
            "no trusted roots loaded".to_owned(),
            Map::new(),
        ));
        return Err(reported);
    };
    let handshake = match tokio::time::timeout(plan.timeout, tls.handshake(tcp, &url.host)).await {
        Ok(handshake) => handshake,
        Err(_) => {
            let detail = format!("no TLS handshake within {}", secs(plan.timeout));
            reported.push((Step::Tls, Verdict::Fail, detail, Map::new()));
            return Err(reported);
        }
    };
    let now = unix_secs();
    let mut found = Map::new();
    if let Some(leaf) = &handshake.leaf {
        found.insert("days_left".into(), leaf.days_left(now).into());
        found.insert("not_after".into(), leaf.not_after().into());
        found.insert("subject".into(), leaf.subject.clone().into());
        found.insert("issuer".into(), leaf.issuer.clone().into());
    }
    let stream = match handshake.result {
        Ok(stream) => stream,
        Err(reason) => {
            reported.push((Step::Tls, Verdict::Fail, reason, found));
            return Err(reported);
        }
    };
    let version = handshake.version.unwrap_or_else(|| "TLS".to_owned());
    found.insert("version".into(), version.clone().into());
    let (verdict, detail) = match &handshake.leaf {
        None => (
            Verdict::Warn,
            format!("{version}, certificate trusted, but its expiry could not be read"),
        ),
        Some(leaf) => {
            let days = leaf.days_left(now);
            let verdict = match days < plan.cert_warn_days {
                true => Verdict::Warn,
                false => Verdict::Pass,
            };
            (
                verdict,
                format!(
                    "{version}, certificate trusted for {:?}, expires {} ({days} days left), issuer {}",
                    url.host,
                    leaf.not_after(),
                    leaf.issuer
                ),
            )
        }
    };
    reported.push((Step::Tls, verdict, detail, found));
    Ok((Wire::stream(stream, local), reported))
}

fn report_allocation(checks: &mut Checks, allocation: &Allocation, plan: &Plan) {
    let lifetime = allocation
        .lifetime_secs
        .map_or("no LIFETIME".to_owned(), |s| format!("lifetime {s} s"));
    let mut detail = format!(
        "relayed address {}, {lifetime}, realm {:?}",
        allocation.relayed, allocation.realm
    );
    let mut verdict = Verdict::Pass;
    if let Some(expected) = plan.expect_realm.as_deref().filter(|r| *r != allocation.realm) {
        verdict = Verdict::Warn;
        detail.push_str(&format!(", but the config's server.realm is {expected:?}"));
    }
    let found = values([
        ("relayed_address", allocation.relayed.to_string().into()),
        ("lifetime_s", allocation.lifetime_secs.map_or(Value::Null, Value::from)),
        ("realm", allocation.realm.clone().into()),
    ]);
    checks.push(Step::Allocate, verdict, detail, found);
}

fn report_relayed_address(checks: &mut Checks, allocation: &Allocation, addrs: &[SocketAddr], plan: &Plan) {
    let relayed = allocation.relayed.ip();
    let (expected, source): (Vec<IpAddr>, &str) = match plan.expect_relay_ips.is_empty() {
        true => (
            addrs.iter().map(|a| a.ip()).collect(),
            "the address clients reach the server at",
        ),
        false => (plan.expect_relay_ips.clone(), "--expect-relay-ip"),
    };
    let list = expected.iter().map(IpAddr::to_string).collect::<Vec<_>>().join(", ");
    let found = values([("relayed_ip", relayed.to_string().into())]);
    let (verdict, detail) = if expected.contains(&relayed) {
        (Verdict::Pass, format!("{relayed} is {source}"))
    } else if expected.iter().all(|ip| ip.is_ipv4() != relayed.is_ipv4()) {
        (
            Verdict::Warn,
            format!("{relayed} not compared: {source} ({list}) is of the other family; give --expect-relay-ip"),
        )
    } else {
        (
            Verdict::Fail,
            format!(
                "{relayed} is not {source} ({list}): clients are told a relay address that may not reach \
                 this server (behind a NAT, set server.external_ip; if another address is meant, give \
                 --expect-relay-ip)"
            ),
        )
    };
    checks.push(Step::RelayedAddress, verdict, detail, found);
}
