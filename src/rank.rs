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

/// The test-period comparison table, and each row's per-customer metrics
/// (for `recforge compare`).
pub fn rank_test_period(
    ds: &Dataset,
    target_days: u32,
    cfg: &CandidateConfig,
    retrieval: Option<&Path>,
    ranker: &Path,
    objective: Objective,
    alpha: f64,
) -> Result<(Table, Vec<PerCustomer>)> {
    let split = crate::split::split(ds, crate::split::SplitKind::LastWeek, target_days)?;
    let history = split.history();
    let targets = Targets::from_rows(ds, &split.test);
    let start = split.test.iter().map(|&r| ds.day(r)).min().unwrap_or(0);
    let past = before(ds, start);
    let server = Server::new(ranker, &past)?;
    if !matches!(server.model, Model::SasRec(_)) {
        return Err(Error::Config(format!(
            "{}: the ranker must be a sequential-ranker bundle",
            ranker.display()
        )));
    }
    let hist = Histories::build(&past);
    let sources = Generator::fit(ds, &history, cfg);
    let tt = match retrieval {
        Some(b) if cfg.two_tower > 0 => {
            Some(two_tower_lists(b, &past, &targets, start, cfg.two_tower)?)
        }
        _ => None,
    };
    let prices = mean_prices(ds, &history);
    let known: Vec<f64> = prices.iter().copied().filter(|&p| p > 0.0).collect();
    let fallback_price = if known.is_empty() {
        1.0
    } else {
        known.iter().sum::<f64>() / known.len() as f64
    };
    let bonus = |item: u32| -> f32 {
        match objective {
            Objective::Purchase => 0.0,
            Objective::Revenue => {
                let p = prices[item as usize];
                (alpha * if p > 0.0 { p } else { fallback_price }.ln()) as f32
            }
        }
    };
    let fitted = Fitted::fit(ds, &history, baseline::Params::default());
    let mut popular = Vec::new();
    fitted.recommend(Kind::DecayedPopular, 0, K, &mut popular);
    let snap = server.pool.snapshot();
    // (ranked candidates, ranker over the whole catalogue) per customer.
    let lists: Vec<(Vec<u32>, Vec<u32>)> = targets
        .users
        .par_iter()
        .enumerate()
        .map(|(k, &u)| -> Result<(Vec<u32>, Vec<u32>)> {
            let cands: List = sources.candidates(u, tt.as_ref().map(|t| t[k].as_slice()));
            let Some(q) = server.query(&past, &hist, u, start)? else {
                // No history: the candidates' own order (popularity first).
                let mut l: Vec<u32> = cands.iter().map(|c| c.0).take(K).collect();
                fill(&mut l, &popular);
                return Ok((l, popular.clone()));
            };
            let mut scored: Vec<(u32, f32)> = cands
                .iter()
                .filter_map(|&(i, _)| {
                    let p = server.item_of[i as usize];
                    (p != u32::MAX).then(|| {
                        let v = server.item_vector(p);
                        (
                            i,
                            v.iter().zip(&q).map(|(a, b)| a * b).sum::<f32>() + bonus(i),
                        )
                    })
                })
                .collect();
            scored.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
            let mut ranked: Vec<u32> = scored.iter().map(|s| s.0).take(K).collect();
            fill(&mut ranked, &popular);
            let full: Vec<u32> = snap.recommend(&q, K, &[])?[0]
                .iter()
                .map(|x| server.data_item[x.0 as usize])
                .collect();
            Ok((ranked, full))
        })
        .collect::<Result<_>>()?;
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
        lists.iter().map(|l| l.0.clone()).collect(),
    );
    add(
        format!("{name} over the whole catalogue"),
        lists.iter().map(|l| l.1.clone()).collect(),
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
    Ok((table, per))
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
    let hist = Histories::build(past);
    let snap = server.pool.snapshot();
    targets
        .users
        .par_iter()
        .map(|&u| -> Result<Vec<u32>> {
            Ok(match server.query(past, &hist, u, day)? {
                Some(q) => snap.recommend(&q, k, &[])?[0]
                    .iter()
                    .map(|x| server.data_item[x.0 as usize])
                    .collect(),
                None => vec![],
            })
        })
        .collect()
}
