//! The `signal_session` target: the signaling state machine
//! ([`Switchboard`]) driven in-process by a byte program of several
//! sessions that connect, join, signal, leave, ping, send junk, read their
//! outboxes (or do not) and disconnect, with time moved by hand.
//!
//! # Program format
//!
//! A sequence of operations, each an `op` byte and the argument bytes its
//! action takes (a missing argument reads as 0; the program ends when the
//! input does):
//!
//! * bits 0–2: which of [`SESSIONS`] sessions (6 and 7 count as 0 and 1);
//!   sessions 0–2 connect from one source address, 3–5 from another;
//! * bits 3–6: the action (see [`Harness::step`]);
//! * bit 7: move time 100 ms first.
//!
//! # Checks
//!
//! After every operation: [`Switchboard::check`] (a peer is in at most one
//! room, rooms never exceed `room_size` nor a source its share of rooms, no
//! room is empty, outbox byte counts are exact and within
//! `max_outbox_bytes`, evicted sessions hold nothing and are in no room);
//! a session whose outbox went from empty to not, or that was evicted, was
//! woken; a session whose outbox was empty before the operation was not
//! evicted by it (one operation queues far less than the bound, so an
//! eviction always means a client that did not read); a room-bound session
//! is in no other room.
//!
//! Each session's client keeps the view a browser would build from what it
//! reads: `joined` sets its peer list, and from then on a `peer-joined`
//! names someone new (never itself), a `peer-left` someone it was told
//! about, and a `signal` comes from someone it was told about. Every
//! message is JSON of a protocol v1 type; errors carry a v1 code.
//! At the end every session disconnects and nothing is left: no room, no
//! peer, no session, no room charged to a source.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use serde_json::Value;
use turnpike::proto::source::SourceKey;
use turnpike::signaling::protocol::{ErrorCode, IceServer};
use turnpike::signaling::switchboard::{Limits, Outgoing, Switchboard};

/// Sessions a program can use.
pub const SESSIONS: usize = 6;

/// Rooms a program can name (and grant).
pub const ROOMS: [&str; 3] = ["a", "b", "c"];

/// Small limits, so that programs reach them.
pub fn limits() -> Limits {
    Limits {
        room_size: 3,
        max_rooms: 3,
        max_rooms_per_source: 2,
        max_message_size: 1024,
        messages_per_second: 20,
        max_outbox_bytes: 4096,
    }
}

/// Signal payload sizes an action can pick: small, candidate-like, near the
/// limit, and over it (`too-large`).
const SIGNAL_SIZES: [usize; 4] = [2, 200, 900, 1100];

fn session_id(i: usize) -> String {
    format!("{i:016x}")
}

/// What a session's client has been told.
#[derive(Debug, Default)]
struct View {
    /// Peers of the room from the last `joined` on, as told.
    peers: Option<BTreeSet<String>>,
}

#[derive(Debug, Default)]
struct Client {
    connected: bool,
    evicted: bool,
    grant: Option<&'static str>,
    view: View,
}

/// The switchboard and the clients' side of it.
pub struct Harness {
    pub board: Switchboard,
    now: Instant,
    clients: Vec<Client>,
    /// How often each kind of message was read, for tests.
    pub read: BTreeMap<String, usize>,
    /// Evictions seen.
    pub evictions: usize,
}

impl Harness {
    pub fn new() -> Harness {
        Harness {
            board: Switchboard::new(limits()),
            now: Instant::now(),
            clients: (0..SESSIONS).map(|_| Client::default()).collect(),
            read: BTreeMap::new(),
            evictions: 0,
        }
    }

    /// Runs a whole program, checking after every step, then disconnects
    /// everyone and checks that nothing is left.
    pub fn run(data: &[u8]) -> Harness {
        let mut h = Harness::new();
        let mut input = data.iter().copied();
        while let Some(op) = input.next() {
            h.step(op, &mut input);
        }
        h.finish();
        h
    }

    fn source(i: usize) -> SourceKey {
        let last = if i < 3 { 1 } else { 2 };
        SourceKey::from(IpAddr::from([192, 0, 2, last]))
    }

