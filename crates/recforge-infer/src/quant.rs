//! An int8 copy of the item table for single-customer searches, with
//! error bounds that keep the result exact.
//!
//! One customer against 10^5 items is a read of the whole f32 table (27 MB
//! at d = 64), and on one core that read alone costs ~3 ms: the search is
//! bound by memory, not arithmetic. The int8 copy is a quarter of the size.
//! Each item row keeps its own scale, and the query is quantised the same
//! way, so an approximate score is one integer dot product and one multiply.
//!
//! Exactness: with u = t·p + δu and v = s·q + r (p, q the int8 codes),
//!   u·v − t·s·(p·q) = u·r + δu·(s q),
//! so |error| ≤ ‖u‖‖r‖ + ‖δu‖‖s q‖ (Cauchy–Schwarz), plus a rounding
//! allowance for the f32 arithmetic of both the approximation and the exact
//! score. An item can only be among the true top K if its upper bound
//! reaches the K-th best lower bound; exactly those are re-scored in f32.

/// The int8 table with, per item (structure of arrays, so that a block of
/// bounds is computed in SIMD lanes): its scale and the two coefficients
/// of its error bound.
#[derive(Debug, Clone, Default)]
pub(crate) struct Quantized {
    dim: usize,
    pub codes: Vec<i8>,
    /// v ≈ scale · q.
    pub scale: Vec<f32>,
    /// Multiplies ‖u‖: ‖v − scale·q‖ plus the rounding allowance.
    pub err_u: Vec<f32>,
    /// Multiplies the query's own quantisation error: ‖scale·q‖.
    pub err_q: Vec<f32>,
    /// Σ q (the AVX2 product shifts the query's codes to unsigned).
    pub code_sum: Vec<i32>,
}

/// Item codes use the full signed byte.
const ITEM_LEVELS: f32 = 127.0;
/// Query codes stay within ±63, so that shifted by 64 they are unsigned
/// bytes below 128, and a pair of products (u8 · i8) never exceeds
/// 127 · 127 · 2 < 2^15: the AVX2 byte multiply-add cannot saturate.
const QUERY_LEVELS: f32 = 63.0;
const QUERY_SHIFT: i32 = 64;

/// Relative allowance for f32 rounding in the approximate and the exact
/// scores of a `dim`-wide dot product: generous against dim·ε.
fn slack(dim: usize) -> f32 {
    4.0 * (dim as f32 + 8.0) * f32::EPSILON
}

/// Quantises `v` to `out` with a symmetric per-row scale; returns the scale
/// and the residual's norm. Non-finite rows get scale NaN, which no bound
/// test passes (such an item can never rank, as in the f32 search).
pub(crate) fn quantize(v: &[f32], levels: f32, out: &mut [i8]) -> (f32, f32, f32) {
    let max = v.iter().fold(0f32, |m, x| m.max(x.abs()));
    if !max.is_finite() || v.iter().any(|x| x.is_nan()) {
        out.iter_mut().for_each(|o| *o = 0);
        return (f32::NAN, f32::NAN, f32::NAN);
    }
    if max == 0.0 {
        out.iter_mut().for_each(|o| *o = 0);
        return (0.0, 0.0, 0.0);
    }
    let scale = max / levels;
    let (mut r2, mut q2) = (0f64, 0f64);
    for (o, &x) in out.iter_mut().zip(v) {
        let q = (x / scale).round().clamp(-levels, levels);
        *o = q as i8;
        let back = f64::from(scale) * q as f64;
        r2 += (f64::from(x) - back).powi(2);
        q2 += back * back;
    }
    // Rounded up so the bound stays a bound after conversion to f32.
    let up = |x: f64| (x.sqrt() * (1.0 + 1e-6)) as f32;
    (scale, up(r2), up(q2))
}

fn norm(v: &[f32]) -> f32 {
    (v.iter()
        .map(|&x| f64::from(x) * f64::from(x))
        .sum::<f64>()
        .sqrt()
        * (1.0 + 1e-6)) as f32
}

impl Quantized {
    pub fn new(dim: usize, vecs: &[f32]) -> Self {
        let n = vecs.len() / dim.max(1);
        let mut q = Quantized {
            dim,
            codes: Vec::with_capacity(vecs.len()),
            scale: Vec::with_capacity(n),
            err_u: Vec::with_capacity(n),
            err_q: Vec::with_capacity(n),
            code_sum: Vec::with_capacity(n),
        };
        for row in vecs.chunks(dim) {
            q.push(row);
        }
        q
    }

    pub fn len(&self) -> usize {
        self.scale.len()
    }

