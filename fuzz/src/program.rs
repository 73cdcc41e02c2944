//! Builders for [`crate::server`] programs and seed inputs of every
//! target, used by `examples/write_seeds.rs` and the tests.

use std::net::SocketAddr;

use turnpike::proto::stun::{self, attr, method, Class, MessageWriter};
use turnpike::proto::testkit::rfc5769;

use crate::message::{KNOWN_TYPES, XOR_TYPES};
use crate::server::{action, flag, METHODS};

/// The attribute list of a signed request, in the harness's encoding
/// (one tag byte, then what the tag needs):
///
/// * `0x00..=0x3F` `len value`: attribute `KNOWN_TYPES[tag % n]`;
/// * `0x40..=0x5F` `type_hi type_lo len value`: any attribute;
/// * `0x60..=0x6F` `sel`: RESERVATION-TOKEN, one the server handed out;
/// * `0x70`: REQUESTED-TRANSPORT UDP; `0x71 n`: CHANNEL-NUMBER `0x40nn`;
///   `0x72`: EVEN-PORT with R set; `0x73`: REQUESTED-ADDRESS-FAMILY IPv6;
///   `0x74`: LIFETIME 0; `0x75 len value`: DATA;
///   `0x76`: ADDITIONAL-ADDRESS-FAMILY IPv6;
///   `0x77..=0x7F secs_hi secs_lo`: LIFETIME;
/// * `0x80..=0xBF sel`: XOR-PEER-ADDRESS of a peer from the table (or
///   from `sel >= 0x80`, a relay the server handed out);
/// * `0xC0..=0xDF ip[4] port[2]`, `0xE0..=0xFF ip[16] port[2]`: an IPv4 or
///   IPv6 address in `XOR_TYPES[tag % 3]`.
#[derive(Clone, Debug, Default)]
pub struct Attrs(pub Vec<u8>);

impl Attrs {
    pub fn new() -> Attrs {
        Attrs::default()
    }

    pub fn known(mut self, typ: u16, value: &[u8]) -> Attrs {
        let index = KNOWN_TYPES
            .iter()
            .position(|t| *t == typ)
            .expect("a type of KNOWN_TYPES");
        self.0.push(index as u8);
        self.0.push(value.len() as u8);
        self.0.extend_from_slice(value);
        self
    }

    pub fn raw(mut self, typ: u16, value: &[u8]) -> Attrs {
        self.0.push(0x40);
        self.0.extend_from_slice(&typ.to_be_bytes());
        self.0.push(value.len() as u8);
        self.0.extend_from_slice(value);
        self
    }

    pub fn token(mut self, selector: u8) -> Attrs {
        self.0.extend_from_slice(&[0x60, selector]);
        self
    }

    pub fn udp(mut self) -> Attrs {
        self.0.push(0x70);
        self
    }

    pub fn channel(mut self, low: u8) -> Attrs {
        self.0.extend_from_slice(&[0x71, low]);
        self
    }

    pub fn even_port(mut self) -> Attrs {
        self.0.push(0x72);
        self
    }

    pub fn family_v6(mut self) -> Attrs {
        self.0.push(0x73);
        self
    }

    pub fn lifetime_zero(mut self) -> Attrs {
        self.0.push(0x74);
        self
    }

    pub fn data(mut self, payload: &[u8]) -> Attrs {
        self.0.push(0x75);
        self.0.push(payload.len() as u8);
        self.0.extend_from_slice(payload);
        self
    }

    pub fn additional_v6(mut self) -> Attrs {
        self.0.push(0x76);
        self
    }

    pub fn lifetime(mut self, secs: u16) -> Attrs {
        self.0.push(0x77);
        self.0.extend_from_slice(&secs.to_be_bytes());
        self
    }

    /// XOR-PEER-ADDRESS of `PEERS[selector]` (or a relay, from 0x80).
    pub fn peer(mut self, selector: u8) -> Attrs {
        self.0.extend_from_slice(&[0x80, selector]);
        self
    }

