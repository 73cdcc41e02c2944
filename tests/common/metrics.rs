//! Reading `/metrics`: one sample's value, the sum of a family's samples,
//! and bounded waits for counts that the shards publish every 250 ms.

use std::time::{Duration, Instant};

use super::TestServer;

/// How long [`TestServer::wait_metric`] and
/// [`TestServer::assert_metrics_settle`] wait by default: twenty rounds of
/// the shards' 250 ms publication.
pub const METRICS_SETTLE: Duration = Duration::from_secs(5);

/// The value of `sample` (a name and labels exactly as `/metrics` writes
/// them, e.g. `turnpike_fleet_revocations_total{outcome="applied"}`) in the
/// Prometheus text `text`; `None` if it is not there.
pub fn sample_value(text: &str, sample: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(sample)?.strip_prefix(' ')?.trim().parse().ok())
}

/// The sum of the samples of the family `name` (the name exactly, with
/// any labels) whose labels contain every one of `labels` (e.g.
/// `code="300"`; none matches all); 0 if there is none.
pub fn samples_sum(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let rest = series.strip_prefix(name)?;
            let labelled = rest.is_empty() || rest.starts_with('{');
            (labelled && labels.iter().all(|l| rest.contains(l))).then_some(value)
        })
        .filter_map(|value| value.parse::<f64>().ok())
        .sum()
}

impl TestServer {
    /// The text of `GET /metrics`, which must answer 200.
    pub fn metrics(&self) -> String {
        let (status, text) = self.http_get("/metrics");
        assert_eq!(status, 200, "GET /metrics: {text}");
        text
    }

    /// The value of `sample` (see [`sample_value`]) in `/metrics` now.
    pub fn metric(&self, sample: &str) -> Option<f64> {
        sample_value(&self.metrics(), sample)
    }

    /// The sum of the samples of `name` with `labels` (see
    /// [`samples_sum`]) in `/metrics` now.
    pub fn metric_sum(&self, name: &str, labels: &[&str]) -> f64 {
        samples_sum(&self.metrics(), name, labels)
    }

    /// Scrapes every 50 ms, for at most `limit`, until `sample` is there
    /// with a value that `done` accepts; returns the last value seen,
    /// which the caller asserts on.
    pub fn wait_metric(&self, sample: &str, limit: Duration, done: impl Fn(f64) -> bool) -> Option<f64> {
        let deadline = Instant::now() + limit;
        loop {
            let seen = self.metric(sample);
            if seen.is_some_and(&done) || Instant::now() >= deadline {
                return seen;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits (at most [`METRICS_SETTLE`]) until every sample of `expected`
    /// has its value; panics with those that have not and the scrape.
    pub fn assert_metrics_settle(&self, expected: &[(&str, f64)]) {
        let deadline = Instant::now() + METRICS_SETTLE;
        loop {
            let text = self.metrics();
            let wrong: Vec<String> = expected
                .iter()
                .filter_map(|&(sample, value)| {
                    let scraped = sample_value(&text, sample);
                    (scraped != Some(value)).then(|| format!("{sample}: expected {value}, scraped {scraped:?}"))
                })
                .collect();
            if wrong.is_empty() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "metrics do not settle:\n{}\n---- /metrics ----\n{text}",
                wrong.join("\n")
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}
