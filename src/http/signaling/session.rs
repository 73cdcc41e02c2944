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
//! Whatever way a socket ends, its session leaves its room and the others
//! are told at once (an evicted one was already), unless the session holds
//! a resume token (v1.1) and the socket ended without the client's close
//! frame (a reset, an error, a missed heartbeat: what a network blip looks
//! like): then [`Switchboard::disconnect_at`] keeps it for the grace
//! period. A close frame (a tab closed sends 1001) is a leave. One more task per hub,
//! [`Hub::run_timers`], sleeps until the switchboard's next deadline (a
//! grace period's end, a credential refresh) and is woken when an earlier
//! one appears; it never ticks.
//!
//! A text frame that is not UTF-8 closes the socket with 1007 (RFC 6455
//! §7.4.1), as the protocol has no way to answer it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use tokio::sync::Notify;
use tokio::time::Instant;
use tracing::debug;

use super::fleet::FleetStatus;
use super::protocol::{ErrorCode, IceServer};
use super::switchboard::{Counters, FleetEvent, Limits, Mint, Outgoing, Switchboard, MAX_FLEET_EVENTS};
use crate::http::ice::IceConfig;
use crate::process::clock;
use crate::proto::source::SourceKey;

/// WebSocket close code for a policy violation (RFC 6455 §7.4.1).
const CLOSE_POLICY: u16 = 1008;
/// WebSocket close code for data that does not match its type, such as a
/// text frame that is not UTF-8 (RFC 6455 §7.4.1).
const CLOSE_INVALID_DATA: u16 = 1007;
/// WebSocket close code for a normal end (RFC 6455 §7.4.1).
const CLOSE_NORMAL: u16 = 1000;

/// Messages written in a row before the session looks at its client again.
const SEND_BUDGET: usize = 16;

/// The timing limits of `[signaling]` the driver enforces.
#[derive(Debug, Clone)]
pub struct SessionLimits {
    pub max_message_size: usize,
    pub ping_interval: Duration,
    pub heartbeat_timeout: Duration,
    /// `signaling.resume_grace`; zero offers no resume.
    pub resume_grace: Duration,
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
    /// Connection id → its wake-up; one per running driver.
    wakers: HashMap<String, Arc<Notify>>,
    /// The deadline the timer task sleeps until.
    armed: Option<std::time::Instant>,
}

/// What all sessions share.
pub struct Hub {
    state: Mutex<HubState>,
    pub limits: SessionLimits,
    ice: std::sync::RwLock<Arc<IceConfig>>,
    /// Wakes [`Hub::run_timers`] when an earlier deadline appears.
    timer: Notify,
    /// Wakes the fleet driver when the switchboard has events for it.
    pub(super) fleet_wake: Notify,
    /// The fleet driver's state, with `[fleet]` configured.
    fleet: Option<Arc<FleetStatus>>,
}

/// The [`Mint`] of live sessions: credentials from the current ICE config,
/// tokens from the process's randomness.
pub(super) struct LiveMint {
    ice: Arc<IceConfig>,
}

impl Mint for LiveMint {
    fn ice_servers(&mut self, host: Option<&str>, peer: &str) -> (Vec<IceServer>, Duration) {
        (self.ice.ice_servers(host, peer, clock::unix_secs()), self.ice.ttl)
    }

    fn resume_token(&mut self) -> Option<String> {
        Some(resume_token())
    }
}

impl Hub {
    /// With `fleet`, rooms span the fleet: the switchboard waits for the
    /// fleet driver, which reports through it.
    pub fn new(limits: Limits, session: SessionLimits, ice: IceConfig, fleet: Option<Arc<FleetStatus>>) -> Hub {
        let board = Switchboard::new(limits).with_resume_grace(session.resume_grace);
        let board = match fleet {
            Some(_) => board.with_fleet(),
            None => board,
        };
        Hub {
            state: Mutex::new(HubState {
                board,
                wakers: HashMap::new(),
                armed: None,
            }),
            limits: session,
            ice: std::sync::RwLock::new(Arc::new(ice)),
            timer: Notify::new(),
            fleet_wake: Notify::new(),
            fleet,
        }
    }

    /// The fleet driver's state, with `[fleet]` configured.
    pub fn fleet_status(&self) -> Option<&FleetStatus> {
        self.fleet.as_deref()
    }

    /// Remote peers known now.
    pub fn remote_count(&self) -> usize {
        self.lock().board.remote_count()
    }

    /// What the switchboard asked of the fleet, at most
    /// [`MAX_FLEET_EVENTS`] at a time.
    pub(super) fn drain_fleet(&self) -> Vec<FleetEvent> {
        let mut state = self.lock();
        std::iter::from_fn(|| state.board.poll_fleet())
            .take(MAX_FLEET_EVENTS)
            .collect()
    }

