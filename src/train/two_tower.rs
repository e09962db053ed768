//! The two-tower model's side of training: (customer state, purchase)
//! samples, the logQ-corrected in-batch softmax, and candidate evaluation.
//!
//! Evaluation is what a retrieval stage is for: for each customer who buys
//! in the target period, the top K of the whole catalogue by exact inner
//! product (K = the configured cut-offs, typically 12 to 200), scored by
//! Recall@K and MAP@12 against what they bought, beside the popularity and
//! repurchase candidate sources, and by recall on articles first sold in the
//! target period (cold items), which no history-based source can propose.

use burn::tensor::{Device, Int, Tensor, TensorData};
use rayon::prelude::*;
use recforge_infer::ItemIndex;
use recforge_infer::bundle::TwoTowerSpec;

use crate::config::experiment::{Experiment, HistoryPool};
use crate::data::Dataset;
use crate::data::history::History;
use crate::data::split::{Split, SplitKind};
use crate::error::{Error, Result};
use crate::eval::baselines::{self, Fitted, Kind};
use crate::eval::report::Row;
use crate::eval::{Accumulator, Targets};
use crate::features::{ItemFeature, item_features};
use crate::model::{TwoTower, TwoTowerConfig};
use crate::util::rng::Rng;

use super::evaluate::EvalResult;
use super::loss;
use super::parts::{BundleParts, ModelShape};
use super::task::{INIT, Report, Task, load_split};
use crate::features::tower::{
    ItemInputs, Sample, UserBatch, UserInputs, samples, unique, user_batch,
};

/// Items embedded per forward pass when building the item table.
const ITEM_BATCH: usize = 4096;

/// One target period as retrieval sees it.
struct Period {
    targets: Targets,
    /// Customer states: (user, as of day) aligned with `targets.users`.
    states: Vec<(u32, i64)>,
    timeline: History,
    /// History rows: what baselines are fitted on.
    history: Vec<usize>,
    /// Items with no sale in the history: new in this period.
    cold: Vec<bool>,
    /// Items retrievable in this period (`eval.stale_days`).
    available: Vec<bool>,
}

impl Period {
    fn new(
        ds: &Dataset,
        kind: SplitKind,
        history: Vec<usize>,
        target: &[usize],
        stale_days: u32,
    ) -> Self {
        let targets = Targets::from_rows(ds, target);
        let start = target.iter().map(|&r| ds.day(r)).min().unwrap_or(0);
        // Last-week: everyone is served as of the period's start. Per-user
        // targets (leave-one-out): as of the day after the user's last
        // history purchase, so all of it counts and nothing after it.
        let mut user_day = vec![i64::MIN; ds.users.len()];
        for &r in &history {
            let u = ds.inter.user[r] as usize;
            user_day[u] = user_day[u].max(ds.day(r) + 1);
        }
        let states = targets
            .users
            .iter()
            .map(|&u| {
                let own = user_day[u as usize];
                let day = if kind == SplitKind::LastWeek || own == i64::MIN {
                    start
                } else {
                    own
                };
                (u, day)
            })
            .collect();
        let n = ds.items.len();
        let mut last_sale = vec![i64::MIN; n];
        for &r in &history {
            let i = ds.inter.item[r] as usize;
            last_sale[i] = last_sale[i].max(ds.day(r));
        }
        let end = history.iter().map(|&r| ds.day(r)).max().unwrap_or(0);
        let cold: Vec<bool> = last_sale.iter().map(|&d| d == i64::MIN).collect();
        let available = last_sale
            .iter()
            .map(|&d| stale_days == 0 || d == i64::MIN || d > end - i64::from(stale_days))
            .collect();
        Period {
            targets,
            states,
            timeline: History::build(ds, &history),
            history,
            cold,
            available,
        }
    }

    /// Distinct (customer, cold item) purchases.
    fn cold_pairs(&self) -> usize {
        self.targets
            .truth
            .iter()
            .map(|t| t.items.iter().filter(|&&i| self.cold[i as usize]).count())
            .sum()
    }

