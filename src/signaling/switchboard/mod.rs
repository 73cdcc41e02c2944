//! The switchboard: the whole state machine of `/ws` signaling (docs/design.md,
//! "Signaling protocol v1", and its v1.1 additions in `docs/signaling.md`),
//! sans-IO. It holds the sessions, their outboxes and the [`Rooms`]; the
//! tokio driver (`session`) feeds it client frames with the time
//! (`handle_*`) and writes out what it queued (`poll_outgoing`), waking the
//! connections `poll_woken` names, and calls [`Switchboard::handle_timeout`]
//! when [`Switchboard::poll_timeout`] says. The clock and the randomness
//! (resume tokens, credentials) come in from outside: times as arguments,
//! tokens and `iceServers` from a [`Mint`].
//!
//! A *connection* is one WebSocket (the driver's id); a *session* is a peer
//! (its id is the peer id the room knows). A connection starts with a
//! session of its own id; a v1.1 `resume` moves it to the session its token
//! names, so that the peer keeps its id, its room and its outbox across
//! sockets.
//!
//! Every message to a client, the answers to its own requests included,
//! goes through that session's outbox in order, so a client sees `joined`
//! before anything from its new room, and what its old room said before
//! it left comes before the `joined` of the next one.
//!
//! Resume (v1.1) is in the child module `resume`, a second `impl
//! Switchboard` over the same fields: a session's resume state (token,
//! sequence numbers, history), the `resume` and `ack` requests, the grace
//! periods of detached sessions and the credential refreshes, with their
//! bounds and invariants.
//!
//! Bounds:
//! - an outbox and its history together hold at most `max_outbox_bytes`,
//!   each message costing its length plus [`MESSAGE_OVERHEAD`]; the
//!   accounting, and why the history gives way first, is in `outbox`;
//! - a message that would overflow an outbox *evicts* its session at once:
//!   the outbox is emptied (the memory is freed now, not when the driver
//!   gets round to it), the session leaves its room, the room is told
//!   `peer-left` in the same call, and the session only answers
//!   [`Outgoing::Gone`] from then on. The driver is woken to close the
//!   socket, even in the middle of a write; a detached session is removed;
//! - a client's frames pass a token bucket of `messages_per_second` (burst
//!   twice that) and `max_message_size` before they are parsed;
//! - detached sessions and timers: see `resume`.
//!
//! Rooms across a fleet of instances (`[fleet]`, Redis) are in the child
//! module `fleet`, a third `impl Switchboard`: remote members, pending
//! joins and what the fleet driver must publish, with their bounds.
//!
//! Invariants ([`Switchboard::check`], which walks them all): those of
//! [`Rooms`], of every outbox and history (`outbox`) and of `resume`; an
//! outbox and its history together hold at most `max_outbox_bytes`; an
//! evicted session is in no room and holds nothing; every peer in a room is
//! a session; `links` and each session's `conn` mirror each other.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::debug;

use super::protocol::{ClientMessage, ErrorCode, IceServer, ServerMessage};
use crate::proto::source::SourceKey;
use crate::proto::token_bucket::TokenBucket;
use fleet::Fleet;
use outbox::{cost, Outbox, Queued};
use resume::Resume;
use rooms::Rooms;

mod check;
mod fleet;
pub mod fleet_seal;
mod fleet_view;
pub mod fleet_wire;
mod membership;
mod outbox;
mod resume;
mod rooms;

pub use fleet::{FleetEvent, FleetJoin, Listed, MAX_FLEET_EVENTS};
pub use fleet_view::{RemoteMember, MAX_REMOTE_PER_ROOM};

pub use outbox::MESSAGE_OVERHEAD;

/// Client message kinds, as metric label values; the last is for
/// messages that did not parse.
pub const MESSAGE_KINDS: [&str; 7] = ["join", "signal", "leave", "ping", "resume", "ack", "invalid"];

/// The limits of `[signaling]` the switchboard enforces.
#[derive(Debug, Clone)]
pub struct Limits {
    pub room_size: usize,
    pub max_rooms: usize,
    pub max_rooms_per_source: usize,
    pub max_message_size: usize,
    pub messages_per_second: u32,
    pub max_outbox_bytes: usize,
}

