//! The XDP fast path (issue 21): steady-state UDP relaying inside the
//! kernel's driver, with user space the authority behind it. See
//! `docs/xdp.md` for the design.
//!
//! * `relay.bpf.c` (with `relay.h`, the map layouts, and `bpf_abi.h`,
//!   the kernel ABI it uses): the program, in C, compiled by `build.sh`
//!   with a pinned clang into `relay.bpf.o`, which is committed and
//!   embedded (`tests/xdp/object.rs` rebuilds it and fails on any byte
//!   that differs);
//! * `program`: loading it with aya (maps created, verifier passed,
//!   nothing attached) and running it once with `BPF_PROG_TEST_RUN`;
//! * `maps`: installing and removing routes, their counters, the
//!   program's configuration and verdict counters; `layout`: the maps'
//!   keys and values, as `relay.h` lays them out;
//! * `routes`: the core's routes (`proto::server::FastRoute`) written
//!   to the maps by each shard, with addresses as on the wire;
//! * `attach`: `[relay] fast_path = "xdp"`: the program attached to the
//!   configured interfaces at start (native, else generic, else a warning
//!   and user space) and detached at exit; `host`: what `check-config`
//!   says about this host's ability to run it.
//!
//! Invariants the program keeps (tested in `tests/xdp/`): it never drops
//! (everything it does not forward is `XDP_PASS`, untouched); it forwards
//! a datagram only on a route user space installed, before the route's
//! expiry; what it sends has the headers user space's sockets would
//! give it (TTL and hop limit the host's default, RFC 8656 §14's
//! alternate behavior) and correct IP and UDP checksums; it sends only
//! back out of the device the frame came in on, to the next hop the
//! kernel's FIB names.

mod attach;
mod host;
mod layout;
mod maps;
mod program;
mod routes;

pub use attach::{routes_for, Attachment, FastPath};
pub use host::host_warnings;

pub use maps::{ChannelRoute, Counts, Outgoing, PeerRoute, RelayMaps, Verdict, VERDICTS};
pub use program::{RelayProgram, TestRunResult, XdpAction, OBJECT};
pub use routes::XdpRoutes;

/// Why the fast path could not be loaded or a route installed.
#[derive(Debug, thiserror::Error)]
pub enum XdpError {
    #[error("cannot load the XDP object: {0}")]
    Load(Box<aya::EbpfError>),
    #[error("the XDP program: {0}")]
    Program(Box<aya::programs::ProgramError>),
    #[error("an XDP map: {0}")]
    Map(#[from] aya::maps::MapError),
    #[error("the XDP object has no `{0}`")]
    Missing(&'static str),
    #[error("cannot count the CPUs: {0}")]
    Cpus(std::io::Error),
    #[error("per-CPU values: {0}")]
    Io(std::io::Error),
    #[error("{0} routes per map is not a size the fast path can have")]
    TooManyRoutes(u32),
    #[error("a frame of {0} bytes is too long for a test run")]
    FrameTooLong(usize),
    #[error("channel number {0:#06x} is outside 0x4000-0x7FFF")]
    BadChannel(u16),
    #[error("a route's addresses must all be IPv4 or all IPv6 (the fast path does not translate)")]
    MixedFamilies,
    #[error("a peer's datagrams can only go to a client")]
    PeerToPeer,
    #[error("every route slot is taken")]
    Full,
    #[error("no such route is installed")]
    NotInstalled,
}
