//! The value types the schema is written in, and their serde parsers:
//! [`Secret`], [`PortRange`], an address or `"off"`, a list of CIDRs.
//!
//! They refuse malformed text while serde parses it, so the error comes with
//! toml's line and column; rules that involve other keys are left to the
//! section's `check` (or `cross.rs`). Two checks of a value's shape that
//! several sections share are here too: [`is_valid_host`] and
//! `check_not_placeholder` (a secret copied from an example).
//!
//! Invariants: a `Secret` never shows its value in `Debug` and has no
//! `Display`; a parsed `PortRange` has 1 <= low <= high.

use std::fmt;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::ops::RangeInclusive;
use std::str::FromStr;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer};

use super::{Cidr, ConfigError};

/// A secret string (shared secret, password, precomputed key).
///
/// Its `Debug` prints `Secret(<redacted>)` so secrets never reach logs, and
/// it has no `Display` or `PartialEq`: read it with [`expose`](Self::expose)
/// and compare in constant time.
#[derive(Clone, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret, e.g. one generated at start.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret itself. Do not log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// An inclusive range of ports, written `"LOW-HIGH"` (e.g. `"49152-65535"`).
///
/// [`PortRange::new`] and parsing guarantee 1 <= `low` <= `high`; the
/// fields are public, so [`Config::validate`](super::Config::validate) checks again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortRange {
    /// First port of the range.
    pub low: u16,
    /// Last port of the range (included).
    pub high: u16,
}

/// Why a port range is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PortRangeError {
    /// Not two port numbers joined by `-`.
    #[error("expected \"LOW-HIGH\" with ports from 1 to 65535, e.g. \"49152-65535\"")]
    Syntax,
    /// Port 0 means "any port" to the OS and cannot be relayed from.
    #[error("low port 0 is not allowed")]
    ZeroPort,
    /// The range is upside down.
    #[error("low port {low} is above high port {high}")]
    Reversed {
        /// The `LOW` given.
        low: u16,
        /// The `HIGH` given.
        high: u16,
    },
}

impl PortRange {
    /// A range from `low` to `high`, both included; 1 <= `low` <= `high`.
    pub fn new(low: u16, high: u16) -> Result<Self, PortRangeError> {
        if low == 0 {
            Err(PortRangeError::ZeroPort)
        } else if low > high {
            Err(PortRangeError::Reversed { low, high })
        } else {
            Ok(PortRange { low, high })
        }
    }

    /// Number of ports in the range (0 if `low > high`).
    pub fn len(&self) -> u32 {
        if self.low > self.high {
            0
        } else {
            u32::from(self.high) - u32::from(self.low) + 1
        }
    }

    /// True if the range holds no port (only possible when built by hand
    /// with `low > high`).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// True if `port` is in the range.
    pub fn contains(&self, port: u16) -> bool {
        self.low <= port && port <= self.high
    }

    /// The range as `low..=high`, to iterate over.
    pub fn as_range(&self) -> RangeInclusive<u16> {
        self.low..=self.high
    }
}

impl FromStr for PortRange {
    type Err = PortRangeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (low, high) = s.split_once('-').ok_or(PortRangeError::Syntax)?;
        let port = |p: &str| p.trim().parse::<u16>().map_err(|_| PortRangeError::Syntax);
        PortRange::new(port(low)?, port(high)?)
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.low, self.high)
    }
}

impl<'de> Deserialize<'de> for PortRange {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse()
            .map_err(|e| D::Error::custom(format_args!("relay.ports: invalid port range {text:?}: {e}")))
    }
}

/// `deserialize_with` helper: an IPv6 address, or `"off"`.
pub(super) fn ipv6_or_off<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Ipv6Addr>, D::Error> {
    parse_or_off(deserializer, |text| {
        format!("relay.ipv6: {text:?} is neither an IPv6 address nor \"off\"")
    })
}

/// `deserialize_with` helper: a socket address, or `"off"`.
pub(super) fn addr_or_off<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<SocketAddr>, D::Error> {
    parse_or_off(deserializer, |text| {
        format!("{text:?} is neither an address like \"127.0.0.1:8080\" nor \"off\"")
    })
}

/// A string that is `"off"` (`None`) or parses as `T`; `error` words the
/// refusal of anything else.
fn parse_or_off<'de, D: Deserializer<'de>, T: FromStr>(
    deserializer: D,
    error: impl Fn(&str) -> String,
) -> Result<Option<T>, D::Error> {
    let text = String::deserialize(deserializer)?;
    if text == "off" {
        return Ok(None);
    }
    text.parse().map(Some).map_err(|_| D::Error::custom(error(&text)))
}