/// What the switchboard needs from outside that is not time: fresh
/// credentials and unguessable tokens.
pub trait Mint {
    /// The `iceServers` for peer `peer` whose client reached us as `host`
    /// (its Host header), and how long their credential lasts.
    fn ice_servers(&mut self, host: Option<&str>, peer: &str) -> (Vec<IceServer>, Duration);
    /// A fresh resume token (unguessable: from the process's randomness),
    /// or `None` if this caller cannot make one (then no resume is offered).
    fn resume_token(&mut self) -> Option<String>;
}

/// A [`Mint`] from a v1 closure: `iceServers` only, no tokens, no refresh.
struct IceOnly<F>(Option<F>);

impl<F: FnOnce(&str) -> Vec<IceServer>> Mint for IceOnly<F> {
    fn ice_servers(&mut self, _host: Option<&str>, peer: &str) -> (Vec<IceServer>, Duration) {
        (self.0.take().map(|f| f(peer)).unwrap_or_default(), Duration::ZERO)
    }
    fn resume_token(&mut self) -> Option<String> {
        None
    }
}

/// What [`Switchboard::poll_outgoing`] has for a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outgoing {
    /// The next message to write.
    Message(Arc<str>),
    /// Nothing queued.
    Idle,
    /// Evicted, taken over by a resume elsewhere ([`Switchboard::was_replaced`]),
    /// or never connected: close the socket.
    Gone,
}

/// Counters for `/metrics`.
#[derive(Debug, Clone, Default)]
pub struct Counters {
    /// Client messages by [`MESSAGE_KINDS`].
    pub messages: [u64; MESSAGE_KINDS.len()],
    /// Errors sent, by [`ErrorCode::ALL`] index.
    pub errors: [u64; ErrorCode::ALL.len()],
    /// Sessions evicted for a full outbox.
    pub evictions: u64,
    /// Successful resumes.
    pub resumes: u64,
    /// Detached sessions whose grace period ran out.
    pub grace_expiries: u64,
    /// Signals to or from other instances dropped: the queue to the fleet
    /// driver was full, or the fleet named a peer not in that room here.
    pub fleet_dropped: u64,
}

#[derive(Debug)]
struct Session {
    source: SourceKey,
    /// The only room this session may join, when its token names one.
    room_grant: Option<String>,
    /// The Host header its client used (for the ICE URLs of a refresh).
    host: Option<String>,
    /// The Origin header its client's WebSocket came with (`None`: none):
    /// a resume must come with the same.
    origin: Option<String>,
    /// The connection that drives it; `None` while detached.
    conn: Option<String>,
    outbox: Outbox,
    bucket: TokenBucket,
    evicted: bool,
    resume: Option<Resume>,
    /// When detached: when the grace period ends (mirrored in `graces`).
    grace_until: Option<Instant>,
    /// When fresh `iceServers` are due (mirrored in `refreshes`).
    refresh_at: Option<Instant>,
}

/// What a client's WebSocket handshake said, as its driver read it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Handshake {
    /// The Host header.
    pub host: Option<String>,
    /// The Origin header (`None`: the request had none).
    pub origin: Option<String>,
}

/// Sessions, rooms and outboxes.
#[derive(Debug)]
pub struct Switchboard {
    limits: Limits,
    /// How long a detached session is kept; zero turns resume off.
    resume_grace: Duration,
    rooms: Rooms,
    /// Peer id → session.
    sessions: HashMap<String, Session>,
    /// Connection → the peer id of its session; mirrors `Session::conn`.
    links: HashMap<String, String>,
    /// Connections taken over by a resume, until their driver disconnects.
    replaced: HashSet<String>,
    /// Resume token → peer id; mirrors `Resume::token`.
    tokens: HashMap<String, String>,
    /// (end of grace, peer id) of every detached session.
    graces: BTreeSet<(Instant, String)>,
    /// (refresh due, peer id) of every session with `iceRefresh`.
    refreshes: BTreeSet<(Instant, String)>,
    /// Connections to wake: their outbox went from empty to not, they were
    /// evicted or replaced. May name one twice.
    woken: Vec<String>,
    /// Sessions that were detached and are no longer (resumed, their grace
    /// ran out, evicted or ended): the driver gives back the connection
    /// place each kept (`resume`). Each names a session once per
    /// detachment.
    released: Vec<String>,
    counters: Counters,
    /// Rooms across a fleet, when configured (`fleet`).
    fleet: Option<Fleet>,
}

