//! synth → prepare → baselines → submission, on small generated data and on
//! hand-written RecBole atomic files.

mod common;

use std::path::Path;

use common::{recforge, small_hm};
use recforge::data::split::SplitKind;
use recforge::eval::baselines::Params;
use recforge::ingest::Format;
use recforge::ingest::synth::{SynthConfig, generate};
use recforge::pipeline::commands::{BaselineOptions, prepare, run_baselines};

fn opts(dir: &Path, split: SplitKind, ks: Vec<usize>) -> BaselineOptions {
    BaselineOptions {
        split,
        target_days: 7,
        ks,
        params: Params::default(),
        results_dir: dir.join("results"),
        submission: None,
    }
}

#[test]
fn synth_is_deterministic_per_seed() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = SynthConfig {
        customers: 500,
        articles: 200,
        days: 30,
        seed: 9,
        ..SynthConfig::default()
    };
    generate(&cfg, &dir.path().join("a")).unwrap();
    generate(&cfg, &dir.path().join("b")).unwrap();
    generate(&SynthConfig { seed: 10, ..cfg }, &dir.path().join("c")).unwrap();
    for f in [
        "articles.csv",
        "customers.csv",
        "transactions_train.csv",
        "sample_submission.csv",
    ] {
        let a = std::fs::read(dir.path().join("a").join(f)).unwrap();
        assert_eq!(
            a,
            std::fs::read(dir.path().join("b").join(f)).unwrap(),
            "{f}"
        );
        assert_ne!(
            a,
            std::fs::read(dir.path().join("c").join(f)).unwrap(),
            "{f}"
        );
    }
}

/// The bytes a seed gives are pinned: the generator's and the RNG's math
/// functions are pure Rust (`libm`), so these hashes hold on every platform
/// and compiler. A deliberate change of the generative story changes them;
/// then regenerate every reported result and update the hashes here.
#[test]
fn synth_bytes_are_pinned_across_platforms() {
    use sha2::{Digest, Sha256};
    let dir = tempfile::tempdir().unwrap();
    let cfg = SynthConfig::from_toml_file(Path::new("datasets/synth-hm-small.toml")).unwrap();
    let cfg = SynthConfig {
        customers: 400,
        articles: 300,
        days: 60,
        ..cfg
    };
    generate(&cfg, dir.path()).unwrap();
    let hashes: Vec<String> = [
        "articles.csv",
        "customers.csv",
        "transactions_train.csv",
        "sample_submission.csv",
    ]
    .iter()
    .map(|f| {
        let bytes = std::fs::read(dir.path().join(f)).unwrap();
        format!("{f} {:x}", Sha256::digest(&bytes))
    })
    .collect();
    let expected = [
        "articles.csv 34990a962785326c85c8a0fc6fc0cfd7bf0746393615eda5bdfc888c3a0219ca",
        "customers.csv c8d6bfc8c09046d573989b73e05180d6302a462730716eea373e777f9eaf841a",
        "transactions_train.csv 5715d79fa3b48dcab866aab4ac684028d69a87004e388208ee523011bf4cfbdc",
        "sample_submission.csv 40fc31999b78496c1b79a23355b17673a7a42e2db19ed60345ccae7457983bad",
    ];
    assert_eq!(hashes, expected);
}

/// The small calibrated preset is the full one at 1/20: same knobs, scaled
/// sizes.
#[test]
fn the_small_hm_preset_shares_the_full_presets_knobs() {
    let full = SynthConfig::from_toml_file(Path::new("datasets/synth-hm.toml")).unwrap();
    let small = SynthConfig::from_toml_file(Path::new("datasets/synth-hm-small.toml")).unwrap();
    assert_eq!(small.customers, full.customers / 20);
    assert_eq!(small.articles, full.articles / 20);
    let sized = SynthConfig {
        customers: full.customers,
        articles: full.articles,
        ..small
    };
    assert_eq!(
        toml::to_string(&sized).unwrap(),
        toml::to_string(&full).unwrap()
    );
}

