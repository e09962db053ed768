//! Offline A/B comparison: paired per-customer differences of every metric
//! between two systems scored on the same customers, with bootstrap 95%
//! confidence intervals.
//!
//! Each system is a per-customer file (written by `recforge rank --out`):
//! for every scored customer, their AP, recall, NDCG, hit, reciprocal rank
//! and revenue per impression at k. Pairing by customer removes the
//! between-customer variance that dominates such metrics, so small but real
//! differences show.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::eval::metrics::{Truth, score};
use crate::util::rng::Rng;

/// One system's per-customer metrics at `k`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PerCustomer {
    pub name: String,
    pub k: usize,
    pub customers: Vec<String>,
    /// Metric name → one value per customer (aligned with `customers`).
    pub values: BTreeMap<String, Vec<f64>>,
}

impl PerCustomer {
    /// Scores `lists[i]` against `truth[i]` for each customer `ids[i]`.
    pub fn score(
        name: &str,
        k: usize,
        ids: Vec<String>,
        truth: &[Truth],
        lists: &[Vec<u32>],
    ) -> Self {
        let mut values: BTreeMap<String, Vec<f64>> = BTreeMap::new();
        for (t, l) in truth.iter().zip(lists) {
            let s = score(t, l, k);
            for (m, v) in [
                ("MAP", s.ap),
                ("Recall", s.recall),
                ("NDCG", s.ndcg),
                ("HitRate", s.hit),
                ("MRR", s.rr),
                ("RevPerImp", s.revenue / k as f64),
            ] {
                values.entry(format!("{m}@{k}")).or_default().push(v);
            }
        }
        PerCustomer {
            name: name.to_string(),
            k,
            customers: ids,
            values,
        }
    }

    pub fn write(&self, path: &Path) -> Result<()> {
        let bytes = serde_json::to_vec(self).map_err(|e| Error::invalid(path, e.to_string()))?;
        crate::util::fsutil::write_atomic(path, &bytes)
    }

    pub fn read(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        let p: PerCustomer = serde_json::from_slice(&bytes)
            .map_err(|e| Error::invalid(path, format!("not a per-customer metrics file: {e}")))?;
        for (m, v) in &p.values {
            if v.len() != p.customers.len() {
                return Err(Error::invalid(
                    path,
                    format!(
                        "metric `{m}` has {} values for {} customers",
                        v.len(),
                        p.customers.len()
                    ),
                ));
            }
        }
        Ok(p)
    }
}

/// One metric's paired comparison (B − A).
#[derive(Debug, Clone, Serialize)]
pub struct Difference {
    pub metric: String,
    pub a: f64,
    pub b: f64,
    pub diff: f64,
    pub ci_low: f64,
    pub ci_high: f64,
    /// The 95% interval excludes zero.
    pub significant: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    pub a: String,
    pub b: String,
    pub customers: usize,
    pub resamples: usize,
    pub seed: u64,
    pub differences: Vec<Difference>,
}

/// Paired bootstrap over the customers both files score.
pub fn compare(
    a: &PerCustomer,
    b: &PerCustomer,
    resamples: usize,
    seed: u64,
) -> Result<Comparison> {
    if a.k != b.k {
        return Err(Error::Data(format!(
            "`{}` is scored at k = {} and `{}` at k = {}",
            a.name, a.k, b.name, b.k
        )));
    }
    let pos: rustc_hash::FxHashMap<&str, usize> = b
        .customers
        .iter()
        .enumerate()
        .map(|(i, c)| (c.as_str(), i))
        .collect();
    let pairs: Vec<(usize, usize)> = a
        .customers
        .iter()
        .enumerate()
        .filter_map(|(i, c)| pos.get(c.as_str()).map(|&j| (i, j)))
        .collect();
    if pairs.is_empty() {
        return Err(Error::Data(format!(
            "`{}` and `{}` share no customers: nothing to pair",
            a.name, b.name
        )));
    }
    let n = pairs.len();
    let mut differences = Vec::new();
    for (metric, av) in &a.values {
        let Some(bv) = b.values.get(metric) else {
            continue;
        };
        let d: Vec<f64> = pairs.iter().map(|&(i, j)| bv[j] - av[i]).collect();
        let mean = |f: &dyn Fn(usize) -> f64| (0..n).map(f).sum::<f64>() / n as f64;
        let diff = mean(&|k| d[k]);
        // Each metric resamples with the same stream: the intervals of one
        // comparison come from the same bootstrap draws.
        let mut rng = Rng::new(seed);
        let mut stats: Vec<f64> = (0..resamples)
            .map(|_| (0..n).map(|_| d[rng.below(n as u64) as usize]).sum::<f64>() / n as f64)
            .collect();
        stats.sort_by(f64::total_cmp);
        let q = |p: f64| stats[((stats.len() - 1) as f64 * p).round() as usize];
        let (lo, hi) = (q(0.025), q(0.975));
        differences.push(Difference {
            metric: metric.clone(),
            a: mean(&|k| av[pairs[k].0]),
            b: mean(&|k| bv[pairs[k].1]),
            diff,
            ci_low: lo,
            ci_high: hi,
            significant: lo > 0.0 || hi < 0.0,
        });
    }
    Ok(Comparison {
        a: a.name.clone(),
        b: b.name.clone(),
        customers: n,
        resamples,
        seed,
        differences,
    })
}

