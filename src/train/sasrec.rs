//! The sequential ranker's side of training: training windows cut from
//! purchase sequences, the configured softmax loss, and full-ranking
//! evaluation with and without already-bought items.

use burn::tensor::{Device, Int, Tensor, TensorData};

use crate::config::experiment::{Experiment, LossKind, ModelConfig};
use crate::data::Dataset;
use crate::data::history::History;
use crate::data::split::{Split, SplitKind};
use crate::error::{Error, Result};
use crate::eval::baselines::{self, Fitted, Kind};
use crate::eval::report::Row;
use crate::eval::{Metrics, Targets};
use crate::features::seq::{Window, train_batch, windows};
use crate::features::{ItemFeature, item_features};
use crate::model::{SasRec, SasRecConfig};
use crate::util::rng::Rng;

use super::evaluate::{self, EvalResult};
use super::loss;
use super::parts::{BundleParts, ModelShape, sasrec_spec};
use super::task::{INIT, Report, Task, load_split};

/// Everything derived from the data that a run needs.
pub(crate) struct Prepared {
    ds: Dataset,
    split: Split,
    train: History,
    /// Inputs when scoring the test period (train + validation).
    test_history: History,
    valid: Targets,
    test: Targets,
    windows: Vec<Window>,
    feats: Vec<ItemFeature>,
    /// Item frequencies in training, for the negative samplers.
    counts: Vec<f64>,
}

pub(crate) fn prepare(exp: &Experiment) -> Result<Prepared> {
    let (ds, split) = load_split(exp)?;
    let train = History::build(&ds, &split.train);
    let test_history = History::build(&ds, &split.history());
    let valid = Targets::from_rows(&ds, &split.valid);
    let test = Targets::from_rows(&ds, &split.test);
    let windows = windows(&train, exp.data.max_len, exp.data.window_stride());
    if windows.is_empty() {
        return Err(Error::Data(format!(
            "no customer of `{}` has two training interactions: nothing to learn from",
            ds.meta.name
        )));
    }
    let feats = item_features(&ds, &split.train, &exp.model)?;
    let mut counts = vec![0.0; ds.items.len()];
    for &r in &split.train {
        counts[ds.inter.item[r] as usize] += 1.0;
    }
    Ok(Prepared {
        ds,
        split,
        train,
        test_history,
        valid,
        test,
        windows,
        feats,
        counts,
    })
}

/// The network's shapes from the experiment's model section, for a
/// catalogue of `n_items` (with padding) and item features `feats`.
pub fn model_config(
    cfg: &ModelConfig,
    n_items: usize,
    max_len: usize,
    feats: &[ItemFeature],
) -> SasRecConfig {
    SasRecConfig {
        n_items,
        max_len,
        d_model: cfg.d_model,
        n_heads: cfg.n_heads,
        n_layers: cfg.n_layers,
        d_ff: cfg.d_ff(),
        dropout: cfg.dropout,
        norm_first: cfg.norm_first,
        init_std: cfg.init_std,
        features: feats.iter().map(|f| (f.name.clone(), f.vocab)).collect(),
    }
}

/// The SASRec task of the training loop.
pub struct SasRecTask {
    exp: Experiment,
    p: Prepared,
    proposal: Vec<f64>,
    revenue: Option<f64>,
    valid_fallback: Vec<u32>,
    test_fallback: Vec<u32>,
}

impl SasRecTask {
    pub fn prepare(exp: &Experiment) -> Result<Self> {
        let p = prepare(exp)?;
        Ok(SasRecTask {
            proposal: proposal_cdf(&p.counts, exp.loss.alpha, exp.loss.kind == LossKind::Gbce),
            revenue: exp.loss.revenue_weight.then(|| p.train.mean_price()),
            valid_fallback: fallback(&p.ds, &p.split.train, &exp.eval.ks),
            test_fallback: fallback(&p.ds, &p.split.history(), &exp.eval.ks),
            exp: exp.clone(),
            p,
        })
    }
}

