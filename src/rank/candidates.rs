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
    /// The sequential ranker's top K over the whole catalogue.
    pub sasrec: usize,
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

    /// The configured size of `source`'s list.
    pub fn size(&self, source: Source) -> usize {
        match source {
            Source::Repurchase => self.repurchase,
            Source::Popular => self.popular,
            Source::AgePopular => self.age_popular,
            Source::CoPurchase => self.copurchase,
            Source::SameProduct => self.same_product,
            Source::TwoTower => self.two_tower,
            Source::Sasrec => self.sasrec,
        }
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
            sasrec: 0,
            copurchase_days: 56,
            seeds: 8,
        }
    }
}

/// A candidate source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Source {
    Repurchase,
    Popular,
    AgePopular,
    CoPurchase,
    SameProduct,
    TwoTower,
    Sasrec,
}

impl Source {
    /// Every source, in report order (also the order a candidate's sources
    /// are tried in).
    pub const ALL: [Source; 7] = [
        Source::Repurchase,
        Source::Popular,
        Source::AgePopular,
        Source::CoPurchase,
        Source::SameProduct,
        Source::TwoTower,
        Source::Sasrec,
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
            Source::Sasrec => "sasrec",
        }
    }

    pub const fn index(self) -> usize {
        self as usize
    }
}

/// The set of sources that proposed a candidate (a bit per source, so a
/// candidate list stays a flat vector).
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

    pub fn len(self) -> u32 {
        self.0.count_ones()
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
}

/// One candidate: the item, which sources proposed it and at what rank.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate {
    pub item: u32,
    /// 1-based rank within each source's list ([`Source::index`]); 0 where
    /// the source did not propose it.
    pub ranks: [u16; Source::ALL.len()],
}

impl Candidate {
    /// The sources that proposed it.
    pub fn sources(&self) -> Sources {
        let mut s = Sources::default();
        for source in Source::ALL {
            if self.ranks[source.index()] > 0 {
                s.insert(source);
            }
        }
        s
    }

    /// Its rank in `source`'s list, if that source proposed it.
    pub fn rank(&self, source: Source) -> Option<u16> {
        let r = self.ranks[source.index()];
        (r > 0).then_some(r)
    }

    /// Its best rank over the sources that proposed it.
    pub fn best_rank(&self) -> u16 {
        self.ranks
            .iter()
            .copied()
            .filter(|&r| r > 0)
            .min()
            .unwrap_or(u16::MAX)
    }
}

/// One customer's candidates, in first-proposed order.
pub type List = Vec<Candidate>;

/// The model-made lists of one customer, for the sources that come from
/// exported models (dataset item ids, best first).
#[derive(Debug, Clone, Copy, Default)]
pub struct ModelLists<'a> {
    pub two_tower: Option<&'a [u32]>,
    pub sasrec: Option<&'a [u32]>,
}

/// What the sources are fitted on: one history (rows before the period).
pub struct Generator {
    cfg: CandidateConfig,
    fitted: Fitted,
    /// Per item: co-bought items with their basket counts, most often first.
    neighbours: Vec<Vec<(u32, u32)>>,
    /// Per product code: its items by popularity.
    by_product: FxHashMap<u32, Vec<u32>>,
    product_of: Vec<u32>,
}

