//! `recforge bench`: benchmarks that write a Markdown table under
//! `benches/results/`. `data` times `synth` and `prepare` as separate
//! processes (so each one's peak memory is its own) and lives here; `train`,
//! `retrieval`, `serve`, `ranking` and `http` are in their own files.

mod http;
mod ranking;
mod retrieval;
mod serve;
mod train;

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, Result, bail};
use clap::Subcommand;

#[derive(Subcommand)]
pub enum BenchCmd {
    /// Time synth and prepare; the defaults are the real H&M size.
    Data {
        /// Customers of the generated log (the real data has 1,371,980).
        #[arg(long, default_value_t = 1_371_980)]
        customers: usize,
        /// Articles of the generated log (the real data has 105,542).
        #[arg(long, default_value_t = 105_542)]
        articles: usize,
        /// Days of the generated log (the real log covers 734).
        #[arg(long, default_value_t = 734)]
        days: u32,
        /// Scratch directory for the generated files and the cache (a few GiB at full size).
        #[arg(long, default_value = "data/bench")]
        work: PathBuf,
        /// Markdown table to write.
        #[arg(long, default_value = "benches/results/data_pipeline.md")]
        out: PathBuf,
        /// Delete the generated data afterwards.
        #[arg(long)]
        clean: bool,
    },
    /// Time training steps of the sequential ranker per device and shape.
    Train {
        /// Devices to time, comma-separated (flex, wgpu, cuda).
        #[arg(long, value_delimiter = ',', default_value = "flex")]
        devices: Vec<recforge::config::device::DeviceChoice>,
        /// Timed steps per shape and device.
        #[arg(long, default_value_t = 5)]
        steps: usize,
        /// Only shapes whose name contains this text.
        #[arg(long, default_value = "")]
        only: String,
        /// Markdown table to write.
        #[arg(long, default_value = "benches/results/train.md")]
        out: PathBuf,
    },
    /// Two-tower training throughput (samples/s) on a prepared cache, and
    /// exact top-K retrieval throughput (customers/s) at the H&M catalogue size.
    Retrieval {
        /// The two-tower experiment whose model and data are timed.
        #[arg(long, default_value = "experiments/hm_two_tower.toml")]
        config: PathBuf,
        /// Timed training steps (after 2 warm-up steps).
        #[arg(long, default_value_t = 20)]
        steps: usize,
        /// Catalogue size of the retrieval benchmark.
        #[arg(long, default_value_t = 105_542)]
        items: usize,
        /// Customers retrieved for.
        #[arg(long, default_value_t = 20_000)]
        customers: usize,
        /// Candidates per customer.
        #[arg(long, default_value_t = 200)]
        k: usize,
        /// Markdown table to write.
        #[arg(long, default_value = "benches/results/retrieval.md")]
        out: PathBuf,
    },
    /// Serving: the inference crate against burn-flex inference of the same
    /// SASRec bundle (single-customer latency, batch throughput).
    Serve {
        /// Articles of the random SASRec bundle (the H&M catalogue size).
        #[arg(long, default_value_t = 105_542)]
        items: usize,
        /// History length of every customer.
        #[arg(long, default_value_t = 50)]
        len: usize,
        /// Customers timed one by one.
        #[arg(long, default_value_t = 400)]
        latency: usize,
        /// Customers of the batch run.
        #[arg(long, default_value_t = 16_384)]
        batch: usize,
        /// Take the batch's history lengths from this prepared cache
        /// (otherwise every history is `--len` long).
        #[arg(long)]
        lengths_from: Option<PathBuf>,
        /// Markdown table to write.
        #[arg(long, default_value = "benches/results/serve.md")]
        out: PathBuf,
    },
    /// The whole ranking system served from a ranking bundle beside one
    /// model's top K: single-customer latency and batch throughput.
    Ranking {
        /// Customers of the synthetic log.
        #[arg(long, default_value_t = 100_000)]
        customers: usize,
        /// Articles (the H&M catalogue size).
        #[arg(long, default_value_t = 105_542)]
        articles: usize,
        /// Days of the log.
        #[arg(long, default_value_t = 182)]
        days: u32,
        /// Customers timed one by one.
        #[arg(long, default_value_t = 400)]
        latency: usize,
        /// Customers of the batch run.
        #[arg(long, default_value_t = 32_768)]
        batch: usize,
        /// Boosting rounds of the bundle's trees (the full-size run's
        /// served lambdarank model early-stopped at 155).
        #[arg(long, default_value_t = crate::bench::ranking::FULL_RUN_ROUNDS)]
        rounds: u32,
        /// Markdown table to write.
        #[arg(long, default_value = "benches/results/ranking.md")]
        out: PathBuf,
    },
    /// The HTTP server (`recforge-serve`, a separate process) under fixed
    /// request rates from a second process: throughput and p50/p99 latency.
    Http {
        /// Articles of the random SASRec bundle served (the H&M catalogue size).
        #[arg(long, default_value_t = 105_542)]
        items: usize,
        /// Stored customers requested in turn.
        #[arg(long, default_value_t = 10_000)]
        customers: usize,
        /// History length of every customer.
        #[arg(long, default_value_t = 50)]
        len: usize,
        /// Request rates (per second), each run for `--seconds`.
        #[arg(long, value_delimiter = ',', default_value = "250,500,750")]
        rates: Vec<f64>,
        /// Seconds each request rate runs.
        #[arg(long, default_value_t = 30.0)]
        seconds: f64,
        /// Client threads of the load generator.
        #[arg(long, default_value_t = 32)]
        threads: usize,
        /// Server worker threads.
        #[arg(long, default_value_t = 2)]
        workers: usize,
        /// Serve a ranking bundle built on a synthetic log of `--customers`
        /// customers (the whole two-stage system) instead of one model.
        #[arg(long)]
        ranking: bool,
        /// Soak instead of the rate sweep: `--soak-seconds` at
        /// `--soak-rate`, with sold-out marks, purchase events, new
        /// articles and reloads sent meanwhile; records failures, p99 and
        /// the server's resident memory (to benches/results/http_soak.md
        /// unless `--out` says otherwise).
        #[arg(long)]
        soak: bool,
        #[arg(long, default_value_t = 60.0)]
        soak_seconds: f64,
        #[arg(long, default_value_t = 500.0)]
        soak_rate: f64,
        /// Markdown table to write.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

fn timed(args: &[&str]) -> Result<(f64, f64, String)> {
    let exe = std::env::current_exe()?;
    let out = Command::new(&exe)
        .arg("--report-resources")
        .args(args)
        .output()
        .with_context(|| format!("running {}", exe.display()))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        bail!("`recforge {}` failed:\n{stderr}", args.join(" "));
    }
    let (wall, rss) =
        recforge::util::resources::parse_report_line(&stderr).context("no resources line")?;
    Ok((
        wall,
        rss,
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
    ))
}

pub fn run(cmd: BenchCmd) -> Result<()> {
    match cmd {
        BenchCmd::Data {
            customers,
            articles,
            days,
            work,
            out,
            clean,
        } => data(customers, articles, days, work, out, clean),
        BenchCmd::Train {
            devices,
            steps,
            only,
            out,
        } => crate::bench::train::run(&devices, steps, &only, &out),
        BenchCmd::Retrieval {
            config,
            steps,
            items,
            customers,
            k,
            out,
        } => crate::bench::retrieval::run(&config, steps, items, customers, k, &out),
        BenchCmd::Serve {
            items,
            len,
            latency,
            batch,
            lengths_from,
            out,
        } => crate::bench::serve::run(items, len, latency, batch, lengths_from.as_deref(), &out),
        BenchCmd::Ranking {
            customers,
            articles,
            days,
            latency,
            batch,
            rounds,
            out,
        } => crate::bench::ranking::run(customers, articles, days, latency, batch, rounds, &out),
        BenchCmd::Http {
            items,
            customers,
            len,
            rates,
            seconds,
            threads,
            workers,
            ranking,
            soak,
            soak_seconds,
            soak_rate,
            out,
        } => {
            let out = out.unwrap_or_else(|| {
                PathBuf::from(if soak {
                    "benches/results/http_soak.md"
                } else {
                    "benches/results/http.md"
                })
            });
            // The warm-up runs at the first rate: the soak's.
            let rates = if soak { vec![soak_rate] } else { rates };
            let soak = soak.then_some(soak_seconds);
            crate::bench::http::run(
                items, customers, len, &rates, seconds, threads, workers, ranking, soak, &out,
            )
        }
    }
}

fn data(
    customers: usize,
    articles: usize,
    days: u32,
    work: PathBuf,
    out: PathBuf,
    clean: bool,
) -> Result<()> {
    let raw = work.join("raw");
    let cache = work.join("cache");
    let (raw_s, cache_s) = (
        raw.to_string_lossy().to_string(),
        cache.to_string_lossy().to_string(),
    );
    let (c, a, d) = (
        customers.to_string(),
        articles.to_string(),
        days.to_string(),
    );
    let synth = timed(&[
        "synth",
        "--out",
        &raw_s,
        "--customers",
        &c,
        "--articles",
        &a,
        "--days",
        &d,
        "--seed",
        "1",
    ])?;
    println!("synth: {:.1}s, {:.0} MiB — {}", synth.0, synth.1, synth.2);
    let tx_bytes = std::fs::metadata(raw.join("transactions_train.csv"))?.len();
    let prep = timed(&["prepare", "--data", &raw_s, "--out", &cache_s])?;
    println!("prepare: {:.1}s, {:.0} MiB — {}", prep.0, prep.1, prep.2);
    let ds = recforge::data::cache::read(&cache)?;
    let rows = ds.inter.len() as f64;
    let profile = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let table = format!(
        "# Data pipeline benchmark\n\n\
`recforge bench data --customers {customers} --articles {articles} --days {days}` ({profile} build, {cores} cores).\n\
Each stage runs as its own process; peak memory is that process's VmHWM.\n\n\
| stage | rows | input | wall s | rows/s | peak MiB | target | met |\n\
|---|---:|---:|---:|---:|---:|---|---|\n\
| synth | {rows:.0} | - | {:.1} | {:.0} | {:.0} | - | - |\n\
| prepare | {rows:.0} | {:.2} GiB CSV | {:.1} | {:.0} | {:.0} | <= 60 s, <= 6144 MiB | {} |\n",
        synth.0,
        rows / synth.0,
        synth.1,
        tx_bytes as f64 / (1u64 << 30) as f64,
        prep.0,
        rows / prep.0,
        prep.1,
        if prep.0 <= 60.0 && prep.1 <= 6144.0 {
            "yes"
        } else {
            "no"
        },
    );
    recforge::util::fsutil::write_atomic(&out, table.as_bytes())?;
    println!("{table}\nwritten to {}", out.display());
    if clean {
        std::fs::remove_dir_all(&work).ok();
    }
    Ok(())
}
