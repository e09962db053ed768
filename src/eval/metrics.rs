//! Ranking metrics for one customer, and their average over customers.
//!
//! Shared conventions, chosen to match how H&M was scored on Kaggle:
//! - `truth` is the set of distinct items the customer bought in the target
//!   period (sorted, no repeats); customers with an empty set are not scored.
//! - Only the first `k` predictions count, and a prediction repeated within
//!   them counts once (its later copies are misses that still take a slot).

use serde::Serialize;

/// One customer's target-period purchases: distinct items (sorted) and what
/// the customer paid for each, summed over the period's rows.
#[derive(Debug, Clone, PartialEq)]
pub struct Truth {
    pub items: Vec<u32>,
    pub revenue: Vec<f64>,
}

impl Truth {
    pub fn new(mut pairs: Vec<(u32, f64)>) -> Self {
        pairs.sort_by_key(|p| p.0);
        let mut items: Vec<u32> = Vec::with_capacity(pairs.len());
        let mut revenue: Vec<f64> = Vec::with_capacity(pairs.len());
        for (i, r) in pairs {
            if items.last() == Some(&i) {
                *revenue.last_mut().expect("aligned") += r;
            } else {
                items.push(i);
                revenue.push(r);
            }
        }
        Truth { items, revenue }
    }

    fn position(&self, item: u32) -> Option<usize> {
        self.items.binary_search(&item).ok()
    }
}

/// For each of the first `k` predictions: `Some(index in truth)` if it is a
/// first occurrence of a purchased item, else `None`.
fn hits(truth: &Truth, pred: &[u32], k: usize) -> Vec<Option<usize>> {
    let top = &pred[..pred.len().min(k)];
    top.iter()
        .enumerate()
        .map(|(i, &p)| truth.position(p).filter(|_| !top[..i].contains(&p)))
        .collect()
}

/// One customer's metrics at k, all derived from one pass over the top k.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Scores {
    /// Average precision as Kaggle's H&M metric: sum of precision at each
    /// hit, divided by min(|truth|, k).
    pub ap: f64,
    /// Share of the purchased items found in the top k (RecBole's Recall@K).
    pub recall: f64,
    /// Binary-relevance NDCG; the ideal ranking puts min(|truth|, k) hits first.
    pub ndcg: f64,
    pub hit: f64,
    /// Reciprocal rank of the first hit (0 if none).
    pub rr: f64,
    /// What the customer paid for recommended items they bought (each item once).
    pub revenue: f64,
}

pub fn score(truth: &Truth, pred: &[u32], k: usize) -> Scores {
    if truth.items.is_empty() || k == 0 {
        return Scores::default();
    }
    let mut s = Scores::default();
    let mut n_hits = 0usize;
    for (i, h) in hits(truth, pred, k).into_iter().enumerate() {
        let Some(t) = h else { continue };
        n_hits += 1;
        s.ap += n_hits as f64 / (i as f64 + 1.0);
        s.ndcg += 1.0 / (i as f64 + 2.0).log2();
        if n_hits == 1 {
            s.rr = 1.0 / (i as f64 + 1.0);
        }
        s.revenue += truth.revenue[t];
    }
    let m = truth.items.len();
    s.ap /= m.min(k) as f64;
    let idcg: f64 = (0..m.min(k)).map(|i| 1.0 / (i as f64 + 2.0).log2()).sum();
    s.ndcg /= idcg;
    s.recall = n_hits as f64 / m as f64;
    s.hit = f64::from(n_hits > 0);
    s
}

/// Metrics averaged over the scored customers.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct Metrics {
    pub k: usize,
    /// Customers scored (those with at least one target-period purchase).
    pub users: usize,
    pub map: f64,
    pub recall: f64,
    pub ndcg: f64,
    pub hit_rate: f64,
    pub mrr: f64,
    /// Distinct items recommended to scored customers / catalogue size.
    pub coverage: f64,
    /// Revenue of recommended items bought / (scored customers × k).
    pub revenue_per_impression: f64,
}

impl Metrics {
    /// (column name, value) pairs in table order.
    pub fn columns(&self) -> Vec<(String, f64)> {
        let k = self.k;
        vec![
            (format!("MAP@{k}"), self.map),
            (format!("Recall@{k}"), self.recall),
            (format!("NDCG@{k}"), self.ndcg),
            (format!("HitRate@{k}"), self.hit_rate),
            (format!("MRR@{k}"), self.mrr),
            (format!("Coverage@{k}"), self.coverage),
            (format!("RevPerImp@{k}"), self.revenue_per_impression),
        ]
    }
}

/// A ranking measure, as configs name it (`map`) and tables head it (`MAP`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Measure {
    Map,
    Recall,
    Ndcg,
    HitRate,
    Mrr,
}