    /// Share of (customer, cold item) purchases found in each list's top k.
    fn cold_recall(&self, lists: &[Vec<u32>], ks: &[usize]) -> Vec<(usize, f64)> {
        let total = self.cold_pairs();
        ks.iter()
            .map(|&k| {
                let hits: usize = lists
                    .iter()
                    .zip(&self.targets.truth)
                    .map(|(l, t)| {
                        l.iter()
                            .take(k)
                            .filter(|&&i| {
                                self.cold[i as usize] && t.items.binary_search(&i).is_ok()
                            })
                            .count()
                    })
                    .sum();
                (
                    k,
                    if total == 0 {
                        0.0
                    } else {
                        hits as f64 / total as f64
                    },
                )
            })
            .collect()
    }
}

/// The network's shapes from the experiment's model and tower sections,
/// with the (name, vocabulary) lists of the item and customer features.
pub fn model_config(
    exp: &Experiment,
    item_features: Vec<(String, usize)>,
    user_features: Vec<(String, usize)>,
) -> TwoTowerConfig {
    let t = &exp.tower;
    TwoTowerConfig {
        d_model: exp.model.d_model,
        feature_dim: t.feature_dim,
        hidden: t.hidden,
        id_buckets: if t.id_dim > 0 { t.id_buckets } else { 0 },
        id_dim: if t.id_buckets > 0 { t.id_dim } else { 0 },
        dropout: exp.model.dropout,
        init_std: exp.model.init_std,
        item_features,
        user_features,
        history: t.history,
    }
}

/// The two-tower task of the training loop.
pub struct TwoTowerTask {
    exp: Experiment,
    ds: Dataset,
    split: Split,
    items: ItemInputs,
    users: UserInputs,
    train_timeline: History,
    samples: Vec<Sample>,
    /// Each item's share of the training samples: the in-batch proposal.
    freq: Vec<f64>,
    /// Items sold in training: where uniform negatives come from. An item
    /// that never sold in training was, as a rule, not on sale yet; as a
    /// negative it would teach the tower to bury whatever looks new.
    sold: Vec<u32>,
    mean_price: f64,
    valid: Period,
    test: Period,
    config: TwoTowerConfig,
    feats: Vec<ItemFeature>,
}

impl TwoTowerTask {
    pub fn prepare(exp: &Experiment) -> Result<Self> {
        let (ds, split) = load_split(exp)?;
        let feats = item_features(&ds, &split.train, &exp.model)?;
        let items = ItemInputs::build(
            &ds,
            &feats,
            exp.tower.id_buckets,
            &exp.tower.id_features,
            &split.train,
        );
        let users = UserInputs::build(&ds, &exp.tower)?;
        let config = model_config(exp, items.features.clone(), users.features.clone());
        if config.item_features.is_empty() && config.id_buckets == 0 {
            return Err(Error::Config(format!(
                "the item tower has no inputs: `{}` has no item features in use and tower.id_buckets = 0",
                ds.meta.name
            )));
        }
        if config.user_features.is_empty() && exp.tower.history == HistoryPool::None {
            return Err(Error::Config(format!(
                "the customer tower has no inputs: no customer features of `{}` are in use and tower.history = \"none\"",
                ds.meta.name
            )));
        }
        let samples = samples(&ds, &split.train, exp.data.sample_days);
        if samples.is_empty() {
            return Err(Error::Data(format!(
                "no training purchases of `{}` in the last data.sample_days = {} days",
                ds.meta.name, exp.data.sample_days
            )));
        }
        let mut freq = vec![0.0; ds.items.len()];
        for s in &samples {
            freq[s.item as usize] += 1.0 / samples.len() as f64;
        }
        let priced: Vec<f64> = samples
            .iter()
            .filter(|s| s.price > 0.0)
            .map(|s| f64::from(s.price))
            .collect();
        let mean_price = if priced.is_empty() {
            1.0
        } else {
            priced.iter().sum::<f64>() / priced.len() as f64
        };
        let sold: Vec<u32> = (1..ds.items.len() as u32)
            .filter(|&i| items.known[i as usize])
            .collect();
        let stale = exp.eval.stale_days;
        let valid = Period::new(
            &ds,
            exp.data.split,
            split.train.clone(),
            &split.valid,
            stale,
        );
        let test = Period::new(&ds, exp.data.split, split.history(), &split.test, stale);
        Ok(TwoTowerTask {
            exp: exp.clone(),
            train_timeline: History::build(&ds, &split.train),
            ds,
            split,
            items,
            users,
            samples,
            freq,
            sold,
            mean_price,
            valid,
            test,
            config,
            feats,
        })
    }

