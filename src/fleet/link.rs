//! The one link to Redis: a command connection and one subscription, for
//! every channel of the fleet (rooms, revocations). The channels never
//! open, retry or warn on their own; they borrow the connection of the
//! current [`Session`], hand back the errors they meet
//! ([`LinkHandle::fail`]), and read what their Redis channel hears from a
//! queue of their own.
//!
//! Lifecycle: connect (a command connection, then the subscription to
//! every channel), publish the [`Session`] (so every channel sees the same
//! connection come and go, and the subscription is in place before a
//! channel reads state it must not miss an update to), dispatch messages
//! until a command fails, the subscription ends or the process stops;
//! then withdraw the session and reconnect, backing off from
//! [`MIN_BACKOFF`] doubling to the configured maximum.
//!
//! Invariants: [`FleetStatus::up`] is true exactly while a session is
//! published; one warning per outage (the first failure), one line when
//! Redis is back, retries in between at `debug`; the Redis URL may hold a
//! password and is never logged (only the kind of a client error is).
//!
//! Bounds: what Redis sends is untrusted. Every command runs within
//! [`COMMAND_TIMEOUT`] ([`bounded`], [`within`]); the subscription is read
//! by a [`Subscriber`] of its own, which skips a message longer than the
//! longest channel's `max_bytes` without holding it; a message over its
//! channel's `max_bytes`, or arriving while the channel's queue of
//! [`QUEUE`] is full, is dropped and counted by the channel's `refused`
//! hook.

use std::sync::Arc;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use tokio::sync::{mpsc, watch};
use tracing::{debug, info, warn};

use super::push_reader::{Payload, Push, RespError};
use super::status::FleetStatus;
use super::subscriber::Subscriber;
use crate::config::Secret;

/// Longest any one Redis command may take before Redis counts as down.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);
/// First reconnection delay.
pub const MIN_BACKOFF: Duration = Duration::from_millis(100);
/// Messages waiting for a channel to read them.
pub const QUEUE: usize = 256;

