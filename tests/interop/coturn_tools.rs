//! STUN and TURN over UDP, TCP and TLS, IPv4 and IPv6, with coturn's independent test clients
//! (`turnutils_stunclient`, `turnutils_uclient`, `turnutils_peer`, from
//! Debian's `coturn` package).

use std::net::{SocketAddr, UdpSocket};
use std::process::Command;
use std::time::Duration;

use crate::common::machine;
use crate::common::uclient::{parse_uclient_summary, UclientSummary};
use crate::common::{
    die_with_test, free_udp_port, require_tool, rest_credential, run_with_timeout, unix_now, ChildGuard, TestServer,
    LONG_TERM_USER_TOML, PASSWORD, USER,
};

/// Longest a coturn tool may run; a run takes about 5 s.
const TOOL_LIMIT: Duration = Duration::from_secs(60);

const SECRETS_TOML: &str = "[auth]\nsecrets = [\"s1\", \"s2\"]\n";

#[test]
fn uclient_summary_parser_reads_the_final_counts() {
    let sample = "\
0: : Total connect time is 0
1: : start_mclient: msz=4, tot_send_msgs=0, tot_recv_msgs=0, tot_send_bytes ~ 0, tot_recv_bytes ~ 0
6: : start_mclient: msz=4, tot_send_msgs=104, tot_recv_msgs=103, tot_send_bytes ~ 17680, tot_recv_bytes ~ 17510
7: : start_mclient: tot_send_msgs=200, tot_recv_msgs=198
7: : start_mclient: tot_send_bytes ~ 34000, tot_recv_bytes ~ 33660
7: : Total transmit time is 7
7: : Total lost packets 2 (1.000000%), total send dropped 0 (0.000000%)
7: : Average round trip delay 0.140000 ms; min = 0 ms, max = 14 ms
";
    assert_eq!(
        parse_uclient_summary(sample),
        Some(UclientSummary {
            sent: 200,
            received: 198,
            lost: 2
        })
    );
    let progress_only = "1: : start_mclient: msz=4, tot_send_msgs=5, tot_recv_msgs=5, tot_send_bytes ~ 0\n";
    assert_eq!(parse_uclient_summary(progress_only), None);
    assert_eq!(parse_uclient_summary(""), None);
}

/// Starts `turnutils_peer` (a UDP echo server) on 127.0.0.1 and waits until
/// it echoes.
/// Starts `turnutils_peer` echoing on `loopback` (127.0.0.1 or ::1).
fn start_coturn_peer(loopback: &str) -> (ChildGuard, u16) {
    let tool = require_tool("turnutils_peer");
    let port = free_udp_port();
    let child = die_with_test(&mut Command::new(tool))
        .args(["-p", &port.to_string(), "-L", loopback])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn turnutils_peer");
    let guard = ChildGuard(child);
    let ip: std::net::IpAddr = loopback.parse().expect("a loopback address");
    let probe = UdpSocket::bind(SocketAddr::new(ip, 0)).expect("bind probe");
    probe
        .set_read_timeout(Some(Duration::from_millis(100)))
        .expect("set_read_timeout");
    let peer = SocketAddr::new(ip, port);
    let mut buf = [0u8; 64];
    for _ in 0..50 {
        probe.send_to(b"ping", peer).expect("send to turnutils_peer");
        if matches!(probe.recv_from(&mut buf), Ok((4, from)) if from == peer) {
            return (guard, port);
        }
    }
    panic!("turnutils_peer on port {port} did not echo within 5 s");
}

/// Where `turnutils_uclient` sends its data.
#[derive(Clone, Copy, Debug)]
enum Traffic {
    /// `-y`: each client sends to another client's relay address.
    ClientToClient,
    /// `-e 127.0.0.1 -r PORT`: every client sends to a `turnutils_peer`.
    EchoPeer,
}

/// How `turnutils_uclient` reaches the server.
#[derive(Clone, Copy, Debug)]
enum Control {
    Udp,
    /// `-t`: STUN and ChannelData framed on a TCP connection.
    Tcp,
    /// `-t -S`: the same inside TLS (uclient offers TLS 1.0 to 1.3 at
    /// random and retries when an old version is refused).
    Tls,
    /// `-t -T`: TCP control and a TCP relay allocation (RFC 6062:
    /// Connect, ConnectionAttempt, ConnectionBind, data connections).
    TcpRelay,
    /// `-t -S -T`: the same with TLS control and data connections.
    TlsTcpRelay,
}

