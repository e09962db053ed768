//! Ranking candidates with an exported sequential ranker and a second
//! stage, on the test period of the last-week split.
//!
//! The union of the candidate sources ([`candidates`]) gets the features of
//! [`features`] and is ordered by the second stage: gradient-boosted trees
//! ([`gbdt`]) trained on the candidates of several weeks before the
//! validation week and early-stopped on it, or the logistic blender
//! ([`blend`]), or SASRec's score alone. The report puts each beside SASRec
//! over the whole catalogue and every baseline, on the same customers.
//!
//! Every week's candidates and features are made as of that week's first
//! day from the rows before it ([`Ranker::new`] cuts the data there), and
//! the model stages were trained on rows before the first training week,
//! so no score the trees learn from was fitted on its own label.
//!
//! The ranker's scores are softmax logits over the catalogue, so
//! exp(score) is proportional to the purchase probability, and the
//! expected revenue of showing an item is proportional to
//! exp(score) · price^alpha: ranking by score + alpha · ln(price) orders by
//! it without normalising. The binary trees' scores are ln P(purchase), so
//! the same bonus applies.

pub mod blend;
pub mod candidates;
pub mod features;
pub mod gbdt;

use std::path::Path;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::eval::baselines::{Fitted, Kind};
use crate::eval::compare::PerCustomer;
use crate::eval::report::Table;
use crate::eval::{Accumulator, Metrics, Targets};
use crate::export::serve::{Server, UserCodes};
use crate::rank::blend::{BlendConfig, Blender};
use crate::rank::candidates::{CandidateConfig, Generator, List};
use crate::rank::features::{Context, Feature, Group, Row};
use crate::rank::gbdt::{RowSet, TreeConfig, TreeObjective};
use crate::util::progress::Counter;
use crate::util::rng::Rng;
use recforge_infer::engine::Model;
use recforge_infer::rank::bundle;
use recforge_infer::rank::engine::{RankCustomer, RankingEngine};

/// What the ranking maximises (shared with the HTTP server).
pub use recforge_infer::Objective;
use recforge_infer::rank::second::Ordering;
pub use recforge_infer::rank::second::Scorer;

const K: usize = 12;

/// Everything needed to rank customers' candidates as of one day: the
/// inference crate's ranking engine (candidate sources and feature
/// statistics fitted on the rows before it, the models served from their
/// bundles on those rows) and the dataset it translates customers from.
pub struct Ranker {
    past: Dataset,
    pub engine: RankingEngine,
    /// The baselines of the same rows (and every customer's purchases).
    fitted: Fitted,
    /// The two-tower model's customer codes.
    user_codes: Option<UserCodes>,
}

pub use recforge_infer::rank::engine::Prepared;

/// The second stage a ranking bundle serves: the trees' text with their
/// negative rate, else the blender, else (both None) the ranker's score.
#[derive(Clone, Copy, Default)]
pub struct ServedStage<'a> {
    pub trees: Option<(&'a str, f64)>,
    pub blender: Option<&'a Blender>,
}

impl Ranker {
    /// Serves as of `day`, from the rows of `ds` before it only.
    pub fn new(ds: &Dataset, day: i64, set: &RankSettings) -> Result<Self> {
        let (cfg, objective, alpha) = (set.candidates, set.objective, set.alpha);
        let past = crate::data::split::before(ds, day);
        let rows = crate::data::split::time_order(&past);
        let server = Server::new(set.ranker, &past)?;
        if !matches!(server.engine.model, Model::SasRec(_)) {
            return Err(Error::Config(format!(
                "{}: the ranker must be a sequential-ranker bundle",
                set.ranker.display()
            )));
        }
        let (retrieval, user_codes) = match set.retrieval {
            Some(b) => {
                let s = Server::new(b, &past)?;
                (Some(s.articles), Some(s.user_codes))
            }
            None => (None, None),
        };
        let context = Context::fit(&past.log(), day);
        let (sources, fitted) = Generator::fit(&past, &rows, cfg).into_parts();
        let ordering = Ordering::new(&context, &sources, objective, alpha, K);
        Ok(Ranker {
            engine: RankingEngine {
                ranker: server.articles,
                retrieval,
                sources,
                context,
                ordering,
            },
            fitted,
            user_codes,
            past,
        })
    }

    /// The baselines fitted on the rows before the day.
    pub fn fitted(&self) -> &Fitted {
        &self.fitted
    }

