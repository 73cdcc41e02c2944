//! One WebSocket session of `/ws` (the driver of the [`Switchboard`]), and
//! the hub that all sessions share.
//!
//! Each session owns its socket and runs one loop that reads the client,
//! hands its frames to the switchboard, writes what the switchboard queued
//! for it, pings on a timer and watches the heartbeat deadline. Sessions
//! reach each other only through the [`Hub`]: a mutex around the
//! switchboard and one wake-up per session, held for a few map operations
//! per message (signaling is a few messages a second per peer, so one lock
//! is plenty). Lock order: the hub's state, then nothing; the ICE config is
//! read before the state is locked.
//!
//! Bounds: the switchboard's (outbox bytes, message size and rate). Every
//! write to the socket is bounded by the heartbeat timeout *and* raced
//! against the session's wake-up, so a session evicted while its client
//! does not read ends at once instead of after a blocked write. Writes are
//! done [`SEND_BUDGET`] at a time between reads, so a busy outbox does not
//! keep the client's own frames or the heartbeat from being looked at.
//! Whatever way a session ends, [`Switchboard::disconnect`] takes it out of
//! its room and tells the others at once (an evicted one was already).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use tokio::sync::Notify;
use tokio::time::Instant;
use tracing::debug;

use super::protocol::ErrorCode;
use super::switchboard::{Counters, Limits, Outgoing, Switchboard};
use crate::http::ice::IceConfig;
use crate::process::clock;
use crate::proto::source::SourceKey;

/// WebSocket close code for a policy violation (RFC 6455 §7.4.1).
const CLOSE_POLICY: u16 = 1008;

/// Messages written in a row before the session looks at its client again.
const SEND_BUDGET: usize = 16;

/// The timing limits of `[signaling]` the driver enforces.
#[derive(Debug, Clone)]
pub struct SessionLimits {
    pub max_message_size: usize,
    pub ping_interval: Duration,
    pub heartbeat_timeout: Duration,
}

/// What the token check before the upgrade decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Authorization {
    /// No valid token where one is required: one `unauthorized`, then close.
    Refused,
    /// Let in; with a room, only that room may be joined.
    Granted { room: Option<String> },
}

struct HubState {
    board: Switchboard,
    /// Session id → its wake-up; mirrors the sessions of `board` that have
    /// a running driver.
    wakers: HashMap<String, Arc<Notify>>,
}

/// What all sessions share.
pub struct Hub {
    state: Mutex<HubState>,
    pub limits: SessionLimits,
    ice: std::sync::RwLock<Arc<IceConfig>>,
}

impl Hub {
    pub fn new(limits: Limits, session: SessionLimits, ice: IceConfig) -> Hub {
        Hub {
            state: Mutex::new(HubState {
                board: Switchboard::new(limits),
                wakers: HashMap::new(),
            }),
            limits: session,
            ice: std::sync::RwLock::new(Arc::new(ice)),
        }
    }

