//! RFC 8489's password algorithms and USERHASH against the running
//! server, by a client written here from the RFC (§5, §9.2, §14.4-§14.6,
//! §14.11, §14.12, §18.1 with erratum 6290), with `ring` for the hashes
//! and nothing of the server's codec: it reads the offer of a 401,
//! authenticates with a SHA-256 key under MESSAGE-INTEGRITY-SHA256 (whole
//! and truncated) and by USERHASH, checks the answers' integrity, is
//! refused (400) when the algorithm list it echoes was tampered with; and
//! coturn's `turnutils_uclient`, which knows none of it, still relays
//! through the same server.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::Duration;

use ring::{digest, hmac};

use crate::common::uclient::relay_ten_each;
use crate::common::{TestServer, PASSWORD, REALM, USER};

const MAGIC: u32 = 0x2112_A442;
const ALLOCATE: u16 = 0x0003;
const USERNAME: u16 = 0x0006;
const MESSAGE_INTEGRITY: u16 = 0x0008;
const ERROR_CODE: u16 = 0x0009;
const LIFETIME: u16 = 0x000D;
const REALM_ATTR: u16 = 0x0014;
const NONCE: u16 = 0x0015;
const XOR_RELAYED_ADDRESS: u16 = 0x0016;
const REQUESTED_TRANSPORT: u16 = 0x0019;
const MESSAGE_INTEGRITY_SHA256: u16 = 0x001C;
const PASSWORD_ALGORITHM: u16 = 0x001D;
const USERHASH: u16 = 0x001E;
const PASSWORD_ALGORITHMS: u16 = 0x8002;
const SOFTWARE: u16 = 0x8022;
const FINGERPRINT: u16 = 0x8028;
const MD5: u16 = 1;
const SHA256: u16 = 2;

fn server() -> TestServer {
    TestServer::start(&format!(
        "[auth]\npassword_algorithms = [\"sha256\", \"md5\"]\nuserhash = true\n\n[[auth.users]]\nname = \"{USER}\"\npassword = \"{PASSWORD}\"\n"
    ))
}

// A STUN message, built and read by hand.

struct Request {
    id: [u8; 12],
    attrs: Vec<(u16, Vec<u8>)>,
}

impl Request {
    fn allocate(n: u8) -> Request {
        let mut id = [0x8a; 12];
        id[11] = n;
        Request {
            id,
            attrs: vec![
                (REQUESTED_TRANSPORT, vec![17, 0, 0, 0]),
                (LIFETIME, 600u32.to_be_bytes().to_vec()),
                (SOFTWARE, b"an RFC 8489 client".to_vec()),
            ],
        }
    }

    fn with(mut self, typ: u16, value: &[u8]) -> Request {
        self.attrs.push((typ, value.to_vec()));
        self
    }

    /// The bytes, with the attributes' length field covering `extra`
    /// more bytes (an integrity attribute about to follow).
    fn head(&self, extra: usize) -> Vec<u8> {
        let mut body = Vec::new();
        for (typ, value) in &self.attrs {
            body.extend_from_slice(&typ.to_be_bytes());
            body.extend_from_slice(&(value.len() as u16).to_be_bytes());
            body.extend_from_slice(value);
            body.resize(body.len().next_multiple_of(4), 0);
        }
        let mut out = Vec::new();
        out.extend_from_slice(&ALLOCATE.to_be_bytes());
        out.extend_from_slice(&((body.len() + extra) as u16).to_be_bytes());
        out.extend_from_slice(&MAGIC.to_be_bytes());
        out.extend_from_slice(&self.id);
        out.extend_from_slice(&body);
        out
    }

