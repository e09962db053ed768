//! The whole ranking system on one day: candidate sources → features
//! (with the sequential ranker's and the two-tower model's scores) →
//! second stage → top K, over a fixed list of articles whose index is the
//! item id every source and table uses.
//!
//! The trainer's evaluation prepares its customers through
//! [`RankingEngine::prepare`] and orders them with each scorer it
//! compares; a ranking bundle loads into the same engine with its served
//! scorer, so what is evaluated is what is served.

use std::sync::Arc;

use rayon::prelude::*;

use super::CustomerHistory;
use super::features::{self, Context, ModelScores, Row};
use super::second::{Ordering, Scorer};
use super::sources::{CandidateConfig, CandidateSources, List, ModelLists};
use crate::engine::{Catalogue, Customer, Engine, Model};
use crate::{Bundle, PoolSnapshot, Result};

/// A model bundle served on a list of articles: its engine, and the
/// translation between the list's indices (item ids) and its pool ids.
/// Clones share the engine (its weights and its live pool): a clone that
/// takes articles added to the pool serves beside the original.
#[derive(Clone)]
pub struct ArticleEngine {
    pub engine: Arc<Engine>,
    /// Pool id of each item (`u32::MAX` = not servable: an empty id).
    pub item_of: Vec<u32>,
    /// Item of each pool id (`u32::MAX` for none).
    pub data_item: Vec<u32>,
    /// Articles the bundle never saw, embedded from their attributes.
    pub new_articles: usize,
    /// The vectors of items added while serving (their pool's, as they
    /// were added): the load-time table has no row for them.
    added: std::collections::HashMap<u32, Vec<f32>>,
    /// How many items were appended after the list it was built on.
    added_count: usize,
}

