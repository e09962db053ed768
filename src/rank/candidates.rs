//! Candidate generation: several cheap sources, each switchable and sized,
//! whose union a ranker orders. Every source sees only the history before
//! the target period; the report says what share of the target period's
//! purchases each source, and their union, contains.
//!
//! Sources: the customer's own recent purchases (repurchase), time-decayed
//! popularity overall and within the customer's age bucket, articles often
//! bought in the same basket as the customer's recent ones (co-purchase),
//! other colours of the customer's recent articles (same product code), and
//! a two-tower model's top K (given as lists).

use std::path::Path;

use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};

use crate::data::Dataset;
use crate::data::history::History;
use crate::eval::Targets;
use crate::eval::baselines::{self, Fitted, Kind};
use crate::export::serve::{Server, top_lists};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CandidateConfig {
    /// Each source's size per customer (0 = off).
    pub repurchase: usize,
    pub popular: usize,
    pub age_popular: usize,
    pub copurchase: usize,
    pub same_product: usize,
    pub two_tower: usize,
    /// Co-purchase counts baskets (a customer's purchases of one day) of
    /// the last this many days.
    pub copurchase_days: i64,
    /// The customer's most recent this many distinct articles seed the
    /// co-purchase and same-product sources.
    pub seeds: usize,
}

impl CandidateConfig {
    /// Source sizes from a TOML file of `[candidates]` keys; the defaults
    /// for keys it leaves out.
    pub fn load(path: &Path) -> crate::Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| crate::Error::io(path, e))?;
        toml::from_str(&text).map_err(|e| crate::Error::invalid(path, e.to_string()))
    }
}

impl Default for CandidateConfig {
    fn default() -> Self {
        CandidateConfig {
            repurchase: 24,
            popular: 24,
            age_popular: 12,
            copurchase: 24,
            same_product: 12,
            two_tower: 50,
            copurchase_days: 56,
            seeds: 8,
        }
    }
}

/// A candidate source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Repurchase,
    Popular,
    AgePopular,
    CoPurchase,
    SameProduct,
    TwoTower,
}

impl Source {
    /// Every source, in report order.
    pub const ALL: [Source; 6] = [
        Source::Repurchase,
        Source::Popular,
        Source::AgePopular,
        Source::CoPurchase,
        Source::SameProduct,
        Source::TwoTower,
    ];

    /// The name reports give it.
    pub fn name(self) -> &'static str {
        match self {
            Source::Repurchase => "repurchase",
            Source::Popular => "popular",
            Source::AgePopular => "age-popular",
            Source::CoPurchase => "co-purchase",
            Source::SameProduct => "same-product",
            Source::TwoTower => "two-tower",
        }
    }
}

/// The set of sources that proposed a candidate (a bit per source, so a
/// candidate list stays a flat vector of pairs).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sources(u8);

impl Sources {
    pub fn of(source: Source) -> Self {
        Sources(1 << source as u8)
    }

    pub fn insert(&mut self, source: Source) {
        self.0 |= 1 << source as u8;
    }

    pub fn contains(self, source: Source) -> bool {
        self.0 & (1 << source as u8) != 0
    }
}

/// One customer's candidates: (item, the sources that proposed it), in
/// first-proposed order.
pub type List = Vec<(u32, Sources)>;

/// What the sources are fitted on: one history (rows before the period).
pub struct Generator {
    cfg: CandidateConfig,
    fitted: Fitted,
    /// Per item: co-bought items, most often first.
    neighbours: Vec<Vec<u32>>,
    /// Per product code: its items by popularity.
    by_product: FxHashMap<u32, Vec<u32>>,
    product_of: Vec<u32>,
}