impl Measure {
    /// Every measure, in table order.
    pub const ALL: [Measure; 5] = [
        Measure::Map,
        Measure::Recall,
        Measure::Ndcg,
        Measure::HitRate,
        Measure::Mrr,
    ];

    /// The results table's column head (before `@k`).
    pub fn column(self) -> &'static str {
        match self {
            Measure::Map => "MAP",
            Measure::Recall => "Recall",
            Measure::Ndcg => "NDCG",
            Measure::HitRate => "HitRate",
            Measure::Mrr => "MRR",
        }
    }

    /// The name a config writes (before `@k`).
    fn config_name(self) -> &'static str {
        match self {
            Measure::Map => "map",
            Measure::Recall => "recall",
            Measure::Ndcg => "ndcg",
            Measure::HitRate => "hit",
            Measure::Mrr => "mrr",
        }
    }

    /// This measure's value in `m`.
    pub fn of(self, m: &Metrics) -> f64 {
        match self {
            Measure::Map => m.map,
            Measure::Recall => m.recall,
            Measure::Ndcg => m.ndcg,
            Measure::HitRate => m.hit_rate,
            Measure::Mrr => m.mrr,
        }
    }
}

/// A measure at a cut-off, written `map@12` in configs: what model
/// selection and early stopping compare.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Metric {
    pub measure: Measure,
    pub k: usize,
}

impl Metric {
    /// The results table's column, e.g. `MAP@12`.
    pub fn column(&self) -> String {
        format!("{}@{}", self.measure.column(), self.k)
    }
}

impl std::fmt::Display for Metric {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}@{}", self.measure.config_name(), self.k)
    }
}

impl std::str::FromStr for Metric {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("`{s}`: expected NAME@K with NAME one of map, recall, ndcg, hit, mrr");
        let (name, k) = s.split_once('@').ok_or_else(bad)?;
        let k: usize = k.parse().map_err(|_| bad())?;
        let measure = match name.to_ascii_lowercase().as_str() {
            "map" => Measure::Map,
            "recall" => Measure::Recall,
            "ndcg" => Measure::Ndcg,
            "hit" | "hitrate" => Measure::HitRate,
            "mrr" => Measure::Mrr,
            _ => return Err(bad()),
        };
        Ok(Metric { measure, k })
    }
}

impl Serialize for Metric {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Metric {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// Accumulates per-customer metrics; `finish` averages them.
pub struct Accumulator {
    k: usize,
    users: usize,
    sums: [f64; 6],
    seen: Vec<bool>,
}

impl Accumulator {
    /// `n_items` is the catalogue size including the padding id 0.
    pub fn new(k: usize, n_items: usize) -> Self {
        Accumulator {
            k,
            users: 0,
            sums: [0.0; 6],
            seen: vec![false; n_items],
        }
    }

    pub fn add(&mut self, truth: &Truth, pred: &[u32]) {
        if truth.items.is_empty() {
            return;
        }
        let k = self.k;
        self.users += 1;
        let sc = score(truth, pred, k);
        for (s, v) in self
            .sums
            .iter_mut()
            .zip([sc.ap, sc.recall, sc.ndcg, sc.hit, sc.rr, sc.revenue])
        {
            *s += v;
        }
        for &p in &pred[..pred.len().min(k)] {
            if let Some(s) = self.seen.get_mut(p as usize) {
                *s = true;
            }
        }
    }

