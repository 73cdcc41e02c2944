//! WebSocket signaling at `/ws` (docs/design.md, "Signaling protocol v1"; the
//! whole protocol with its v1.1 additions is in `docs/signaling.md`):
//! rooms whose peers relay offers, answers and ICE candidates to each
//! other, each peer handed fresh TURN credentials when it joins.
//!
//! This file is the `/ws` endpoint: the checks before the upgrade (the
//! Origin, by `super::origin` unless `signaling.allowed_origins` is set;
//! the token, which may bind the session to one room).
//!
//! * [`protocol`]: the JSON messages, parsed and encoded;
//! * [`switchboard`]: sessions, outboxes and rooms, the sans-IO state
//!   machine, with its resume and timers in `switchboard::resume`;
//! * `outbox`: a session's outbox and history and their byte accounting
//!   (plain data, no I/O);
//! * `rooms`: who is in which room (plain data, no I/O);
//! * `session`: the tokio driver of one WebSocket session, and the hub
//!   that connects sessions;
//! * [`fleet`]: the tokio driver of rooms that span a fleet of instances
//!   (`[fleet]`, Redis); `fleet_view` the remote members of local rooms
//!   and `fleet_wire` what instances send each other (plain data, no I/O).

pub mod fleet;
mod fleet_view;
pub mod fleet_wire;
mod outbox;
pub mod protocol;
mod rooms;
pub(super) mod session;
pub mod switchboard;

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Query, State, WebSocketUpgrade};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;

use super::app::{App, ConnectionSlot};
use crate::process::clock;
use crate::proto::auth;
use session::Authorization;

/// `GET /ws`: checks the Origin and the token, then upgrades to a
/// [`session`], which keeps the connection's slot until it ends. A missing
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
    let host = host_header.map(str::to_owned);
    // Over the soft limit a message is refused with `too-large`; this
    // hard limit bounds what is read at all.
    let hard_limit = app.hub.limits.max_message_size.saturating_mul(4);
    let hub = app.hub.clone();
    let source = slot.source();
    upgrade
        .max_message_size(hard_limit)
        .max_frame_size(hard_limit)
        .on_upgrade(move |socket| async move {
            session::run(socket, hub, host, source, authorization).await;
            drop(slot);
        })
}
