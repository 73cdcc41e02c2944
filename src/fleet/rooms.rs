//! The rooms channel: signaling rooms that span instances (`[fleet]`;
//! the design is in `docs/signaling.md`, "Rooms across a fleet"). The
//! rules are the switchboard's (`signaling::switchboard::fleet`); this
//! carries them to Redis and back over the fleet's one [`super::link`],
//! driving the switchboard through the [`Hub`] as a session does.
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
//! Outage: while the link has no session (Redis down), `/readyz` says
//! `redis: down`, the switchboard joins locally, and what it asks of the
//! fleet meanwhile is answered locally (joins) or dropped and counted
//! (signals, leaves). A failed or timed-out command is handed to the link,
//! which warns once per outage and reconnects within a third of the
//! lifetime at most, so every instance is back within a third of it; on a
//! new session this re-publishes its whole membership at once.
//!
//! Bounds: what comes from Redis is untrusted input: messages and records
//! over their size bound or of a bad shape are dropped and counted
//! (`fleet_wire`), at most [`MAX_READ_MEMBERS`] members of a room are read,
//! every command has the link's timeout, and the queue from the
//! switchboard is bounded there.

use std::sync::Arc;

use redis::aio::MultiplexedConnection;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::debug;

use super::link::{bounded, FleetError, LinkHandle, Session};
use super::status::{FleetStatus, RoomCounter};
use super::FleetSettings;
use crate::process::clock;
use crate::signaling::switchboard::fleet_wire::{is_peer_id, Membership, WireMessage};
use crate::signaling::switchboard::{FleetEvent, FleetJoin, RemoteMember, MAX_REMOTE_PER_ROOM};
use crate::signaling::Hub;

/// Most members of one room read from Redis.
pub const MAX_READ_MEMBERS: usize = 2 * MAX_REMOTE_PER_ROOM;
/// Longest membership record accepted.
const MAX_RECORD_BYTES: usize = 512;

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

/// Carries the rooms of `hub` to the fleet for as long as the process
/// runs: through each session of `link`, and locally between them.
/// `messages` is what this instance's channel hears.
pub async fn run(
    hub: Arc<Hub>,
    settings: Arc<FleetSettings>,
    mut link: LinkHandle,
    mut messages: mpsc::Receiver<Vec<u8>>,
    status: Arc<FleetStatus>,
) {
    loop {
        let Some(session) = link.current() else {
            hub.with(|board| board.set_fleet_up(false));
            local_until_changed(&hub, &settings, &status, &mut link, &mut messages).await;
            continue;
        };
        hub.with(|board| board.set_fleet_up(true));
        let epoch = session.epoch;
        let spell = Spell::new(session, &hub, &settings, &status);
        if let Some(error) = spell.serve(&mut link, &mut messages).await {
            // Joins in flight are done locally.
            hub.with(|board| board.set_fleet_up(false));
            answer_locally(&hub, &status);
            link.fail(epoch, error);
            link.changed().await;
        }
    }
}

/// While Redis is down: joins asked of the fleet are done locally, the
/// rest is dropped (and counted); what the channel still hears is taken.
async fn local_until_changed(
    hub: &Hub,
    settings: &FleetSettings,
    status: &FleetStatus,
    link: &mut LinkHandle,
    messages: &mut mpsc::Receiver<Vec<u8>>,
) {
    loop {
        answer_locally(hub, status);
        tokio::select! {
            () = link.changed() => return,
            () = hub.fleet_wake.notified() => {}
            Some(message) = messages.recv() => on_message(hub, settings, status, &message),
        }
    }
}

/// Answers what the switchboard asked of the fleet without it.
fn answer_locally(hub: &Hub, status: &FleetStatus) {
    for event in hub.drain_fleet() {
        match event {
            FleetEvent::Join { peer, .. } => {
                let mut mint = hub.mint();
                hub.with(|board| board.handle_fleet_joined(&peer, FleetJoin::Unavailable, clock::mono(), &mut mint));
            }
            FleetEvent::Leave { .. } | FleetEvent::Publish { .. } => status.count_room(RoomCounter::OutageDrop),
        }
    }
}

/// A message published to this instance.
fn on_message(hub: &Hub, settings: &FleetSettings, status: &FleetStatus, payload: &[u8]) {
    let message = match WireMessage::parse(payload, settings.max_message_bytes) {
        Ok(message) => message,
        Err(error) => {
            status.count_room(RoomCounter::Invalid);
            return debug!(%error, bytes = payload.len(), "fleet message dropped");
        }
    };
    status.count_room(RoomCounter::Received);
    match message {
        WireMessage::Join {
            room,
            id,
            name,
            instance,
        } => hub.with(|board| {
            board.handle_remote_join(&room, RemoteMember { id, name, instance });
        }),
        WireMessage::Leave { room, id } => hub.with(|board| board.handle_remote_leave(&room, &id)),
        WireMessage::Signal { room, from, to, data } => {
            hub.with(|board| board.handle_remote_signal(&room, &from, &to, &data));
        }
    }
}

/// One session of the link, seen from the rooms.
struct Spell<'a> {
    conn: MultiplexedConnection,
    hub: &'a Hub,
    settings: &'a FleetSettings,
    status: &'a FleetStatus,
    /// Until then no lapsed member is taken for gone (see the module doc).
    trust_absence_at: Instant,
}

impl<'a> Spell<'a> {
    fn new(session: Session, hub: &'a Hub, settings: &'a FleetSettings, status: &'a FleetStatus) -> Spell<'a> {
        Spell {
            conn: session.conn,
            hub,
            settings,
            status,
            trust_absence_at: Instant::now() + settings.membership_ttl,
        }
    }

    /// Serves until a command fails (the error says how) or the link
    /// ends the session (`None`).
    async fn serve(mut self, link: &mut LinkHandle, messages: &mut mpsc::Receiver<Vec<u8>>) -> Option<FleetError> {
        // The first tick is at once: re-publish what is held here.
        let mut tick = tokio::time::interval(self.settings.refresh_interval());
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let step = tokio::select! {
                () = link.changed() => return None,
                Some(message) = messages.recv() => {
                    on_message(self.hub, self.settings, self.status, &message);
                    Ok(())
                }
                () = self.hub.fleet_wake.notified() => self.run_events().await,
                _ = tick.tick() => self.refresh_and_sweep().await,
            };
            if let Err(error) = step {
                return Some(error);
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
        self.status.count_room(RoomCounter::Sent);
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
            self.status.count_room(RoomCounter::Invalid);
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
                None => self.status.count_room(RoomCounter::Invalid),
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
