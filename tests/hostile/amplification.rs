//! Reflection: what a spoofed source can make the running server send.
//!
//! Every unauthenticated request form a source can send without an
//! allocation, each in its smallest shape, with and without FINGERPRINT,
//! over UDP to the real binary on loopback under its default realm: the
//! answer is at most twice the request. The test prints the table of bytes
//! in, bytes out and their ratio that SECURITY.md reproduces.

use std::net::UdpSocket;
use std::time::Duration;

use crate::common::{transaction_id, TestServer, LONG_TERM_USER_TOML};
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

#[test]
fn no_unauthenticated_answer_is_more_than_twice_its_request() {
    let server = TestServer::start(LONG_TERM_USER_TOML);
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
    socket.set_read_timeout(Some(Duration::from_secs(2))).expect("timeout");
    let mut table = String::from(
        "| request | FINGERPRINT | bytes in | answer | bytes out | out ÷ in |\n|---|---|---:|---|---:|---:|\n",
    );
    let mut worst: f64 = 0.0;
    for (name, method, build) in FORMS {
        for fingerprint in [false, true] {
            let mut request = Vec::new();
            let mut w = MessageWriter::new(&mut request, Class::Request, method, transaction_id());
            build(&mut w);
            w.finish(None, fingerprint);
            socket.send_to(&request, server.addr()).expect("send");
            let mut buf = [0u8; 1500];
            let (n, _) = socket
                .recv_from(&mut buf)
                .unwrap_or_else(|e| panic!("{name}: no answer: {e}"));
            let answer = Message::parse(&buf[..n]).expect("the answer parses");
            let code = answer.get(attr::ERROR_CODE).map_or("success".to_owned(), |v| {
                (u16::from(v[2]) * 100 + u16::from(v[3])).to_string()
            });
            let ratio = n as f64 / request.len() as f64;
            worst = worst.max(ratio);
            table.push_str(&format!(
                "| {name} | {} | {} | {code} | {n} | {ratio:.2} |\n",
                if fingerprint { "yes" } else { "no" },
                request.len()
            ));
            assert!(
                n <= 2 * request.len(),
                "{name}, FINGERPRINT {fingerprint}: {n} bytes out for {} in",
                request.len()
            );
        }
    }
    eprintln!("{table}\nworst ratio: {worst:.2}");
}
