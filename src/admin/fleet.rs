//! Revocations shared across a fleet through Redis (`[fleet] redis_url`):
//! a username revoked through the admin API of one instance is refused by
//! every instance. The wire format is [`super::fleet_wire`]; this is the
//! Redis I/O, on a thread of its own with a current-thread runtime (it
//! runs whether or not this instance serves the admin API or HTTP, since
//! every instance must hear revocations).
//!
//! Redis holds, under `fleet.key_prefix` (`P`):
//! - `P:revoked`: a sorted set, username → unix second until which it is
//!   refused. Every write first drops the entries past their bound, keeps
//!   the later bound of a username, and then trims the set to
//!   [`MAX_SHARED`] entries (those expiring soonest go first);
//! - `P:revocations`: the channel every instance subscribes to, on which a
//!   revocation is published (in the same Lua script as the write, so that
//!   nobody who reads the set after hearing of it misses it).
//!
//! Invariants: a revocation is always applied locally first (by the admin
//! API, through [`crate::net::AdminHandle::revoke`]); sharing it is best
//! effort and never undoes or delays the local one. A message heard,
//! our own echo included, is applied with the same `AdminHandle::revoke`,
//! which also ends the user's allocations on every shard. On every
//! (re)connection the instance first writes what was revoked here while
//! Redis was down (at most [`MAX_PENDING`]), and then loads the set (at
//! most [`MAX_SHARED`] entries), so that an instance started after a
//! revocation, or cut off during it, still refuses the username.
//!
//! Outage: a failed or timed-out command, or the subscription ending,
//! marks Redis down; one warning says revocations are not shared until it
//! is back (not one per revocation), and reconnection backs off from
//! 100 ms to [`MAX_BACKOFF`].
//!
//! Bounds: messages and entries over their size or of a bad shape are
//! counted (`turnpike_fleet_revocations_total{outcome="invalid"}`) and
//! dropped; the queue from the admin API holds [`QUEUE`]
//! revocations (beyond it, [`RevocationSharer::share`] says false); every
//! command has a [`COMMAND_TIMEOUT`].

use std::collections::VecDeque;
use std::thread::JoinHandle;
use std::time::Duration;

use futures_util::StreamExt;
use redis::aio::MultiplexedConnection;
use tokio::sync::{mpsc, watch};
use tracing::{debug, info, warn};

use super::fleet_wire::SharedRevocation;
use crate::config::{Config, Secret};
// The rooms' driver's error and command bound: the same Redis, the same
// rules for when it counts as down.
use crate::http::signaling::fleet::{bounded, FleetError, COMMAND_TIMEOUT};
use crate::net::{AdminError, AdminHandle};
use crate::process::clock;
use crate::process::runtime_thread;
use crate::process::status::{FleetRevocation, ServerStatus};

/// Most entries kept in, and loaded from, `P:revoked`.
pub const MAX_SHARED: usize = 10_000;
/// Most revocations made during an outage that are written once Redis is
/// back (the oldest are forgotten first; they still hold locally).
pub const MAX_PENDING: usize = 1024;
/// Revocations waiting between the admin API and the driver.
pub const QUEUE: usize = 64;
/// First reconnection delay, doubled up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(100);
pub const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Records a revocation (KEYS[1]: the set) and publishes it. ARGV:
/// username, until, now, most entries, channel, message. Written for a
/// single Redis (the channel is not a key), not Redis Cluster.
const RECORD_SCRIPT: &str = r"
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[3])
local old = redis.call('ZSCORE', KEYS[1], ARGV[1])
if (not old) or tonumber(old) < tonumber(ARGV[2]) then
  redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
end
local n = redis.call('ZCARD', KEYS[1])
local max = tonumber(ARGV[4])
if n > max then
  redis.call('ZREMRANGEBYRANK', KEYS[1], 0, n - max - 1)
end
redis.call('PUBLISH', ARGV[5], ARGV[6])
return n
";

/// The admin API's side: hands a revocation made here to the driver.
#[derive(Clone)]
pub struct RevocationSharer {
    queue: mpsc::Sender<SharedRevocation>,
    status: ServerStatus,
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
            self.status.count_fleet_revocation(FleetRevocation::Dropped);
        }
        queued
    }
}

/// The running driver.
pub struct RevocationFleet {
    sharer: RevocationSharer,
    stop: watch::Sender<bool>,
    thread: JoinHandle<()>,
}

