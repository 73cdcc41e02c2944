//! What the ACME client tells the rest of the process (`/readyz`,
//! `/metrics`, the log), and when it tries next: the schedule is plain
//! arithmetic on the certificate's validity and the failures in a row, so
//! it is tested here without a clock.
//!
//! * A certificate is renewed once two thirds of its lifetime have passed
//!   (30 days before the end of a 90-day one, 2 days before the end of a
//!   6-day one), which leaves a third of it for retries.
//! * After a failed attempt the next one waits `retry_interval`, doubled
//!   with each failure in a row, at most [`MAX_BACKOFF`] (or
//!   `retry_interval`, if that is longer).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use crate::process::tls::Leaf;

/// The longest wait between two failed attempts (unless
/// `retry_interval` is longer).
pub const MAX_BACKOFF: Duration = Duration::from_secs(3600);

/// Outcomes of attempts to obtain a certificate (metric label values).
pub const OUTCOMES: [&str; 2] = ["success", "failure"];

/// When to renew a certificate valid from `not_before` to `not_after`:
/// after two thirds of its lifetime.
pub fn renew_at(leaf: &Leaf) -> SystemTime {
    let lifetime = leaf.not_after.duration_since(leaf.not_before).unwrap_or_default();
    leaf.not_before + lifetime * 2 / 3
}

/// The wait after the `failures`-th failure in a row (1 or more).
pub fn backoff(retry_interval: Duration, failures: u32) -> Duration {
    let cap = MAX_BACKOFF.max(retry_interval);
    let doublings = failures.saturating_sub(1).min(20);
    retry_interval.saturating_mul(1 << doublings).min(cap)
}

/// The ACME client's state, read by `/readyz` and `/metrics`.
#[derive(Default)]
pub struct AcmeStatus {
    /// Attempts by [`OUTCOMES`].
    attempts: [AtomicU64; OUTCOMES.len()],
    last: Mutex<Last>,
}

#[derive(Default, Clone)]
struct Last {
    failures_in_a_row: u32,
    error: Option<String>,
    next_attempt: Option<SystemTime>,
}

impl AcmeStatus {
    pub(super) fn succeeded(&self) {
        self.attempts[0].fetch_add(1, Ordering::Relaxed);
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        last.failures_in_a_row = 0;
        last.error = None;
    }

    /// Counts a failure; returns how many there have been in a row.
    pub(super) fn failed(&self, error: String) -> u32 {
        self.attempts[1].fetch_add(1, Ordering::Relaxed);
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        last.failures_in_a_row += 1;
        last.error = Some(error);
        last.failures_in_a_row
    }

    pub(super) fn set_next_attempt(&self, at: SystemTime) {
        self.last.lock().unwrap_or_else(|e| e.into_inner()).next_attempt = Some(at);
    }

    /// Attempts so far, by [`OUTCOMES`].
    pub fn attempts(&self) -> [u64; OUTCOMES.len()] {
        std::array::from_fn(|i| self.attempts[i].load(Ordering::Relaxed))
    }

    /// Failed attempts since the last success (or the start).
    pub fn failures_in_a_row(&self) -> u32 {
        self.last.lock().unwrap_or_else(|e| e.into_inner()).failures_in_a_row
    }

    /// When the next attempt is due, once the client runs.
    pub fn next_attempt(&self) -> Option<SystemTime> {
        self.last.lock().unwrap_or_else(|e| e.into_inner()).next_attempt
    }

    /// One line for `/readyz`: `acme: ok …`, `acme: pending …` (no
    /// certificate yet, no failure yet) or `acme: failing …`; `served` is
    /// the leaf served now (`None`: the placeholder).
    pub fn summary(&self, served: Option<&Leaf>) -> String {
        let last = self.last.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let serving = match served {
            Some(leaf) => format!(
                "serving the certificate valid until {}",
                humantime::format_rfc3339_seconds(leaf.not_after)
            ),
            None => "serving a self-signed placeholder".to_owned(),
        };
        match (last.failures_in_a_row, served) {
            (0, Some(_)) => format!("acme: ok ({serving})"),
            (0, None) => format!("acme: pending (the first certificate is being requested; {serving})"),
            (n, _) => format!(
                "acme: failing ({n} attempt(s) in a row, the last: {}; {serving})",
                last.error.as_deref().unwrap_or("unknown")
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    fn leaf(from_secs: u64, days: u64) -> Leaf {
        let not_before = UNIX_EPOCH + Duration::from_secs(from_secs);
        Leaf {
            not_before,
            not_after: not_before + Duration::from_secs(days * 86_400),
            names: vec!["turn.example.org".to_owned()],
        }
    }

    #[test]
    fn a_certificate_is_renewed_when_a_third_of_its_lifetime_is_left() {
        let ninety = leaf(1_000, 90);
        assert_eq!(renew_at(&ninety), ninety.not_after - Duration::from_secs(30 * 86_400));
        let six = leaf(0, 6);
        assert_eq!(renew_at(&six), six.not_after - Duration::from_secs(2 * 86_400));
        // A certificate that ends before it begins is renewed at once.
        let broken = Leaf {
            not_after: ninety.not_before - Duration::from_secs(1),
            ..ninety.clone()
        };
        assert_eq!(renew_at(&broken), broken.not_before);
    }

    #[test]
    fn failures_back_off_by_doubling_up_to_an_hour() {
        let minute = Duration::from_secs(60);
        let waits: Vec<u64> = (1..=8).map(|n| backoff(minute, n).as_secs()).collect();
        assert_eq!(waits, [60, 120, 240, 480, 960, 1920, 3600, 3600]);
        assert_eq!(backoff(minute, u32::MAX), MAX_BACKOFF);
        // A retry interval above the cap is kept as it is.
        let day = Duration::from_secs(86_400);
        assert_eq!(backoff(day, 3), day);
        assert_eq!(backoff(Duration::from_secs(1), 2), Duration::from_secs(2));
    }

    #[test]
    fn the_summary_says_what_is_served_and_whether_renewal_fails() {
        let status = AcmeStatus::default();
        assert!(status.summary(None).starts_with("acme: pending"));
        let served = leaf(1_893_542_400, 90);
        assert_eq!(
            status.summary(Some(&served)),
            "acme: ok (serving the certificate valid until 2030-04-02T00:00:00Z)"
        );
        assert_eq!(status.failed("connection refused".to_owned()), 1);
        assert_eq!(status.failed("connection refused".to_owned()), 2);
        let failing = status.summary(Some(&served));
        assert!(
            failing.starts_with("acme: failing (2 attempt(s) in a row, the last: connection refused;"),
            "{failing}"
        );
        assert!(status.summary(None).contains("self-signed placeholder"));
        status.succeeded();
        assert_eq!(status.failures_in_a_row(), 0);
        assert_eq!(status.attempts(), [1, 2]);
    }
}