    /// Signed by MESSAGE-INTEGRITY-SHA256 of `len` bytes (§14.6) or, with
    /// `None`, MESSAGE-INTEGRITY (§14.5), then FINGERPRINT (§14.7).
    fn signed(&self, key: &[u8], sha256_len: Option<usize>) -> Vec<u8> {
        let (typ, algorithm, len) = match sha256_len {
            Some(len) => (MESSAGE_INTEGRITY_SHA256, hmac::HMAC_SHA256, len),
            None => (MESSAGE_INTEGRITY, hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, 20),
        };
        let mut out = self.head(4 + len);
        let tag = hmac::sign(&hmac::Key::new(algorithm, key), &out);
        out.extend_from_slice(&typ.to_be_bytes());
        out.extend_from_slice(&(len as u16).to_be_bytes());
        out.extend_from_slice(&tag.as_ref()[..len]);
        with_fingerprint(out)
    }

    fn unsigned(&self) -> Vec<u8> {
        with_fingerprint(self.head(0))
    }
}

fn with_fingerprint(mut message: Vec<u8>) -> Vec<u8> {
    let length = (message.len() - 20 + 8) as u16;
    message[2..4].copy_from_slice(&length.to_be_bytes());
    let crc = crc32fast::hash(&message) ^ 0x5354_554e;
    message.extend_from_slice(&FINGERPRINT.to_be_bytes());
    message.extend_from_slice(&4u16.to_be_bytes());
    message.extend_from_slice(&crc.to_be_bytes());
    message
}

/// An answer's attributes, in order, with their offsets.
struct Answer {
    bytes: Vec<u8>,
    attrs: Vec<(u16, usize, Vec<u8>)>,
}

impl Answer {
    fn parse(bytes: Vec<u8>) -> Answer {
        assert!(
            bytes.len() >= 20 && u32::from_be_bytes(bytes[4..8].try_into().unwrap()) == MAGIC,
            "{bytes:?}"
        );
        let mut attrs = Vec::new();
        let mut at = 20;
        while at + 4 <= bytes.len() {
            let typ = u16::from_be_bytes([bytes[at], bytes[at + 1]]);
            let len = usize::from(u16::from_be_bytes([bytes[at + 2], bytes[at + 3]]));
            attrs.push((typ, at, bytes[at + 4..at + 4 + len].to_vec()));
            at += 4 + len.next_multiple_of(4);
        }
        Answer { bytes, attrs }
    }

    fn get(&self, typ: u16) -> Option<&[u8]> {
        self.attrs
            .iter()
            .find(|(t, _, _)| *t == typ)
            .map(|(_, _, v)| v.as_slice())
    }

    /// 200 for a success, else the ERROR-CODE.
    fn code(&self) -> u16 {
        match self.get(ERROR_CODE) {
            Some(v) => u16::from(v[2]) * 100 + u16::from(v[3]),
            None => 200,
        }
    }

    /// Whether MESSAGE-INTEGRITY-SHA256 is there, of `len` bytes, and
    /// right under `key`.
    fn sha256_integrity_holds(&self, key: &[u8], len: usize) -> bool {
        let Some((_, at, tag)) = self.attrs.iter().find(|(t, _, _)| *t == MESSAGE_INTEGRITY_SHA256) else {
            return false;
        };
        let mut covered = self.bytes[..*at].to_vec();
        covered[2..4].copy_from_slice(&((at - 20 + 4 + len) as u16).to_be_bytes());
        let expected = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), &covered);
        tag.len() == len && tag[..] == expected.as_ref()[..len]
    }
}

/// One request and its answer over a TCP connection (RFC 8489 §6.2.2:
/// STUN messages back to back on the stream).
fn over_tcp(stream: &mut TcpStream, request: &[u8]) -> Answer {
    stream.write_all(request).expect("send");
    let mut head = [0u8; 20];
    stream.read_exact(&mut head).expect("an answer");
    let len = usize::from(u16::from_be_bytes([head[2], head[3]]));
    let mut bytes = head.to_vec();
    bytes.resize(20 + len, 0);
    stream.read_exact(&mut bytes[20..]).expect("its attributes");
    Answer::parse(bytes)
}

