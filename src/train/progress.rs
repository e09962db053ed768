//! A one-line progress bar on a terminal; nothing when stderr is a file or
//! pipe (CI logs get one summary line per epoch instead).

use std::io::{IsTerminal, Write};
use std::time::Instant;

pub struct Progress {
    enabled: bool,
    started: Instant,
    total: usize,
    label: String,
    last_draw: Option<Instant>,
}

impl Progress {
    pub fn new(label: String, total: usize, allow: bool) -> Self {
        Progress {
            enabled: allow && std::io::stderr().is_terminal(),
            started: Instant::now(),
            total,
            label,
            last_draw: None,
        }
    }

    /// `done` steps of `total`, `items` sequences so far, current loss.
    pub fn update(&mut self, done: usize, items: usize, loss: f64) {
        if !self.enabled {
            return;
        }
        let now = Instant::now();
        if self
            .last_draw
            .is_some_and(|t| now.duration_since(t).as_millis() < 100 && done < self.total)
        {
            return;
        }
        self.last_draw = Some(now);
        let secs = self.started.elapsed().as_secs_f64().max(1e-9);
        let rate = items as f64 / secs;
        let eta = if done > 0 {
            secs / done as f64 * (self.total - done) as f64
        } else {
            0.0
        };
        eprint!(
            "\r{} {} {:.0} seq/s ETA {} loss {loss:.4}   ",
            self.label,
            crate::util::progress::bar(done, self.total),
            rate,
            clock(eta)
        );
        let _ = std::io::stderr().flush();
    }

    pub fn finish(&mut self) {
        if self.enabled {
            eprint!("\r{}\r", " ".repeat(100));
        }
    }
}

pub fn clock(secs: f64) -> String {
    let s = secs.max(0.0).round() as u64;
    format!("{:02}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}
