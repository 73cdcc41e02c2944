//! Hostile and broken datagrams: the server must survive them, answer only
//! what looks like a STUN request, and keep serving existing allocations.

use std::collections::HashSet;
use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use webrtc_util::Conn;

use crate::common::{
    assert_relay_round_trips, binding_request, stun_binding, stun_header, sync_with_server, transaction_id,
    turn_client, EchoPeer, TestServer, XorShift, LONG_TERM_USER_TOML, MAGIC_COOKIE, PASSWORD, USER,
};

/// Packets sent before each check that the server has handled them all.
const BATCH: usize = 50;

/// STUN header followed by `body`, with the length field set to `length`.
fn stun(msg_type: u16, length: u16, body: &[u8]) -> Vec<u8> {
    let mut packet = stun_header(msg_type, length, MAGIC_COOKIE, &transaction_id());
    packet.extend_from_slice(body);
    packet
}

/// One attribute, value padded to 4 bytes, with its true length.
fn attr(kind: u16, value: &[u8]) -> Vec<u8> {
    let mut out = kind.to_be_bytes().to_vec();
    out.extend_from_slice(&(value.len() as u16).to_be_bytes());
    out.extend_from_slice(value);
    out.resize(out.len().div_ceil(4) * 4, 0);
    out
}

/// Broken STUN-looking packets: the server may answer them with an error
/// response or drop them, but must not fall over.
fn stun_battery() -> Vec<(&'static str, Vec<u8>)> {
    let zero_length_attrs = |kind: u16| -> Vec<u8> {
        let body: Vec<u8> = (0..400).flat_map(|_| attr(kind, &[])).collect();
        stun(0x0001, body.len() as u16, &body)
    };
    let mut binding_with_bad_fingerprint = attr(0x8028, &[0xde, 0xad, 0xbe, 0xef]);
    binding_with_bad_fingerprint = stun(
        0x0001,
        binding_with_bad_fingerprint.len() as u16,
        &binding_with_bad_fingerprint,
    );
    let short_integrity: Vec<u8> = [attr(0x0006, b"user"), attr(0x0008, &[1, 2, 3, 4])].concat();
    let bad_peer_family: Vec<u8> = attr(0x0012, &[0, 0x07, 0x12, 0x34, 1, 2, 3, 4]);
    vec![
        ("one byte", vec![0x00]),
        (
            "truncated header (19 bytes)",
            binding_request(&transaction_id())[..19].to_vec(),
        ),
        ("length field larger than the packet", stun(0x0001, 100, &[])),
        ("length 0xfffc in a 1500-byte packet", stun(0x0001, 0xfffc, &[0; 1480])),
        ("length not a multiple of 4", stun(0x0001, 3, &[1, 2, 3])),
        (
            "wrong magic cookie on Allocate",
            stun_header(0x0003, 0, 0xdead_beef, &transaction_id()),
        ),
        (
            "wrong magic cookie on Binding (RFC 3489 style)",
            stun_header(0x0001, 0, 0xdead_beef, &transaction_id()),
        ),
        (
            "attribute length overrunning the message",
            stun(0x0001, 8, &[0x80, 0x22, 0x00, 100, b'a', b'b', b'c', b'd']),
        ),
        ("400 zero-length optional attributes", zero_length_attrs(0x8022)),
        ("400 zero-length unknown required attributes", zero_length_attrs(0x7fff)),
        (
            "Allocate with a 65535 attribute length",
            stun(0x0003, 8, &[0x00, 0x19, 0xff, 0xff, 17, 0, 0, 0]),
        ),
        ("Binding with a wrong FINGERPRINT", binding_with_bad_fingerprint),
        (
            "Allocate with a 4-byte MESSAGE-INTEGRITY",
            stun(0x0003, short_integrity.len() as u16, &short_integrity),
        ),
        (
            "CreatePermission with an unknown address family",
            stun(0x0008, bad_peer_family.len() as u16, &bad_peer_family),
        ),
        (
            "Binding indication with garbage attributes",
            stun(0x0011, 8, &[0xff; 8]),
        ),
        ("success response sent to the server", stun(0x0101, 0, &[])),
        ("error response sent to the server", stun(0x0111, 0, &[])),
    ]
}