impl SasRecTask {
    pub fn experiment(&self) -> &Experiment {
        &self.exp
    }
    pub fn dataset(&self) -> &Dataset {
        &self.p.ds
    }
    pub fn item_features(&self) -> &[ItemFeature] {
        &self.p.feats
    }
    pub fn config(&self) -> SasRecConfig {
        model_config(
            &self.exp.model,
            self.p.ds.items.len(),
            self.exp.data.max_len,
            &self.p.feats,
        )
    }
}

impl Task for SasRecTask {
    type Model = SasRec;
    const UNIT: &'static str = "sequences";

    fn n_units(&self) -> usize {
        self.p.windows.len()
    }

    fn build(&self, device: &Device) -> SasRec {
        build_model(&self.exp, self.p.ds.items.len(), &self.p.feats, device)
    }

    fn loss(&self, model: &SasRec, batch: &[usize], rng: &mut Rng, device: &Device) -> Tensor<1> {
        let windows: Vec<Window> = batch.iter().map(|&i| self.p.windows[i]).collect();
        let batch = train_batch(&self.p.train, &windows, self.revenue);
        step_loss(model, &self.exp, &batch, &self.proposal, rng, device)
    }

    /// The target positions' total weight, which the loss divides by.
    fn weight(&self, batch: &[usize]) -> f64 {
        let windows: Vec<Window> = batch.iter().map(|&i| self.p.windows[i]).collect();
        let (_, _, w) = train_batch(&self.p.train, &windows, self.revenue).targeted();
        w.iter().map(|&x| f64::from(x)).sum()
    }

    fn validate(&self, model: &SasRec, device: &Device) -> EvalResult {
        evaluate::evaluate(
            model,
            device,
            &self.p.valid,
            &self.p.train,
            &self.valid_fallback,
            &self.exp.eval.ks,
            self.exp.eval.batch_size,
        )
    }

    fn test(&self, model: &SasRec, device: &Device) -> EvalResult {
        evaluate::evaluate(
            model,
            device,
            &self.p.test,
            &self.p.test_history,
            &self.test_fallback,
            &self.exp.eval.ks,
            self.exp.eval.batch_size,
        )
    }
}

impl Report for SasRecTask {
    fn data(&self) -> &Dataset {
        &self.p.ds
    }

    fn item_vectors(&self, model: &SasRec, _device: &Device) -> Tensor<2> {
        model.item_table()
    }

    fn describe(&self, _model: &SasRec) -> String {
        format!(
            "{} training windows from {} customers, {} items, {} item features",
            self.p.windows.len(),
            self.p.train.n_users(),
            self.p.ds.items.len() - 1,
            self.p.feats.len(),
        )
    }

    fn run_info(&self) -> serde_json::Value {
        let p = &self.p;
        let model = model_config(
            &self.exp.model,
            p.ds.items.len(),
            self.exp.data.max_len,
            &p.feats,
        );
        serde_json::json!({
            "dataset": p.ds.meta.name,
            "model": model,
            "train_rows": p.split.train.len(),
            "valid_rows": p.split.valid.len(),
            "test_rows": p.split.test.len(),
            "windows": p.windows.len(),
        })
    }

    fn result_rows(&self, test: &EvalResult) -> Vec<Row> {
        let mut rows = vec![
            Row {
                name: format!("{} (seen not masked)", self.exp.name),
                metrics: test.plain.clone(),
            },
            Row {
                name: format!("{} (seen masked)", self.exp.name),
                metrics: test.masked.clone(),
            },
        ];
        // The classic baselines on the same targets, fitted on what the model saw.
        let history = match self.exp.data.split {
            SplitKind::LastWeek => self.p.split.history(),
            _ => self.p.split.train.clone(),
        };
        let mut fitted = Fitted::fit(&self.p.ds, &history, baselines::Params::default());
        for mask in [false, true] {
            // Masking changes what is served, not what was fitted.
            fitted.set_mask_seen(mask);
            for kind in Kind::ALL {
                let metrics: Vec<Metrics> = crate::eval::evaluate(
                    &self.p.test,
                    &self.exp.eval.ks,
                    self.p.ds.items.len(),
                    |u, k, out| fitted.recommend(kind, u, k, out),
                );
                rows.push(Row {
                    name: format!(
                        "{} ({})",
                        kind.name(),
                        if mask {
                            "seen masked"
                        } else {
                            "seen not masked"
                        }
                    ),
                    metrics,
                });
            }
        }
        rows
    }

