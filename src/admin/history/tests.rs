//! The history with fake time: hours of samples in a fixed memory, rates
//! from counters, and the catalogue read from a known snapshot.

use std::time::{Duration, Instant};

use super::catalogue::{read, Fleet, Kind, Signaling, Sources};
use super::*;
use crate::proto::stats::Snapshot;

/// A snapshot as the shards would sum it after `seconds` of a known
/// load: 3 UDP and 1 TLS allocations, 1000 bytes and 10 packets a second
/// each way, one 486 and one bad-integrity failure a second.
fn loaded(seconds: u64) -> Snapshot {
    let mut s = Snapshot::default();
    s.allocations[0][0] = 3;
    s.allocations[2][1] = 1;
    s.to_peer.bytes = 1000 * seconds;
    s.to_peer.packets = 10 * seconds;
    s.to_client.bytes = 1000 * seconds;
    s.to_client.packets = 10 * seconds;
    let refused = CODES_486;
    s.counters.requests[1][refused] = seconds;
    s.counters.auth_failures[2] = seconds;
    s
}

/// Where 486 is in `CODES`.
const CODES_486: usize = 14;

/// An arbitrary origin for fake time: the one real clock read.
#[allow(clippy::disallowed_methods)]
fn origin() -> Instant {
    Instant::now()
}

fn sources(shards: &Snapshot) -> Sources<'_> {
    Sources {
        shards,
        signaling: Some(Signaling {
            rooms: 2,
            peers: 3,
            sessions: 4,
        }),
        fleet: Some(Fleet::default()),
    }
}

fn series<'a>(view: &'a View, chart: &str, label: &str) -> &'a SeriesView {
    view.charts
        .iter()
        .find(|c| c.chart.id == chart)
        .and_then(|c| c.series.iter().find(|s| s.label == label))
        .unwrap_or_else(|| panic!("no series {chart}/{label}"))
}

#[test]
fn the_catalogue_reads_the_snapshot_as_metrics_does() {
    assert_eq!(crate::proto::stats::CODES[CODES_486], 486);
    let snapshot = loaded(10);
    let readings = read(&sources(&snapshot));
    let value = |chart: &str, label: &str| {
        readings
            .iter()
            .find(|r| r.chart == chart && r.label == label)
            .unwrap_or_else(|| panic!("no {chart}/{label}"))
            .value
    };
    assert_eq!(value("allocations", "total"), 4);
    assert_eq!(value("allocations", "udp"), 3);
    assert_eq!(value("allocations", "tls"), 1);
    assert_eq!(value("relayed_bits", "to_peer"), 10_000);
    assert_eq!(value("relayed_packets", "to_client"), 100);
    assert_eq!(value("shed", "refused_486"), 10);
    assert_eq!(value("authentications", "bad_integrity"), 10);
    assert_eq!(value("signaling", "sessions"), 4);
    assert_eq!(value("fleet_link", "redis_up"), 0);
    assert_eq!(value("fleet", "instances"), 0);
    // Without the optional sources, their charts are gone.
    let alone = read(&Sources {
        shards: &snapshot,
        signaling: None,
        fleet: None,
    });
    assert_eq!(alone.len(), 22);
    assert_eq!(readings.len(), 32);
}

#[test]
fn counters_become_rates_and_gauges_stay_as_read() {
    let start = origin();
    let layout = read(&sources(&Snapshot::default()));
    let mut history = History::new(CAPACITY, INTERVAL, &layout);
    for i in 0..4u64 {
        let snapshot = loaded(i * 5);
        let at = start + Duration::from_secs(i * 5);
        assert!(history.record(at, 1_000_000 + i * 5000, &read(&sources(&snapshot))));
    }
    let view = history.view(None);
    assert_eq!(view.times, [1_000_000, 1_005_000, 1_010_000, 1_015_000]);
    let bits = series(&view, "relayed_bits", "to_peer");
    assert_eq!(bits.kind, Kind::BitsPerSecond);
    assert_eq!(bits.values, [None, Some(8000.0), Some(8000.0), Some(8000.0)]);
    assert_eq!(bits.total, 15_000, "the byte counter at the last sample");
    assert_eq!(
        series(&view, "relayed_packets", "to_client").values[1..],
        [Some(10.0); 3]
    );
    assert_eq!(series(&view, "shed", "refused_486").values[3], Some(1.0));
    assert_eq!(series(&view, "allocations", "total").values, [Some(4.0); 4]);

    // Only the samples after `since`.
    let newer = history.view(Some(1_005_000));
    assert_eq!(newer.times, [1_010_000, 1_015_000]);
    assert_eq!(series(&newer, "relayed_bits", "to_peer").values.len(), 2);
}

#[test]
fn a_late_sample_averages_over_its_gap() {
    let start = origin();
    let layout = read(&sources(&Snapshot::default()));
    let mut history = History::new(4, INTERVAL, &layout);
    history.record(start, 0, &read(&sources(&loaded(0))));
    // 20 s later (the process was stopped): 20 s of traffic.
    history.record(start + Duration::from_secs(20), 20_000, &read(&sources(&loaded(20))));
    let view = history.view(None);
    assert_eq!(series(&view, "relayed_bits", "to_peer").values[1], Some(8000.0));
}

#[test]
fn a_sample_of_other_series_is_refused() {
    let snapshot = Snapshot::default();
    let mut history = History::new(4, INTERVAL, &read(&sources(&snapshot)));
    let without_fleet = read(&Sources {
        fleet: None,
        ..sources(&snapshot)
    });
    assert!(!history.record(origin(), 0, &without_fleet));
    assert!(history.is_empty());
}

/// The figure of BENCHMARKS.md ("Console history"): ten simulated hours
/// of sampling every 5 s leave every ring at exactly its capacity, in the
/// storage it was given at start, holding the last hour.
#[test]
fn hours_of_samples_fill_the_rings_and_never_more() {
    let start = origin();
    let layout = read(&sources(&Snapshot::default()));
    let mut history = History::new(CAPACITY, INTERVAL, &layout);
    let storage: Vec<*const f32> = history.series.iter().map(|s| s.values.storage()).collect();
    let times = history.times.storage();
    let bytes = history.bytes();
    let samples = 10 * 3600 / INTERVAL.as_secs();
    for i in 0..samples {
        let elapsed = i * INTERVAL.as_secs();
        let snapshot = loaded(elapsed);
        assert!(history.record(
            start + Duration::from_secs(elapsed),
            elapsed * 1000,
            &read(&sources(&snapshot))
        ));
    }
    assert_eq!(history.len(), CAPACITY);
    for series in &history.series {
        assert_eq!((series.values.len(), series.values.capacity()), (CAPACITY, CAPACITY));
    }
    assert_eq!(
        history.series.iter().map(|s| s.values.storage()).collect::<Vec<_>>(),
        storage,
        "a ring moved"
    );
    assert_eq!(history.times.storage(), times);
    assert_eq!(history.bytes(), bytes);
    // 32 series of 720 f32 values, and 720 u64 times.
    assert_eq!(history.series.len(), 32);
    assert_eq!(bytes, 32 * CAPACITY * 4 + CAPACITY * 8);
    assert_eq!(bytes, 97_920);
    let view = history.view(None);
    let last = (samples - 1) * INTERVAL.as_secs() * 1000;
    assert_eq!(view.times.first(), Some(&(last - (CAPACITY as u64 - 1) * 5000)));
    assert_eq!(view.times.last(), Some(&last));
    assert_eq!(view.bytes, bytes);
    assert!(series(&view, "relayed_bits", "to_client")
        .values
        .iter()
        .all(|v| *v == Some(8000.0)));
}
