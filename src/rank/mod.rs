//! Ranking candidates with an exported sequential ranker, on the test
//! period of the last-week split: the union of the candidate sources is
//! ordered by the ranker's score, or by the blender ([`blend`]) that
//! weighs that score with the candidate's sources and simple features (or,
//! for the revenue objective, by expected value), beside the ranker alone
//! over the whole catalogue and every baseline, all on the same customers.
//! The sources are in [`candidates`].
//!
//! The ranker's scores are softmax logits over the catalogue, so
//! exp(score) is proportional to the purchase probability, and the
//! expected revenue of showing an item is proportional to
//! exp(score) · price^alpha: ranking by score + alpha · ln(price) orders by
//! it without normalising.

pub mod blend;
pub mod candidates;

use std::path::Path;

use rayon::prelude::*;

use crate::data::Dataset;
use crate::data::history::History;
use crate::error::{Error, Result};
use crate::eval::baselines::{self, Fitted, Kind};
use crate::eval::compare::PerCustomer;
use crate::eval::report::Table;
use crate::eval::{Accumulator, Metrics, Targets};
use crate::export::serve::Server;
use crate::rank::blend::{BlendConfig, Blender, Feature, Row};
use crate::rank::candidates::{CandidateConfig, Generator, List, Source};
use crate::util::rng::Rng;
use recforge_infer::engine::Model;

/// What the ranking maximises (shared with the HTTP server).
pub use recforge_infer::Objective;

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

/// Everything needed to rank customers' candidates as of one day: the
/// candidate sources fitted on the history, the two-tower source and the
/// ranker served from bundles on the rows before that day.
pub struct Ranker {
    past: Dataset,
    server: Server,
    hist: History,
    sources: Generator,
    /// The two-tower server for the two-tower source (same history).
    retrieval: Option<Server>,
    two_tower: usize,
    /// ln(price)·alpha per item for the revenue objective (0 for purchase).
    bonus: Vec<f32>,
    /// Per item, for the blender's features: ln of its mean price (the
    /// mean over priced items where it has none), ln(1 + sales in the
    /// history's last 7 days), and its first day on sale (None: never sold).
    ln_price: Vec<f32>,
    recent_sales: Vec<f32>,
    first_day: Vec<Option<i64>>,
    /// The second stage; None orders candidates by the ranker's score.
    pub blender: Option<Blender>,
    pub popular: Vec<u32>,
    pub fitted: Fitted,
    day: i64,
}

