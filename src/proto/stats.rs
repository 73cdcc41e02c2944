//! What the core counts, for metrics: plain integers owned by one core
//! (one per shard), so counting costs an add and no synchronisation. The
//! driver takes a [`Snapshot`] now and then and publishes it; an exporter
//! sums the shards' snapshots.
//!
//! Almost nothing here is touched per relayed packet: relayed traffic is
//! counted per allocation already (for its log line), and a snapshot adds
//! the live allocations' counts to those of the ended ones. The exception
//! is one add per payload relayed from one of our relays to another inside
//! the process, which no allocation's counts tell apart.

use super::addr::Transport;
use super::method::Method;

/// Request methods, as metric label values: indexed by [`Method`], and
/// `other` last for requests of a method the server does not answer.
pub const METHODS: [&str; Method::ALL.len() + 1] = {
    let mut labels = ["other"; Method::ALL.len() + 1];
    let mut i = 0;
    while i < Method::ALL.len() {
        labels[i] = Method::ALL[i].label();
        i += 1;
    }
    labels
};

/// Answer codes a request can get (200 = success), as counted.
pub const CODES: [u16; 17] = [
    200, 300, 400, 401, 403, 420, 437, 438, 440, 441, 442, 443, 446, 447, 486, 500, 508,
];

/// Why authentication failed (label values). A first request without
/// credentials is the normal challenge and is not counted.
pub const AUTH_FAILURES: [&str; 8] = [
    "unknown_user",
    "expired_credential",
    "bad_integrity",
    "stale_nonce",
    "credential_too_long",
    "rate_limited",
    "revoked",
    "algorithm",
];

/// Index into [`AUTH_FAILURES`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthFailure {
    UnknownUser = 0,
    ExpiredCredential = 1,
    BadIntegrity = 2,
    StaleNonce = 3,
    /// An ephemeral credential beyond `auth.max_credential_lifetime`.
    CredentialTooLong = 4,
    /// Too many failures from the source or for the username lately: the
    /// request was refused without a look at its credentials.
    RateLimited = 5,
    /// A username the operator revoked (`proto::revocations`).
    Revoked = 6,
    /// A password algorithm this server does not take (RFC 8489 §9.2.1).
    Algorithm = 7,
}

/// Which limit refused a request, or an RFC 6062 peer connecting in
/// (label values).
pub const REFUSALS: [&str; 11] = [
    "allocations_per_user",
    "allocations_total",
    "draining",
    "relay_ports",
    "permissions",
    "channels",
    "challenge_budget",
    "peer_connections_per_allocation",
    "peer_connections_total",
    "allocations_per_source",
    "bandwidth",
];

/// Index into [`REFUSALS`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LimitRefusal {
    AllocationsPerUser = 0,
    AllocationsTotal = 1,
    Draining = 2,
    RelayPorts = 3,
    Permissions = 4,
    Channels = 5,
    /// A source's challenge budget was spent (the request went unanswered).
    ChallengeBudget = 6,
    PeerConnectionsPerAllocation = 7,
    PeerConnectionsTotal = 8,
    AllocationsPerSource = 9,
    /// The server relays more than `alternate.bytes_per_second`.
    Bandwidth = 10,
}

/// Which byte rate dropped a relayed packet (label values).
pub const RATE_LIMITS: [&str; 2] = ["allocation", "user"];

/// Index into [`RATE_LIMITS`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RateLimit {
    Allocation = 0,
    User = 1,
}

/// Client transports (label values), indexed by [`Transport`].
pub const TRANSPORTS: [&str; 3] = [
    Transport::ALL[0].label(),
    Transport::ALL[1].label(),
    Transport::ALL[2].label(),
];
/// Relay families of an allocation (label values).
pub const FAMILIES: [&str; 3] = ["ipv4", "ipv6", "dual"];
/// Why an allocation ended (label values).
pub const END_REASONS: [&str; 4] = ["expired", "deleted", "connection_closed", "operator"];

/// Index into [`END_REASONS`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EndReason {
    Expired = 0,
    Deleted = 1,
    ConnectionClosed = 2,
    /// Ended through the admin API, or its username revoked.
    Operator = 3,
}

/// Packets and bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Traffic {
    pub packets: u64,
    pub bytes: u64,
}

impl Traffic {
    /// One packet of `len` bytes.
    pub fn count(&mut self, len: usize) {
        self.packets += 1;
        self.bytes += len as u64;
    }

    pub fn add(&mut self, other: Traffic) {
        self.packets += other.packets;
        self.bytes += other.bytes;
    }
}

