//! `prepare --format table`: any CSV or Parquet log through a column map,
//! read as exactly as the H&M reader, trained on, and refused with file,
//! line (or row) and column when a value is bad, with nothing left behind.

mod common;

use std::fs::File;
use std::path::{Path, PathBuf};

use common::{listing, prepare_table, set_field, small_hm};
use polars::prelude::*;
use recforge::data::{Source, TimeUnit, cache};
use recforge::ingest::Format;
use recforge::pipeline::commands::prepare;

fn table_prepare(raw: &Path, out: &Path, extra: &[&str]) -> (bool, String) {
    prepare_table(
        &raw.join("transactions_train.csv"),
        out,
        "user=customer_id,item=article_id,time=t_dat,price=price,channel=sales_channel_id",
        extra,
    )
}

#[test]
fn a_csv_log_with_its_attribute_files_reads_as_the_hm_reader_does() {
    let dir = tempfile::tempdir().unwrap();
    let raw = small_hm(dir.path(), 3);
    let hm = prepare(&raw, &dir.path().join("hm"), Format::Hm).unwrap();
    let articles = raw.join("articles.csv");
    let customers = raw.join("customers.csv");
    let out = dir.path().join("table");
    let (ok, err) = table_prepare(
        &raw,
        &out,
        &[
            "--items",
            articles.to_str().unwrap(),
            "--item-map",
            "id=article_id",
            "--users",
            customers.to_str().unwrap(),
            "--user-map",
            "id=customer_id,age=age",
        ],
    );
    assert!(ok, "{err}");
    let t = cache::read(&out).unwrap();
    assert_eq!(t.meta.source, Source::Table);
    assert_eq!(t.meta.time_unit, TimeUnit::Day, "dates give day numbers");
    assert_eq!(t.inter, hm.inter, "every row, id, day, price and channel");
    assert_eq!(
        (t.users.ids.clone(), t.items.ids.clone()),
        (hm.users.ids.clone(), hm.items.ids.clone())
    );
    for f in ["product_code", "department_no", "colour_group_code"] {
        assert_eq!(
            t.items.feature(f).map(|f| &f.codes),
            hm.items.feature(f).map(|f| &f.codes),
            "{f}"
        );
    }
    let same_age = t
        .age
        .iter()
        .zip(&hm.age)
        .all(|(a, b)| a == b || (a.is_nan() && b.is_nan()));
    assert!(same_age, "ages read from the users file");
}

/// The H&M log rewritten as Parquet the way an exporter would: integer
/// item ids, epoch-second timestamps with a time of day, another price name.
fn parquet_log(raw: &Path, path: &Path) -> usize {
    let text = std::fs::read_to_string(raw.join("transactions_train.csv")).unwrap();
    let (mut user, mut item, mut ts, mut amount) = (vec![], vec![], vec![], vec![]);
    for (k, line) in text.lines().skip(1).enumerate() {
        let f: Vec<&str> = line.split(',').collect();
        let day = recforge::util::dates::parse_ymd(f[0]).unwrap() as i64;
        user.push(f[1].to_string());
        item.push(f[2].parse::<i64>().unwrap());
        ts.push(day * 86_400 + (k as i64 * 37) % 86_400);
        amount.push(f[3].parse::<f64>().unwrap());
    }
    let n = user.len();
    let mut df = DataFrame::new_infer_height(vec![
        Column::new("visitor".into(), user),
        Column::new("sku".into(), item),
        Column::new("ts".into(), ts),
        Column::new("amount".into(), amount),
    ])
    .unwrap();
    ParquetWriter::new(File::create(path).unwrap())
        .finish(&mut df)
        .unwrap();
    n
}

fn tiny_experiment(cache: &Path) -> recforge::config::experiment::Experiment {
    let toml = format!(
        r#"
name = "table"
seed = 3
device = "flex"
[data]
cache = "{}"
split = "last-week"
max_len = 8
[model]
d_model = 16
n_heads = 2
n_layers = 1
d_ff = 32
item_features = false
[train]
batch_size = 64
epochs = 1
patience = 0
[eval]
ks = [12]
metric = "map@12"
"#,
        cache.display()
    );
    recforge::config::experiment::Experiment::parse(&toml, &[]).unwrap()
}

