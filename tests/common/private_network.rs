//! Network namespaces of the test's own: the calling thread's
//! ([`enter_private_network`]) and named ones ([`Namespace`]) joined to it
//! by veth pairs, removed when the test is done. Nothing in them reaches
//! the host's network.

use std::net::Ipv4Addr;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use super::{require_tool, run_with_timeout, CmdOutput};

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

/// Runs `ip ARGS` in the calling thread's network namespace; panics if it
/// fails.
pub fn ip(args: &[&str]) {
    let out = run_with_timeout(Command::new(require_tool("ip")).args(args), Duration::from_secs(10));
    assert!(out.success(), "ip {}: {}", args.join(" "), out.combined());
}

/// A named network namespace (`ip netns add`), deleted on drop, so on
/// every way out of a test (the veth ends in it go with it).
pub struct Namespace(String);

impl Namespace {
    /// `tp-<label>-<pid>-<n>`: unique among the tests of this machine.
    pub fn create(label: &str) -> Namespace {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "tp-{label}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        ip(&["netns", "add", &name]);
        Namespace(name)
    }

    pub fn name(&self) -> &str {
        &self.0
    }

    /// `ip -n NAME ARGS`: `ip` acting on this namespace.
    pub fn ip(&self, args: &[&str]) {
        ip(&[&["-n", &self.0][..], args].concat());
    }

    /// Runs `program ARGS` inside this namespace (`ip netns exec`), with
    /// a time limit.
    pub fn exec(&self, program: &str, args: &[&str]) -> CmdOutput {
        let tool = require_tool(program);
        let tool = tool.to_str().expect("a UTF-8 path");
        let ip = require_tool("ip");
        run_with_timeout(
            Command::new(ip).args([&["netns", "exec", &self.0, tool][..], args].concat()),
            Duration::from_secs(10),
        )
    }

    /// Moves the calling thread into it.
    pub fn enter(&self) {
        let path = format!("/run/netns/{}", self.0);
        let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
        // SAFETY: setns on an open namespace file changes only the
        // calling thread's network namespace.
        let rc = unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&file), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
    }

    /// Runs `f` on a thread inside it and returns what it made: sockets
    /// stay in the namespace they were opened in, so the test thread can
    /// use them afterwards.
    pub fn within<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        std::thread::scope(|s| {
            s.spawn(|| {
                self.enter();
                f()
            })
            .join()
            .unwrap_or_else(|e| std::panic::resume_unwind(e))
        })
    }

    /// `program` to be run inside it (`ip netns exec`, which execs it: a
    /// kill reaches the program itself), from any thread; a child that
    /// [`crate::common::die_with_test`] ties to a short-lived thread would
    /// die with that thread.
    pub fn command(&self, program: &str) -> Command {
        let mut command = Command::new(require_tool("ip"));
        command.args(["netns", "exec", &self.0]).arg(require_tool(program));
        command
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = run_with_timeout(
            Command::new(require_tool("ip")).args(["netns", "delete", &self.0]),
            Duration::from_secs(10),
        );
    }
}
