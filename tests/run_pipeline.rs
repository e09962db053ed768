//! `recforge run`: the whole pipeline from one config, on a tiny synthetic
//! H&M log; unchanged steps are reused, and a ranker change reruns only
//! what depends on the ranker.

use std::path::Path;

use recforge::pipeline::{PipelineConfig, run};

fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// The steps a run ran rather than reused.
fn reran(out: &recforge::pipeline::PipelineOutcome) -> Vec<&str> {
    out.steps
        .iter()
        .filter(|s| !s.reused)
        .map(|s| s.step.as_str())
        .collect()
}

#[test]
fn pipeline_runs_end_to_end_and_reuses_unchanged_steps() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let synth = write(
        d,
        "synth.toml",
        "customers = 2000\narticles = 400\ndays = 70\nseed = 5\n",
    );
    let tt = write(
        d,
        "tt.toml",
        r#"
seed = 2
device = "flex"
[data]
split = "last-week"
[model]
kind = "two-tower"
d_model = 16
[tower]
feature_dim = 8
hidden = 32
id_buckets = 512
id_dim = 8
[loss]
kind = "in-batch"
mixed_negatives = 16
[train]
batch_size = 256
epochs = 1
[eval]
ks = [12, 50]
metric = "recall@50"
"#,
    );
    let sr = write(
        d,
        "sr.toml",
        r#"
seed = 2
device = "flex"
[data]
split = "last-week"
max_len = 10
[model]
d_model = 16
n_heads = 2
n_layers = 1
d_ff = 32
[train]
batch_size = 128
epochs = 1
[eval]
ks = [12]
metric = "map@12"
"#,
    );
    let pipeline = |ranker_lr: &str| {
        format!(
            r#"
name = "tiny"
submission = true
[data]
synth = "{}"
[retrieval]
experiment = "{}"
[ranker]
experiment = "{}"
set = ["optim.lr={ranker_lr}"]
[candidates]
two_tower = 20
sasrec = 20
[objective]
kind = "purchase"
[trees]
weeks = 2
max_rounds = 60
patience = 20
"#,
            synth.display(),
            tt.display(),
            sr.display()
        )
    };
    let cfg_path = write(d, "p.toml", &pipeline("0.001"));
    let cfg = PipelineConfig::load(&cfg_path).unwrap();
    let (run_dir, report) = (d.join("run"), d.join("report"));
    let first = run(&cfg, &run_dir, &report).unwrap();
    let ran: Vec<(&str, bool)> = first
        .steps
        .iter()
        .map(|s| (s.step.as_str(), s.reused))
        .collect();
    assert_eq!(
        ran,
        [
            ("data", false),
            ("baselines", false),
            ("retrieval", false),
            ("ranker", false),
            ("rank-tiny", false),
            ("retrieval-refit", false),
            ("ranker-refit", false),
            ("second-stage-refit-tiny", false),
            ("submission-tiny", false)
        ]
    );
    // The evaluated models never saw the second stage's weeks; the
    // submission's refit models saw every row, the last week included.
    let ds = recforge::data::cache::read(&run_dir.join("cache")).unwrap();
    let rows = |run: &str| {
        let info: serde_json::Value =
            serde_json::from_slice(&std::fs::read(run_dir.join(run).join("run.json")).unwrap())
                .unwrap();
        info["train_rows"].as_u64().unwrap() as usize
    };
    let last = recforge::data::split::last_day(&ds).unwrap();
    let before = |day: i64| (0..ds.inter.len()).filter(|&r| ds.day(r) < day).count();
    for stage in ["retrieval", "ranker"] {
        assert_eq!(rows(&format!("{stage}-refit")), ds.inter.len(), "{stage}");
        // The models' own split ends where the two tree weeks begin (they
        // early-stop on the first): they train on the rows four weeks
        // before the end (two tree weeks, validation, test).
        assert_eq!(rows(stage), before(last + 1 - 4 * 7), "{stage}");
    }
    let results = std::fs::read_to_string(report.join("results.md")).unwrap();
    assert!(
        results.contains("candidates ranked by tiny-ranker"),
        "{results}"
    );
    assert!(results.contains("A/B against the best baseline"));
    // The second stage was trained on the weeks before the validation
    // week, and the served trees are compared with the logistic blender
    // and the ranker's score alone.
    assert!(results.contains("## The second stage"), "{results}");
    assert!(results.contains("## The logistic blender"), "{results}");
    assert!(results.contains("the logistic blender (A) against the served ranking (B)"));
    assert!(results.contains("the ranker's score alone (A) against the served ranking (B)"));
    assert!(results.contains("trees without the SASRec features"));
    assert!(results.contains("| `rank_sasrec` |"), "{results}");
    assert!(run_dir.join("second-stage-tiny.txt").exists());
    // The pipeline's per-customer metrics pair up with another run's.
    let mine = recforge::eval::compare::PerCustomer::read(&run_dir.join("per-customer-tiny.json"))
        .unwrap();
    let same = recforge::eval::compare::compare(&mine, &mine, 100, 1).unwrap();
    assert!(same.customers > 0 && same.customers == mine.customers.len());
    let stages = std::fs::read_to_string(report.join("stages.md")).unwrap();
    assert!(stages.contains("| total |"), "{stages}");
    assert!(stages.contains("## Model checks"), "{stages}");
    // Each step's peak is its own (the counter is reset where Linux allows).
    if cfg!(target_os = "linux") {
        let table = stages.split("## Model checks").next().unwrap();
        assert!(!table.lines().any(|l| l.ends_with("* |")), "{stages}");
    }
    for chart in ["validation.svg", "candidates.svg"] {
        let svg = std::fs::read_to_string(report.join(chart)).unwrap();
        assert!(svg.starts_with("<svg") && svg.contains("polyline") == (chart == "validation.svg"));
    }
    let sub = std::fs::read_to_string(first.submission.as_ref().unwrap()).unwrap();
    assert_eq!(sub.lines().count(), 2000 + 1);
    let bytes = |p: &Path| std::fs::read(p).unwrap();
    let sub_bytes = bytes(first.submission.as_ref().unwrap());

    // Unchanged: everything reused, nothing rewritten.
    let again = run(&cfg, &run_dir, &report).unwrap();
    assert!(again.steps.iter().all(|s| s.reused), "{:?}", again.steps);
    assert_eq!(bytes(again.submission.as_ref().unwrap()), sub_bytes);

    // A missing output is made again, even with unchanged inputs.
    std::fs::remove_file(again.submission.as_ref().unwrap()).unwrap();
    let fourth = run(&cfg, &run_dir, &report).unwrap();
    assert_eq!(reran(&fourth), ["submission-tiny"]);
    assert_eq!(bytes(fourth.submission.as_ref().unwrap()), sub_bytes);

    // A ranker change reruns the ranker and what reads it, not retrieval.
    std::fs::write(&cfg_path, pipeline("0.002")).unwrap();
    let cfg = PipelineConfig::load(&cfg_path).unwrap();
    let third = run(&cfg, &run_dir, &report).unwrap();
    let reused: Vec<(&str, bool)> = third
        .steps
        .iter()
        .map(|s| (s.step.as_str(), s.reused))
        .collect();
    assert_eq!(
        reused,
        [
            ("data", true),
            ("baselines", true),
            ("retrieval", true),
            ("ranker", false),
            ("rank-tiny", false),
            ("retrieval-refit", true),
            ("ranker-refit", false),
            ("second-stage-refit-tiny", false),
            ("submission-tiny", false)
        ]
    );

    // Switching the trees off reruns only the ranking and the
    // submission, and the submission is then ordered by the blender: the
    // trees are what the first submission was ordered by.
    let with_trees = bytes(third.submission.as_ref().unwrap());
    let results_with_trees = std::fs::read_to_string(report.join("results.md")).unwrap();
    let mut plain = cfg.clone();
    plain.trees.enabled = false;
    let off = run(&plain, &run_dir, &report).unwrap();
    assert_eq!(
        reran(&off),
        ["rank-tiny", "second-stage-refit-tiny", "submission-tiny"]
    );
    let without = bytes(off.submission.as_ref().unwrap());
    assert_ne!(with_trees, without);
    let results = std::fs::read_to_string(report.join("results.md")).unwrap();
    assert!(!results.contains("## The second stage"), "{results}");
    assert!(results.contains("## The logistic blender"), "{results}");

    // Exporting the second stage's rows changes no result; the validation
    // file holds only customers with a bought candidate, every candidate of
    // theirs, one column per registry feature.
    let mut export = cfg.clone();
    export.trees.export_rows = true;
    let exported = run(&export, &run_dir, &report).unwrap();
    assert_eq!(
        reran(&exported),
        ["rank-tiny", "second-stage-refit-tiny", "submission-tiny"]
    );
    assert_eq!(bytes(exported.submission.as_ref().unwrap()), with_trees);
    assert_eq!(
        std::fs::read_to_string(report.join("results.md")).unwrap(),
        results_with_trees
    );
    let rows_dir = run_dir.join("second-stage-rows-tiny");
    let summary: serde_json::Value =
        serde_json::from_slice(&bytes(&rows_dir.join("summary.json"))).unwrap();
    let read = |name: &str| {
        use polars::prelude::SerReader;
        let f = std::fs::File::open(rows_dir.join(name)).unwrap();
        polars::prelude::ParquetReader::new(f).finish().unwrap()
    };
    let (train, valid) = (read("train.parquet"), read("valid.parquet"));
    for f in recforge::rank::features::Feature::ALL {
        assert!(train.column(f.name()).is_ok() && valid.column(f.name()).is_ok());
    }
    let customers = |df: &polars::prelude::DataFrame| -> Vec<i64> {
        df.column("customer")
            .unwrap()
            .i64()
            .unwrap()
            .iter()
            .map(|v| v.unwrap())
            .collect()
    };
    let labels: Vec<f32> = valid
        .column("label")
        .unwrap()
        .f32()
        .unwrap()
        .iter()
        .map(|v| v.unwrap())
        .collect();
    let vc = customers(&valid);
    let n_valid = (*vc.last().unwrap() + 1) as usize;
    let mut bought = vec![false; n_valid];
    for (&c, &l) in vc.iter().zip(&labels) {
        bought[c as usize] |= l > 0.0;
    }
    assert!(bought.iter().all(|&b| b));
    assert!(n_valid <= summary["valid_customers"].as_u64().unwrap() as usize);
    assert!(customers(&train).windows(2).all(|w| w[0] <= w[1]));
    let served_map = summary["models"][0]["valid_map"].as_f64().unwrap();
    assert!(served_map > 0.0 && served_map <= 1.0, "{summary}");
}

