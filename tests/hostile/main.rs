//! Hostile clients: abuse from one source, malformed input, amplification,
//! a spoofed flood against the challenge budget, rate limits, and a fuzz
//! smoke of the parsers and the core.

#[path = "../common/mod.rs"]
mod common;

mod abuse;
mod amplification;
mod challenge_budget;
mod fuzz_smoke;
mod malformed_input;
mod rate_limits;
