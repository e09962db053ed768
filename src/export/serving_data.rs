//! What the HTTP server (`recforge-serve`) reads beside a bundle: each
//! customer's recent purchases and attributes, and each article's price.
//! The server has no polars and no dataset code, so the trainer writes
//! these in plain formats (JSON lines, CSV).

use std::io::Write;
use std::path::Path;

use serde_json::json;

use crate::data::history::History;
use crate::error::{Error, Result};
use crate::export::serve::load_data;
use crate::util::fsutil::AtomicFile;

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
    let ds = load_data(data)?;
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    let hist = History::of_all(&ds);
    let n_rows = ds.inter.user.len();
    let end_day = (0..n_rows).map(|r| ds.day(r)).max().unwrap_or(0);
    let serve_day = day.unwrap_or(end_day + 1);

    let path = out.join("customers.jsonl");
    let mut f = AtomicFile::create(&path)?;
    let mut with_history = 0;
    for u in 1..ds.users.len() {
        let (items, days) = hist.as_of(u as u32, serve_day);
        let channels = &hist.channels(u as u32)[..items.len()];
        let take = items.len().saturating_sub(history_len);
        with_history += usize::from(!items.is_empty());
        let history: Vec<_> = (take..items.len())
            .map(|j| {
                json!({
                    "article_id": ds.items.ids[items[j] as usize],
                    "date": crate::util::dates::format_ymd(days[j] as i32),
                    "channel": channels[j],
                })
            })
            .collect();
        let mut attributes = serde_json::Map::new();
        for feat in &ds.users.features {
            let v = &feat.vocab[feat.codes[u] as usize];
            if !v.is_empty() {
                attributes.insert(feat.name.clone(), json!(v));
            }
        }
        if let Some(&age) = ds.age.get(u)
            && !age.is_nan()
        {
            attributes.insert("age".into(), json!(age.to_string()));
        }
        let line =
            json!({"customer_id": ds.users.ids[u], "history": history, "attributes": attributes});
        writeln!(f.writer(), "{line}").map_err(|e| Error::io(&path, e))?;
    }
    f.commit()?;

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
    Ok(Written {
        day: serve_day,
        customers: ds.users.len() - 1,
        with_history,
        priced_articles: priced,
    })
}
