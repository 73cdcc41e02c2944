//! `tests/python/aiortc_call.py`, a relay-only WebRTC call between two
//! `aiortc` peers (Python, no browser), run and its account checked; and
//! the counts of the server's `allocation deleted` log lines, which back
//! it (and any other relaying test).

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{run_with_timeout, CmdOutput};

/// Longest the Python call may run (it bounds itself to about 60 s).
pub const CALL_LIMIT: Duration = Duration::from_secs(120);

/// What `aiortc_call.py` sends and requires each way; the summary must
/// report at least this much.
pub const MESSAGES_EACH_WAY: u64 = 20;
pub const MIN_VIDEO_FRAMES: u64 = 30;
pub const MIN_AUDIO_FRAMES: u64 = 50;

/// The script, to be run as `python3 <script> <ws-url> <room>`.
pub fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/python/aiortc_call.py")
}

/// Panics with the install hint unless `aiortc` and `websockets` import.
pub fn require_python_modules() {
    let check = run_with_timeout(
        Command::new("python3").args(["-c", "import aiortc, websockets"]),
        Duration::from_secs(60),
    );
    assert!(
        check.success(),
        "python3 cannot import aiortc/websockets: run `pip install -r tests/python/requirements.txt`\n{}",
        check.combined()
    );
}

/// Runs `python3` as `command` builds it (the script's arguments are
/// added here: `url` of the signaling endpoint, `room`) and checks the
/// call's own account: it succeeded, every message arrived each way,
/// enough video and audio frames were decoded, and both sides' selected
/// candidate pairs are relay ↔ relay. Returns the summary.
pub fn run_call(mut command: Command, url: &str, room: &str) -> Value {
    require_python_modules();
    let started = Instant::now();
    let out: CmdOutput = run_with_timeout(command.arg(script()).arg(url).arg(room), CALL_LIMIT);
    let took = started.elapsed();
    eprintln!("---- aiortc_call.py ({took:.1?}) ----\n{}", out.combined());
    assert!(
        out.status.is_some(),
        "aiortc_call.py did not finish within {CALL_LIMIT:?}"
    );
    assert!(out.success(), "aiortc_call.py failed ({:?})", out.status);
    let summary = summary_of(&out.stdout).expect("a JSON summary line on stdout");
    assert_eq!(summary["result"], "ok", "{summary}");
    assert_eq!(summary["room"], room, "{summary}");
    assert_eq!(count(&summary, "messages_a_to_b"), MESSAGES_EACH_WAY, "{summary}");
    assert_eq!(count(&summary, "messages_b_to_a"), MESSAGES_EACH_WAY, "{summary}");
    assert!(
        count(&summary, "video_frames_received_by_a") >= MIN_VIDEO_FRAMES,
        "{summary}"
    );
    assert!(
        count(&summary, "audio_frames_received_by_b") >= MIN_AUDIO_FRAMES,
        "{summary}"
    );
    for key in [
        "a_local_candidate_type",
        "a_remote_candidate_type",
        "b_local_candidate_type",
        "b_remote_candidate_type",
    ] {
        assert_eq!(summary[key], "relay", "{key}: {summary}");
    }
    for side in ["a_selected_pairs", "b_selected_pairs"] {
        let pairs = summary[side]
            .as_array()
            .unwrap_or_else(|| panic!("summary has no {side}: {summary}"));
        assert!(!pairs.is_empty(), "{side} is empty: {summary}");
        for pair in pairs {
            assert_eq!(pair["local_type"], "relay", "{side}: {pair}");
            assert_eq!(pair["remote_type"], "relay", "{side}: {pair}");
        }
    }
    eprintln!("call took {took:.1?}");
    summary
}

/// The addresses of both ends of every selected pair of `side`
/// (`a_selected_pairs` or `b_selected_pairs`) of a [`run_call`] summary.
pub fn pair_ends(summary: &Value, side: &str) -> Vec<std::net::SocketAddr> {
    summary[side]
        .as_array()
        .unwrap_or_else(|| panic!("summary has no {side}: {summary}"))
        .iter()
        .flat_map(|pair| {
            ["local", "remote"].map(|end| {
                pair[end]
                    .as_str()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or_else(|| panic!("{side}: bad {end} address in {pair}"))
            })
        })
        .collect()
}

/// The last stdout line that is a JSON object.
pub fn summary_of(stdout: &str) -> Option<Value> {
    stdout
        .lines()
        .rev()
        .filter(|line| line.trim_start().starts_with('{'))
        .find_map(|line| serde_json::from_str(line).ok())
}

pub fn count(summary: &Value, key: &str) -> u64 {
    summary[key]
        .as_u64()
        .unwrap_or_else(|| panic!("summary has no count {key:?}: {summary}"))
}

/// The `name=value` field of a tracing log line, as a number.
pub fn log_field(line: &str, name: &str) -> Option<u64> {
    let key = format!(" {name}=");
    let rest = &line[line.find(&key)? + key.len()..];
    let end = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
    rest[..end].parse().ok()
}
