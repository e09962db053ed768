//! A research engineer's loop on a MovieLens-100k-sized log of their own:
//! `prepare --format table`, a 4-combination × 2-seed `sweep` killed midway
//! and rerun (finished runs are not trained again), and `runs` listing
//! three runs sorted by their validation metric.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{prepare_table, recforge};
use recforge::config::experiment::Experiment;
use recforge::util::rng::Rng;

/// 943 users, 1,682 items, about 100,000 ratings with epoch-second times,
/// as MovieLens-100k's shape: popular items are popular for everyone, and
/// each user drifts through a neighbourhood of items so that the order of
/// a history carries signal.
fn ml_sized_log(path: &Path) -> usize {
    let (users, items) = (943u64, 1682u64);
    let mut rng = Rng::new(100);
    let mut text = String::from("user_id,item_id,timestamp\n");
    let mut rows = 0;
    for u in 1..=users {
        let n = 20 + rng.below(193);
        let mut at = 880_000_000 + rng.below(20_000_000) as i64;
        let mut centre = rng.below(items);
        for _ in 0..n {
            let item = if rng.f64() < 0.35 {
                // Popularity: a few hundred items take most of these.
                (rng.f64().powi(3) * items as f64) as u64
            } else {
                centre = (centre + rng.below(7)) % items;
                (centre + rng.below(5)) % items
            };
            at += 60 + rng.below(86_400) as i64;
            text += &format!("u{u},{},{at}\n", item + 1);
            rows += 1;
        }
    }
    std::fs::write(path, text).unwrap();
    rows
}

fn experiment(dir: &Path) -> PathBuf {
    let log = dir.join("ratings.csv");
    let rows = ml_sized_log(&log);
    assert!((90_000..=110_000).contains(&rows), "{rows} rows");
    let cache = dir.join("cache");
    let (ok, err) = prepare_table(
        &log,
        &cache,
        "user=user_id,item=item_id,time=timestamp",
        &[],
    );
    assert!(ok, "{err}");
    let config = dir.join("ml.toml");
    std::fs::write(
        &config,
        format!(
            r#"
name = "ml_like"
seed = 11
device = "flex"
[data]
cache = "{}"
split = "loo"
max_len = 20
[model]
d_model = 16
n_heads = 2
n_layers = 1
d_ff = 32
item_features = false
[train]
batch_size = 128
epochs = 2
epoch_units = 512
patience = 0
[eval]
ks = [10]
metric = "ndcg@10"
"#,
            cache.display()
        ),
    )
    .unwrap();
    config
}

fn summaries(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(summaries(&p));
        } else if p.file_name().is_some_and(|n| n == "summary.json") {
            out.push(p);
        }
    }
    out.sort();
    out
}

/// Runs with a checkpoint and no summary: interrupted mid-training.
fn interrupted(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut n = 0;
    for e in entries.flatten() {
        let p = e.path();
        if !p.is_dir() {
            continue;
        }
        let checkpointed = std::fs::read_dir(p.join("checkpoints")).is_ok_and(|mut c| {
            c.any(|e| e.is_ok_and(|e| e.file_name().to_string_lossy().starts_with("epoch-")))
        });
        if checkpointed && !p.join("summary.json").exists() {
            n += 1;
        } else {
            n += interrupted(&p);
        }
    }
    n
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let (src, dst) = (e.path(), to.join(e.file_name()));
        if src.is_dir() {
            copy_dir(&src, &dst);
        } else {
            std::fs::copy(&src, &dst).unwrap();
        }
    }
}

