//! Ranking candidates with an exported sequential ranker, on the test
//! period of the last-week split: the union of the candidate sources is
//! ordered by the ranker's score (or, for the revenue objective, by its
//! expected value), beside the ranker alone over the whole catalogue and
//! every baseline, all on the same customers.
//!
//! The ranker's scores are softmax logits over the catalogue, so
//! exp(score) is proportional to the purchase probability, and the
//! expected revenue of showing an item is proportional to
//! exp(score) · price^alpha: ranking by score + alpha · ln(price) orders by
//! it without normalising.

use std::path::Path;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::baseline::{self, Fitted, Kind};
use crate::candidates::{CandidateConfig, Generator, List};
use crate::compare::PerCustomer;
use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::eval::{Accumulator, Metrics, Targets};
use crate::report::{Row, Table};
use crate::serve::{Histories, Model, Server};

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Objective {
    /// Order by purchase probability.
    Purchase,
    /// Order by expected revenue: probability × price^alpha.
    Revenue,
}

const K: usize = 12;

/// Each item's mean price over `rows` (0 where it has none).
fn mean_prices(ds: &Dataset, rows: &[usize]) -> Vec<f64> {
    let mut sum = vec![0.0; ds.items.len()];
    let mut n = vec![0usize; ds.items.len()];
    for &r in rows {
        let p = ds.inter.price[r];
        if p > 0.0 && p.is_finite() {
            sum[ds.inter.item[r] as usize] += f64::from(p);
            n[ds.inter.item[r] as usize] += 1;
        }
    }
    sum.iter()
        .zip(&n)
        .map(|(s, &c)| if c > 0 { s / c as f64 } else { 0.0 })
        .collect()
}

/// Interaction rows before `day` only: what was known when serving on it.
pub fn before(ds: &Dataset, day: i64) -> Dataset {
    let mut past = ds.clone();
    let keep: Vec<bool> = (0..ds.inter.len()).map(|r| ds.day(r) < day).collect();
    let it = &mut past.inter;
    macro_rules! retain {
        ($($f:ident),*) => {$({
            let mut k = keep.iter();
            it.$f.retain(|_| *k.next().expect("aligned"));
        })*};
    }
    retain!(user, item, time, price, channel, part);
    past.meta.n_interactions = past.inter.len();
    past
}

/// Everything needed to rank customers' candidates as of one day: the
/// candidate sources fitted on the history, the two-tower source and the
/// ranker served from bundles on the rows before that day.
pub struct Ranker {
    past: Dataset,
    server: Server,
    hist: Histories,
    sources: Generator,
    /// The two-tower server for the two-tower source (same history).
    retrieval: Option<Server>,
    two_tower: usize,
    /// ln(price)·alpha per item for the revenue objective (0 for purchase).
    bonus: Vec<f32>,
    pub popular: Vec<u32>,
    pub fitted: Fitted,
    day: i64,
}