/// Datagrams that are neither STUN nor a usable ChannelData message: they
/// must be dropped without any answer (RFC 8656 §12.4, §12.6).
fn silent_garbage() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("empty", vec![]),
        ("first byte 0x80", vec![0x80; 20]),
        ("first byte 0xff", vec![0xff; 100]),
        ("RTP-like", vec![0x80, 0x60, 0x00, 0x01, 0, 0, 0, 0, 0, 0, 0, 1]),
        (
            "ChannelData for an unbound channel",
            vec![0x4f, 0xff, 0x00, 0x04, 1, 2, 3, 4],
        ),
        ("ChannelData for another unbound channel", vec![0x4a, 0xbc, 0x00, 0x00]),
        (
            "ChannelData with a length larger than the packet",
            vec![0x40, 0x00, 0x01, 0x00, 1, 2, 3, 4],
        ),
        ("ChannelData header cut short", vec![0x40, 0x00, 0x00]),
    ]
}

/// True if a random packet is garbage the server must not answer: empty,
/// or a first byte that starts neither STUN nor ChannelData.
fn is_silent(packet: &[u8]) -> bool {
    packet.first().is_none_or(|&b| b >= 0x80)
}

/// `count` deterministic pseudo-random packets of 0..1500 bytes; a third
/// of them are given a STUN header with the magic cookie and a random
/// method and length, a third a ChannelData-range first byte, so that the
/// parsers past the first byte are exercised too.
fn random_packets(count: usize) -> Vec<Vec<u8>> {
    let mut rng = XorShift::new(0x7475_726e_7069_6b65);
    (0..count)
        .map(|i| {
            let mut packet = vec![0u8; rng.below(1500) as usize];
            rng.fill(&mut packet);
            match (i % 3, packet.len()) {
                (0, 20..) => {
                    packet[0] &= 0x3f;
                    packet[4..8].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
                    if i % 2 == 0 {
                        // A length that matches the packet, so attributes get parsed.
                        let len = ((packet.len() - 20) / 4 * 4) as u16;
                        packet[2..4].copy_from_slice(&len.to_be_bytes());
                        packet.truncate(20 + usize::from(len));
                    }
                }
                (1, 1..) => packet[0] = 0x40 | (packet[0] & 0x0f),
                _ => {}
            }
            packet
        })
        .collect()
}

/// Sends `packets` from `socket`, waiting after every batch until the
/// server has handled them, and returns every datagram it answered.
fn send_all(socket: &UdpSocket, server: SocketAddr, packets: &[Vec<u8>]) -> Vec<Vec<u8>> {
    let mut answers = Vec::new();
    for batch in packets.chunks(BATCH) {
        for packet in batch {
            socket.send_to(packet, server).expect("send to server");
        }
        answers.extend(sync_with_server(socket, server));
    }
    answers
}

