//! The switchboard: the whole state machine of `/ws` signaling (DESIGN.md,
//! "Signaling protocol v1"), sans-IO. It holds the sessions, their outboxes
//! and the [`Rooms`]; the tokio driver (`session`) feeds it client frames
//! with the time (`handle_*`) and writes out what it queued
//! (`poll_outgoing`), waking the sessions `poll_woken` names.
//!
//! Every message to a client, the answers to its own requests included,
//! goes through that client's outbox in order, so a client sees `joined`
//! before anything from its new room, and what its old room said before
//! it left comes before the `joined` of the next one.
//!
//! Bounds:
//! - an outbox holds at most `max_outbox_bytes`, each message costing its
//!   length plus [`MESSAGE_OVERHEAD`] (so a flood of tiny messages is
//!   bounded by the same budget; no separate count is needed);
//! - a message that would overflow an outbox *evicts* its session at once:
//!   the outbox is emptied (the memory is freed now, not when the driver
//!   gets round to it), the session leaves its room, the room is told
//!   `peer-left` in the same call, and the session only answers
//!   [`Outgoing::Gone`] from then on. The driver is woken to close the
//!   socket, even in the middle of a write;
//! - a client's frames pass a token bucket of `messages_per_second` (burst
//!   twice that) and `max_message_size` before they are parsed.
//!
//! Invariants ([`Switchboard::check`]): those of [`Rooms`]; every outbox's
//! byte count equals the cost of what it holds and is at most
//! `max_outbox_bytes`; an evicted session is in no room and holds nothing;
//! every peer in a room is a live session.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use serde_json::value::RawValue;
use tracing::debug;

use super::protocol::{ClientMessage, ErrorCode, IceServer, PeerInfo, ServerMessage};
use super::rooms::{JoinRefused, Rooms};
use crate::proto::source::SourceKey;
use crate::proto::token_bucket::TokenBucket;

/// What a queued message costs beyond its text: the `Arc` header, the
/// queue slot and allocator rounding, rounded up.
pub const MESSAGE_OVERHEAD: usize = 64;

/// Client message kinds, as metric label values; the last is for
/// messages that did not parse.
pub const MESSAGE_KINDS: [&str; 5] = ["join", "signal", "leave", "ping", "invalid"];

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

/// What [`Switchboard::poll_outgoing`] has for a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outgoing {
    /// The next message to write.
    Message(Arc<str>),
    /// Nothing queued.
    Idle,
    /// Evicted (or never connected): close the socket.
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
}

#[derive(Debug)]
struct Session {
    source: SourceKey,
    /// The only room this session may join, when its token names one.
    room_grant: Option<String>,
    queue: VecDeque<Arc<str>>,
    /// Cost of `queue`: its lengths plus `MESSAGE_OVERHEAD` each.
    queued_bytes: usize,
    bucket: TokenBucket,
    evicted: bool,
}

fn cost(message: &str) -> usize {
    message.len().saturating_add(MESSAGE_OVERHEAD)
}

/// Sessions, rooms and outboxes.
#[derive(Debug)]
pub struct Switchboard {
    limits: Limits,
    rooms: Rooms,
    sessions: HashMap<String, Session>,
    /// Sessions to wake: their outbox went from empty to not, or they
    /// were evicted. May name one twice.
    woken: Vec<String>,
    counters: Counters,
}

impl Switchboard {
    pub fn new(limits: Limits) -> Switchboard {
        Switchboard {
            rooms: Rooms::new(limits.room_size, limits.max_rooms, limits.max_rooms_per_source),
            limits,
            sessions: HashMap::new(),
            woken: Vec::new(),
            counters: Counters::default(),
        }
    }

    /// Opens session `id` for a client connected from `source`; with
    /// `room_grant` it may join only that room. False (and nothing done)
    /// if `id` is taken.
    pub fn connect(&mut self, id: &str, source: SourceKey, room_grant: Option<String>, now: Instant) -> bool {
        if self.sessions.contains_key(id) {
            return false;
        }
        let rate = u64::from(self.limits.messages_per_second);
        self.sessions.insert(
            id.to_owned(),
            Session {
                source,
                room_grant,
                queue: VecDeque::new(),
                queued_bytes: 0,
                bucket: TokenBucket::new(rate, rate.saturating_mul(2), now),
                evicted: false,
            },
        );
        true
    }

    /// Ends session `id` however it ended (leave, close, reset, missed
    /// heartbeat, eviction): out of its room, the others told, forgotten.
    pub fn disconnect(&mut self, id: &str) {
        self.leave(id);
        self.sessions.remove(id);
    }

