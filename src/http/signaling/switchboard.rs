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

use serde_json::value::RawValue;
use tracing::debug;

use super::fleet_view;
use super::outbox::{cost, Outbox, Queued};
use super::protocol::{ClientMessage, ErrorCode, IceServer, PeerInfo, ResumeGrant, ServerMessage};
use super::rooms::{JoinRefused, Rooms};
use crate::proto::source::SourceKey;
use crate::proto::token_bucket::TokenBucket;
use fleet::{Fleet, PendingJoin};
use resume::Resume;

mod fleet;
mod resume;

pub use fleet::{FleetEvent, FleetJoin, MAX_FLEET_EVENTS};

pub use super::outbox::MESSAGE_OVERHEAD;

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
        self.connect_with_host(id, source, room_grant, None, now)
    }

    /// [`Self::connect`], remembering the Host header the client used.
    pub fn connect_with_host(
        &mut self,
        id: &str,
        source: SourceKey,
        room_grant: Option<String>,
        host: Option<String>,
        now: Instant,
    ) -> bool {
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
    /// the grace period; any other ends as with [`Self::disconnect`].
    pub fn disconnect_at(&mut self, id: &str, now: Instant) {
        self.replaced.remove(id);
        let Some(peer) = self.links.remove(id) else {
            return;
        };
        let in_room = self.rooms.room_of(&peer).is_some();
        let until = now + self.resume_grace;
        match self.sessions.get_mut(&peer) {
            Some(session) if in_room && !session.evicted && session.resume.is_some() => {
                session.conn = None;
                session.grace_until = Some(until);
                self.graces.insert((until, peer.clone()));
                debug!(peer = %peer, "signaling socket ended; session kept for resume");
            }
            _ => self.end_session(&peer),
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

    /// The invariants of the module docs (this one's, `outbox`'s and
    /// `resume`'s), checked in full (for tests and
    /// the fuzz harness; it walks everything).
    pub fn check(&self) -> Result<(), &'static str> {
        self.rooms.check()?;
        let mut tokens = 0;
        let mut detached = 0;
        let mut refreshing = 0;
        for (id, session) in &self.sessions {
            session.outbox.check()?;
            let history = session.resume.as_ref().map_or(0, |r| r.history.bytes());
            if let Some(resume) = &session.resume {
                resume.history.check()?;
                if self.tokens.get(&resume.token) != Some(id) {
                    return Err("a resume token is not in tokens");
                }
                tokens += 1;
            }
            if session.outbox.bytes() + history > self.limits.max_outbox_bytes {
                return Err("an outbox and its history hold more than max_outbox_bytes");
            }
            if session.evicted && (self.rooms.room_of(id).is_some() || !session.outbox.is_empty()) {
                return Err("an evicted session is in a room or holds messages");
            }
            match (&session.conn, session.grace_until) {
                (Some(conn), None) if self.links.get(conn) == Some(id) => {}
                (None, Some(until)) if self.graces.contains(&(until, id.clone())) => detached += 1,
                _ => return Err("a session is neither linked to its connection nor in grace"),
            }
            if let Some(due) = session.refresh_at {
                if !self.refreshes.contains(&(due, id.clone())) {
                    return Err("a refresh is not in refreshes");
                }
                refreshing += 1;
            }
        }
        if tokens != self.tokens.len() || detached != self.graces.len() || refreshing != self.refreshes.len() {
            return Err("tokens, graces or refreshes name a session that does not hold them");
        }
        if self.links.len() != self.sessions.len() - detached {
            return Err("links do not mirror the attached sessions");
        }
        let (_, peers, _) = self.counts();
        let in_rooms = self
            .sessions
            .keys()
            .filter(|id| self.rooms.room_of(id).is_some())
            .count();
        if in_rooms != peers {
            return Err("a peer in a room has no session");
        }
        self.check_fleet()
    }

    fn debug_check(&self) {
        if cfg!(debug_assertions) {
            let checked = self.check();
            debug_assert!(checked.is_ok(), "switchboard invariant broken: {checked:?}");
        }
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

    #[allow(clippy::too_many_arguments)]
    fn join(
        &mut self,
        id: &str,
        room: &str,
        name: Option<String>,
        resume: bool,
        ice_refresh: bool,
        now: Instant,
        mint: &mut impl Mint,
    ) {
        let Some(session) = self.sessions.get(id) else {
            return;
        };
        if session.room_grant.as_deref().is_some_and(|granted| granted != room) {
            return self.reply_error(id, ErrorCode::Unauthorized, "this token is for another room");
        }
        if self.rooms.room_of(id).is_some() || self.join_pending(id) {
            return self.reply_error(id, ErrorCode::BadMessage, "already in a room; send leave first");
        }
        let join = PendingJoin {
            room: room.to_owned(),
            name,
            resume,
            ice_refresh,
        };
        // With a fleet, the join waits for Redis; without (or with Redis
        // down) it is done here and now.
        if let Err(join) = self.fleet_join(id, join) {
            self.complete_join(id, &join, &[], now, mint);
        }
        self.debug_check();
    }

    /// Puts `id` into the room of `join`, whose fleet-wide members before
    /// it are `members` (none without a fleet), and answers `joined`;
    /// false (with the error answered) if it could not be let in.
    fn complete_join(
        &mut self,
        id: &str,
        join: &PendingJoin,
        members: &[fleet_view::RemoteMember],
        now: Instant,
        mint: &mut impl Mint,
    ) -> bool {
        let Some(session) = self.sessions.get(id) else {
            return false;
        };
        let room = join.room.as_str();
        let source = session.source;
        let host = session.host.clone();
        let me = PeerInfo {
            id: id.to_owned(),
            name: join.name.clone(),
        };
        // Room size counts remote members too (Redis checked it too, but
        // a join during an outage sees only what is known here).
        let fleet_new = members
            .iter()
            .filter(|m| !self.sessions.contains_key(&m.id) && self.fleet_room_of(&m.id).is_none())
            .count();
        let remote = self.remote_in_room(room) + fleet_new;
        if self.rooms.members(room).len() + remote >= self.limits.room_size {
            self.reply_error(id, ErrorCode::RoomFull, "the room is full");
            return false;
        }
        let local = match self.rooms.join(me.clone(), source, room) {
            Ok(peers) => peers,
            Err(refused) => {
                let message = match refused {
                    JoinRefused::RoomFull => "the room is full".to_owned(),
                    JoinRefused::TooManyRooms => "no room can be opened: the server is at its room limit".to_owned(),
                    JoinRefused::SourceRooms => format!(
                        "no room can be opened: {} rooms opened from this address are still open",
                        self.rooms.opened_by(source)
                    ),
                    JoinRefused::AlreadyInRoom => {
                        self.reply_error(id, ErrorCode::BadMessage, "already in a room; send leave first");
                        return false;
                    }
                };
                self.reply_error(id, ErrorCode::RoomFull, &message);
                return false;
            }
        };
        let peers = self.fleet_peer_list(room, id, members, &local);
        let joined: Arc<str> = ServerMessage::PeerJoined {
            id,
            name: me.name.as_deref(),
        }
        .to_json()
        .into();
        let mut evict = Vec::new();
        for peer in &local {
            self.push(&peer.id, joined.clone(), &mut evict);
        }
        let (ice_servers, ttl) = mint.ice_servers(host.as_deref(), id);
        let token = match join.resume && !self.resume_grace.is_zero() {
            true => mint.resume_token(),
            false => None,
        };
        let grace = self.resume_grace.as_secs();
        let answer = ServerMessage::Joined {
            room,
            id,
            peers: &peers,
            ice_servers: &ice_servers,
            resume: token.as_deref().map(|token| ResumeGrant { token, grace }),
        }
        .to_json();
        self.push(id, answer.into(), &mut evict);
        // Numbering starts after `joined`, which the client counts from.
        if let (Some(token), Some(session)) = (token, self.sessions.get_mut(id)) {
            if !session.evicted {
                self.tokens.insert(token.clone(), id.to_owned());
                session.resume = Some(Resume::new(token));
            }
        }
        if join.ice_refresh {
            self.schedule_refresh(id, now, ttl);
        }
        self.evict_all(evict);
        true
    }

    fn signal(&mut self, id: &str, to: &str, data: &RawValue) {
        let Some(room) = self.rooms.room_of(id).map(str::to_owned) else {
            return self.reply_error(id, ErrorCode::NotInRoom, "join a room before signaling");
        };
        if to != id && self.fleet_signal(&room, id, to, data) {
            return;
        }
        if to == id || !self.rooms.same_room(id, to) {
            return self.reply_error(id, ErrorCode::UnknownPeer, "no such peer in this room");
        }
        let message = ServerMessage::Signal { from: id, data }.to_json();
        self.deliver(to, message.into());
    }

    /// Takes `id` out of its room and tells the others; false if it was in
    /// none. Ends its resume and refresh: a leave is final.
    fn leave(&mut self, id: &str) -> bool {
        let mut evict = Vec::new();
        let cancelled = self.cancel_pending_join(id);
        let left = self.announce_leave(id, &mut evict) || cancelled;
        self.forget_extras(id);
        self.evict_all(evict);
        left
    }

    /// Session `id` ends: out of its room (the others told), its timers and
    /// token dropped, forgotten. Its connection, if any, stays linked until
    /// its driver disconnects (then nothing is left to do).
    fn end_session(&mut self, id: &str) {
        self.leave(id);
        if let Some(session) = self.sessions.remove(id) {
            if let Some(until) = session.grace_until {
                self.graces.remove(&(until, id.to_owned()));
            }
            if let Some(conn) = session.conn {
                // Still driven: its driver sees `Gone` and disconnects.
                self.links.remove(&conn);
                self.woken.push(conn);
            }
        }
    }

    fn announce_leave(&mut self, id: &str, evict: &mut Vec<String>) -> bool {
        let Some(room) = self.rooms.room_of(id).map(str::to_owned) else {
            return false;
        };
        let left: Arc<str> = ServerMessage::PeerLeft { id }.to_json().into();
        let others = self.rooms.leave(id);
        for other in &others {
            self.push(other, left.clone(), evict);
        }
        self.fleet_leave(&room, id, !others.is_empty());
        true
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
                        self.graces.remove(&(until, id.clone()));
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;
    use std::time::Duration;

    use super::*;

    pub(super) fn limits() -> Limits {
        Limits {
            room_size: 3,
            max_rooms: 4,
            max_rooms_per_source: 2,
            max_message_size: 1024,
            messages_per_second: 1000,
            max_outbox_bytes: 4096,
        }
    }

    pub(super) struct Board {
        pub(super) board: Switchboard,
        pub(super) now: Instant,
    }

    fn src(n: u8) -> SourceKey {
        SourceKey::from(IpAddr::from([192, 0, 2, n]))
    }

    impl Board {
        pub(super) fn new(limits: Limits) -> Board {
            Board {
                board: Switchboard::new(limits),
                now: crate::process::clock::mono(),
            }
        }

        pub(super) fn connect(&mut self, id: &str, grant: Option<&str>) {
            assert!(self.board.connect(id, src(1), grant.map(str::to_owned), self.now));
        }

        pub(super) fn send(&mut self, id: &str, text: &str) {
            self.now += Duration::from_millis(1);
            self.board.handle_text(id, text, self.now, |_| Vec::new());
            assert_eq!(self.board.check(), Ok(()));
        }

        /// Everything queued for `id`, as JSON.
        pub(super) fn read(&mut self, id: &str) -> Vec<serde_json::Value> {
            let mut out = Vec::new();
            while let Outgoing::Message(m) = self.board.poll_outgoing(id) {
                out.push(serde_json::from_str(&m).unwrap());
            }
            out
        }

        pub(super) fn join(&mut self, id: &str, room: &str) {
            self.send(id, &format!(r#"{{"type":"join","room":"{room}"}}"#));
        }
    }

    #[test]
    fn answers_and_room_messages_come_in_order_through_the_outbox() {
        let mut b = Board::new(limits());
        b.connect("a", None);
        b.connect("b", None);
        b.join("a", "r");
        b.join("b", "r");
        b.send("b", r#"{"type":"signal","to":"a","data":{"sdp":"x"}}"#);
        b.send("a", r#"{"type":"ping"}"#);
        let a = b.read("a");
        let types: Vec<&str> = a.iter().map(|m| m["type"].as_str().unwrap()).collect();
        assert_eq!(types, ["joined", "peer-joined", "signal", "pong"]);
        assert_eq!(a[2]["data"]["sdp"], "x");
        assert_eq!(b.read("b")[0]["peers"][0]["id"], "a");
        assert_eq!(b.board.queued_bytes("a"), 0);
        let mut woken: Vec<String> = std::iter::from_fn(|| b.board.poll_woken()).collect();
        woken.sort();
        woken.dedup();
        assert_eq!(woken, ["a", "b"]);
    }

    #[test]
    fn an_outbox_over_its_bytes_evicts_at_once_and_the_room_hears_peer_left() {
        let mut b = Board::new(limits());
        b.connect("sender", None);
        b.connect("mute", None);
        b.join("sender", "r");
        b.join("mute", "r");
        b.read("sender");
        let signal = format!(r#"{{"type":"signal","to":"mute","data":"{}"}}"#, "x".repeat(900));
        let mut sent = 0;
        while !b.board.is_gone("mute") {
            b.send("sender", &signal);
            assert!(b.board.queued_bytes("mute") <= 4096);
            sent += 1;
            assert!(sent < 10, "never evicted");
        }
        assert_eq!(b.board.poll_outgoing("mute"), Outgoing::Gone);
        assert_eq!(b.board.room_of("mute"), None);
        assert_eq!(b.board.queued_bytes("mute"), 0, "the memory is freed at once");
        assert_eq!(b.board.counters().evictions, 1);
        assert_eq!(
            b.read("sender"),
            [serde_json::json!({"type": "peer-left", "id": "mute"})]
        );
        b.send("sender", &signal);
        assert_eq!(b.read("sender")[0]["code"], "unknown-peer");
        b.board.disconnect("mute");
        assert!(b.read("sender").is_empty(), "no second peer-left");
        assert_eq!(b.board.counts(), (1, 1, 1));
    }

    #[test]
    fn a_room_bound_session_may_join_only_its_room() {
        let mut b = Board::new(limits());
        b.connect("a", Some("mine"));
        b.join("a", "other");
        assert_eq!(b.read("a")[0]["code"], "unauthorized");
        b.join("a", "mine");
        assert_eq!(b.read("a")[0]["type"], "joined");
    }

    #[test]
    fn a_source_opens_its_share_of_rooms_then_gets_room_full() {
        let mut b = Board::new(limits());
        for (id, room) in [("a", "r1"), ("b", "r2"), ("c", "r3")] {
            b.connect(id, None);
            b.join(id, room);
        }
        assert_eq!(b.read("c")[0]["code"], "room-full");
        assert_eq!(b.board.rooms_opened_by(src(1)), 2);
        b.join("c", "r1");
        assert_eq!(b.read("c")[0]["type"], "joined", "an open room can still be joined");
    }

    #[test]
    fn a_flood_is_rate_limited_and_a_client_that_never_reads_its_answers_is_evicted() {
        let mut b = Board::new(Limits {
            messages_per_second: 5,
            ..limits()
        });
        b.connect("a", None);
        let start = b.now;
        for _ in 0..20 {
            b.board.handle_text("a", r#"{"type":"ping"}"#, start, |_| Vec::new());
        }
        let answers = b.read("a");
        assert_eq!(answers.iter().filter(|m| m["type"] == "pong").count(), 10);
        assert_eq!(answers.iter().filter(|m| m["code"] == "rate-limited").count(), 10);
        for _ in 0..200 {
            b.board.handle_text("a", r#"{"type":"ping"}"#, start, |_| Vec::new());
        }
        assert!(
            b.board.is_gone("a"),
            "rate-limited answers count against the outbox too"
        );
        assert_eq!(b.board.check(), Ok(()));
    }

    /// A [`Mint`] with fake, counted tokens and a fixed credential lifetime.
    struct FakeMint {
        tokens: u32,
        ttl: Duration,
        minted: Vec<String>,
    }

    impl FakeMint {
        fn new(ttl: Duration) -> FakeMint {
            FakeMint {
                tokens: 0,
                ttl,
                minted: Vec::new(),
            }
        }
    }

    impl Mint for FakeMint {
        fn ice_servers(&mut self, host: Option<&str>, peer: &str) -> (Vec<IceServer>, Duration) {
            self.minted.push(peer.to_owned());
            let n = self.minted.len();
            let server = IceServer {
                urls: vec![format!("turn:{}:3478", host.unwrap_or("h"))],
                username: Some(format!("{n}:{peer}")),
                credential: Some("c".into()),
            };
            (vec![server], self.ttl)
        }

        fn resume_token(&mut self) -> Option<String> {
            self.tokens += 1;
            Some(format!("token-{}", self.tokens))
        }
    }

    const GRACE: Duration = Duration::from_secs(10);

    impl Board {
        fn resumable(limits: Limits) -> Board {
            Board {
                board: Switchboard::new(limits).with_resume_grace(GRACE),
                now: crate::process::clock::mono(),
            }
        }

        fn send_with(&mut self, id: &str, text: &str, mint: &mut FakeMint) {
            self.now += Duration::from_millis(1);
            self.board.handle_text_with(id, text, self.now, mint);
            assert_eq!(self.board.check(), Ok(()));
        }

        /// Joins `room` asking for resume; returns the token.
        fn join_resumable(&mut self, id: &str, room: &str, mint: &mut FakeMint) -> String {
            self.send_with(id, &format!(r#"{{"type":"join","room":"{room}","resume":true}}"#), mint);
            let joined = self.read(id);
            let joined = joined.last().unwrap();
            assert_eq!(joined["type"], "joined", "{joined}");
            assert_eq!(joined["resume"]["grace"], 10);
            joined["resume"]["token"].as_str().unwrap().to_owned()
        }

        fn signal(&mut self, from: &str, to: &str, data: &str) {
            self.send(from, &format!(r#"{{"type":"signal","to":"{to}","data":{data}}}"#));
        }

        fn advance(&mut self, by: Duration, mint: &mut FakeMint) {
            self.now += by;
            self.board.handle_timeout(self.now, mint);
            assert_eq!(self.board.check(), Ok(()));
        }
    }

    fn data_of(messages: &[serde_json::Value]) -> Vec<serde_json::Value> {
        messages
            .iter()
            .filter(|m| m["type"] == "signal")
            .map(|m| m["data"].clone())
            .collect()
    }

    #[test]
    fn a_signal_whose_data_is_null_is_relayed() {
        let mut b = Board::new(limits());
        b.connect("a", None);
        b.connect("b", None);
        b.join("a", "r");
        b.join("b", "r");
        b.read("a");
        b.send("b", r#"{"type":"signal","to":"a","data":null}"#);
        assert_eq!(
            b.read("a"),
            [serde_json::json!({"type": "signal", "from": "b", "data": null})]
        );
        b.send("b", r#"{"type":"signal","to":"a"}"#);
        assert_eq!(
            b.read("b").last().unwrap()["code"],
            "bad-message",
            "a missing data still is"
        );
    }

    #[test]
    fn a_v1_join_gets_no_resume_and_its_socket_end_is_a_leave_at_once() {
        let mut b = Board::resumable(limits());
        let mut mint = FakeMint::new(Duration::from_secs(60));
        b.connect("a", None);
        b.connect("b", None);
        b.send_with("a", r#"{"type":"join","room":"r"}"#, &mut mint);
        b.send_with("b", r#"{"type":"join","room":"r"}"#, &mut mint);
        let joined = b.read("b");
        assert!(joined[0].get("resume").is_none(), "{}", joined[0]);
        b.read("a");
        b.board.disconnect_at("b", b.now);
        assert_eq!(b.read("a"), [serde_json::json!({"type": "peer-left", "id": "b"})]);
        assert_eq!(b.board.counts(), (1, 1, 1));
        assert_eq!(b.board.poll_timeout(), None, "no timer for a v1 session");
    }

    #[test]
    fn a_dropped_socket_keeps_its_place_and_what_it_missed_is_replayed_in_order_on_resume() {
        let mut b = Board::resumable(limits());
        let mut mint = FakeMint::new(Duration::ZERO);
        b.connect("a", None);
        b.connect("b", None);
        b.join("a", "r");
        let token = b.join_resumable("b", "r", &mut mint);
        b.read("a");
        // b reads one signal (seq 1), a second is written but lost in
        // flight (seq 2), then the socket drops.
        b.signal("a", "b", "1");
        assert_eq!(data_of(&b.read("b")), [serde_json::json!(1)]);
        b.signal("a", "b", "2");
        let _lost = b.board.poll_outgoing("b");
        b.board.disconnect_at("b", b.now);
        assert_eq!(b.board.peer_of("b"), None);
        assert!(b.read("a").is_empty(), "no peer-left during the grace period");
        assert_eq!(b.board.poll_timeout(), Some(b.now + GRACE));
        // While b is away, a keeps signaling; it is queued, in order.
        for n in 3..=5 {
            b.signal("a", "b", &n.to_string());
        }
        assert!(b.read("a").is_empty(), "no unknown-peer for a detached peer");
        b.advance(GRACE / 2, &mut mint);
        // A new socket resumes, having read 1 message after joined.
        b.connect("b2", None);
        b.send_with(
            "b2",
            &format!(r#"{{"type":"resume","token":"{token}","last":1}}"#),
            &mut mint,
        );
        let got = b.read("b2");
        assert_eq!(got[0]["type"], "resumed", "{got:?}");
        assert_eq!(got[0]["id"], "b");
        assert_eq!(got[0]["room"], "r");
        assert_eq!(got[0]["received"], 0);
        assert_eq!(got[0]["resume"]["token"], "token-2", "a fresh token");
        assert_eq!(
            data_of(&got[1..]),
            [2, 3, 4, 5].map(|n| serde_json::json!(n)),
            "the lost one and the queued ones, in order"
        );
        assert_eq!(b.board.peer_of("b2"), Some("b"));
        assert_eq!(b.board.poll_timeout(), None, "the grace timer is gone");
        // b is still b to the room, both ways.
        b.send("b2", r#"{"type":"signal","to":"a","data":"back"}"#);
        assert_eq!(b.read("a")[0]["from"], "b");
        b.advance(GRACE * 2, &mut mint);
        assert!(b.read("a").is_empty(), "the old grace period does not fire");
        // The spent token cannot be used again.
        b.connect("thief", None);
        b.send_with(
            "thief",
            &format!(r#"{{"type":"resume","token":"{token}","last":0}}"#),
            &mut mint,
        );
        assert_eq!(b.read("thief")[0]["code"], "resume-failed");
        assert_eq!(b.board.counters().resumes, 1);
    }

    #[test]
    fn the_room_hears_peer_left_when_the_grace_period_runs_out() {
        let mut b = Board::resumable(limits());
        let mut mint = FakeMint::new(Duration::ZERO);
        b.connect("a", None);
        b.connect("b", None);
        b.join("a", "r");
        let token = b.join_resumable("b", "r", &mut mint);
        b.read("a");
        b.board.disconnect_at("b", b.now);
        b.signal("a", "b", "\"queued\"");
        b.advance(GRACE - Duration::from_millis(10), &mut mint);
        assert!(b.read("a").is_empty());
        b.advance(Duration::from_millis(10), &mut mint);
        assert_eq!(b.read("a"), [serde_json::json!({"type": "peer-left", "id": "b"})]);
        assert_eq!(b.board.counts(), (1, 1, 1), "b and what was queued for it are gone");
        assert_eq!(b.board.counters().grace_expiries, 1);
        b.connect("b2", None);
        b.send_with(
            "b2",
            &format!(r#"{{"type":"resume","token":"{token}","last":0}}"#),
            &mut mint,
        );
        assert_eq!(b.read("b2")[0]["code"], "resume-failed");
        b.signal("a", "b", "1");
        assert_eq!(b.read("a")[0]["code"], "unknown-peer");
    }

    #[test]
    fn a_resume_while_the_old_socket_still_looks_alive_takes_it_over() {
        let mut b = Board::resumable(limits());
        let mut mint = FakeMint::new(Duration::ZERO);
        b.connect("a", None);
        b.connect("b", None);
        b.join("a", "r");
        let token = b.join_resumable("b", "r", &mut mint);
        b.read("a");
        b.signal("a", "b", "1");
        b.connect("b2", None);
        b.send_with(
            "b2",
            &format!(r#"{{"type":"resume","token":"{token}","last":0}}"#),
            &mut mint,
        );
        assert_eq!(b.board.poll_outgoing("b"), Outgoing::Gone);
        assert!(b.board.was_replaced("b"));
        let woken: Vec<String> = std::iter::from_fn(|| b.board.poll_woken()).collect();
        assert!(woken.contains(&"b".to_owned()) && woken.contains(&"b2".to_owned()));
        let got = b.read("b2");
        assert_eq!(got[0]["type"], "resumed");
        assert_eq!(data_of(&got), [serde_json::json!(1)]);
        // The old driver ends later: that is no leave.
        b.board.disconnect_at("b", b.now);
        assert!(b.read("a").is_empty());
        assert!(!b.board.was_replaced("b"));
        assert_eq!(b.board.room_of("b"), Some("r"));
        assert_eq!(b.board.check(), Ok(()));
    }

    #[test]
    fn a_leave_is_final_and_acks_free_the_history() {
        let mut b = Board::resumable(limits());
        let mut mint = FakeMint::new(Duration::ZERO);
        b.connect("a", None);
        b.connect("b", None);
        b.join("a", "r");
        let token = b.join_resumable("b", "r", &mut mint);
        b.read("a");
        let big = format!("\"{}\"", "x".repeat(500));
        for _ in 0..3 {
            b.signal("a", "b", &big);
        }
        b.read("b");
        let history = |b: &Board| b.board.sessions["b"].resume.as_ref().unwrap().history.bytes();
        assert!(history(&b) > 1500);
        b.send_with("b", r#"{"type":"ack","seq":3}"#, &mut mint);
        assert_eq!(history(&b), 0, "acked messages are forgotten");
        b.send_with("b", r#"{"type":"leave"}"#, &mut mint);
        assert_eq!(b.read("a"), [serde_json::json!({"type": "peer-left", "id": "b"})]);
        b.board.disconnect_at("b", b.now);
        assert_eq!(b.board.counts(), (1, 1, 1), "no grace after a leave");
        b.connect("b2", None);
        b.send_with(
            "b2",
            &format!(r#"{{"type":"resume","token":"{token}","last":3}}"#),
            &mut mint,
        );
        assert_eq!(b.read("b2")[0]["code"], "resume-failed");
    }

    #[test]
    fn a_resume_that_cannot_be_replayed_whole_fails_and_the_session_ends() {
        let mut b = Board::resumable(limits());
        let mut mint = FakeMint::new(Duration::ZERO);
        b.connect("a", None);
        b.connect("b", None);
        b.join("a", "r");
        let token = b.join_resumable("b", "r", &mut mint);
        b.read("a");
        // b reads (and never acks) more than the 4096-byte budget: the
        // history forgets the oldest.
        let big = format!("\"{}\"", "x".repeat(700));
        for _ in 0..8 {
            b.signal("a", "b", &big);
            b.read("b");
        }
        let resume = b.board.sessions["b"].resume.as_ref().unwrap();
        assert!(resume.history.forgotten() > 0 && resume.history.bytes() <= 4096);
        b.board.disconnect_at("b", b.now);
        b.connect("b2", None);
        b.send_with(
            "b2",
            &format!(r#"{{"type":"resume","token":"{token}","last":0}}"#),
            &mut mint,
        );
        assert_eq!(b.read("b2")[0]["code"], "resume-failed");
        assert_eq!(b.read("a"), [serde_json::json!({"type": "peer-left", "id": "b"})]);
        assert_eq!(b.board.counts(), (1, 1, 2), "a and b2's fresh session");
        // Claiming to have read more than was sent fails too.
        let token = b.join_resumable("b2", "r", &mut mint);
        b.read("a");
        b.connect("b3", None);
        b.send_with(
            "b3",
            &format!(r#"{{"type":"resume","token":"{token}","last":5}}"#),
            &mut mint,
        );
        assert_eq!(b.read("b3")[0]["code"], "resume-failed");
    }

    #[test]
    fn a_detached_session_whose_queue_overflows_is_dropped_at_once() {
        let mut b = Board::resumable(limits());
        let mut mint = FakeMint::new(Duration::ZERO);
        b.connect("a", None);
        b.connect("b", None);
        b.join("a", "r");
        b.join_resumable("b", "r", &mut mint);
        b.read("a");
        b.board.disconnect_at("b", b.now);
        let big = format!("\"{}\"", "x".repeat(900));
        for _ in 0..5 {
            b.signal("a", "b", &big);
        }
        let got = b.read("a");
        assert_eq!(got[0], serde_json::json!({"type": "peer-left", "id": "b"}), "{got:?}");
        assert_eq!(b.board.counts(), (1, 1, 1));
        assert_eq!(b.board.poll_timeout(), None);
    }

    #[test]
    fn fresh_ice_servers_are_pushed_at_three_quarters_of_their_lifetime() {
        let mut b = Board::resumable(limits());
        let mut mint = FakeMint::new(Duration::from_secs(40));
        b.connect("a", None);
        b.send_with("a", r#"{"type":"join","room":"r","iceRefresh":true}"#, &mut mint);
        assert_eq!(b.read("a")[0]["iceServers"][0]["username"], "1:a");
        let joined_at = b.now;
        assert_eq!(b.board.poll_timeout(), Some(joined_at + Duration::from_secs(30)));
        b.advance(Duration::from_secs(29), &mut mint);
        assert!(b.read("a").is_empty());
        b.advance(Duration::from_secs(1), &mut mint);
        assert_eq!(
            b.read("a"),
            [serde_json::json!({"type": "ice-servers", "iceServers": [
                {"urls": ["turn:h:3478"], "username": "2:a", "credential": "c"}]})]
        );
        assert_eq!(
            b.board.poll_timeout(),
            Some(b.now + Duration::from_secs(30)),
            "and again"
        );
        b.send_with("a", r#"{"type":"leave"}"#, &mut mint);
        assert_eq!(b.board.poll_timeout(), None, "a leave ends the refreshes");
        // Without the flag, no refresh.
        b.send_with("a", r#"{"type":"join","room":"r"}"#, &mut mint);
        assert_eq!(b.board.poll_timeout(), None);
    }

    /// Bounded random programs over resumable sessions (joins, signals,
    /// reads, acks, drops, resumes with right and wrong counts, leaves,
    /// time passing): the invariants hold after every step, and once every
    /// socket is gone and the grace period has passed nothing is left.
    #[test]
    fn random_programs_with_resume_keep_the_invariants_and_leak_nothing() {
        let mut rng = crate::proto::xorshift::XorShift::new(0x5eed_1234_abcd_0001);
        let mut next = move |n: u64| rng.next_u64() % n;
        let (mut resumes, mut expiries) = (0, 0);
        for program in 0..200 {
            let mut b = Board::resumable(Limits {
                max_outbox_bytes: 4096,
                ..limits()
            });
            let mut mint = FakeMint::new(Duration::from_secs(8));
            // Per client slot: its live connection, the token it holds and
            // how many messages it read since joined.
            let mut conns: Vec<Option<String>> = vec![None; 5];
            let mut tokens: Vec<Option<(String, u64)>> = vec![None; 5];
            let mut resumed_from = [0u64; 5];
            let mut fresh = 0u32;
            for _ in 0..120 {
                let i = next(5) as usize;
                match next(12) {
                    0 | 10 if conns[i].is_none() => {
                        fresh += 1;
                        let id = format!("c{program}-{fresh}");
                        assert!(b.board.connect(&id, src(1), None, b.now));
                        conns[i] = Some(id.clone());
                        // Mostly, a client that held a session resumes it at once.
                        if let Some((token, n)) = tokens[i].clone().filter(|_| next(4) != 0) {
                            resumed_from[i] = n;
                            let target = b.board.tokens.get(&token).cloned();
                            let whole = target.as_ref().and_then(|t| b.board.sessions.get(t)).is_some_and(|s| {
                                s.resume
                                    .as_ref()
                                    .is_some_and(|r| r.history.forgotten() <= n && n < r.next_seq)
                            });
                            b.send_with(
                                &id,
                                &format!(r#"{{"type":"resume","token":"{token}","last":{n}}}"#),
                                &mut mint,
                            );
                            if whole {
                                assert_eq!(
                                    b.board.peer_of(&id),
                                    target.as_deref(),
                                    "a resume that should work failed"
                                );
                            }
                        }
                    }
                    1 => {
                        if let Some(id) = conns[i].clone() {
                            let room = ["r", "s"][next(2) as usize];
                            b.send_with(
                                &id,
                                &format!(r#"{{"type":"join","room":"{room}","resume":true,"iceRefresh":true}}"#),
                                &mut mint,
                            );
                        }
                    }
                    2 | 3 => {
                        if let (Some(id), Some(to)) = (conns[i].clone(), conns[next(5) as usize].clone()) {
                            let to = b.board.peer_of(&to).unwrap_or("x").to_owned();
                            let data = "y".repeat(next(300) as usize);
                            b.send_with(
                                &id,
                                &format!(r#"{{"type":"signal","to":"{to}","data":"{data}"}}"#),
                                &mut mint,
                            );
                        }
                    }
                    4 | 5 => {
                        if let Some(id) = conns[i].clone() {
                            for _ in 0..next(4) {
                                match b.board.poll_outgoing(&id) {
                                    Outgoing::Message(m) => {
                                        let v: serde_json::Value = serde_json::from_str(&m).unwrap();
                                        if v["type"] == "joined" || v["type"] == "resumed" {
                                            // After `resumed` the count goes on from `last`.
                                            let n = if v["type"] == "resumed" { resumed_from[i] } else { 0 };
                                            tokens[i] = v["resume"]["token"].as_str().map(|t| (t.to_owned(), n));
                                        } else if let Some((_, n)) = &mut tokens[i] {
                                            *n += 1;
                                        }
                                    }
                                    _ => break,
                                }
                            }
                        }
                    }
                    6 => {
                        if let (Some(id), Some((_, n))) = (conns[i].clone(), tokens[i].clone()) {
                            b.send_with(&id, &format!(r#"{{"type":"ack","seq":{n}}}"#), &mut mint);
                        }
                    }
                    7 => {
                        if let Some(id) = conns[i].take() {
                            b.board.disconnect_at(&id, b.now);
                            assert_eq!(b.board.check(), Ok(()));
                        }
                    }
                    8 => {
                        // A resume, usually with the right count.
                        if let (Some(id), Some((token, n))) = (conns[i].clone(), tokens[i].clone()) {
                            let last = if next(4) == 0 { n + next(3) } else { n };
                            resumed_from[i] = last;
                            // Can it work? The token is live, the count right, nothing
                            // after it forgotten, and this is another connection.
                            let target = b.board.tokens.get(&token).cloned();
                            let whole = target.as_ref().and_then(|t| b.board.sessions.get(t)).is_some_and(|s| {
                                s.resume
                                    .as_ref()
                                    .is_some_and(|r| r.history.forgotten() <= last && last < r.next_seq)
                            });
                            let other = target.as_deref() != b.board.peer_of(&id);
                            let alone = b.board.peer_of(&id).is_some_and(|p| b.board.room_of(p).is_none());
                            b.send_with(
                                &id,
                                &format!(r#"{{"type":"resume","token":"{token}","last":{last}}}"#),
                                &mut mint,
                            );
                            if whole && other && alone && last == n {
                                assert_eq!(
                                    b.board.peer_of(&id),
                                    target.as_deref(),
                                    "a resume that should work failed"
                                );
                            }
                        }
                    }
                    9 => {
                        if let Some(id) = conns[i].clone() {
                            b.send_with(&id, r#"{"type":"leave"}"#, &mut mint);
                        }
                    }
                    _ => b.advance(Duration::from_millis(next(2000)), &mut mint),
                }
                let _ = std::iter::from_fn(|| b.board.poll_woken()).count();
            }
            for id in conns.iter().flatten() {
                b.board.disconnect_at(id, b.now);
            }
            b.advance(GRACE + Duration::from_secs(1), &mut mint);
            resumes += b.board.counters().resumes;
            expiries += b.board.counters().grace_expiries;
            assert_eq!(b.board.counts(), (0, 0, 0), "program {program} leaked");
            assert_eq!(b.board.poll_timeout(), None, "program {program} left a timer");
            assert!(b.board.tokens.is_empty() && b.board.links.is_empty() && b.board.replaced.is_empty());
        }
        assert!(
            resumes > 30 && expiries > 30,
            "the programs reach resume ({resumes}) and expiry ({expiries})"
        );
    }
}
