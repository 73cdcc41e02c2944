//! A network namespace of the calling thread's own.

use std::net::Ipv4Addr;
use std::process::Command;
use std::time::Duration;

use super::{require_tool, run_with_timeout};

/// Moves the calling thread into a network namespace of its own, with
/// its loopback interface up and `addresses` (IPv4, /32) added to it, so
/// that a test can use addresses that are not loopback ones (Chromium
/// refuses to be redirected to a loopback TURN server) without a packet
/// leaving the namespace. Processes the thread spawns from now on live
/// there too; the namespace goes when they and the thread are gone. Needs
/// root (CI runs as root) and `ip` from iproute2.
pub fn enter_private_network(addresses: &[Ipv4Addr]) {
    // SAFETY: unshare changes only the calling thread's namespace.
    let unshared = unsafe { libc::unshare(libc::CLONE_NEWNET) };
    assert_eq!(
        unshared,
        0,
        "unshare(CLONE_NEWNET): {} (the test needs root)",
        std::io::Error::last_os_error()
    );
    let ip = require_tool("ip");
    let mut steps = vec![vec!["link".to_owned(), "set".into(), "lo".into(), "up".into()]];
    for address in addresses {
        steps.push(vec![
            "addr".into(),
            "add".into(),
            format!("{address}/32"),
            "dev".into(),
            "lo".into(),
        ]);
    }
    for step in steps {
        let out = run_with_timeout(Command::new(&ip).args(&step), Duration::from_secs(10));
        assert!(out.success(), "ip {}: {}", step.join(" "), out.combined());
    }
}
