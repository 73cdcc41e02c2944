//! Running `turnpike selftest` and reading its JSON report.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use super::{run_with_timeout, turnpike_bin, CmdOutput, ScratchDir, TestPki};

/// The longest a run may take; one with every step timing out at 1 s
/// takes a few seconds.
pub const RUN_LIMIT: Duration = Duration::from_secs(120);

/// Runs `turnpike <args>` and returns its output, asserting it ended.
pub fn turnpike(args: &[&str]) -> CmdOutput {
    let output = run_with_timeout(Command::new(turnpike_bin()).args(args), RUN_LIMIT);
    assert!(output.status.is_some(), "turnpike {args:?} still running: {output:?}");
    output
}

/// `turnpike selftest <args> --json`: the exit code and the report.
pub fn selftest_json(args: &[&str]) -> (i32, Value) {
    let mut all = vec!["selftest", "--json"];
    all.extend_from_slice(args);
    let output = turnpike(&all);
    let code = output.status.and_then(|s| s.code()).expect("an exit code");
    let report = serde_json::from_str(output.stdout.trim())
        .unwrap_or_else(|e| panic!("selftest printed no JSON report ({e}): {output:?}"));
    (code, report)
}

/// The check `name` of the URL `url` in `report`.
pub fn check<'a>(report: &'a Value, url: &str, name: &str) -> &'a Value {
    report["checks"]
        .as_array()
        .expect("a checks array")
        .iter()
        .find(|c| c["url"] == url && c["check"] == name)
        .unwrap_or_else(|| panic!("no check {name} of {url} in {report:#}"))
}

/// The verdict and the detail of a check.
pub fn verdict<'a>(report: &'a Value, url: &str, name: &str) -> (&'a str, &'a str) {
    let found = check(report, url, name);
    (
        found["verdict"].as_str().expect("a verdict"),
        found["detail"].as_str().expect("a detail"),
    )
}

/// The CA of `pki` in a PEM file, for `--ca`.
pub fn ca_file(dir: &ScratchDir, pki: &TestPki) -> PathBuf {
    let path = dir.path().join("ca.pem");
    std::fs::write(&path, pki.ca_pem()).expect("write the CA file");
    path
}

/// Asserts that every TURN check of `url` in `report` passed, the echo
/// on `path` ("peer" or "relay"), and that the loss burst was answered
/// (a loaded machine may drop a loopback datagram: a warning, not a
/// failure).
pub fn assert_relaying_works(report: &Value, url: &str, path: &str) {
    for name in [
        "binding",
        "allocate",
        "relayed_address",
        "permission",
        "echo",
        "refresh",
    ] {
        assert_eq!(verdict(report, url, name).0, "pass", "{name} of {url}: {report:#}");
    }
    assert_eq!(check(report, url, "echo")["path"], path, "{report:#}");
    let loss = check(report, url, "loss");
    assert_ne!(loss["verdict"], "fail", "{report:#}");
    assert!(loss["sent"].as_u64().unwrap() > 0, "{report:#}");
    assert!(loss["received"].as_u64().unwrap() > 0, "{report:#}");
    assert!(loss["rtt_median_ms"].is_number(), "{report:#}");
}
