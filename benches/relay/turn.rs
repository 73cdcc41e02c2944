//! The TURN client side of the bench, built with turnpike's public codec
//! (`MessageWriter`, the testkit's signing client): Allocate with the 401
//! dance, ChannelBind, over UDP, TCP or TLS.

use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use turnpike::proto::stun::{attr, method, Class, Message, MessageWriter, TransactionId};
use turnpike::proto::testkit::{encode, Challenge, Cred};

use crate::procfs::set_buffers;

pub const USER: &str = "user";
pub const PASS: &str = "pass";
pub const REALM: &str = "turnpike";
/// ChannelData header.
pub const CD_HEADER: usize = 4;
/// Kernel buffers of the generator's sockets, so that loss is the server's.
pub const SOCK_BUF: libc::c_int = 4 << 20;

/// The first three octets of every address of the bench: 127.0.0 on
/// loopback, the namespaces' subnet in namespace mode (set once, before
/// the first socket).
static NETWORK: OnceLock<[u8; 3]> = OnceLock::new();

/// Moves the bench's addresses from 127.0.0.0/24 to `prefix`.0/24; only
/// before the first address is used.
pub fn set_network(prefix: [u8; 3]) -> Result<(), String> {
    NETWORK
        .set(prefix)
        .map_err(|_| "the bench's network is already set".to_string())
}

/// Host `n` of the bench's network: 127.0.0.`n` on loopback.
pub fn lo(n: u8) -> Ipv4Addr {
    let [a, b, c] = *NETWORK.get_or_init(|| [127, 0, 0]);
    Ipv4Addr::new(a, b, c, n)
}

/// Whether `ip` is in the bench's network (127.0.0.0/8 on loopback): the
/// only addresses the bench sends to.
pub fn in_network(ip: IpAddr) -> bool {
    match (ip, NETWORK.get_or_init(|| [127, 0, 0])) {
        (IpAddr::V4(v4), [127, 0, 0]) => v4.is_loopback(),
        (IpAddr::V4(v4), prefix) => v4.octets()[..3] == prefix[..],
        (IpAddr::V6(_), _) => false,
    }
}

/// The source address of client `i`: clients are spread over hosts 2 to
/// 17 (127.0.0.2-17 on loopback), peers sit on host 100, the servers on
/// host 1 (so the generator's ephemeral ports never collide with relay
/// ports).
pub fn client_ip(i: usize) -> Ipv4Addr {
    lo(2 + (i % 16) as u8)
}

pub const PEER_OCTET: u8 = 100;

/// Relay ports of both servers (they never run at the same time): wide
/// enough for the idle-allocation figure and the Allocate burst, and below
/// Linux's default ephemeral range (32768-60999), where the generator's
/// peers get their ports: turnpike refuses a peer on one of its own
/// addresses on a relay-range port unless it is a live relay.
pub const RELAY_PORTS: (u16, u16) = (12000, 31999);

/// A transaction id unique within this run.
pub fn new_tid(seq: u32) -> TransactionId {
    static COUNTER: AtomicU32 = AtomicU32::new(1);
    let mut tid = [0u8; 12];
    tid[..4].copy_from_slice(&std::process::id().to_be_bytes());
    tid[4..8].copy_from_slice(&seq.to_be_bytes());
    tid[8..].copy_from_slice(&COUNTER.fetch_add(1, Ordering::Relaxed).to_be_bytes());
    tid
}

pub fn error_code(m: &Message<'_>) -> Option<u16> {
    m.get(attr::ERROR_CODE)
        .filter(|v| v.len() >= 4)
        .map(|v| u16::from(v[2] & 7) * 100 + u16::from(v[3]))
}

/// The one credential of the bench.
pub fn cred() -> Cred {
    Cred::new(USER, REALM, PASS)
}

/// Unsigned (`None`) or signed Allocate for a UDP relay.
pub fn allocate_request(tid: TransactionId, auth: Option<(&Cred, &Challenge)>) -> Vec<u8> {
    encode(
        Class::Request,
        method::ALLOCATE,
        tid,
        |w: &mut MessageWriter<'_>| {
            w.u32(attr::REQUESTED_TRANSPORT, 17 << 24);
        },
        auth,
    )
}