#[test]
fn a_model_stage_on_another_split_is_refused_before_it_trains() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let synth = write(
        d,
        "synth.toml",
        "customers = 300\narticles = 80\ndays = 40\nseed = 3\n",
    );
    // No `split`: the experiment default is leave-one-out, whose training
    // part would include the pipeline's test week.
    let tt = write(
        d,
        "tt.toml",
        "device = \"flex\"\n[model]\nkind = \"two-tower\"\n[loss]\nkind = \"in-batch\"\n[eval]\nks = [12]\nmetric = \"recall@12\"\n",
    );
    let sr = write(
        d,
        "sr.toml",
        "device = \"flex\"\n[data]\nsplit = \"last-week\"\n",
    );
    let text = format!(
        "name = \"split\"\n[data]\nsynth = \"{}\"\n[retrieval]\nexperiment = \"{}\"\n[ranker]\nexperiment = \"{}\"\n",
        synth.display(),
        tt.display(),
        sr.display()
    );
    let cfg = PipelineConfig::load(&write(d, "p.toml", &text)).unwrap();
    let err = run(&cfg, &d.join("run"), &d.join("report"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("tt.toml") && err.contains("data.split = \"last-week\""),
        "{err}"
    );
    assert!(
        !d.join("run").join("retrieval").exists(),
        "nothing was trained"
    );
    // A good retrieval stage is not trained when the ranker's is wrong.
    let tt_ok = write(
        d,
        "tt_ok.toml",
        "device = \"flex\"\n[data]\nsplit = \"last-week\"\n[model]\nkind = \"two-tower\"\n[loss]\nkind = \"in-batch\"\n[eval]\nks = [12]\nmetric = \"recall@12\"\n",
    );
    let sr_bad = write(d, "sr_bad.toml", "device = \"flex\"\n");
    let both = text
        .replace(&tt.display().to_string(), &tt_ok.display().to_string())
        .replace(&sr.display().to_string(), &sr_bad.display().to_string());
    let cfg = PipelineConfig::load(&write(d, "p2.toml", &both)).unwrap();
    let err = run(&cfg, &d.join("run2"), &d.join("report2"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("sr_bad.toml"), "{err}");
    assert!(
        !d.join("run2").join("retrieval").exists(),
        "retrieval trained"
    );
    // With the pipeline's target days given but another length, also refused.
    let text = both
        .replace(&sr_bad.display().to_string(), &sr.display().to_string())
        .replace("[data]\n", "[data]\ntarget_days = 14\n");
    let cfg = PipelineConfig::load(&write(d, "p14.toml", &text)).unwrap();
    let err = run(&cfg, &d.join("run14"), &d.join("report14"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("tt_ok.toml"), "{err}");
    assert!(err.contains("data.target_days = 14"), "{err}");
}