impl Comparison {
    /// The forest chart: each metric's B − A with its 95% interval, as a
    /// share of A's value, so metrics of different scales (MAP@12 against
    /// revenue per impression) share one axis without one flattening the
    /// others; the absolute figures are written beside each row.
    pub fn forest_svg(&self) -> String {
        let rows: Vec<crate::eval::plot::ForestRow> = self
            .differences
            .iter()
            .map(|d| {
                let rel = |v: f64| {
                    if d.a != 0.0 {
                        100.0 * v / d.a
                    } else {
                        f64::NAN
                    }
                };
                crate::eval::plot::ForestRow {
                    label: d.metric.clone(),
                    estimate: rel(d.diff),
                    low: rel(d.ci_low),
                    high: rel(d.ci_high),
                    note: if d.a != 0.0 {
                        format!("{:+.5} [{:+.5}, {:+.5}]", d.diff, d.ci_low, d.ci_high)
                    } else {
                        format!("{:+.5} (A is 0: no relative figure)", d.diff)
                    },
                }
            })
            .collect();
        crate::eval::plot::forest_chart(
            &format!(
                "`{}` (B) against `{}` (A), {} customers",
                self.b, self.a, self.customers
            ),
            "B − A, % of A, with the paired-bootstrap 95% interval",
            &rows,
        )
    }

    pub fn markdown(&self) -> String {
        let mut s = format!(
            "# A/B: `{}` (B) against `{}` (A)\n\nPaired over {} customers; 95% intervals from {} bootstrap resamples of customers (seed {}).\n\n\
| metric | A | B | B − A | 95% CI | relative | significant |\n|---|---:|---:|---:|---|---:|---|\n",
            self.b, self.a, self.customers, self.resamples, self.seed
        );
        for d in &self.differences {
            let rel = if d.a != 0.0 {
                format!("{:+.1}%", 100.0 * d.diff / d.a)
            } else {
                "n/a".into()
            };
            s += &format!(
                "| {} | {:.5} | {:.5} | {:+.5} | [{:+.5}, {:+.5}] | {rel} | {} |\n",
                d.metric,
                d.a,
                d.b,
                d.diff,
                d.ci_low,
                d.ci_high,
                if d.significant { "yes" } else { "no" }
            );
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn system(name: &str, ap: Vec<f64>) -> PerCustomer {
        let n = ap.len();
        PerCustomer {
            name: name.into(),
            k: 12,
            customers: (0..n).map(|i| format!("c{i}")).collect(),
            values: [("MAP@12".to_string(), ap)].into_iter().collect(),
        }
    }

    #[test]
    fn a_consistent_gain_is_significant_and_noise_is_not() {
        let mut rng = Rng::new(1);
        let base: Vec<f64> = (0..400).map(|_| rng.f64()).collect();
        let a = system("a", base.clone());
        // Every customer gains 0.05: tiny against the spread between
        // customers, but paired it is unmistakable.
        let b = system("b", base.iter().map(|x| x + 0.05).collect());
        let c = compare(&a, &b, 1000, 7).unwrap();
        let d = &c.differences[0];
        assert!((d.diff - 0.05).abs() < 1e-12 && d.significant);
        assert!(d.ci_low <= 0.05 + 1e-9 && d.ci_high >= 0.05 - 1e-9);
        // Symmetric noise around zero: not significant.
        let noisy = system(
            "n",
            base.iter()
                .enumerate()
                .map(|(i, x)| if i % 2 == 0 { x + 0.01 } else { x - 0.01 })
                .collect(),
        );
        let c = compare(&a, &noisy, 1000, 7).unwrap();
        assert!(!c.differences[0].significant, "{:?}", c.differences[0]);
        // Pairing is by customer id, not position.
        let mut shuffled = b.clone();
        shuffled.customers.reverse();
        shuffled.values.get_mut("MAP@12").unwrap().reverse();
        let c = compare(&a, &shuffled, 200, 7).unwrap();
        assert!((c.differences[0].diff - 0.05).abs() < 1e-12);
        assert!(compare(&a, &system("x", vec![]), 10, 1).is_err());
    }

    #[test]
    fn the_forest_chart_has_a_row_per_metric_relative_to_a() {
        let a = system("a", vec![0.1, 0.2, 0.3, 0.2]);
        let b = system("b", vec![0.2, 0.3, 0.4, 0.3]);
        let c = compare(&a, &b, 100, 3).unwrap();
        let svg = c.forest_svg();
        assert!(svg.contains(">MAP@12<"));
        assert_eq!(svg.matches("stroke-width=\"3\"").count(), 1);
        // The absolute difference beside the row; the bar is +0.1 on A's
        // mean of 0.2, +50%, so the axis reaches past it.
        assert!(svg.contains("+0.10000 [+0.10000, +0.10000]"), "{svg}");
        let ticks: Vec<f64> = svg
            .match_indices("text-anchor=\"middle\">")
            .filter_map(|(i, m)| svg[i + m.len()..].split('<').next()?.parse().ok())
            .collect();
        assert!(ticks.iter().any(|&t| t >= 50.0), "{ticks:?}");
    }
}
