//! `GET /test/self-check`: the TURN test page's view from the server
//! itself. The holder of `signaling.api_key` (the key the page's "this
//! server" source already asks for) gets the JSON report of `turnpike
//! selftest` (`crate::selftest`) run by this server against the URLs its
//! `/ice-servers` hands this same request (host, ports and a fresh
//! credential), so the page can show beside what the browser saw whether
//! the server relays at all, and place a failure on the server or on the
//! path to it.
//!
//! Bounds: it only ever checks the URLs of its own `/ice-servers`, never
//! one a request names (the server is no probe for others' hosts); one
//! run at a time, and a report is reused for [`REUSE`] for the same URLs,
//! so requests cannot make it send more than one run (a few dozen small
//! packets per URL) per [`REUSE`]; every wait of a run is bounded by
//! [`STEP_TIMEOUT`]. `turns:` certificates are checked against the
//! system's roots, as a browser would.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};

use super::app::App;
use super::ice_servers::refuse_without_key;
use crate::process::clock;
use crate::selftest::{self, Credential, Plan, TlsClient, Trust, TurnUrl};

/// How long a report answers again for the same URLs.
pub const REUSE: Duration = Duration::from_secs(10);
/// The bound on each wait of a run.
pub const STEP_TIMEOUT: Duration = Duration::from_secs(3);

/// The last report: when it was made, for which URLs, the JSON.
pub(super) struct LastCheck {
    at: Instant,
    urls: Vec<String>,
    json: Arc<String>,
}

/// `GET /test/self-check`.
pub(super) async fn self_check(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    if let Some(refusal) = refuse_without_key(&app.access(), &headers, HeaderMap::new()) {
        return refusal;
    }
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    let servers = app.hub.ice().ice_servers(host, "self-check", clock::unix_secs());
    let mut urls = Vec::new();
    let mut credential = None;
    for server in &servers {
        let turn: Vec<&String> = server.urls.iter().filter(|u| u.starts_with("turn")).collect();
        if let (false, Some(user), Some(password)) = (turn.is_empty(), &server.username, &server.credential) {
            credential = Some(Credential::password(user, password));
            urls.extend(turn.into_iter().cloned());
        }
    }
    // One run at a time: a request that comes during one waits for it.
    let mut last = app.self_check.lock().await;
    let reusable = last
        .as_ref()
        .filter(|l| l.urls == urls && l.at.elapsed() < REUSE)
        .map(|l| l.json.clone());
    let json = match reusable {
        Some(json) => json,
        None => {
            let mut plan = Plan::new(urls.iter().filter_map(|u| TurnUrl::parse(u).ok()).collect());
            plan.credential = credential;
            plan.tls = TlsClient::new(&Trust::System).ok();
            plan.timeout = STEP_TIMEOUT;
            let json = Arc::new(selftest::run(&plan).await.to_json().to_string());
            *last = Some(LastCheck {
                at: clock::mono(),
                urls,
                json: json.clone(),
            });
            json
        }
    };
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static("application/json")),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
        json.as_str().to_owned(),
    )
        .into_response()
}
