//! The `turn` crate (webrtc-rs) as an independent TURN client over UDP.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::common::{EchoPeer, REALM};

/// A `turn` crate (webrtc-rs) client of `server`, listening, on a fresh
/// socket bound to 127.0.0.1. Also returns that socket, so a test can send
/// raw packets from the client's own address.
pub async fn turn_client(
    server: SocketAddr,
    username: &str,
    password: &str,
) -> (turn::client::Client, Arc<tokio::net::UdpSocket>) {
    let socket = Arc::new(
        tokio::net::UdpSocket::bind("127.0.0.1:0")
            .await
            .expect("bind client socket"),
    );
    let config = turn::client::ClientConfig {
        stun_serv_addr: server.to_string(),
        turn_serv_addr: server.to_string(),
        username: username.to_owned(),
        password: password.to_owned(),
        realm: REALM.to_owned(),
        software: String::new(),
        rto_in_ms: 0,
        conn: socket.clone(),
        vnet: None,
    };
    let client = turn::client::Client::new(config).await.expect("create TURN client");
    client.listen().await.expect("TURN client listen");
    (client, socket)
}

/// Sends `count` distinct datagrams through `relay` to `peer`, one at a
/// time, and asserts that each comes back intact from the peer. `tag` makes
/// payloads of different rounds differ.
pub async fn assert_relay_round_trips(
    relay: &(impl webrtc_util::Conn + ?Sized),
    peer: &EchoPeer,
    count: usize,
    tag: &str,
) {
    let mut buf = vec![0u8; 2048];
    for i in 0..count {
        let payload: Vec<u8> = format!("{tag} datagram {i} ")
            .bytes()
            .chain((0..100 + i).map(|b| b as u8))
            .collect();
        relay
            .send_to(&payload, peer.addr())
            .await
            .unwrap_or_else(|e| panic!("{tag}: relay send_to {} failed for datagram {i}: {e}", peer.addr()));
        let (n, from) = tokio::time::timeout(Duration::from_secs(5), relay.recv_from(&mut buf))
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "{tag}: datagram {i} did not come back through the relay within 5 s \
                     (the peer has received {} datagram(s) in all)",
                    peer.received()
                )
            })
            .unwrap_or_else(|e| panic!("{tag}: relay recv_from failed: {e}"));
        assert_eq!(
            from,
            peer.addr(),
            "{tag}: datagram {i} came back from the wrong address"
        );
        assert_eq!(&buf[..n], &payload[..], "{tag}: datagram {i} came back altered");
    }
}
