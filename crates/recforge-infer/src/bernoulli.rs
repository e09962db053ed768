//! Counter-based Bernoulli masks: element i of the mask for `key` is decided
//! by a SplitMix64 finaliser of (key, i) alone, so a mask can be built in
//! parallel chunks, on any number of threads, and rebuilt from its key.
//!
//! Only the trainer's dropout uses it. It lives in this crate because this
//! crate is compiled with optimisations in the dev profile (the one `cargo
//! run` and the tests use), and a mask of millions of elements per step is
//! a hot loop.

use rayon::prelude::*;

/// SplitMix64's finaliser: a bijection whose output bits each depend on
/// every input bit.
pub fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Elements per parallel chunk (even: two elements share one hash).
const CHUNK: usize = 1 << 15;

/// `n` values, each `scale` with probability `keep` and 0 otherwise, drawn
/// from `key`.
pub fn keep_mask(key: u64, n: usize, keep: f64, scale: f32) -> Vec<f32> {
    // An element is kept when its 32-bit draw is below keep · 2³².
    let threshold = (keep * 4_294_967_296.0).min(u32::MAX as f64) as u32;
    let mut out = vec![0.0f32; n];
    out.par_chunks_mut(CHUNK)
        .enumerate()
        .for_each(|(c, chunk)| {
            let first_pair = (c * CHUNK / 2) as u64;
            let mut pairs = chunk.chunks_exact_mut(2);
            let mut p = first_pair;
            for two in &mut pairs {
                let h = mix(key ^ p.wrapping_mul(0xD6E8_FEB8_6659_FD93));
                two[0] = if (h as u32) < threshold { scale } else { 0.0 };
                two[1] = if ((h >> 32) as u32) < threshold {
                    scale
                } else {
                    0.0
                };
                p += 1;
            }
            if let [last] = pairs.into_remainder() {
                let h = mix(key ^ p.wrapping_mul(0xD6E8_FEB8_6659_FD93));
                *last = if (h as u32) < threshold { scale } else { 0.0 };
            }
        });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_keep_the_share_asked_for_independently_and_repeat_with_the_key() {
        let m = keep_mask(7, 1_000_001, 0.8, 1.25);
        assert_eq!(m.len(), 1_000_001);
        assert!(m.iter().all(|&v| v == 0.0 || v == 1.25));
        let kept = m.iter().filter(|&&v| v == 1.25).count() as f64 / m.len() as f64;
        assert!((kept - 0.8).abs() < 0.002, "{kept}");
        // Neighbours (which share a hash) are independent: equal adjacent
        // decisions come at 0.8² + 0.2².
        let same = m.windows(2).filter(|w| w[0] == w[1]).count() as f64 / (m.len() - 1) as f64;
        assert!((same - 0.68).abs() < 0.003, "{same}");
        assert_eq!(
            m,
            keep_mask(7, 1_000_001, 0.8, 1.25),
            "a key gives one mask"
        );
        assert_ne!(m, keep_mask(8, 1_000_001, 0.8, 1.25));
        // A prefix of a longer mask is the shorter mask: chunks depend on
        // indices only.
        assert_eq!(keep_mask(7, 100_000, 0.8, 1.25)[..], m[..100_000]);
    }
}
