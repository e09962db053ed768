//! The second stage's features: one typed registry. Each [`Feature`] has a
//! slot in a [`Row`], a short name (the column name the trees are saved
//! with) and a description (the report's feature table), and belongs to a
//! [`Group`] that the ablations switch off together.
//!
//! Everything here is computed from the rows before the served day: the
//! [`Context`] is fitted on the log's rows before its day, and a customer's
//! view reads only the purchases they are served with. The trainer's
//! invariance test checks it by perturbing the rows on and after the day.
//!
//! A value the trees cannot know (a candidate no source ranked, an article
//! never sold, a customer without an age) is NaN: the trees route missing
//! values to a learned side at each split, and the logistic blender reads
//! its own inputs ([`super::blend::inputs`]), never a NaN.

use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};

use super::sources::{Candidate, Source};
use super::{Attr, BUCKETS, CustomerHistory, Log, age_bucket};

/// What an ablation switches off together.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Group {
    /// Which source found the candidate and at what rank.
    SourceRank,
    /// The sequential ranker's score, rank and log-softmax.
    Sasrec,
    /// The two-tower model's cosine and rank.
    TwoTower,
    CustomerArticle,
    CustomerCategory,
    Article,
    Customer,
    CoPurchase,
}

impl Group {
    pub fn name(self) -> &'static str {
        match self {
            Group::SourceRank => "source ranks",
            Group::Sasrec => "SASRec",
            Group::TwoTower => "two-tower",
            Group::CustomerArticle => "customer × article",
            Group::CustomerCategory => "customer × category",
            Group::Article => "article",
            Group::Customer => "customer",
            Group::CoPurchase => "co-purchase",
        }
    }
}

macro_rules! features {
    ($($variant:ident, $name:literal, $group:ident, $doc:literal;)*) => {
        /// One feature of a (customer, candidate) pair; its discriminant is
        /// its slot in a [`Row`].
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Feature { $($variant),* }

        impl Feature {
            /// Every feature, in row order.
            pub const ALL: [Feature; [$(Feature::$variant),*].len()] = [$(Feature::$variant),*];

            /// The column name (what the saved trees call it).
            pub fn name(self) -> &'static str {
                match self { $(Feature::$variant => $name),* }
            }

            /// How it is computed, for the report.
            pub fn doc(self) -> &'static str {
                match self { $(Feature::$variant => $doc),* }
            }

            pub fn group(self) -> Group {
                match self { $(Feature::$variant => Group::$group),* }
            }
        }
    };
}

