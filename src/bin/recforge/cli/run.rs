//! `recforge run`: the whole pipeline from one config.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use recforge::pipeline::{self, PipelineConfig};

#[derive(Args)]
pub struct RunArgs {
    /// Pipeline TOML (see experiments/README.md).
    config: PathBuf,
    /// Run directory (default runs/<name>).
    #[arg(long)]
    run_dir: Option<PathBuf>,
    /// Report directory (default experiments/results/<name>).
    #[arg(long)]
    report_dir: Option<PathBuf>,
    /// Override a config value, e.g. `--set trees.rounds=50`, or a model's:
    /// `--set ranker:optim.lr=0.002` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// The models' backend; overrides their experiments' `device`.
    #[arg(long, value_enum)]
    device: Option<recforge::config::device::DeviceChoice>,
}

pub fn run(a: RunArgs) -> Result<()> {
    let cfg = PipelineConfig::load_with(&a.config, &a.set, a.device)?;
    let run_dir = a
        .run_dir
        .unwrap_or_else(|| PathBuf::from("runs").join(&cfg.name));
    let report_dir = a.report_dir.unwrap_or_else(|| {
        PathBuf::from("experiments/results").join(cfg.report.as_ref().unwrap_or(&cfg.name))
    });
    let out = pipeline::run(&cfg, &run_dir, &report_dir)?;
    // The library wrote these; the terminal shows the same text.
    println!(
        "{}",
        std::fs::read_to_string(report_dir.join("results.md")).unwrap_or_default()
    );
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
