//! Training runs end to end on a small synthetic H&M log, on flex.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use recforge::config::experiment::Experiment;
use recforge::train::{TrainOptions, train};

/// burn's RNG (dropout) is process-global, so two trainings in one process
/// would draw from each other's stream; these tests take turns.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// A prepared cache of a small synthetic log, and a tiny, fast experiment on it.
fn setup(dir: &Path) -> Experiment {
    let raw = common::small_hm(dir, 7);
    let cache = dir.join("cache");
    recforge::pipeline::commands::prepare(&raw, &cache, recforge::ingest::Format::Auto).unwrap();
    let toml = format!(
        r#"
name = "tiny"
seed = 5
device = "flex"
[data]
cache = "{}"
split = "last-week"
max_len = 12
[model]
d_model = 16
n_heads = 2
n_layers = 1
d_ff = 32
dropout = 0.2
[loss]
kind = "full"
[train]
batch_size = 64
epochs = 3
patience = 0
[eval]
ks = [12]
metric = "map@12"
"#,
        cache.display()
    );
    Experiment::parse(&toml, &[]).unwrap()
}

fn opts(run: PathBuf) -> TrainOptions {
    TrainOptions {
        run_dir: run,
        ..TrainOptions::default()
    }
}

#[test]
fn resumed_run_ends_with_the_same_metrics_as_an_uninterrupted_one() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let exp = setup(dir.path());

    let full = train(&exp, &opts(dir.path().join("full"))).unwrap();
    let full_test = full.test.clone().unwrap();
    assert_eq!(full.epochs, 3);

    // Killed after epoch 1, then resumed.
    let run = dir.path().join("resumed");
    let first = train(
        &exp,
        &TrainOptions {
            stop_after: Some(1),
            ..opts(run.clone())
        },
    )
    .unwrap();
    assert_eq!(first.epochs, 1);
    assert!(first.test.is_none());
    let resumed = train(
        &exp,
        &TrainOptions {
            resume: true,
            ..opts(run.clone())
        },
    )
    .unwrap();
    assert_eq!(resumed.epochs, 3);
    assert_eq!(resumed.test.unwrap(), full_test);
    // The loss curves match step for step, not only the end point.
    let a = recforge::train::checkpoint::read_state(&full.run_dir.join("best")).unwrap();
    let b = recforge::train::checkpoint::read_state(&run.join("best")).unwrap();
    let losses = |s: &recforge::train::checkpoint::TrainState| {
        s.history.iter().map(|h| h.loss).collect::<Vec<_>>()
    };
    assert_eq!(losses(&a), losses(&b));

    // The run directory holds what a user looks for.
    for f in [
        "config.toml",
        "run.json",
        "results.md",
        "results.json",
        "best",
    ] {
        assert!(run.join(f).exists(), "missing {f}");
    }
    // A resolved config can be read back as it was.
    let saved = Experiment::load(&run.join("config.toml"), &[]).unwrap();
    assert_eq!(saved, exp);
    // TensorBoard files of both sessions hold the validation curve, at the
    // optimizer step each epoch ended on (the x-axis of the step losses),
    // and each session's resolved config as text.
    let whole = recforge::train::checkpoint::read_latest_state(&run).unwrap();
    let epoch_ends: Vec<u64> = whole.history.iter().map(|h| h.step as u64).collect();
    let (mut logged, mut configs, mut step_losses) = (Vec::new(), Vec::new(), 0);
    for e in std::fs::read_dir(run.join("tensorboard")).unwrap() {
        let path = e.unwrap().path();
        if !path.to_string_lossy().contains("tfevents") {
            continue;
        }
        let scalars = recforge::train::tensorboard::read_scalars(&path).unwrap();
        logged.extend(
            scalars
                .iter()
                .filter(|s| s.0 == "valid/MAP@12")
                .map(|s| s.1),
        );
        step_losses += scalars.iter().filter(|s| s.0 == "train/loss_step").count();
        configs.extend(recforge::train::tensorboard::read_texts(&path).unwrap());
    }
    logged.sort();
    assert_eq!(logged, epoch_ends);
    assert_eq!(
        step_losses as u64,
        *epoch_ends.last().unwrap(),
        "one loss per step"
    );
    assert_eq!(configs.len(), 2, "one config text per session");
    assert!(
        configs
            .iter()
            .all(|(tag, _, text)| tag == "config" && text.contains("name = \"tiny\""))
    );
    // The projector's files: one vector per item, beside its metadata.
    let tb = run.join("tensorboard");
    let vectors = std::fs::read_to_string(tb.join("item_embeddings.tsv")).unwrap();
    let meta = std::fs::read_to_string(tb.join("item_embeddings_metadata.tsv")).unwrap();
    assert_eq!(
        vectors.lines().count() + 1,
        meta.lines().count(),
        "metadata has a header"
    );
    assert!(
        vectors.lines().all(|l| l.split('\t').count() == 16),
        "d_model columns"
    );
    assert!(
        std::fs::read_to_string(tb.join("projector_config.pbtxt"))
            .unwrap()
            .contains("item_embeddings.tsv")
    );
    // The summary the sweep and `runs` read, and the whole run's curves.
    let summary = recforge::train::summary::RunSummary::read(&run)
        .unwrap()
        .unwrap();
    assert_eq!((summary.epochs, summary.seed), (3, exp.seed));
    // JSON keeps every digit it prints, not always the last bit.
    let close = |a: f64, b: f64| (a - b).abs() < 1e-12;
    assert!(close(summary.test.plain[0].map, full_test.plain[0].map));
    assert!(close(summary.test.masked[0].ndcg, full_test.masked[0].ndcg));
    let curves = std::fs::read_to_string(run.join("curves.svg")).unwrap();
    assert!(curves.contains("training loss") && curves.contains(">selected<"));
    // Starting a new run over an existing one is refused, not overwritten.
    let again = train(&exp, &opts(run.clone())).unwrap_err().to_string();
    assert!(again.contains("--resume"), "{again}");
}

