//! What a finished run leaves for the tools that read many runs (`recforge
//! runs`, `sweep`, `train --seeds`): `RUN/summary.json`, written last, so
//! its presence marks a run whose test was done; and `RUN/curves.svg`, the
//! whole run's curves, redrawn after every epoch.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::config::experiment::{Experiment, ModelKind};
use crate::error::{Error, Result};
use crate::eval::metrics::{Measure, Metric};
use crate::eval::plot;
use crate::train::checkpoint::{EpochLog, TrainState};
use crate::train::evaluate::EvalResult;
use crate::util::fsutil::write_atomic;

pub const FILE: &str = "summary.json";
pub const CURVES: &str = "curves.svg";

/// A finished run in one record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunSummary {
    pub name: String,
    pub model: ModelKind,
    pub seed: u64,
    pub device: String,
    /// Epochs run, and the one selected on validation.
    pub epochs: usize,
    pub best_epoch: Option<usize>,
    pub steps: usize,
    /// What selection compared, and on which ranking (seen items masked or not).
    pub metric: Metric,
    pub select_masked: bool,
    /// The selected epoch's validation metrics.
    pub valid: Option<EvalResult>,
    /// The selected model's test metrics (computed once, at the end).
    pub test: EvalResult,
    /// Training and validation seconds over all sessions of the run.
    pub train_s: f64,
    /// Why the run stopped before its last epoch, if it did.
    pub stopped: Option<String>,
}

impl RunSummary {
    pub fn new(
        exp: &Experiment,
        device: &str,
        state: &TrainState,
        test: EvalResult,
        stopped: Option<&str>,
    ) -> Self {
        RunSummary {
            name: exp.name.clone(),
            model: exp.model.kind,
            seed: exp.seed,
            device: device.to_string(),
            epochs: state.epoch,
            best_epoch: state.best_epoch,
            steps: state.step,
            metric: exp.eval.metric,
            select_masked: exp.eval.select_masked,
            valid: selected(state).cloned(),
            test,
            train_s: state.elapsed_s,
            stopped: stopped.map(str::to_string),
        }
    }

    /// The selection metric on validation (selected epoch) and on test.
    pub fn selected_valid(&self) -> Option<f64> {
        self.valid
            .as_ref()
            .and_then(|v| v.get(self.select_masked, self.metric))
    }

    pub fn selected_test(&self) -> Option<f64> {
        self.test.get(self.select_masked, self.metric)
    }

    pub fn write(&self, run_dir: &Path) -> Result<()> {
        let path = run_dir.join(FILE);
        let bytes =
            serde_json::to_vec_pretty(self).map_err(|e| Error::invalid(&path, e.to_string()))?;
        write_atomic(&path, &bytes)
    }

    /// The run's summary; `None` when the run has not finished.
    pub fn read(run_dir: &Path) -> Result<Option<RunSummary>> {
        let path = run_dir.join(FILE);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| Error::invalid(&path, format!("not a run summary: {e}"))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(&path, e)),
        }
    }
}

/// The selected epoch's validation record.
pub fn selected(state: &TrainState) -> Option<&EvalResult> {
    let best = state.best_epoch?;
    state
        .history
        .iter()
        .rev()
        .find(|h| h.epoch == best)
        .and_then(|h| h.valid.as_ref())
}

/// The run's curves as panels: the training loss per epoch, then every
/// ranking measure at the selection metric's k on validation (kept and
/// seen-masked), each on its own axis, over every epoch run (not only those
/// up to the selected one), with the selected epoch marked.
pub fn curves_svg(
    title: &str,
    metric: Metric,
    history: &[EpochLog],
    best: Option<usize>,
) -> String {
    let mark = best.map(|b| (b as f64, "selected"));
    let loss: Vec<(f64, f64)> = history.iter().map(|h| (h.epoch as f64, h.loss)).collect();
    let mut charts = vec![plot::marked_line_chart(
        "training loss (epoch mean)",
        "epoch",
        "loss",
        &[("train loss".into(), loss)],
        mark,
        plot::YScale::Fit,
    )];
    for measure in Measure::ALL {
        let m = Metric {
            measure,
            k: metric.k,
        };
        let series: Vec<(String, Vec<(f64, f64)>)> = [(false, "kept"), (true, "seen masked")]
            .into_iter()
            .map(|(masked, name)| {
                let pts = history
                    .iter()
                    .filter_map(|h| Some((h.epoch as f64, h.valid.as_ref()?.get(masked, m)?)))
                    .collect::<Vec<_>>();
                (format!("valid {} ({name})", m.column()), pts)
            })
            .filter(|(_, p)| !p.is_empty())
            .collect();
        if series.is_empty() {
            continue;
        }
        let head = if measure == metric.measure {
            format!("validation {} (selection metric)", m.column())
        } else {
            format!("validation {}", m.column())
        };
        charts.push(plot::marked_line_chart(
            &head,
            "epoch",
            &m.column(),
            &series,
            mark,
            plot::YScale::FromZero,
        ));
    }
    plot::panels(title, &charts, 2)
}

/// Writes `RUN/curves.svg` for the state so far.
pub fn write_curves(run_dir: &Path, exp: &Experiment, state: &TrainState) -> Result<()> {
    let svg = curves_svg(
        &format!("{}: every epoch, the selected one marked", exp.name),
        exp.eval.metric,
        &state.history,
        state.best_epoch,
    );
    write_atomic(run_dir.join(CURVES), svg.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::metrics::Metrics;

    fn metrics(k: usize, v: f64) -> Metrics {
        Metrics {
            k,
            users: 10,
            map: v,
            recall: v,
            ndcg: v,
            hit_rate: v,
            mrr: v,
            coverage: v,
            revenue_per_impression: 0.0,
        }
    }

    #[test]
    fn curves_show_every_epoch_after_the_selected_one() {
        let log = |epoch: usize, v: f64| EpochLog {
            epoch,
            step: epoch * 10,
            loss: 5.0 - epoch as f64,
            lr: 1e-3,
            seqs_per_s: 1.0,
            train_s: 1.0,
            wall_s: 1.0,
            valid: Some(EvalResult {
                plain: vec![metrics(12, v)],
                masked: vec![metrics(12, v + 0.01)],
                cold_users: 0,
                extra: vec![],
            }),
        };
        let history = vec![log(1, 0.1), log(2, 0.3), log(3, 0.2), log(4, 0.15)];
        let metric: Metric = "map@12".parse().unwrap();
        let svg = curves_svg("t", metric, &history, Some(2));
        // Loss + five measures, each with every epoch's point on each line.
        assert_eq!(svg.matches("<svg").count(), 1 + 6);
        assert_eq!(svg.matches("<circle").count(), 4 + 5 * 2 * 4);
        assert_eq!(svg.matches(">selected<").count(), 6);
        assert!(svg.contains("validation MAP@12 (selection metric)"));
    }
}
