//! Load shedding with 300 Try Alternate (issue 12): a full instance sends
//! an authenticated Allocate to a sibling named in ALTERNATE-SERVER, and
//! real clients follow it: coturn's `turnutils_uclient` and Chromium's
//! TURN client, each given only the full instance. Two servers on
//! loopback sharing a secret and a nonce key, as a fleet would. The 300
//! names the sibling's port of the client's transport (issue 19): over
//! UDP, TCP and TLS `turnutils_uclient` allocates at the sibling, and a
//! TLS client of the test's own checks the sibling's certificate against
//! ALTERNATE-DOMAIN.

#![allow(clippy::disallowed_methods)] // waits use the real clock

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::uclient::parse_uclient_summary;
use crate::common::{
    assert_relay_round_trips, authenticated_request_as, browser_setup, code_of, enter_private_network, json_summary,
    require_tool, rest_credential, run_with_timeout, turn_client, udp_request_as, unix_now, BrowserSetup, EchoPeer,
    ServerSetup, TestServer, REQUESTED_UDP,
};
use rustls::version::TLS13;
use turnpike::proto::stun::{attr, method, Message};

const SECRET: &str = "fleet-secret-shared-by-both";
const NONCE_KEY: &str = "fleet-nonce-key-shared-by-both";

fn fleet_auth() -> String {
    format!("[auth]\nsecrets = [\"{SECRET}\"]\nnonce_keys = [\"{NONCE_KEY}\"]\n")
}

/// The sibling that takes the shed Allocates, and the full instance
/// (room for one allocation, which `turnutils_uclient`'s EVEN-PORT
/// reservation or the test itself takes) that names it.
fn full_instance_and_sibling(full_at: usize) -> (TestServer, TestServer) {
    let sibling = TestServer::start(&fleet_auth());
    let full = TestServer::start(&format!(
        "{}\n[limits]\nmax_allocations = {full_at}\n\n[alternate]\nservers = [\"{}\"]\n",
        fleet_auth(),
        sibling.addr()
    ));
    (full, sibling)
}

fn allocate_answers(server: &TestServer, code: &str) -> f64 {
    server.metric_sum(
        "turnpike_requests_total",
        &["method=\"allocate\"", &format!("code=\"{code}\"")],
    )
}

