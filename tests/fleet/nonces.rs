//! Fleet-wide nonces (issue 12): instances that share `auth.nonce_keys`
//! take each other's nonces, so a client that DNS round robin or a load
//! balancer sends to another instance than the one that challenged it gets
//! its allocation without a 438 round trip; an instance with another key
//! answers 438 Stale Nonce; a key is rotated with a reload (new key first,
//! old one kept) without a restart. Two and three real servers on
//! loopback, one client socket talking to each.

#![allow(clippy::disallowed_methods)] // waits use the real clock

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use crate::common::{allocate_request, code_of, TestServer, LONG_TERM_USER_TOML, PASSWORD, USER};
use turnpike::proto::stun::{Class, Message};
use turnpike::proto::testkit::{Challenge, Cred};

const KEY_ONE: &str = "fleet-nonce-key-number-one";
const KEY_TWO: &str = "fleet-nonce-key-number-two";
const TAIL: &str = "# --- reloadable tail ---";

fn server(keys: &[&str]) -> TestServer {
    TestServer::start(&format!("{LONG_TERM_USER_TOML}{TAIL}\n{}", keys_toml(keys)))
}

fn keys_toml(keys: &[&str]) -> String {
    let list: Vec<String> = keys.iter().map(|k| format!("\"{k}\"")).collect();
    format!("[auth]\nnonce_keys = [{}]\n", list.join(", "))
}

/// Sends `request` to `to` and returns the answer with its transaction
/// id (retried on loss).
fn exchange(socket: &UdpSocket, to: SocketAddr, request: &[u8]) -> Vec<u8> {
    let id = &request[8..20];
    let mut buf = [0u8; 1500];
    for _ in 0..5 {
        socket.send_to(request, to).expect("send");
        let deadline = Instant::now() + Duration::from_secs(1);
        while Instant::now() < deadline {
            if let Ok((n, from)) = socket.recv_from(&mut buf) {
                if from == to && n >= 20 && &buf[8..20] == id {
                    return buf[..n].to_vec();
                }
            }
        }
    }
    panic!("no answer from {to}");
}

/// A client socket and the challenge `challenger` gave it.
fn challenged_by(challenger: &TestServer) -> (UdpSocket, Challenge) {
    let socket = UdpSocket::bind("127.0.0.1:0").expect("client socket");
    socket.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    let answer = exchange(&socket, challenger.addr(), &allocate_request(None));
    let challenge = Challenge::of(&answer).expect("a 401 with REALM and NONCE");
    (socket, challenge)
}

/// The answer of `server` to an Allocate signed with `challenge`.
fn signed_allocate(socket: &UdpSocket, server: &TestServer, challenge: &Challenge) -> Vec<u8> {
    let cred = Cred::new(USER, challenge.realm(), PASSWORD);
    exchange(socket, server.addr(), &allocate_request(Some((&cred, challenge))))
}

fn assert_allocated(answer: &[u8], what: &str) {
    let msg = Message::parse(answer).expect("STUN");
    assert_eq!(msg.class(), Class::Success, "{what}: code {}", code_of(answer));
}

#[test]
fn instances_sharing_a_nonce_key_take_each_others_nonces() {
    let (a, b, other) = (server(&[KEY_ONE]), server(&[KEY_ONE]), server(&[KEY_TWO]));
    let (socket, challenge) = challenged_by(&a);
    assert_allocated(&signed_allocate(&socket, &b, &challenge), "B with A's nonce");
    assert_eq!(
        code_of(&signed_allocate(&socket, &other, &challenge)),
        438,
        "another key"
    );
    // The default, a key of the process's own, takes no one else's.
    let lone = TestServer::start(LONG_TERM_USER_TOML);
    assert_eq!(code_of(&signed_allocate(&socket, &lone, &challenge)), 438);
}

#[test]
fn a_nonce_key_is_rotated_with_a_reload() {
    let (a, b) = (server(&[KEY_ONE]), server(&[KEY_ONE]));
    // A moves to key two, keeping key one for the nonces already out.
    let path = a.config_path();
    let text = std::fs::read_to_string(path).expect("read config");
    let (base, _) = text.split_once(TAIL).expect("marker");
    std::fs::write(path, format!("{base}{TAIL}\n{}", keys_toml(&[KEY_TWO, KEY_ONE]))).expect("write config");
    let reloads = a.stderr_log().matches("configuration reloaded").count();
    a.sighup();
    let deadline = Instant::now() + Duration::from_secs(5);
    while a.stderr_log().matches("configuration reloaded").count() == reloads {
        assert!(Instant::now() < deadline, "no reload:\n{}", a.stderr_log());
        std::thread::sleep(Duration::from_millis(20));
    }
    // B's nonces (key one) still pass at A...
    let (socket, from_b) = challenged_by(&b);
    assert_allocated(&signed_allocate(&socket, &a, &from_b), "A with B's key-one nonce");
    // ...while A's new nonces are made with key two, which B does not know
    // yet: 438 there until B is rotated too.
    let (socket, from_a) = challenged_by(&a);
    assert_eq!(code_of(&signed_allocate(&socket, &b, &from_a)), 438);
}
