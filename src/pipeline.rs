//! The CLI's commands as library functions, so tests run exactly what users run.

use std::path::{Path, PathBuf};

use crate::baseline::{self, Fitted, Kind};
use crate::data::{Dataset, Source};
use crate::error::{Error, Result};
use crate::eval::{Targets, evaluate};
use crate::report::{Row, Table};
use crate::split::{SplitKind, split};
use crate::{cache, ingest, submission};

/// `prepare`: reads raw files, validates them and writes the cache atomically.
pub fn prepare(data: &Path, out: &Path, format: ingest::Format) -> Result<Dataset> {
    let ds = ingest::load(data, format)?;
    cache::write(&ds, out)?;
    Ok(ds)
}

pub struct BaselineOptions {
    pub split: SplitKind,
    pub target_days: u32,
    pub ks: Vec<usize>,
    pub params: baseline::Params,
    pub results_dir: PathBuf,
    /// Where to write the Kaggle submission of the best baseline (H&M data only).
    pub submission: Option<PathBuf>,
}

pub struct BaselineOutcome {
    pub table: Table,
    pub files: (PathBuf, PathBuf),
    pub best: Kind,
    pub submission: Option<PathBuf>,
}

/// `baseline`: fits every baseline on the history before the target period,
/// scores it on the target period, writes the table, and optionally refits
/// the best one on all data to write a submission for the following week.
pub fn run_baselines(ds: &Dataset, opt: &BaselineOptions) -> Result<BaselineOutcome> {
    if opt.ks.is_empty() || opt.ks.contains(&0) {
        return Err(Error::Config("k values must be >= 1".into()));
    }
    let s = split(ds, opt.split, opt.target_days)?;
    // Leave-one-out follows RecBole: models see only the training part when
    // scored on test. Time splits use everything before the target period.
    let history = match opt.split {
        SplitKind::Loo | SplitKind::Explicit => s.train.clone(),
        SplitKind::LastWeek => s.history(),
    };
    let targets = Targets::from_rows(ds, &s.test);
    let fitted = Fitted::fit(ds, &history, opt.params.clone());
    let rows: Vec<Row> = Kind::ALL
        .iter()
        .map(|&kind| Row {
            name: kind.name().to_string(),
            metrics: evaluate(&targets, &opt.ks, ds.items.len(), |u, k, out| {
                fitted.recommend(kind, u, k, out)
            }),
        })
        .collect();
    let best_idx = (0..rows.len())
        .max_by(|&a, &b| {
            rows[a].metrics[0]
                .map
                .total_cmp(&rows[b].metrics[0].map)
                .then(b.cmp(&a))
        })
        .unwrap_or(0);
    let period = match s.test_start_day {
        Some(d) => format!(
            "target period {} .. {} ({} days)",
            crate::dates::format_ymd(d as i32),
            crate::dates::format_ymd((d + opt.target_days as i64 - 1) as i32),
            opt.target_days
        ),
        None => "per-user held-out interactions".into(),
    };
    let protocol = format!(
        "Split `{:?}`: {period}; fitted on {} history rows, scored on {} customers with {} target rows; \
full ranking over {} items; already-bought items {}. Baseline parameters: {}.",
        opt.split,
        history.len(),
        targets.len(),
        s.test.len(),
        ds.items.len() - 1,
        if opt.params.mask_seen {
            "masked"
        } else {
            "not masked"
        },
        serde_json::to_string(&opt.params).unwrap_or_default()
    );
    let table = Table {
        title: format!("Baselines on {}", ds.meta.name),
        dataset: ds.meta.name.clone(),
        protocol,
        rows,
        has_price: ds.meta.has_price,
        notes: String::new(),
        extra: serde_json::Value::Null,
    };
    let split_name = match opt.split {
        SplitKind::LastWeek => "last-week",
        SplitKind::Loo => "loo",
        SplitKind::Explicit => "explicit",
    };
    let stem = format!(
        "baselines-{}-{}{}",
        ds.meta.name,
        split_name,
        if opt.params.mask_seen { "-masked" } else { "" }
    );
    let files = table.write(&opt.results_dir, &stem)?;
    let best = Kind::ALL[best_idx];

    let submission = match (&opt.submission, ds.meta.source) {
        (Some(path), Source::Hm) => {
            let all = crate::split::time_order(ds);
            let full = Fitted::fit(ds, &all, opt.params.clone());
            submission::write(ds, path, |u, out| {
                full.recommend(best, u, submission::K, out)
            })?;
            Some(path.clone())
        }
        _ => None,
    };
    Ok(BaselineOutcome {
        table,
        files,
        best,
        submission,
    })
}
