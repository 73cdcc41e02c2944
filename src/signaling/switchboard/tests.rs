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

    /// Connects `id` whose WebSocket came with Origin `origin`.
    pub(super) fn connect_from(&mut self, id: &str, origin: Option<&str>) {
        let handshake = Handshake {
            host: None,
            origin: origin.map(str::to_owned),
        };
        assert!(self.board.connect_with(id, src(1), None, handshake, self.now));
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
fn a_resume_from_another_origin_fails_and_leaves_the_session_as_it_was() {
    let mut b = Board::resumable(limits());
    let mut mint = FakeMint::new(Duration::ZERO);
    b.connect("a", None);
    b.connect_from("b", Some("https://app.example"));
    b.join("a", "r");
    let token = b.join_resumable("b", "r", &mut mint);
    b.read("a");
    b.board.disconnect_at("b", b.now);
    let grace_ends = b.now + GRACE;
    b.signal("a", "b", "1");
    let resume = format!(r#"{{"type":"resume","token":"{token}","last":0}}"#);
    // Another origin, and none at all: both refused, nothing spent.
    for (conn, origin) in [
        ("evil", Some("https://evil.example")),
        ("bare", None),
        ("sub", Some("https://app.example.evil")),
    ] {
        b.connect_from(conn, origin);
        b.send_with(conn, &resume, &mut mint);
        let got = b.read(conn);
        assert_eq!(got.len(), 1, "{conn}: {got:?}");
        assert_eq!(got[0]["code"], "resume-failed", "{conn}: {got:?}");
        assert_eq!(b.board.peer_of(conn), Some(conn), "{conn} keeps its own session");
    }
    assert_eq!(b.board.counters().resumes, 0);
    assert_eq!(b.board.poll_timeout(), Some(grace_ends), "still detached");
    // The session's own origin (ASCII case aside, as the door compares)
    // still resumes it, with what it missed.
    b.connect_from("b2", Some("https://APP.example"));
    b.send_with("b2", &resume, &mut mint);
    let got = b.read("b2");
    assert_eq!(got[0]["type"], "resumed", "{got:?}");
    assert_eq!(data_of(&got), [serde_json::json!(1)]);
    assert_eq!(b.board.peer_of("b2"), Some("b"));

    // A session that joined with no Origin is resumed only without one.
    b.connect("c", None);
    let token = b.join_resumable("c", "r", &mut mint);
    b.board.disconnect_at("c", b.now);
    let resume = format!(r#"{{"type":"resume","token":"{token}","last":0}}"#);
    b.connect_from("c-origin", Some("https://app.example"));
    b.send_with("c-origin", &resume, &mut mint);
    assert_eq!(b.read("c-origin")[0]["code"], "resume-failed");
    b.connect_from("c2", None);
    b.send_with("c2", &resume, &mut mint);
    assert_eq!(b.read("c2")[0]["type"], "resumed");
    assert_eq!(b.board.counters().resumes, 2);
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

/// Everything [`Switchboard::poll_released`] names now.
fn released(b: &mut Board) -> Vec<String> {
    std::iter::from_fn(|| b.board.poll_released()).collect()
}

#[test]
fn a_detached_session_is_released_once_when_resumed_out_of_grace_evicted_or_ended() {
    let mut b = Board::resumable(limits());
    let mut mint = FakeMint::new(Duration::ZERO);
    b.connect("a", None);
    b.join("a", "r");
    b.connect("x", None);
    assert!(!b.board.disconnect_at("x", b.now), "in no room: not kept");
    b.connect("v1", None);
    b.join("v1", "r");
    assert!(!b.board.disconnect_at("v1", b.now), "a v1 session is not kept");
    b.read("a");
    b.connect("b", None);
    // Resumed: released once, when the resume takes it.
    let token = b.join_resumable("b", "r", &mut mint);
    assert!(b.board.disconnect_at("b", b.now), "kept for resume");
    assert!(b.board.is_detached("b"));
    assert_eq!(released(&mut b), Vec::<String>::new(), "held while detached");
    b.advance(GRACE / 2, &mut mint);
    assert_eq!(released(&mut b), Vec::<String>::new());
    b.connect("b2", None);
    b.send_with(
        "b2",
        &format!(r#"{{"type":"resume","token":"{token}","last":0}}"#),
        &mut mint,
    );
    assert_eq!(b.board.peer_of("b2"), Some("b"));
    assert_eq!(released(&mut b), ["b"], "the new connection holds its own place");
    // Its grace runs out: released at its end, not before.
    assert!(b.board.disconnect_at("b2", b.now));
    b.advance(GRACE - Duration::from_millis(1), &mut mint);
    assert_eq!(released(&mut b), Vec::<String>::new());
    b.advance(Duration::from_millis(1), &mut mint);
    assert_eq!(released(&mut b), ["b"]);
    assert!(!b.board.is_detached("b"));
    // Evicted while detached.
    b.connect("c", None);
    b.join("c", "s");
    b.connect("d", None);
    b.join_resumable("d", "s", &mut mint);
    b.read("c");
    assert!(b.board.disconnect_at("d", b.now));
    let big = format!("\"{}\"", "x".repeat(900));
    for _ in 0..5 {
        b.signal("c", "d", &big);
    }
    assert_eq!(released(&mut b), ["d"], "evicted");
    // Ended by a resume that cannot be replayed.
    b.read("c");
    b.connect("e", None);
    let token = b.join_resumable("e", "s", &mut mint);
    b.read("c");
    assert!(b.board.disconnect_at("e", b.now));
    b.connect("e2", None);
    b.send_with(
        "e2",
        &format!(r#"{{"type":"resume","token":"{token}","last":7}}"#),
        &mut mint,
    );
    assert_eq!(b.read("e2")[0]["code"], "resume-failed");
    assert_eq!(released(&mut b), ["e"], "ended");
    assert_eq!(b.board.poll_timeout(), None);
}

#[test]
fn detached_again_before_the_release_was_heard_the_release_is_withdrawn() {
    let mut b = Board::resumable(limits());
    let mut mint = FakeMint::new(Duration::ZERO);
    b.connect("a", None);
    b.join("a", "r");
    b.connect("b", None);
    let token = b.join_resumable("b", "r", &mut mint);
    assert!(b.board.disconnect_at("b", b.now));
    b.connect("b2", None);
    b.send_with(
        "b2",
        &format!(r#"{{"type":"resume","token":"{token}","last":0}}"#),
        &mut mint,
    );
    // Not drained: the driver still holds the first place when the
    // session is detached again and keeps a second; one is kept.
    assert!(b.board.disconnect_at("b2", b.now));
    assert_eq!(b.board.check(), Ok(()));
    assert_eq!(released(&mut b), Vec::<String>::new());
    b.advance(GRACE, &mut mint);
    assert_eq!(released(&mut b), ["b"]);
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
        // The places the driver would keep: peer ids of detached sessions.
        let mut places: std::collections::BTreeSet<String> = std::collections::BTreeSet::new();
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
                        let peer = b.board.peer_of(&id).map(str::to_owned);
                        if b.board.disconnect_at(&id, b.now) {
                            places.insert(peer.expect("a kept session had a peer"));
                        }
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
            for peer in released(&mut b) {
                assert!(places.remove(&peer), "{peer} released without a place kept");
            }
            let detached: std::collections::BTreeSet<String> = b
                .board
                .sessions
                .iter()
                .filter(|(_, s)| s.conn.is_none())
                .map(|(id, _)| id.clone())
                .collect();
            assert_eq!(places, detached, "a place is kept exactly for each detached session");
        }
        for id in conns.iter().flatten() {
            let peer = b.board.peer_of(id).map(str::to_owned);
            if b.board.disconnect_at(id, b.now) {
                places.insert(peer.expect("a kept session had a peer"));
            }
        }
        b.advance(GRACE + Duration::from_secs(1), &mut mint);
        for peer in released(&mut b) {
            assert!(places.remove(&peer), "{peer} released without a place kept");
        }
        assert!(places.is_empty(), "program {program} kept places: {places:?}");
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
