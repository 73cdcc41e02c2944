//! The revocations channel: a username revoked through the admin API of
//! one instance is refused by every instance (`[fleet] redis_url`). The
//! wire format is [`super::revocation_wire`]; this is its Redis I/O, over
//! the fleet's one [`super::link`] (it runs whether or not this instance
//! serves the admin API or HTTP, since every instance must hear
//! revocations).
//!
//! Redis holds, under `fleet.key_prefix` (`P`):
//! - `P:revoked`: a sorted set, username → unix second until which it is
//!   refused. Every write first drops the entries past their bound, keeps
//!   the later bound of a username, and then trims the set to
//!   [`MAX_SHARED`] entries (those expiring soonest go first);
//! - `P:revoked:signed`: a hash, username → its entry sealed with the
//!   fleet's secret for `P:revoked` (`revocation_wire`), written and
//!   dropped with the set's member: only a signed entry is loaded;
//! - `P:revocations`: the channel every instance subscribes to, on which a
//!   revocation is published, sealed for that channel (in the same Lua
//!   script as the write, so that nobody who reads the set after hearing
//!   of it misses it). A message unsigned, of another fleet, stale or
//!   replayed is refused (`revocation_wire`).
//!
//! Invariants: a revocation is always applied locally first (by the admin
//! API, through [`crate::net::AdminHandle::revoke`]); sharing it is best
//! effort and never undoes or delays the local one. What is heard
//! (message or loaded entry, our own echo included) is untrusted: its
//! bound is clamped to `auth.max_credential_lifetime` from now and a
//! short-lived username's own expiry
//! ([`crate::proto::revocations::clamp_shared`]), a username already held
//! as long is left alone (read lock only, no shard asked), and the rest
//! is applied with [`crate::net::AdminHandle::revoke_shared`]: into the
//! set's fleet part, which the operator's own never compete with, and the
//! user's allocations ended on every shard if it was not refused yet. On every
//! (re)connection the instance first writes what was revoked here while
//! Redis was down (at most [`MAX_PENDING`]), and then loads the set (at
//! most [`MAX_SHARED`] entries), so that an instance started after a
//! revocation, or cut off during it, still refuses the username.
//!
//! Outage: while the link has no session, revocations made here are held
//! (at most [`MAX_PENDING`]); a failed or timed-out command is handed to
//! the link, which warns once per outage (not once per revocation) and
//! reconnects, backing off to [`MAX_BACKOFF`] at most.
//!
//! Bounds: messages and entries over their size, unsigned or of a bad
//! shape are counted (`turnpike_fleet_revocations_total{outcome="invalid"}`)
//! and dropped, and the load script does not even answer an entry whose
//! username or signed value is over its bound (it counts them, and the
//! reply holds at most [`MAX_SHARED`] entries of bounded size); what would change the set passes a token bucket of
//! [`APPLY_RATE`] a second and a burst of [`APPLY_BURST`], and the set's
//! fleet part holds `proto::revocations::MAX_FLEET_REVOCATIONS` usernames:
//! beyond either, a revocation is counted (`outcome="limited"`) and
//! dropped, so a flood published into Redis costs at most that many set
//! writes and rounds of the shards a second; the queue from the admin API
//! holds [`QUEUE`] revocations (beyond it, [`RevocationSharer::share`]
//! says false); every command has the link's timeout.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use tokio::sync::mpsc;
use tracing::{debug, warn};

use super::link::{bounded, FleetError, LinkHandle};
use super::revocation_wire::{HeardRevocation, SharedRevocation, MAX_MESSAGE_BYTES, MAX_USERNAME};
use super::status::{FleetStatus, RevocationOutcome};
use super::FleetSettings;
use crate::net::{AdminError, AdminHandle};
use crate::process::clock;
use crate::proto::revocations::clamp_shared;
use crate::proto::token_bucket::TokenBucket;
use crate::signaling::switchboard::fleet_seal::{ReplayGuard, Stamper};

/// Most entries kept in, and loaded from, `P:revoked`.
pub const MAX_SHARED: usize = 10_000;
/// Most revocations made during an outage that are written once Redis is
/// back (the oldest are forgotten first; they still hold locally).
pub const MAX_PENDING: usize = 1024;
/// Revocations waiting between the admin API and the driver.
pub const QUEUE: usize = 64;
/// Longest reconnection delay of the link.
pub const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Revocations from Redis that may change the set, a second: far above
/// what operators revoke, and a bound on what a flood costs.
pub const APPLY_RATE: u64 = 200;
/// Burst of [`APPLY_RATE`]: a whole set of [`MAX_SHARED`] entries, loaded
/// on (re)connection, is applied at once from a full bucket.
pub const APPLY_BURST: u64 = MAX_SHARED as u64;