features! {
    RankRepurchase, "rank_repurchase", SourceRank, "rank in the repurchase source (recency- and frequency-weighted own purchases)";
    RankPopular, "rank_popular", SourceRank, "rank in the decayed-popularity source";
    RankAgePopular, "rank_age_popular", SourceRank, "rank in the age-bucket popularity source";
    RankCoPurchase, "rank_copurchase", SourceRank, "rank in the co-purchase source (round-robin over the recent seeds)";
    RankSameProduct, "rank_same_product", SourceRank, "rank in the same-product-code source";
    RankTwoTower, "rank_two_tower", SourceRank, "rank in the two-tower top K";
    RankSasrec, "rank_sasrec", SourceRank, "rank in SASRec's top K over the whole catalogue";
    SourceCount, "source_count", SourceRank, "how many sources proposed it";
    SasrecScore, "sasrec_score", Sasrec, "SASRec's logit for it (its score within the SASRec source)";
    SasrecRank, "sasrec_rank", Sasrec, "its rank among the candidates by SASRec's logit";
    SasrecLogSoftmax, "sasrec_log_softmax", Sasrec, "SASRec's log-softmax over the candidates";
    TwoTowerCosine, "two_tower_cosine", TwoTower, "cosine of the two-tower customer and article vectors (its score within the two-tower source)";
    TwoTowerRank, "two_tower_rank", TwoTower, "its rank among the candidates by two-tower cosine";
    OwnCount7, "own_count_7d", CustomerArticle, "the customer's purchases of it in the last 7 days";
    OwnCount28, "own_count_28d", CustomerArticle, "… in the last 28 days";
    OwnCountAll, "own_count_all", CustomerArticle, "… ever";
    OwnDecayed, "own_decayed", CustomerArticle, "… each weighted 0.5^(days ago / 14) (the repurchase source's score)";
    OwnDaysSince, "own_days_since", CustomerArticle, "days since the customer last bought it";
    ProductCodeCount, "cat_product_count", CustomerCategory, "the customer's purchases of its product code (other colours and sizes)";
    ProductCodeDaysSince, "cat_product_days_since", CustomerCategory, "days since the customer last bought its product code";
    ProductTypeCount, "cat_type_count", CustomerCategory, "the customer's purchases of its product type";
    ProductTypeDaysSince, "cat_type_days_since", CustomerCategory, "days since … its product type";
    DepartmentCount, "cat_department_count", CustomerCategory, "the customer's purchases in its department";
    DepartmentDaysSince, "cat_department_days_since", CustomerCategory, "days since … its department";
    ColourCount, "cat_colour_count", CustomerCategory, "the customer's purchases of its colour group";
    ColourDaysSince, "cat_colour_days_since", CustomerCategory, "days since … its colour group";
    Sales7, "art_sales_7d", Article, "its sales in the last 7 days";
    Sales14, "art_sales_14d", Article, "… 14 days";
    Sales28, "art_sales_28d", Article, "… 28 days";
    SalesTrend, "art_sales_trend", Article, "(sales 7 days + 1) / (sales 28 days / 4 + 1)";
    Decayed, "art_decayed", Article, "sales weighted 0.5^(days ago / 7) (the popularity source's score)";
    AgeDecayed, "art_age_decayed", Article, "… among customers of the customer's age bucket (the age-popularity source's score)";
    RepurchaseRate, "art_repurchase_rate", Article, "share of its buyers who bought it more than once";
    DaysOnSale, "art_days_on_sale", Article, "days since its first sale";
    BuyerAgeGap, "art_buyer_age_gap", Article, "mean age of its buyers − the customer's age";
    LnPrice, "art_ln_price", Article, "ln of its mean price";
    PriceGap, "art_price_gap", Article, "ln price − the customer's mean ln price paid";
    CustomerCount7, "cust_count_7d", Customer, "the customer's purchases in the last 7 days";
    CustomerCount28, "cust_count_28d", Customer, "… 28 days";
    CustomerCountAll, "cust_count_all", Customer, "… ever";
    CustomerDaysSince, "cust_days_since", Customer, "days since the customer's last purchase";
    OnlineShare, "cust_online_share", Customer, "share of the customer's purchases made online";
    CustomerAge, "cust_age", Customer, "the customer's age";
    CoPurchaseSum, "copurchase_sum", CoPurchase, "baskets pairing it with the customer's recent articles, summed over them (the co-purchase source's score)";
    CoPurchaseMax, "copurchase_max", CoPurchase, "… the most with any one of them";
}

impl Feature {
    pub const fn slot(self) -> usize {
        self as usize
    }

    /// The rank feature of `source`.
    pub fn rank_of(source: Source) -> Feature {
        match source {
            Source::Repurchase => Feature::RankRepurchase,
            Source::Popular => Feature::RankPopular,
            Source::AgePopular => Feature::RankAgePopular,
            Source::CoPurchase => Feature::RankCoPurchase,
            Source::SameProduct => Feature::RankSameProduct,
            Source::TwoTower => Feature::RankTwoTower,
            Source::Sasrec => Feature::RankSasrec,
        }
    }

    /// The (count, days since) features of `attr`.
    pub fn of_attr(attr: Attr) -> (Feature, Feature) {
        match attr {
            Attr::ProductCode => (Feature::ProductCodeCount, Feature::ProductCodeDaysSince),
            Attr::ProductType => (Feature::ProductTypeCount, Feature::ProductTypeDaysSince),
            Attr::Department => (Feature::DepartmentCount, Feature::DepartmentDaysSince),
            Attr::Colour => (Feature::ColourCount, Feature::ColourDaysSince),
        }
    }
}

