//! Malformed and hostile input, and the size of unauthenticated answers.

use super::*;

// Hostile and malformed input

#[test]
fn malformed_client_packets_never_panic_and_produce_nothing() {
    let mut h = Harness::new();
    let c = client(1);
    h.allocate(c);
    h.channel_bind(c, 0x4001, peer_a()).assert_success();
    let binding = binding_request([1; 12], none);
    let mut bad_length = binding.clone();
    bad_length[2..4].copy_from_slice(&0xFFFCu16.to_be_bytes());
    let mut bad_fingerprint = binding.clone();
    *bad_fingerprint.last_mut().unwrap() ^= 1;
    let mut overrun = encode(
        Class::Request,
        method::BINDING,
        [1; 12],
        |w| {
            w.bytes(attr::SOFTWARE, b"abcd");
        },
        None,
    );
    overrun[22..24].copy_from_slice(&0x0100u16.to_be_bytes());
    let mut classic_allocate = vec![0x00, 0x03, 0x00, 0x00];
    classic_allocate.extend_from_slice(&[7; 16]);
    let success = encode(Class::Success, method::BINDING, [1; 12], none, None);
    let keepalive = encode(Class::Indication, method::BINDING, [1; 12], none, None);
    let cases: Vec<Vec<u8>> = vec![
        vec![],
        vec![0x00],
        binding[..19].to_vec(),
        binding[..binding.len() - 4].to_vec(),
        bad_length,
        bad_fingerprint,
        overrun,
        classic_allocate,
        success,
        keepalive,
        vec![0xFF; 64],
        vec![0x80; 3],
        b"GET / HTTP/1.1\r\n\r\n".to_vec(),
        channel_data(0x4002, b"unbound"),
        channel_data(0x8001, b"not a channel"),
        vec![0x40, 0x01, 0x00, 0x10, 1, 2],
        vec![0x40, 0x01],
    ];
    for case in &cases {
        assert_eq!(h.client_packet(c, case), None, "{case:02x?}");
    }
    // Every truncation and nearly every bit flip of a valid authenticated
    // request breaks its length or its FINGERPRINT. (Flipping
    // FINGERPRINT's own type turns it into an unknown attribute after
    // MESSAGE-INTEGRITY, which RFC 8489 §14.5 says to ignore, so those
    // bytes are skipped.) A flip of an attribute's length can make it
    // swallow the rest of the message and leave another well-formed
    // request without MESSAGE-INTEGRITY: that one is merely challenged.
    let id = h.next_id();
    let request = h.authed(client(2), &alice(), method::ALLOCATE, id, udp);
    for n in 0..request.len() {
        assert_eq!(h.client_packet(client(2), &request[..n]), None);
    }
    let fingerprint_type = request.len() - 8..request.len() - 6;
    for i in (0..request.len()).filter(|i| !fingerprint_type.contains(i)) {
        for bit in [0x01, 0x40, 0x80] {
            let mut flipped = request.clone();
            flipped[i] ^= bit;
            match Message::parse(&flipped) {
                Ok(msg) => {
                    assert!(!msg.has_integrity(), "byte {i} bit {bit:#x}");
                    h.exchange(client(2), &flipped).assert_challenge(401);
                }
                Err(_) => assert_eq!(h.client_packet(client(2), &flipped), None, "byte {i} bit {bit:#x}"),
            }
        }
    }
    assert_eq!(h.server.allocation_count(), 1);
}

#[test]
fn peer_packets_without_room_for_their_framing_are_dropped_not_panicking() {
    let mut h = Harness::new();
    let c = client(1);
    let relay = h.allocate(c);
    h.channel_bind(c, 0x4001, peer_a()).assert_success();
    h.permit(c, &[peer_b()]).assert_success();
    let now = h.now().mono;
    let mut handle = |peer: SocketAddr, buf: &mut [u8], payload| {
        h.server.handle_peer_packet(relay, PeerAddr(peer), buf, payload, now)
    };
    // No headroom: neither a ChannelData nor a Data indication header fits.
    for peer in [peer_a(), peer_b()] {
        assert_eq!(handle(peer, &mut b"hello".clone(), 0..5), None);
    }
    // No tailroom for an odd payload: a Data indication cannot be padded,
    // ChannelData over UDP needs no padding.
    let mut buf = vec![0; PEER_HEADROOM + 5];
    let payload = PEER_HEADROOM..PEER_HEADROOM + 5;
    assert_eq!(handle(peer_b(), &mut buf, payload.clone()), None);
    let out = handle(peer_a(), &mut buf, payload).expect("relayed");
    assert_eq!(out.range, PEER_HEADROOM - 4..PEER_HEADROOM + 5);
    // Too big for a ChannelData or STUN length field.
    let big = vec![0; 70_000];
    assert_eq!(h.peer_sends(relay, peer_a(), &big), None);
    assert_eq!(h.peer_sends(relay, peer_b(), &big), None);
    h.assert_quiet();
}

// Reflection: answers to unauthenticated sources stay small

