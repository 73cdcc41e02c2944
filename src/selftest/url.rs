//! The URLs `selftest` checks: RFC 7065's `turn:`/`turns:` (with
//! `?transport=udp|tcp`) and RFC 7064's `stun:`/`stuns:`.
//!
//! `scheme ":" host [":" port] ["?transport=" ("udp" / "tcp")]`, where a
//! host is a name, an IPv4 address or a bracketed IPv6 address. Defaults
//! (RFC 7065 §3, RFC 7064 §3.2): port 3478, or 5349 for the secure
//! schemes; transport UDP for `turn:`, TCP for `turns:` (TLS over TCP).
//! `turns:` over UDP would be DTLS, which turnpike does not speak, so it
//! is refused here rather than tried. `stun:` URLs have no transport
//! parameter; they are checked with Binding only.
//!
//! Parsing is total: any input gives a [`TurnUrl`] or a [`UrlError`]
//! saying what is wrong, and [`TurnUrl`]'s `Display` is the canonical
//! form (every part written out), which is what reports name.

use std::fmt;
use std::net::IpAddr;

/// The default port of `turn:` and `stun:` (RFC 8656 §3.1).
pub const PORT: u16 = 3478;
/// The default port of `turns:` and `stuns:`.
pub const TLS_PORT: u16 = 5349;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheme {
    Stun,
    Stuns,
    Turn,
    Turns,
}

impl Scheme {
    fn name(self) -> &'static str {
        match self {
            Scheme::Stun => "stun",
            Scheme::Stuns => "stuns",
            Scheme::Turn => "turn",
            Scheme::Turns => "turns",
        }
    }

    /// TLS on the connection (`turns:`, `stuns:`).
    pub fn is_secure(self) -> bool {
        matches!(self, Scheme::Stuns | Scheme::Turns)
    }

    /// A TURN URL (allocations), not only STUN (Binding).
    pub fn is_turn(self) -> bool {
        matches!(self, Scheme::Turn | Scheme::Turns)
    }
}

/// How the client reaches the server (the relay itself is always UDP).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

/// A parsed URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TurnUrl {
    pub scheme: Scheme,
    /// A name, or an IP address without brackets.
    pub host: String,
    pub port: u16,
    pub transport: Transport,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    #[error("{0:?}: the scheme is not turn:, turns:, stun: or stuns:")]
    Scheme(String),
    #[error("{0:?}: no host")]
    NoHost(String),
    #[error("{0:?}: the host is not a name or an IP address")]
    BadHost(String),
    #[error("{0:?}: the port is not a number from 1 to 65535")]
    BadPort(String),
    #[error("{0:?}: the only query is ?transport=udp or ?transport=tcp")]
    BadQuery(String),
    #[error("{0:?}: turns: over UDP is DTLS, which is not supported; use ?transport=tcp")]
    Dtls(String),
    #[error("{0:?}: a stun: URL takes no ?transport")]
    StunTransport(String),
}

impl TurnUrl {
    pub fn parse(text: &str) -> Result<TurnUrl, UrlError> {
        let bad = |make: fn(String) -> UrlError| make(text.to_owned());
        let (scheme, rest) = text.split_once(':').ok_or_else(|| bad(UrlError::Scheme))?;
        let scheme = match scheme.to_ascii_lowercase().as_str() {
            "stun" => Scheme::Stun,
            "stuns" => Scheme::Stuns,
            "turn" => Scheme::Turn,
            "turns" => Scheme::Turns,
            _ => return Err(bad(UrlError::Scheme)),
        };
        let (authority, query) = match rest.split_once('?') {
            Some((authority, query)) => (authority, Some(query)),
            None => (rest, None),
        };
        let (host, port) = split_host_port(authority).ok_or_else(|| bad(UrlError::BadHost))?;
        if host.is_empty() {
            return Err(bad(UrlError::NoHost));
        }
        if !is_host(host) {
            return Err(bad(UrlError::BadHost));
        }
        let port = match port {
            None => match scheme.is_secure() {
                true => TLS_PORT,
                false => PORT,
            },
            Some(port) => port
                .parse()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| bad(UrlError::BadPort))?,
        };
        let transport = match query.map(|q| q.to_ascii_lowercase()) {
            None => match scheme {
                Scheme::Turn | Scheme::Stun => Transport::Udp,
                Scheme::Turns | Scheme::Stuns => Transport::Tcp,
            },
            Some(_) if !scheme.is_turn() => return Err(bad(UrlError::StunTransport)),
            Some(q) if q == "transport=tcp" => Transport::Tcp,
            Some(q) if q == "transport=udp" && scheme == Scheme::Turns => return Err(bad(UrlError::Dtls)),
            Some(q) if q == "transport=udp" => Transport::Udp,
            Some(_) => return Err(bad(UrlError::BadQuery)),
        };
        Ok(TurnUrl {
            scheme,
            host: host.to_owned(),
            port,
            transport,
        })
    }

    /// The host as an IP address, if it is one.
    pub fn ip(&self) -> Option<IpAddr> {
        self.host.parse().ok()
    }
}

