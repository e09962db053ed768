//! Experiment configs: one TOML file per run in `experiments/`.
//!
//! Every field has a default (documented here and in the shipped files), and
//! unknown keys are an error, so a typo cannot silently fall back to a
//! default. `--set section.key=value` overrides are applied to the TOML tree
//! before it is typed, so they are checked the same way.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::device::DeviceChoice;
use crate::data::split::SplitKind;
use crate::error::{Error, Result};
use crate::eval::metrics::{Measure, Metric};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Experiment {
    /// Names the run directory (`runs/NAME`) and result files.
    pub name: String,
    /// Every random choice (init, dropout, data order, negatives) derives from it.
    pub seed: u64,
    pub device: DeviceChoice,
    pub data: DataConfig,
    pub model: ModelConfig,
    /// Settings of the two-tower model only (`model.kind = "two-tower"`).
    pub tower: TowerConfig,
    pub loss: LossConfig,
    pub optim: OptimConfig,
    pub train: TrainConfig,
    pub eval: EvalConfig,
}

impl Default for Experiment {
    fn default() -> Self {
        Experiment {
            name: "experiment".into(),
            seed: 42,
            device: DeviceChoice::Auto,
            data: DataConfig::default(),
            model: ModelConfig::default(),
            tower: TowerConfig::default(),
            loss: LossConfig::default(),
            optim: OptimConfig::default(),
            train: TrainConfig::default(),
            eval: EvalConfig::default(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct DataConfig {
    /// A cache written by `recforge prepare`, relative to the working directory.
    pub cache: PathBuf,
    pub split: SplitKind,
    /// Length of the validation and test periods (last-week split).
    pub target_days: u32,
    /// Longest history the model sees; longer training sequences are cut
    /// into windows so every purchase is a target once per epoch.
    pub max_len: usize,
    /// Step between consecutive windows of one sequence (0 = max_len, no
    /// overlap). Smaller strides give targets more context at more compute.
    pub window_stride: usize,
    /// Two-tower: only purchases in the last this many days of training are
    /// targets (histories still reach back to the start); 0 = all.
    pub sample_days: u32,
    /// The last this many days of the data are dropped before splitting
    /// (0 = none): the model never sees them, not even as its test period.
    /// `recforge run` sets it so that the second stage trains on weeks the
    /// models did not train on.
    pub holdout_days: u32,
    /// Train on every row (those before the holdout): the validation and
    /// test periods are then inside the training data, so their metrics
    /// are in-sample (logged, never selected on) and the last epoch is
    /// kept. `recforge run` sets it for the submission's models, with the
    /// number of epochs its evaluation chose on validation. (Left out of
    /// the written config when false, so evaluated runs keep their hashes.)
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub refit: bool,
}

impl DataConfig {
    pub fn window_stride(&self) -> usize {
        if self.window_stride == 0 {
            self.max_len
        } else {
            self.window_stride.min(self.max_len)
        }
    }
}

impl Default for DataConfig {
    fn default() -> Self {
        DataConfig {
            cache: PathBuf::from("data/cache"),
            split: SplitKind::Loo,
            target_days: 7,
            max_len: 50,
            window_stride: 0,
            sample_days: 0,
            holdout_days: 0,
            refit: false,
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum ModelKind {
    /// SASRec-style sequential ranker.
    #[default]
    Sasrec,
    /// Customer tower + feature-based item tower, for candidate retrieval.
    TwoTower,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ModelConfig {
    pub kind: ModelKind,
    /// Width of hidden states (SASRec) or of the retrieval space (two-tower).
    pub d_model: usize,
    pub n_layers: usize,
    pub n_heads: usize,
    /// Feed-forward width; 0 means 4 × d_model.
    pub d_ff: usize,
    pub dropout: f64,
    /// Pre-norm (LayerNorm before attention/feed-forward) or post-norm, as
    /// the original SASRec and RecBole.
    pub norm_first: bool,
    /// Item features summed into the item representation: `true` uses every
    /// categorical item feature in the cache, `false` none.
    pub item_features: bool,
    /// Only these features (by cache name) when non-empty.
    pub feature_names: Vec<String>,
    /// Price quantile buckets added as a feature (0 = off; needs prices).
    pub price_buckets: usize,
    /// Standard deviation of the normal initialisation of embeddings.
    pub init_std: f64,
}

impl Default for ModelConfig {
    fn default() -> Self {
        ModelConfig {
            kind: ModelKind::Sasrec,
            d_model: 64,
            n_layers: 2,
            n_heads: 2,
            d_ff: 0,
            dropout: 0.2,
            norm_first: false,
            item_features: true,
            feature_names: vec![],
            price_buckets: 10,
            init_std: 0.02,
        }
    }
}

impl ModelConfig {
    pub fn d_ff(&self) -> usize {
        if self.d_ff == 0 {
            4 * self.d_model
        } else {
            self.d_ff
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum LossKind {
    /// Softmax cross-entropy over the whole catalogue.
    Full,
    /// Softmax over the target and `negatives` shared items drawn in
    /// proportion to popularity^`alpha`, logits corrected by log Q.
    Sampled,
    /// gSASRec's generalised BCE with `negatives` uniform negatives.
    Gbce,
    /// Two-tower: softmax over the batch's other targets (plus
    /// `mixed_negatives` uniform items), corrected by log Q when `logq`.
    InBatch,
}

/// How the customer tower summarises recent purchases (the bundle's type,
/// so experiment files and manifests spell it the same).
pub use recforge_infer::bundle::HistoryPool;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct TowerConfig {
    /// Width of each feature embedding (item and customer features).
    pub feature_dim: usize,
    /// Hidden width of each tower's two-layer MLP.
    pub hidden: usize,
    /// Hashed article-id embedding: number of buckets (0 = no id embedding).
    pub id_buckets: usize,
    pub id_dim: usize,
    /// Probability of hiding an item's id vector in a training step, so the
    /// tower learns to place items from features alone (as it must for new
    /// ones, which never have an id vector).
    pub id_dropout: f64,
    /// Item features that identify an article almost as its id does (a
    /// product code shared only by colour variants): hidden together with
    /// the id, since a new product's code has never been trained.
    pub id_features: Vec<String>,
    /// Customer attributes (age bucket, club status, news frequency, FN,
    /// Active, postal code...) in the customer tower.
    pub user_features: bool,
    /// Only these customer features (by cache name, or `age_bucket`) when non-empty.
    pub user_feature_names: Vec<String>,
    /// Customer features with more distinct values than this (postal codes)
    /// are hashed into this many buckets.
    pub hash_buckets: usize,
    pub history: HistoryPool,
    /// Purchases pooled (the most recent ones).
    pub history_len: usize,
    pub half_life_days: f64,
}

impl Default for TowerConfig {
    fn default() -> Self {
        TowerConfig {
            feature_dim: 16,
            hidden: 256,
            id_buckets: 1 << 16,
            id_dim: 32,
            id_dropout: 0.5,
            id_features: vec!["product_code".into()],
            user_features: true,
            user_feature_names: vec![],
            hash_buckets: 1000,
            history: HistoryPool::Recency,
            history_len: 20,
            half_life_days: 30.0,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct LossConfig {
    pub kind: LossKind,
    pub negatives: usize,
    /// Popularity exponent of the sampled-softmax proposal (0 = uniform).
    pub alpha: f64,
    /// gBCE calibration t (gSASRec recommends 0.75).
    pub gbce_t: f64,
    /// Weight each target by its price (normalised to mean 1): optimises
    /// expected revenue rather than purchase probability.
    pub revenue_weight: bool,
    /// In-batch: logits are cosine similarities divided by this.
    pub temperature: f64,
    /// In-batch: subtract log(expected occurrences of the item among the
    /// candidates) from each logit, so popular items are not punished for
    /// appearing as negatives more often.
    pub logq: bool,
    /// In-batch: extra negatives drawn uniformly from the items sold in
    /// training (mixed negative sampling), so rarely bought items are
    /// pushed away too.
    pub mixed_negatives: usize,
}

impl Default for LossConfig {
    fn default() -> Self {
        LossConfig {
            kind: LossKind::Full,
            negatives: 1024,
            alpha: 0.5,
            gbce_t: 0.75,
            revenue_weight: false,
            temperature: 0.05,
            logq: true,
            mixed_negatives: 0,
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum OptimKind {
    Adam,
    Adamw,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Schedule {
    Constant,
    Cosine,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct OptimConfig {
    pub kind: OptimKind,
    pub lr: f64,
    pub weight_decay: f64,
    pub beta1: f64,
    pub beta2: f64,
    /// Linear warm-up from 0 over this many steps.
    pub warmup_steps: usize,
    pub schedule: Schedule,
    /// Floor of the cosine schedule, as a fraction of `lr`.
    pub min_lr_ratio: f64,
    /// Clip each parameter's gradient to this L2 norm (0 = off). burn clips
    /// per parameter tensor, not globally.
    pub clip_norm: f64,
}

impl Default for OptimConfig {
    fn default() -> Self {
        OptimConfig {
            kind: OptimKind::Adam,
            lr: 1e-3,
            weight_decay: 0.0,
            beta1: 0.9,
            beta2: 0.999,
            warmup_steps: 0,
            schedule: Schedule::Constant,
            min_lr_ratio: 0.0,
            clip_norm: 0.0,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    /// Sequences (windows) per step.
    pub batch_size: usize,
    pub epochs: usize,
    /// Train at least this many optimizer steps: more epochs than `epochs`
    /// where an epoch is short (a small dataset), and no early stop before
    /// them (0 = no floor; left out of the written config then, so runs
    /// without it keep their hashes).
    #[serde(skip_serializing_if = "is_zero")]
    pub min_steps: usize,
    /// Stop after this many evaluations without improvement (0 = never).
    pub patience: usize,
    /// Stop once training has used this many seconds (0 = no limit);
    /// checked after each epoch.
    pub time_budget_s: f64,
    /// Units (windows or samples) trained per epoch: a seeded draw, new
    /// each epoch, from all of them (0 = every unit). At the real H&M size
    /// an epoch over every window takes hours on a CPU; this bounds it.
    pub epoch_units: usize,
    /// Checkpoints kept besides the best one.
    pub keep_checkpoints: usize,
}

fn is_zero(v: &usize) -> bool {
    *v == 0
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            batch_size: 128,
            epochs: 50,
            min_steps: 0,
            patience: 10,
            time_budget_s: 0.0,
            epoch_units: 0,
            keep_checkpoints: 2,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct EvalConfig {
    pub ks: Vec<usize>,
    /// Early stopping and model selection metric, e.g. `ndcg@10`, `map@12`.
    pub metric: Metric,
    /// Select on the masked (already-bought items removed) or unmasked ranking.
    pub select_masked: bool,
    /// Customers scored per forward pass at evaluation.
    pub batch_size: usize,
    /// Evaluate every this many epochs (the last epoch is always evaluated).
    pub every: usize,
    /// Retrieval: an item that sold before but not in the last this many
    /// days of history counts as sold out and is not retrieved (0 = every
    /// item is available). Items that never sold stay available: they may
    /// be new arrivals.
    pub stale_days: u32,
}

impl Default for EvalConfig {
    fn default() -> Self {
        EvalConfig {
            ks: vec![10, 20],
            metric: Metric {
                measure: Measure::Ndcg,
                k: 10,
            },
            select_masked: false,
            batch_size: 256,
            every: 1,
            stale_days: 0,
        }
    }
}

impl Experiment {
    pub fn load(path: &Path, overrides: &[String]) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::parse(&text, overrides).map_err(|e| match e {
            Error::Config(m) => Error::Config(format!("{}: {m}", path.display())),
            other => other,
        })
    }

    pub fn parse(text: &str, overrides: &[String]) -> Result<Self> {
        let mut tree: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| Error::Config(e.to_string()))?;
        for o in overrides {
            apply_override(&mut tree, o)?;
        }
        let exp: Experiment = toml::Value::Table(tree)
            .try_into()
            .map_err(|e: toml::de::Error| Error::Config(e.to_string()))?;
        exp.validate()?;
        Ok(exp)
    }

    /// Every cross-field check a config must pass before anything runs.
    // A flat list of independent checks, each with its own message.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Config(m));
        let m = &self.model;
        if m.d_model == 0 || m.n_heads == 0 || !m.d_model.is_multiple_of(m.n_heads) {
            return bad(format!(
                "model.d_model ({}) must be a positive multiple of model.n_heads ({})",
                m.d_model, m.n_heads
            ));
        }
        if !(0.0..1.0).contains(&m.dropout) {
            return bad(format!(
                "model.dropout must be in [0, 1), got {}",
                m.dropout
            ));
        }
        if self.data.max_len < 2 {
            return bad("data.max_len must be at least 2".into());
        }
        if self.train.batch_size == 0 || self.eval.batch_size == 0 {
            return bad("train.batch_size and eval.batch_size must be positive".into());
        }
        if self.optim.lr <= 0.0 || !self.optim.lr.is_finite() {
            return bad(format!("optim.lr must be positive, got {}", self.optim.lr));
        }
        let two_tower = m.kind == ModelKind::TwoTower;
        if two_tower != (self.loss.kind == LossKind::InBatch) {
            return bad(format!(
                "loss.kind = \"in-batch\" goes with model.kind = \"two-tower\" (and only with it); got {:?} with {:?}",
                self.loss.kind, m.kind
            ));
        }
        if two_tower {
            let t = &self.tower;
            if t.feature_dim == 0 || t.hidden == 0 {
                return bad("tower.feature_dim and tower.hidden must be positive".into());
            }
            if !(0.0..=1.0).contains(&t.id_dropout) {
                return bad(format!(
                    "tower.id_dropout must be in [0, 1], got {}",
                    t.id_dropout
                ));
            }
            if t.history != HistoryPool::None && t.history_len == 0 {
                return bad(
                    "tower.history_len must be positive when tower.history pools purchases".into(),
                );
            }
            if t.half_life_days.is_nan() || t.half_life_days <= 0.0 {
                return bad(format!(
                    "tower.half_life_days must be positive, got {}",
                    t.half_life_days
                ));
            }
            if self.loss.temperature.is_nan() || self.loss.temperature <= 0.0 {
                return bad(format!(
                    "loss.temperature must be positive, got {}",
                    self.loss.temperature
                ));
            }
            if self.eval.select_masked {
                return bad("eval.select_masked does not apply to model.kind = \"two-tower\": retrieval keeps already-bought items (repurchases are candidates too)".into());
            }
            if t.hash_buckets == 0 {
                return bad("tower.hash_buckets must be positive".into());
            }
        }
        if matches!(self.loss.kind, LossKind::Sampled | LossKind::Gbce) && self.loss.negatives == 0
        {
            return bad("loss.negatives must be positive for sampled losses".into());
        }
        if self.eval.ks.is_empty() || self.eval.ks.contains(&0) {
            return bad("eval.ks must list positive cut-offs".into());
        }
        let k = self.eval.metric.k;
        if !self.eval.ks.contains(&k) {
            return bad(format!(
                "eval.metric `{}` needs k = {k} in eval.ks {:?}",
                self.eval.metric, self.eval.ks
            ));
        }
        Ok(())
    }

    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("an Experiment always serialises")
    }
}

/// `a.b.c=value`: the value is read as TOML (number, bool, array, quoted
/// string) and falls back to a bare string, so `--set data.split=loo` works.
/// Sets `KEY=VALUE` (a dotted key; the value read as TOML, else as a
/// string) in a config's TOML tree before it is read.
pub(crate) fn apply_override(tree: &mut toml::Table, spec: &str) -> Result<()> {
    let (key, raw) = spec
        .split_once('=')
        .ok_or_else(|| Error::Config(format!("--set `{spec}`: expected KEY=VALUE")))?;
    let value: toml::Value = match format!("v = {raw}").parse::<toml::Table>() {
        Ok(mut t) => t.remove("v").expect("just parsed"),
        Err(_) => toml::Value::String(raw.to_string()),
    };
    let parts: Vec<&str> = key.trim().split('.').collect();
    let (last, path) = parts.split_last().expect("split yields one part");
    let mut node = tree;
    for p in path {
        node = node
            .entry(p.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()))
            .as_table_mut()
            .ok_or_else(|| Error::Config(format!("--set `{spec}`: `{p}` is not a section")))?;
    }
    node.insert(last.to_string(), value);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_fill_missing_fields_and_unknown_keys_fail() {
        let e = Experiment::parse("name = \"x\"\n[model]\nd_model = 32\n", &[]).unwrap();
        assert_eq!(e.model.d_model, 32);
        assert_eq!(e.model.n_layers, 2);
        let err = Experiment::parse("[model]\nd_modle = 32\n", &[]).unwrap_err();
        assert!(err.to_string().contains("d_modle"), "{err}");
    }

    #[test]
    fn overrides_are_typed_and_checked() {
        let e = Experiment::parse(
            "",
            &[
                "optim.lr=0.01".into(),
                "data.split=last-week".into(),
                "eval.ks=[12]".into(),
                "eval.metric=map@12".into(),
            ],
        )
        .unwrap();
        assert_eq!(e.optim.lr, 0.01);
        assert_eq!(e.data.split, SplitKind::LastWeek);
        assert!(Experiment::parse("", &["optim.lr=fast".into()]).is_err());
        assert!(Experiment::parse("", &["model.n_heads=3".into()]).is_err());
        // The selection metric's k must be evaluated.
        assert!(Experiment::parse("", &["eval.metric=ndcg@5".into()]).is_err());
    }

    #[test]
    fn resolved_config_round_trips() {
        let e = Experiment::parse("seed = 7", &[]).unwrap();
        assert_eq!(Experiment::parse(&e.to_toml(), &[]).unwrap(), e);
    }
}
