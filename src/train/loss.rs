//! Training losses.
//!
//! The sequential ranker's next-item losses (full, sampled, gBCE) take the hidden states of positions that have a target
//! (`h`: `[m, d]`), their target ids and loss weights, and return a scalar
//! `[1]`: the weighted mean over positions.

use burn::tensor::activation::{log_sigmoid, log_softmax};
use burn::tensor::{Bool, Int, Tensor, TensorData};

use crate::model::SasRec;
use crate::util::rng::Rng;

/// Softmax cross-entropy over the whole catalogue: `h` `[m, d]`, `table`
/// `[n_items, d]` (row 0 padding, excluded), targets `[m]` in 1..n_items.
pub fn full_softmax(h: Tensor<2>, table: &Tensor<2>, targets: &[i64], w: &[f32]) -> Tensor<1> {
    let device = h.device();
    let m = targets.len();
    let n = table.dims()[0];
    let logits = h.matmul(table.clone().slice(1..n).transpose()); // [m, n - 1]
    let shifted: Vec<i64> = targets.iter().map(|t| t - 1).collect();
    let idx = Tensor::<2, Int>::from_data(TensorData::new(shifted, [m, 1]), &device);
    let picked = log_softmax(logits, 1).gather(1, idx).reshape([m]); // [m]
    weighted_mean_neg(picked, w)
}

/// Negatives shared by a whole batch, with what the loss needs to correct for
/// how they were drawn.
pub struct Negatives {
    pub ids: Vec<i64>,
    /// ln(S · q(id)) for each negative: the log expected count in the sample.
    pub log_q: Vec<f32>,
}

/// Draws `s` negatives from `proposal` (cumulative weights over item ids,
/// `cum[i]` = total weight of ids ≤ i, id 0 weightless).
pub fn draw_negatives(rng: &mut Rng, cum: &[f64], s: usize) -> Negatives {
    let total = *cum.last().expect("non-empty catalogue");
    let mut ids = Vec::with_capacity(s);
    let mut log_q = Vec::with_capacity(s);
    for _ in 0..s {
        let x = rng.f64() * total;
        let i = cum.partition_point(|&c| c <= x).min(cum.len() - 1);
        let q = (cum[i] - if i > 0 { cum[i - 1] } else { 0.0 }) / total;
        ids.push(i as i64);
        log_q.push(((s as f64) * q).ln() as f32);
    }
    Negatives { ids, log_q }
}

/// Sampled softmax with logQ correction on the ranker's hidden states `h`
/// `[m, d]`: see [`sampled_softmax_logits`].
pub fn sampled_softmax(
    model: &SasRec,
    h: Tensor<2>,
    targets: &[i64],
    w: &[f32],
    negs: &Negatives,
) -> Tensor<1> {
    let (pos, neg) = candidate_logits(model, h, targets, &negs.ids);
    sampled_softmax_logits(pos, neg, targets, w, negs)
}

/// Sampled softmax with logQ correction (Jean et al.; Yi et al. 2019): the
/// target's logit `pos` `[m]` competes with the negatives' logits `neg`
/// `[m, s]`, each negative minus ln(S·q), its log expected count in the
/// sample, so the denominator estimates the full-catalogue softmax's.
///
/// A negative that is the position's own target is removed (an accidental
/// hit), so the target is in the softmax exactly once, by construction, and
/// its logit is not corrected. Correcting it as well divides the target's own
/// term by its expected count: the model then learns log p + log q, and
/// popular items are over-promoted (the test below measures both; the
/// two-tower loss's doc comment gives the same reasoning).
pub fn sampled_softmax_logits(
    pos: Tensor<1>,
    neg: Tensor<2>,
    targets: &[i64],
    w: &[f32],
    negs: &Negatives,
) -> Tensor<1> {
    let device = pos.device();
    let (m, s) = (targets.len(), negs.ids.len());
    let lq = Tensor::<2>::from_data(TensorData::new(negs.log_q.clone(), [1, s]), &device);
    let neg = (neg - lq).mask_fill(accidental_hits(targets, &negs.ids, &device), -1e9);
    let logits = Tensor::cat(vec![pos.reshape([m, 1]), neg], 1); // [m, 1 + s]
    let picked = log_softmax(logits, 1).slice([0..m, 0..1]).reshape([m]);
    weighted_mean_neg(picked, w)
}

/// gSASRec's generalised BCE: positives' log-sigmoid is raised to β, which
/// undoes the overconfidence that uniform negative sampling trains in.
pub fn gbce(
    model: &SasRec,
    h: Tensor<2>,
    targets: &[i64],
    w: &[f32],
    negs: &[i64],
    beta: f64,
) -> Tensor<1> {
    let device = h.device();
    let m = targets.len();
    let (pos, neg) = candidate_logits(model, h, targets, negs);
    let hits = accidental_hits(targets, negs, &device);
    let neg_term = log_sigmoid(neg.neg())
        .mask_fill(hits, 0.0)
        .sum_dim(1)
        .reshape([m]);
    let per_pos = log_sigmoid(pos) * beta + neg_term; // [m]
    weighted_mean_neg(per_pos, w)
}

