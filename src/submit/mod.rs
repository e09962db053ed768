//! `recforge submit`: a Kaggle submission from an exported bundle, for
//! every customer of the data, on all cores, streamed to disk in customer
//! order and checked by the format checker at the end.

pub mod file;
pub mod ranking;

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;

use crate::data::history::History;
use crate::error::{Error, Result};
use crate::eval::baselines::{self, Fitted, Kind};
use crate::export::serve::{Server, load_data};
use crate::submit::file::K;

#[derive(Debug, Clone)]
pub struct SubmitOptions {
    pub bundle: PathBuf,
    pub data: PathBuf,
    pub out: PathBuf,
    /// Articles that sold before but not in the last this many days are
    /// withheld as sold out (0 = all available).
    pub stale_days: u32,
    /// Customers per parallel chunk.
    pub chunk: usize,
    /// Only this part of the customers (`--shard I/N`).
    pub shard: Option<file::Shard>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SubmitReport {
    pub customers: usize,
    pub cold_start: usize,
    pub new_articles: usize,
    pub unavailable: usize,
    pub seconds: f64,
    pub check: file::CheckReport,
}

pub fn submit(opt: &SubmitOptions) -> Result<SubmitReport> {
    let t0 = Instant::now();
    let ds = load_data(&opt.data)?;
    if ds.meta.source != crate::data::Source::Hm {
        return Err(Error::Data(format!(
            "{}: submissions are written for H&M-format data only",
            opt.data.display()
        )));
    }
    if recforge_infer::rank::bundle::is_ranking(&opt.bundle) {
        return ranking::submit(opt, &ds, t0);
    }
    let server = Server::new(&opt.bundle, &ds)?;
    let hist = History::of_all(&ds);
    let rows = crate::data::split::time_order(&ds);
    let end = rows.last().map(|&r| ds.day(r)).unwrap_or(0);
    let serve_day = end + 1;
    let unavailable = mark_stale(&server, &ds, &rows, end, opt.stale_days)?;
    let snap = server.engine.pool.snapshot();
    // Customers without history: time-decayed popularity of the data
    // itself (fresher than the bundle's list), among servable articles.
    let fitted = Fitted::fit(&ds, &rows, baselines::Params::default());
    let mut pop = Vec::new();
    fitted.recommend(Kind::DecayedPopular, 0, 10 * K, &mut pop);
    let cold: Vec<u32> = pop
        .into_iter()
        .filter(|&i| snap.is_available(server.item_of[i as usize]))
        .take(K)
        .collect();
    if cold.len() < K {
        return Err(Error::Data(format!(
            "fewer than {K} servable articles for the cold-start list"
        )));
    }
    let mut cold_n = 0;
    let check = file::write(&ds, &opt.out, opt.chunk, opt.shard, |chunk| {
        let lists = crate::export::serve::top_lists(&server, &ds, &hist, chunk, serve_day, K)?;
        Ok(lists
            .into_iter()
            .map(|l| {
                if l.is_empty() {
                    cold_n += 1;
                    cold.clone()
                } else {
                    l
                }
            })
            .collect())
    })?;
    Ok(SubmitReport {
        customers: check.customers,
        cold_start: cold_n,
        new_articles: server.new_articles,
        unavailable,
        seconds: t0.elapsed().as_secs_f64(),
        check,
    })
}

/// Marks articles with no sale in the last `days` days (but some before)
/// sold out; returns how many.
fn mark_stale(
    server: &Server,
    ds: &crate::data::Dataset,
    rows: &[usize],
    end: i64,
    days: u32,
) -> Result<usize> {
    if days == 0 {
        return Ok(0);
    }
    let mut last = vec![i64::MIN; ds.items.len()];
    for &r in rows {
        let i = ds.inter.item[r] as usize;
        last[i] = last[i].max(ds.day(r));
    }
    let stale: Vec<&str> = (1..ds.items.len())
        .filter(|&i| last[i] != i64::MIN && last[i] <= end - i64::from(days))
        .map(|i| ds.items.ids[i].as_str())
        .collect();
    server.engine.pool.update(|s| {
        for a in &stale {
            s.set_available(a, false)?;
        }
        Ok(())
    })?;
    Ok(stale.len())
}

/// For the CLI: a one-line summary.
pub fn summary(r: &SubmitReport, out: &Path) -> String {
    format!(
        "wrote {} ({} customers, {} served the cold-start list, {} new articles embedded from attributes, {} withheld as sold out) in {:.1}s; check: {:?}",
        out.display(),
        r.customers,
        r.cold_start,
        r.new_articles,
        r.unavailable,
        r.seconds,
        r.check
    )
}
