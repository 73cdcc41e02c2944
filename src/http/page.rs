//! The demo call page: plain HTML, CSS and JavaScript modules from `web/`,
//! built into the binary so that it needs no files at run time and no
//! build step. [`ASSETS`] is the whole page; [`routes`] serves it.

use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

/// The page may load only its own script and style and talk only to this
/// server (WebSocket included); media comes from getUserMedia, not URLs.
/// No inline script or style and no eval: the modules are files of their
/// own (fetched same-origin, so `'self'` covers them).
const CSP: &str = "default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:; object-src 'none'; \
                   base-uri 'none'; frame-ancestors 'none'";

const HTML: &str = "text/html; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const JAVASCRIPT: &str = "text/javascript; charset=utf-8";

/// One file of the page: where it is served, as what, and its text.
struct Asset {
    path: &'static str,
    content_type: &'static str,
    body: &'static str,
}

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
];

const fn asset(path: &'static str, content_type: &'static str, body: &'static str) -> Asset {
    Asset {
        path,
        content_type,
        body,
    }
}

/// `router` with a `GET` route for each of [`ASSETS`].
pub fn routes<S: Clone + Send + Sync + 'static>(router: Router<S>) -> Router<S> {
    ASSETS.iter().fold(router, |router, asset| {
        router.route(asset.path, get(move || async move { response(asset) }))
    })
}

fn response(asset: &'static Asset) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, asset.content_type),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        asset.body,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn served(path: &str) -> bool {
        ASSETS.iter().any(|a| a.path == path)
    }

    /// Every `from './x.js'` of every module, and every `src=` of the
    /// page, names a file that is served.
    #[test]
    fn every_module_the_page_imports_is_served() {
        for asset in ASSETS {
            for (at, _) in asset.body.match_indices("from './") {
                let rest = &asset.body[at + "from './".len()..];
                let name = &rest[..rest.find('\'').expect("a closing quote")];
                assert!(
                    served(&format!("/{name}")),
                    "{} imports {name}, which is not served",
                    asset.path
                );
            }
        }
        let html = ASSETS[0].body;
        for (at, _) in html.match_indices("src=\"/") {
            let rest = &html[at + "src=\"".len()..];
            let path = &rest[..rest.find('"').expect("a closing quote")];
            assert!(served(path), "index.html loads {path}, which is not served");
        }
    }

    /// The CSP forbids inline script and style: the page must have none.
    #[test]
    fn the_page_has_no_inline_script_or_style() {
        let html = ASSETS[0].body;
        assert_eq!(
            html.matches("<script").count(),
            html.matches("<script type=\"module\" src=").count()
        );
        for inline in [
            "<style",
            " style=",
            " onclick=",
            " onload=",
            " onsubmit=",
            "javascript:",
        ] {
            assert!(!html.contains(inline), "index.html has {inline}");
        }
        assert!(!CSP.contains("unsafe"), "{CSP}");
    }
}
