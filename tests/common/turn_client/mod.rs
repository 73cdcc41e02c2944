//! The tests' TURN client, in three parts:
//! * [`TurnClient`] (this file): one control connection over UDP, TCP or
//!   TLS, signing its requests as [`USER`] once challenged, sorting what
//!   the server sends into answers and relayed data;
//! * [`stun`]: one-shot exchanges written by hand (Binding, an
//!   authenticated request on a stream or over UDP, stream framing);
//! * [`turn_crate`]: the `turn` crate (webrtc-rs), an independent client.

pub mod stun;
pub mod turn_crate;

pub use stun::*;
pub use turn_crate::*;

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use rustls::version::TLS13;
use turnpike::proto::channel_data;
use turnpike::proto::stream_framing;
use turnpike::proto::stun::{attr, method, Class, Message, MessageWriter, TransactionId};
use turnpike::proto::testkit::{encode, Challenge, Cred};

use crate::common::{TestPki, TestServer, PASSWORD, USER};

/// How long a request may take to be answered.
pub const ANSWER_WAIT: Duration = Duration::from_secs(5);

pub const REQUESTED_UDP: [u8; 4] = [17, 0, 0, 0];
pub const REQUESTED_TCP: [u8; 4] = [6, 0, 0, 0];
pub const FAMILY_IPV6: [u8; 4] = [2, 0, 0, 0];

/// How a [`TurnClient`] reaches the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
    Tls,
}

pub type TlsStream = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

enum Wire {
    Udp(UdpSocket),
    Tcp(TcpStream),
    Tls(Box<TlsStream>),
}

/// Where relayed data came from, as the server framed it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// A Data indication's XOR-PEER-ADDRESS.
    Peer(SocketAddr),
    /// A ChannelData message's channel number.
    Channel(u16),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Arrival {
    pub source: Source,
    pub payload: Vec<u8>,
}

/// One control connection to the server (one 5-tuple, so at most one
/// allocation), signing its requests as [`USER`] (or whom
/// [`TurnClient::signed_as`] names) with the last challenge it was handed.
pub struct TurnClient {
    pub transport: Transport,
    wire: Wire,
    /// Username and password of the signatures.
    user: String,
    password: String,
    /// Stream bytes not yet cut into frames.
    pending: Vec<u8>,
    challenge: Option<Challenge>,
    /// Relayed data received so far and not yet taken.
    pub arrivals: Vec<Arrival>,
    next_channel: u16,
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut)
}

impl TurnClient {
    pub fn open(server: &TestServer, transport: Transport) -> TurnClient {
        let addr = match transport {
            Transport::Tls => server.tls_addr(),
            Transport::Udp | Transport::Tcp => server.addr(),
        };
        TurnClient::open_at(addr, transport, server.ca())
    }

    /// A client of the server at `addr` (a test server's or another's),
    /// trusting `ca` over TLS.
    pub fn open_at(addr: SocketAddr, transport: Transport, ca: &TestPki) -> TurnClient {
        let wire = match transport {
            Transport::Udp => {
                let socket = UdpSocket::bind("127.0.0.1:0").expect("bind a client socket");
                socket.connect(addr).expect("connect the client socket");
                Wire::Udp(socket)
            }
            Transport::Tcp => Wire::Tcp(tcp_connect(addr)),
            Transport::Tls => Wire::Tls(Box::new(ca.connect(addr, &[&TLS13]).expect("TLS handshake"))),
        };
        TurnClient::on(transport, wire)
    }

    /// A UDP client of the server at `addr` from local address `local`
    /// (in a network namespace of the test's, where the server is not on
    /// loopback).
    pub fn open_udp_from(local: SocketAddr, addr: SocketAddr) -> TurnClient {
        let socket = UdpSocket::bind(local).expect("bind a client socket");
        socket.connect(addr).expect("connect the client socket");
        TurnClient::on(Transport::Udp, Wire::Udp(socket))
    }