/// Sends one request and returns the answer with its transaction id.
pub trait Exchange {
    fn exchange(&mut self, request: &[u8], tid: TransactionId) -> Result<Vec<u8>, String>;
}

impl Exchange for UdpSocket {
    /// Retransmitted up to 4 times, 500 ms apart. The socket is connected.
    fn exchange(&mut self, request: &[u8], tid: TransactionId) -> Result<Vec<u8>, String> {
        let mut buf = [0u8; 1500];
        for _ in 0..4 {
            self.send(request).map_err(|e| format!("send: {e}"))?;
            let deadline = Instant::now() + Duration::from_millis(500);
            while Instant::now() < deadline {
                match self.recv(&mut buf) {
                    Ok(n) => {
                        if Message::parse(&buf[..n]).is_ok_and(|m| m.transaction_id() == tid) {
                            return Ok(buf[..n].to_vec());
                        }
                    }
                    Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {}
                    Err(e) => return Err(format!("recv: {e}")),
                }
            }
        }
        Err("no response after 4 attempts".into())
    }
}

/// A TURN client's TCP or TLS connection.
pub enum StreamConn {
    Tcp(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl StreamConn {
    pub fn tcp(&self) -> &TcpStream {
        match self {
            StreamConn::Tcp(s) => s,
            StreamConn::Tls(s) => &s.sock,
        }
    }
}

impl Read for StreamConn {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            StreamConn::Tcp(s) => s.read(buf),
            StreamConn::Tls(s) => s.read(buf),
        }
    }
}

impl Write for StreamConn {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            StreamConn::Tcp(s) => s.write(buf),
            StreamConn::Tls(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            StreamConn::Tcp(s) => s.flush(),
            StreamConn::Tls(s) => s.flush(),
        }
    }
}

impl Exchange for StreamConn {
    /// Blocking (the socket has a read timeout); skips ChannelData frames.
    fn exchange(&mut self, request: &[u8], tid: TransactionId) -> Result<Vec<u8>, String> {
        self.write_all(request).map_err(|e| format!("write: {e}"))?;
        self.flush().map_err(|e| format!("flush: {e}"))?;
        for _ in 0..64 {
            let mut head = [0u8; 4];
            self.read_exact(&mut head).map_err(|e| format!("read: {e}"))?;
            let len = usize::from(u16::from_be_bytes([head[2], head[3]]));
            let rest = if head[0] & 0xC0 == 0 {
                16 + len
            } else {
                len.div_ceil(4) * 4
            };
            let mut body = vec![0u8; rest];
            self.read_exact(&mut body).map_err(|e| format!("read: {e}"))?;
            if head[0] & 0xC0 == 0 {
                let mut msg = head.to_vec();
                msg.extend_from_slice(&body);
                if Message::parse(&msg).is_ok_and(|m| m.transaction_id() == tid) {
                    return Ok(msg);
                }
            }
        }
        Err("no answer among 64 frames".into())
    }
}

/// Connects a TURN client over TCP, or TLS with `tls` (blocking, 10 s
/// read timeout, Nagle off).
pub fn connect_stream(addr: SocketAddr, tls: Option<&rustls::ClientConfig>) -> Result<StreamConn, String> {
    let tcp = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).map_err(|e| format!("connect {addr}: {e}"))?;
    tcp.set_nodelay(true).map_err(|e| e.to_string())?;
    tcp.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    set_buffers(tcp.as_raw_fd(), SOCK_BUF);
    let Some(config) = tls else {
        return Ok(StreamConn::Tcp(tcp));
    };
    let name = rustls::pki_types::ServerName::IpAddress(addr.ip().into());
    let conn = rustls::ClientConnection::new(std::sync::Arc::new(config.clone()), name).map_err(|e| e.to_string())?;
    let mut stream = rustls::StreamOwned::new(conn, tcp);
    while stream.conn.is_handshaking() {
        stream
            .conn
            .complete_io(&mut stream.sock)
            .map_err(|e| format!("TLS handshake: {e}"))?;
    }
    Ok(StreamConn::Tls(Box::new(stream)))
}

