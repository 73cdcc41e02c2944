//! One WebSocket session of `/ws`, and the hub that connects sessions.
//!
//! Each session owns its socket and runs one loop that reads the client,
//! writes what other sessions queued for it, pings on a timer and watches
//! the heartbeat deadline. Sessions reach each other only through the
//! [`Hub`]: a mutex around the [`Rooms`] and one bounded outbox per
//! session, held for a few map operations per message (signaling is a few
//! messages a second per peer, so one lock is plenty).
//!
//! Bounds: every outbox holds at most [`OUTBOX`] messages; a session whose
//! outbox is full is too slow to keep up and is dropped, which its room
//! sees as a leave. Every write to the socket is bounded by the heartbeat
//! timeout. Whatever way a session ends (leave, close, reset, missed
//! heartbeat, eviction), [`Hub::disconnect`] takes it out of its room and
//! tells the others at once.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use tokio::sync::{mpsc, Notify};
use tokio::time::Instant;
use tracing::debug;

use super::protocol::{ClientMessage, ErrorCode, PeerInfo, ServerMessage};
use super::rooms::{JoinRefused, Rooms};
use crate::http::ice::IceConfig;
use crate::proto::token_bucket::TokenBucket;

/// Messages queued for one session before it counts as too slow.
pub const OUTBOX: usize = 256;

/// WebSocket close code for a policy violation (RFC 6455 §7.4.1).
const CLOSE_POLICY: u16 = 1008;

/// The limits of `[signaling]` a session enforces.
#[derive(Debug, Clone)]
pub struct SessionLimits {
    pub max_message_size: usize,
    pub messages_per_second: u32,
    pub ping_interval: Duration,
    pub heartbeat_timeout: Duration,
}

struct Outbox {
    queue: mpsc::Sender<Arc<str>>,
    evict: Arc<Notify>,
}

struct HubState {
    rooms: Rooms,
    outboxes: HashMap<String, Outbox>,
}

/// Client message kinds, as metric label values; the last is for
/// messages that did not parse.
pub const MESSAGE_KINDS: [&str; 5] = ["join", "signal", "leave", "ping", "invalid"];

/// What all sessions share.
pub struct Hub {
    state: Mutex<HubState>,
    pub limits: SessionLimits,
    ice: std::sync::RwLock<Arc<IceConfig>>,
    /// Client messages by [`MESSAGE_KINDS`].
    pub messages: [AtomicU64; MESSAGE_KINDS.len()],
    /// Errors sent, by [`ErrorCode::ALL`] index.
    pub errors: [AtomicU64; ErrorCode::ALL.len()],
}

