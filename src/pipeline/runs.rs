//! `recforge runs [DIR]`: every training run under a directory at a glance
//! (name, model, what its config changes against the first run, the
//! selected validation metric, test metrics, epochs, time, device), sorted
//! by a validation metric, as a terminal table, `DIR/runs.md` and a chart
//! `DIR/runs.svg`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::config::experiment::{Experiment, ModelKind};
use crate::error::{Error, Result};
use crate::eval::metrics::{Measure, Metric};
use crate::train::checkpoint;
use crate::train::evaluate::EvalResult;
use crate::train::summary::RunSummary;
use crate::util::fsutil::write_atomic;

/// How deep below DIR runs are looked for (a sweep's runs sit at
/// `DIR/sweep/combination/seed-S`, a pipeline's at `DIR/pipeline/stage`).
const MAX_DEPTH: usize = 4;

/// One run as listed.
#[derive(Debug, Clone, Serialize)]
pub struct RunRow {
    /// The run's directory relative to DIR.
    pub run: String,
    pub name: String,
    pub model: ModelKind,
    /// `KEY=VALUE` of each config value that differs from the first run's.
    pub changes: Vec<String>,
    /// The run's own selection metric and masking.
    pub metric: Metric,
    pub select_masked: bool,
    pub epochs: usize,
    pub best_epoch: Option<usize>,
    /// The selected epoch's validation metrics.
    pub valid: Option<EvalResult>,
    /// None while the run has not finished.
    pub test: Option<EvalResult>,
    pub train_s: f64,
    pub device: String,
}

impl RunRow {
    /// `metric` on validation, with the masking the run selected with.
    pub fn valid_value(&self, metric: Metric) -> Option<f64> {
        self.valid.as_ref()?.get(self.select_masked, metric)
    }

    pub fn test_value(&self, metric: Metric) -> Option<f64> {
        self.test.as_ref()?.get(self.select_masked, metric)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct RunsReport {
    pub dir: PathBuf,
    /// What the rows are sorted by (validation, best first).
    pub sort: Metric,
    pub rows: Vec<RunRow>,
}

/// Finds the runs under `dir` and sorts them by `sort` on validation (default:
/// the first run's selection metric); writes `runs.md` and `runs.svg` there.
pub fn list(dir: &Path, sort: Option<Metric>) -> Result<RunsReport> {
    let mut found = Vec::new();
    find(dir, 0, &mut found)?;
    found.sort();
    if found.is_empty() {
        return Err(Error::Data(format!(
            "{}: no training runs (directories with config.toml and checkpoints) found",
            dir.display()
        )));
    }
    let mut rows = Vec::new();
    let mut first: Option<BTreeMap<String, String>> = None;
    for run in &found {
        // A run killed before its first checkpoint, or damaged, is named and
        // skipped: the others are still worth listing.
        let listed = flat_config(&run.join("config.toml")).and_then(|config| {
            let changes = first
                .as_ref()
                .map_or_else(Vec::new, |f| differences(f, &config));
            Ok((config, row(dir, run, changes)?))
        });
        match listed {
            Ok((config, r)) => {
                first.get_or_insert(config);
                rows.push(r);
            }
            Err(e) => eprintln!("runs: skipping {}: {e}", run.display()),
        }
    }
    if rows.is_empty() {
        return Err(Error::Data(format!(
            "{}: no readable training run",
            dir.display()
        )));
    }
    let sort = sort.unwrap_or(rows[0].metric);
    // Best validation first; runs without the metric (unfinished, or another
    // k) last, in directory order.
    rows.sort_by(|a, b| match (a.valid_value(sort), b.valid_value(sort)) {
        (Some(x), Some(y)) => y.total_cmp(&x),
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (None, None) => std::cmp::Ordering::Equal,
    });
    let report = RunsReport {
        dir: dir.to_path_buf(),
        sort,
        rows,
    };
    write_atomic(dir.join("runs.md"), markdown(&report).as_bytes())?;
    write_atomic(dir.join("runs.svg"), chart(&report).as_bytes())?;
    Ok(report)
}

fn is_run(dir: &Path) -> bool {
    dir.join("config.toml").is_file()
        && (dir.join("checkpoints").is_dir() || dir.join("best").is_dir())
}

fn find(dir: &Path, depth: usize, out: &mut Vec<PathBuf>) -> Result<()> {
    if is_run(dir) {
        out.push(dir.to_path_buf());
        return Ok(());
    }
    if depth >= MAX_DEPTH {
        return Ok(());
    }
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    for e in entries {
        let e = e.map_err(|e| Error::io(dir, e))?;
        if e.file_type().map_err(|x| Error::io(e.path(), x))?.is_dir() {
            find(&e.path(), depth + 1, out)?;
        }
    }
    Ok(())
}

fn row(root: &Path, run: &Path, changes: Vec<String>) -> Result<RunRow> {
    let exp = Experiment::load(&run.join("config.toml"), &[])?;
    let device = std::fs::read(run.join("run.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|v| v.get("device")?.as_str().map(str::to_string))
        .unwrap_or_else(|| "-".into());
    let rel = run.strip_prefix(root).unwrap_or(run).display().to_string();
    let rel = if rel.is_empty() { ".".into() } else { rel };
    let summary = RunSummary::read(run)?;
    let (epochs, best_epoch, valid, test, train_s) = match summary {
        Some(s) => (s.epochs, s.best_epoch, s.valid, Some(s.test), s.train_s),
        None => {
            // Unfinished: what its newest checkpoint knows.
            let state = checkpoint::read_latest_state(run)?;
            let valid = crate::train::summary::selected(&state).cloned();
            (state.epoch, state.best_epoch, valid, None, state.elapsed_s)
        }
    };
    Ok(RunRow {
        run: rel,
        name: exp.name.clone(),
        model: exp.model.kind,
        changes,
        metric: exp.eval.metric,
        select_masked: exp.eval.select_masked,
        epochs,
        best_epoch,
        valid,
        test,
        train_s,
        device,
    })
}

/// A config file's values by dotted key.
fn flat_config(path: &Path) -> Result<BTreeMap<String, String>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| Error::invalid(path, e.to_string()))?;
    let mut out = BTreeMap::new();
    flatten("", &toml::Value::Table(table), &mut out);
    Ok(out)
}

fn flatten(prefix: &str, v: &toml::Value, out: &mut BTreeMap<String, String>) {
    match v {
        toml::Value::Table(t) => {
            for (k, v) in t {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&key, v, out);
            }
        }
        toml::Value::String(s) => {
            out.insert(prefix.to_string(), s.clone());
        }
        other => {
            out.insert(prefix.to_string(), other.to_string());
        }
    }
}

/// `KEY=VALUE` for each key whose value in `b` differs from `a`'s (the
/// run's name aside: it says nothing about what was trained).
fn differences(a: &BTreeMap<String, String>, b: &BTreeMap<String, String>) -> Vec<String> {
    let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    keys.into_iter()
        .filter(|k| k.as_str() != "name" && a.get(*k) != b.get(*k))
        .map(|k| format!("{k}={}", b.get(k).map_or("(unset)", String::as_str)))
        .collect()
}

/// The table's cells, head first: the same cells make the terminal table
/// and the Markdown.
fn cells(r: &RunsReport) -> Vec<Vec<String>> {
    let k = r.sort.k;
    let mut head = vec![
        "#".to_string(),
        "run".to_string(),
        "model".into(),
        "changes against the first run".into(),
        format!("valid {}", r.sort.column()),
    ];
    head.extend(
        Measure::ALL
            .iter()
            .map(|&measure| format!("test {}", Metric { measure, k }.column())),
    );
    head.extend(["epochs (selected)".into(), "train".into(), "device".into()]);
    let mut out = vec![head];
    let f = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.4}"));
    for (i, row) in r.rows.iter().enumerate() {
        let mut c = vec![
            (i + 1).to_string(),
            row.run.clone(),
            format!("{:?}", row.model).to_lowercase(),
            if row.changes.is_empty() {
                "-".into()
            } else {
                row.changes.join(", ")
            },
            format!(
                "{}{}",
                f(row.valid_value(r.sort)),
                if row.select_masked { " (masked)" } else { "" }
            ),
        ];
        c.extend(
            Measure::ALL
                .iter()
                .map(|&measure| f(row.test_value(Metric { measure, k }))),
        );
        c.push(format!(
            "{} ({})",
            row.epochs,
            row.best_epoch.map_or("-".into(), |b| b.to_string())
        ));
        c.push(if row.test.is_some() {
            crate::train::progress::clock(row.train_s)
        } else {
            format!(
                "{} (unfinished)",
                crate::train::progress::clock(row.train_s)
            )
        });
        c.push(row.device.clone());
        out.push(c);
    }
    out
}

