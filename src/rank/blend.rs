//! The linear second stage: a logistic regression over each candidate's
//! ranker score, the sources that proposed it and a few simple features
//! (the customer's own purchases of it, its recent sales, its price against
//! what the customer pays, its age on sale). The sequential ranker sees
//! only the purchase sequence; this is where "proposed by co-purchase and
//! bought twice last month" gets its weight.
//!
//! It is the trees' ablation: fitted on the same training weeks as the
//! trees (candidates and scores as of each week's first day, label = bought
//! in that week), so the test week is never seen. Negatives are subsampled per customer: with a
//! uniform rate the coefficients are unbiased and only the intercept
//! shifts by ln(rate), which is corrected, so probabilities stay
//! calibrated for the revenue objective.

// Small dense linear algebra (15 × 15 Newton systems) reads as the
// textbook formulas when indexed.
#![allow(clippy::needless_range_loop)]

use serde::{Deserialize, Serialize};

pub use recforge_infer::rank::blend::{Blender, Feature, N, Row, inputs};

use crate::error::{Error, Result};
use crate::util::rng::Rng;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BlendConfig {
    /// Fit the logistic blender (the trees' linear ablation; served when
    /// the trees are off or could not be trained).
    pub enabled: bool,
    /// L2 penalty on the standardised coefficients (not the intercept),
    /// per training row.
    pub l2: f64,
}

impl Default for BlendConfig {
    fn default() -> Self {
        BlendConfig {
            enabled: true,
            l2: 1e-4,
        }
    }
}

/// Training rows drawn from one customer's candidates: every positive and
/// up to `negatives` negatives, uniformly. Returns the rows, their labels,
/// and how many negatives there were before sampling.
pub fn sample<R: Copy>(
    rows: &[(R, bool)],
    negatives: usize,
    rng: &mut Rng,
) -> (Vec<R>, Vec<bool>, usize) {
    let neg: Vec<usize> = (0..rows.len()).filter(|&i| !rows[i].1).collect();
    let mut pick = neg.clone();
    if pick.len() > negatives {
        rng.shuffle(&mut pick);
        pick.truncate(negatives);
        pick.sort_unstable();
    }
    let mut x = Vec::new();
    let mut y = Vec::new();
    for (i, r) in rows.iter().enumerate() {
        if r.1 || pick.binary_search(&i).is_ok() {
            x.push(r.0);
            y.push(r.1);
        }
    }
    (x, y, neg.len())
}

