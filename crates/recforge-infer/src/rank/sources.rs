//! Candidate sources: several cheap ones, each switchable and sized, whose
//! union the second stage orders. Every source is fitted on the rows before
//! the served day only.
//!
//! Sources: the customer's own recent purchases (repurchase), time-decayed
//! popularity overall and within the customer's age bucket, articles often
//! bought in the same basket as the customer's recent ones (co-purchase),
//! other colours of the customer's recent articles (same product code), and
//! the two-tower and sequential models' top K (given as lists: the models
//! are served elsewhere).

use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};

use super::{Attr, BUCKETS, CustomerHistory, Log, age_bucket};

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
    /// Checks that `self` (a client's sizes) asks no source for more than
    /// `fitted` holds and keeps the fitted co-purchase window; the error
    /// names the key.
    pub fn within(&self, fitted: &CandidateConfig) -> Result<(), String> {
        for source in Source::ALL {
            let (want, have) = (self.size(source), fitted.size(source));
            if want > have {
                return Err(format!(
                    "candidates.{}: {want} per customer, but the bundle's sources were fitted with {have}",
                    source.key()
                ));
            }
        }
        // Co-purchase neighbours were kept per item for the fitted size
        // and window.
        if self.copurchase_days != fitted.copurchase_days {
            return Err(format!(
                "candidates.copurchase_days: {} differs from the bundle's {} (fixed when it was fitted)",
                self.copurchase_days, fitted.copurchase_days
            ));
        }
        Ok(())
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

    /// Its key in a `[candidates]` table.
    pub fn key(self) -> &'static str {
        match self {
            Source::Repurchase => "repurchase",
            Source::Popular => "popular",
            Source::AgePopular => "age_popular",
            Source::CoPurchase => "copurchase",
            Source::SameProduct => "same_product",
            Source::TwoTower => "two_tower",
            Source::Sasrec => "sasrec",
        }
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
/// models (item ids, best first).
#[derive(Debug, Clone, Copy, Default)]
pub struct ModelLists<'a> {
    pub two_tower: Option<&'a [u32]>,
    pub sasrec: Option<&'a [u32]>,
}

/// How the popularity lists weigh purchases.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PopularityParams {
    /// Window of the recent-popular list, in days before the end of history.
    pub recent_days: i64,
    /// Half-life of the popularity decay, in days.
    pub half_life_days: f64,
}

impl Default for PopularityParams {
    fn default() -> Self {
        PopularityParams {
            recent_days: 7,
            half_life_days: 7.0,
        }
    }
}

/// Popularity lists of one history: items best first, ties by id, only
/// items with a purchase.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Popularity {
    /// By purchase count over the whole history.
    pub popular: Vec<u32>,
    /// By count over the last `recent_days`.
    pub recent: Vec<u32>,
    /// By purchases weighted 0.5^(days before the end / half-life).
    pub decayed: Vec<u32>,
    /// Decayed, within each age bucket (by [`age_bucket`]).
    pub by_age: Vec<Vec<u32>>,
    /// The history's last day (what the decay counts from).
    pub end_day: i64,
}

impl Popularity {
    /// Fitted on `rows` of `log`, in time order.
    pub fn fit(log: &Log, rows: &[usize], params: &PopularityParams) -> Self {
        let n_items = log.n_items;
        let end_day = rows.iter().map(|&r| log.day(r)).max().unwrap_or(0);
        let mut count = vec![0.0; n_items];
        let mut recent = vec![0.0; n_items];
        let mut decayed = vec![0.0; n_items];
        let mut by_age = vec![vec![0.0; n_items]; BUCKETS];
        for &r in rows {
            let (u, i, d) = (log.user[r], log.item[r] as usize, log.day(r));
            count[i] += 1.0;
            if d > end_day - params.recent_days {
                recent[i] += 1.0;
            }
            let w = 0.5f64.powf((end_day - d) as f64 / params.half_life_days);
            decayed[i] += w;
            by_age[age_bucket(log.age_of(u))][i] += w;
        }
        Popularity {
            popular: rank(&count),
            recent: rank(&recent),
            decayed: rank(&decayed),
            by_age: by_age.iter().map(|s| rank(s)).collect(),
            end_day,
        }
    }

