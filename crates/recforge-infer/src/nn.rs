//! The layers the exported models use, with burn's math: `Linear` keeps
//! its weight `[d_in, d_out]` (y = x W + b), LayerNorm uses the biased
//! variance, GELU is the exact (erf) one, attention writes a fixed value
//! over masked scores before the softmax.
//!
//! Activations are row-major `[rows, width]` slices.

use crate::Result;
use crate::bundle::Bundle;

/// y = x W + b with W `[d_in, d_out]`.
#[derive(Debug, Clone)]
pub struct Linear {
    pub d_in: usize,
    pub d_out: usize,
    w: Vec<f32>,
    b: Option<Vec<f32>>,
}

impl Linear {
    pub fn load(bundle: &Bundle, prefix: &str, d_in: usize, d_out: usize) -> Result<Self> {
        let w = bundle.tensor(&format!("{prefix}.weight"), &[d_in, d_out])?;
        let bname = format!("{prefix}.bias");
        let b = if bundle.has(&bname) {
            Some(bundle.tensor(&bname, &[d_out])?)
        } else {
            None
        };
        Ok(Linear { d_in, d_out, w, b })
    }

    /// `x` `[rows, d_in]` → `[rows, d_out]`.
    pub fn forward(&self, x: &[f32]) -> Vec<f32> {
        let rows = x.len() / self.d_in;
        let mut out = vec![0f32; rows * self.d_out];
        matmul(x, &self.w, &mut out, rows, self.d_in, self.d_out);
        if let Some(b) = &self.b {
            for row in out.chunks_mut(self.d_out) {
                row.iter_mut().zip(b).for_each(|(y, b)| *y += b);
            }
        }
        out
    }
}

/// `out[m, n] = a[m, k] · b[k, n]`, all row-major.
pub fn matmul(a: &[f32], b: &[f32], out: &mut [f32], m: usize, k: usize, n: usize) {
    product(a, b, out, m, k, n, n as isize, 1);
}

/// `out[m, n] = a[m, k] · b[n, k]ᵀ` (b's rows are the columns).
pub fn matmul_t(a: &[f32], b: &[f32], out: &mut [f32], m: usize, k: usize, n: usize) {
    product(a, b, out, m, k, n, 1, k as isize);
}

/// The one call into `gemm`: `b`'s element (row r, column c) sits at
/// `r * b_rs + c * b_cs`.
#[allow(clippy::too_many_arguments)]
fn product(
    a: &[f32],
    b: &[f32],
    out: &mut [f32],
    m: usize,
    k: usize,
    n: usize,
    b_rs: isize,
    b_cs: isize,
) {
    if m == 0 || n == 0 {
        return;
    }
    // gemm takes a matrix-vector kernel for a single row, which sums in
    // another order than its matrix kernels: one customer served alone
    // would score a hair differently from the same customer in a batch
    // (and a near-tie could flip). Two rows keep every call on the matrix
    // kernels, whose sums per element do not depend on the row count, so
    // a request gets the bits of the evaluation's batches.
    if m == 1 && n > 1 && k > 2 {
        let mut two = Vec::with_capacity(2 * k);
        two.extend_from_slice(&a[..k]);
        two.extend_from_slice(&a[..k]);
        let mut o = vec![0f32; 2 * n];
        product(&two, b, &mut o, 2, k, n, b_rs, b_cs);
        out[..n].copy_from_slice(&o[..n]);
        return;
    }
    assert!(a.len() >= m * k && b.len() >= k * n && out.len() >= m * n);
    // SAFETY: the asserts above bound every index the strides reach.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            out.as_mut_ptr(),
            1,
            n as isize,
            false,
            a.as_ptr(),
            1,
            k as isize,
            b.as_ptr(),
            b_cs,
            b_rs,
            0.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

#[derive(Debug, Clone)]
pub struct LayerNorm {
    gamma: Vec<f32>,
    beta: Vec<f32>,
    eps: f32,
}

impl LayerNorm {
    pub fn load(bundle: &Bundle, prefix: &str, d: usize, eps: f64) -> Result<Self> {
        Ok(LayerNorm {
            gamma: bundle.tensor(&format!("{prefix}.gamma"), &[d])?,
            beta: bundle.tensor(&format!("{prefix}.beta"), &[d])?,
            eps: eps as f32,
        })
    }

    /// Normalises each row of `x` in place.
    pub fn forward(&self, x: &mut [f32]) {
        let d = self.gamma.len();
        for row in x.chunks_mut(d) {
            let mean = row.iter().sum::<f32>() / d as f32;
            let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / d as f32;
            let denom = (var + self.eps).sqrt();
            for ((v, g), b) in row.iter_mut().zip(&self.gamma).zip(&self.beta) {
                *v = (*v - mean) / denom * g + b;
            }
        }
    }
}

/// Exact (erf) GELU, as burn's default: 0.5 x (1 + erf(x / √2)).
#[inline(always)]
pub fn gelu(x: f32) -> f32 {
    0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2))
}

