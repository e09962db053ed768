//! Evaluation results, and full-ranking evaluation of a sequential model: every item is scored for
//! every target customer, with and without the customer's already-bought
//! items, in one pass.

use burn::tensor::{Device, Int, Tensor, TensorData};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::data::history::History;
use crate::eval::metrics::Metric;
use crate::eval::{Accumulator, Metrics, Targets};
use crate::features::seq::history_batch;
use crate::model::SasRec;
use crate::topk::top_k;

/// Metrics at each k, unmasked and with seen items masked.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalResult {
    pub plain: Vec<Metrics>,
    pub masked: Vec<Metrics>,
    /// Target customers with no history (served a fallback by the ranker;
    /// embedded from their attributes alone by the two-tower model).
    pub cold_users: usize,
    /// Further metrics by column name, e.g. `ColdRecall@100`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra: Vec<(String, f64)>,
}

impl EvalResult {
    /// A further metric by column name, e.g. `ColdRecall@100`.
    pub fn extra(&self, column: &str) -> Option<f64> {
        self.extra.iter().find(|(c, _)| c == column).map(|c| c.1)
    }

    /// The value of `metric`, from the metrics at its k (config
    /// validation makes sure every selection metric's k is evaluated).
    pub fn get(&self, masked: bool, metric: Metric) -> Option<f64> {
        let ms = if masked { &self.masked } else { &self.plain };
        ms.iter()
            .find(|m| m.k == metric.k)
            .map(|m| metric.measure.of(m))
    }
}

/// `history` gives each target customer's inputs; customers with none get
/// `fallback` (a popularity list), as the model has nothing to condition on.
pub fn evaluate(
    model: &SasRec,
    device: &Device,
    targets: &Targets,
    history: &History,
    fallback: &[u32],
    ks: &[usize],
    batch: usize,
) -> EvalResult {
    let n_items = model.n_items();
    let k_max = ks.iter().copied().max().unwrap_or(1);
    let mut plain: Vec<Accumulator> = ks.iter().map(|&k| Accumulator::new(k, n_items)).collect();
    let mut masked: Vec<Accumulator> = ks.iter().map(|&k| Accumulator::new(k, n_items)).collect();
    let mut warm = Vec::new();
    let mut cold_users = 0;
    for (i, &u) in targets.users.iter().enumerate() {
        if history.items(u).is_empty() {
            cold_users += 1;
            let list = &fallback[..fallback.len().min(k_max)];
            for a in plain.iter_mut().chain(masked.iter_mut()) {
                a.add(&targets.truth[i], list);
            }
        } else {
            warm.push(i);
        }
    }
    let table = model.item_table();
    for chunk in warm.chunks(batch) {
        let hists: Vec<&[u32]> = chunk
            .iter()
            .map(|&i| history.items(targets.users[i]))
            .collect();
        let (len, inputs) = history_batch(&hists, model.max_len());
        let inputs =
            Tensor::<2, Int>::from_data(TensorData::new(inputs, [chunk.len(), len]), device);
        let scores = model.score_next_with(&table, inputs);
        let scores: Vec<f32> = scores
            .into_data()
            .convert::<f32>()
            .try_into_vec::<f32>()
            .expect("scores are f32");
        let width = n_items - 1;
        let lists: Vec<(Vec<u32>, Vec<u32>)> = (0..chunk.len())
            .into_par_iter()
            .map(|r| {
                let row = &scores[r * width..(r + 1) * width];
                let mut seen = hists[r].to_vec();
                seen.sort_unstable();
                seen.dedup();
                let (mut p, mut m) = (Vec::new(), Vec::new());
                top_k(row, 1, k_max, &[], &mut p);
                top_k(row, 1, k_max, &seen, &mut m);
                (p, m)
            })
            .collect();
        for (&i, (p, m)) in chunk.iter().zip(&lists) {
            for a in &mut plain {
                a.add(&targets.truth[i], p);
            }
            for a in &mut masked {
                a.add(&targets.truth[i], m);
            }
        }
    }
    EvalResult {
        plain: plain.iter().map(Accumulator::finish).collect(),
        masked: masked.iter().map(Accumulator::finish).collect(),
        cold_users,
        extra: vec![],
    }
}
