//! `recforge run PIPELINE.toml`: the whole job from one config. Data
//! (generated or raw) → cache → baselines → two-tower training and export
//! → ranker training and export → candidates ranked on the test week
//! (beside every baseline, with an A/B against the best one) → submission.
//!
//! Every step records a content hash of its inputs (its own settings and
//! the hashes of the steps it reads) in `RUN/steps/NAME.json`. A step whose
//! hash is unchanged is reused, not rerun: changing the ranker's settings
//! retrains the ranker and what follows it, never the retrieval model.

pub mod commands;
mod report;
pub mod runs;
pub mod seeds;
mod steps;
pub mod sweep;

use rayon::prelude::*;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::experiment::{Experiment, ModelKind};
use crate::data::Dataset;
use crate::data::split::SplitKind;
use crate::error::{Error, Result};
use crate::rank::blend::{BlendConfig, Blender};
use crate::rank::candidates::{CandidateConfig, RecallReport};
use crate::rank::gbdt::TreeConfig;
use crate::rank::{Objective, Ranker, Scorer, SecondStage};
pub use steps::StepReport;
use steps::{Steps, hash, hash_dir};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PipelineConfig {
    /// Names the run directory (`runs/NAME`) and the models' runs; two
    /// configs with the same name share (and reuse) their steps.
    pub name: String,
    /// Report directory name under `experiments/results/` (default: name).
    pub report: Option<String>,
    pub data: PipelineData,
    pub retrieval: Stage,
    pub ranker: Stage,
    pub candidates: CandidateConfig,
    pub objective: ObjectiveConfig,
    /// Write the submission for the week after the data.
    pub submission: bool,
    /// The pipeline's own random choices (the blender's negative sampling,
    /// the A/B bootstrap); the models' seeds are in their experiments.
    pub seed: u64,
    /// The logistic blender (the trees' linear ablation; served when the
    /// trees are off).
    pub blend: BlendConfig,
    /// The second stage: gradient-boosted trees over the candidate
    /// features, trained on the weeks before the validation week.
    pub trees: TreeConfig,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            name: "pipeline".into(),
            report: None,
            data: PipelineData::default(),
            retrieval: Stage::default(),
            ranker: Stage::default(),
            candidates: CandidateConfig::default(),
            objective: ObjectiveConfig::default(),
            submission: true,
            seed: 42,
            blend: BlendConfig::default(),
            trees: TreeConfig::default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct PipelineData {
    /// A directory of raw H&M files.
    pub raw: Option<PathBuf>,
    /// Or a generator config (`datasets/*.toml`): the data is generated
    /// into the run directory.
    pub synth: Option<PathBuf>,
    /// Length of the validation and test weeks.
    pub target_days: Option<u32>,
}

/// A model stage: an experiment file and overrides of its keys.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct Stage {
    pub experiment: PathBuf,
    pub set: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ObjectiveConfig {
    pub kind: Objective,
    /// Revenue: rank by score + alpha · ln(price).
    pub alpha: f64,
}

impl Default for ObjectiveConfig {
    fn default() -> Self {
        ObjectiveConfig {
            kind: Objective::Purchase,
            alpha: 1.0,
        }
    }
}

impl PipelineConfig {
    pub fn load(path: &Path) -> Result<Self> {
        Self::load_with(path, &[], None)
    }

    /// Reads `path` with `KEY=VALUE` overrides applied to its TOML (as
    /// `train --set` does, e.g. `trees.rounds=50`); `ranker:KEY=VALUE` and
    /// `retrieval:KEY=VALUE` are added to that model's experiment
    /// overrides (after the file's own). `device`, when given, is set in
    /// both models' experiments.
    pub fn load_with(
        path: &Path,
        overrides: &[String],
        device: Option<crate::config::device::DeviceChoice>,
    ) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let named = |e: String| Error::Config(format!("{}: {e}", path.display()));
        let mut tree: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| named(e.to_string()))?;
        let mut staged = Vec::new();
        for o in overrides {
            match o.split_once(':') {
                Some((stage @ ("ranker" | "retrieval"), rest)) => staged.push((stage, rest)),
                _ => crate::config::experiment::apply_override(&mut tree, o)
                    .map_err(|e| named(e.to_string()))?,
            }
        }
        let mut cfg: PipelineConfig = toml::Value::Table(tree)
            .try_into()
            .map_err(|e: toml::de::Error| named(e.to_string()))?;
        for (stage, o) in staged {
            let s = if stage == "ranker" {
                &mut cfg.ranker
            } else {
                &mut cfg.retrieval
            };
            s.set.push(o.to_string());
        }
        if let Some(d) = device {
            let v = toml::Value::try_from(d).map_err(|e| named(e.to_string()))?;
            for stage in [&mut cfg.retrieval, &mut cfg.ranker] {
                stage.set.push(format!("device={v}"));
            }
        }
        if cfg.data.raw.is_some() == cfg.data.synth.is_some() {
            return Err(Error::Config(format!(
                "{}: give exactly one of data.raw (raw H&M files) and data.synth (a generator config)",
                path.display()
            )));
        }
        Ok(cfg)
    }

    fn target_days(&self) -> u32 {
        self.data.target_days.unwrap_or(7)
    }

    /// Whether a second stage is trained (trees or the blender).
    fn has_second_stage(&self) -> bool {
        self.trees.enabled || self.blend.enabled
    }

    /// Days at the end of the data the model stages never see: the second
    /// stage's training weeks, the validation week and the test week lie
    /// there, less the one week the models early-stop on (the first
    /// training week), so no feature the second stage learns from comes
    /// from a model fitted on its label.
    fn holdout_days(&self) -> u32 {
        if self.has_second_stage() {
            self.target_days() * self.trees.weeks.max(1)
        } else {
            0
        }
    }
}

