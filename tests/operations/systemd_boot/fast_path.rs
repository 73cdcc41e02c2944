//! The XDP fast path under the packaged unit (docs/operations.md, "The
//! XDP fast path under systemd"): with `fast_path = "xdp"` on the
//! container's `public0` (a veth end), the unit as packaged grants
//! neither the capabilities nor `bpf()`, and the service runs and warns;
//! with the drop-in exactly as the docs print it, the program is
//! attached natively, and it is gone once the service stops.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use super::container::Container;
use super::unit::{active, unit, wait_unit};
use crate::common::{require_tool, run_with_timeout};

const OPERATIONS: &str = include_str!("../../../docs/operations.md");
const DROP_IN: &str = "/etc/systemd/system/turnpike.service.d/xdp.conf";
const DEVICE: &str = "public0";

/// The drop-in as docs/operations.md prints it.
fn documented_drop_in() -> &'static str {
    let start = OPERATIONS
        .find(&format!("# {DROP_IN}"))
        .expect("the drop-in in docs/operations.md");
    let block = &OPERATIONS[start..];
    &block[..block.find("```").expect("the end of the drop-in's block")]
}

/// `ip -d link show public0`, run from the test's thread, which is in
/// the container's network namespace.
fn link() -> String {
    let out = run_with_timeout(
        Command::new(require_tool("ip")).args(["-d", "link", "show", "dev", DEVICE]),
        Duration::from_secs(10),
    );
    assert!(out.success(), "ip link show: {}", out.combined());
    out.stdout
}

/// The service's journal lines of its current run, every priority.
fn this_run(c: &Container) -> String {
    let invocation = format!("_SYSTEMD_INVOCATION_ID={}", unit(c)["InvocationID"]);
    c.ok(&["journalctl", &invocation, "--output", "cat", "--no-pager"])
}

fn restart(c: &Container) {
    c.ok(&["systemctl", "restart", "turnpike"]);
    let props = unit(c);
    assert!(active(&props), "{props:?}");
}

pub fn the_fast_path_needs_the_drop_in(c: &Container, share: &Path) {
    let installed = std::fs::read_to_string(c.path("/etc/turnpike/turnpike.toml")).expect("read the config");
    let ports = "ports = \"49152-65535\"";
    assert_eq!(installed.matches(ports).count(), 1, "{installed}");
    let with_xdp = installed.replace(
        ports,
        &format!("{ports}\nfast_path = \"xdp\"\nfast_path_interfaces = [\"{DEVICE}\"]"),
    );
    let install = |text: &str| {
        std::fs::write(share.join("turnpike.toml"), text).expect("write the config");
        c.ok(&[
            "install",
            "-m",
            "640",
            "-g",
            "turnpike",
            "/test/turnpike.toml",
            "/etc/turnpike/turnpike.toml",
        ]);
    };
    install(&with_xdp);

    restart(c);
    let journal = this_run(c);
    assert!(
        journal.contains("fast path off: this process lacks CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN"),
        "the unit as packaged:\n{journal}"
    );
    assert!(!link().contains("prog/xdp"), "attached without the drop-in: {}", link());

    std::fs::write(share.join("xdp.conf"), documented_drop_in()).expect("write the drop-in");
    c.ok(&["install", "-D", "-m", "644", "/test/xdp.conf", DROP_IN]);
    c.ok(&["systemctl", "daemon-reload"]);
    restart(c);
    let journal = this_run(c);
    assert!(
        journal.contains("fast path: XDP program attached") && journal.contains("mode=\"native\""),
        "with the drop-in:\n{journal}"
    );
    assert!(!journal.contains("fast path off"), "{journal}");
    let attached = link();
    assert!(
        attached.contains("prog/xdp") && attached.contains("name turnpike_relay"),
        "{attached}"
    );

    c.ok(&["systemctl", "stop", "turnpike"]);
    let props = wait_unit(c, "stopped", |p| p["ActiveState"] == "inactive");
    assert_eq!(props["Result"], "success", "{props:?}");
    assert!(!link().contains("prog/xdp"), "still attached after stop: {}", link());

    c.ok(&["rm", DROP_IN]);
    c.ok(&["systemctl", "daemon-reload"]);
    install(&installed);
    c.ok(&["systemctl", "start", "turnpike"]);
}
