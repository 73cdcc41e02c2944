//! coturn's `turnutils_uclient`, an independent TURN client, relaying
//! through the fast path: two clients in the far namespace, each with a
//! channel to coturn's `turnutils_peer` echoing there. Every message comes
//! back, the program's verdicts show it carried them (each one each way),
//! and the same run with the fast path off gives the same account, from
//! uclient and from the server's relayed totals.

use std::net::{SocketAddr, UdpSocket};
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::common::machine;
use crate::common::private_network::Namespace;
use crate::common::uclient::{parse_uclient_summary, UclientSummary};
use crate::common::{die_with_test, run_with_timeout, ChildGuard, PASSWORD, USER};
use crate::topology::{Topology, CLIENT, PEER_IP, SERVER_IP};

use super::{relayed, start, Setup, Verdicts};

/// Longest a coturn tool may run; a run takes about 5 s.
const TOOL_LIMIT: Duration = Duration::from_secs(60);
const CLIENTS: u64 = 2;
const MESSAGES: u64 = 50;
const LENGTH: u64 = 170;
/// Where `turnutils_peer` listens, in the far namespace.
const PEER_PORT: u16 = 3480;

/// Starts `turnutils_peer` echoing on the far namespace's peer address
/// and waits until it echoes.
fn echo_peer(far: &Namespace) -> ChildGuard {
    let mut command = far.command("turnutils_peer");
    command
        .args(["-p", &PEER_PORT.to_string(), "-L", &PEER_IP.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let guard = ChildGuard(die_with_test(&mut command).spawn().expect("spawn turnutils_peer"));
    let peer = SocketAddr::from((PEER_IP, PEER_PORT));
    let echoed = far.within(|| {
        let probe = UdpSocket::bind(CLIENT).expect("bind a probe");
        probe.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
        let mut buf = [0; 64];
        (0..50).any(|_| {
            probe.send_to(b"ping", peer).expect("send to turnutils_peer");
            matches!(probe.recv_from(&mut buf), Ok((4, from)) if from == peer)
        })
    });
    assert!(echoed, "turnutils_peer did not echo within 5 s");
    guard
}

/// One run against a fresh server: uclient's account, the server's
/// relayed totals (packets and bytes, to the peer and to the client) once
/// they have it all, and the program's verdicts.
struct Run {
    summary: UclientSummary,
    relayed: [(Option<f64>, Option<f64>); 2],
    verdicts: Verdicts,
}

fn run(interfaces: Option<&str>) -> Run {
    let topology = Topology::for_the_fast_path();
    let far = &topology.far;
    let server = start(&Setup {
        interfaces,
        ..Setup::default()
    });
    let _peer = echo_peer(far);
    let _beside = machine::beside_others();
    let mut command = far.command("turnutils_uclient");
    let (port, peer_port) = (server.addr().port().to_string(), PEER_PORT.to_string());
    let (messages, clients, length) = (MESSAGES.to_string(), CLIENTS.to_string(), LENGTH.to_string());
    let (peer_ip, server_ip) = (PEER_IP.to_string(), SERVER_IP.to_string());
    command.args([
        "-p", &port, "-n", &messages, "-m", &clients, "-l", &length, "-u", USER, "-w", PASSWORD, "-e", &peer_ip, "-r",
        &peer_port, &server_ip,
    ]);
    let output = run_with_timeout(&mut command, TOOL_LIMIT);
    let text = output.combined();
    assert!(
        output.status.is_some(),
        "turnutils_uclient still running after {TOOL_LIMIT:?}:\n{text}"
    );
    let summary = parse_uclient_summary(&text).unwrap_or_else(|| panic!("no summary in:\n{text}"));
    // The relayed totals take in what the program relayed within about a
    // second; wait until they hold every message uclient got back.
    let deadline = Instant::now() + Duration::from_secs(5);
    let relayed = loop {
        let text = server.metrics();
        let seen = [relayed(&text, "to_peer"), relayed(&text, "to_client")];
        if seen[1].0 == Some(summary.received as f64) || Instant::now() >= deadline {
            break seen;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    Run {
        summary,
        relayed,
        verdicts: Verdicts::of(&server),
    }
}

#[test]
fn uclient_through_the_fast_path_as_through_user_space() {
    let on = run(Some("\"tpx-s\""));
    let sent = CLIENTS * MESSAGES;
    assert_eq!(
        on.summary,
        UclientSummary {
            sent,
            received: sent,
            lost: 0
        },
        "uclient's account with the fast path"
    );
    // Every message went to the peer and came back over a route of its
    // own channel: the program sent each one, each way.
    assert_eq!(
        (on.verdicts.get("tx_to_peer"), on.verdicts.get("tx_to_client")),
        (sent, sent),
        "the program's verdicts: {:?}",
        on.verdicts
    );
    let bytes = (sent * LENGTH) as f64;
    let all = (Some(sent as f64), Some(bytes));
    assert_eq!(
        on.relayed,
        [all, all],
        "relayed (packets, bytes) to the peer and to the client"
    );

    let off = run(None);
    assert_eq!(off.summary, on.summary, "uclient's account without the fast path");
    assert_eq!(off.relayed, on.relayed, "the relayed totals without the fast path");
    assert_eq!(
        off.verdicts.tx(),
        0,
        "no program, nothing sent by it: {:?}",
        off.verdicts
    );
}