/// Which family the client reaches the server, its relays and its peers in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Family {
    V4,
    /// Server at `::1`, `-x` for IPv6 relays (REQUESTED-ADDRESS-FAMILY),
    /// peers on `::1`.
    V6,
}

/// Runs `turnutils_uclient` (2 clients, 50 messages of 170 bytes each)
/// against `server` with the given authentication arguments, using
/// channels or, with `send_indications`, Send/Data indications, and asserts
/// that every message came back.
fn assert_uclient_relays_without_loss(
    server: &TestServer,
    auth: &[&str],
    how: (Control, Family),
    traffic: Traffic,
    send_indications: bool,
) {
    assert_uclient_relays_messages_without_loss(server, auth, how, traffic, send_indications, 170);
}

/// [`assert_uclient_relays_without_loss`] with messages of `length` bytes
/// (`-l`).
fn assert_uclient_relays_messages_without_loss(
    server: &TestServer,
    auth: &[&str],
    (control, family): (Control, Family),
    traffic: Traffic,
    send_indications: bool,
    length: usize,
) {
    let _beside = machine::beside_others();
    let tool = require_tool("turnutils_uclient");
    let port = match control {
        Control::Tls | Control::TlsTcpRelay => server.tls_addr().port(),
        Control::Udp | Control::Tcp | Control::TcpRelay => server.addr().port(),
    }
    .to_string();
    let length = length.to_string();
    let mut args: Vec<String> = ["-p", &port, "-n", "50", "-m", "2", "-l", &length]
        .iter()
        .chain(auth)
        .map(|s| s.to_string())
        .collect();
    match control {
        Control::Udp => {}
        Control::Tcp => args.push("-t".into()),
        Control::Tls => args.extend(["-t".into(), "-S".into()]),
        Control::TcpRelay => args.extend(["-t".into(), "-T".into()]),
        Control::TlsTcpRelay => args.extend(["-t".into(), "-S".into(), "-T".into()]),
    }
    let loopback = match family {
        Family::V4 => "127.0.0.1",
        Family::V6 => {
            args.push("-x".into());
            "::1"
        }
    };
    let _peer = match traffic {
        Traffic::ClientToClient => {
            args.push("-y".into());
            None
        }
        Traffic::EchoPeer => {
            let (peer, peer_port) = start_coturn_peer(loopback);
            args.extend(["-e".into(), loopback.into(), "-r".into(), peer_port.to_string()]);
            Some(peer)
        }
    };
    if send_indications {
        args.push("-s".into());
    }
    args.push(loopback.into());
    let output = run_with_timeout(Command::new(tool).args(&args), TOOL_LIMIT);
    let text = output.combined();
    assert!(
        output.status.is_some(),
        "turnutils_uclient {args:?} still running after {TOOL_LIMIT:?}; output:\n{text}"
    );
    let summary = parse_uclient_summary(&text)
        .unwrap_or_else(|| panic!("no summary in turnutils_uclient {args:?} output:\n{text}"));
    assert!(summary.sent > 0, "nothing sent ({summary:?}); output:\n{text}");
    assert_eq!(
        summary.received, summary.sent,
        "messages lost ({summary:?}); output:\n{text}"
    );
    assert_eq!(summary.lost, 0, "lost packets ({summary:?}); output:\n{text}");
}

fn assert_long_term_user_relays_without_loss(how: (Control, Family), traffic: Traffic, send_indications: bool) {
    let server = TestServer::start(LONG_TERM_USER_TOML);
    assert_uclient_relays_without_loss(&server, &["-u", USER, "-w", PASSWORD], how, traffic, send_indications);
}

/// `turnutils_stunclient` against the server at `loopback`: the reflexive
/// address it reports is its own, on loopback.
fn assert_stunclient_learns_its_reflexive_address(loopback: &str) {
    let _beside = machine::beside_others();
    let tool = require_tool("turnutils_stunclient");
    let server = TestServer::start(LONG_TERM_USER_TOML);
    let output = run_with_timeout(
        Command::new(tool).args(["-p", &server.addr().port().to_string(), loopback]),
        TOOL_LIMIT,
    );
    let text = output.combined();
    assert!(output.success(), "turnutils_stunclient failed:\n{text}");
    let line = text
        .lines()
        .find(|line| line.contains("UDP reflexive addr: "))
        .unwrap_or_else(|| panic!("no reflexive address in turnutils_stunclient output:\n{text}"));
    // Printed as "ip:port", without brackets for IPv6.
    let addr = line.split("UDP reflexive addr: ").nth(1).unwrap_or_default().trim();
    let (ip, port) = addr
        .rsplit_once(':')
        .unwrap_or_else(|| panic!("reflexive address {addr:?} has no port:\n{text}"));
    assert_eq!(ip, loopback, "{text}");
    let port: u16 = port
        .parse()
        .unwrap_or_else(|e| panic!("bad port in {addr:?} ({e}):\n{text}"));
    assert_ne!(port, 0, "{text}");
}

