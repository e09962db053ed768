//! Two-tower retrieval trained end to end on a small synthetic H&M log, on flex.

mod common;

use std::path::Path;

use recforge::config::experiment::Experiment;
use recforge::train::{TrainOptions, train};

fn setup(dir: &Path) -> Experiment {
    let raw = common::small_hm(dir, 11);
    let cache = dir.join("cache");
    recforge::pipeline::commands::prepare(&raw, &cache, recforge::ingest::Format::Auto).unwrap();
    let toml = format!(
        r#"
name = "tiny_tt"
seed = 3
device = "flex"
[data]
cache = "{}"
split = "last-week"
[model]
kind = "two-tower"
d_model = 16
dropout = 0.1
init_std = 0.05
[tower]
feature_dim = 8
hidden = 32
id_buckets = 4096
id_dim = 8
history_len = 8
[loss]
kind = "in-batch"
temperature = 0.1
mixed_negatives = 32
[optim]
lr = 3e-3
[train]
batch_size = 256
epochs = 5
patience = 0
[eval]
ks = [12, 100]
metric = "recall@100"
"#,
        cache.display()
    );
    Experiment::parse(&toml, &[]).unwrap()
}

/// One test, as burn's RNG is process-global: training runs must not overlap.
#[test]
fn two_tower_learns_resumes_exactly_and_reports_cold_recall() {
    let dir = tempfile::tempdir().unwrap();
    let exp = setup(dir.path());
    let run = |name: &str, stop: Option<usize>, resume: bool| {
        train(
            &exp,
            &TrainOptions {
                run_dir: dir.path().join(name),
                stop_after: stop,
                resume,
                ..TrainOptions::default()
            },
        )
        .unwrap()
    };
    let full = run("full", None, false);
    let table = full.table.clone().unwrap();
    let recall = |row: &str| {
        let r = table.rows.iter().find(|r| r.name == row).unwrap();
        r.metrics.iter().find(|m| m.k == 100).unwrap().recall
    };
    let model = recall("tiny_tt (two-tower)");
    // Better than all-time popularity (a trivial candidate source) already
    // after five short epochs.
    assert!(
        model > recall("popular"),
        "{model} vs {}",
        recall("popular")
    );
    let state = recforge::train::checkpoint::read_state(&full.run_dir.join("best")).unwrap();
    let losses: Vec<f64> = state.history.iter().map(|h| h.loss).collect();
    assert!(losses[2] < losses[0], "{losses:?}");
    // Cold-article recall is reported for the model and every source.
    let test = full.test.clone().unwrap();
    assert!(test.extra("ColdRecall@100").is_some());
    assert!(table.notes.contains("Recall on cold articles"));
    assert!(table.extra["cold_recall"]["popular"]["ColdRecall@100"].is_number());

    // Stopped after one epoch and resumed: the same run, to the last digit.
    let first = run("resumed", Some(1), false);
    assert!(first.test.is_none());
    let resumed = run("resumed", None, true);
    assert_eq!(resumed.test.unwrap(), test);
}
