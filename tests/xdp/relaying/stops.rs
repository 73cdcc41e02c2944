//! Every way a route ends stops the fast path at the very next datagram:
//! a call is proven on the fast path (one datagram each way, each a tx
//! verdict), then ended by Refresh 0, an operator's end through the admin
//! API (`turnpike admin end`), the revocation of its username (`turnpike
//! admin revoke`) or its lifetime running out; the next datagram each way
//! is passed by the program (a route gone or expired) and user space,
//! which holds no allocation for it any more, delivers neither. The
//! routes are gone from `/metrics` too.
//!
//! Permission (300 s) and channel (600 s) lifetimes are fixed by RFC 8656
//! and have no shorter setting; an allocation's is capped by
//! `limits.max_allocation_lifetime`, which goes down to 60 s, so the
//! expiry case waits for that.

use std::time::Duration;

use serde_json::Value;

use crate::common::{samples_sum, TestServer, USER};
use crate::topology::Topology;

use super::{admin, start, Call, Setup};

/// A server and a call on it proven on the fast path.
fn proven_call(extra_toml: &str) -> (Topology, TestServer, Call) {
    let topology = Topology::for_the_fast_path();
    let server = start(&Setup {
        extra_toml,
        ..Setup::default()
    });
    let mut call = Call::open(&server, &topology.far);
    call.prove_fast_path(&server);
    (topology, server, call)
}

#[test]
fn refresh_0_stops_the_fast_path_at_the_next_datagram() {
    let (_topology, server, mut call) = proven_call("");
    assert_eq!(call.client.delete_allocation(), Ok(()), "Refresh 0");
    call.assert_next_datagrams_stay_off_the_fast_path(&server);
}

#[test]
fn an_admin_end_stops_the_fast_path_at_the_next_datagram() {
    let (_topology, server, mut call) = proven_call("");
    let listed: Value = serde_json::from_str(&admin(&server, &["--json", "list"]).stdout).expect("JSON");
    let relayed = call.relayed.to_string();
    let id = listed["allocations"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|a| {
            a["relays"]
                .as_array()
                .is_some_and(|r| r.iter().any(|r| r == relayed.as_str()))
        })
        .and_then(|a| a["id"].as_str())
        .unwrap_or_else(|| panic!("no allocation with relay {relayed} in {listed}"))
        .to_owned();
    let out = admin(&server, &["end", &id]);
    assert!(out.stdout.contains("1 allocation(s) ended"), "{out:?}");
    call.assert_next_datagrams_stay_off_the_fast_path(&server);
}

#[test]
fn revoking_the_username_stops_the_fast_path_at_the_next_datagram() {
    let (_topology, server, mut call) = proven_call("");
    let out = admin(&server, &["revoke", USER]);
    assert!(out.stdout.contains("revoked"), "{out:?}");
    call.assert_next_datagrams_stay_off_the_fast_path(&server);
}

#[test]
fn allocation_expiry_stops_the_fast_path_at_the_next_datagram() {
    let (_topology, server, mut call) = proven_call("[limits]\nmax_allocation_lifetime = \"60s\"\n");
    // The lifetime granted is 60 s; its end is seen within a few more.
    let deadline = std::time::Instant::now() + Duration::from_secs(75);
    let expired = r#"reason="expired""#;
    while samples_sum(&server.metrics(), "turnpike_allocations_ended_total", &[expired]) < 1.0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the allocation has not expired after 75 s:\n{}",
            server.metrics()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    call.assert_next_datagrams_stay_off_the_fast_path(&server);
}