/// Newton's method on the L2-penalised log-loss. `negative_rate` is the
/// share of negatives kept (kept / all) when the rows were sampled.
// One numeric routine: standardise, iterate Newton steps, undo the
// scaling and the sampling; its steps share the same arrays.
pub fn fit(x: &[Row], y: &[bool], negative_rate: f64, l2: f64) -> Result<Blender> {
    let positives = y.iter().filter(|&&b| b).count();
    if positives == 0 || positives == y.len() {
        return Err(Error::Training(format!(
            "the blender needs both bought and not-bought candidates; got {positives} of {} bought",
            y.len()
        )));
    }
    let n = x.len() as f64;
    let mut mean = vec![0.0; N];
    let mut scale = vec![0.0; N];
    for r in x {
        for j in 0..N {
            mean[j] += r[j] as f64 / n;
        }
    }
    for r in x {
        for j in 0..N {
            scale[j] += (r[j] as f64 - mean[j]).powi(2) / n;
        }
    }
    // A constant feature (a source switched off) keeps weight 0.
    for s in &mut scale {
        *s = if *s > 1e-12 { s.sqrt() } else { 0.0 };
    }
    let z = |r: &Row, j: usize| {
        if scale[j] > 0.0 {
            (r[j] as f64 - mean[j]) / scale[j]
        } else {
            0.0
        }
    };
    // Parameters: N weights, then the intercept.
    const P: usize = N + 1;
    let mut beta = [0.0f64; P];
    let p0 = positives as f64 / n;
    beta[N] = (p0 / (1.0 - p0)).ln();
    let penalised_loss = |beta: &[f64; P]| -> f64 {
        let mut loss = 0.0;
        for (r, &label) in x.iter().zip(y) {
            let eta: f64 = beta[N] + (0..N).map(|j| beta[j] * z(r, j)).sum::<f64>();
            let t = if label { 1.0 } else { 0.0 };
            loss += eta.max(0.0) + (-eta.abs()).exp().ln_1p() - t * eta;
        }
        loss + (0..N)
            .map(|a| 0.5 * l2 * n * beta[a] * beta[a])
            .sum::<f64>()
    };
    let mut last_loss = f64::INFINITY;
    for _ in 0..50 {
        let mut grad = [0.0f64; P];
        let mut hess = [[0.0f64; P]; P];
        let mut loss = 0.0;
        let mut v = [0.0f64; P];
        for (r, &label) in x.iter().zip(y) {
            for j in 0..N {
                v[j] = z(r, j);
            }
            v[N] = 1.0;
            let eta: f64 = (0..P).map(|j| beta[j] * v[j]).sum();
            let p = 1.0 / (1.0 + (-eta).exp());
            let t = if label { 1.0 } else { 0.0 };
            // log(1 + e^eta) - t·eta, without overflow.
            loss += eta.max(0.0) + (-eta.abs()).exp().ln_1p() - t * eta;
            let w = (p * (1.0 - p)).max(1e-12);
            for a in 0..P {
                grad[a] += (p - t) * v[a];
                for b in 0..=a {
                    hess[a][b] += w * v[a] * v[b];
                }
            }
        }
        for a in 0..N {
            loss += 0.5 * l2 * n * beta[a] * beta[a];
            grad[a] += l2 * n * beta[a];
            hess[a][a] += l2 * n;
        }
        for a in 0..P {
            for b in 0..a {
                hess[b][a] = hess[a][b];
            }
            // Features fixed at 0 would make the system singular.
            hess[a][a] += 1e-9 * n;
        }
        let step = solve(hess, grad)
            .ok_or_else(|| Error::Training("the blender's Newton system is singular".into()))?;
        // A full Newton step can overshoot far from the optimum (seen on
        // three weeks of candidates: the loss grew ten-thousandfold):
        // halve it until the penalised loss does not grow.
        let mut t = 1.0;
        let mut next = beta;
        for _ in 0..40 {
            for a in 0..P {
                next[a] = beta[a] - t * step[a];
            }
            if penalised_loss(&next) <= loss {
                break;
            }
            t *= 0.5;
        }
        beta = next;
        if (last_loss - loss).abs() <= 1e-10 * n {
            break;
        }
        last_loss = loss;
    }
    if beta.iter().any(|b| !b.is_finite()) {
        return Err(Error::Training(
            "the blender's fit diverged (non-finite coefficients)".into(),
        ));
    }
    Ok(Blender {
        mean,
        scale,
        weights: beta[..N].to_vec(),
        // Keeping a share `rate` of negatives multiplies the odds by
        // 1 / rate; undo it.
        intercept: beta[N] + negative_rate.ln(),
        rows: x.len(),
        positives,
    })
}

