//! `recforge train --seeds N`: one experiment over several seeds, each its
//! own run, summarised as mean ± sd of the selected epoch's validation
//! metrics and of the test metrics. A configuration is chosen on the
//! validation columns; the test columns are reported beside them, once.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::{Error, Result};
use crate::pipeline::commands::{TrainRequest, train};
use crate::train::checkpoint;
use crate::train::evaluate::EvalResult;
use crate::train::summary::RunSummary;
use crate::util::fsutil::write_atomic;

/// One seed's run.
#[derive(Debug, Clone, Serialize)]
pub struct SeedRun {
    pub seed: u64,
    pub run_dir: PathBuf,
    pub best_epoch: Option<usize>,
    pub epochs: usize,
    /// The selected epoch's validation metrics.
    pub valid: EvalResult,
    pub test: EvalResult,
}

/// Mean and sample standard deviation of one column over the seeds.
#[derive(Debug, Clone, Serialize)]
pub struct Spread {
    pub mean: f64,
    pub sd: f64,
    pub values: Vec<f64>,
}

impl Spread {
    pub fn of(values: Vec<f64>) -> Self {
        let n = values.len() as f64;
        let mean = values.iter().sum::<f64>() / n.max(1.0);
        // Sample sd (n − 1): the seeds are a sample of the seeds one could run.
        let sd = if values.len() > 1 {
            (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt()
        } else {
            0.0
        };
        Spread { mean, sd, values }
    }
}

/// One metric column (e.g. `NDCG@10`, unmasked) over the seeds.
#[derive(Debug, Clone, Serialize)]
pub struct Column {
    pub name: String,
    pub masked: bool,
    pub valid: Spread,
    pub test: Spread,
}

#[derive(Debug, Clone, Serialize)]
pub struct SeedsReport {
    pub experiment: String,
    pub runs: Vec<SeedRun>,
    pub columns: Vec<Column>,
}

/// The seeds run: the experiment's own seed, then the next ones.
pub fn seeds_of(base: u64, n: usize) -> Vec<u64> {
    (0..n as u64).map(|i| base.wrapping_add(i)).collect()
}

/// What became of a run asked for: trained from the start, continued from
/// its newest checkpoint, or found finished and reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Fate {
    Trained,
    Resumed,
    Reused,
}

/// Trains the run of `config` with `set` in `dir`, or takes what is there:
/// a finished run (its `summary.json`) is reused and an interrupted one is
/// resumed from its newest checkpoint, so a killed sweep or seed series
/// picks up where it stopped. The run found there must have been started
/// with the same resolved config; another is refused, never overwritten.
pub fn run_or_resume(
    config: &Path,
    set: &[String],
    devices: &[String],
    dir: &Path,
) -> Result<(SeedRun, Fate)> {
    use crate::config::experiment::Experiment;
    let want = Experiment::load(config, set)?;
    let saved = dir.join("config.toml");
    if saved.exists() {
        let had = Experiment::load(&saved, &[])?;
        if had != want {
            return Err(Error::Config(format!(
                "{} holds a run of another config (its config.toml differs); move it away or choose another directory",
                dir.display()
            )));
        }
    }
    let request = |resume: bool| TrainRequest {
        config: Some(config.to_path_buf()),
        set: set.to_vec(),
        resume: resume.then(|| dir.to_path_buf()),
        run_dir: (!resume).then(|| dir.to_path_buf()),
        device: None,
        results_dir: None,
        stop_after: None,
        devices: devices.to_vec(),
    };
    let fate = if RunSummary::read(dir)?.is_some() {
        Fate::Reused
    } else if !checkpoint::list(&dir.join("checkpoints"))?.is_empty() {
        train(&request(true))?;
        Fate::Resumed
    } else {
        // Killed before its first checkpoint: nothing of it is worth keeping.
        let empty = dir.join("checkpoints");
        if empty.exists() {
            std::fs::remove_dir_all(&empty).map_err(|e| Error::io(&empty, e))?;
        }
        train(&request(false))?;
        Fate::Trained
    };
    let summary = RunSummary::read(dir)?
        .ok_or_else(|| Error::Runtime(format!("{} ended without a summary.json", dir.display())))?;
    Ok((SeedRun::of(dir, summary)?, fate))
}

impl SeedRun {
    fn of(dir: &Path, s: RunSummary) -> Result<SeedRun> {
        let valid = s.valid.ok_or_else(|| {
            Error::invalid(
                dir.join(crate::train::summary::FILE),
                "the selected epoch has no validation record",
            )
        })?;
        Ok(SeedRun {
            seed: s.seed,
            run_dir: dir.to_path_buf(),
            best_epoch: s.best_epoch,
            epochs: s.epochs,
            valid,
            test: s.test,
        })
    }
}

