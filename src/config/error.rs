//! [`ConfigError`]: how a refused configuration is reported.
//!
//! Both steps of loading report through it: reading and parsing the TOML
//! (`Read`, `Parse`, made in `mod.rs`) and validation (`Invalid`,
//! `SecretsFile`, made by each section's `check` without an origin, which
//! the loader that knows the file adds). The messages are the interface operators and
//! tests see: each names the file when there is one and the key or line at
//! fault, and none quotes a secret.

use std::fmt;
use std::io;
use std::path::PathBuf;

/// Why a configuration is refused. Every message names the file (when there
/// is one) and the key or line at fault, and never quotes a secret.
///
/// Messages are complete on their own (`{}` is enough); the underlying
/// I/O or TOML error is part of the message rather than a `source()`, so
/// `{:#}` through anyhow does not print it twice.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("cannot read config file {}: {error}", .path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        error: io::Error,
    },
    /// TOML syntax error, unknown key, wrong type or malformed value. toml's
    /// message gives the line, the column and a snippet.
    #[error("{origin}: {}", .error.to_string().trim_end())]
    Parse {
        /// The file path, or `<string>`-like label given to [`Config::from_toml`](super::Config::from_toml).
        origin: String,
        /// toml's error.
        error: Box<toml::de::Error>,
    },
    /// A value that parses but is not allowed.
    #[error("{}{key}: {reason}", Origin(.origin))]
    Invalid {
        /// Where the config came from; `None` from a bare [`Config::validate`](super::Config::validate).
        origin: Option<String>,
        /// The key at fault, e.g. `relay.ports` or `auth.users[0].key`.
        key: String,
        /// What is wrong with it.
        reason: String,
    },
    /// `auth.secrets_file` could not be read.
    #[error("{}auth.secrets_file: cannot read {}: {error}", Origin(.origin), .path.display())]
    SecretsFile {
        /// Where the config came from; `None` from a bare [`Config::validate`](super::Config::validate).
        origin: Option<String>,
        /// The secrets file, as resolved.
        path: PathBuf,
        /// What the OS said.
        error: io::Error,
    },
}

impl ConfigError {
    /// The key at fault, for [`ConfigError::Invalid`] and
    /// [`ConfigError::SecretsFile`].
    pub fn key(&self) -> Option<&str> {
        match self {
            ConfigError::Invalid { key, .. } => Some(key),
            ConfigError::SecretsFile { .. } => Some("auth.secrets_file"),
            ConfigError::Read { .. } | ConfigError::Parse { .. } => None,
        }
    }

    pub(super) fn invalid(key: impl Into<String>, reason: impl Into<String>) -> Self {
        ConfigError::Invalid {
            origin: None,
            key: key.into(),
            reason: reason.into(),
        }
    }

    /// Names the file a validation error was found in.
    pub(super) fn in_origin(mut self, name: &str) -> Self {
        if let ConfigError::Invalid { origin, .. } | ConfigError::SecretsFile { origin, .. } = &mut self {
            if origin.is_none() {
                *origin = Some(name.to_owned());
            }
        }
        self
    }
}

/// Displays `"<origin>: "`, or nothing.
struct Origin<'a>(&'a Option<String>);

impl fmt::Display for Origin<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(origin) => write!(f, "{origin}: "),
            None => Ok(()),
        }
    }
}
