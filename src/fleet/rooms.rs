//! The rooms channel: signaling rooms that span instances (`[fleet]`;
//! the design is in `docs/signaling.md`, "Rooms across a fleet"). The
//! rules are the switchboard's (`signaling::switchboard::fleet`); this
//! carries them to Redis and back over the fleet's one [`super::link`],
//! driving the switchboard through the [`Hub`] as a session does.
//!
//! Redis holds, under `fleet.key_prefix` (`P`):
//! - `P:peer:<id>`: the membership record of a peer (`fleet_wire`), with
//!   a lifetime of its instance's `membership_ttl`, refreshed by its
//!   instance every third of it. An instance that dies stops refreshing,
//!   and its peers lapse. The record carries that lifetime and the
//!   instance's `room_size`, so that instances configured differently
//!   still agree: each record is judged by its writer's lifetime, and a
//!   room holds at most the smallest size of its members' instances and
//!   the newcomer's;
//! - `P:room:<room>`: a sorted set of the room's peer ids, scored in join
//!   order (the fleet-wide order `joined` lists, local peers among the
//!   others); an id whose record has lapsed is removed by whoever reads
//!   it. It lives [`ROOM_KEY_LIFETIME`] past its last write, longer than
//!   any instance's refresh, whatever lifetime each has;
//! - `P:inst:<instance>`: the pub/sub channel of an instance, where the
//!   others publish joins, leaves and signals for its peers.
//!
//! A join runs one Lua script that drops lapsed members, refuses the join
//! if the room holds as many live peers as the smallest `room_size` among
//! theirs and the newcomer's, and otherwise writes the record and the set
//! entry, all atomically: the room size holds fleet-wide. The race accepted: joins done locally during an outage are
//! published when Redis is back, and may then make a room larger than
//! `room_size` fleet-wide (until peers leave). Every third of the lifetime
//! the driver refreshes its peers' records (re-creating any that Redis
//! lost) and reads the members of each room it has peers in: remote
//! members it did not know are announced, and known ones whose records
//! lapsed, or are overdue (two refreshes missed: less than a third of the
//! lifetime its record carries left), get `peer-left`, so at most one of
//! their instance's lifetimes after it died. For one lifetime after
//! (re)connecting it does not conclude that anyone left, so that the other
//! instances have time to re-publish after a Redis restart.
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
//! (`fleet_wire`; the script does not even read a record over
//! [`MAX_RECORD_BYTES`] or one that is no string, and takes a lifetime or
//! size from a record only within the bounds an instance may be
//! configured with), at most [`MAX_READ_MEMBERS`] members of a room are read,
//! every command has the link's timeout, and the queue from the
//! switchboard is bounded there.

use std::cell::Cell;
use std::sync::Arc;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{debug, warn};

use super::link::{bounded, FleetError, LinkHandle, Session};
use super::status::{FleetStatus, RoomCounter};
use super::FleetSettings;
use crate::config::FleetSection;
use crate::process::clock;
use crate::signaling::switchboard::fleet_seal::{ReplayGuard, Stamper, SEAL_HEADER_BYTES};
use crate::signaling::switchboard::fleet_wire::{
    is_peer_id, record_ttl_bounds, Heard, Membership, WireMessage, MAX_RECORD_BYTES, MIN_RECORD_SIZE,
};
use crate::signaling::switchboard::{FleetEvent, FleetJoin, Listed, RemoteMember, MAX_REMOTE_PER_ROOM};
use crate::signaling::Hub;

/// Most members of one room read from Redis.
pub const MAX_READ_MEMBERS: usize = 2 * MAX_REMOTE_PER_ROOM;
/// Longest peer id the script reads from a room's set (ours are 16).
const MAX_ID_BYTES: usize = 64;
/// How long a room's set outlives its last write: three of the longest
/// membership lifetime, so that it outlives the refresh of every instance
/// whatever lifetime each has.
pub const ROOM_KEY_LIFETIME: Duration = Duration::from_secs(3 * FleetSection::MAX_MEMBERSHIP_TTL.as_secs());

