//! `recforge sweep EXPERIMENT.toml --grid KEY=V1,V2 ...`: every combination
//! of the grid's values, each over the same seeds, selected on validation
//! only. The table is sorted by the mean validation value of the
//! experiment's selection metric; test metrics stand beside it, never used
//! to choose.
//!
//! Each combination's runs live in `SWEEP/<combination>/seed-S`, named by
//! the combination's settings, and a finished run is never trained again:
//! a killed sweep rerun with the same command resumes the run it was in
//! from its newest checkpoint and goes on. Every run reads the one prepared
//! cache the experiment names.

use std::path::PathBuf;

use serde::Serialize;

use crate::config::experiment::Experiment;
use crate::error::{Error, Result};
use crate::eval::metrics::Metric;
use crate::util::fsutil::write_atomic;

use super::seeds::{self, Column, Fate, SeedRun, Spread};

/// One axis of the grid: a config key and the values it takes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Axis {
    pub key: String,
    pub values: Vec<String>,
}

impl Axis {
    /// Parses `KEY=V1,V2,...`; a comma inside brackets or quotes belongs to
    /// the value (`eval.ks=[10,20],[12]` is two values).
    pub fn parse(spec: &str) -> Result<Axis> {
        let bad = |m: &str| Error::Config(format!("--grid `{spec}`: {m}"));
        let (key, list) = spec
            .split_once('=')
            .ok_or_else(|| bad("expected KEY=VALUE,VALUE,..."))?;
        let key = key.trim();
        if key.is_empty() || key.contains(char::is_whitespace) {
            return Err(bad("the key must be a config key such as optim.lr"));
        }
        let (mut values, mut cur, mut depth, mut quoted) = (Vec::new(), String::new(), 0i32, false);
        for c in list.chars() {
            match c {
                '"' => quoted = !quoted,
                '[' | '{' if !quoted => depth += 1,
                ']' | '}' if !quoted => depth -= 1,
                ',' if !quoted && depth == 0 => {
                    values.push(std::mem::take(&mut cur).trim().to_string());
                    continue;
                }
                _ => {}
            }
            cur.push(c);
        }
        values.push(cur.trim().to_string());
        if values.iter().any(String::is_empty) {
            return Err(bad("an empty value"));
        }
        let mut seen = values.clone();
        seen.sort();
        seen.dedup();
        if seen.len() != values.len() {
            return Err(bad("a value is given twice"));
        }
        Ok(Axis {
            key: key.to_string(),
            values,
        })
    }
}

/// Every combination of the axes' values, the first axis varying slowest:
/// each is one `KEY=VALUE` per axis.
pub fn combinations(axes: &[Axis]) -> Vec<Vec<(String, String)>> {
    axes.iter().fold(vec![Vec::new()], |acc, axis| {
        acc.iter()
            .flat_map(|prefix| {
                axis.values.iter().map(move |v| {
                    let mut c = prefix.clone();
                    c.push((axis.key.clone(), v.clone()));
                    c
                })
            })
            .collect()
    })
}

/// A combination's directory name: its settings, readable, with anything a
/// file system might mind replaced.
pub fn dir_name(combo: &[(String, String)]) -> String {
    let text: Vec<String> = combo.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let name: String = text
        .join(",")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "=.,-_+".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    if name.is_empty() { "base".into() } else { name }
}

#[derive(Debug, Clone)]
pub struct SweepRequest {
    pub config: PathBuf,
    /// Overrides applied to every combination.
    pub set: Vec<String>,
    pub axes: Vec<Axis>,
    pub seeds: usize,
    /// Each run's training budget in seconds (`train.time_budget_s`).
    pub budget_s: Option<f64>,
    pub device: Option<crate::config::device::DeviceChoice>,
    /// Default `runs/sweep-<name>`.
    pub run_dir: Option<PathBuf>,
}