impl Switchboard {
    pub fn new(limits: Limits) -> Switchboard {
        Switchboard {
            rooms: Rooms::new(limits.room_size, limits.max_rooms, limits.max_rooms_per_source),
            limits,
            resume_grace: Duration::ZERO,
            sessions: HashMap::new(),
            links: HashMap::new(),
            replaced: HashSet::new(),
            tokens: HashMap::new(),
            graces: BTreeSet::new(),
            refreshes: BTreeSet::new(),
            woken: Vec::new(),
            released: Vec::new(),
            counters: Counters::default(),
            fleet: None,
        }
    }

    /// Offers resume (v1.1) with this grace period; zero (the default)
    /// offers none.
    pub fn with_resume_grace(mut self, grace: Duration) -> Switchboard {
        self.resume_grace = grace;
        self
    }

    /// Opens connection `id`, with a session of the same id, for a client
    /// connected from `source`; with `room_grant` it may join only that
    /// room. False (and nothing done) if `id` is taken.
    pub fn connect(&mut self, id: &str, source: SourceKey, room_grant: Option<String>, now: Instant) -> bool {
        self.connect_with(id, source, room_grant, Handshake::default(), now)
    }

    /// [`Self::connect`], remembering what the client's WebSocket
    /// handshake said: its Host (for the ICE URLs) and its Origin (which a
    /// resume of this session must repeat).
    pub fn connect_with(
        &mut self,
        id: &str,
        source: SourceKey,
        room_grant: Option<String>,
        handshake: Handshake,
        now: Instant,
    ) -> bool {
        let Handshake { host, origin } = handshake;
        if self.sessions.contains_key(id) || self.links.contains_key(id) || self.replaced.contains(id) {
            return false;
        }
        let rate = u64::from(self.limits.messages_per_second);
        self.sessions.insert(
            id.to_owned(),
            Session {
                source,
                room_grant,
                host,
                origin,
                conn: Some(id.to_owned()),
                outbox: Outbox::default(),
                bucket: TokenBucket::new(rate, rate.saturating_mul(2), now),
                evicted: false,
                resume: None,
                grace_until: None,
                refresh_at: None,
            },
        );
        self.links.insert(id.to_owned(), id.to_owned());
        true
    }

    /// Ends connection `id` at once, however it ended: its session leaves
    /// its room, the others are told, and it is forgotten (no grace).
    pub fn disconnect(&mut self, id: &str) {
        self.replaced.remove(id);
        if let Some(peer) = self.links.remove(id) {
            self.end_session(&peer);
        }
    }

    /// Connection `id`'s socket ended at `now` without a `leave`: a session
    /// that holds a resume token and is in a room is kept, detached, for
    /// the grace period (true: the driver keeps the connection's place
    /// until [`Self::poll_released`] names the session); any other ends as
    /// with [`Self::disconnect`] (false).
    pub fn disconnect_at(&mut self, id: &str, now: Instant) -> bool {
        self.replaced.remove(id);
        let Some(peer) = self.links.remove(id) else {
            return false;
        };
        let in_room = self.rooms.room_of(&peer).is_some();
        let until = now + self.resume_grace;
        match self.sessions.get_mut(&peer) {
            Some(session) if in_room && !session.evicted && session.resume.is_some() => {
                session.conn = None;
                session.grace_until = Some(until);
                self.graces.insert((until, peer.clone()));
                // Detached again before its driver heard of the last
                // release: the place kept now replaces the one kept then.
                self.released.retain(|released| *released != peer);
                debug!(peer = %peer, "signaling socket ended; session kept for resume");
                true
            }
            _ => {
                self.end_session(&peer);
                false
            }
        }
    }

    /// A text frame from connection `id`'s client, at `now`. `ice` makes
    /// the `iceServers` of a successful join for the given peer id (called
    /// at most once). Protocol v1 only: a join that asks for resume gets
    /// none (see [`Self::handle_text_with`]).
    pub fn handle_text(&mut self, id: &str, text: &str, now: Instant, ice: impl FnOnce(&str) -> Vec<IceServer>) {
        self.handle_text_with(id, text, now, &mut IceOnly(Some(ice)));
    }