/// A spoofed source must not get a much larger answer than it sent
/// (docs/design.md, "Unauthenticated clients"): whatever an unauthenticated request
/// carries, the answer is a fixed-size challenge or error of at most 100
/// bytes, so even the smallest (20-byte) request is amplified less than 5x.
#[test]
fn unauthenticated_answers_are_small_whatever_the_request_carries() {
    let mut h = Harness::new();
    let big_unknown = |w: &mut MessageWriter<'_>| {
        for t in 0x0030..0x0050u16 {
            w.bytes(t, &[0xAB; 40]);
        }
    };
    for method in [
        method::ALLOCATE,
        method::REFRESH,
        method::CREATE_PERMISSION,
        method::CHANNEL_BIND,
        0x0FF,
    ] {
        for build in [&none as &dyn Fn(&mut MessageWriter<'_>), &big_unknown] {
            let id = h.next_id();
            let request = encode(Class::Request, method, id, build, None);
            let answer = h.exchange_raw(client(1), &request);
            assert!(answer.len() <= 100, "method {method:#x}: {} byte answer", answer.len());
        }
    }
    let id = h.next_id();
    let binding = encode(Class::Request, method::BINDING, id, big_unknown, None);
    let answer = h.exchange(client(1), &binding);
    answer.assert_code(420);
    assert!(answer.0.len() <= 100, "420 answer of {} bytes", answer.0.len());
}

/// The smallest request of each kind a spoofed source could send, with and
/// without FINGERPRINT: no answer is more than twice its size (SECURITY.md,
/// amplification), under the harness's 11-character realm.
#[test]
fn every_unauthenticated_answer_is_at_most_twice_its_request() {
    let mut h = Harness::new();
    let peer = |w: &mut MessageWriter<'_>| {
        w.xor_address(attr::XOR_PEER_ADDRESS, peer_a());
    };
    let channel = |w: &mut MessageWriter<'_>| {
        w.bytes(attr::CHANNEL_NUMBER, &[0x40, 0, 0, 0])
            .xor_address(attr::XOR_PEER_ADDRESS, peer_a());
    };
    let connection = |w: &mut MessageWriter<'_>| {
        w.u32(attr::CONNECTION_ID, 1);
    };
    let unknown = |w: &mut MessageWriter<'_>| {
        w.bytes(0x0003, &[]);
    };
    type Build<'b> = &'b dyn Fn(&mut MessageWriter<'_>);
    let forms: [(u16, Build<'_>, u16); 10] = [
        (method::BINDING, &none, 0),
        (method::BINDING, &unknown, 420),
        (method::ALLOCATE, &none, 400),
        (method::ALLOCATE, &udp, 401),
        (method::REFRESH, &none, 437),
        (method::CREATE_PERMISSION, &peer, 437),
        (method::CHANNEL_BIND, &channel, 437),
        (method::CONNECT, &peer, 437),
        (method::CONNECTION_BIND, &connection, 400),
        (0x0FF, &none, 400),
    ];
    for (method, build, code) in forms {
        for fingerprint in [false, true] {
            let mut request = Vec::new();
            let mut w = MessageWriter::new(&mut request, Class::Request, method, h.next_id());
            build(&mut w);
            w.finish(None, fingerprint);
            let answer = h.exchange_raw(client(1), &request);
            let msg = Message::parse(&answer).expect("answers parse");
            assert_eq!(msg.has_fingerprint(), fingerprint, "method {method:#x}");
            let got = Response(answer.clone()).code().unwrap_or(0);
            assert_eq!(got, code, "method {method:#x}");
            assert!(
                answer.len() <= 2 * request.len(),
                "method {method:#x}, fingerprint {fingerprint}: {} bytes for {}",
                answer.len(),
                request.len()
            );
        }
    }
    assert_eq!(h.server.allocation_count(), 0);
}

#[test]
fn challenges_to_one_source_stop_when_its_budget_is_spent_and_others_still_get_theirs() {
    let mut h = Harness::with(Settings {
        challenge_rate: 1000,
        ..Settings::default()
    });
    let probe = |h: &mut Harness| encode(Class::Request, method::ALLOCATE, h.next_id(), udp, None);
    // Four seconds of budget (4000 bytes) at once: about 60 challenges.
    let mut answered = 0;
    for _ in 0..200 {
        let request = probe(&mut h);
        let now = h.now();
        assert_eq!(h.server.handle_client_packet(client(1), &request, now), None);
        match h.server.poll_effect() {
            Some(Effect::Transmit { bytes, .. }) => {
                answered += 1;
                assert!(Challenge::of(&bytes).is_some());
            }
            other => assert_eq!(other, None),
        }
    }
    assert!((50..=80).contains(&answered), "{answered} challenges answered");
    let refusals = h.server.snapshot(h.now().mono).counters.refusals;
    assert_eq!(refusals[stats::LimitRefusal::ChallengeBudget as usize], 200 - answered);
    // Another source is challenged as usual, and so is the first one a
    // second later (1000 bytes: about 15 more).
    h.challenge(client(2), method::ALLOCATE, udp);
    h.elapsed += Duration::from_secs(1);
    h.challenge(client(1), method::ALLOCATE, udp);
    // Signed requests spend nothing: the honest client allocates.
    h.allocate(client(1));
}