/// Records a revocation (KEYS[1]: the set, KEYS[2]: the hash of signed
/// entries) and publishes it. ARGV: username, until, now, most entries,
/// channel, message, signed entry. A member dropped from the set (past, or
/// trimmed) is dropped from the hash too. Written for a single Redis (the
/// channel is not a key), not Redis Cluster.
const RECORD_SCRIPT: &str = r"
for _, user in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[3])) do
  redis.call('HDEL', KEYS[2], user)
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[3])
local old = redis.call('ZSCORE', KEYS[1], ARGV[1])
if (not old) or tonumber(old) < tonumber(ARGV[2]) then
  redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
  redis.call('HSET', KEYS[2], ARGV[1], ARGV[7])
end
local n = redis.call('ZCARD', KEYS[1])
local max = tonumber(ARGV[4])
if n > max then
  for _, user in ipairs(redis.call('ZRANGE', KEYS[1], 0, n - max - 1)) do
    redis.call('HDEL', KEYS[2], user)
  end
  redis.call('ZREMRANGEBYRANK', KEYS[1], 0, n - max - 1)
end
redis.call('PUBLISH', ARGV[5], ARGV[6])
return n
";

/// Reads the live entries (KEYS[1]: the set, KEYS[2]: the hash of signed
/// entries), the soonest to expire first. ARGV: now (unix s), most
/// entries, longest username, longest signed entry. Answers
/// `{skipped, user, entry, …}`: a username or a signed entry over its
/// bound (`STRLEN` of the hash's field first), or a hash that is no hash,
/// is skipped and counted, never answered; so the reply holds at most the
/// most entries of bounded size, whatever Redis holds.
const LOAD_SCRIPT: &str = r"
local users = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. ARGV[1], '+inf', 'LIMIT', 0, tonumber(ARGV[2]))
local max_user, max_entry = tonumber(ARGV[3]), tonumber(ARGV[4])
local out = {0}
for _, user in ipairs(users) do
  local bytes = -1
  if #user <= max_user then
    bytes = redis.pcall('HSTRLEN', KEYS[2], user)
  end
  if type(bytes) == 'number' and bytes > 0 and bytes <= max_entry then
    out[#out + 1] = user
    out[#out + 1] = redis.call('HGET', KEYS[2], user)
  else
    out[1] = out[1] + 1
  end
end
return out
";

/// The admin API's side: hands a revocation made here to the driver.
#[derive(Clone)]
pub struct RevocationSharer {
    queue: mpsc::Sender<SharedRevocation>,
    status: Arc<FleetStatus>,
}

impl RevocationSharer {
    /// Queues `username` (refused until `until_unix`) for the fleet; false
    /// if the queue is full (it still holds here).
    pub fn share(&self, username: &str, until_unix: u64) -> bool {
        let revocation = SharedRevocation {
            username: username.to_owned(),
            until_unix,
        };
        let queued = self.queue.try_send(revocation).is_ok();
        if !queued {
            self.status.count_revocation(RevocationOutcome::Dropped);
        }
        queued
    }
}

/// Keys and channel of the fleet's revocations.
pub(super) struct Names {
    pub set: String,
    pub signed: String,
    pub channel: String,
}

impl Names {
    pub(super) fn new(prefix: &str) -> Names {
        Names {
            set: format!("{prefix}:revoked"),
            signed: format!("{prefix}:revoked:signed"),
            channel: format!("{prefix}:revocations"),
        }
    }
}

/// The channel's state: what it applies to, and what waits for Redis.
pub(super) struct Revocations {
    shards: AdminHandle,
    names: Names,
    /// The fleet's secrets, prefix and this instance's name.
    settings: Arc<FleetSettings>,
    /// The stamps of what this instance publishes.
    stamper: Stamper,
    /// Refuses stale and replayed messages.
    guard: ReplayGuard,
    status: Arc<FleetStatus>,
    requests: mpsc::Receiver<SharedRevocation>,
    /// Revocations made here and not yet written to Redis, oldest first.
    pending: VecDeque<SharedRevocation>,
    /// Longest a revocation heard is held here.
    max_lifetime: Duration,
    /// What is heard and would change the set: [`APPLY_RATE`].
    budget: TokenBucket,
}

impl Revocations {
    /// The channel and the admin API's side of it.
    pub(super) fn new(
        shards: AdminHandle,
        settings: Arc<FleetSettings>,
        status: Arc<FleetStatus>,
    ) -> (Revocations, RevocationSharer) {
        let names = Names::new(&settings.key_prefix);
        let max_lifetime = settings.max_revocation;
        let (queue, requests) = mpsc::channel(QUEUE);
        let sharer = RevocationSharer {
            queue,
            status: status.clone(),
        };
        let channel = Revocations {
            shards,
            names,
            settings,
            stamper: Stamper::new(FleetSettings::draw_boot()),
            guard: ReplayGuard::default(),
            status,
            requests,
            pending: VecDeque::new(),
            max_lifetime,
            budget: TokenBucket::new(APPLY_RATE, APPLY_BURST, clock::mono()),
        };
        (channel, sharer)
    }

    /// Shares and applies revocations for as long as the process runs:
    /// through each session of `link`, holding them between sessions.
    /// `messages` is what the revocations channel hears.
    pub(super) async fn run(mut self, mut link: LinkHandle, mut messages: mpsc::Receiver<Vec<u8>>) {
        loop {
            let Some(session) = link.current() else {
                loop {
                    tokio::select! {
                        () = link.changed() => break,
                        Some(request) = self.requests.recv() => self.hold(request),
                        Some(message) = messages.recv() => self.on_message(&message).await,
                    }
                }
                continue;
            };
            let mut conn = session.conn;
            let served = match self.catch_up(&mut conn).await {
                Ok(()) => self.serve(&mut conn, &mut link, &mut messages).await,
                Err(error) => Err(error),
            };
            if let Err(error) = served {
                link.fail(session.epoch, error);
                link.changed().await;
            }
        }
    }

    /// Keeps `request` for when Redis is back, within [`MAX_PENDING`].
    fn hold(&mut self, request: SharedRevocation) {
        if self.pending.len() >= MAX_PENDING {
            self.pending.pop_front();
            self.status.count_revocation(RevocationOutcome::Dropped);
        }
        self.pending.push_back(request);
    }

    /// Writes what is pending, then loads the set. The link subscribed
    /// before the session began, so a revocation published in between is
    /// heard, not lost between the two.
    async fn catch_up(&mut self, conn: &mut MultiplexedConnection) -> Result<(), FleetError> {
        while let Some(request) = self.pending.front() {
            let request = request.clone();
            self.record(conn, &request).await?;
            self.pending.pop_front();
        }
        self.load(conn).await
    }

    /// Reads the live entries of the set and applies them.
    async fn load(&mut self, conn: &mut MultiplexedConnection) -> Result<(), FleetError> {
        let now = clock::unix_secs();
        let command = redis::cmd("EVAL")
            .arg(LOAD_SCRIPT)
            .arg(2)
            .arg(&self.names.set)
            .arg(&self.names.signed)
            .arg(now)
            .arg(MAX_SHARED)
            .arg(MAX_USERNAME)
            .arg(MAX_MESSAGE_BYTES)
            .to_owned();
        let answer: Vec<redis::Value> = bounded(command.query_async(conn)).await?;
        let mut answer = answer.into_iter();
        let skipped = match answer.next() {
            Some(redis::Value::Int(n)) => u64::try_from(n).unwrap_or(0),
            _ => 0,
        };
        for _ in 0..skipped.min(MAX_SHARED as u64) {
            self.status.count_revocation(RevocationOutcome::Invalid);
        }
        if skipped > 0 {
            debug!(skipped, "revocation entries over their bound in Redis skipped");
        }
        let entries: Vec<Vec<u8>> = answer
            .map(|v| match v {
                redis::Value::BulkString(bytes) => bytes,
                _ => Vec::new(),
            })
            .collect();
        let mut loaded = 0usize;
        let now_ms = now.saturating_mul(1000);
        let settings = self.settings.clone();
        let set = self.names.set.clone();
        for pair in entries.chunks(2).take(MAX_SHARED) {
            let [member, sealed] = pair else {
                self.status.count_revocation(RevocationOutcome::Invalid);
                continue;
            };
            let place = (settings.key_prefix.as_str(), set.as_str());
            match SharedRevocation::open_entry(member, sealed, &settings.keys, place, now_ms) {
                Ok(revocation) => {
                    self.apply(&revocation).await;
                    loaded += 1;
                }
                Err(error) => {
                    self.status.count_revocation(RevocationOutcome::Invalid);
                    debug!(%error, "revocation entry from Redis dropped");
                }
            }
        }
        debug!(loaded, "revocations loaded from Redis");
        Ok(())
    }

    /// Until Redis fails (the error) or the link ends the session.
    async fn serve(
        &mut self,
        conn: &mut MultiplexedConnection,
        link: &mut LinkHandle,
        messages: &mut mpsc::Receiver<Vec<u8>>,
    ) -> Result<(), FleetError> {
        loop {
            tokio::select! {
                () = link.changed() => return Ok(()),
                Some(message) = messages.recv() => self.on_message(&message).await,
                Some(request) = self.requests.recv() => {
                    if let Err(error) = self.record(conn, &request).await {
                        self.hold(request);
                        return Err(error);
                    }
                }
            }
        }
    }

    /// Writes and publishes one revocation made here, sealed.
    async fn record(
        &mut self,
        conn: &mut MultiplexedConnection,
        revocation: &SharedRevocation,
    ) -> Result<(), FleetError> {
        let now = clock::unix_secs();
        let settings = &self.settings;
        let (keys, prefix, src) = (&settings.keys, settings.key_prefix.as_str(), settings.instance.as_str());
        let message = revocation.seal(keys, prefix, &self.names.channel, src, self.stamper.next(now * 1000));
        let entry = revocation.seal(keys, prefix, &self.names.set, src, self.stamper.next(now * 1000));
        let command = redis::cmd("EVAL")
            .arg(RECORD_SCRIPT)
            .arg(2)
            .arg(&self.names.set)
            .arg(&self.names.signed)
            .arg(&revocation.username)
            .arg(revocation.until_unix)
            .arg(now)
            .arg(MAX_SHARED)
            .arg(&self.names.channel)
            .arg(message)
            .arg(entry)
            .to_owned();
        let _: i64 = bounded(command.query_async(conn)).await?;
        self.status.count_revocation(RevocationOutcome::Shared);
        Ok(())
    }

    /// A revocation published by some instance (maybe this one): taken
    /// only if sealed for the channel with the fleet's secret, fresh and
    /// not a replay.
    async fn on_message(&mut self, payload: &[u8]) {
        let now_ms = clock::unix_secs().saturating_mul(1000);
        let place = (self.settings.key_prefix.as_str(), self.names.channel.as_str());
        match SharedRevocation::open_message(payload, &self.settings.keys, place, &mut self.guard, now_ms) {
            Ok(revocation) => self.apply(&revocation).await,
            Err(error) => {
                self.status.count_revocation(RevocationOutcome::Invalid);
                debug!(%error, bytes = payload.len(), "revocation message dropped");
            }
        }
    }

    /// Refuses the username here, clamped (to the lifetime from when it
    /// was made, and from now), within the rate and the fleet part's
    /// bound; ends its allocations if it was not refused yet.
    async fn apply(&mut self, heard: &HeardRevocation) {
        let username = &heard.revocation.username;
        let until_unix = heard.bound(self.max_lifetime.as_secs());
        let Some(until) = clamp_shared(username, until_unix, clock::unix_secs(), self.max_lifetime) else {
            // Past: nothing to hold.
            return;
        };
        if self.shards.revocations().holds(username, until) {
            // Held as long already (our own echo, or heard before).
            self.status.count_revocation(RevocationOutcome::Applied);
            return;
        }
        if !self.budget.try_take(1, clock::mono()) {
            self.status.count_revocation(RevocationOutcome::Limited);
            debug!(username, "revocation from the fleet over the apply rate: dropped");
            return;
        }
        match self.shards.revoke_shared(username, until).await {
            Ok(_) => self.status.count_revocation(RevocationOutcome::Applied),
            // Refused before anything changed: the fleet's part is full.
            Err(error @ AdminError::Revoke(_)) => {
                self.status.count_revocation(RevocationOutcome::Limited);
                debug!(%error, username, "revocation from the fleet not held here");
            }
            // It holds; the allocations end by their lifetime (they can no
            // longer refresh).
            Err(error) => {
                self.status.count_revocation(RevocationOutcome::Applied);
                warn!(%error, "a revocation from the fleet holds, but ending its allocations failed");
            }
        }
    }
}