impl Generator {
    /// `rows` (time order) is the history the sources may use.
    pub fn fit(ds: &Dataset, rows: &[usize], cfg: &CandidateConfig) -> Self {
        let fitted = Fitted::fit(ds, rows, baselines::Params::default());
        let end = rows.iter().map(|&r| ds.day(r)).max().unwrap_or(0);
        // Baskets of the recent window: (user, day) → items.
        let mut baskets: FxHashMap<(u32, i64), Vec<u32>> = FxHashMap::default();
        for &r in rows {
            if ds.day(r) > end - cfg.copurchase_days {
                baskets
                    .entry((ds.inter.user[r], ds.day(r)))
                    .or_default()
                    .push(ds.inter.item[r]);
            }
        }
        let mut pairs: FxHashMap<(u32, u32), u32> = FxHashMap::default();
        for items in baskets.values_mut() {
            items.sort_unstable();
            items.dedup();
            // Very large baskets say little about any one pair.
            if items.len() > 30 {
                continue;
            }
            for (a, &x) in items.iter().enumerate() {
                for &y in &items[a + 1..] {
                    *pairs.entry((x, y)).or_default() += 1;
                }
            }
        }
        let mut near: Vec<Vec<(u32, u32)>> = vec![Vec::new(); ds.items.len()];
        for (&(x, y), &c) in &pairs {
            near[x as usize].push((y, c));
            near[y as usize].push((x, c));
        }
        let neighbours = near
            .into_iter()
            .map(|mut v| {
                v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
                v.truncate(cfg.copurchase.max(1));
                v.into_iter().map(|p| p.0).collect()
            })
            .collect();
        let product_of: Vec<u32> = ds
            .items
            .feature("product_code")
            .map(|f| f.codes.clone())
            .unwrap_or_else(|| vec![0; ds.items.len()]);
        let mut by_product: FxHashMap<u32, Vec<u32>> = FxHashMap::default();
        let mut popular = Vec::new();
        fitted.recommend(Kind::Popular, 0, ds.items.len(), &mut popular);
        let mut seen = vec![false; ds.items.len()];
        for &i in &popular {
            seen[i as usize] = true;
        }
        // Popular items first, then the unsold ones (new colours) by id.
        let order = popular
            .iter()
            .copied()
            .chain((1..ds.items.len() as u32).filter(|&i| !seen[i as usize]));
        for i in order {
            let p = product_of[i as usize];
            if p != 0 {
                by_product.entry(p).or_default().push(i);
            }
        }
        Generator {
            cfg: cfg.clone(),
            fitted,
            neighbours,
            by_product,
            product_of,
        }
    }

    /// The customer's most recent distinct articles (at most
    /// `cfg.seeds`, most recent first): what co-purchase and same-product
    /// start from.
    fn seeds(&self, user: u32) -> Vec<u32> {
        let mut seeds = Vec::new();
        for &i in self.fitted.history(user).0.iter().rev() {
            if seeds.len() >= self.cfg.seeds.max(1) {
                break;
            }
            if !seeds.contains(&i) {
                seeds.push(i);
            }
        }
        seeds
    }