    pub fn finish(&self) -> Metrics {
        let n = self.users.max(1) as f64;
        let catalogue = self.seen.len().saturating_sub(1).max(1) as f64;
        Metrics {
            k: self.k,
            users: self.users,
            map: self.sums[0] / n,
            recall: self.sums[1] / n,
            ndcg: self.sums[2] / n,
            hit_rate: self.sums[3] / n,
            mrr: self.sums[4] / n,
            coverage: self.seen.iter().skip(1).filter(|&&s| s).count() as f64 / catalogue,
            revenue_per_impression: self.sums[5] / (n * self.k as f64),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_parse_from_config_text_and_print_back_the_same() {
        for text in ["map@12", "recall@100", "ndcg@10", "hit@5", "mrr@20"] {
            let m: Metric = text.parse().unwrap();
            assert_eq!(m.to_string(), text);
        }
        let m: Metric = "HitRate@3".parse().unwrap();
        assert_eq!(
            (m.measure, m.k, m.column()),
            (Measure::HitRate, 3, "HitRate@3".into())
        );
        for bad in ["map", "map@", "map@x", "auc@10", "@10"] {
            let e = bad.parse::<Metric>().unwrap_err();
            assert!(e.contains("expected NAME@K"), "{bad}: {e}");
        }
        let m = Metrics {
            k: 12,
            users: 1,
            map: 0.1,
            recall: 0.2,
            ndcg: 0.3,
            hit_rate: 0.4,
            mrr: 0.5,
            coverage: 0.6,
            revenue_per_impression: 0.7,
        };
        let cols = m.columns();
        for measure in Measure::ALL {
            let col = Metric { measure, k: 12 }.column();
            let want = cols.iter().find(|c| c.0 == col).unwrap().1;
            assert_eq!(measure.of(&m), want, "{col}");
        }
    }

    fn t(items: &[u32]) -> Truth {
        Truth::new(items.iter().map(|&i| (i, 1.0)).collect())
    }

    fn average_precision(t: &Truth, p: &[u32], k: usize) -> f64 {
        score(t, p, k).ap
    }
    fn recall(t: &Truth, p: &[u32], k: usize) -> f64 {
        score(t, p, k).recall
    }
    fn ndcg(t: &Truth, p: &[u32], k: usize) -> f64 {
        score(t, p, k).ndcg
    }
    fn hit_rate(t: &Truth, p: &[u32], k: usize) -> f64 {
        score(t, p, k).hit
    }
    fn reciprocal_rank(t: &Truth, p: &[u32], k: usize) -> f64 {
        score(t, p, k).rr
    }
    fn revenue(t: &Truth, p: &[u32], k: usize) -> f64 {
        score(t, p, k).revenue
    }

    fn close(a: f64, b: f64) {
        assert!((a - b).abs() < 1e-12, "{a} != {b}");
    }

    #[test]
    fn map_matches_hand_computed_kaggle_examples() {
        // Hits at ranks 1 and 3 of 2 relevant: (1/1 + 2/3) / 2.
        close(
            average_precision(&t(&[1, 2]), &[1, 9, 2], 12),
            (1.0 + 2.0 / 3.0) / 2.0,
        );
        // Denominator is min(m, k): 20 relevant, k = 12, one hit at rank 1.
        let many: Vec<u32> = (1..=20).collect();
        close(average_precision(&t(&many), &[1], 12), 1.0 / 12.0);
        // Hits beyond k do not count.
        close(average_precision(&t(&[5]), &[1, 2, 5], 2), 0.0);
    }

    #[test]
    fn repeated_predictions_count_once_but_take_a_slot() {
        // [1, 1, 2]: the second 1 is not a hit; 2 at rank 3 gives precision 2/3.
        close(
            average_precision(&t(&[1, 2]), &[1, 1, 2], 12),
            (1.0 + 2.0 / 3.0) / 2.0,
        );
        close(recall(&t(&[1, 2]), &[1, 1, 1], 12), 0.5);
        close(revenue(&t(&[1]), &[1, 1], 12), 1.0);
    }

    #[test]
    fn customers_without_target_purchases_are_not_scored() {
        let mut acc = Accumulator::new(12, 10);
        acc.add(&t(&[]), &[1, 2, 3]);
        acc.add(&t(&[1]), &[1]);
        let m = acc.finish();
        assert_eq!(m.users, 1);
        close(m.map, 1.0);
        // Coverage counts only the scored customer's list: 1 of 9 items.
        close(m.coverage, 1.0 / 9.0);
    }

    #[test]
    fn recall_ndcg_hit_mrr_by_hand() {
        let truth = t(&[3, 7]);
        let pred = [1, 3, 4, 7];
        close(recall(&truth, &pred, 2), 0.5);
        close(recall(&truth, &pred, 4), 1.0);
        // DCG = 1/log2(3) + 1/log2(5); IDCG = 1 + 1/log2(3).
        let dcg = 1.0 / 3f64.log2() + 1.0 / 5f64.log2();
        close(ndcg(&truth, &pred, 4), dcg / (1.0 + 1.0 / 3f64.log2()));
        close(hit_rate(&truth, &pred, 1), 0.0);
        close(hit_rate(&truth, &pred, 2), 1.0);
        close(reciprocal_rank(&truth, &pred, 4), 0.5);
        close(reciprocal_rank(&truth, &pred, 1), 0.0);
    }

    #[test]
    fn revenue_per_impression_sums_paid_prices_of_hits() {
        // Item 4 bought twice (0.1 + 0.2), item 8 once (0.5); recommend 4 and 9.
        let truth = Truth::new(vec![(4, 0.1), (8, 0.5), (4, 0.2)]);
        close(revenue(&truth, &[4, 9], 12), 0.3);
        let mut acc = Accumulator::new(2, 10);
        acc.add(&truth, &[4, 9]);
        close(acc.finish().revenue_per_impression, 0.3 / 2.0);
    }
}
