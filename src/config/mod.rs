//! Configuration: the TOML schema, its built-in defaults and its validation.
//!
//! The server reads one TOML file in which every section and every key is
//! optional; whatever is left out takes the default written on its field,
//! and the defaults are meant to be safe on a public server. Key names are
//! an interface (the configuration sketch of `docs/design.md`):
//! documentation, examples and external tests rely on them. The doc comment
//! on each field is the reference for that key; `config.example.toml`
//! repeats it for operators and a test keeps the two in step.
//!
//! Text becomes a usable [`Config`] in two steps:
//!
//! 1. serde parses the TOML. Every struct has `deny_unknown_fields`, so a
//!    misspelt key is an error with its line and column rather than a
//!    setting that is silently ignored.
//! 2. [`Config::validate`] checks what the types cannot express (lengths,
//!    ranges, exactly one of `password` / `key`, ...) and reads
//!    `auth.secrets_file` into [`AuthSection::resolved_secrets`] and
//!    `admin.key_file` into [`AdminSection::resolved_key`].
//!
//! [`Config::load`] and [`Config::from_toml`] do both; call `validate` on its
//! own only for a config built or changed in code.
//!
//! Secrets are held in [`Secret`], whose `Debug` is redacted, so a config can
//! be logged with `{:?}`, and no error message ever quotes a secret.
//!
//! Files: one per section (`server.rs` with `external_ip.rs`, `listen.rs`, `tls.rs`, `relay.rs`,
//! `auth.rs`, `peers.rs`, `limits.rs`, `alternate.rs`, `signaling.rs`,
//! `log.rs`, `admin.rs`, `fleet.rs`), each holding the section's struct,
//! its defaults, the doc comment that is the reference for each key, and
//! the section's own rules (its `check`); `cross.rs` the rules that span
//! sections and the start-up warnings; `value.rs` the value types the
//! schema is written in ([`Secret`], [`PortRange`], the `"off"` and CIDR
//! parsers); `error.rs` [`ConfigError`], through which both steps report.
//! This file holds the whole file's struct, loading, and the order in
//! which the rules are checked. Every public name is re-exported here, so
//! that users write `config::LimitsSection`, never the file it is in.

mod admin;
mod alternate;
mod auth;
mod cross;
mod error;
mod external_ip;
mod fleet;
mod limits;
mod listen;
mod log;
mod peers;
mod relay;
mod server;
mod signaling;
mod tls;
mod value;

#[cfg(test)]
mod tests;

use std::path::Path;

use serde::Deserialize;

pub use crate::proto::auth::SecretAlgorithm;
pub use crate::proto::peer_filter::Cidr;
pub use admin::AdminSection;
pub use alternate::AlternateSection;
pub use auth::{AuthSection, User};
pub use error::ConfigError;
pub use external_ip::{ExternalIp, ExternalIps};
pub use fleet::{is_fleet_name, FleetSection};
pub use limits::LimitsSection;
pub use listen::ListenSection;
pub use log::{LogFormat, LogSection};
pub use peers::PeersSection;
pub use relay::{FastPath, RelaySection};
pub use server::{ServerSection, MAX_WORKERS};
pub use signaling::{SignalingSection, TurnPorts};
pub use tls::{AcmeChallenge, AcmeSection, TlsSection, LETS_ENCRYPT_DIRECTORY};
pub use value::{is_valid_host, PortRange, PortRangeError, Secret};

/// The whole configuration file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// `[server]`: identity of the server on the wire and its thread count.
    pub server: ServerSection,
    /// `[listen]`: addresses clients reach the server on.
    pub listen: ListenSection,
    /// `[tls]`: certificate and key for `listen.tls`, or `[tls.acme]`.
    pub tls: TlsSection,
    /// `[relay]`: where relayed transport addresses are allocated.
    pub relay: RelaySection,
    /// `[auth]`: shared secrets, long-term users, credential and nonce lifetimes.
    pub auth: AuthSection,
    /// `[peers]`: changes to the built-in list of refused peer addresses.
    pub peers: PeersSection,
    /// `[limits]`: quotas on allocations, permissions and channels.
    pub limits: LimitsSection,
    /// `[alternate]`: sibling instances that take the Allocates this one
    /// sheds.
    pub alternate: AlternateSection,
    /// `[signaling]`: the WebSocket rooms, `/ice-servers` and the demo page
    /// served on `listen.http`.
    pub signaling: SignalingSection,
    /// `[log]`: log filter and format.
    pub log: LogSection,
    /// `[admin]`: the operator's admin API.
    pub admin: AdminSection,
    /// `[fleet]`: signaling rooms shared with other instances through Redis.
    pub fleet: FleetSection,
}

