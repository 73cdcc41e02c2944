//! The `nat_discovery` target: Binding requests (RFC 8489 and RFC 3489)
//! to a [`Server`] with an RFC 5780 address pair per family, arriving on
//! any of the pairs' addresses, on a UDP address of no pair, or over TCP
//! and TLS.
//!
//! # Input
//!
//! `selector attributes…`. The selector's bits 0–3 pick where the request
//! arrives (see [`arrival`]), bit 4 makes it an RFC 3489 request (no magic
//! cookie), bit 5 adds FINGERPRINT, bit 6 sends the rest verbatim instead
//! (malformed input). Otherwise the rest is a list of `type_hi type_lo len
//! value[len]` written as attributes; a `type_hi` of `0xFF` picks a type
//! from [`TYPES`] by `type_lo` (RFC 5780's first), and PADDING's value is
//! `len × 8` zero bytes, so that large ones are reached.
//!
//! # Checks
//!
//! A packet that parses as a request gets exactly one Transmit, anything
//! else none. The answer goes over the request's transport to the
//! request's source IP, at its port or, for a UDP success with
//! RESPONSE-PORT, at that port; it leaves from where the request arrived
//! unless it is a UDP success on a pair's address, which leaves from one
//! of that pair's four addresses (the one CHANGE-REQUEST names). It is at
//! most twice the request (an IPv6 answer at least 44 bytes, the
//! documented exception). A success carries the client's address as
//! XOR-MAPPED-ADDRESS (and MAPPED-ADDRESS, if any, the same);
//! RESPONSE-ORIGIN, if any, is the address it leaves from; OTHER-ADDRESS,
//! if any, is the pair's other IP and port, and is never sent over a
//! stream or on a UDP address of no pair; PADDING is there exactly when
//! the request had it. An RFC 3489 answer is a success with MAPPED-ADDRESS
//! first (CHANGED-ADDRESS and SOURCE-ADDRESS only on a pair's address), or
//! an error.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use turnpike::proto::addr::{ClientAddr, Transport};
use turnpike::proto::auth::Credentials;
use turnpike::proto::live_relays::LiveRelays;
use turnpike::proto::peer_filter::PeerFilter;
use turnpike::proto::quota::AllocationQuota;
use turnpike::proto::server::{AddressPair, Effect, NatDiscovery, Server, ServerConfig};
use turnpike::proto::stun::{self, attr, method, Class, Message, MessageWriter};
use turnpike::proto::testkit::{self, FakeBinder};
use turnpike::proto::Now;

use crate::hex;

const V4_PRIMARY: &str = "192.0.2.1:3478";
const V4_ALTERNATE: &str = "192.0.2.2:3479";
const V6_PRIMARY: &str = "[2001:db8::1]:3478";
const V6_ALTERNATE: &str = "[2001:db8::2]:3479";

/// Types `0xFF, n` picks (`n` modulo their number).
pub const TYPES: [u16; 12] = [
    attr::CHANGE_REQUEST,
    attr::RESPONSE_PORT,
    attr::PADDING,
    attr::SOFTWARE,
    attr::RESPONSE_ORIGIN,
    attr::OTHER_ADDRESS,
    attr::XOR_MAPPED_ADDRESS,
    attr::MAPPED_ADDRESS,
    attr::MESSAGE_INTEGRITY,
    attr::FINGERPRINT,
    0x0030,
    0x8055,
];

fn addr(text: &str) -> SocketAddr {
    text.parse().expect("a literal address")
}

fn pairs() -> [AddressPair; 2] {
    [
        AddressPair::new(addr(V4_PRIMARY), addr(V4_ALTERNATE)).expect("a valid pair"),
        AddressPair::new(addr(V6_PRIMARY), addr(V6_ALTERNATE)).expect("a valid pair"),
    ]
}

/// Where a request arrives, by `selector & 0x0F`: the four addresses of
/// the IPv4 pair, then those of the IPv6 pair, over UDP (0–7); a UDP
/// address of no pair of each family (8, 9); TCP and TLS at each pair's
/// primary (10–13); 14 and 15 as 0 and 4.
pub fn arrival(selector: u8) -> ClientAddr {
    let [v4, v6] = pairs();
    let (transport, local) = match selector & 0x0F {
        n @ 0..=3 => (Transport::Udp, v4.sockets()[usize::from(n)]),
        n @ 4..=7 => (Transport::Udp, v6.sockets()[usize::from(n - 4)]),
        8 => (Transport::Udp, addr("192.0.2.9:3478")),
        9 => (Transport::Udp, addr("[2001:db8::9]:3478")),
        10 => (Transport::Tcp, v4.primary()),
        11 => (Transport::Tls, v4.primary()),
        12 => (Transport::Tcp, v6.primary()),
        13 => (Transport::Tls, v6.primary()),
        14 => (Transport::Udp, v4.primary()),
        _ => (Transport::Udp, v6.primary()),
    };
    let remote = match local.is_ipv4() {
        true => addr("198.51.100.7:40000"),
        false => addr("[2001:db8:ff::7]:40000"),
    };
    ClientAddr {
        transport,
        local,
        remote,
    }
}