/// What the rank step keeps for the submission step and the charts.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct RankValue {
    /// MAP@12 of the pipeline's ranking on the test week.
    map: f64,
    /// The second stage (its served trees are in
    /// `RUN/second-stage-REPORT.txt`).
    second: Option<SecondStage>,
    /// Recall of the candidates it ranked, by source.
    candidates: RecallReport,
}

/// The outcome of a pipeline run.
#[derive(Debug, Clone, Serialize)]
pub struct PipelineOutcome {
    pub run_dir: PathBuf,
    pub steps: Vec<StepReport>,
    pub report: PathBuf,
    pub submission: Option<PathBuf>,
    /// The pipeline's ranking's per-customer metrics on the test week.
    pub per_customer: PathBuf,
}

/// The pipeline's two model stages.
#[derive(Debug, Clone, Copy)]
enum ModelStage {
    /// The two-tower model (candidate source).
    Retrieval,
    /// SASRec (scores the candidates).
    Ranker,
}

impl ModelStage {
    /// Its name in the run directory, the step records and the report.
    fn label(self) -> &'static str {
        match self {
            ModelStage::Retrieval => "retrieval",
            ModelStage::Ranker => "ranker",
        }
    }

    fn kind(self) -> ModelKind {
        match self {
            ModelStage::Retrieval => ModelKind::TwoTower,
            ModelStage::Ranker => ModelKind::Sasrec,
        }
    }

    fn stage(self, cfg: &PipelineConfig) -> &Stage {
        match self {
            ModelStage::Retrieval => &cfg.retrieval,
            ModelStage::Ranker => &cfg.ranker,
        }
    }
}

/// A model stage's resolved experiment: its file and overrides, with the
/// run's cache and directories.
fn stage_experiment(cfg: &PipelineConfig, which: ModelStage, cache: &Path) -> Result<Experiment> {
    let (stage, kind, target_days) = (which.stage(cfg), which.kind(), cfg.target_days());
    let name = format!("{}-{}", cfg.name, which.label());
    let mut set = stage.set.clone();
    set.push(format!("data.cache=\"{}\"", cache.display()));
    set.push(format!("name=\"{name}\""));
    // The pipeline owns the models' cut-off (see `holdout_days`).
    set.push(format!("data.holdout_days={}", cfg.holdout_days()));
    let exp = Experiment::load(&stage.experiment, &set)?;
    if exp.model.kind != kind {
        return Err(Error::Config(format!(
            "{}: expected a {kind:?} experiment, found {:?}",
            stage.experiment.display(),
            exp.model.kind
        )));
    }
    // The pipeline scores the last `target_days` and fits its second stage
    // on the days before: a model trained on another split would have
    // seen them.
    if exp.data.split != SplitKind::LastWeek || exp.data.target_days != target_days {
        return Err(Error::Config(format!(
            "{}: the pipeline evaluates on the last {target_days} days, so its model stages must train with \
data.split = \"last-week\" and data.target_days = {target_days} (this one has `{}` and {}); set them in the file or in the stage's `set`",
            stage.experiment.display(),
            exp.data.split.name(),
            exp.data.target_days
        )));
    }
    Ok(exp)
}

