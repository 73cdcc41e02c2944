//! The fleet's families of `/metrics` (`[fleet]`): Redis up, remote
//! peers, messages and drops.

use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::metrics::MetricType;

use super::{family, one};
use crate::fleet::RoomCounts;

/// The `[fleet]` families, written only when a fleet is configured (so
/// the output of a lone instance is unchanged).
pub(super) fn encode_fleet(
    e: &mut DescriptorEncoder,
    fleet: RoomCounts,
    undeliverable: u64,
    remote: usize,
) -> std::fmt::Result {
    use MetricType::{Counter, Gauge};
    family(
        e,
        "turnpike_fleet_redis_up",
        "1 while the fleet's Redis is reachable (rooms span the fleet), 0 while rooms are local",
        None,
        Gauge,
        one(u64::from(fleet.up)),
    )?;
    family(
        e,
        "turnpike_fleet_remote_peers",
        "Peers of other instances in this instance's rooms now",
        None,
        Gauge,
        one(remote as u64),
    )?;
    family(
        e,
        "turnpike_fleet_messages",
        "Messages published to other instances (sent) and read from this instance's channel (received)",
        None,
        Counter,
        [("sent", fleet.sent), ("received", fleet.received)].map(|(d, n)| (vec![("direction", d.to_owned())], n)),
    )?;
    family(
        e,
        "turnpike_fleet_dropped",
        "Fleet messages dropped: refused as invalid, for a peer not in that room here or over the queue bound \
         (undeliverable), or not sent while Redis was down (outage)",
        None,
        Counter,
        [
            ("invalid", fleet.invalid),
            ("undeliverable", undeliverable),
            ("outage", fleet.outage_drops),
        ]
        .map(|(r, n)| (vec![("reason", r.to_owned())], n)),
    )
}