impl Config {
    /// Checks everything serde cannot, and fills
    /// [`AuthSection::resolved_secrets`] from `auth.secrets` and
    /// `auth.secrets_file` (read here; a missing or unreadable file is an
    /// error naming it) and [`AdminSection::resolved_key`] from `admin.key`
    /// or `admin.key_file`. On error the config is left unchanged.
    ///
    /// Reports the first broken rule as a [`ConfigError`] naming its key
    /// (the loader adds the file), never quoting a secret. The rules are
    /// each section's `check`, in the order below, with the rules across
    /// sections (`cross.rs`) at the point of the section whose key they
    /// name; the order decides which fault a file with several reports.
    pub fn validate(&mut self) -> Result<(), ConfigError> {
        server::check(&self.server)?;
        tls::check(&self.tls)?;
        cross::check_listen_tls(self)?;
        listen::check(&self.listen)?;
        relay::check(&self.relay)?;
        external_ip::check(&self.server.external_ip, &self.relay)?;
        auth::check(&self.auth)?;
        limits::check(&self.limits)?;
        alternate::check(&self.alternate)?;
        cross::check_signaling_tls(self)?;
        signaling::check(&self.signaling)?;
        cross::check_acme(self)?;
        log::check(&self.log)?;
        fleet::check(&self.fleet)?;
        cross::check_magnitudes(self)?;
        let admin_key = admin::resolve_key(&self.admin)?;
        self.auth.resolved_secrets = auth::read_secrets(&self.auth)?;
        self.fleet.resolved_secrets = fleet::read_secrets(&self.fleet)?;
        self.admin.resolved_key = admin_key;
        Ok(())
    }

    /// Reads, parses and validates the file at `path`.
    ///
    /// A relative `auth.secrets_file` is taken from the directory of `path`.
    /// Errors name the file; TOML and schema errors add toml's "TOML parse
    /// error at line L, column C" and a snippet, validation errors the key
    /// (e.g. `relay.ports: low port 0 is not allowed`).
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
            path: path.to_owned(),
            error,
        })?;
        let origin = path.display().to_string();
        let mut config = Config::parse(&text, &origin)?;
        if let Some(dir) = path.parent() {
            let files = [
                &mut config.auth.secrets_file,
                &mut config.tls.cert,
                &mut config.tls.key,
                &mut config.admin.key_file,
                &mut config.fleet.secrets_file,
            ];
            let mut paths: Vec<&mut std::path::PathBuf> = files.into_iter().flatten().collect();
            if let Some(acme) = config.tls.acme.as_mut() {
                paths.push(&mut acme.cache_dir);
                paths.extend(acme.directory_ca.as_mut());
            }
            for file in paths {
                if file.is_relative() {
                    *file = dir.join(&*file);
                }
            }
        }
        config.validate().map_err(|e| e.in_origin(&origin))?;
        Ok(config)
    }

    /// Parses and validates `text`; `origin` names it in error messages (a
    /// path, or something like `"<string>"`). A relative
    /// `auth.secrets_file` is taken from the current directory.
    pub fn from_toml(text: &str, origin: &str) -> Result<Config, ConfigError> {
        let mut config = Config::parse(text, origin)?;
        config.validate().map_err(|e| e.in_origin(origin))?;
        Ok(config)
    }

    fn parse(text: &str, origin: &str) -> Result<Config, ConfigError> {
        toml::from_str(text).map_err(|error| ConfigError::Parse {
            origin: origin.to_owned(),
            error: Box::new(error),
        })
    }
}