#[test]
fn the_model_learns_something_and_a_diverging_loss_stops_the_run() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let exp = setup(dir.path());
    let out = train(&exp, &opts(dir.path().join("ok"))).unwrap();
    // The newest checkpoint holds every epoch's record; `best` only those
    // up to the selected epoch, which may be the first.
    let newest = recforge::train::checkpoint::list(&out.run_dir.join("checkpoints"))
        .unwrap()
        .pop()
        .unwrap();
    let hist = recforge::train::checkpoint::read_state(&newest)
        .unwrap()
        .history;
    assert_eq!(hist.len(), 3);
    assert!(
        hist.last().unwrap().loss < hist[0].loss,
        "training loss did not fall: {:?}",
        hist.iter().map(|h| h.loss).collect::<Vec<_>>()
    );

    // train.epoch_units bounds each epoch to a seeded draw of that many
    // windows: one batch of 64 is one step per epoch.
    let mut short = exp.clone();
    short.train.epochs = 2;
    short.train.epoch_units = 64;
    let s = train(&short, &opts(dir.path().join("short"))).unwrap();
    let last = recforge::train::checkpoint::list(&s.run_dir.join("checkpoints"))
        .unwrap()
        .pop()
        .unwrap();
    let steps: Vec<usize> = recforge::train::checkpoint::read_state(&last)
        .unwrap()
        .history
        .iter()
        .map(|h| h.step)
        .collect();
    assert_eq!(steps, vec![1, 2]);
    assert!(hist[0].step > 1, "the full epoch has more than one batch");

    // Data parallel over two devices (flex listed twice): the run goes
    // through, says so, and still learns; `--devices flex` alone is the
    // plain run, step for step.
    let two = train(
        &exp,
        &TrainOptions {
            devices: vec!["flex".into(), "flex".into()],
            ..opts(dir.path().join("two"))
        },
    )
    .unwrap();
    assert!(two.device.contains(" + "), "{}", two.device);
    let hist2 = recforge::train::checkpoint::read_latest_state(&two.run_dir)
        .unwrap()
        .history;
    assert!(hist2.last().unwrap().loss < hist2[0].loss);
    let one = train(
        &exp,
        &TrainOptions {
            devices: vec!["flex".into()],
            ..opts(dir.path().join("one"))
        },
    )
    .unwrap();
    assert_eq!(one.test, out.test, "one listed device is the plain run");

    let mut bad = exp.clone();
    bad.optim.lr = 1e30;
    let err = train(&bad, &opts(dir.path().join("nan")))
        .unwrap_err()
        .to_string();
    assert!(err.contains("loss became"), "{err}");
    assert!(err.contains("checkpoint"), "{err}");
}