/// β of gBCE for `s` uniform negatives out of `n_items` real items and
/// calibration `t` (Petrov & Macdonald 2023, eq. 8).
pub fn gbce_beta(s: usize, n_items: usize, t: f64) -> f64 {
    let alpha = s as f64 / (n_items.saturating_sub(1).max(1)) as f64;
    alpha * (t * (1.0 - 1.0 / alpha) + 1.0 / alpha)
}

/// Target logits `[m]` and negative logits `[m, s]`.
fn candidate_logits(
    model: &SasRec,
    h: Tensor<2>,
    targets: &[i64],
    negs: &[i64],
) -> (Tensor<1>, Tensor<2>) {
    let device = h.device();
    let m = targets.len();
    let t = Tensor::<1, Int>::from_data(TensorData::new(targets.to_vec(), [m]), &device);
    let n = Tensor::<1, Int>::from_data(TensorData::new(negs.to_vec(), [negs.len()]), &device);
    let pos = (h.clone() * model.item_repr(t)).sum_dim(1).reshape([m]);
    let neg = h.matmul(model.item_repr(n).transpose());
    (pos, neg)
}

/// `[m, s]`, true where negative j is position i's own target.
fn accidental_hits(
    targets: &[i64],
    negs: &[i64],
    device: &burn::tensor::Device,
) -> Tensor<2, Bool> {
    let (m, s) = (targets.len(), negs.len());
    let mut mask = vec![false; m * s];
    for (i, &t) in targets.iter().enumerate() {
        for (j, &n) in negs.iter().enumerate() {
            mask[i * s + j] = n == t;
        }
    }
    Tensor::<2, Bool>::from_data(TensorData::new(mask, [m, s]), device)
}

/// The two-tower model's in-batch softmax. Row i's positive is column i
/// (its own target); the other columns are the batch's other targets and
/// any extra uniform negatives. `logits` `[b, c]` (c ≥ b) are the scaled
/// similarities, `log_q` `[c]` each column's log expected number of
/// occurrences among the candidates, `mask` `[b, c]` the accidental hits (a
/// column holding row i's own target item anywhere but at i), `w` `[b]` the
/// row weights → `[1]`.
///
/// Without the correction the model learns log p(item | user) − log q(item):
/// a popular item shows up as a negative in many rows and is pushed down for
/// it, and retrieval under-proposes exactly the items most likely bought.
/// With it, a negative column stands for its expected number of copies, so
/// each row's denominator estimates the full-catalogue softmax.
///
/// The correction applies to negatives only. The positive is present exactly
/// once by construction, and its other copies are removed as accidental
/// hits; correcting it as well (as if it were drawn like the negatives)
/// would shrink the target's own term in the denominator by its expected
/// count and inflate popular items (the sign test below measures this).
pub fn in_batch_softmax(
    logits: Tensor<2>,
    log_q: Option<&[f32]>,
    mask: &[bool],
    w: &[f32],
) -> Tensor<1> {
    let device = logits.device();
    let [b, c] = logits.dims();
    let mut logits = logits;
    if let Some(q) = log_q {
        let mut m = Vec::with_capacity(b * c);
        for i in 0..b {
            m.extend(
                q.iter()
                    .enumerate()
                    .map(|(j, &x)| if j == i { 0.0 } else { x }),
            );
        }
        logits = logits - Tensor::<2>::from_data(TensorData::new(m, [b, c]), &device);
    }
    let mask = Tensor::<2, Bool>::from_data(TensorData::new(mask.to_vec(), [b, c]), &device);
    let logits = logits.mask_fill(mask, -1e9);
    let diag: Vec<i64> = (0..b as i64).collect();
    let idx = Tensor::<2, Int>::from_data(TensorData::new(diag, [b, 1]), &device);
    let picked = log_softmax(logits, 1).gather(1, idx).reshape([b]);
    weighted_mean_neg(picked, w)
}

/// `[b, c]` row-major: true where column j holds row i's target item and is
/// not row i's own positive (j ≠ i). Such a column is the same purchase
/// seen twice, not a negative.
pub fn in_batch_accidental_hits(row_targets: &[u32], columns: &[u32]) -> Vec<bool> {
    let c = columns.len();
    let mut mask = vec![false; row_targets.len() * c];
    for (i, &t) in row_targets.iter().enumerate() {
        for (j, &item) in columns.iter().enumerate() {
            mask[i * c + j] = j != i && item == t;
        }
    }
    mask
}