impl fmt::Display for TurnUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = self.scheme.name();
        match self.host.contains(':') {
            true => write!(f, "{scheme}:[{}]:{}", self.host, self.port)?,
            false => write!(f, "{scheme}:{}:{}", self.host, self.port)?,
        }
        match (self.scheme.is_turn(), self.transport) {
            (false, _) => Ok(()),
            (true, Transport::Udp) => f.write_str("?transport=udp"),
            (true, Transport::Tcp) => f.write_str("?transport=tcp"),
        }
    }
}

/// `host[:port]` or `[v6][:port]`; `None` if brackets do not close or
/// something follows them that is not a port.
fn split_host_port(authority: &str) -> Option<(&str, Option<&str>)> {
    if let Some(rest) = authority.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        host.parse::<std::net::Ipv6Addr>().ok()?;
        return match after {
            "" => Some((host, None)),
            _ => after.strip_prefix(':').map(|port| (host, Some(port))),
        };
    }
    Some(match authority.split_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (authority, None),
    })
}

/// An IP address, or a DNS name: labels of letters, digits and `-`
/// separated by dots (RFC 1123), at most 253 characters.
fn is_host(host: &str) -> bool {
    if host.parse::<IpAddr>().is_ok() {
        return true;
    }
    host.len() <= 253
        && host.trim_end_matches('.').split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(text: &str) -> (Scheme, String, u16, Transport) {
        let url = TurnUrl::parse(text).unwrap();
        (url.scheme, url.host, url.port, url.transport)
    }

    #[test]
    fn defaults_follow_rfc_7065_and_7064() {
        assert_eq!(
            parsed("turn:example.org"),
            (Scheme::Turn, "example.org".into(), 3478, Transport::Udp)
        );
        assert_eq!(
            parsed("turns:example.org"),
            (Scheme::Turns, "example.org".into(), 5349, Transport::Tcp)
        );
        assert_eq!(
            parsed("stun:1.2.3.4"),
            (Scheme::Stun, "1.2.3.4".into(), 3478, Transport::Udp)
        );
        assert_eq!(parsed("stuns:h"), (Scheme::Stuns, "h".into(), 5349, Transport::Tcp));
        assert_eq!(
            parsed("TURN:h:443?transport=TCP"),
            (Scheme::Turn, "h".into(), 443, Transport::Tcp)
        );
        assert_eq!(
            parsed("turn:[::1]:3479"),
            (Scheme::Turn, "::1".into(), 3479, Transport::Udp)
        );
        assert_eq!(parsed("turn:[::1]"), (Scheme::Turn, "::1".into(), 3478, Transport::Udp));
    }

    #[test]
    fn display_writes_every_part_and_parses_back() {
        for text in ["turn:h", "turns:[::1]:443", "stun:10.0.0.1", "turn:h:1?transport=tcp"] {
            let url = TurnUrl::parse(text).unwrap();
            assert_eq!(TurnUrl::parse(&url.to_string()).unwrap(), url, "{text}");
        }
        assert_eq!(
            TurnUrl::parse("turn:h").unwrap().to_string(),
            "turn:h:3478?transport=udp"
        );
        assert_eq!(
            TurnUrl::parse("turns:[::1]").unwrap().to_string(),
            "turns:[::1]:5349?transport=tcp"
        );
        assert_eq!(TurnUrl::parse("stuns:h").unwrap().to_string(), "stuns:h:5349");
    }

    #[test]
    fn malformed_urls_say_what_is_wrong() {
        type Make = fn(String) -> UrlError;
        let cases: [(&str, Make); 12] = [
            ("http://h", UrlError::Scheme),
            ("h:3478", UrlError::Scheme),
            ("turn:", UrlError::NoHost),
            ("turn::3478", UrlError::NoHost),
            ("turn:h:0", UrlError::BadPort),
            ("turn:h:70000", UrlError::BadPort),
            ("turn:h:x", UrlError::BadPort),
            ("turn:[::1", UrlError::BadHost),
            ("turn:bad_host!", UrlError::BadHost),
            ("turn:h?transport=sctp", UrlError::BadQuery),
            ("turns:h?transport=udp", UrlError::Dtls),
            ("stun:h?transport=tcp", UrlError::StunTransport),
        ];
        for (text, error) in cases {
            assert_eq!(TurnUrl::parse(text), Err(error(text.to_owned())), "{text}");
        }
        assert!(TurnUrl::parse("turn:[1.2.3.4]").is_err());
        assert!(TurnUrl::parse("turn:[::1]x").is_err());
    }
}