    /// The decayed list of the customers aged `age`.
    pub fn of_age(&self, age: f32) -> &[u32] {
        self.by_age
            .get(age_bucket(age))
            .map_or(&[][..], Vec::as_slice)
    }
}

/// Items with a positive score, best first, ties by id (so the order never
/// depends on hashing or threads); item 0 is padding.
fn rank(scores: &[f64]) -> Vec<u32> {
    let mut items: Vec<u32> = (1..scores.len() as u32)
        .filter(|&i| scores[i as usize] > 0.0)
        .collect();
    items.sort_by(|&a, &b| {
        scores[b as usize]
            .total_cmp(&scores[a as usize])
            .then(a.cmp(&b))
    });
    items
}

/// Which own purchases the repurchase list holds, and how they weigh.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RepurchaseParams {
    /// Only purchases this recent are repurchase candidates.
    pub days: i64,
    /// Half-life of a past purchase's weight, in days.
    pub half_life_days: f64,
}

impl Default for RepurchaseParams {
    fn default() -> Self {
        RepurchaseParams {
            days: 28,
            half_life_days: 14.0,
        }
    }
}

/// A customer's own purchases (`items`, `days`) of the `params.days` up
/// to `end_day`, best first by recency- and frequency-weighted score (ties
/// by id).
pub fn repurchase(
    items: &[u32],
    days: &[i64],
    end_day: i64,
    params: &RepurchaseParams,
) -> Vec<u32> {
    let mut own: Vec<(u32, f64)> = items
        .iter()
        .zip(days)
        .filter(|(_, d)| **d > end_day - params.days)
        .map(|(&i, &d)| (i, 0.5f64.powf((end_day - d) as f64 / params.half_life_days)))
        .collect();
    own.sort_by_key(|p| p.0);
    let mut merged: Vec<(u32, f64)> = Vec::with_capacity(own.len());
    for (i, w) in own {
        match merged.last_mut() {
            Some(last) if last.0 == i => last.1 += w,
            _ => merged.push((i, w)),
        }
    }
    merged.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    merged.iter().map(|p| p.0).collect()
}

/// Up to `k` distinct items taken from `lists` in order.
pub fn first_distinct(lists: &[&[u32]], k: usize, out: &mut Vec<u32>) {
    out.clear();
    for list in lists {
        for &i in *list {
            if out.len() >= k {
                return;
            }
            if !out.contains(&i) {
                out.push(i);
            }
        }
    }
}

/// The fitted sources: popularity lists, co-purchase neighbours and
/// product-code groups of one history, and the list sizes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CandidateSources {
    cfg: CandidateConfig,
    popularity: Popularity,
    repurchase: RepurchaseParams,
    /// Per item: co-bought items with their basket counts, most often first.
    neighbours: Vec<Vec<(u32, u32)>>,
    /// Per product code: its items by popularity.
    by_product: FxHashMap<u32, Vec<u32>>,
    product_of: Vec<u32>,
}

/// Co-purchase neighbours kept per item beyond the source's own size, so
/// the co-purchase-strength feature sees more than the proposed ones.
const NEIGHBOURS_KEPT: usize = 50;

/// Baskets larger than this say little about any one pair.
const MAX_BASKET: usize = 30;

impl CandidateSources {
    /// `rows` (time order) is the history the sources may use.
    pub fn fit(log: &Log, rows: &[usize], cfg: &CandidateConfig) -> Self {
        let popularity = Popularity::fit(log, rows, &PopularityParams::default());
        Self::with_popularity(log, rows, cfg, popularity)
    }