    /// A text frame from the client of session `id`, at `now`. `ice` makes
    /// the `iceServers` of a successful join for the given peer id (called
    /// at most once).
    pub fn handle_text(&mut self, id: &str, text: &str, now: Instant, ice: impl FnOnce(&str) -> Vec<IceServer>) {
        if !self.admit_frame(id, now) {
            return;
        }
        let max = self.limits.max_message_size;
        if text.len() > max {
            let message = format!("message of {} bytes is over the limit of {max}", text.len());
            return self.reply_error(id, ErrorCode::TooLarge, &message);
        }
        let parsed = ClientMessage::parse(text);
        let kind = match &parsed {
            Ok(ClientMessage::Join { .. }) => 0,
            Ok(ClientMessage::Signal { .. }) => 1,
            Ok(ClientMessage::Leave) => 2,
            Ok(ClientMessage::Ping) => 3,
            Err(_) => 4,
        };
        self.counters.messages[kind] += 1;
        match parsed {
            Err(reason) => self.reply_error(id, ErrorCode::BadMessage, &reason),
            Ok(ClientMessage::Ping) => self.deliver(id, ServerMessage::Pong.to_json().into()),
            Ok(ClientMessage::Join { room, name }) => self.join(id, &room, name, ice),
            Ok(ClientMessage::Signal { to, data }) => self.signal(id, &to, &data),
            Ok(ClientMessage::Leave) => {
                if !self.leave(id) {
                    self.reply_error(id, ErrorCode::NotInRoom, "not in a room");
                }
            }
        }
    }

    /// A binary frame, which protocol v1 has no use for.
    pub fn handle_binary(&mut self, id: &str, now: Instant) {
        if self.admit_frame(id, now) {
            self.reply_error(id, ErrorCode::BadMessage, "binary frames are not part of the protocol");
        }
    }

    /// The next message to write to session `id`'s client.
    pub fn poll_outgoing(&mut self, id: &str) -> Outgoing {
        let Some(session) = self.sessions.get_mut(id).filter(|s| !s.evicted) else {
            return Outgoing::Gone;
        };
        match session.queue.pop_front() {
            Some(message) => {
                session.queued_bytes -= cost(&message);
                Outgoing::Message(message)
            }
            None => Outgoing::Idle,
        }
    }

    /// A session the driver must wake; drain after every call.
    #[must_use]
    pub fn poll_woken(&mut self) -> Option<String> {
        self.woken.pop()
    }

    /// True once session `id` was evicted, or if it does not exist.
    pub fn is_gone(&self, id: &str) -> bool {
        self.sessions.get(id).is_none_or(|s| s.evicted)
    }

    /// An error message for a client that has no session (a refused token),
    /// counted as sent.
    pub fn error_text(&mut self, code: ErrorCode, message: &str) -> String {
        self.count_error(code);
        ServerMessage::Error { code, message }.to_json()
    }

    /// The room session `id` is in.
    pub fn room_of(&self, id: &str) -> Option<&str> {
        self.rooms.room_of(id)
    }

    /// The peer ids of `room`, in the order they joined.
    pub fn members(&self, room: &str) -> impl Iterator<Item = &str> {
        self.rooms.members(room).iter().map(|p| p.id.as_str())
    }

    /// What session `id`'s outbox holds, in bytes as counted for the limit.
    pub fn queued_bytes(&self, id: &str) -> usize {
        self.sessions.get(id).map_or(0, |s| s.queued_bytes)
    }

    /// Rooms opened from `source` that exist now.
    pub fn rooms_opened_by(&self, source: SourceKey) -> usize {
        self.rooms.opened_by(source)
    }

    /// (rooms, peers in rooms, open sessions) right now.
    pub fn counts(&self) -> (usize, usize, usize) {
        (self.rooms.room_count(), self.rooms.peer_count(), self.sessions.len())
    }

    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The invariants of the module doc, checked in full (for tests and
    /// the fuzz harness; it walks everything).
    pub fn check(&self) -> Result<(), &'static str> {
        self.rooms.check()?;
        for (id, session) in &self.sessions {
            let held: usize = session.queue.iter().map(|m| cost(m)).sum();
            if held != session.queued_bytes {
                return Err("an outbox's byte count does not match what it holds");
            }
            if session.queued_bytes > self.limits.max_outbox_bytes {
                return Err("an outbox holds more than max_outbox_bytes");
            }
            if session.evicted && (self.rooms.room_of(id).is_some() || !session.queue.is_empty()) {
                return Err("an evicted session is in a room or holds messages");
            }
        }
        let (_, peers, _) = self.counts();
        let live_in_rooms = self
            .sessions
            .keys()
            .filter(|id| self.rooms.room_of(id).is_some())
            .count();
        if live_in_rooms != peers {
            return Err("a peer in a room has no session");
        }
        Ok(())
    }

    /// Takes a token for a frame from session `id`; false (with a
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