/// Reads the live members of a room (`KEYS[1]`), dropping lapsed ones,
/// and, when `ARGV[2]` names a peer, adds it unless the room is full.
/// ARGV: 1 peer key prefix, 2 peer id or "", 3 its record, 4 its lifetime
/// in ms, 5 its room size, 6 most members read, 7 and 8 the bounds of a
/// lifetime a record may carry (ms), 9 and 10 those of a size, 11 the
/// longest record read, 12 the longest id, 13 the room set's lifetime
/// (ms), 14 the bytes of a record's seal (before its JSON). Answers
/// `{"full"}` or `{"ok", id, record, …}` in join order; a record over its
/// bound is answered empty, never read (`STRLEN` first), so no reply
/// holds more than the members read times the longest record.
///
/// The script cannot check the seal (Redis holds no secret): a record
/// counts in the room whatever its signature, and the driver refuses an
/// unsigned one as invalid; so a Redis writer can fill a room, never be
/// in it.
///
/// Each record is judged by the lifetime it carries (the reader's for a
/// record without one): one whose instance missed two refreshes in a row
/// (less than a third of it left) is overdue and counts as gone, so that
/// its peers are seen leaving within one lifetime of their instance's
/// death rather than four thirds of it. The room is full when it holds as
/// many live members as the smallest room size among those their records
/// carry and the newcomer's. A record that is no string, is over its
/// bound or carries no valid lifetime or size counts as live, with the
/// reader's lifetime, and its size is not taken (the driver then refuses
/// it as invalid); an id over its bound is dropped like a lapsed one.
/// The peer keys are computed inside, so this suits a single Redis (or
/// replicas), not Redis Cluster.
const ROOM_SCRIPT: &str = r"
local ids = redis.call('ZRANGE', KEYS[1], 0, tonumber(ARGV[6]) - 1)
local min_ttl, max_ttl = tonumber(ARGV[7]), tonumber(ARGV[8])
local min_size, max_size = tonumber(ARGV[9]), tonumber(ARGV[10])
local max_record = tonumber(ARGV[11])
local size = tonumber(ARGV[5])
local out = {'ok'}
local live = 0
for _, id in ipairs(ids) do
  local key = ARGV[1] .. id
  local left = -2
  if #id <= tonumber(ARGV[12]) then left = redis.call('PTTL', key) end
  if left == -2 then
    redis.call('ZREM', KEYS[1], id)
  else
    local record, ttl, cap = '', tonumber(ARGV[4]), nil
    local bytes = redis.pcall('STRLEN', key)
    if type(bytes) == 'number' and bytes <= max_record then
      record = redis.call('GET', key)
      local ok, fields = pcall(cjson.decode, string.sub(record, tonumber(ARGV[14]) + 1))
      if ok and type(fields) == 'table' then
        local t, s = fields['ttl_ms'], fields['size']
        if type(t) == 'number' and t >= min_ttl and t <= max_ttl then ttl = t end
        if type(s) == 'number' and s >= min_size and s <= max_size and s == math.floor(s) then cap = s end
      end
    end
    if left < 0 or left >= ttl / 3 then
      live = live + 1
      if cap and cap < size then size = cap end
      out[#out + 1] = id
      out[#out + 1] = record
    end
  end
end
if ARGV[2] == '' then return out end
if live >= size then return {'full'} end
local top = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
local score = 1
if top[2] then score = tonumber(top[2]) + 1 end
redis.call('SET', ARGV[1] .. ARGV[2], ARGV[3], 'PX', ARGV[4])
redis.call('ZADD', KEYS[1], score, ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[13])
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
    let mut stamper = Stamper::new(FleetSettings::draw_boot());
    let mut guard = ReplayGuard::default();
    loop {
        let Some(session) = link.current() else {
            hub.with(|board| board.set_fleet_up(false));
            local_until_changed(&hub, &settings, &status, &mut link, (&mut messages, &mut guard)).await;
            continue;
        };
        hub.with(|board| board.set_fleet_up(true));
        let epoch = session.epoch;
        let spell = Spell::new(session, &hub, &settings, &status, &mut stamper);
        if let Some(error) = spell.serve(&mut link, &mut messages, &mut guard).await {
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
    (messages, guard): (&mut mpsc::Receiver<Vec<u8>>, &mut ReplayGuard),
) {
    loop {
        answer_locally(hub, status);
        tokio::select! {
            () = link.changed() => return,
            () = hub.fleet_wake.notified() => {}
            Some(message) = messages.recv() => on_message(hub, settings, status, guard, &message),
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

/// A message published to this instance: taken only if sealed with the
/// fleet's secret for this instance's channel, fresh and not a replay
/// (`guard`); a join announces a peer of its publisher, and a leave or a
/// signal counts only from a member whose record names the publisher.
fn on_message(hub: &Hub, settings: &FleetSettings, status: &FleetStatus, guard: &mut ReplayGuard, payload: &[u8]) {
    let channel = settings.channel(&settings.instance);
    let now_ms = clock::unix_secs().saturating_mul(1000);
    let opened = WireMessage::open(
        payload,
        settings.max_message_bytes,
        &settings.keys,
        &settings.key_prefix,
        &channel,
        guard,
        now_ms,
    );
    let Heard { src, message, .. } = match opened {
        Ok(heard) => heard,
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
        WireMessage::Leave { room, id } => hub.with(|board| board.handle_published_leave(&room, &id, &src)),
        WireMessage::Signal { room, from, to, data } => {
            hub.with(|board| board.handle_remote_signal(&room, &from, &to, &data, &src));
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
    /// Whether a record of another lifetime or room size was logged.
    mismatch_logged: Cell<bool>,
    /// The stamps of what this instance publishes.
    stamper: &'a mut Stamper,
}

impl<'a> Spell<'a> {
    fn new(
        session: Session,
        hub: &'a Hub,
        settings: &'a FleetSettings,
        status: &'a FleetStatus,
        stamper: &'a mut Stamper,
    ) -> Spell<'a> {
        Spell {
            stamper,
            conn: session.conn,
            hub,
            settings,
            status,
            trust_absence_at: Instant::now() + settings.membership_ttl,
            mismatch_logged: Cell::new(false),
        }
    }

    /// Serves until a command fails (the error says how) or the link
    /// ends the session (`None`).
    async fn serve(
        mut self,
        link: &mut LinkHandle,
        messages: &mut mpsc::Receiver<Vec<u8>>,
        guard: &mut ReplayGuard,
    ) -> Option<FleetError> {
        // The first tick is at once: re-publish what is held here.
        let mut tick = tokio::time::interval(self.settings.refresh_interval());
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let step = tokio::select! {
                () = link.changed() => return None,
                Some(message) = messages.recv() => {
                    on_message(self.hub, self.settings, self.status, guard, &message);
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
        let record = self.record(room, peer, name.clone());
        let answer = self.room_script(room, peer, &record).await;
        let (outcome, members) = match &answer {
            Ok(Some(members)) => (FleetJoin::Members(members.clone()), members.clone()),
            Ok(None) => (FleetJoin::Full, Vec::new()),
            Err(_) => (FleetJoin::Unavailable, Vec::new()),
        };
        let written = matches!(answer, Ok(Some(_)));
        let instances = instances_of(members.iter().filter_map(|m| match m {
            Listed::There(m) => Some(m),
            Listed::Here(_) => None,
        }));
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
        let settings = self.settings;
        let channel = settings.channel(instance);
        let stamp = self.stamper.next(clock::unix_secs().saturating_mul(1000));
        let sealed = message.seal(
            &settings.keys,
            &settings.key_prefix,
            &channel,
            &settings.instance,
            stamp,
        );
        let command = redis::cmd("PUBLISH").arg(channel).arg(sealed).to_owned();
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
            let record = self.record(room, peer, name.clone());
            let room_key = settings.room_key(room);
            pipe.cmd("SET")
                .arg(format!("{}{peer}", settings.peer_prefix()))
                .arg(record)
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
                .arg(ROOM_KEY_LIFETIME.as_millis())
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
            let members = members
                .into_iter()
                .filter_map(|m| match m {
                    Listed::There(m) => Some(m),
                    Listed::Here(_) => None,
                })
                .collect();
            self.hub
                .with(|board| board.handle_remote_members(room, members, remove_missing));
        }
        Ok(())
    }

    /// This instance's membership record of `peer` in `room`, sealed for
    /// its key.
    fn record(&self, room: &str, peer: &str, name: Option<String>) -> String {
        let settings = self.settings;
        let record = Membership {
            room: room.to_owned(),
            inst: settings.instance.clone(),
            name,
            ttl_ms: Some(settings.ttl_ms()),
            size: Some(settings.room_size),
            ts: clock::unix_secs().saturating_mul(1000),
        };
        let key = format!("{}{peer}", settings.peer_prefix());
        record.seal(&settings.keys, &settings.key_prefix, &key)
    }

    /// Runs [`ROOM_SCRIPT`] for `room` (adding `peer` with `record`, unless
    /// `peer` is empty): the live members before it, fleet-wide and in
    /// join order (this instance's own as [`Listed::Here`]), or `None` if
    /// the room is full.
    async fn room_script(&mut self, room: &str, peer: &str, record: &str) -> Result<Option<Vec<Listed>>, FleetError> {
        let settings = self.settings;
        let (min_ttl, max_ttl) = record_ttl_bounds();
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
            .arg(min_ttl)
            .arg(max_ttl)
            .arg(MIN_RECORD_SIZE)
            .arg(MAX_REMOTE_PER_ROOM)
            .arg(MAX_RECORD_BYTES)
            .arg(MAX_ID_BYTES)
            .arg(ROOM_KEY_LIFETIME.as_millis())
            .arg(SEAL_HEADER_BYTES)
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
                Some(member) if member.instance == settings.instance => members.push(Listed::Here(member.id)),
                Some(member) => members.push(Listed::There(member)),
                None => self.status.count_room(RoomCounter::Invalid),
            }
        }
        Ok(Some(members))
    }

    /// A member of `room` from an (id, record) pair, if it checks out:
    /// the record sealed with the fleet's secret for that peer's key, fresh,
    /// and of that room.
    fn member(&self, room: &str, pair: &[Vec<u8>]) -> Option<RemoteMember> {
        let [id, record] = pair else {
            return None;
        };
        let id = std::str::from_utf8(id).ok().filter(|id| is_peer_id(id))?;
        let settings = self.settings;
        let key = format!("{}{id}", settings.peer_prefix());
        let now_ms = clock::unix_secs().saturating_mul(1000);
        let opened = Membership::open(
            record,
            MAX_RECORD_BYTES,
            &settings.keys,
            (&settings.key_prefix, &key),
            settings.ttl_ms(),
            now_ms,
        );
        let record = match opened {
            Ok(record) if record.room == room => record,
            Ok(_) => return None,
            Err(error) => {
                debug!(%error, id, bytes = record.len(), "fleet membership record refused");
                return None;
            }
        };
        self.log_mismatch(&record);
        Some(RemoteMember {
            id: id.to_owned(),
            name: record.name,
            instance: record.inst,
        })
    }

    /// Logs, once a session, a record of another instance written with
    /// another lifetime or room size than this instance's: allowed (each
    /// record is judged by its own lifetime, a room holds the smallest
    /// size), but worth an operator's look.
    fn log_mismatch(&self, record: &Membership) {
        let settings = self.settings;
        let ttl = record.ttl_ms.filter(|t| *t != settings.ttl_ms());
        let size = record.size.filter(|s| *s != settings.room_size);
        if self.mismatch_logged.get() || record.inst == settings.instance || (ttl.is_none() && size.is_none()) {
            return;
        }
        self.mismatch_logged.set(true);
        warn!(
            instance = %record.inst,
            membership_ttl_ms = record.ttl_ms,
            room_size = record.size,
            own_membership_ttl_ms = settings.ttl_ms(),
            own_room_size = settings.room_size,
            "another instance of the fleet has another fleet.membership_ttl or signaling.room_size: \
             each peer's membership is judged by its own instance's lifetime, and a room holds \
             the smallest room size of its members' instances"
        );
    }
}

/// The instances of `members`, each once.
fn instances_of<'m>(members: impl Iterator<Item = &'m RemoteMember>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for m in members {
        if !out.contains(&m.instance) {
            out.push(m.instance.clone());
        }
    }
    out
}