    /// Quantises `v` into row `row` (which must exist).
    fn fill(&mut self, row: usize, v: &[f32]) {
        let d = self.dim;
        let codes = &mut self.codes[row * d..(row + 1) * d];
        let (scale, resid, code_norm) = quantize(v, ITEM_LEVELS, codes);
        self.code_sum[row] = codes.iter().map(|&c| i32::from(c)).sum();
        self.scale[row] = scale;
        self.err_u[row] = resid + slack(d) * (norm(v) + code_norm);
        self.err_q[row] = code_norm;
    }

    pub fn push(&mut self, v: &[f32]) {
        self.codes.resize(self.codes.len() + self.dim, 0);
        self.scale.push(0.0);
        self.err_u.push(0.0);
        self.err_q.push(0.0);
        self.code_sum.push(0);
        self.fill(self.len() - 1, v);
    }

    pub fn set(&mut self, row: usize, v: &[f32]) {
        self.fill(row, v);
    }

    pub fn remove(&mut self, row: usize) {
        self.codes.drain(row * self.dim..(row + 1) * self.dim);
        self.scale.remove(row);
        self.err_u.remove(row);
        self.err_q.remove(row);
        self.code_sum.remove(row);
    }
}

/// A query quantised for one search: codes, scale and the terms of its
/// error bound.
pub(crate) struct Query {
    pub codes: Vec<i8>,
    pub scale: f32,
    /// ‖u‖.
    pub norm: f32,
    /// ‖u − scale·p‖.
    pub resid: f32,
}

impl Query {
    pub fn new(u: &[f32]) -> Self {
        let mut codes = vec![0i8; u.len()];
        // Within ±63: see QUERY_LEVELS.
        let (scale, resid, _) = quantize(u, QUERY_LEVELS, &mut codes);
        Query {
            codes,
            scale,
            norm: norm(u),
            resid,
        }
    }

    /// The approximate score of row `row` (integer dot product `dot`) and
    /// its error bound: the exact score lies in approx ± err.
    #[inline(always)]
    pub fn approx(&self, q: &Quantized, row: usize, dot: i32) -> (f32, f32) {
        (
            self.scale * q.scale[row] * dot as f32,
            self.norm * q.err_u[row] + self.resid * q.err_q[row],
        )
    }
}

/// Integer dot product of two code rows; written so that the compiler
/// vectorises it (i8 → i16 widening, pairwise multiply-add into i32).
#[inline(always)]
pub(crate) fn dot_i8(a: &[i8], b: &[i8]) -> i32 {
    a.iter()
        .zip(b)
        .map(|(&x, &y)| i32::from(i16::from(x) * i16::from(y)))
        .sum()
}

/// The integer dot products of `query` with each row of `rows` (width
/// `query.len()`) into `out`.
#[inline(always)]
pub(crate) fn dots(query: &[i8], rows: &[i8], out: &mut [i32]) {
    for (o, r) in out.iter_mut().zip(rows.chunks_exact(query.len())) {
        *o = dot_i8(query, r);
    }
}

