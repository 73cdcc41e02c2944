//! TURN over UDP with an independent client: the `turn` crate (webrtc-rs).

use std::net::UdpSocket;
use std::time::Duration;

use stun::agent::TransactionId;
use stun::attributes::{ATTR_NONCE, ATTR_REALM, ATTR_USERNAME};
use stun::fingerprint::FINGERPRINT;
use stun::integrity::MessageIntegrity;
use stun::message::{
    Getter, Message, MessageType, Setter, CLASS_INDICATION, CLASS_REQUEST, CLASS_SUCCESS_RESPONSE, METHOD_ALLOCATE,
    METHOD_BINDING, METHOD_CREATE_PERMISSION, METHOD_DATA, METHOD_SEND,
};
use stun::textattrs::{Nonce, Realm, TextAttribute};
use turn::proto::data::Data;
use turn::proto::peeraddr::PeerAddress;
use turn::proto::reqtrans::RequestedTransport;
use turn::proto::PROTO_UDP;

use crate::common::{
    assert_relay_round_trips, binding_request, rest_credential, transaction_id, turn_client, unix_now, EchoPeer,
    TestServer, LONG_TERM_USER_TOML, PASSWORD, USER,
};
use webrtc_util::Conn;

const SECRETS_TOML: &str = "[auth]\nsecrets = [\"s1\", \"s2\"]\n";

/// Allocates with `username` / `password`, checks the relay address and the
/// reflexive address, and relays 20 datagrams to an echo peer and back.
async fn allocate_and_relay(server: &TestServer, username: &str, password: &str) {
    let (client, socket) = turn_client(server.addr(), username, password).await;
    let relay = tokio::time::timeout(Duration::from_secs(10), client.allocate())
        .await
        .expect("Allocate not answered within 10 s")
        .expect("Allocate refused");
    let relay_addr = relay.local_addr().expect("relay address");
    assert_eq!(relay_addr.ip().to_string(), "127.0.0.1", "relay address {relay_addr}");
    assert!(
        server.relay_ports().contains(&relay_addr.port()),
        "relay port {} outside the configured range {:?}",
        relay_addr.port(),
        server.relay_ports()
    );

    let mapped = tokio::time::timeout(Duration::from_secs(10), client.send_binding_request())
        .await
        .expect("Binding not answered within 10 s")
        .expect("Binding failed");
    assert_eq!(
        mapped,
        socket.local_addr().expect("client address"),
        "XOR-MAPPED-ADDRESS"
    );

    let peer = EchoPeer::start();
    assert_relay_round_trips(&relay, &peer, 20, "turn crate").await;
    assert_eq!(peer.received(), 20, "the peer got exactly what was sent");

    relay.close().await.expect("close relay");
    client.close().await.expect("close client");
}

/// Runs `allocate()` and asserts that it fails with 401 Unauthorized.
async fn assert_allocate_unauthorized(server: &TestServer, username: &str, password: &str) {
    let (client, _socket) = turn_client(server.addr(), username, password).await;
    let result = tokio::time::timeout(Duration::from_secs(15), client.allocate())
        .await
        .expect("the server did not answer the Allocate within 15 s (it should answer 401)");
    let error = match result {
        Ok(relay) => {
            let addr = relay.local_addr();
            panic!("Allocate with username {username:?} succeeded (relay {addr:?}); it must be refused")
        }
        Err(e) => e.to_string(),
    };
    assert!(
        error.contains("401"),
        "Allocate with username {username:?} failed, but not with 401: {error}"
    );
    client.close().await.expect("close client");
}

#[tokio::test]
async fn turn_crate_client_relays_with_long_term_credentials() {
    let server = TestServer::start(LONG_TERM_USER_TOML);
    allocate_and_relay(&server, USER, PASSWORD).await;
}

#[tokio::test]
async fn turn_crate_client_relays_with_short_lived_credentials() {
    let server = TestServer::start(SECRETS_TOML);
    let (username, password) = rest_credential("s2", "alice", unix_now() + 3600);
    allocate_and_relay(&server, &username, &password).await;
}

#[tokio::test]
async fn expired_short_lived_credential_is_refused() {
    let server = TestServer::start(SECRETS_TOML);
    let (username, password) = rest_credential("s1", "alice", unix_now() - 60);
    assert_allocate_unauthorized(&server, &username, &password).await;
    assert!(
        server.stderr_log().contains("expired credential"),
        "the server log does not say why the credential was refused"
    );
}

#[tokio::test]
async fn wrong_password_is_refused() {
    let server = TestServer::start(&format!("{SECRETS_TOML}\n{LONG_TERM_USER_TOML}"));
    assert_allocate_unauthorized(&server, USER, "not-the-password").await;
    let (username, _) = rest_credential("s1", "alice", unix_now() + 3600);
    let (_, other_secret_password) = rest_credential("not-a-secret", "alice", unix_now() + 3600);
    assert_allocate_unauthorized(&server, &username, &other_secret_password).await;
}

