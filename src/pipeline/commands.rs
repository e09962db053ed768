//! The CLI's commands as library functions, so tests run exactly what users run.

use std::path::{Path, PathBuf};

use crate::data::cache;
use crate::data::split::{SplitKind, split};
use crate::data::{Dataset, Source};
use crate::error::{Error, Result};
use crate::eval::baselines::{self, Fitted, Kind};
use crate::eval::report::{Row, Table};
use crate::eval::{Targets, evaluate};
use crate::ingest;
use crate::rank::candidates::CandidateConfig;
use crate::submit::file as submission;
use crate::util::fsutil::write_atomic;

/// `prepare`: reads raw files, validates them and writes the cache atomically.
pub fn prepare(data: &Path, out: &Path, format: ingest::Format) -> Result<Dataset> {
    let ds = ingest::load(data, format)?;
    cache::write(&ds, out)?;
    Ok(ds)
}

/// `prepare --format table`: one CSV/Parquet log with a column map.
pub fn prepare_table(spec: &ingest::generic::TableSpec, out: &Path) -> Result<Dataset> {
    let ds = ingest::load_table(spec)?;
    cache::write(&ds, out)?;
    Ok(ds)
}

pub struct BaselineOptions {
    pub split: SplitKind,
    pub target_days: u32,
    pub ks: Vec<usize>,
    pub params: baselines::Params,
    pub results_dir: PathBuf,
    /// Where to write the Kaggle submission of the best baseline (H&M data only).
    pub submission: Option<PathBuf>,
}

pub struct BaselineOutcome {
    pub table: Table,
    pub files: (PathBuf, PathBuf),
    pub best: Kind,
    pub submission: Option<SubmissionFile>,
}

/// A submission written and checked.
pub struct SubmissionFile {
    pub path: PathBuf,
    pub check: submission::CheckReport,
}

/// `baseline`: fits every baseline on the history before the target period,
/// scores it on the target period, writes the table, and optionally refits
/// the best one on all data to write a submission for the following week.
pub fn run_baselines(ds: &Dataset, opt: &BaselineOptions) -> Result<BaselineOutcome> {
    if opt.ks.is_empty() || opt.ks.contains(&0) {
        return Err(Error::Config("k values must be >= 1".into()));
    }
    let s = split(ds, opt.split, opt.target_days)?;
    // Leave-one-out follows RecBole: models see only the training part when
    // scored on test. Time splits use everything before the target period.
    let history = match opt.split {
        SplitKind::Loo | SplitKind::Explicit => s.train.clone(),
        SplitKind::LastWeek => s.history(),
    };
    let targets = Targets::from_rows(ds, &s.test);
    let fitted = Fitted::fit(ds, &history, opt.params.clone());
    let rows: Vec<Row> = Kind::ALL
        .iter()
        .map(|&kind| Row {
            name: kind.name().to_string(),
            metrics: evaluate(&targets, &opt.ks, ds.items.len(), |u, k, out| {
                fitted.recommend(kind, u, k, out)
            }),
        })
        .collect();
    let best_idx = (0..rows.len())
        .max_by(|&a, &b| {
            rows[a].metrics[0]
                .map
                .total_cmp(&rows[b].metrics[0].map)
                .then(b.cmp(&a))
        })
        .unwrap_or(0);
    let protocol = baseline_protocol(ds, opt, &s, history.len(), targets.len());
    let table = Table {
        title: format!("Baselines on {}", ds.meta.name),
        dataset: ds.meta.name.clone(),
        protocol,
        rows,
        has_price: ds.meta.has_price,
        notes: String::new(),
        extra: serde_json::Value::Null,
    };
    let stem = format!(
        "baselines-{}-{}{}",
        ds.meta.name,
        opt.split.name(),
        if opt.params.mask_seen { "-masked" } else { "" }
    );
    let files = table.write(&opt.results_dir, &stem)?;
    let best = Kind::ALL[best_idx];

    let submission = match (&opt.submission, ds.meta.source) {
        (Some(path), Source::Hm) => {
            let check = baseline_submission(ds, &opt.params, best, path)?;
            Some(SubmissionFile {
                path: path.clone(),
                check,
            })
        }
        _ => None,
    };
    Ok(BaselineOutcome {
        table,
        files,
        best,
        submission,
    })
}