    /// A TLS client on `stream`, a connection to the server's TLS port
    /// whose handshake is done (e.g. with a certificate an ACME CA
    /// issued, verified against that CA's root).
    pub fn over_tls(stream: TlsStream) -> TurnClient {
        TurnClient::on(Transport::Tls, Wire::Tls(Box::new(stream)))
    }

    fn on(transport: Transport, wire: Wire) -> TurnClient {
        TurnClient {
            transport,
            wire,
            user: USER.to_owned(),
            password: PASSWORD.to_owned(),
            pending: Vec::new(),
            challenge: None,
            arrivals: Vec::new(),
            next_channel: 0x4000,
        }
    }

    /// Signs from now on as `user` with `password` (e.g. a short-lived
    /// credential) instead of [`USER`].
    pub fn signed_as(mut self, user: &str, password: &str) -> TurnClient {
        (self.user, self.password) = (user.to_owned(), password.to_owned());
        self
    }

    pub fn send(&mut self, bytes: &[u8]) {
        let sent = match &mut self.wire {
            Wire::Udp(socket) => socket.send(bytes).map(drop),
            Wire::Tcp(stream) => stream.write_all(bytes).and_then(|()| stream.flush()),
            Wire::Tls(stream) => stream.write_all(bytes).and_then(|()| stream.flush()),
        };
        sent.unwrap_or_else(|e| panic!("{:?} client: send failed: {e}", self.transport));
    }

    /// The next datagram or stream frame from the server; `None` once a
    /// read finds nothing by `deadline` (a deadline already passed still
    /// takes what is there).
    pub fn next_frame(&mut self, deadline: Instant) -> Option<Vec<u8>> {
        let mut chunk = vec![0u8; 65_536];
        for _ in 0..1000 {
            if !matches!(self.wire, Wire::Udp(_)) {
                match stream_framing::frame_len(&self.pending, stream_framing::MAX_FRAME) {
                    Ok(Some(len)) => return Some(self.pending.drain(..len).collect()),
                    Ok(None) => {}
                    Err(e) => panic!("{:?} client: the server sent a bad frame: {e}", self.transport),
                }
            }
            let left = deadline
                .saturating_duration_since(Instant::now())
                .max(Duration::from_millis(1));
            let read = match &mut self.wire {
                Wire::Udp(socket) => socket
                    .set_read_timeout(Some(left))
                    .and_then(|()| socket.recv(&mut chunk)),
                Wire::Tcp(stream) => stream
                    .set_read_timeout(Some(left))
                    .and_then(|()| stream.read(&mut chunk)),
                Wire::Tls(stream) => stream
                    .sock
                    .set_read_timeout(Some(left))
                    .and_then(|()| stream.read(&mut chunk)),
            };
            match read {
                Ok(n) if matches!(self.wire, Wire::Udp(_)) => return Some(chunk[..n].to_vec()),
                Ok(0) => return None,
                Ok(n) => self.pending.extend_from_slice(&chunk[..n]),
                Err(e) if is_timeout(&e) => return None,
                Err(e) => panic!("{:?} client: read failed: {e}", self.transport),
            }
        }
        None
    }

    /// Keeps relayed data in `arrivals`; returns `frame` if it is the
    /// answer to `id`. Anything else (e.g. ConnectionAttempt) is dropped.
    pub fn sort(&mut self, frame: Vec<u8>, id: Option<TransactionId>) -> Option<Vec<u8>> {
        if frame.first().is_some_and(|b| b >> 6 == 0b01) {
            if let Ok((number, payload)) = channel_data::parse(&frame) {
                self.arrivals.push(Arrival {
                    source: Source::Channel(number.get()),
                    payload: payload.to_vec(),
                });
            }
            return None;
        }
        let msg = Message::parse(&frame).ok()?;
        if (msg.class(), msg.method()) == (Class::Indication, method::DATA) {
            if let (Some(Ok(peer)), Some(payload)) = (msg.xor_address(attr::XOR_PEER_ADDRESS), msg.get(attr::DATA)) {
                self.arrivals.push(Arrival {
                    source: Source::Peer(peer),
                    payload: payload.to_vec(),
                });
            }
            return None;
        }
        let answer = matches!(msg.class(), Class::Success | Class::Error) && Some(msg.transaction_id()) == id;
        answer.then_some(frame)
    }