/// [`gelu`] over a slice. Everything inside is branch-free and inlined, so
/// the loop runs in SIMD lanes: a per-element call to libm's `expf` cost
/// ~40% of encoding a 50-item history.
pub fn gelu_inplace(x: &mut [f32]) {
    x.iter_mut().for_each(|v| *v = gelu(*v));
}

/// erf with an absolute error below 1.5e-7 (Abramowitz & Stegun 7.1.26):
/// one exp and a polynomial, about twice as fast as a full-precision erff,
/// and far inside the 1e-4 parity budget with burn.
#[inline(always)]
pub fn erf(x: f32) -> f32 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.327_591_1 * z);
    let poly = t
        * (0.254_829_6
            + t * (-0.284_496_74 + t * (1.421_413_7 + t * (-1.453_152 + t * 1.061_405_4))));
    let y = 1.0 - poly * exp(-z * z);
    y.copysign(x)
}

/// e^x to within a few ulp, branch-free so that loops over it vectorise:
/// e^x = 2^n · e^r with n = round(x log2 e) and r = x - n ln 2 computed in
/// two parts (Cody-Waite, so r keeps its precision for large |x|), e^r by
/// a degree-7 polynomial on |r| ≤ ln2/2. Inputs below -87 give ~0 (never
/// a denormal or NaN); above 88 clamp.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    let x = x.clamp(-87.0, 88.0);
    // Round to nearest by the 1.5·2^23 trick (`round` does not vectorise).
    const SHIFT: f32 = 12_582_912.0;
    let n = (x * std::f32::consts::LOG2_E + SHIFT) - SHIFT;
    let r = (x - n * 0.693_359_4) - n * -2.121_944_4e-4;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0
                    + r * (1.0 / 24.0
                        + r * (1.0 / 120.0 + r * (1.0 / 720.0 + r * (1.0 / 5040.0)))))));
    p * f32::from_bits(((n as i32 + 127) as u32) << 23)
}

/// Dot product with eight independent partial sums: vectorises (a single
/// running sum is a chain of dependent adds that cannot).
#[inline(always)]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    acc.iter().sum::<f32>() + tail
}

pub fn relu(x: f32) -> f32 {
    x.max(0.0)
}

/// Scales each row of `x` (width `d`) to unit L2 norm, as the towers do.
pub fn l2_normalize(x: &mut [f32], d: usize) {
    for row in x.chunks_mut(d) {
        let n = row.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
        row.iter_mut().for_each(|v| *v /= n);
    }
}

/// In-place softmax of a row.
pub fn softmax(row: &mut [f32]) {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    row.iter_mut().for_each(|v| *v = exp(*v - max));
    let sum: f32 = row.iter().sum();
    row.iter_mut().for_each(|v| *v /= sum);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matmuls_agree_with_loops() {
        let (m, k, n) = (3, 4, 5);
        let a: Vec<f32> = (0..m * k).map(|i| i as f32 * 0.1 - 0.5).collect();
        let b: Vec<f32> = (0..k * n).map(|i| (i % 7) as f32 - 3.0).collect();
        let mut out = vec![0f32; m * n];
        matmul(&a, &b, &mut out, m, k, n);
        let bt: Vec<f32> = (0..n * k).map(|i| b[(i % k) * n + i / k]).collect();
        let mut out_t = vec![0f32; m * n];
        matmul_t(&a, &bt, &mut out_t, m, k, n);
        for i in 0..m {
            for j in 0..n {
                let want: f32 = (0..k).map(|x| a[i * k + x] * b[x * n + j]).sum();
                assert!((out[i * n + j] - want).abs() < 1e-5);
                assert!((out_t[i * n + j] - want).abs() < 1e-5);
            }
        }
    }

    #[test]
    fn erf_is_within_its_error_bound() {
        for i in -400..=400 {
            let x = i as f32 / 80.0;
            let err = (erf(x) - libm::erff(x)).abs();
            assert!(err < 3e-7, "erf({x}) off by {err}");
        }
    }

    #[test]
    fn fast_exp_and_dot() {
        for i in -2000..=800 {
            let x = i as f32 / 20.0;
            let (got, want) = (exp(x), libm::expf(x));
            assert!(
                (got - want).abs() <= 3e-7 * want + 1e-37,
                "exp({x}) = {got}, not {want}"
            );
        }
        assert!(exp(-1000.0) < 1e-37 && exp(1000.0).is_finite());
        let a: Vec<f32> = (0..37).map(|i| i as f32 * 0.25 - 3.0).collect();
        let b: Vec<f32> = (0..37).map(|i| (i % 5) as f32 - 2.0).collect();
        let want: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
        assert!((dot(&a, &b) - want).abs() < 1e-4);
    }

    #[test]
    fn activations() {
        assert!((gelu(1.0) - 0.841_344_7).abs() < 1e-6);
        assert_eq!(relu(-2.0), 0.0);
        let mut r = [1.0, 2.0, 3.0];
        softmax(&mut r);
        assert!((r.iter().sum::<f32>() - 1.0).abs() < 1e-6 && r[2] > r[1]);
    }
}