/// The submission's version of an evaluated model stage: trained on every
/// row up to the last day, for the epochs its evaluation chose on
/// validation (read from the evaluated run's selected checkpoint).
fn refit_experiment(exp: &Experiment, run_dir: &Path, which: ModelStage) -> Result<Experiment> {
    let best = run_dir.join(which.label()).join("best");
    let epochs = crate::train::checkpoint::read_state(&best)?
        .best_epoch
        .ok_or_else(|| {
            Error::Data(format!(
                "{}: no selected epoch to refit with",
                best.display()
            ))
        })?;
    let mut refit = exp.clone();
    refit.name = format!("{}-refit", exp.name);
    refit.data.refit = true;
    refit.data.holdout_days = 0;
    refit.train.epochs = epochs;
    refit.train.min_steps = 0;
    refit.train.patience = 0;
    refit.train.time_budget_s = 0.0;
    // Its validation is in-sample: evaluated once, at the end, for the log.
    refit.eval.every = epochs;
    Ok(refit)
}

/// The step of one model stage (retrieval or ranker, or its refit): its
/// resolved experiment, its bundle, and the bundle's hash.
fn model_stage(
    steps: &mut Steps,
    run_dir: &Path,
    data_hash: &str,
    exp: &Experiment,
    which: ModelStage,
) -> Result<(PathBuf, String)> {
    let label = if exp.data.refit {
        format!("{}-refit", which.label())
    } else {
        which.label().to_string()
    };
    let label = label.as_str();
    let bundle = run_dir.join("models").join(label);
    let toml = exp.to_toml();
    let mut parts = vec![label, data_hash, toml.as_str()];
    // Sampled-softmax models trained before the loss stopped correcting
    // the positive are retrained, not reused (other models' hashes are
    // unchanged).
    if exp.loss.kind == crate::config::experiment::LossKind::Sampled {
        parts.push("sampled softmax: negatives-only logQ");
    }
    let h = steps.run(label, &hash(&parts), &[&bundle], || {
        train_and_export(exp, &run_dir.join(label), &bundle)
    })?;
    Ok((bundle, h))
}

/// Trains (fresh) and exports one model stage; returns the bundle's hash.
fn train_and_export(exp: &Experiment, run: &Path, bundle: &Path) -> Result<String> {
    if run.exists() {
        std::fs::remove_dir_all(run).map_err(|e| Error::io(run, e))?;
    }
    crate::train::train(
        exp,
        &crate::train::TrainOptions {
            run_dir: run.to_path_buf(),
            progress: true,
            ..Default::default()
        },
    )?;
    Ok(crate::export::export(run, bundle)?.sha256)
}