/// The request the input describes (see the module doc).
pub fn request(selector: u8, rest: &[u8]) -> Vec<u8> {
    if selector & 0x40 != 0 {
        return rest.to_vec();
    }
    let mut attributes: Vec<(u16, Vec<u8>)> = Vec::new();
    let mut input = rest;
    while let [hi, lo, len, tail @ ..] = input {
        let typ = match hi {
            0xFF => TYPES[usize::from(*lo) % TYPES.len()],
            _ => u16::from_be_bytes([*hi, *lo]),
        };
        let (value, tail) = match typ {
            attr::PADDING => (vec![0; usize::from(*len) * 8], tail),
            _ => {
                let (value, tail) = tail.split_at(usize::from(*len).min(tail.len()));
                (value.to_vec(), tail)
            }
        };
        attributes.push((typ, value));
        input = tail;
    }
    let mut buf = Vec::new();
    if selector & 0x10 != 0 {
        // RFC 3489: the 16 bytes after the length are the id.
        buf.extend_from_slice(&[0x00, 0x01, 0x00, 0x00]);
        buf.extend_from_slice(b"classic-request!");
        for (typ, value) in &attributes {
            buf.extend_from_slice(&typ.to_be_bytes());
            buf.extend_from_slice(&(value.len() as u16).to_be_bytes());
            buf.extend_from_slice(value);
            buf.resize(buf.len().next_multiple_of(4), 0);
        }
        let length = (buf.len() - stun::HEADER_LEN) as u16;
        buf[2..4].copy_from_slice(&length.to_be_bytes());
        return buf;
    }
    let mut w = MessageWriter::new(&mut buf, Class::Request, method::BINDING, [0x5A; 12]);
    for (typ, value) in &attributes {
        w.bytes(*typ, value);
    }
    w.finish(None, selector & 0x20 != 0);
    buf
}

thread_local! {
    /// One server for every input: Binding keeps no state between
    /// requests (only counters), and a fresh server per input would cost
    /// more than the request. The one clock reading is its base instant.
    #[allow(clippy::disallowed_methods)]
    static SERVER: RefCell<(Server<FakeBinder>, Instant)> = RefCell::new((server(), Instant::now()));
}

fn server() -> Server<FakeBinder> {
    let config = ServerConfig {
        nat_discovery: NatDiscovery::new(pairs()),
        ..testkit::core_config()
    };
    Server::new(
        config,
        Credentials::new(testkit::core_credentials("fuzz.example")),
        PeerFilter::new(Default::default()),
        Arc::new(AllocationQuota::new(2, 2)),
        Arc::new(LiveRelays::default()),
        FakeBinder::new(50_000..=50_010),
        [5; 32],
    )
}

/// The target: one request, its answer checked (module doc).
pub fn fuzz_binding(data: &[u8]) {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let client = arrival(selector);
    let packet = request(selector, rest);
    if packet.len() > 65_507 {
        return;
    }
    let answers = SERVER.with_borrow_mut(|(server, start)| {
        let now = Now {
            mono: *start,
            unix_secs: 1_700_000_000,
        };
        assert!(
            server.handle_client_packet(client, &packet, now).is_none(),
            "Binding relays nothing"
        );
        let mut answers = Vec::new();
        while let Some(effect) = server.poll_effect() {
            match effect {
                Effect::Transmit { to, bytes } => answers.push((to, bytes)),
                other => panic!("a Binding made {other:?}"),
            }
        }
        answers
    });
    let request = Message::parse(&packet).ok().filter(|m| m.class() == Class::Request);
    let Some(request) = request else {
        assert!(answers.is_empty(), "answered {}", hex(&packet));
        return;
    };
    assert_eq!(answers.len(), 1, "not one answer to {}", hex(&packet));
    let (to, bytes) = &answers[0];
    check(client, &request, *to, bytes);
}

/// The rules of the module doc for the answer `bytes` sent to `to`.
fn check(client: ClientAddr, request: &Message<'_>, to: ClientAddr, bytes: &[u8]) {
    let context = || format!("request {}\nanswer {}", hex(request.bytes()), hex(bytes));
    assert_eq!(to.transport, client.transport, "{}", context());
    assert_eq!(to.remote.ip(), client.remote.ip(), "{}", context());
    let bound = (2 * request.bytes().len()).max(if client.remote.is_ipv4() { 0 } else { 44 });
    assert!(bytes.len() <= bound, "{} bytes out: {}", bytes.len(), context());
    let pair = pairs()
        .into_iter()
        .find(|p| client.transport == Transport::Udp && p.sockets().contains(&client.local));
    let success = match request.has_magic_cookie() {
        true => {
            let answer = Message::parse(bytes).unwrap_or_else(|e| panic!("{e}: {}", context()));
            assert_eq!(answer.transaction_id(), request.transaction_id());
            assert_eq!(answer.has_fingerprint(), request.has_fingerprint(), "{}", context());
            crate::message::exercise(&answer);
            let success = answer.class() == Class::Success;
            if success {
                check_success(client, request, to, &answer, pair);
            }
            success
        }
        false => check_classic(client, to, bytes, pair),
    };
    let port = match (success, request.has_magic_cookie(), request.get(attr::RESPONSE_PORT)) {
        (true, true, Some(&[hi, lo, _, _])) => u16::from_be_bytes([hi, lo]),
        _ => client.remote.port(),
    };
    assert_eq!(to.remote.port(), port, "{}", context());
    match (success, pair) {
        (true, Some(pair)) => assert!(pair.sockets().contains(&to.local), "{}", context()),
        _ => assert_eq!(to.local, client.local, "{}", context()),
    }
}

