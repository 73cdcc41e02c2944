//! A xorshift64 generator (Marsaglia 2003): fast, tiny and deterministic
//! for a given seed. For choices that must not repeat or be predictable in
//! bulk but carry no security meaning (relay port choice, indication
//! transaction ids), and for the tests' seeded mutations. Anything an
//! attacker must not guess (nonces, reservation tokens) uses HMAC instead.

#[derive(Clone, Debug)]
pub struct XorShift(u64);

impl XorShift {
    /// A generator from `seed`; any seed works (zero, which would stay
    /// zero forever, is nudged).
    pub fn new(seed: u64) -> XorShift {
        XorShift(seed | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A number in `0..n` (`0` when `n` is 0); the modulo bias is
    /// irrelevant for the ranges used here.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    pub fn byte(&mut self) -> u8 {
        self.next_u64() as u8
    }

    pub fn fill(&mut self, buf: &mut [u8]) {
        for b in buf {
            *b = self.byte();
        }
    }

    /// Up to `edits` random edits of `bytes` (a byte changed, dropped or
    /// doubled, or the rest cut off), at least one: the tests' seeded
    /// mutation of valid input. Stops early once `bytes` is empty.
    pub fn mutate(&mut self, bytes: &mut Vec<u8>, edits: u64) {
        for _ in 0..1 + self.below(edits) {
            if bytes.is_empty() {
                return;
            }
            let at = (self.next_u64() as usize) % bytes.len();
            match self.next_u64() % 4 {
                0 => bytes[at] = self.byte(),
                1 => drop(bytes.remove(at)),
                2 => bytes.insert(at, bytes[at]),
                _ => bytes.truncate(at),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::XorShift;

    #[test]
    fn same_seed_gives_the_same_stream_and_zero_is_not_stuck() {
        let (mut a, mut b) = (XorShift::new(42), XorShift::new(42));
        let first: Vec<u64> = (0..4).map(|_| a.next_u64()).collect();
        assert_eq!(first, (0..4).map(|_| b.next_u64()).collect::<Vec<_>>());
        assert!(first.windows(2).all(|w| w[0] != w[1]));
        let mut zero = XorShift::new(0);
        assert_ne!(zero.next_u64(), 0);
        assert!((0..100).all(|_| zero.below(7) < 7));
    }
}
