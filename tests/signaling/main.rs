//! The signaling endpoint over real sockets: protocol v1 and its limits, and
//! v1.1's resume.

#[path = "../common/mod.rs"]
mod common;

mod protocol;
mod resume;
