//! What gets a route, proven by the program's own counters: a client's
//! channel to a peer (`tx_to_peer`) and the peer's datagrams back
//! (`tx_to_client`); two allocations of one shard, each with a channel to
//! the other's relayed address (`tx_relay_to_relay`, the client's
//! ChannelData re-framed straight for the other client). And what the
//! program relayed counts as relayed: in `/metrics` within about a
//! second, in the allocation's `allocation deleted` line at its end.

use std::time::Duration;

use crate::common::turn_client::{Source, TurnClient};
use crate::topology::{Topology, CLIENT};

use super::{deleted_counts, start, wait_moved, wait_relayed, wait_routes, Call, Setup, Verdicts};

#[test]
fn a_channel_is_relayed_by_the_program_both_ways_and_counted_as_relayed() {
    let topology = Topology::for_the_fast_path();
    let far = &topology.far;
    let server = start(&Setup::default());
    let mut call = Call::open(&server, far);
    // Sends 18 bytes to the peer and 24 back (`prove_fast_path`).
    call.prove_fast_path(&server);
    wait_relayed(&server, (1.0, 18.0), (1.0, 24.0));
    assert_eq!(call.client.delete_allocation(), Ok(()), "Refresh 0");
    assert_eq!(deleted_counts(&server, call.relayed), [1, 18, 1, 24]);
}

/// Two allocations of one shard (`workers = 1`), each with a channel to
/// the other's relayed address, one datagram each way: what the program
/// sent, and the counts of both `allocation deleted` lines.
fn relay_to_relay(interfaces: Option<&str>) -> (Verdicts, [[u64; 4]; 2]) {
    let topology = Topology::for_the_fast_path();
    let far = &topology.far;
    let server = start(&Setup {
        workers: 1,
        interfaces,
        ..Setup::default()
    });
    let addr = server.addr();
    let (mut a, mut b) = far.within(|| {
        (
            TurnClient::open_udp_from(CLIENT, addr),
            TurnClient::open_udp_from(CLIENT, addr),
        )
    });
    let (relay_a, relay_b) = (a.allocate_udp(), b.allocate_udp());
    let (to_b, bound) = a.channel_bind(relay_b);
    assert_eq!(bound, Ok(()), "a's ChannelBind to b's relayed address");
    let (to_a, bound) = b.channel_bind(relay_a);
    assert_eq!(bound, Ok(()), "b's ChannelBind to a's relayed address");
    if interfaces.is_some() {
        wait_routes(&server, 2.0, None);
    }

    let before = Verdicts::of(&server);
    across(&mut a, &mut b, (to_b, to_a), b"from a to b");
    across(&mut b, &mut a, (to_a, to_b), b"from b to a");
    let expected = if interfaces.is_some() {
        Verdicts::of_pairs(&[("tx_relay_to_relay", 2)])
    } else {
        Verdicts::default()
    };
    let moved = wait_moved(&server, &before, |m| m.tx_only() == expected);
    assert_eq!(a.delete_allocation(), Ok(()), "a's Refresh 0");
    assert_eq!(b.delete_allocation(), Ok(()), "b's Refresh 0");
    (
        moved,
        [deleted_counts(&server, relay_a), deleted_counts(&server, relay_b)],
    )
}

/// `payload` as ChannelData from `from` on the first of `channels`, which
/// `to` must get on the second.
fn across(from: &mut TurnClient, to: &mut TurnClient, channels: (u16, u16), payload: &[u8]) {
    from.channel_data(channels.0, payload);
    let got: Vec<_> = to
        .wait_arrivals(1, Duration::from_secs(5))
        .into_iter()
        .map(|x| (x.source, x.payload))
        .collect();
    assert_eq!(
        got,
        [(Source::Channel(channels.1), payload.to_vec())],
        "what {payload:?} came as"
    );
}

#[test]
fn relay_to_relay_on_one_shard_is_relayed_by_the_program_and_counted_as_in_user_space() {
    let (moved, on) = relay_to_relay(Some("\"tpx-s\""));
    assert_eq!(
        moved.tx_only(),
        Verdicts::of_pairs(&[("tx_relay_to_relay", 2)]),
        "moved {moved:?}"
    );
    let (_, off) = relay_to_relay(None);
    // Each allocation sent its peer one datagram of 11 bytes and got one.
    assert_eq!(off, [[1, 11, 1, 11]; 2], "user space's count");
    assert_eq!(on, off, "the fast path's count against user space's");
}
