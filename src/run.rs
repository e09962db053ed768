//! `recforge run PIPELINE.toml`: the whole job from one config. Data
//! (generated or raw) → cache → baselines → two-tower training and export
//! → ranker training and export → candidates ranked on the test week
//! (beside every baseline, with an A/B against the best one) → submission.
//!
//! Every step records a content hash of its inputs (its own settings and
//! the hashes of the steps it reads) in `RUN/steps/NAME.json`. A step whose
//! hash is unchanged is reused, not rerun: changing the ranker's settings
//! retrains the ranker and what follows it, never the retrieval model.

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::blend::{BlendConfig, Blender};
use crate::candidates::CandidateConfig;
use crate::error::{Error, Result};
use crate::experiment::{Experiment, ModelKind};
use crate::rank::{Objective, Ranker};

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
    /// The second ranking stage over the ranker's score and candidate features.
    pub blend: BlendConfig,
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
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let cfg: PipelineConfig =
            toml::from_str(&text).map_err(|e| Error::Config(format!("{}: {e}", path.display())))?;
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
}

/// What the rank step keeps for the submission step.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct RankValue {
    /// MAP@12 of the pipeline's ranking on the test week.
    map: f64,
    blender: Option<Blender>,
}

/// What a step recorded.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Record<T> {
    hash: String,
    wall_s: f64,
    /// Peak resident memory while the step ran (or of the whole process
    /// up to its end, where `own_peak` is false).
    #[serde(default)]
    peak_rss_mib: Option<f64>,
    #[serde(default)]
    own_peak: bool,
    value: T,
}

