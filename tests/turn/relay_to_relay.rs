//! Relay ↔ relay inside the process (issue 11): when both sides of a call
//! are relayed by this server, a client's payload for the other's relayed
//! address is handed to that allocation directly, on whichever shard holds
//! it, as if its relay socket had received it from the sender's relayed
//! address. Black-box over UDP against the real binary with the built-in
//! peer policy (loopback refused, own live relays allowed) and two shards,
//! so that some pairs meet across shards:
//! * ChannelData both ways between 16 pairs arrives intact, as ChannelData
//!   on the receiver's channel;
//! * a Send indication arrives at a client without a channel as a Data
//!   indication whose XOR-PEER-ADDRESS is the sender's relayed address;
//! * the receiver's permissions still apply: one without a permission for
//!   the sender gets nothing;
//! * `/metrics` counts the payloads relayed in-process and no drops;
//! * one pair's burst across shards, larger than the receiving shard's
//!   inbox (1024), costs another pair crossing to the same shard nothing:
//!   what finds the inbox full goes through the kernel, to the receiving
//!   relay's own socket, instead of being dropped.

#![allow(clippy::disallowed_methods)] // waits use the real clock

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::common::{
    free_tcp_port, http_exchange, ServerSetup, Source, TestServer, Transport, TurnClient as Client, LONG_TERM_USER_TOML,
};

const PAIRS: usize = 16;
const PACKETS: usize = 5;
const WAIT: Duration = Duration::from_secs(5);
const QUIET: Duration = Duration::from_millis(300);
const CHANNEL: u16 = 0x4000;

/// The ChannelData payloads `client` receives within `limit` (other
/// arrivals are ignored), until `want` have come.
fn channel_payloads(client: &mut Client, want: usize, limit: Duration) -> Vec<Vec<u8>> {
    let arrivals = client.wait_arrivals(want, limit);
    arrivals
        .into_iter()
        .filter(|arrival| arrival.source == Source::Channel(CHANNEL))
        .map(|arrival| arrival.payload)
        .collect()
}

#[test]
fn payloads_between_relays_of_this_server_are_delivered_inside_the_process() {
    let server = TestServer::start_setup(&ServerSetup {
        peers_toml: "",
        extra_toml: &format!("{LONG_TERM_USER_TOML}\n[limits]\nmax_allocations_per_user = 100\n"),
        ..ServerSetup::default()
    });
    let mut pairs: Vec<(Client, SocketAddr, Client, SocketAddr)> = (0..PAIRS)
        .map(|_| {
            let (mut a, mut b) = (
                Client::open(&server, Transport::Udp),
                Client::open(&server, Transport::Udp),
            );
            let (ra, rb) = (a.allocate_udp(), b.allocate_udp());
            (a, ra, b, rb)
        })
        .collect();
    for (a, ra, b, rb) in &mut pairs {
        assert_eq!(a.channel_bind(*rb), (CHANNEL, Ok(())));
        assert_eq!(b.channel_bind(*ra), (CHANNEL, Ok(())));
    }
    for (i, (a, _, b, _)) in pairs.iter_mut().enumerate() {
        for k in 0..PACKETS {
            a.channel_data(CHANNEL, format!("a{i}-{k}").as_bytes());
            b.channel_data(CHANNEL, format!("b{i}-{k}").as_bytes());
        }
    }
    for (i, (a, _, b, _)) in pairs.iter_mut().enumerate() {
        let at_b = channel_payloads(b, PACKETS, WAIT);
        let at_a = channel_payloads(a, PACKETS, WAIT);
        let want = |side: &str| {
            (0..PACKETS)
                .map(|k| format!("{side}{i}-{k}").into_bytes())
                .collect::<Vec<_>>()
        };
        assert_eq!(at_b, want("a"), "pair {i}: A to B");
        assert_eq!(at_a, want("b"), "pair {i}: B to A");
    }

    // Without a channel: a Data indication naming the sender's relay.
    let (a, ra, _, _) = &mut pairs[0];
    let mut c = Client::open(&server, Transport::Udp);
    let rc = c.allocate_udp();
    assert_eq!(c.create_permission(*ra), Ok(()));
    a.send_indication(rc, b"indicated");
    let data = c.wait_arrivals(1, WAIT);
    let data = data.first().expect("a Data indication");
    // A Data indication (not ChannelData) whose XOR-PEER-ADDRESS is A's relay.
    assert_eq!(data.source, Source::Peer(*ra));
    assert_eq!(data.payload, b"indicated");

    // A receiver without a permission for the sender gets nothing.
    let mut d = Client::open(&server, Transport::Udp);
    let rd = d.allocate_udp();
    a.send_indication(rd, b"not permitted");
    assert_eq!(d.take_arrivals(QUIET), [], "relayed without a permission");

    let relayed = (2 * PAIRS * PACKETS + 1) as f64;
    let in_process = server.wait_metric("turnpike_relayed_in_process_packets_total", WAIT, |n| n >= relayed);
    // The unpermitted one was handed over too, then dropped by D's core.
    assert_eq!(in_process, Some(relayed + 1.0), "payloads relayed in-process");
    assert_eq!(server.metric("turnpike_relay_handoff_drops_total"), Some(0.0));
}

