//! Evaluation commands: baselines, candidate recall, ranking the last
//! week's candidates, and the paired A/B of two systems.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use recforge::data::split::SplitKind;
use recforge::eval::baselines;
use recforge::pipeline::commands::{self, BaselineOptions, BaselineOutcome};
use recforge::rank::candidates::CandidateConfig;
use recforge::rank::{Objective, RankSettings};

#[derive(Args)]
pub struct BaselineArgs {
    /// Prepared cache directory (from `recforge prepare`).
    #[arg(long)]
    data: PathBuf,
    /// How to split: `last-week` (H&M: target = last --target-days days),
    /// `loo` (RecBole leave-one-out), `explicit` (the split files given to prepare).
    #[arg(long, value_enum, default_value = "last-week")]
    split: SplitKind,
    /// Length of the target period for `last-week`, in days.
    #[arg(long, default_value_t = 7)]
    target_days: u32,
    /// Cut-offs to report; the first one picks the best baseline (MAP).
    /// Default: 12 for last-week, 10 for loo/explicit.
    #[arg(long, value_delimiter = ',')]
    k: Vec<usize>,
    /// Hide items the customer already bought (except in repurchase).
    #[arg(long)]
    mask_seen: bool,
    /// Window of recent-popular, in days.
    #[arg(long, default_value_t = 7)]
    recent_days: i64,
    /// Half-life of the popularity decay, in days.
    #[arg(long, default_value_t = 7.0)]
    half_life_days: f64,
    /// Only purchases this many days old or newer are repurchase candidates.
    #[arg(long, default_value_t = 28)]
    repurchase_days: i64,
    /// Directory for the JSON + Markdown results table.
    #[arg(long, default_value = "experiments/results")]
    results_dir: PathBuf,
    /// Write a Kaggle submission of the best baseline, refitted on all data (H&M only).
    #[arg(long)]
    submission: Option<PathBuf>,
}

pub fn baseline(a: BaselineArgs) -> Result<()> {
    let ds = recforge::data::cache::read(&a.data)?;
    let ks = if a.k.is_empty() {
        vec![if a.split == SplitKind::LastWeek {
            12
        } else {
            10
        }]
    } else {
        a.k
    };
    let opt = BaselineOptions {
        split: a.split,
        target_days: a.target_days,
        ks,
        params: baselines::Params {
            recent_days: a.recent_days,
            half_life_days: a.half_life_days,
            repurchase_days: a.repurchase_days,
            mask_seen: a.mask_seen,
            ..Default::default()
        },
        results_dir: a.results_dir,
        submission: a.submission,
    };
    print_baselines(&commands::run_baselines(&ds, &opt)?);
    Ok(())
}

/// The baselines' table, where it was written and the submission, if any.
pub fn print_baselines(out: &BaselineOutcome) {
    println!("{}", out.table.markdown());
    println!(
        "results: {} and {}",
        out.files.0.display(),
        out.files.1.display()
    );
    if let Some(s) = &out.submission {
        println!(
            "submission of the best baseline ({}): {} ({} rows, checked)",
            out.best.name(),
            s.path.display(),
            s.check.rows
        );
    }
}

/// Candidate source sizes from a TOML file, or the defaults.
fn candidate_config(path: Option<&std::path::Path>) -> Result<CandidateConfig> {
    Ok(match path {
        Some(p) => recforge::rank::candidates::load_config(p)?,
        None => CandidateConfig::default(),
    })
}

#[derive(Args)]
pub struct CandidatesArgs {
    /// A prepared cache (H&M format).
    #[arg(long)]
    data: PathBuf,
    /// A two-tower bundle for the two-tower source (off without one).
    #[arg(long)]
    bundle: Option<PathBuf>,
    /// A TOML file of source sizes (keys of `[candidates]`, see
    /// experiments/README.md); defaults otherwise.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Length of the target period (the last days of the log), in days.
    #[arg(long, default_value_t = 7)]
    target_days: u32,
    /// Also write the table as NAME.md / NAME.json here.
    #[arg(long)]
    out: Option<PathBuf>,
}

pub fn candidates(a: CandidatesArgs) -> Result<()> {
    let cfg = candidate_config(a.config.as_deref())?;
    let md = commands::candidates(
        &a.data,
        a.bundle.as_deref(),
        &cfg,
        a.target_days,
        a.out.as_deref(),
    )?;
    println!("{md}");
    Ok(())
}

#[derive(Args)]
pub struct RankArgs {
    /// A prepared cache or raw H&M files.
    #[arg(long)]
    data: PathBuf,
    /// The sequential-ranker bundle.
    #[arg(long)]
    ranker: PathBuf,
    /// A two-tower bundle for the two-tower candidate source.
    #[arg(long)]
    retrieval: Option<PathBuf>,
    /// Candidate source sizes (TOML of `CandidateConfig` keys).
    #[arg(long)]
    config: Option<PathBuf>,
    /// What the order maximises.
    #[arg(long, value_enum, default_value = "purchase")]
    objective: Objective,
    /// Revenue objective: rank by score + alpha · ln(price).
    #[arg(long, default_value_t = 1.0)]
    alpha: f64,
    /// Length of the target period (the last days of the log), in days.
    #[arg(long, default_value_t = 7)]
    target_days: u32,
    /// Skip the second stage (gradient-boosted trees and the logistic
    /// blender, trained on the weeks before the validation week). The
    /// bundles must have been trained on rows before those weeks.
    #[arg(long)]
    no_blend: bool,
    /// Seed of the blender's negative sampling.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Also write the table as NAME.md / NAME.json here, and per-customer
    /// metrics under NAME.per-customer/.
    #[arg(long)]
    out: Option<PathBuf>,
}

pub fn rank(a: RankArgs) -> Result<()> {
    let cfg = candidate_config(a.config.as_deref())?;
    let blend = recforge::rank::blend::BlendConfig::default();
    let trees = recforge::rank::gbdt::TreeConfig::default();
    let settings = RankSettings {
        candidates: &cfg,
        retrieval: a.retrieval.as_deref(),
        ranker: &a.ranker,
        objective: a.objective,
        alpha: a.alpha,
        second: (!a.no_blend).then_some(recforge::rank::SecondSettings {
            blend: &blend,
            trees: &trees,
            seed: a.seed,
            rows_out: None,
        }),
        bundle: None,
    };
    let (tp, per_customer) = commands::rank(&a.data, a.target_days, &settings, a.out.as_deref())?;
    println!("{}", tp.table.markdown());
    if let Some(pc) = per_customer {
        println!("per-customer metrics in {}", pc.display());
    }
    Ok(())
}

#[derive(Args)]
pub struct CompareArgs {
    /// System A (the reference).
    a: PathBuf,
    /// System B.
    b: PathBuf,
    /// Bootstrap resamples of the customers.
    #[arg(long, default_value_t = 2000)]
    resamples: usize,
    /// Seed of the bootstrap draws.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Also write the comparison as NAME.md / NAME.json, and its forest
    /// chart (B − A and its 95% interval per metric) as NAME.svg.
    #[arg(long)]
    out: Option<PathBuf>,
}

pub fn compare(a: CompareArgs) -> Result<()> {
    let c = commands::compare(&a.a, &a.b, a.resamples, a.seed, a.out.as_deref())?;
    println!("{}", c.markdown());
    Ok(())
}
