//! What each instance of a fleet tells the others about itself, for the
//! operator console's fleet table (sans-IO; the channel is
//! `super::instances`).
//!
//! The message published on `<prefix>:reports` every few seconds:
//! `{"t":"report","allocations":N,"to_peer":B,"to_client":B,"sessions":N,"rooms":N,"src":I,"ts":T,"boot":B,"seq":S}`:
//! instance `I` holds `N` allocations now and has relayed `B` payload
//! bytes each way since it started, and its signaling endpoint has that
//! many sessions and rooms; stamped ([`Stamp`]) and sealed for that
//! channel with the fleet's secret (`signaling::switchboard::fleet_seal`),
//! JSON so that an operator can read it with `redis-cli`.
//!
//! Everything read from Redis is untrusted input: a text over
//! [`MAX_MESSAGE_BYTES`], unsigned or signed for another channel or fleet,
//! not JSON of this shape, from an instance name the config would not
//! take, stale or replayed, is refused with a [`ReportWireError`]; the
//! driver counts and drops it. Nothing here panics.

use serde::{Deserialize, Serialize};

use crate::config::is_fleet_name;
use crate::signaling::switchboard::fleet_seal::{FleetKeys, ReplayGuard, SealError, Stamp, SEAL_OVERHEAD_BYTES};

/// Longest instance id (as `fleet.instance_id`).
pub const MAX_INSTANCE_LEN: usize = 64;
/// Longest message accepted: five numbers of 20 digits, their names, the
/// stamp and the seal.
pub const MAX_MESSAGE_BYTES: usize = 192 + SEAL_OVERHEAD_BYTES;

/// Why a report from Redis was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ReportWireError {
    #[error("instance report over its size bound")]
    TooLarge,
    #[error("instance report is not valid JSON of the known shape")]
    Malformed,
    #[error("instance report names an invalid instance")]
    Invalid,
    #[error("instance report refused: {0}")]
    Seal(#[from] SealError),
}

/// One instance's numbers at one time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Report {
    /// Allocations now.
    pub allocations: u64,
    /// Payload bytes relayed to peers since the instance started.
    pub to_peer: u64,
    /// Payload bytes relayed to clients since the instance started.
    pub to_client: u64,
    /// Signaling sessions now (0 without an HTTP endpoint).
    pub sessions: u64,
    pub rooms: u64,
}

/// A verified report and who made it when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeardReport {
    pub report: Report,
    pub src: String,
    pub stamp: Stamp,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Envelope<'a> {
    #[serde(borrow)]
    t: &'a str,
    allocations: u64,
    to_peer: u64,
    to_client: u64,
    sessions: u64,
    rooms: u64,
    src: String,
    ts: u64,
    boot: u64,
    seq: u64,
}

impl Report {
    /// Its JSON as instance `src` makes it with `stamp`, unsigned.
    pub fn encode(&self, src: &str, stamp: Stamp) -> String {
        let envelope = Envelope {
            t: "report",
            allocations: self.allocations,
            to_peer: self.to_peer,
            to_client: self.to_client,
            sessions: self.sessions,
            rooms: self.rooms,
            src: src.to_owned(),
            ts: stamp.ts,
            boot: stamp.boot,
            seq: stamp.seq,
        };
        // Strings and numbers: serializing cannot fail.
        serde_json::to_string(&envelope).unwrap_or_default()
    }

    /// What instance `src` publishes on `channel` of the fleet of
    /// `prefix`: sealed.
    pub fn seal(&self, keys: &FleetKeys, prefix: &str, channel: &str, src: &str, stamp: Stamp) -> String {
        keys.seal(prefix, channel, &self.encode(src, stamp))
    }

    /// Parses the JSON of a report, unsigned (the body of a sealed one).
    pub fn parse(bytes: &[u8]) -> Result<HeardReport, ReportWireError> {
        if bytes.len() > MAX_MESSAGE_BYTES {
            return Err(ReportWireError::TooLarge);
        }
        let e: Envelope<'_> = serde_json::from_slice(bytes).map_err(|_| ReportWireError::Malformed)?;
        if e.t != "report" {
            return Err(ReportWireError::Malformed);
        }
        if !is_fleet_name(&e.src, MAX_INSTANCE_LEN) {
            return Err(ReportWireError::Invalid);
        }
        Ok(HeardReport {
            report: Report {
                allocations: e.allocations,
                to_peer: e.to_peer,
                to_client: e.to_client,
                sessions: e.sessions,
                rooms: e.rooms,
            },
            src: e.src,
            stamp: Stamp {
                ts: e.ts,
                boot: e.boot,
                seq: e.seq,
            },
        })
    }