impl ArticleEngine {
    /// `bundle` serving the articles `ids` (only those): the bundle's own
    /// keep their vectors, the others are embedded from `attribute(item,
    /// feature name)`.
    pub fn new<'a>(
        bundle: Bundle,
        ids: &'a [String],
        attribute: &'a dyn Fn(usize, &str) -> Option<&'a str>,
    ) -> Result<Self> {
        let n_bundle = bundle.manifest.items.ids.len();
        let (engine, item_of) = Engine::new(bundle, Catalogue::Articles { ids, attribute })?;
        let new_articles = item_of
            .iter()
            .filter(|&&p| p != u32::MAX && p as usize >= n_bundle)
            .count();
        let mut data_item = vec![u32::MAX; n_bundle + new_articles];
        for (di, &p) in item_of.iter().enumerate() {
            if p != u32::MAX {
                data_item[p as usize] = di as u32;
            }
        }
        Ok(ArticleEngine {
            engine: Arc::new(engine),
            item_of,
            data_item,
            new_articles,
            added: Default::default(),
            added_count: 0,
        })
    }

    /// Items of the list it was built on (those after are added ones).
    pub fn loaded_items(&self) -> usize {
        self.item_of.len() - self.added_count
    }

    /// Items appended to the list (ids `item_of.len()..`), each with its
    /// pool id in this engine (None: not in this engine's pool); their
    /// vectors are read from the pool as it is now.
    pub fn add_items(&mut self, pool_ids: &[Option<u32>]) {
        let snap = self.engine.pool.snapshot();
        self.added_count += pool_ids.len();
        for p in pool_ids {
            let item = self.item_of.len() as u32;
            self.item_of.push(p.unwrap_or(u32::MAX));
            if let Some(p) = *p {
                if let Some(v) = snap.vector_of(p) {
                    self.added.insert(item, v.to_vec());
                }
                let p = p as usize;
                if self.data_item.len() <= p {
                    self.data_item.resize(p + 1, u32::MAX);
                }
                self.data_item[p] = item;
            }
        }
    }

    /// Re-reads the pool vectors of items added while serving (after their
    /// articles were added again with other attributes).
    pub fn refresh_added(&mut self, items: &[u32]) {
        let snap = self.engine.pool.snapshot();
        for &item in items {
            let p = self.item_of.get(item as usize).copied().unwrap_or(u32::MAX);
            if let (Some(slot), Some(v)) = (self.added.get_mut(&item), snap.vector_of(p)) {
                *slot = v.to_vec();
            }
        }
    }

    /// The load-time vector of `item` (item representation or item-tower
    /// vector), or its pool vector for one added while serving; None for
    /// an item it does not serve.
    pub fn vector(&self, item: u32) -> Option<&[f32]> {
        let p = *self.item_of.get(item as usize)?;
        if p == u32::MAX {
            return None;
        }
        self.engine
            .item_vector(p)
            .or_else(|| self.added.get(&item).map(Vec::as_slice))
    }

    /// Whether `item` is in this engine's pool and sold now, in `snap`.
    pub fn sells(&self, snap: &PoolSnapshot, item: u32) -> bool {
        self.item_of
            .get(item as usize)
            .is_some_and(|&p| p != u32::MAX && snap.is_available(p))
    }

    /// The top `k` available items for each query (empty where there is
    /// none), searched as one batch.
    pub fn lists(&self, queries: &[Option<Vec<f32>>], k: usize) -> Result<Vec<Vec<u32>>> {
        if k == 0 {
            return Ok(vec![Vec::new(); queries.len()]);
        }
        let flat: Vec<f32> = queries.iter().flatten().flatten().copied().collect();
        let mut found = self
            .engine
            .pool
            .snapshot()
            .recommend(&flat, k, &[])?
            .into_iter();
        Ok(queries
            .iter()
            .map(|q| match q {
                // Articles added to the pool since load have no item id.
                Some(_) => found
                    .next()
                    .map(|l| {
                        l.iter()
                            .filter_map(|x| self.data_item.get(x.0 as usize).copied())
                            .filter(|&i| i != u32::MAX)
                            .collect()
                    })
                    .unwrap_or_default(),
                None => Vec::new(),
            })
            .collect())
    }

    /// The query of each customer, on all cores: a sequential ranker
    /// encodes 64 customers per engine call (one stacked pass), the
    /// two-tower model one per task. `day` is the day served (the
    /// two-tower pooling weighs purchases by their age).
    pub fn queries(&self, customers: &[RankCustomer], day: i64) -> Result<Vec<Option<Vec<f32>>>> {
        let per_call = match self.engine.model {
            Model::SasRec(_) => 64,
            Model::TwoTower(_) => 1,
        };
        let chunks: Vec<Vec<Option<Vec<f32>>>> = customers
            .par_chunks(per_call)
            .map(|chunk| {
                let inputs: Vec<Inputs> = chunk.iter().map(|c| self.inputs(c, day)).collect();
                let cs: Vec<Customer> = inputs.iter().map(Inputs::customer).collect();
                self.engine.queries(&cs)
            })
            .collect::<std::result::Result<_, _>>()?;
        Ok(chunks.into_iter().flatten().collect())
    }

    /// The query of one customer served on `day`; None for one without
    /// purchases (cold start) or none the model knows.
    pub fn query(&self, c: &RankCustomer, day: i64) -> Result<Option<Vec<f32>>> {
        if c.history.items.is_empty() {
            return Ok(None);
        }
        let inputs = self.inputs(c, day);
        self.engine.query(&inputs.customer())
    }

    /// The engine's inputs for a customer served on `day`: purchases as
    /// pool ids, their age in days and the attribute codes (the last two
    /// for the two-tower model only).
    fn inputs(&self, c: &RankCustomer, day: i64) -> Inputs {
        let (items, days) = (c.history.items, c.history.days);
        let pool_ids = |items: &[u32]| {
            items
                .iter()
                .map(|&i| self.item_of.get(i as usize).copied().unwrap_or(u32::MAX))
                .collect()
        };
        match &self.engine.model {
            Model::SasRec(_) => Inputs {
                history: pool_ids(items),
                days_ago: Vec::new(),
                codes: Vec::new(),
            },
            // The tower pools the last `history_len` purchases: the older
            // ones need not be passed.
            Model::TwoTower(t) => {
                let from = items.len().saturating_sub(t.spec.history_len.max(1));
                Inputs {
                    history: pool_ids(&items[from..]),
                    days_ago: days[from..].iter().map(|&x| (day - x) as f64).collect(),
                    codes: c.codes.to_vec(),
                }
            }
        }
    }
}

/// One customer's engine inputs, owned.
struct Inputs {
    history: Vec<u32>,
    days_ago: Vec<f64>,
    codes: Vec<u32>,
}

impl Inputs {
    fn customer(&self) -> Customer<'_> {
        Customer {
            history: &self.history,
            days_ago: &self.days_ago,
            codes: &self.codes,
        }
    }
}

/// A customer as the ranking system serves them.
#[derive(Debug, Clone, Copy)]
pub struct RankCustomer<'a> {
    /// Purchases before the day, as item ids.
    pub history: CustomerHistory<'a>,
    /// The two-tower bundle's code of each customer feature (empty
    /// without a two-tower model).
    pub codes: &'a [u32],
}

/// One customer's candidates with their features.
pub struct Prepared {
    pub candidates: List,
    /// One per candidate, aligned.
    pub rows: Vec<Row>,
    /// Whether the sequential ranker had a query (the customer has
    /// history it knows).
    pub has_query: bool,
    /// The sequential ranker's top K over the whole catalogue (when asked
    /// for).
    pub full: Vec<u32>,
}

/// An article added to a fitted ranking system while it serves.
#[derive(Debug, Clone, Copy)]
pub struct AddedItem {
    /// Its pool id in the sequential ranker's engine and the two-tower
    /// model's (None where that pool does not hold it).
    pub ranker: Option<u32>,
    pub retrieval: Option<u32>,
    /// Its codes of each [`super::Attr`], by index (0 = unknown).
    pub attrs: [u32; super::Attr::ALL.len()],
}

