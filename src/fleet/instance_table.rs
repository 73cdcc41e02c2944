//! The fleet's instances as this one last heard them (sans-IO: times are
//! passed in), for the operator console's fleet table and
//! `turnpike_fleet_instances`: each instance's last verified report
//! ([`super::report_wire`]), when it was made, and the one before it, so
//! that its relayed bytes become a rate over the time between the two
//! (signed times, so a late delivery does not skew it).
//!
//! Bounds: at most [`MAX_INSTANCES`]; a report from an instance not yet
//! held, when the table is full, takes the place of the one heard longest
//! ago if that one is silent, and is dropped otherwise. Only reports
//! sealed with the fleet's secret reach the table, so only holders of the
//! secret can fill it. An instance silent for [`FORGET_AFTER_MS`] is
//! forgotten. A report of another boot of an instance has no rate (its
//! counters started again).

use std::collections::BTreeMap;

use serde::Serialize;

use super::report_wire::Report;

/// Most instances held.
pub const MAX_INSTANCES: usize = 64;
/// An instance not heard for this long is shown as silent and no longer
/// counted live: three of its reports missed.
pub const SILENT_AFTER_MS: u64 = 15_000;
/// ... and forgotten after this long.
pub const FORGET_AFTER_MS: u64 = 300_000;

#[derive(Debug, Clone, Copy)]
struct Entry {
    report: Report,
    /// When it was made (unix ms, as signed).
    at_ms: u64,
    boot: u64,
    /// The report before it, of the same boot, and when it was made.
    previous: Option<(Report, u64)>,
}

/// The instances heard lately, by name.
#[derive(Debug, Default)]
pub struct InstanceTable {
    entries: BTreeMap<String, Entry>,
}

/// One instance as the console shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InstanceView {
    pub instance: String,
    /// This instance.
    pub own: bool,
    /// Time since its last report was made.
    pub heard_ms_ago: u64,
    /// Not heard for [`SILENT_AFTER_MS`].
    pub silent: bool,
    pub allocations: u64,
    /// Relayed bits a second each way between its last two reports (none
    /// after only one).
    pub to_peer_bps: Option<f64>,
    pub to_client_bps: Option<f64>,
    pub sessions: u64,
    pub rooms: u64,
}

impl InstanceTable {
    /// Records `report` of `instance` (boot `boot`), made at `at_ms`, heard
    /// at `now_ms`.
    pub fn record(&mut self, instance: &str, report: Report, at_ms: u64, boot: u64, now_ms: u64) {
        self.entries
            .retain(|_, e| e.at_ms.saturating_add(FORGET_AFTER_MS) >= now_ms);
        if let Some(entry) = self.entries.get_mut(instance) {
            if at_ms <= entry.at_ms && boot == entry.boot {
                // Older than what is held (the replay guard lets a late
                // one through): nothing newer to learn.
                return;
            }
            let previous = (boot == entry.boot).then_some((entry.report, entry.at_ms));
            *entry = Entry {
                report,
                at_ms,
                boot,
                previous,
            };
            return;
        }
        if self.entries.len() >= MAX_INSTANCES {
            let oldest = self
                .entries
                .iter()
                .min_by_key(|(_, e)| e.at_ms)
                .map(|(name, e)| (name.clone(), e.at_ms));
            match oldest {
                Some((name, at)) if at.saturating_add(SILENT_AFTER_MS) < now_ms => {
                    self.entries.remove(&name);
                }
                _ => return,
            }
        }
        self.entries.insert(
            instance.to_owned(),
            Entry {
                report,
                at_ms,
                boot,
                previous: None,
            },
        );
    }

    /// Every instance held, by name; `own` is this instance's name.
    pub fn view(&self, own: &str, now_ms: u64) -> Vec<InstanceView> {
        self.entries
            .iter()
            .map(|(name, e)| {
                let rate = |bytes: fn(&Report) -> u64| {
                    let (before, at) = e.previous?;
                    let ms = e.at_ms.checked_sub(at).filter(|ms| *ms > 0)?;
                    Some(bytes(&e.report).saturating_sub(bytes(&before)) as f64 * 8000.0 / ms as f64)
                };
                let heard_ms_ago = now_ms.saturating_sub(e.at_ms);
                InstanceView {
                    instance: name.clone(),
                    own: name == own,
                    heard_ms_ago,
                    silent: heard_ms_ago > SILENT_AFTER_MS,
                    allocations: e.report.allocations,
                    to_peer_bps: rate(|r| r.to_peer),
                    to_client_bps: rate(|r| r.to_client),
                    sessions: e.report.sessions,
                    rooms: e.report.rooms,
                }
            })
            .collect()
    }

