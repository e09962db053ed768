//! What the HTTP server (`recforge-serve`) reads beside a bundle: each
//! customer's recent purchases and attributes, and each article's price.
//! The server has no polars and no dataset code, so the trainer writes
//! these in plain formats (JSON lines, CSV); for batch jobs (the Spark
//! scorer) the same as two Parquet tables.

use std::io::Write;
use std::path::Path;

use serde_json::json;

use crate::data::history::History;
use crate::error::{Error, Result};
use crate::export::serve::load_data;
use crate::util::fsutil::AtomicFile;

/// How the customers are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Format {
    /// `customers.jsonl`: one JSON object per customer (the server's).
    #[default]
    Jsonl,
    /// `customers.parquet` (`row`, `customer_id`, one string column per
    /// attribute, null where unknown) and `purchases.parquet`
    /// (`customer_id`, `seq`: the purchase's place in the customer's
    /// history, oldest first; `article_id`, `day` as days since
    /// 1970-01-01, `channel`): for batch jobs.
    Parquet,
}

pub struct Written {
    /// The day served (days since 1970-01-01): the server's `today` to
    /// replay these histories as of it.
    pub day: i64,
    pub customers: usize,
    pub with_history: usize,
    pub priced_articles: usize,
}

/// Writes `customers.jsonl` and `prices.csv` for the data in `data` (raw
/// files or a prepared cache) into `out`. Histories keep each customer's
/// last `history_len` purchases before the day served, with their dates
/// (the server ages them from its `today`) and sales channels; the day
/// served is `day`, or the day after
/// the data ends (the day a freshly trained model is served). Prices are
/// the mean paid over each article's last 28 days of sales.
pub fn write(data: &Path, out: &Path, history_len: usize, day: Option<i64>) -> Result<Written> {
    write_as(data, out, history_len, day, Format::Jsonl)
}

/// [`write`] with the customers in `format`.
pub fn write_as(
    data: &Path,
    out: &Path,
    history_len: usize,
    day: Option<i64>,
    format: Format,
) -> Result<Written> {
    let ds = load_data(data)?;
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    let hist = History::of_all(&ds);
    let n_rows = ds.inter.user.len();
    let end_day = (0..n_rows).map(|r| ds.day(r)).max().unwrap_or(0);
    let serve_day = day.unwrap_or(end_day + 1);
    let with_history = match format {
        Format::Jsonl => write_jsonl(&ds, &hist, out, history_len, serve_day)?,
        Format::Parquet => write_parquet(&ds, &hist, out, history_len, serve_day)?,
    };
    let priced = write_prices(&ds, out, serve_day)?;
    Ok(Written {
        day: serve_day,
        customers: ds.users.len() - 1,
        with_history,
        priced_articles: priced,
    })
}

/// Customer `u`'s attributes as the server reads them (raw values; `age`
/// in years), unknown ones left out.
fn attributes(ds: &crate::data::Dataset, u: usize) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = ds
        .users
        .features
        .iter()
        .map(|feat| {
            (
                feat.name.clone(),
                feat.vocab[feat.codes[u] as usize].clone(),
            )
        })
        .filter(|(_, v)| !v.is_empty())
        .collect();
    if let Some(&age) = ds.age.get(u)
        && !age.is_nan()
    {
        out.push(("age".into(), age.to_string()));
    }
    out
}

/// Customer `u`'s last `history_len` purchases before `serve_day`, oldest
/// first: (item, day, channel) each.
fn kept(
    hist: &History,
    u: usize,
    serve_day: i64,
    history_len: usize,
) -> impl Iterator<Item = (u32, i64, u8)> + '_ {
    let (items, days) = hist.as_of(u as u32, serve_day);
    let channels = &hist.channels(u as u32)[..items.len()];
    let take = items.len().saturating_sub(history_len);
    (take..items.len()).map(move |j| (items[j], days[j], channels[j]))
}

