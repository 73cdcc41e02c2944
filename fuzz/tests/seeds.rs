//! The seeds run through every target's function without libFuzzer, the
//! session seeds reach the states they are meant to, and a short
//! deterministic mutation run finds no false alarm in the harness.

use turnpike::proto::stun::method;
use turnpike_fuzz::program::{self, Attrs, Program};
use turnpike_fuzz::server::{flag, Harness};
use turnpike_fuzz::session;
use turnpike_fuzz::{channel, filter, fleet, message, nat, proxy, redis_push, signal};

#[test]
fn every_seed_passes_its_target() {
    for s in program::stun_seeds() {
        message::fuzz_parse(&s);
    }
    for s in program::channel_data_seeds() {
        channel::fuzz_parse(&s);
    }
    for s in program::server_seeds() {
        Harness::run(&s);
    }
    for s in program::peer_filter_seeds() {
        filter::fuzz_check(&s);
    }
    for s in program::cidr_seeds() {
        filter::fuzz_cidr(&s);
    }
    for s in signal::seeds() {
        signal::fuzz_parse(&s);
    }
    for s in fleet::seeds() {
        fleet::fuzz_parse(&s);
    }
    for s in session::seeds() {
        session::fuzz_program(&s);
    }
    for s in proxy::seeds() {
        proxy::fuzz_parse(&s);
    }
    for s in redis_push::seeds() {
        redis_push::fuzz_read(&s);
    }
    for s in nat::seeds() {
        nat::fuzz_binding(&s);
    }
}

#[test]
fn proxy_header_seeds_reach_every_kind_of_answer() {
    use turnpike::proto::proxy_header::{parse, Parse};
    let outcomes: Vec<Parse> = proxy::seeds().iter().map(|s| parse(s)).collect();
    let parsed_with_addresses = outcomes
        .iter()
        .filter(|o| matches!(o, Parse::Parsed(h) if h.addresses.is_some()))
        .count();
    assert_eq!(parsed_with_addresses, 5, "{outcomes:?}");
    assert!(outcomes
        .iter()
        .any(|o| matches!(o, Parse::Parsed(h) if h.addresses.is_none())));
    assert!(outcomes.iter().any(|o| matches!(o, Parse::Invalid(_))));
}

#[test]
fn stun_seeds_parse() {
    for s in program::stun_seeds() {
        turnpike::proto::stun::Message::parse(&s).unwrap();
    }
}

#[test]
fn signed_session_relays_both_ways_and_refresh_zero_deletes_it() {
    let h = Harness::run_program(&program::server_seeds()[1]);
    assert_eq!(h.relays().len(), 1);
    assert_eq!(h.server.allocation_count(), 0);
    let s = &h.stats;
    assert_eq!((s.allocated, s.permitted, s.bound, s.refreshed), (1, 1, 1, 2), "{s:?}");
    assert_eq!(s.to_peer, 2, "Send indication and ChannelData: {s:?}");
    assert_eq!((s.indications_to_client, s.channel_data_to_client), (1, 1), "{s:?}");
}

#[test]
fn relay_to_relay_traffic_flows_between_two_allocations() {
    let h = Harness::run_program(&program::server_seeds()[2]);
    let s = &h.stats;
    assert_eq!((s.allocated, s.permitted, s.bound), (2, 1, 1), "{s:?}");
    assert_eq!(s.indications_to_client + s.channel_data_to_client, 2, "{s:?}");
    assert_eq!(h.server.allocation_count(), 0, "expired after the jump");
}

#[test]
fn a_stale_nonce_is_replaced_and_the_request_resigned() {
    let h = Harness::run_program(&program::server_seeds()[4]);
    assert_eq!(h.stats.permitted, 1, "{:?}", h.stats);
}

#[test]
fn two_clients_allocate_and_even_port_hands_out_a_token_that_is_claimed() {
    let h = Harness::run_program(&program::server_seeds()[2]);
    assert_eq!(h.relays().len(), 2);
    let h = Harness::run_program(&program::server_seeds()[3]);
    assert_eq!(h.tokens().len(), 1);
    assert_eq!(h.relays().len(), 3, "{:?}", h.relays());
    assert!(h.relays().iter().any(|r| r.is_ipv6()));
}

#[test]
fn the_quota_is_reached_by_a_third_client() {
    let p = Program::new()
        .signed(0, method::ALLOCATE, 0, Attrs::new().udp())
        .signed(1, method::ALLOCATE, 0, Attrs::new().udp())
        .signed(2, method::ALLOCATE, 0, Attrs::new().udp())
        .signed(2, method::ALLOCATE, flag::EPHEMERAL, Attrs::new().udp());
    let h = Harness::run_program(&p.into_bytes());
    assert_eq!(h.server.allocation_count(), 2);
}

