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
    /// Live changes sent beside the requests (the soak benchmark).
    pub churn: Option<Churn>,
}

/// What a soak sends beside the recommendations, each on its own thread
/// at its own rate: sold-out and back-in-stock marks, purchase events,
/// new articles, and reloads of the running bundle.
pub struct Churn {
    /// The tenant's base URL, e.g. http://127.0.0.1:8080/v1/hm.
    pub tenant_url: String,
    pub token: String,
    /// Articles to mark and to buy.
    pub articles: Vec<String>,
    /// Customers who buy.
    pub customers: Vec<String>,
    pub availability_per_s: f64,
    pub events_per_s: f64,
    pub items_per_s: f64,
    pub reload_every_s: f64,
}

/// Calls of one kind of change, and how many did not answer 200.
#[derive(Debug, Clone, Default)]
pub struct ChurnCount {
    pub sent: usize,
    pub failed: usize,
}

#[derive(Debug, Clone, Default)]
pub struct ChurnReport {
    pub availability: ChurnCount,
    pub events: ChurnCount,
    pub items: ChurnCount,
    pub reloads: ChurnCount,
}

/// Sends change `make(i)` to `route` every `1/per_s` seconds until `end`.
fn churn_loop(
    c: &Churn,
    route: &str,
    per_s: f64,
    end: Instant,
    make: impl Fn(usize) -> String,
) -> ChurnCount {
    let mut n = ChurnCount::default();
    if per_s <= 0.0 {
        return n;
    }
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .into();
    let start = Instant::now();
    let url = format!("{}/{route}", c.tenant_url);
    loop {
        let due = start + Duration::from_secs_f64(n.sent as f64 / per_s);
        if due >= end {
            return n;
        }
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let ok = agent
            .post(&url)
            .header("content-type", "application/json")
            .header("authorization", format!("Bearer {}", c.token))
            .send(make(n.sent).as_bytes())
            .is_ok_and(|mut r| r.status().as_u16() == 200 && r.body_mut().read_to_string().is_ok());
        n.sent += 1;
        n.failed += usize::from(!ok);
    }
}

fn run_churn(c: &Churn, end: Instant) -> ChurnReport {
    let pick = |list: &[String], i: usize| list[(i * 7919) % list.len()].clone();
    std::thread::scope(|s| {
        let availability = s.spawn(|| {
            churn_loop(c, "items/availability", c.availability_per_s, end, |i| {
                let a = pick(&c.articles, i / 2);
                // Out of stock, then back: the pool stays about as large.
                if i % 2 == 0 {
                    serde_json::json!({"sold_out": [a]}).to_string()
                } else {
                    serde_json::json!({"in_stock": [a]}).to_string()
                }
            })
        });
        let events = s.spawn(|| {
            churn_loop(c, "events", c.events_per_s, end, |i| {
                serde_json::json!({"events": [{
                    "customer_id": pick(&c.customers, i),
                    "article_id": pick(&c.articles, i + 1),
                    "price": 0.03,
                }]})
                .to_string()
            })
        });
        let items = s.spawn(|| {
            churn_loop(c, "items", c.items_per_s, end, |i| {
                serde_json::json!({"items": [{"article_id": format!("SOAK-{i}"), "price": 0.02}]})
                    .to_string()
            })
        });
        let reloads =
            s.spawn(|| churn_loop(c, "reload", 1.0 / c.reload_every_s, end, |_| String::new()));
        let join = |h: std::thread::ScopedJoinHandle<'_, ChurnCount>| h.join().unwrap_or_default();
        ChurnReport {
            availability: join(availability),
            events: join(events),
            items: join(items),
            reloads: join(reloads),
        }
    })
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
    pub churn: Option<ChurnReport>,
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
    let end = t0 + Duration::from_secs_f64(cfg.seconds);
    let churn = std::thread::scope(|s| {
        let churn = cfg
            .churn
            .as_ref()
            .map(|c| s.spawn(move || run_churn(c, end)));
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
        churn.map(|h| h.join().unwrap_or_default())
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
        churn,
    })
}
