//! An open-loop load generator: requests leave at a fixed rate whatever the
//! server's speed, and each latency is measured from the moment its
//! request was due, so a slow server cannot hide its queue by slowing the
//! client down (no coordinated omission).

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::{Error, Result};

pub struct LoadConfig {
    /// Full URL of a POST route, e.g. http://127.0.0.1:8080/v1/hm/recommend.
    pub url: String,
    /// Requests per second.
    pub rate: f64,
    pub seconds: f64,
    /// Client threads (each keeps one connection alive); enough that the
    /// client is never the bottleneck.
    pub threads: usize,
    /// Request bodies, used in turn.
    pub bodies: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct LoadReport {
    pub sent: usize,
    pub ok: usize,
    pub failed: usize,
    pub wall_s: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl LoadReport {
    pub fn achieved_rate(&self) -> f64 {
        self.sent as f64 / self.wall_s
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

pub fn run(cfg: &LoadConfig) -> Result<LoadReport> {
    let positive = |x: f64| x.is_finite() && x > 0.0;
    if cfg.bodies.is_empty() || !positive(cfg.rate) || !positive(cfg.seconds) || cfg.threads == 0 {
        return Err(Error::Invalid(
            "load: need bodies, a positive rate, duration and thread count".into(),
        ));
    }
    let total = (cfg.rate * cfg.seconds).round() as usize;
    let next = AtomicUsize::new(0);
    let results = Mutex::new(Vec::with_capacity(total));
    let failed = AtomicUsize::new(0);
    let t0 = Instant::now() + Duration::from_millis(100);
    std::thread::scope(|s| {
        for _ in 0..cfg.threads {
            s.spawn(|| {
                let agent: ureq::Agent = ureq::Agent::config_builder()
                    .http_status_as_error(false)
                    .timeout_global(Some(Duration::from_secs(30)))
                    .build()
                    .into();
                let mut mine = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= total {
                        break;
                    }
                    let due = t0 + Duration::from_secs_f64(i as f64 / cfg.rate);
                    if let Some(wait) = due.checked_duration_since(Instant::now()) {
                        std::thread::sleep(wait);
                    }
                    let body = &cfg.bodies[i % cfg.bodies.len()];
                    let ok = match agent
                        .post(&cfg.url)
                        .header("content-type", "application/json")
                        .send(body.as_bytes())
                    {
                        Ok(mut r) => {
                            let good = r.status().as_u16() == 200;
                            good && r.body_mut().read_to_string().is_ok()
                        }
                        Err(_) => false,
                    };
                    if ok {
                        mine.push(due.elapsed().as_secs_f64() * 1e3);
                    } else {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
                results
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .extend(mine);
            });
        }
    });
    let wall_s = t0.elapsed().as_secs_f64();
    let mut lat = results.into_inner().unwrap_or_else(|e| e.into_inner());
    lat.sort_by(f64::total_cmp);
    Ok(LoadReport {
        sent: total,
        ok: lat.len(),
        failed: failed.into_inner(),
        wall_s,
        p50_ms: percentile(&lat, 0.5),
        p90_ms: percentile(&lat, 0.9),
        p99_ms: percentile(&lat, 0.99),
        max_ms: lat.last().copied().unwrap_or(f64::NAN),
    })
}
