//! The test's clients of the packaged service, inside the container's
//! network namespace: its addresses, credentials minted from a secret,
//! allocations by the `turn` crate over UDP and by the tests' TURN client
//! over TLS, the echo peer, and `/metrics`.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rustls::version::TLS13;

use crate::common::{
    http_exchange, rest_credential, samples_sum, turn_client, unix_now, EchoPeer, Source, TestPki, TurnClient,
};

/// The service's listeners as packaged (and, for TLS, as the test's edit
/// opens it), on the container's loopback.
pub const UDP: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 3478);
pub const TLS: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 443);
pub const HTTP: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 8080);

/// A short-lived credential minted from `secret`, valid for 10 minutes.
pub fn credential(secret: &str, name: &str) -> (String, String) {
    rest_credential(secret, name, unix_now() + 600)
}

/// An echo peer on the container's loopback, on a port outside the relay
/// range (49152-65535 as packaged), where the peer filter takes any own
/// address for a relay of this server (and refuses it unless it is a live
/// one). The namespace is the test's own: the port is free.
pub fn echo_peer() -> EchoPeer {
    EchoPeer::start_on("127.0.0.1:4000")
}

/// An allocation by the `turn` crate's client over UDP: its error, if
/// refused (the message holds the code).
pub async fn allocate_udp(secret: &str, name: &str) -> Result<(turn::client::Client, impl webrtc_util::Conn), String> {
    let (user, pass) = credential(secret, name);
    let (client, _) = turn_client(UDP, &user, &pass).await;
    match client.allocate().await {
        Ok(relay) => Ok((client, relay)),
        Err(e) => Err(e.to_string()),
    }
}

/// A ChannelData round trip through `client`'s allocation and the echo
/// peer bound to `channel`.
pub fn channel_round_trip(client: &mut TurnClient, channel: u16, tag: &str) {
    let payload = format!("{tag}: through the TLS allocation").into_bytes();
    client.channel_data(channel, &payload);
    let arrivals = client.wait_arrivals(1, Duration::from_secs(5));
    assert!(
        arrivals
            .iter()
            .any(|a| a.source == Source::Channel(channel) && a.payload == payload),
        "{tag}: {arrivals:?}"
    );
}

/// The leaf certificate a new TLS handshake with the service sees.
pub fn served_certificate(pki: &TestPki) -> Vec<u8> {
    let stream = pki.connect(TLS, &[&TLS13]).expect("TLS handshake");
    stream.conn.peer_certificates().expect("a certificate")[0].to_vec()
}

/// The number of live allocations `/metrics` reports.
pub fn allocations() -> f64 {
    let (status, text) = http_exchange(
        HTTP,
        "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status, 200, "GET /metrics: {text}");
    samples_sum(&text, "turnpike_allocations", &[])
}

/// Waits (bounded) until `/metrics` reports `want` live allocations (the
/// shards publish every 250 ms).
pub fn wait_allocations(want: f64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while allocations() != want {
        assert!(Instant::now() < deadline, "allocations: {}, not {want}", allocations());
        std::thread::sleep(Duration::from_millis(50));
    }
}
