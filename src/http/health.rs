//! `/healthz` and `/readyz` for load balancers and orchestrators: both
//! read the shards' heartbeats from
//! [`ServerStatus`](crate::process::status::ServerStatus), so a wedged
//! event loop shows here as it does to the systemd watchdog.
//!
//! Liveness (`/healthz`) fails only when a shard's loop has stalled;
//! readiness (`/readyz`) fails as well while draining, so a balancer stops
//! sending new clients before the process goes away.
//!
//! With `[fleet]` configured, `/readyz` adds a line `redis: up` or
//! `redis: down` to its body, and stays 200 while Redis is down: TURN and
//! local rooms still work, and taking every instance out of a balancer
//! because their shared Redis is down would end every call instead of
//! only the cross-instance signaling.
//!
//! With `[tls.acme]`, it adds a line `acme: ok (…)`, `acme: pending (…)`
//! (no certificate issued yet) or `acme: failing (…)` (the last attempt
//! failed; the previous certificate is still served), and stays 200 for
//! the same reason: the certificate being served still works until it
//! expires, and a balancer that took the instance out could keep the CA's
//! validation from reaching it.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::app::App;

/// How long a shard's event loop may go without turning before the
/// process counts as unhealthy.
const STALL_LIMIT: Duration = Duration::from_secs(2);

/// `GET /healthz`: 200 while every shard's event loop turns (liveness).
pub(super) async fn healthz(State(app): State<Arc<App>>) -> Response {
    match app.status.responsive(STALL_LIMIT) {
        true => (StatusCode::OK, "ok\n").into_response(),
        false => (StatusCode::SERVICE_UNAVAILABLE, "an event loop is stalled\n").into_response(),
    }
}

/// `GET /readyz`: 200 while the server takes new allocations: its
/// listeners are bound (it answers at all) and it is not draining.
pub(super) async fn readyz(State(app): State<Arc<App>>) -> Response {
    if app.status.draining() {
        return (StatusCode::SERVICE_UNAVAILABLE, "draining\n").into_response();
    }
    if !app.status.responsive(STALL_LIMIT) {
        return (StatusCode::SERVICE_UNAVAILABLE, "an event loop is stalled\n").into_response();
    }
    let mut body = "ready\n".to_owned();
    match app.fleet.as_ref().map(|fleet| fleet.up()) {
        None => {}
        Some(true) => body.push_str("redis: up\n"),
        Some(false) => body.push_str("redis: down\n"),
    }
    if let Some(certificates) = &app.certificates {
        if let Some(acme) = certificates.acme() {
            body.push_str(&acme.status.summary(certificates.leaf().as_ref()));
            body.push('\n');
        }
    }
    (StatusCode::OK, body).into_response()
}