    /// The union of every enabled source for `user`; `two_tower` is the
    /// model's list for this customer, when that source is on.
    pub fn candidates(&self, user: u32, two_tower: Option<&[u32]>) -> List {
        let c = &self.cfg;
        let mut out: List = Vec::new();
        let mut slot: FxHashMap<u32, usize> = FxHashMap::default();
        let mut add = |items: &mut dyn Iterator<Item = u32>, source: Source, n: usize| {
            for i in items.take(n) {
                match slot.get(&i) {
                    Some(&s) => out[s].1.insert(source),
                    None => {
                        slot.insert(i, out.len());
                        out.push((i, Sources::of(source)));
                    }
                }
            }
        };
        let mut buf = Vec::new();
        if c.repurchase > 0 {
            add(
                &mut self.fitted.repurchase(user).into_iter(),
                Source::Repurchase,
                c.repurchase,
            );
        }
        if c.popular > 0 {
            self.fitted
                .recommend(Kind::DecayedPopular, user, c.popular, &mut buf);
            add(&mut buf.iter().copied(), Source::Popular, c.popular);
        }
        if c.age_popular > 0 {
            self.fitted
                .recommend(Kind::AgeBucketPopular, user, c.age_popular, &mut buf);
            add(&mut buf.iter().copied(), Source::AgePopular, c.age_popular);
        }
        let seeds = self.seeds(user);
        if c.copurchase > 0 {
            // Round-robin over the seeds, so the most recent one cannot take
            // every slot.
            let lists: Vec<&Vec<u32>> = seeds
                .iter()
                .map(|&s| &self.neighbours[s as usize])
                .collect();
            let depth = lists.iter().map(|l| l.len()).max().unwrap_or(0);
            let mut merged =
                (0..depth).flat_map(|k| lists.iter().filter_map(move |l| l.get(k).copied()));
            add(&mut merged, Source::CoPurchase, c.copurchase);
        }
        if c.same_product > 0 {
            let mut same = seeds.iter().flat_map(|&s| {
                let p = self.product_of[s as usize];
                self.by_product
                    .get(&p)
                    .map_or(&[][..], Vec::as_slice)
                    .iter()
                    .copied()
                    .filter(move |&i| i != s)
            });
            add(&mut same, Source::SameProduct, c.same_product);
        }
        if c.two_tower > 0
            && let Some(list) = two_tower
        {
            add(&mut list.iter().copied(), Source::TwoTower, c.two_tower);
        }
        out
    }
}

/// Per-source and union recall of the target period's purchases.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RecallReport {
    pub customers: usize,
    /// Distinct (customer, article) purchases in the period.
    pub purchases: usize,
    /// (source, share of purchases it contains, its mean list size).
    pub sources: Vec<(String, f64, f64)>,
    pub union_recall: f64,
    pub mean_candidates: f64,
}

/// The sources on the test period of the last-week split of `ds`: fitted
/// on everything before it, the two-tower source (when `bundle` is given)
/// served from an exported bundle as of the period's first day.
pub fn test_period_report(
    ds: &Dataset,
    target_days: u32,
    cfg: &CandidateConfig,
    bundle: Option<&std::path::Path>,
) -> crate::Result<RecallReport> {
    use rayon::prelude::*;
    let split =
        crate::data::split::split(ds, crate::data::split::SplitKind::LastWeek, target_days)?;
    let history = split.history();
    let targets = Targets::from_rows(ds, &split.test);
    let start = split.test.iter().map(|&r| ds.day(r)).min().unwrap_or(0);
    let g = Generator::fit(ds, &history, cfg);
    let tt = match bundle {
        // The bundle serves what was known on the period's first day.
        Some(b) if cfg.two_tower > 0 => Some(two_tower_lists(
            b,
            &crate::data::split::before(ds, start),
            &targets,
            start,
            cfg.two_tower,
        )?),
        _ => None,
    };
    let lists: Vec<List> = targets
        .users
        .par_iter()
        .enumerate()
        .map(|(k, &u)| g.candidates(u, tt.as_ref().map(|t| t[k].as_slice())))
        .collect();
    Ok(recall(&targets, &lists))
}

pub fn recall(targets: &Targets, lists: &[List]) -> RecallReport {
    let mut hits = [0usize; Source::ALL.len()];
    let mut sizes = [0usize; Source::ALL.len()];
    let (mut union_hits, mut purchases, mut total) = (0usize, 0usize, 0usize);
    for (truth, list) in targets.truth.iter().zip(lists) {
        purchases += truth.items.len();
        total += list.len();
        for &(item, mask) in list {
            let bought = truth.items.binary_search(&item).is_ok();
            union_hits += usize::from(bought);
            for (&source, (h, s)) in Source::ALL
                .iter()
                .zip(hits.iter_mut().zip(sizes.iter_mut()))
            {
                if mask.contains(source) {
                    *s += 1;
                    *h += usize::from(bought);
                }
            }
        }
    }
    let n = targets.len().max(1) as f64;
    let p = purchases.max(1) as f64;
    RecallReport {
        customers: targets.len(),
        purchases,
        sources: Source::ALL
            .iter()
            .enumerate()
            .map(|(b, source)| {
                (
                    source.name().to_string(),
                    hits[b] as f64 / p,
                    sizes[b] as f64 / n,
                )
            })
            .collect(),
        union_recall: union_hits as f64 / p,
        mean_candidates: total as f64 / n,
    }
}

