//! Signaling protocol v1.1 (`docs/signaling.md`) over real sockets, with an
//! independent WebSocket client (tokio-tungstenite): a socket that drops
//! and resumes with its token (no `peer-left` seen by the room, what was
//! sent meanwhile replayed in order, nothing lost), a grace period that
//! runs out, a resume that takes over a socket that still looks alive, a
//! resume from another Origin than the session joined with refused, fresh `iceServers` pushed before the credential expires; and the two
//! conformance fixes of v1 (a `data` of `null` is relayed, a text frame
//! that is not UTF-8 closes with 1007).

#![allow(clippy::disallowed_methods)] // waits in black-box tests use the real clock

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::Message;

use crate::common::ws_client::{connect, connect_with, cut, WsClient};
use crate::common::{id_of, unix_now, TestServer};

fn server(auth: &str, signaling: &str) -> TestServer {
    TestServer::start(&format!(
        "[auth]\nsecrets = [\"resume-test-secret\"]\n{auth}\n[signaling]\n{signaling}\n"
    ))
}

fn token_of(message: &Value) -> String {
    message["resume"]["token"].as_str().expect("a resume token").to_owned()
}

/// Alice joins `room` with `alice_joins`, then Bob with `bob_joins`, and
/// Alice hears him join: the two clients and their `joined` messages.
async fn alice_then_bob(
    server: &TestServer,
    room: &str,
    alice_joins: Value,
    bob_joins: Value,
) -> (WsClient, WsClient, Value, Value) {
    let mut alice = connect(server).await;
    let mut bob = connect(server).await;
    let a = alice.join(room, alice_joins).await;
    let b = bob.join(room, bob_joins).await;
    let heard = alice.recv().await;
    assert_eq!(heard["type"], "peer-joined", "{heard}");
    assert_eq!(heard["id"], id_of(&b), "{heard}");
    (alice, bob, a, b)
}