pub fn markdown(r: &RunsReport) -> String {
    let rows = cells(r);
    let mut s = format!(
        "# Runs under `{}`\n\nSorted by validation {} of each run's selected epoch (best first); test metrics on the same masking as the run selected with. `-`: not finished, or not evaluated at that k.\n\n",
        r.dir.display(),
        r.sort.column()
    );
    for (i, row) in rows.iter().enumerate() {
        s += &format!("| {} |\n", row.join(" | "));
        if i == 0 {
            s += &format!("|{}\n", "---|".repeat(row.len()));
        }
    }
    s + "\n![validation metric by run](runs.svg)\n"
}

/// The table for a terminal: columns padded to their widest cell.
pub fn terminal(r: &RunsReport) -> String {
    let rows = cells(r);
    let widths: Vec<usize> = (0..rows[0].len())
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut s = String::new();
    for row in &rows {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        s += line.join("  ").trim_end();
        s.push('\n');
    }
    s
}

fn chart(r: &RunsReport) -> String {
    // Bars are labelled by the table's # column: run paths are too long to
    // stand under a bar.
    let bars: Vec<(String, f64)> = r
        .rows
        .iter()
        .enumerate()
        .filter_map(|(i, row)| Some((format!("#{}", i + 1), row.valid_value(r.sort)?)))
        .collect();
    crate::eval::plot::bar_chart(
        &format!("Validation {} by run (# as in runs.md)", r.sort.column()),
        &r.sort.column(),
        &bars,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn differences_name_what_changed_and_leave_the_name_out() {
        let a: BTreeMap<String, String> = [("name", "a"), ("optim.lr", "0.001"), ("seed", "1")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mut b = a.clone();
        b.insert("name".into(), "b".into());
        b.insert("optim.lr".into(), "0.002".into());
        b.insert("model.d_model".into(), "128".into());
        assert_eq!(
            differences(&a, &b),
            vec![
                "model.d_model=128".to_string(),
                "optim.lr=0.002".to_string()
            ]
        );
        assert!(differences(&a, &a).is_empty());
    }
}
