//! The fleet driver: Redis I/O for signaling rooms that span instances
//! (`[fleet]`; the design is in `docs/signaling.md`, "Rooms across a
//! fleet"). One task on the HTTP thread's runtime; the rules are the
//! switchboard's (`switchboard::fleet`), this only carries them to Redis
//! and back.
//!
//! Redis holds, under `fleet.key_prefix` (`P`):
//! - `P:peer:<id>`: the membership record of a peer (`fleet_wire`), with
//!   a lifetime of `membership_ttl`, refreshed by its instance every third
//!   of it. An instance that dies stops refreshing, and its peers lapse;
//! - `P:room:<room>`: a sorted set of the room's peer ids, scored in join
//!   order; an id whose record has lapsed is removed by whoever reads it;
//! - `P:inst:<instance>`: the pub/sub channel of an instance, where the
//!   others publish joins, leaves and signals for its peers.
//!
//! A join runs one Lua script that drops lapsed members, refuses the join
//! if `room_size` live peers are in the room, and otherwise writes the
//! record and the set entry, all atomically: the room size holds
//! fleet-wide. The race accepted: joins done locally during an outage are
//! published when Redis is back, and may then make a room larger than
//! `room_size` fleet-wide (until peers leave). Every third of the lifetime
//! the driver refreshes its peers' records (re-creating any that Redis
//! lost) and reads the members of each room it has peers in: remote
//! members it did not know are announced, and known ones whose records
//! lapsed, or are overdue (two refreshes missed: less than a third of the
//! lifetime left), get `peer-left`, so at most one lifetime after their
//! instance died. For one lifetime after (re)connecting it does not
//! conclude that anyone left, so that the other instances have time to
//! re-publish after a Redis restart.
//!
//! Outage: any failed or timed-out command, or the subscription ending,
//! marks Redis down: `/readyz` says `redis: down`, one warning is logged
//! per outage (not per message), the switchboard joins locally, and what
//! it asks of the fleet meanwhile is answered locally (joins) or dropped
//! and counted (signals, leaves). Reconnection backs off from 100 ms to a
//! third of the lifetime at most, so every instance is back within a third
//! of it, and re-publishes its whole membership at once.
//!
//! Bounds: what comes from Redis is untrusted input: messages and records
//! over their size bound or of a bad shape are dropped and counted
//! (`fleet_wire`), at most [`MAX_READ_MEMBERS`] members of a room are read,
//! every command has a [`COMMAND_TIMEOUT`], and the queue from the
//! switchboard is bounded there.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use redis::aio::MultiplexedConnection;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::fleet_view::{RemoteMember, MAX_REMOTE_PER_ROOM};
use super::fleet_wire::{is_peer_id, Membership, WireMessage};
use super::session::Hub;
use super::switchboard::{FleetEvent, FleetJoin};
use crate::config::Secret;
use crate::process::clock;

/// Longest any one Redis command may take before Redis counts as down.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);
/// Most members of one room read from Redis.
pub const MAX_READ_MEMBERS: usize = 2 * MAX_REMOTE_PER_ROOM;
/// Longest membership record accepted.
const MAX_RECORD_BYTES: usize = 512;
/// First reconnection delay; it doubles up to a third of the lifetime.
const MIN_BACKOFF: Duration = Duration::from_millis(100);