/// `KEY=VALUE` overrides for a run on `device` (a config key, so a resumed
/// run's saved config compares equal to the file's).
pub fn device_override(device: Option<crate::config::device::DeviceChoice>) -> Option<String> {
    use clap::ValueEnum;
    let d = device?;
    let name = d.to_possible_value()?.get_name().to_string();
    Some(format!("device=\"{name}\""))
}

/// Trains `req`'s experiment once per seed, each run in
/// `<run_dir>/seed-S`, and writes `seeds.md` and `seeds.json` there. Runs
/// already finished there are reused and interrupted ones resumed.
pub fn train_seeds(req: &TrainRequest, n: usize) -> Result<SeedsReport> {
    use crate::config::experiment::Experiment;
    if n == 0 {
        return Err(Error::Config("--seeds must be at least 1".into()));
    }
    if req.resume.is_some() || req.stop_after.is_some() {
        return Err(Error::Config(
            "--seeds runs fresh runs: it cannot be combined with --resume or --stop-after".into(),
        ));
    }
    let config = req
        .config
        .as_ref()
        .ok_or_else(|| Error::Config("--seeds needs an experiment file".into()))?;
    let mut base = req.set.clone();
    base.extend(device_override(req.device));
    let exp = Experiment::load(config, &base)?;
    let root = req
        .run_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from("runs").join(&exp.name));
    let mut runs = Vec::new();
    for seed in seeds_of(exp.seed, n) {
        let mut set = base.clone();
        set.push(format!("seed={seed}"));
        let dir = root.join(format!("seed-{seed}"));
        let (run, fate) = run_or_resume(config, &set, &req.devices, &dir)?;
        if fate != Fate::Trained {
            eprintln!("seed {seed}: {fate:?} ({})", dir.display());
        }
        runs.push(run);
    }
    let report = SeedsReport {
        experiment: exp.name.clone(),
        columns: columns(&runs),
        runs,
    };
    write_atomic(root.join("seeds.md"), markdown(&report).as_bytes())?;
    let json = serde_json::to_vec_pretty(&report)
        .map_err(|e| Error::invalid(root.join("seeds.json"), e.to_string()))?;
    write_atomic(root.join("seeds.json"), &json)?;
    Ok(report)
}

/// Every column the first run has, in table order, unmasked then masked.
pub fn columns(runs: &[SeedRun]) -> Vec<Column> {
    let Some(first) = runs.first() else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for masked in [false, true] {
        let pick = |r: &EvalResult| {
            if masked {
                r.masked.clone()
            } else {
                r.plain.clone()
            }
        };
        for (ki, m) in pick(&first.test).iter().enumerate() {
            for (ci, (name, _)) in m.columns().into_iter().enumerate() {
                let value = |r: &EvalResult| {
                    pick(r)
                        .get(ki)
                        .map(|m| m.columns()[ci].1)
                        .unwrap_or(f64::NAN)
                };
                out.push(Column {
                    name,
                    masked,
                    valid: Spread::of(runs.iter().map(|r| value(&r.valid)).collect()),
                    test: Spread::of(runs.iter().map(|r| value(&r.test)).collect()),
                });
            }
        }
    }
    out
}

pub fn markdown(r: &SeedsReport) -> String {
    let seeds: Vec<String> = r.runs.iter().map(|s| s.seed.to_string()).collect();
    let mut s = format!(
        "# `{}` over {} seeds ({})\n\nValidation: the selected epoch of each run (choose a configuration on these). Test: reported beside it, mean ± sample sd, then each seed's value.\n\n| metric | seen items | validation | test | test per seed |\n|---|---|---:|---:|---|\n",
        r.experiment,
        r.runs.len(),
        seeds.join(", ")
    );
    for c in &r.columns {
        s.push_str(&format!(
            "| {} | {} | {:.4} ± {:.4} | {:.4} ± {:.4} | {} |\n",
            c.name,
            if c.masked { "masked" } else { "kept" },
            c.valid.mean,
            c.valid.sd,
            c.test.mean,
            c.test.sd,
            c.test
                .values
                .iter()
                .map(|v| format!("{v:.4}"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    s.push_str("\n| seed | selected epoch | epochs | run |\n|---:|---:|---:|---|\n");
    for run in &r.runs {
        s.push_str(&format!(
            "| {} | {} | {} | `{}` |\n",
            run.seed,
            run.best_epoch.map_or("-".into(), |e| e.to_string()),
            run.epochs,
            run.run_dir.display()
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_is_the_sample_sd() {
        let s = Spread::of(vec![1.0, 2.0, 3.0]);
        assert!((s.mean - 2.0).abs() < 1e-12);
        assert!((s.sd - 1.0).abs() < 1e-12);
        assert_eq!(Spread::of(vec![0.5]).sd, 0.0);
        assert_eq!(seeds_of(42, 3), vec![42, 43, 44]);
    }
}