/// A TLS client configuration trusting only the bench CA.
pub fn tls_client_config(ca_der: &[u8]) -> Result<rustls::ClientConfig, String> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from(ca_der.to_vec()))
        .map_err(|e| e.to_string())?;
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// An allocation: the challenge that signs its requests and the relayed
/// address.
pub struct Allocation {
    pub auth: Challenge,
    pub relay: SocketAddr,
}

/// Allocate: the first attempt is refused with 401 and the realm and
/// nonce, the signed retry succeeds. The relayed address must be in the
/// bench's network (loopback, or the namespaces' subnet).
pub fn allocate(x: &mut impl Exchange, cred: &Cred) -> Result<Allocation, String> {
    let tid = new_tid(1);
    let first = x.exchange(&allocate_request(tid, None), tid)?;
    let m = Message::parse(&first).map_err(|e| e.to_string())?;
    if error_code(&m) != Some(401) {
        return Err(format!(
            "unauthenticated Allocate: expected 401, got {:?}",
            error_code(&m)
        ));
    }
    let auth = Challenge::of(&first).ok_or("401 without REALM and NONCE")?;
    let tid = new_tid(2);
    let resp = x.exchange(&allocate_request(tid, Some((cred, &auth))), tid)?;
    let m = Message::parse(&resp).map_err(|e| e.to_string())?;
    if m.class() != Class::Success {
        return Err(format!("Allocate failed with {:?}", error_code(&m)));
    }
    let relay = m
        .xor_address(attr::XOR_RELAYED_ADDRESS)
        .ok_or("Allocate success without XOR-RELAYED-ADDRESS")?
        .map_err(|e| e.to_string())?;
    if !in_network(relay.ip()) {
        return Err(format!(
            "relay address {relay} is not in the bench's network; refusing to send there"
        ));
    }
    Ok(Allocation { auth, relay })
}

/// ChannelBind `channel` to `peer`.
pub fn channel_bind(
    x: &mut impl Exchange,
    cred: &Cred,
    a: &Allocation,
    channel: u16,
    peer: SocketAddr,
) -> Result<(), String> {
    let tid = new_tid(3);
    let req = encode(
        Class::Request,
        method::CHANNEL_BIND,
        tid,
        |w: &mut MessageWriter<'_>| {
            w.u32(attr::CHANNEL_NUMBER, u32::from(channel) << 16);
            w.xor_address(attr::XOR_PEER_ADDRESS, peer);
        },
        Some((cred, &a.auth)),
    );
    let resp = x.exchange(&req, tid)?;
    let m = Message::parse(&resp).map_err(|e| e.to_string())?;
    if m.class() != Class::Success {
        return Err(format!("ChannelBind to {peer} failed with {:?}", error_code(&m)));
    }
    Ok(())
}

/// A UDP socket on `ip`, connected to `to` if given, with a read timeout.
pub fn udp_socket(ip: Ipv4Addr, to: Option<SocketAddr>) -> Result<UdpSocket, String> {
    let s = UdpSocket::bind((ip, 0)).map_err(|e| format!("bind {ip}: {e}"))?;
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .map_err(|e| e.to_string())?;
    if let Some(to) = to {
        s.connect(to).map_err(|e| e.to_string())?;
    }
    Ok(s)
}

/// Switches a load socket to non-blocking with large buffers.
pub fn load_mode(s: &UdpSocket) -> Result<(), String> {
    s.set_nonblocking(true).map_err(|e| e.to_string())?;
    set_buffers(s.as_raw_fd(), SOCK_BUF);
    Ok(())
}

/// A client with its allocation, a channel to its own UDP peer, and the
/// peer (connected to the relayed address).
pub struct UdpFlow {
    pub client: UdpSocket,
    pub peer: UdpSocket,
    pub channel: u16,
}