/// Reads the live members of a room (`KEYS[1]`), dropping lapsed ones,
/// and, when `ARGV[2]` names a peer, adds it unless the room is full.
/// ARGV: peer key prefix, peer id or "", its record, lifetime in ms, room
/// size, most members read, the lifetime left (ms) below which a record is
/// overdue. Answers `{"full"}` or `{"ok", id, record, …}`. A record whose
/// instance missed two refreshes in a row is overdue and counts as gone,
/// so that its peers are seen leaving within one lifetime of their
/// instance's death rather than four thirds of it.
/// The peer keys are computed inside, so this suits a single Redis (or
/// replicas), not Redis Cluster.
const ROOM_SCRIPT: &str = r"
local ids = redis.call('ZRANGE', KEYS[1], 0, tonumber(ARGV[6]) - 1)
local out = {'ok'}
local live = 0
for _, id in ipairs(ids) do
  local left = redis.call('PTTL', ARGV[1] .. id)
  if left == -2 then
    redis.call('ZREM', KEYS[1], id)
  elseif left < 0 or left >= tonumber(ARGV[7]) then
    live = live + 1
    out[#out + 1] = id
    out[#out + 1] = redis.call('GET', ARGV[1] .. id)
  end
end
if ARGV[2] == '' then return out end
if live >= tonumber(ARGV[5]) then return {'full'} end
local top = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
local score = 1
if top[2] then score = tonumber(top[2]) + 1 end
redis.call('SET', ARGV[1] .. ARGV[2], ARGV[3], 'PX', ARGV[4])
redis.call('ZADD', KEYS[1], score, ARGV[2])
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[4]) * 3)
return out
";

/// Why Redis counts as down.
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    #[error("Redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("Redis did not answer within {COMMAND_TIMEOUT:?}")]
    Timeout,
    #[error("the Redis subscription ended")]
    SubscriptionEnded,
}

/// What `[fleet]` says, checked.
#[derive(Debug, Clone)]
pub struct FleetSettings {
    pub redis_url: Secret,
    pub instance: String,
    pub membership_ttl: Duration,
    pub key_prefix: String,
    pub room_size: usize,
    /// Longest message accepted from another instance.
    pub max_message_bytes: usize,
}

impl FleetSettings {
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

/// What `/readyz` and `/metrics` read of the driver.
#[derive(Debug, Default)]
pub struct FleetStatus {
    up: AtomicBool,
    sent: AtomicU64,
    received: AtomicU64,
    /// Messages and records from Redis that were refused.
    invalid: AtomicU64,
    /// Signals and leaves that could not be sent (Redis down).
    outage_drops: AtomicU64,
}

/// A snapshot of [`FleetStatus`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FleetCounts {
    pub up: bool,
    pub sent: u64,
    pub received: u64,
    pub invalid: u64,
    pub outage_drops: u64,
}

impl FleetStatus {
    pub fn up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    pub fn counts(&self) -> FleetCounts {
        FleetCounts {
            up: self.up(),
            sent: self.sent.load(Ordering::Relaxed),
            received: self.received.load(Ordering::Relaxed),
            invalid: self.invalid.load(Ordering::Relaxed),
            outage_drops: self.outage_drops.load(Ordering::Relaxed),
        }
    }