#[test]
fn a_killed_sweep_resumes_without_retraining_and_runs_lists_them_sorted() {
    let dir = tempfile::tempdir().unwrap();
    let config = experiment(dir.path());
    let sweep_dir = dir.path().join("sweep");
    let args = [
        "sweep",
        config.to_str().unwrap(),
        "--grid",
        "optim.lr=1e-3,5e-3",
        "--grid",
        "model.d_model=16,32",
        "--seeds",
        "2",
        "--run-dir",
        sweep_dir.to_str().unwrap(),
    ];

    // Killed (SIGKILL, as a lost machine would) once three runs finished
    // and another has checkpointed its first epoch but not finished.
    let mut child = Command::new(env!("CARGO_BIN_EXE_recforge"))
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while summaries(&sweep_dir).len() < 3 || interrupted(&sweep_dir) == 0 {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the sweep ended before it could be killed"
        );
        assert!(start.elapsed() < Duration::from_secs(600), "no progress");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let done: Vec<(PathBuf, Vec<u8>)> = summaries(&sweep_dir)
        .into_iter()
        .map(|p| {
            let b = std::fs::read(&p).unwrap();
            (p, b)
        })
        .collect();
    assert!(done.len() < 8, "killed before the end");
    assert_eq!(interrupted(&sweep_dir), 1, "one run left mid-training");

    let (ok, out, err) = recforge(&args);
    assert!(ok, "{err}");
    for (p, bytes) in &done {
        assert_eq!(
            &std::fs::read(p).unwrap(),
            bytes,
            "{} was trained again",
            p.display()
        );
    }
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(sweep_dir.join("sweep.json")).unwrap()).unwrap();
    let n = |k: &str| report[k].as_u64().unwrap() as usize;
    assert_eq!(n("reused"), done.len(), "{out}");
    assert_eq!(
        n("resumed"),
        1,
        "the interrupted run resumed from its checkpoint"
    );
    assert_eq!(n("trained") + n("resumed") + n("reused"), 8);
    assert_eq!(summaries(&sweep_dir).len(), 8);
    let combos = report["combos"].as_array().unwrap();
    assert_eq!(combos.len(), 4, "every combination in the table");
    let valid: Vec<f64> = combos
        .iter()
        .map(|c| c["valid"]["mean"].as_f64().unwrap())
        .collect();
    assert!(
        valid.windows(2).all(|w| w[0] >= w[1]),
        "sorted on validation: {valid:?}"
    );
    for c in combos {
        assert_eq!(c["runs"].as_array().unwrap().len(), 2, "two seeds each");
    }
    let md = std::fs::read_to_string(sweep_dir.join("sweep.md")).unwrap();
    for lr in ["1e-3", "5e-3"] {
        assert_eq!(md.matches(&format!("| {lr} |")).count(), 2, "{md}");
    }
    // The best combination's config, resolved.
    let best = Experiment::load(&sweep_dir.join("best.toml"), &[]).unwrap();
    let first = &combos[0]["settings"];
    assert_eq!(
        best.model.d_model.to_string(),
        first[1][1].as_str().unwrap()
    );
    assert_eq!(best.seed, 11);

    // `runs` over three of them, copied out.
    let three = dir.path().join("three");
    for (i, s) in summaries(&sweep_dir).iter().step_by(3).enumerate() {
        copy_dir(s.parent().unwrap(), &three.join(format!("run{i}")));
    }
    let (ok, out, err) = recforge(&["runs", three.to_str().unwrap(), "--sort", "ndcg@10"]);
    assert!(ok, "{err}");
    let table = std::fs::read_to_string(three.join("runs.md")).unwrap();
    let rows: Vec<&str> = table
        .lines()
        .filter(|l| l.starts_with("| ") && !l.starts_with("| #"))
        .collect();
    assert_eq!(rows.len(), 3, "{table}");
    let values: Vec<f64> = rows
        .iter()
        .map(|r| r.split(" | ").nth(4).unwrap().parse().unwrap())
        .collect();
    assert!(
        values.windows(2).all(|w| w[0] >= w[1]),
        "sorted: {values:?}\n{table}"
    );
    assert!(
        rows.iter()
            .filter(|r| r.contains("seed=")
                || r.contains("optim.lr=")
                || r.contains("model.d_model="))
            .count()
            >= 2,
        "the config differences against the first run: {table}"
    );
    assert!(out.contains("3 runs"), "{out}");
    assert!(
        std::fs::read_to_string(three.join("runs.svg"))
            .unwrap()
            .starts_with("<svg")
    );
}
