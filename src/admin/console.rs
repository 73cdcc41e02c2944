//! The operator console: a page at `/console` on the admin listener, with
//! its modules under `/console/`, built into the binary from
//! `web/console/` (the demo page's look, `web/demo.css`, and the charting
//! library uPlot, vendored at a pinned version in `web/vendor/uplot/`).
//!
//! The files hold no data and are served without the key; the page asks
//! for the key, keeps it in the tab's `sessionStorage`, and sends it as
//! `Authorization: Bearer` to `GET /v1/history`, `GET /v1/allocations`
//! and the API's actions, exactly as a script would. Every URL it names
//! is a path on the same origin (no host, no scheme), so the console works
//! wherever the listener is reached from: directly, or through an SSH
//! tunnel to a loopback-only listener.

use axum::Router;

use crate::process::web_assets::{self, asset, Asset, CSS, HTML, JAVASCRIPT, TEXT};

/// Scripts, styles and fetches from this listener only; no inline script
/// or style, no eval (uPlot needs none: it styles its elements through
/// the DOM, which a CSP allows), no frames, no form posts, no plugins.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; \
                   base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// Every file of the console; `main.js` is the entry module.
const ASSETS: &[Asset] = &[
    asset("/console", HTML, include_str!("../../web/console/index.html")),
    asset("/console/demo.css", CSS, include_str!("../../web/demo.css")),
    asset(
        "/console/console.css",
        CSS,
        include_str!("../../web/console/console.css"),
    ),
    asset(
        "/console/main.js",
        JAVASCRIPT,
        include_str!("../../web/console/main.js"),
    ),
    asset("/console/api.js", JAVASCRIPT, include_str!("../../web/console/api.js")),
    asset(
        "/console/charts.js",
        JAVASCRIPT,
        include_str!("../../web/console/charts.js"),
    ),
    asset(
        "/console/format.js",
        JAVASCRIPT,
        include_str!("../../web/console/format.js"),
    ),
    asset(
        "/console/table.js",
        JAVASCRIPT,
        include_str!("../../web/console/table.js"),
    ),
    asset(
        "/console/confirm.js",
        JAVASCRIPT,
        include_str!("../../web/console/confirm.js"),
    ),
    asset(
        "/console/vendor/uPlot.esm.js",
        JAVASCRIPT,
        include_str!("../../web/vendor/uplot/uPlot.esm.js"),
    ),
    asset(
        "/console/vendor/uPlot.min.css",
        CSS,
        include_str!("../../web/vendor/uplot/uPlot.min.css"),
    ),
    asset(
        "/console/vendor/LICENSE",
        TEXT,
        include_str!("../../web/vendor/uplot/LICENSE"),
    ),
];

/// `router` with the console's files.
pub fn routes<S: Clone + Send + Sync + 'static>(router: Router<S>) -> Router<S> {
    web_assets::routes(router, ASSETS, CSP)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::process::web_assets::checks;

    #[test]
    fn every_file_the_console_names_is_served() {
        let missing = checks::unserved_references(ASSETS);
        assert!(missing.is_empty(), "{missing:#?}");
    }

    #[test]
    fn the_console_has_no_inline_script_or_style_and_names_no_host() {
        assert_eq!(checks::inline_code(ASSETS[0].body), Vec::<&str>::new());
        assert!(!CSP.contains("unsafe"), "{CSP}");
        // Through an SSH tunnel the browser's host is not the server's:
        // the console's own files name paths only.
        // (The favicon's data URL names the SVG namespace, and loads nothing.)
        for asset in ASSETS.iter().filter(|a| !a.path.contains("/vendor/")) {
            for line in asset.body.lines().filter(|l| !l.contains("\"data:image/")) {
                for scheme in ["http://", "https://", "ws://", "//localhost", "127.0.0.1"] {
                    assert!(!line.contains(scheme), "{} names {scheme}: {line}", asset.path);
                }
            }
        }
    }

    /// The vendored files are the ones their README pins, unchanged.
    #[test]
    fn the_vendored_files_match_their_pinned_sums() {
        let readme = include_str!("../../web/vendor/uplot/README.md");
        for asset in ASSETS.iter().filter(|a| a.path.contains("/vendor/")) {
            let name = asset.path.rsplit('/').next().unwrap_or_default();
            let line = readme
                .lines()
                .find(|l| l.starts_with(&format!("| `{name}`")))
                .unwrap_or_else(|| panic!("README.md pins no sum for {name}"));
            let pinned = line
                .split("sha256 `")
                .nth(1)
                .and_then(|rest| rest.split('`').next())
                .unwrap_or_else(|| panic!("no sha256 in {line}"));
            let digest = ring::digest::digest(&ring::digest::SHA256, asset.body.as_bytes());
            let actual: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
            assert_eq!(actual, pinned, "{name} differs from the pinned upstream file");
        }
    }
}