    fn count(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// Runs the driver for as long as the HTTP side runs.
pub async fn run(hub: Arc<Hub>, settings: FleetSettings, status: Arc<FleetStatus>) {
    let client = match redis::Client::open(settings.redis_url.expose()) {
        Ok(client) => client,
        Err(e) => {
            // The error kind only: the URL may hold a password.
            return warn!(kind = ?e.kind(), "fleet.redis_url cannot be used; rooms stay local");
        }
    };
    let max_backoff = settings.refresh_interval().max(MIN_BACKOFF);
    let mut backoff = MIN_BACKOFF;
    let mut outage = false;
    loop {
        match connect(&client, &settings).await {
            Ok(link) => {
                backoff = MIN_BACKOFF;
                match outage {
                    true => {
                        info!(instance = %settings.instance, "Redis is reachable again; re-publishing room membership")
                    }
                    false => info!(instance = %settings.instance, "fleet: connected to Redis"),
                }
                status.up.store(true, Ordering::Relaxed);
                hub.with(|board| board.set_fleet_up(true));
                let error = Link::new(link, &hub, &settings, &status).serve().await;
                status.up.store(false, Ordering::Relaxed);
                hub.with(|board| board.set_fleet_up(false));
                warn!(%error, "Redis is unreachable: rooms are local until it is back");
                outage = true;
            }
            Err(error) if !outage => {
                warn!(%error, "Redis is unreachable: rooms are local until it is back");
                outage = true;
            }
            Err(error) => debug!(%error, "Redis still unreachable"),
        }
        answer_locally_until(&hub, &status, Instant::now() + backoff).await;
        backoff = (backoff * 2).min(max_backoff);
    }
}

/// While Redis is down: joins asked of the fleet are done locally, the
/// rest is dropped (and counted), until `until`.
async fn answer_locally_until(hub: &Hub, status: &FleetStatus, until: Instant) {
    loop {
        for event in hub.drain_fleet() {
            match event {
                FleetEvent::Join { peer, .. } => {
                    let mut mint = hub.mint();
                    hub.with(|board| {
                        board.handle_fleet_joined(&peer, FleetJoin::Unavailable, clock::mono(), &mut mint)
                    });
                }
                FleetEvent::Leave { .. } | FleetEvent::Publish { .. } => FleetStatus::count(&status.outage_drops),
            }
        }
        tokio::select! {
            () = tokio::time::sleep_until(until) => return,
            () = hub.fleet_wake.notified() => {}
        }
    }
}

/// A command connection and the subscription to this instance's channel.
struct Connected {
    conn: MultiplexedConnection,
    messages: redis::aio::PubSubStream,
}

async fn connect(client: &redis::Client, settings: &FleetSettings) -> Result<Connected, FleetError> {
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(COMMAND_TIMEOUT))
        .set_response_timeout(Some(COMMAND_TIMEOUT));
    let conn = bounded(client.get_multiplexed_async_connection_with_config(&config)).await?;
    let mut pubsub = bounded(client.get_async_pubsub()).await?;
    bounded(pubsub.subscribe(settings.channel(&settings.instance))).await?;
    Ok(Connected {
        conn,
        messages: pubsub.into_on_message(),
    })
}

/// `future` within [`COMMAND_TIMEOUT`].
pub(crate) async fn bounded<T>(
    future: impl std::future::Future<Output = redis::RedisResult<T>>,
) -> Result<T, FleetError> {
    match tokio::time::timeout(COMMAND_TIMEOUT, future).await {
        Ok(result) => Ok(result?),
        Err(_) => Err(FleetError::Timeout),
    }
}

/// One connected spell.
struct Link<'a> {
    conn: MultiplexedConnection,
    messages: redis::aio::PubSubStream,
    hub: &'a Hub,
    settings: &'a FleetSettings,
    status: &'a FleetStatus,
    /// Until then no lapsed member is taken for gone (see the module doc).
    trust_absence_at: Instant,
}

impl<'a> Link<'a> {
    fn new(link: Connected, hub: &'a Hub, settings: &'a FleetSettings, status: &'a FleetStatus) -> Link<'a> {
        Link {
            conn: link.conn,
            messages: link.messages,
            hub,
            settings,
            status,
            trust_absence_at: Instant::now() + settings.membership_ttl,
        }
    }

    /// Serves until Redis fails; the error says how.
    async fn serve(mut self) -> FleetError {
        // The first tick is at once: re-publish what is held here.
        let mut tick = tokio::time::interval(self.settings.refresh_interval());
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let step = tokio::select! {
                message = self.messages.next() => match message {
                    Some(message) => {
                        self.on_message(message.get_payload_bytes());
                        Ok(())
                    }
                    None => Err(FleetError::SubscriptionEnded),
                },
                () = self.hub.fleet_wake.notified() => self.run_events().await,
                _ = tick.tick() => self.refresh_and_sweep().await,
            };
            if let Err(error) = step {
                // Joins in flight are done locally.
                answer_locally_until(self.hub, self.status, Instant::now()).await;
                return error;
            }
        }
    }