    pub fn experiment(&self) -> &Experiment {
        &self.exp
    }
    pub fn dataset(&self) -> &Dataset {
        &self.ds
    }
    pub fn item_features(&self) -> &[ItemFeature] {
        &self.feats
    }
    pub fn item_inputs(&self) -> &ItemInputs {
        &self.items
    }
    pub fn user_inputs(&self) -> &UserInputs {
        &self.users
    }
    pub fn config(&self) -> &TwoTowerConfig {
        &self.config
    }

    /// The test period's customer states and their vectors `[n, d]`, as
    /// evaluation computes them (for parity checks of exported models).
    pub fn test_user_vectors(
        &self,
        model: &TwoTower,
        device: &Device,
    ) -> (Vec<(u32, i64)>, Vec<f32>) {
        let table = self.item_table(model, device);
        let v = self.embed_users(
            model,
            &self.test.states,
            &self.test.timeline,
            &table,
            device,
        );
        (self.test.states.clone(), to_vec(v))
    }

    fn user_codes(&self, b: &UserBatch, device: &Device) -> Option<Tensor<2, Int>> {
        let u = self.users.n_features();
        (u > 0).then(|| Tensor::from_data(TensorData::new(b.codes.clone(), [b.rows, u]), device))
    }

    fn history_pool(&self) -> bool {
        self.exp.tower.history != HistoryPool::None
    }

    /// Item vectors `[n, d]` of `ids`; id vector and price bucket used only
    /// where `keep`.
    fn embed_items(
        &self,
        model: &TwoTower,
        ids: &[u32],
        keep: &[bool],
        device: &Device,
    ) -> Tensor<2> {
        let n = ids.len();
        let (codes, buckets) = self.items.gather(ids, keep);
        let f = self.items.n_features();
        let keep: Vec<f32> = keep.iter().map(|&k| f32::from(u8::from(k))).collect();
        model.item_embed(
            Tensor::from_data(TensorData::new(codes, [n, f]), device),
            Tensor::from_data(TensorData::new(buckets, [n]), device),
            Tensor::from_data(TensorData::new(keep, [n, 1]), device),
        )
    }

    /// The whole catalogue's vectors `[n_items, d]` (row 0 = padding), each
    /// item with its id vector only if it sold in training.
    pub fn item_table(&self, model: &TwoTower, device: &Device) -> Tensor<2> {
        let n = self.ds.items.len() as u32;
        let ids: Vec<u32> = (0..n).collect();
        let parts: Vec<Tensor<2>> = ids
            .chunks(ITEM_BATCH)
            .map(|c| {
                let keep: Vec<bool> = c.iter().map(|&i| self.items.known[i as usize]).collect();
                self.embed_items(model, c, &keep, device)
            })
            .collect();
        Tensor::cat(parts, 0)
    }

    /// Customer vectors `[b, d]` for `states`, histories pooled from `table`.
    fn embed_users(
        &self,
        model: &TwoTower,
        states: &[(u32, i64)],
        timeline: &History,
        table: &Tensor<2>,
        device: &Device,
    ) -> Tensor<2> {
        let b = user_batch(states, &self.users, timeline, &self.exp.tower);
        let pooled = self.history_pool().then(|| {
            let idx: Vec<i64> = b.hist.iter().map(|&i| i64::from(i)).collect();
            TwoTower::pool(
                table.clone(),
                Tensor::from_data(TensorData::new(idx, [b.rows * b.len]), device),
                Tensor::from_data(TensorData::new(b.weights.clone(), [b.rows, b.len]), device),
            )
        });
        model.user_embed(self.user_codes(&b, device), pooled)
    }