    /// An explicit address in one of [`XOR_TYPES`].
    pub fn xor_address(mut self, typ: u16, addr: SocketAddr) -> Attrs {
        let index = XOR_TYPES.iter().position(|t| *t == typ).expect("an XOR type") as u8;
        match addr {
            SocketAddr::V4(a) => {
                // The tag's residue mod 3 picks the type.
                let tag = (0xC0u8..=0xDF).find(|t| t % 3 == index).unwrap();
                self.0.push(tag);
                self.0.extend_from_slice(&a.ip().octets());
            }
            SocketAddr::V6(a) => {
                let tag = (0xE0u8..=0xFF).find(|t| t % 3 == index).unwrap();
                self.0.push(tag);
                self.0.extend_from_slice(&a.ip().octets());
            }
        }
        self.0.extend_from_slice(&addr.port().to_be_bytes());
        self
    }
}

/// A [`crate::server`] program under construction.
#[derive(Clone, Debug, Default)]
pub struct Program(pub Vec<u8>);

impl Program {
    pub fn new() -> Program {
        Program::default()
    }

    /// One operation: `client` (0–2), `action`, `advance` (index into
    /// [`crate::server::ADVANCE`]) and its body.
    pub fn op(mut self, client: u8, action: u8, advance: u8, body: &[u8]) -> Program {
        assert!(client < 3 && action < 8 && advance < 8);
        self.0.push(client | action << 2 | advance << 5);
        self.0.extend_from_slice(&(body.len() as u16).to_be_bytes());
        self.0.extend_from_slice(body);
        self
    }

    pub fn raw(self, client: u8, packet: &[u8]) -> Program {
        self.op(client, action::RAW, 0, packet)
    }

    /// A request of `method` (one of [`METHODS`]) signed by the harness.
    pub fn signed(self, client: u8, method: u16, flags: u8, attrs: Attrs) -> Program {
        let index = METHODS.iter().position(|m| *m == method).expect("one of METHODS") as u8;
        let mut body = vec![index, flags];
        body.extend_from_slice(&attrs.0);
        self.op(client, action::SIGNED, 0, &body)
    }

    /// A Send indication built by the harness from `attrs`.
    pub fn send_indication(self, client: u8, attrs: Attrs) -> Program {
        let mut body = vec![0, flag::SEND_INDICATION];
        body.extend_from_slice(&attrs.0);
        self.op(client, action::SIGNED, 0, &body)
    }

    /// A datagram from `PEERS[peer]` (or a relay, from 0x80) to the
    /// `relay`-th relay handed out.
    pub fn peer(self, relay: u8, peer: u8, payload: &[u8]) -> Program {
        let mut body = vec![relay, peer];
        body.extend_from_slice(payload);
        self.op(0, action::PEER, 0, &body)
    }

    /// Moves time by `ADVANCE[advance]`, or to the next timer if `jump`,
    /// and runs the timers.
    pub fn timeout(self, advance: u8, jump: bool) -> Program {
        self.op(0, action::TIMEOUT, advance, &[u8::from(jump)])
    }

    pub fn into_bytes(self) -> Vec<u8> {
        self.0
    }
}

/// A plain Binding request with FINGERPRINT.
pub fn binding_request() -> Vec<u8> {
    let mut buf = Vec::new();
    let mut w = MessageWriter::new(&mut buf, Class::Request, method::BINDING, [1; 12]);
    w.bytes(attr::SOFTWARE, b"seed");
    w.finish(None, true);
    buf
}

/// An RFC 3489 Binding request (no magic cookie).
pub fn classic_binding_request() -> Vec<u8> {
    let mut buf = vec![0x00, 0x01, 0x00, 0x00];
    buf.extend_from_slice(&[0x5A; 16]);
    buf
}