/// Co-purchase neighbours kept per item beyond the source's own size, so
/// the co-purchase-strength feature sees more than the proposed ones.
const NEIGHBOURS_KEPT: usize = 50;

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
        let keep = cfg.copurchase.max(NEIGHBOURS_KEPT);
        let neighbours = near
            .into_iter()
            .map(|mut v| {
                v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
                v.truncate(keep);
                v
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

    pub fn config(&self) -> &CandidateConfig {
        &self.cfg
    }

    /// The baselines fitted on the sources' history (popular lists, every
    /// customer's purchases).
    pub fn fitted(&self) -> &Fitted {
        &self.fitted
    }

    /// The customer's most recent distinct articles (at most
    /// `cfg.seeds`, most recent first): what co-purchase and same-product
    /// start from.
    pub fn seeds(&self, user: u32) -> Vec<u32> {
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

    /// Per item co-bought with any of `seeds`: (sum, max) of the basket
    /// counts over the seeds.
    pub fn copurchase_strength(&self, seeds: &[u32]) -> FxHashMap<u32, (u32, u32)> {
        let mut out: FxHashMap<u32, (u32, u32)> = FxHashMap::default();
        for &s in seeds {
            for &(i, c) in &self.neighbours[s as usize] {
                let e = out.entry(i).or_default();
                e.0 += c;
                e.1 = e.1.max(c);
            }
        }
        out
    }

    /// The union of every enabled source for `user`; `models` holds the
    /// model-made lists for this customer, when those sources are on.
    pub fn candidates(&self, user: u32, models: ModelLists) -> List {
        let c = &self.cfg;
        let mut out: List = Vec::new();
        let mut slot: FxHashMap<u32, usize> = FxHashMap::default();
        let mut add = |items: &mut dyn Iterator<Item = u32>, source: Source, n: usize| {
            for (k, i) in items.take(n).enumerate() {
                let rank = u16::try_from(k + 1).unwrap_or(u16::MAX);
                match slot.get(&i) {
                    Some(&s) => {
                        let cand = &mut out[s];
                        // A source may repeat an item (same product of two
                        // seeds); its first rank counts.
                        if cand.ranks[source.index()] == 0 {
                            cand.ranks[source.index()] = rank;
                        }
                    }
                    None => {
                        slot.insert(i, out.len());
                        let mut ranks = [0u16; Source::ALL.len()];
                        ranks[source.index()] = rank;
                        out.push(Candidate { item: i, ranks });
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
            let lists: Vec<&[(u32, u32)]> = seeds
                .iter()
                .map(|&s| {
                    let l = &self.neighbours[s as usize];
                    &l[..l.len().min(c.copurchase)]
                })
                .collect();
            let depth = lists.iter().map(|l| l.len()).max().unwrap_or(0);
            let mut merged =
                (0..depth).flat_map(|k| lists.iter().filter_map(move |l| l.get(k).map(|p| p.0)));
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
            && let Some(list) = models.two_tower
        {
            add(&mut list.iter().copied(), Source::TwoTower, c.two_tower);
        }
        if c.sasrec > 0
            && let Some(list) = models.sasrec
        {
            add(&mut list.iter().copied(), Source::Sasrec, c.sasrec);
        }
        out
    }
}

/// The list sizes the report gives recall at.
pub const RECALL_AT: [usize; 4] = [50, 100, 200, 300];

/// Per-source and union recall of the target period's purchases.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RecallReport {
    pub customers: usize,
    /// Distinct (customer, article) purchases in the period.
    pub purchases: usize,
    pub sources: Vec<SourceRecall>,
    pub union_recall: f64,
    pub mean_candidates: f64,
    /// Recall of the union cut to its first N candidates (N of
    /// [`RECALL_AT`]), the union ordered by each candidate's best rank in
    /// any source (ties in source order): what N candidates per customer
    /// would hold.
    pub union_at: Vec<(usize, f64)>,
}

/// One source's share of the period's purchases.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SourceRecall {
    pub name: String,
    /// In its whole list.
    pub recall: f64,
    /// Its mean list size per customer.
    pub size: f64,
    /// In its first N (N of [`RECALL_AT`] up to the configured size).
    pub at: Vec<(usize, f64)>,
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
        .map(|(k, &u)| {
            let models = ModelLists {
                two_tower: tt.as_ref().map(|t| t[k].as_slice()),
                sasrec: None,
            };
            g.candidates(u, models)
        })
        .collect();
    Ok(recall(&targets, &lists, cfg))
}

pub fn recall(targets: &Targets, lists: &[List], cfg: &CandidateConfig) -> RecallReport {
    const S: usize = Source::ALL.len();
    let mut hits = [0usize; S];
    let mut hits_at = [[0usize; RECALL_AT.len()]; S];
    let mut union_at = [0usize; RECALL_AT.len()];
    let mut sizes = [0usize; S];
    let (mut union_hits, mut purchases, mut total) = (0usize, 0usize, 0usize);
    let mut order: Vec<(u16, usize, bool)> = Vec::new();
    for (truth, list) in targets.truth.iter().zip(lists) {
        purchases += truth.items.len();
        total += list.len();
        order.clear();
        for (pos, cand) in list.iter().enumerate() {
            let bought = truth.items.binary_search(&cand.item).is_ok();
            union_hits += usize::from(bought);
            order.push((cand.best_rank(), pos, bought));
            for source in Source::ALL {
                let Some(rank) = cand.rank(source) else {
                    continue;
                };
                let b = source.index();
                sizes[b] += 1;
                hits[b] += usize::from(bought);
                for (n, &at) in RECALL_AT.iter().enumerate() {
                    if usize::from(rank) <= at {
                        hits_at[b][n] += usize::from(bought);
                    }
                }
            }
        }
        // Best rank first; on ties the earlier-proposed (earlier source).
        order.sort_unstable();
        for (n, &at) in RECALL_AT.iter().enumerate() {
            union_at[n] += order.iter().take(at).filter(|o| o.2).count();
        }
    }
    let n = targets.len().max(1) as f64;
    let p = purchases.max(1) as f64;
    RecallReport {
        customers: targets.len(),
        purchases,
        sources: Source::ALL
            .iter()
            .map(|&source| {
                let b = source.index();
                SourceRecall {
                    name: source.name().to_string(),
                    recall: hits[b] as f64 / p,
                    size: sizes[b] as f64 / n,
                    at: RECALL_AT
                        .iter()
                        .enumerate()
                        .filter(|&(_, &at)| at <= cfg.size(source))
                        .map(|(k, &at)| (at, hits_at[b][k] as f64 / p))
                        .collect(),
                }
            })
            .collect(),
        union_recall: union_hits as f64 / p,
        mean_candidates: total as f64 / n,
        union_at: RECALL_AT
            .iter()
            .zip(union_at)
            .map(|(&at, h)| (at, h as f64 / p))
            .collect(),
    }
}

impl RecallReport {
    pub fn markdown(&self) -> String {
        let at_cols: String = RECALL_AT.iter().map(|n| format!(" @{n} |")).collect();
        let mut s = format!(
            "Recall of the {} purchases: in each source's whole list, and in its first N (@N, for N up to \
the source's size); the union's first N are its candidates ordered by their best rank in any source.\n\n\
| source | recall |{at_cols} candidates per customer |\n|---|---:|{}---:|\n",
            self.purchases,
            "---:|".repeat(RECALL_AT.len())
        );
        for src in &self.sources {
            if src.size > 0.0 {
                let cells: String = RECALL_AT
                    .iter()
                    .map(|n| match src.at.iter().find(|a| a.0 == *n) {
                        Some((_, r)) => format!(" {r:.4} |"),
                        None => " — |".to_string(),
                    })
                    .collect();
                s += &format!(
                    "| {} | {:.4} |{cells} {:.1} |\n",
                    src.name, src.recall, src.size
                );
            }
        }
        let cells: String = self
            .union_at
            .iter()
            .map(|(_, r)| format!(" **{r:.4}** |"))
            .collect();
        s += &format!(
            "| **union** | **{:.4}** |{cells} **{:.1}** |\n",
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
        let c = g.candidates(
            1,
            ModelLists {
                two_tower: Some(&[4]),
                sasrec: None,
            },
        );
        let find = |i: u32| c.iter().find(|x| x.item == i).map(|x| x.sources());
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
        // Ranks: item 1 is repurchase's first; item 5 same-product's first.
        let one = c.iter().find(|x| x.item == 1).unwrap();
        assert_eq!(one.rank(Source::Repurchase), Some(1));
        assert_eq!(one.rank(Source::TwoTower), None);
        let r = recall(&targets, &[c], &cfg);
        assert_eq!(r.purchases, 2);
        assert!((r.union_recall - 0.5).abs() < 1e-12);
        let same = r.sources.iter().find(|s| s.name == "same-product").unwrap();
        assert!((same.recall - 0.5).abs() < 1e-12);
        // same_product is sized 12: no column at 50 and beyond.
        assert!(same.at.is_empty());
        assert!(r.union_at.iter().all(|&(_, u)| (u - 0.5).abs() < 1e-12));
    }
}