fn xorshift(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

/// One of `seeds` with up to `max_edits - 1` random edits (bit flips,
/// overwrites, insertions and, with `remove`, deletions).
fn mutated(seeds: &[Vec<u8>], rng: &mut u64, max_edits: u64, remove: bool) -> Vec<u8> {
    let mut p = seeds[(xorshift(rng) % seeds.len() as u64) as usize].clone();
    let kinds = if remove { 4 } else { 3 };
    for _ in 0..(xorshift(rng) % max_edits) {
        let r = xorshift(rng);
        if p.is_empty() {
            break;
        }
        let at = (r >> 8) as usize % p.len();
        match r % kinds {
            0 => p[at] ^= 1 << ((r >> 40) % 8),
            1 => p[at] = (r >> 32) as u8,
            2 => p.insert(at, (r >> 24) as u8),
            _ => {
                p.remove(at);
            }
        }
    }
    p
}

#[test]
fn mutated_programs_raise_no_false_alarm() {
    let seeds = program::server_seeds();
    let mut rng = 0x9E37_79B9_7F4A_7C15u64;
    for _ in 0..3000 {
        Harness::run(&mutated(&seeds, &mut rng, 4, false));
    }
}

#[test]
fn allocate_retransmitted_by_another_user_is_refused_with_441() {
    let reproducer = turnpike::proto::testkit::rfc5769::unhex(
        "08000300047008000b00007040000304 00000000080003000070080003001170
         e800320000000000000002000000ffff ffffffff00f08003",
    );
    let h = Harness::run_program(&reproducer);
    assert_eq!(h.stats.allocated, 1, "{:?}", h.stats);
    assert_eq!(h.stats.errors.get(&441), Some(&1), "{:?}", h.stats);
}

#[test]
fn session_seeds_reach_a_call_an_eviction_a_grant_and_the_room_limits() {
    let seeds = session::seeds();
    let call = session::Harness::run(&seeds[0]);
    assert_eq!(call.read.get("signal"), Some(&2), "{:?}", call.read);
    assert!(call.read.get("peer-left").is_some_and(|&n| n >= 1), "{:?}", call.read);
    let mute = session::Harness::run(&seeds[1]);
    assert_eq!(mute.evictions, 1, "the receiver that never reads is evicted");
    // Both others hear it, and at the end the last one hears the first go.
    assert_eq!(mute.read.get("peer-left"), Some(&3), "{:?}", mute.read);
    assert!(mute.board.counters().evictions == 1);
    let granted = session::Harness::run(&seeds[2]);
    assert_eq!(
        granted.board.counters().errors[6],
        2,
        "two joins outside the grant are unauthorized"
    );
    let limits = session::Harness::run(&seeds[3]);
    assert!(
        limits.board.counters().errors[1] >= 2,
        "room-full for the source share and the room size"
    );
    let junk = session::Harness::run(&seeds[4]);
    let c = junk.board.counters();
    assert!(
        c.errors[0] >= 3 && c.errors[5] >= 1,
        "bad-message and rate-limited: {c:?}"
    );
    assert_eq!(junk.evictions, 0);
}

#[test]
fn a_session_that_reads_nothing_is_evicted_and_others_are_not() {
    let mut p = session::Program::new()
        .connect(0, None)
        .connect(1, None)
        .connect(3, None)
        .join(0, 0)
        .join(1, 0)
        .join(3, 0);
    for _ in 0..20 {
        p = p.signal(0, 1, 2).signal(0, 3, 2).read(0).read(3).second();
    }
    let h = session::Harness::run(&p.0);
    assert_eq!(h.evictions, 1);
    // 0 and 3 hear that 1 is gone, then at the end 3 hears 0 go.
    assert_eq!(h.read.get("peer-left"), Some(&3), "{:?}", h.read);
    assert!(
        h.read.get("error").is_some_and(|&n| n > 0),
        "signals to the evicted peer: {:?}",
        h.read
    );
}

#[test]
fn mutated_session_programs_raise_no_false_alarm() {
    let seeds = session::seeds();
    let mut rng = 0x2545_F491_4F6C_DD1Du64;
    for _ in 0..3000 {
        session::Harness::run(&mutated(&seeds, &mut rng, 6, true));
    }
}

#[test]
fn mutated_redis_streams_raise_no_false_alarm() {
    let seeds = redis_push::seeds();
    let mut rng = 0x3C6E_F372_FE94_F82Bu64;
    for _ in 0..20_000 {
        redis_push::fuzz_read(&mutated(&seeds, &mut rng, 8, true));
    }
}

#[test]
fn mutated_binding_requests_raise_no_false_alarm() {
    let seeds = nat::seeds();
    let mut rng = 0x5851_F42D_4C95_7F2Du64;
    for _ in 0..5000 {
        nat::fuzz_binding(&mutated(&seeds, &mut rng, 6, true));
    }
}

#[test]
fn binding_seeds_reach_every_address_and_both_kinds_of_answer() {
    use turnpike::proto::addr::Transport;
    let seeds = nat::seeds();
    let arrivals: std::collections::HashSet<_> = seeds.iter().map(|s| nat::arrival(s[0])).collect();
    assert!(arrivals.len() >= 8, "{arrivals:?}");
    assert!(arrivals.iter().any(|a| a.transport == Transport::Tcp));
    // Every seed but the raw one builds a request that parses.
    let built: Vec<Vec<u8>> = seeds.iter().map(|s| nat::request(s[0], &s[1..])).collect();
    let parsed = built
        .iter()
        .filter(|b| turnpike::proto::stun::Message::parse(b).is_ok())
        .count();
    assert_eq!(parsed, seeds.len() - 1);
}