/// An Allocate request signed with the long-term key of `alice` under a
/// nonce the server will not know (it still exercises the whole check).
pub fn allocate_request() -> Vec<u8> {
    use crate::server::{PASSWORD, REALM, USER};
    let key = turnpike::proto::auth::long_term_key(USER, REALM, PASSWORD);
    let mut buf = Vec::new();
    let mut w = MessageWriter::new(&mut buf, Class::Request, method::ALLOCATE, [2; 12]);
    w.bytes(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0])
        .u32(attr::LIFETIME, 600)
        .bytes(attr::USERNAME, USER.as_bytes())
        .bytes(attr::REALM, REALM.as_bytes())
        .bytes(attr::NONCE, b"0000000065536f00aaaaaaaaaaaaaaaa");
    w.finish(Some(&stun::integrity_key(&key)), true);
    buf
}

/// A CreatePermission and a Send indication, unsigned.
pub fn turn_messages() -> Vec<Vec<u8>> {
    let peer: SocketAddr = "8.8.8.8:53".parse().unwrap();
    let mut out = Vec::new();
    let mut buf = Vec::new();
    let mut w = MessageWriter::new(&mut buf, Class::Request, method::CREATE_PERMISSION, [3; 12]);
    w.xor_address(attr::XOR_PEER_ADDRESS, peer)
        .xor_address(attr::XOR_PEER_ADDRESS, "[2001:db8::1]:9".parse().unwrap());
    w.finish(None, false);
    out.push(buf.clone());
    let mut w = MessageWriter::new(&mut buf, Class::Indication, method::SEND, [4; 12]);
    w.xor_address(attr::XOR_PEER_ADDRESS, peer).bytes(attr::DATA, b"hello");
    w.finish(None, true);
    out.push(buf.clone());
    let mut w = MessageWriter::new(&mut buf, Class::Request, method::CHANNEL_BIND, [5; 12]);
    w.bytes(attr::CHANNEL_NUMBER, &[0x40, 0x01, 0, 0])
        .xor_address(attr::XOR_PEER_ADDRESS, peer);
    w.finish(None, false);
    out.push(buf);
    out
}

/// A ChannelData message on channel 0x4001, padded.
pub fn channel_data_message() -> Vec<u8> {
    let mut packet = vec![0x40, 0x01, 0x00, 0x05];
    packet.extend_from_slice(b"hello\0\0\0");
    packet
}

/// Seeds for the `stun_message` target.
pub fn stun_seeds() -> Vec<Vec<u8>> {
    let mut seeds: Vec<Vec<u8>> = rfc5769::ALL.iter().map(|v| rfc5769::unhex(v)).collect();
    seeds.push(binding_request());
    seeds.push(classic_binding_request());
    seeds.push(allocate_request());
    seeds.extend(turn_messages());
    seeds
}

/// Seeds for the `channel_data` target.
pub fn channel_data_seeds() -> Vec<Vec<u8>> {
    vec![
        channel_data_message(),
        vec![0x7F, 0xFF, 0x00, 0x00],
        vec![0x40, 0x00, 0x00, 0x08, 1, 2, 3],
    ]
}