/// `recforge run`: every step in flow order, each reused when its inputs
/// are unchanged; writes the results table, the stages report and the
/// charts under `report_dir`.
// The wiring of the steps in flow order, each a call; their work is in
// the functions below and in the stages they call.
pub fn run(cfg: &PipelineConfig, run_dir: &Path, report_dir: &Path) -> Result<PipelineOutcome> {
    std::fs::create_dir_all(run_dir.join("steps")).map_err(|e| Error::io(run_dir, e))?;
    let mut steps = Steps {
        dir: run_dir.join("steps"),
        reports: Vec::new(),
    };
    let cache = run_dir.join("cache");
    let td = cfg.target_days();
    // Both stages' experiments are checked before anything runs.
    let tt_exp = stage_experiment(cfg, ModelStage::Retrieval, &cache)?;
    let rk_exp = stage_experiment(cfg, ModelStage::Ranker, &cache)?;
    let data_hash = data_step(&mut steps, cfg, run_dir, &cache)?;
    let ds = crate::data::cache::read(&cache)?;
    baselines_step(&mut steps, &ds, &data_hash, td, report_dir)?;
    let (tt_bundle, tt_hash) = model_stage(
        &mut steps,
        run_dir,
        &data_hash,
        &tt_exp,
        ModelStage::Retrieval,
    )?;
    let (rk_bundle, rk_hash) =
        model_stage(&mut steps, run_dir, &data_hash, &rk_exp, ModelStage::Ranker)?;

    let serve_cfg = serde_json::to_string(&(
        &cfg.candidates,
        &cfg.objective,
        &cfg.blend,
        &cfg.trees,
        cfg.seed,
    ))
    .expect("serialises");
    let rank_hash = hash(&[
        "rank",
        &data_hash,
        &tt_hash,
        &rk_hash,
        &serve_cfg,
        &td.to_string(),
    ]);
    // Configs sharing a name share trained models, but each report has its
    // own ranking and submission.
    let report_name = cfg.report.clone().unwrap_or_else(|| cfg.name.clone());
    let results = report_dir.join("results.md");
    // The pipeline's per-customer metrics, for `recforge compare` against
    // another run on the same data (another objective, other settings).
    let per_customer = run_dir.join(format!("per-customer-{report_name}.json"));
    let trees_file = run_dir.join(format!("second-stage-{report_name}.txt"));
    let rows_dir = run_dir.join(format!("second-stage-rows-{report_name}"));
    // The system the report measures, as `recforge submit` and the server
    // load it.
    let ranking_bundle = run_dir.join(format!("ranking-{report_name}"));
    // Its list of each test-week customer, in the submission format.
    let served_lists = run_dir.join(format!("served-{report_name}.csv"));
    let settings = crate::rank::RankSettings {
        candidates: &cfg.candidates,
        retrieval: Some(tt_bundle.as_path()),
        ranker: &rk_bundle,
        objective: cfg.objective.kind,
        alpha: cfg.objective.alpha,
        second: cfg
            .has_second_stage()
            .then_some(crate::rank::SecondSettings {
                blend: &cfg.blend,
                trees: &cfg.trees,
                seed: cfg.seed,
                rows_out: cfg.trees.export_rows.then_some(rows_dir.as_path()),
            }),
        bundle: Some(ranking_bundle.as_path()),
    };
    let ranked = steps.run(
        &format!("rank-{report_name}"),
        &rank_hash,
        &[&results, &per_customer, &ranking_bundle, &served_lists],
        || {
            let tp = crate::rank::rank_test_period(&ds, td, &settings)?;
            write_lists(&served_lists, &tp.served_lists)?;
            rank_report(&tp, cfg.seed, report_dir, &per_customer, &trees_file)
        },
    )?;

    let submission = if cfg.submission {
        // The submission's models: refit on every row up to the last day
        // with the epochs chosen on validation, and the second stage
        // retrained on the latest weeks with the rounds chosen on it.
        let mut refits = Vec::new();
        for (which, exp) in [
            (ModelStage::Retrieval, &tt_exp),
            (ModelStage::Ranker, &rk_exp),
        ] {
            let refit = refit_experiment(exp, run_dir, which)?;
            refits.push(model_stage(&mut steps, run_dir, &data_hash, &refit, which)?);
        }
        let refit_hash = hash(&["refit", &rank_hash, &refits[0].1, &refits[1].1]);
        let refit_trees = run_dir.join(format!("second-stage-{report_name}-refit.txt"));
        let trees_output = [refit_trees.as_path()];
        let second = match (&ranked.second, &settings.second) {
            (Some(stage), Some(s)) => Some(steps.run(
                &format!("second-stage-refit-{report_name}"),
                &hash(&["second-stage-refit", &refit_hash]),
                // The blender alone writes no trees.
                if stage.models.is_empty() {
                    &[]
                } else {
                    &trees_output
                },
                || {
                    let r = crate::rank::refit_second_stage(&ds, td, &settings, s, stage)?;
                    if !r.text.is_empty() {
                        crate::util::fsutil::write_atomic(&refit_trees, r.text.as_bytes())?;
                    }
                    Ok(r)
                },
            )?),
            _ => None,
        };
        let refit_settings = crate::rank::RankSettings {
            retrieval: Some(refits[0].0.as_path()),
            ranker: refits[1].0.as_path(),
            second: None,
            bundle: None,
            ..settings
        };
        let path = run_dir.join(format!("submission-{report_name}.csv"));
        let refit_bundle = run_dir.join(format!("ranking-{report_name}-refit"));
        let scorer = SubmissionScorer {
            trees: second
                .as_ref()
                .filter(|r| r.rounds > 0)
                .map(|_| refit_trees.clone()),
            refit: second,
        };
        steps.run(
            &format!("submission-{report_name}"),
            &hash(&["submission", &refit_hash]),
            &[&path, &refit_bundle],
            || submission(&ds, &refit_settings, &scorer, &path, &refit_bundle),
        )?;
        Some(path)
    } else {
        None
    };

    let report = report_dir.join("stages.md");
    let mut stages = report::stages_markdown(&steps.reports);
    let checks = [
        report::model_check("retrieval", &tt_exp, &run_dir.join("retrieval"))?,
        report::model_check("ranker", &rk_exp, &run_dir.join("ranker"))?,
    ];
    for c in checks.iter().filter(|c| !c.beats_popularity()) {
        eprintln!(
            "warning: the {} model does not beat popularity on validation ({} {:.4} against {:.4})",
            c.stage, c.metric, c.model, c.popular
        );
    }
    stages += &report::checks_markdown(&checks);
    crate::util::fsutil::write_atomic(&report, stages.as_bytes())?;
    report::plots(
        run_dir,
        report_dir,
        [("retrieval", &tt_exp), ("ranker", &rk_exp)],
        &ranked.candidates,
    )?;
    Ok(PipelineOutcome {
        run_dir: run_dir.to_path_buf(),
        steps: steps.reports,
        report,
        submission,
        per_customer,
    })
}

