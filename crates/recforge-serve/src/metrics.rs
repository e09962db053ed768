//! Request counters and latency histograms per tenant, A/B variant and
//! route, written in the Prometheus text format with the pools' sizes and
//! model versions. Splitting by variant lets the two arms of a test be
//! compared in Prometheus.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;

use crate::tenant::Tenant;

/// Upper bounds (seconds) of the latency histogram's buckets: dense around
/// the 1-10 ms a recommendation takes.
const BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.5, 2.5,
];

#[derive(Default)]
struct Route {
    by_status: BTreeMap<u16, u64>,
    buckets: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

#[derive(Default)]
pub struct Metrics {
    routes: Mutex<BTreeMap<(String, &'static str, &'static str), Route>>,
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

impl Metrics {
    /// Records one request. `tenant` is "" for routes outside a tenant
    /// (and for unknown tenants, so a scanner cannot grow the label set);
    /// `variant` is the A/B variant that answered, "" where none did
    /// (errors, admin routes).
    pub fn record(
        &self,
        tenant: &str,
        variant: &'static str,
        route: &'static str,
        status: u16,
        seconds: f64,
    ) {
        let mut routes = self.routes.lock().unwrap_or_else(|e| e.into_inner());
        let r = routes
            .entry((tenant.to_string(), variant, route))
            .or_default();
        *r.by_status.entry(status).or_default() += 1;
        r.count += 1;
        r.sum += seconds;
        for (b, &le) in r.buckets.iter_mut().zip(&BUCKETS) {
            if seconds <= le {
                *b += 1;
            }
        }
    }

    pub fn render<'a>(&self, tenants: impl Iterator<Item = &'a Tenant>) -> String {
        let mut out = String::new();
        let routes = self.routes.lock().unwrap_or_else(|e| e.into_inner());
        out.push_str("# HELP recforge_requests_total Requests answered, by tenant, variant, route and HTTP status.\n# TYPE recforge_requests_total counter\n");
        for ((tenant, variant, route), r) in routes.iter() {
            for (status, n) in &r.by_status {
                let _ = writeln!(
                    out,
                    "recforge_requests_total{{tenant=\"{}\",variant=\"{variant}\",route=\"{route}\",status=\"{status}\"}} {n}",
                    escape(tenant)
                );
            }
        }
        out.push_str("# HELP recforge_request_duration_seconds Time from a request's arrival to its response.\n# TYPE recforge_request_duration_seconds histogram\n");
        for ((tenant, variant, route), r) in routes.iter() {
            let labels = format!(
                "tenant=\"{}\",variant=\"{variant}\",route=\"{route}\"",
                escape(tenant)
            );
            for (b, le) in r.buckets.iter().zip(BUCKETS) {
                let _ = writeln!(
                    out,
                    "recforge_request_duration_seconds_bucket{{{labels},le=\"{le}\"}} {b}"
                );
            }
            let _ = writeln!(
                out,
                "recforge_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {}",
                r.count
            );
            let _ = writeln!(
                out,
                "recforge_request_duration_seconds_sum{{{labels}}} {}",
                r.sum
            );
            let _ = writeln!(
                out,
                "recforge_request_duration_seconds_count{{{labels}}} {}",
                r.count
            );
        }
        drop(routes);
        out.push_str("# HELP recforge_item_pool_size Articles in the item pool, by tenant and variant.\n# TYPE recforge_item_pool_size gauge\n");
        let mut info = String::new();
        let mut avail = String::new();
        let mut business = [
            (
                "recforge_impressions_total",
                "counter",
                "Articles shown to identified customers, by tenant and variant.",
                String::new(),
            ),
            (
                "recforge_impressions_evicted_total",
                "counter",
                "Impressions dropped before their window ended (memory bounds).",
                String::new(),
            ),
            (
                "recforge_attributed_purchases_total",
                "counter",
                "Purchase events attributed to an impression within the window.",
                String::new(),
            ),
            (
                "recforge_attributed_revenue_total",
                "counter",
                "Value of the attributed purchases.",
                String::new(),
            ),
        ];
        let mut events = String::new();
        for t in tenants {
            let name = escape(&t.name);
            for (variant, arm) in t.attribution.arms() {
                let labels = format!("tenant=\"{name}\",variant=\"{variant}\"");
                let values = [
                    arm.impressions as f64,
                    arm.evicted as f64,
                    arm.purchases as f64,
                    arm.revenue,
                ];
                for (slot, v) in business.iter_mut().zip(values) {
                    let _ = writeln!(slot.3, "{}{{{labels}}} {v}", slot.0);
                }
            }
            let _ = writeln!(
                events,
                "recforge_purchase_events_total{{tenant=\"{name}\"}} {}",
                t.attribution.purchase_events()
            );
            let v = t.variants();
            for (name, served) in v.served() {
                let snap = served.primary().pool.snapshot();
                let labels = format!("tenant=\"{}\",variant=\"{name}\"", escape(&t.name));
                let _ = writeln!(out, "recforge_item_pool_size{{{labels}}} {}", snap.len());
                let _ = writeln!(
                    avail,
                    "recforge_item_pool_available{{{labels}}} {}",
                    snap.available_len()
                );
                let _ = writeln!(
                    info,
                    "recforge_model_info{{{labels},version=\"{}\"}} 1",
                    escape(served.version())
                );
            }
        }
        out.push_str("# HELP recforge_item_pool_available Articles that can be recommended now.\n# TYPE recforge_item_pool_available gauge\n");
        out.push_str(&avail);
        out.push_str("# HELP recforge_model_info The model version each variant serves (value always 1).\n# TYPE recforge_model_info gauge\n");
        out.push_str(&info);
        for (metric, kind, help, lines) in &business {
            let _ = writeln!(out, "# HELP {metric} {help}\n# TYPE {metric} {kind}");
            out.push_str(lines);
        }
        out.push_str("# HELP recforge_purchase_events_total Purchase events received.\n# TYPE recforge_purchase_events_total counter\n");
        out.push_str(&events);
        out
    }
}
