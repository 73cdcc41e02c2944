//! A client of RFC 5780's NAT behaviour discovery: the mapping test (§4.3)
//! and the filtering test (§4.4), written by hand from RFC 5780 §7 and RFC
//! 8489 §5, §14.1–§14.2. It shares no code with the server's codec, so
//! what it reads of an answer is what the RFCs say is there, not what
//! turnpike's writer happens to produce.
//!
//! Every request carries CHANGE-REQUEST (no flags when it asks for no
//! change), as Debian's `stun` client does: 28 bytes are what a server
//! that keeps its answers within twice the request needs to send
//! OTHER-ADDRESS and RESPONSE-ORIGIN (a bare 20-byte request gets
//! XOR-MAPPED-ADDRESS alone). An answer's source is checked against
//! RESPONSE-ORIGIN and against the address the flags asked for.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

const MAGIC_COOKIE: [u8; 4] = [0x21, 0x12, 0xA4, 0x42];
const BINDING_REQUEST: [u8; 2] = [0x00, 0x01];
const BINDING_SUCCESS: u16 = 0x0101;
const BINDING_ERROR: u16 = 0x0111;
const MAPPED_ADDRESS: u16 = 0x0001;
const CHANGE_REQUEST: u16 = 0x0003;
const ERROR_CODE: u16 = 0x0009;
const XOR_MAPPED_ADDRESS: u16 = 0x0020;
const RESPONSE_ORIGIN: u16 = 0x802B;
const OTHER_ADDRESS: u16 = 0x802C;
/// CHANGE-REQUEST's flags (RFC 5780 §7.2: bits A and B of 32).
pub const CHANGE_IP: u8 = 0x04;
pub const CHANGE_PORT: u8 = 0x02;

/// Requests sent before a test counts as unanswered, and the wait after
/// each.
const TRIES: usize = 3;
const WAIT: Duration = Duration::from_millis(300);

/// Mapping or filtering behaviour (RFC 4787 §4.1, §5).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Behaviour {
    EndpointIndependent,
    AddressDependent,
    AddressAndPortDependent,
}

/// What the mapping test found: whether there is a NAT at all (the
/// mapped address is the socket's own), and how it maps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mapping {
    pub natted: bool,
    pub behaviour: Behaviour,
}

/// A Binding success answer as read here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Answer {
    /// Where the datagram came from.
    pub from: SocketAddr,
    pub xor_mapped: SocketAddr,
    pub mapped: Option<SocketAddr>,
    pub origin: Option<SocketAddr>,
    pub other: Option<SocketAddr>,
    pub len: usize,
}

/// What a request got.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Answer(Answer),
    /// An error answer's code.
    Error(u16),
    /// Nothing in [`TRIES`] tries.
    Silence,
}

/// One client socket: RFC 5780 §4.1 wants each test run from a port with
/// no history, so a test makes a fresh one.
pub struct Probe {
    socket: UdpSocket,
}

static NEXT_ID: AtomicU32 = AtomicU32::new(1);

impl Probe {
    /// A socket on `local`, which should name a specific address: the
    /// mapping test compares the mapped address with it.
    pub fn bind(local: SocketAddr) -> Probe {
        let socket = UdpSocket::bind(local).unwrap_or_else(|e| panic!("bind {local}: {e}"));
        socket.set_read_timeout(Some(WAIT)).expect("read timeout");
        Probe { socket }
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.socket.local_addr().expect("local address")
    }

    /// A Binding request to `server` with CHANGE-REQUEST `flags`, sent up
    /// to [`TRIES`] times until an answer with its transaction id comes.
    pub fn ask(&self, server: SocketAddr, flags: u8) -> Outcome {
        let mut id = [0u8; 12];
        id[..4].copy_from_slice(&NEXT_ID.fetch_add(1, Ordering::Relaxed).to_be_bytes());
        id[4..8].copy_from_slice(&std::process::id().to_be_bytes());
        let request = binding_request(id, &[(CHANGE_REQUEST, &[0, 0, 0, flags])]);
        for _ in 0..TRIES {
            self.socket.send_to(&request, server).expect("send a Binding request");
            let deadline = Instant::now() + WAIT;
            while Instant::now() < deadline {
                let mut buf = [0u8; 1500];
                let Ok((n, from)) = self.socket.recv_from(&mut buf) else {
                    continue;
                };
                if let Some(outcome) = read_answer(&buf[..n], id, from) {
                    return outcome;
                }
            }
        }
        Outcome::Silence
    }

    /// [`Self::ask`]: the answer if one came (its RESPONSE-ORIGIN, if
    /// any, naming where it came from), an error for an error answer.
    pub fn answered(&self, server: SocketAddr, flags: u8) -> Result<Option<Answer>, String> {
        match self.ask(server, flags) {
            Outcome::Answer(answer) if answer.origin.is_some_and(|origin| origin != answer.from) => Err(format!(
                "RESPONSE-ORIGIN {:?}, but it came from {}",
                answer.origin, answer.from
            )),
            Outcome::Answer(answer) => Ok(Some(answer)),
            Outcome::Silence => Ok(None),
            Outcome::Error(code) => Err(format!("Binding to {server} (flags {flags:#x}): error {code}")),
        }
    }

    /// [`Self::answered`], which must be answered.
    pub fn success(&self, server: SocketAddr, flags: u8) -> Result<Answer, String> {
        self.answered(server, flags)?
            .ok_or_else(|| format!("Binding to {server} (flags {flags:#x}): no answer"))
    }