    /// Writes the system this ranker serves, ordered by `served`, as a
    /// ranking bundle in `dir`; `ranker` and `retrieval` are the model
    /// bundles it was made with.
    pub fn write_bundle(
        &self,
        dir: &Path,
        set: &RankSettings,
        served: ServedStage,
        validation: Option<bundle::Validation>,
    ) -> Result<bundle::RankingManifest> {
        let items = &self.past.items;
        let state = bundle::RankingState {
            articles: items.ids.clone(),
            attributes: items
                .features
                .iter()
                .map(|f| bundle::ArticleColumn {
                    name: f.name.clone(),
                    vocab: f.vocab.clone(),
                    codes: f.codes.clone(),
                })
                .collect(),
            sources: self.engine.sources.clone(),
            context: self.engine.context.clone(),
        };
        let name = dir.file_name().map_or_else(
            || "ranking".to_string(),
            |n| n.to_string_lossy().into_owned(),
        );
        let parts = bundle::RankingParts {
            name: &name,
            last_day: self.fitted.popularity().end_day,
            objective: set.objective,
            alpha: set.alpha,
            k: K,
            state: &state,
            trees: served.trees,
            blender: served.blender,
            ranker: set.ranker,
            retrieval: set.retrieval,
            validation,
        };
        Ok(bundle::write(dir, &parts)?)
    }

    /// The candidates and features of a chunk of customers; with `full`,
    /// also SASRec's top K over the whole catalogue.
    pub fn prepare(&self, users: &[u32], full: bool) -> Result<Vec<Prepared>> {
        let hist = self.fitted.histories();
        let codes: Vec<Vec<u32>> = users
            .iter()
            .map(|&u| {
                self.user_codes
                    .as_ref()
                    .map_or_else(Vec::new, |c| c.codes(&self.past, u))
            })
            .collect();
        let customers: Vec<RankCustomer> = users
            .iter()
            .zip(&codes)
            .map(|(&u, c)| {
                crate::export::serve::customer(&self.past, hist, u, self.engine.day(), c)
            })
            .collect();
        Ok(self.engine.prepare(&customers, if full { K } else { 0 })?)
    }

    /// The top K of `p`'s candidates by `scorer` (plus the revenue term),
    /// padded with popular items. SASRec's score and the blender need a
    /// query: a customer without history keeps the candidates' own order
    /// (popularity first) under them; the trees score every customer.
    pub fn order(&self, p: &Prepared, scorer: Scorer) -> Vec<u32> {
        self.engine.order(p, scorer)
    }

    /// The candidate rows of `targets`' customers, labelled bought or not:
    /// for the trees (customers with a bought candidate only, each one's
    /// rows together) and for the logistic blender (customers with a
    /// query). With `negatives`, every positive and up to that many
    /// negatives per customer are kept, drawn from a stream of `seed`.
    pub fn collect(
        &self,
        targets: &Targets,
        negatives: Option<usize>,
        seed: u64,
    ) -> Result<Collected> {
        let mut out = Collected::default();
        let mut progress = Counter::new("second stage: training customers", targets.users.len());
        for (c, (users, truths)) in targets
            .users
            .chunks(CHUNK)
            .zip(targets.truth.chunks(CHUNK))
            .enumerate()
        {
            let prepared = self.prepare(users, false)?;
            out.extend(label(&prepared, truths, negatives, seed, c * CHUNK));
            progress.add(users.len());
        }
        progress.finish();
        Ok(out)
    }
}

/// The labelled rows of prepared customers (`truths` aligned with them),
/// as [`Ranker::collect`] describes; `offset` is the first customer's
/// position among all collected, which picks its sampling stream.
fn label(
    prepared: &[Prepared],
    truths: &[crate::eval::Truth],
    negatives: Option<usize>,
    seed: u64,
    offset: usize,
) -> Collected {
    let parts: Vec<Option<Sampled>> = prepared
        .par_iter()
        .zip(truths.par_iter())
        .enumerate()
        .map(|(k, (p, truth))| {
            let labelled: Vec<(Row, bool)> = p
                .candidates
                .iter()
                .zip(&p.rows)
                .map(|(cand, r)| (*r, truth.items.binary_search(&cand.item).is_ok()))
                .collect();
            if !labelled.iter().any(|l| l.1) {
                return None;
            }
            let (x, y, n) = match negatives {
                Some(keep) => {
                    let mut rng = Rng::stream(seed, SAMPLE ^ (((offset + k) as u64) << 8));
                    blend::sample(&labelled, keep, &mut rng)
                }
                None => {
                    let n = labelled.iter().filter(|l| !l.1).count();
                    let (x, y) = labelled.into_iter().unzip();
                    (x, y, n)
                }
            };
            Some(Sampled {
                x,
                y,
                negatives: n,
                has_query: p.has_query,
            })
        })
        .collect();
    let mut out = Collected::default();
    for part in parts.into_iter().flatten() {
        out.negatives_seen += part.negatives;
        out.trees.groups.push(part.x.len() as i32);
        out.trees
            .y
            .extend(part.y.iter().map(|&b| f32::from(u8::from(b))));
        for r in &part.x {
            out.trees.x.extend_from_slice(r);
        }
        if part.has_query {
            out.blend_x.extend(part.x.iter().map(blend::inputs));
            out.blend_y.extend(part.y);
        }
    }
    out.set_rate();
    out
}

/// One customer's sampled training rows.
struct Sampled {
    x: Vec<Row>,
    y: Vec<bool>,
    /// Negatives before sampling.
    negatives: usize,
    has_query: bool,
}

