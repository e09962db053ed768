//! The second stage's last step: scoring every candidate of a customer and
//! turning the scores into their top K under the objective.
//!
//! Scores are log-probabilities of a purchase (the blender; the binary
//! trees, corrected for the negative sampling) or ranking scores (SASRec's
//! softmax logit, lambdarank trees), so the revenue objective's
//! alpha · ln(price) term orders by probability × price^alpha without
//! normalising.

use super::blend::{self, Blender};
use super::features::{Context, Feature, Row};
use super::sources::{Candidate, CandidateSources, first_distinct};
use crate::Objective;
use crate::trees::{TreeObjective, Trees};

/// What orders a customer's candidates.
#[derive(Clone, Copy)]
pub enum Scorer<'a> {
    /// SASRec's score alone.
    Score,
    Blender(&'a Blender),
    /// Trees, with the share of negatives kept when they were trained.
    Trees(&'a Trees, f64),
}

impl Scorer<'_> {
    /// The score of one candidate's row (NaN for a row the model cannot
    /// score, such as one of the wrong width).
    pub fn score(&self, r: &Row) -> f64 {
        match *self {
            Scorer::Score => f64::from(r[Feature::SasrecScore.slot()]),
            Scorer::Blender(b) => b.log_prob(&blend::inputs(r)),
            Scorer::Trees(t, rate) => tree_score(t, r, rate),
        }
    }

    /// The scores of a customer's rows, as [`score`](Self::score) gives
    /// them one by one (the same bits): trees walk all rows one tree at a
    /// time.
    pub fn scores(&self, rows: &[Row]) -> Vec<f64> {
        match *self {
            Scorer::Trees(t, rate) if t.n_features() == super::features::N => {
                match t.raw_many(rows.as_flattened()) {
                    Ok(raw) => raw.into_iter().map(|r| tree_value(t, r, rate)).collect(),
                    Err(_) => vec![f64::NAN; rows.len()],
                }
            }
            _ => rows.iter().map(|r| self.score(r)).collect(),
        }
    }

    /// Whether it needs the sequential ranker's query: without one (a
    /// customer without history) the candidates keep their own order.
    fn needs_query(&self) -> bool {
        matches!(self, Scorer::Score | Scorer::Blender(_))
    }
}

/// The ranking score of one row: the log-probability of a purchase for the
/// binary objective (corrected for the negative sampling, `negative_rate`
/// = share of negatives kept in training), the raw score for lambdarank.
/// NaN when the row does not have the trees' width.
pub fn tree_score(trees: &Trees, row: &[f32], negative_rate: f64) -> f64 {
    match trees.raw(row) {
        Ok(raw) => tree_value(trees, raw, negative_rate),
        Err(_) => f64::NAN,
    }
}

/// [`tree_score`] from the trees' raw score.
fn tree_value(trees: &Trees, raw: f64, negative_rate: f64) -> f64 {
    match trees.objective {
        TreeObjective::Binary { sigmoid } => {
            // Keeping a share `rate` of negatives multiplies the odds by
            // 1 / rate; undo it, then ln sigmoid.
            let eta = sigmoid * raw + negative_rate.ln();
            -((-eta).max(0.0) + (-eta.abs()).exp().ln_1p())
        }
        TreeObjective::LambdaRank => raw,
    }
}

/// One article of a served list.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ranked {
    pub item: u32,
    /// Its score plus the objective's term (None: not scored).
    pub value: Option<f64>,
}

/// Popular articles kept per list slot for padding.
const PADDING_DEPTH: usize = 4;

/// How scored candidates become a customer's list: the objective's price
/// term per article and the popular list that pads a short one.
#[derive(Debug, Clone)]
pub struct Ordering {
    /// alpha · ln(price) per article under the revenue objective (0 for
    /// purchase).
    bonus: Vec<f32>,
    /// The term of an article without a known price (the mean ln price).
    fallback: f32,
    popular: Vec<u32>,
    k: usize,
}

impl Ordering {
    /// Room for `n` articles added after fitting: without a price, their
    /// objective term is the mean's, as for any article never sold.
    pub fn add_unsold(&mut self, n: usize) {
        self.bonus.extend(std::iter::repeat_n(self.fallback, n));
    }

