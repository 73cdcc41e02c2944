//! The demo call page and the TURN test page (`/test`): plain HTML, CSS
//! and JavaScript modules from `web/` and `web/test/`, built into the
//! binary so that they need no files at run time and no build step.
//! [`ASSETS`] is both pages; [`routes`] serves them.
//!
//! The test page gathers relay candidates for each TURN URL (this
//! server's `/ice-servers`, or any typed in), connects two peer
//! connections of its own through the relay and pushes data: the TURN
//! traffic is the browser's, to the servers it is given; the page asks
//! this server for nothing but its files and, with the API key,
//! `/ice-servers`.

use axum::Router;

use crate::process::web_assets::{self, asset, Asset, CSS, HTML, JAVASCRIPT};

/// The page may load only its own script and style and talk only to this
/// server (WebSocket included); media comes from getUserMedia, not URLs.
/// No inline script or style and no eval: the modules are files of their
/// own (fetched same-origin, so `'self'` covers them).
const CSP: &str = "default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:; object-src 'none'; \
                   base-uri 'none'; frame-ancestors 'none'";

/// Every file of the page. `demo.js` is the entry module (index.html
/// loads it); it and the others import the rest by relative URL, so each
/// module of `web/` needs its line here.
const ASSETS: &[Asset] = &[
    asset("/", HTML, include_str!("../../web/index.html")),
    asset("/demo.css", CSS, include_str!("../../web/demo.css")),
    asset("/demo.js", JAVASCRIPT, include_str!("../../web/demo.js")),
    asset("/call.js", JAVASCRIPT, include_str!("../../web/call.js")),
    asset("/chat.js", JAVASCRIPT, include_str!("../../web/chat.js")),
    asset("/files.js", JAVASCRIPT, include_str!("../../web/files.js")),
    asset("/log.js", JAVASCRIPT, include_str!("../../web/log.js")),
    asset("/media.js", JAVASCRIPT, include_str!("../../web/media.js")),
    asset("/panel.js", JAVASCRIPT, include_str!("../../web/panel.js")),
    asset("/room.js", JAVASCRIPT, include_str!("../../web/room.js")),
    asset("/screen.js", JAVASCRIPT, include_str!("../../web/screen.js")),
    asset("/signaling.js", JAVASCRIPT, include_str!("../../web/signaling.js")),
    asset("/state.js", JAVASCRIPT, include_str!("../../web/state.js")),
    asset("/stats.js", JAVASCRIPT, include_str!("../../web/stats.js")),
    asset("/ui.js", JAVASCRIPT, include_str!("../../web/ui.js")),
    // The TURN test page (web/test/), on the demo page's look.
    asset("/test", HTML, include_str!("../../web/test/index.html")),
    asset("/test/test.css", CSS, include_str!("../../web/test/test.css")),
    asset("/test/main.js", JAVASCRIPT, include_str!("../../web/test/main.js")),
    asset("/test/probe.js", JAVASCRIPT, include_str!("../../web/test/probe.js")),
    asset(
        "/test/results.js",
        JAVASCRIPT,
        include_str!("../../web/test/results.js"),
    ),
];

/// `router` with a `GET` route for each of [`ASSETS`].
pub fn routes<S: Clone + Send + Sync + 'static>(router: Router<S>) -> Router<S> {
    web_assets::routes(router, ASSETS, CSP)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::process::web_assets::checks;

    #[test]
    fn every_module_the_page_imports_is_served() {
        let missing = checks::unserved_references(ASSETS);
        assert!(missing.is_empty(), "{missing:#?}");
    }

    /// The CSP forbids inline script and style: the pages must have none.
    #[test]
    fn the_pages_have_no_inline_script_or_style() {
        for page in ASSETS.iter().filter(|a| a.content_type == HTML) {
            assert_eq!(checks::inline_code(page.body), Vec::<&str>::new(), "{}", page.path);
        }
        assert!(!CSP.contains("unsafe"), "{CSP}");
    }
}
