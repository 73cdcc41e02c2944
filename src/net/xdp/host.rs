//! Can this host run the fast path? What `turnpike check-config` asks
//! with `fast_path = "xdp"`, as warnings: the server starts whatever the
//! answer (it falls back to user space), so none of it is an error.
//!
//! * the capabilities: `CAP_BPF` and `CAP_PERFMON` to load (or
//!   `CAP_SYS_ADMIN`, which holds both), `CAP_NET_ADMIN` to attach.
//!   Without `CAP_PERFMON` the verifier refuses the program ("partial
//!   copy of pointer": it forbids pointer arithmetic that could leak
//!   kernel addresses to a loader that may not see them; measured on
//!   6.18). Checked on the process running check-config, which is the
//!   server's only when run as the same user with the same unit (the
//!   warning says so);
//! * `bpf()` not denied by a seccomp filter (systemd's
//!   `SystemCallFilter=~@privileged` kills the process at the call, so
//!   it is tried in a child first);
//! * with all that, a load: the kernel's verifier accepts the program;
//! * each interface: it exists (in this network namespace), and IPv4
//!   forwarding is on for it and IPv6 forwarding for all, without which
//!   the program's FIB lookups fail and every datagram takes the
//!   user-space path (`docs/xdp.md`).

use std::path::Path;

use super::attach::{ifindex, reason};
use super::RelayProgram;

/// Capability numbers (`linux/capability.h`).
const CAP_NET_ADMIN: u32 = 12;
const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// Why this process cannot load and attach the program before it even
/// tries: the capabilities it lacks, or a seccomp filter (systemd's
/// `SystemCallFilter=~@privileged`) that would kill it at its first
/// `bpf()`. `None`: it may try.
pub(super) fn cannot_try() -> Option<String> {
    let effective = effective_capabilities();
    let has = |cap: u32| effective.is_some_and(|set| set & (1 << cap) != 0);
    let mut missing = Vec::new();
    for cap in [(CAP_BPF, "CAP_BPF"), (CAP_PERFMON, "CAP_PERFMON")] {
        if !has(cap.0) && !has(CAP_SYS_ADMIN) {
            missing.push(cap.1);
        }
    }
    if !has(CAP_NET_ADMIN) {
        missing.push("CAP_NET_ADMIN");
    }
    if !missing.is_empty() {
        return Some(format!(
            "this process lacks {} (root has them; under systemd, the drop-in of docs/operations.md grants them)",
            missing.join(", ")
        ));
    }
    if !bpf_syscall_survives() {
        return Some("a seccomp filter kills the process at bpf() (systemd's SystemCallFilter=~@privileged: the drop-in of docs/operations.md allows it)".to_owned());
    }
    None
}

/// Whether a `bpf()` call leaves the process alive, tried in a child: a
/// seccomp filter that denies it (systemd's default action) kills the
/// caller with SIGSYS, which no handler can catch.
fn bpf_syscall_survives() -> bool {
    // SAFETY: the child calls only async-signal-safe functions (a raw
    // syscall, `_exit`) before it exits, so forking a threaded process is
    // sound; the parent reaps exactly that child.
    unsafe {
        match libc::fork() {
            0 => {
                // BPF_PROG_GET_NEXT_ID with no attribute: EFAULT or
                // EINVAL if allowed, touching nothing.
                libc::syscall(libc::SYS_bpf, 11, std::ptr::null::<u8>(), 0);
                libc::_exit(0)
            }
            -1 => true,
            child => {
                let mut status = 0;
                while libc::waitpid(child, &mut status, 0) == -1 {
                    if std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
                        return true;
                    }
                }
                !(libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGSYS)
            }
        }
    }
}

/// What stands between this host and the fast path on `interfaces`;
/// empty when nothing does.
pub fn host_warnings(interfaces: &[String]) -> Vec<String> {
    let mut warnings = Vec::new();
    if let Some(why) = cannot_try() {
        warnings.push(format!(
            "relay.fast_path: {why}: a server run the same way relays in user space"
        ));
    } else if let Err(e) = RelayProgram::load(1) {
        warnings.push(format!(
            "relay.fast_path: this kernel does not load the XDP program ({}); the server will relay in user space",
            reason(&e)
        ));
    }
    let v6 = Path::new("/proc/sys/net/ipv6/conf/all/forwarding");
    for interface in interfaces {
        if ifindex(interface).is_none() {
            warnings.push(format!(
                "relay.fast_path_interfaces: no interface {interface:?} on this host (in this network namespace)"
            ));
            continue;
        }
        let v4 = Path::new("/proc/sys/net/ipv4/conf").join(interface).join("forwarding");
        let off = |path: &Path, what: String, consequence: &str| {
            match std::fs::read_to_string(path) {
            Ok(value) if value.trim() != "0" => None,
            Ok(_) => Some(format!("relay.fast_path_interfaces: {what} is off: {consequence}")),
            Err(e) => Some(format!(
                "relay.fast_path_interfaces: cannot tell whether {what} is on ({}: {e}; the systemd unit's ProcSubset=pid hides /proc/sys): if it is off, {consequence}",
                path.display()
            )),
        }
        };
        warnings.extend(off(
            &v4,
            format!("IPv4 forwarding on {interface} (net.ipv4.conf.{interface}.forwarding)"),
            "the XDP program's route lookups fail and IPv4 datagrams take the user-space path; turning it on makes the host a router, so keep a firewall forward policy of drop",
        ));
        warnings.extend(off(
            v6,
            "IPv6 forwarding (net.ipv6.conf.all.forwarding)".to_owned(),
            &format!("IPv6 datagrams on {interface} take the user-space path"),
        ));
    }
    warnings
}

/// `CapEff` of `/proc/self/status`.
fn effective_capabilities() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let hex = status.lines().find_map(|line| line.strip_prefix("CapEff:"))?;
    u64::from_str_radix(hex.trim(), 16).ok()
}