    /// [`fit`](Self::fit) with the popularity lists of the same rows
    /// already made.
    pub fn with_popularity(
        log: &Log,
        rows: &[usize],
        cfg: &CandidateConfig,
        popularity: Popularity,
    ) -> Self {
        let end = popularity.end_day;
        // Baskets of the recent window: (user, day) → items.
        let mut baskets: FxHashMap<(u32, i64), Vec<u32>> = FxHashMap::default();
        for &r in rows {
            if log.day(r) > end - cfg.copurchase_days {
                baskets
                    .entry((log.user[r], log.day(r)))
                    .or_default()
                    .push(log.item[r]);
            }
        }
        let mut pairs: FxHashMap<(u32, u32), u32> = FxHashMap::default();
        for items in baskets.values_mut() {
            items.sort_unstable();
            items.dedup();
            if items.len() > MAX_BASKET {
                continue;
            }
            for (a, &x) in items.iter().enumerate() {
                for &y in &items[a + 1..] {
                    *pairs.entry((x, y)).or_default() += 1;
                }
            }
        }
        let mut near: Vec<Vec<(u32, u32)>> = vec![Vec::new(); log.n_items];
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
        let product_of = log.attr(Attr::ProductCode);
        let mut by_product: FxHashMap<u32, Vec<u32>> = FxHashMap::default();
        let mut popular = Vec::new();
        first_distinct(&[&popularity.popular], log.n_items, &mut popular);
        let mut seen = vec![false; log.n_items];
        for &i in &popular {
            seen[i as usize] = true;
        }
        // Popular items first, then the unsold ones (new colours) by id.
        let order = popular
            .iter()
            .copied()
            .chain((1..log.n_items as u32).filter(|&i| !seen[i as usize]));
        for i in order {
            let p = product_of[i as usize];
            if p != 0 {
                by_product.entry(p).or_default().push(i);
            }
        }
        CandidateSources {
            cfg: cfg.clone(),
            popularity,
            repurchase: RepurchaseParams::default(),
            neighbours,
            by_product,
            product_of,
        }
    }

    pub fn config(&self) -> &CandidateConfig {
        &self.cfg
    }

    /// The popularity lists the sources were fitted with.
    pub fn popularity(&self) -> &Popularity {
        &self.popularity
    }

    /// Items the sources know (ids `1..n_items`).
    pub fn n_items(&self) -> usize {
        self.product_of.len()
    }

    /// Makes room for articles added after fitting, as item ids
    /// `n_items()..`, never sold: no co-purchase neighbours, and each at
    /// the end of its product code's group, where fitting puts unsold ones.
    pub fn add_unsold(&mut self, product_codes: &[u32]) {
        for &p in product_codes {
            let item = self.product_of.len() as u32;
            self.product_of.push(p);
            self.neighbours.push(Vec::new());
            if p != 0 {
                self.by_product.entry(p).or_default().push(item);
            }
        }
    }

    /// The customer's most recent distinct articles (at most `cfg.seeds`,
    /// most recent first): what co-purchase and same-product start from.
    pub fn seeds(&self, items: &[u32]) -> Vec<u32> {
        let mut seeds = Vec::new();
        for &i in items.iter().rev() {
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
            for &(i, c) in self
                .neighbours
                .get(s as usize)
                .map_or(&[][..], Vec::as_slice)
            {
                let e = out.entry(i).or_default();
                e.0 += c;
                e.1 = e.1.max(c);
            }
        }
        out
    }

    /// The union of every enabled source for customer `c`; `models` holds
    /// the model-made lists for this customer, when those sources are on.
    pub fn candidates(&self, c: &CustomerHistory, models: ModelLists) -> List {
        self.candidates_sized(c, models, &self.cfg)
    }

