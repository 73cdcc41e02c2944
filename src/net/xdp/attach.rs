//! `[relay] fast_path = "xdp"`: the program loaded once at start and
//! attached to each of `relay.fast_path_interfaces`, detached at exit.
//!
//! The fast path never stops the server: without the capabilities, or
//! under a seccomp filter that would kill the process at `bpf()`, it
//! does not try (`host::cannot_try`); a load that fails (no
//! `CAP_BPF` or `CAP_PERFMON`, a kernel too old, a verifier that refuses) or an interface
//! it cannot be attached to (none by that name, no `CAP_NET_ADMIN`,
//! another XDP program already there) is a `warn!` naming the interface
//! and the reason, and those datagrams take the user-space path, which
//! relays everything anyway. Each interface gets native (driver) mode if
//! its driver has it, else generic (SKB) mode, the same program run
//! later in the kernel's receive path.
//!
//! Detaching: aya attaches through a BPF link (kernel 5.9 and later; the
//! fast path needs 5.15), and a link lives as long as its file
//! descriptor. [`FastPath`]'s drop (the server's stop) detaches each
//! interface; a process that dies any other way (SIGKILL, a crash) has
//! its descriptors closed by the kernel, which detaches the program just
//! the same (`tests/xdp/attached.rs` kills a server to prove it). So a
//! restart finds the interfaces free, and there is nothing to replace.
//! An XDP program someone else attached (`ip link set dev … xdp …`, a
//! netlink attachment that does outlive its process) is not ours to
//! remove: the attach fails with `EBUSY`, the server warns and runs on.

use std::ffi::CString;
use std::sync::{Arc, Mutex};

use aya::programs::xdp::XdpLinkId;
use aya::programs::XdpMode;
use tracing::{info, warn};

use super::host::cannot_try;
use super::{RelayMaps, RelayProgram, XdpError};

/// Routes per map: room for [`ROUTES_PER_ALLOCATION`] channels of every
/// allocation `limits.max_allocations` allows, within these bounds. The
/// route maps are not preallocated; the counters take 2 × routes × 16
/// bytes per CPU (2 MiB a CPU at the most). A route beyond them stays in
/// user space.
const MIN_ROUTES: u32 = 1024;
const MAX_ROUTES: u32 = 65_536;
/// A WebRTC allocation binds a channel to each peer candidate it uses:
/// one or two in the steady state.
const ROUTES_PER_ALLOCATION: u32 = 4;

/// Routes per map for `max_allocations` allocations.
pub fn routes_for(max_allocations: usize) -> u32 {
    let wanted = u32::try_from(max_allocations)
        .unwrap_or(u32::MAX)
        .saturating_mul(ROUTES_PER_ALLOCATION);
    wanted.clamp(MIN_ROUTES, MAX_ROUTES)
}

/// An interface the program is attached to, and in which mode.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attachment {
    pub interface: String,
    /// `"native"` or `"generic"` (the metric's label values).
    pub mode: &'static str,
}

/// The loaded program and where it is attached; dropping it detaches.
pub struct FastPath {
    program: RelayProgram,
    /// Shared by every shard's core (see `routes`).
    maps: Arc<Mutex<RelayMaps>>,
    links: Vec<(Attachment, XdpLinkId)>,
}

impl FastPath {
    /// Loads the program, with room for `routes` routes per map, and
    /// attaches it to every interface it can;
    /// `None`, after a warning, if it cannot be loaded or attached
    /// anywhere.
    pub fn start(interfaces: &[String], routes: u32) -> Option<FastPath> {
        if let Some(why) = cannot_try() {
            warn!("fast path off: {why}; relaying in user space");
            return None;
        }
        let (program, mut maps) = match RelayProgram::load(routes) {
            Ok(loaded) => loaded,
            Err(e) => {
                warn!(
                    reason = %reason(&e),
                    "fast path off: cannot load the XDP program (it needs CAP_BPF, CAP_PERFMON and kernel 5.15 or later); relaying in user space"
                );
                return None;
            }
        };
        let (ttl, hop_limit) = host_defaults(interfaces);
        if let Err(e) = maps.configure(ttl, hop_limit) {
            warn!(reason = %reason(&e), "fast path off: cannot configure the XDP program; relaying in user space");
            return None;
        }
        let mut fast_path = FastPath {
            program,
            maps: Arc::new(Mutex::new(maps)),
            links: Vec::new(),
        };
        for interface in interfaces {
            match fast_path.attach(interface) {
                Ok((link, mode)) => {
                    info!(interface, mode, "fast path: XDP program attached");
                    let attachment = Attachment {
                        interface: interface.clone(),
                        mode,
                    };
                    fast_path.links.push((attachment, link));
                }
                Err(reason) => warn!(
                    interface,
                    %reason,
                    "fast path: cannot attach the XDP program; datagrams on this interface take the user-space path"
                ),
            }
        }
        (!fast_path.links.is_empty()).then_some(fast_path)
    }

