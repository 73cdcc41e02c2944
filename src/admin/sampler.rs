//! The history's driver: every [`history::INTERVAL`], on the admin
//! thread, it reads what `/metrics` reads (the shards' published
//! snapshots, the signaling hub's counts, the fleet's status) and the
//! clock, and hands them to the sans-IO [`History`]. Nothing else writes
//! the history; `GET /v1/history` reads it under the same lock, held for
//! a copy of its numbers.

use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::watch;
use tokio::time::MissedTickBehavior;

use super::history::catalogue::{self, Fleet, Reading, Signaling, Sources};
use super::history::{self, History};
use crate::fleet::FleetStatus;
use crate::process::clock;
use crate::process::status::ServerStatus;
use crate::signaling::Hub;

/// The history, shared by the sampler and the API.
#[derive(Clone)]
pub struct SharedHistory(Arc<Mutex<History>>);

impl SharedHistory {
    /// Every lock here guards plain numbers written whole: a poisoned one
    /// is still used.
    pub fn lock(&self) -> MutexGuard<'_, History> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Where samples are read.
pub struct Sampler {
    status: ServerStatus,
    /// With an HTTP endpoint.
    hub: Option<Arc<Hub>>,
    /// With `[fleet]`.
    fleet: Option<Arc<FleetStatus>>,
}

impl Sampler {
    pub fn new(status: ServerStatus, hub: Option<Arc<Hub>>, fleet: Option<Arc<FleetStatus>>) -> Sampler {
        Sampler { status, hub, fleet }
    }

    /// The fleet's status (with `[fleet]`), for `GET /v1/fleet`.
    pub fn fleet(&self) -> Option<Arc<FleetStatus>> {
        self.fleet.clone()
    }

    /// An empty history of the series these sources have.
    pub fn history(&self) -> SharedHistory {
        let layout = self.read();
        SharedHistory(Arc::new(Mutex::new(History::new(
            history::CAPACITY,
            history::INTERVAL,
            &layout,
        ))))
    }

    fn read(&self) -> Vec<Reading> {
        let shards = self.status.snapshot();
        let signaling = self.hub.as_ref().map(|hub| {
            let (rooms, peers, sessions) = hub.counts();
            Signaling {
                rooms: rooms as u64,
                peers: peers as u64,
                sessions: sessions as u64,
            }
        });
        let fleet = self.fleet.as_ref().map(|fleet| {
            let rooms = fleet.room_counts();
            let (remote, undeliverable) = self
                .hub
                .as_ref()
                .map_or((0, 0), |hub| (hub.remote_count() as u64, hub.counters().fleet_dropped));
            let (instances, allocations) = fleet.live_instances(clock::unix_millis());
            Fleet {
                instances,
                allocations,
                redis_up: rooms.up,
                remote_peers: remote,
                sent: rooms.sent,
                received: rooms.received,
                dropped: rooms.invalid + rooms.outage_drops + undeliverable,
            }
        });
        catalogue::read(&Sources {
            shards: &shards,
            signaling,
            fleet,
        })
    }

    /// Samples into `history` now and every [`history::INTERVAL`] until
    /// `stopped`.
    pub async fn run(self, history: SharedHistory, mut stopped: watch::Receiver<bool>) {
        let mut ticks = tokio::time::interval(history::INTERVAL);
        // After a stall, the next sample spans the gap (its rates average
        // over it) instead of a burst of samples a moment apart.
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                _ = stopped.changed() => return,
            }
            let readings = self.read();
            let (mono, unix_ms) = (clock::mono(), clock::unix_millis());
            history.lock().record(mono, unix_ms, &readings);
        }
    }
}