/// The trained tree models, each with the report row it orders.
type TreeModels = Vec<(System, gbdt::Fitted)>;

/// Customers prepared at a time (bounds the memory of features in flight).
const CHUNK: usize = 8192;

/// Stream id of the negative sampling.
const SAMPLE: u64 = 0x0062_6c65_6e64;

/// Labelled candidate rows of one or more weeks.
#[derive(Default)]
pub struct Collected {
    /// Its `negative_rate` is kept / [`Collected::negatives_seen`].
    pub trees: RowSet,
    pub blend_x: Vec<blend::Row>,
    pub blend_y: Vec<bool>,
    /// Not-bought candidates of the collected customers before sampling.
    pub negatives_seen: usize,
    /// Customers collected by the end of each week ([`collect_weeks`]).
    pub week_ends: Vec<usize>,
}

impl Collected {
    fn extend(&mut self, other: Collected) {
        self.trees.x.extend(other.trees.x);
        self.trees.y.extend(other.trees.y);
        self.trees.groups.extend(other.trees.groups);
        self.blend_x.extend(other.blend_x);
        self.blend_y.extend(other.blend_y);
        self.negatives_seen += other.negatives_seen;
        self.set_rate();
    }

    fn set_rate(&mut self) {
        let kept = self.trees.len() - self.trees.positives();
        self.trees.negative_rate = if self.negatives_seen > 0 {
            kept as f64 / self.negatives_seen as f64
        } else {
            1.0
        };
    }
}

/// The trees (and the logistic blender) fitted on the weeks before the
/// validation week, early-stopped and chosen on it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SecondStage {
    /// Every trained model, the served one first.
    pub models: Vec<TreeSummary>,
    pub served: TreeObjective,
    /// The served model's text (LightGBM's format).
    #[serde(skip)]
    pub text: String,
    /// Share of negatives kept in the training rows (the binary trees'
    /// correction).
    pub negative_rate: f64,
    /// Gain share per feature of the served model, largest first.
    pub importance: Vec<(String, f64)>,
    pub train_rows: usize,
    pub train_positives: usize,
    pub train_customers: usize,
    pub weeks: u32,
    /// The first day of each training week, then the validation week's.
    pub week_starts: Vec<i64>,
    pub blender: Option<Blender>,
}

/// One trained tree model.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TreeSummary {
    pub objective: TreeObjective,
    /// The feature group left out (an ablation), if any.
    pub without: Option<String>,
    pub rounds: u32,
    /// MAP@12 on the validation week's customers, exact (as the report).
    pub valid_map: f64,
    pub valid_revenue_per_impression: f64,
}

/// What the test period's ranking gives.
pub struct TestPeriod {
    pub table: Table,
    /// Each row's per-customer metrics (for `recforge compare`).
    pub per_customer: Vec<PerCustomer>,
    /// Recall of the very candidates that were ranked.
    pub candidates: crate::rank::candidates::RecallReport,
    pub second: Option<SecondStage>,
    /// What each row of `table` (and each of `per_customer`) is, in order.
    pub systems: Vec<System>,
    /// The served system's list of each test customer: (customer id,
    /// article ids), in the targets' order.
    pub served_lists: Vec<(String, Vec<String>)>,
}

/// A system the test-period report scores.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum System {
    /// Candidates ordered by trees of this objective, every feature.
    Trees(TreeObjective),
    /// The served trees' objective without a feature group.
    TreesWithout(Group),
    /// Candidates ordered by the logistic blender.
    Blend,
    /// Candidates ordered by the ranker's score alone.
    Score,
    /// The ranker over the whole catalogue, no candidates.
    WholeCatalogue,
    Baseline(Kind),
}

impl TestPeriod {
    /// The row of `system`, if the report has it.
    pub fn row(&self, system: System) -> Option<usize> {
        self.systems.iter().position(|&s| s == system)
    }

    /// The row of what is served: the chosen trees, else the blender, else
    /// the score.
    pub fn served(&self) -> usize {
        self.second
            .as_ref()
            .and_then(|s| self.row(System::Trees(s.served)))
            .or_else(|| self.row(System::Blend))
            .or_else(|| self.row(System::Score))
            .expect("the report always has the score row")
    }

    /// The baseline row with the best MAP@12 (on ties, the later row).
    pub fn best_baseline(&self) -> usize {
        let map = |r: usize| self.table.rows[r].metrics[0].map;
        let baselines =
            (0..self.systems.len()).filter(|&r| matches!(self.systems[r], System::Baseline(_)));
        baselines
            .max_by(|&a, &b| map(a).total_cmp(&map(b)))
            .expect("the report always has the baselines")
    }
}

/// The second stage's settings.
pub struct SecondSettings<'a> {
    pub blend: &'a BlendConfig,
    pub trees: &'a TreeConfig,
    /// The negative sampling's and the trees' seed.
    pub seed: u64,
    /// Where the training and validation rows are written (`[trees]
    /// export_rows`).
    pub rows_out: Option<&'a Path>,
}