    fn join(&mut self, id: &str, room: &str, name: Option<String>, ice: impl FnOnce(&str) -> Vec<IceServer>) {
        let Some(session) = self.sessions.get(id) else {
            return;
        };
        if session.room_grant.as_deref().is_some_and(|granted| granted != room) {
            return self.reply_error(id, ErrorCode::Unauthorized, "this token is for another room");
        }
        let source = session.source;
        let me = PeerInfo {
            id: id.to_owned(),
            name,
        };
        let peers = match self.rooms.join(me.clone(), source, room) {
            Ok(peers) => peers,
            Err(JoinRefused::RoomFull) => return self.reply_error(id, ErrorCode::RoomFull, "the room is full"),
            Err(JoinRefused::TooManyRooms) => {
                return self.reply_error(
                    id,
                    ErrorCode::RoomFull,
                    "no room can be opened: the server is at its room limit",
                )
            }
            Err(JoinRefused::SourceRooms) => {
                let message = format!(
                    "no room can be opened: {} rooms opened from this address are still open",
                    self.rooms.opened_by(source)
                );
                return self.reply_error(id, ErrorCode::RoomFull, &message);
            }
            Err(JoinRefused::AlreadyInRoom) => {
                return self.reply_error(id, ErrorCode::BadMessage, "already in a room; send leave first")
            }
        };
        let joined: Arc<str> = ServerMessage::PeerJoined {
            id,
            name: me.name.as_deref(),
        }
        .to_json()
        .into();
        let mut evict = Vec::new();
        for peer in &peers {
            self.push(&peer.id, joined.clone(), &mut evict);
        }
        let ice_servers = ice(id);
        let answer = ServerMessage::Joined {
            room,
            id,
            peers: &peers,
            ice_servers: &ice_servers,
        }
        .to_json();
        self.push(id, answer.into(), &mut evict);
        self.evict_all(evict);
    }

    fn signal(&mut self, id: &str, to: &str, data: &RawValue) {
        if self.rooms.room_of(id).is_none() {
            return self.reply_error(id, ErrorCode::NotInRoom, "join a room before signaling");
        }
        if to == id || !self.rooms.same_room(id, to) {
            return self.reply_error(id, ErrorCode::UnknownPeer, "no such peer in this room");
        }
        let message = ServerMessage::Signal { from: id, data }.to_json();
        self.deliver(to, message.into());
    }

    /// Takes `id` out of its room and tells the others; false if it was in
    /// none.
    fn leave(&mut self, id: &str) -> bool {
        let mut evict = Vec::new();
        let left = self.announce_leave(id, &mut evict);
        self.evict_all(evict);
        left
    }

    fn announce_leave(&mut self, id: &str, evict: &mut Vec<String>) -> bool {
        if self.rooms.room_of(id).is_none() {
            return false;
        }
        let left: Arc<str> = ServerMessage::PeerLeft { id }.to_json().into();
        for other in self.rooms.leave(id) {
            self.push(&other, left.clone(), evict);
        }
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

    /// Queues `message` for `to`, or adds `to` to `evict` if it does not
    /// fit. Evictions are collected rather than done here because evicting
    /// tells a room, which may overflow another outbox in turn.
    fn push(&mut self, to: &str, message: Arc<str>, evict: &mut Vec<String>) {
        let Some(session) = self.sessions.get_mut(to).filter(|s| !s.evicted) else {
            return;
        };
        let cost = cost(&message);
        if session.queued_bytes.saturating_add(cost) > self.limits.max_outbox_bytes {
            evict.push(to.to_owned());
            return;
        }
        if session.queue.is_empty() {
            self.woken.push(to.to_owned());
        }
        session.queue.push_back(message);
        session.queued_bytes += cost;
    }

    /// Evicts the sessions of `pending`, and those their `peer-left`
    /// overflows in turn. Ends: each session is evicted at most once.
    fn evict_all(&mut self, mut pending: Vec<String>) {
        while let Some(id) = pending.pop() {
            let Some(session) = self.sessions.get_mut(&id).filter(|s| !s.evicted) else {
                continue;
            };
            debug!(peer = %id, bytes = session.queued_bytes, "signaling outbox full; dropping the session");
            session.evicted = true;
            session.queue = VecDeque::new();
            session.queued_bytes = 0;
            self.counters.evictions += 1;
            self.woken.push(id.clone());
            self.announce_leave(&id, &mut pending);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;
    use std::time::Duration;

    use super::*;

    fn limits() -> Limits {
        Limits {
            room_size: 3,
            max_rooms: 4,
            max_rooms_per_source: 2,
            max_message_size: 1024,
            messages_per_second: 1000,
            max_outbox_bytes: 4096,
        }
    }

    struct Board {
        board: Switchboard,
        now: Instant,
    }

    fn src(n: u8) -> SourceKey {
        SourceKey::from(IpAddr::from([192, 0, 2, n]))
    }

    impl Board {
        fn new(limits: Limits) -> Board {
            Board {
                board: Switchboard::new(limits),
                now: crate::process::clock::mono(),
            }
        }

        fn connect(&mut self, id: &str, grant: Option<&str>) {
            assert!(self.board.connect(id, src(1), grant.map(str::to_owned), self.now));
        }

        fn send(&mut self, id: &str, text: &str) {
            self.now += Duration::from_millis(1);
            self.board.handle_text(id, text, self.now, |_| Vec::new());
            assert_eq!(self.board.check(), Ok(()));
        }

        /// Everything queued for `id`, as JSON.
        fn read(&mut self, id: &str) -> Vec<serde_json::Value> {
            let mut out = Vec::new();
            while let Outgoing::Message(m) = self.board.poll_outgoing(id) {
                out.push(serde_json::from_str(&m).unwrap());
            }
            out
        }

        fn join(&mut self, id: &str, room: &str) {
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
}