    /// A message published to this instance.
    fn on_message(&mut self, payload: &[u8]) {
        let message = match WireMessage::parse(payload, self.settings.max_message_bytes) {
            Ok(message) => message,
            Err(error) => {
                FleetStatus::count(&self.status.invalid);
                return debug!(%error, bytes = payload.len(), "fleet message dropped");
            }
        };
        FleetStatus::count(&self.status.received);
        match message {
            WireMessage::Join {
                room,
                id,
                name,
                instance,
            } => self.hub.with(|board| {
                board.handle_remote_join(&room, RemoteMember { id, name, instance });
            }),
            WireMessage::Leave { room, id } => self.hub.with(|board| board.handle_remote_leave(&room, &id)),
            WireMessage::Signal { room, from, to, data } => {
                self.hub
                    .with(|board| board.handle_remote_signal(&room, &from, &to, &data));
            }
        }
    }

    /// Does what the switchboard asked, in order.
    async fn run_events(&mut self) -> Result<(), FleetError> {
        for event in self.hub.drain_fleet() {
            match event {
                FleetEvent::Join { room, peer, name } => self.join(&room, &peer, name).await?,
                FleetEvent::Leave { room, peer, instances } => self.leave(&room, &peer, &instances).await?,
                FleetEvent::Publish { instance, message } => self.publish(&instance, &message).await?,
            }
        }
        Ok(())
    }

    async fn join(&mut self, room: &str, peer: &str, name: Option<String>) -> Result<(), FleetError> {
        let record = Membership {
            room: room.to_owned(),
            inst: self.settings.instance.clone(),
            name: name.clone(),
        };
        let answer = self.room_script(room, peer, &record.encode()).await;
        let (outcome, members) = match &answer {
            Ok(Some(members)) => (FleetJoin::Members(members.clone()), members.clone()),
            Ok(None) => (FleetJoin::Full, Vec::new()),
            Err(_) => (FleetJoin::Unavailable, Vec::new()),
        };
        let written = matches!(answer, Ok(Some(_)));
        let instances = instances_of(&members);
        // Told before `joined` is written, so the newcomer's first signal
        // reaches instances that know it.
        let announce = WireMessage::Join {
            room: room.to_owned(),
            id: peer.to_owned(),
            name,
            instance: self.settings.instance.clone(),
        };
        let mut published = Ok(());
        for instance in &instances {
            published = self.publish(instance, &announce).await;
            if published.is_err() {
                break;
            }
        }
        // Answered whatever happened, so that no join stays pending.
        let outcome = match published {
            Ok(()) => outcome,
            Err(_) => FleetJoin::Unavailable,
        };
        let mut mint = self.hub.mint();
        let wanted = self
            .hub
            .with(|board| board.handle_fleet_joined(peer, outcome, clock::mono(), &mut mint));
        answer?;
        published?;
        if written && !wanted {
            self.leave(room, peer, &instances).await?;
        }
        Ok(())
    }

    async fn leave(&mut self, room: &str, peer: &str, instances: &[String]) -> Result<(), FleetError> {
        let mut pipe = redis::pipe();
        pipe.cmd("DEL")
            .arg(format!("{}{peer}", self.settings.peer_prefix()))
            .ignore()
            .cmd("ZREM")
            .arg(self.settings.room_key(room))
            .arg(peer)
            .ignore();
        bounded(pipe.query_async::<()>(&mut self.conn)).await?;
        let message = WireMessage::Leave {
            room: room.to_owned(),
            id: peer.to_owned(),
        };
        for instance in instances.iter().filter(|i| **i != self.settings.instance) {
            self.publish(instance, &message).await?;
        }
        Ok(())
    }

    async fn publish(&mut self, instance: &str, message: &WireMessage) -> Result<(), FleetError> {
        let command = redis::cmd("PUBLISH")
            .arg(self.settings.channel(instance))
            .arg(message.encode())
            .to_owned();
        bounded(command.query_async::<i64>(&mut self.conn)).await?;
        FleetStatus::count(&self.status.sent);
        Ok(())
    }