#[test]
fn cache_round_trips_and_keeps_leading_zeros() {
    let dir = tempfile::tempdir().unwrap();
    let raw = small_hm(dir.path(), 11);
    let cache = dir.path().join("cache");
    let ds = prepare(&raw, &cache, Format::Auto).unwrap();
    let back = recforge::data::cache::read(&cache).unwrap();
    // Field by field: ages use NaN for unknown, and NaN != NaN.
    assert!(
        ds.meta == back.meta
            && ds.users == back.users
            && ds.items == back.items
            && ds.inter == back.inter
    );
    assert!(
        ds.age
            .iter()
            .zip(&back.age)
            .all(|(a, b)| a == b || (a.is_nan() && b.is_nan()))
    );
    assert!(back.age.iter().skip(1).any(|a| a.is_nan()) && back.age.iter().any(|a| *a > 17.0));
    assert_eq!(back.items.ids[0], "", "index 0 is padding");
    assert!(
        back.items.ids[1..]
            .iter()
            .all(|id| id.len() == 10 && id.starts_with('0'))
    );
    assert!(back.inter.item.iter().all(|&i| i >= 1) && back.inter.user.iter().all(|&u| u >= 1));
    let rows = std::fs::read_to_string(raw.join("transactions_train.csv"))
        .unwrap()
        .lines()
        .count()
        - 1;
    assert_eq!(back.inter.len(), rows);
    assert_eq!(
        back.items.feature("product_type_no").unwrap().codes.len(),
        back.items.len()
    );
}

#[test]
fn repurchase_beats_popularity_and_the_submission_is_valid() {
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("raw");
    let cfg = SynthConfig {
        customers: 12_000,
        articles: 2_000,
        days: 120,
        seed: 5,
        ..SynthConfig::default()
    };
    generate(&cfg, &raw).unwrap();
    let ds = prepare(&raw, &dir.path().join("cache"), Format::Hm).unwrap();
    let sub = dir.path().join("sub.csv");
    let out = run_baselines(
        &ds,
        &BaselineOptions {
            submission: Some(sub.clone()),
            ..opts(dir.path(), SplitKind::LastWeek, vec![12])
        },
    )
    .unwrap();
    let map = |name: &str| {
        out.table
            .rows
            .iter()
            .find(|r| r.name == name)
            .unwrap()
            .metrics[0]
            .map
    };
    assert!(
        map("repurchase+popular") > 1.2 * map("popular"),
        "{}",
        out.table.markdown()
    );
    assert!(
        map("decayed-popular") > map("popular"),
        "popularity drifts, so recency must help"
    );
    assert!(out.files.0.exists() && out.files.1.exists());
    let report = recforge::submit::file::check(&ds, &sub).unwrap();
    assert_eq!(report.rows, cfg.customers);

    // The checker rejects a damaged file.
    let text = std::fs::read_to_string(&sub).unwrap();
    let mut lines: Vec<&str> = text.lines().collect();
    lines.remove(5);
    std::fs::write(&sub, lines.join("\n")).unwrap();
    assert!(recforge::submit::file::check(&ds, &sub).is_err());
    // An unknown customer is named, with its line.
    let mut lines: Vec<String> = text.lines().map(String::from).collect();
    let rest = lines[3].split_once(',').unwrap().1.to_string();
    lines[3] = format!("nobody,{rest}");
    std::fs::write(&sub, lines.join("\n")).unwrap();
    let err = recforge::submit::file::check(&ds, &sub)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("unknown customer `nobody`") && err.contains("line 4,"),
        "{err}"
    );
}

fn write_atomic_files(dir: &Path, split_files: bool) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(
        dir.join("toy.user"),
        "user_id:token\tage:token\tgender:token\nu1\t24\tM\nu2\t53\tF\nu3\t33\tF\n",
    )
    .unwrap();
    std::fs::write(dir.join("toy.item"), "item_id:token\tclass:token_seq\tyear:token\na\tx y\t1995\nb\tx\t1996\nc\ty\t1995\nd\tz\t1990\n").unwrap();
    let rows = "u1\ta\t5\t10\nu1\tb\t4\t20\nu1\tc\t3\t30\nu2\ta\t5\t10\nu2\tb\t4\t20\nu2\td\t1\t30\nu3\ta\t2\t15\nu3\tc\t2\t40\n";
    let header = "user_id:token\titem_id:token\trating:float\ttimestamp:float\n";
    if split_files {
        let lines: Vec<&str> = rows.lines().collect();
        std::fs::write(
            dir.join("toy.train.inter"),
            format!("{header}{}\n", lines[..5].join("\n")),
        )
        .unwrap();
        std::fs::write(
            dir.join("toy.valid.inter"),
            format!("{header}{}\n", lines[5..6].join("\n")),
        )
        .unwrap();
        std::fs::write(
            dir.join("toy.test.inter"),
            format!("{header}{}\n", lines[6..].join("\n")),
        )
        .unwrap();
    } else {
        std::fs::write(dir.join("toy.inter"), format!("{header}{rows}")).unwrap();
    }
}

