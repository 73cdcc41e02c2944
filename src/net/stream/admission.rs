//! Admission of TCP and TLS connections: the places in the process-wide
//! limits that a connection takes at accept and gives back when it ends,
//! so that slow or hostile connections cannot hold memory:
//! * at most `max_connections` at once over all shards (a shared counter),
//!   and at most `max_per_source` per source address over all shards (one
//!   shared table, [`StreamSources`]);
//! * TLS handshakes per source are budgeted over all shards (the same
//!   table).
//!
//! Invariants:
//! * a connection holds its places in one [`StreamSlot`], which goes with
//!   it when it moves to another shard (`transfer`) and gives them back on
//!   drop, on whichever shard: it is counted once, wherever it is served;
//! * the per-source table has an entry only while its source has a
//!   connection open, so it is bounded by `max_connections`;
//! * the table is locked at accept and when a connection ends, never per
//!   frame, and no other lock is taken while it is held.
//!
//! A connection from a trusted proxy takes its places under the client its
//! PROXY header names, once that is read (see `listener`).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tracing::debug;

use crate::process::clock;
use crate::process::status::ConnectionCount;
use crate::proto::rate_table::RateTable;
use crate::proto::source::SourceKey;

/// Connection limits, from `[limits]`.
#[derive(Clone, Debug)]
pub(in crate::net) struct StreamLimits {
    pub max_connections: usize,
    /// Connections one source address may hold open at once.
    pub max_per_source: usize,
    /// TLS handshakes one source address may start a second (twice that
    /// at once).
    pub handshakes_per_source: u64,
    pub setup_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_frame: usize,
}

/// What each source address holds of the stream listeners of every
/// shard: its open connections (an entry only while it has one, so the
/// map is bounded by `max_connections`) and its TLS handshake budget (a
/// fixed table). One address cannot take every slot, nor keep the shards
/// busy with handshakes, without credentials.
///
/// One table for the process, shared by the shards' accept loops: the
/// limits are per source, not per source and shard. It is locked at
/// accept and when a connection ends, never per frame, and no other lock
/// is taken while it is held.
pub(in crate::net) struct StreamSources {
    open: Mutex<HashMap<SourceKey, usize>>,
    handshakes: Mutex<RateTable>,
}

/// Slots of the handshake budget table.
const HANDSHAKE_SLOTS: usize = 1024;

impl StreamSources {
    pub(in crate::net) fn new(limits: &StreamLimits, seed: [u8; 32]) -> StreamSources {
        let rate = limits.handshakes_per_source;
        StreamSources {
            open: Mutex::new(HashMap::new()),
            handshakes: Mutex::new(RateTable::new(&seed, HANDSHAKE_SLOTS, rate, rate.saturating_mul(2))),
        }
    }

    fn may_handshake(&self, source: SourceKey) -> bool {
        self.handshakes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .try_take(&source.octets(), 1, clock::mono())
    }

    pub(super) fn open(&self) -> std::sync::MutexGuard<'_, HashMap<SourceKey, usize>> {
        // The map is written whole under the lock: a panic elsewhere
        // cannot leave it half changed.
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A source's place among the open connections, given back on drop.
pub(super) struct SourceSlot {
    sources: Arc<StreamSources>,
    source: SourceKey,
}

impl SourceSlot {
    /// A place for one more connection from `source`, if it has fewer
    /// than `max` open.
    pub(super) fn take(sources: &Arc<StreamSources>, source: SourceKey, max: usize) -> Option<SourceSlot> {
        let mut open = sources.open();
        let n = open.entry(source).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(SourceSlot {
            sources: sources.clone(),
            source,
        })
    }
}

impl Drop for SourceSlot {
    fn drop(&mut self) {
        let mut open = self.sources.open();
        if let Some(n) = open.get_mut(&self.source) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.source);
            }
        }
    }
}

/// Decrements the shared connection count when a connection ends, however
/// it ends.
pub(super) struct Slot(pub(super) ConnectionCount);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A connection's places in the process-wide limits (the connection count
/// and its source's share), given back when it ends, on whichever shard.
pub(super) struct StreamSlot {
    _count: Slot,
    _source: SourceSlot,
}

impl StreamSlot {
    /// A connection's places: its share of the count and of its source's.
    pub(super) fn new(count: Slot, source: SourceSlot) -> StreamSlot {
        StreamSlot {
            _count: count,
            _source: source,
        }
    }
}

/// `remote`'s place among the open connections and, on a TLS listener,
/// a handshake of its budget; `None` (logged) if it has used them up.
pub(super) fn admit_source(
    sources: &Arc<StreamSources>,
    limits: &StreamLimits,
    tls: bool,
    local: SocketAddr,
    remote: SocketAddr,
) -> Option<SourceSlot> {
    let source_key = SourceKey::from(remote.ip());
    let Some(source) = SourceSlot::take(sources, source_key, limits.max_per_source) else {
        debug!(%local, %remote, "connection limit of the source reached; closing");
        return None;
    };
    if tls && !sources.may_handshake(source_key) {
        debug!(%local, %remote, "TLS handshake rate of the source reached; closing");
        return None;
    }
    Some(source)
}