/// Why Redis counts as down.
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    #[error("Redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("Redis subscription: {0}")]
    Io(#[from] std::io::Error),
    #[error("Redis subscription: {0}")]
    Resp(#[from] RespError),
    #[error("Redis refused: {0}")]
    Refused(String),
    #[error("fleet.redis_url names a kind of address the subscription cannot reach")]
    Unsupported,
    #[error("Redis did not answer within {COMMAND_TIMEOUT:?}")]
    Timeout,
    #[error("the Redis subscription ended")]
    SubscriptionEnded,
}

impl FleetError {
    /// Redis's error line, cut short: it names the error (`WRONGPASS`,
    /// `NOPERM`, …) and never holds the password.
    pub fn refused(line: &[u8]) -> FleetError {
        FleetError::Refused(String::from_utf8_lossy(&line[..line.len().min(200)]).into_owned())
    }
}

/// `future` within [`COMMAND_TIMEOUT`].
pub async fn bounded<T>(future: impl std::future::Future<Output = redis::RedisResult<T>>) -> Result<T, FleetError> {
    within(async { Ok(future.await?) }).await
}

/// `future`, which says how it fails, within [`COMMAND_TIMEOUT`].
pub async fn within<T>(future: impl std::future::Future<Output = Result<T, FleetError>>) -> Result<T, FleetError> {
    tokio::time::timeout(COMMAND_TIMEOUT, future)
        .await
        .unwrap_or(Err(FleetError::Timeout))
}

/// One connected spell: its connection, and a number that names it so
/// that a failure reported late does not end the next one.
#[derive(Clone)]
pub struct Session {
    pub epoch: u64,
    pub conn: MultiplexedConnection,
}

/// A Redis channel the link subscribes to for one of its users.
pub struct Subscription {
    pub channel: String,
    /// Longest message passed on.
    pub max_bytes: usize,
    /// Counts a message dropped before its channel saw it.
    pub refused: fn(&FleetStatus),
    pub queue: mpsc::Sender<Vec<u8>>,
}

/// What the link says when Redis goes and comes back, for the channels it
/// carries.
pub struct Wording {
    /// Completes "Redis is unreachable: …".
    pub down: String,
    /// Completes "Redis is reachable again: …".
    pub back: String,
}

/// A channel's side of the link.
#[derive(Clone)]
pub struct LinkHandle {
    sessions: watch::Receiver<Option<Session>>,
    failures: mpsc::Sender<(u64, FleetError)>,
}

impl LinkHandle {
    /// The session now, if Redis is reachable.
    pub fn current(&mut self) -> Option<Session> {
        self.sessions.borrow_and_update().clone()
    }

    /// Until the session changes (Redis went or came back).
    pub async fn changed(&mut self) {
        if self.sessions.changed().await.is_err() {
            // The link is gone (the process stops): nothing changes again.
            std::future::pending::<()>().await;
        }
    }

    /// Reports that a command of session `epoch` failed: the link ends it
    /// (unless it already has) and reconnects.
    pub fn fail(&self, epoch: u64, error: FleetError) {
        // A full queue already holds a report that ends the session.
        let _ = self.failures.try_send((epoch, error));
    }
}

/// The link's own side.
pub struct Link {
    redis_url: Secret,
    subscriptions: Vec<Subscription>,
    status: Arc<FleetStatus>,
    wording: Wording,
    max_backoff: Duration,
    sessions: watch::Sender<Option<Session>>,
    failures: mpsc::Receiver<(u64, FleetError)>,
}

impl Link {
    /// A link to `redis_url` and the handle its channels share.
    pub fn new(
        redis_url: Secret,
        subscriptions: Vec<Subscription>,
        status: Arc<FleetStatus>,
        wording: Wording,
        max_backoff: Duration,
    ) -> (Link, LinkHandle) {
        let (sessions, watching) = watch::channel(None);
        let (report, failures) = mpsc::channel(4);
        let link = Link {
            redis_url,
            subscriptions,
            status,
            wording,
            max_backoff: max_backoff.max(MIN_BACKOFF),
            sessions,
            failures,
        };
        (
            link,
            LinkHandle {
                sessions: watching,
                failures: report,
            },
        )
    }

    /// Connects, serves and reconnects for as long as the process runs.
    pub async fn run(mut self) {
        let client = match redis::Client::open(self.redis_url.expose()) {
            Ok(client) => client,
            Err(e) => {
                // The error kind only: the URL may hold a password. No
                // session is ever published, so the channels stay local.
                warn!(kind = ?e.kind(), "fleet.redis_url cannot be used; {}", self.wording.down);
                return std::future::pending().await;
            }
        };
        let mut backoff = MIN_BACKOFF;
        let mut outage = false;
        let mut epoch = 0;
        loop {
            let error = match self.connect(&client).await {
                Ok((conn, subscriber)) => {
                    backoff = MIN_BACKOFF;
                    match outage {
                        true => info!("Redis is reachable again: {}", self.wording.back),
                        false => info!("fleet: connected to Redis"),
                    }
                    outage = false;
                    epoch += 1;
                    self.status.set_up(true);
                    self.sessions.send_replace(Some(Session { epoch, conn }));
                    let error = self.serve(epoch, subscriber).await;
                    self.status.set_up(false);
                    self.sessions.send_replace(None);
                    error
                }
                Err(error) => error,
            };
            match outage {
                false => warn!(%error, "Redis is unreachable: {}", self.wording.down),
                true => debug!(%error, "Redis still unreachable"),
            }
            outage = true;
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(self.max_backoff);
        }
    }

    /// The command connection, and the subscription once Redis has
    /// confirmed every channel (a message that comes first is passed on).
    async fn connect(&self, client: &redis::Client) -> Result<(MultiplexedConnection, Subscriber), FleetError> {
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(COMMAND_TIMEOUT))
            .set_response_timeout(Some(COMMAND_TIMEOUT));
        let conn = bounded(client.get_multiplexed_async_connection_with_config(&config)).await?;
        let longest = self.subscriptions.iter().map(|s| s.max_bytes).max().unwrap_or(0);
        let mut subscriber = within(Subscriber::connect(client.get_connection_info(), longest)).await?;
        let channels: Vec<&str> = self.subscriptions.iter().map(|s| s.channel.as_str()).collect();
        within(async {
            subscriber.subscribe(&channels).await?;
            let mut unconfirmed = channels.len();
            while unconfirmed > 0 {
                match subscriber.next().await? {
                    Push::Subscribed => unconfirmed -= 1,
                    push => self.take(push)?,
                }
            }
            Ok(())
        })
        .await?;
        Ok((conn, subscriber))
    }

    /// Passes messages on until session `epoch` fails; the error says how.
    async fn serve(&mut self, epoch: u64, mut subscriber: Subscriber) -> FleetError {
        loop {
            tokio::select! {
                push = subscriber.next() => {
                    if let Err(error) = push.and_then(|push| self.take(push)) {
                        return error;
                    }
                }
                failure = self.failures.recv() => match failure {
                    Some((failed, error)) if failed == epoch => return error,
                    // A late report of an earlier session.
                    Some(_) => {}
                    // Every channel is gone: there is nothing to carry.
                    None => std::future::pending().await,
                },
            }
        }
    }

    /// Passes a message on to its channel; an error reply ends the
    /// session.
    fn take(&self, push: Push) -> Result<(), FleetError> {
        match push {
            Push::Message { channel, payload } => self.dispatch(&channel, payload),
            Push::Refused(line) => return Err(FleetError::refused(&line)),
            Push::Subscribed | Push::Other => {}
        }
        Ok(())
    }

    fn dispatch(&self, channel: &[u8], payload: Payload) {
        let Some(subscription) = self.subscriptions.iter().find(|s| s.channel.as_bytes() == channel) else {
            return;
        };
        let bytes = match &payload {
            Payload::Bytes(bytes) => bytes.len() as u64,
            Payload::TooLong(len) => *len,
        };
        let passed = match payload {
            Payload::Bytes(bytes) if bytes.len() <= subscription.max_bytes => {
                subscription.queue.try_send(bytes).is_ok()
            }
            _ => false,
        };
        if !passed {
            (subscription.refused)(&self.status);
            debug!(
                channel = subscription.channel,
                bytes, "fleet message dropped before its channel read it"
            );
        }
    }
}
