//! Progress of a long loop over customers: one line redrawn on a terminal
//! (done, rate, time left), and one closing line either way, so a CI log
//! still says what took how long.
//!
//! Hand-written like the trainer's epoch bar (`train::progress`): two
//! counters do not justify a terminal crate and its build.

use std::io::{IsTerminal, Write};
use std::time::Instant;

pub struct Counter {
    label: String,
    total: usize,
    done: usize,
    started: Instant,
    last_draw: Option<Instant>,
    tty: bool,
}

impl Counter {
    /// `label` names the step (e.g. "ranking: test customers").
    pub fn new(label: impl Into<String>, total: usize) -> Self {
        Counter {
            label: label.into(),
            total,
            done: 0,
            started: Instant::now(),
            last_draw: None,
            tty: std::io::stderr().is_terminal(),
        }
    }

    /// `n` more done.
    pub fn add(&mut self, n: usize) {
        self.done = (self.done + n).min(self.total);
        if !self.tty {
            return;
        }
        let now = Instant::now();
        if self
            .last_draw
            .is_some_and(|t| now.duration_since(t).as_millis() < 200 && self.done < self.total)
        {
            return;
        }
        self.last_draw = Some(now);
        let secs = self.started.elapsed().as_secs_f64().max(1e-9);
        let left = if self.done > 0 {
            secs / self.done as f64 * (self.total - self.done) as f64
        } else {
            0.0
        };
        eprint!(
            "\r[{}] {} {:.0}/s, {} left   ",
            self.label,
            bar(self.done, self.total),
            self.done as f64 / secs,
            crate::train::progress::clock(left)
        );
        let _ = std::io::stderr().flush();
    }

    /// Clears the bar and says how long the step took.
    pub fn finish(self) {
        let secs = self.started.elapsed().as_secs_f64();
        if self.tty {
            eprint!("\r{}\r", " ".repeat(100));
        }
        eprintln!(
            "[{}] {} in {} ({:.0}/s)",
            self.label,
            self.done,
            crate::train::progress::clock(secs),
            self.done as f64 / secs.max(1e-9)
        );
    }
}

/// `[####....] done/total`, the bar both progress lines draw.
pub fn bar(done: usize, total: usize) -> String {
    let width = 24;
    let filled = (done * width)
        .checked_div(total)
        .unwrap_or(width)
        .min(width);
    format!(
        "[{}{}] {done}/{total}",
        "#".repeat(filled),
        ".".repeat(width - filled)
    )
}