/// How the baselines' table was made, for its protocol line.
fn baseline_protocol(
    ds: &Dataset,
    opt: &BaselineOptions,
    s: &crate::data::split::Split,
    history_rows: usize,
    customers: usize,
) -> String {
    let period = match s.test_start_day {
        Some(d) => format!(
            "target period {} .. {} ({} days)",
            crate::util::dates::format_ymd(d as i32),
            crate::util::dates::format_ymd((d + opt.target_days as i64 - 1) as i32),
            opt.target_days
        ),
        None => "per-user held-out interactions".into(),
    };
    format!(
        "Split `{:?}`: {period}; fitted on {history_rows} history rows, scored on {customers} customers with {} target rows; \
full ranking over {} items; already-bought items {}. Baseline parameters: {}.",
        opt.split,
        s.test.len(),
        ds.items.len() - 1,
        if opt.params.mask_seen {
            "masked"
        } else {
            "not masked"
        },
        serde_json::to_string(&opt.params).unwrap_or_default()
    )
}

/// The submission of baseline `best` refitted on all data, for the week
/// after it.
fn baseline_submission(
    ds: &Dataset,
    params: &baselines::Params,
    best: Kind,
    path: &Path,
) -> Result<submission::CheckReport> {
    let all = crate::data::split::time_order(ds);
    let full = Fitted::fit(ds, &all, params.clone());
    submission::write(ds, path, 8192, None, |chunk| {
        Ok(chunk
            .iter()
            .map(|&u| {
                let mut out = Vec::with_capacity(submission::K);
                full.recommend(best, u, submission::K, &mut out);
                out
            })
            .collect())
    })
}

/// `quickstart`'s settings: the generated log's size and seed, and where it
/// all goes.
pub struct QuickstartOptions {
    pub dir: PathBuf,
    pub synth: crate::ingest::synth::SynthConfig,
}

/// What `quickstart` did, for the CLI to print.
pub struct QuickstartOutcome {
    pub synth: crate::ingest::synth::SynthSummary,
    pub synth_secs: f64,
    pub dataset: Dataset,
    pub cache: PathBuf,
    pub prepare_secs: f64,
    pub baselines: BaselineOutcome,
    pub check: submission::CheckReport,
}

/// `quickstart`: generates a small log, prepares it, scores the baselines
/// and writes a checked submission of the best one, all under `opt.dir`.
pub fn quickstart(opt: &QuickstartOptions) -> Result<QuickstartOutcome> {
    let raw = opt.dir.join("raw");
    let t = std::time::Instant::now();
    let synth = crate::ingest::synth::generate(&opt.synth, &raw)?;
    let synth_secs = t.elapsed().as_secs_f64();
    let cache = opt.dir.join("cache");
    let t = std::time::Instant::now();
    let dataset = prepare(&raw, &cache, ingest::Format::Hm)?;
    let prepare_secs = t.elapsed().as_secs_f64();
    let sub = opt.dir.join("submission.csv");
    let baselines = run_baselines(
        &dataset,
        &BaselineOptions {
            split: SplitKind::LastWeek,
            target_days: 7,
            ks: vec![12],
            params: baselines::Params::default(),
            results_dir: opt.dir.join("results"),
            submission: Some(sub),
        },
    )?;
    let check = baselines
        .submission
        .as_ref()
        .map(|s| s.check.clone())
        .ok_or_else(|| Error::Data("the generated data is not in the H&M format".into()))?;
    Ok(QuickstartOutcome {
        synth,
        synth_secs,
        dataset,
        cache,
        prepare_secs,
        baselines,
        check,
    })
}

/// `candidates`: per-source and union recall on the last `target_days` of a
/// dataset, as Markdown; also written as `out.md` / `out.json` when given.
pub fn candidates(
    data: &Path,
    bundle: Option<&Path>,
    cfg: &CandidateConfig,
    target_days: u32,
    out: Option<&Path>,
) -> Result<String> {
    let ds = crate::export::serve::load_data(data)?;
    let r = crate::rank::candidates::test_period_report(&ds, target_days, cfg, bundle)?;
    let md = format!(
        "# Candidate sources on `{}`, last week\n\nFitted on everything before the last {target_days} days; {} buyers in the period. Sizes: `{}`.\n\n{}",
        ds.meta.name,
        r.customers,
        serde_json::to_string(cfg).expect("a candidate config serialises"),
        r.markdown()
    );
    if let Some(path) = out {
        write_md_json(path, &md, &serde_json::json!({"config": cfg, "report": r}))?;
    }
    Ok(md)
}