    /// Native mode, else generic; the reasons of both failures otherwise.
    fn attach(&mut self, interface: &str) -> Result<(XdpLinkId, &'static str), String> {
        let ifindex = ifindex(interface).ok_or_else(|| "no interface by that name".to_owned())?;
        let native = match self.program.attach(ifindex, XdpMode::Driver) {
            Ok(link) => return Ok((link, "native")),
            Err(e) => reason(&e),
        };
        match self.program.attach(ifindex, XdpMode::Skb) {
            Ok(link) => Ok((link, "generic")),
            Err(e) => Err(format!("native mode: {native}; generic mode: {}", reason(&e))),
        }
    }

    /// Where the program is attached.
    pub fn attachments(&self) -> Vec<Attachment> {
        self.links.iter().map(|(a, _)| a.clone()).collect()
    }

    /// The maps, for the shards' cores to install routes in.
    pub fn maps(&self) -> Arc<Mutex<RelayMaps>> {
        self.maps.clone()
    }
}

/// The TTL and hop limit the host's sockets give what they send (RFC 8656
/// §14's alternate behaviour, as user space relays): the IPv4 default and
/// the smallest IPv6 hop limit of the interfaces. Where `/proc/sys` cannot
/// be read (systemd's `ProcSubset=pid` hides it), Linux's defaults, 64.
fn host_defaults(interfaces: &[String]) -> (u8, u8) {
    let read = |path: &str| -> Option<u8> { std::fs::read_to_string(path).ok()?.trim().parse().ok() };
    let ttl = read("/proc/sys/net/ipv4/ip_default_ttl");
    let hop_limit = interfaces
        .iter()
        .filter_map(|i| read(&format!("/proc/sys/net/ipv6/conf/{i}/hop_limit")))
        .min();
    if ttl.is_none() || hop_limit.is_none() {
        info!("fast path: cannot read the host's TTL or hop limit under /proc/sys; using Linux's default, 64");
    }
    (ttl.unwrap_or(64), hop_limit.unwrap_or(64))
}

impl Drop for FastPath {
    fn drop(&mut self) {
        for (attachment, link) in self.links.drain(..) {
            let interface = &attachment.interface;
            match self.program.detach(link) {
                Ok(()) => info!(interface, "fast path: XDP program detached"),
                // Dropping the program below closes the link's descriptor
                // anyway, which detaches it.
                Err(e) => warn!(interface, reason = %reason(&e), "fast path: detaching the XDP program"),
            }
        }
    }
}

/// The interface's index in this network namespace, if it exists.
pub fn ifindex(interface: &str) -> Option<u32> {
    let name = CString::new(interface).ok()?;
    // SAFETY: `name` is a NUL-terminated string that outlives the call.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    (index != 0).then_some(index)
}

/// `e` with the chain of errors under it (aya's say "`bpf_link_create`
/// failed" and keep the errno beneath); of a verifier's log, which runs
/// to hundreds of lines, only its verdict (the line before its
/// statistics).
pub(super) fn reason(e: &XdpError) -> String {
    let inner: Option<&(dyn std::error::Error + 'static)> = match e {
        XdpError::Load(e) => Some(e.as_ref()),
        XdpError::Program(e) => Some(e.as_ref()),
        _ => None,
    };
    let mut text = e.to_string();
    let mut source = inner.and_then(|e| e.source());
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    match text.split_once("Verifier output:") {
        Some((head, log)) => {
            let lines: Vec<&str> = log.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
            let end = lines
                .iter()
                .position(|l| l.starts_with("verification time"))
                .unwrap_or(lines.len());
            let verdict = end.checked_sub(1).and_then(|i| lines.get(i)).unwrap_or(&"");
            format!("{head}verifier: {verdict}")
        }
        None => text,
    }
}