    /// Opens a message heard on `channel` of the fleet of `prefix`: sealed
    /// with one of `keys`, of this shape, fresh at `now_ms` and not taken
    /// by `guard` before.
    pub fn open_message(
        bytes: &[u8],
        keys: &FleetKeys,
        (prefix, channel): (&str, &str),
        guard: &mut ReplayGuard,
        now_ms: u64,
    ) -> Result<HeardReport, ReportWireError> {
        if bytes.len() > MAX_MESSAGE_BYTES {
            return Err(ReportWireError::TooLarge);
        }
        let heard = Report::parse(keys.open(prefix, channel, bytes)?)?;
        guard.take(&heard.src, heard.stamp, now_ms)?;
        Ok(heard)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signaling::switchboard::fleet_seal::Stamper;

    const NOW: u64 = 1_700_000_000_000;

    fn keys() -> FleetKeys {
        FleetKeys::new(&["a-fleet-secret-for-the-tests"]).unwrap()
    }

    fn stamp(seq: u64) -> Stamp {
        Stamp { ts: NOW, boot: 9, seq }
    }

    #[test]
    fn reports_round_trip_sealed_and_the_largest_fits() {
        let keys = keys();
        let mut guard = ReplayGuard::default();
        let report = Report {
            allocations: 12,
            to_peer: 3_000,
            to_client: 4_000,
            sessions: 2,
            rooms: 1,
        };
        let text = report.seal(&keys, "P", "P:reports", "one", stamp(1));
        let heard = Report::open_message(text.as_bytes(), &keys, ("P", "P:reports"), &mut guard, NOW);
        assert_eq!(heard.as_ref().map(|h| (h.report, h.src.as_str())), Ok((report, "one")));
        let largest = Report {
            allocations: u64::MAX,
            to_peer: u64::MAX,
            to_client: u64::MAX,
            sessions: u64::MAX,
            rooms: u64::MAX,
        };
        let stamp = Stamp {
            ts: NOW,
            boot: u64::MAX,
            seq: u64::MAX,
        };
        let text = largest.seal(&keys, "P", "P:reports", &"i".repeat(MAX_INSTANCE_LEN), stamp);
        assert!(text.len() <= MAX_MESSAGE_BYTES, "{}", text.len());
        let heard = Report::open_message(text.as_bytes(), &keys, ("P", "P:reports"), &mut guard, NOW);
        assert_eq!(heard.map(|h| h.report), Ok(largest));
    }

    #[test]
    fn unsigned_foreign_stale_and_replayed_reports_are_refused() {
        let keys = keys();
        let report = Report::default();
        let mut guard = ReplayGuard::default();
        let mut open = |bytes: &[u8], place: (&str, &str)| Report::open_message(bytes, &keys, place, &mut guard, NOW);
        let refused = |e: SealError| Err(ReportWireError::Seal(e));
        let text = report.seal(&keys, "P", "P:reports", "one", stamp(1));
        assert!(open(text.as_bytes(), ("P", "P:reports")).is_ok());
        assert_eq!(open(text.as_bytes(), ("P", "P:reports")), refused(SealError::Replayed));
        assert_eq!(
            open(report.encode("one", stamp(2)).as_bytes(), ("P", "P:reports")),
            refused(SealError::Unsigned)
        );
        let misplaced = report.seal(&keys, "P", "P:revocations", "one", stamp(3));
        assert_eq!(
            open(misplaced.as_bytes(), ("P", "P:reports")),
            refused(SealError::BadSignature)
        );
        let foreign = FleetKeys::new(&["the-secret-of-another-fleet"]).unwrap();
        let forged = report.seal(&foreign, "P", "P:reports", "one", stamp(4));
        assert_eq!(
            open(forged.as_bytes(), ("P", "P:reports")),
            refused(SealError::BadSignature)
        );
        let old = report.seal(
            &keys,
            "P",
            "P:reports",
            "one",
            Stamp {
                ts: NOW - 60_000,
                ..stamp(5)
            },
        );
        assert_eq!(open(old.as_bytes(), ("P", "P:reports")), refused(SealError::Stale));
        assert_eq!(
            open(&vec![b' '; MAX_MESSAGE_BYTES + 1], ("P", "P:reports")),
            Err(ReportWireError::TooLarge)
        );
    }

    #[test]
    fn hostile_bodies_are_refused_without_panicking() {
        let numbers = r#""allocations":1,"to_peer":1,"to_client":1,"sessions":1,"rooms":1"#;
        let stamp = r#""ts":1,"boot":1,"seq":1"#;
        let cases = [
            ("not json".to_owned(), ReportWireError::Malformed),
            (
                format!(r#"{{"t":"revoke",{numbers},"src":"i",{stamp}}}"#),
                ReportWireError::Malformed,
            ),
            (
                format!(
                    r#"{{"t":"report","allocations":-1,"to_peer":1,"to_client":1,"sessions":1,"rooms":1,"src":"i",{stamp}}}"#
                ),
                ReportWireError::Malformed,
            ),
            (
                format!(r#"{{"t":"report",{numbers},"src":"i","x":1,{stamp}}}"#),
                ReportWireError::Malformed,
            ),
            (
                format!(r#"{{"t":"report",{numbers},"src":"a b",{stamp}}}"#),
                ReportWireError::Invalid,
            ),
            (
                format!(r#"{{"t":"report",{numbers},"src":"{}",{stamp}}}"#, "i".repeat(65)),
                ReportWireError::Invalid,
            ),
        ];
        for (text, want) in cases {
            assert_eq!(Report::parse(text.as_bytes()).map(|_| ()), Err(want), "{text}");
        }
        // Bounded mutation: only the unchanged bytes open.
        let keys = keys();
        let mut stamper = Stamper::new(3);
        let mut rng = crate::proto::xorshift::XorShift::new(0x2e9_0471);
        for round in 0..3_000u32 {
            let text = Report::default()
                .seal(&keys, "P", "P:reports", "one", stamper.next(NOW))
                .into_bytes();
            let mut bytes = text.clone();
            rng.mutate(&mut bytes, 1 + u64::from(round % 3));
            let mut guard = ReplayGuard::default();
            let heard = Report::open_message(&bytes, &keys, ("P", "P:reports"), &mut guard, NOW);
            assert_eq!(heard.is_ok(), bytes == text, "{}", String::from_utf8_lossy(&bytes));
        }
    }
}