/// One line of the stage report.
#[derive(Debug, Clone, Serialize)]
pub struct StepReport {
    pub step: String,
    pub reused: bool,
    pub wall_s: f64,
    pub peak_rss_mib: Option<f64>,
    /// Whether the peak is the step's own (the counter was reset at its start).
    pub own_peak: bool,
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

fn hash(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p.as_bytes());
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// Hash of every regular file directly in `dir`, by name and content.
fn hash_dir(dir: &Path) -> Result<String> {
    let mut names: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    names.sort();
    let mut h = Sha256::new();
    for p in &names {
        h.update(
            p.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
        );
        let mut f = std::fs::File::open(p).map_err(|e| Error::io(p, e))?;
        std::io::copy(&mut f, &mut h).map_err(|e| Error::io(p, e))?;
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

struct Steps {
    dir: PathBuf,
    reports: Vec<StepReport>,
}

impl Steps {
    /// Runs `f` unless `name` already ran with inputs hashing to `h` and
    /// its `outputs` are all still there.
    fn run<T: Serialize + DeserializeOwned>(
        &mut self,
        name: &str,
        h: &str,
        outputs: &[&Path],
        f: impl FnOnce() -> Result<T>,
    ) -> Result<T> {
        let path = self.dir.join(format!("{name}.json"));
        if let Ok(bytes) = std::fs::read(&path)
            && let Ok(rec) = serde_json::from_slice::<Record<T>>(&bytes)
            && rec.hash == h
            && outputs.iter().all(|o| o.exists())
        {
            eprintln!(
                "[{name}] unchanged, reused ({:.1}s when it ran)",
                rec.wall_s
            );
            self.reports.push(StepReport {
                step: name.into(),
                reused: true,
                wall_s: rec.wall_s,
                peak_rss_mib: rec.peak_rss_mib,
                own_peak: rec.own_peak,
            });
            return Ok(rec.value);
        }
        eprintln!("[{name}] running");
        let own_peak = crate::resources::reset_peak_rss();
        let t = Instant::now();
        let value = f()?;
        let wall_s = t.elapsed().as_secs_f64();
        let rec = Record {
            hash: h.to_string(),
            wall_s,
            peak_rss_mib: crate::resources::peak_rss_mib(),
            own_peak,
            value,
        };
        let bytes =
            serde_json::to_vec_pretty(&rec).map_err(|e| Error::invalid(&path, e.to_string()))?;
        crate::fsutil::write_atomic(&path, &bytes)?;
        self.reports.push(StepReport {
            step: name.into(),
            reused: false,
            wall_s,
            peak_rss_mib: rec.peak_rss_mib,
            own_peak,
        });
        Ok(rec.value)
    }
}

/// The report's charts: each model's validation metric per epoch, and the
/// recall of each candidate source and their union.
fn plots(run_dir: &Path, report_dir: &Path, tt: &Experiment, rk: &Experiment) -> Result<()> {
    let mut series = Vec::new();
    for (stage, exp) in [("retrieval", tt), ("ranker", rk)] {
        let (metric, k) = exp.selection_metric()?;
        let state = crate::train::checkpoint::read_state(&run_dir.join(stage).join("best"))?;
        let points: Vec<(f64, f64)> = state
            .history
            .iter()
            .filter_map(|h| {
                let v = h.valid.as_ref()?.get(exp.eval.select_masked, &metric, k)?;
                Some((h.epoch as f64, v))
            })
            .collect();
        series.push((format!("{stage}: valid {metric}@{k}"), points));
    }
    let svg = crate::plot::line_chart("Validation metric per epoch", "epoch", "value", &series);
    crate::fsutil::write_atomic(report_dir.join("validation.svg"), svg.as_bytes())?;
    let json = report_dir.join("results.json");
    let bytes = std::fs::read(&json).map_err(|e| Error::io(&json, e))?;
    let v: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|e| Error::invalid(&json, e.to_string()))?;
    let mut bars: Vec<(String, f64)> = v["extra"]["candidates"]["sources"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|s| s[2].as_f64().unwrap_or(0.0) > 0.0)
                .map(|s| {
                    (
                        s[0].as_str().unwrap_or("").to_string(),
                        s[1].as_f64().unwrap_or(0.0),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    bars.push((
        "union".into(),
        v["extra"]["candidates"]["union_recall"]
            .as_f64()
            .unwrap_or(0.0),
    ));
    let svg = crate::plot::bar_chart(
        "Recall of the test week's purchases by candidate source",
        "recall",
        &bars,
    );
    crate::fsutil::write_atomic(report_dir.join("candidates.svg"), svg.as_bytes())
}

/// A model stage's resolved experiment: its file and overrides, with the
/// run's cache and directories.
fn stage_experiment(
    stage: &Stage,
    cache: &Path,
    name: &str,
    kind: ModelKind,
) -> Result<Experiment> {
    let mut set = stage.set.clone();
    set.push(format!("data.cache=\"{}\"", cache.display()));
    set.push(format!("name=\"{name}\""));
    let exp = Experiment::load(&stage.experiment, &set)?;
    if exp.model.kind != kind {
        return Err(Error::Config(format!(
            "{}: expected a {kind:?} experiment, found {:?}",
            stage.experiment.display(),
            exp.model.kind
        )));
    }
    Ok(exp)
}

/// The step of one model stage (`label` = retrieval or ranker): its
/// resolved experiment, its bundle, and the bundle's hash.
fn model_stage(
    steps: &mut Steps,
    run_dir: &Path,
    cache: &Path,
    data_hash: &str,
    name: &str,
    (label, stage, kind): (&str, &Stage, ModelKind),
) -> Result<(Experiment, PathBuf, String)> {
    let exp = stage_experiment(stage, cache, &format!("{name}-{label}"), kind)?;
    let bundle = run_dir.join("models").join(label);
    let h = steps.run(
        label,
        &hash(&[label, data_hash, &exp.to_toml()]),
        &[&bundle],
        || train_and_export(&exp, &run_dir.join(label), &bundle),
    )?;
    Ok((exp, bundle, h))
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

pub fn run(cfg: &PipelineConfig, run_dir: &Path, report_dir: &Path) -> Result<PipelineOutcome> {
    std::fs::create_dir_all(run_dir.join("steps")).map_err(|e| Error::io(run_dir, e))?;
    let mut steps = Steps {
        dir: run_dir.join("steps"),
        reports: Vec::new(),
    };
    let cache = run_dir.join("cache");
    let td = cfg.target_days();

    // Data: generated or raw, validated into the cache.
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
    let data_hash = steps.run("data", &hash(&["data", &source_hash]), &[&cache], || {
        if let Some(s) = &cfg.data.synth {
            let sc = crate::synth::SynthConfig::from_toml_file(s)?;
            crate::synth::generate(&sc, &raw)?;
        }
        crate::pipeline::prepare(&raw, &cache, crate::ingest::Format::Hm)?;
        hash_dir(&cache)
    })?;
    let ds = crate::cache::read(&cache)?;

    let baseline_hash = hash(&["baselines", &data_hash, &td.to_string()]);
    let baseline_file = report_dir.join(format!("baselines-{}-last-week.md", ds.meta.name));
    steps.run("baselines", &baseline_hash, &[&baseline_file], || {
        let out = crate::pipeline::run_baselines(
            &ds,
            &crate::pipeline::BaselineOptions {
                split: crate::split::SplitKind::LastWeek,
                target_days: td,
                ks: vec![12],
                params: crate::baseline::Params::default(),
                results_dir: report_dir.to_path_buf(),
                submission: None,
            },
        )?;
        Ok(out.best.name().to_string())
    })?;

    let (tt_exp, tt_bundle, tt_hash) = model_stage(
        &mut steps,
        run_dir,
        &cache,
        &data_hash,
        &cfg.name,
        ("retrieval", &cfg.retrieval, ModelKind::TwoTower),
    )?;
    let (rk_exp, rk_bundle, rk_hash) = model_stage(
        &mut steps,
        run_dir,
        &cache,
        &data_hash,
        &cfg.name,
        ("ranker", &cfg.ranker, ModelKind::Sasrec),
    )?;

    let serve_cfg = serde_json::to_string(&(&cfg.candidates, &cfg.objective, &cfg.blend, cfg.seed))
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
    let retrieval = (cfg.candidates.two_tower > 0).then_some(tt_bundle.as_path());
    let ranked = steps.run(
        &format!("rank-{report_name}"),
        &rank_hash,
        &[&results, &per_customer],
        || {
            let crate::rank::TestPeriod {
                table,
                per_customer: per,
                candidates: sources,
                blender,
                first_baseline,
            } = crate::rank::rank_test_period(
                &ds,
                td,
                &crate::rank::RankSettings {
                    candidates: &cfg.candidates,
                    retrieval,
                    ranker: &rk_bundle,
                    objective: cfg.objective.kind,
                    alpha: cfg.objective.alpha,
                    blend: Some((&cfg.blend, cfg.seed)),
                },
            )?;
            // A/B: the pipeline (row 0) against the best baseline on MAP@12.
            let best = (first_baseline..per.len())
                .max_by(|&a, &b| {
                    table.rows[a].metrics[0]
                        .map
                        .total_cmp(&table.rows[b].metrics[0].map)
                })
                .unwrap_or(first_baseline);
            let ab = crate::compare::compare(&per[best], &per[0], 2000, cfg.seed)?;
            let mut t = table;
            t.notes = format!(
                "## Candidate sources\n\n{}\n## A/B against the best baseline\n\n{}",
                sources.markdown(),
                ab.markdown().replacen("# ", "### ", 1)
            );
            // What the candidate features add over the ranker's score alone.
            let features_ab = match &blender {
                Some(b) => {
                    let c = crate::compare::compare(&per[1], &per[0], 2000, cfg.seed)?;
                    t.notes += &format!(
                        "\n## The blender\n\n{}\n### A/B: ranker score alone (A) against the blend (B)\n\n{}",
                        b.markdown(),
                        c.markdown().replacen("# ", "#### ", 1)
                    );
                    Some(c)
                }
                None => None,
            };
            t.extra = serde_json::json!({
                "candidates": sources,
                "ab": ab,
                "blender": blender,
                "ab_features": features_ab,
            });
            std::fs::create_dir_all(report_dir).map_err(|e| Error::io(report_dir, e))?;
            t.write(report_dir, "results")?;
            per[0].write(&per_customer)?;
            Ok(RankValue {
                map: t.rows[0].metrics[0].map,
                blender,
            })
        },
    )?;

    let submission = if cfg.submission {
        let path = run_dir.join(format!("submission-{report_name}.csv"));
        steps.run(
            &format!("submission-{report_name}"),
            &hash(&["submission", &rank_hash]),
            &[&path],
            || {
                let all = crate::split::time_order(&ds);
                let end = all.last().map(|&r| ds.day(r)).unwrap_or(0);
                let mut ranker = Ranker::new(
                    &ds,
                    &all,
                    end + 1,
                    &cfg.candidates,
                    retrieval,
                    &rk_bundle,
                    cfg.objective.kind,
                    cfg.objective.alpha,
                )?;
                // The blender fitted on the validation week: the test week
                // is the one the ranker's history now ends with.
                ranker.blender = ranked.blender.clone();
                let check = crate::submit::write_submission(&ds, &path, 8192, |chunk| {
                    Ok(ranker
                        .rank(chunk, false)?
                        .into_iter()
                        .map(|r| r.ranked)
                        .collect())
                })?;
                Ok(check.rows)
            },
        )?;
        Some(path)
    } else {
        None
    };

    let mut stages = String::from(
        "## Stages\n\nWall time of each step and the process's peak resident memory while it ran \
(reused steps: from their record; a peak marked * is the whole process's up to the step's end, \
where the kernel did not let the counter be reset).\n\n\
| step | reused | wall s | peak RSS MiB |\n|---|---|---:|---:|\n",
    );
    for s in &steps.reports {
        stages += &format!(
            "| {} | {} | {:.1} | {} |\n",
            s.step,
            if s.reused { "yes" } else { "no" },
            s.wall_s,
            s.peak_rss_mib
                .map(|m| format!("{m:.0}{}", if s.own_peak { "" } else { "*" }))
                .unwrap_or_else(|| "-".into())
        );
    }
    let total: f64 = steps.reports.iter().map(|s| s.wall_s).sum();
    let peak = steps
        .reports
        .iter()
        .filter_map(|s| s.peak_rss_mib)
        .fold(None, |m: Option<f64>, v| Some(m.map_or(v, |m| m.max(v))));
    stages += &format!(
        "| total | | {total:.1} | {} |\n",
        peak.map(|m| format!("{m:.0}"))
            .unwrap_or_else(|| "-".into())
    );
    stages += "\n![validation metric per epoch](validation.svg)\n\n![candidate recall by source](candidates.svg)\n";
    let report = report_dir.join("stages.md");
    crate::fsutil::write_atomic(&report, stages.as_bytes())?;
    plots(run_dir, report_dir, &tt_exp, &rk_exp)?;
    Ok(PipelineOutcome {
        run_dir: run_dir.to_path_buf(),
        steps: steps.reports,
        report,
        submission,
        per_customer,
    })
}
