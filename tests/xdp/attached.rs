//! `[relay] fast_path = "xdp"` on a running server: the program attached
//! at start, visible in `/metrics` and to `ip link`, relaying unchanged
//! (nothing forwards here, so the program's FIB lookups fail and it
//! passes every routed datagram to user space; `relaying` has it relay),
//! gone after SIGTERM and after SIGKILL; an interface that does not
//! exist, which the server warns about and relays without; and what
//! `check-config` says about the host.
//!
//! In the [`Topology`] of `topology.rs`, as it comes: the client and the
//! peer sit in the other namespace, so every datagram the server gets
//! arrives on `tpx-s` through the program.

#![allow(clippy::disallowed_methods)] // waits in black-box tests use the real clock

use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::private_network::Namespace;
use crate::common::process::{require_tool, run_with_timeout};
use crate::common::turn_client::Source;
use crate::common::{turnpike_bin, ScratchDir, TestServer};
use crate::fixture::sysctl;
use crate::relaying::{start_unchecked, Call, Setup};
use crate::topology::{Topology, SERVER_DEVICE};

fn server(interfaces: &str) -> TestServer {
    start_unchecked(&Setup {
        interfaces: Some(interfaces),
        ..Setup::default()
    })
}

/// `ip -d link show` of the server's end.
fn link_details() -> String {
    let out = run_with_timeout(
        Command::new(require_tool("ip")).args(["-d", "link", "show", "dev", SERVER_DEVICE]),
        Duration::from_secs(10),
    );
    assert!(out.success(), "ip link show: {}", out.combined());
    out.stdout
}