impl Hub {
    pub fn new(room_size: usize, max_rooms: usize, limits: SessionLimits, ice: IceConfig) -> Hub {
        Hub {
            state: Mutex::new(HubState {
                rooms: Rooms::new(room_size, max_rooms),
                outboxes: HashMap::new(),
            }),
            limits,
            ice: std::sync::RwLock::new(Arc::new(ice)),
            messages: Default::default(),
            errors: Default::default(),
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
        let state = self.lock();
        (state.rooms.room_count(), state.rooms.peer_count(), state.outboxes.len())
    }

    /// An error message for a client, counted.
    fn error(&self, code: ErrorCode, message: &str) -> String {
        if let Some(counter) = self.errors.get(code as usize) {
            counter.fetch_add(1, Ordering::Relaxed);
        }
        ServerMessage::Error { code, message }.to_json()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HubState> {
        // A panic while holding the lock cannot leave the maps half-changed
        // in a way that matters more than losing the server would.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn connect(&self, id: &str, outbox: Outbox) {
        self.lock().outboxes.insert(id.to_owned(), outbox);
    }

    /// Takes `id` out of its room (telling the others) and forgets it.
    fn disconnect(&self, id: &str) {
        let mut state = self.lock();
        state.outboxes.remove(id);
        leave(&mut state, id);
        debug!(
            peer = id,
            rooms = state.rooms.room_count(),
            peers = state.rooms.peer_count(),
            sessions = state.outboxes.len(),
            "signaling session ended"
        );
    }
}

/// Takes `id` out of its room and tells the others; false if it was in none.
fn leave(state: &mut HubState, id: &str) -> bool {
    if state.rooms.room_of(id).is_none() {
        return false;
    }
    let left: Arc<str> = ServerMessage::PeerLeft { id }.to_json().into();
    for other in state.rooms.leave(id) {
        deliver(state, &other, left.clone());
    }
    true
}

/// Queues `message` for `to`; a full outbox evicts its session.
fn deliver(state: &HubState, to: &str, message: Arc<str>) {
    if let Some(outbox) = state.outboxes.get(to) {
        if let Err(mpsc::error::TrySendError::Full(_)) = outbox.queue.try_send(message) {
            debug!(peer = to, "signaling outbox full; dropping the session");
            outbox.evict.notify_one();
        }
    }
}

/// What the loop should do after handling a client frame.
enum Next {
    Continue,
    Close,
}

/// Runs one session until the client leaves or is dropped.
/// `host` is the request's Host header (for the ICE server URLs).
pub async fn run(mut socket: WebSocket, hub: Arc<Hub>, host: Option<String>, authorized: bool) {
    if !authorized {
        let text = hub.error(ErrorCode::Unauthorized, "a valid ?token= is required");
        let limit = hub.limits.heartbeat_timeout;
        if send(&mut socket, Message::Text(text.into()), limit).await.is_ok() {
            let close = CloseFrame {
                code: CLOSE_POLICY,
                reason: "unauthorized".into(),
            };
            let _ = send(&mut socket, Message::Close(Some(close)), limit).await;
        }
        return;
    }
    let id = peer_id();
    let (queue, mut inbox) = mpsc::channel(OUTBOX);
    let evict = Arc::new(Notify::new());
    hub.connect(
        &id,
        Outbox {
            queue,
            evict: evict.clone(),
        },
    );
    let mut session = Session {
        id: id.clone(),
        hub: hub.clone(),
        host,
        bucket: TokenBucket::new(
            u64::from(hub.limits.messages_per_second),
            2 * u64::from(hub.limits.messages_per_second),
            Instant::now().into_std(),
        ),
    };
    let limits = hub.limits.clone();
    let write_limit = limits.heartbeat_timeout;
    let mut ping = tokio::time::interval_at(Instant::now() + limits.ping_interval, limits.ping_interval);
    let heartbeat = tokio::time::sleep(limits.heartbeat_timeout);
    tokio::pin!(heartbeat);
    loop {
        let outgoing = tokio::select! {
            frame = socket.recv() => {
                heartbeat.as_mut().reset(Instant::now() + limits.heartbeat_timeout);
                let Some(Ok(frame)) = frame else { break };
                let (reply, next) = session.on_frame(frame);
                if let Some(reply) = reply {
                    if send(&mut socket, Message::Text(reply.into()), write_limit).await.is_err() {
                        break;
                    }
                }
                match next {
                    Next::Continue => continue,
                    Next::Close => break,
                }
            }
            Some(queued) = inbox.recv() => Message::Text(queued.as_ref().into()),
            _ = ping.tick() => Message::Ping(Default::default()),
            () = &mut heartbeat => {
                debug!(peer = %id, "signaling heartbeat missed; dropping the session");
                break;
            }
            () = evict.notified() => break,
        };
        if send(&mut socket, outgoing, write_limit).await.is_err() {
            break;
        }
    }
    hub.disconnect(&id);
    let _ = tokio::time::timeout(Duration::from_secs(1), socket.send(Message::Close(None))).await;
}

async fn send(socket: &mut WebSocket, message: Message, limit: Duration) -> Result<(), ()> {
    match tokio::time::timeout(limit, socket.send(message)).await {
        Ok(Ok(())) => Ok(()),
        _ => Err(()),
    }
}

struct Session {
    id: String,
    hub: Arc<Hub>,
    host: Option<String>,
    bucket: TokenBucket,
}

impl Session {
    /// Handles one client frame: the answer for this client, if any, and
    /// whether to go on.
    fn on_frame(&mut self, frame: Message) -> (Option<String>, Next) {
        let text = match frame {
            Message::Text(text) => text,
            Message::Binary(_) => {
                return (
                    Some(
                        self.hub
                            .error(ErrorCode::BadMessage, "binary frames are not part of the protocol"),
                    ),
                    Next::Continue,
                )
            }
            Message::Close(_) => return (None, Next::Close),
            Message::Ping(_) | Message::Pong(_) => return (None, Next::Continue),
        };
        if !self.bucket.try_take(1, Instant::now().into_std()) {
            return (
                Some(self.hub.error(ErrorCode::RateLimited, "too many messages; slow down")),
                Next::Continue,
            );
        }
        let max = self.hub.limits.max_message_size;
        if text.len() > max {
            let message = format!("message of {} bytes is over the limit of {max}", text.len());
            return (Some(self.hub.error(ErrorCode::TooLarge, &message)), Next::Continue);
        }
        let parsed = ClientMessage::parse(text.as_str());
        let kind = match &parsed {
            Ok(ClientMessage::Join { .. }) => 0,
            Ok(ClientMessage::Signal { .. }) => 1,
            Ok(ClientMessage::Leave) => 2,
            Ok(ClientMessage::Ping) => 3,
            Err(_) => 4,
        };
        self.hub.messages[kind].fetch_add(1, Ordering::Relaxed);
        let reply = match parsed {
            Err(reason) => Some(self.hub.error(ErrorCode::BadMessage, &reason)),
            Ok(ClientMessage::Ping) => Some(ServerMessage::Pong.to_json()),
            Ok(ClientMessage::Join { room, name }) => Some(self.join(&room, name)),
            Ok(ClientMessage::Signal { to, data }) => self.signal(&to, &data),
            Ok(ClientMessage::Leave) => match leave(&mut self.hub.lock(), &self.id) {
                true => None,
                false => Some(self.hub.error(ErrorCode::NotInRoom, "not in a room")),
            },
        };
        (reply, Next::Continue)
    }

    fn join(&self, room: &str, name: Option<String>) -> String {
        let me = PeerInfo {
            id: self.id.clone(),
            name,
        };
        let peers = {
            let mut state = self.hub.lock();
            let peers = match state.rooms.join(me.clone(), room) {
                Ok(peers) => peers,
                Err(JoinRefused::RoomFull) => return self.hub.error(ErrorCode::RoomFull, "the room is full"),
                Err(JoinRefused::TooManyRooms) => {
                    return self.hub.error(
                        ErrorCode::RoomFull,
                        "no room can be opened: the server is at its room limit",
                    )
                }
                Err(JoinRefused::AlreadyInRoom) => {
                    return self
                        .hub
                        .error(ErrorCode::BadMessage, "already in a room; send leave first")
                }
            };
            let joined: Arc<str> = ServerMessage::PeerJoined {
                id: &me.id,
                name: me.name.as_deref(),
            }
            .to_json()
            .into();
            for peer in &peers {
                deliver(&state, &peer.id, joined.clone());
            }
            peers
        };
        let ice_servers =
            self.hub
                .ice()
                .ice_servers(self.host.as_deref(), &self.id, crate::process::clock::unix_secs());
        ServerMessage::Joined {
            room,
            id: &self.id,
            peers: &peers,
            ice_servers: &ice_servers,
        }
        .to_json()
    }

    fn signal(&self, to: &str, data: &serde_json::value::RawValue) -> Option<String> {
        let state = self.hub.lock();
        if state.rooms.room_of(&self.id).is_none() {
            return Some(self.hub.error(ErrorCode::NotInRoom, "join a room before signaling"));
        }
        if to == self.id || !state.rooms.same_room(&self.id, to) {
            return Some(self.hub.error(ErrorCode::UnknownPeer, "no such peer in this room"));
        }
        let message = ServerMessage::Signal { from: &self.id, data }.to_json();
        deliver(&state, to, message.into());
        None
    }
}

/// A fresh peer id: 16 hex digits, unguessable, so that ids learnt in one
/// room say nothing about another.
fn peer_id() -> String {
    let bytes: [u8; 8] = crate::process::random::random_bytes();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