const ADMIN_KEY: &str = "an-admin-key-for-relay-tests-0123456789";
/// Clients allocated while looking for two on each of the two shards.
const MAX_CLIENTS: usize = 40;
/// The burst of the flooding pair: above the receiving shard's inbox (1024
/// payloads), and small enough datagrams that the sending shard's listener
/// socket (4 MiB asked) holds all of it while the server is stopped.
const FLOOD: usize = 4000;
/// The quiet pair's payloads, sent among the second half of the burst.
const QUIET_PACKETS: usize = 50;

/// The shard of each allocation's relay, from the admin API's ids
/// (`<shard>-<serial>`).
fn relay_shards(admin: SocketAddr) -> BTreeMap<SocketAddr, u32> {
    let request = format!(
        "GET /v1/allocations HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {ADMIN_KEY}\r\nConnection: close\r\n\r\n"
    );
    let (status, body) = http_exchange(admin, &request);
    assert_eq!(status, 200, "GET /v1/allocations: {body}");
    let list: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    let mut shards = BTreeMap::new();
    for allocation in list["allocations"].as_array().expect("an allocations list") {
        let id = allocation["id"].as_str().expect("an id");
        let shard = id
            .split('-')
            .next()
            .and_then(|s| s.parse().ok())
            .expect("<shard>-<serial>");
        for relay in allocation["relays"].as_array().expect("relays") {
            shards.insert(relay.as_str().expect("a relay").parse().expect("an address"), shard);
        }
    }
    shards
}

