//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

use recforge::ingest::synth::{SynthConfig, generate};

/// A small synthetic H&M dataset in `dir/raw`.
pub fn small_hm(dir: &Path, seed: u64) -> PathBuf {
    let raw = dir.join("raw");
    let cfg = SynthConfig {
        customers: 3_000,
        articles: 600,
        days: 70,
        seed,
        ..SynthConfig::default()
    };
    generate(&cfg, &raw).expect("synth");
    raw
}

/// Runs the real binary; returns (success, stdout, stderr).
pub fn recforge(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_recforge"))
        .args(args)
        .output()
        .expect("run recforge");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `recforge prepare --format table --data LOG --out OUT --map MAP`, then
/// `extra`: whether it succeeded, and its stderr.
pub fn prepare_table(log: &Path, out: &Path, map: &str, extra: &[&str]) -> (bool, String) {
    let mut args = vec![
        "prepare",
        "--format",
        "table",
        "--data",
        log.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--map",
        map,
    ];
    args.extend_from_slice(extra);
    let (ok, _, err) = recforge(&args);
    (ok, err)
}

/// Names in `dir`, sorted (to check nothing half-written was left there).
pub fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// Rewrites line `line` (1-based) of a file with `f`.
pub fn edit_line(path: &Path, line: usize, f: impl Fn(&str) -> String) {
    let text = std::fs::read_to_string(path).unwrap();
    let mut lines: Vec<String> = text.lines().map(String::from).collect();
    lines[line - 1] = f(&lines[line - 1]);
    std::fs::write(path, lines.join("\n") + "\n").unwrap();
}

/// Replaces comma-separated field `field` (0-based) on line `line` (1-based).
pub fn set_field(path: &Path, line: usize, field: usize, value: &str) {
    edit_line(path, line, |l| {
        let mut f: Vec<&str> = l.split(',').collect();
        f[field] = value;
        f.join(",")
    });
}

/// `serving-data --format parquet` (what the Spark job reads) holds the
/// purchases of the JSON lines, in their order, every channel included: a
/// null channel would drop the customer's channels at serving. Both are
/// written from the cache `data` into `out`.{jsonl,parquet}.
pub fn parquet_holds_the_json_lines_purchases(data: &Path, out: &Path) {
    use polars::prelude::{DataType, ParquetReader, SerReader};
    use recforge::export::serving_data::{Format, write_as};
    let (json, pq) = (out.with_extension("jsonl"), out.with_extension("parquet"));
    write_as(data, &json, 50, None, Format::Jsonl).unwrap();
    write_as(data, &pq, 50, None, Format::Parquet).unwrap();
    let df = ParquetReader::new(std::fs::File::open(pq.join("purchases.parquet")).unwrap())
        .finish()
        .unwrap();
    let channel = df
        .column("channel")
        .unwrap()
        .as_materialized_series()
        .clone();
    assert_eq!(
        channel.null_count(),
        0,
        "null channels in purchases.parquet"
    );
    let text = std::fs::read_to_string(json.join("customers.jsonl")).unwrap();
    let from_json: Vec<u64> = text
        .lines()
        .flat_map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["history"]
                .as_array()
                .unwrap()
                .iter()
                .map(|h| h["channel"].as_u64().unwrap())
                .collect::<Vec<_>>()
        })
        .collect();
    let from_parquet: Vec<u64> = channel
        .cast(&DataType::UInt64)
        .unwrap()
        .u64()
        .unwrap()
        .into_no_null_iter()
        .collect();
    assert!(!from_json.is_empty());
    assert_eq!(from_parquet, from_json);
}
