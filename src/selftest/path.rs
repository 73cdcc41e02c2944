//! The echo path of one allocation, and the permission and echo steps
//! that find it.
//!
//! First the local [`EchoPeer`], named by the reflexive IP the server saw
//! (what it can send to if this machine is reachable); if the permission
//! for it is refused or nothing comes back within the timeout, relay ↔
//! relay with a second allocation on the same server ([`RelayEcho`]),
//! which a server relays to itself. The permission check passes if the
//! path used was permitted; it fails only if both were refused, naming
//! both reasons (a peer filter refusing the relay range is how that
//! shows). Whatever is found, the report says which path and why the
//! other was not taken.

use std::net::{IpAddr, SocketAddr};

use serde_json::Map;

use super::checks::{connect, ms, ms_text, values, Checks};
use super::probe::{burst, EchoPeer, Pace, RelayEcho};
use super::report::{Step, Verdict};
use super::session::{Allocation, Session, StepError};
use super::url::TurnUrl;
use super::wire::secs;
use super::Plan;

/// Where the probes go, and the second allocation echoing them if that
/// is the path.
pub(super) struct Path {
    pub target: SocketAddr,
    pub name: &'static str,
    pub relay_echo: Option<RelayEcho>,
    /// The local peer, echoing for as long as the path is used.
    _peer: Option<EchoPeer>,
}

/// Tries the local peer, then relay ↔ relay; reports the permission and
/// echo steps. `None` if nothing echoed.
pub(super) async fn find_path(
    checks: &mut Checks,
    session: &mut Session,
    allocation: &Allocation,
    peer_ip: IpAddr,
    url: &TurnUrl,
    addrs: &[SocketAddr],
    plan: &Plan,
) -> Option<Path> {
    let once = Pace {
        count: 3,
        interval: plan.timeout / 3,
        wait: plan.timeout / 3,
        first_only: true,
    };
    let mut permitted: Option<String> = None;
    let peer_failure;
    let peer = match peer_ip.is_ipv4() == allocation.relayed.is_ipv4() {
        true => EchoPeer::start(peer_ip)
            .await
            .map_err(|e| format!("cannot open the local peer: {e}")),
        false => Err(format!("the reflexive address {peer_ip} is not of the relay's family")),
    };
    match peer {
        Err(reason) => peer_failure = reason,
        Ok(peer) => {
            let peer_addr = SocketAddr::new(peer_ip, peer.port());
            match session.create_permission(peer_addr).await {
                Ok(()) => {
                    permitted = Some(format!("granted for the local peer {peer_addr}"));
                    match burst(session, peer_addr, once).await {
                        Ok(found) if found.received() > 0 => {
                            let rtt = found.median().unwrap_or_default();
                            checks.push(
                                Step::Permission,
                                Verdict::Pass,
                                format!("granted for the local peer {peer_addr}"),
                                values([("path", "peer".into())]),
                            );
                            checks.push(
                                Step::Echo,
                                Verdict::Pass,
                                format!("echoed by the local peer {peer_addr} ({})", ms_text(rtt)),
                                values([("path", "peer".into()), ("rtt_ms", ms(rtt))]),
                            );
                            return Some(Path {
                                target: peer_addr,
                                name: "peer",
                                relay_echo: None,
                                _peer: Some(peer),
                            });
                        }
                        Ok(_) => {
                            peer_failure =
                                format!("no echo from the local peer {peer_addr} within {}", secs(plan.timeout))
                        }
                        Err(e) => peer_failure = format!("the local peer {peer_addr}: {e}"),
                    }
                }
                Err(e) if e.server_answered() => peer_failure = format!("the local peer {peer_addr}: {e}"),
                Err(e) => {
                    checks.push(Step::Permission, Verdict::Fail, e.to_string(), Map::new());
                    return None;
                }
            }
        }
    }

    let fallback = relay_to_relay(session, allocation, url, addrs, plan).await;
    let (second, echo) = match fallback {
        Ok(found) => found,
        Err(failure) => {
            let relay_failure = match failure {
                Fallback::Refused(e) => format!("relay ↔ relay: {e}"),
                Fallback::Other(reason) => format!("relay ↔ relay not possible: {reason}"),
            };
            let both = format!("{peer_failure}; {relay_failure}");
            match permitted {
                Some(granted) => {
                    checks.push(Step::Permission, Verdict::Pass, granted, Map::new());
                    checks.push(Step::Echo, Verdict::Fail, both, Map::new());
                }
                None => {
                    let hint = match both.matches("(403 ").count() {
                        0 => "",
                        _ => ": the server's peer filter refuses these addresses",
                    };
                    checks.push(Step::Permission, Verdict::Fail, format!("{both}{hint}"), Map::new());
                }
            }
            return None;
        }
    };
    checks.push(
        Step::Permission,
        Verdict::Pass,
        format!(
            "granted relay ↔ relay ({} ↔ {second}); {peer_failure}",
            allocation.relayed
        ),
        values([("path", "relay".into())]),
    );
    let found = burst(session, second, once).await;
    match found {
        Ok(found) if found.received() > 0 => {
            let rtt = found.median().unwrap_or_default();
            checks.push(
                Step::Echo,
                Verdict::Pass,
                format!(
                    "echoed relay ↔ relay by a second allocation {second} ({}); {peer_failure}",
                    ms_text(rtt)
                ),
                values([("path", "relay".into()), ("rtt_ms", ms(rtt))]),
            );
            Some(Path {
                target: second,
                name: "relay",
                relay_echo: Some(echo),
                _peer: None,
            })
        }
        other => {
            let why = match other {
                Err(e) => e.to_string(),
                Ok(_) => format!("no echo relay ↔ relay within {}", secs(plan.timeout)),
            };
            checks.push(Step::Echo, Verdict::Fail, format!("{why}; {peer_failure}"), Map::new());
            if let Some(mut second) = echo.stop().await {
                second.delete_allocation().await.ok();
            }
            None
        }
    }
}

enum Fallback {
    /// A CreatePermission between the two relays was refused.
    Refused(StepError),
    /// The second allocation could not be made.
    Other(String),
}

/// A second allocation on the same server, each relay permitted to the
/// other, echoing back to the first: (its relayed address, the echo).
async fn relay_to_relay(
    first: &mut Session,
    allocation: &Allocation,
    url: &TurnUrl,
    addrs: &[SocketAddr],
    plan: &Plan,
) -> Result<(SocketAddr, RelayEcho), Fallback> {
    let (wire, _) = connect(url, addrs, plan).await.map_err(|reported| {
        let why = reported
            .last()
            .map_or_else(String::new, |(_, _, detail, _)| detail.clone());
        Fallback::Other(format!("a second connection failed: {why}"))
    })?;
    let mut second = Session::new(wire, plan.credential.clone(), plan.timeout);
    let relayed = match second.allocate().await {
        Ok(found) => found.relayed,
        Err(e) => return Err(Fallback::Other(format!("a second Allocate failed: {e}"))),
    };
    let permitted = async {
        second.create_permission(allocation.relayed).await?;
        first.create_permission(relayed).await
    };
    if let Err(e) = permitted.await {
        second.delete_allocation().await.ok();
        return Err(match e.server_answered() {
            true => Fallback::Refused(e),
            false => Fallback::Other(e.to_string()),
        });
    }
    Ok((relayed, RelayEcho::start(second, allocation.relayed)))
}
