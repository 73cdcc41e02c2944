//! Other clients against the server: coturn's tools, aiortc, headless
//! Chromium; and ours against another server: `turnpike selftest`
//! against coturn's `turnserver`.

#[path = "../common/mod.rs"]
mod common;

mod aiortc;
mod browser_call;
mod browser_features;
mod browser_shared_port;
mod coturn_tools;
mod selftest_coturn;