    /// A text frame from connection `id`'s client, at `now`, with `mint`
    /// for credentials and resume tokens.
    pub fn handle_text_with(&mut self, id: &str, text: &str, now: Instant, mint: &mut impl Mint) {
        let Some(peer) = self.links.get(id).cloned() else {
            return;
        };
        if let Some(resume) = self.sessions.get_mut(&peer).and_then(|s| s.resume.as_mut()) {
            resume.received += 1;
        }
        if !self.admit_frame(&peer, now) {
            return;
        }
        let max = self.limits.max_message_size;
        if text.len() > max {
            let message = format!("message of {} bytes is over the limit of {max}", text.len());
            return self.reply_error(&peer, ErrorCode::TooLarge, &message);
        }
        let parsed = ClientMessage::parse(text);
        let kind = match &parsed {
            Ok(ClientMessage::Join { .. }) => 0,
            Ok(ClientMessage::Signal { .. }) => 1,
            Ok(ClientMessage::Leave) => 2,
            Ok(ClientMessage::Ping) => 3,
            Ok(ClientMessage::Resume { .. }) => 4,
            Ok(ClientMessage::Ack { .. }) => 5,
            Err(_) => 6,
        };
        self.counters.messages[kind] += 1;
        match parsed {
            Err(reason) => self.reply_error(&peer, ErrorCode::BadMessage, &reason),
            Ok(ClientMessage::Ping) => self.deliver(&peer, ServerMessage::Pong.to_json().into()),
            Ok(ClientMessage::Join {
                room,
                name,
                resume,
                ice_refresh,
            }) => self.join(&peer, &room, name, resume, ice_refresh, now, mint),
            Ok(ClientMessage::Signal { to, data }) => self.signal(&peer, &to, &data),
            Ok(ClientMessage::Leave) => {
                if !self.leave(&peer) {
                    self.reply_error(&peer, ErrorCode::NotInRoom, "not in a room");
                }
            }
            Ok(ClientMessage::Resume { token, last }) => self.resume(id, &peer, &token, last, mint),
            Ok(ClientMessage::Ack { seq }) => self.ack(&peer, seq),
        }
    }

    /// A binary frame, which the protocol has no use for.
    pub fn handle_binary(&mut self, id: &str, now: Instant) {
        let Some(peer) = self.links.get(id).cloned() else {
            return;
        };
        if let Some(resume) = self.sessions.get_mut(&peer).and_then(|s| s.resume.as_mut()) {
            resume.received += 1;
        }
        if self.admit_frame(&peer, now) {
            self.reply_error(
                &peer,
                ErrorCode::BadMessage,
                "binary frames are not part of the protocol",
            );
        }
    }

    /// The next message to write to connection `id`'s client.
    pub fn poll_outgoing(&mut self, id: &str) -> Outgoing {
        let Some(peer) = self.links.get(id) else {
            return Outgoing::Gone;
        };
        let Some(session) = self.sessions.get_mut(peer).filter(|s| !s.evicted) else {
            return Outgoing::Gone;
        };
        let Some(message) = session.outbox.pop_front() else {
            return Outgoing::Idle;
        };
        let text = message.text.clone();
        if let Some(resume) = session.resume.as_mut().filter(|_| message.seq > 0) {
            resume.history.push(message);
        }
        Outgoing::Message(text)
    }

    /// A connection the driver must wake; drain after every call.
    #[must_use]
    pub fn poll_woken(&mut self) -> Option<String> {
        self.woken.pop()
    }

    /// A session that was detached ([`Self::disconnect_at`] said true) and
    /// is no longer: resumed, its grace ran out, evicted or ended. Its
    /// driver gives back the connection place it kept; drain after every
    /// call.
    #[must_use]
    pub fn poll_released(&mut self) -> Option<String> {
        self.released.pop()
    }

    /// True while peer `id`'s session is detached, kept for resume.
    pub fn is_detached(&self, id: &str) -> bool {
        self.sessions.get(id).is_some_and(|s| s.grace_until.is_some())
    }

    /// True once connection `id`'s session was evicted or taken over, or
    /// if it does not exist.
    pub fn is_gone(&self, id: &str) -> bool {
        self.links
            .get(id)
            .and_then(|peer| self.sessions.get(peer))
            .is_none_or(|s| s.evicted)
    }

    /// True if connection `id` was taken over by a resume on another one.
    pub fn was_replaced(&self, id: &str) -> bool {
        self.replaced.contains(id)
    }

    /// An error message for a client that has no session (a refused token),
    /// counted as sent.
    pub fn error_text(&mut self, code: ErrorCode, message: &str) -> String {
        self.count_error(code);
        ServerMessage::Error { code, message }.to_json()
    }