    /// What `iceServers` are made of now.
    pub fn ice(&self) -> Arc<IceConfig> {
        self.ice.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Replaces it (config reload: a rotated secret mints from now on).
    pub fn set_ice(&self, ice: IceConfig) {
        *self.ice.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(ice);
    }

    /// (rooms, peers in rooms, open sessions) right now.
    pub fn counts(&self) -> (usize, usize, usize) {
        self.lock().board.counts()
    }

    /// The switchboard's counters now.
    pub fn counters(&self) -> Counters {
        self.lock().board.counters().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HubState> {
        // A panic while holding the lock cannot leave the maps half-changed
        // in a way that matters more than losing the server would.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `f` on the switchboard, then wakes the sessions it named.
    fn with<R>(&self, f: impl FnOnce(&mut Switchboard) -> R) -> R {
        let mut state = self.lock();
        let result = f(&mut state.board);
        while let Some(id) = state.board.poll_woken() {
            if let Some(waker) = state.wakers.get(&id) {
                waker.notify_one();
            }
        }
        result
    }

    /// A new session with a fresh id, and its wake-up.
    fn connect(&self, source: SourceKey, room_grant: Option<String>) -> (String, Arc<Notify>) {
        let waker = Arc::new(Notify::new());
        let mut state = self.lock();
        let id = loop {
            let id = peer_id();
            if state.board.connect(&id, source, room_grant.clone(), clock::mono()) {
                break id;
            }
        };
        state.wakers.insert(id.clone(), waker.clone());
        (id, waker)
    }

    fn disconnect(&self, id: &str) {
        let counts = self.with(|board| {
            board.disconnect(id);
            board.counts()
        });
        self.lock().wakers.remove(id);
        let (rooms, peers, sessions) = counts;
        debug!(peer = id, rooms, peers, sessions, "signaling session ended");
    }
}

/// Runs one session until the client leaves or is dropped. `host` is the
/// request's Host header (for the ICE server URLs), `source` the address
/// it counts against.
pub async fn run(
    mut socket: WebSocket,
    hub: Arc<Hub>,
    host: Option<String>,
    source: SourceKey,
    authorization: Authorization,
) {
    let limits = hub.limits.clone();
    let write_limit = limits.heartbeat_timeout;
    let room_grant = match authorization {
        Authorization::Granted { room } => room,
        Authorization::Refused => {
            let text = hub.with(|board| board.error_text(ErrorCode::Unauthorized, "a valid ?token= is required"));
            if send_bounded(&mut socket, Message::Text(text.into()), write_limit)
                .await
                .is_ok()
            {
                let close = CloseFrame {
                    code: CLOSE_POLICY,
                    reason: "unauthorized".into(),
                };
                let _ = send_bounded(&mut socket, Message::Close(Some(close)), write_limit).await;
            }
            return;
        }
    };
    let (id, wake) = hub.connect(source, room_grant);
    let mut ping = tokio::time::interval_at(Instant::now() + limits.ping_interval, limits.ping_interval);
    let heartbeat = tokio::time::sleep(limits.heartbeat_timeout);
    tokio::pin!(heartbeat);
    let mut evicted = false;
    'session: loop {
        // Write what is queued, a budget at a time.
        let mut more = true;
        for _ in 0..SEND_BUDGET {
            match hub.with(|board| board.poll_outgoing(&id)) {
                Outgoing::Gone => {
                    evicted = true;
                    break 'session;
                }
                Outgoing::Idle => {
                    more = false;
                    break;
                }
                Outgoing::Message(text) => {
                    let message = Message::Text(text.as_ref().into());
                    if let Err(ended) = send(&mut socket, message, write_limit, &hub, &id, &wake).await {
                        evicted = ended == Ended::Evicted;
                        break 'session;
                    }
                }
            }
        }
        tokio::select! {
            frame = socket.recv() => {
                heartbeat.as_mut().reset(Instant::now() + limits.heartbeat_timeout);
                let Some(Ok(frame)) = frame else { break };
                match frame {
                    Message::Text(text) => {
                        let ice = hub.ice();
                        let host = host.as_deref();
                        hub.with(|board| {
                            board.handle_text(&id, text.as_str(), clock::mono(), |peer| {
                                ice.ice_servers(host, peer, clock::unix_secs())
                            })
                        });
                    }
                    Message::Binary(_) => hub.with(|board| board.handle_binary(&id, clock::mono())),
                    Message::Close(_) => break,
                    Message::Ping(_) | Message::Pong(_) => {}
                }
            }
            () = wake.notified() => {}
            () = std::future::ready(()), if more => {}
            _ = ping.tick() => {
                if let Err(ended) = send(&mut socket, Message::Ping(Default::default()), write_limit, &hub, &id, &wake).await {
                    evicted = ended == Ended::Evicted;
                    break;
                }
            }
            () = &mut heartbeat => {
                debug!(peer = %id, "signaling heartbeat missed; dropping the session");
                break;
            }
        }
    }
    hub.disconnect(&id);
    let close = evicted.then(|| CloseFrame {
        code: CLOSE_POLICY,
        reason: "too slow: messages were not read".into(),
    });
    let _ = tokio::time::timeout(Duration::from_secs(1), socket.send(Message::Close(close))).await;
}

/// Why a write did not happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ended {
    /// The socket failed or the write took longer than its limit.
    Socket,
    /// The session was evicted while the write was pending.
    Evicted,
}

/// Writes `message` within `limit`, giving up at once if the session is
/// evicted meanwhile (a client that does not read can hold a write
/// forever; its eviction must not wait for that).
async fn send(
    socket: &mut WebSocket,
    message: Message,
    limit: Duration,
    hub: &Hub,
    id: &str,
    wake: &Notify,
) -> Result<(), Ended> {
    let write = send_bounded(socket, message, limit);
    tokio::pin!(write);
    loop {
        tokio::select! {
            written = &mut write => return written.map_err(|()| Ended::Socket),
            // Any wake-up may be the eviction; others are looked at by the
            // caller's next poll of the outbox.
            () = wake.notified() => {
                if hub.with(|board| board.is_gone(id)) {
                    return Err(Ended::Evicted);
                }
            }
        }
    }
}

async fn send_bounded(socket: &mut WebSocket, message: Message, limit: Duration) -> Result<(), ()> {
    match tokio::time::timeout(limit, socket.send(message)).await {
        Ok(Ok(())) => Ok(()),
        _ => Err(()),
    }
}

/// A fresh peer id: 16 hex digits, unguessable, so that ids learnt in one
/// room say nothing about another.
fn peer_id() -> String {
    let bytes: [u8; 8] = crate::process::random::random_bytes();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