/// [`allocate_answers`] once it has reached `at_least`, or after 3 s: the
/// shards publish their counters four times a second.
fn allocate_answers_reaching(server: &TestServer, code: &str, at_least: f64) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let seen = allocate_answers(server, code);
        if seen >= at_least || Instant::now() >= deadline {
            return seen;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn in_relay_range(server: &TestServer, relay: &str) -> bool {
    relay
        .parse::<SocketAddr>()
        .is_ok_and(|a| a.ip().is_loopback() && server.relay_ports().contains(&a.port()))
}

#[test]
fn turnutils_uclient_follows_alternate_server_to_the_sibling_and_relays_there() {
    let tool = require_tool("turnutils_uclient");
    let (full, sibling) = full_instance_and_sibling(1);
    let out = run_with_timeout(
        Command::new(tool).args([
            "-W",
            SECRET,
            "-u",
            "shed",
            "-y",
            "-m",
            "2",
            "-n",
            "20",
            "-l",
            "120",
            "-p",
            &full.addr().port().to_string(),
            "127.0.0.1",
        ]),
        Duration::from_secs(60),
    );
    let text = out.combined();
    assert!(out.success(), "turnutils_uclient failed:\n{text}");
    assert!(text.contains("error 300"), "uclient was never told 300:\n{text}");
    let received = parse_uclient_summary(&text).map_or(0, |summary| summary.received);
    assert!(received > 0, "nothing was relayed at the sibling:\n{text}");
    let created = |s: &TestServer| {
        s.stderr_log()
            .lines()
            .filter(|l| l.contains("allocation created") && l.contains(":shed\""))
            .count()
    };
    assert_eq!(created(&full), 0, "the full instance allocated anyway");
    assert!(
        created(&sibling) >= 2,
        "the sibling has not got both clients' allocations"
    );
    let redirected = allocate_answers_reaching(&full, "300", 1.0);
    assert!(redirected >= 1.0, "the full instance counted {redirected} answers 300");
}

/// The sibling, and a full instance naming its UDP, TCP and TLS ports
/// (`{ udp, tcp, tls }`) and `localhost` as ALTERNATE-DOMAIN; the socket
/// that holds the full instance's one allocation comes with them.
fn full_instance_and_sibling_per_transport() -> (TestServer, TestServer, UdpSocket) {
    let sibling = TestServer::start(&fleet_auth());
    let full = TestServer::start(&format!(
        "{}\n[limits]\nmax_allocations = 1\n\n[alternate]\n\
         servers = [{{ udp = \"{plain}\", tcp = \"{plain}\", tls = \"{tls}\" }}]\ndomain = \"localhost\"\n",
        fleet_auth(),
        plain = sibling.addr(),
        tls = sibling.tls_addr(),
    ));
    let (user, password) = rest_credential(SECRET, "holder", unix_now() + 600);
    let (holder, code) = allocate_once(full.addr(), &user, &password);
    assert_eq!(code, 200, "the one allocation of the full instance");
    (full, sibling, holder)
}

/// The allocations of users named `name` the log of `server` shows created.
fn created_for(server: &TestServer, name: &str) -> usize {
    server
        .stderr_log()
        .lines()
        .filter(|l| l.contains("allocation created") && l.contains(&format!(":{name}\"")))
        .count()
}

#[test]
fn turnutils_uclient_over_udp_tcp_and_tls_is_sent_to_the_sibling_port_of_its_transport() {
    let tool = require_tool("turnutils_uclient");
    let (full, sibling, _holder) = full_instance_and_sibling_per_transport();
    let plain_port = full.addr().port().to_string();
    let tls_port = full.tls_addr().port().to_string();
    let runs: [(&str, &[&str], &str); 3] = [
        ("udp", &[], &plain_port),
        ("tcp", &["-t"], &plain_port),
        ("tls", &["-t", "-S"], &tls_port),
    ];
    for (transport, flags, port) in runs {
        let name = format!("shed-{transport}");
        let mut args = vec![
            "-W", SECRET, "-u", &name, "-y", "-m", "2", "-n", "20", "-l", "120", "-p", port,
        ];
        args.extend(flags);
        args.push("127.0.0.1");
        let out = run_with_timeout(Command::new(&tool).args(&args), Duration::from_secs(60));
        let text = out.combined();
        assert!(out.success(), "turnutils_uclient over {transport} failed:\n{text}");
        assert!(
            text.contains("error 300"),
            "uclient over {transport} was never told 300:\n{text}"
        );
        let received = parse_uclient_summary(&text).map_or(0, |summary| summary.received);
        assert!(
            received > 0,
            "nothing was relayed at the sibling over {transport}:\n{text}"
        );
        assert_eq!(
            created_for(&full, &name),
            0,
            "the full instance allocated for {transport}"
        );
        assert!(
            created_for(&sibling, &name) >= 2,
            "the sibling has not got both {transport} clients' allocations:\n{text}"
        );
    }
    assert!(allocate_answers_reaching(&full, "300", 3.0) >= 3.0);
}

/// The plain address in an address attribute (ALTERNATE-SERVER).
fn plain_address(value: &[u8]) -> SocketAddr {
    let port = u16::from_be_bytes([value[2], value[3]]);
    match value[1] {
        1 => SocketAddr::from((<[u8; 4]>::try_from(&value[4..8]).expect("IPv4"), port)),
        _ => SocketAddr::from((<[u8; 16]>::try_from(&value[4..20]).expect("IPv6"), port)),
    }
}

#[test]
fn a_tls_client_follows_the_300_to_the_sibling_tls_port_and_checks_its_certificate_by_alternate_domain() {
    let (full, sibling, _holder) = full_instance_and_sibling_per_transport();
    let (user, password) = rest_credential(SECRET, "tls", unix_now() + 600);
    let allocate = |stream: &mut _| {
        authenticated_request_as(stream, &user, &password, method::ALLOCATE, |w| {
            w.bytes(attr::REQUESTED_TRANSPORT, &REQUESTED_UDP);
        })
    };
    let mut first = full
        .ca()
        .connect(full.tls_addr(), &[&TLS13])
        .expect("TLS to the full instance");
    let answer = allocate(&mut first);
    assert_eq!(code_of(&answer), 300);
    let message = Message::parse(&answer).expect("a STUN answer");
    let to = plain_address(message.get(attr::ALTERNATE_SERVER).expect("ALTERNATE-SERVER"));
    assert_eq!(
        to,
        sibling.tls_addr(),
        "a TLS client sent to {to}, not to the sibling's TLS port (its UDP and TCP port is {})",
        sibling.addr()
    );
    let domain = message.get(attr::ALTERNATE_DOMAIN).expect("ALTERNATE-DOMAIN");
    assert_eq!(
        domain, b"localhost",
        "the name to check the sibling's certificate against"
    );
    // The client's TLS verifies the sibling's certificate for `localhost`
    // (the name ALTERNATE-DOMAIN gave) and allocates there.
    let mut second = sibling.ca().connect(to, &[&TLS13]).expect("TLS to the sibling");
    assert_eq!(code_of(&allocate(&mut second)), 200, "the Allocate at the sibling");
    assert_eq!(created_for(&sibling, "tls"), 1);
}

/// An Allocate of `user` on `server` from a socket of its own, which
/// holds the allocation if there is one: the socket and the answer's code.
fn allocate_once(server: SocketAddr, user: &str, password: &str) -> (UdpSocket, u16) {
    let socket = UdpSocket::bind("0.0.0.0:0").expect("client socket");
    socket.set_read_timeout(Some(Duration::from_secs(2))).expect("timeout");
    let answer = udp_request_as(&socket, server, (user, password), method::ALLOCATE, |w| {
        w.bytes(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0]);
    });
    (socket, code_of(&answer))
}

