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
