//! Relay ↔ relay inside the process (issue 11): when both sides of a call
//! are relayed by this server, a client's payload for the other's relayed
//! address is handed to that allocation directly, on whichever shard holds
//! it, as if its relay socket had received it from the sender's relayed
//! address. Black-box over UDP against the real binary with the built-in
//! peer policy (loopback refused, own live relays allowed) and two shards,
//! so that some pairs meet across shards:
//! * ChannelData both ways between 16 pairs arrives intact, as ChannelData
//!   on the receiver's channel;
//! * a Send indication arrives at a client without a channel as a Data
//!   indication whose XOR-PEER-ADDRESS is the sender's relayed address;
//! * the receiver's permissions still apply: one without a permission for
//!   the sender gets nothing;
//! * `/metrics` counts the payloads relayed in-process and no drops.

#![allow(clippy::disallowed_methods)] // waits use the real clock

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use common::{transaction_id, ServerSetup, TestServer, LONG_TERM_USER_TOML, PASSWORD, USER};
use turnpike::proto::channel_data;
use turnpike::proto::stun::{attr, method, Class, Message, MessageWriter};
use turnpike::proto::testkit::{encode, Challenge, Cred};

const PAIRS: usize = 16;
const PACKETS: usize = 5;
const WAIT: Duration = Duration::from_secs(5);
const QUIET: Duration = Duration::from_millis(300);
const CHANNEL: u16 = 0x4000;

struct Client {
    socket: UdpSocket,
    server: SocketAddr,
    challenge: Option<Challenge>,
}

impl Client {
    fn new(server: SocketAddr) -> Client {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
        Client {
            socket,
            server,
            challenge: None,
        }
    }

    /// The next datagram within `limit`, if any.
    fn recv(&self, limit: Duration) -> Option<Vec<u8>> {
        let deadline = Instant::now() + limit;
        let mut buf = [0u8; 2048];
        while Instant::now() < deadline {
            if let Ok(n) = self.socket.recv(&mut buf) {
                return Some(buf[..n].to_vec());
            }
        }
        None
    }

    /// A request signed once challenged; retried on loss and on 401/438.
    /// Returns the success answer; panics on an error answer.
    fn request(&mut self, method: u16, build: impl Fn(&mut MessageWriter<'_>)) -> Vec<u8> {
        for _ in 0..6 {
            let id = transaction_id();
            let signed = self
                .challenge
                .clone()
                .map(|c| (Cred::new(USER, c.realm(), PASSWORD), c));
            let request = encode(
                Class::Request,
                method,
                id,
                &build,
                signed.as_ref().map(|(c, ch)| (c, ch)),
            );
            self.socket.send_to(&request, self.server).unwrap();
            let deadline = Instant::now() + Duration::from_secs(1);
            while let Some(answer) = self.recv(deadline.saturating_duration_since(Instant::now())) {
                let Ok(msg) = Message::parse(&answer) else { continue };
                if msg.transaction_id() != id {
                    continue;
                }
                match Challenge::of(&answer) {
                    Some(c) => self.challenge = Some(c),
                    None => {
                        assert_eq!(msg.class(), Class::Success, "method {method:#x} refused");
                        return answer;
                    }
                }
                break;
            }
        }
        panic!("no answer to method {method:#x}");
    }

    fn allocate(&mut self) -> SocketAddr {
        let answer = self.request(method::ALLOCATE, |w| {
            w.bytes(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0]);
        });
        Message::parse(&answer)
            .unwrap()
            .xor_address(attr::XOR_RELAYED_ADDRESS)
            .unwrap()
            .unwrap()
    }

    fn channel_bind(&mut self, peer: SocketAddr) {
        self.request(method::CHANNEL_BIND, |w| {
            w.bytes(attr::CHANNEL_NUMBER, &[(CHANNEL >> 8) as u8, CHANNEL as u8, 0, 0])
                .xor_address(attr::XOR_PEER_ADDRESS, peer);
        });
    }

    fn create_permission(&mut self, peer: SocketAddr) {
        self.request(method::CREATE_PERMISSION, |w| {
            w.xor_address(attr::XOR_PEER_ADDRESS, peer);
        });
    }

    fn channel_data(&self, payload: &[u8]) {
        let mut frame = vec![0u8; channel_data::HEADER_LEN];
        let number = channel_data::ChannelNumber::new(CHANNEL).unwrap();
        channel_data::write_header((&mut frame[..4]).try_into().unwrap(), number, payload.len() as u16);
        frame.extend_from_slice(payload);
        self.socket.send_to(&frame, self.server).unwrap();
    }