/// How candidates are made and ordered.
pub struct RankSettings<'a> {
    pub candidates: &'a CandidateConfig,
    /// The two-tower bundle (two-tower source and cosine feature).
    pub retrieval: Option<&'a Path>,
    /// The sequential ranker's bundle.
    pub ranker: &'a Path,
    pub objective: Objective,
    pub alpha: f64,
    /// Fit a second stage; read by [`rank_test_period`].
    pub second: Option<SecondSettings<'a>>,
    /// Where [`rank_test_period`] writes the ranking bundle of the system
    /// it serves on the test period.
    pub bundle: Option<&'a Path>,
}

/// The feature groups the ablations leave out, in report order.
pub const ABLATIONS: [Group; 3] = [Group::Sasrec, Group::TwoTower, Group::SourceRank];

/// The sampled candidate rows of the `weeks` weeks (each `target_days`
/// long) that end on `end` (exclusive), each as of its first day from the
/// rows before it, with the models of `set`; and the weeks' first days.
fn collect_weeks(
    ds: &Dataset,
    set: &RankSettings,
    end: i64,
    target_days: u32,
    weeks: u32,
    negatives: usize,
    seed: u64,
) -> Result<(Collected, Vec<i64>)> {
    let len = i64::from(target_days);
    let mut rows = Collected::default();
    let mut starts = Vec::new();
    for w in (1..=i64::from(weeks.max(1))).rev() {
        let start = end - w * len;
        let week: Vec<usize> = (0..ds.inter.len())
            .filter(|&r| (start..start + len).contains(&ds.day(r)))
            .collect();
        if week.is_empty() {
            continue;
        }
        starts.push(start);
        let ranker = Ranker::new(ds, start, set)?;
        rows.extend(ranker.collect(
            &Targets::from_rows(ds, &week),
            Some(negatives),
            seed ^ (w as u64),
        )?);
        rows.week_ends.push(rows.trees.groups.len());
    }
    Ok((rows, starts))
}

/// The exact metrics of `lists` against `targets`.
fn score(targets: &Targets, lists: &[Vec<u32>], n_items: usize) -> Metrics {
    let mut acc = Accumulator::new(K, n_items);
    for (t, l) in targets.truth.iter().zip(lists) {
        acc.add(t, l);
    }
    acc.finish()
}