    /// Top-`k` lists for every target customer of `period`, aligned with
    /// its targets.
    pub fn retrieve(
        &self,
        model: &TwoTower,
        device: &Device,
        period_is_test: bool,
        k: usize,
    ) -> Vec<Vec<u32>> {
        let period = if period_is_test {
            &self.test
        } else {
            &self.valid
        };
        let table = self.item_table(model, device);
        let d = self.config.d_model;
        let flat = to_vec(table.clone());
        let n = self.ds.items.len();
        let mut index = ItemIndex::new(d, (1..n as u32).collect(), flat[d..].to_vec())
            .expect("the item table has n_items rows of d values");
        for (row, &a) in period.available[1..].iter().enumerate() {
            index.set_available(row, a);
        }
        let skip = self.exp.eval.stale_days > 0;
        let mut out = Vec::with_capacity(period.states.len());
        for chunk in period.states.chunks(self.exp.eval.batch_size) {
            let u = to_vec(self.embed_users(model, chunk, &period.timeline, &table, device));
            let found = index
                .search(&u, k, skip)
                .expect("customer vectors have d values");
            out.extend(
                found
                    .into_iter()
                    .map(|l| l.into_iter().map(|(i, _)| i).collect()),
            );
        }
        out
    }

    fn evaluate(&self, model: &TwoTower, device: &Device, is_test: bool) -> EvalResult {
        let period = if is_test { &self.test } else { &self.valid };
        let ks = &self.exp.eval.ks;
        let k_max = ks.iter().copied().max().unwrap_or(1);
        let lists = self.retrieve(model, device, is_test, k_max);
        let plain = metrics(period, &lists, ks, self.ds.items.len());
        let cold_users = period
            .states
            .iter()
            .filter(|&&(u, d)| period.timeline.as_of(u, d).0.is_empty())
            .count();
        EvalResult {
            plain,
            masked: vec![],
            cold_users,
            extra: period
                .cold_recall(&lists, ks)
                .into_iter()
                .map(|(k, r)| (format!("ColdRecall@{k}"), r))
                .collect(),
        }
    }

    /// The baselines' lists on the test period, per kind.
    fn baseline_lists(&self) -> Vec<(Kind, Vec<Vec<u32>>)> {
        let k = self.exp.eval.ks.iter().copied().max().unwrap_or(1);
        let fitted = Fitted::fit(&self.ds, &self.test.history, baselines::Params::default());
        Kind::ALL
            .iter()
            .map(|&kind| {
                let lists = self
                    .test
                    .targets
                    .users
                    .par_iter()
                    .map(|&u| {
                        let mut out = Vec::with_capacity(k);
                        fitted.recommend(kind, u, k, &mut out);
                        out
                    })
                    .collect();
                (kind, lists)
            })
            .collect()
    }
}

fn to_vec(t: Tensor<2>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .expect("embeddings are f32")
}

fn metrics(
    period: &Period,
    lists: &[Vec<u32>],
    ks: &[usize],
    n_items: usize,
) -> Vec<crate::eval::Metrics> {
    let mut accs: Vec<Accumulator> = ks.iter().map(|&k| Accumulator::new(k, n_items)).collect();
    for (truth, list) in period.targets.truth.iter().zip(lists) {
        for a in &mut accs {
            a.add(truth, list);
        }
    }
    accs.iter().map(Accumulator::finish).collect()
}

impl Task for TwoTowerTask {
    type Model = TwoTower;
    const UNIT: &'static str = "samples";

    fn n_units(&self) -> usize {
        self.samples.len()
    }

    fn build(&self, device: &Device) -> TwoTower {
        device.seed(Rng::stream(self.exp.seed, INIT).next_u64());
        self.config.init(device)
    }