/// The data step: generated (or raw) files validated into `cache`; returns
/// the cache's content hash.
fn data_step(
    steps: &mut Steps,
    cfg: &PipelineConfig,
    run_dir: &Path,
    cache: &Path,
) -> Result<String> {
    let (source_hash, raw) = match (&cfg.data.synth, &cfg.data.raw) {
        (Some(s), _) => {
            let text = std::fs::read_to_string(s).map_err(|e| Error::io(s, e))?;
            // The directory's name becomes the dataset's name in reports.
            let stem = s.file_stem().map(|n| n.to_string_lossy().into_owned());
            let dir = run_dir.join(stem.unwrap_or_else(|| "data".into()));
            (hash(&["synth", &text, &dir.to_string_lossy()]), dir)
        }
        (None, Some(r)) => (hash(&["raw", &hash_dir(r)?]), r.clone()),
        (None, None) => return Err(Error::Config("no data.raw or data.synth".into())),
    };
    steps.run("data", &hash(&["data", &source_hash]), &[cache], || {
        if let Some(s) = &cfg.data.synth {
            let sc = crate::ingest::synth::SynthConfig::from_toml_file(s)?;
            crate::ingest::synth::generate(&sc, &raw)?;
        }
        commands::prepare(&raw, cache, crate::ingest::Format::Hm)?;
        hash_dir(cache)
    })
}

/// The baselines' table on the test week, in the report directory.
fn baselines_step(
    steps: &mut Steps,
    ds: &Dataset,
    data_hash: &str,
    td: u32,
    report_dir: &Path,
) -> Result<()> {
    let baseline_hash = hash(&["baselines", data_hash, &td.to_string()]);
    let baseline_file = report_dir.join(format!("baselines-{}-last-week.md", ds.meta.name));
    steps.run("baselines", &baseline_hash, &[&baseline_file], || {
        let out = commands::run_baselines(
            ds,
            &commands::BaselineOptions {
                split: crate::data::split::SplitKind::LastWeek,
                target_days: td,
                ks: vec![12],
                params: crate::eval::baselines::Params::default(),
                results_dir: report_dir.to_path_buf(),
                submission: None,
            },
        )?;
        Ok(out.best.name().to_string())
    })?;
    Ok(())
}