    /// Refreshes (or re-creates) the records of every local peer, then
    /// reads the members of each room that has one.
    async fn refresh_and_sweep(&mut self) -> Result<(), FleetError> {
        let local = self.hub.with(|board| board.local_members());
        let settings = self.settings;
        let score = clock::unix_secs().saturating_mul(1000);
        let mut pipe = redis::pipe();
        let mut rooms: Vec<&str> = Vec::new();
        for (room, peer, name) in &local {
            let record = Membership {
                room: room.clone(),
                inst: settings.instance.clone(),
                name: name.clone(),
            };
            let room_key = settings.room_key(room);
            pipe.cmd("SET")
                .arg(format!("{}{peer}", settings.peer_prefix()))
                .arg(record.encode())
                .arg("PX")
                .arg(settings.ttl_ms())
                .ignore()
                .cmd("ZADD")
                .arg(&room_key)
                .arg("NX")
                .arg(score)
                .arg(peer)
                .ignore()
                .cmd("PEXPIRE")
                .arg(&room_key)
                .arg(settings.ttl_ms().saturating_mul(3))
                .ignore();
            if !rooms.contains(&room.as_str()) {
                rooms.push(room);
            }
        }
        if !local.is_empty() {
            bounded(pipe.query_async::<()>(&mut self.conn)).await?;
        }
        let remove_missing = Instant::now() >= self.trust_absence_at;
        for room in rooms {
            let Some(members) = self.room_script(room, "", "").await? else {
                continue;
            };
            self.hub
                .with(|board| board.handle_remote_members(room, members, remove_missing));
        }
        Ok(())
    }

    /// Runs [`ROOM_SCRIPT`] for `room` (adding `peer` with `record`, unless
    /// `peer` is empty): the live members of other instances before it, in
    /// join order, or `None` if the room is full.
    async fn room_script(
        &mut self,
        room: &str,
        peer: &str,
        record: &str,
    ) -> Result<Option<Vec<RemoteMember>>, FleetError> {
        let settings = self.settings;
        let command = redis::cmd("EVAL")
            .arg(ROOM_SCRIPT)
            .arg(1)
            .arg(settings.room_key(room))
            .arg(settings.peer_prefix())
            .arg(peer)
            .arg(record)
            .arg(settings.ttl_ms())
            .arg(settings.room_size)
            .arg(MAX_READ_MEMBERS)
            .arg(settings.ttl_ms() / 3)
            .to_owned();
        let answer: Vec<Vec<u8>> = bounded(command.query_async(&mut self.conn)).await?;
        let Some((status, pairs)) = answer.split_first() else {
            FleetStatus::count(&self.status.invalid);
            return Ok(Some(Vec::new()));
        };
        if status.as_slice() == b"full" {
            return Ok(None);
        }
        let mut members = Vec::new();
        for pair in pairs.chunks(2).take(MAX_READ_MEMBERS) {
            match self.member(room, pair) {
                Some(member) if member.instance != settings.instance => members.push(member),
                Some(_) => {}
                None => FleetStatus::count(&self.status.invalid),
            }
        }
        Ok(Some(members))
    }

    /// A member of `room` from an (id, record) pair, if it checks out.
    fn member(&self, room: &str, pair: &[Vec<u8>]) -> Option<RemoteMember> {
        let [id, record] = pair else {
            return None;
        };
        let id = std::str::from_utf8(id).ok().filter(|id| is_peer_id(id))?;
        let record = Membership::parse(record, MAX_RECORD_BYTES).ok()?;
        (record.room == room).then(|| RemoteMember {
            id: id.to_owned(),
            name: record.name,
            instance: record.inst,
        })
    }
}

/// The instances of `members`, each once.
fn instances_of(members: &[RemoteMember]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for m in members {
        if !out.contains(&m.instance) {
            out.push(m.instance.clone());
        }
    }
    out
}
