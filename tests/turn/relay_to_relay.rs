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
//! * `/metrics` counts the payloads relayed in-process and no drops.

#![allow(clippy::disallowed_methods)] // waits use the real clock

use std::net::SocketAddr;
use std::time::Duration;

use crate::common::{ServerSetup, Source, TestServer, Transport, TurnClient as Client, LONG_TERM_USER_TOML};

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
