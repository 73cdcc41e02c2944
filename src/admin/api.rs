//! The admin API's routes (listed in [`super`]), its key check and its
//! JSON.
//!
//! Every answer is JSON: `{"allocations": […]}`, `{"ended": N}`,
//! `{"revocations": […]}`, or `{"error": "…"}` with the status saying what
//! went wrong (400 bad input, 401 no or wrong key, 404 no such allocation,
//! 503 a shard did not answer in time, 507 the operator's revocation list
//! is full: 100 000 usernames, with those heard from the fleet held apart).
//! A revocation whose allocations could not all be ended (503) still
//! holds: those allocations can no longer refresh and end by their
//! lifetime, or at once with a retried `DELETE /v1/users/{user}/allocations`.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use tracing::{info, warn};

use crate::config::Secret;
use crate::net::{AdminError, AdminHandle};
use crate::process::clock;
use crate::process::status::ServerStatus;
use crate::proto::auth;
use crate::proto::revocations::{self, RevokeError};
use crate::proto::server::{AllocationId, AllocationSummary};
use crate::proto::stats::Traffic;

/// The longest username STUN carries (RFC 5389 §15.3).
const MAX_USERNAME: usize = 513;

/// What the handlers share.
pub(super) struct AdminApp {
    /// Replaced on reload; read for one comparison per request.
    pub(super) key: Arc<RwLock<Secret>>,
    pub(super) shards: AdminHandle,
    pub(super) status: ServerStatus,
    /// How long a revocation of a username that is not short-lived holds
    /// when the request gives no `ttl` (`auth.max_credential_lifetime`).
    pub(super) default_revocation: Duration,
    /// Shares revocations with the fleet (`[fleet] redis_url`).
    pub(super) fleet: Option<crate::fleet::RevocationSharer>,
    /// The console's last hour, written by [`super::sampler`].
    pub(super) history: super::sampler::SharedHistory,
    /// The fleet's instances (with `[fleet]`).
    pub(super) fleet_status: Option<Arc<crate::fleet::FleetStatus>>,
}

pub(super) fn router(app: Arc<AdminApp>) -> Router {
    let router = Router::new()
        .route("/v1/allocations", get(list))
        .route("/v1/allocations/{id}", delete(end))
        .route("/v1/users/{user}/allocations", delete(end_user))
        .route("/v1/revocations", get(revocations).post(revoke))
        .route("/v1/history", get(history))
        .route("/v1/fleet", get(fleet))
        .route_layer(middleware::from_fn_with_state(app.clone(), authorize))
        .layer(middleware::from_fn_with_state(app.clone(), count))
        .layer(DefaultBodyLimit::max(super::MAX_BODY));
    // The console's files hold no data: served without the key, and not
    // counted as API requests.
    super::console::routes(router).with_state(app)
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}

/// Whether `headers` carry `Authorization: Bearer <key>`, compared in
/// constant time.
pub(super) fn presents_key(key: &RwLock<Secret>, headers: &HeaderMap) -> bool {
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.strip_prefix("Bearer "));
    let key = key.read().unwrap_or_else(|e| e.into_inner());
    presented.is_some_and(|p| auth::secrets_equal(p.as_bytes(), key.expose().as_bytes()))
}

/// Lets a request with `Authorization: Bearer <admin.key>` through;
/// anything else gets a bare 401.
async fn authorize(State(app): State<Arc<AdminApp>>, headers: HeaderMap, request: Request, next: Next) -> Response {
    let matches = presents_key(&app.key, &headers);
    if !matches {
        let mut response = error(
            StatusCode::UNAUTHORIZED,
            "a valid Authorization: Bearer <admin.key> is required",
        );
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
        return response;
    }
    next.run(request).await
}

/// Counts every answer for `/metrics`.
async fn count(State(app): State<Arc<AdminApp>>, request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    app.status.count_admin_request(response.status().as_u16());
    response
}

fn shard_error(e: AdminError) -> Response {
    let status = match e {
        AdminError::Revoke(RevokeError::Full(_)) => StatusCode::INSUFFICIENT_STORAGE,
        AdminError::Busy | AdminError::Timeout | AdminError::Stopped => StatusCode::SERVICE_UNAVAILABLE,
    };
    error(status, &e.to_string())
}

fn traffic(t: Traffic) -> Value {
    json!({ "packets": t.packets, "bytes": t.bytes })
}

fn summary(s: &AllocationSummary, now_unix: u64) -> Value {
    json!({
        "id": s.id.to_string(),
        "user": s.username,
        "realm": s.realm,
        "transport": s.client.transport.label(),
        "client": s.client.remote.to_string(),
        "server": s.client.local.to_string(),
        "relays": s.relays.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "relay_protocol": match s.protocol {
            crate::proto::addr::RelayProtocol::Udp => "udp",
            crate::proto::addr::RelayProtocol::Tcp => "tcp",
        },
        "created_unix": now_unix.saturating_sub(s.age.as_secs()),
        "age_s": s.age.as_secs(),
        "expires_in_s": s.expires_in.as_secs(),
        "to_peer": traffic(s.to_peer),
        "to_client": traffic(s.to_client),
        "permissions": s.permissions,
        "channels": s.channels,
        "peer_connections": s.peer_connections,
    })
}

