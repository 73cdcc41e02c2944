//! What a selftest found: one [`Check`] per step and URL, each with a
//! [`Verdict`] and the reason in words, and the [`Report`] of them all,
//! as text for a person and as JSON for monitoring.
//!
//! Contract (what `docs/usage.md` promises scripts):
//! * the overall verdict is the worst of the checks': `fail` if any
//!   failed, else `warn` if any warned, else `pass`; a report without a
//!   single check fails (nothing was shown to work);
//! * a check that could not run because an earlier one failed is `skip`,
//!   with the reason, so every URL lists the same checks in the same
//!   order whatever happened;
//! * [`Report::exit_code`]: 0 unless a check failed, then 1 (2, a usage or
//!   config error, is the command's, before any check runs);
//! * the JSON keys are an interface: `verdict`, `counts`, and per check
//!   `url`, `check`, `verdict`, `detail` plus the measured values of that
//!   check (e.g. `rtt_median_ms`, `days_left`), each named with its unit.

use std::fmt::Write as _;

use serde_json::{Map, Value};

/// A check's outcome, from best to worst.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Verdict {
    /// Not run, because a check it needs failed.
    Skip,
    Pass,
    /// Works, but something deserves a look (a certificate about to
    /// expire, packets lost).
    Warn,
    Fail,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Skip => "skip",
            Verdict::Pass => "pass",
            Verdict::Warn => "warn",
            Verdict::Fail => "fail",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Verdict::Skip => "SKIP",
            Verdict::Pass => "PASS",
            Verdict::Warn => "WARN",
            Verdict::Fail => "FAIL",
        }
    }
}

/// The steps checked, in the order they run on a URL.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// A TCP connection (stream URLs).
    Connect,
    /// The TLS handshake and the certificate (secure URLs).
    Tls,
    /// STUN Binding (RFC 8489 §6).
    Binding,
    /// Allocate with the credential (RFC 8656 §7).
    Allocate,
    /// XOR-RELAYED-ADDRESS against the address clients reach the server at.
    RelayedAddress,
    /// CreatePermission (RFC 8656 §9).
    Permission,
    /// One packet out through the relay and back.
    Echo,
    /// A burst of packets: how many came back, and their round trip.
    Loss,
    /// Refresh with LIFETIME 0: the allocation deleted.
    Refresh,
}

impl Step {
    pub fn as_str(self) -> &'static str {
        match self {
            Step::Connect => "connect",
            Step::Tls => "tls",
            Step::Binding => "binding",
            Step::Allocate => "allocate",
            Step::RelayedAddress => "relayed_address",
            Step::Permission => "permission",
            Step::Echo => "echo",
            Step::Loss => "loss",
            Step::Refresh => "refresh",
        }
    }
}

/// One step's outcome on one URL.
#[derive(Clone, Debug, PartialEq)]
pub struct Check {
    pub url: String,
    pub step: Step,
    pub verdict: Verdict,
    /// What was found, or why it failed, in words.
    pub detail: String,
    /// Measured values, for the JSON (keys named with their unit).
    pub values: Map<String, Value>,
}

/// Every check of a run, in the order they ran.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Report {
    pub checks: Vec<Check>,
}

impl Report {
    /// The worst verdict of the checks; `Fail` for a report without any.
    pub fn verdict(&self) -> Verdict {
        match self.checks.iter().map(|c| c.verdict).max() {
            None | Some(Verdict::Skip) => Verdict::Fail,
            Some(worst) => worst,
        }
    }

    /// 0 unless the verdict is `Fail`, then 1.
    pub fn exit_code(&self) -> u8 {
        match self.verdict() {
            Verdict::Fail => 1,
            _ => 0,
        }
    }

    fn count(&self, verdict: Verdict) -> usize {
        self.checks.iter().filter(|c| c.verdict == verdict).count()
    }

