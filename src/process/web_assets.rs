//! Web pages built into the binary: plain HTML, CSS and JavaScript modules
//! of `web/`, served with a strict Content-Security-Policy so that they
//! need no files at run time and no build step. The demo call page
//! (`crate::http`) and the operator console (`crate::admin`) each list
//! their files as an [`Asset`] table and mount it with [`routes`].
//!
//! Every answer carries the page's CSP, `nosniff` and `no-cache` (a
//! binary upgraded in place serves its own files on the next load).

use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

pub const HTML: &str = "text/html; charset=utf-8";
pub const CSS: &str = "text/css; charset=utf-8";
pub const JAVASCRIPT: &str = "text/javascript; charset=utf-8";
pub const TEXT: &str = "text/plain; charset=utf-8";

/// One file of a page: where it is served, as what, and its text.
pub struct Asset {
    pub path: &'static str,
    pub content_type: &'static str,
    pub body: &'static str,
}

pub const fn asset(path: &'static str, content_type: &'static str, body: &'static str) -> Asset {
    Asset {
        path,
        content_type,
        body,
    }
}

/// `router` with a `GET` route for each of `assets`, each answered with
/// `csp`.
pub fn routes<S: Clone + Send + Sync + 'static>(
    router: Router<S>,
    assets: &'static [Asset],
    csp: &'static str,
) -> Router<S> {
    assets.iter().fold(router, |router, asset| {
        router.route(asset.path, get(move || async move { response(asset, csp) }))
    })
}

fn response(asset: &'static Asset, csp: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, asset.content_type),
            (header::CONTENT_SECURITY_POLICY, csp),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        asset.body,
    )
}

/// What the tests of each page check of its table: every import and
/// `src=` names a served file, and the HTML holds nothing a strict CSP
/// would refuse.
#[cfg(test)]
pub mod checks {
    use super::Asset;

    /// `reference` (`./x.js`, `../y.js`, `/z.js`) as seen from `from`.
    fn resolve(from: &str, reference: &str) -> String {
        if reference.starts_with('/') {
            return reference.to_owned();
        }
        let mut parts: Vec<&str> = from.split('/').collect();
        parts.pop();
        for part in reference.split('/') {
            match part {
                "." => {}
                ".." => {
                    parts.pop();
                }
                part => parts.push(part),
            }
        }
        parts.join("/")
    }

    /// Every `from '…'` of every module and every `src="…"` or
    /// `href="…"` of every page that names no file of `assets`.
    pub fn unserved_references(assets: &[Asset]) -> Vec<String> {
        let served = |path: &str| assets.iter().any(|a| a.path == path);
        let mut missing = Vec::new();
        for asset in assets {
            for opening in ["from '", "src=\"", "href=\""] {
                for (at, _) in asset.body.match_indices(opening) {
                    let rest = &asset.body[at + opening.len()..];
                    let end = rest.find(['\'', '"']).expect("a closing quote");
                    let reference = &rest[..end];
                    // Data URLs (the favicon) and in-page links load nothing.
                    if reference.starts_with("data:") || reference.starts_with('#') {
                        continue;
                    }
                    let path = resolve(asset.path, reference);
                    if !served(&path) {
                        missing.push(format!(
                            "{} names {reference} ({path}), which is not served",
                            asset.path
                        ));
                    }
                }
            }
        }
        missing
    }

    /// What in `html` a CSP without `'unsafe-inline'` would refuse.
    pub fn inline_code(html: &str) -> Vec<&'static str> {
        let mut found = Vec::new();
        if html.matches("<script").count() != html.matches("<script type=\"module\" src=").count() {
            found.push("<script> without src");
        }
        for inline in [
            "<style",
            " style=",
            " onclick=",
            " onload=",
            " onsubmit=",
            "javascript:",
        ] {
            if html.contains(inline) {
                found.push(inline);
            }
        }
        found
    }

    #[test]
    fn references_resolve_from_the_importing_file() {
        assert_eq!(resolve("/console/main.js", "./charts.js"), "/console/charts.js");
        assert_eq!(resolve("/console/main.js", "./vendor/u.js"), "/console/vendor/u.js");
        assert_eq!(resolve("/console/vendor/u.js", "../main.js"), "/console/main.js");
        assert_eq!(resolve("/demo.js", "./call.js"), "/call.js");
        assert_eq!(resolve("/console", "/console/main.js"), "/console/main.js");
    }
}