/// The customers as Parquet tables; returns how many have purchases.
fn write_parquet(
    ds: &crate::data::Dataset,
    hist: &History,
    out: &Path,
    history_len: usize,
    serve_day: i64,
) -> Result<usize> {
    use polars::prelude::Column;
    let names: Vec<String> = ds
        .users
        .features
        .iter()
        .map(|f| f.name.clone())
        .chain(std::iter::once("age".to_string()))
        .collect();
    let n = ds.users.len() - 1;
    let (mut row, mut ids) = (Vec::with_capacity(n), Vec::with_capacity(n));
    let mut attrs: Vec<Vec<Option<String>>> = vec![Vec::with_capacity(n); names.len()];
    let (mut p_customer, mut p_seq, mut p_article, mut p_day, mut p_channel) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut with_history = 0;
    for u in 1..ds.users.len() {
        row.push(u as u32);
        ids.push(ds.users.ids[u].clone());
        let a = attributes(ds, u);
        for (col, name) in attrs.iter_mut().zip(&names) {
            col.push(a.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()));
        }
        let mut any = false;
        for (seq, (item, day, channel)) in kept(hist, u, serve_day, history_len).enumerate() {
            any = true;
            p_customer.push(ds.users.ids[u].clone());
            p_seq.push(seq as u32);
            p_article.push(ds.items.ids[item as usize].clone());
            p_day.push(day as i32);
            // 0 as the JSON lines and submit keep it: a null would drop
            // every channel of the customer at serving (no online share).
            p_channel.push(channel);
        }
        with_history += usize::from(any);
    }
    let mut columns = vec![
        Column::new("row".into(), row),
        Column::new("customer_id".into(), ids),
    ];
    for (name, col) in names.iter().zip(attrs) {
        columns.push(Column::new(name.as_str().into(), col));
    }
    // Each table into a temp file beside its target (deleted if anything
    // fails), renamed into place only once both are written.
    let temp = || {
        tempfile::Builder::new()
            .suffix(".tmp")
            .tempfile_in(out)
            .map_err(|e| Error::io(out, e))
    };
    let (customers, purchases) = (temp()?, temp()?);
    crate::data::cache::write_parquet(customers.path(), columns)?;
    crate::data::cache::write_parquet(
        purchases.path(),
        vec![
            Column::new("customer_id".into(), p_customer),
            Column::new("seq".into(), p_seq),
            Column::new("article_id".into(), p_article),
            Column::new("day".into(), p_day),
            Column::new("channel".into(), p_channel),
        ],
    )?;
    for (t, name) in [
        (customers, "customers.parquet"),
        (purchases, "purchases.parquet"),
    ] {
        t.persist(out.join(name))
            .map_err(|e| Error::io(out.join(name), e.error))?;
    }
    Ok(with_history)
}

/// The customers as JSON lines; returns how many have purchases.
fn write_jsonl(
    ds: &crate::data::Dataset,
    hist: &History,
    out: &Path,
    history_len: usize,
    serve_day: i64,
) -> Result<usize> {
    let path = out.join("customers.jsonl");
    let mut f = AtomicFile::create(&path)?;
    let mut with_history = 0;
    for u in 1..ds.users.len() {
        let history: Vec<_> = kept(hist, u, serve_day, history_len)
            .map(|(item, day, channel)| {
                json!({
                    "article_id": ds.items.ids[item as usize],
                    "date": crate::util::dates::format_ymd(day as i32),
                    "channel": channel,
                })
            })
            .collect();
        with_history += usize::from(!history.is_empty());
        let attributes: serde_json::Map<String, serde_json::Value> = attributes(ds, u)
            .into_iter()
            .map(|(k, v)| (k, json!(v)))
            .collect();
        let line =
            json!({"customer_id": ds.users.ids[u], "history": history, "attributes": attributes});
        writeln!(f.writer(), "{line}").map_err(|e| Error::io(&path, e))?;
    }
    f.commit()?;
    Ok(with_history)
}

/// `prices.csv`: each article's mean price over its last 28 days of sales
/// before the day served; returns how many articles have one.
fn write_prices(ds: &crate::data::Dataset, out: &Path, serve_day: i64) -> Result<usize> {
    let n_rows = ds.inter.user.len();
    // Mean price over each article's last 28 days of sales.
    // Only sales before the day served.
    let mut last = vec![i64::MIN; ds.items.len()];
    for r in (0..n_rows).filter(|&r| ds.day(r) < serve_day) {
        let i = ds.inter.item[r] as usize;
        last[i] = last[i].max(ds.day(r));
    }
    let mut sum = vec![(0f64, 0u32); ds.items.len()];
    for r in 0..n_rows {
        let i = ds.inter.item[r] as usize;
        let p = ds.inter.price[r];
        if p > 0.0 && ds.day(r) < serve_day && ds.day(r) > last[i] - 28 {
            sum[i].0 += f64::from(p);
            sum[i].1 += 1;
        }
    }
    let path = out.join("prices.csv");
    let mut f = AtomicFile::create(&path)?;
    f.write_all(b"article_id,price\n")?;
    let mut priced = 0;
    for (i, &(s, n)) in sum.iter().enumerate().skip(1) {
        if n > 0 {
            priced += 1;
            writeln!(f.writer(), "{},{}", ds.items.ids[i], s / f64::from(n))
                .map_err(|e| Error::io(&path, e))?;
        }
    }
    f.commit()?;
    Ok(priced)
}
