//! The unit as systemd and the journal inside the container report it,
//! with bounded waits: `systemctl reload` and `stop --no-block` return
//! before the service has acted (systemd 252), so a step polls for the
//! effect, never sleeps a fixed time.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::container::Container;

/// How long systemd may take to get the unit where a step puts it (the
/// watchdog alone takes up to WatchdogSec=15s, plus RestartSec=2s).
pub const UNIT_WAIT: Duration = Duration::from_secs(60);

/// The unit's properties systemd reports.
pub fn unit(c: &Container) -> HashMap<String, String> {
    let props = "Type,ActiveState,SubState,UnitFileState,LoadState,NRestarts,MainPID,InvocationID,Result";
    c.ok(&["systemctl", "show", "--property", props, "turnpike"])
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// Polls the unit until `done` holds, for at most [`UNIT_WAIT`].
pub fn wait_unit(
    c: &Container,
    what: &str,
    done: impl Fn(&HashMap<String, String>) -> bool,
) -> HashMap<String, String> {
    let deadline = Instant::now() + UNIT_WAIT;
    loop {
        let props = unit(c);
        if done(&props) {
            return props;
        }
        assert!(
            Instant::now() < deadline,
            "the unit is not {what} after {UNIT_WAIT:?}: {props:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub fn active(props: &HashMap<String, String>) -> bool {
    props["ActiveState"] == "active" && props["SubState"] == "running"
}

/// The unit's journal (systemd's lines about it and the service's own).
pub fn journal(c: &Container) -> String {
    c.ok(&["journalctl", "--unit", "turnpike", "--output", "cat", "--no-pager"])
}

/// Polls the journal until `line` is there `count` times (systemd's
/// `reload` and `stop --no-block` return before the service acts).
pub fn wait_journal(c: &Container, line: &str, count: usize) -> String {
    let deadline = Instant::now() + UNIT_WAIT;
    loop {
        let journal = journal(c);
        if journal.matches(line).count() >= count {
            return journal;
        }
        assert!(
            Instant::now() < deadline,
            "no {line:?} (x{count}) in the journal:\n{journal}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The lines the service logged at warning or worse in its current run.
pub fn warnings_of_this_run(c: &Container) -> Vec<String> {
    let invocation = format!("_SYSTEMD_INVOCATION_ID={}", unit(c)["InvocationID"]);
    c.ok(&[
        "journalctl",
        &invocation,
        "--priority",
        "warning",
        "--output",
        "cat",
        "--no-pager",
    ])
    .lines()
    .filter(|l| !l.trim().is_empty() && !l.starts_with("-- "))
    .map(str::to_owned)
    .collect()
}

/// `mode owner:group` of each path, inside.
pub fn owners(c: &Container, paths: &[&str]) -> Vec<String> {
    let mut args = vec!["stat", "--format", "%n %a %U:%G"];
    args.extend_from_slice(paths);
    c.ok(&args).lines().map(str::to_owned).collect()
}

/// `systemctl reload`, then waits for the service to say it reloaded
/// (systemd 252 returns before): a reload, not a restart.
pub fn reload(c: &Container) {
    let reloaded = "SIGHUP: configuration reloaded";
    let seen = journal(c).matches(reloaded).count();
    let pid = unit(c)["MainPID"].clone();
    c.ok(&["systemctl", "reload", "turnpike"]);
    wait_journal(c, reloaded, seen + 1);
    let props = unit(c);
    assert!(
        active(&props) && props["MainPID"] == pid,
        "a reload is no restart: {props:?}"
    );
}
