//! STUN and TURN over UDP, TCP and TLS against the real binary: allocations,
//! relaying (UDP, RFC 6062 TCP, relay to relay), IPv6, the peer filter, the
//! shards, credentials (RFC 8489 password algorithms and USERHASH among them),
//! RFC 5780 NAT behaviour discovery through real NATs.

#[path = "../common/mod.rs"]
mod common;

mod ipv6;
mod nat_discovery;
mod password_algorithms;
mod peer_addresses;
mod relay_to_relay;
mod secret_algorithms;
mod stream_shards;
mod tcp;
mod tcp_relay;
mod tls;
mod udp;