#[test]
fn recbole_atomic_files_with_loo_and_explicit_splits() {
    let dir = tempfile::tempdir().unwrap();
    write_atomic_files(&dir.path().join("plain"), false);
    let ds = prepare(
        &dir.path().join("plain"),
        &dir.path().join("c1"),
        Format::Auto,
    )
    .unwrap();
    assert_eq!((ds.users.len(), ds.items.len(), ds.inter.len()), (4, 5, 8));
    assert_eq!(ds.meta.name, "toy");
    assert_eq!(ds.age[2], 53.0);
    assert!(ds.users.feature("gender").is_some());
    assert!(
        ds.items.feature("class").is_none(),
        "token_seq fields are not categorical features"
    );
    let s = recforge::data::split::split(&ds, SplitKind::Loo, 7).unwrap();
    // u1 and u2 hold out two rows each, u3 one (test only).
    assert_eq!((s.train.len(), s.valid.len(), s.test.len()), (3, 2, 3));
    let out = run_baselines(&ds, &opts(dir.path(), SplitKind::Loo, vec![1, 2])).unwrap();
    assert_eq!(out.table.rows[0].metrics[0].users, 3);

    write_atomic_files(&dir.path().join("split"), true);
    let ds = prepare(
        &dir.path().join("split"),
        &dir.path().join("c2"),
        Format::Recbole,
    )
    .unwrap();
    let s = recforge::data::split::split(&ds, SplitKind::Explicit, 7).unwrap();
    assert_eq!((s.train.len(), s.valid.len(), s.test.len()), (5, 1, 2));
}

#[test]
fn unknown_recbole_item_is_an_error_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    write_atomic_files(dir.path(), false);
    let inter = dir.path().join("toy.inter");
    let text = std::fs::read_to_string(&inter)
        .unwrap()
        .replace("u3\tc\t2\t40", "u3\tzz\t2\t40");
    std::fs::write(&inter, text).unwrap();
    let e = prepare(dir.path(), &dir.path().join("c"), Format::Auto)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("toy.inter: line 9, column `item_id`: unknown item `zz`"),
        "{e}"
    );
}

#[test]
fn cli_quickstart_runs_and_help_explains_options() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("qs");
    let (ok, stdout, stderr) = recforge(&[
        "quickstart",
        "--dir",
        d.to_str().unwrap(),
        "--customers",
        "2000",
        "--articles",
        "500",
        "--days",
        "60",
    ]);
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("repurchase+popular") && stdout.contains("submission check: ok"),
        "{stdout}"
    );
    let (ok, help, _) = recforge(&["synth", "--help"]);
    assert!(ok && help.contains("--customers") && help.contains("real data has 1,371,980"));
}

#[test]
fn hm_explicit_split_files_become_the_test_part() {
    let dir = tempfile::tempdir().unwrap();
    let raw = small_hm(dir.path(), 12);
    let tx = raw.join("transactions_train.csv");
    let text = std::fs::read_to_string(&tx).unwrap();
    let (header, rows) = text.split_once('\n').unwrap();
    // Everything from the last 10 days goes to an explicit test file.
    let cut = "2018-11-19";
    let (train, test): (Vec<&str>, Vec<&str>) = rows.lines().partition(|l| &l[..10] < cut);
    std::fs::write(&tx, format!("{header}\n{}\n", train.join("\n"))).unwrap();
    std::fs::write(
        raw.join("transactions_test.csv"),
        format!("{header}\n{}\n", test.join("\n")),
    )
    .unwrap();
    let ds = prepare(&raw, &dir.path().join("cache"), Format::Hm).unwrap();
    assert!(ds.meta.explicit_split);
    let s = recforge::data::split::split(&ds, SplitKind::Explicit, 7).unwrap();
    assert_eq!(
        (s.train.len(), s.valid.len(), s.test.len()),
        (train.len(), 0, test.len())
    );
    assert!(
        s.test
            .iter()
            .all(|&r| ds.inter.part[r] == recforge::data::Part::Test as u8)
    );
    let out = run_baselines(&ds, &opts(dir.path(), SplitKind::Explicit, vec![12])).unwrap();
    assert!(out.table.rows.iter().all(|r| r.metrics[0].users > 0));
}