    /// The peer id connection `id` speaks for now.
    pub fn peer_of(&self, id: &str) -> Option<&str> {
        self.links.get(id).map(String::as_str)
    }

    /// The room peer `id` is in.
    pub fn room_of(&self, id: &str) -> Option<&str> {
        self.rooms.room_of(id)
    }

    /// The peer ids of `room`, in the order they joined.
    pub fn members(&self, room: &str) -> impl Iterator<Item = &str> {
        self.rooms.members(room).iter().map(|p| p.id.as_str())
    }

    /// What peer `id`'s outbox holds, in bytes as counted for the limit.
    pub fn queued_bytes(&self, id: &str) -> usize {
        self.sessions.get(id).map_or(0, |s| s.outbox.bytes())
    }

    /// Rooms opened from `source` that exist now.
    pub fn rooms_opened_by(&self, source: SourceKey) -> usize {
        self.rooms.opened_by(source)
    }

    /// (rooms, peers in rooms, open sessions) right now; detached sessions
    /// count as open.
    pub fn counts(&self) -> (usize, usize, usize) {
        (self.rooms.room_count(), self.rooms.peer_count(), self.sessions.len())
    }

    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Takes a token for a frame from peer `id`; false (with a
    /// `rate-limited` answer when it has a session) if it may not send one.
    fn admit_frame(&mut self, id: &str, now: Instant) -> bool {
        let Some(session) = self.sessions.get_mut(id).filter(|s| !s.evicted) else {
            return false;
        };
        if session.bucket.try_take(1, now) {
            return true;
        }
        self.reply_error(id, ErrorCode::RateLimited, "too many messages; slow down");
        false
    }

    fn count_error(&mut self, code: ErrorCode) {
        if let Some(counter) = self.counters.errors.get_mut(code as usize) {
            *counter += 1;
        }
    }

    fn reply_error(&mut self, id: &str, code: ErrorCode, message: &str) {
        let text = self.error_text(code, message);
        self.deliver(id, text.into());
    }

    /// Queues `message` for `to`, evicting `to` if it does not fit.
    fn deliver(&mut self, to: &str, message: Arc<str>) {
        let mut evict = Vec::new();
        self.push(to, message, &mut evict);
        self.evict_all(evict);
    }

    /// Queues `message` for peer `to`, or adds `to` to `evict` if it does
    /// not fit. Evictions are collected rather than done here because
    /// evicting tells a room, which may overflow another outbox in turn.
    fn push(&mut self, to: &str, message: Arc<str>, evict: &mut Vec<String>) {
        let Some(session) = self.sessions.get_mut(to).filter(|s| !s.evicted) else {
            return;
        };
        let cost = cost(&message);
        let budget = self.limits.max_outbox_bytes;
        if session.outbox.bytes().saturating_add(cost) > budget {
            evict.push(to.to_owned());
            return;
        }
        if session.outbox.is_empty() {
            if let Some(conn) = &session.conn {
                self.woken.push(conn.clone());
            }
        }
        let seq = match session.resume.as_mut() {
            Some(resume) => {
                // The history gives way to the outbox.
                resume.history.give_way(session.outbox.bytes() + cost, budget);
                resume.number()
            }
            None => 0,
        };
        session.outbox.push_back(Queued { seq, text: message });
    }

    /// Evicts the sessions of `pending`, and those their `peer-left`
    /// overflows in turn. Ends: each session is evicted at most once.
    fn evict_all(&mut self, mut pending: Vec<String>) {
        while let Some(id) = pending.pop() {
            let Some(session) = self.sessions.get_mut(&id).filter(|s| !s.evicted) else {
                continue;
            };
            debug!(peer = %id, bytes = session.outbox.bytes(), "signaling outbox full; dropping the session");
            session.evicted = true;
            session.outbox = Outbox::default();
            let detached = session.conn.is_none();
            if let Some(conn) = &session.conn {
                self.woken.push(conn.clone());
            }
            self.counters.evictions += 1;
            self.announce_leave(&id, &mut pending);
            self.forget_extras(&id);
            if detached {
                // No driver will come to disconnect it.
                if let Some(session) = self.sessions.remove(&id) {
                    if let Some(until) = session.grace_until {
                        self.end_grace(until, &id);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