    pub fn to_json(&self) -> Value {
        let checks: Vec<Value> = self
            .checks
            .iter()
            .map(|check| {
                let mut entry = Map::new();
                entry.insert("url".into(), check.url.clone().into());
                entry.insert("check".into(), check.step.as_str().into());
                entry.insert("verdict".into(), check.verdict.as_str().into());
                entry.insert("detail".into(), check.detail.clone().into());
                entry.extend(check.values.clone());
                Value::Object(entry)
            })
            .collect();
        let mut counts = Map::new();
        for verdict in [Verdict::Pass, Verdict::Warn, Verdict::Fail, Verdict::Skip] {
            counts.insert(verdict.as_str().into(), self.count(verdict).into());
        }
        serde_json::json!({
            "verdict": self.verdict().as_str(),
            "counts": counts,
            "checks": checks,
        })
    }

    /// The text for a person: each URL, then one line per check
    /// (`PASS step  detail`), then the overall verdict.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let mut url: Option<&str> = None;
        for check in &self.checks {
            if url != Some(check.url.as_str()) {
                if url.is_some() {
                    out.push('\n');
                }
                let _ = writeln!(out, "{}", check.url);
                url = Some(&check.url);
            }
            let _ = writeln!(
                out,
                "  {} {:<15} {}",
                check.verdict.label(),
                check.step.as_str(),
                check.detail
            );
        }
        let _ = writeln!(
            out,
            "\n{}: {} passed, {} warned, {} failed, {} skipped",
            self.verdict().label(),
            self.count(Verdict::Pass),
            self.count(Verdict::Warn),
            self.count(Verdict::Fail),
            self.count(Verdict::Skip)
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(url: &str, step: Step, verdict: Verdict) -> Check {
        Check {
            url: url.to_owned(),
            step,
            verdict,
            detail: format!("{} detail", step.as_str()),
            values: Map::new(),
        }
    }

    #[test]
    fn the_worst_verdict_decides_and_only_a_failure_exits_non_zero() {
        let mut report = Report::default();
        assert_eq!(report.verdict(), Verdict::Fail, "nothing shown to work");
        report
            .checks
            .push(check("turn:a:1?transport=udp", Step::Binding, Verdict::Pass));
        assert_eq!((report.verdict(), report.exit_code()), (Verdict::Pass, 0));
        report
            .checks
            .push(check("turn:a:1?transport=udp", Step::Loss, Verdict::Warn));
        assert_eq!((report.verdict(), report.exit_code()), (Verdict::Warn, 0));
        report
            .checks
            .push(check("turn:b:1?transport=udp", Step::Allocate, Verdict::Fail));
        report
            .checks
            .push(check("turn:b:1?transport=udp", Step::Echo, Verdict::Skip));
        assert_eq!((report.verdict(), report.exit_code()), (Verdict::Fail, 1));
    }

    #[test]
    fn text_groups_by_url_and_json_names_every_field() {
        let mut report = Report {
            checks: vec![
                check("turn:a:1?transport=udp", Step::Binding, Verdict::Pass),
                check("turn:a:1?transport=udp", Step::Echo, Verdict::Fail),
                check("turns:b:2?transport=tcp", Step::Tls, Verdict::Warn),
            ],
        };
        report.checks[2].values.insert("days_left".into(), 3.into());
        let text = report.render();
        assert!(text.starts_with("turn:a:1?transport=udp\n  PASS binding "), "{text}");
        assert!(
            text.contains("  FAIL echo            echo detail\n\nturns:b:2"),
            "{text}"
        );
        assert!(
            text.ends_with("FAIL: 1 passed, 1 warned, 1 failed, 0 skipped\n"),
            "{text}"
        );

        let json = report.to_json();
        assert_eq!(json["verdict"], "fail");
        assert_eq!(json["counts"]["warn"], 1);
        assert_eq!(json["checks"][2]["check"], "tls");
        assert_eq!(json["checks"][2]["verdict"], "warn");
        assert_eq!(json["checks"][2]["days_left"], 3);
        assert_eq!(json["checks"][0]["url"], "turn:a:1?transport=udp");
        assert_eq!(json["checks"][1]["detail"], "echo detail");
    }
}