#[test]
fn a_parquet_log_with_epoch_seconds_prepares_and_trains() {
    let dir = tempfile::tempdir().unwrap();
    let raw = small_hm(dir.path(), 4);
    let log = dir.path().join("events.parquet");
    let rows = parquet_log(&raw, &log);
    let out = dir.path().join("cache");
    let (ok, err) = prepare_table(
        &log,
        &out,
        "user=visitor,item=sku,time=ts,price=amount",
        &[],
    );
    assert!(ok, "{err}");
    let ds = cache::read(&out).unwrap();
    assert_eq!(
        ds.meta.time_unit,
        TimeUnit::Second,
        "epoch seconds stay seconds"
    );
    assert_eq!(ds.inter.len(), rows);
    assert!(ds.meta.has_price);
    // Item ids written as integers come back as their decimal text.
    assert!(
        ds.items.ids[1..]
            .iter()
            .all(|i| !i.starts_with('0') && i.parse::<u64>().is_ok())
    );
    let run = dir.path().join("run");
    let outcome = recforge::train::train(
        &tiny_experiment(&out),
        &recforge::train::TrainOptions {
            run_dir: run.clone(),
            ..Default::default()
        },
    )
    .unwrap();
    let map = outcome
        .test
        .and_then(|t| t.plain.first().map(|m| m.map))
        .unwrap_or(f64::NAN);
    assert!(
        map.is_finite() && map > 0.0,
        "a trained model that scores: MAP@12 {map}"
    );
    assert!(run.join("results.md").exists());
    // A log without channels (channel 0 throughout) reaches the Spark
    // job's Parquet with every purchase's channel, as the JSON lines.
    common::parquet_holds_the_json_lines_purchases(&out, &dir.path().join("serving"));
}

/// `prepare` must fail naming the place, and leave the existing cache
/// `dir/cache` and the directory exactly as they were.
fn fails_cleanly(dir: &Path, run: impl FnOnce(&Path) -> (bool, String)) -> String {
    let out = dir.join("cache");
    let meta = || std::fs::read(out.join("meta.json")).unwrap();
    let before = (listing(dir), listing(&out), meta());
    let (ok, err) = run(&out);
    assert!(!ok, "bad input must fail");
    let after = (listing(dir), listing(&out), meta());
    assert_eq!(
        after, before,
        "a failed prepare leaves nothing behind and the old cache whole"
    );
    err
}

#[test]
fn bad_rows_name_the_file_the_row_and_the_column() {
    let dir = tempfile::tempdir().unwrap();
    let raw = small_hm(dir.path(), 5);
    // A good cache, which every failed prepare below must leave whole.
    prepare(&raw, &dir.path().join("cache"), Format::Hm).unwrap();
    let log = raw.join("transactions_train.csv");
    set_field(&log, 321, 0, "2020-13-01");
    let err = fails_cleanly(dir.path(), |out| table_prepare(&raw, out, &[]));
    assert!(
        err.contains("transactions_train.csv")
            && err.contains("line 321")
            && err.contains("`t_dat`"),
        "{err}"
    );
    // A time of day among plain dates is one column in two forms.
    set_field(&log, 321, 0, "2018-10-01 10:00:00");
    let err = fails_cleanly(dir.path(), |out| table_prepare(&raw, out, &[]));
    assert!(
        err.contains("line 321") && err.contains("one form"),
        "{err}"
    );
    set_field(&log, 321, 0, "2018-10-01");
    set_field(&log, 77, 3, "-1");
    let err = fails_cleanly(dir.path(), |out| table_prepare(&raw, out, &[]));
    assert!(err.contains("line 77") && err.contains("`price`"), "{err}");
    // An items file closes the item set.
    set_field(&log, 77, 3, "0.01");
    set_field(&log, 90, 2, "0999999999");
    let articles = raw.join("articles.csv");
    let err = fails_cleanly(dir.path(), |out| {
        table_prepare(
            &raw,
            out,
            &[
                "--items",
                articles.to_str().unwrap(),
                "--item-map",
                "id=article_id",
            ],
        )
    });
    assert!(
        err.contains("line 90") && err.contains("unknown item `0999999999`"),
        "{err}"
    );
    let err = fails_cleanly(dir.path(), |out| {
        prepare_table(&log, out, "user=customer_id,item=article,time=t_dat", &[])
    });
    assert!(
        err.contains("missing column `article`") && err.contains("article_id"),
        "{err}"
    );

    // Parquet: rows counted from 1.
    std::fs::create_dir(dir.path().join("pq")).unwrap();
    let pq: PathBuf = dir.path().join("pq/bad.parquet");
    let mut df = DataFrame::new_infer_height(vec![
        Column::new("u".into(), ["a", "b", "c"]),
        Column::new("i".into(), [1i64, 2, 3]),
        Column::new(
            "t".into(),
            [1_600_000_000i64, 1_600_000_100, 1_600_000_000_000],
        ),
    ])
    .unwrap();
    ParquetWriter::new(File::create(&pq).unwrap())
        .finish(&mut df)
        .unwrap();
    let err = fails_cleanly(dir.path(), |out| {
        prepare_table(&pq, out, "user=u,item=i,time=t", &[])
    });
    assert!(
        err.contains("bad.parquet")
            && err.contains("row 3")
            && err.contains("`t`")
            && err.contains("milliseconds"),
        "{err}"
    );
}