/// What RFC 5780 allows in a success to an RFC 8489 request.
fn check_success(
    client: ClientAddr,
    request: &Message<'_>,
    to: ClientAddr,
    answer: &Message<'_>,
    pair: Option<AddressPair>,
) {
    let plain = |typ| {
        answer
            .get(typ)
            .map(|v| stun::decode_address(v).expect("a valid address"))
    };
    assert_eq!(answer.xor_address(attr::XOR_MAPPED_ADDRESS), Some(Ok(client.remote)));
    if let Some(mapped) = plain(attr::MAPPED_ADDRESS) {
        assert_eq!(mapped, client.remote);
    }
    if let Some(origin) = plain(attr::RESPONSE_ORIGIN) {
        assert_eq!(origin, to.local);
    }
    match (plain(attr::OTHER_ADDRESS), pair) {
        (None, _) => {}
        (Some(other), Some(pair)) => {
            assert!(pair.sockets().contains(&other));
            assert!(other.ip() != client.local.ip() && other.port() != client.local.port());
        }
        (Some(other), None) => panic!("OTHER-ADDRESS {other} where there is no pair"),
    }
    assert_eq!(answer.has(attr::PADDING), request.has(attr::PADDING));
    assert!(!answer.has_integrity());
}

/// An RFC 3489 answer; true for a success.
fn check_classic(client: ClientAddr, to: ClientAddr, bytes: &[u8], pair: Option<AddressPair>) -> bool {
    assert!(
        bytes.len() >= stun::HEADER_LEN + 8,
        "short classic answer {}",
        hex(bytes)
    );
    let length = usize::from(u16::from_be_bytes([bytes[2], bytes[3]]));
    assert_eq!(bytes.len(), stun::HEADER_LEN + length);
    assert_eq!(&bytes[4..20], b"classic-request!");
    match [bytes[0], bytes[1]] {
        [0x01, 0x01] => {}
        [0x01, 0x11] => return false,
        other => panic!("classic answer of type {other:02x?}"),
    }
    let mut at = stun::HEADER_LEN;
    let mut types = Vec::new();
    while at < bytes.len() {
        let typ = u16::from_be_bytes([bytes[at], bytes[at + 1]]);
        let len = usize::from(u16::from_be_bytes([bytes[at + 2], bytes[at + 3]]));
        let value = stun::decode_address(&bytes[at + 4..at + 4 + len]).expect("an address");
        match typ {
            attr::MAPPED_ADDRESS => assert_eq!(value, client.remote),
            attr::SOURCE_ADDRESS => assert_eq!(value, to.local),
            attr::CHANGED_ADDRESS => assert!(pair.is_some_and(|p| p.sockets().contains(&value))),
            other => panic!("classic answer with type {other:#06x}"),
        }
        types.push(typ);
        at += 4 + len;
    }
    assert_eq!(types.first(), Some(&attr::MAPPED_ADDRESS));
    assert!(pair.is_some() || types.len() == 1, "RFC 3489 extras without a pair");
    true
}

/// One request of each shape the target knows, as inputs.
pub fn seeds() -> Vec<Vec<u8>> {
    let change = |flags: u8| vec![0xFF, 0, 4, 0, 0, 0, flags];
    let response_port = vec![0xFF, 1, 4, 0xC3, 0x50, 0, 0];
    let padding = |eighths: u8| vec![0xFF, 2, eighths];
    let software = vec![
        0xFF, 3, 12, b'f', b'u', b'z', b'z', b' ', b'c', b'l', b'i', b'e', b'n', b't', b'!',
    ];
    let mut seeds = Vec::new();
    for selector in [0x00, 0x21, 0x02, 0x23, 0x04, 0x27, 0x08, 0x2A, 0x0B, 0x0D] {
        let with = |parts: &[&[u8]]| [&[selector][..], &parts.concat()].concat();
        seeds.push(with(&[]));
        seeds.push(with(&[&change(6)]));
        seeds.push(with(&[&change(2), &software]));
        seeds.push(with(&[&response_port, &change(4)]));
        seeds.push(with(&[&padding(184)]));
        seeds.push(with(&[&padding(1), &response_port]));
        // The same as an RFC 3489 client's request.
        seeds.push([&[selector | 0x10][..], &change(6)].concat());
    }
    seeds.push(vec![0x40, 0x00, 0x01, 0x00, 0x04]);
    seeds
}