impl RevocationFleet {
    pub fn sharer(&self) -> RevocationSharer {
        self.sharer.clone()
    }

    /// Stops the driver and waits for its thread.
    pub fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.thread.join();
    }
}

/// Keys and channel of the fleet.
#[derive(Clone)]
struct Names {
    set: String,
    channel: String,
}

/// Starts the driver if `[fleet] redis_url` is set.
pub fn start(config: &Config, shards: AdminHandle, status: ServerStatus) -> std::io::Result<Option<RevocationFleet>> {
    let Some(redis_url) = config.fleet.redis_url.clone() else {
        return Ok(None);
    };
    let prefix = &config.fleet.key_prefix;
    let names = Names {
        set: format!("{prefix}:revoked"),
        channel: format!("{prefix}:revocations"),
    };
    let (queue, requests) = mpsc::channel(QUEUE);
    let (stop, stopped) = watch::channel(false);
    let driver_status = status.clone();
    let driver = Driver {
        shards,
        names,
        status: driver_status,
        requests,
        pending: VecDeque::new(),
    };
    let thread = runtime_thread::spawn("turnpike-revocations", "revocation sharing", move |runtime| {
        runtime.block_on(driver.run(redis_url, stopped));
    })?;
    info!(prefix = %prefix, "revocations are shared with the fleet through Redis");
    Ok(Some(RevocationFleet {
        sharer: RevocationSharer { queue, status },
        stop,
        thread,
    }))
}

struct Driver {
    shards: AdminHandle,
    names: Names,
    status: ServerStatus,
    requests: mpsc::Receiver<SharedRevocation>,
    /// Revocations made here and not yet written to Redis, oldest first.
    pending: VecDeque<SharedRevocation>,
}