    /// Instances heard within [`SILENT_AFTER_MS`], and their allocations.
    pub fn live(&self, now_ms: u64) -> (u64, u64) {
        self.entries
            .values()
            .filter(|e| e.at_ms.saturating_add(SILENT_AFTER_MS) >= now_ms)
            .fold((0, 0), |(n, allocations), e| {
                (n + 1, allocations + e.report.allocations)
            })
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_700_000_000_000;

    fn report(allocations: u64, bytes: u64) -> Report {
        Report {
            allocations,
            to_peer: bytes,
            to_client: 2 * bytes,
            sessions: 1,
            rooms: 1,
        }
    }

    #[test]
    fn two_reports_give_a_rate_and_a_restart_none() {
        let mut table = InstanceTable::default();
        table.record("b", report(3, 1_000), NOW, 1, NOW);
        table.record("a", report(1, 0), NOW, 7, NOW);
        let view = table.view("a", NOW);
        assert_eq!(view.iter().map(|v| v.instance.as_str()).collect::<Vec<_>>(), ["a", "b"]);
        assert!(view[0].own && !view[1].own);
        assert_eq!(view[1].to_peer_bps, None, "one report: no rate yet");
        // 5 s later, 5 000 more bytes to peers: 8 000 bit/s; twice that back.
        table.record("b", report(4, 6_000), NOW + 5_000, 1, NOW + 5_000);
        let b = &table.view("a", NOW + 6_000)[1];
        assert_eq!((b.allocations, b.heard_ms_ago, b.silent), (4, 1_000, false));
        assert_eq!((b.to_peer_bps, b.to_client_bps), (Some(8_000.0), Some(16_000.0)));
        // A late copy of the older report changes nothing.
        table.record("b", report(3, 1_000), NOW, 1, NOW + 6_000);
        assert_eq!(table.view("a", NOW + 6_000)[1], *b);
        // A restart (another boot): counters start again, no rate.
        table.record("b", report(0, 10), NOW + 7_000, 2, NOW + 7_000);
        assert_eq!(table.view("a", NOW + 7_000)[1].to_peer_bps, None);
        assert_eq!(table.live(NOW + 7_000), (2, 1));
    }

    #[test]
    fn silent_instances_stop_counting_then_are_forgotten() {
        let mut table = InstanceTable::default();
        table.record("a", report(2, 0), NOW, 1, NOW);
        table.record("b", report(5, 0), NOW, 1, NOW);
        table.record("a", report(2, 0), NOW + 20_000, 1, NOW + 20_000);
        assert_eq!(table.live(NOW + 20_000), (1, 2), "b missed three reports");
        assert!(table.view("a", NOW + 20_000)[1].silent);
        table.record(
            "a",
            report(2, 0),
            NOW + FORGET_AFTER_MS + 1,
            1,
            NOW + FORGET_AFTER_MS + 1,
        );
        assert_eq!(table.len(), 1, "b forgotten");
    }

    #[test]
    fn a_full_table_takes_a_newcomer_only_in_a_silent_ones_place() {
        let mut table = InstanceTable::default();
        for i in 0..MAX_INSTANCES as u64 {
            table.record(&format!("i{i}"), report(1, 0), NOW + i, 1, NOW + i);
        }
        table.record("late", report(1, 0), NOW + 100, 1, NOW + 100);
        assert_eq!(table.len(), MAX_INSTANCES);
        assert!(
            table.view("x", NOW).iter().all(|v| v.instance != "late"),
            "every one is live"
        );
        let later = NOW + SILENT_AFTER_MS + 10;
        table.record("late", report(1, 0), later, 1, later);
        assert_eq!(table.len(), MAX_INSTANCES);
        let names: Vec<String> = table.view("x", later).into_iter().map(|v| v.instance).collect();
        assert!(names.contains(&"late".to_owned()) && !names.contains(&"i0".to_owned()));
    }
}