/// The ranking system fitted as of one day.
#[derive(Clone)]
pub struct RankingEngine {
    /// The sequential ranker (SASRec source and score features).
    pub ranker: ArticleEngine,
    /// The two-tower model (source and cosine features).
    pub retrieval: Option<ArticleEngine>,
    pub sources: CandidateSources,
    pub context: Context,
    pub ordering: Ordering,
}

impl RankingEngine {
    /// The day served.
    pub fn day(&self) -> i64 {
        self.context.day()
    }

    /// Articles added since fitting, as the next item ids, in order: they
    /// enter through the two-tower source (their vectors are in its pool),
    /// the same-product source and, once in a history, repurchase; their
    /// features read as a never-sold article's.
    pub fn add_unsold(&mut self, items: &[AddedItem]) {
        self.ranker
            .add_items(&items.iter().map(|a| a.ranker).collect::<Vec<_>>());
        if let Some(r) = &mut self.retrieval {
            r.add_items(&items.iter().map(|a| a.retrieval).collect::<Vec<_>>());
        }
        let attrs: Vec<[u32; super::Attr::ALL.len()]> = items.iter().map(|a| a.attrs).collect();
        self.context.add_unsold(&attrs);
        let product = super::Attr::ProductCode.index();
        self.sources
            .add_unsold(&attrs.iter().map(|a| a[product]).collect::<Vec<_>>());
        self.ordering.add_unsold(items.len());
    }

    /// The candidates and features of `customers`; with `full` > 0, also
    /// the sequential ranker's top `full` over the whole catalogue.
    /// Candidates the live pool no longer sells are dropped.
    pub fn prepare(&self, customers: &[RankCustomer], full: usize) -> Result<Vec<Prepared>> {
        self.prepare_sized(customers, full, self.sources.config())
    }

    /// [`prepare`](Self::prepare) with other candidate sizes (a client's;
    /// each at most the fitted one, see `CandidateConfig::within`).
    pub fn prepare_sized(
        &self,
        customers: &[RankCustomer],
        full: usize,
        cfg: &CandidateConfig,
    ) -> Result<Vec<Prepared>> {
        let day = self.day();
        let queries = self.ranker.queries(customers, day)?;
        let sasrec = self.ranker.lists(&queries, cfg.sasrec.max(full))?;
        let (tt_queries, tt_lists) = match &self.retrieval {
            Some(s) => {
                let q = s.queries(customers, day)?;
                let l = s.lists(&q, cfg.two_tower)?;
                (Some(q), Some(l))
            }
            None => (None, None),
        };
        let snap = self.ranker.engine.pool.snapshot();
        Ok(customers
            .par_iter()
            .enumerate()
            .map(|(k, c)| {
                let own_sasrec = &sasrec[k][..sasrec[k].len().min(cfg.sasrec)];
                let models = ModelLists {
                    two_tower: tt_lists.as_ref().map(|l| l[k].as_slice()),
                    sasrec: Some(own_sasrec),
                };
                let mut candidates = self.sources.candidates_sized(&c.history, models, cfg);
                candidates.retain(|cand| self.ranker.sells(&snap, cand.item));
                let seeds = self.sources.seeds(c.history.items);
                let view = self
                    .context
                    .customer(&c.history, self.sources.copurchase_strength(&seeds));
                let q = queries[k].as_deref();
                let tq = tt_queries.as_ref().and_then(|t| t[k].as_deref());
                let mut rows: Vec<Row> = candidates
                    .iter()
                    .map(|cand| {
                        let scores = ModelScores {
                            sasrec: q
                                .and_then(|q| self.ranker.vector(cand.item).map(|v| dot(v, q)))
                                .unwrap_or(f32::NAN),
                            two_tower: tq
                                .zip(self.retrieval.as_ref())
                                .and_then(|(q, s)| s.vector(cand.item).map(|v| cosine(v, q)))
                                .unwrap_or(f32::NAN),
                        };
                        self.context.row(&view, cand, scores)
                    })
                    .collect();
                features::rank_among(&mut rows);
                Prepared {
                    candidates,
                    rows,
                    has_query: q.is_some(),
                    full: sasrec[k].iter().take(full).copied().collect(),
                }
            })
            .collect())
    }

    /// The top K of `p`'s candidates by `scorer` under the objective,
    /// padded with popular articles the live pool still sells.
    pub fn order(&self, p: &Prepared, scorer: Scorer) -> Vec<u32> {
        let snap = self.ranker.engine.pool.snapshot();
        let available = |item: u32| self.ranker.sells(&snap, item);
        self.ordering
            .order_available(&p.candidates, &p.rows, p.has_query, scorer, &available)
    }
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let n = dot(a, a).sqrt() * dot(b, b).sqrt();
    if n > 0.0 { dot(a, b) / n } else { f32::NAN }
}