impl RecallReport {
    pub fn markdown(&self) -> String {
        let mut s = format!(
            "| source | recall of the {} purchases | candidates per customer |\n|---|---:|---:|\n",
            self.purchases
        );
        for (name, r, size) in &self.sources {
            if *size > 0.0 {
                s += &format!("| {name} | {r:.4} | {size:.1} |\n");
            }
        }
        s += &format!(
            "| **union** | **{:.4}** | **{:.1}** |\n",
            self.union_recall, self.mean_candidates
        );
        s
    }
}

/// Each target customer's two-tower top `k` (dataset items), served from
/// `bundle` as of `day` on the rows of `past`.
pub fn two_tower_lists(
    bundle: &Path,
    past: &Dataset,
    targets: &Targets,
    day: i64,
    k: usize,
) -> crate::Result<Vec<Vec<u32>>> {
    let server = Server::new(bundle, past)?;
    let hist = History::of_all(past);
    top_lists(&server, past, &hist, &targets.users, day, k)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::split::tests::toy;
    use crate::data::{Feature, TimeUnit};

    #[test]
    fn sources_propose_what_they_should_and_recall_counts_purchases() {
        // Customer 1 bought items 1 and 2 together on day 10; customer 2
        // bought 1 with 3 on day 11 and 4 on day 12. Items 1 and 5 share a
        // product code.
        let mut ds = toy(
            &[1, 1, 2, 2, 2],
            &[1, 2, 1, 3, 4],
            &[10, 10, 11, 11, 12],
            TimeUnit::Day,
        );
        ds.items.ids.push("5".into());
        ds.items.features.push(Feature {
            name: "product_code".into(),
            codes: vec![0, 7, 8, 9, 10, 7],
            vocab: vec![
                "".into(),
                "a".into(),
                "b".into(),
                "c".into(),
                "d".into(),
                "".into(),
                "".into(),
                "p".into(),
                "q".into(),
                "r".into(),
                "s".into(),
            ],
        });
        let rows: Vec<usize> = (0..5).collect();
        let cfg = CandidateConfig {
            popular: 0,
            age_popular: 0,
            two_tower: 5,
            ..CandidateConfig::default()
        };
        let g = Generator::fit(&ds, &rows, &cfg);
        let c = g.candidates(1, Some(&[4]));
        let find = |i: u32| c.iter().find(|x| x.0 == i).map(|x| x.1);
        assert!(find(1).unwrap().contains(Source::Repurchase), "repurchase");
        assert!(
            find(3).unwrap().contains(Source::CoPurchase),
            "co-bought with item 1"
        );
        assert_eq!(
            find(5),
            Some(Sources::of(Source::SameProduct)),
            "same product as item 1"
        );
        assert_eq!(find(4), Some(Sources::of(Source::TwoTower)), "two-tower");
        let targets = Targets {
            users: vec![1],
            truth: vec![crate::eval::Truth::new(vec![(5, 1.0), (9, 1.0)])],
        };
        let r = recall(&targets, &[c]);
        assert_eq!(r.purchases, 2);
        assert!((r.union_recall - 0.5).abs() < 1e-12);
        let same = r.sources.iter().find(|s| s.0 == "same-product").unwrap();
        assert!((same.1 - 0.5).abs() < 1e-12);
    }
}