/// The rank step's report: the test-period table with the candidate
/// sources, the A/B of what is served against the best baseline and, with
/// a second stage, its models, feature importance and A/Bs against the
/// logistic blender and the score alone; the served ranking's per-customer
/// metrics; and the served trees in `trees_file`.
/// Writes `(customer, articles)` lists as a submission-format CSV.
fn write_lists(path: &Path, lists: &[(String, Vec<String>)]) -> Result<()> {
    let mut text = String::from("customer_id,prediction\n");
    for (c, l) in lists {
        text += &format!("{c},{}\n", l.join(" "));
    }
    crate::util::fsutil::write_atomic(path, text.as_bytes())
}

/// The figure comparable with the competition's: the served ranking's
/// MAP@12 as a multiple of the best baseline's and of recent-popular's
/// (the competition's top-popular baseline; 1st place scored about 1.75×
/// it on the real leaderboard, `shared/notes/anchors.md`).
fn headline(t: &crate::eval::report::Table, served: usize, best: usize) -> String {
    let map = |r: usize| t.rows[r].metrics[0].map;
    let (x, b) = (map(served), map(best));
    let recent = t
        .rows
        .iter()
        .position(|r| r.name == crate::eval::baselines::Kind::RecentPopular.name());
    let mut s = format!(
        "## Headline\n\nServed ranking: MAP@12 {x:.4}, **{:.2}× the best baseline** ({} {b:.4})",
        x / b,
        t.rows[best].name
    );
    if let Some(r) = recent {
        s += &format!(
            " and {:.2}× recent-popular ({:.4}), the competition's top-popular baseline \
(on the real leaderboard 1st place scored about 1.75× it)",
            x / map(r),
            map(r)
        );
    }
    s + ".\n\n"
}

fn rank_report(
    tp: &crate::rank::TestPeriod,
    seed: u64,
    report_dir: &Path,
    per_customer: &Path,
    trees_file: &Path,
) -> Result<RankValue> {
    use crate::rank::System;
    let (served, best) = (tp.served(), tp.best_baseline());
    let per = &tp.per_customer;
    let ab = crate::eval::compare::compare(&per[best], &per[served], 2000, seed)?;
    let mut t = tp.table.clone();
    let sources = &tp.candidates;
    t.notes = format!(
        "{}## Candidate sources\n\n{}\n## A/B against the best baseline\n\n{}",
        headline(&t, served, best),
        sources.markdown(),
        ab.markdown().replacen("# ", "### ", 1)
    );
    // The served system against each simpler second stage it replaces.
    let mut abs = serde_json::Map::new();
    for (other, title) in [
        (System::Blend, "the logistic blender"),
        (System::Score, "the ranker's score alone"),
    ] {
        if let Some(row) = tp.row(other)
            && row != served
        {
            let c = crate::eval::compare::compare(&per[row], &per[served], 2000, seed)?;
            t.notes += &format!(
                "\n## A/B: {title} (A) against the served ranking (B)\n\n{}",
                c.markdown().replacen("# ", "### ", 1)
            );
            abs.insert(
                format!("{other:?}"),
                serde_json::to_value(&c).expect("serialises"),
            );
        }
    }
    // The sequential ranker alone against popularity: does the model, with
    // no candidates or second stage, learn anything on this data?
    if let (Some(full), Some(popular)) = (
        tp.row(System::WholeCatalogue),
        tp.row(System::Baseline(crate::eval::baselines::Kind::Popular)),
    ) {
        let c = crate::eval::compare::compare(&per[popular], &per[full], 2000, seed)?;
        t.notes += &format!(
            "\n## A/B: popular (A) against the ranker alone over the whole catalogue (B)\n\n{}",
            c.markdown().replacen("# ", "### ", 1)
        );
        abs.insert(
            "ranker_alone_vs_popular".into(),
            serde_json::to_value(&c).expect("serialises"),
        );
    }
    if let Some(st) = &tp.second {
        if !st.models.is_empty() {
            t.notes += &format!("\n## The second stage\n\n{}", st.markdown());
            crate::util::fsutil::write_atomic(trees_file, st.text.as_bytes())?;
        }
        if let Some(b) = &st.blender {
            t.notes += &format!("\n## The logistic blender\n\n{}", b.markdown());
        }
    }
    t.extra = serde_json::json!({
        "candidates": sources,
        "ab": ab,
        "ab_served_against": abs,
        "second_stage": tp.second,
    });
    std::fs::create_dir_all(report_dir).map_err(|e| Error::io(report_dir, e))?;
    t.write(report_dir, "results")?;
    per[served].write(per_customer)?;
    Ok(RankValue {
        map: t.rows[served].metrics[0].map,
        second: tp.second.clone(),
        candidates: sources.clone(),
    })
}

