//! Process-wide services: what the packet shards of [`crate::net`] and the
//! HTTP endpoint of [`crate::http`] both use, kept apart from either so
//! that neither reaches into the other.
//!
//! * [`accept`]: the accept step of the HTTP and admin listeners;
//! * [`clock`]: the only place the clock is read;
//! * [`logging`]: how log lines look on a terminal, in a file, in the journal;
//! * [`random`]: the operating system's random source;
//! * [`tls`]: the certificate both TLS listeners and HTTPS serve;
//! * [`acme`]: that certificate obtained and renewed from an ACME CA
//!   (`[tls.acme]`), on a thread of its own;
//! * [`proxy_protocol`]: the PROXY header step of every stream and HTTP
//!   accept, and its counts;
//! * [`status`]: what the rest of the process may ask the running shards;
//! * [`http_handover`]: HTTP connections of a shared TLS port, from the
//!   shard that accepted them to the HTTP thread;
//! * [`web_assets`]: the web pages built into the binary (the demo page
//!   of `http`, the console of `admin`) and how they are served.
//!
//! Nothing here imports `net`, `http` or `admin`; it builds on [`crate::proto`] and
//! [`crate::config`] only.

pub mod accept;
pub mod acme;
pub mod clock;
pub mod http_handover;
pub mod logging;
pub mod proxy_protocol;
pub mod random;
pub mod runtime_thread;
pub mod status;
pub mod tls;
pub mod web_assets;