    fn protocol(&self, test: &EvalResult) -> String {
        format!(
            "Test inputs are each customer's history before the test period (train + validation), \
full ranking over {} items; {} test customers ({} without history, served time-decayed popularity). \
Baselines are fitted on the same history.",
            self.p.ds.items.len() - 1,
            self.p.test.len(),
            test.cold_users,
        )
    }

    fn dataset_name(&self) -> &str {
        &self.p.ds.meta.name
    }

    fn has_price(&self) -> bool {
        self.p.ds.meta.has_price
    }

    fn bundle_parts(&self) -> BundleParts {
        let c = self.config();
        let mut parts = BundleParts::new(ModelShape::SasRec(c.clone()), &self.p.ds, &self.p.feats);
        parts.sasrec = Some(sasrec_spec(&c));
        parts
    }
}

/// The model as configured, initialised from the run's seed on `device`.
pub fn build_model(
    exp: &Experiment,
    n_items: usize,
    feats: &[ItemFeature],
    device: &Device,
) -> SasRec {
    device.seed(Rng::stream(exp.seed, INIT).next_u64());
    model_config(&exp.model, n_items, exp.data.max_len, feats).init(feats, device)
}

/// The loss of one batch `[1]`, on the autodiff device (public for the
/// training benchmark).
pub fn step_loss(
    model: &SasRec,
    exp: &Experiment,
    batch: &crate::features::seq::Batch,
    proposal: &[f64],
    rng: &mut Rng,
    device: &Device,
) -> Tensor<1> {
    let (idx, targets, w) = batch.targeted();
    let (b, l) = (batch.rows, batch.len);
    let inputs = Tensor::<2, Int>::from_data(TensorData::new(batch.inputs.clone(), [b, l]), device);
    let n_idx = idx.len();
    let idx = Tensor::<1, Int>::from_data(TensorData::new(idx, [n_idx]), device);
    let pos = batch.pos_offset(exp.data.max_len);
    let d = exp.model.d_model;
    match exp.loss.kind {
        LossKind::Full => {
            let table = model.item_table();
            let h = model
                .encode(&table, inputs, pos)
                .reshape([b * l, d])
                .select(0, idx);
            loss::full_softmax(h, &table, &targets, &w)
        }
        LossKind::Sampled | LossKind::Gbce | LossKind::InBatch => {
            let x = model
                .item_repr(inputs.clone().reshape([b * l]))
                .reshape([b, l, d]);
            let h = model
                .encode_embedded(x, inputs, pos)
                .reshape([b * l, d])
                .select(0, idx);
            let s = exp.loss.negatives;
            let negs = loss::draw_negatives(rng, proposal, s);
            if exp.loss.kind == LossKind::Sampled {
                loss::sampled_softmax(model, h, &targets, &w, &negs)
            } else {
                let beta = loss::gbce_beta(s, model.n_items(), exp.loss.gbce_t);
                loss::gbce(model, h, &targets, &w, &negs.ids, beta)
            }
        }
    }
}

/// Cumulative proposal weights over item ids: count^alpha (uniform over real
/// items for gBCE or alpha = 0), with a floor so unsold items can be drawn.
pub fn proposal_cdf(counts: &[f64], alpha: f64, uniform: bool) -> Vec<f64> {
    let mut acc = 0.0;
    counts
        .iter()
        .enumerate()
        .map(|(i, &c)| {
            if i > 0 {
                acc += if uniform || alpha == 0.0 {
                    1.0
                } else {
                    (c + 0.5).powf(alpha)
                };
            }
            acc
        })
        .collect()
}

/// What customers without history are shown: time-decayed popularity over
/// `rows` (the strongest history-free baseline), as the model has nothing
/// to condition on.
fn fallback(ds: &Dataset, rows: &[usize], ks: &[usize]) -> Vec<u32> {
    let k = ks.iter().copied().max().unwrap_or(12);
    let fitted = Fitted::fit(ds, rows, baselines::Params::default());
    let mut out = Vec::with_capacity(k);
    // User 0 is the padding customer: no history, so nothing is masked.
    fitted.recommend(Kind::DecayedPopular, 0, k, &mut out);
    out
}