impl Ranker {
    /// Serves as of `day`; `history` (time order) are the rows before it.
    pub fn new(ds: &Dataset, history: &[usize], day: i64, set: &RankSettings) -> Result<Self> {
        let (cfg, retrieval, ranker) = (set.candidates, set.retrieval, set.ranker);
        let (objective, alpha) = (set.objective, set.alpha);
        let past = crate::data::split::before(ds, day);
        let server = Server::new(ranker, &past)?;
        if !matches!(server.engine.model, Model::SasRec(_)) {
            return Err(Error::Config(format!(
                "{}: the ranker must be a sequential-ranker bundle",
                ranker.display()
            )));
        }
        let hist = History::of_all(&past);
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
        let ln_price: Vec<f32> = prices
            .iter()
            .map(|&p| (if p > 0.0 { p } else { fallback }).ln() as f32)
            .collect();
        let bonus = ln_price
            .iter()
            .map(|&l| objective.bonus(alpha, f64::from(l)))
            .collect();
        let mut sales = vec![0u32; ds.items.len()];
        let mut first_day = vec![None; ds.items.len()];
        for &r in history {
            let (i, d) = (ds.inter.item[r] as usize, ds.day(r));
            if d >= day - 7 {
                sales[i] += 1;
            }
            if first_day[i].is_none_or(|f| d < f) {
                first_day[i] = Some(d);
            }
        }
        let recent_sales = sales.iter().map(|&c| (c as f32).ln_1p()).collect();
        let fitted = Fitted::fit(ds, history, baselines::Params::default());
        let mut popular = Vec::new();
        fitted.recommend(Kind::DecayedPopular, 0, K, &mut popular);
        Ok(Ranker {
            ln_price,
            recent_sales,
            first_day,
            blender: None,
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

    /// The two-tower lists and ranker queries of a chunk of customers.
    fn encode(&self, users: &[u32]) -> Result<Encoded> {
        let tt = match &self.retrieval {
            Some(server) => Some(crate::export::serve::top_lists(
                server,
                &self.past,
                &self.hist,
                users,
                self.day,
                self.two_tower,
            )?),
            None => None,
        };
        let queries = self
            .server
            .queries(&self.past, &self.hist, users, self.day)?;
        Ok(Encoded { tt, queries })
    }

    /// One customer's candidates that the ranker can score, each with its
    /// ranker score and blender features.
    fn candidate_rows(
        &self,
        u: u32,
        cands: &List,
        q: &[f32],
        tt: Option<&[u32]>,
    ) -> Vec<(u32, Row)> {
        let mut out: Vec<(u32, Row)> = cands
            .iter()
            .filter_map(|&(i, sources)| {
                // Articles the server does not hold cannot be served.
                let v = self.server.item_vector(self.server.item_of[i as usize])?;
                let score: f32 = v.iter().zip(q).map(|(a, b)| a * b).sum();
                let mut r = [0.0f32; blend::N];
                r[Feature::RankerScore.slot()] = score;
                for source in Source::ALL {
                    r[Feature::flag(source).slot()] = f32::from(u8::from(sources.contains(source)));
                }
                r[Feature::TwoTowerReciprocalRank.slot()] = tt
                    .and_then(|l| l.iter().position(|&x| x == i))
                    .map_or(0.0, |pos| 1.0 / (pos + 1) as f32);
                Some((i, r))
            })
            .collect();
        // The softmax restricted to the candidates: exp(score) is
        // proportional to the purchase probability over the catalogue.
        let score = Feature::RankerScore.slot();
        let max = out
            .iter()
            .map(|c| c.1[score])
            .fold(f32::NEG_INFINITY, f32::max);
        let lse = max
            + out
                .iter()
                .map(|c| (c.1[score] - max).exp())
                .sum::<f32>()
                .ln();
        // The customer's own purchases: count and last day per item.
        let (own, own_days) = self.fitted.history(u);
        let mut mine: rustc_hash::FxHashMap<u32, (u32, i64)> = Default::default();
        let mut price_sum = 0.0f32;
        for (&i, &d) in own.iter().zip(own_days) {
            let e = mine.entry(i).or_insert((0, d));
            e.0 += 1;
            e.1 = e.1.max(d);
            price_sum += self.ln_price[i as usize];
        }
        let mean_ln_price = if own.is_empty() {
            None
        } else {
            Some(price_sum / own.len() as f32)
        };
        for (i, r) in &mut out {
            let i = *i as usize;
            r[Feature::RankerLogSoftmax.slot()] = r[score] - lse;
            if let Some(&(n, last)) = mine.get(&(i as u32)) {
                r[Feature::OwnPurchases.slot()] = (n as f32).ln_1p();
                r[Feature::OwnRecency.slot()] = 0.5f32.powf((self.day - last) as f32 / 14.0);
            }
            r[Feature::RecentSales.slot()] = self.recent_sales[i];
            r[Feature::RelativeLnPrice.slot()] =
                mean_ln_price.map_or(0.0, |m| self.ln_price[i] - m);
            r[Feature::DaysOnSale.slot()] =
                self.first_day[i].map_or(0.0, |f| ((self.day - f).max(0) as f32).ln_1p());
        }
        out
    }

    /// For each of `users`: its candidates and their top K as ranked. With
    /// `compare` (the test-period report) also the top K by the ranker's
    /// score alone and by the ranker over the whole catalogue; a
    /// submission needs neither, so neither is computed for it (they stay
    /// empty). Queries are encoded as a stack and searches batched over
    /// the chunk.
    // One pass per chunk of customers: encode, retrieve, build candidate
    // rows and order them; splitting it would pass the chunk's buffers around.
    pub fn rank(&self, users: &[u32], compare: bool) -> Result<Vec<Ranked>> {
        let Encoded { tt, queries } = self.encode(users)?;
        let fulls: Option<Vec<Option<Vec<u32>>>> = if compare {
            let flat: Vec<f32> = queries.iter().flatten().flatten().copied().collect();
            let mut found = self
                .server
                .engine
                .pool
                .snapshot()
                .recommend(&flat, K, &[])?
                .into_iter();
            Some(
                queries
                    .iter()
                    .map(|q| {
                        q.as_ref().map(|_| {
                            found
                                .next()
                                .expect("one list per query")
                                .iter()
                                .map(|x| self.server.data_item[x.0 as usize])
                                .collect()
                        })
                    })
                    .collect(),
            )
        } else {
            None
        };
        Ok(users
            .par_iter()
            .enumerate()
            .map(|(k, &u)| {
                let tt_k = tt.as_ref().map(|t| t[k].as_slice());
                let cands: List = self.sources.candidates(u, tt_k);
                let Some(q) = &queries[k] else {
                    // No history: the candidates' own order (popularity first).
                    let mut l: Vec<u32> = cands.iter().map(|c| c.0).take(K).collect();
                    fill(&mut l, &self.popular);
                    return Ranked {
                        by_score: if compare { l.clone() } else { Vec::new() },
                        ranked: l,
                        full: if compare {
                            self.popular.clone()
                        } else {
                            Vec::new()
                        },
                        candidates: cands,
                    };
                };
                let rows = self.candidate_rows(u, &cands, q, tt_k);
                let order = |value: &dyn Fn(&Row) -> f64| {
                    let mut scored: Vec<(u32, f64)> = rows
                        .iter()
                        .map(|(i, r)| (*i, value(r) + f64::from(self.bonus[*i as usize])))
                        .collect();
                    scored.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
                    let mut top: Vec<u32> = scored.iter().map(|s| s.0).take(K).collect();
                    fill(&mut top, &self.popular);
                    top
                };
                let score = |r: &Row| f64::from(r[Feature::RankerScore.slot()]);
                let ranked = match &self.blender {
                    Some(b) => order(&|r: &Row| b.log_prob(r)),
                    None => order(&score),
                };
                let by_score = match (compare, &self.blender) {
                    (false, _) => Vec::new(),
                    (true, None) => ranked.clone(),
                    (true, Some(_)) => order(&score),
                };
                let full = fulls
                    .as_ref()
                    .and_then(|f| f[k].clone())
                    .unwrap_or_default();
                Ranked {
                    ranked,
                    by_score,
                    full,
                    candidates: cands,
                }
            })
            .collect())
    }

    /// Fits the blender on `targets` (purchases from this ranker's day on):
    /// each customer's scorable candidates, labelled bought or not, with
    /// every positive and up to `cfg.negatives` negatives drawn per
    /// customer from a stream of `seed`.
    pub fn fit_blender(&self, targets: &Targets, cfg: &BlendConfig, seed: u64) -> Result<Blender> {
        let mut x = Vec::new();
        let mut y = Vec::new();
        let (mut neg_all, mut neg_kept) = (0usize, 0usize);
        let per: Vec<(u32, &crate::eval::Truth)> =
            targets.users.iter().copied().zip(&targets.truth).collect();
        for (c, chunk) in per.chunks(8192).enumerate() {
            let users: Vec<u32> = chunk.iter().map(|p| p.0).collect();
            let Encoded { tt, queries } = self.encode(&users)?;
            let parts: Vec<(Vec<Row>, Vec<bool>, usize)> = chunk
                .par_iter()
                .enumerate()
                .filter_map(|(k, &(u, truth))| {
                    let q = queries[k].as_ref()?;
                    let tt_k = tt.as_ref().map(|t| t[k].as_slice());
                    let cands = self.sources.candidates(u, tt_k);
                    let rows: Vec<(Row, bool)> = self
                        .candidate_rows(u, &cands, q, tt_k)
                        .into_iter()
                        .map(|(i, r)| (r, truth.items.binary_search(&i).is_ok()))
                        .collect();
                    let mut rng = Rng::stream(seed, BLEND ^ (((c * 8192 + k) as u64) << 8));
                    Some(blend::sample(&rows, cfg.negatives, &mut rng))
                })
                .collect();
            for (px, py, n) in parts {
                neg_kept += py.iter().filter(|&&b| !b).count();
                neg_all += n;
                x.extend(px);
                y.extend(py);
            }
        }
        let rate = if neg_all > 0 {
            neg_kept as f64 / neg_all as f64
        } else {
            1.0
        };
        Blender::fit(&x, &y, rate, cfg.l2)
    }
}

/// Stream id of the blender's negative sampling.
const BLEND: u64 = 0x0062_6c65_6e64;

struct Encoded {
    tt: Option<Vec<Vec<u32>>>,
    queries: Vec<Option<Vec<f32>>>,
}

/// One customer's lists.
pub struct Ranked {
    /// By the blender where there is one, else by the ranker's score.
    pub ranked: Vec<u32>,
    /// By the ranker's score (plus the revenue term) alone; with
    /// `compare` only.
    pub by_score: Vec<u32>,
    /// The ranker's top K over the whole catalogue; with `compare` only.
    pub full: Vec<u32>,
    pub candidates: List,
}

/// What ranking the test period gives.
pub struct TestPeriod {
    pub table: Table,
    /// Each row's per-customer metrics (for `recforge compare`).
    pub per_customer: Vec<PerCustomer>,
    /// Recall of the very candidates that were ranked.
    pub candidates: crate::rank::candidates::RecallReport,
    /// The second stage, fitted on the week before the test week.
    pub blender: Option<Blender>,
    /// What each row of `table` (and each of `per_customer`) is, in order.
    pub systems: Vec<System>,
}

/// A system the test-period report scores.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum System {
    /// Candidates ordered by the second stage (when it was fitted).
    Blend,
    /// Candidates ordered by the ranker's score alone.
    Score,
    /// The ranker over the whole catalogue, no candidates.
    WholeCatalogue,
    Baseline(Kind),
}

impl TestPeriod {
    /// The row of `system`, if the report has it.
    pub fn row(&self, system: System) -> Option<usize> {
        self.systems.iter().position(|&s| s == system)
    }

    /// The row of what is served: the blend when fitted, else the score.
    pub fn served(&self) -> usize {
        self.row(System::Blend)
            .or_else(|| self.row(System::Score))
            .expect("the report always has the score row")
    }

    /// The baseline row with the best MAP@12 (on ties, the later row).
    pub fn best_baseline(&self) -> usize {
        let map = |r: usize| self.table.rows[r].metrics[0].map;
        let baselines =
            (0..self.systems.len()).filter(|&r| matches!(self.systems[r], System::Baseline(_)));
        baselines
            .max_by(|&a, &b| map(a).total_cmp(&map(b)))
            .expect("the report always has the baselines")
    }
}

/// How candidates are made and ordered.
pub struct RankSettings<'a> {
    pub candidates: &'a CandidateConfig,
    /// The two-tower bundle for the two-tower source.
    pub retrieval: Option<&'a Path>,
    /// The sequential ranker's bundle.
    pub ranker: &'a Path,
    pub objective: Objective,
    pub alpha: f64,
    /// Fit the blender (with this seed for its negative sampling); read by
    /// [`rank_test_period`], not by [`Ranker::new`].
    pub blend: Option<(&'a BlendConfig, u64)>,
}

/// The blender fitted on the validation week, as of its first day on the
/// training rows; None (with a note on stderr) when the week has too little
/// to fit on, so the ranker's score alone orders the candidates.
fn validation_blender(
    ds: &Dataset,
    split: &crate::data::split::Split,
    set: &RankSettings,
    bc: &BlendConfig,
    seed: u64,
) -> Result<Option<Blender>> {
    let start = split.valid.iter().map(|&r| ds.day(r)).min().unwrap_or(0);
    let r = Ranker::new(ds, &split.train, start, set)?;
    match r.fit_blender(&Targets::from_rows(ds, &split.valid), bc, seed) {
        Ok(b) => Ok(Some(b)),
        // Too little data to fit (no bought candidate in the week).
        Err(Error::Training(why)) => {
            eprintln!("blender not fitted, candidates ordered by the ranker's score: {why}");
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// The test-period comparison table, each row's per-customer metrics, and
/// the candidate sources' recall. With a blender configured, it is fitted
/// on the validation week (history before it) and orders the test week.
// Mostly the list of rows the report compares (blend, score, whole
// catalogue, each baseline), each one `add` call.
pub fn rank_test_period(ds: &Dataset, target_days: u32, set: &RankSettings) -> Result<TestPeriod> {
    let split =
        crate::data::split::split(ds, crate::data::split::SplitKind::LastWeek, target_days)?;
    let blender = match set.blend {
        Some((bc, seed)) if bc.enabled => validation_blender(ds, &split, set, bc, seed)?,
        _ => None,
    };
    let history = split.history();
    let targets = Targets::from_rows(ds, &split.test);
    let start = split.test.iter().map(|&r| ds.day(r)).min().unwrap_or(0);
    let mut r = Ranker::new(ds, &history, start, set)?;
    r.blender = blender.clone();
    let objective = set.objective;
    let lists = r.rank(&targets.users, true)?;
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
    let mut systems = Vec::new();
    let mut add = |system: System, name: String, picks: Vec<Vec<u32>>| {
        systems.push(system);
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
        rows.push(crate::eval::report::Row { name, metrics });
    };
    let name = server.engine.bundle.manifest.name.clone();
    if blender.is_some() {
        add(
            System::Blend,
            format!("candidates ranked by {name} + candidate features ({objective:?})"),
            lists.iter().map(|l| l.ranked.clone()).collect(),
        );
    }
    add(
        System::Score,
        format!("candidates ranked by {name} score ({objective:?})"),
        lists.iter().map(|l| l.by_score.clone()).collect(),
    );
    add(
        System::WholeCatalogue,
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
        add(System::Baseline(kind), kind.name().to_string(), picks);
    }
    let table = Table {
        title: format!("Ranking candidates on {}", ds.meta.name),
        dataset: ds.meta.name.clone(),
        protocol: protocol(set, target_days, targets.len(), blender.is_some()),
        rows,
        has_price: ds.meta.has_price,
        notes: String::new(),
        extra: serde_json::Value::Null,
    };
    let cands: Vec<List> = lists.into_iter().map(|l| l.candidates).collect();
    Ok(TestPeriod {
        table,
        per_customer: per,
        candidates: crate::rank::candidates::recall(&targets, &cands),
        blender,
        systems,
    })
}

/// How the test-period table was made, for its protocol line.
fn protocol(set: &RankSettings, target_days: u32, buyers: usize, blended: bool) -> String {
    let (objective, alpha) = (set.objective, set.alpha);
    format!(
        "Last-week split: everything before the last {target_days} days is history (sources fitted on it, \
customers served as of the period's first day); {buyers} buyers in the period. Candidates: `{}`{}. Objective {objective:?}{}. \
Customers without history get the candidates' own order (popularity first).",
        serde_json::to_string(set.candidates).expect("config serialises"),
        set.retrieval
            .map(|b| format!(", two-tower source from `{}`", b.display()))
            .unwrap_or_default(),
        if objective == Objective::Revenue {
            format!(" (ln P(purchase) + {alpha} · ln price)")
        } else {
            String::new()
        },
    ) + if blended {
        " The blend row orders candidates by a logistic regression on the ranker's score and the candidate \
features, fitted on the week before (coefficients below); the score row by the ranker's score alone."
    } else {
        ""
    }
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
