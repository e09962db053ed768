//! Data commands: generate a log, prepare raw files into a cache, and the
//! baselines-only quick start.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Args;
use recforge::ingest::Format;
use recforge::ingest::synth::{self, SynthConfig};
use recforge::pipeline::commands;

#[derive(Args)]
pub struct SynthArgs {
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

pub fn synth(a: SynthArgs) -> Result<()> {
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

#[derive(Args)]
pub struct PrepareArgs {
    /// Directory with the raw files; with `--format table`, the log file
    /// itself (.csv, .tsv or .parquet).
    #[arg(long)]
    data: PathBuf,
    /// Cache directory to write (replaced atomically when complete).
    #[arg(long)]
    out: PathBuf,
    /// Input format; `auto` picks H&M when transactions_train.csv exists.
    #[arg(long, value_enum, default_value = "auto")]
    format: Format,
    /// `--format table`: which columns hold the fields, as
    /// `user=COL,item=COL,time=COL[,price=COL][,channel=COL]`. Time may be a
    /// date, a date and time (UTC, or with an offset) or epoch seconds.
    #[arg(long, required_if_eq("format", "table"))]
    map: Option<String>,
    /// `--format table`: an item attribute file (.csv, .tsv or .parquet);
    /// it closes the item set (a log row with another item is an error).
    #[arg(long, requires = "item_map")]
    items: Option<PathBuf>,
    /// The item file's map: `id=COL[,NAME=COL...]`; NAME=COL renames a
    /// column (e.g. `product_code=style` feeds the ranker's same-product
    /// features); every other column is kept as a categorical feature.
    #[arg(long, requires = "items")]
    item_map: Option<String>,
    /// `--format table`: a user attribute file.
    #[arg(long, requires = "user_map")]
    users: Option<PathBuf>,
    /// The user file's map: `id=COL[,age=COL][,NAME=COL...]`.
    #[arg(long, requires = "users")]
    user_map: Option<String>,
}

pub fn prepare(a: PrepareArgs) -> Result<()> {
    let t = Instant::now();
    let ds = match (a.format, &a.map) {
        (Format::Table, Some(map)) => {
            use recforge::ingest::generic::{EntityMap, LogMap, TableSpec};
            let attr = |file: &Option<PathBuf>, map: &Option<String>, flag: &str| match (file, map)
            {
                (Some(f), Some(m)) => EntityMap::parse(m, flag).map(|m| Some((f.clone(), m))),
                _ => Ok(None),
            };
            let spec = TableSpec {
                log: a.data.clone(),
                map: LogMap::parse(map)?,
                items: attr(&a.items, &a.item_map, "--item-map")?,
                users: attr(&a.users, &a.user_map, "--user-map")?,
            };
            commands::prepare_table(&spec, &a.out)
        }
        (Format::Table, None) => anyhow::bail!("--format table needs --map"),
        (_, Some(_)) => anyhow::bail!("--map is for --format table"),
        _ => commands::prepare(&a.data, &a.out, a.format),
    }
    .with_context(|| format!("preparing {}", a.data.display()))?;
    println!("{}", prepared_line(&ds, &a.out, t.elapsed().as_secs_f64()));
    Ok(())
}

fn prepared_line(ds: &recforge::data::Dataset, out: &std::path::Path, secs: f64) -> String {
    format!(
        "prepared `{}`: {} users, {} items, {} interactions -> {} in {secs:.1}s",
        ds.meta.name,
        ds.users.len() - 1,
        ds.items.len() - 1,
        ds.inter.len(),
        out.display(),
    )
}

#[derive(Args)]
pub struct QuickstartArgs {
    /// Working directory for the data, cache, results and submission.
    #[arg(long, default_value = "data/quickstart")]
    dir: PathBuf,
    /// Customers of the generated log.
    #[arg(long, default_value_t = 20_000)]
    customers: usize,
    /// Articles of the generated log.
    #[arg(long, default_value_t = 4_000)]
    articles: usize,
    /// Days of the generated log.
    #[arg(long, default_value_t = 182)]
    days: u32,
    /// Seed of every random draw.
    #[arg(long, default_value_t = 42)]
    seed: u64,
}

pub fn quickstart(a: QuickstartArgs) -> Result<()> {
    let opt = commands::QuickstartOptions {
        dir: a.dir.clone(),
        synth: SynthConfig {
            customers: a.customers,
            articles: a.articles,
            days: a.days,
            seed: a.seed,
            ..SynthConfig::default()
        },
    };
    let q = commands::quickstart(&opt)
        .with_context(|| format!("quick start in {}", a.dir.display()))?;
    println!(
        "1/3 synth: {} transactions in {:.1}s -> {}",
        q.synth.transactions,
        q.synth_secs,
        a.dir.join("raw").display()
    );
    println!("{}", prepared_line(&q.dataset, &q.cache, q.prepare_secs));
    println!("2/3 prepare: done");
    println!("3/3 baselines:");
    super::evaluate::print_baselines(&q.baselines);
    println!(
        "submission check: ok, {} rows for {} customers",
        q.check.rows, q.check.customers
    );
    Ok(())
}

#[derive(Args)]
pub struct StatsArgs {
    /// Prepared cache directory (from `recforge prepare` or `recforge run`).
    cache: PathBuf,
    /// Days in the last period (the competition's test week: 7).
    #[arg(long, default_value_t = 7)]
    target_days: u32,
    /// Also write the tables as Markdown (and the numbers as JSON beside
    /// it, same stem).
    #[arg(long)]
    out: Option<PathBuf>,
}

/// `stats`: the usual dataset statistics and, for H&M-schema data, each
/// calibration statistic beside the real competition data's.
pub fn stats(a: StatsArgs) -> Result<()> {
    use recforge::eval::stats;
    let ds = recforge::data::cache::read(&a.cache)
        .with_context(|| format!("reading the cache {}", a.cache.display()))?;
    let s = stats::compute(&ds, a.target_days)?;
    let checks = match ds.meta.source {
        recforge::data::Source::Hm => stats::hm_checks(&s),
        recforge::data::Source::Recbole | recforge::data::Source::Table => Vec::new(),
    };
    let md = stats::markdown(&s, &checks);
    print!("{md}");
    if let Some(out) = &a.out {
        recforge::util::fsutil::write_atomic(out, md.as_bytes())?;
        let json = serde_json::json!({ "stats": s, "hm_checks": checks });
        recforge::util::fsutil::write_atomic(
            out.with_extension("json"),
            serde_json::to_string_pretty(&json)?.as_bytes(),
        )?;
    }
    Ok(())
}
