//! Which challenges are sent (`challenge_budget`): streams always, UDP
//! within the source's budget and, beyond it, a grace now and then that
//! goes round the senders, so a flood spoofing an address cannot keep its
//! owner out, and what the flood gets stays bounded.

use super::*;

/// The budget of these tests: 100 bytes a second, 512 at once (about nine
/// challenges).
const RATE: u64 = 100;
const BURST: u64 = 512;

/// RFC 8489 §6.2.1 with its defaults (RTO 500 ms, Rc 7): when a client
/// sends its request, in milliseconds after the first try.
const RETRANSMITS_MS: [u64; 7] = [0, 500, 1_500, 3_500, 7_500, 15_500, 31_500];

fn budgeted() -> Harness {
    Harness::with(Settings {
        challenge_rate: RATE,
        ..Settings::default()
    })
}

/// `client`'s address from another port: what a flood spoofing the
/// address sends from.
fn spoofing(client: ClientAddr, port: u16) -> ClientAddr {
    ClientAddr {
        remote: SocketAddr::new(client.remote.ip(), port),
        ..client
    }
}

fn unsigned_allocate(id: TransactionId) -> Vec<u8> {
    encode(Class::Request, method::ALLOCATE, id, udp, None)
}

impl Harness {
    /// Sends `packet` from `client` at the current time: the answer, if
    /// one is sent (to `client`, and nothing else happens).
    fn answer_of(&mut self, client: ClientAddr, packet: &[u8]) -> Option<Vec<u8>> {
        let now = self.now();
        assert_eq!(self.server.handle_client_packet(client, packet, now), None);
        let answer = match self.server.poll_effect() {
            Some(Effect::Transmit { to, bytes }) => {
                assert_eq!(to, client);
                Some(bytes)
            }
            other => {
                assert_eq!(other, None);
                None
            }
        };
        self.assert_quiet();
        answer
    }

    /// A fresh unsigned Allocate from `client`: its answer, if sent.
    fn unsigned_allocate_from(&mut self, client: ClientAddr) -> Option<Vec<u8>> {
        let request = unsigned_allocate(self.next_id());
        self.answer_of(client, &request)
    }

    fn at_ms(&mut self, ms: u64) {
        self.elapsed = Duration::from_millis(ms);
    }
}

#[test]
fn a_flood_spoofing_an_address_spends_its_budget_yet_its_owner_retransmitting_gets_a_challenge() {
    let mut h = budgeted();
    let owner = client(1);
    let flood_ports = [1_000, 1_001, 1_002, 1_003];
    // The owner's one transaction, sent again unchanged on each retry.
    let owner_request = unsigned_allocate(h.next_id());
    let owner_starts_ms = 2_000;
    let mut owner_tries = RETRANSMITS_MS.iter().map(|t| owner_starts_ms + t).peekable();
    let mut flood_answered = 0;
    let mut owner_challenge = None;
    // 100 requests a second from four ports of the owner's address, for
    // 40 s; the flood goes first at every tick, so it takes whatever the
    // budget holds.
    for tick in 0..4_000u64 {
        let ms = tick * 10;
        h.at_ms(ms);
        let from = spoofing(owner, flood_ports[tick as usize % flood_ports.len()]);
        let request = unsigned_allocate(h.next_id());
        flood_answered += usize::from(h.answer_of(from, &request).is_some());
        if owner_challenge.is_none() && owner_tries.next_if(|&t| t == ms).is_some() {
            owner_challenge = h.answer_of(owner, &owner_request);
        }
    }
    let challenge = Response(owner_challenge.expect("the owner got a challenge within its retransmissions"));
    challenge.assert_challenge(401);
    assert!(flood_answered > 0, "the flood spent the budget");
    // The owner signs with its nonce: a signed request needs no budget.
    h.nonces.insert(owner, challenge.attr(attr::NONCE).unwrap().to_vec());
    h.allocate(owner);
}

#[test]
fn a_flood_spraying_ports_gets_the_budget_and_one_challenge_a_second_at_most() {
    let mut h = budgeted();
    let victim = client(1);
    let secs = 60;
    let mut answered_bytes = 0;
    let mut challenge_len = 0;
    // 1000 requests a second, each from a port of its own.
    for tick in 0..secs * 1_000 {
        h.at_ms(tick);
        let from = spoofing(victim, 1_024 + (tick % 60_000) as u16);
        if let Some(answer) = h.unsigned_allocate_from(from) {
            Response(answer.clone()).assert_challenge(401);
            challenge_len = challenge_len.max(answer.len() as u64);
            answered_bytes += answer.len() as u64;
        }
    }
    // The budget, and one grace a second (the first at once).
    let bound = BURST + RATE * secs + (secs + 1) * challenge_len;
    assert!(
        answered_bytes <= bound,
        "{answered_bytes} bytes answered, bound {bound}"
    );
    // The graces were given: more than the budget alone allows.
    assert!(answered_bytes > BURST + RATE * secs, "{answered_bytes} bytes answered");
}

#[test]
fn a_flood_from_one_port_gets_one_grace_while_another_sender_gets_the_next() {
    // A budget that does not refill within the test: 512 bytes, then 1 a
    // second.
    let mut h = Harness::with(Settings {
        challenge_rate: 1,
        ..Settings::default()
    });
    let flooder = spoofing(client(1), 1_000);
    let other = client(1);
    let mut answers = Vec::new();
    for tick in 0..200u64 {
        h.at_ms(tick * 10);
        answers.extend(h.unsigned_allocate_from(flooder));
    }
    // The burst, plus one grace: then the port has had its grace.
    let challenge_len = answers[0].len() as u64;
    assert_eq!(answers.len() as u64, BURST / challenge_len + 1);
    // Two seconds in, the flood's port is still refused a grace...
    assert_eq!(h.unsigned_allocate_from(flooder), None);
    // ...and the next one goes to another sender on the address, one a
    // second.
    h.challenge(other, method::ALLOCATE, udp);
    assert_eq!(h.unsigned_allocate_from(other), None);
    let refusals = h.server.snapshot(h.now().mono).counters.refusals;
    assert_eq!(
        refusals[stats::LimitRefusal::ChallengeBudget as usize],
        200 - answers.len() as u64 + 2
    );
}

#[test]
fn a_stream_client_is_challenged_whatever_the_udp_budget_of_its_address() {
    let mut h = budgeted();
    let address = client(1);
    // A UDP flood from the address spends its budget and its grace.
    for _ in 0..100 {
        h.unsigned_allocate_from(spoofing(address, 1_000));
    }
    assert_eq!(h.unsigned_allocate_from(address), None);
    // A TCP client on the same address is challenged every time, and
    // allocates.
    let tcp = tcp_client(1);
    for _ in 0..50 {
        h.challenge(tcp, method::ALLOCATE, udp);
    }
    h.allocate(tcp);
    // TLS alike.
    let tls = ClientAddr {
        transport: Transport::Tls,
        ..spoofing(address, 2_000)
    };
    for _ in 0..50 {
        h.challenge(tls, method::ALLOCATE, udp);
    }
}

#[test]
fn stream_challenges_spend_nothing_of_the_udp_budget() {
    let mut h = budgeted();
    for _ in 0..200 {
        h.challenge(tcp_client(1), method::ALLOCATE, udp);
    }
    // The UDP budget of the address is whole: a burst's worth of
    // challenges to one port at once, more than a grace would give.
    for _ in 0..5 {
        h.challenge(client(1), method::ALLOCATE, udp);
    }
}
