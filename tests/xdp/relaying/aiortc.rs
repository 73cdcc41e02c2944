//! A relay-only WebRTC call through the fast path: `aiortc` (Python, an
//! independent WebRTC stack, with its own TURN client, aioice) runs both
//! peers of `tests/python/aiortc_call.py` in the far namespace, each
//! allocating on the server with `iceTransportPolicy = relay`. With one
//! shard, the two allocations' channels to each other's relayed address
//! are relay ↔ relay routes: ICE, DTLS, SCTP (the data channel) and SRTP
//! (audio and video) cross the program, which re-frames each ChannelData
//! for the other client itself.

use crate::common::aiortc_call::{count, pair_ends, run_call, MIN_VIDEO_FRAMES};
use crate::common::machine;
use crate::topology::{Topology, SERVER_IP};

use super::{deleted_counts, start, Setup, Verdicts};

#[test]
fn a_relay_only_aiortc_call_is_relayed_by_the_program() {
    let topology = Topology::for_the_fast_path();
    let far = &topology.far;
    let server = start(&Setup {
        workers: 1,
        http_ip: SERVER_IP,
        ..Setup::default()
    });
    let url = format!("ws://{}/ws", server.http_addr());
    let room = format!("xdp-aiortc-{}", std::process::id());

    let _alone = machine::alone();
    let before = Verdicts::of(&server);
    let summary = run_call(far.command("python3"), &url, &room);
    let moved = Verdicts::of(&server).since(&before);
    // Both ends of every selected pair are relays of this server.
    let relay_ports = server.relay_ports();
    for side in ["a_selected_pairs", "b_selected_pairs"] {
        for addr in pair_ends(&summary, side) {
            assert!(
                addr.ip() == SERVER_IP && relay_ports.contains(&addr.port()),
                "{side}: {addr} is not a relay of the server: {summary}"
            );
        }
    }
    // A decoded frame came in one packet at least: the program sent them.
    let frames = count(&summary, "video_frames_received_by_a") + count(&summary, "audio_frames_received_by_b");
    assert!(
        moved.get("tx_relay_to_relay") >= frames,
        "the program relayed fewer packets than the {frames} frames decoded: moved {moved:?}"
    );
    // The call closed its allocations (Refresh 0): the log's counts hold
    // what the program relayed.
    for side in ["a_selected_pairs", "b_selected_pairs"] {
        let relay = pair_ends(&summary, side)[0];
        let [to_peer, _, to_client, _] = deleted_counts(&server, relay);
        assert!(
            to_peer >= MIN_VIDEO_FRAMES && to_client >= MIN_VIDEO_FRAMES,
            "{side}: the allocation of {relay} relayed {to_peer} packets to its peer and {to_client} back"
        );
    }
}