/// Seeds for the `server_client_packet` target: whole sessions.
pub fn server_seeds() -> Vec<Vec<u8>> {
    let mut seeds = Vec::new();
    // Binding, classic Binding, RFC 5769 request, garbage.
    let mut p = Program::new()
        .raw(0, &binding_request())
        .raw(1, &classic_binding_request());
    for v in rfc5769::ALL {
        p = p.raw(2, &rfc5769::unhex(v));
    }
    seeds.push(p.raw(0, &allocate_request()).raw(0, &[0xFF, 0]).into_bytes());

    // Allocate, permission, channel, data both ways, refresh, delete.
    seeds.push(
        Program::new()
            .signed(0, method::ALLOCATE, 0, Attrs::new().udp())
            .signed(0, method::CREATE_PERMISSION, 0, Attrs::new().peer(0).peer(1))
            .send_indication(0, Attrs::new().peer(0).data(b"to the peer"))
            .peer(0, 0, b"from the peer")
            .signed(0, method::CHANNEL_BIND, 0, Attrs::new().channel(1).peer(0))
            .raw(0, &channel_data_message())
            .peer(0, 0, b"over the channel")
            .signed(0, method::REFRESH, flag::FINGERPRINT, Attrs::new().lifetime(1200))
            .signed(0, method::REFRESH, 0, Attrs::new().lifetime_zero())
            .into_bytes(),
    );

    // Two clients relaying to each other's relay addresses (from 0x80 the
    // peer selector picks a relay), IPv6, then expiry.
    seeds.push(
        Program::new()
            .signed(0, method::ALLOCATE, 0, Attrs::new().udp())
            .signed(1, method::ALLOCATE, flag::EPHEMERAL, Attrs::new().udp())
            .signed(0, method::CREATE_PERMISSION, 0, Attrs::new().peer(0x81))
            .signed(
                1,
                method::CHANNEL_BIND,
                flag::EPHEMERAL,
                Attrs::new().channel(0x20).peer(0x80),
            )
            .peer(1, 0x80, b"relay to relay")
            .peer(0, 0x81, b"relay to relay")
            .timeout(7, false)
            .timeout(0, true)
            .into_bytes(),
    );

    // EVEN-PORT with a reservation, claimed by another client; IPv6 relay.
    seeds.push(
        Program::new()
            .signed(0, method::ALLOCATE, 0, Attrs::new().udp().even_port())
            .signed(1, method::ALLOCATE, flag::EPHEMERAL, Attrs::new().udp().token(0))
            .signed(0, method::REFRESH, 0, Attrs::new().lifetime_zero())
            .signed(2, method::ALLOCATE, flag::EPHEMERAL, Attrs::new().udp().family_v6())
            .signed(2, method::CREATE_PERMISSION, flag::EPHEMERAL, Attrs::new().peer(9))
            .timeout(4, false)
            .timeout(0, true)
            .into_bytes(),
    );

    // Failures: wrong password, unknown attribute, retransmission, stale
    // nonce after an hour, address family mismatch.
    seeds.push(
        Program::new()
            .signed(0, method::ALLOCATE, flag::WRONG_PASSWORD, Attrs::new().udp())
            .signed(0, method::ALLOCATE, 0, Attrs::new().udp().raw(0x0003, &[0; 4]))
            .signed(0, method::ALLOCATE, 0, Attrs::new().udp())
            .signed(0, method::ALLOCATE, flag::RETRANSMIT, Attrs::new().udp())
            .op(0, action::SIGNED, 7, &[2, 0, 0x80, 0])
            .signed(0, method::CREATE_PERMISSION, 0, Attrs::new().peer(3))
            .into_bytes(),
    );
    seeds
}

/// Seeds for the `peer_filter` target: 18 bytes (IPv6 and port), whose
/// first 6 also read as IPv4 and port.
pub fn peer_filter_seeds() -> Vec<Vec<u8>> {
    let mut seeds = Vec::new();
    for v6 in [
        "::ffff:127.0.0.1",
        "64:ff9b::a00:1",
        "2002:a00:1::1",
        "2001:0:4136:e378:8000:63bf:f5ff:fffe",
        "::1",
        "::",
        "2001:db8::7",
        "fe80::1",
    ] {
        let ip: std::net::Ipv6Addr = v6.parse().unwrap();
        let mut seed = ip.octets().to_vec();
        seed.extend_from_slice(&50_001u16.to_be_bytes());
        seeds.push(seed);
    }
    seeds.push(vec![203, 0, 113, 7, 0x0d, 0x96]);
    seeds.push(vec![169, 254, 169, 254, 0, 80]);
    seeds
}

/// Seeds for the `cidr_parse` target.
pub fn cidr_seeds() -> Vec<Vec<u8>> {
    [
        "10.0.0.0/8",
        "192.168.1.77/24",
        "::/0",
        "2001:db8::/32",
        "::ffff:10.0.0.0/104",
        "127.0.0.1",
        "fe80::1%eth0/64",
        "1.2.3.4/33",
        "1.2.3.4/+8",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect()
}
