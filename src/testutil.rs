//! Test data for the unit tests (`cfg(test)` only): one seeded generator of floats in [-1, 1),
//! so that every test module draws its random weights and inputs the same way.

/// xorshift64 (shifts 13, 7, 17); each draw is the state's top 24 bits scaled to [-1, 1) on a
/// 2^-23 grid. Not for statistics: for deterministic, seed-printed test inputs.
pub(crate) struct XorShift(u64);

impl XorShift {
    /// The stream of `seed`: the state starts at `seed` times the 64-bit golden ratio, made odd
    /// (so seeds 0, 1, 2... give unrelated streams).
    pub(crate) fn new(seed: u64) -> Self {
        XorShift(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// The stream whose state starts at `state` itself (0, which xorshift never leaves, is 1).
    pub(crate) fn from_state(state: u64) -> Self {
        XorShift(state.max(1))
    }

    /// The next draw, uniform in [-1, 1).
    pub(crate) fn next_f32(&mut self) -> f32 {
        let s = &mut self.0;
        *s ^= *s << 13;
        *s ^= *s >> 7;
        *s ^= *s << 17;
        (*s >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }

    /// The next `n` draws.
    pub(crate) fn take(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.next_f32()).collect()
    }
}

/// xorshift64* (shifts 12, 25, 27, multiplier 0x2545F4914F6CDD1D) drawing uniform f64 in
/// [0, 1) from the top 53 bits: the metric and calibration tests' generator (their figures
/// were drawn with it).
pub(crate) struct XorShiftStar(pub(crate) u64);

impl XorShiftStar {
    /// The next 64 bits.
    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in [0, 1).
    pub(crate) fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

mod tests {
    use super::XorShift;

    /// Both streams equal the loops the test modules open-coded before (same seeds, same
    /// values, so their expectations hold), and the draws stay in [-1, 1) around 0.
    #[test]
    fn streams_are_the_open_coded_ones() {
        let open_coded = |mut s: u64, n: usize| -> Vec<f32> {
            (0..n)
                .map(|_| {
                    s ^= s << 13;
                    s ^= s >> 7;
                    s ^= s << 17;
                    (s >> 40) as f32 / (1u64 << 23) as f32 - 1.0
                })
                .collect()
        };
        for seed in [0u64, 1, 7, 99, u64::MAX] {
            let mixed = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
            assert_eq!(XorShift::new(seed).take(100), open_coded(mixed, 100));
            assert_eq!(
                XorShift::from_state(seed).take(100),
                open_coded(seed.max(1), 100)
            );
        }
        let v = XorShift::new(3).take(10_000);
        assert!(v.iter().all(|x| (-1.0..1.0).contains(x)));
        let mean = v.iter().map(|&x| x as f64).sum::<f64>() / v.len() as f64;
        assert!(mean.abs() < 0.03, "mean {mean}");
    }
}
