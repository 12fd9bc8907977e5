//! Seeded draws for the tests that pick victims and moments at random: the seed is printed,
//! and setting it again replays the same schedule.

/// A small deterministic generator (xorshift64*): the draws are the seed's.
pub struct Draw(u64);

impl Draw {
    /// A generator seeded from `var` if it is set, else from the clock; returns the seed
    /// too, to print.
    pub fn from_env(var: &str) -> (u64, Draw) {
        let seed = std::env::var(var)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
            })
            | 1; // xorshift never leaves zero
        (seed, Draw(seed))
    }

    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Draw {
        Draw(seed | 1) // xorshift never leaves zero
    }

    /// A seed for another generator, drawn from this one.
    pub fn seed(&mut self) -> u64 {
        self.below(u64::MAX) | 1
    }

    /// A number in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n.max(1)
    }

    /// A number in `low..high`.
    pub fn between(&mut self, low: u64, high: u64) -> u64 {
        low + self.below(high.saturating_sub(low))
    }
}
