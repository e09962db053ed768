//! Model commands: train (or resume) an experiment, export a run's model.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use recforge::config::device::DeviceChoice;
use recforge::pipeline::commands::{self, TrainRequest};

#[derive(Args)]
pub struct TrainArgs {
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
    /// The backend; overrides the config's `device`.
    #[arg(long, value_enum)]
    device: Option<DeviceChoice>,
    /// Also write the results table here (e.g. experiments/results).
    #[arg(long)]
    results_dir: Option<PathBuf>,
    /// Stop after this many epochs in total, keeping the checkpoint (as if
    /// the run were killed); resume with --resume.
    #[arg(long, hide = true)]
    stop_after: Option<usize>,
    /// Train N runs, with the config's seed and the N − 1 after it (each in
    /// RUN_DIR/seed-S), and write the mean ± sd of validation and test
    /// metrics to RUN_DIR/seeds.md.
    #[arg(long, value_name = "N", conflicts_with_all = ["resume", "stop_after"])]
    seeds: Option<usize>,
    /// Split every batch over these devices (data parallelism; the first
    /// holds the model): `flex`, `wgpu`, `wgpu:N` (the N-th adapter),
    /// `cuda:N`, comma-separated, e.g. `wgpu:0,wgpu:1`.
    #[arg(long, value_delimiter = ',', conflicts_with = "device")]
    devices: Vec<String>,
}

pub fn train(a: TrainArgs) -> Result<()> {
    let req = TrainRequest {
        config: a.config,
        set: a.set,
        resume: a.resume,
        run_dir: a.run_dir,
        device: a.device,
        results_dir: a.results_dir,
        stop_after: a.stop_after,
        devices: a.devices,
    };
    if let Some(n) = a.seeds {
        let report = recforge::pipeline::seeds::train_seeds(&req, n)?;
        println!("{}", recforge::pipeline::seeds::markdown(&report));
        return Ok(());
    }
    let (out, run_dir) = commands::train(&req)?;
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

#[derive(Args)]
pub struct SweepArgs {
    /// Experiment TOML every combination starts from.
    config: PathBuf,
    /// One axis of the grid: a config key and its values, e.g.
    /// `--grid optim.lr=1e-3,2e-3` (repeatable; every combination is run).
    #[arg(long = "grid", value_name = "KEY=V1,V2,...", required = true)]
    grid: Vec<String>,
    /// Runs per combination: the config's seed and the N − 1 after it.
    #[arg(long, default_value_t = 1)]
    seeds: usize,
    /// Each run's training budget in seconds (sets train.time_budget_s).
    #[arg(long, value_name = "S")]
    budget_s: Option<f64>,
    /// Override a config value in every combination (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// The backend; overrides the config's `device`.
    #[arg(long, value_enum)]
    device: Option<DeviceChoice>,
    /// Where the sweep's runs and table go (default `runs/sweep-<name>`).
    /// Rerunning the same command there skips finished runs and resumes an
    /// interrupted one.
    #[arg(long)]
    run_dir: Option<PathBuf>,
}

pub fn sweep(a: SweepArgs) -> Result<()> {
    use recforge::pipeline::sweep::{self, Axis, SweepRequest};
    let axes = a
        .grid
        .iter()
        .map(|g| Axis::parse(g))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let report = sweep::sweep(&SweepRequest {
        config: a.config,
        set: a.set,
        axes,
        seeds: a.seeds,
        budget_s: a.budget_s,
        device: a.device,
        run_dir: a.run_dir,
    })?;
    println!("{}", sweep::markdown(&report));
    Ok(())
}

#[derive(Args)]
pub struct RunsArgs {
    /// The directory holding runs (searched a few levels deep).
    #[arg(default_value = "runs")]
    dir: PathBuf,
    /// Sort by this validation metric (e.g. `ndcg@10`); default: the first
    /// run's selection metric.
    #[arg(long, value_name = "METRIC")]
    sort: Option<String>,
}

pub fn runs(a: RunsArgs) -> Result<()> {
    let sort = a
        .sort
        .as_deref()
        .map(str::parse)
        .transpose()
        .map_err(|e: String| anyhow::anyhow!("--sort {e}"))?;
    let report = recforge::pipeline::runs::list(&a.dir, sort)?;
    print!("{}", recforge::pipeline::runs::terminal(&report));
    println!(
        "
{} runs; table in {} and chart in {}",
        report.rows.len(),
        a.dir.join("runs.md").display(),
        a.dir.join("runs.svg").display()
    );
    Ok(())
}

#[derive(Args)]
pub struct ExportArgs {
    /// The run directory (runs/NAME), or a ranking bundle a pipeline run
    /// wrote (runs/NAME/ranking-REPORT), checked and copied whole.
    run_dir: PathBuf,
    /// The bundle directory to write (e.g. models/NAME); replaced atomically.
    #[arg(long)]
    out: PathBuf,
    /// The weights' layout: `burn` (served by recforge-infer), or `pytorch`
    /// for `load_state_dict` into the reference module in models/README.md.
    #[arg(long, value_enum, default_value = "burn")]
    layout: recforge::export::Layout,
}

#[derive(Args)]
pub struct RefreshArgs {
    /// The ranking bundle to refresh (e.g. runs/NAME/ranking-REPORT-refit).
    #[arg(long)]
    bundle: PathBuf,
    /// The newer log (raw H&M files or a prepared cache) with the same
    /// article ids.
    #[arg(long)]
    data: PathBuf,
    /// Serve as of this day (default: the day after the data ends).
    #[arg(long)]
    day: Option<i64>,
    /// Where to write the refreshed bundle (replaced atomically).
    #[arg(long)]
    out: PathBuf,
}

pub fn refresh(a: RefreshArgs) -> Result<()> {
    let m = recforge::export::refresh_ranking(&a.bundle, &a.data, a.day, &a.out)?;
    println!(
        "refreshed ranking bundle: day {} (rows up to day {}), {} articles, models and second stage kept; written to {}",
        m.day,
        m.last_day,
        m.articles,
        a.out.display()
    );
    Ok(())
}

pub fn export(a: ExportArgs) -> Result<()> {
    use recforge_infer::rank::bundle::SecondStageSpec;
    if recforge_infer::rank::bundle::is_ranking(&a.run_dir) {
        anyhow::ensure!(
            a.layout == recforge::export::Layout::Burn,
            "--layout pytorch exports one model's run, not a ranking bundle"
        );
        let m = recforge::export::export_ranking(&a.run_dir, &a.out)?;
        println!(
            "exported ranking bundle `{}` (day {}, {} articles, second stage: {}) to {}",
            m.name,
            m.day,
            m.articles,
            match m.second {
                SecondStageSpec::Trees { .. } => "trees",
                SecondStageSpec::Blender { .. } => "logistic blender",
                SecondStageSpec::Score => "the ranker's score",
            },
            a.out.display()
        );
        return Ok(());
    }
    let e = recforge::export::export_as(&a.run_dir, &a.out, a.layout)?;
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