/// One combination over its seeds.
#[derive(Debug, Clone, Serialize)]
pub struct ComboResult {
    pub settings: Vec<(String, String)>,
    pub dir: PathBuf,
    /// The selection metric on validation (selected epochs), over the seeds.
    pub valid: Spread,
    /// The selection metric on test, over the seeds: reported, not chosen on.
    pub test: Spread,
    /// Every test column at the selection metric's k (same masking).
    pub test_columns: Vec<Column>,
    pub runs: Vec<SeedRun>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SweepReport {
    pub experiment: String,
    pub axes: Vec<Axis>,
    pub seeds: Vec<u64>,
    pub metric: Metric,
    pub select_masked: bool,
    /// Sorted by mean validation value, best first.
    pub combos: Vec<ComboResult>,
    /// Runs trained, resumed and reused by this call.
    pub trained: usize,
    pub resumed: usize,
    pub reused: usize,
}

pub fn sweep(req: &SweepRequest) -> Result<SweepReport> {
    if req.axes.is_empty() {
        return Err(Error::Config("give at least one --grid KEY=V1,V2".into()));
    }
    for (i, a) in req.axes.iter().enumerate() {
        if req.axes[..i].iter().any(|b| b.key == a.key) {
            return Err(Error::Config(format!("--grid `{}` is given twice", a.key)));
        }
    }
    if req.seeds == 0 {
        return Err(Error::Config("--seeds must be at least 1".into()));
    }
    let mut base = req.set.clone();
    base.extend(seeds::device_override(req.device));
    if let Some(b) = req.budget_s {
        if !(b > 0.0 && b.is_finite()) {
            return Err(Error::Config(format!(
                "--budget-s must be positive, got {b}"
            )));
        }
        base.push(format!("train.time_budget_s={b}"));
    }
    let exp = Experiment::load(&req.config, &base)?;
    let combos = combinations(&req.axes);
    // Every combination must be a valid config before the first run starts:
    // a typo in the last value should not cost the hours before it.
    for c in &combos {
        let set = with(&base, c);
        Experiment::load(&req.config, &set)
            .map_err(|e| Error::Config(format!("combination {}: {e}", dir_name(c))))?;
    }
    let mut names: Vec<String> = combos.iter().map(|c| dir_name(c)).collect();
    names.sort();
    if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
        return Err(Error::Config(format!(
            "two combinations would share the directory `{}`; give values that differ in letters or digits",
            w[0]
        )));
    }
    let root = req
        .run_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from("runs").join(format!("sweep-{}", exp.name)));
    let seeds = seeds::seeds_of(exp.seed, req.seeds);
    let (metric, masked) = (exp.eval.metric, exp.eval.select_masked);
    let (mut trained, mut resumed, mut reused) = (0, 0, 0);
    let mut results = Vec::new();
    let total = combos.len() * seeds.len();
    for (ci, c) in combos.iter().enumerate() {
        let dir = root.join(dir_name(c));
        let mut runs = Vec::new();
        for (si, &seed) in seeds.iter().enumerate() {
            let mut set = with(&base, c);
            set.push(format!("seed={seed}"));
            let run_dir = dir.join(format!("seed-{seed}"));
            eprintln!(
                "sweep: run {} of {total}: {} seed {seed}",
                ci * seeds.len() + si + 1,
                dir_name(c)
            );
            let (run, fate) = seeds::run_or_resume(&req.config, &set, &[], &run_dir)?;
            match fate {
                Fate::Trained => trained += 1,
                Fate::Resumed => resumed += 1,
                Fate::Reused => {
                    eprintln!("sweep: finished before, reused ({})", run_dir.display());
                    reused += 1
                }
            }
            runs.push(run);
        }
        let value =
            |r: &crate::train::evaluate::EvalResult| r.get(masked, metric).unwrap_or(f64::NAN);
        let test_columns = seeds::columns(&runs)
            .into_iter()
            .filter(|col| col.masked == masked && col.name.ends_with(&format!("@{}", metric.k)))
            .collect();
        results.push(ComboResult {
            settings: c.clone(),
            valid: Spread::of(runs.iter().map(|r| value(&r.valid)).collect()),
            test: Spread::of(runs.iter().map(|r| value(&r.test)).collect()),
            test_columns,
            dir,
            runs,
        });
    }
    // Best validation first; NaN (a metric a run lacked) last.
    results.sort_by(|a, b| {
        b.valid
            .mean
            .partial_cmp(&a.valid.mean)
            .unwrap_or_else(|| a.valid.mean.is_nan().cmp(&b.valid.mean.is_nan()))
    });
    let report = SweepReport {
        experiment: exp.name.clone(),
        axes: req.axes.clone(),
        seeds,
        metric,
        select_masked: masked,
        combos: results,
        trained,
        resumed,
        reused,
    };
    write_atomic(root.join("sweep.md"), markdown(&report).as_bytes())?;
    let json = serde_json::to_vec_pretty(&report)
        .map_err(|e| Error::invalid(root.join("sweep.json"), e.to_string()))?;
    write_atomic(root.join("sweep.json"), &json)?;
    if let Some(best) = report.combos.first() {
        let exp = Experiment::load(&req.config, &with(&base, &best.settings))?;
        let head = format!(
            "# The best combination of sweep `{}` on validation {}{}: {}\n# (the experiment's own seed; written by `recforge sweep`)\n",
            report.experiment,
            metric.column(),
            if masked { " (seen masked)" } else { "" },
            dir_name(&best.settings)
        );
        write_atomic(root.join("best.toml"), (head + &exp.to_toml()).as_bytes())?;
    }
    Ok(report)
}