/// Trains the trees (each objective, and the ablations) and the logistic
/// blender on the `weeks` weeks before the validation week, early-stops and
/// chooses them on it. None (with a note on stderr) when the weeks hold
/// too little to fit on.
// The training protocol in one place: collect each week, fit every model,
// pick the served one on validation.
fn fit_second_stage(
    ds: &Dataset,
    split: &crate::data::split::Split,
    target_days: u32,
    set: &RankSettings,
    second: &SecondSettings,
) -> Result<Option<(SecondStage, TreeModels)>> {
    let tc = second.trees;
    let valid_start = split.valid.iter().map(|&r| ds.day(r)).min().unwrap_or(0);
    let (train, mut week_starts) = collect_weeks(
        ds,
        set,
        valid_start,
        target_days,
        tc.weeks,
        tc.negatives,
        second.seed,
    )?;
    week_starts.push(valid_start);
    let vr = Ranker::new(ds, valid_start, set)?;
    let vt = Targets::from_rows(ds, &split.valid);
    // Prepared once: the trees' validation rows and the exact metrics read
    // the same candidates. Only customers with a bought candidate keep their
    // rows: no order of the others' candidates scores, and the popular items
    // padding a short list land after all of them whatever the order, so
    // their list is made once. At the full H&M size this halves the rows
    // held.
    let mut vp = Vec::new();
    let mut kept_truth = Vec::new();
    let mut missed = Vec::new();
    let mut progress = Counter::new("second stage: validation customers", vt.users.len());
    for (c, (users, truths)) in vt
        .users
        .chunks(CHUNK)
        .zip(vt.truth.chunks(CHUNK))
        .enumerate()
    {
        for (k, (p, t)) in vr
            .prepare(users, false)?
            .into_iter()
            .zip(truths)
            .enumerate()
        {
            if p.candidates
                .iter()
                .any(|cand| t.items.binary_search(&cand.item).is_ok())
            {
                vp.push(p);
                kept_truth.push(t.clone());
            } else {
                let mut list: Vec<u32> =
                    p.candidates.iter().map(|cand| cand.item).take(K).collect();
                vr.engine.ordering.fill(&mut list);
                missed.push((c * CHUNK + k, list));
            }
        }
        progress.add(users.len());
    }
    progress.finish();
    let valid = label(&vp, &kept_truth, None, 0, 0).trees;
    // Every kept customer has a bought candidate, so `valid` holds each
    // one's rows in order: they are read from there, not held twice.
    let mut starts = Vec::with_capacity(vp.len());
    let mut at = 0usize;
    for (p, &g) in vp.iter_mut().zip(&valid.groups) {
        debug_assert_eq!(p.rows.len(), g as usize);
        starts.push(at);
        at += g as usize;
        p.rows = Vec::new();
    }
    let (valid_rows, _) = valid.x.as_chunks::<{ features::N }>();
    let n_items = ds.items.len();
    let valid_metrics = |scorer: Scorer| {
        let lists: Vec<Vec<u32>> = vp
            .par_iter()
            .zip(&starts)
            .map(|(p, &s)| {
                let rows = &valid_rows[s..s + p.candidates.len()];
                vr.engine
                    .ordering
                    .order(&p.candidates, rows, p.has_query, scorer)
            })
            .collect();
        let mut acc = Accumulator::new(K, n_items);
        for (t, l) in kept_truth.iter().zip(&lists) {
            acc.add(t, l);
        }
        for (m, list) in &missed {
            acc.add(&vt.truth[*m], list);
        }
        acc.finish()
    };
    let blender = if second.blend.enabled {
        match blend::fit(
            &train.blend_x,
            &train.blend_y,
            train.trees.negative_rate,
            second.blend.l2,
        ) {
            Ok(b) => Some(b),
            Err(Error::Training(why)) => {
                eprintln!("blender not fitted: {why}");
                None
            }
            Err(e) => return Err(e),
        }
    } else {
        None
    };
    // Without trees (off, or too little to train them) the blender serves.
    let blender_only = |blender: Option<Blender>, week_starts: Vec<i64>| {
        blender.map(|b| {
            (
                SecondStage {
                    models: Vec::new(),
                    served: TreeObjective::Binary,
                    text: String::new(),
                    negative_rate: train.trees.negative_rate,
                    importance: Vec::new(),
                    train_rows: train.trees.len(),
                    train_positives: train.trees.positives(),
                    train_customers: train.trees.groups.len(),
                    weeks: tc.weeks,
                    week_starts,
                    blender: Some(b),
                },
                Vec::new(),
            )
        })
    };
    if !tc.enabled {
        return Ok(blender_only(blender, week_starts));
    }
    let rate = train.trees.negative_rate;
    let mut fitted: TreeModels = Vec::new();
    let mut summaries = Vec::new();
    for &objective in &tc.objectives {
        let m = match gbdt::train(&train.trees, &valid, tc, objective, &[], second.seed) {
            Ok(m) => m,
            Err(Error::Training(why)) => {
                eprintln!(
                    "trees not trained, the blender or the score orders the candidates: {why}"
                );
                return Ok(blender_only(blender, week_starts));
            }
            Err(e) => return Err(e),
        };
        let v = valid_metrics(Scorer::Trees(&m.trees, rate));
        eprintln!(
            "second stage: {} trees, {} rounds, validation MAP@12 {:.4}",
            objective.name(),
            m.rounds,
            v.map
        );
        summaries.push(TreeSummary {
            objective,
            without: None,
            rounds: m.rounds,
            valid_map: v.map,
            valid_revenue_per_impression: v.revenue_per_impression,
        });
        fitted.push((System::Trees(objective), m));
    }
    if fitted.is_empty() {
        return Ok(blender_only(blender, week_starts));
    }
    // Chosen on validation by what the objective maximises.
    let key = |s: &TreeSummary| match set.objective {
        Objective::Purchase => s.valid_map,
        Objective::Revenue => s.valid_revenue_per_impression,
    };
    let best = (0..summaries.len())
        .max_by(|&a, &b| {
            key(&summaries[a])
                .total_cmp(&key(&summaries[b]))
                .then(b.cmp(&a))
        })
        .expect("at least one model");
    summaries.swap(0, best);
    fitted.swap(0, best);
    let served = summaries[0].objective;
    if tc.ablations {
        for group in ABLATIONS {
            let blank: Vec<Feature> = Feature::ALL
                .iter()
                .copied()
                .filter(|f| f.group() == group)
                .collect();
            let m = gbdt::train(&train.trees, &valid, tc, served, &blank, second.seed)?;
            let v = valid_metrics(Scorer::Trees(&m.trees, rate));
            summaries.push(TreeSummary {
                objective: served,
                without: Some(group.name().to_string()),
                rounds: m.rounds,
                valid_map: v.map,
                valid_revenue_per_impression: v.revenue_per_impression,
            });
            fitted.push((System::TreesWithout(group), m));
        }
    }
    let gain = &fitted[0].1.gain;
    let total: f64 = gain.iter().sum::<f64>().max(1e-300);
    let mut importance: Vec<(String, f64)> = Feature::ALL
        .iter()
        .zip(gain)
        .map(|(f, g)| (f.name().to_string(), g / total))
        .collect();
    importance.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    if let Some(dir) = second.rows_out {
        let has_query: Vec<bool> = vp.iter().map(|p| p.has_query).collect();
        let summary = RowsSummary {
            valid_customers: vt.len(),
            week_starts: week_starts.clone(),
            negative_rate: rate,
            models: summaries.clone(),
            score_valid_map: valid_metrics(Scorer::Score).map,
        };
        write_rows(dir, &train, &valid, &kept_truth, &has_query, &summary)?;
    }
    let stage = SecondStage {
        models: summaries,
        served,
        text: fitted[0].1.text.clone(),
        negative_rate: rate,
        importance,
        train_rows: train.trees.len(),
        train_positives: train.trees.positives(),
        train_customers: train.trees.groups.len(),
        weeks: tc.weeks,
        week_starts,
        blender,
    };
    Ok(Some((stage, fitted)))
}

