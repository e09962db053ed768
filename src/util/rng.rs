//! Seeded pseudo-random numbers for everything recforge draws at random.
//!
//! A generated dataset is an artefact people compare results on, so the same
//! seed must give the same bytes forever. That rules out depending on the
//! stream of a third-party RNG crate, whose algorithms change between major
//! versions; xoshiro256++ (Blackman & Vigna) seeded through SplitMix64 is
//! fixed here instead.

#[derive(Clone, Debug)]
pub struct Rng {
    s: [u64; 4],
}

fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Rng {
    pub fn new(seed: u64) -> Self {
        let mut st = seed;
        let s = [
            splitmix64(&mut st),
            splitmix64(&mut st),
            splitmix64(&mut st),
            splitmix64(&mut st),
        ];
        Rng { s }
    }

    /// An independent stream for a named purpose, so adding draws to one part
    /// of the generator does not shift the numbers every other part sees.
    pub fn stream(seed: u64, purpose: u64) -> Self {
        let mut st = seed ^ purpose.wrapping_mul(0xA24B_AED4_963E_E407);
        Rng::new(splitmix64(&mut st))
    }

    pub fn next_u64(&mut self) -> u64 {
        let r = self.s[0]
            .wrapping_add(self.s[3])
            .rotate_left(23)
            .wrapping_add(self.s[0]);
        let t = self.s[1] << 17;
        self.s[2] ^= self.s[0];
        self.s[3] ^= self.s[1];
        self.s[1] ^= self.s[2];
        self.s[0] ^= self.s[3];
        self.s[2] ^= t;
        self.s[3] = self.s[3].rotate_left(45);
        r
    }

    /// Uniform in [0, 1) with 53 random bits.
    pub fn f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform integer in [0, n); n must be > 0. Lemire's multiply-shift.
    pub fn below(&mut self, n: u64) -> u64 {
        debug_assert!(n > 0);
        ((self.next_u64() as u128 * n as u128) >> 64) as u64
    }

    pub fn chance(&mut self, p: f64) -> bool {
        self.f64() < p
    }

    /// Standard normal (Box-Muller; one of the pair is discarded for simplicity).
    pub fn normal(&mut self) -> f64 {
        let u1 = 1.0 - self.f64();
        let u2 = self.f64();
        libm::sqrt(-2.0 * libm::log(u1)) * libm::cos(std::f64::consts::TAU * u2)
    }

    pub fn lognormal(&mut self, mu: f64, sigma: f64) -> f64 {
        libm::exp(mu + sigma * self.normal())
    }

    /// Poisson draw; inversion for small means, a rounded normal above 30
    /// where the shape difference is irrelevant for a simulator.
    pub fn poisson(&mut self, lambda: f64) -> u64 {
        if lambda <= 0.0 {
            return 0;
        }
        if lambda > 30.0 {
            return (lambda + libm::sqrt(lambda) * self.normal())
                .round()
                .max(0.0) as u64;
        }
        let l = libm::exp(-lambda);
        let mut k = 0;
        let mut p = 1.0;
        loop {
            p *= self.f64();
            if p <= l {
                return k;
            }
            k += 1;
        }
    }

    /// Pareto with scale 1 and shape `alpha`: the power-law popularity knob.
    pub fn pareto(&mut self, alpha: f64) -> f64 {
        libm::pow(1.0 - self.f64(), -1.0 / alpha)
    }

    /// Index drawn with probability proportional to `weights` (linear scan:
    /// for the short lists it is used on).
    pub fn weighted(&mut self, weights: &[f64]) -> usize {
        let total: f64 = weights.iter().sum();
        let mut x = self.f64() * total;
        for (i, w) in weights.iter().enumerate() {
            if x < *w {
                return i;
            }
            x -= w;
        }
        weights.len() - 1
    }

    pub fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            v.swap(i, j);
        }
    }
}

/// Index `i` with `cum[i-1] <= x < cum[i]` inside `lo..hi` of a running sum.
/// Used to draw from one contiguous slice of a cumulative weight table.
pub fn draw_cumulative(rng: &mut Rng, cum: &[f64], lo: usize, hi: usize) -> Option<usize> {
    let base = if lo == 0 { 0.0 } else { cum[lo - 1] };
    let mass = cum[hi - 1] - base;
    if hi <= lo || mass <= 0.0 {
        return None;
    }
    let x = base + rng.f64() * mass;
    let i = lo + cum[lo..hi].partition_point(|&c| c <= x);
    Some(i.min(hi - 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_stream_and_streams_differ() {
        let a: Vec<u64> = (0..5)
            .map(|_| 0)
            .scan(Rng::new(7), |r, _: u64| Some(r.next_u64()))
            .collect();
        let b: Vec<u64> = (0..5)
            .map(|_| 0)
            .scan(Rng::new(7), |r, _: u64| Some(r.next_u64()))
            .collect();
        assert_eq!(a, b);
        assert_ne!(Rng::stream(7, 1).next_u64(), Rng::stream(7, 2).next_u64());
    }

    #[test]
    fn below_and_poisson_have_the_right_means() {
        let mut r = Rng::new(1);
        let n = 200_000;
        let m: f64 = (0..n).map(|_| r.below(10) as f64).sum::<f64>() / n as f64;
        assert!((m - 4.5).abs() < 0.05, "{m}");
        let p: f64 = (0..n).map(|_| r.poisson(2.5) as f64).sum::<f64>() / n as f64;
        assert!((p - 2.5).abs() < 0.03, "{p}");
    }

    #[test]
    fn draw_cumulative_respects_the_slice_and_zero_mass() {
        let mut r = Rng::new(3);
        let cum = [1.0, 1.0, 3.0, 6.0];
        for _ in 0..1000 {
            let i = draw_cumulative(&mut r, &cum, 1, 4).unwrap();
            assert!((2..4).contains(&i), "index 1 has zero weight, got {i}");
        }
        assert_eq!(draw_cumulative(&mut r, &cum, 1, 2), None);
    }
}