pub const N: usize = Feature::ALL.len();

/// One (customer, candidate) pair's features, by [`Feature::slot`].
pub type Row = [f32; N];

/// The model scores of one candidate, filled by the ranker (NaN where a
/// model does not know the article).
#[derive(Debug, Clone, Copy)]
pub struct ModelScores {
    pub sasrec: f32,
    pub two_tower: f32,
}

/// What the features are computed from: per-article statistics of the
/// rows before `day`, the day every "days since" counts to.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Context {
    day: i64,
    sales7: Vec<f32>,
    sales14: Vec<f32>,
    sales28: Vec<f32>,
    decayed: Vec<f32>,
    /// Per age bucket (as `age_bucket` numbers them), per article.
    age_decayed: Vec<Vec<f32>>,
    first_day: Vec<Option<i64>>,
    repurchase_rate: Vec<f32>,
    buyer_age: Vec<f32>,
    ln_price: Vec<f32>,
    /// Per attribute, per article: its code (0 = unknown).
    attrs: Vec<Vec<u32>>,
}

/// H&M's online sales channel.
const ONLINE: u8 = 2;

impl Context {
    /// Fitted on the rows of `log` before `day` (later rows are skipped).
    pub fn fit(log: &Log, day: i64) -> Self {
        let n_items = log.n_items;
        let (mut sales7, mut sales14, mut sales28) = (
            vec![0f32; n_items],
            vec![0f32; n_items],
            vec![0f32; n_items],
        );
        let mut decayed = vec![0f32; n_items];
        let mut age_decayed = vec![vec![0f32; n_items]; BUCKETS];
        let mut first_day: Vec<Option<i64>> = vec![None; n_items];
        let (mut age_sum, mut age_n) = (vec![0f64; n_items], vec![0u32; n_items]);
        let (mut price_sum, mut price_n) = (vec![0f64; n_items], vec![0u32; n_items]);
        let mut pairs: Vec<(u32, u32)> = Vec::with_capacity(log.len());
        for r in 0..log.len() {
            let d = log.day(r);
            if d >= day {
                continue;
            }
            let (u, i) = (log.user[r], log.item[r] as usize);
            let ago = (day - 1 - d) as f32;
            if ago < 7.0 {
                sales7[i] += 1.0;
            }
            if ago < 14.0 {
                sales14[i] += 1.0;
            }
            if ago < 28.0 {
                sales28[i] += 1.0;
            }
            let w = 0.5f32.powf(ago / 7.0);
            decayed[i] += w;
            let a = log.age_of(u);
            age_decayed[age_bucket(a)][i] += w;
            if first_day[i].is_none_or(|f| d < f) {
                first_day[i] = Some(d);
            }
            if a.is_finite() {
                age_sum[i] += f64::from(a);
                age_n[i] += 1;
            }
            let p = log.price[r];
            if p > 0.0 && p.is_finite() {
                price_sum[i] += f64::from(p).ln();
                price_n[i] += 1;
            }
            pairs.push((i as u32, u));
        }
        // Repurchase rate: per article, distinct buyers and those who
        // bought it twice or more.
        pairs.sort_unstable();
        let mut repurchase_rate = vec![f32::NAN; n_items];
        let mut k = 0;
        while k < pairs.len() {
            let item = pairs[k].0;
            let (mut buyers, mut again) = (0u32, 0u32);
            while k < pairs.len() && pairs[k].0 == item {
                let user = pairs[k].1;
                let mut c = 0;
                while k < pairs.len() && pairs[k] == (item, user) {
                    c += 1;
                    k += 1;
                }
                buyers += 1;
                again += u32::from(c > 1);
            }
            repurchase_rate[item as usize] = again as f32 / buyers as f32;
        }
        let mean = |s: &[f64], n: &[u32]| -> Vec<f32> {
            s.iter()
                .zip(n)
                .map(|(&s, &n)| {
                    if n > 0 {
                        (s / f64::from(n)) as f32
                    } else {
                        f32::NAN
                    }
                })
                .collect()
        };
        Context {
            day,
            sales7,
            sales14,
            sales28,
            decayed,
            age_decayed,
            first_day,
            repurchase_rate,
            buyer_age: mean(&age_sum, &age_n),
            ln_price: mean(&price_sum, &price_n),
            attrs: Attr::ALL.iter().map(|&a| log.attr(a)).collect(),
        }
    }

