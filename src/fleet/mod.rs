//! The fleet: every byte to and from Redis (`[fleet] redis_url`). Several
//! instances behind one name share signaling rooms and revocations through
//! one Redis; `docs/fleet.md` says how to run one, `docs/signaling.md`
//! ("Rooms across a fleet", "Revocations across a fleet") what is stored.
//!
//! * `link`: the one link to Redis: open, subscribe, bounded
//!   commands, backoff, one warning per outage, one up/down answer;
//!   its subscription is a `subscriber` connection of its own, read by
//!   the sans-IO `push_reader`, which never holds an oversized message;
//! * `rooms`: the rooms channel, which carries the signaling
//!   switchboard's fleet events to Redis and back;
//! * `revocations`: the revocations channel, with its wire format in
//!   [`revocation_wire`];
//! * `instances`: the reports channel, each instance's numbers for the
//!   others' consoles, with its wire format in [`report_wire`] and what
//!   is heard in [`instance_table`];
//! * `status`: what `/readyz`, `/metrics` and the console read.
//!
//! Everything runs on one thread of its own with a current-thread runtime
//! (`turnpike-fleet`), apart from the shards and the HTTP thread: a slow
//! Redis never holds a relayed packet or a page load. The channels reach
//! the rest of the process only through what they are given: the
//! signaling [`Hub`] (rooms), the shards' [`AdminHandle`] (revocations)
//! and their [`ServerStatus`] (reports, read only). Nothing outside this folder speaks Redis, and what Redis
//! says is untrusted input, bounded and validated here.

pub mod instance_table;
mod instances;
mod link;
pub mod push_reader;
pub mod report_wire;
pub mod revocation_wire;
mod revocations;
mod rooms;
mod status;
mod subscriber;

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tracing::info;

use crate::config::{Config, Secret};
use crate::net::AdminHandle;
use crate::process::runtime_thread;
use crate::process::status::ServerStatus;
use crate::signaling::switchboard::fleet_seal::FleetKeys;
use crate::signaling::Hub;
use link::{Link, Subscription, Wording, QUEUE};
pub use revocations::RevocationSharer;
use revocations::MAX_BACKOFF;
use status::RevocationOutcome;
pub use status::{FleetStatus, RoomCounts, REVOCATION_OUTCOMES};

/// What `[fleet]` says, checked, with the instance's name drawn when none
/// is configured.
#[derive(Debug, Clone)]
pub struct FleetSettings {
    pub redis_url: Secret,
    pub instance: String,
    pub membership_ttl: Duration,
    pub key_prefix: String,
    pub room_size: usize,
    /// Longest room message accepted from another instance.
    pub max_message_bytes: usize,
    /// Longest a revocation heard from Redis is held here
    /// (`auth.max_credential_lifetime`, as read at start).
    pub max_revocation: Duration,
    /// The fleet's secrets (`fleet.secrets`): what is written to Redis is
    /// sealed with the first, what is read must open with one of them.
    pub keys: Arc<FleetKeys>,
}

impl FleetSettings {
    /// The settings of `config`, if Redis is configured; the instance id
    /// is drawn at random when none is set. `None` too for a config with
    /// Redis and no fleet secret (which `Config::validate` refuses): the
    /// fleet never runs unsigned.
    pub fn from_config(config: &Config) -> Option<FleetSettings> {
        let fleet = &config.fleet;
        let redis_url = fleet.redis_url.clone()?;
        let secrets: Vec<&[u8]> = fleet.resolved_secrets.iter().map(|s| s.expose().as_bytes()).collect();
        let keys = Arc::new(FleetKeys::new(&secrets)?);
        let instance = fleet.instance_id.clone().unwrap_or_else(|| {
            let bytes: [u8; 8] = crate::process::random::random_bytes();
            bytes.iter().map(|b| format!("{b:02x}")).collect()
        });
        Some(FleetSettings {
            redis_url,
            instance,
            membership_ttl: fleet.membership_ttl,
            key_prefix: fleet.key_prefix.clone(),
            room_size: config.signaling.room_size,
            // A signal carries a client message of up to max_message_size
            // (its data) in an envelope of names and ids.
            max_message_bytes: config.signaling.max_message_size.saturating_add(1024),
            max_revocation: config.auth.max_credential_lifetime,
            keys,
        })
    }

    /// A number drawn at each start of a channel: its messages' `boot`.
    fn draw_boot() -> u64 {
        crate::process::random::seed_u64()
    }

    fn peer_prefix(&self) -> String {
        format!("{}:peer:", self.key_prefix)
    }

    fn room_key(&self, room: &str) -> String {
        format!("{}:room:{room}", self.key_prefix)
    }

