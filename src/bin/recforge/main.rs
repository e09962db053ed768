//! The `recforge` command line: parses, dispatches to one command function
//! (each in `cli/`, each calling one library function), reports the error.

use std::process::ExitCode;
use std::time::Instant;

use clap::{Parser, Subcommand};

mod bench;
mod cli;

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
    Synth(cli::data::SynthArgs),
    /// Validate raw data (H&M CSVs or RecBole atomic files) and write a Parquet cache.
    Prepare(cli::data::PrepareArgs),
    /// Dataset statistics of a prepared cache; for H&M-schema data, the
    /// calibration statistics beside the real competition data's.
    Stats(cli::data::StatsArgs),
    /// Score the classic baselines on a split and write the results table.
    Baseline(cli::evaluate::BaselineArgs),
    /// Check a Kaggle submission file against a prepared dataset.
    CheckSubmission(cli::submit::CheckArgs),
    /// Generate a small dataset, prepare it and run the baselines: the whole
    /// job on data it makes itself.
    Quickstart(cli::data::QuickstartArgs),
    /// The whole pipeline from one config: data → baselines → two-tower →
    /// ranker → candidates ranked on the test week → submission; unchanged
    /// steps are reused.
    Run(cli::run::RunArgs),
    /// Train the model an experiment file names (or continue a run).
    Train(cli::train::TrainArgs),
    /// Train every combination of a grid of config values over seeds,
    /// resumable, and rank them on validation (test beside it).
    Sweep(cli::train::SweepArgs),
    /// List the training runs under a directory: config differences,
    /// validation and test metrics, epochs, time, device; with a chart.
    Runs(cli::train::RunsArgs),
    /// Export a run's selected model as a bundle for the inference crate
    /// (model.safetensors + manifest.json; format in models/README.md).
    Export(cli::train::ExportArgs),
    /// Refit a ranking bundle's candidate sources and feature statistics on
    /// a newer log, keeping its models and second stage (no retraining).
    Refresh(cli::train::RefreshArgs),
    /// Candidate sources on the last week of a dataset: per-source and
    /// union recall of the week's purchases, and candidates per customer.
    Candidates(cli::evaluate::CandidatesArgs),
    /// Rank the last week's candidates with a sequential-ranker bundle:
    /// MAP@12 and revenue per impression beside the ranker over the whole
    /// catalogue and every baseline.
    Rank(cli::evaluate::RankArgs),
    /// Offline A/B: paired per-customer differences of every metric between
    /// two systems (per-customer files from `rank --out`), with bootstrap
    /// 95% confidence intervals.
    Compare(cli::evaluate::CompareArgs),
    /// Write a Kaggle submission from a bundle for every customer of the data.
    Submit(cli::submit::SubmitArgs),
    /// Customer histories and article prices for the HTTP server
    /// (`recforge-serve`): customers.jsonl and prices.csv in OUT.
    ServingData(cli::submit::ServingDataArgs),
    /// Benchmarks that write a results table.
    Bench {
        #[command(subcommand)]
        what: bench::BenchCmd,
    },
}

fn dispatch(cmd: Cmd) -> anyhow::Result<()> {
    match cmd {
        Cmd::Synth(a) => cli::data::synth(a),
        Cmd::Prepare(a) => cli::data::prepare(a),
        Cmd::Quickstart(a) => cli::data::quickstart(a),
        Cmd::Stats(a) => cli::data::stats(a),
        Cmd::Baseline(a) => cli::evaluate::baseline(a),
        Cmd::Candidates(a) => cli::evaluate::candidates(a),
        Cmd::Rank(a) => cli::evaluate::rank(a),
        Cmd::Compare(a) => cli::evaluate::compare(a),
        Cmd::Train(a) => cli::train::train(a),
        Cmd::Sweep(a) => cli::train::sweep(a),
        Cmd::Runs(a) => cli::train::runs(a),
        Cmd::Export(a) => cli::train::export(a),
        Cmd::Refresh(a) => cli::train::refresh(a),
        Cmd::Run(a) => cli::run::run(a),
        Cmd::Submit(a) => cli::submit::submit(a),
        Cmd::CheckSubmission(a) => cli::submit::check(a),
        Cmd::ServingData(a) => cli::submit::serving_data(a),
        Cmd::Bench { what } => bench::run(what),
    }
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
    let result = dispatch(cli.cmd);
    if report {
        eprintln!("{}", recforge::util::resources::report_line(start));
    }
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