    /// The day served.
    pub fn day(&self) -> i64 {
        self.day
    }

    /// Articles it has statistics for (ids `0..n_items`).
    pub fn n_items(&self) -> usize {
        self.sales7.len()
    }

    /// Articles added after fitting, as item ids `n_items()..`: never sold
    /// before the day, so they read as an unsold article of the fitted log
    /// does (no sales, no first day, no repurchase rate, buyer age or
    /// price); `attrs` are their codes, by [`Attr::index`].
    pub fn add_unsold(&mut self, attrs: &[[u32; super::Attr::ALL.len()]]) {
        for a in attrs {
            for v in [
                &mut self.sales7,
                &mut self.sales14,
                &mut self.sales28,
                &mut self.decayed,
            ] {
                v.push(0.0);
            }
            for v in &mut self.age_decayed {
                v.push(0.0);
            }
            self.first_day.push(None);
            self.repurchase_rate.push(f32::NAN);
            self.buyer_age.push(f32::NAN);
            self.ln_price.push(f32::NAN);
            for (codes, &c) in self.attrs.iter_mut().zip(a) {
                codes.push(c);
            }
        }
    }

    /// ln of the article's mean price before the day (NaN: never sold
    /// with a price).
    pub fn ln_price(&self, item: u32) -> f32 {
        self.ln_price
            .get(item as usize)
            .copied()
            .unwrap_or(f32::NAN)
    }

    /// The customer-side state of customer `c` on the day, from their
    /// purchases before it, and the co-purchase strengths of their
    /// candidates (item → (sum, max)).
    pub fn customer(
        &self,
        c: &CustomerHistory,
        copurchase: FxHashMap<u32, (u32, u32)>,
    ) -> CustomerView {
        let (items, days) = (c.items, c.days);
        let mut own: FxHashMap<u32, Own> = FxHashMap::default();
        let mut cats: Vec<FxHashMap<u32, (u32, i64)>> = vec![FxHashMap::default(); Attr::ALL.len()];
        let (mut n7, mut n28) = (0u32, 0u32);
        let (mut price_sum, mut price_n) = (0f64, 0u32);
        for (&i, &d) in items.iter().zip(days) {
            let ago = self.day - d;
            let e = own.entry(i).or_insert(Own {
                last: d,
                ..Own::default()
            });
            e.all += 1;
            e.c7 += u32::from(ago <= 7);
            e.c28 += u32::from(ago <= 28);
            e.decayed += 0.5f32.powf((ago - 1) as f32 / 14.0);
            e.last = e.last.max(d);
            n7 += u32::from(ago <= 7);
            n28 += u32::from(ago <= 28);
            for (a, map) in cats.iter_mut().enumerate() {
                let code = self.attrs[a].get(i as usize).copied().unwrap_or(0);
                if code != 0 {
                    let c = map.entry(code).or_insert((0, d));
                    c.0 += 1;
                    c.1 = c.1.max(d);
                }
            }
            let lp = self.ln_price(i);
            if lp.is_finite() {
                price_sum += f64::from(lp);
                price_n += 1;
            }
        }
        let online = if !items.is_empty() && c.channels.len() == items.len() {
            let n = c.channels.iter().filter(|&&ch| ch == ONLINE).count();
            n as f32 / items.len() as f32
        } else {
            f32::NAN
        };
        CustomerView {
            own,
            cats,
            n7,
            n28,
            n_all: items.len() as u32,
            last: days.last().copied(),
            mean_ln_price: (price_n > 0).then(|| (price_sum / f64::from(price_n)) as f32),
            online,
            age: c.age,
            bucket: age_bucket(c.age),
            copurchase,
        }
    }