fn over_udp(socket: &UdpSocket, server: SocketAddr, request: &[u8]) -> Answer {
    socket.send_to(request, server).expect("send");
    let mut buf = [0u8; 1500];
    let (n, _) = socket.recv_from(&mut buf).expect("an answer");
    Answer::parse(buf[..n].to_vec())
}

fn sha256(text: &str) -> Vec<u8> {
    digest::digest(&digest::SHA256, text.as_bytes()).as_ref().to_vec()
}

/// The SHA-256 key (§9.2.2) and USERHASH (§14.4) of the test user.
fn sha256_key() -> Vec<u8> {
    sha256(&format!("{USER}:{REALM}:{PASSWORD}"))
}

fn algorithms(list: &[u16]) -> Vec<u8> {
    list.iter().flat_map(|a| [a.to_be_bytes(), [0, 0]].concat()).collect()
}

/// The nonce cookie's feature bits (§9.2, erratum 6290: bit 0 the
/// rightmost), if the nonce has one.
fn features(nonce: &[u8]) -> Option<u32> {
    use base64::Engine;
    let encoded = nonce.strip_prefix(b"obMatJos2")?.get(..4)?;
    let bytes = base64::engine::general_purpose::STANDARD.decode(encoded).ok()?;
    Some(u32::from_be_bytes([0, bytes[0], bytes[1], bytes[2]]))
}

/// The offer of a 401 to `request`: its nonce, and PASSWORD-ALGORITHMS.
fn offer(answer: &Answer) -> (Vec<u8>, Vec<u8>) {
    assert_eq!(answer.code(), 401);
    assert_eq!(answer.get(REALM_ATTR), Some(REALM.as_bytes()));
    let nonce = answer.get(NONCE).expect("NONCE").to_vec();
    let list = answer.get(PASSWORD_ALGORITHMS).expect("PASSWORD-ALGORITHMS").to_vec();
    (nonce, list)
}

/// A signed Allocate choosing `chosen` from the echoed `list`.
fn choosing(n: u8, name: (u16, &[u8]), nonce: &[u8], list: &[u8], chosen: u16) -> Request {
    Request::allocate(n)
        .with(name.0, name.1)
        .with(REALM_ATTR, REALM.as_bytes())
        .with(NONCE, nonce)
        .with(PASSWORD_ALGORITHMS, list)
        .with(PASSWORD_ALGORITHM, &algorithms(&[chosen]))
}

#[test]
fn an_rfc8489_client_negotiates_sha256_over_tcp_and_udp_and_by_userhash() {
    let server = server();
    let mut tcp = TcpStream::connect(server.addr()).expect("connect");
    tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let (nonce, list) = offer(&over_tcp(&mut tcp, &Request::allocate(1).unsigned()));
    assert_eq!(
        features(&nonce),
        Some(0b11),
        "password algorithms and username anonymity"
    );
    assert_eq!(list, algorithms(&[SHA256, MD5]), "SHA-256 offered first");
    let key = sha256_key();
    let request = choosing(2, (USERNAME, USER.as_bytes()), &nonce, &list, SHA256);
    let answer = over_tcp(&mut tcp, &request.signed(&key, Some(32)));
    assert_eq!(answer.code(), 200, "{:?}", answer.get(ERROR_CODE));
    assert!(answer.get(XOR_RELAYED_ADDRESS).is_some());
    assert!(
        answer.sha256_integrity_holds(&key, 32),
        "answered with MESSAGE-INTEGRITY-SHA256"
    );
    assert!(answer.get(MESSAGE_INTEGRITY).is_none());

    // Over UDP, by USERHASH, with MESSAGE-INTEGRITY-SHA256 truncated to 16.
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let first = Request::allocate(3).unsigned();
    let challenge = over_udp(&udp, server.addr(), &first);
    assert!(
        challenge.bytes.len() <= 2 * first.len(),
        "the offer within twice the request"
    );
    let (nonce, list) = offer(&challenge);
    let userhash = sha256(&format!("{USER}:{REALM}"));
    let request = choosing(4, (USERHASH, &userhash), &nonce, &list, SHA256);
    let answer = over_udp(&udp, server.addr(), &request.signed(&key, Some(16)));
    assert_eq!(answer.code(), 200, "{:?}", answer.get(ERROR_CODE));
    assert!(answer.sha256_integrity_holds(&key, 16), "answered truncated, in kind");

    let sample = "turnpike_authentications_total{algorithm=\"sha256\"}";
    let counted = server.wait_metric(sample, Duration::from_secs(5), |n| n >= 2.0);
    assert_eq!(counted, Some(2.0), "{}", server.metrics());
}