    /// A [`Mint`] for calls into the switchboard.
    pub(super) fn mint(&self) -> LiveMint {
        LiveMint { ice: self.ice() }
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

    /// Runs `f` on the switchboard, then wakes the connections it named,
    /// and the timer task if the next deadline moved earlier.
    pub(super) fn with<R>(&self, f: impl FnOnce(&mut Switchboard) -> R) -> R {
        let mut state = self.lock();
        let result = f(&mut state.board);
        while let Some(id) = state.board.poll_woken() {
            if let Some(waker) = state.wakers.get(&id) {
                waker.notify_one();
            }
        }
        if state.board.has_fleet_events() {
            self.fleet_wake.notify_one();
        }
        let next = state.board.poll_timeout();
        if next.is_some_and(|next| state.armed.is_none_or(|armed| next < armed)) {
            state.armed = next;
            self.timer.notify_one();
        }
        result
    }

    /// Runs the switchboard's timers (grace periods, credential refreshes)
    /// for as long as the HTTP side runs: sleeps until the next deadline,
    /// or until [`Hub::with`] reports an earlier one.
    pub async fn run_timers(self: Arc<Self>) {
        loop {
            let next = {
                let mut state = self.lock();
                state.armed = state.board.poll_timeout();
                state.armed
            };
            match next {
                Some(at) => {
                    tokio::select! {
                        () = tokio::time::sleep_until(Instant::from_std(at)) => {}
                        () = self.timer.notified() => continue,
                    }
                }
                None => {
                    self.timer.notified().await;
                    continue;
                }
            }
            let mut mint = LiveMint { ice: self.ice() };
            self.with(|board| board.handle_timeout(clock::mono(), &mut mint));
        }
    }

    /// A new connection (and session) with a fresh id, and its wake-up.
    fn connect(&self, source: SourceKey, room_grant: Option<String>, host: Option<String>) -> (String, Arc<Notify>) {
        let waker = Arc::new(Notify::new());
        let mut state = self.lock();
        let id = loop {
            let id = peer_id();
            if state
                .board
                .connect_with_host(&id, source, room_grant.clone(), host.clone(), clock::mono())
            {
                break id;
            }
        };
        state.wakers.insert(id.clone(), waker.clone());
        (id, waker)
    }

    /// The socket of connection `id` ended (`clean`: with the client's
    /// close frame, which is a leave); true if a resume elsewhere had taken
    /// it over.
    fn disconnect(&self, id: &str, clean: bool) -> bool {
        let (counts, replaced) = self.with(|board| {
            let replaced = board.was_replaced(id);
            match clean {
                true => board.disconnect(id),
                false => board.disconnect_at(id, clock::mono()),
            }
            (board.counts(), replaced)
        });
        self.lock().wakers.remove(id);
        let (rooms, peers, sessions) = counts;
        debug!(conn = id, rooms, peers, sessions, "signaling connection ended");
        replaced
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
    let (id, wake) = hub.connect(source, room_grant, host.clone());
    let mut ping = tokio::time::interval_at(Instant::now() + limits.ping_interval, limits.ping_interval);
    let heartbeat = tokio::time::sleep(limits.heartbeat_timeout);
    tokio::pin!(heartbeat);
    let mut evicted = false;
    let mut close: Option<CloseFrame> = None;
    let mut clean_close = false;
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
                let frame = match frame {
                    Some(Ok(frame)) => frame,
                    Some(Err(e)) => {
                        // tungstenite refuses a text frame that is not
                        // UTF-8 with its Utf8 error; axum passes it on
                        // boxed, so it is known by its message.
                        if e.to_string().contains("UTF-8") {
                            debug!(conn = %id, "signaling text frame is not UTF-8; closing with 1007");
                            close = Some(CloseFrame {
                                code: CLOSE_INVALID_DATA,
                                reason: "text frame is not valid UTF-8".into(),
                            });
                        }
                        break;
                    }
                    None => break,
                };
                match frame {
                    Message::Text(text) => {
                        let mut mint = LiveMint { ice: hub.ice() };
                        hub.with(|board| board.handle_text_with(&id, text.as_str(), clock::mono(), &mut mint));
                    }
                    Message::Binary(_) => hub.with(|board| board.handle_binary(&id, clock::mono())),
                    Message::Close(_) => {
                        // A clean close is the client going away on
                        // purpose (a closed tab sends 1001): a leave, with
                        // no grace period. A blip sends no close frame.
                        clean_close = true;
                        break;
                    }
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
    let replaced = hub.disconnect(&id, clean_close);
    if replaced {
        close = Some(CloseFrame {
            code: CLOSE_NORMAL,
            reason: "resumed on another connection".into(),
        });
    } else if evicted {
        close = Some(CloseFrame {
            code: CLOSE_POLICY,
            reason: "too slow: messages were not read".into(),
        });
    }
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

/// A fresh resume token: 128 random bits, base64url without padding.
fn resume_token() -> String {
    use base64::Engine;
    let bytes: [u8; 16] = crate::process::random::random_bytes();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// A fresh peer id: 16 hex digits, unguessable, so that ids learnt in one
/// room say nothing about another.
fn peer_id() -> String {
    let bytes: [u8; 8] = crate::process::random::random_bytes();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
