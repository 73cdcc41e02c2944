//! `GET /ice-servers`, for applications that bring their own signaling
//! (docs/design.md, "Who gets credentials"): the holder of `signaling.api_key` (as `Authorization:
//! Bearer`) gets `{"iceServers":[…],"ttl":S}` with a fresh credential,
//! built by [`super::ice`] as the list a `/ws` peer gets when it joins.
//!
//! With no key configured the endpoint does not exist (404), so a fresh
//! install never hands out TURN credentials to anyone who asks. The key is
//! compared in constant time. CORS headers go only to an Origin listed in
//! `signaling.allowed_origins`: the endpoint is meant for backends.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use super::app::{Access, App};
use crate::process::clock;
use crate::proto::auth;
use crate::signaling::protocol;

/// `GET /ice-servers`: `{"iceServers":[…],"ttl":S}` for the holder of
/// `signaling.api_key`; 404 when no key is configured.
pub(super) async fn list(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let access = app.access();
    let cors = cors_headers(&access, &headers);
    if let Some(refusal) = refuse_without_key(&access, &headers, cors.clone()) {
        return refusal;
    }
    let name = match query.get("user") {
        None => "api",
        Some(user) if user.len() <= 64 && protocol::is_valid_room(user) => user,
        Some(_) => {
            return (
                StatusCode::BAD_REQUEST,
                cors,
                "user must be 1 to 64 characters of A-Z, a-z, 0-9, '_' and '-'\n",
            )
                .into_response()
        }
    };
    let ice = app.hub.ice();
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    let body = serde_json::json!({
        "iceServers": ice.ice_servers(host, name, clock::unix_secs()),
        "ttl": ice.ttl.as_secs(),
    });
    (cors, [(header::CACHE_CONTROL, "no-store")], axum::Json(body)).into_response()
}

/// The answer to a request without `signaling.api_key` (404 when none is
/// configured, 401 when it is not presented as `Authorization: Bearer`),
/// or `None` for its holder.
pub(super) fn refuse_without_key(access: &Access, headers: &HeaderMap, cors: HeaderMap) -> Option<Response> {
    let Some(key) = &access.api_key else {
        return Some(StatusCode::NOT_FOUND.into_response());
    };
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.strip_prefix("Bearer "));
    if presented.is_some_and(|p| auth::secrets_equal(p.as_bytes(), key.expose().as_bytes())) {
        return None;
    }
    Some(
        (
            StatusCode::UNAUTHORIZED,
            cors,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            "a valid Authorization: Bearer <signaling.api_key> is required\n",
        )
            .into_response(),
    )
}

/// The CORS preflight of `GET /ice-servers`.
pub(super) async fn preflight(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    (StatusCode::NO_CONTENT, cors_headers(&app.access(), &headers)).into_response()
}

/// CORS headers for `/ice-servers`: only for an Origin listed in
/// `signaling.allowed_origins` (none when that list is empty: the endpoint
/// is meant for backends).
fn cors_headers(access: &Access, headers: &HeaderMap) -> HeaderMap {
    let mut out = HeaderMap::new();
    let origin = headers.get(header::ORIGIN);
    if let Some(origin) = origin.filter(|o| {
        o.to_str()
            .is_ok_and(|o| access.allowed_origins.iter().any(|allowed| allowed == o))
    }) {
        out.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
        out.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static("authorization"),
        );
        out.insert(header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static("GET"));
        out.insert(header::VARY, HeaderValue::from_static("origin"));
    }
    out
}
