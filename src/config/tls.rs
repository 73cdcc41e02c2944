//! `[tls]`: the certificate and key of the TLS listeners and of HTTPS.
//!
//! This file holds the section's struct and the doc comment on each field
//! that is the reference for its key. Its files are read by
//! `process::tls`, which reports a bad PEM file; the section has no rule
//! of its own: when it is needed (`listen.tls`, `signaling.tls`) is a rule
//! across sections, in `cross.rs`. The loader resolves relative paths
//! against the config file's directory.

use std::path::PathBuf;

use serde::Deserialize;

/// `[tls]`
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsSection {
    /// PEM file with the certificate chain, leaf first. Read at start and
    /// again on SIGHUP (a renewed certificate takes effect for new
    /// connections; live ones and their allocations stay). A relative path
    /// is taken from the config file's directory. Required when
    /// `listen.tls` is non-empty.
    pub cert: Option<PathBuf>,
    /// PEM file with the private key (PKCS#8, PKCS#1 or SEC1). Same rules
    /// as `cert`.
    pub key: Option<PathBuf>,
}
