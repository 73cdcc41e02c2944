//! The command line of `turnpike`, as clap derive types.
//!
//! Only the shape of the command line lives here: its commands, flags,
//! defaults and help text (which `turnpike --help` prints, so a doc
//! comment here is user-facing), and the two small parsers of argument
//! values. What a command does is in the file named after it.
//!
//! Invariants: `--config` is global (every command takes it); a secret is
//! never required on the command line ([`SecretSource`] also takes a file
//! or the environment); no value parsed here is checked again elsewhere.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use turnpike::proto::auth;

#[derive(Parser)]
#[command(
    name = "turnpike",
    version,
    about = "STUN/TURN server with a minimal WebRTC signaling endpoint"
)]
pub struct Cli {
    /// Configuration file (TOML). Without one, built-in defaults are used.
    #[arg(long, short, global = true)]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Subcommand)]
pub enum Command {
    /// Run the server (the default when no subcommand is given).
    Run,
    /// Validate a configuration file and exit (non-zero with the reason if it is invalid).
    CheckConfig {
        /// The file to check.
        file: PathBuf,
    },
    /// Print an RTCIceServer JSON entry with a fresh short-lived credential.
    Credentials(CredentialsArgs),
    /// Print a token for `/ws?token=` when `signaling.token_secret` is set.
    Token {
        /// Token secret (default: signaling.token_secret of --config).
        #[command(flatten)]
        secret: SecretSource,
        /// Lifetime of the token, e.g. "1h", "10m".
        #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
        ttl: Duration,
        /// Bind the token to this room: its holder may join no other.
        #[arg(long)]
        room: Option<String>,
    },
    /// Ask the admin API of a running server (`[admin]` in its config).
    Admin(AdminArgs),
    /// Check a TURN deployment from here: Binding, Allocate, a permission,
    /// an echo through the relay, loss and round trip, the relayed
    /// address, the TLS certificate. Exit 0: no check failed, 1: a check
    /// failed, 2: a usage or config error.
    Selftest(SelftestArgs),
}

/// `turnpike credentials`: the secret, the username and the URL to print.
#[derive(clap::Args)]
pub struct CredentialsArgs {
    /// Shared secret to mint with (default: the first secret of --config).
    #[command(flatten)]
    pub secret: SecretSource,
    /// Name embedded in the username (`<expiry>:<user>`).
    #[arg(long)]
    pub user: Option<String>,
    /// Lifetime of the credential, e.g. "1h", "30m".
    #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
    pub ttl: Duration,
    /// Host name or IP to put in the TURN URL.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Port to put in the TURN URL.
    #[arg(long, default_value_t = 3478)]
    pub port: u16,
    /// Password form: sha1 (coturn's) or sha256 (default: the first
    /// of auth.secret_algorithms of --config, else sha1).
    #[arg(long, value_parser = parse_algorithm)]
    pub algorithm: Option<auth::SecretAlgorithm>,
    /// Instead of minting: print the long-term keys of --user with
    /// --password in --realm, MD5 and SHA-256 (RFC 8489), as the
    /// `key` and `key_sha256` of an [[auth.users]] table.
    #[arg(long, requires = "user")]
    pub keys: bool,
    /// With --keys: the user's password; prefer TURNPIKE_PASSWORD, which
    /// other users of the machine cannot see in the process list.
    #[arg(long, env = "TURNPIKE_PASSWORD", hide_env_values = true)]
    pub password: Option<String>,
    /// With --keys: the realm the keys are for (default: server.realm of
    /// --config, else "turnpike").
    #[arg(long)]
    pub realm: Option<String>,
}

/// `turnpike selftest`: what to check, with which credential, and how.
#[derive(clap::Args)]
pub struct SelftestArgs {
    /// turn:, turns:, stun: or stuns: URLs (RFC 7065, RFC 7064), e.g.
    /// turn:turn.example.org:3478?transport=tcp (default: every listener
    /// of --config).
    pub urls: Vec<String>,
    /// Long-term credential: the user name (with --password).
    #[arg(long)]
    pub user: Option<String>,
    /// Long-term credential: the password; prefer TURNPIKE_PASSWORD,
    /// which other users of the machine cannot see in the process list.
    #[arg(long, env = "TURNPIKE_PASSWORD", hide_env_values = true)]
    pub password: Option<String>,
    /// Shared secret to mint a short-lived credential with (default: the
    /// first secret of --config, else its first user).
    #[command(flatten)]
    pub secret: SecretSource,
    /// Password form of the minted credential: sha1 or sha256 (default:
    /// the first of auth.secret_algorithms of --config, else sha1).
    #[arg(long, value_parser = parse_algorithm)]
    pub algorithm: Option<auth::SecretAlgorithm>,
    /// The host name clients use, for the URLs made from --config's
    /// listeners (a turns: certificate is checked against it).
    #[arg(long)]
    pub host: Option<String>,
    /// Trust only the CA certificates (PEM) of this file for turns:
    /// (default: the system's roots).
    #[arg(long)]
    pub ca: Option<PathBuf>,
    /// The relayed address must be this IP (repeat for several; default:
    /// an address of the URL's host, or with --config and neither URLs nor
    /// --host, the config's server.external_ip when it has one).
    #[arg(long)]
    pub expect_relay_ip: Vec<IpAddr>,
    /// Packets sent through the relay to measure loss and round trip.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u16).range(1..=1000))]
    pub count: u16,
    /// The longest wait for anything (a connection, a handshake, an
    /// answer, an echo), e.g. "5s"; at most 60s.
    #[arg(long, default_value = "5s", value_parser = parse_timeout)]
    pub timeout: Duration,
    /// A certificate with fewer days left than this is a warning.
    #[arg(long, default_value_t = 14)]
    pub cert_warn_days: u16,
    /// Print the report as one line of JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// `turnpike admin`: where the API is, the key, and what to ask.
#[derive(clap::Args)]
pub struct AdminArgs {
    /// The API's URL: http://host:port, or unix:/path for a Unix socket
    /// (default: admin.socket of --config, else http://<admin.listen of
    /// --config>, else http://127.0.0.1:8081).
    #[arg(long)]
    pub url: Option<String>,
    /// A file whose first line is the key (default: TURNPIKE_ADMIN_KEY,
    /// else admin.key or admin.key_file of --config).
    #[arg(long)]
    pub key_file: Option<PathBuf>,
    /// Print the API's JSON answer instead of a table or a summary.
    #[arg(long)]
    pub json: bool,
    #[command(subcommand)]
    pub command: AdminCommand,
}

#[derive(Subcommand)]
pub enum AdminCommand {
    /// List the allocations of every shard.
    List {
        /// Only those of this username.
        #[arg(long)]
        user: Option<String>,
    },
    /// End one allocation by its id (as `list` prints it).
    End { id: String },
    /// End every allocation of a username.
    EndUser { user: String },
    /// Refuse a username from now on and end its allocations.
    Revoke {
        username: String,
        /// How long the revocation holds (default: a short-lived username's
        /// own expiry, else auth.max_credential_lifetime).
        #[arg(long)]
        ttl: Option<String>,
    },
    /// List the revoked usernames.
    Revocations,
}

/// Where a command line takes a secret from. An argument is visible to
/// every user of the machine (`ps`), so a file or the environment is the
/// better place.
#[derive(clap::Args, Clone)]
pub struct SecretSource {
    /// The secret itself; prefer --secret-file or TURNPIKE_SECRET, which
    /// other users of the machine cannot see in the process list.
    #[arg(long, env = "TURNPIKE_SECRET", hide_env_values = true)]
    pub secret: Option<String>,
    /// A file whose first line is the secret.
    #[arg(long, conflicts_with = "secret")]
    pub secret_file: Option<PathBuf>,
}

impl SecretSource {
    /// The secret given, if any: `--secret` (or TURNPIKE_SECRET), else the
    /// first line of `--secret-file` (trimmed; an empty one is an error).
    pub fn resolve(self) -> anyhow::Result<Option<String>> {
        match (self.secret, self.secret_file) {
            (Some(secret), _) => Ok(Some(secret)),
            (None, Some(path)) => {
                let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
                match text.lines().next().map(str::trim).filter(|l| !l.is_empty()) {
                    Some(line) => Ok(Some(line.to_owned())),
                    None => bail!("{} holds no secret on its first line", path.display()),
                }
            }
            (None, None) => Ok(None),
        }
    }
}

/// `--timeout`: a duration from 100 ms to 60 s.
fn parse_timeout(text: &str) -> Result<Duration, String> {
    let timeout = humantime::parse_duration(text).map_err(|e| e.to_string())?;
    match (Duration::from_millis(100)..=Duration::from_secs(60)).contains(&timeout) {
        true => Ok(timeout),
        false => Err(format!("{text:?} is not between 100ms and 60s")),
    }
}

/// `--algorithm`: the names `auth.secret_algorithms` takes.
fn parse_algorithm(name: &str) -> Result<auth::SecretAlgorithm, String> {
    match name {
        "sha1" => Ok(auth::SecretAlgorithm::Sha1),
        "sha256" => Ok(auth::SecretAlgorithm::Sha256),
        _ => Err(format!("{name:?} is not sha1 or sha256")),
    }
}
