//! `GET /.well-known/acme-challenge/<token>`: the ACME HTTP-01 answer
//! (RFC 8555 §8.3). While an attempt of the ACME client
//! (`crate::process::acme`) has the token pending, the answer is its key
//! authorization as the body, 200 with `application/octet-stream`; any
//! other token, or no `[tls.acme]` with `challenge = "http-01"`, is 404.
//! The CA fetches it over plain HTTP on port 80, so this answers on
//! `listen.http` (and on every route to this router; the token is
//! unguessable and the answer public by design).

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

use super::app::App;

pub(super) async fn http_01(State(app): State<Arc<App>>, Path(token): Path<String>) -> Response {
    let acme = app.certificates.as_ref().and_then(|c| c.acme());
    match acme.and_then(|acme| acme.challenges.http(&token)) {
        Some(key_authorization) => {
            tracing::debug!(%token, "ACME: HTTP-01 validation answered");
            ([(header::CONTENT_TYPE, "application/octet-stream")], key_authorization).into_response()
        }
        None => (StatusCode::NOT_FOUND, "no such ACME challenge\n").into_response(),
    }
}