/// [`dots`] at width 64 with AVX2, eight rows at a time. The query's codes
/// (within ±63) are shifted by 64 to unsigned bytes so that a row is two
/// byte multiply-adds (`vpmaddubsw`, 32 products each) and two widenings to
/// i32; the shift is taken back out with each row's code sum. The eight
/// rows' lanes are then summed by one tree of horizontal adds (summing each
/// row's lanes on its own costs more than its multiply-adds).
///
/// # Safety
/// The CPU must support AVX2; `query` holds 64 codes within ±63, `rows` 64
/// per row, `sums` each row's code sum, and `out` one slot per row.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn dots64_avx2(query: &[i8], rows: &[i8], sums: &[i32], out: &mut [i32]) {
    use std::arch::x86_64::*;
    let n = out.len();
    assert!(query.len() == 64 && rows.len() >= n * 64 && sums.len() >= n);
    debug_assert!(query.iter().all(|&c| c.unsigned_abs() <= 63));
    // SAFETY (whole body): every load reads 32 bytes inside `query` or
    // inside row r < n of `rows` (asserted above); stores are to `out`.
    unsafe {
        let shifted: [u8; 64] = std::array::from_fn(|i| (i32::from(query[i]) + QUERY_SHIFT) as u8);
        let qp = shifted.as_ptr() as *const __m256i;
        let (q0, q1) = (_mm256_loadu_si256(qp), _mm256_loadu_si256(qp.add(1)));
        let ones = _mm256_set1_epi16(1);
        let row = |r: usize| -> __m256i {
            let p = rows.as_ptr().add(r * 64) as *const __m256i;
            let a = _mm256_maddubs_epi16(q0, _mm256_loadu_si256(p));
            let b = _mm256_maddubs_epi16(q1, _mm256_loadu_si256(p.add(1)));
            _mm256_add_epi32(_mm256_madd_epi16(a, ones), _mm256_madd_epi16(b, ones))
        };
        let full = n / 8 * 8;
        for base in (0..full).step_by(8) {
            let a: [__m256i; 8] = std::array::from_fn(|j| row(base + j));
            // Three rounds of pairwise horizontal adds leave, per 128-bit
            // half, partial sums of rows 0-3 and 4-7 in lane order.
            let h01 = _mm256_hadd_epi32(a[0], a[1]);
            let h23 = _mm256_hadd_epi32(a[2], a[3]);
            let h45 = _mm256_hadd_epi32(a[4], a[5]);
            let h67 = _mm256_hadd_epi32(a[6], a[7]);
            let h0123 = _mm256_hadd_epi32(h01, h23);
            let h4567 = _mm256_hadd_epi32(h45, h67);
            let lo = _mm256_permute2x128_si256(h0123, h4567, 0x20);
            let hi = _mm256_permute2x128_si256(h0123, h4567, 0x31);
            let shift = _mm256_mullo_epi32(
                _mm256_loadu_si256(sums.as_ptr().add(base) as *const __m256i),
                _mm256_set1_epi32(QUERY_SHIFT),
            );
            let sum = _mm256_sub_epi32(_mm256_add_epi32(lo, hi), shift);
            _mm256_storeu_si256(out.as_mut_ptr().add(base) as *mut __m256i, sum);
        }
        for (r, o) in out.iter_mut().enumerate().skip(full) {
            let mut lanes = [0i32; 8];
            _mm256_storeu_si256(lanes.as_mut_ptr() as *mut __m256i, row(r));
            *o = lanes.iter().sum::<i32>() - QUERY_SHIFT * sums[r];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_contain_the_exact_score() {
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 11) as f32 / (1u64 << 53) as f32 * 2.0 - 1.0
        };
        let d = 64;
        for trial in 0..200 {
            // Rows with one large value stress the per-row scale.
            let mut v: Vec<f32> = (0..d).map(|_| next()).collect();
            let u: Vec<f32> = (0..d).map(|_| next() * 3.0).collect();
            if trial % 3 == 0 {
                v[trial % d] = 40.0;
            }
            let q = Quantized::new(d, &v);
            let qu = Query::new(&u);
            let dot = dot_i8(&qu.codes, &q.codes);
            let (a, e) = qu.approx(&q, 0, dot);
            let (lo, hi) = (a - e, a + e);
            let exact: f64 = u
                .iter()
                .zip(&v)
                .map(|(a, b)| f64::from(*a) * f64::from(*b))
                .sum();
            assert!(
                f64::from(lo) <= exact && exact <= f64::from(hi),
                "trial {trial}: {exact} outside [{lo}, {hi}]"
            );
            // The bound is useful on ordinary rows: well under 5% of ‖u‖‖v‖.
            if trial % 3 != 0 {
                assert!(f64::from(hi - lo) < 0.05 * f64::from(qu.norm * norm(&v)));
            }
        }
    }

    #[test]
    #[cfg(target_arch = "x86_64")]
    fn avx2_dots_match_the_portable_ones() {
        if !std::arch::is_x86_feature_detected!("avx2") {
            return;
        }
        let mut x = 77u64;
        let mut code = || {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            ((x >> 33) % 255) as i32 as i8 - 127
        };
        let mut query: Vec<i8> = (0..64).map(|_| code() / 2).collect();
        query[..32].fill(63);
        // 21 rows: two full groups of eight and a tail; extreme codes too.
        let mut rows: Vec<i8> = (0..21 * 64).map(|_| code()).collect();
        rows[..64].fill(127);
        rows[64..128].fill(-127);
        let sums: Vec<i32> = rows
            .chunks(64)
            .map(|r| r.iter().map(|&c| i32::from(c)).sum())
            .collect();
        let mut want = vec![0; 21];
        dots(&query, &rows, &mut want);
        let mut got = vec![0; 21];
        // SAFETY: AVX2 was detected; the shapes are as documented.
        unsafe { dots64_avx2(&query, &rows, &sums, &mut got) };
        assert_eq!(got, want);
    }

    #[test]
    fn zero_and_non_finite_rows() {
        let q = Quantized::new(2, &[0.0, 0.0, f32::NAN, 1.0]);
        assert_eq!(q.scale[0], 0.0);
        assert!(q.scale[1].is_nan());
        let qu = Query::new(&[1.0, 1.0]);
        let (a, e) = qu.approx(&q, 0, 0);
        assert!(a - e <= 0.0 && a + e >= 0.0);
        let (a, e) = qu.approx(&q, 1, 0);
        assert!((a + e).is_nan());
    }
}