    fn loss(&self, model: &TwoTower, batch: &[usize], rng: &mut Rng, device: &Device) -> Tensor<1> {
        let exp = &self.exp;
        let picked: Vec<&Sample> = batch.iter().map(|&i| &self.samples[i]).collect();
        let b = picked.len();
        let states: Vec<(u32, i64)> = picked.iter().map(|s| (s.user, s.day)).collect();
        let ub = user_batch(&states, &self.users, &self.train_timeline, &exp.tower);
        let s = exp.loss.mixed_negatives;
        let mut columns: Vec<u32> = picked.iter().map(|s| s.item).collect();
        let pool = &self.sold;
        columns.extend((0..s).map(|_| pool[rng.below(pool.len() as u64) as usize]));
        let targets = &columns[..b];
        let c = columns.len();
        // Every item the step touches goes through the tower once.
        let mut touched = columns.clone();
        touched.extend_from_slice(&ub.hist);
        let (uniq, pos) = unique(&touched);
        let keep: Vec<bool> = uniq
            .iter()
            .map(|&i| self.items.known[i as usize] && !rng.chance(exp.tower.id_dropout))
            .collect();
        let vecs = self.embed_items(model, &uniq, &keep, device);
        let pooled = self.history_pool().then(|| {
            let idx = pos[c..].to_vec();
            TwoTower::pool(
                vecs.clone(),
                Tensor::from_data(TensorData::new(idx, [ub.rows * ub.len]), device),
                Tensor::from_data(
                    TensorData::new(ub.weights.clone(), [ub.rows, ub.len]),
                    device,
                ),
            )
        });
        let u = model.user_embed(self.user_codes(&ub, device), pooled);
        let col_idx = Tensor::<1, Int>::from_data(TensorData::new(pos[..c].to_vec(), [c]), device);
        let v = vecs.select(0, col_idx);
        let logits = u.matmul(v.transpose()).div_scalar(exp.loss.temperature);
        let log_q = loss::in_batch_log_q(&columns, &self.freq, b, s, pool.len());
        let mask = loss::in_batch_accidental_hits(targets, &columns);
        let w: Vec<f32> = if exp.loss.revenue_weight {
            picked
                .iter()
                .map(|s| (f64::from(s.price.max(0.0)) / self.mean_price) as f32)
                .collect()
        } else {
            vec![1.0; b]
        };
        loss::in_batch_softmax(logits, exp.loss.logq.then_some(&log_q[..]), &mask, &w)
    }

    fn validate(&self, model: &TwoTower, device: &Device) -> EvalResult {
        self.evaluate(model, device, false)
    }

    fn test(&self, model: &TwoTower, device: &Device) -> EvalResult {
        self.evaluate(model, device, true)
    }
}

impl Report for TwoTowerTask {
    fn data(&self) -> &Dataset {
        &self.ds
    }

    fn item_vectors(&self, model: &TwoTower, device: &Device) -> Tensor<2> {
        self.item_table(model, device)
    }

    fn describe(&self, _model: &TwoTower) -> String {
        format!(
            "{} training samples from {} rows, {} items ({} item features), {} customer features, history {:?}",
            self.samples.len(),
            self.split.train.len(),
            self.ds.items.len() - 1,
            self.items.n_features(),
            self.users.n_features(),
            self.exp.tower.history,
        )
    }

    fn run_info(&self) -> serde_json::Value {
        serde_json::json!({
            "dataset": self.ds.meta.name,
            "model": self.config,
            "train_rows": self.split.train.len(),
            "valid_rows": self.split.valid.len(),
            "test_rows": self.split.test.len(),
            "samples": self.samples.len(),
        })
    }

    fn result_rows(&self, test: &EvalResult) -> Vec<Row> {
        let mut rows = vec![Row {
            name: format!("{} (two-tower)", self.exp.name),
            metrics: test.plain.clone(),
        }];
        for (kind, lists) in self.baseline_lists() {
            rows.push(Row {
                name: kind.name().to_string(),
                metrics: metrics(&self.test, &lists, &self.exp.eval.ks, self.ds.items.len()),
            });
        }
        rows
    }

    fn protocol(&self, test: &EvalResult) -> String {
        let cold_items = self.test.cold.iter().skip(1).filter(|&&c| c).count();
        format!(
            "Candidate retrieval on the test period: each customer is embedded from their attributes and purchases \
before the period (train + validation), items from their features (id vectors only for items sold in training); \
exact top-K over {} items{}; {} test customers ({} without history). {} distinct (customer, article) purchases \
of articles never sold before the period. Baselines are fitted on the same history; already-bought items are not masked.",
            self.ds.items.len() - 1,
            if self.exp.eval.stale_days > 0 {
                format!(
                    ", {} of them withheld as sold out (sold before but not in the last {} days)",
                    self.test.available.iter().skip(1).filter(|&&a| !a).count(),
                    self.exp.eval.stale_days
                )
            } else {
                String::new()
            },
            self.test.targets.len(),
            test.cold_users,
            self.test.cold_pairs(),
        ) + &format!(" ({cold_items} catalogue articles have no sale before the period.)")
    }

