//! The `recforge` command line.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};

use recforge::baseline;
use recforge::ingest::Format;
use recforge::pipeline::{self, BaselineOptions};
use recforge::split::SplitKind;
use recforge::synth::{self, SynthConfig};

mod bench;
mod bench_http;
mod bench_retrieval;
mod bench_serve;
mod bench_train;

// polars allocates and frees large per-chunk buffers; with glibc each one is
// mapped and zeroed afresh. mimalloc reuses them.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "recforge",
    version,
    about = "Train, evaluate and export neural recommender models"
)]
struct Cli {
    /// Print wall time and peak memory to stderr when the command ends
    /// (used by the benchmarks).
    #[arg(long, global = true)]
    report_resources: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Generate a synthetic purchase log in the H&M Kaggle schema.
    Synth(SynthArgs),
    /// Validate raw data (H&M CSVs or RecBole atomic files) and write a Parquet cache.
    Prepare(PrepareArgs),
    /// Score the classic baselines on a split and write the results table.
    Baseline(BaselineArgs),
    /// Check a Kaggle submission file against a prepared dataset.
    CheckSubmission {
        /// The submission CSV (customer_id,prediction).
        #[arg(long)]
        file: PathBuf,
        /// The prepared cache of the same data (from `recforge prepare`).
        #[arg(long)]
        data: PathBuf,
    },
    /// Generate a small dataset, prepare it and run the baselines: the whole
    /// job on data it makes itself.
    Quickstart {
        /// Working directory for the data, cache, results and submission.
        #[arg(long, default_value = "data/quickstart")]
        dir: PathBuf,
        #[arg(long, default_value_t = 20_000)]
        customers: usize,
        #[arg(long, default_value_t = 4_000)]
        articles: usize,
        #[arg(long, default_value_t = 182)]
        days: u32,
        #[arg(long, default_value_t = 42)]
        seed: u64,
    },
    /// The whole pipeline from one config: data → baselines → two-tower →
    /// ranker → candidates ranked on the test week → submission; unchanged
    /// steps are reused.
    Run {
        /// Pipeline TOML (see experiments/README.md).
        config: PathBuf,
        /// Run directory (default runs/<name>).
        #[arg(long)]
        run_dir: Option<PathBuf>,
        /// Report directory (default experiments/results/<name>).
        #[arg(long)]
        report_dir: Option<PathBuf>,
    },
    /// Train the model an experiment file names (or continue a run).
    Train(TrainArgs),
    /// Export a run's selected model as a bundle for the inference crate
    /// (model.safetensors + manifest.json; format in models/README.md).
    Export {
        /// The run directory (runs/NAME).
        run_dir: PathBuf,
        /// The bundle directory to write (e.g. models/NAME); replaced atomically.
        #[arg(long)]
        out: PathBuf,
    },
    /// Candidate sources on the last week of a dataset: per-source and
    /// union recall of the week's purchases, and candidates per customer.
    Candidates {
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
        #[arg(long, default_value_t = 7)]
        target_days: u32,
        /// Also write the table as NAME.md / NAME.json here.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Rank the last week's candidates with a sequential-ranker bundle:
    /// MAP@12 and revenue per impression beside the ranker over the whole
    /// catalogue and every baseline.
    Rank {
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
        /// purchase | revenue
        #[arg(long, default_value = "purchase")]
        objective: String,
        /// Revenue objective: rank by score + alpha · ln(price).
        #[arg(long, default_value_t = 1.0)]
        alpha: f64,
        #[arg(long, default_value_t = 7)]
        target_days: u32,
        /// Skip the second stage (a logistic regression on the ranker's
        /// score and candidate features, fitted on the week before).
        #[arg(long)]
        no_blend: bool,
        /// Seed of the blender's negative sampling.
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Also write the table as NAME.md / NAME.json here.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Offline A/B: paired per-customer differences of every metric between
    /// two systems (per-customer files from `rank --out`), with bootstrap
    /// 95% confidence intervals.
    Compare {
        /// System A (the reference).
        a: PathBuf,
        /// System B.
        b: PathBuf,
        #[arg(long, default_value_t = 2000)]
        resamples: usize,
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Also write the comparison as NAME.md / NAME.json.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Write a Kaggle submission from a bundle for every customer of the data.
    Submit {
        #[arg(long)]
        bundle: PathBuf,
        /// Raw H&M files (customers.csv, articles.csv, transactions_train.csv)
        /// or a prepared cache.
        #[arg(long)]
        data: PathBuf,
        #[arg(long)]
        out: PathBuf,
        /// Withhold articles with no sale in this many days (but some before) as sold out.
        #[arg(long, default_value_t = 0)]
        stale_days: u32,
        /// Customers per parallel chunk.
        #[arg(long, default_value_t = 8192)]
        chunk: usize,
    },
    /// Customer histories and article prices for the HTTP server
    /// (`recforge-serve`): customers.jsonl and prices.csv in OUT.
    ServingData {
        /// Raw H&M files or a prepared cache.
        #[arg(long)]
        data: PathBuf,
        #[arg(long)]
        out: PathBuf,
        /// Purchases kept per customer, most recent.
        #[arg(long, default_value_t = 50)]
        history_len: usize,
    },
    /// Benchmarks that write a results table.
    Bench {
        #[command(subcommand)]
        what: bench::BenchCmd,
    },
}

#[derive(Args)]
struct SynthArgs {
    /// Output directory for articles.csv, customers.csv, transactions_train.csv
    /// and sample_submission.csv.
    #[arg(long)]
    out: PathBuf,
    /// TOML file with generator settings (see datasets/README.md); flags override it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Number of customers (the real data has 1,371,980).
    #[arg(long)]
    customers: Option<usize>,
    /// Number of articles (the real data has 105,542).
    #[arg(long)]
    articles: Option<usize>,
    /// Days of transactions (the real log covers 734).
    #[arg(long)]
    days: Option<u32>,
    /// Seed of every random draw.
    #[arg(long)]
    seed: Option<u64>,
}

#[derive(Args)]
struct TrainArgs {
    /// Experiment TOML (see experiments/README.md). Not needed with --resume,
    /// which reads the run's own resolved config.
    config: Option<PathBuf>,
    /// Override a config value, e.g. `--set optim.lr=0.002` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// Continue the run in this directory from its newest checkpoint.
    #[arg(long, value_name = "RUN_DIR", conflicts_with = "run_dir")]
    resume: Option<PathBuf>,
    /// Where the run writes config, checkpoints, TensorBoard and results
    /// (default `runs/<name>`).
    #[arg(long)]
    run_dir: Option<PathBuf>,
    /// auto | flex | wgpu | cuda; overrides the config's `device`.
    #[arg(long)]
    device: Option<recforge::device::DeviceChoice>,
    /// Also write the results table here (e.g. experiments/results).
    #[arg(long)]
    results_dir: Option<PathBuf>,
    /// Stop after this many epochs in total, keeping the checkpoint (as if
    /// the run were killed); resume with --resume.
    #[arg(long, hide = true)]
    stop_after: Option<usize>,
}

#[derive(Args)]
struct PrepareArgs {
    /// Directory with the raw files.
    #[arg(long)]
    data: PathBuf,
    /// Cache directory to write (replaced atomically when complete).
    #[arg(long)]
    out: PathBuf,
    /// Input format; `auto` picks H&M when transactions_train.csv exists.
    #[arg(long, value_enum, default_value = "auto")]
    format: Format,
}

#[derive(Args)]
struct BaselineArgs {
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

fn synth_cmd(a: &SynthArgs) -> Result<()> {
    let mut cfg = match &a.config {
        Some(p) => SynthConfig::from_toml_file(p)?,
        None => SynthConfig::default(),
    };
    cfg.customers = a.customers.unwrap_or(cfg.customers);
    cfg.articles = a.articles.unwrap_or(cfg.articles);
    cfg.days = a.days.unwrap_or(cfg.days);
    cfg.seed = a.seed.unwrap_or(cfg.seed);
    let t = Instant::now();
    let s = synth::generate(&cfg, &a.out)
        .with_context(|| format!("generating into {}", a.out.display()))?;
    println!(
        "wrote {} customers, {} articles, {} transactions ({} .. {}) to {} in {:.1}s",
        s.customers,
        s.articles,
        s.transactions,
        s.first_date,
        s.last_date,
        a.out.display(),
        t.elapsed().as_secs_f64()
    );
    Ok(())
}

fn prepare_cmd(data: &Path, out: &Path, format: Format) -> Result<recforge::data::Dataset> {
    let t = Instant::now();
    let ds = pipeline::prepare(data, out, format)
        .with_context(|| format!("preparing {}", data.display()))?;
    println!(
        "prepared `{}`: {} users, {} items, {} interactions -> {} in {:.1}s",
        ds.meta.name,
        ds.users.len() - 1,
        ds.items.len() - 1,
        ds.inter.len(),
        out.display(),
        t.elapsed().as_secs_f64()
    );
    Ok(ds)
}

fn baseline_cmd(a: &BaselineArgs) -> Result<()> {
    let ds = recforge::cache::read(&a.data)?;
    let ks = if a.k.is_empty() {
        vec![if a.split == SplitKind::LastWeek {
            12
        } else {
            10
        }]
    } else {
        a.k.clone()
    };
    let opt = BaselineOptions {
        split: a.split,
        target_days: a.target_days,
        ks,
        params: baseline::Params {
            recent_days: a.recent_days,
            half_life_days: a.half_life_days,
            repurchase_days: a.repurchase_days,
            mask_seen: a.mask_seen,
            ..Default::default()
        },
        results_dir: a.results_dir.clone(),
        submission: a.submission.clone(),
    };
    run_and_print(&ds, &opt)
}

fn run_and_print(ds: &recforge::data::Dataset, opt: &BaselineOptions) -> Result<()> {
    let out = pipeline::run_baselines(ds, opt)?;
    println!("{}", out.table.markdown());
    println!(
        "results: {} and {}",
        out.files.0.display(),
        out.files.1.display()
    );
    if let Some(p) = out.submission {
        println!(
            "submission of the best baseline ({}): {}",
            out.best.name(),
            p.display()
        );
    }
    Ok(())
}

fn quickstart(dir: &Path, customers: usize, articles: usize, days: u32, seed: u64) -> Result<()> {
    let raw = dir.join("raw");
    let cfg = SynthConfig {
        customers,
        articles,
        days,
        seed,
        ..SynthConfig::default()
    };
    let t = Instant::now();
    let s = synth::generate(&cfg, &raw)?;
    println!(
        "1/3 synth: {} transactions in {:.1}s -> {}",
        s.transactions,
        t.elapsed().as_secs_f64(),
        raw.display()
    );
    let cache = dir.join("cache");
    let ds = prepare_cmd(&raw, &cache, Format::Hm)?;
    println!("2/3 prepare: done");
    let sub = dir.join("submission.csv");
    let opt = BaselineOptions {
        split: SplitKind::LastWeek,
        target_days: 7,
        ks: vec![12],
        params: baseline::Params::default(),
        results_dir: dir.join("results"),
        submission: Some(sub.clone()),
    };
    println!("3/3 baselines:");
    run_and_print(&ds, &opt)?;
    let report = recforge::submission::check(&ds, &sub)?;
    println!(
        "submission check: ok, {} rows for {} customers",
        report.rows, report.customers
    );
    Ok(())
}

fn run(cli: Cli) -> Result<()> {
    match cli.cmd {
        Cmd::Synth(a) => synth_cmd(&a),
        Cmd::Prepare(a) => prepare_cmd(&a.data, &a.out, a.format).map(|_| ()),
        Cmd::Baseline(a) => baseline_cmd(&a),
        Cmd::CheckSubmission { file, data } => {
            let ds = recforge::cache::read(&data)?;
            let r = recforge::submission::check(&ds, &file)?;
            println!(
                "ok: {} rows, every one of {} customers covered",
                r.rows, r.customers
            );
            Ok(())
        }
        Cmd::Quickstart {
            dir,
            customers,
            articles,
            days,
            seed,
        } => quickstart(&dir, customers, articles, days, seed),
        Cmd::Train(a) => train_cmd(a),
        Cmd::Run {
            config,
            run_dir,
            report_dir,
        } => {
            let cfg = recforge::run::PipelineConfig::load(&config)?;
            let run_dir = run_dir.unwrap_or_else(|| PathBuf::from("runs").join(&cfg.name));
            let report_dir = report_dir.unwrap_or_else(|| {
                PathBuf::from("experiments/results").join(cfg.report.as_ref().unwrap_or(&cfg.name))
            });
            let out = recforge::run::run(&cfg, &run_dir, &report_dir)?;
            let results =
                std::fs::read_to_string(report_dir.join("results.md")).unwrap_or_default();
            println!("{results}");
            println!(
                "{}",
                std::fs::read_to_string(&out.report).unwrap_or_default()
            );
            if let Some(s) = &out.submission {
                println!("submission: {}", s.display());
            }
            println!(
                "run directory: {}; report: {}",
                run_dir.display(),
                report_dir.display()
            );
            println!(
                "per-customer metrics for `recforge compare`: {}",
                out.per_customer.display()
            );
            Ok(())
        }
        Cmd::Export { run_dir, out } => {
            let e = recforge::export::export(&run_dir, &out)?;
            println!(
                "exported {:?} model: {} tensors, {} bytes of weights (sha256 {}) to {}",
                e.kind,
                e.tensors,
                e.bytes,
                e.sha256,
                e.dir.display()
            );
            Ok(())
        }
        Cmd::Candidates {
            data,
            bundle,
            config,
            target_days,
            out,
        } => {
            let cfg = candidate_config(config.as_deref())?;
            let ds = recforge::serve::load_data(&data)?;
            let r = recforge::candidates::test_period_report(
                &ds,
                target_days,
                &cfg,
                bundle.as_deref(),
            )?;
            let md = format!(
                "# Candidate sources on `{}`, last week\n\nFitted on everything before the last {target_days} days; {} buyers in the period. Sizes: `{}`.\n\n{}",
                ds.meta.name,
                r.customers,
                serde_json::to_string(&cfg)?,
                r.markdown()
            );
            println!("{md}");
            if let Some(path) = out {
                recforge::fsutil::write_atomic(path.with_extension("md"), md.as_bytes())?;
                recforge::fsutil::write_atomic(
                    path.with_extension("json"),
                    serde_json::to_vec_pretty(&serde_json::json!({"config": cfg, "report": r}))?
                        .as_slice(),
                )?;
            }
            Ok(())
        }
        Cmd::Rank {
            data,
            ranker,
            retrieval,
            config,
            objective,
            alpha,
            target_days,
            no_blend,
            seed,
            out,
        } => {
            let cfg = candidate_config(config.as_deref())?;
            let blend = recforge::blend::BlendConfig::default();
            let objective = match objective.as_str() {
                "purchase" => recforge::rank::Objective::Purchase,
                "revenue" => recforge::rank::Objective::Revenue,
                other => anyhow::bail!("--objective `{other}`: expected purchase or revenue"),
            };
            let ds = recforge::serve::load_data(&data)?;
            let recforge::rank::TestPeriod {
                table: t,
                per_customer: per,
                ..
            } = recforge::rank::rank_test_period(
                &ds,
                target_days,
                &recforge::rank::RankSettings {
                    candidates: &cfg,
                    retrieval: retrieval.as_deref(),
                    ranker: &ranker,
                    objective,
                    alpha,
                    blend: (!no_blend).then_some((&blend, seed)),
                },
            )?;
            println!("{}", t.markdown());
            if let Some(path) = out {
                let dir = path.parent().unwrap_or(std::path::Path::new("."));
                let stem = path.file_name().and_then(|n| n.to_str()).unwrap_or("rank");
                t.write(dir, stem)?;
                // One per-customer file per row, for `recforge compare`.
                let pc = dir.join(format!("{stem}.per-customer"));
                std::fs::create_dir_all(&pc)?;
                for p in &per {
                    let slug: String = p
                        .name
                        .chars()
                        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
                        .collect();
                    p.write(&pc.join(format!("{slug}.json")))?;
                }
                println!("per-customer metrics in {}", pc.display());
            }
            Ok(())
        }
        Cmd::Compare {
            a,
            b,
            resamples,
            seed,
            out,
        } => {
            let pa = recforge::compare::PerCustomer::read(&a)?;
            let pb = recforge::compare::PerCustomer::read(&b)?;
            let c = recforge::compare::compare(&pa, &pb, resamples.max(1), seed)?;
            let md = c.markdown();
            println!("{md}");
            if let Some(path) = out {
                recforge::fsutil::write_atomic(path.with_extension("md"), md.as_bytes())?;
                recforge::fsutil::write_atomic(
                    path.with_extension("json"),
                    serde_json::to_vec_pretty(&c)?.as_slice(),
                )?;
            }
            Ok(())
        }
        Cmd::ServingData {
            data,
            out,
            history_len,
        } => {
            let w = recforge::serving_data::write(&data, &out, history_len)?;
            println!(
                "{}: customers.jsonl ({} customers, {} with purchases), prices.csv ({} articles)",
                out.display(),
                w.customers,
                w.with_history,
                w.priced_articles
            );
            Ok(())
        }
        Cmd::Submit {
            bundle,
            data,
            out,
            stale_days,
            chunk,
        } => {
            let opt = recforge::submit::SubmitOptions {
                bundle,
                data,
                out,
                stale_days,
                chunk,
            };
            let r = recforge::submit::submit(&opt)?;
            println!("{}", recforge::submit::summary(&r, &opt.out));
            Ok(())
        }
        Cmd::Bench { what } => bench::run(what),
    }
}

/// Candidate source sizes from a TOML file, or the defaults.
fn candidate_config(
    path: Option<&std::path::Path>,
) -> Result<recforge::candidates::CandidateConfig> {
    match path {
        Some(p) => {
            let text =
                std::fs::read_to_string(p).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?;
            toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))
        }
        None => Ok(Default::default()),
    }
}

fn train_cmd(a: TrainArgs) -> Result<()> {
    use recforge::experiment::Experiment;
    let (mut exp, run_dir, resume) = match (&a.resume, &a.config) {
        (Some(dir), config) => {
            let exp = Experiment::load(&dir.join("config.toml"), &a.set)?;
            if let Some(c) = config {
                let given = Experiment::load(c, &a.set)?;
                anyhow::ensure!(
                    given == exp,
                    "{} differs from the config {} was started with; resume without a config file",
                    c.display(),
                    dir.display()
                );
            }
            (exp, dir.clone(), true)
        }
        (None, Some(c)) => {
            let exp = Experiment::load(c, &a.set)?;
            let dir = a
                .run_dir
                .clone()
                .unwrap_or_else(|| PathBuf::from("runs").join(&exp.name));
            (exp, dir, false)
        }
        (None, None) => anyhow::bail!("give an experiment file, or --resume RUN_DIR"),
    };
    if let Some(d) = a.device {
        exp.device = d;
    }
    let out = recforge::train::train(
        &exp,
        &recforge::train::TrainOptions {
            run_dir: run_dir.clone(),
            resume,
            stop_after: a.stop_after,
            results_dir: a.results_dir.clone(),
            progress: true,
        },
    )?;
    match &out.table {
        Some(t) => {
            println!("{}", t.markdown());
            println!("run directory: {}", run_dir.display());
        }
        None => println!(
            "stopped after epoch {} as asked; continue with `recforge train --resume {}`",
            out.epochs,
            run_dir.display()
        ),
    }
    Ok(())
}

fn main() -> ExitCode {
    // burn materialises loaded optimizer state on `Device::default()`, which
    // prefers a GPU and would start a Vulkan context (lavapipe, on a machine
    // without a GPU) just to read a checkpoint. The state moves to the
    // parameters' device on the next step anyway, so the CPU is the right
    // default. Set here, before any thread exists.
    if std::env::var_os("BURN_DEVICE").is_none() {
        // SAFETY: nothing else runs yet, so no thread can read the environment.
        unsafe { std::env::set_var("BURN_DEVICE", "flex") };
    }
    let start = Instant::now();
    let cli = Cli::parse();
    let report = cli.report_resources;
    let result = run(cli);
    if report {
        eprintln!("{}", recforge::resources::report_line(start));
    }
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