/// Monotonic counters of one core.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// `[method][code]`, indexed by [`METHODS`] and [`CODES`].
    pub requests: [[u64; CODES.len()]; METHODS.len()],
    pub auth_failures: [u64; AUTH_FAILURES.len()],
    /// Requests that authenticated, by password algorithm
    /// ([`crate::proto::auth::PASSWORD_ALGORITHMS`]).
    pub authentications: [u64; crate::proto::auth::PASSWORD_ALGORITHMS.len()],
    pub refusals: [u64; REFUSALS.len()],
    /// Peers refused by the peer filter (403).
    pub peer_refusals: u64,
    /// Payloads relayed from one of our relays to another without the
    /// kernel, and those dropped because the owning shard's queue was full.
    pub relayed_in_process: u64,
    pub relay_handoff_drops: u64,
    /// Relay-to-relay payloads sent through the kernel because the owning
    /// shard's queue was full.
    pub relay_handoff_fallbacks: u64,
    /// `[transport][family]`.
    pub allocations_created: [[u64; FAMILIES.len()]; TRANSPORTS.len()],
    /// `[reason][transport][family]`.
    pub allocations_ended: [[[u64; FAMILIES.len()]; TRANSPORTS.len()]; END_REASONS.len()],
    /// Relayed packets dropped by a byte rate, by [`RATE_LIMITS`].
    pub rate_limited: [Traffic; RATE_LIMITS.len()],
    /// Traffic of allocations that have ended: to peers, to clients.
    pub ended_to_peer: Traffic,
    pub ended_to_client: Traffic,
}

impl Counters {
    /// Counts one answer to a request of `method` (`None`: one the server
    /// does not answer) with `code` (200 for success).
    pub fn request(&mut self, method: Option<Method>, code: u16) {
        let code = CODES.iter().position(|c| *c == code).unwrap_or(CODES.len() - 2);
        self.requests[method.map_or(METHODS.len() - 1, |m| m as usize)][code] += 1;
    }
}

/// A core's counters plus what is live right now.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub counters: Counters,
    /// Live allocations, `[transport][family]`.
    pub allocations: [[u64; FAMILIES.len()]; TRANSPORTS.len()],
    pub permissions: u64,
    pub channels: u64,
    /// TCP peer connections of TCP allocations (RFC 6062).
    pub peer_connections: u64,
    /// All relayed traffic so far, ended and live allocations together.
    pub to_peer: Traffic,
    pub to_client: Traffic,
}

impl Snapshot {
    /// Adds `other` into `self` (summing shards).
    pub fn merge(&mut self, other: &Snapshot) {
        let (a, b) = (&mut self.counters, &other.counters);
        for (x, y) in a.requests.iter_mut().flatten().zip(b.requests.iter().flatten()) {
            *x += y;
        }
        for (x, y) in a.auth_failures.iter_mut().zip(&b.auth_failures) {
            *x += y;
        }
        for (x, y) in a.authentications.iter_mut().zip(&b.authentications) {
            *x += y;
        }
        for (x, y) in a.refusals.iter_mut().zip(&b.refusals) {
            *x += y;
        }
        a.peer_refusals += b.peer_refusals;
        a.relayed_in_process += b.relayed_in_process;
        a.relay_handoff_drops += b.relay_handoff_drops;
        a.relay_handoff_fallbacks += b.relay_handoff_fallbacks;
        for (x, y) in a.rate_limited.iter_mut().zip(&b.rate_limited) {
            x.add(*y);
        }
        for (x, y) in a
            .allocations_created
            .iter_mut()
            .flatten()
            .zip(b.allocations_created.iter().flatten())
        {
            *x += y;
        }
        for (x, y) in a
            .allocations_ended
            .iter_mut()
            .flatten()
            .flatten()
            .zip(b.allocations_ended.iter().flatten().flatten())
        {
            *x += y;
        }
        a.ended_to_peer.add(b.ended_to_peer);
        a.ended_to_client.add(b.ended_to_client);
        for (x, y) in self
            .allocations
            .iter_mut()
            .flatten()
            .zip(other.allocations.iter().flatten())
        {
            *x += y;
        }
        self.permissions += other.permissions;
        self.channels += other.channels;
        self.peer_connections += other.peer_connections;
        self.to_peer.add(other.to_peer);
        self.to_client.add(other.to_client);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn method_labels_follow_the_enum_and_end_with_other() {
        assert_eq!(METHODS[Method::ConnectionBind as usize], "connection_bind");
        assert_eq!(METHODS[METHODS.len() - 1], "other");
        assert_eq!(TRANSPORTS[Transport::Tls as usize], "tls");
    }

    #[test]
    fn unknown_codes_count_as_500_and_merge_adds_everything() {
        let mut a = Snapshot::default();
        a.counters.request(Some(Method::Allocate), 200);
        a.counters.request(Some(Method::Allocate), 999);
        assert_eq!(a.counters.requests[1][0], 1);
        assert_eq!(a.counters.requests[1][CODES.iter().position(|c| *c == 500).unwrap()], 1);
        a.permissions = 2;
        a.to_peer = Traffic { packets: 3, bytes: 30 };
        let mut sum = Snapshot::default();
        sum.merge(&a);
        sum.merge(&a);
        assert_eq!(sum.counters.requests[1][0], 2);
        assert_eq!(sum.permissions, 4);
        assert_eq!(sum.to_peer, Traffic { packets: 6, bytes: 60 });
    }
}
