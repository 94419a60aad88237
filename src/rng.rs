//! The one random generator of the crate: seeded checkpoints, sampling, benchmark prompts.

/// SplitMix64: a tiny, stable generator, so a seed gives the same checkpoint on every
/// machine and crate version (the fixtures depend on it). Its state advances by a constant per
/// draw, so [`Rng::skip`] jumps ahead in O(1) and a long stream can be drawn in parallel pieces.
#[derive(Clone)]
pub struct Rng(u64);

/// The 64-bit draws one [`Rng::normal`] takes.
pub const NORMAL_DRAWS: u64 = 2;
impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed ^ 0x9E37_79B9_7F4A_7C15)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Advance as `n` calls of [`Rng::next_u64`] would.
    pub fn skip(&mut self, n: u64) {
        self.0 = self.0.wrapping_add(n.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    }
    /// Uniform in (0, 1).
    pub fn uniform(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }
    /// Uniform in `0..n` (`n` > 0), by the modulo of one draw (the seeded sweeps name their
    /// cases by it, so it stays this).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
    /// One of `xs` (not empty), drawn by [`Rng::below`].
    pub fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.below(xs.len())]
    }
    /// One standard normal draw; it takes [`NORMAL_DRAWS`] calls of [`Rng::next_u64`].
    pub fn normal(&mut self) -> f64 {
        let (u, v) = (self.uniform(), self.uniform());
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skip_equals_drawing() {
        let mut a = Rng::new(7);
        let mut b = a.clone();
        for _ in 0..1000 {
            a.next_u64();
        }
        b.skip(1000);
        assert_eq!(a.next_u64(), b.next_u64());
        let mut c = Rng::new(7);
        c.normal();
        let mut d = Rng::new(7);
        d.skip(NORMAL_DRAWS);
        assert_eq!(c.next_u64(), d.next_u64());
    }
}