#[test]
fn stunclient_learns_its_reflexive_address() {
    assert_stunclient_learns_its_reflexive_address("127.0.0.1");
}

#[test]
fn stunclient_learns_its_reflexive_address_over_ipv6() {
    assert_stunclient_learns_its_reflexive_address("::1");
}

#[test]
fn uclient_udp_client_to_client_over_channels_loses_nothing() {
    assert_long_term_user_relays_without_loss((Control::Udp, Family::V4), Traffic::ClientToClient, false);
}

#[test]
fn uclient_udp_client_to_client_over_send_indications_loses_nothing() {
    assert_long_term_user_relays_without_loss((Control::Udp, Family::V4), Traffic::ClientToClient, true);
}

#[test]
fn uclient_udp_to_echo_peer_over_channels_loses_nothing() {
    assert_long_term_user_relays_without_loss((Control::Udp, Family::V4), Traffic::EchoPeer, false);
}

#[test]
fn uclient_udp_to_echo_peer_over_send_indications_loses_nothing() {
    assert_long_term_user_relays_without_loss((Control::Udp, Family::V4), Traffic::EchoPeer, true);
}

#[test]
fn uclient_tcp_client_to_client_over_channels_loses_nothing() {
    assert_long_term_user_relays_without_loss((Control::Tcp, Family::V4), Traffic::ClientToClient, false);
}

#[test]
fn uclient_tcp_client_to_client_over_send_indications_loses_nothing() {
    assert_long_term_user_relays_without_loss((Control::Tcp, Family::V4), Traffic::ClientToClient, true);
}

#[test]
fn uclient_tcp_to_echo_peer_over_channels_loses_nothing() {
    assert_long_term_user_relays_without_loss((Control::Tcp, Family::V4), Traffic::EchoPeer, false);
}

#[test]
fn uclient_tcp_to_echo_peer_over_send_indications_loses_nothing() {
    assert_long_term_user_relays_without_loss((Control::Tcp, Family::V4), Traffic::EchoPeer, true);
}

#[test]
fn uclient_tls_client_to_client_over_channels_loses_nothing() {
    assert_long_term_user_relays_without_loss((Control::Tls, Family::V4), Traffic::ClientToClient, false);
}

#[test]
fn uclient_tls_client_to_client_over_send_indications_loses_nothing() {
    assert_long_term_user_relays_without_loss((Control::Tls, Family::V4), Traffic::ClientToClient, true);
}

#[test]
fn uclient_tls_to_echo_peer_over_channels_loses_nothing() {
    assert_long_term_user_relays_without_loss((Control::Tls, Family::V4), Traffic::EchoPeer, false);
}

#[test]
fn uclient_tls_to_echo_peer_over_send_indications_loses_nothing() {
    assert_long_term_user_relays_without_loss((Control::Tls, Family::V4), Traffic::EchoPeer, true);
}

#[test]
fn uclient_ipv6_udp_client_to_client_over_channels_loses_nothing() {
    assert_long_term_user_relays_without_loss((Control::Udp, Family::V6), Traffic::ClientToClient, false);
}

#[test]
fn uclient_ipv6_udp_to_echo_peer_over_send_indications_loses_nothing() {
    assert_long_term_user_relays_without_loss((Control::Udp, Family::V6), Traffic::EchoPeer, true);
}

#[test]
fn uclient_ipv6_tcp_client_to_client_over_send_indications_loses_nothing() {
    assert_long_term_user_relays_without_loss((Control::Tcp, Family::V6), Traffic::ClientToClient, true);
}

#[test]
fn uclient_ipv6_tcp_to_echo_peer_over_channels_loses_nothing() {
    assert_long_term_user_relays_without_loss((Control::Tcp, Family::V6), Traffic::EchoPeer, false);
}