/// `GET /v1/allocations[?user=U]`
async fn list(State(app): State<Arc<AdminApp>>, Query(query): Query<HashMap<String, String>>) -> Response {
    let all = match app.shards.allocations().await {
        Ok(all) => all,
        Err(e) => return shard_error(e),
    };
    let now_unix = clock::unix_secs();
    let user = query.get("user");
    let list: Vec<Value> = all
        .iter()
        .filter(|s| user.is_none_or(|u| *u == s.username))
        .map(|s| summary(s, now_unix))
        .collect();
    Json(json!({ "allocations": list })).into_response()
}

/// `DELETE /v1/allocations/{id}`
async fn end(State(app): State<Arc<AdminApp>>, Path(id): Path<String>) -> Response {
    let Ok(id) = id.parse::<AllocationId>() else {
        return error(StatusCode::BAD_REQUEST, "an allocation id is <shard>-<serial>");
    };
    match app.shards.end_allocation(id).await {
        Ok(true) => Json(json!({ "ended": 1 })).into_response(),
        Ok(false) => error(StatusCode::NOT_FOUND, "no such allocation"),
        Err(e) => shard_error(e),
    }
}

/// `DELETE /v1/users/{user}/allocations`
async fn end_user(State(app): State<Arc<AdminApp>>, Path(user): Path<String>) -> Response {
    match app.shards.end_user(&user).await {
        Ok(ended) => Json(json!({ "ended": ended })).into_response(),
        Err(e) => shard_error(e),
    }
}

/// The body of `POST /v1/revocations`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RevokeRequest {
    username: String,
    /// How long the revocation holds (`"1h"`); default: a short-lived
    /// username's own expiry, else `auth.max_credential_lifetime`.
    #[serde(default, with = "humantime_serde")]
    ttl: Option<Duration>,
}

/// `POST /v1/revocations`
async fn revoke(State(app): State<Arc<AdminApp>>, Json(request): Json<RevokeRequest>) -> Response {
    let username = request.username;
    if username.is_empty() || username.len() > MAX_USERNAME {
        return error(StatusCode::BAD_REQUEST, "username must be 1 to 513 bytes");
    }
    let now_unix = clock::unix_secs();
    let until = revocations::until_for(&username, now_unix, request.ttl, app.default_revocation);
    let result = app.shards.revoke(&username, until).await;
    // Held here (even if ending its allocations failed): tell the fleet.
    if !matches!(result, Err(AdminError::Revoke(_))) {
        share(&app, &username, until);
    }
    match result {
        Ok(ended) => {
            info!(username, until_unix = until, ended, "username revoked by the operator");
            Json(json!({ "username": username, "until_unix": until, "ended": ended })).into_response()
        }
        // Refused before anything changed.
        Err(e @ AdminError::Revoke(_)) => shard_error(e),
        // The revocation holds (its allocations can no longer refresh), but
        // some shard did not end them: the caller may retry that part.
        Err(e) => {
            info!(
                username,
                until_unix = until,
                "username revoked by the operator; ending its allocations failed"
            );
            let message = format!(
                "the username is revoked, but ending its allocations failed ({e}): \
                 retry with DELETE /v1/users/{{user}}/allocations"
            );
            error(StatusCode::SERVICE_UNAVAILABLE, &message)
        }
    }
}

/// Hands a revocation held here to the fleet driver, if there is one.
fn share(app: &AdminApp, username: &str, until: u64) {
    if let Some(fleet) = &app.fleet {
        if !fleet.share(username, until) {
            warn!(
                username,
                "the fleet queue is full: this revocation holds on this instance only"
            );
        }
    }
}

/// `GET /v1/revocations`
async fn revocations(State(app): State<Arc<AdminApp>>) -> Response {
    let list: Vec<Value> = app
        .shards
        .revocations()
        .list(clock::unix_secs())
        .into_iter()
        .map(|r| json!({ "username": r.username, "until_unix": r.until_unix }))
        .collect();
    Json(json!({ "revocations": list })).into_response()
}

/// `GET /v1/history[?since=MS]`: the console's samples, all of the last
/// hour or those taken after unix millisecond `since`.
async fn history(State(app): State<Arc<AdminApp>>, Query(query): Query<HashMap<String, String>>) -> Response {
    let since = match query.get("since").map(|since| since.parse::<u64>()) {
        None => None,
        Some(Ok(since)) => Some(since),
        Some(Err(_)) => return error(StatusCode::BAD_REQUEST, "since is a time in unix milliseconds"),
    };
    // Copied under the lock, encoded after it.
    let view = app.history.lock().view(since);
    Json(view).into_response()
}

/// `GET /v1/fleet`: every instance of the fleet as this one last heard
/// it (404 without `[fleet]`).
async fn fleet(State(app): State<Arc<AdminApp>>) -> Response {
    let Some(fleet) = &app.fleet_status else {
        return error(StatusCode::NOT_FOUND, "no [fleet] is configured");
    };
    Json(json!({
        "instance": fleet.instance(),
        "redis_up": fleet.up(),
        "instances": fleet.instances(clock::unix_millis()),
    }))
    .into_response()
}
