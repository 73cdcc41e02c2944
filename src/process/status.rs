//! What the rest of the process may ask or tell the running shards, from
//! any thread: liveness, allocation count, counters, and the start of a
//! drain. The supervisor in `main.rs` and the HTTP endpoint read it; the
//! shards write it.
//!
//! Each shard publishes a heartbeat and its latest [`Snapshot`] every
//! `HEARTBEAT_INTERVAL` (250 ms), from a task on its own event loop, so
//! what is read here is at most one interval old and reading it never
//! waits for a shard. Every lock here guards plain data written whole, so
//! a poisoned lock is still used.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::clock;
use super::proxy_protocol::ProxyProtocol;
use crate::proto::quota::AllocationQuota;
use crate::proto::revocations::Revocations;
use crate::proto::stats::Snapshot;

/// How often each shard proves it is alive and publishes its snapshot.
pub(crate) const HEARTBEAT_INTERVAL: Duration = Duration::from_millis(250);

/// Open TCP and TLS connections over all shards, checked against
/// `limits.max_connections` when a connection is accepted.
pub(crate) type ConnectionCount = Arc<AtomicUsize>;

/// Liveness, allocation count, counters and drain of the running shards;
/// a cheap clone for every thread that needs it.
#[derive(Clone)]
pub struct ServerStatus {
    heartbeats: Arc<Heartbeats>,
    quota: Arc<AllocationQuota>,
    /// Each shard's latest [`Snapshot`], published with its heartbeat.
    snapshots: Arc<Vec<Mutex<Snapshot>>>,
    connections: ConnectionCount,
    /// The revoked usernames every shard refuses (counted in metrics).
    revocations: Arc<Revocations>,
    /// Requests the admin API answered, by [`ADMIN_OUTCOMES`].
    admin_requests: Arc<[AtomicU64; ADMIN_OUTCOMES.len()]>,
    proxy_protocol: Arc<ProxyProtocol>,
    /// The interfaces the XDP fast path is attached to, and in which
    /// mode (`"native"`, `"generic"`); set once at start.
    fast_path: Arc<[(String, &'static str)]>,
    /// Reads the fast path's own counts at a scrape, while it is on.
    fast_path_counts: Option<FastPathReader>,
}

/// What the fast path's maps hold now.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FastPathCounts {
    /// Frames by the program's verdict (metric label, count).
    pub verdicts: Vec<(&'static str, u64)>,
    pub channel_routes: u64,
    pub peer_routes: u64,
}

/// Reads [`FastPathCounts`]; `None` if the maps cannot be read.
pub type FastPathReader = Arc<dyn Fn() -> Option<FastPathCounts> + Send + Sync>;

/// How the admin API answered a request (metric label values).
pub const ADMIN_OUTCOMES: [&str; 4] = ["ok", "unauthorized", "client_error", "server_error"];

impl ServerStatus {
    /// The status of `shards` shards that have not beaten yet.
    pub(crate) fn new(
        shards: usize,
        quota: Arc<AllocationQuota>,
        connections: ConnectionCount,
        proxy_protocol: Arc<ProxyProtocol>,
    ) -> ServerStatus {
        ServerStatus {
            heartbeats: Arc::new(Heartbeats {
                origin: clock::mono(),
                beats: (0..shards).map(|_| AtomicU64::new(0)).collect(),
            }),
            quota,
            snapshots: Arc::new((0..shards).map(|_| Mutex::new(Snapshot::default())).collect()),
            connections,
            revocations: Arc::default(),
            admin_requests: Arc::default(),
            proxy_protocol,
            fast_path: Arc::new([]),
            fast_path_counts: None,
        }
    }

    /// The same status, with the fast path attached to `attached`
    /// (interface, mode).
    pub(crate) fn with_fast_path(
        mut self,
        attached: Vec<(String, &'static str)>,
        counts: Option<FastPathReader>,
    ) -> ServerStatus {
        self.fast_path = attached.into();
        self.fast_path_counts = counts;
        self
    }

    /// The fast path's verdicts and routes now, while it is attached.
    pub fn fast_path_counts(&self) -> Option<FastPathCounts> {
        self.fast_path_counts.as_ref().and_then(|read| read())
    }

    /// The interfaces the XDP fast path is attached to, with the mode.
    pub fn fast_path(&self) -> &[(String, &'static str)] {
        &self.fast_path
    }

    /// The same status, counting the revoked usernames of `revocations`.
    pub(crate) fn with_revocations(mut self, revocations: Arc<Revocations>) -> ServerStatus {
        self.revocations = revocations;
        self
    }

    /// Usernames revoked now (expired ones not yet forgotten included).
    pub fn revoked_usernames(&self) -> usize {
        self.revocations.len()
    }

    /// Counts one admin API answer with HTTP status `code`.
    pub fn count_admin_request(&self, code: u16) {
        let outcome = match code {
            200..=399 => 0,
            401 => 1,
            400..=499 => 2,
            _ => 3,
        };
        self.admin_requests[outcome].fetch_add(1, Ordering::Relaxed);
    }

    /// Admin API answers so far, by [`ADMIN_OUTCOMES`].
    pub fn admin_requests(&self) -> [u64; ADMIN_OUTCOMES.len()] {
        std::array::from_fn(|i| self.admin_requests[i].load(Ordering::Relaxed))
    }

    /// Called by shard `shard` on its own event loop every
    /// [`HEARTBEAT_INTERVAL`]: it is alive, and these are its numbers.
    pub(crate) fn publish(&self, shard: usize, snapshot: Snapshot) {
        self.heartbeats.beat(shard);
        if let Some(slot) = self.snapshots.get(shard) {
            *slot.lock().unwrap_or_else(|e| e.into_inner()) = snapshot;
        }
    }

    /// True if every shard's event loop has run within `within`.
    pub fn responsive(&self, within: Duration) -> bool {
        let now = self.heartbeats.now_ms();
        let limit = u64::try_from(within.as_millis()).unwrap_or(u64::MAX);
        self.heartbeats
            .beats
            .iter()
            .all(|beat| now.saturating_sub(beat.load(Ordering::Relaxed)) <= limit)
    }

    /// Allocations on all shards, with the EVEN-PORT reservations that are
    /// charged like allocations for their 30 s.
    pub fn allocations(&self) -> usize {
        self.quota.total()
    }

    /// Starts a graceful shutdown: every new Allocate gets 508 from now on,
    /// while existing allocations keep working until they end.
    pub fn begin_drain(&self) {
        self.quota.close();
    }

    pub fn draining(&self) -> bool {
        self.quota.is_closed()
    }

    /// The sum of every shard's latest snapshot (at most one heartbeat
    /// interval old).
    pub fn snapshot(&self) -> Snapshot {
        let mut sum = Snapshot::default();
        for shard in self.snapshots.iter() {
            sum.merge(&shard.lock().unwrap_or_else(|e| e.into_inner()));
        }
        sum
    }

    /// The PROXY protocol step every stream and HTTP listener shares, with
    /// its counts.
    pub fn proxy_protocol(&self) -> Arc<ProxyProtocol> {
        self.proxy_protocol.clone()
    }

    /// TCP and TLS connections open now.
    pub fn stream_connections(&self) -> usize {
        self.connections.load(Ordering::Relaxed)
    }
}

/// One timestamp per shard, written by a task on the shard's own event
/// loop every [`HEARTBEAT_INTERVAL`]. A loop stuck in a handler cannot run
/// that task, so a stale timestamp means a wedged shard (what the systemd
/// watchdog is for).
struct Heartbeats {
    origin: Instant,
    /// Milliseconds since `origin` of each shard's last beat.
    beats: Vec<AtomicU64>,
}

impl Heartbeats {
    fn now_ms(&self) -> u64 {
        u64::try_from(clock::mono().duration_since(self.origin).as_millis()).unwrap_or(u64::MAX)
    }

    fn beat(&self, shard: usize) {
        if let Some(slot) = self.beats.get(shard) {
            slot.store(self.now_ms(), Ordering::Relaxed);
        }
    }
}