/// [`allocate_once`] from async code; the allocation is not kept.
async fn allocate_code(server: SocketAddr, user: &str, password: &str) -> u16 {
    let (user, password) = (user.to_owned(), password.to_owned());
    tokio::task::spawn_blocking(move || allocate_once(server, &user, &password).1)
        .await
        .expect("allocate")
}

#[test]
fn chromium_follows_alternate_server_and_needs_no_second_challenge() {
    let BrowserSetup {
        dir,
        chromium,
        artifacts: _,
    } = browser_setup("alternate");
    // Chromium refuses a redirection to a loopback address, so the two
    // instances listen on other addresses, in a namespace of the test's.
    let (full_ip, sibling_ip) = (Ipv4Addr::new(198, 18, 0, 1), Ipv4Addr::new(198, 18, 0, 2));
    enter_private_network(&[full_ip, sibling_ip]);
    let auth = fleet_auth();
    let sibling = TestServer::start_setup(&ServerSetup {
        extra_toml: &auth,
        listen_ip: sibling_ip,
        ..ServerSetup::default()
    });
    let full_toml = format!(
        "{auth}\n[limits]\nmax_allocations = 1\n\n[alternate]\nservers = [\"{}\"]\n",
        sibling.addr()
    );
    let full = TestServer::start_setup(&ServerSetup {
        extra_toml: &full_toml,
        listen_ip: full_ip,
        ..ServerSetup::default()
    });
    let (user, password) = rest_credential(SECRET, "holder", unix_now() + 600);
    let (_holder, code) = allocate_once(full.addr(), &user, &password);
    assert_eq!(code, 200, "the first allocation fits");

    let (user, password) = rest_credential(SECRET, "chromium", unix_now() + 600);
    let out = run_with_timeout(
        Command::new("node")
            .arg(dir.join("alternate.mjs"))
            .arg(format!("http://{}/", sibling.http_addr()))
            .arg(format!("turn:{}?transport=udp", full.addr()))
            .arg(&user)
            .arg(&password)
            .env("CHROMIUM", &chromium)
            .current_dir(&dir),
        Duration::from_secs(60),
    );
    assert!(out.success(), "the candidate gathering failed:\n{}", out.combined());
    let summary = json_summary(&out, "alternate.mjs");
    let relays: Vec<&str> = summary["relays"]
        .as_array()
        .expect("relays")
        .iter()
        .filter_map(|r| r.as_str())
        .collect();
    assert!(
        !relays.is_empty() && relays.iter().all(|r| in_relay_range(&sibling, r)),
        "Chromium's relay candidates {relays:?} are not the sibling's (ports {:?}); full instance log:\n{}",
        sibling.relay_ports(),
        full.stderr_log()
    );
    assert!(
        allocate_answers_reaching(&full, "300", 1.0) >= 1.0,
        "the full instance sent no 300"
    );
    // Once its 200 is counted, whatever came before it at the sibling is.
    assert!(allocate_answers_reaching(&sibling, "200", 1.0) >= 1.0);
    // The 300 carried REALM and a NONCE of the shared key, which Chromium
    // took: its first Allocate at the sibling was already signed and good.
    assert_eq!(
        allocate_answers(&sibling, "401"),
        0.0,
        "the sibling challenged Chromium again"
    );
    assert_eq!(
        allocate_answers(&sibling, "438"),
        0.0,
        "the sibling refused the nonce of the 300"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn above_its_bandwidth_an_instance_sheds_new_allocations_until_the_rate_falls() {
    let sibling = TestServer::start(&fleet_auth());
    let busy = TestServer::start(&format!(
        "{}\n[alternate]\nservers = [\"{}\"]\nbytes_per_second = 2000\n",
        fleet_auth(),
        sibling.addr()
    ));
    let (user, password) = rest_credential(SECRET, "busy", unix_now() + 600);
    let (client, _socket) = turn_client(busy.addr(), &user, &password).await;
    let relay = client.allocate().await.expect("an allocation while idle");
    let peer = EchoPeer::start();
    let server = busy.addr();
    // Some 10 kB/s each way, well above 2000 B/s, until a new Allocate is
    // shed (the rate is judged over the last second of heartbeats).
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut round = 0;
    loop {
        assert_relay_round_trips(&relay, &peer, 10, &format!("load {round}")).await;
        round += 1;
        let code = allocate_code(server, &user, &password).await;
        if code == 300 {
            break;
        }
        assert_eq!(code, 200);
        assert!(
            Instant::now() < deadline,
            "not shedding after 10 s of relaying above the threshold"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Once idle, the measured rate falls below the threshold within about
    // a second, and the instance takes allocations again.
    let (user, password) = rest_credential(SECRET, "later", unix_now() + 600);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let code = allocate_code(server, &user, &password).await;
        if code == 200 {
            break;
        }
        assert_eq!(code, 300);
        assert!(
            Instant::now() < deadline,
            "still shedding 10 s after the traffic stopped"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(busy.metric_sum("turnpike_quota_refusals_total", &["limit=\"bandwidth\""]) >= 1.0);
}