impl Ranker {
    /// Serves as of `day`; `history` (time order) are the rows before it.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        ds: &Dataset,
        history: &[usize],
        day: i64,
        cfg: &CandidateConfig,
        retrieval: Option<&Path>,
        ranker: &Path,
        objective: Objective,
        alpha: f64,
    ) -> Result<Self> {
        let past = before(ds, day);
        let server = Server::new(ranker, &past)?;
        if !matches!(server.model, Model::SasRec(_)) {
            return Err(Error::Config(format!(
                "{}: the ranker must be a sequential-ranker bundle",
                ranker.display()
            )));
        }
        let hist = Histories::of_all(&past);
        let retrieval = match retrieval {
            Some(b) if cfg.two_tower > 0 => Some(Server::new(b, &past)?),
            _ => None,
        };
        let prices = mean_prices(ds, history);
        let known: Vec<f64> = prices.iter().copied().filter(|&p| p > 0.0).collect();
        let fallback = if known.is_empty() {
            1.0
        } else {
            known.iter().sum::<f64>() / known.len() as f64
        };
        let bonus = prices
            .iter()
            .map(|&p| match objective {
                Objective::Purchase => 0.0,
                Objective::Revenue => (alpha * if p > 0.0 { p } else { fallback }.ln()) as f32,
            })
            .collect();
        let fitted = Fitted::fit(ds, history, baseline::Params::default());
        let mut popular = Vec::new();
        fitted.recommend(Kind::DecayedPopular, 0, K, &mut popular);
        Ok(Ranker {
            sources: Generator::fit(ds, history, cfg),
            two_tower: cfg.two_tower,
            past,
            server,
            hist,
            retrieval,
            bonus,
            popular,
            fitted,
            day,
        })
    }

    /// For each of `users`: its candidates, their top K as ranked, and the
    /// ranker's top K over the whole catalogue. Searches are batched over
    /// the chunk.
    pub fn rank(&self, users: &[u32]) -> Result<Vec<Ranked>> {
        let tt: Option<Vec<Vec<u32>>> = match &self.retrieval {
            Some(server) => Some(top_lists(
                server,
                &self.past,
                &self.hist,
                users,
                self.day,
                self.two_tower,
            )?),
            None => None,
        };
        let queries: Vec<Option<Vec<f32>>> = users
            .par_iter()
            .map(|&u| self.server.query(&self.past, &self.hist, u, self.day))
            .collect::<Result<_>>()?;
        let flat: Vec<f32> = queries.iter().flatten().flatten().copied().collect();
        let full = self.server.pool.snapshot().recommend(&flat, K, &[])?;
        let mut full = full.into_iter();
        let fulls: Vec<Option<Vec<u32>>> = queries
            .iter()
            .map(|q| {
                q.as_ref().map(|_| {
                    full.next()
                        .expect("one list per query")
                        .iter()
                        .map(|x| self.server.data_item[x.0 as usize])
                        .collect()
                })
            })
            .collect();
        Ok(users
            .par_iter()
            .enumerate()
            .map(|(k, &u)| {
                let cands: List = self
                    .sources
                    .candidates(u, tt.as_ref().map(|t| t[k].as_slice()));
                let (Some(q), Some(full)) = (&queries[k], &fulls[k]) else {
                    // No history: the candidates' own order (popularity first).
                    let mut l: Vec<u32> = cands.iter().map(|c| c.0).take(K).collect();
                    fill(&mut l, &self.popular);
                    return Ranked {
                        ranked: l,
                        full: self.popular.clone(),
                        candidates: cands,
                    };
                };
                let mut scored: Vec<(u32, f32)> = cands
                    .iter()
                    .filter_map(|&(i, _)| {
                        let p = self.server.item_of[i as usize];
                        (p != u32::MAX).then(|| {
                            let v = self.server.item_vector(p);
                            let s: f32 = v.iter().zip(q).map(|(a, b)| a * b).sum();
                            (i, s + self.bonus[i as usize])
                        })
                    })
                    .collect();
                scored.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
                let mut ranked: Vec<u32> = scored.iter().map(|s| s.0).take(K).collect();
                fill(&mut ranked, &self.popular);
                Ranked {
                    ranked,
                    full: full.clone(),
                    candidates: cands,
                }
            })
            .collect())
    }
}

/// One customer's lists.
pub struct Ranked {
    pub ranked: Vec<u32>,
    pub full: Vec<u32>,
    pub candidates: List,
}

/// What ranking the test period gives.
pub struct TestPeriod {
    pub table: Table,
    /// Each row's per-customer metrics (for `recforge compare`).
    pub per_customer: Vec<PerCustomer>,
    /// Recall of the very candidates that were ranked.
    pub candidates: crate::candidates::RecallReport,
}

