//! `turnpike selftest`: a TURN client, built on turnpike's own codec
//! (`proto::stun`, `proto::client`), that checks a deployment from
//! wherever it runs, against turnpike or any other TURN server.
//!
//! For each URL (RFC 7065 `turn:`/`turns:`, RFC 7064 `stun:`/`stuns:`,
//! [`url`]) it runs the steps of [`report::Step`] in order: the
//! connection and, for the secure schemes, the certificate ([`tls`]:
//! trusted, valid for the host, days left); Binding; then, for TURN,
//! Allocate with the credential, whether the relayed address is the one
//! clients reach the server at, CreatePermission, one packet echoed
//! through the relay, a burst of them for loss and round-trip time, and
//! the allocation deleted again ([`checks`]).
//!
//! The echo goes to a peer of its own ([`probe::EchoPeer`], a UDP socket
//! on this machine, named by the address the server reflects); when the
//! relay cannot reach it (the server's peer filter refuses private and
//! loopback addresses by default, a NAT drops unsolicited packets), a
//! second allocation on the same server echoes instead (relay ↔ relay,
//! which a server relays to itself), and the report says which path and
//! why.
//!
//! Invariants: every network wait is bounded by [`Plan::timeout`] (a
//! server that does not answer is a failed check saying so, never a
//! hang); a run sends nothing but to the URL's server and to its own
//! peers; nothing from the network can make it panic. The module is a
//! library (the CLI in `cli/selftest.rs` only parses arguments and prints
//! the [`Report`]), so a later browser test page can run the same checks.
//!
//! Files: [`url`], [`wire`] (UDP and framed streams), [`tls`],
//! [`session`] (requests, retransmission, the credential dance),
//! [`probe`] (echo peers and bursts), [`checks`] (the steps of one URL),
//! `path` (the permission and echo steps: which path the probes take),
//! [`report`], [`from_config`] (URLs and credential from a config file).

pub mod checks;
pub mod from_config;
mod path;
pub mod probe;
pub mod report;
pub mod session;
pub mod tls;
pub mod url;
pub mod wire;

use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

pub use report::{Check, Report, Step, Verdict};
pub use tls::{TlsClient, Trust};
pub use url::{Scheme, Transport, TurnUrl, UrlError};

use crate::proto::auth::LongTermKey;
use crate::proto::client::Cred;

/// The credential Allocate is signed with.
#[derive(Clone, PartialEq, Eq)]
pub struct Credential {
    pub username: String,
    pub secret: CredentialSecret,
}

/// A password, or the key `MD5(username:realm:password)` itself (coturn's
/// `turnadmin -k`, `auth.users[].key`).
#[derive(Clone, PartialEq, Eq)]
pub enum CredentialSecret {
    Password(String),
    Key(LongTermKey),
}

impl Credential {
    pub fn password(username: &str, password: &str) -> Credential {
        Credential {
            username: username.to_owned(),
            secret: CredentialSecret::Password(password.to_owned()),
        }
    }

    /// The client's long-term credential under the realm the server named.
    pub fn cred(&self, realm: &str) -> Cred {
        match &self.secret {
            CredentialSecret::Password(password) => Cred::new(&self.username, realm, password),
            CredentialSecret::Key(key) => Cred::with_key(&self.username, *key),
        }
    }
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credential")
            .field("username", &self.username)
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// What to check and how.
#[derive(Clone, Debug)]
pub struct Plan {
    pub urls: Vec<TurnUrl>,
    /// Needed by `turn:`/`turns:` URLs; without one Allocate fails
    /// saying a credential is asked for.
    pub credential: Option<Credential>,
    /// Needed by secure URLs (the CLI loads it when there is one).
    pub tls: Option<TlsClient>,
    /// The relayed address must be one of these; empty: one of the
    /// addresses the URL's host resolves to.
    pub expect_relay_ips: Vec<IpAddr>,
    /// The realm the server should name (`server.realm` of a config);
    /// another one is a warning.
    pub expect_realm: Option<String>,
    /// Packets in the loss and round-trip burst.
    pub count: usize,
    /// Time between two packets of the burst.
    pub interval: Duration,
    /// The bound on every wait: a connection, a handshake, an answer, an
    /// echo.
    pub timeout: Duration,
    /// A certificate with fewer days left than this is a warning.
    pub cert_warn_days: i64,
}

impl Plan {
    /// A plan for `urls` with the defaults of the command line.
    pub fn new(urls: Vec<TurnUrl>) -> Plan {
        Plan {
            urls,
            credential: None,
            tls: None,
            expect_relay_ips: Vec::new(),
            expect_realm: None,
            count: 20,
            interval: Duration::from_millis(20),
            timeout: Duration::from_secs(5),
            cert_warn_days: 14,
        }
    }
}

/// Checks every URL of `plan`, one after the other.
pub async fn run(plan: &Plan) -> Report {
    let mut report = Report::default();
    for url in &plan.urls {
        report.checks.extend(checks::check_url(url, plan).await);
    }
    report
}
