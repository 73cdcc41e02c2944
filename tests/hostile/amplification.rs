//! Reflection: what a spoofed source can make the running server send.
//!
//! Every unauthenticated request form a source can send without an
//! allocation, each in its smallest shape, with and without FINGERPRINT,
//! over UDP to the real binary on loopback under its default realm: the
//! answer is at most twice the request. Then every shape of RFC 5780's
//! Binding (CHANGE-REQUEST, RESPONSE-PORT, PADDING of several sizes, an
//! RFC 3489 client's request) to a server with an alternate address on
//! 127.0.0.2. The tests print the tables of bytes in, bytes out and their
//! ratio that SECURITY.md reproduces.

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use crate::common::{free_udp_port, transaction_id, ServerSetup, TestServer, LONG_TERM_USER_TOML};
use turnpike::proto::stun::{attr, method, Class, Message, MessageWriter};

type Build = fn(&mut MessageWriter<'_>);

fn none(_: &mut MessageWriter<'_>) {}

const FORMS: [(&str, u16, Build); 10] = [
    ("Binding", method::BINDING, none),
    (
        "Binding, unknown comprehension-required attribute",
        method::BINDING,
        |w| {
            w.bytes(0x0003, &[]);
        },
    ),
    ("Allocate without REQUESTED-TRANSPORT", method::ALLOCATE, none),
    ("Allocate (REQUESTED-TRANSPORT UDP)", method::ALLOCATE, |w| {
        w.bytes(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0]);
    }),
    ("Refresh", method::REFRESH, none),
    ("CreatePermission", method::CREATE_PERMISSION, |w| {
        w.xor_address(attr::XOR_PEER_ADDRESS, "192.0.2.1:9".parse().unwrap());
    }),
    ("ChannelBind", method::CHANNEL_BIND, |w| {
        w.bytes(attr::CHANNEL_NUMBER, &[0x40, 0, 0, 0])
            .xor_address(attr::XOR_PEER_ADDRESS, "192.0.2.1:9".parse().unwrap());
    }),
    ("Connect", method::CONNECT, |w| {
        w.xor_address(attr::XOR_PEER_ADDRESS, "192.0.2.1:9".parse().unwrap());
    }),
    ("ConnectionBind", method::CONNECTION_BIND, |w| {
        w.u32(attr::CONNECTION_ID, 1);
    }),
    ("unknown method", 0x0FF, none),
];

/// Bytes in and out of each request form, as a Markdown table, asserting
/// the bound on each row.
struct Table {
    text: String,
    worst: f64,
}

impl Table {
    fn new() -> Table {
        Table {
            text: String::from(
                "| request | FINGERPRINT | bytes in | answer | bytes out | out ÷ in |\n|---|---|---:|---|---:|---:|\n",
            ),
            worst: 0.0,
        }
    }

    fn row(&mut self, name: &str, fingerprint: bool, bytes_in: usize, answer: &str, bytes_out: usize) {
        let ratio = bytes_out as f64 / bytes_in as f64;
        self.worst = self.worst.max(ratio);
        let fingerprint = if fingerprint { "yes" } else { "no" };
        self.text.push_str(&format!(
            "| {name} | {fingerprint} | {bytes_in} | {answer} | {bytes_out} | {ratio:.2} |\n"
        ));
        assert!(
            bytes_out <= 2 * bytes_in,
            "{name}, FINGERPRINT {fingerprint}: {bytes_out} bytes out for {bytes_in} in"
        );
    }

    fn print(&self) {
        eprintln!("{}\nworst ratio: {:.2}", self.text, self.worst);
    }
}

fn request(method: u16, build: impl Fn(&mut MessageWriter<'_>), fingerprint: bool) -> Vec<u8> {
    let mut request = Vec::new();
    let mut w = MessageWriter::new(&mut request, Class::Request, method, transaction_id());
    build(&mut w);
    w.finish(None, fingerprint);
    request
}

/// Sends `request` to `server` from `socket` and reads the answer on
/// `receiver`: its size, "success" or its code, and where it came from.
fn measure(
    socket: &UdpSocket,
    receiver: &UdpSocket,
    server: SocketAddr,
    request: &[u8],
) -> (usize, String, SocketAddr) {
    socket.send_to(request, server).expect("send");
    let mut buf = vec![0u8; 65_536];
    let (n, from) = receiver.recv_from(&mut buf).expect("an answer");
    let answer = &buf[..n];
    let code = match Message::parse(answer) {
        Ok(answer) => answer.get(attr::ERROR_CODE).map_or("success".to_owned(), |v| {
            (u16::from(v[2]) * 100 + u16::from(v[3])).to_string()
        }),
        // Our parser takes only classic requests; RFC 3489 answers have
        // their class in the type.
        Err(_) if answer[..2] == [0x01, 0x01] => "success (RFC 3489)".to_owned(),
        Err(e) => panic!("the answer does not parse: {e}"),
    };
    (n, code, from)
}

fn client_socket() -> UdpSocket {
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
    socket.set_read_timeout(Some(Duration::from_secs(2))).expect("timeout");
    socket
}

#[test]
fn no_unauthenticated_answer_is_more_than_twice_its_request() {
    let server = TestServer::start(LONG_TERM_USER_TOML);
    let socket = client_socket();
    let mut table = Table::new();
    for (name, method, build) in FORMS {
        for fingerprint in [false, true] {
            let request = request(method, build, fingerprint);
            let (n, code, _) = measure(&socket, &socket, server.addr(), &request);
            table.row(name, fingerprint, request.len(), &code, n);
        }
    }
    table.print();
}

/// RFC 5780's request shapes: a name, CHANGE-REQUEST flags, whether it
/// has RESPONSE-PORT, and the PADDING length.
const NAT_FORMS: [(&str, Option<u8>, bool, Option<usize>); 12] = [
    ("Binding", None, false, None),
    ("Binding, CHANGE-REQUEST no change", Some(0), false, None),
    ("Binding, CHANGE-REQUEST change IP", Some(4), false, None),
    ("Binding, CHANGE-REQUEST change port", Some(2), false, None),
    ("Binding, CHANGE-REQUEST change IP and port", Some(6), false, None),
    ("Binding, RESPONSE-PORT", None, true, None),
    (
        "Binding, RESPONSE-PORT, CHANGE-REQUEST change IP and port",
        Some(6),
        true,
        None,
    ),
    ("Binding, PADDING 0", None, false, Some(0)),
    ("Binding, PADDING 4", None, false, Some(4)),
    ("Binding, PADDING 100", None, false, Some(100)),
    ("Binding, PADDING 1472", None, false, Some(1472)),
    ("Binding, RESPONSE-PORT and PADDING 1472", None, true, Some(1472)),
];

#[test]
fn no_answer_of_nat_behaviour_discovery_is_more_than_twice_its_request() {
    let alternate = SocketAddr::from(([127, 0, 0, 2], free_udp_port()));
    let listen_keys = format!("udp_alternate = [\"{alternate}\"]\n");
    let server = TestServer::start_setup(&ServerSetup {
        listen_keys: &listen_keys,
        ..ServerSetup::default()
    });
    let primary = server.addr();
    let socket = client_socket();
    // RESPONSE-PORT names another port of the same IP: this one's.
    let elsewhere = client_socket();
    let elsewhere_port = elsewhere.local_addr().unwrap().port();
    let mut table = Table::new();
    for (name, change, response_port, padding) in NAT_FORMS {
        for fingerprint in [false, true] {
            let build = |w: &mut MessageWriter<'_>| {
                if let Some(flags) = change {
                    w.u32(attr::CHANGE_REQUEST, u32::from(flags));
                }
                if response_port {
                    let [hi, lo] = elsewhere_port.to_be_bytes();
                    w.bytes(attr::RESPONSE_PORT, &[hi, lo, 0, 0]);
                }
                if let Some(len) = padding {
                    w.bytes(attr::PADDING, &vec![0x50; len]);
                }
            };
            let request = request(method::BINDING, build, fingerprint);
            // An error comes back to the source, a success to RESPONSE-PORT.
            let redirected = response_port && padding.is_none();
            let receiver = if redirected { &elsewhere } else { &socket };
            let (n, code, from) = measure(&socket, receiver, primary, &request);
            let flags = change.unwrap_or(0);
            let source = SocketAddr::new(
                if flags & 4 != 0 { alternate.ip() } else { primary.ip() },
                if flags & 2 != 0 {
                    alternate.port()
                } else {
                    primary.port()
                },
            );
            assert_eq!(from, source, "{name}: the answer's source");
            table.row(name, fingerprint, request.len(), &code, n);
        }
    }
    // Debian's `stun`: an RFC 3489 request (16-byte id, no cookie) with
    // CHANGE-REQUEST.
    let mut classic = vec![0x00, 0x01, 0x00, 0x08];
    classic.extend_from_slice(&transaction_id());
    classic.extend_from_slice(&[0x21, 0x12, 0xA4, 0x43]);
    classic.extend_from_slice(&[0x00, 0x03, 0x00, 0x04, 0, 0, 0, 6]);
    let (n, code, from) = measure(&socket, &socket, primary, &classic);
    assert_eq!(from, alternate, "RFC 3489 change IP and port");
    table.row(
        "RFC 3489 Binding, CHANGE-REQUEST change IP and port",
        false,
        classic.len(),
        &code,
        n,
    );
    table.print();
}