/// Behind a 1:1 NAT the advertised relay address (external_ip) may not
/// reach this host. Emulated with 127.0.0.2, which never reaches sockets
/// bound to 127.0.0.1: client-to-client relaying must still lose nothing.
#[test]
fn uclient_client_to_client_through_an_unreachable_external_ip_loses_nothing() {
    let server = TestServer::start_with("external_ip = \"127.0.0.2\"", LONG_TERM_USER_TOML);
    assert_uclient_relays_without_loss(
        &server,
        &["-u", USER, "-w", PASSWORD],
        (Control::Udp, Family::V4),
        Traffic::ClientToClient,
        false,
    );
    assert!(
        server.stderr_log().contains("127.0.0.2"),
        "relays advertised on the external IP"
    );
}

/// RFC 6062: uclient's clients connect their TCP relays to each other;
/// every byte crosses a data connection spliced with a peer connection.
/// Four shards, so data connections land on other shards than their
/// control connection and are handed on.
#[test]
fn uclient_tcp_relay_client_to_client_loses_nothing() {
    assert_tcp_relay_client_to_client_loses_nothing(Control::TcpRelay);
}

#[test]
fn uclient_tcp_relay_over_tls_client_to_client_loses_nothing() {
    assert_tcp_relay_client_to_client_loses_nothing(Control::TlsTcpRelay);
}

/// uclient's clients, with their control connection as `control` says,
/// relay to each other through a server of four shards.
fn assert_tcp_relay_client_to_client_loses_nothing(control: Control) {
    let server = TestServer::start_with("workers = 4", LONG_TERM_USER_TOML);
    assert_uclient_relays_without_loss(
        &server,
        &["-u", USER, "-w", PASSWORD],
        (control, Family::V4),
        Traffic::ClientToClient,
        false,
    );
}

/// RFC 6062 relaying of messages of many sizes, under a 13-character
/// realm. uclient reads a data connection as messages of exactly `-l`
/// bytes, the answer to its ConnectionBind included; the server once
/// challenged that ConnectionBind with a 438 of 96 bytes plus the realm's
/// length beyond 8 (its nonce was stale on the new connection), which
/// uclient cut at `-l`: every size below 104 failed with "connection bind
/// error". Sizes start above the 72-byte ConnectionBind success, which
/// uclient must read whole as well (coturn's own server fails below its
/// answer size just the same). The runs share one server of four shards,
/// at once, each bounded by `TOOL_LIMIT`.
#[test]
fn uclient_tcp_relay_relays_messages_of_every_size() {
    let server = TestServer::start_with("realm = \"turnpike.test\"\nworkers = 4", LONG_TERM_USER_TOML);
    let sizes = [76, 100, 101, 120, 170, 500, 1000];
    let failed: Vec<usize> = std::thread::scope(|scope| {
        let runs: Vec<_> = sizes
            .iter()
            .map(|&length| {
                let server = &server;
                let run = scope.spawn(move || {
                    assert_uclient_relays_messages_without_loss(
                        server,
                        &["-u", USER, "-w", PASSWORD],
                        (Control::TcpRelay, Family::V4),
                        Traffic::ClientToClient,
                        false,
                        length,
                    )
                });
                (length, run)
            })
            .collect();
        runs.into_iter()
            .filter_map(|(length, run)| run.join().is_err().then_some(length))
            .collect()
    });
    assert!(
        failed.is_empty(),
        "uclient -T -l failed for sizes {failed:?} (see above)"
    );
}

fn assert_short_lived_credential_relays_without_loss(secret: &str) {
    let server = TestServer::start(SECRETS_TOML);
    let (username, password) = rest_credential(secret, "alice", unix_now() + 3600);
    assert_uclient_relays_without_loss(
        &server,
        &["-u", &username, "-w", &password],
        (Control::Udp, Family::V4),
        Traffic::ClientToClient,
        false,
    );
}

#[test]
fn uclient_relays_with_short_lived_credential_of_first_secret() {
    assert_short_lived_credential_relays_without_loss("s1");
}

#[test]
fn uclient_relays_with_short_lived_credential_of_second_secret() {
    assert_short_lived_credential_relays_without_loss("s2");
}

#[test]
fn uclient_relays_with_credential_from_coturn_rest_api_secret() {
    // -W makes uclient compute "<expiry>:alice" and its HMAC itself.
    let server = TestServer::start(SECRETS_TOML);
    assert_uclient_relays_without_loss(
        &server,
        &["-W", "s1", "-u", "alice"],
        (Control::Tcp, Family::V4),
        Traffic::ClientToClient,
        false,
    );
}