    /// Lists of `k` under `objective` (alpha for revenue), prices from
    /// `ctx`, padded from the sources' decayed-popular list.
    pub fn new(
        ctx: &Context,
        sources: &CandidateSources,
        objective: Objective,
        alpha: f64,
        k: usize,
    ) -> Self {
        let ln_prices: Vec<f32> = (0..ctx.n_items() as u32).map(|i| ctx.ln_price(i)).collect();
        let known: Vec<f64> = ln_prices
            .iter()
            .filter(|p| p.is_finite())
            .map(|&p| f64::from(p))
            .collect();
        let mean = if known.is_empty() {
            0.0
        } else {
            known.iter().sum::<f64>() / known.len() as f64
        };
        let bonus = ln_prices
            .iter()
            .map(|&l| {
                let l = if l.is_finite() { f64::from(l) } else { mean };
                objective.bonus(alpha, l)
            })
            .collect();
        let pop = sources.popularity();
        let mut popular = Vec::new();
        // Deeper than K, so a list still fills when some are sold out.
        first_distinct(
            &[&pop.decayed, &pop.popular],
            k * PADDING_DEPTH,
            &mut popular,
        );
        Ordering {
            bonus,
            fallback: objective.bonus(alpha, mean),
            popular,
            k,
        }
    }

    /// What every list is padded with: the K most popular articles.
    pub fn popular(&self) -> &[u32] {
        &self.popular[..self.popular.len().min(self.k)]
    }

    pub fn k(&self) -> usize {
        self.k
    }

    /// The objective's term for `item`.
    pub fn bonus(&self, item: u32) -> f32 {
        self.bonus
            .get(item as usize)
            .copied()
            .unwrap_or(self.fallback)
    }

    /// The top K of `candidates` (rows aligned) by `scorer` plus the
    /// objective's term, ties by id, padded with popular articles.
    /// SASRec's score and the blender need a query: a customer without
    /// one (`has_query` false) keeps the candidates' own order (popularity
    /// first); the trees score every customer.
    pub fn order(
        &self,
        candidates: &[Candidate],
        rows: &[Row],
        has_query: bool,
        scorer: Scorer,
    ) -> Vec<u32> {
        self.order_available(candidates, rows, has_query, scorer, &|_| true)
    }

    /// [`order`](Self::order), padded only with articles `available`
    /// accepts (the candidates are the caller's to filter).
    pub fn order_available(
        &self,
        candidates: &[Candidate],
        rows: &[Row],
        has_query: bool,
        scorer: Scorer,
        available: &dyn Fn(u32) -> bool,
    ) -> Vec<u32> {
        self.ranked(candidates, rows, has_query, scorer, available, self.k)
            .into_iter()
            .map(|r| r.item)
            .collect()
    }

    /// The top `k` of the candidates `allowed` accepts, each with its
    /// value (score + objective term; None where the customer's
    /// candidates keep their own order or for the popular padding), padded
    /// with allowed popular articles (up to the padding depth).
    pub fn ranked(
        &self,
        candidates: &[Candidate],
        rows: &[Row],
        has_query: bool,
        scorer: Scorer,
        allowed: &dyn Fn(u32) -> bool,
        k: usize,
    ) -> Vec<Ranked> {
        let mut top: Vec<Ranked> = if scorer.needs_query() && !has_query {
            candidates
                .iter()
                .filter(|c| allowed(c.item))
                .map(|c| Ranked {
                    item: c.item,
                    value: None,
                })
                .take(k)
                .collect()
        } else {
            let values = scorer.scores(rows);
            let mut scored: Vec<(u32, f64)> = candidates
                .iter()
                .zip(values)
                .filter(|(c, _)| allowed(c.item))
                .map(|(c, v)| {
                    let v = if v.is_nan() { f64::NEG_INFINITY } else { v };
                    (c.item, v + f64::from(self.bonus(c.item)))
                })
                .collect();
            scored.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
            scored
                .iter()
                .take(k)
                .map(|&(item, v)| Ranked {
                    item,
                    value: Some(v),
                })
                .collect()
        };
        for &p in &self.popular {
            if top.len() >= k {
                break;
            }
            if allowed(p) && !top.iter().any(|r| r.item == p) {
                top.push(Ranked {
                    item: p,
                    value: None,
                });
            }
        }
        top
    }

    /// Pads `list` to K with popular articles it lacks.
    pub fn fill(&self, list: &mut Vec<u32>) {
        for &p in &self.popular {
            if list.len() >= self.k {
                break;
            }
            if !list.contains(&p) {
                list.push(p);
            }
        }
    }
}