/// Polls `ip link` until the server's end has no XDP program, for at most
/// a few seconds; true if it has none.
fn detached() -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if !link_details().contains("prog/xdp") {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A UDP allocation from the far namespace, a channel to the peer there,
/// and data both ways: what user space relays, with the program in the
/// way.
fn relay_from(far: &Namespace, server: &TestServer) {
    let mut call = Call::open(server, far);
    let wait = Duration::from_secs(5);
    let got = call.send_to_peer(b"to the peer", wait);
    assert_eq!(
        got,
        Some((b"to the peer".to_vec(), call.relayed)),
        "the peer's datagram"
    );
    let got = call.send_to_client(b"to the client", wait);
    assert_eq!(
        got,
        [(Source::Channel(call.channel), b"to the client".to_vec())],
        "the client's datagram"
    );
    // So that a SIGTERM's drain has nothing to wait for.
    assert_eq!(call.client.delete_allocation(), Ok(()), "Refresh 0");
}

#[test]
fn attached_at_start_relays_and_is_gone_after_sigterm_and_sigkill() {
    let topology = Topology::new();
    let far = &topology.far;
    let turnpike = server(&format!("\"{SERVER_DEVICE}\""));
    // veth has native XDP, so the first mode tried is the one it gets.
    let attached = format!("turnpike_fast_path_attached{{interface=\"{SERVER_DEVICE}\",mode=\"native\"}}");
    assert_eq!(turnpike.metric(&attached), Some(1.0), "{}", turnpike.metrics());
    let link = link_details();
    assert!(
        link.contains("prog/xdp") && link.contains("name turnpike_relay"),
        "ip link: {link}"
    );
    relay_from(far, &turnpike);

    turnpike.signal(libc::SIGTERM);
    let exit = turnpike.wait_exit(Duration::from_secs(15));
    assert!(exit.is_some_and(|s| s.success()), "exit after SIGTERM: {exit:?}");
    assert!(detached(), "still attached after SIGTERM: {}", link_details());
    let log = turnpike.stderr_log();
    assert!(log.contains("XDP program detached"), "{log}");

    // A crash: the kernel closes the link's descriptor, which detaches.
    let crashed = server(&format!("\"{SERVER_DEVICE}\""));
    assert!(link_details().contains("prog/xdp"), "attached again after a restart");
    crashed.signal(libc::SIGKILL);
    assert!(crashed.wait_exit(Duration::from_secs(15)).is_some(), "killed");
    assert!(detached(), "still attached after SIGKILL: {}", link_details());
}

#[test]
fn an_interface_that_does_not_exist_is_a_warning_and_user_space_relays() {
    let topology = Topology::new();
    let far = &topology.far;
    let turnpike = server("\"tpx-none\"");
    let log = turnpike.stderr_log();
    assert!(
        log.contains("cannot attach the XDP program")
            && log.contains("tpx-none")
            && log.contains("no interface by that name"),
        "{log}"
    );
    let metrics = turnpike.metrics();
    assert!(!metrics.contains("turnpike_fast_path_attached"), "{metrics}");
    assert!(!link_details().contains("prog/xdp"), "{}", link_details());
    relay_from(far, &turnpike);
}

/// `turnpike check-config` on a config with the fast path on
/// `interfaces`, in the calling thread's namespace: (stdout, stderr).
fn check_config(interfaces: &str) -> (String, String) {
    let dir = ScratchDir::new("xdp-check");
    let path = dir.write_config(&format!(
        "[relay]\nfast_path = \"xdp\"\nfast_path_interfaces = [{interfaces}]\n"
    ));
    let out = run_with_timeout(
        Command::new(turnpike_bin()).arg("check-config").arg(&path),
        Duration::from_secs(30),
    );
    assert!(out.success(), "check-config: {}", out.combined());
    (out.stdout, out.stderr)
}

#[test]
fn check_config_says_what_stands_in_the_way() {
    let _topology = Topology::new();
    // A fresh namespace forwards nothing.
    let (stdout, stderr) = check_config(&format!("\"{SERVER_DEVICE}\", \"tpx-none\""));
    assert!(
        stdout.contains("fast_path: xdp on tpx-s, tpx-none: see the warnings"),
        "{stdout}"
    );
    for expected in [
        "warning: relay.fast_path_interfaces: no interface \"tpx-none\"",
        "IPv4 forwarding on tpx-s (net.ipv4.conf.tpx-s.forwarding) is off",
        "IPv6 forwarding (net.ipv6.conf.all.forwarding) is off",
    ] {
        assert!(stderr.contains(expected), "{expected:?} in {stderr}");
    }
    // Root holds the capabilities, so those are not in the way.
    assert!(!stderr.contains("lacks"), "{stderr}");

    sysctl(&format!("net/ipv4/conf/{SERVER_DEVICE}/forwarding"), "1");
    sysctl("net/ipv6/conf/all/forwarding", "1");
    let (stdout, stderr) = check_config(&format!("\"{SERVER_DEVICE}\""));
    assert!(
        stdout.contains("fast_path: xdp on tpx-s: this host can attach it"),
        "{stdout}"
    );
    assert!(!stderr.contains("warning: relay.fast_path"), "{stderr}");
}

/// Installs, in the calling (forked, not yet exec'd) process, a seccomp
/// filter that kills the process at `bpf()` and allows everything else,
/// as systemd's `SystemCallFilter=~@privileged` does.
fn deny_bpf() -> std::io::Result<()> {
    const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
    const AUDIT_ARCH_AARCH64: u32 = 0xc000_00b7;
    let arch = if cfg!(target_arch = "aarch64") {
        AUDIT_ARCH_AARCH64
    } else {
        AUDIT_ARCH_X86_64
    };
    let stmt = |code: u32, k: u32| libc::sock_filter {
        code: code as u16,
        jt: 0,
        jf: 0,
        k,
    };
    let jump = |code: u32, k: u32, jt: u8, jf: u8| libc::sock_filter {
        code: code as u16,
        jt,
        jf,
        k,
    };
    let (ld, jeq, ret) = (
        libc::BPF_LD | libc::BPF_W | libc::BPF_ABS,
        libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K,
        libc::BPF_RET | libc::BPF_K,
    );
    let mut filter = [
        stmt(ld, 4), // seccomp_data.arch
        jump(jeq, arch, 1, 0),
        stmt(ret, libc::SECCOMP_RET_ALLOW),
        stmt(ld, 0), // seccomp_data.nr
        jump(jeq, libc::SYS_bpf as u32, 0, 1),
        stmt(ret, libc::SECCOMP_RET_KILL_PROCESS),
        stmt(ret, libc::SECCOMP_RET_ALLOW),
    ];
    let program = libc::sock_fprog {
        len: filter.len() as u16,
        filter: filter.as_mut_ptr(),
    };
    // SAFETY: prctl with a filter program that outlives the call.
    unsafe {
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
            || libc::prctl(libc::PR_SET_SECCOMP, libc::SECCOMP_MODE_FILTER, &program) != 0
        {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

#[test]
fn under_a_seccomp_filter_denying_bpf_check_config_says_so_and_does_not_die() {
    let _topology = Topology::new();
    let dir = ScratchDir::new("xdp-seccomp");
    let path = dir.write_config(&format!(
        "[relay]\nfast_path = \"xdp\"\nfast_path_interfaces = [\"{SERVER_DEVICE}\"]\n"
    ));
    let mut command = Command::new(turnpike_bin());
    command.arg("check-config").arg(&path);
    // SAFETY: the hook only calls prctl, which is async-signal-safe.
    unsafe { std::os::unix::process::CommandExt::pre_exec(&mut command, deny_bpf) };
    let out = run_with_timeout(&mut command, Duration::from_secs(30));
    assert!(
        out.success(),
        "check-config under the filter: {:?} {}",
        out.status,
        out.combined()
    );
    assert!(
        out.stderr
            .contains("warning: relay.fast_path: a seccomp filter kills the process at bpf()"),
        "{}",
        out.stderr
    );
}