impl Driver {
    async fn run(mut self, redis_url: Secret, mut stopped: watch::Receiver<bool>) {
        let client = match redis::Client::open(redis_url.expose()) {
            Ok(client) => client,
            Err(e) => {
                // The error kind only: the URL may hold a password.
                return warn!(kind = ?e.kind(), "fleet.redis_url cannot be used; revocations stay local");
            }
        };
        let mut backoff = MIN_BACKOFF;
        let mut outage = false;
        loop {
            let error = match self.connect(&client).await {
                Ok((conn, messages)) => {
                    backoff = MIN_BACKOFF;
                    match outage {
                        true => info!("revocations: Redis is back, revocations are shared with the fleet again"),
                        false => debug!("revocations: connected to Redis"),
                    }
                    outage = false;
                    match self.serve(conn, messages, &mut stopped).await {
                        Ok(()) => return,
                        Err(error) => error,
                    }
                }
                Err(error) => error,
            };
            match outage {
                false => {
                    warn!(%error, "revocations are not shared with the fleet while Redis is down (they still hold here)")
                }
                true => debug!(%error, "Redis still unreachable"),
            }
            outage = true;
            let wait = tokio::time::sleep(backoff);
            tokio::pin!(wait);
            loop {
                tokio::select! {
                    () = &mut wait => break,
                    request = self.requests.recv() => match request {
                        Some(request) => self.hold(request),
                        None => return,
                    },
                    _ = stopped.changed() => return,
                }
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// Keeps `request` for when Redis is back, within [`MAX_PENDING`].
    fn hold(&mut self, request: SharedRevocation) {
        if self.pending.len() >= MAX_PENDING {
            self.pending.pop_front();
            self.status.count_fleet_revocation(FleetRevocation::Dropped);
        }
        self.pending.push_back(request);
    }

    /// Connects, subscribes, writes what is pending, and loads the set.
    async fn connect(
        &mut self,
        client: &redis::Client,
    ) -> Result<(MultiplexedConnection, redis::aio::PubSubStream), FleetError> {
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(COMMAND_TIMEOUT))
            .set_response_timeout(Some(COMMAND_TIMEOUT));
        let mut conn = bounded(client.get_multiplexed_async_connection_with_config(&config)).await?;
        let mut pubsub = bounded(client.get_async_pubsub()).await?;
        // Subscribed before loading: a revocation published in between is
        // heard, not lost between the two.
        bounded(pubsub.subscribe(&self.names.channel)).await?;
        while let Some(request) = self.pending.front() {
            let request = request.clone();
            self.record(&mut conn, &request).await?;
            self.pending.pop_front();
        }
        self.load(&mut conn).await?;
        Ok((conn, pubsub.into_on_message()))
    }

    /// Reads the live entries of the set and applies them.
    async fn load(&mut self, conn: &mut MultiplexedConnection) -> Result<(), FleetError> {
        let now = clock::unix_secs();
        let command = redis::cmd("ZRANGEBYSCORE")
            .arg(&self.names.set)
            .arg(format!("({now}"))
            .arg("+inf")
            .arg("WITHSCORES")
            .arg("LIMIT")
            .arg(0)
            .arg(MAX_SHARED)
            .to_owned();
        let answer: Vec<Vec<u8>> = bounded(command.query_async(conn)).await?;
        let mut loaded = 0usize;
        for pair in answer.chunks(2).take(MAX_SHARED) {
            let [member, score] = pair else {
                self.status.count_fleet_revocation(FleetRevocation::Invalid);
                continue;
            };
            match SharedRevocation::parse_entry(member, score) {
                Ok(revocation) => {
                    // Already held here: its allocations were ended then.
                    let known = self.shards.revocations().is_revoked(&revocation.username, now);
                    self.apply(&revocation, !known).await;
                    loaded += 1;
                }
                Err(error) => {
                    self.status.count_fleet_revocation(FleetRevocation::Invalid);
                    debug!(%error, "revocation entry from Redis dropped");
                }
            }
        }
        debug!(loaded, "revocations loaded from Redis");
        Ok(())
    }

    /// Until stopped, or until Redis fails.
    async fn serve(
        &mut self,
        mut conn: MultiplexedConnection,
        mut messages: redis::aio::PubSubStream,
        stopped: &mut watch::Receiver<bool>,
    ) -> Result<(), FleetError> {
        loop {
            tokio::select! {
                message = messages.next() => match message {
                    Some(message) => self.on_message(message.get_payload_bytes()).await,
                    None => return Err(FleetError::SubscriptionEnded),
                },
                request = self.requests.recv() => match request {
                    Some(request) => {
                        if let Err(error) = self.record(&mut conn, &request).await {
                            self.hold(request);
                            return Err(error);
                        }
                    }
                    None => return Ok(()),
                },
                _ = stopped.changed() => return Ok(()),
            }
        }
    }

    /// Writes and publishes one revocation made here.
    async fn record(&self, conn: &mut MultiplexedConnection, revocation: &SharedRevocation) -> Result<(), FleetError> {
        let command = redis::cmd("EVAL")
            .arg(RECORD_SCRIPT)
            .arg(1)
            .arg(&self.names.set)
            .arg(&revocation.username)
            .arg(revocation.until_unix)
            .arg(clock::unix_secs())
            .arg(MAX_SHARED)
            .arg(&self.names.channel)
            .arg(revocation.encode())
            .to_owned();
        let _: i64 = bounded(command.query_async(conn)).await?;
        self.status.count_fleet_revocation(FleetRevocation::Shared);
        Ok(())
    }

    /// A revocation published by some instance (maybe this one).
    async fn on_message(&self, payload: &[u8]) {
        match SharedRevocation::parse(payload) {
            Ok(revocation) => self.apply(&revocation, true).await,
            Err(error) => {
                self.status.count_fleet_revocation(FleetRevocation::Invalid);
                debug!(%error, bytes = payload.len(), "revocation message dropped");
            }
        }
    }

    /// Refuses the username here, and ends its allocations if `end`.
    async fn apply(&self, revocation: &SharedRevocation, end: bool) {
        let now = clock::unix_secs();
        if revocation.until_unix <= now {
            return;
        }
        let SharedRevocation { username, until_unix } = revocation;
        let result = match end {
            true => self.shards.revoke(username, *until_unix).await.map(|_| ()),
            false => self
                .shards
                .revocations()
                .revoke(username, *until_unix, now)
                .map_err(AdminError::from),
        };
        match result {
            Ok(()) => self.status.count_fleet_revocation(FleetRevocation::Applied),
            // Refused before anything changed (the list is full).
            Err(error @ AdminError::Revoke(_)) => {
                warn!(%error, "a revocation from the fleet could not be held here");
            }
            // It holds; the allocations end by their lifetime (they can no
            // longer refresh).
            Err(error) => {
                self.status.count_fleet_revocation(FleetRevocation::Applied);
                warn!(%error, "a revocation from the fleet holds, but ending its allocations failed");
            }
        }
    }
}
