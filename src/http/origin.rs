//! The same-origin rule of `/ws` (docs/design.md, "Signaling is same-origin by
//! default"): with no `signaling.allowed_origins`, a WebSocket upgrade whose
//! Origin is present is allowed only when that Origin names the host the
//! request was sent to, so a page of another site open in the same browser
//! cannot mint TURN credentials from a local install.
//!
//! Pure functions of the request's headers and the address it reached.
//!
//! * Origin and Host are compared as `host[:port]`, ASCII case-insensitive,
//!   with the scheme's default port (80, 443) dropped on both sides
//!   (browsers leave it out, proxies sometimes put it in). The scheme itself
//!   is not compared: only one server listens on a host and port.
//! * `Origin: null` (sandboxed frames, `file:` pages) and anything that is
//!   not `http(s)://authority` is never same-origin.
//! * DNS rebinding: a page of `evil.example` whose name is made to resolve
//!   to 127.0.0.1 is "same-origin" with a Host of `evil.example:8080`. On a
//!   connection that reached a loopback address the Host must therefore be
//!   loopback itself (`localhost`, `*.localhost`, 127.0.0.0/8, `[::1]`).

use std::net::IpAddr;

use crate::signaling::ice::host_of;

/// True when `origin` (the Origin header) names the same host and port as
/// `host` (the Host header); `reached_loopback` says the connection came in
/// on a loopback address.
pub(super) fn same_origin(origin: &str, host: Option<&str>, reached_loopback: bool) -> bool {
    let Some(host) = host else {
        return false;
    };
    let Some((scheme, authority)) = origin.split_once("://") else {
        return false;
    };
    let default_port = match scheme.to_ascii_lowercase().as_str() {
        "http" => ":80",
        "https" => ":443",
        _ => return false,
    };
    if authority.is_empty() || authority.contains(['/', '?', '#', '@']) {
        return false;
    }
    if reached_loopback && !names_loopback(host) {
        return false;
    }
    let normalise = |a: &str| {
        let a = a.to_ascii_lowercase();
        match a.strip_suffix(default_port) {
            Some(bare) => bare.to_owned(),
            None => a,
        }
    };
    normalise(authority) == normalise(host)
}

/// True if the host of a Host header (`name`, `name:port`, `[v6]:port`)
/// is loopback by name or address.
fn names_loopback(host_header: &str) -> bool {
    let Some(host) = host_of(host_header) else {
        return false;
    };
    let host = host.to_ascii_lowercase();
    match host.parse::<IpAddr>() {
        Ok(ip) => ip.to_canonical().is_loopback(),
        Err(_) => host == "localhost" || host.ends_with(".localhost"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_own_host_and_port_is_same_origin() {
        for (origin, host) in [
            ("http://127.0.0.1:8080", "127.0.0.1:8080"),
            ("http://LOCALHOST:8080", "localhost:8080"),
            ("http://[::1]:8080", "[::1]:8080"),
            ("http://localhost", "localhost:80"),
            ("https://localhost:443", "localhost"),
            ("https://127.0.0.1:8443", "127.0.0.1:8443"),
        ] {
            assert!(same_origin(origin, Some(host), true), "{origin} {host}");
        }
        assert!(same_origin("https://turn.example.org", Some("turn.example.org"), false));
    }

    #[test]
    fn another_host_port_or_form_is_not() {
        for (origin, host) in [
            ("http://127.0.0.1:8081", "127.0.0.1:8080"),
            ("http://localhost:8080", "127.0.0.1:8080"),
            ("https://evil.example", "127.0.0.1:8080"),
            ("http://localhost:80", "localhost:443"),
            ("null", "127.0.0.1:8080"),
            ("file://", "127.0.0.1:8080"),
            ("ws://127.0.0.1:8080", "127.0.0.1:8080"),
            ("http://127.0.0.1:8080/", "127.0.0.1:8080"),
            ("http://user@127.0.0.1:8080", "127.0.0.1:8080"),
            ("", "127.0.0.1:8080"),
        ] {
            assert!(!same_origin(origin, Some(host), true), "{origin} {host}");
        }
        assert!(!same_origin("http://127.0.0.1:8080", None, true), "no Host");
    }

    #[test]
    fn a_rebound_name_is_not_same_origin_on_loopback() {
        let (origin, host) = ("http://evil.example:8080", "evil.example:8080");
        assert!(!same_origin(origin, Some(host), true));
        assert!(same_origin(origin, Some(host), false), "a public server has real names");
        assert!(same_origin(
            "http://app.localhost:8080",
            Some("app.localhost:8080"),
            true
        ));
    }
}