    /// [`candidates`](Self::candidates) with other list sizes (a client's,
    /// at most the fitted ones: [`CandidateConfig::within`]).
    pub fn candidates_sized(
        &self,
        c: &CustomerHistory,
        models: ModelLists,
        cfg: &CandidateConfig,
    ) -> List {
        let pop = &self.popularity;
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
        if cfg.repurchase > 0 {
            let own = repurchase(c.items, c.days, pop.end_day, &self.repurchase);
            add(&mut own.into_iter(), Source::Repurchase, cfg.repurchase);
        }
        // The overall list last: a tiny catalogue still fills the size.
        if cfg.popular > 0 {
            first_distinct(&[&pop.decayed, &pop.popular], cfg.popular, &mut buf);
            add(&mut buf.iter().copied(), Source::Popular, cfg.popular);
        }
        if cfg.age_popular > 0 {
            let lists = [pop.of_age(c.age), &pop.decayed, &pop.popular];
            first_distinct(&lists, cfg.age_popular, &mut buf);
            add(
                &mut buf.iter().copied(),
                Source::AgePopular,
                cfg.age_popular,
            );
        }
        let seeds = self.seeds(c.items);
        if cfg.copurchase > 0 {
            // Round-robin over the seeds, so the most recent one cannot take
            // every slot.
            let lists: Vec<&[(u32, u32)]> = seeds
                .iter()
                .map(|&s| {
                    let l = self
                        .neighbours
                        .get(s as usize)
                        .map_or(&[][..], Vec::as_slice);
                    &l[..l.len().min(cfg.copurchase)]
                })
                .collect();
            let depth = lists.iter().map(|l| l.len()).max().unwrap_or(0);
            let mut merged =
                (0..depth).flat_map(|k| lists.iter().filter_map(move |l| l.get(k).map(|p| p.0)));
            add(&mut merged, Source::CoPurchase, cfg.copurchase);
        }
        if cfg.same_product > 0 {
            let mut same = seeds.iter().flat_map(|&s| {
                let p = self.product_of.get(s as usize).copied().unwrap_or(0);
                self.by_product
                    .get(&p)
                    .map_or(&[][..], Vec::as_slice)
                    .iter()
                    .copied()
                    .filter(move |&i| i != s)
            });
            add(&mut same, Source::SameProduct, cfg.same_product);
        }
        if cfg.two_tower > 0
            && let Some(list) = models.two_tower
        {
            add(&mut list.iter().copied(), Source::TwoTower, cfg.two_tower);
        }
        if cfg.sasrec > 0
            && let Some(list) = models.sasrec
        {
            add(&mut list.iter().copied(), Source::Sasrec, cfg.sasrec);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn popularity_counts_history_and_breaks_ties_by_id() {
        let (user, item, time) = ([1u32, 2, 3, 1, 2], [3u32, 3, 2, 2, 1], [0i64, 1, 2, 3, 4]);
        let zeros = [0f32; 5];
        let log = Log {
            user: &user,
            item: &item,
            time: &time,
            per_day: 1,
            price: &zeros,
            channel: &[0; 5],
            age: &[f32::NAN, 19.0, 19.0, 70.0],
            n_items: 4,
            attrs: [None; 4],
        };
        let p = Popularity::fit(&log, &[0, 1, 2, 3, 4], &PopularityParams::default());
        assert_eq!(p.popular, vec![2, 3, 1]);
        assert_eq!(p.end_day, 4);
        assert_eq!(p.decayed, vec![2, 3, 1]);
        // Under 20 (customers 1 and 2): item 3's two old purchases, then
        // item 1's one on the last day before item 2's one the day before.
        assert_eq!(p.of_age(19.0), &[3, 1, 2][..]);
        assert_eq!(p.of_age(70.0), &[2][..]);
        let mut out = Vec::new();
        first_distinct(&[&[2, 3], &[3, 1]], 5, &mut out);
        assert_eq!(out, vec![2, 3, 1]);
    }

    #[test]
    fn repurchase_weighs_recency_and_frequency_within_its_window() {
        let p = RepurchaseParams::default();
        // Item 5 twice a week ago beats item 7 once yesterday; item 9 is
        // older than the window.
        let got = repurchase(&[9, 5, 5, 7], &[60, 93, 93, 99], 100, &p);
        assert_eq!(got, vec![5, 7]);
    }
}