    fn result_notes(&self, test: &EvalResult) -> (String, serde_json::Value) {
        let ks = &self.exp.eval.ks;
        let mut md = format!(
            "## Recall on cold articles\n\nShare of the {} (customer, article) purchases of articles first sold in the test period \
that each source proposes.\n\n| source | {} |\n|---|{}\n",
            self.test.cold_pairs(),
            ks.iter()
                .map(|k| format!("ColdRecall@{k}"))
                .collect::<Vec<_>>()
                .join(" | "),
            "---:|".repeat(ks.len())
        );
        let mut json = serde_json::Map::new();
        let model: Vec<(usize, f64)> = ks
            .iter()
            .map(|&k| (k, test.extra(&format!("ColdRecall@{k}")).unwrap_or(0.0)))
            .collect();
        let mut rows = vec![(format!("{} (two-tower)", self.exp.name), model)];
        for (kind, lists) in self.baseline_lists() {
            rows.push((kind.name().to_string(), self.test.cold_recall(&lists, ks)));
        }
        for (name, r) in rows {
            md += &format!(
                "| {name} | {} |\n",
                r.iter()
                    .map(|(_, v)| format!("{v:.4}"))
                    .collect::<Vec<_>>()
                    .join(" | ")
            );
            json.insert(
                name,
                serde_json::Value::Object(
                    r.into_iter()
                        .map(|(k, v)| (format!("ColdRecall@{k}"), serde_json::json!(v)))
                        .collect(),
                ),
            );
        }
        md.push('\n');
        (
            md,
            serde_json::json!({ "cold_pairs": self.test.cold_pairs(), "cold_recall": json }),
        )
    }

    fn dataset_name(&self) -> &str {
        &self.ds.meta.name
    }

    fn has_price(&self) -> bool {
        self.ds.meta.has_price
    }

    fn bundle_parts(&self) -> BundleParts {
        let c = &self.config;
        let mut hidden: Vec<String> = vec!["price_bucket".into()];
        hidden.extend(self.exp.tower.id_features.iter().cloned());
        let shape = ModelShape::TwoTower(c.clone());
        let mut parts = BundleParts::new(shape, self.dataset(), self.item_features());
        parts.two_tower = Some(TwoTowerSpec {
            d_model: c.d_model,
            feature_dim: c.feature_dim,
            hidden: c.hidden,
            id_buckets: c.id_buckets,
            id_dim: c.id_dim,
            history: self.exp.tower.history,
            history_len: self.exp.tower.history_len,
            half_life_days: self.exp.tower.half_life_days,
            hidden_with_id: hidden,
        });
        parts.items.known = self.item_inputs().known.clone();
        parts.users = self.user_inputs().specs.clone();
        parts
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::TimeUnit;
    use crate::data::split::tests::toy;

    #[test]
    fn periods_mark_cold_and_sold_out_items_and_serve_as_of_the_start() {
        // Items 1 and 2 sell in the history (item 1 long ago), item 3 only
        // in the target period, item 4 never (it exists in the catalogue).
        let ds = toy(
            &[1, 2, 1, 2, 3],
            &[1, 2, 2, 3, 4],
            &[1, 9, 10, 12, 2],
            TimeUnit::Day,
        );
        let history = vec![0, 1, 2];
        let p = Period::new(&ds, SplitKind::LastWeek, history.clone(), &[3], 5);
        assert_eq!(p.cold, vec![true, false, false, true, true]);
        // Item 1 last sold on day 1, more than 5 days before day 10.
        assert_eq!(p.available, vec![true, false, true, true, true]);
        assert_eq!(p.states, vec![(2, 12)]);
        assert_eq!(p.cold_pairs(), 1);
        let lists = vec![vec![2, 3]];
        assert_eq!(p.cold_recall(&lists, &[1, 2]), vec![(1, 0.0), (2, 1.0)]);
        // Without a stale rule everything is available.
        let p = Period::new(&ds, SplitKind::LastWeek, history, &[3], 0);
        assert!(p.available.iter().all(|&a| a));
    }
}