/// Encodes a STUN message from `setters` with the `stun` crate.
fn encode(setters: &[Box<dyn Setter>]) -> Vec<u8> {
    let mut msg = Message::new();
    msg.build(setters).expect("build STUN message");
    msg.raw
}

/// Reads the next STUN message other than a Binding response from
/// `socket` (5 s read timeout).
fn receive(socket: &UdpSocket, peer: &EchoPeer, waiting_for: &str) -> Message {
    let mut buf = [0u8; 2048];
    for _ in 0..100 {
        let (n, _) = socket.recv_from(&mut buf).unwrap_or_else(|e| {
            panic!(
                "no answer while waiting for {waiting_for} ({e}); the peer has received {} datagram(s)",
                peer.received()
            )
        });
        let mut msg = Message::new();
        msg.unmarshal_binary(&buf[..n]).expect("server sent a STUN message");
        if msg.typ != MessageType::new(METHOD_BINDING, CLASS_SUCCESS_RESPONSE) {
            return msg;
        }
    }
    panic!("only Binding responses while waiting for {waiting_for}");
}

/// A client may send CreatePermission and data right after its Allocate
/// without waiting for the answers (the server handles one client's
/// datagrams in order). The very first relayed datagram must reach the
/// peer, even though it goes out through a relay socket opened a moment
/// before, and even when the server is busy: here the burst is queued
/// behind 30 Binding requests, as it would be behind other clients'
/// traffic on a loaded server.
#[test]
fn data_pipelined_right_after_allocate_reaches_the_peer() {
    let server = TestServer::start(LONG_TERM_USER_TOML);
    let peer = EchoPeer::start();
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
    socket
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("set_read_timeout");
    socket.connect(server.addr()).expect("connect");

    let allocate = || -> Vec<Box<dyn Setter>> {
        vec![
            Box::new(TransactionId::new()),
            Box::new(MessageType::new(METHOD_ALLOCATE, CLASS_REQUEST)),
            Box::new(RequestedTransport { protocol: PROTO_UDP }),
        ]
    };
    let mut unauthenticated = allocate();
    unauthenticated.push(Box::new(FINGERPRINT));
    socket.send(&encode(&unauthenticated)).expect("send Allocate");
    let challenge = receive(&socket, &peer, "the 401 challenge");
    let nonce = Nonce::get_from_as(&challenge, ATTR_NONCE).expect("NONCE in the 401");
    let realm = Realm::get_from_as(&challenge, ATTR_REALM).expect("REALM in the 401");
    let integrity = MessageIntegrity::new_long_term_integrity(USER.into(), realm.text.clone(), PASSWORD.into());
    let auth = |mut setters: Vec<Box<dyn Setter>>| -> Vec<u8> {
        setters.push(Box::new(TextAttribute::new(ATTR_USERNAME, USER.into())));
        setters.push(Box::new(realm.clone()));
        setters.push(Box::new(nonce.clone()));
        setters.push(Box::new(integrity.clone()));
        setters.push(Box::new(FINGERPRINT));
        encode(&setters)
    };
    let peer_address = || PeerAddress {
        ip: peer.addr().ip(),
        port: peer.addr().port(),
    };
    let payload = b"first datagram through a fresh relay".to_vec();

    // Some load, then three datagrams back to back, without waiting for any
    // answer.
    for _ in 0..30 {
        socket.send(&binding_request(&transaction_id())).expect("send Binding");
    }
    socket.send(&auth(allocate())).expect("send Allocate");
    socket
        .send(&auth(vec![
            Box::new(TransactionId::new()),
            Box::new(MessageType::new(METHOD_CREATE_PERMISSION, CLASS_REQUEST)),
            Box::new(peer_address()),
        ]))
        .expect("send CreatePermission");
    socket
        .send(&encode(&[
            Box::new(TransactionId::new()),
            Box::new(MessageType::new(METHOD_SEND, CLASS_INDICATION)),
            Box::new(peer_address()),
            Box::new(Data(payload.clone())),
            Box::new(FINGERPRINT),
        ]))
        .expect("send Send indication");

    let allocated = receive(&socket, &peer, "the Allocate answer");
    assert_eq!(
        allocated.typ,
        MessageType::new(METHOD_ALLOCATE, CLASS_SUCCESS_RESPONSE),
        "{allocated}"
    );
    let permitted = receive(&socket, &peer, "the CreatePermission answer");
    assert_eq!(
        permitted.typ,
        MessageType::new(METHOD_CREATE_PERMISSION, CLASS_SUCCESS_RESPONSE),
        "{permitted}"
    );
    let data = receive(
        &socket,
        &peer,
        "the Data indication with the echo of the first datagram",
    );
    assert_eq!(data.typ, MessageType::new(METHOD_DATA, CLASS_INDICATION), "{data}");
    let mut echoed = Data::default();
    echoed.get_from(&data).expect("DATA attribute");
    assert_eq!(echoed.0, payload);
    assert_eq!(peer.received(), 1);
}