    fn send_indication(&self, peer: SocketAddr, payload: &[u8]) {
        let indication = encode(
            Class::Indication,
            method::SEND,
            transaction_id(),
            |w| {
                w.xor_address(attr::XOR_PEER_ADDRESS, peer).bytes(attr::DATA, payload);
            },
            None,
        );
        self.socket.send_to(&indication, self.server).unwrap();
    }

    /// ChannelData payloads received within `limit` (other datagrams are
    /// ignored), until `want` have come.
    fn channel_payloads(&self, want: usize, limit: Duration) -> Vec<Vec<u8>> {
        let deadline = Instant::now() + limit;
        let mut got = Vec::new();
        while got.len() < want {
            let Some(frame) = self.recv(deadline.saturating_duration_since(Instant::now())) else {
                break;
            };
            if let Ok((number, payload)) = channel_data::parse(&frame) {
                assert_eq!(number.get(), CHANNEL);
                got.push(payload.to_vec());
            }
        }
        got
    }
}

fn metric(server: &TestServer, name: &str) -> f64 {
    let (_, text) = server.http_get("/metrics");
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("{name} missing from /metrics"))
}

#[test]
fn payloads_between_relays_of_this_server_are_delivered_inside_the_process() {
    let server = TestServer::start_setup(&ServerSetup {
        peers_toml: "",
        extra_toml: &format!("{LONG_TERM_USER_TOML}\n[limits]\nmax_allocations_per_user = 100\n"),
        ..ServerSetup::default()
    });
    let mut pairs: Vec<(Client, SocketAddr, Client, SocketAddr)> = (0..PAIRS)
        .map(|_| {
            let (mut a, mut b) = (Client::new(server.addr()), Client::new(server.addr()));
            let (ra, rb) = (a.allocate(), b.allocate());
            (a, ra, b, rb)
        })
        .collect();
    for (a, ra, b, rb) in &mut pairs {
        a.channel_bind(*rb);
        b.channel_bind(*ra);
    }
    for (i, (a, _, b, _)) in pairs.iter().enumerate() {
        for k in 0..PACKETS {
            a.channel_data(format!("a{i}-{k}").as_bytes());
            b.channel_data(format!("b{i}-{k}").as_bytes());
        }
    }
    for (i, (a, _, b, _)) in pairs.iter().enumerate() {
        let at_b = b.channel_payloads(PACKETS, WAIT);
        let at_a = a.channel_payloads(PACKETS, WAIT);
        let want = |side: &str| {
            (0..PACKETS)
                .map(|k| format!("{side}{i}-{k}").into_bytes())
                .collect::<Vec<_>>()
        };
        assert_eq!(at_b, want("a"), "pair {i}: A to B");
        assert_eq!(at_a, want("b"), "pair {i}: B to A");
    }

    // Without a channel: a Data indication naming the sender's relay.
    let (a, ra, _, _) = &pairs[0];
    let mut c = Client::new(server.addr());
    let rc = c.allocate();
    c.create_permission(*ra);
    a.send_indication(rc, b"indicated");
    let data = c.recv(WAIT).expect("a Data indication");
    let msg = Message::parse(&data).expect("STUN");
    assert_eq!((msg.class(), msg.method()), (Class::Indication, method::DATA));
    assert_eq!(msg.xor_address(attr::XOR_PEER_ADDRESS).unwrap().unwrap(), *ra);
    assert_eq!(msg.get(attr::DATA), Some(&b"indicated"[..]));

    // A receiver without a permission for the sender gets nothing.
    let mut d = Client::new(server.addr());
    let rd = d.allocate();
    a.send_indication(rd, b"not permitted");
    assert_eq!(d.recv(QUIET), None, "relayed without a permission");

    let relayed = (2 * PAIRS * PACKETS + 1) as f64;
    let deadline = Instant::now() + WAIT;
    while metric(&server, "turnpike_relayed_in_process_packets_total") < relayed && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let in_process = metric(&server, "turnpike_relayed_in_process_packets_total");
    // The unpermitted one was handed over too, then dropped by D's core.
    assert_eq!(in_process, relayed + 1.0, "payloads relayed in-process");
    assert_eq!(metric(&server, "turnpike_relay_handoff_drops_total"), 0.0);
}