#[test]
fn an_algorithm_list_tampered_with_on_the_way_is_refused() {
    let server = server();
    let mut tcp = TcpStream::connect(server.addr()).expect("connect");
    tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let (nonce, _) = offer(&over_tcp(&mut tcp, &Request::allocate(1).unsigned()));
    // A man in the middle struck SHA-256 from the offer; the client,
    // seeing MD5 alone, picks it and echoes what it saw.
    let md5_key = {
        use md5::Digest;
        md5::Md5::digest(format!("{USER}:{REALM}:{PASSWORD}").as_bytes()).to_vec()
    };
    let struck = algorithms(&[MD5]);
    let request = choosing(2, (USERNAME, USER.as_bytes()), &nonce, &struck, MD5);
    let answer = over_tcp(&mut tcp, &request.signed(&md5_key, None));
    assert_eq!(answer.code(), 400, "bid down to MD5");
    // The untouched list with MD5 chosen is fine: MD5 is still taken.
    let request = choosing(3, (USERNAME, USER.as_bytes()), &nonce, &algorithms(&[SHA256, MD5]), MD5);
    assert_eq!(over_tcp(&mut tcp, &request.signed(&md5_key, None)).code(), 200);
}

#[test]
fn turnutils_uclient_knows_nothing_of_rfc8489_and_still_relays() {
    let server = server();
    // Over TCP it gets the offer (a challenge over a stream always has
    // it), over UDP the plain challenge its small Allocate earns.
    for transport in [&["-t"][..], &[]] {
        let (text, summary) = relay_ten_each(server.addr(), USER, PASSWORD, transport);
        assert_eq!(summary.lost, 0, "{transport:?}: {text}");
        assert!(summary.received > 0, "{transport:?}: {text}");
    }
    let log = server.stderr_log();
    assert!(
        log.contains("challenge offering RFC 8489 password algorithms client=Tcp"),
        "{log}"
    );
    let sample = "turnpike_authentications_total{algorithm=\"md5\"}";
    let counted = server.wait_metric(sample, Duration::from_secs(5), |n| n > 0.0);
    assert!(counted.is_some_and(|n| n > 0.0), "{}", server.metrics());
}

/// SECURITY.md's rows for the offer over UDP, measured: the answer to a
/// spoofable request never exceeds twice it, and the offer is made from
/// 44 bytes on (default realm).
#[test]
fn over_udp_the_offer_stays_within_twice_the_request() {
    let server = server();
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut bare = Request::allocate(1);
    bare.attrs.truncate(1);
    let mut with_lifetime = Request::allocate(2);
    with_lifetime.attrs.truncate(2);
    let cases = [
        (bare, 36, false, 60),
        (with_lifetime, 44, true, 88),
        (Request::allocate(3), 68, true, 88),
    ];
    for (request, size, offered, answer_size) in cases {
        let bytes = request.unsigned();
        assert_eq!(bytes.len(), size);
        let answer = over_udp(&udp, server.addr(), &bytes);
        assert_eq!(answer.code(), 401);
        assert_eq!(answer.get(PASSWORD_ALGORITHMS).is_some(), offered, "{size} bytes in");
        assert_eq!(answer.bytes.len(), answer_size, "{size} bytes in");
        assert!(answer.bytes.len() <= 2 * size);
    }
}
