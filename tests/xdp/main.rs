//! The XDP fast path (issue 21). Its kernel program in isolation: the
//! committed object rebuilt byte for byte from its source, and the
//! program run by the kernel with `BPF_PROG_TEST_RUN` on synthetic
//! Ethernet frames, every path and family, the rewritten frames read back
//! with an independent parser (the `etherparse` crate, and the checksums
//! summed again here from RFC 1071).
//!
//! And attached by a running server (`attached`: `[relay] fast_path =
//! "xdp"` on one end of a veth pair, the client and the peer in a
//! namespace on the other, `topology`), and relaying there for real
//! (`relaying`): coturn's uclient, an aiortc call, every way a route
//! ends, the peer filter, IPv6, each against the program's counters and
//! the same run with the fast path off.
//!
//! Every other test runs in a network namespace of its own thread (a veth
//! pair with documentation addresses, routes and permanent neighbours, so the
//! program's FIB lookups resolve), loads its own copy of the program, and
//! attaches it nowhere: `BPF_PROG_TEST_RUN` returns the verdict and the
//! frame and sends nothing. Needs root (CI runs as root), `ip`,
//! `clang-14`, `ethtool`, coturn's tools and aiortc (`scripts/test.sh`
//! installs them).

#[path = "../common/mod.rs"]
mod common;

mod attached;
mod fixture;
mod forward;
mod frames;
mod limits;
mod object;
mod pass;
mod relaying;
mod topology;