/// `train --seeds 2`: two runs with the config's seed and the next, each in
/// its own directory, summarised as mean ± sd.
#[test]
fn seeds_train_one_run_per_seed_and_summarise_them() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let mut exp = setup(dir.path());
    exp.train.epochs = 2;
    let config = dir.path().join("tiny.toml");
    std::fs::write(&config, toml::to_string(&exp).unwrap()).unwrap();
    let root = dir.path().join("seeds");
    let req = recforge::pipeline::commands::TrainRequest {
        config: Some(config),
        set: vec![],
        resume: None,
        run_dir: Some(root.clone()),
        device: None,
        results_dir: None,
        stop_after: None,
        devices: vec![],
    };
    let report = recforge::pipeline::seeds::train_seeds(&req, 2).unwrap();
    let seeds: Vec<u64> = report.runs.iter().map(|r| r.seed).collect();
    assert_eq!(seeds, vec![5, 6]);
    for r in &report.runs {
        let saved = Experiment::load(&r.run_dir.join("config.toml"), &[]).unwrap();
        assert_eq!(saved.seed, r.seed);
    }
    let map = report
        .columns
        .iter()
        .find(|c| c.name == "MAP@12" && !c.masked)
        .unwrap();
    assert_eq!(map.test.values.len(), 2);
    // Different seeds, different models: the two runs do not coincide.
    let losses: Vec<f64> = report
        .runs
        .iter()
        .map(|r| {
            recforge::train::checkpoint::read_state(&r.run_dir.join("best"))
                .unwrap()
                .history[0]
                .loss
        })
        .collect();
    assert_ne!(losses[0], losses[1]);
    let mean = (map.test.values[0] + map.test.values[1]) / 2.0;
    assert!((map.test.mean - mean).abs() < 1e-12);
    let md = std::fs::read_to_string(root.join("seeds.md")).unwrap();
    assert!(md.contains("| MAP@12 | kept |"), "{md}");
    assert!(root.join("seeds.json").exists());
    // A second call reuses the finished runs: nothing is trained again.
    let before: Vec<Vec<u8>> = report
        .runs
        .iter()
        .map(|r| std::fs::read(r.run_dir.join("summary.json")).unwrap())
        .collect();
    let again = recforge::pipeline::seeds::train_seeds(&req, 2).unwrap();
    assert_eq!(again.columns[0].test.values, report.columns[0].test.values);
    for (r, b) in report.runs.iter().zip(&before) {
        assert_eq!(&std::fs::read(r.run_dir.join("summary.json")).unwrap(), b);
    }
    // Another config over the same directory is refused, not overwritten.
    let other = recforge::pipeline::commands::TrainRequest {
        set: vec!["optim.lr=0.01".into()],
        ..req
    };
    let err = recforge::pipeline::seeds::train_seeds(&other, 2)
        .unwrap_err()
        .to_string();
    assert!(err.contains("another config"), "{err}");
}