/// What orders the submission's candidates: the refit second stage.
struct SubmissionScorer {
    /// The refit trees' file, when trees were trained.
    trees: Option<PathBuf>,
    refit: Option<crate::rank::Refit>,
}

/// The submission for the week after the data: candidates of every
/// customer as of the day after the last, from the refit models, ordered
/// by the refit second stage (the trees, else the blender, else the
/// ranker's score). Returns the rows written.
fn submission(
    ds: &Dataset,
    settings: &crate::rank::RankSettings,
    scorer: &SubmissionScorer,
    path: &Path,
    bundle: &Path,
) -> Result<usize> {
    let end = crate::data::split::last_day(ds).unwrap_or(0);
    let ranker = Ranker::new(ds, end + 1, settings)?;
    // Read back from the file: a reused refit step does not carry the text.
    let text = match &scorer.trees {
        Some(f) => Some(std::fs::read_to_string(f).map_err(|e| Error::io(f, e))?),
        None => None,
    };
    let trees = match &text {
        Some(t) => Some(
            recforge_infer::trees::Trees::parse(t)
                .map_err(|e| Error::invalid(scorer.trees.as_deref().unwrap_or(path), e))?,
        ),
        None => None,
    };
    let blender: Option<&Blender> = scorer.refit.as_ref().and_then(|r| r.blender.as_ref());
    let rate = scorer.refit.as_ref().map_or(1.0, |r| r.negative_rate);
    let order = match (&trees, blender) {
        (Some(t), _) => Scorer::Trees(t, rate),
        (None, Some(b)) => Scorer::Blender(b),
        (None, None) => Scorer::Score,
    };
    let served = crate::rank::ServedStage {
        trees: text.as_deref().map(|t| (t, rate)),
        blender,
    };
    ranker.write_bundle(bundle, settings, served, None)?;
    let check = crate::submit::file::write(ds, path, 8192, None, |chunk| {
        let prepared = ranker.prepare(chunk, false)?;
        Ok(prepared
            .par_iter()
            .map(|p| ranker.order(p, order))
            .collect())
    })?;
    Ok(check.rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_reach_the_pipeline_and_its_models() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("experiments/quickstart.toml");
        let plain = PipelineConfig::load(&path).unwrap();
        let cfg = PipelineConfig::load_with(
            &path,
            &["trees.weeks=3".into(), "ranker:optim.lr=0.002".into()],
            Some(crate::config::device::DeviceChoice::Flex),
        )
        .unwrap();
        assert_eq!(cfg.trees.weeks, 3);
        assert_ne!(plain.trees.weeks, 3);
        // The file's own model overrides stay, the new ones come after.
        assert_eq!(
            cfg.ranker.set[..plain.ranker.set.len()],
            plain.ranker.set[..]
        );
        assert_eq!(
            cfg.ranker.set[plain.ranker.set.len()..],
            ["optim.lr=0.002".to_string(), "device=\"flex\"".to_string()]
        );
        assert_eq!(cfg.retrieval.set.last().unwrap(), "device=\"flex\"");
        let err = PipelineConfig::load_with(&path, &["trees.wekks=3".into()], None)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("quickstart.toml") && err.contains("wekks"),
            "{err}"
        );
    }
}