/// A peer socket on host 100 (127.0.0.100 on loopback) on a port outside the relay range (a
/// loopback peer on a relay-range port would have to be a live relay).
pub fn peer_socket() -> Result<UdpSocket, String> {
    let (low, high) = RELAY_PORTS;
    for _ in 0..100 {
        let s = udp_socket(lo(PEER_OCTET), None)?;
        let port = s.local_addr().map_err(|e| e.to_string())?.port();
        if !(low..=high).contains(&port) {
            return Ok(s);
        }
    }
    Err(format!("no peer port outside the relay range {low}-{high}"))
}

pub fn udp_flow(server: SocketAddr, index: usize, cred: &Cred) -> Result<UdpFlow, String> {
    let mut client = udp_socket(client_ip(index), Some(server))?;
    let peer = peer_socket()?;
    let peer_addr = peer.local_addr().map_err(|e| e.to_string())?;
    let a = allocate(&mut client, cred)?;
    let channel = 0x4000 + (index % 0x3000) as u16;
    channel_bind(&mut client, cred, &a, channel, peer_addr)?;
    peer.connect(a.relay).map_err(|e| e.to_string())?;
    load_mode(&client)?;
    load_mode(&peer)?;
    Ok(UdpFlow { client, peer, channel })
}

/// Two clients of this server, each with a channel to the other's
/// relayed address: A's ChannelData on `chan_a` arrives at B as
/// ChannelData on `chan_b`, and back.
pub struct RelayPair {
    pub a: UdpSocket,
    pub b: UdpSocket,
    pub chan_a: u16,
    pub chan_b: u16,
}

pub fn relay_pair(server: SocketAddr, index: usize, cred: &Cred) -> Result<RelayPair, String> {
    let mut a = udp_socket(client_ip(2 * index), Some(server))?;
    let mut b = udp_socket(client_ip(2 * index + 1), Some(server))?;
    let alloc_a = allocate(&mut a, cred)?;
    let alloc_b = allocate(&mut b, cred)?;
    let chan_a = 0x4000 + (index % 0x1000) as u16 * 2;
    let chan_b = chan_a + 1;
    channel_bind(&mut a, cred, &alloc_a, chan_a, alloc_b.relay)?;
    channel_bind(&mut b, cred, &alloc_b, chan_b, alloc_a.relay)?;
    load_mode(&a)?;
    load_mode(&b)?;
    Ok(RelayPair { a, b, chan_a, chan_b })
}

/// A TCP or TLS client with a (UDP) allocation, a channel to its own UDP
/// peer, and the peer.
pub struct StreamFlow {
    pub conn: StreamConn,
    pub peer: UdpSocket,
    pub channel: u16,
}

pub fn stream_flow(
    server: SocketAddr,
    tls: Option<&rustls::ClientConfig>,
    index: usize,
    cred: &Cred,
) -> Result<StreamFlow, String> {
    let mut conn = connect_stream(server, tls)?;
    let peer = peer_socket()?;
    let peer_addr = peer.local_addr().map_err(|e| e.to_string())?;
    let a = allocate(&mut conn, cred)?;
    let channel = 0x4000 + (index % 0x3000) as u16;
    channel_bind(&mut conn, cred, &a, channel, peer_addr)?;
    peer.connect(a.relay).map_err(|e| e.to_string())?;
    load_mode(&peer)?;
    conn.tcp().set_nonblocking(true).map_err(|e| e.to_string())?;
    Ok(StreamFlow { conn, peer, channel })
}

/// A ChannelData message: `channel`, `payload` bytes of filler with
/// `index` in the first four.
pub fn channel_data(channel: u16, payload: usize, index: u32) -> Vec<u8> {
    let mut packet = vec![0xA5u8; CD_HEADER + payload];
    packet[..2].copy_from_slice(&channel.to_be_bytes());
    packet[2..4].copy_from_slice(&(payload as u16).to_be_bytes());
    packet[4..8].copy_from_slice(&index.to_be_bytes());
    packet
}

/// A bare datagram of `payload` bytes with `index` in the first four.
pub fn raw_payload(payload: usize, index: u32) -> Vec<u8> {
    let mut packet = vec![0x5Au8; payload];
    packet[..4].copy_from_slice(&index.to_be_bytes());
    packet
}
