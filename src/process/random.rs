//! Randomness from the operating system (ring's `SystemRandom`), for
//! secrets, nonce keys, peer ids and port choice. The protocol core draws
//! none of its own: what it needs is passed in.

/// The lint exception of the crate (see its doc): without entropy there is
/// no secure way to go on.
#[allow(clippy::expect_used)]
pub fn random_bytes<const N: usize>() -> [u8; N] {
    use ring::rand::SecureRandom;
    let mut out = [0u8; N];
    // SystemRandom only fails if the OS has no entropy source at all, in
    // which case nothing about this server can be secure: stop loudly.
    ring::rand::SystemRandom::new()
        .fill(&mut out)
        .expect("operating system random number generator failed");
    out
}

/// 8 random bytes for non-security uses (port choice).
pub fn seed_u64() -> u64 {
    u64::from_le_bytes(random_bytes())
}