    /// The features of `cand` for the customer of `view`, with its model
    /// scores; [`rank_among`] then ranks it among the customer's others.
    /// An article beyond the context's statistics (added since it was
    /// fitted) reads as never sold.
    pub fn row(&self, view: &CustomerView, cand: &Candidate, own_scores: ModelScores) -> Row {
        let mut r = [f32::NAN; N];
        let i = cand.item as usize;
        let day = self.day;
        let set = |r: &mut Row, f: Feature, v: f32| r[f.slot()] = v;
        for source in Source::ALL {
            if let Some(rank) = cand.rank(source) {
                set(&mut r, Feature::rank_of(source), f32::from(rank));
            }
        }
        set(&mut r, Feature::SourceCount, cand.sources().len() as f32);
        set(&mut r, Feature::SasrecScore, own_scores.sasrec);
        set(&mut r, Feature::TwoTowerCosine, own_scores.two_tower);
        let own = view.own.get(&cand.item);
        set(&mut r, Feature::OwnCount7, own.map_or(0.0, |o| o.c7 as f32));
        set(
            &mut r,
            Feature::OwnCount28,
            own.map_or(0.0, |o| o.c28 as f32),
        );
        set(
            &mut r,
            Feature::OwnCountAll,
            own.map_or(0.0, |o| o.all as f32),
        );
        set(&mut r, Feature::OwnDecayed, own.map_or(0.0, |o| o.decayed));
        if let Some(o) = own {
            set(&mut r, Feature::OwnDaysSince, (day - o.last) as f32);
        }
        for (a, attr) in Attr::ALL.iter().enumerate() {
            let (count, since) = Feature::of_attr(*attr);
            let code = self.attrs[a].get(i).copied().unwrap_or(0);
            let hit = (code != 0).then(|| view.cats[a].get(&code)).flatten();
            set(&mut r, count, hit.map_or(0.0, |h| h.0 as f32));
            if let Some(h) = hit {
                set(&mut r, since, (day - h.1) as f32);
            }
        }
        let stat = |v: &[f32]| v.get(i).copied().unwrap_or(0.0);
        let (s7, s28) = (stat(&self.sales7), stat(&self.sales28));
        set(&mut r, Feature::Sales7, s7);
        set(&mut r, Feature::Sales14, stat(&self.sales14));
        set(&mut r, Feature::Sales28, s28);
        set(&mut r, Feature::SalesTrend, (s7 + 1.0) / (s28 / 4.0 + 1.0));
        set(&mut r, Feature::Decayed, stat(&self.decayed));
        set(
            &mut r,
            Feature::AgeDecayed,
            stat(&self.age_decayed[view.bucket]),
        );
        let unknown = |v: &[f32]| v.get(i).copied().unwrap_or(f32::NAN);
        set(
            &mut r,
            Feature::RepurchaseRate,
            unknown(&self.repurchase_rate),
        );
        if let Some(f) = self.first_day.get(i).copied().flatten() {
            set(&mut r, Feature::DaysOnSale, (day - f) as f32);
        }
        set(
            &mut r,
            Feature::BuyerAgeGap,
            unknown(&self.buyer_age) - view.age,
        );
        let lp = self.ln_price(cand.item);
        set(&mut r, Feature::LnPrice, lp);
        if let Some(m) = view.mean_ln_price {
            set(&mut r, Feature::PriceGap, lp - m);
        }
        set(&mut r, Feature::CustomerCount7, view.n7 as f32);
        set(&mut r, Feature::CustomerCount28, view.n28 as f32);
        set(&mut r, Feature::CustomerCountAll, view.n_all as f32);
        if let Some(l) = view.last {
            set(&mut r, Feature::CustomerDaysSince, (day - l) as f32);
        }
        set(&mut r, Feature::OnlineShare, view.online);
        set(&mut r, Feature::CustomerAge, view.age);
        let cp = view.copurchase.get(&cand.item).copied().unwrap_or((0, 0));
        set(&mut r, Feature::CoPurchaseSum, cp.0 as f32);
        set(&mut r, Feature::CoPurchaseMax, cp.1 as f32);
        r
    }
}