/// The test-period comparison table, each row's per-customer metrics, and
/// the candidate sources' recall.
pub fn rank_test_period(
    ds: &Dataset,
    target_days: u32,
    cfg: &CandidateConfig,
    retrieval: Option<&Path>,
    ranker: &Path,
    objective: Objective,
    alpha: f64,
) -> Result<TestPeriod> {
    let split = crate::split::split(ds, crate::split::SplitKind::LastWeek, target_days)?;
    let history = split.history();
    let targets = Targets::from_rows(ds, &split.test);
    let start = split.test.iter().map(|&r| ds.day(r)).min().unwrap_or(0);
    let r = Ranker::new(
        ds, &history, start, cfg, retrieval, ranker, objective, alpha,
    )?;
    let lists = r.rank(&targets.users)?;
    let fitted = &r.fitted;
    let server = &r.server;
    let n_items = ds.items.len();
    let ids: Vec<String> = targets
        .users
        .iter()
        .map(|&u| ds.users.ids[u as usize].clone())
        .collect();
    let mut rows = Vec::new();
    let mut per = Vec::new();
    let mut add = |name: String, picks: Vec<Vec<u32>>| {
        let mut acc = Accumulator::new(K, n_items);
        for (t, l) in targets.truth.iter().zip(&picks) {
            acc.add(t, l);
        }
        let metrics: Vec<Metrics> = vec![acc.finish()];
        per.push(PerCustomer::score(
            &name,
            K,
            ids.clone(),
            &targets.truth,
            &picks,
        ));
        rows.push(Row { name, metrics });
    };
    let name = server.bundle.manifest.name.clone();
    add(
        format!("candidates ranked by {name} ({objective:?})"),
        lists.iter().map(|l| l.ranked.clone()).collect(),
    );
    add(
        format!("{name} over the whole catalogue"),
        lists.iter().map(|l| l.full.clone()).collect(),
    );
    for kind in Kind::ALL {
        let picks = targets
            .users
            .iter()
            .map(|&u| {
                let mut out = Vec::new();
                fitted.recommend(kind, u, K, &mut out);
                out
            })
            .collect();
        add(kind.name().to_string(), picks);
    }
    let table = Table {
        title: format!("Ranking candidates on {}", ds.meta.name),
        dataset: ds.meta.name.clone(),
        protocol: format!(
            "Last-week split: everything before the last {target_days} days is history (sources fitted on it, \
customers served as of the period's first day); {} buyers in the period. Candidates: `{}`{}. Objective {objective:?}{}. \
Customers without history get the candidates' own order (popularity first).",
            targets.len(),
            serde_json::to_string(cfg).expect("config serialises"),
            retrieval
                .map(|b| format!(", two-tower source from `{}`", b.display()))
                .unwrap_or_default(),
            if objective == Objective::Revenue {
                format!(" (score + {alpha} · ln price)")
            } else {
                String::new()
            },
        ),
        rows,
        has_price: ds.meta.has_price,
        notes: String::new(),
        extra: serde_json::Value::Null,
    };
    let cands: Vec<List> = lists.into_iter().map(|l| l.candidates).collect();
    Ok(TestPeriod {
        table,
        per_customer: per,
        candidates: crate::candidates::recall(&targets, &cands),
    })
}

/// Pads `list` to K with `popular` items it lacks.
fn fill(list: &mut Vec<u32>, popular: &[u32]) {
    for &p in popular {
        if list.len() >= K {
            break;
        }
        if !list.contains(&p) {
            list.push(p);
        }
    }
}

/// Each customer's top `k` (dataset items) from a served bundle as of
/// `day`; empty for a customer without history.
pub fn top_lists(
    server: &Server,
    past: &Dataset,
    hist: &Histories,
    users: &[u32],
    day: i64,
    k: usize,
) -> Result<Vec<Vec<u32>>> {
    let queries = server.queries(past, hist, users, day)?;
    let flat: Vec<f32> = queries.iter().flatten().flatten().copied().collect();
    let mut found = server.pool.snapshot().recommend(&flat, k, &[])?.into_iter();
    Ok(queries
        .iter()
        .map(|q| match q {
            Some(_) => found
                .next()
                .expect("one list per query")
                .iter()
                .map(|x| server.data_item[x.0 as usize])
                .collect(),
            None => vec![],
        })
        .collect())
}

/// Each target customer's two-tower top `k` (dataset items), served from
/// `bundle` as of `day` on the rows of `past`.
pub fn two_tower_lists(
    bundle: &Path,
    past: &Dataset,
    targets: &Targets,
    day: i64,
    k: usize,
) -> Result<Vec<Vec<u32>>> {
    let server = Server::new(bundle, past)?;
    let hist = Histories::of_all(past);
    top_lists(&server, past, &hist, &targets.users, day, k)
}
