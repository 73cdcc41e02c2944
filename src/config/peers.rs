//! `[peers]`: changes to the built-in list of peer addresses the server
//! refuses to relay to (`proto::peer_filter`).
//!
//! This file holds the section's struct and the doc comment on each field
//! that is the reference for its key. Every rule it has is a CIDR's
//! syntax, checked while serde parses it (so the error has its line); the
//! section needs no `check`.

use serde::Deserialize;

use super::value::cidrs;
use super::Cidr;

/// `[peers]`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PeersSection {
    /// CIDRs that may be relayed to even though the built-in deny list
    /// (loopback, private, link-local, ...) refuses them, e.g.
    /// `["127.0.0.0/8", "::1/128"]` for local tests. `deny` wins over it,
    /// and this server's own service ports stay refused. A bare address
    /// means a single host. Default: `[]`.
    #[serde(deserialize_with = "cidrs")]
    pub allow: Vec<Cidr>,
    /// Extra CIDRs to refuse as peers, on top of the built-in deny list;
    /// checked first, so it wins over `allow`. Default: `[]`.
    #[serde(deserialize_with = "cidrs")]
    pub deny: Vec<Cidr>,
}
