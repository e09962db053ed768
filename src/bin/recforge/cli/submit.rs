//! Serving-side commands: a submission from a bundle, the submission
//! checker, and the files the HTTP server reads.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

#[derive(Args)]
pub struct SubmitArgs {
    /// The bundle to serve (models/NAME).
    #[arg(long, required_unless_present = "merge")]
    bundle: Option<PathBuf>,
    /// Raw H&M files (customers.csv, articles.csv, transactions_train.csv)
    /// or a prepared cache.
    #[arg(long)]
    data: PathBuf,
    /// The submission CSV to write (replaced atomically).
    #[arg(long)]
    out: PathBuf,
    /// Withhold articles with no sale in this many days (but some before) as sold out.
    #[arg(long, default_value_t = 0)]
    stale_days: u32,
    /// Customers per parallel chunk.
    #[arg(long, default_value_t = 8192)]
    chunk: usize,
    /// Only the customers of shard I of N (I from 0), by a stable hash of
    /// the customer id: one array-job task's part; join the parts with
    /// --merge.
    #[arg(long, value_name = "I/N", conflicts_with = "merge")]
    shard: Option<String>,
    /// Join these shard files (every I of N) into the submission, in
    /// customer order, and check it: the file one unsharded run writes.
    #[arg(long, value_name = "SHARD.csv", num_args = 1.., conflicts_with_all = ["bundle", "stale_days"])]
    merge: Vec<PathBuf>,
}

pub fn submit(a: SubmitArgs) -> Result<()> {
    if !a.merge.is_empty() {
        let ds = recforge::export::serve::load_data(&a.data)?;
        let r = recforge::submit::file::merge(&ds, &a.merge, &a.out)?;
        println!(
            "merged {} shard files into {} ({} customers); check: {r:?}",
            a.merge.len(),
            a.out.display(),
            r.customers
        );
        return Ok(());
    }
    let opt = recforge::submit::SubmitOptions {
        bundle: a.bundle.expect("clap requires --bundle without --merge"),
        data: a.data,
        out: a.out,
        stale_days: a.stale_days,
        chunk: a.chunk,
        shard: a
            .shard
            .as_deref()
            .map(recforge::submit::file::Shard::parse)
            .transpose()?,
    };
    let r = recforge::submit::submit(&opt)?;
    println!("{}", recforge::submit::summary(&r, &opt.out));
    Ok(())
}

#[derive(Args)]
pub struct CheckArgs {
    /// The submission CSV (customer_id,prediction).
    #[arg(long)]
    file: PathBuf,
    /// The prepared cache of the same data (from `recforge prepare`).
    #[arg(long)]
    data: PathBuf,
}

pub fn check(a: CheckArgs) -> Result<()> {
    let ds = recforge::data::cache::read(&a.data)?;
    let r = recforge::submit::file::check(&ds, &a.file)?;
    println!(
        "ok: {} rows, every one of {} customers covered",
        r.rows, r.customers
    );
    Ok(())
}

#[derive(Args)]
pub struct ServingDataArgs {
    /// Raw H&M files or a prepared cache.
    #[arg(long)]
    data: PathBuf,
    /// Directory to write customers.jsonl and prices.csv into.
    #[arg(long)]
    out: PathBuf,
    /// Purchases kept per customer, most recent (a ranking bundle's
    /// features count every purchase: give it a large value).
    #[arg(long, default_value_t = 50)]
    history_len: usize,
    /// Serve as of this day (days since 1970-01-01: the purchases before
    /// it, with their dates), e.g. a ranking bundle's `day`; default the
    /// day after the data.
    #[arg(long)]
    day: Option<i64>,
    /// `jsonl` (customers.jsonl, the HTTP server's) or `parquet`
    /// (customers.parquet and purchases.parquet, for batch jobs such as
    /// `python -m recforge.spark score`).
    #[arg(long, value_enum, default_value = "jsonl")]
    format: recforge::export::serving_data::Format,
}

pub fn serving_data(a: ServingDataArgs) -> Result<()> {
    use recforge::export::serving_data::{Format, write_as};
    let w = write_as(&a.data, &a.out, a.history_len, a.day, a.format)?;
    println!(
        "{}: {} ({} customers, {} with purchases), prices.csv ({} articles)",
        a.out.display(),
        match a.format {
            Format::Jsonl => "customers.jsonl",
            Format::Parquet => "customers.parquet + purchases.parquet",
        },
        w.customers,
        w.with_history,
        w.priced_articles
    );
    println!(
        "histories end before {}; to serve them as of that day, set `today = \"{}\"` in the tenant's config (without it the server ages them by its clock)",
        recforge::util::dates::format_ymd(w.day as i32),
        recforge::util::dates::format_ymd(w.day as i32)
    );
    Ok(())
}
