//! `cargo bench --bench data_pipeline`: runs `recforge bench data` at the real
//! H&M size (set RECFORGE_BENCH_ARGS to override, e.g. "--customers 100000").

use std::process::Command;

fn main() {
    let exe = env!("CARGO_BIN_EXE_recforge");
    let extra = std::env::var("RECFORGE_BENCH_ARGS").unwrap_or_default();
    let status = Command::new(exe)
        .args(["bench", "data", "--clean"])
        .args(extra.split_whitespace())
        .status()
        .expect("run recforge");
    std::process::exit(status.code().unwrap_or(1));
}