/// ln of each column's expected number of occurrences among the candidates:
/// `b` in-batch draws from the training distribution `freq` (shares summing
/// to 1 over items) plus `s` uniform draws over `n_real` items. Floored so
/// an item absent from training still gets a finite correction.
pub fn in_batch_log_q(
    columns: &[u32],
    freq: &[f64],
    b: usize,
    s: usize,
    n_real: usize,
) -> Vec<f32> {
    let uniform = s as f64 / n_real.max(1) as f64;
    let floor = 1.0 / (freq.len().max(1) as f64 * 10.0);
    columns
        .iter()
        .map(|&i| {
            let p = freq.get(i as usize).copied().unwrap_or(0.0).max(floor);
            (b as f64 * p + uniform).ln() as f32
        })
        .collect()
}

/// -Σ wᵢ xᵢ / Σ wᵢ as `[1]`.
fn weighted_mean_neg(x: Tensor<1>, w: &[f32]) -> Tensor<1> {
    let total: f32 = w.iter().sum::<f32>().max(1e-12);
    let wt = Tensor::<1>::from_data(TensorData::new(w.to_vec(), [w.len()]), &x.device());
    (x * wt).sum().neg() / total
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Device;

    fn values(t: Tensor<1>) -> Vec<f32> {
        t.into_data()
            .convert::<f32>()
            .try_into_vec::<f32>()
            .unwrap()
    }

    #[test]
    fn accidental_hits_are_removed_from_the_softmax() {
        let dev = Device::flex();
        // Rows 0 and 1 bought the same item 5: each is the other's accidental hit.
        let targets = [5u32, 5, 7];
        let mask = in_batch_accidental_hits(&targets, &targets);
        assert_eq!(
            mask,
            vec![false, true, false, true, false, false, false, false, false]
        );
        let l = [[2.0f32, 3.0, -1.0], [0.5, 1.0, 0.25], [0.0, 1.5, 0.7]];
        let flat: Vec<f32> = l.iter().flatten().copied().collect();
        let logits = Tensor::<2>::from_data(TensorData::new(flat, [3, 3]), &dev);
        let got = values(in_batch_softmax(logits, None, &mask, &[1.0; 3]))[0];
        // Reference: each row's softmax over its positive and real negatives only.
        let row = |pos: f32, negs: &[f32]| {
            let z: f32 = pos.exp() + negs.iter().map(|x| x.exp()).sum::<f32>();
            -(pos.exp() / z).ln()
        };
        let want = (row(2.0, &[-1.0]) + row(1.0, &[0.25]) + row(0.7, &[0.0, 1.5])) / 3.0;
        assert!((got - want).abs() < 1e-5, "{got} vs {want}");
        // Without the mask the duplicate (a higher logit) counts as a negative.
        let unmasked = Tensor::<2>::from_data(
            TensorData::new(l.iter().flatten().copied().collect::<Vec<_>>(), [3, 3]),
            &dev,
        );
        let plain = values(in_batch_softmax(unmasked, None, &[false; 9], &[1.0; 3]))[0];
        assert!(plain > got + 0.1);
    }

    #[test]
    fn log_q_counts_batch_and_uniform_draws() {
        let freq = [0.0, 0.75, 0.25, 0.0];
        let q = in_batch_log_q(&[1, 2, 3], &freq, 4, 6, 3);
        assert!((q[0] - (4.0f32 * 0.75 + 2.0).ln()).abs() < 1e-6);
        assert!((q[1] - (4.0f32 * 0.25 + 2.0).ln()).abs() < 1e-6);
        // Never bought: only the uniform draws (and a floor) remain.
        assert!(q[2].is_finite() && q[2] < q[1]);
    }

    /// One popular item (half of all purchases) and ten rare ones, bought by
    /// indistinguishable customers: learnable per-item scores trained with
    /// in-batch softmax should end up ordered like log p(item), the popular
    /// item leading the rare ones by ln(0.5 / 0.05) ≈ 2.30. Without the
    /// correction the popular item, a negative in most rows, is held back
    /// (the gap shrinks); a correction with the wrong sign holds it back
    /// further still.
    fn learned_gap(logq: bool) -> f32 {
        let dev = Device::flex().autodiff();
        let n = 11usize;
        let mut freq = vec![0.05f64; n];
        freq[0] = 0.5;
        let mut cum = Vec::with_capacity(n);
        let mut acc = 0.0;
        for f in &freq {
            acc += f;
            cum.push(acc);
        }
        let mut theta = Tensor::<1>::zeros([n], &dev).require_grad();
        let mut rng = Rng::new(7);
        let b = 32;
        for _ in 0..400 {
            let items: Vec<u32> = (0..b)
                .map(|_| {
                    let u = rng.f64() * acc;
                    cum.iter().position(|&c| u < c).unwrap_or(n - 1) as u32
                })
                .collect();
            let idx: Vec<i64> = items.iter().map(|&i| i as i64).collect();
            let idx = Tensor::<1, Int>::from_data(TensorData::new(idx, [b]), &dev);
            // Every row sees the same column scores: the customers carry no signal.
            let cols = theta
                .clone()
                .select(0, idx)
                .reshape([1, b])
                .repeat_dim(0, b);
            let q = in_batch_log_q(&items, &freq, b, 0, n);
            let mask = in_batch_accidental_hits(&items, &items);
            let loss = in_batch_softmax(cols, logq.then_some(&q[..]), &mask, &vec![1.0; b]);
            let grads = loss.backward();
            let g = theta.grad(&grads).unwrap();
            let next = theta.inner() - g.mul_scalar(0.5);
            theta = Tensor::from_inner(next).require_grad();
        }
        let t = values(theta.inner());
        t[0] - t[1..].iter().sum::<f32>() / (n - 1) as f32
    }

    /// The popular item's learned lead over the rare ones when per-item
    /// scores are trained with the sampled softmax on the same eleven-item
    /// world as `learned_gap`, negatives drawn from a proposal ∝ √frequency
    /// (as `loss.alpha` = 0.5 draws them). `correct_positive` also subtracts
    /// the target's own log Q, as the loss once did.
    fn sampled_gap(correct_positive: bool) -> f32 {
        let dev = Device::flex().autodiff();
        let n = 11usize;
        let mut freq = vec![0.05f64; n];
        freq[0] = 0.5;
        // Item ids 1..=n (id 0 is padding and weightless).
        let mut cum = vec![0.0];
        for f in &freq {
            cum.push(cum.last().unwrap() + f.sqrt());
        }
        let mut theta = Tensor::<1>::zeros([n + 1], &dev).require_grad();
        let mut rng = Rng::new(11);
        let (b, s) = (32, 64);
        // The scores averaged over the last 500 steps: SGD's noise around
        // the fixed point averages out.
        let mut mean = vec![0f32; n + 1];
        for step in 0..1500 {
            let targets: Vec<i64> = (0..b)
                .map(|_| {
                    let u = rng.f64();
                    let mut acc = 0.0;
                    1 + freq
                        .iter()
                        .position(|&f| {
                            acc += f;
                            u < acc
                        })
                        .unwrap_or(n - 1) as i64
                })
                .collect();
            let negs = draw_negatives(&mut rng, &cum, s);
            let t = Tensor::<1, Int>::from_data(TensorData::new(targets.clone(), [b]), &dev);
            let ni = Tensor::<1, Int>::from_data(TensorData::new(negs.ids.clone(), [s]), &dev);
            let mut pos = theta.clone().select(0, t);
            if correct_positive {
                let q: Vec<f32> = targets
                    .iter()
                    .map(|&i| {
                        let i = i as usize;
                        ((s as f64) * (cum[i] - cum[i - 1]) / cum[n]).ln() as f32
                    })
                    .collect();
                pos = pos - Tensor::<1>::from_data(TensorData::new(q, [b]), &dev);
            }
            let neg = theta.clone().select(0, ni).reshape([1, s]).repeat_dim(0, b);
            let loss = sampled_softmax_logits(pos, neg, &targets, &vec![1.0; b], &negs);
            let grads = loss.backward();
            let g = theta.grad(&grads).unwrap();
            let next = theta.inner() - g.mul_scalar(0.5);
            theta = Tensor::from_inner(next).require_grad();
            if step >= 1000 {
                for (m, v) in mean.iter_mut().zip(values(theta.clone().inner())) {
                    *m += v / 500.0;
                }
            }
        }
        mean[1] - mean[2..].iter().sum::<f32>() / (n - 1) as f32
    }

    #[test]
    fn sampled_softmax_recovers_the_true_log_ratio() {
        let truth = (0.5f32 / 0.05).ln();
        let fixed = sampled_gap(false);
        assert!((fixed - truth).abs() < 0.1, "gap {fixed}, true {truth}");
        // Correcting the positive too learns log p + log q: the popular item
        // ends ahead by about ln(√10) more.
        let biased = sampled_gap(true);
        eprintln!(
            "learned gap {fixed:.3} (true {truth:.3}); with the positive corrected {biased:.3}"
        );
        assert!(
            biased > truth + 0.5,
            "with the positive corrected: gap {biased}"
        );
    }

    #[test]
    fn logq_correction_has_the_right_sign() {
        let with = learned_gap(true);
        let without = learned_gap(false);
        assert!((2.0..2.6).contains(&with), "with logQ: gap {with}");
        assert!(
            without < with - 0.6,
            "without logQ: gap {without} vs {with}"
        );
    }
}