/// Fills the features that rank a candidate among the customer's others
/// (SASRec rank and log-softmax, two-tower rank) in `rows`, one customer's.
pub fn rank_among(rows: &mut [Row]) {
    fill_rank(rows, Feature::SasrecScore, Feature::SasrecRank);
    fill_rank(rows, Feature::TwoTowerCosine, Feature::TwoTowerRank);
    let s = Feature::SasrecScore.slot();
    let max = rows
        .iter()
        .map(|r| r[s])
        .filter(|v| v.is_finite())
        .fold(f32::NEG_INFINITY, f32::max);
    if max.is_finite() {
        let lse = max
            + rows
                .iter()
                .map(|r| r[s])
                .filter(|v| v.is_finite())
                .map(|v| (v - max).exp())
                .sum::<f32>()
                .ln();
        for r in rows {
            r[Feature::SasrecLogSoftmax.slot()] = r[s] - lse;
        }
    }
}

/// `rank` = 1 + the number of candidates with a larger `score` (NaN scores
/// get no rank).
fn fill_rank(rows: &mut [Row], score: Feature, rank: Feature) {
    let (s, k) = (score.slot(), rank.slot());
    let mut order: Vec<(f32, usize)> = rows
        .iter()
        .enumerate()
        .filter(|(_, r)| r[s].is_finite())
        .map(|(j, r)| (r[s], j))
        .collect();
    order.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    for (pos, (_, j)) in order.into_iter().enumerate() {
        rows[j][k] = (pos + 1) as f32;
    }
}

/// A customer's purchases of one article.
#[derive(Debug, Clone, Copy, Default)]
struct Own {
    c7: u32,
    c28: u32,
    all: u32,
    decayed: f32,
    last: i64,
}

/// One customer as the features see them on the context's day.
pub struct CustomerView {
    own: FxHashMap<u32, Own>,
    /// Per attribute: code → (purchases, last day).
    cats: Vec<FxHashMap<u32, (u32, i64)>>,
    n7: u32,
    n28: u32,
    n_all: u32,
    last: Option<i64>,
    mean_ln_price: Option<f32>,
    /// Share of purchases made online (NaN: unknown).
    online: f32,
    age: f32,
    bucket: usize,
    copurchase: FxHashMap<u32, (u32, u32)>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_feature_has_its_slot_and_a_distinct_name_and_every_source_a_rank() {
        for (k, f) in Feature::ALL.iter().enumerate() {
            assert_eq!(f.slot(), k, "{f:?}");
            assert!(!f.doc().is_empty());
            // LightGBM column names: no spaces or JSON specials.
            assert!(
                f.name()
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_'),
                "{}",
                f.name()
            );
        }
        let names: std::collections::HashSet<&str> =
            Feature::ALL.iter().map(|f| f.name()).collect();
        assert_eq!(names.len(), N);
        let ranks: std::collections::HashSet<Feature> =
            Source::ALL.iter().map(|&s| Feature::rank_of(s)).collect();
        assert_eq!(ranks.len(), Source::ALL.len());
        assert!(ranks.iter().all(|f| f.group() == Group::SourceRank));
    }

    #[test]
    fn ranks_among_candidates_skip_unknown_scores() {
        let mut rows = vec![[f32::NAN; N]; 3];
        rows[0][Feature::SasrecScore.slot()] = 1.0;
        rows[1][Feature::SasrecScore.slot()] = 3.0;
        rows[2][Feature::TwoTowerCosine.slot()] = 0.5;
        rank_among(&mut rows);
        assert_eq!(rows[1][Feature::SasrecRank.slot()], 1.0);
        assert_eq!(rows[0][Feature::SasrecRank.slot()], 2.0);
        assert!(rows[2][Feature::SasrecRank.slot()].is_nan());
        assert_eq!(rows[2][Feature::TwoTowerRank.slot()], 1.0);
        let lsm = |r: &Row| r[Feature::SasrecLogSoftmax.slot()];
        let total = lsm(&rows[0]).exp() + lsm(&rows[1]).exp();
        assert!((total - 1.0).abs() < 1e-5, "{total}");
    }
}
