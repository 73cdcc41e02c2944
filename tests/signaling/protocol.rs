//! The signaling endpoint over real sockets, with an independent WebSocket
//! client (tokio-tungstenite): protocol v1 (join, peer list, relay, leave,
//! errors), its limits, `/ice-servers`, origin and token checks, HTTPS, and
//! a credential handed out by signaling used for a real TURN allocation.

#![allow(clippy::disallowed_methods)] // waits in black-box tests use the real clock

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

use crate::common::ws_client::{connect, connect_url, connect_with, WsClient as Client};
use crate::common::{id_of, rest_credential, turn_client, unix_now, EchoPeer, TestServer, PATIENCE};

type PlainClient = Client;

const SECRET: &str = "signaling-test-secret";

fn secret_toml() -> String {
    format!("[auth]\nsecrets = [\"{SECRET}\"]\n")
}

/// A server with a shared secret and `signaling` keys added.
fn server(signaling: &str) -> TestServer {
    TestServer::start(&format!("{}\n[signaling]\n{signaling}\n", secret_toml()))
}

#[tokio::test]
async fn join_lists_peers_announces_newcomers_and_relays_signals_verbatim() {
    let server = server("");
    let mut alice = connect(&server).await;
    let mut bob = connect(&server).await;
    let a = alice.join("call-1", "Alice").await;
    assert_eq!(a["peers"], json!([]));
    let b = bob.join("call-1", "Bob").await;
    assert_eq!(b["peers"], json!([{"id": id_of(&a), "name": "Alice"}]));
    assert_ne!(id_of(&a), id_of(&b));
    assert_eq!(
        alice.recv().await,
        json!({"type": "peer-joined", "id": id_of(&b), "name": "Bob"})
    );

    // `data` arrives byte for byte as sent, whatever JSON it is.
    let data = r#"{"sdp":"v=0\r\no=- 1 2 IN IP4 127.0.0.1","nested":[1,2.5,"é",null,{"k":true}]}"#;
    bob.send_text(&format!(r#"{{"type":"signal","to":"{}","data":{data}}}"#, id_of(&a)))
        .await;
    let got = alice.ws.next().await.expect("a frame").expect("a message");
    assert_eq!(
        got.into_text().expect("text").as_str(),
        format!(r#"{{"type":"signal","from":"{}","data":{data}}}"#, id_of(&b))
    );
    alice
        .send(json!({"type": "signal", "to": id_of(&b), "data": "answer"}))
        .await;
    assert_eq!(
        bob.recv().await,
        json!({"type": "signal", "from": id_of(&a), "data": "answer"})
    );
    // Nothing else was sent to either side.
    assert_eq!(alice.try_recv(Duration::from_millis(200)).await, None);
    assert_eq!(bob.try_recv(Duration::from_millis(200)).await, None);
}

#[tokio::test]
async fn joined_carries_ice_servers_whose_credential_allocates_a_relay() {
    let server = server("");
    let mut client = connect(&server).await;
    let joined = client.join("r", "x").await;
    let port = server.addr().port();
    let ice = joined["iceServers"].as_array().expect("iceServers");
    assert_eq!(ice[0], json!({"urls": [format!("stun:127.0.0.1:{port}")]}));
    let turn = &ice[1];
    assert_eq!(
        turn["urls"],
        json!([
            format!("turn:127.0.0.1:{port}?transport=udp"),
            format!("turn:127.0.0.1:{port}?transport=tcp"),
            format!("turns:127.0.0.1:{}?transport=tcp", server.tls_addr().port()),
        ])
    );
    // The username is <expiry>:<peer id>, about credential_ttl (24 h) from
    // now, and the password is what the shared secret gives (computed here
    // independently).
    let username = turn["username"].as_str().expect("username");
    let (expiry, name) = username.split_once(':').expect("<expiry>:<name>");
    assert_eq!(name, id_of(&joined));
    let expiry: u64 = expiry.parse().expect("numeric expiry");
    assert!(expiry.abs_diff(unix_now() + 86_400) < 60, "expiry {expiry}");
    let (_, password) = rest_credential(SECRET, name, expiry);
    assert_eq!(turn["credential"], password.as_str());

    // And it works: an independent TURN client allocates and relays with it.
    let (client, _) = turn_client(server.addr(), username, &password).await;
    let relay = tokio::time::timeout(PATIENCE, client.allocate())
        .await
        .expect("Allocate answered")
        .expect("Allocate accepted");
    crate::common::assert_relay_round_trips(&relay, &EchoPeer::start(), 3, "signaling credential").await;
}

#[tokio::test]
async fn errors_for_unknown_peers_and_signals_outside_a_room() {
    let server = server("");
    let mut alice = connect(&server).await;
    let mut bob = connect(&server).await;
    alice.send(json!({"type": "signal", "to": "x", "data": 1})).await;
    alice.expect_error("not-in-room").await;
    alice.send(json!({"type": "leave"})).await;
    alice.expect_error("not-in-room").await;
    let a = alice.join("room-a", "A").await;
    let b = bob.join("room-b", "B").await;
    for to in ["0000000000000000".to_owned(), id_of(&b), id_of(&a)] {
        alice.send(json!({"type": "signal", "to": to, "data": 1})).await;
        alice.expect_error("unknown-peer").await;
    }
    // A second join without leaving is refused; the first room is kept.
    alice.send(json!({"type": "join", "room": "room-b"})).await;
    alice.expect_error("bad-message").await;
    assert_eq!(bob.try_recv(Duration::from_millis(200)).await, None, "bob saw nothing");
    alice.assert_usable().await;
}

#[tokio::test]
async fn a_full_room_refuses_and_a_leave_frees_the_seat() {
    let server = server("room_size = 2");
    let mut clients = Vec::new();
    for name in ["a", "b", "c"] {
        clients.push((name, connect(&server).await));
    }
    let a = clients[0].1.join("small", "a").await;
    clients[1].1.join("small", "b").await;
    clients[2].1.send(json!({"type": "join", "room": "small"})).await;
    clients[2].1.expect_error("room-full").await;
    assert_eq!(clients[0].1.recv().await["type"], "peer-joined");
    clients[0].1.send(json!({"type": "leave"})).await;
    assert_eq!(clients[1].1.recv().await, json!({"type": "peer-left", "id": id_of(&a)}));
    let c = clients[2].1.join("small", "c").await;
    assert_eq!(c["peers"].as_array().map(Vec::len), Some(1));
}

#[tokio::test]
async fn leaving_closing_and_dropping_the_connection_all_tell_the_room_and_free_it() {
    // One room at a time: if a room leaked, the next join would be refused.
    let server = server("max_rooms = 1");
    let mut alice = connect(&server).await;
    let a = alice.join("only", "A").await;

    // Explicit leave, then a clean WebSocket close, then a dropped TCP
    // connection: each is seen by the room at once.
    for how in ["leave", "close", "drop"] {
        let mut bob = connect(&server).await;
        let b = bob.join("only", "B").await;
        assert_eq!(alice.recv().await["type"], "peer-joined", "{how}");
        match how {
            "leave" => bob.send(json!({"type": "leave"})).await,
            "close" => bob.ws.close(None).await.expect("close"),
            _ => drop(bob),
        }
        let left = alice.recv().await;
        assert_eq!(left, json!({"type": "peer-left", "id": id_of(&b)}), "{how}");
    }
    drop(alice);
    let _ = a;
    // Alice's room is gone once she is: another room can be opened.
    let mut carol = connect(&server).await;
    let mut retries = 0;
    loop {
        carol.send(json!({"type": "join", "room": "another"})).await;
        let answer = carol.recv().await;
        if answer["type"] == "joined" {
            break;
        }
        // The server may not have seen Alice's socket close yet.
        assert_eq!(answer["code"], "room-full", "{answer}");
        retries += 1;
        assert!(retries < 50, "the room of a departed peer was never freed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn malformed_messages_get_bad_message_and_the_socket_stays_usable() {
    let server = server("");
    let mut client = connect(&server).await;
    for bad in [
        "not json",
        "{\"type\":",
        "[1,2]",
        "{}",
        "{\"type\":\"dance\"}",
        "{\"type\":\"join\"}",
        "{\"type\":\"join\",\"room\":\"has space\"}",
        "{\"type\":\"join\",\"room\":\"ok\",\"name\":7}",
        "{\"type\":\"signal\",\"to\":\"x\"}",
    ] {
        client.send_text(bad).await;
        client.expect_error("bad-message").await;
    }
    client
        .ws
        .send(Message::binary(vec![1u8, 2, 3]))
        .await
        .expect("send binary");
    client.expect_error("bad-message").await;
    client.assert_usable().await;
    client.join("still-works", "x").await;
}

#[tokio::test]
async fn oversized_messages_are_refused_and_huge_ones_close_the_socket() {
    let server = server("max_message_size = 1024");
    let mut client = connect(&server).await;
    let pad = "x".repeat(2000);
    client.send(json!({"type": "signal", "to": "x", "data": pad})).await;
    client.expect_error("too-large").await;
    client.assert_usable().await;
    // Over four times the limit, the frame is not even read.
    let mut other = connect(&server).await;
    other.join("r", "o").await;
    client.join("r", "c").await;
    let _ = other.recv().await; // peer-joined
    let huge = "y".repeat(5000);
    let _ = client.ws.send(Message::text(format!("{{\"data\":\"{huge}\"}}"))).await;
    assert!(client.closed().await, "a 5 KB message did not close the socket");
    assert_eq!(other.recv().await["type"], "peer-left");
}

#[tokio::test]
async fn a_client_that_misses_heartbeats_is_dropped_and_the_room_told() {
    let server = server("ping_interval = \"1s\"\nheartbeat_timeout = \"2s\"");
    let mut alice = connect(&server).await;
    let mut mute = connect(&server).await;
    alice.join("hb", "A").await;
    let m = mute.join("hb", "M").await;
    assert_eq!(alice.recv().await["type"], "peer-joined");
    // `mute` stops reading, so it answers no ping; alice keeps reading (her
    // client answers pings) and must outlive it.
    let started = std::time::Instant::now();
    let left = alice
        .try_recv(Duration::from_secs(6))
        .await
        .expect("peer-left within 6 s");
    assert_eq!(left, json!({"type": "peer-left", "id": id_of(&m)}));
    assert!(
        started.elapsed() >= Duration::from_millis(1500),
        "dropped after {:?}, before the heartbeat timeout",
        started.elapsed()
    );
    alice.assert_usable().await;
    assert!(mute.closed().await, "the silent client's socket was not closed");
}

#[tokio::test]
async fn message_floods_are_rate_limited_without_closing_the_socket() {
    let server = server("messages_per_second = 5");
    let mut client = connect(&server).await;
    // A burst of twice the rate passes; beyond, messages are refused.
    for _ in 0..30 {
        client.send(json!({"type": "ping"})).await;
    }
    let mut answers: HashMap<String, usize> = HashMap::new();
    for _ in 0..30 {
        let answer = client.recv().await;
        let key = match answer["type"].as_str() {
            Some("error") => answer["code"].as_str().unwrap_or("?").to_owned(),
            other => other.unwrap_or("?").to_owned(),
        };
        *answers.entry(key).or_default() += 1;
    }
    let pongs = answers.get("pong").copied().unwrap_or(0);
    assert!((10..=20).contains(&pongs), "{answers:?}");
    assert_eq!(
        answers.get("rate-limited").copied().unwrap_or(0),
        30 - pongs,
        "{answers:?}"
    );
    tokio::time::sleep(Duration::from_millis(600)).await;
    client.assert_usable().await;
}

#[tokio::test]
async fn many_rooms_at_once_without_cross_talk() {
    let server = server("");
    const ROOMS: usize = 12;
    const PER_ROOM: usize = 3;
    let mut members: Vec<Vec<(String, PlainClient)>> = Vec::new();
    for r in 0..ROOMS {
        let mut room = Vec::new();
        for p in 0..PER_ROOM {
            let mut client = connect(&server).await;
            let joined = client.join(&format!("room-{r}"), &format!("p{p}")).await;
            room.push((id_of(&joined), client));
        }
        members.push(room);
    }
    // Drain the peer-joined announcements: member p saw PER_ROOM - 1 - p.
    for room in &mut members {
        for (p, (_, client)) in room.iter_mut().enumerate() {
            for _ in 0..PER_ROOM - 1 - p {
                assert_eq!(client.recv().await["type"], "peer-joined");
            }
        }
    }
    // Everyone signals everyone else in the room, naming the room.
    for (r, room) in members.iter_mut().enumerate() {
        let ids: Vec<String> = room.iter().map(|(id, _)| id.clone()).collect();
        for (id, client) in room.iter_mut() {
            for to in ids.iter().filter(|to| *to != id) {
                client
                    .send(json!({"type": "signal", "to": to, "data": {"room": r, "from": id}}))
                    .await;
            }
        }
    }
    for (r, room) in members.iter_mut().enumerate() {
        let ids: BTreeSet<String> = room.iter().map(|(id, _)| id.clone()).collect();
        for (id, client) in room.iter_mut() {
            let mut senders = BTreeSet::new();
            for _ in 0..PER_ROOM - 1 {
                let message = client.recv().await;
                assert_eq!(message["type"], "signal");
                assert_eq!(message["data"]["room"], r, "a signal crossed rooms: {message}");
                assert_eq!(message["from"], message["data"]["from"]);
                senders.insert(message["from"].as_str().unwrap_or_default().to_owned());
            }
            let expected: BTreeSet<String> = ids.iter().filter(|other| *other != id).cloned().collect();
            assert_eq!(senders, expected);
            assert_eq!(client.try_recv(Duration::from_millis(50)).await, None);
        }
    }
}

/// `?token=` as an application backend would mint it, computed here
/// independently: `<expiry>.<base64url(HMAC-SHA256(secret, expiry))>`.
fn token(secret: &str, expiry: u64) -> String {
    signed_token(secret, &expiry.to_string())
}

/// `<signed>.<base64url(HMAC-SHA256(secret, signed))>`.
fn signed_token(secret: &str, signed: &str) -> String {
    use base64::Engine;
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    let tag = ring::hmac::sign(&key, signed.as_bytes());
    format!(
        "{signed}.{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(tag.as_ref())
    )
}

#[tokio::test]
async fn a_token_secret_gates_the_websocket() {
    let server = server("token_secret = \"gate\"");
    let base = format!("ws://{}/ws", server.http_addr());
    let soon = unix_now() + 300;
    for bad in [
        base.clone(),
        format!("{base}?token=junk"),
        format!("{base}?token={}", token("wrong", soon)),
        format!("{base}?token={}", token("gate", unix_now() - 1)),
    ] {
        let mut client = connect_url(&bad).await;
        client.expect_error("unauthorized").await;
        assert!(client.closed().await, "{bad}: not closed");
    }
    let mut client = connect_url(&format!("{base}?token={}", token("gate", soon))).await;
    client.join("gated", "ok").await;
}

#[tokio::test]
async fn origins_outside_the_allowed_list_are_refused() {
    let server = server("allowed_origins = [\"https://app.example\"]");
    let url = format!("ws://{}/ws", server.http_addr());
    let request = |origin: &str| {
        let mut request = url.as_str().into_client_request().expect("request");
        request.headers_mut().insert("origin", origin.parse().expect("header"));
        request
    };
    let refused = tokio_tungstenite::connect_async(request("https://evil.example")).await;
    match refused {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => assert_eq!(response.status(), 403),
        other => panic!("expected 403, got {:?}", other.map(|_| ())),
    }
    let (ws, _) = tokio_tungstenite::connect_async(request("https://app.example"))
        .await
        .expect("the allowed origin connects");
    Client::new(ws).join("o", "ok").await;
}

#[tokio::test]
async fn by_default_only_same_origin_pages_and_clients_without_origin_may_open_the_websocket() {
    let server = server("");
    let own = format!("http://{}", server.http_addr());
    // An honest page of the server's own origin, open throughout.
    let mut page = connect_with(&server, &[("Origin", &own)])
        .await
        .expect("the page's own origin connects");
    page.join("same-origin", "page").await;
    let other_port = format!("http://127.0.0.1:{}", server.http_addr().port() + 1);
    let rebound_host = format!("evil.example:{}", server.http_addr().port());
    let rebound_origin = format!("http://{rebound_host}");
    for headers in [
        vec![("Origin", "https://evil.example")],
        vec![("Origin", "null")],
        vec![("Origin", other_port.as_str())],
        // DNS rebinding: a foreign name that resolves to loopback.
        vec![("Origin", rebound_origin.as_str()), ("Host", rebound_host.as_str())],
    ] {
        assert_eq!(connect_with(&server, &headers).await.err(), Some(403), "{headers:?}");
        page.assert_usable().await;
    }
    // The same origin in another case, and a client that sends no Origin.
    let upper = own.to_uppercase().replace("HTTP://", "http://");
    let mut again = connect_with(&server, &[("Origin", &upper)])
        .await
        .expect("case does not matter");
    let mut tool = connect(&server).await;
    let joined = tool.join("same-origin", "tool").await;
    assert_eq!(joined["peers"].as_array().map(Vec::len), Some(1));
    assert_eq!(page.recv().await["type"], "peer-joined");
    again.assert_usable().await;
    page.assert_usable().await;
}

#[tokio::test]
async fn listed_origins_replace_the_same_origin_rule() {
    let server = server("allowed_origins = [\"https://app.example\"]");
    let mut app = connect_with(&server, &[("Origin", "https://app.example")])
        .await
        .expect("the listed origin connects");
    app.join("listed", "app").await;
    let own = format!("http://{}", server.http_addr());
    assert_eq!(connect_with(&server, &[("Origin", &own)]).await.err(), Some(403));
    assert_eq!(
        connect_with(&server, &[("Origin", "https://evil.example")]).await.err(),
        Some(403)
    );
    connect(&server).await.assert_usable().await;
    app.assert_usable().await;
}

/// A room-bound `?token=`, computed here independently:
/// `<expiry>.<room>.<base64url(HMAC-SHA256(secret, "<expiry>.<room>"))>`.
fn room_token(secret: &str, expiry: u64, room: &str) -> String {
    signed_token(secret, &format!("{expiry}.{room}"))
}

#[tokio::test]
async fn a_room_bound_token_joins_its_room_only() {
    let server = server("token_secret = \"gate\"");
    let base = format!("ws://{}/ws", server.http_addr());
    let soon = unix_now() + 300;
    // An honest holder of an unbound token, served throughout.
    let mut honest = connect_url(&format!("{base}?token={}", token("gate", soon))).await;
    honest.join("elsewhere", "honest").await;

    let bound = room_token("gate", soon, "standup");
    let mut guest = connect_url(&format!("{base}?token={bound}")).await;
    for other in ["elsewhere", "standup2", "Standup"] {
        guest.send(json!({"type": "join", "room": other})).await;
        guest.expect_error("unauthorized").await;
    }
    assert_eq!(honest.try_recv(Duration::from_millis(200)).await, None, "nobody joined");
    guest.assert_usable().await;
    guest.join("standup", "guest").await;
    guest.send(json!({"type": "leave"})).await;
    guest.send(json!({"type": "join", "room": "elsewhere"})).await;
    guest.expect_error("unauthorized").await;

    // The room is signed: moving a token to another room voids it.
    let moved = bound.replacen("standup", "elsewhere", 1);
    let mut forger = connect_url(&format!("{base}?token={moved}")).await;
    forger.expect_error("unauthorized").await;
    assert!(forger.closed().await, "a forged token's socket stays open");
    assert_eq!(honest.try_recv(Duration::from_millis(200)).await, None);
    honest.assert_usable().await;
}

/// Status, headers (lower-case names) and body of a GET with `headers`.
async fn http_get(server: &TestServer, path: &str, headers: &[(&str, &str)]) -> (u16, HashMap<String, String>, String) {
    let mut stream = tokio::net::TcpStream::connect(server.http_addr())
        .await
        .expect("connect");
    request_on(&mut stream, "GET", path, headers).await
}

async fn request_on(
    stream: &mut (impl AsyncRead + AsyncWrite + Unpin),
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, HashMap<String, String>, String) {
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).await.expect("send request");
    let mut response = Vec::new();
    tokio::time::timeout(PATIENCE, stream.read_to_end(&mut response))
        .await
        .expect("response within 5 s")
        .expect("read response");
    let response = String::from_utf8_lossy(&response).into_owned();
    let (head, body) = response.split_once("\r\n\r\n").expect("a header block");
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .expect("a status line");
    let headers = lines
        .filter_map(|l| l.split_once(": "))
        .map(|(k, v)| (k.to_ascii_lowercase(), v.to_owned()))
        .collect();
    (status, headers, body.to_owned())
}

/// Behind a load balancer (issue 20): the URLs name `turn_host` and the
/// ports of `turn_ports`, not the listening ones; a transport left out of
/// `turn_ports` keeps its listening port.
#[tokio::test]
async fn ice_servers_name_the_advertised_host_and_ports() {
    let server = server("api_key = \"k\"\nturn_host = \"turn.example.org\"\nturn_ports = { udp = 3478, tls = 443 }");
    let (status, _, body) = http_get(&server, "/ice-servers", &[("Authorization", "Bearer k")]).await;
    assert_eq!(status, 200, "{body}");
    let body: Value = serde_json::from_str(&body).expect("JSON body");
    assert_eq!(body["iceServers"][0]["urls"], json!(["stun:turn.example.org:3478"]));
    let tcp = server.addr().port();
    assert_eq!(
        body["iceServers"][1]["urls"],
        json!([
            "turn:turn.example.org:3478?transport=udp",
            format!("turn:turn.example.org:{tcp}?transport=tcp"),
            "turns:turn.example.org:443?transport=tcp"
        ])
    );
    // `joined` hands out the same list.
    let mut alice = connect(&server).await;
    let joined = alice.join("lb", "Alice").await;
    for i in 0..2 {
        assert_eq!(joined["iceServers"][i]["urls"], body["iceServers"][i]["urls"]);
    }
}

#[tokio::test]
async fn ice_servers_endpoint_needs_the_api_key() {
    let without_key = server("");
    for path in ["/ice-servers", "/test/self-check"] {
        let (status, _, _) = http_get(&without_key, path, &[("Authorization", "Bearer x")]).await;
        assert_eq!(
            status, 404,
            "{path}: no api_key configured: the endpoint does not exist"
        );
    }

    let server = server("api_key = \"backend-key\"\nallowed_origins = [\"https://app.example\"]");
    for headers in [
        vec![],
        vec![("Authorization", "Bearer wrong")],
        vec![("Authorization", "backend-key")],
        vec![("Authorization", "Bearer backend-ke")],
    ] {
        for path in ["/ice-servers", "/test/self-check"] {
            let (status, _, _) = http_get(&server, path, &headers).await;
            assert_eq!(status, 401, "{path}: {headers:?}");
        }
    }
    let (status, headers, body) = http_get(
        &server,
        "/ice-servers?user=app-backend",
        &[
            ("Authorization", "Bearer backend-key"),
            ("Origin", "https://app.example"),
        ],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        headers.get("access-control-allow-origin").map(String::as_str),
        Some("https://app.example")
    );
    let body: Value = serde_json::from_str(&body).expect("JSON body");
    assert_eq!(body["ttl"], 86_400);
    let turn = &body["iceServers"][1];
    let username = turn["username"].as_str().expect("username");
    let (expiry, name) = username.split_once(':').expect("<expiry>:<name>");
    assert_eq!(name, "app-backend");
    let (_, password) = rest_credential(SECRET, name, expiry.parse().expect("expiry"));
    assert_eq!(turn["credential"], password.as_str());
    assert_eq!(
        turn["urls"][0],
        format!("turn:127.0.0.1:{}?transport=udp", server.addr().port()),
        "without turn_host nor turn_ports: the Host and the listening ports"
    );

    // CORS: preflight from the allowed origin only.
    let mut stream = tokio::net::TcpStream::connect(server.http_addr())
        .await
        .expect("connect");
    let (status, headers, _) = request_on(
        &mut stream,
        "OPTIONS",
        "/ice-servers",
        &[
            ("Origin", "https://app.example"),
            ("Access-Control-Request-Method", "GET"),
        ],
    )
    .await;
    assert_eq!(status, 204);
    assert_eq!(
        headers.get("access-control-allow-headers").map(String::as_str),
        Some("authorization")
    );
    let (_, headers, _) = http_get(
        &server,
        "/ice-servers",
        &[
            ("Authorization", "Bearer backend-key"),
            ("Origin", "https://evil.example"),
        ],
    )
    .await;
    assert!(!headers.contains_key("access-control-allow-origin"));
}

#[tokio::test]
async fn the_demo_page_is_served_with_its_assets() {
    let server = server("");
    for (path, content_type) in [
        ("/", "text/html"),
        ("/demo.js", "text/javascript"),
        ("/demo.css", "text/css"),
    ] {
        let (status, headers, body) = http_get(&server, path, &[]).await;
        assert_eq!(status, 200, "{path}");
        assert!(headers["content-type"].starts_with(content_type), "{path}: {headers:?}");
        assert!(headers["content-security-policy"].contains("default-src 'self'"));
        assert!(!body.is_empty(), "{path}");
    }
    let (status, _, _) = http_get(&server, "/nope", &[]).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn connections_beyond_the_cap_are_closed_and_slots_come_back() {
    let server = server("max_connections = 2");
    let mut first = connect(&server).await;
    let second = connect(&server).await;
    let url = format!("ws://{}/ws", server.http_addr());
    let third = tokio::time::timeout(PATIENCE, tokio_tungstenite::connect_async(url.as_str()))
        .await
        .expect("refused within 5 s");
    assert!(third.is_err(), "a third connection was served");
    first.assert_usable().await;
    drop(second);
    let mut retries = 0;
    let mut again = loop {
        if let Ok(Ok((ws, _))) = tokio::time::timeout(PATIENCE, tokio_tungstenite::connect_async(url.as_str())).await {
            break Client::new(ws);
        }
        retries += 1;
        assert!(retries < 50, "the freed slot never came back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    again.assert_usable().await;
}

#[tokio::test]
async fn signaling_over_https_with_the_turn_certificate() {
    let server = server("tls = true");
    let mut roots = rustls::RootCertStore::empty();
    roots.add(server.ca().ca_der()).expect("trust the test CA");
    let config =
        rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tls = |_: ()| async {
        let tcp = tokio::net::TcpStream::connect(server.http_addr())
            .await
            .expect("connect");
        let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
        connector.connect(name, tcp).await.expect("TLS handshake")
    };
    let (ws, _) = tokio_tungstenite::client_async(
        format!("wss://localhost:{}/ws", server.http_addr().port()),
        tls(()).await,
    )
    .await
    .expect("WebSocket over TLS");
    let mut client = Client::new(ws);
    let joined = client.join("secure", "s").await;
    assert!(
        joined["iceServers"][1]["urls"][0]
            .as_str()
            .is_some_and(|u| u.starts_with("turn:localhost:")),
        "{joined}"
    );
    let (status, _, body) = request_on(&mut tls(()).await, "GET", "/", &[]).await;
    assert_eq!(status, 200);
    assert!(body.contains("<"), "{body}");
    // Plain HTTP on the TLS port gets nowhere.
    let (plain, _, _) = async {
        let mut stream = tokio::net::TcpStream::connect(server.http_addr())
            .await
            .expect("connect");
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .expect("write");
        let mut buf = Vec::new();
        let _ = tokio::time::timeout(PATIENCE, stream.read_to_end(&mut buf)).await;
        (String::from_utf8_lossy(&buf).contains("200 OK"), (), ())
    }
    .await;
    assert!(!plain, "plain HTTP was served on the HTTPS port");
}

/// 127.0.0.`n`: every address of 127.0.0.0/8 is loopback on Linux, so a
/// test can have clients of several sources.
fn loopback(n: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, n))
}

/// A TCP connection to `to` from `from` (port chosen by the kernel), with
/// `recv_buffer` as its receive buffer if given.
async fn tcp_from(from: IpAddr, to: SocketAddr, recv_buffer: Option<u32>) -> std::io::Result<tokio::net::TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(from, 0))?;
    if let Some(size) = recv_buffer {
        socket.set_recv_buffer_size(size)?;
    }
    tokio::time::timeout(PATIENCE, socket.connect(to))
        .await
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))?
}

type TcpClient = Client<tokio::net::TcpStream>;

/// A WebSocket to `/ws` from `from`; `Err` if the server refuses or closes
/// it (the handshake is bounded by [`PATIENCE`]).
async fn ws_from(server: &TestServer, from: IpAddr, recv_buffer: Option<u32>) -> Result<TcpClient, String> {
    let stream = tcp_from(from, server.http_addr(), recv_buffer)
        .await
        .map_err(|e| e.to_string())?;
    let url = format!("ws://{}/ws", server.http_addr());
    match tokio::time::timeout(PATIENCE, tokio_tungstenite::client_async(url, stream)).await {
        Ok(Ok((ws, _))) => Ok(Client::new(ws)),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("handshake timed out".to_owned()),
    }
}

/// Status and body of `GET path` sent from `from`.
async fn get_from(server: &TestServer, from: IpAddr, path: &str) -> (u16, String) {
    let mut stream = tcp_from(from, server.http_addr(), None)
        .await
        .expect("connect for a GET");
    let (status, _, body) = request_on(&mut stream, "GET", path, &[]).await;
    (status, body)
}

/// `alice` signals `bob` (both in one room) and `bob` gets it: the honest
/// pair is being served.
async fn assert_pair_served<S, T>(alice: &mut Client<S>, bob: &mut Client<T>, bob_id: &str, n: usize)
where
    S: AsyncRead + AsyncWrite + Unpin,
    T: AsyncRead + AsyncWrite + Unpin,
{
    alice
        .send(json!({"type": "signal", "to": bob_id, "data": {"n": n}}))
        .await;
    let got = bob.recv().await;
    assert_eq!(
        (got["type"].as_str(), got["data"]["n"].as_u64()),
        (Some("signal"), Some(n as u64)),
        "{got}"
    );
}

#[tokio::test]
async fn a_websocket_flood_from_one_source_leaves_other_sources_and_monitoring_served() {
    const FLOOD: usize = 300;
    const PER_SOURCE: usize = 64; // the default signaling.max_connections_per_source
    const ROOMS_PER_SOURCE: usize = 16; // the default signaling.max_rooms_per_source
    let server = server("");
    let honest = loopback(2);
    let mut alice = ws_from(&server, honest, None).await.expect("alice connects");
    let mut bob = ws_from(&server, honest, None).await.expect("bob connects");
    alice.join("honest", "alice").await;
    let bob_id = id_of(&bob.join("honest", "bob").await);
    assert_eq!(alice.recv().await["type"], "peer-joined");

    // The flood: FLOOD WebSockets from 127.0.0.1, every one kept open.
    let flooder = loopback(1);
    let started = Instant::now();
    let mut held = Vec::new();
    let mut refused = 0;
    for i in 0..FLOOD {
        match ws_from(&server, flooder, None).await {
            Ok(ws) => held.push(ws),
            Err(_) => refused += 1,
        }
        if i % 50 == 0 {
            assert_pair_served(&mut alice, &mut bob, &bob_id, i).await;
            assert_eq!(get_from(&server, honest, "/healthz").await.0, 200, "during the flood");
        }
    }
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "the flood took {:?}",
        started.elapsed()
    );
    assert_eq!((held.len(), refused), (PER_SOURCE, FLOOD - PER_SOURCE));
    // The flooder's sessions try to squat rooms: they get their share.
    let mut opened = 0;
    for (i, ws) in held.iter_mut().take(ROOMS_PER_SOURCE + 4).enumerate() {
        ws.send(json!({"type": "join", "room": format!("squat-{i}")})).await;
        let answer = ws.recv().await;
        match answer["type"].as_str() {
            Some("joined") => opened += 1,
            _ => assert_eq!(answer["code"], "room-full", "{answer}"),
        }
    }
    assert_eq!(opened, ROOMS_PER_SOURCE);

    // Still during: a newcomer from a third source opens a room and is
    // served, as is monitoring.
    let mut carol = ws_from(&server, loopback(3), None).await.expect("carol connects");
    carol.join("fresh-room", "carol").await;
    carol.assert_usable().await;
    let (status, metrics) = get_from(&server, honest, "/metrics").await;
    assert_eq!(status, 200);
    let refused_line = metrics
        .lines()
        .find(|l| l.starts_with("turnpike_http_connections_refused_total{reason=\"source\"}"))
        .unwrap_or_else(|| panic!("no refusal counter in {metrics}"));
    assert!(
        refused_line.ends_with(&format!(" {}", FLOOD - PER_SOURCE)),
        "{refused_line}"
    );

    // After: the flood's connections go, and its source is served again.
    drop(held);
    let mut retries = 0;
    let mut back = loop {
        if let Ok(ws) = ws_from(&server, flooder, None).await {
            break ws;
        }
        retries += 1;
        assert!(retries < 50, "the flooder's slots never came back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    back.assert_usable().await;
    assert_pair_served(&mut alice, &mut bob, &bob_id, FLOOD).await;
    assert_eq!(get_from(&server, flooder, "/healthz").await.0, 200);
}

#[tokio::test]
async fn monitoring_answers_when_every_connection_slot_is_taken() {
    let server = server("max_connections = 4");
    // Four sources take every general slot; two of them are a call.
    let mut alice = ws_from(&server, loopback(11), None).await.expect("alice");
    let mut bob = ws_from(&server, loopback(12), None).await.expect("bob");
    alice.join("call", "alice").await;
    let bob_id = id_of(&bob.join("call", "bob").await);
    assert_eq!(alice.recv().await["type"], "peer-joined");
    let _others = [
        ws_from(&server, loopback(13), None).await.expect("third"),
        ws_from(&server, loopback(14), None).await.expect("fourth"),
    ];
    // A fifth source gets no WebSocket and no page, but monitoring answers.
    let fifth = loopback(15);
    assert!(
        ws_from(&server, fifth, None).await.is_err(),
        "a fifth WebSocket was served"
    );
    assert_eq!(get_from(&server, fifth, "/").await.0, 503);
    for path in ["/healthz", "/readyz", "/metrics"] {
        for _ in 0..3 {
            assert_eq!(get_from(&server, fifth, path).await.0, 200, "{path}");
        }
    }
    let (_, metrics) = get_from(&server, fifth, "/metrics").await;
    assert!(
        metrics.contains("turnpike_http_connections{pool=\"general\"} 4"),
        "{metrics}"
    );
    assert_pair_served(&mut alice, &mut bob, &bob_id, 1).await;
}

/// Waits (at most [`PATIENCE`]) until the server has logged `n` sockets
/// whose session it kept for resume.
fn wait_kept_for_resume(server: &TestServer, n: usize) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let kept = server.stderr_log().matches("session kept for resume").count();
        if kept >= n {
            return;
        }
        assert!(Instant::now() < deadline, "{kept} of {n} sessions kept for resume");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A WebSocket from `from`, retried for a while: a slot given back is
/// free a moment after the event that frees it is seen.
async fn ws_from_soon(server: &TestServer, from: IpAddr) -> TcpClient {
    let deadline = Instant::now() + PATIENCE;
    loop {
        match ws_from(server, from, None).await {
            Ok(client) => return client,
            Err(e) => assert!(Instant::now() < deadline, "{from} still refused: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn sessions_kept_for_resume_hold_their_connection_slots_until_their_grace_ends() {
    let server = server("max_connections = 4\nmax_connections_per_source = 2\nresume_grace = \"4s\"");
    let mut alice = ws_from(&server, loopback(21), None).await.expect("alice");
    alice.join("kept", "alice").await;
    // Two sessions of 127.0.0.22 join with resume and lose their sockets
    // without a close frame: kept for resume, each in its slot.
    for name in ["b1", "b2"] {
        let mut peer = ws_from(&server, loopback(22), None).await.expect(name);
        peer.join("kept", json!({"name": name, "resume": true})).await;
        assert_eq!(alice.recv().await["type"], "peer-joined");
        drop(peer.ws.into_inner());
    }
    wait_kept_for_resume(&server, 2);
    // Its source holds max_connections_per_source = 2 detached sessions.
    assert!(
        ws_from(&server, loopback(22), None).await.is_err(),
        "127.0.0.22 got a third place"
    );
    // One connection and two detached sessions leave one place of four.
    let mut fourth = ws_from(&server, loopback(23), None).await.expect("the fourth place");
    fourth.assert_usable().await;
    assert!(
        ws_from(&server, loopback(24), None).await.is_err(),
        "a fifth place beyond max_connections = 4"
    );
    let (_, metrics) = get_from(&server, loopback(24), "/metrics").await;
    assert!(
        metrics.contains("turnpike_http_connections{pool=\"general\"} 4"),
        "{metrics}"
    );
    assert!(metrics.contains("turnpike_signaling_detached_sessions 2"), "{metrics}");
    // The grace periods end: the room hears it, and the places come back.
    for _ in 0..2 {
        assert_eq!(alice.recv().await["type"], "peer-left");
    }
    let mut again = ws_from_soon(&server, loopback(22)).await;
    again.assert_usable().await;
    let mut fifth = ws_from_soon(&server, loopback(24)).await;
    fifth.assert_usable().await;
    let (_, metrics) = get_from(&server, loopback(25), "/metrics").await;
    assert!(metrics.contains("turnpike_signaling_detached_sessions 0"), "{metrics}");
}

#[tokio::test]
async fn a_receiver_that_never_reads_is_dropped_and_server_memory_stays_bounded() {
    const MUTES: usize = 4;
    const PUSHED: usize = 200 << 20;
    const PAYLOAD: usize = 60_000;
    // The rate limit is lifted so that one sender can push 200 MiB quickly.
    let server = server("messages_per_second = 1000000");
    let mut honest = connect(&server).await;
    honest.join("flood", "honest").await;
    let mut sender = connect(&server).await;
    sender.join("flood", "sender").await;
    assert_eq!(honest.recv().await["type"], "peer-joined");
    // Mutes: tiny receive buffers, and they never read again after joining.
    let mut mutes = Vec::new();
    for i in 0..MUTES {
        let mut mute = ws_from(&server, loopback(1), Some(4096)).await.expect("mute connects");
        let id = id_of(&mute.join("flood", &format!("mute{i}")).await);
        mutes.push((id, mute));
    }
    for _ in 0..MUTES {
        assert_eq!(honest.recv().await["type"], "peer-joined");
        assert_eq!(sender.recv().await["type"], "peer-joined");
    }
    let baseline = server.rss_kib();

    // The sender reads what comes back (peer-left, unknown-peer) on its own
    // task, so that it is not the one who stops reading.
    let (mut sink, mut stream) = sender.ws.split();
    let reader = tokio::spawn(async move {
        let (mut left, mut unknown) = (BTreeSet::new(), 0usize);
        while let Ok(Some(Ok(frame))) = tokio::time::timeout(Duration::from_secs(10), stream.next()).await {
            let Message::Text(text) = frame else { continue };
            let message: Value = serde_json::from_str(&text).expect("JSON");
            match (message["type"].as_str(), message["code"].as_str()) {
                (Some("peer-left"), _) => {
                    left.insert(message["id"].as_str().unwrap_or_default().to_owned());
                }
                (_, Some("unknown-peer")) => unknown += 1,
                _ => {}
            }
            if message["type"] == "pong" {
                break;
            }
        }
        (left, unknown)
    });
    let texts: Vec<Arc<str>> = mutes
        .iter()
        .map(|(id, _)| {
            let data = "x".repeat(PAYLOAD);
            Arc::from(format!(r#"{{"type":"signal","to":"{id}","data":"{data}"}}"#))
        })
        .collect();
    let started = Instant::now();
    let (mut pushed, mut peak) = (0, baseline);
    for i in 0.. {
        if pushed >= PUSHED {
            break;
        }
        let text = &texts[i % MUTES];
        sink.send(Message::text(text.as_ref())).await.expect("send a signal");
        pushed += text.len();
        if i % 64 == 0 {
            peak = peak.max(server.rss_kib());
        }
    }
    let took = started.elapsed();
    sink.send(Message::text(r#"{"type":"ping"}"#))
        .await
        .expect("send a ping");
    let (left, unknown) = reader.await.expect("reader task");
    // The pong came after every signal was handled: a last look.
    peak = peak.max(server.rss_kib());

    // Every mute was dropped, and the room heard it promptly (well before
    // the 30 s heartbeat would have dropped them).
    let mute_ids: BTreeSet<String> = mutes.iter().map(|(id, _)| id.clone()).collect();
    assert_eq!(left, mute_ids, "the sender saw peer-left for every mute");
    assert!(unknown > 0, "signals after the eviction got unknown-peer");
    let mut heard = BTreeSet::new();
    for _ in 0..MUTES {
        let message = honest.recv().await;
        assert_eq!(message["type"], "peer-left", "{message}");
        heard.insert(message["id"].as_str().unwrap_or_default().to_owned());
    }
    assert_eq!(heard, mute_ids);
    assert!(
        took < Duration::from_secs(25),
        "pushing took {took:?}, beyond the heartbeat"
    );
    let grown_mib = peak.saturating_sub(baseline) / 1024;
    eprintln!(
        "pushed {} MiB in {took:?}; RSS {} MiB at the start, {} MiB at the peak",
        pushed >> 20,
        baseline / 1024,
        peak / 1024
    );
    assert!(grown_mib < 24, "RSS grew by {grown_mib} MiB");
    for (_, mut mute) in mutes {
        assert!(mute.closed().await, "an evicted mute's socket stays open");
    }
    honest.assert_usable().await;
}
