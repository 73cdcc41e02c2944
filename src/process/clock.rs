//! The clock, read only here: the protocol core gets time passed in
//! (STYLE.md habit 1), and `clippy.toml` forbids `Instant::now` and
//! `SystemTime::now` everywhere else.

use crate::proto::Now;

#[allow(clippy::disallowed_methods)]
pub fn now() -> Now {
    let unix_secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    Now {
        mono: std::time::Instant::now(),
        unix_secs,
    }
}

#[allow(clippy::disallowed_methods)]
pub fn mono() -> std::time::Instant {
    std::time::Instant::now()
}

/// Wall-clock milliseconds since the Unix epoch (what a chart's time
/// axis shows).
#[allow(clippy::disallowed_methods)]
pub fn unix_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

pub fn unix_secs() -> u64 {
    now().unix_secs
}

/// The wall clock, for what is dated in it (certificates' validity).
#[allow(clippy::disallowed_methods)]
pub fn wall() -> std::time::SystemTime {
    std::time::SystemTime::now()
}