/// `deserialize_with` helper: a list of CIDR strings.
pub(super) fn cidrs<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<Cidr>, D::Error> {
    let texts = Vec::<String>::deserialize(deserializer)?;
    texts
        .iter()
        .map(|text| {
            text.parse::<Cidr>().map_err(|e| {
                // toml points at the whole list, so the message must name the
                // element; the peer filter's errors quote it in most cases.
                let quoted = format!("{text:?}");
                let message = e.to_string();
                if message.contains(&quoted) {
                    D::Error::custom(message)
                } else {
                    D::Error::custom(format_args!("invalid network {quoted}: {message}"))
                }
            })
        })
        .collect()
}

/// Secrets that are someone's example or a default, not a secret: a
/// server that verifies with one hands TURN access to anyone who read the
/// same documentation.
const PLACEHOLDER_SECRETS: [&str; 10] = [
    "change-me",
    "changeme",
    "change_me",
    "replace-me",
    "replaceme",
    "secret",
    "password",
    "example",
    "turnpike",
    "your-secret",
];

/// The secrets of a secrets file's `text`: one a line, blank lines and
/// `#` comments skipped, each passed to `check` under `key`; a file that
/// holds none is refused (an empty file is a mistake, not "no secret").
pub(super) fn secret_lines(
    key: &str,
    path: &std::path::Path,
    text: &str,
    check: impl Fn(&str, &Secret) -> Result<(), ConfigError>,
) -> Result<Vec<Secret>, ConfigError> {
    let secrets: Vec<Secret> = text
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(Secret::new)
        .collect();
    for secret in &secrets {
        check(key, secret)?;
    }
    match secrets.is_empty() {
        true => Err(ConfigError::invalid(key, format!("{} holds no secret", path.display()))),
        false => Ok(secrets),
    }
}

pub(super) fn check_not_placeholder(key: &str, secret: &Secret) -> Result<(), ConfigError> {
    let text = secret.expose().trim();
    match PLACEHOLDER_SECRETS.iter().any(|p| p.eq_ignore_ascii_case(text)) {
        true => Err(ConfigError::invalid(
            key,
            "is a placeholder from an example, not a secret: generate one, e.g. `openssl rand -base64 32`",
        )),
        false => Ok(()),
    }
}

/// True for a DNS name (letters, digits, `-` and `.`), an IPv4 address or
/// an IPv6 address, which is what may go into a STUN/TURN URL (RFC 7064,
/// RFC 7065) as its host.
pub fn is_valid_host(host: &str) -> bool {
    if host.parse::<IpAddr>().is_ok() {
        return true;
    }
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::{invalid_key, parse};

    #[test]
    fn bad_port_ranges_are_refused() {
        for (text, expected) in [
            ("0-100", PortRangeError::ZeroPort),
            ("200-100", PortRangeError::Reversed { low: 200, high: 100 }),
            ("49152", PortRangeError::Syntax),
            ("1-70000", PortRangeError::Syntax),
            ("a-b", PortRangeError::Syntax),
            ("", PortRangeError::Syntax),
        ] {
            assert_eq!(text.parse::<PortRange>(), Err(expected), "{text:?}");
        }
        let msg = parse("[relay]\nports = \"0-100\"\n").unwrap_err().to_string();
        assert!(msg.contains("line 2"), "{msg}");
        assert!(msg.contains("low port 0 is not allowed"), "{msg}");
        assert_eq!(invalid_key("[relay]\nports = \"5000-5000\"\n"), "relay.ports");
    }

    #[test]
    fn port_range_helpers() {
        let range: PortRange = "49152-65535".parse().unwrap();
        assert_eq!(range.len(), 16384);
        assert!(range.contains(49152) && range.contains(65535));
        assert!(!range.contains(49151));
        assert_eq!(range.as_range().count(), 16384);
        assert_eq!(range.to_string(), "49152-65535");
        assert_eq!(PortRange::new(1, 65535).unwrap().len(), 65535);
        assert!(PortRange { low: 5, high: 4 }.is_empty());
    }

    #[test]
    fn secret_debug_is_redacted() {
        let secret = Secret::new("hunter2");
        assert_eq!(format!("{secret:?}"), "Secret(<redacted>)");
        let config = parse("[auth]\nsecrets = [\"hunter2\"]\n[[auth.users]]\nname = \"a\"\npassword = \"hunter2\"\n")
            .unwrap_or_else(|e| panic!("{e}"));
        let debug = format!("{config:?}");
        assert!(!debug.contains("hunter2"), "{debug}");
    }

    #[test]
    fn bad_cidr_is_reported_with_its_line() {
        let msg = parse("[peers]\n\nallow = [\"10.0.0.0/99\"]\n").unwrap_err().to_string();
        assert!(msg.contains("line 3"), "{msg}");
        assert!(msg.contains("10.0.0.0/99"), "{msg}");
    }

    #[test]
    fn hosts_for_urls() {
        for good in ["turn.example.org", "localhost", "a-b.c", "192.0.2.1", "2001:db8::1"] {
            assert!(is_valid_host(good), "{good}");
        }
        for bad in ["", "a b", "-a.b", "a..b", "a/b", "[::1]", "é.example", "a.b:80"] {
            assert!(!is_valid_host(bad), "{bad}");
        }
    }
}