    /// One operation.
    pub fn step(&mut self, op: u8, args: &mut impl Iterator<Item = u8>) {
        let i = usize::from(op & 0x07) % SESSIONS;
        let action = (op >> 3) & 0x0f;
        if op & 0x80 != 0 {
            self.now += Duration::from_millis(100);
        }
        let mut arg = || args.next().unwrap_or(0);
        let id = session_id(i);
        let before: Vec<(usize, bool)> = (0..SESSIONS)
            .map(|j| {
                (
                    self.board.queued_bytes(&session_id(j)),
                    self.board.is_gone(&session_id(j)),
                )
            })
            .collect();
        match action {
            0 => {
                let g = arg();
                let grant = match g % 4 {
                    0 => None,
                    n => Some(ROOMS[usize::from(n) - 1]),
                };
                let fresh = !self.clients[i].connected;
                let connected = self
                    .board
                    .connect(&id, Self::source(i), grant.map(str::to_owned), self.now);
                assert_eq!(
                    connected, fresh,
                    "connect of a taken id must be refused, of a free one done"
                );
                if connected {
                    self.clients[i] = Client {
                        connected: true,
                        grant,
                        ..Client::default()
                    };
                }
            }
            1 => {
                self.board.disconnect(&id);
                self.clients[i] = Client::default();
            }
            2 => {
                let r = arg();
                let room = ROOMS[usize::from(r) % ROOMS.len()];
                let text = match r & 0x80 {
                    0 => format!(r#"{{"type":"join","room":"{room}"}}"#),
                    _ => format!(r#"{{"type":"join","room":"{room}","name":"n{i}"}}"#),
                };
                self.text(i, &text);
            }
            3 => {
                let t = arg();
                let to = match usize::from(t & 0x07) {
                    6 => "ffffffffffffffff".to_owned(),
                    7 => id.clone(),
                    j => session_id(j % SESSIONS),
                };
                let size = SIGNAL_SIZES[usize::from(t >> 3) % SIGNAL_SIZES.len()];
                let text = format!(r#"{{"type":"signal","to":"{to}","data":"{}"}}"#, "s".repeat(size));
                self.text(i, &text);
            }
            4 => self.text(i, r#"{"type":"leave"}"#),
            5 => self.text(i, r#"{"type":"ping"}"#),
            6 => {
                let n = usize::from(arg() % 8);
                self.read(i, if n == 0 { usize::MAX } else { n });
            }
            7 => {
                let len = usize::from(arg());
                let bytes: Vec<u8> = (0..len).map(|_| arg()).collect();
                self.text(i, &String::from_utf8_lossy(&bytes));
            }
            8 => self.board.handle_binary(&id, self.now),
            9 => self.now += Duration::from_secs(1),
            10 => {
                for j in 0..SESSIONS {
                    self.read(j, usize::MAX);
                }
            }
            _ => self.read(i, 1),
        }
        self.after_step(&before);
    }

    /// (queued bytes, gone) of every session, to compare after a step.
    fn snapshot(&self) -> Vec<(usize, bool)> {
        (0..SESSIONS)
            .map(|j| {
                (
                    self.board.queued_bytes(&session_id(j)),
                    self.board.is_gone(&session_id(j)),
                )
            })
            .collect()
    }

    fn text(&mut self, i: usize, text: &str) {
        let id = session_id(i);
        let mut asked = 0;
        self.board.handle_text(&id, text, self.now, |peer| {
            asked += 1;
            assert_eq!(peer, id, "iceServers are made for the joiner");
            vec![IceServer {
                urls: vec![format!("stun:fuzz.example:3478?{peer}")],
                username: None,
                credential: None,
            }]
        });
        assert!(asked <= 1, "ice asked {asked} times for one frame");
    }

    fn after_step(&mut self, before: &[(usize, bool)]) {
        if let Err(broken) = self.board.check() {
            panic!("switchboard invariant broken: {broken}");
        }
        let woken: BTreeSet<String> = std::iter::from_fn(|| self.board.poll_woken()).collect();
        for (j, &(queued_before, gone_before)) in before.iter().enumerate() {
            let id = session_id(j);
            let client = &mut self.clients[j];
            if !client.connected {
                assert!(self.board.is_gone(&id), "a session that was never connected exists");
                continue;
            }
            let gone = self.board.is_gone(&id);
            if gone && !gone_before {
                assert!(queued_before > 0, "session {j} was evicted with an empty outbox");
                assert!(woken.contains(&id), "an evicted session was not woken");
                client.evicted = true;
                client.view = View::default();
                self.evictions += 1;
            }
            assert_eq!(gone, client.evicted, "eviction state of session {j}");
            let queued = self.board.queued_bytes(&id);
            if queued_before == 0 && queued > 0 {
                assert!(woken.contains(&id), "session {j} got mail and was not woken");
            }
            if let (Some(grant), Some(room)) = (client.grant, self.board.room_of(&id)) {
                assert_eq!(room, grant, "a room-bound session is in another room");
            }
        }
    }

    /// Session `i`'s client reads up to `n` messages.
    fn read(&mut self, i: usize, n: usize) {
        let id = session_id(i);
        for _ in 0..n {
            let message = match self.board.poll_outgoing(&id) {
                Outgoing::Message(message) => message,
                Outgoing::Idle => return,
                Outgoing::Gone => {
                    assert!(
                        !self.clients[i].connected || self.clients[i].evicted,
                        "a live session is gone"
                    );
                    return;
                }
            };
            let value: Value = serde_json::from_str(&message).expect("the server sends JSON");
            let kind = value["type"].as_str().expect("a type").to_owned();
            *self.read.entry(kind.clone()).or_default() += 1;
            let view = &mut self.clients[i].view;
            let name = |v: &Value, key: &str| v[key].as_str().expect("an id").to_owned();
            match kind.as_str() {
                "joined" => {
                    assert!(ROOMS.contains(&value["room"].as_str().unwrap_or("")), "{value}");
                    assert_eq!(value["id"], id.as_str());
                    let peers: BTreeSet<String> = value["peers"]
                        .as_array()
                        .expect("peers")
                        .iter()
                        .map(|p| name(p, "id"))
                        .collect();
                    assert!(!peers.contains(&id), "joined lists the joiner");
                    assert!(peers.len() < limits().room_size, "joined a full room: {value}");
                    view.peers = Some(peers);
                }
                "peer-joined" => {
                    let peer = name(&value, "id");
                    let peers = view.peers.as_mut().expect("peer-joined before joined");
                    assert!(peer != id, "told of its own join");
                    assert!(peers.insert(peer), "peer-joined of a peer already there: {value}");
                }
                "peer-left" => {
                    let peer = name(&value, "id");
                    let peers = view.peers.as_mut().expect("peer-left before joined");
                    assert!(peers.remove(&peer), "peer-left of a peer never joined: {value}");
                }
                "signal" => {
                    let from = name(&value, "from");
                    let peers = view.peers.as_ref().expect("signal before joined");
                    assert!(peers.contains(&from), "signal from a peer never joined: {value}");
                    assert!(value["data"].is_string(), "{value}");
                }
                "pong" => {}
                "error" => {
                    let code = value["code"].as_str().expect("a code");
                    assert!(ErrorCode::ALL.contains(&code), "unknown code {code}");
                }
                other => panic!("unknown message type {other}"),
            }
        }
    }

    /// Everyone reads what is left and disconnects; nothing may be left.
    /// (A disconnect tells the room, which may evict a peer in turn, so
    /// each one is checked like a step.)
    fn finish(&mut self) {
        for i in 0..SESSIONS {
            self.read(i, usize::MAX);
            let before = self.snapshot();
            self.board.disconnect(&session_id(i));
            self.clients[i] = Client::default();
            self.after_step(&before);
        }
        assert_eq!(self.board.check(), Ok(()));
        assert_eq!(self.board.counts(), (0, 0, 0), "rooms, peers or sessions leaked");
        for i in [0, 3] {
            assert_eq!(self.board.rooms_opened_by(Self::source(i)), 0, "a room stayed charged");
        }
        let woken: Vec<String> = std::iter::from_fn(|| self.board.poll_woken()).collect();
        for id in woken {
            assert!(self.board.is_gone(&id), "woken after the end");
        }
    }
}

impl Default for Harness {
    fn default() -> Self {
        Harness::new()
    }
}

/// The fuzz target's entry point.
pub fn fuzz_program(data: &[u8]) {
    Harness::run(data);
}

/// Builds programs: one method per action.
#[derive(Debug, Default, Clone)]
pub struct Program(pub Vec<u8>);

impl Program {
    pub fn new() -> Program {
        Program(Vec::new())
    }

    fn op(mut self, session: usize, action: u8, args: &[u8]) -> Program {
        self.0.push((session as u8 & 0x07) | (action << 3));
        self.0.extend_from_slice(args);
        self
    }

    /// Connects, with a grant for `ROOMS[room]` if given.
    pub fn connect(self, s: usize, grant: Option<usize>) -> Program {
        self.op(s, 0, &[grant.map_or(0, |r| r as u8 + 1)])
    }
    pub fn disconnect(self, s: usize) -> Program {
        self.op(s, 1, &[])
    }
    pub fn join(self, s: usize, room: usize) -> Program {
        self.op(s, 2, &[room as u8 | 0x80])
    }
    /// Signals session `to` (6: an unknown id, 7: itself) with payload size
    /// class `size` of [`SIGNAL_SIZES`].
    pub fn signal(self, s: usize, to: usize, size: usize) -> Program {
        self.op(s, 3, &[(to as u8 & 0x07) | ((size as u8) << 3)])
    }
    pub fn leave(self, s: usize) -> Program {
        self.op(s, 4, &[])
    }
    pub fn ping(self, s: usize) -> Program {
        self.op(s, 5, &[])
    }
    /// Reads everything queued for `s`.
    pub fn read(self, s: usize) -> Program {
        self.op(s, 6, &[0])
    }
    pub fn text(self, s: usize, text: &str) -> Program {
        let bytes = &text.as_bytes()[..text.len().min(255)];
        let mut args = vec![bytes.len() as u8];
        args.extend_from_slice(bytes);
        self.op(s, 7, &args)
    }
    pub fn binary(self, s: usize) -> Program {
        self.op(s, 8, &[])
    }
    pub fn second(self) -> Program {
        self.op(0, 9, &[])
    }
    pub fn read_all(self) -> Program {
        self.op(0, 10, &[])
    }
}

/// Seeds: a call, a receiver that never reads, a room-bound session, the
/// room limits, junk and rate limits.
pub fn seeds() -> Vec<Vec<u8>> {
    let call = Program::new()
        .connect(0, None)
        .connect(1, None)
        .join(0, 0)
        .join(1, 0)
        .read_all()
        .signal(1, 0, 2)
        .signal(0, 1, 1)
        .read_all()
        .leave(1)
        .read_all()
        .join(1, 1)
        .disconnect(0)
        .read_all();
    let mut mute = Program::new()
        .connect(0, None)
        .connect(3, None)
        .connect(4, None)
        .join(0, 0)
        .join(3, 0)
        .join(4, 0)
        .read(0)
        .read(3);
    for _ in 0..8 {
        mute = mute.signal(0, 4, 2).signal(3, 4, 1).read(0).read(3).second();
    }
    let granted = Program::new()
        .connect(2, Some(1))
        .join(2, 0)
        .join(2, 1)
        .leave(2)
        .join(2, 2)
        .read(2);
    let limits = Program::new()
        .connect(0, None)
        .connect(1, None)
        .connect(2, None)
        .connect(3, None)
        .join(0, 0)
        .join(1, 1)
        .join(2, 2)
        .join(3, 2)
        .join(2, 1)
        .read_all()
        .connect(4, None)
        .connect(5, None)
        .join(4, 2)
        .join(5, 2)
        .leave(0)
        .join(0, 2)
        .read_all();
    let mut junk = Program::new()
        .connect(5, None)
        .text(5, "{\"type\":\"join\"}")
        .text(5, "not json")
        .binary(5)
        .signal(5, 0, 3)
        .leave(5)
        .read(5);
    for k in 0..45 {
        junk = junk.ping(5);
        if k % 10 == 9 {
            junk = junk.read(5);
        }
    }
    junk = junk.read(5).second().ping(5).read(5);
    [call, mute, granted, limits, junk].into_iter().map(|p| p.0).collect()
}
