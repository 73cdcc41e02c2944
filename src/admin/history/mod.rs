//! The console's history of the last hour, kept in the server: one
//! fixed-size [`ring`] of samples per series of the [`catalogue`], plus
//! one of their times. No database and no growth: the rings are
//! allocated when the admin API starts ([`History::new`]) and a sample
//! beyond [`CAPACITY`] overwrites the oldest, so the history holds
//! [`History::bytes`] however long the server runs.
//!
//! Sans-IO: the driver (`super::sampler`) reads the sources and the clock
//! and hands both in ([`History::record`]); nothing here reads either.
//! Counters become rates here, over the monotonic time between two
//! samples (a late sample averages over its longer gap; the first sample
//! of a rate has none: `null`).

pub mod catalogue;
pub mod ring;

use std::time::{Duration, Instant};

use serde::Serialize;

use catalogue::{Chart, Kind, Reading, CHARTS};
use ring::Ring;

/// Time between two samples.
pub const INTERVAL: Duration = Duration::from_secs(5);
/// Samples kept per series: an hour at [`INTERVAL`].
pub const CAPACITY: usize = 720;

/// One series and its samples.
#[derive(Debug)]
struct Series {
    chart: &'static str,
    label: &'static str,
    kind: Kind,
    /// Charted values: gauges as read, rates per second (NaN: none).
    values: Ring<f32>,
    /// The raw value at the last sample (a counter's total), for the next
    /// rate and for the console's "now".
    raw: u64,
}

/// Every series' last [`CAPACITY`] samples.
#[derive(Debug)]
pub struct History {
    interval: Duration,
    /// Unix milliseconds of each sample.
    times: Ring<u64>,
    series: Vec<Series>,
    /// When the last sample was taken (monotonic), for rates.
    last: Option<Instant>,
}

impl History {
    /// An empty history of `capacity` samples, taken every `interval`, of
    /// the series `layout` lists (one sample's [`catalogue::read`]: which
    /// series there are depends on which sources there are, fixed at
    /// start).
    pub fn new(capacity: usize, interval: Duration, layout: &[Reading]) -> History {
        History {
            interval,
            times: Ring::new(capacity),
            series: layout
                .iter()
                .map(|r| Series {
                    chart: r.chart,
                    label: r.label,
                    kind: r.kind,
                    values: Ring::new(capacity),
                    raw: 0,
                })
                .collect(),
            last: None,
        }
    }

    /// Records the sample `readings`, read at `mono` (monotonic) and
    /// `unix_ms` (wall clock, what the console shows). A sample of other
    /// series than the layout's is refused (false) and changes nothing.
    pub fn record(&mut self, mono: Instant, unix_ms: u64, readings: &[Reading]) -> bool {
        let same_layout = readings.len() == self.series.len()
            && readings
                .iter()
                .zip(&self.series)
                .all(|(r, s)| (r.chart, r.label, r.kind) == (s.chart, s.label, s.kind));
        if !same_layout {
            return false;
        }
        let elapsed = self.last.map(|last| mono.saturating_duration_since(last).as_secs_f64());
        for (reading, series) in readings.iter().zip(&mut self.series) {
            let rate = |scale: f64| match elapsed {
                Some(secs) if secs > 0.0 => reading.value.saturating_sub(series.raw) as f64 * scale / secs,
                _ => f64::NAN,
            };
            let value = match series.kind {
                Kind::Gauge => reading.value as f64,
                Kind::PerSecond => rate(1.0),
                Kind::BitsPerSecond => rate(8.0),
            };
            series.values.push(value as f32);
            series.raw = reading.value;
        }
        self.times.push(unix_ms);
        self.last = Some(mono);
        true
    }

    /// Samples held now (at most the capacity).
    pub fn len(&self) -> usize {
        self.times.len()
    }

    pub fn is_empty(&self) -> bool {
        self.times.is_empty()
    }

    /// What the rings take, fixed at [`History::new`]: times and every
    /// series' values.
    pub fn bytes(&self) -> usize {
        self.times.bytes() + self.series.iter().map(|s| s.values.bytes()).sum::<usize>()
    }

    /// The samples taken after `since_ms` (all of them without), as
    /// `GET /v1/history` answers them.
    pub fn view(&self, since_ms: Option<u64>) -> View {
        let skip = since_ms.map_or(0, |since| self.times.iter().take_while(|t| *t <= since).count());
        let charts = CHARTS
            .iter()
            .filter_map(|chart| {
                let series: Vec<SeriesView> = self
                    .series
                    .iter()
                    .filter(|s| s.chart == chart.id)
                    .map(|s| SeriesView {
                        label: s.label,
                        kind: s.kind,
                        total: s.raw,
                        values: s.values.iter().skip(skip).map(|v| v.is_finite().then_some(v)).collect(),
                    })
                    .collect();
                (!series.is_empty()).then_some(ChartView { chart: *chart, series })
            })
            .collect();
        View {
            interval_s: self.interval.as_secs(),
            capacity: self.times.capacity(),
            bytes: self.bytes(),
            times: self.times.iter().skip(skip).collect(),
            charts,
        }
    }
}

/// `GET /v1/history`'s answer.
#[derive(Debug, Serialize)]
pub struct View {
    pub interval_s: u64,
    /// Samples kept per series.
    pub capacity: usize,
    /// What the history takes in memory.
    pub bytes: usize,
    /// Unix milliseconds of each sample returned, oldest first.
    pub times: Vec<u64>,
    pub charts: Vec<ChartView>,
}

#[derive(Debug, Serialize)]
pub struct ChartView {
    #[serde(flatten)]
    pub chart: Chart,
    pub series: Vec<SeriesView>,
}

#[derive(Debug, Serialize)]
pub struct SeriesView {
    pub label: &'static str,
    pub kind: Kind,
    /// The raw value at the last sample: a gauge's value, a counter's
    /// total (bytes for a bit rate), as `/metrics` had it then.
    pub total: u64,
    /// One per time; `null` where there is no rate (the first sample).
    pub values: Vec<Option<f32>>,
}

#[cfg(test)]
mod tests;