fn with(base: &[String], combo: &[(String, String)]) -> Vec<String> {
    let mut set = base.to_vec();
    set.extend(combo.iter().map(|(k, v)| format!("{k}={v}")));
    set
}

pub fn markdown(r: &SweepReport) -> String {
    let masked = if r.select_masked {
        ", seen items masked"
    } else {
        ""
    };
    let seeds: Vec<String> = r.seeds.iter().map(u64::to_string).collect();
    let mut s = format!(
        "# Sweep of `{}`: {} combinations × {} seeds ({})\n\n\
Sorted by the mean validation {}{masked} of each combination's selected epochs: choose on this column. \
Test metrics (same k and masking) stand beside it, mean ± sample sd over the seeds, for the report.\n\n",
        r.experiment,
        r.combos.len(),
        r.seeds.len(),
        seeds.join(", "),
        r.metric.column(),
    );
    let test_heads: Vec<String> = r
        .combos
        .first()
        .map(|c| {
            c.test_columns
                .iter()
                .map(|col| format!("test {}", col.name))
                .collect()
        })
        .unwrap_or_default();
    let mut head = vec!["rank".to_string()];
    head.extend(r.axes.iter().map(|a| format!("`{}`", a.key)));
    head.push(format!("valid {}", r.metric.column()));
    head.extend(test_heads);
    s += &format!("| {} |\n", head.join(" | "));
    s += &format!(
        "|{}\n",
        head.iter()
            .enumerate()
            .map(|(i, _)| if i == 0 || i > r.axes.len() {
                "---:|"
            } else {
                "---|"
            })
            .collect::<String>()
    );
    for (i, c) in r.combos.iter().enumerate() {
        let mut row = vec![(i + 1).to_string()];
        row.extend(c.settings.iter().map(|(_, v)| v.clone()));
        row.push(format!("{:.4} ± {:.4}", c.valid.mean, c.valid.sd));
        row.extend(
            c.test_columns
                .iter()
                .map(|col| format!("{:.4} ± {:.4}", col.test.mean, col.test.sd)),
        );
        s += &format!("| {} |\n", row.join(" | "));
    }
    s += &format!(
        "\nThis call: {} runs trained, {} resumed, {} finished before and reused. The best combination's config: `best.toml`.\n",
        r.trained, r.resumed, r.reused
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grids_expand_in_order_and_keep_bracketed_commas() {
        let a = Axis::parse("optim.lr=1e-3, 2e-3").unwrap();
        assert_eq!(a.values, vec!["1e-3", "2e-3"]);
        let b = Axis::parse("eval.ks=[10,20],[12]").unwrap();
        assert_eq!(b.values, vec!["[10,20]", "[12]"]);
        let c = combinations(&[a.clone(), Axis::parse("model.d_model=64,128").unwrap()]);
        assert_eq!(c.len(), 4);
        assert_eq!(
            c[1],
            vec![
                ("optim.lr".to_string(), "1e-3".to_string()),
                ("model.d_model".to_string(), "128".to_string())
            ]
        );
        assert_eq!(dir_name(&c[1]), "optim.lr=1e-3,model.d_model=128");
        assert_eq!(dir_name(&combinations(&[b])[0]), "eval.ks=_10,20_");
        for bad in ["optim.lr", "=1,2", "optim.lr=1,,2", "optim.lr=1,1"] {
            assert!(Axis::parse(bad).is_err(), "{bad}");
        }
    }
}