/// The test-period comparison table, each row's per-customer metrics, and
/// the candidate sources' recall. With a second stage configured, it is
/// trained on the weeks before the validation week and chosen on it, then
/// orders the test week.
// Mostly the list of rows the report compares (trees, ablations, blend,
// score, whole catalogue, each baseline), each one `add` call.
pub fn rank_test_period(ds: &Dataset, target_days: u32, set: &RankSettings) -> Result<TestPeriod> {
    let split =
        crate::data::split::split(ds, crate::data::split::SplitKind::LastWeek, target_days)?;
    let (second, models) = match &set.second {
        Some(s) => match fit_second_stage(ds, &split, target_days, set, s)? {
            Some((stage, models)) => (Some(stage), models),
            None => (None, Vec::new()),
        },
        None => (None, Vec::new()),
    };
    let blender = second.as_ref().and_then(|s| s.blender.clone());
    let rate = second.as_ref().map_or(1.0, |s| s.negative_rate);
    let targets = Targets::from_rows(ds, &split.test);
    let start = split.test.iter().map(|&r| ds.day(r)).min().unwrap_or(0);
    let r = Ranker::new(ds, start, set)?;
    if let Some(dir) = set.bundle {
        let trees = second
            .as_ref()
            .filter(|s| !s.models.is_empty())
            .map(|s| (s.text.as_str(), s.negative_rate));
        let validation = second
            .as_ref()
            .and_then(|s| s.models.first())
            .filter(|_| trees.is_some())
            .map(|m| bundle::Validation {
                map_at_12: m.valid_map,
                revenue_per_impression: m.valid_revenue_per_impression,
            });
        let served = ServedStage {
            trees,
            blender: blender.as_ref(),
        };
        r.write_bundle(dir, set, served, validation)?;
    }
    let objective = set.objective;
    let mut scorers: Vec<(System, Scorer)> = models
        .iter()
        .map(|(s, m)| (*s, Scorer::Trees(&m.trees, rate)))
        .collect();
    if let Some(b) = &blender {
        scorers.push((System::Blend, Scorer::Blender(b)));
    }
    scorers.push((System::Score, Scorer::Score));
    let mut picks: Vec<Vec<Vec<u32>>> = vec![Vec::with_capacity(targets.len()); scorers.len()];
    let mut full = Vec::with_capacity(targets.len());
    let mut cands: Vec<List> = Vec::with_capacity(targets.len());
    let mut progress = Counter::new("ranking: test customers", targets.users.len());
    for chunk in targets.users.chunks(CHUNK) {
        let prepared = r.prepare(chunk, true)?;
        for (s, (_, scorer)) in scorers.iter().enumerate() {
            let lists: Vec<Vec<u32>> = prepared.par_iter().map(|p| r.order(p, *scorer)).collect();
            picks[s].extend(lists);
        }
        for p in prepared {
            full.push(if p.has_query {
                p.full
            } else {
                r.engine.ordering.popular().to_vec()
            });
            cands.push(p.candidates);
        }
        progress.add(chunk.len());
    }
    progress.finish();
    let served_system = second
        .as_ref()
        .filter(|s| !s.models.is_empty())
        .map(|s| System::Trees(s.served))
        .or(blender.as_ref().map(|_| System::Blend))
        .unwrap_or(System::Score);
    let served_at = scorers
        .iter()
        .position(|(s, _)| *s == served_system)
        .expect("the served system is one of the scorers");
    let served_lists = targets
        .users
        .iter()
        .zip(&picks[served_at])
        .map(|(&u, l)| {
            let articles = l.iter().map(|&i| ds.items.ids[i as usize].clone());
            (ds.users.ids[u as usize].clone(), articles.collect())
        })
        .collect();
    let n_items = ds.items.len();
    let ids: Vec<String> = targets
        .users
        .iter()
        .map(|&u| ds.users.ids[u as usize].clone())
        .collect();
    let mut rows = Vec::new();
    let mut per = Vec::new();
    let mut systems = Vec::new();
    let mut add = |system: System, name: String, picks: Vec<Vec<u32>>| {
        systems.push(system);
        let metrics: Vec<Metrics> = vec![score(&targets, &picks, n_items)];
        per.push(PerCustomer::score(
            &name,
            K,
            ids.clone(),
            &targets.truth,
            &picks,
        ));
        rows.push(crate::eval::report::Row { name, metrics });
    };
    let name = r.engine.ranker.engine.bundle.manifest.name.clone();
    for ((system, _), lists) in scorers.iter().zip(picks) {
        let label = match system {
            System::Trees(o) => format!("candidates ranked by {} trees ({objective:?})", o.name()),
            System::TreesWithout(g) => {
                format!("… trees without the {} features ({objective:?})", g.name())
            }
            System::Blend => format!(
                "candidates ranked by the logistic blender on {name} + candidate features ({objective:?})"
            ),
            System::Score => format!("candidates ranked by {name} score ({objective:?})"),
            _ => unreachable!("only scorers here"),
        };
        add(*system, label, lists);
    }
    add(
        System::WholeCatalogue,
        format!("{name} over the whole catalogue"),
        full,
    );
    for kind in Kind::ALL {
        let picks = targets
            .users
            .iter()
            .map(|&u| {
                let mut out = Vec::new();
                r.fitted().recommend(kind, u, K, &mut out);
                out
            })
            .collect();
        add(System::Baseline(kind), kind.name().to_string(), picks);
    }
    let table = Table {
        title: format!("Ranking candidates on {}", ds.meta.name),
        dataset: ds.meta.name.clone(),
        protocol: protocol(set, target_days, targets.len(), second.as_ref()),
        rows,
        has_price: ds.meta.has_price,
        notes: String::new(),
        extra: serde_json::Value::Null,
    };
    Ok(TestPeriod {
        table,
        per_customer: per,
        candidates: crate::rank::candidates::recall(&targets, &cands, set.candidates),
        second,
        systems,
        served_lists,
    })
}

