//! Wall time and peak memory of this process, for benchmarks.

use std::time::Instant;

/// Peak resident set size in MiB (Linux `VmHWM`); `None` elsewhere.
pub fn peak_rss_mib() -> Option<f64> {
    status_mib("self", "VmHWM")
}

/// A memory field of `/proc/PROC/status` (e.g. `VmRSS` of a process id)
/// in MiB; `None` where there is no such file.
pub fn status_mib(proc: &str, field: &str) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{proc}/status")).ok()?;
    let line = status
        .lines()
        .find(|l| l.strip_prefix(field).is_some_and(|r| r.starts_with(':')))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// Restarts the peak counter (Linux: writing 5 to `clear_refs` resets
/// `VmHWM` to the current RSS), so that a pipeline step's peak is its own
/// and not an earlier step's. Returns whether the kernel took it; where it
/// did not, the peak read afterwards is the process's so far.
pub fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// The line `recforge --report-resources` prints to stderr at exit and the
/// benchmark parses.
pub fn report_line(start: Instant) -> String {
    format!(
        "resources: wall_s={:.3} peak_rss_mib={:.1}",
        start.elapsed().as_secs_f64(),
        peak_rss_mib().unwrap_or(f64::NAN)
    )
}

pub fn parse_report_line(text: &str) -> Option<(f64, f64)> {
    let line = text.lines().rev().find(|l| l.starts_with("resources: "))?;
    let mut wall = None;
    let mut rss = None;
    for kv in line.trim_start_matches("resources: ").split_whitespace() {
        match kv.split_once('=') {
            Some(("wall_s", v)) => wall = v.parse().ok(),
            Some(("peak_rss_mib", v)) => rss = v.parse().ok(),
            _ => {}
        }
    }
    Some((wall?, rss?))
}
