//! The reports channel: every [`REPORT_INTERVAL`] each instance publishes
//! its own numbers on `<prefix>:reports` ([`super::report_wire`]), which
//! every instance subscribes to, so that each one's console
//! (`GET /v1/fleet`) and `turnpike_fleet_instances` show the whole fleet,
//! instance by instance. Nothing is stored in Redis: an instance that
//! stops publishing is shown silent, then forgotten
//! ([`super::instance_table`]).
//!
//! Its own report is recorded here first, so the table lists this
//! instance while Redis is down too; its echo from Redis is then skipped.
//! A publish that fails is handed to the link (one warning per outage),
//! and the next report is published on the next session. A message
//! unsigned, of another fleet, stale, replayed or of a bad shape is
//! counted (`turnpike_fleet_dropped_total{reason="invalid"}`) and
//! dropped.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::MissedTickBehavior;
use tracing::debug;

use super::link::{bounded, LinkHandle};
use super::report_wire::Report;
use super::status::{FleetStatus, RoomCounter};
use super::FleetSettings;
use crate::process::clock;
use crate::process::status::ServerStatus;
use crate::signaling::switchboard::fleet_seal::{ReplayGuard, Stamper};
use crate::signaling::Hub;

/// Time between two reports of an instance.
pub const REPORT_INTERVAL: Duration = Duration::from_secs(5);

/// The channel every instance reports on.
pub(super) fn channel(prefix: &str) -> String {
    format!("{prefix}:reports")
}

/// The channel's state.
pub(super) struct Instances {
    settings: Arc<FleetSettings>,
    status: Arc<FleetStatus>,
    /// Where this instance's own numbers are read.
    server: ServerStatus,
    hub: Option<Arc<Hub>>,
    channel: String,
    stamper: Stamper,
    guard: ReplayGuard,
}

impl Instances {
    pub(super) fn new(
        settings: Arc<FleetSettings>,
        status: Arc<FleetStatus>,
        server: ServerStatus,
        hub: Option<Arc<Hub>>,
    ) -> Instances {
        Instances {
            channel: channel(&settings.key_prefix),
            settings,
            status,
            server,
            hub,
            stamper: Stamper::new(FleetSettings::draw_boot()),
            guard: ReplayGuard::default(),
        }
    }

    /// Reports and listens for as long as the process runs.
    pub(super) async fn run(mut self, mut link: LinkHandle, mut messages: mpsc::Receiver<Vec<u8>>) {
        let mut ticks = tokio::time::interval(REPORT_INTERVAL);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticks.tick() => self.report(&mut link).await,
                Some(message) = messages.recv() => self.on_message(&message),
            }
        }
    }

    /// This instance's numbers now.
    fn own(&self) -> Report {
        let shards = self.server.snapshot();
        let (rooms, _, sessions) = self.hub.as_ref().map_or((0, 0, 0), |hub| hub.counts());
        Report {
            allocations: shards.allocations.iter().flatten().sum(),
            to_peer: shards.to_peer.bytes,
            to_client: shards.to_client.bytes,
            sessions: sessions as u64,
            rooms: rooms as u64,
        }
    }

    /// Records this instance's report, and publishes it if Redis is up.
    async fn report(&mut self, link: &mut LinkHandle) {
        let report = self.own();
        let now_ms = clock::unix_millis();
        let stamp = self.stamper.next(now_ms);
        let own = &self.settings.instance;
        self.status.record_instance(own, report, now_ms, stamp.boot, now_ms);
        let Some(session) = link.current() else {
            return;
        };
        let settings = &self.settings;
        let message = report.seal(&settings.keys, &settings.key_prefix, &self.channel, own, stamp);
        let mut conn = session.conn;
        let published: Result<i64, _> = bounded(
            redis::cmd("PUBLISH")
                .arg(&self.channel)
                .arg(message)
                .query_async(&mut conn),
        )
        .await;
        if let Err(error) = published {
            link.fail(session.epoch, error);
        }
    }

    /// A report published by some instance: taken if sealed for the
    /// channel with the fleet's secret, fresh and not a replay.
    fn on_message(&mut self, payload: &[u8]) {
        let now_ms = clock::unix_millis();
        let place = (self.settings.key_prefix.as_str(), self.channel.as_str());
        match Report::open_message(payload, &self.settings.keys, place, &mut self.guard, now_ms) {
            // Our own echo: recorded when it was made.
            Ok(heard) if heard.src == self.settings.instance => {}
            Ok(heard) => {
                self.status
                    .record_instance(&heard.src, heard.report, heard.stamp.ts, heard.stamp.boot, now_ms);
            }
            Err(error) => {
                self.status.count_room(RoomCounter::Invalid);
                debug!(%error, bytes = payload.len(), "instance report dropped");
            }
        }
    }
}
