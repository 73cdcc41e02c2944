//! `GET /ws`: the door to WebSocket signaling (`crate::signaling`, the
//! protocol in `docs/signaling.md`). The checks before the upgrade: the
//! Origin (by `super::origin` unless `signaling.allowed_origins` is set)
//! and the token (which may bind the session to one room). The Origin is
//! also handed to the session: a resume (v1.1) is refused from another
//! Origin than the one the session joined with. Everything after the
//! upgrade is the signaling session's.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Query, State, WebSocketUpgrade};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;

use super::app::{App, ConnectionSlot};
use crate::process::clock;
use crate::proto::auth;
use crate::signaling::session::{self, Authorization, Handshake};

/// `GET /ws`: checks the Origin and the token, then upgrades to a
/// [`session`], which keeps the connection's slot until it ends, and
/// beyond while it is kept for resume. A missing
/// or bad token is still upgraded, so that the client reads an
/// `unauthorized` error before the close.
pub(super) async fn ws(
    State(app): State<Arc<App>>,
    Extension(slot): Extension<ConnectionSlot>,
    upgrade: WebSocketUpgrade,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let access = app.access();
    let host_header = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    if !access.origin_allowed(headers.get(header::ORIGIN), host_header, slot.local()) {
        return (StatusCode::FORBIDDEN, "origin not allowed\n").into_response();
    }
    let authorization = match &access.token_secret {
        None => Authorization::Granted { room: None },
        Some(secret) => query
            .get("token")
            .and_then(|token| auth::verify_signaling_token(secret.expose().as_bytes(), token, clock::unix_secs()))
            .map_or(Authorization::Refused, |grant| Authorization::Granted {
                room: grant.room,
            }),
    };
    // The session remembers the Origin: a resume must come with the same
    // one. (One that is not visible ASCII was refused above.)
    let handshake = Handshake {
        host: host_header.map(str::to_owned),
        origin: headers
            .get(header::ORIGIN)
            .and_then(|origin| origin.to_str().ok())
            .map(str::to_owned),
    };
    // Over the soft limit a message is refused with `too-large`; this
    // hard limit bounds what is read at all.
    let hard_limit = app.hub.limits.max_message_size.saturating_mul(4);
    let hub = app.hub.clone();
    let source = slot.source();
    upgrade
        .max_message_size(hard_limit)
        .max_frame_size(hard_limit)
        .on_upgrade(move |socket| async move {
            // The session gives the slot back when it ends, or the hub
            // keeps it while the session is detached for resume.
            session::run(socket, hub, handshake, source, authorization, Box::new(slot)).await;
        })
}
