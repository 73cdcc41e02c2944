//! Headless Chromium driven by the scripts of `tests/browser`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use super::{run_with_timeout, CmdOutput};

/// What a headless-Chromium test needs: `tests/browser` (with
/// playwright-core installed), Debian's Chromium (or `$CHROMIUM`), and an
/// empty `target/test-artifacts/<name>` for its screenshots.
pub struct BrowserSetup {
    pub dir: PathBuf,
    pub chromium: PathBuf,
    pub artifacts: PathBuf,
}

/// Checks what a browser test needs and empties its artifacts dir `name`.
pub fn browser_setup(name: &str) -> BrowserSetup {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = root.join("tests").join("browser");
    assert!(
        dir.join("node_modules").join("playwright-core").is_dir(),
        "tests/browser/node_modules is missing: run `npm ci --prefix tests/browser` first \
         (scripts/test.sh does it)"
    );
    let chromium = std::env::var_os("CHROMIUM").map_or_else(|| PathBuf::from("/usr/bin/chromium"), PathBuf::from);
    assert!(
        chromium.is_file(),
        "no Chromium at {}: install Debian's `chromium` package or set CHROMIUM",
        chromium.display()
    );
    let artifacts = root.join("target").join("test-artifacts").join(name);
    let _ = fs::remove_dir_all(&artifacts);
    fs::create_dir_all(&artifacts).expect("create the artifacts dir");
    BrowserSetup {
        dir,
        chromium,
        artifacts,
    }
}

/// Runs browser script `script` of `tests/browser` on the demo page at
/// `base_url` in `room` within `limit` (with the browser console on
/// stderr when `verbose`), and returns its JSON summary, which must say
/// `"ok": true`.
pub fn run_browser_script(
    setup: &BrowserSetup,
    script: &str,
    base_url: &str,
    room: &str,
    limit: Duration,
    verbose: bool,
    extra_args: &[&str],
) -> serde_json::Value {
    let BrowserSetup {
        dir,
        chromium,
        artifacts,
    } = setup;
    let mut command = Command::new("node");
    command
        .arg(dir.join(script))
        .arg(base_url)
        .arg(room)
        .arg(artifacts)
        .args(extra_args)
        .env("CHROMIUM", chromium)
        .current_dir(dir);
    if verbose {
        command.env("TURNPIKE_BROWSER_VERBOSE", "1");
    }
    // Two Chromium runs at once on a small machine starve each other's
    // pages (getStats then misses its bound), as does other load.
    let _alone = super::machine::alone();
    let started = Instant::now();
    let out = run_with_timeout(&mut command, limit);
    eprintln!(
        "{script} ran for {:.1} s; screenshots in {}",
        started.elapsed().as_secs_f64(),
        artifacts.display()
    );
    assert!(
        out.success(),
        "{script} failed ({}):\n{}",
        out.status
            .map_or_else(|| format!("killed after {limit:?}"), |s| s.to_string()),
        out.combined()
    );
    if verbose {
        eprintln!("---- {script} stderr ----\n{}---- end ----", out.stderr);
    }
    let summary = json_summary(&out, script);
    eprintln!("summary: {summary}");
    assert_eq!(summary["ok"], serde_json::Value::Bool(true), "summary: {summary}");
    summary
}

/// The last stdout line of browser script `script` that is a JSON object.
pub fn json_summary(out: &CmdOutput, script: &str) -> serde_json::Value {
    out.stdout
        .lines()
        .rev()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line.trim()).ok())
        .find(serde_json::Value::is_object)
        .unwrap_or_else(|| panic!("{script} printed no JSON summary line; its output:\n{}", out.combined()))
}