/// Solves `a x = b` by Gaussian elimination with partial pivoting.
fn solve<const P: usize>(mut a: [[f64; P]; P], mut b: [f64; P]) -> Option<[f64; P]> {
    for c in 0..P {
        let piv = (c..P).max_by(|&i, &j| a[i][c].abs().total_cmp(&a[j][c].abs()))?;
        if a[piv][c].abs() < 1e-300 {
            return None;
        }
        a.swap(c, piv);
        b.swap(c, piv);
        for r in c + 1..P {
            let f = a[r][c] / a[c][c];
            for k in c..P {
                a[r][k] -= f * a[c][k];
            }
            b[r] -= f * b[c];
        }
    }
    let mut x = [0.0; P];
    for r in (0..P).rev() {
        let s: f64 = (r + 1..P).map(|k| a[r][k] * x[k]).sum();
        x[r] = (b[r] - s) / a[r][r];
    }
    Some(x)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rank::candidates::Source;

    #[test]
    fn every_feature_has_its_slot_a_distinct_name_and_each_source_a_flag() {
        for (i, f) in Feature::ALL.iter().enumerate() {
            assert_eq!(f.slot(), i, "{f:?}");
        }
        let names: std::collections::HashSet<&str> =
            Feature::ALL.iter().map(|f| f.name()).collect();
        assert_eq!(names.len(), N);
        for source in Source::ALL {
            let flag = Feature::flag(source);
            assert_eq!(flag.name(), format!("source: {}", source.name()));
        }
    }

    fn synthetic(n: usize, seed: u64) -> (Vec<Row>, Vec<bool>) {
        // Bought with probability sigmoid(2·f0 - 1·f3 - 2); other features noise.
        let mut rng = Rng::new(seed);
        let mut x = Vec::new();
        let mut y = Vec::new();
        for _ in 0..n {
            let mut r = [0.0f32; N];
            for v in r.iter_mut() {
                *v = rng.normal() as f32;
            }
            r[5] = 0.0; // a source switched off: constant
            let eta = 2.0 * r[0] as f64 - r[3] as f64 - 2.0;
            y.push(rng.f64() < 1.0 / (1.0 + (-eta).exp()));
            x.push(r);
        }
        (x, y)
    }

    #[test]
    fn recovers_the_generating_coefficients() {
        let (x, y) = synthetic(40_000, 7);
        let b = fit(&x, &y, 1.0, 0.0).unwrap();
        // Standardised features have sd ~1, so weights ~ the true ones.
        assert!((b.weights[0] - 2.0).abs() < 0.1, "{:?}", b.weights);
        assert!((b.weights[3] + 1.0).abs() < 0.1, "{:?}", b.weights);
        assert!((b.intercept + 2.0).abs() < 0.1, "{}", b.intercept);
        assert_eq!(b.weights[5], 0.0);
        for j in [1, 2, 4, 6, 7, 8] {
            assert!(b.weights[j].abs() < 0.1, "feature {j}: {:?}", b.weights);
        }
    }

    #[test]
    fn negative_sampling_shifts_only_the_intercept_and_is_corrected() {
        let (x, y) = synthetic(60_000, 11);
        let full = fit(&x, &y, 1.0, 0.0).unwrap();
        // Keep every positive and a quarter of the negatives.
        let mut rng = Rng::new(3);
        let (mut xs, mut ys) = (Vec::new(), Vec::new());
        for (r, &l) in x.iter().zip(&y) {
            if l || rng.f64() < 0.25 {
                xs.push(*r);
                ys.push(l);
            }
        }
        let sampled = fit(&xs, &ys, 0.25, 0.0).unwrap();
        // Coefficients are those of the raw features (the sample has its
        // own standardisation), so compare log-odds on a few points.
        for r in x.iter().take(50) {
            let d = (full.logit(r) - sampled.logit(r)).abs();
            assert!(d < 0.25, "log-odds differ by {d}");
        }
        let p = full.log_prob(&x[0]);
        assert!(p < 0.0 && p.is_finite());
    }

    #[test]
    fn rare_positives_and_collinear_inputs_still_converge() {
        // 1-2% bought, two nearly identical informative inputs (as the
        // ranker's score and its log-softmax are), a heavy-tailed third.
        let mut rng = Rng::new(5);
        let (mut x, mut y) = (Vec::new(), Vec::new());
        for _ in 0..50_000 {
            let mut r = [0.0f32; N];
            r[0] = rng.normal() as f32;
            r[1] = r[0] + 0.001 * rng.normal() as f32;
            r[2] = (rng.normal() * 2.0).exp() as f32;
            let eta = 3.0 * f64::from(r[0]) - 6.0;
            y.push(rng.f64() < 1.0 / (1.0 + (-eta).exp()));
            x.push(r);
        }
        let b = fit(&x, &y, 1.0, 1e-4).unwrap();
        for r in x.iter().take(200) {
            let want = 3.0 * f64::from(r[0]) - 6.0;
            assert!((b.logit(r) - want).abs() < 0.5, "{} vs {want}", b.logit(r));
        }
    }

    #[test]
    fn one_class_is_an_error_not_a_panic() {
        let (x, _) = synthetic(100, 1);
        let y = vec![false; 100];
        let e = fit(&x, &y, 1.0, 1e-4).unwrap_err().to_string();
        assert!(e.contains("both bought and not-bought"), "{e}");
    }

    #[test]
    fn sampling_keeps_every_positive_and_at_most_n_negatives() {
        let rows: Vec<(Row, bool)> = (0..100).map(|i| ([i as f32; N], i % 10 == 0)).collect();
        let (x, y, neg) = sample(&rows, 20, &mut Rng::new(1));
        assert_eq!(neg, 90);
        assert_eq!(y.iter().filter(|&&b| b).count(), 10);
        assert_eq!(x.len(), 30);
        // Input order is kept.
        assert!(x.windows(2).all(|w| w[0][0] < w[1][0]));
    }
}