    /// Sends `request` and returns the answer to it; over UDP the request
    /// is sent again if the answer is slow (loopback can drop under load).
    pub fn exchange(&mut self, request: &[u8], id: TransactionId) -> Vec<u8> {
        let tries = if self.transport == Transport::Udp { 3 } else { 1 };
        for _ in 0..tries {
            self.send(request);
            let deadline = Instant::now() + ANSWER_WAIT / tries;
            while Instant::now() < deadline {
                let Some(frame) = self.next_frame(deadline) else {
                    break;
                };
                if let Some(answer) = self.sort(frame, Some(id)) {
                    return answer;
                }
            }
        }
        panic!("{:?} client: no answer within {ANSWER_WAIT:?}", self.transport);
    }

    /// A request of `method` with the attributes `build` writes, signed
    /// once a challenge is known; a 401 or 438 answer is retried with the
    /// challenge it carries.
    pub fn request(&mut self, method: u16, build: impl Fn(&mut MessageWriter<'_>)) -> Vec<u8> {
        for _ in 0..3 {
            let id = transaction_id();
            let signed = self
                .challenge
                .clone()
                .map(|challenge| (Cred::new(&self.user, challenge.realm(), &self.password), challenge));
            let request = encode(
                Class::Request,
                method,
                id,
                &build,
                signed.as_ref().map(|(cred, challenge)| (cred, challenge)),
            );
            let answer = self.exchange(&request, id);
            match Challenge::of(&answer) {
                Some(challenge) => self.challenge = Some(challenge),
                None => return answer,
            }
        }
        panic!("{:?} client: challenged three times in a row", self.transport);
    }

    pub fn allocate(&mut self, build: impl Fn(&mut MessageWriter<'_>)) -> Vec<SocketAddr> {
        let answer = self.request(method::ALLOCATE, build);
        let msg = Message::parse(&answer).expect("an Allocate answer");
        assert_eq!(
            msg.class(),
            Class::Success,
            "{:?}: Allocate refused ({:?})",
            self.transport,
            outcome(&answer)
        );
        msg.xor_addresses(attr::XOR_RELAYED_ADDRESS)
            .map(|a| a.expect("a valid XOR-RELAYED-ADDRESS"))
            .collect()
    }

    /// A UDP relay in each family: (IPv4 relay, IPv6 relay).
    pub fn allocate_udp_dual(&mut self) -> (SocketAddr, SocketAddr) {
        let relays = self.allocate(|w| {
            w.bytes(attr::REQUESTED_TRANSPORT, &REQUESTED_UDP)
                .bytes(attr::ADDITIONAL_ADDRESS_FAMILY, &FAMILY_IPV6);
        });
        match relays[..] {
            [v4, v6] if v4.is_ipv4() && v6.is_ipv6() => (v4, v6),
            _ => panic!("a dual allocation gave {relays:?}"),
        }
    }

    pub fn allocate_udp(&mut self) -> SocketAddr {
        self.allocate(|w| {
            w.bytes(attr::REQUESTED_TRANSPORT, &REQUESTED_UDP);
        })[0]
    }

    /// A UDP relay of IPv6 alone (REQUESTED-ADDRESS-FAMILY, RFC 8656
    /// §7.2), whatever the family of the client's own address.
    pub fn allocate_udp_v6(&mut self) -> SocketAddr {
        self.allocate(|w| {
            w.bytes(attr::REQUESTED_TRANSPORT, &REQUESTED_UDP)
                .bytes(attr::REQUESTED_ADDRESS_FAMILY, &FAMILY_IPV6);
        })[0]
    }

    /// An RFC 6062 TCP relay of one family.
    pub fn allocate_tcp(&mut self, v6: bool) -> SocketAddr {
        self.allocate(|w| {
            w.bytes(attr::REQUESTED_TRANSPORT, &REQUESTED_TCP);
            if v6 {
                w.bytes(attr::REQUESTED_ADDRESS_FAMILY, &FAMILY_IPV6);
            }
        })[0]
    }

    pub fn create_permission(&mut self, peer: SocketAddr) -> Result<(), u16> {
        outcome(&self.request(method::CREATE_PERMISSION, |w| {
            w.xor_address(attr::XOR_PEER_ADDRESS, peer);
        }))
    }

    /// ChannelBind of a number not used before on this client; returns it
    /// with the outcome.
    pub fn channel_bind(&mut self, peer: SocketAddr) -> (u16, Result<(), u16>) {
        let number = self.next_channel;
        self.next_channel += 1;
        let answer = self.request(method::CHANNEL_BIND, |w| {
            w.bytes(attr::CHANNEL_NUMBER, &[(number >> 8) as u8, number as u8, 0, 0])
                .xor_address(attr::XOR_PEER_ADDRESS, peer);
        });
        (number, outcome(&answer))
    }

    pub fn connect(&mut self, peer: SocketAddr) -> Result<(), u16> {
        outcome(&self.request(method::CONNECT, |w| {
            w.xor_address(attr::XOR_PEER_ADDRESS, peer);
        }))
    }

    /// Refresh with LIFETIME 0: deletes the allocation.
    pub fn delete_allocation(&mut self) -> Result<(), u16> {
        outcome(&self.request(method::REFRESH, |w| {
            w.u32(attr::LIFETIME, 0);
        }))
    }

    pub fn send_indication(&mut self, peer: SocketAddr, payload: &[u8]) {
        self.send(&turnpike::proto::client::send_indication(
            transaction_id(),
            peer,
            payload,
        ));
    }

    /// ChannelData, padded to a multiple of 4 (mandatory on streams,
    /// ignored on UDP).
    pub fn channel_data(&mut self, number: u16, payload: &[u8]) {
        let mut frame = Vec::with_capacity(payload.len() + 8);
        frame.extend_from_slice(&number.to_be_bytes());
        frame.extend_from_slice(&(payload.len() as u16).to_be_bytes());
        frame.extend_from_slice(payload);
        frame.resize(frame.len().div_ceil(4) * 4, 0);
        self.send(&frame);
    }

    /// Takes what has arrived by now (reads of 1 ms) into `arrivals`.
    pub fn poll(&mut self) {
        let now = Instant::now();
        for _ in 0..1000 {
            let Some(frame) = self.next_frame(now) else {
                return;
            };
            self.sort(frame, None);
        }
    }

    /// Relayed data received so far, and any that comes within `wait`
    /// until `want` pieces have come.
    pub fn wait_arrivals(&mut self, want: usize, wait: Duration) -> Vec<Arrival> {
        let deadline = Instant::now() + wait;
        while self.arrivals.len() < want && Instant::now() < deadline {
            match self.next_frame(deadline) {
                Some(frame) => {
                    self.sort(frame, None);
                }
                None => break,
            }
        }
        std::mem::take(&mut self.arrivals)
    }

    /// Relayed data received so far, and any that comes within `wait`.
    pub fn take_arrivals(&mut self, wait: Duration) -> Vec<Arrival> {
        let deadline = Instant::now() + wait;
        while Instant::now() < deadline {
            match self.next_frame(deadline) {
                Some(frame) => {
                    self.sort(frame, None);
                }
                None => break,
            }
        }
        std::mem::take(&mut self.arrivals)
    }
}

/// `Ok` for a success answer, the error code for an error answer.
pub fn outcome(answer: &[u8]) -> Result<(), u16> {
    let msg = Message::parse(answer).expect("a STUN answer");
    match msg.class() {
        Class::Success => Ok(()),
        _ => Err(msg
            .get(attr::ERROR_CODE)
            .filter(|v| v.len() >= 4)
            .map_or(0, |v| u16::from(v[2] & 0x7) * 100 + u16::from(v[3]))),
    }
}