/// Waits until every thread of process `pid` is stopped (state `T`).
fn wait_stopped(pid: u32) {
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read /proc/<pid>/stat");
        // The state follows the command name in parentheses.
        if stat.rsplit_once(") ").is_some_and(|(_, rest)| rest.starts_with('T')) {
            return;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    panic!("the server did not stop");
}

#[test]
fn a_burst_beyond_a_shards_inbox_costs_another_pair_to_that_shard_nothing() {
    let admin = SocketAddr::from(([127, 0, 0, 1], free_tcp_port()));
    let server = TestServer::start_setup(&ServerSetup {
        server_keys: "workers = 2\n",
        peers_toml: "",
        extra_toml: &format!(
            "{LONG_TERM_USER_TOML}\n[limits]\nmax_allocations_per_user = 100\n\n\
             [admin]\nlisten = \"{admin}\"\nkey = \"{ADMIN_KEY}\"\n"
        ),
        // Not a line per packet.
        log_filter: "turnpike=debug",
        ..ServerSetup::default()
    });

    // Two clients whose relays are on one shard (the senders) and two on
    // the other (the receivers): the kernel spreads clients over the
    // shards by their 5-tuple, so allocate until both have two.
    let mut by_shard: BTreeMap<u32, Vec<(Client, SocketAddr)>> = BTreeMap::new();
    for _ in 0..MAX_CLIENTS {
        let mut client = Client::open(&server, Transport::Udp);
        let relay = client.allocate_udp();
        let shard = relay_shards(admin)[&relay];
        by_shard.entry(shard).or_default().push((client, relay));
        if by_shard.len() == 2 && by_shard.values().all(|c| c.len() >= 2) {
            break;
        }
    }
    assert!(
        by_shard.len() == 2 && by_shard.values().all(|c| c.len() >= 2),
        "{MAX_CLIENTS} clients did not give two relays on each of two shards"
    );
    let mut shards = by_shard.into_values();
    let mut senders = shards.next().unwrap().into_iter();
    let mut receivers = shards.next().unwrap().into_iter();
    let ((mut flooder, flooder_relay), (mut quiet, quiet_relay)) = (senders.next().unwrap(), senders.next().unwrap());
    let ((mut flooded, flooded_relay), (mut listener, listener_relay)) =
        (receivers.next().unwrap(), receivers.next().unwrap());
    assert_eq!(flooder.channel_bind(flooded_relay), (CHANNEL, Ok(())));
    assert_eq!(flooded.channel_bind(flooder_relay), (CHANNEL, Ok(())));
    assert_eq!(quiet.channel_bind(listener_relay), (CHANNEL, Ok(())));
    assert_eq!(listener.channel_bind(quiet_relay), (CHANNEL, Ok(())));

    // Whether the receiving shard's inbox fills depends on how the two
    // shards are scheduled once the server resumes: on a loaded machine
    // the receiver may keep up. Up to three bursts, until one overflows;
    // every one of them must cost the quiet pair nothing.
    let mut fallbacks = Some(0.0);
    for _burst in 0..3 {
        burst_beside_a_quiet_pair(&server, (&mut flooder, &mut quiet), &mut listener);
        // Nothing was dropped at the hand-over; what the flooded client
        // lost, if anything, was lost at its own sockets.
        assert_eq!(server.metric("turnpike_relay_handoff_drops_total"), Some(0.0));
        fallbacks = server.wait_metric("turnpike_relay_handoff_fallbacks_total", Duration::from_secs(1), |n| {
            n > 0.0
        });
        if fallbacks > Some(0.0) {
            break;
        }
    }
    // The burst did go beyond the inbox: some of it took the kernel path.
    assert!(fallbacks > Some(0.0), "the burst never found the inbox full");
}

/// One burst of [`FLOOD`] payloads from `flooder`, with the quiet pair's
/// [`QUIET_PACKETS`] among its second half, queued while the server is
/// stopped; checks that `listener` gets every quiet payload.
fn burst_beside_a_quiet_pair(server: &TestServer, (flooder, quiet): (&mut Client, &mut Client), listener: &mut Client) {
    // The burst waits in the senders' listener socket while the server is
    // stopped, the quiet pair's payloads among its second half, so the
    // sending shard hands them over right after more than the receiving
    // shard's inbox holds.
    server.signal(libc::SIGSTOP);
    wait_stopped(server.pid());
    let stride = FLOOD / 2 / QUIET_PACKETS;
    let mut quiet_sent = Vec::new();
    for i in 0..FLOOD {
        // Two sizes, so that the receiving shard's sends to the flooded
        // client are not one GSO train.
        flooder.channel_data(CHANNEL, &[0xf1; 16][..12 + 4 * (i % 2)]);
        if i >= FLOOD / 2 && (i - FLOOD / 2).is_multiple_of(stride) && quiet_sent.len() < QUIET_PACKETS {
            let payload = format!("quiet-{}", quiet_sent.len()).into_bytes();
            quiet.channel_data(CHANNEL, &payload);
            quiet_sent.push(payload);
        }
    }
    server.signal(libc::SIGCONT);
    assert_eq!(quiet_sent.len(), QUIET_PACKETS);

    let mut got = channel_payloads(listener, QUIET_PACKETS, WAIT);
    got.sort();
    quiet_sent.sort();
    assert_eq!(
        got.len(),
        QUIET_PACKETS,
        "the quiet pair lost {} of {QUIET_PACKETS} payloads to the other pair's burst",
        QUIET_PACKETS - got.len().min(QUIET_PACKETS)
    );
    assert_eq!(got, quiet_sent, "the quiet pair's payloads");
}
