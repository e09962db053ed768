//! The pipeline's report beside its results table: the stages with their
//! wall time and memory, and the charts.

use std::path::Path;

use crate::config::experiment::Experiment;
use crate::error::Result;
use crate::rank::candidates::RecallReport;

use super::steps::StepReport;

/// The stages table, as Markdown, with the charts linked below it.
pub(super) fn stages_markdown(reports: &[StepReport]) -> String {
    let mut stages = String::from(
        "## Stages\n\nWall time of each step and the process's peak resident memory while it ran \
(reused steps: from their record; a peak marked * is the whole process's up to the step's end, \
where the kernel did not let the counter be reset).\n\n\
| step | reused | wall s | peak RSS MiB |\n|---|---|---:|---:|\n",
    );
    for s in reports {
        stages += &format!(
            "| {} | {} | {:.1} | {} |\n",
            s.step,
            if s.reused { "yes" } else { "no" },
            s.wall_s,
            s.peak_rss_mib
                .map(|m| format!("{m:.0}{}", if s.own_peak { "" } else { "*" }))
                .unwrap_or_else(|| "-".into())
        );
    }
    let total: f64 = reports.iter().map(|s| s.wall_s).sum();
    let peak = reports
        .iter()
        .filter_map(|s| s.peak_rss_mib)
        .fold(None, |m: Option<f64>, v| Some(m.map_or(v, |m| m.max(v))));
    stages += &format!(
        "| total | | {total:.1} | {} |\n",
        peak.map(|m| format!("{m:.0}"))
            .unwrap_or_else(|| "-".into())
    );
    stages += "\n![validation metric and training loss per epoch](validation.svg)\n\n![candidate recall by source](candidates.svg)\n";
    stages
}

/// The report's charts: each model's validation metric and training loss
/// over every epoch it ran (early stopping's last ones included, the
/// selected epoch marked), one panel each, and the
/// recall of each candidate source (those that proposed anything) and of
/// their union.
pub(super) fn plots(
    run_dir: &Path,
    report_dir: &Path,
    models: [(&str, &Experiment); 2],
    candidates: &RecallReport,
) -> Result<()> {
    let mut charts = Vec::new();
    for (stage, exp) in models {
        let dir = run_dir.join(stage);
        let state = crate::train::checkpoint::read_latest_state(&dir)?;
        let metric = exp.eval.metric;
        let masked = if exp.eval.select_masked {
            " (seen masked)"
        } else {
            ""
        };
        let points: Vec<(f64, f64)> = state
            .history
            .iter()
            .filter_map(|h| {
                let v = h.valid.as_ref()?.get(exp.eval.select_masked, metric)?;
                Some((h.epoch as f64, v))
            })
            .collect();
        let mark = state.best_epoch.map(|b| (b as f64, "selected"));
        charts.push(crate::eval::plot::marked_line_chart(
            &format!("{stage}: validation {}{masked}", metric.column()),
            "epoch",
            &metric.column(),
            &[(format!("valid {}", metric.column()), points)],
            mark,
            crate::eval::plot::YScale::FromZero,
        ));
        let loss: Vec<(f64, f64)> = state
            .history
            .iter()
            .map(|h| (h.epoch as f64, h.loss))
            .collect();
        charts.push(crate::eval::plot::marked_line_chart(
            &format!("{stage}: training loss"),
            "epoch",
            "loss",
            &[("train loss".into(), loss)],
            mark,
            crate::eval::plot::YScale::Fit,
        ));
    }
    let svg = crate::eval::plot::panels(
        "Every epoch of each model, the selected one marked",
        &charts,
        2,
    );
    crate::util::fsutil::write_atomic(report_dir.join("validation.svg"), svg.as_bytes())?;
    let mut bars: Vec<(String, f64)> = candidates
        .sources
        .iter()
        .filter(|s| s.size > 0.0)
        .map(|s| (s.name.clone(), s.recall))
        .collect();
    bars.push(("union".into(), candidates.union_recall));
    let svg = crate::eval::plot::bar_chart(
        "Recall of the test week's purchases by candidate source",
        "recall",
        &bars,
    );
    crate::util::fsutil::write_atomic(report_dir.join("candidates.svg"), svg.as_bytes())
}

/// A model stage's selected validation metric beside popularity's on the
/// same validation period: a model that does not beat it is flagged.
#[derive(Debug, Clone)]
pub(super) struct ModelCheck {
    pub stage: &'static str,
    pub metric: String,
    pub model: f64,
    pub popular: f64,
}

impl ModelCheck {
    pub fn beats_popularity(&self) -> bool {
        self.model > self.popular
    }
}

/// The check of the model trained in `run` with `exp`: its best
/// validation value against the all-time popular list's, scored on the
/// split the model itself was selected on.
pub(super) fn model_check(stage: &'static str, exp: &Experiment, run: &Path) -> Result<ModelCheck> {
    use crate::eval::baselines::{Fitted, Kind, Params};
    let state = crate::train::checkpoint::read_state(&run.join("best"))?;
    let (ds, split) = crate::train::task::load_split(exp)?;
    let metric = exp.eval.metric;
    let mut fitted = Fitted::fit(&ds, &split.train, Params::default());
    fitted.set_mask_seen(exp.eval.select_masked);
    let targets = crate::eval::Targets::from_rows(&ds, &split.valid);
    let mut acc = crate::eval::Accumulator::new(metric.k, ds.items.len());
    let mut list = Vec::new();
    for (&u, truth) in targets.users.iter().zip(&targets.truth) {
        fitted.recommend(Kind::Popular, u, metric.k, &mut list);
        acc.add(truth, &list);
    }
    Ok(ModelCheck {
        stage,
        metric: metric.column(),
        model: state.best_value.unwrap_or(f64::NAN),
        popular: metric.measure.of(&acc.finish()),
    })
}

/// The checks as Markdown, a warning on each model that does not beat
/// popularity.
pub(super) fn checks_markdown(checks: &[ModelCheck]) -> String {
    let mut s = String::from(
        "\n## Model checks\n\nEach model's selected validation metric beside the all-time popular list's on the same \
validation period (its own split).\n\n| stage | metric | model | popular | |\n|---|---|---:|---:|---|\n",
    );
    for c in checks {
        s += &format!(
            "| {} | {} | {:.4} | {:.4} | {} |\n",
            c.stage,
            c.metric,
            c.model,
            c.popular,
            if c.beats_popularity() {
                "ok"
            } else {
                "**does not beat popularity**"
            }
        );
    }
    s
}
