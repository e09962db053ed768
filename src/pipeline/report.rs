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
    stages += "\n![validation metric per epoch](validation.svg)\n\n![candidate recall by source](candidates.svg)\n";
    stages
}

/// The report's charts: each model's validation metric per epoch, and the
/// recall of each candidate source (those that proposed anything) and of
/// their union.
pub(super) fn plots(
    run_dir: &Path,
    report_dir: &Path,
    models: [(&str, &Experiment); 2],
    candidates: &RecallReport,
) -> Result<()> {
    let mut series = Vec::new();
    for (stage, exp) in models {
        let metric = exp.eval.metric;
        let state = crate::train::checkpoint::read_state(&run_dir.join(stage).join("best"))?;
        let points: Vec<(f64, f64)> = state
            .history
            .iter()
            .filter_map(|h| {
                let v = h.valid.as_ref()?.get(exp.eval.select_masked, metric)?;
                Some((h.epoch as f64, v))
            })
            .collect();
        series.push((format!("{stage}: valid {}", metric.column()), points));
    }
    let svg =
        crate::eval::plot::line_chart("Validation metric per epoch", "epoch", "value", &series);
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
