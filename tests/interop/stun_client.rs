//! NAT type discovery by other clients against the server on 127.0.0.1
//! with its alternate address on 127.0.0.2 (`listen.udp_alternate`):
//! Debian's `stun` (package `stun-client`, stund 0.97: RFC 3489's tests,
//! classic requests without the magic cookie, CHANGED-ADDRESS and
//! SOURCE-ADDRESS read), and coturn's `turnutils_stunclient -f` (RFC 5780:
//! OTHER-ADDRESS and RESPONSE-ORIGIN).
//!
//! `stun` counts any answer with the right id as a response, errors
//! included, so its one-line verdict alone would call a server that
//! refuses CHANGE-REQUEST "Open" too; the test reads its verbose trace for
//! the type of each answer and the address it came from.

use std::net::{SocketAddr, UdpSocket};
use std::process::Command;
use std::time::Duration;

use crate::common::{free_udp_port, require_tool, run_with_timeout, ServerSetup, TestServer};

/// Longest a run may take; `stun` takes about a second.
const TOOL_LIMIT: Duration = Duration::from_secs(30);
/// RFC 3489 message types as `stun -v` prints them (decimal).
const SUCCESS: u16 = 0x0101;
const ERROR: u16 = 0x0111;

/// The server, and its alternate address if it has one.
fn server(with_alternate: bool) -> (TestServer, Option<SocketAddr>) {
    let alternate = with_alternate.then(|| SocketAddr::from(([127, 0, 0, 2], free_udp_port())));
    let listen_keys = alternate.map_or(String::new(), |a| format!("udp_alternate = [\"{a}\"]\n"));
    let server = TestServer::start_setup(&ServerSetup {
        listen_keys: &listen_keys,
        ..ServerSetup::default()
    });
    (server, alternate)
}

/// One answer in `stun -v`'s trace: its test number (the first byte of
/// the id), message type, and the addresses it carried.
#[derive(Debug, Default)]
struct Received {
    test: u8,
    kind: u16,
    source: Option<String>,
    changed: Option<String>,
}

/// Runs `stun -v` against `server` from a pair of free ports (it binds
/// the one given and the next); returns its summary (stdout) and the
/// answers it read.
fn stund(server: SocketAddr) -> (String, Vec<Received>) {
    let port = loop {
        let port = free_udp_port();
        if UdpSocket::bind(("0.0.0.0", port + 1)).is_ok() {
            break port;
        }
    };
    let out = run_with_timeout(
        Command::new(require_tool("stun")).args([&server.to_string(), "-v", "-p", &port.to_string()]),
        TOOL_LIMIT,
    );
    assert!(out.status.is_some(), "stun did not finish: {}", out.combined());
    // Each parsed answer prints its attributes, then its type and id.
    let mut answers = Vec::new();
    let mut current = Received::default();
    for line in out.stderr.lines() {
        if let Some(source) = line.strip_prefix("SourceAddress = ") {
            current.source = Some(source.trim().to_owned());
        } else if let Some(changed) = line.strip_prefix("ChangedAddress = ") {
            current.changed = Some(changed.trim().to_owned());
        } else if let Some(rest) = line.strip_prefix("Received message of type ") {
            let (kind, test) = rest.split_once("id=").expect("type and id");
            current.kind = kind.trim().parse().expect("a type");
            current.test = test.trim().parse().expect("an id");
            answers.push(std::mem::take(&mut current));
        } else if line.starts_with("Received stun message") {
            current = Received::default();
        }
    }
    (out.stdout, answers)
}

/// The first answer to test `test`.
fn answer(answers: &[Received], test: u8) -> &Received {
    answers
        .iter()
        .find(|a| a.test == test)
        .unwrap_or_else(|| panic!("no answer to test {test}: {answers:?}"))
}

#[test]
fn debian_stun_client_finds_the_open_internet_through_both_addresses() {
    let (turnpike, alternate) = server(true);
    let (primary, alternate) = (turnpike.addr(), alternate.unwrap());
    let (summary, answers) = stund(primary);
    assert!(summary.contains("Primary: Open"), "{summary}");
    let at = |ip: SocketAddr, port: SocketAddr| SocketAddr::new(ip.ip(), port.port()).to_string();
    // Test I: to the primary address, answered from it, naming A2:P2.
    let one = answer(&answers, 1);
    assert_eq!(one.kind, SUCCESS);
    assert_eq!(one.source.as_deref(), Some(primary.to_string().as_str()));
    assert_eq!(one.changed.as_deref(), Some(alternate.to_string().as_str()));
    // Test II: change IP, from A2:P1.
    let two = answer(&answers, 2);
    assert_eq!((two.kind, two.source.clone()), (SUCCESS, Some(at(alternate, primary))));
    // Test III: change port, from A1:P2.
    let three = answer(&answers, 3);
    assert_eq!(
        (three.kind, three.source.clone()),
        (SUCCESS, Some(at(primary, alternate)))
    );
    // Test I(2): to A2:P1, answered from it.
    let again = answer(&answers, 10);
    assert_eq!(
        (again.kind, again.source.clone()),
        (SUCCESS, Some(at(alternate, primary)))
    );
    assert_eq!(again.changed.as_deref(), Some(at(primary, alternate).as_str()));
}

#[test]
fn without_an_alternate_address_debian_stun_client_is_refused_its_changes() {
    let (turnpike, _) = server(false);
    let (_, answers) = stund(turnpike.addr());
    let one = answer(&answers, 1);
    assert_eq!((one.kind, &one.changed), (SUCCESS, &None), "no CHANGED-ADDRESS");
    for test in [2, 3] {
        assert_eq!(answer(&answers, test).kind, ERROR, "test {test} gets 420");
    }
}

#[test]
fn coturn_stunclient_reads_other_address_and_response_origin() {
    let (turnpike, alternate) = server(true);
    let alternate = alternate.unwrap();
    let out = run_with_timeout(
        Command::new(require_tool("turnutils_stunclient")).args([
            "-f",
            "-p",
            &turnpike.addr().port().to_string(),
            "127.0.0.1",
        ]),
        TOOL_LIMIT,
    );
    assert!(out.success(), "{}", out.combined());
    let text = out.stdout;
    assert!(text.contains("RFC 5780 response 1"), "{text}");
    assert!(text.contains(&format!("Other addr: : {alternate}")), "{text}");
    // Its RFC 5780 requests ask for both changes: answered from A2:P2.
    assert!(text.contains(&format!("Response origin: : {alternate}")), "{text}");
}