/// How the test-period table was made, for its protocol line.
fn protocol(
    set: &RankSettings,
    target_days: u32,
    buyers: usize,
    second: Option<&SecondStage>,
) -> String {
    let (objective, alpha) = (set.objective, set.alpha);
    let mut s = format!(
        "Last-week split: everything before the last {target_days} days is history (sources and features from it, \
customers served as of the period's first day); {buyers} buyers in the period. Candidates: `{}`{}. Objective {objective:?}{}. \
SASRec's score and the blender leave customers without history in the candidates' own order (popularity first).",
        serde_json::to_string(set.candidates).expect("config serialises"),
        set.retrieval
            .map(|b| format!(", two-tower model from `{}`", b.display()))
            .unwrap_or_default(),
        if objective == Objective::Revenue {
            format!(" (ln P(purchase) + {alpha} · ln price)")
        } else {
            String::new()
        },
    );
    if let Some(st) = second {
        s += &format!(
            " The second stage trains on the candidates of {} week(s) before the validation week (weeks starting on days {:?}, \
the last the validation week), each as of its first day: {} rows of {} customers, {} bought (negatives sampled at {:.3}). \
Trees are early-stopped on the validation week's MAP@12 and the served model chosen on its {}; the logistic blender is fitted \
on the same rows.",
            st.weeks,
            st.week_starts,
            st.train_rows,
            st.train_customers,
            st.train_positives,
            st.negative_rate,
            // What `second_stage` chooses by: the objective's own measure.
            match objective {
                Objective::Purchase => "MAP@12",
                Objective::Revenue => "revenue per impression",
            }
        );
    }
    s
}

impl SecondStage {
    /// The report's section: the models chosen on validation, the feature
    /// importance and the feature registry.
    pub fn markdown(&self) -> String {
        let mut s = String::from(
            "Every model trained, with its validation-week MAP@12 and revenue per impression (exact, as the table \
above scores the test week); the first is served.\n\n| model | rounds | valid MAP@12 | valid RevPerImp@12 |\n|---|---:|---:|---:|\n",
        );
        for m in &self.models {
            s += &format!(
                "| {} trees{} | {} | {:.4} | {:.4} |\n",
                m.objective.name(),
                m.without
                    .as_ref()
                    .map(|g| format!(" without {g} features"))
                    .unwrap_or_default(),
                m.rounds,
                m.valid_map,
                m.valid_revenue_per_impression
            );
        }
        s += "\n### Feature importance (served trees, share of total split gain)\n\n| feature | gain share | group | what it is |\n|---|---:|---|---|\n";
        for (name, share) in &self.importance {
            let f = Feature::ALL
                .iter()
                .find(|f| f.name() == name)
                .expect("importance names come from the registry");
            s += &format!(
                "| `{name}` | {share:.4} | {} | {} |\n",
                f.group().name(),
                f.doc()
            );
        }
        s
    }
}

/// The second stage retrained for the submission: on the `weeks` weeks
/// that end with the data, with the rounds and objective chosen on
/// validation.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Refit {
    /// The served trees (LightGBM's format); empty when only the blender
    /// was trained.
    #[serde(skip)]
    pub text: String,
    pub negative_rate: f64,
    pub rounds: u32,
    pub train_rows: usize,
    pub week_starts: Vec<i64>,
    pub blender: Option<Blender>,
}

