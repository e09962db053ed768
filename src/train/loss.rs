//! Next-item losses over every targeted position of a batch.
//!
//! All three take the hidden states of positions that have a target
//! (`h`: `[m, d]`), their target ids and loss weights, and return a scalar
//! `[1]`: the weighted mean over positions.

use burn::tensor::activation::{log_sigmoid, log_softmax};
use burn::tensor::{Bool, Int, Tensor, TensorData};

use crate::model::SasRec;
use crate::rng::Rng;

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

/// log Q of each target under the same proposal (for the positive logit).
pub fn target_log_q(cum: &[f64], targets: &[i64], s: usize) -> Vec<f32> {
    let total = *cum.last().expect("non-empty catalogue");
    targets
        .iter()
        .map(|&t| {
            let i = t as usize;
            let q = (cum[i] - if i > 0 { cum[i - 1] } else { 0.0 }) / total;
            ((s as f64) * q.max(1e-12)).ln() as f32
        })
        .collect()
}

/// Sampled softmax with logQ correction (Jean et al.; Yi et al. 2019): the
/// target competes with `negs`, every logit minus ln(S·q), and a negative that
/// happens to be the target itself is removed rather than counted against it.
pub fn sampled_softmax(
    model: &SasRec,
    h: Tensor<2>,
    targets: &[i64],
    w: &[f32],
    negs: &Negatives,
    pos_log_q: &[f32],
) -> Tensor<1> {
    let device = h.device();
    let (m, s) = (targets.len(), negs.ids.len());
    let (pos, neg) = candidate_logits(model, h, targets, &negs.ids);
    let pos = pos - Tensor::<1>::from_data(TensorData::new(pos_log_q.to_vec(), [m]), &device);
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

/// -Σ wᵢ xᵢ / Σ wᵢ as `[1]`.
fn weighted_mean_neg(x: Tensor<1>, w: &[f32]) -> Tensor<1> {
    let total: f32 = w.iter().sum::<f32>().max(1e-12);
    let wt = Tensor::<1>::from_data(TensorData::new(w.to_vec(), [w.len()]), &x.device());
    (x * wt).sum().neg() / total
}
