//! Whether the whole server relays more than `alternate.bytes_per_second`,
//! judged from the running total of relayed bytes that the driver samples
//! now and then (every shard heartbeat, 250 ms): the rate over the last
//! [`WINDOW`] of samples. Sans-IO: the driver passes the time and the
//! total, and sets the quota's saturated flag from the answer.
//!
//! Invariants: at most [`MAX_SAMPLES`] samples are kept, in time order;
//! no verdict of "over" is given before half a window of samples exists,
//! so a start-up burst or a single sample cannot shed anything.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// The span the rate is measured over.
pub const WINDOW: Duration = Duration::from_secs(1);

/// Bound on the samples kept, whatever the driver's sampling rate.
const MAX_SAMPLES: usize = 16;

#[derive(Debug)]
pub struct BandwidthWatch {
    /// Bytes a second; 0 never says "over".
    threshold: u64,
    samples: VecDeque<(Instant, u64)>,
}

impl BandwidthWatch {
    pub fn new(threshold: u64) -> BandwidthWatch {
        BandwidthWatch {
            threshold,
            samples: VecDeque::with_capacity(MAX_SAMPLES),
        }
    }

    pub fn set_threshold(&mut self, threshold: u64) {
        self.threshold = threshold;
    }

    /// Records that `total` bytes had been relayed by `now` and says
    /// whether the rate over the last window is above the threshold.
    pub fn sample(&mut self, now: Instant, total: u64) -> bool {
        if self.samples.back().is_some_and(|(at, _)| *at > now) {
            return false;
        }
        if self.samples.len() == MAX_SAMPLES {
            self.samples.pop_front();
        }
        self.samples.push_back((now, total));
        // Keep one sample at or beyond the window's start, so that the
        // span measured is a whole window once there is one.
        while self.samples.len() > 1 && self.samples[1].0 + WINDOW <= now {
            self.samples.pop_front();
        }
        let Some(&(since, from)) = self.samples.front() else {
            return false;
        };
        let span = now.duration_since(since);
        if self.threshold == 0 || span < WINDOW / 2 {
            return false;
        }
        let bytes = u128::from(total.saturating_sub(from));
        bytes * 1_000_000_000 > u128::from(self.threshold) * span.as_nanos()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TICK: Duration = Duration::from_millis(250);

    /// An arbitrary origin for fake time: the one real clock read.
    #[allow(clippy::disallowed_methods)]
    fn origin() -> Instant {
        Instant::now()
    }

    /// Feeds `rate` bytes a second for `ticks` heartbeats; the last verdict.
    fn feed(
        watch: &mut BandwidthWatch,
        start: Instant,
        from_tick: u32,
        ticks: u32,
        total: &mut u64,
        rate: u64,
    ) -> bool {
        let mut over = false;
        for i in from_tick..from_tick + ticks {
            *total += rate / 4;
            over = watch.sample(start + TICK * i, *total);
        }
        over
    }

    #[test]
    fn a_rate_above_the_threshold_is_over_and_falling_back_clears_it() {
        let start = origin();
        let mut watch = BandwidthWatch::new(1_000_000);
        let mut total = 0;
        assert!(!feed(&mut watch, start, 0, 8, &mut total, 900_000));
        assert!(feed(&mut watch, start, 8, 8, &mut total, 1_200_000));
        assert!(!feed(&mut watch, start, 16, 8, &mut total, 500_000));
    }

    #[test]
    fn no_verdict_before_half_a_window_nor_with_no_threshold() {
        let start = origin();
        let mut watch = BandwidthWatch::new(1);
        assert!(!watch.sample(start, 0));
        assert!(
            !watch.sample(start + TICK, 1_000_000),
            "a quarter second is too short to judge"
        );
        assert!(watch.sample(start + TICK * 2, 2_000_000));
        watch.set_threshold(0);
        assert!(!watch.sample(start + TICK * 3, 3_000_000));
    }

    #[test]
    fn samples_stay_bounded_and_a_clock_going_back_is_ignored() {
        let start = origin();
        let mut watch = BandwidthWatch::new(10);
        for i in 0..100 {
            watch.sample(start + Duration::from_millis(i), i * 1000);
        }
        assert!(watch.samples.len() <= MAX_SAMPLES);
        assert!(!watch.sample(start, u64::MAX));
    }
}
