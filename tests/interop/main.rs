//! Other clients against the server: coturn's tools, aiortc, headless
//! Chromium (the demo page, the TURN test page), NAT type discovery by
//! Debian's `stun` and coturn's `turnutils_stunclient`; and ours against
//! another server: `turnpike selftest` against coturn's `turnserver`.

#[path = "../common/mod.rs"]
mod common;

mod aiortc;
mod browser_call;
mod browser_features;
mod browser_shared_port;
mod browser_turn_test;
mod coturn_tools;
mod selftest_coturn;
mod stun_client;