#[tokio::test]
async fn a_signal_whose_data_is_null_is_relayed_verbatim() {
    let server = server("", "");
    let (mut alice, mut bob, a, b) = alice_then_bob(&server, "nulls", json!({}), json!({})).await;
    for data in ["null", "0", "false", "\"\"", "[]", "{}"] {
        bob.send_text(&format!(r#"{{"type":"signal","to":"{}","data":{data}}}"#, id_of(&a)))
            .await;
        let frame = alice.ws.next().await.expect("a frame").expect("a message");
        assert_eq!(
            frame.into_text().expect("text").as_str(),
            format!(r#"{{"type":"signal","from":"{}","data":{data}}}"#, id_of(&b)),
            "data {data}"
        );
    }
    bob.send_text(&format!(r#"{{"type":"signal","to":"{}"}}"#, id_of(&a)))
        .await;
    assert_eq!(bob.recv().await["code"], "bad-message", "a missing data still is one");
}

#[tokio::test]
async fn a_text_frame_that_is_not_utf8_closes_with_1007() {
    let server = server("", "");
    let (mut alice, mut bob, _, _) = alice_then_bob(&server, "utf8", json!({}), json!({})).await;
    let frame = Frame::message(vec![b'{', 0xff, 0xfe, b'}'], OpCode::Data(Data::Text), true);
    bob.ws.send(Message::Frame(frame)).await.expect("send a raw frame");
    assert_eq!(bob.close_code().await, Some(1007));
    let left = alice.recv().await;
    assert_eq!(left["type"], "peer-left", "{left}");
}

#[tokio::test]
async fn a_v1_client_gets_no_resume_and_a_dropped_socket_is_a_leave_at_once() {
    let server = server("", "");
    let (mut alice, bob, _, b) = alice_then_bob(&server, "v1", json!({}), json!({})).await;
    assert!(b.get("resume").is_none(), "{b}");
    let started = Instant::now();
    cut(bob);
    assert_eq!(alice.recv().await, json!({"type": "peer-left", "id": id_of(&b)}));
    assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
}

#[tokio::test]
async fn a_dropped_socket_resumes_with_no_peer_left_and_every_signal_in_order() {
    let server = server("", "resume_grace = \"10s\"");
    let (mut alice, mut bob, a, b) = alice_then_bob(&server, "blip", json!({}), json!({"resume": true})).await;
    assert_eq!(b["resume"]["grace"], 10, "{b}");
    let token = token_of(&b);
    assert!(token.len() >= 22, "a token of 128 bits at least: {token}");
    let (a_id, b_id) = (id_of(&a), id_of(&b));

    alice.signal(&b_id, json!(1)).await;
    assert_eq!(bob.recv().await["data"], 1);
    bob.signal(&a_id, json!("before")).await;
    assert_eq!(alice.recv().await["data"], "before");
    let read = bob.read;
    cut(bob);
    // Signals to bob while he is away are queued, not refused.
    tokio::time::sleep(Duration::from_millis(200)).await;
    for n in 2..=4 {
        alice.signal(&b_id, json!(n)).await;
    }
    alice.quiet("alice while bob is away").await;

    let mut bob = connect(&server).await;
    bob.read = read;
    bob.send(json!({"type": "resume", "token": token, "last": read})).await;
    let resumed = bob.recv().await;
    assert_eq!(resumed["type"], "resumed", "{resumed}");
    assert_eq!(resumed["id"], b_id.as_str());
    assert_eq!(resumed["room"], "blip");
    assert_eq!(resumed["received"], 1, "bob's one signal was read");
    assert_ne!(token_of(&resumed), token, "a fresh token");
    for n in 2..=4 {
        let message = bob.recv().await;
        assert_eq!(message, json!({"type": "signal", "from": a_id, "data": n}));
    }
    bob.quiet("bob after the replay").await;
    // Still the same peer to the room, both ways.
    bob.signal(&a_id, json!("after")).await;
    assert_eq!(
        alice.recv().await,
        json!({"type": "signal", "from": b_id, "data": "after"})
    );
    alice.signal(&b_id, json!(5)).await;
    assert_eq!(bob.recv().await["data"], 5);
    alice.quiet("alice: no peer-left").await;

    // The spent token is worthless.
    let mut thief = connect(&server).await;
    thief.send(json!({"type": "resume", "token": token, "last": 0})).await;
    assert_eq!(thief.recv().await["code"], "resume-failed");
    // A leave is final: the room hears it at once and the socket end
    // afterwards starts no grace period.
    bob.send(json!({"type": "leave"})).await;
    assert_eq!(alice.recv().await, json!({"type": "peer-left", "id": b_id}));
}

#[tokio::test]
async fn the_room_hears_peer_left_once_the_grace_period_runs_out() {
    let server = server("", "resume_grace = \"1s\"");
    let (mut alice, bob, _, b) = alice_then_bob(&server, "grace", json!({}), json!({"resume": true})).await;
    let cut_at = Instant::now();
    cut(bob);
    let left = alice.recv().await;
    let waited = cut_at.elapsed();
    assert_eq!(left, json!({"type": "peer-left", "id": id_of(&b)}));
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(3),
        "peer-left after {waited:?}, grace 1 s"
    );
    let mut late = connect(&server).await;
    late.send(json!({"type": "resume", "token": token_of(&b), "last": 0}))
        .await;
    assert_eq!(late.recv().await["code"], "resume-failed");
}

#[tokio::test]
async fn a_resume_takes_over_a_socket_that_still_looks_alive() {
    let server = server("", "");
    let (mut alice, mut old, _, b) = alice_then_bob(&server, "takeover", json!({}), json!({"resume": true})).await;
    let mut new = connect(&server).await;
    new.send(json!({"type": "resume", "token": token_of(&b), "last": 0}))
        .await;
    assert_eq!(new.recv().await["type"], "resumed");
    assert_eq!(old.close_code().await, Some(1000), "the old socket is closed normally");
    alice.quiet("alice: no peer-left for a takeover").await;
    alice.signal(&id_of(&b), json!("to the new socket")).await;
    assert_eq!(new.recv().await["data"], "to the new socket");
}

#[tokio::test]
async fn fresh_ice_servers_are_pushed_before_the_credential_expires() {
    let server = server("credential_ttl = \"4s\"", "");
    let (mut alice, mut v1, joined, _) =
        alice_then_bob(&server, "refresh", json!({"iceRefresh": true}), json!({})).await;
    let expiry = |servers: &Value| -> u64 {
        let user = servers[1]["username"].as_str().expect("a TURN username");
        user.split_once(':').expect("expiry:name").0.parse().expect("a number")
    };
    let first = expiry(&joined["iceServers"]);
    let started = Instant::now();
    let refresh = alice.recv().await;
    let after = started.elapsed();
    assert_eq!(refresh["type"], "ice-servers", "{refresh}");
    assert!(
        after >= Duration::from_secs(2) && after < Duration::from_millis(3900),
        "{after:?}"
    );
    assert!(unix_now() < first, "pushed before the first credential expired");
    let second = expiry(&refresh["iceServers"]);
    assert!(second > first, "a later expiry: {second} vs {first}");
    assert!(refresh["iceServers"][1]["credential"].is_string());
    v1.quiet("a client that did not ask gets no refresh").await;
}

#[tokio::test]
async fn a_clean_close_is_a_leave_even_for_a_resumable_session() {
    let server = server("", "resume_grace = \"30s\"");
    let (mut alice, mut bob, _, b) = alice_then_bob(&server, "closing", json!({}), json!({"resume": true})).await;
    let started = Instant::now();
    bob.ws.close(None).await.expect("close");
    assert_eq!(alice.recv().await, json!({"type": "peer-left", "id": id_of(&b)}));
    assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
}

#[tokio::test]
async fn a_resume_from_another_origin_than_the_join_is_refused() {
    const APP: &str = "https://app.example";
    let server = server(
        "",
        &format!("resume_grace = \"10s\"\nallowed_origins = [\"{APP}\", \"https://other.example\"]"),
    );
    let mut alice = connect(&server).await;
    alice.join("origins", json!({})).await;
    let mut bob = connect_with(&server, &[("Origin", APP)]).await.expect("upgraded");
    let b = bob.join("origins", json!({"resume": true})).await;
    assert_eq!(alice.recv().await["type"], "peer-joined");
    let (b_id, token) = (id_of(&b), token_of(&b));
    cut(bob);
    alice.signal(&b_id, json!("while away")).await;
    let resume = json!({"type": "resume", "token": token, "last": 0});

    // Another allowed origin, and no Origin at all: both refused, and the
    // session stays as it was.
    let mut other = connect_with(&server, &[("Origin", "https://other.example")])
        .await
        .expect("upgraded");
    other.send(resume.clone()).await;
    assert_eq!(other.recv().await["code"], "resume-failed");
    let mut bare = connect(&server).await;
    bare.send(resume.clone()).await;
    assert_eq!(bare.recv().await["code"], "resume-failed");
    alice.quiet("alice: no peer-left").await;

    // The origin it joined with resumes it, with what it missed.
    let mut bob = connect_with(&server, &[("Origin", APP)]).await.expect("upgraded");
    bob.send(resume).await;
    let resumed = bob.recv().await;
    assert_eq!(resumed["type"], "resumed", "{resumed}");
    assert_eq!(resumed["id"], b_id.as_str());
    assert_eq!(bob.recv().await["data"], "while away");

    // A session that joined with no Origin resumes only without one.
    let mut carol = connect(&server).await;
    let c = carol.join("origins-none", json!({"resume": true})).await;
    cut(carol);
    let resume = json!({"type": "resume", "token": token_of(&c), "last": 0});
    let mut framed = connect_with(&server, &[("Origin", APP)]).await.expect("upgraded");
    framed.send(resume.clone()).await;
    assert_eq!(framed.recv().await["code"], "resume-failed");
    let mut carol = connect(&server).await;
    carol.send(resume).await;
    assert_eq!(carol.recv().await["type"], "resumed");
}