/// `rank`: the last week's candidates ranked by a sequential-ranker bundle
/// beside the baselines. With `out`, writes the table as `out.md/.json`
/// and one per-customer file per row under `out.per-customer/` (for
/// `recforge compare`); returns that directory too.
pub fn rank(
    data: &Path,
    target_days: u32,
    settings: &crate::rank::RankSettings,
    out: Option<&Path>,
) -> Result<(crate::rank::TestPeriod, Option<PathBuf>)> {
    let ds = crate::export::serve::load_data(data)?;
    let tp = crate::rank::rank_test_period(&ds, target_days, settings)?;
    let Some(path) = out else {
        return Ok((tp, None));
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    let stem = path.file_name().and_then(|n| n.to_str()).unwrap_or("rank");
    tp.table.write(dir, stem)?;
    let pc = dir.join(format!("{stem}.per-customer"));
    std::fs::create_dir_all(&pc).map_err(|e| Error::io(&pc, e))?;
    for p in &tp.per_customer {
        let slug: String = p
            .name
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect();
        p.write(&pc.join(format!("{slug}.json")))?;
    }
    Ok((tp, Some(pc)))
}

/// `compare`: the paired A/B of two per-customer files; also written as
/// `out.md` / `out.json` when given.
pub fn compare(
    a: &Path,
    b: &Path,
    resamples: usize,
    seed: u64,
    out: Option<&Path>,
) -> Result<crate::eval::compare::Comparison> {
    use crate::eval::compare::{PerCustomer, compare};
    let c = compare(
        &PerCustomer::read(a)?,
        &PerCustomer::read(b)?,
        resamples.max(1),
        seed,
    )?;
    if let Some(path) = out {
        let svg = path.with_extension("svg");
        let name = svg.file_name().map(|n| n.to_string_lossy().into_owned());
        let md = c.markdown() + &format!("\n![B − A per metric]({})\n", name.unwrap_or_default());
        write_md_json(path, &md, &c)?;
        write_atomic(&svg, c.forest_svg().as_bytes())?;
    }
    Ok(c)
}

/// A report as `path.md` and its data as `path.json`, each atomically.
fn write_md_json(path: &Path, md: &str, data: &impl serde::Serialize) -> Result<()> {
    write_atomic(path.with_extension("md"), md.as_bytes())?;
    let json = serde_json::to_vec_pretty(data).expect("reports serialise");
    write_atomic(path.with_extension("json"), &json)
}

/// Which run `train` starts or continues.
pub struct TrainRequest {
    /// The experiment file; with `resume`, only checked against the run's own.
    pub config: Option<PathBuf>,
    /// `KEY=VALUE` overrides.
    pub set: Vec<String>,
    /// Continue the run in this directory.
    pub resume: Option<PathBuf>,
    pub run_dir: Option<PathBuf>,
    pub device: Option<crate::config::device::DeviceChoice>,
    pub results_dir: Option<PathBuf>,
    pub stop_after: Option<usize>,
    /// Devices to split batches over (`--devices`); empty: the config's.
    pub devices: Vec<String>,
}

/// `train`: resolves the experiment (a new run, or a resumed one whose
/// config must not have changed) and trains it; returns the run directory.
pub fn train(req: &TrainRequest) -> Result<(crate::train::Outcome, PathBuf)> {
    use crate::config::experiment::Experiment;
    let (mut exp, run_dir, resume) = match (&req.resume, &req.config) {
        (Some(dir), config) => {
            let exp = Experiment::load(&dir.join("config.toml"), &req.set)?;
            if let Some(c) = config {
                let given = Experiment::load(c, &req.set)?;
                if given != exp {
                    return Err(Error::Config(format!(
                        "{} differs from the config {} was started with; resume without a config file",
                        c.display(),
                        dir.display()
                    )));
                }
            }
            (exp, dir.clone(), true)
        }
        (None, Some(c)) => {
            let exp = Experiment::load(c, &req.set)?;
            let dir = req
                .run_dir
                .clone()
                .unwrap_or_else(|| PathBuf::from("runs").join(&exp.name));
            (exp, dir, false)
        }
        (None, None) => {
            return Err(Error::Config(
                "give an experiment file, or --resume RUN_DIR".into(),
            ));
        }
    };
    if let Some(d) = req.device {
        exp.device = d;
    }
    let out = crate::train::train(
        &exp,
        &crate::train::TrainOptions {
            run_dir: run_dir.clone(),
            resume,
            stop_after: req.stop_after,
            results_dir: req.results_dir.clone(),
            progress: true,
            devices: req.devices.clone(),
        },
    )?;
    Ok((out, run_dir))
}