    fn channel(&self, instance: &str) -> String {
        format!("{}:inst:{instance}", self.key_prefix)
    }

    fn refresh_interval(&self) -> Duration {
        self.membership_ttl / 3
    }

    fn ttl_ms(&self) -> u64 {
        u64::try_from(self.membership_ttl.as_millis()).unwrap_or(u64::MAX)
    }
}

/// The running fleet thread.
pub struct Fleet {
    status: Arc<FleetStatus>,
    sharer: RevocationSharer,
    stop: watch::Sender<bool>,
    thread: JoinHandle<()>,
}

impl Fleet {
    /// Up/down and the counters, for `/readyz` and `/metrics`.
    pub fn status(&self) -> Arc<FleetStatus> {
        self.status.clone()
    }

    /// The admin API's way to share a revocation made here.
    pub fn sharer(&self) -> RevocationSharer {
        self.sharer.clone()
    }

    /// Stops the link and its channels and waits for the thread.
    pub fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.thread.join();
    }
}

/// Starts the fleet if `settings` is set: the revocations and reports
/// channels always, the rooms channel when there are rooms (`hub`, which
/// must have been made to span the fleet).
pub fn start(
    settings: Option<FleetSettings>,
    hub: Option<Arc<Hub>>,
    shards: AdminHandle,
    server: ServerStatus,
) -> std::io::Result<Option<Fleet>> {
    let Some(settings) = settings else {
        return Ok(None);
    };
    let settings = Arc::new(settings);
    let status = Arc::new(FleetStatus::new(&settings.instance));
    let (report_queue, reports) = mpsc::channel(QUEUE);
    let instances = instances::Instances::new(settings.clone(), status.clone(), server, hub.clone());
    let revocation_channel = revocations::Names::new(&settings.key_prefix).channel;
    let (revocations, sharer) = revocations::Revocations::new(shards, settings.clone(), status.clone());
    let (revocation_queue, revocation_messages) = mpsc::channel(QUEUE);
    let mut subscriptions = vec![
        Subscription {
            channel: revocation_channel,
            max_bytes: revocation_wire::MAX_MESSAGE_BYTES,
            refused: |status| status.count_revocation(RevocationOutcome::Invalid),
            queue: revocation_queue,
        },
        Subscription {
            channel: instances::channel(&settings.key_prefix),
            max_bytes: report_wire::MAX_MESSAGE_BYTES,
            refused: |status| status.count_room(status::RoomCounter::Invalid),
            queue: report_queue,
        },
    ];
    let revocations_line = "revocations are not shared with the fleet while Redis is down (they still hold here)";
    let mut wording = Wording {
        down: revocations_line.to_owned(),
        back: "revocations are shared with the fleet again".to_owned(),
    };
    let mut max_backoff = MAX_BACKOFF;
    let rooms = hub.map(|hub| {
        let (queue, messages) = mpsc::channel(QUEUE);
        subscriptions.push(Subscription {
            channel: settings.channel(&settings.instance),
            max_bytes: settings.max_message_bytes,
            refused: |status| status.count_room(status::RoomCounter::Invalid),
            queue,
        });
        wording = Wording {
            down: format!("rooms are local until it is back; {revocations_line}"),
            back: "re-publishing room membership; revocations are shared with the fleet again".to_owned(),
        };
        // Every instance is back within a third of the membership lifetime.
        max_backoff = max_backoff.min(settings.refresh_interval());
        (hub, messages)
    });
    let (link, handle) = Link::new(
        settings.redis_url.clone(),
        subscriptions,
        status.clone(),
        wording,
        max_backoff,
    );
    let (stop, mut stopped) = watch::channel(false);
    let thread_status = status.clone();
    let thread_settings = settings.clone();
    let thread = runtime_thread::spawn("turnpike-fleet", "fleet", move |runtime| {
        let rooms = async {
            if let Some((hub, messages)) = rooms {
                info!(instance = %thread_settings.instance, prefix = %thread_settings.key_prefix, "signaling rooms span the fleet through Redis");
                rooms::run(hub, thread_settings.clone(), handle.clone(), messages, thread_status).await;
            }
        };
        let work = async {
            tokio::join!(
                link.run(),
                rooms,
                revocations.run(handle.clone(), revocation_messages),
                instances.run(handle.clone(), reports)
            )
        };
        runtime.block_on(async {
            tokio::select! {
                _ = work => {}
                _ = stopped.changed() => {}
            }
        });
    })?;
    info!(prefix = %settings.key_prefix, "revocations are shared with the fleet through Redis");
    Ok(Some(Fleet {
        status,
        sharer,
        stop,
        thread,
    }))
}
