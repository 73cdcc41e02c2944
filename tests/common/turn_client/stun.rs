//! One-shot STUN and TURN exchanges written by hand: Binding requests and
//! their answers decoded here, authenticated requests on a stream or over
//! UDP (the 401 dance of `proto::testkit`), stream framing.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::common::{PASSWORD, USER};
use turnpike::proto::stun::{attr, method, Class};
use turnpike::proto::testkit::{encode, Challenge, Cred};

/// An Allocate for a UDP relay: unsigned, or signed with `cred` for the
/// realm and nonce of `challenge`.
pub fn allocate_request(cred: Option<(&Cred, &Challenge)>) -> Vec<u8> {
    encode(
        Class::Request,
        method::ALLOCATE,
        transaction_id(),
        |w| {
            w.bytes(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0]);
        },
        cred,
    )
}

/// STUN magic cookie (RFC 8489 §5).
pub const MAGIC_COOKIE: u32 = 0x2112_A442;

/// A TCP connection to `addr`, with Nagle off and a 10 s read timeout
/// so that no read can hang a test.
pub fn tcp_connect(addr: SocketAddr) -> std::net::TcpStream {
    let stream = std::net::TcpStream::connect(addr).expect("connect over TCP");
    stream.set_nodelay(true).expect("nodelay");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("read timeout");
    stream
}

/// True once the server has closed the stream (EOF or reset), read within
/// the stream's read timeout.
pub fn closed_by_server(stream: &mut impl Read) -> bool {
    let mut byte = [0u8; 1];
    match stream.read(&mut byte) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => matches!(
            e.kind(),
            std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::ConnectionAborted
        ),
    }
}

/// Reads one STUN message framed on a stream (20-byte header, then the
/// length it states).
pub fn read_stun(stream: &mut impl Read) -> Vec<u8> {
    let mut msg = vec![0u8; 20];
    stream.read_exact(&mut msg).expect("read a STUN header");
    let len = usize::from(u16::from_be_bytes([msg[2], msg[3]]));
    msg.resize(20 + len, 0);
    stream.read_exact(&mut msg[20..]).expect("read a STUN body");
    msg
}

/// Sends a Binding request on a stream and returns the mapped address of
/// the answer.
pub fn stream_binding(stream: &mut (impl Read + Write)) -> Option<SocketAddr> {
    let txid = transaction_id();
    stream.write_all(&binding_request(&txid)).expect("send Binding");
    stream.flush().expect("flush");
    parse_binding_success(&read_stun(stream), &txid)
}