/// Checks that every answer is a STUN response (success or error) to one of
/// the requests sent.
fn assert_answers_are_responses_to(answers: &[Vec<u8>], sent: &[Vec<u8>]) {
    let transaction_ids: HashSet<&[u8]> = sent.iter().filter_map(|p| p.get(8..20)).collect();
    for answer in answers {
        assert!(answer.len() >= 20, "answer shorter than a STUN header: {answer:02x?}");
        let msg_type = u16::from_be_bytes([answer[0], answer[1]]);
        assert!(
            msg_type & 0xc000 == 0 && msg_type & 0x0100 != 0,
            "answer is not a STUN response: type {msg_type:#06x}"
        );
        assert!(
            transaction_ids.contains(&answer[8..20]),
            "answer with a transaction id nobody sent: {:02x?}",
            &answer[..20]
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_packets_leave_the_server_and_its_allocations_working() {
    let server = TestServer::start(LONG_TERM_USER_TOML);
    let (client, client_socket) = turn_client(server.addr(), USER, PASSWORD).await;
    let relay = tokio::time::timeout(Duration::from_secs(10), client.allocate())
        .await
        .expect("Allocate not answered within 10 s")
        .expect("Allocate refused");
    let peer = EchoPeer::start();
    assert_relay_round_trips(&relay, &peer, 20, "before the battery").await;

    // Broken STUN and random packets from one source, the garbage that must
    // go unanswered from another, so answers can be told apart.
    let battery = stun_battery();
    let random = random_packets(2000);
    let (silent_random, other_random): (Vec<Vec<u8>>, Vec<Vec<u8>>) = random.into_iter().partition(|p| is_silent(p));
    let mut noisy: Vec<Vec<u8>> = battery.iter().map(|(_, p)| p.clone()).collect();
    noisy.extend(other_random);
    let mut silent: Vec<Vec<u8>> = silent_garbage().into_iter().map(|(_, p)| p).collect();
    silent.extend(silent_random);
    assert!(silent.len() > 100 && noisy.len() > 1000, "both sets get many packets");

    let addr = server.addr();
    let (noisy_answers, silent_answers) = tokio::task::spawn_blocking(move || {
        let noisy_socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let silent_socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let noisy_answers = send_all(&noisy_socket, addr, &noisy);
        assert_answers_are_responses_to(&noisy_answers, &noisy);
        (noisy_answers, send_all(&silent_socket, addr, &silent))
    })
    .await
    .expect("battery thread");
    eprintln!(
        "the server answered {} of the broken STUN and random packets",
        noisy_answers.len()
    );
    assert!(
        silent_answers.is_empty(),
        "the server answered {} non-STUN garbage packet(s), e.g. {:02x?}",
        silent_answers.len(),
        silent_answers.first()
    );

    // The same garbage from the allocation's own address; a Binding request
    // from there (answered in order) shows it has all been handled.
    for (what, packet) in silent_garbage() {
        client_socket
            .send_to(&packet, addr)
            .await
            .unwrap_or_else(|e| panic!("send {what}: {e}"));
    }
    let mapped = tokio::time::timeout(Duration::from_secs(10), client.send_binding_request())
        .await
        .expect("Binding from the allocation's address not answered within 10 s")
        .expect("Binding from the allocation's address failed");
    assert_eq!(mapped, client_socket.local_addr().expect("client address"));

    assert!(server.is_running(), "the server exited");
    let fresh = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let mapped = tokio::task::spawn_blocking(move || {
        let mapped = stun_binding(&fresh, addr, Duration::from_secs(5));
        (mapped, fresh.local_addr().expect("local_addr"))
    })
    .await
    .expect("binding thread");
    assert_eq!(
        mapped.0,
        Some(mapped.1),
        "a fresh Binding request gets its XOR-MAPPED-ADDRESS"
    );

    assert_relay_round_trips(&relay, &peer, 20, "after the battery").await;
    assert_eq!(
        peer.received(),
        40,
        "the peer got exactly the 40 relayed datagrams, none of the garbage"
    );
    assert!(server.is_running(), "the server exited");
    relay.close().await.expect("close relay");
    client.close().await.expect("close client");
}

#[test]
fn random_packets_are_deterministic_and_varied() {
    let a = random_packets(2000);
    assert_eq!(a, random_packets(2000));
    assert!(a.iter().any(|p| p.is_empty()));
    assert!(a.iter().any(|p| p.len() > 1400));
    assert!(a.iter().filter(|p| is_silent(p)).count() > 100);
    assert!(
        a.iter()
            .filter(|p| p.len() >= 20 && p[4..8] == MAGIC_COOKIE.to_be_bytes())
            .count()
            > 500
    );
}
