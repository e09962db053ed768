//! Candidate generation for the trainer: the sources themselves live in
//! `recforge_infer::rank::sources` (what serving runs); this module fits
//! them on a dataset's history and reports what share of the target
//! period's purchases each source, and their union, contains.

use std::path::Path;

use serde::{Deserialize, Serialize};

use recforge_infer::rank::CustomerHistory;
pub use recforge_infer::rank::sources::{
    Candidate, CandidateConfig, CandidateSources, List, ModelLists, Source, Sources,
};

use crate::data::Dataset;
use crate::data::history::History;
use crate::eval::Targets;
use crate::eval::baselines::{self, Fitted};
use crate::export::serve::{Server, top_lists};

/// Source sizes from a TOML file of `[candidates]` keys; the defaults for
/// keys it leaves out.
pub fn load_config(path: &Path) -> crate::Result<CandidateConfig> {
    let text = std::fs::read_to_string(path).map_err(|e| crate::Error::io(path, e))?;
    toml::from_str(&text).map_err(|e| crate::Error::invalid(path, e.to_string()))
}

/// The sources fitted on one history of a dataset, with the baselines of
/// the same rows (whose history holds every customer's purchases).
pub struct Generator {
    sources: CandidateSources,
    fitted: Fitted,
    age: Vec<f32>,
}

impl Generator {
    /// `rows` (time order) is the history the sources may use.
    pub fn fit(ds: &Dataset, rows: &[usize], cfg: &CandidateConfig) -> Self {
        let fitted = Fitted::fit(ds, rows, baselines::Params::default());
        let sources =
            CandidateSources::with_popularity(&ds.log(), rows, cfg, fitted.popularity().clone());
        Generator {
            sources,
            fitted,
            age: ds.age.clone(),
        }
    }

    pub fn config(&self) -> &CandidateConfig {
        self.sources.config()
    }

    /// The fitted sources and the baselines, apart.
    pub fn into_parts(self) -> (CandidateSources, Fitted) {
        (self.sources, self.fitted)
    }

    /// The baselines fitted on the sources' history (popular lists, every
    /// customer's purchases).
    pub fn fitted(&self) -> &Fitted {
        &self.fitted
    }

    /// `user` as the ranking system receives a customer: every purchase of
    /// the history, and their age.
    pub fn customer(&self, user: u32) -> CustomerHistory<'_> {
        let h = self.fitted.histories();
        CustomerHistory {
            items: h.items(user),
            days: h.days(user),
            channels: h.channels(user),
            age: self.age.get(user as usize).copied().unwrap_or(f32::NAN),
        }
    }

    /// The union of every enabled source for `user`.
    pub fn candidates(&self, user: u32, models: ModelLists) -> List {
        self.sources.candidates(&self.customer(user), models)
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