/// Sends a request of `method` and, if the answer is a 401 challenge,
/// signs it as [`USER`] with the challenge's REALM and NONCE and sends it
/// again; returns the final answer.
pub fn authenticated_request(
    stream: &mut (impl Read + Write),
    method: u16,
    build: impl Fn(&mut turnpike::proto::stun::MessageWriter<'_>),
) -> Vec<u8> {
    authenticated_request_as(stream, USER, PASSWORD, method, build)
}

/// [`authenticated_request`] signed as `user` with `password`.
pub fn authenticated_request_as(
    stream: &mut (impl Read + Write),
    user: &str,
    password: &str,
    method: u16,
    build: impl Fn(&mut turnpike::proto::stun::MessageWriter<'_>),
) -> Vec<u8> {
    use turnpike::proto::testkit::{client, Cred};
    let answer = client::authenticated(
        method,
        build,
        transaction_id,
        |realm| Cred::new(user, realm, password),
        |request| {
            stream.write_all(request)?;
            stream.flush()?;
            Ok::<_, std::io::Error>(read_stun(stream))
        },
    );
    answer.expect("send request")
}

/// The code of a STUN answer: 200 for success, else its ERROR-CODE.
pub fn code_of(answer: &[u8]) -> u16 {
    use turnpike::proto::stun::{attr, Class, Message};
    let msg = Message::parse(answer).expect("a STUN answer");
    match msg.class() {
        Class::Success => 200,
        _ => msg
            .get(attr::ERROR_CODE)
            .map(|v| u16::from(v[2] & 7) * 100 + u16::from(v[3]))
            .expect("ERROR-CODE"),
    }
}

/// An authenticated request of `method`, its attributes written by
/// `build`, over UDP from `socket` to `server` as `user`: the 401 dance,
/// each answer awaited within the socket's read timeout.
pub fn udp_request_as(
    socket: &UdpSocket,
    server: SocketAddr,
    (user, password): (&str, &str),
    method: u16,
    build: impl Fn(&mut turnpike::proto::stun::MessageWriter<'_>),
) -> Vec<u8> {
    use turnpike::proto::testkit::{client, Cred};
    client::authenticated(
        method,
        build,
        transaction_id,
        |realm| Cred::new(user, realm, password),
        |request| {
            socket.send_to(request, server)?;
            let mut buf = [0u8; 1500];
            let (n, _) = socket.recv_from(&mut buf)?;
            Ok::<_, std::io::Error>(buf[..n].to_vec())
        },
    )
    .expect("an answer over UDP")
}

/// The core's xorshift, for reproducible test data.
pub use turnpike::proto::xorshift::XorShift;

/// A 12-byte transaction id that differs on every call.
pub fn transaction_id() -> [u8; 12] {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let mut rng = XorShift::new(
        nanos
            ^ (u64::from(std::process::id()) << 32)
            ^ (COUNTER.fetch_add(1, Ordering::Relaxed) as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15),
    );
    let mut id = [0u8; 12];
    rng.fill(&mut id);
    id
}

/// A 20-byte STUN header.
pub fn stun_header(msg_type: u16, length: u16, cookie: u32, txid: &[u8; 12]) -> Vec<u8> {
    let mut out = Vec::with_capacity(20);
    out.extend_from_slice(&msg_type.to_be_bytes());
    out.extend_from_slice(&length.to_be_bytes());
    out.extend_from_slice(&cookie.to_be_bytes());
    out.extend_from_slice(txid);
    out
}

/// A Binding request with no attributes.
pub fn binding_request(txid: &[u8; 12]) -> Vec<u8> {
    stun_header(0x0001, 0, MAGIC_COOKIE, txid)
}

/// The XOR-MAPPED-ADDRESS (IPv4) of a Binding success response to `txid`,
/// decoded by hand; `None` if `packet` is anything else.
pub fn parse_binding_success(packet: &[u8], txid: &[u8; 12]) -> Option<SocketAddr> {
    let header = packet.get(..20)?;
    if header[0..2] != [0x01, 0x01] || header[4..8] != MAGIC_COOKIE.to_be_bytes() || header[8..20] != txid[..] {
        return None;
    }
    let length = usize::from(u16::from_be_bytes([header[2], header[3]]));
    let mut attrs = packet.get(20..20 + length)?;
    while attrs.len() >= 4 {
        let kind = u16::from_be_bytes([attrs[0], attrs[1]]);
        let len = usize::from(u16::from_be_bytes([attrs[2], attrs[3]]));
        let value = attrs.get(4..4 + len)?;
        if kind == 0x0020 && len == 8 && value[1] == 0x01 {
            let port = u16::from_be_bytes([value[2], value[3]]) ^ (MAGIC_COOKIE >> 16) as u16;
            let ip = u32::from_be_bytes([value[4], value[5], value[6], value[7]]) ^ MAGIC_COOKIE;
            return Some(SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::from(ip), port)));
        }
        attrs = attrs.get((4 + len).div_ceil(4) * 4..).unwrap_or_default();
    }
    None
}

/// Sends one Binding request from `socket` to `server` and waits up to
/// `wait` for its success response; returns the XOR-MAPPED-ADDRESS.
/// Datagrams that are not the answer are skipped (at most 1000 of them).
pub fn stun_binding(socket: &UdpSocket, server: SocketAddr, wait: Duration) -> Option<SocketAddr> {
    let txid = transaction_id();
    socket.send_to(&binding_request(&txid), server).ok()?;
    let deadline = Instant::now() + wait;
    let mut buf = [0u8; 2048];
    for _ in 0..1000 {
        let left = deadline.checked_duration_since(Instant::now())?;
        socket.set_read_timeout(Some(left.max(Duration::from_millis(1)))).ok()?;
        let (n, from) = socket.recv_from(&mut buf).ok()?;
        if from == server {
            if let Some(mapped) = parse_binding_success(&buf[..n], &txid) {
                return Some(mapped);
            }
        }
    }
    None
}

/// Sends a Binding request from `socket` and reads until its answer comes,
/// returning every other datagram received before it. The server handles
/// one client's datagrams in order, so anything it answered to what
/// `socket` sent earlier arrives before the answer. Resends the request a
/// few times (loopback can drop under load); panics if none is answered.
pub fn sync_with_server(socket: &UdpSocket, server: SocketAddr) -> Vec<Vec<u8>> {
    let mut others = Vec::new();
    let mut buf = [0u8; 65_536];
    for _attempt in 0..5 {
        let txid = transaction_id();
        socket.send_to(&binding_request(&txid), server).expect("send Binding");
        socket
            .set_read_timeout(Some(Duration::from_secs(2)))
            .expect("set_read_timeout");
        for _ in 0..10_000 {
            let Ok((n, from)) = socket.recv_from(&mut buf) else {
                break; // timed out: send a new request
            };
            if from == server && parse_binding_success(&buf[..n], &txid).is_some() {
                return others;
            }
            others.push(buf[..n].to_vec());
        }
    }
    panic!("server {server} answered none of 5 Binding requests");
}

/// Allocates a relay of `transport` (17 UDP, 6 TCP) on `stream` and
/// permits `peer`; returns the relayed address.
pub fn stream_allocate(stream: &mut (impl Read + Write), transport: u8, peer: SocketAddr) -> SocketAddr {
    use turnpike::proto::stun::{attr, method, Class, Message};
    let answer = authenticated_request(stream, method::ALLOCATE, |w| {
        w.bytes(attr::REQUESTED_TRANSPORT, &[transport, 0, 0, 0]);
    });
    let msg = Message::parse(&answer).expect("an Allocate answer");
    assert_eq!(msg.class(), Class::Success, "Allocate failed: {answer:02x?}");
    let relay = msg
        .xor_address(attr::XOR_RELAYED_ADDRESS)
        .expect("XOR-RELAYED-ADDRESS")
        .expect("valid");
    let answer = authenticated_request(stream, method::CREATE_PERMISSION, |w| {
        w.xor_address(attr::XOR_PEER_ADDRESS, peer);
    });
    assert_eq!(code_of(&answer), 200, "CreatePermission");
    relay
}

/// Connect (RFC 6062 §5.2) on the control connection `stream`: the
/// CONNECTION-ID, or the error code.
pub fn stream_connect(stream: &mut (impl Read + Write), peer: SocketAddr) -> Result<u32, u16> {
    use turnpike::proto::stun::{attr, method, Message};
    let answer = authenticated_request(stream, method::CONNECT, |w| {
        w.xor_address(attr::XOR_PEER_ADDRESS, peer);
    });
    match code_of(&answer) {
        200 => Ok(Message::parse(&answer)
            .ok()
            .and_then(|m| m.u32_attr(attr::CONNECTION_ID))
            .and_then(Result::ok)
            .expect("CONNECTION-ID")),
        code => Err(code),
    }
}