    /// RFC 5780 §4.3: test I to the primary address, II to the alternate
    /// IP and primary port, III to the alternate address, comparing the
    /// mapped addresses.
    pub fn mapping(&self, primary: SocketAddr) -> Result<Mapping, String> {
        let one = self.success(primary, 0)?;
        let other = one
            .other
            .ok_or("no OTHER-ADDRESS in test I: the server does not support the usage")?;
        if one.xor_mapped == self.local_addr() {
            return Ok(Mapping {
                natted: false,
                behaviour: Behaviour::EndpointIndependent,
            });
        }
        let two = self.success(SocketAddr::new(other.ip(), primary.port()), 0)?;
        let behaviour = if two.xor_mapped == one.xor_mapped {
            Behaviour::EndpointIndependent
        } else if self.success(other, 0)?.xor_mapped == two.xor_mapped {
            Behaviour::AddressDependent
        } else {
            Behaviour::AddressAndPortDependent
        };
        Ok(Mapping {
            natted: true,
            behaviour,
        })
    }

    /// RFC 5780 §4.4: test I to learn OTHER-ADDRESS, II asking for the
    /// answer from the other IP and port, III from the other port only.
    /// An answer that comes must come from where it was asked to.
    pub fn filtering(&self, primary: SocketAddr) -> Result<Behaviour, String> {
        let one = self.success(primary, 0)?;
        let other = one
            .other
            .ok_or("no OTHER-ADDRESS in test I: the server does not support the usage")?;
        match self.answered(primary, CHANGE_IP | CHANGE_PORT)? {
            Some(two) if two.from == other => return Ok(Behaviour::EndpointIndependent),
            Some(two) => return Err(format!("test II answered from {}, not {other}", two.from)),
            None => {}
        }
        let changed_port = SocketAddr::new(primary.ip(), other.port());
        match self.answered(primary, CHANGE_PORT)? {
            Some(three) if three.from == changed_port => Ok(Behaviour::AddressDependent),
            Some(three) => Err(format!("test III answered from {}, not {changed_port}", three.from)),
            None => Ok(Behaviour::AddressAndPortDependent),
        }
    }
}

/// A Binding request (RFC 8489 §5): header, magic cookie, `id`, then
/// `attributes` (type, value), each padded to 4 bytes.
pub fn binding_request(id: [u8; 12], attributes: &[(u16, &[u8])]) -> Vec<u8> {
    let mut body = Vec::new();
    for (typ, value) in attributes {
        body.extend_from_slice(&typ.to_be_bytes());
        body.extend_from_slice(&(value.len() as u16).to_be_bytes());
        body.extend_from_slice(value);
        body.resize(body.len().next_multiple_of(4), 0);
    }
    let mut request = BINDING_REQUEST.to_vec();
    request.extend_from_slice(&(body.len() as u16).to_be_bytes());
    request.extend_from_slice(&MAGIC_COOKIE);
    request.extend_from_slice(&id);
    request.extend_from_slice(&body);
    request
}

/// The answer to the request with transaction id `id`, or `None` for
/// anything else.
fn read_answer(bytes: &[u8], id: [u8; 12], from: SocketAddr) -> Option<Outcome> {
    let header = bytes.get(..20)?;
    if header[4..8] != MAGIC_COOKIE || header[8..20] != id {
        return None;
    }
    let kind = u16::from_be_bytes([header[0], header[1]]);
    let length = usize::from(u16::from_be_bytes([header[2], header[3]]));
    if length + 20 != bytes.len() {
        return None;
    }
    let mut answer = Answer {
        from,
        xor_mapped: from,
        mapped: None,
        origin: None,
        other: None,
        len: bytes.len(),
    };
    let mut xor_mapped = None;
    let mut at = 20;
    while at + 4 <= bytes.len() {
        let typ = u16::from_be_bytes([bytes[at], bytes[at + 1]]);
        let len = usize::from(u16::from_be_bytes([bytes[at + 2], bytes[at + 3]]));
        let value = bytes.get(at + 4..at + 4 + len)?;
        match typ {
            ERROR_CODE if kind == BINDING_ERROR => {
                let code = u16::from(*value.get(2)?) * 100 + u16::from(*value.get(3)?);
                return Some(Outcome::Error(code));
            }
            XOR_MAPPED_ADDRESS => xor_mapped = Some(address(value, &bytes[4..20])?),
            MAPPED_ADDRESS => answer.mapped = Some(address(value, &[0; 16])?),
            RESPONSE_ORIGIN => answer.origin = Some(address(value, &[0; 16])?),
            OTHER_ADDRESS => answer.other = Some(address(value, &[0; 16])?),
            _ => {}
        }
        at += 4 + len.next_multiple_of(4);
    }
    if kind != BINDING_SUCCESS {
        return None;
    }
    answer.xor_mapped = xor_mapped?;
    Some(Outcome::Answer(answer))
}

/// An address attribute's value (RFC 8489 §14.1, §14.2); `mask` is the
/// magic cookie and transaction id for XOR-MAPPED-ADDRESS, zeros for the
/// plain ones.
fn address(value: &[u8], mask: &[u8]) -> Option<SocketAddr> {
    let port = u16::from_be_bytes([value.get(2)? ^ mask[0], value.get(3)? ^ mask[1]]);
    let ip = match (value.get(1)?, value.len()) {
        (1, 8) => {
            let octets: [u8; 4] = std::array::from_fn(|i| value[4 + i] ^ mask[i]);
            IpAddr::V4(Ipv4Addr::from(octets))
        }
        (2, 20) => {
            let octets: [u8; 16] = std::array::from_fn(|i| value[4 + i] ^ mask[i]);
            IpAddr::V6(Ipv6Addr::from(octets))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}