/// Retrains `stage` on the latest weeks, as of each week's first day with
/// the models of `set`. Those models must have been trained before the
/// first of those weeks (the evaluation's models are: their data ends
/// `weeks` weeks before the test week ends), so no feature comes from a
/// model fitted on its label; the submission then serves the trees with
/// the refit models' fresher scores.
pub fn refit_second_stage(
    ds: &Dataset,
    target_days: u32,
    set: &RankSettings,
    second: &SecondSettings,
    stage: &SecondStage,
) -> Result<Refit> {
    let end = crate::data::split::last_day(ds).unwrap_or(0) + 1;
    let (rows, week_starts) = collect_weeks(
        ds,
        set,
        end,
        target_days,
        stage.weeks,
        second.trees.negatives,
        second.seed ^ REFIT,
    )?;
    let served = stage.models.first();
    let (text, rounds) = match served {
        Some(m) => {
            let t = gbdt::train_rounds(
                &rows.trees,
                second.trees,
                m.objective,
                m.rounds,
                second.seed,
            )?;
            (t.text, m.rounds)
        }
        None => (String::new(), 0),
    };
    let blender = match &stage.blender {
        Some(_) => Some(blend::fit(
            &rows.blend_x,
            &rows.blend_y,
            rows.trees.negative_rate,
            second.blend.l2,
        )?),
        None => None,
    };
    Ok(Refit {
        text,
        negative_rate: rows.trees.negative_rate,
        rounds,
        train_rows: rows.trees.len(),
        week_starts,
        blender,
    })
}

/// What `second-stage-rows-*/summary.json` says beside the rows.
#[derive(Serialize)]
struct RowsSummary {
    /// Validation buyers, with or without a bought candidate (the exact
    /// MAP@12's denominator; `valid.parquet` holds those with one).
    valid_customers: usize,
    week_starts: Vec<i64>,
    negative_rate: f64,
    /// Each trained model's exact validation metrics.
    models: Vec<TreeSummary>,
    /// SASRec's score ordering's, to check a metric computed from the rows.
    score_valid_map: f64,
}

/// Writes the second stage's rows as Parquet: `train.parquet` (the sampled
/// training weeks) and `valid.parquet` (every candidate of the validation
/// customers with a bought one), one column per feature by its registry
/// name plus `customer` (its index in the file), `label`, and `week` (the
/// week's first day) or `truth_items` (the customer's distinct purchases)
/// and `has_query`; and `summary.json`. The directory is swapped in whole.
fn write_rows(
    dir: &Path,
    train: &Collected,
    valid: &RowSet,
    valid_truth: &[crate::eval::Truth],
    has_query: &[bool],
    summary: &RowsSummary,
) -> Result<()> {
    use polars::prelude::{Column, DataFrame, ParquetWriter};
    let out = crate::util::fsutil::AtomicDir::create(dir)?;
    let per_row = |groups: &[i32], each: &dyn Fn(usize) -> i64| -> Vec<i64> {
        groups
            .iter()
            .enumerate()
            .flat_map(|(g, &n)| std::iter::repeat_n(each(g), n as usize))
            .collect()
    };
    let write = |name: &str, rows: &RowSet, extra: Vec<Column>| -> Result<()> {
        let path = out.path().join(name);
        let pq = |e| Error::Parquet {
            file: path.clone(),
            source: e,
        };
        let mut cols = vec![
            Column::new("customer".into(), per_row(&rows.groups, &|g| g as i64)),
            Column::new("label".into(), rows.y.clone()),
        ];
        cols.extend(extra);
        for f in Feature::ALL {
            let v: Vec<f32> = rows
                .x
                .iter()
                .skip(f.slot())
                .step_by(features::N)
                .copied()
                .collect();
            cols.push(Column::new(f.name().into(), v));
        }
        let mut df = DataFrame::new(rows.len(), cols).map_err(pq)?;
        let file = std::fs::File::create(&path).map_err(|e| Error::io(&path, e))?;
        ParquetWriter::new(file).finish(&mut df).map_err(pq)?;
        Ok(())
    };
    let week_of = |g: usize| {
        let w = train.week_ends.partition_point(|&end| end <= g);
        summary.week_starts.get(w).copied().unwrap_or(-1)
    };
    write(
        "train.parquet",
        &train.trees,
        vec![Column::new(
            "week".into(),
            per_row(&train.trees.groups, &week_of),
        )],
    )?;
    write(
        "valid.parquet",
        valid,
        vec![
            Column::new(
                "truth_items".into(),
                per_row(&valid.groups, &|g| valid_truth[g].items.len() as i64),
            ),
            Column::new(
                "has_query".into(),
                per_row(&valid.groups, &|g| i64::from(has_query[g])),
            ),
        ],
    )?;
    let json = serde_json::to_vec_pretty(summary).expect("summary serialises");
    std::fs::write(out.path().join("summary.json"), json)
        .map_err(|e| Error::io(out.path().join("summary.json"), e))?;
    out.commit()
}

/// Stream id of the refit's negative sampling.
const REFIT: u64 = 0x7265_6669_7400;
