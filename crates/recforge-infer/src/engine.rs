//! One servable bundle: its model, its live item pool, the translation from
//! article ids and raw attribute values to the model's codes, and the query
//! vector a customer's history and attributes make.
//!
//! Every serving path goes through it: the trainer's ranking of candidates
//! and its submissions (through `recforge::export::serve`, which maps a
//! dataset's ids onto pool ids) and the HTTP server (`recforge-serve`, which
//! receives article ids and attribute strings). So a customer with the same
//! history gets the same query vector on every path.

use std::collections::HashMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::bundle::{HistoryPool, ModelKind, UserFeatureSpec};
use crate::pool::PoolSnapshot;
use crate::{Bundle, Error, ItemPool, Result, SasRecModel, TwoTowerModel};

/// The network a bundle holds.
pub enum Model {
    SasRec(Box<SasRecModel>),
    TwoTower(Box<TwoTowerModel>),
}

/// What an ordering of recommendations maximises.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "kebab-case")]
pub enum Objective {
    /// The model's score: purchase probability.
    #[default]
    Purchase,
    /// Expected value: score + alpha · ln(price), the log of probability ×
    /// price^alpha for a softmax score.
    Revenue,
}

impl Objective {
    /// What this objective adds to a model score for an item of log price
    /// `ln_price`.
    pub fn bonus(self, alpha: f64, ln_price: f64) -> f32 {
        match self {
            Objective::Purchase => 0.0,
            Objective::Revenue => (alpha * ln_price) as f32,
        }
    }

    /// What an item with model score `score` and log price `ln_price` is
    /// worth under this objective.
    pub fn value(self, score: f32, alpha: f64, ln_price: f64) -> f32 {
        match self {
            Objective::Purchase => score,
            Objective::Revenue => score + self.bonus(alpha, ln_price),
        }
    }
}

/// A past purchase as a server receives it.
#[derive(Debug, Clone)]
pub struct Purchase {
    pub article: String,
    /// Days before the day served (0 = today); pooled histories weigh by it.
    pub days_ago: f64,
    /// The sales channel (H&M: 1 store, 2 online), when known; a ranking
    /// bundle's online-share feature reads it.
    pub channel: Option<u8>,
}

/// One customer's inputs in the engine's terms.
pub struct Customer<'a> {
    /// Past purchases as pool ids, oldest first.
    pub history: &'a [u32],
    /// Days before the day served of each purchase (two-tower pooling only;
    /// may be empty for a sequential ranker).
    pub days_ago: &'a [f64],
    /// The bundle's code of each customer feature (two-tower only).
    pub codes: &'a [u32],
}

/// Which articles an engine serves.
pub enum Catalogue<'a> {
    /// Every article the bundle was trained with; pool id = item index.
    Trained,
    /// Exactly these articles (an empty id, such as a dataset's padding
    /// entry, is skipped). Articles the bundle knows keep their item index
    /// as pool id; the others get the ids after the bundle's, in list
    /// order, and are embedded from their attributes:
    /// `attribute(position in the list, feature name)` is the raw value
    /// (None, or a value the bundle never saw, reads "unknown").
    Articles {
        ids: &'a [String],
        attribute: &'a dyn Fn(usize, &str) -> Option<&'a str>,
    },
}

pub struct Engine {
    /// `name@sha256-prefix`: says which weights answered.
    pub version: String,
    pub bundle: Bundle,
    pub model: Model,
    pub pool: ItemPool,
    /// For an engine on a [`Catalogue::Articles`], the vector of every pool
    /// id assigned at load (row 0 is padding): SASRec's item
    /// representations, or the item tower's vectors. Empty for an engine of
    /// the bundle's own items (the HTTP server), whose vectors live in the
    /// pool alone.
    vectors: Vec<f32>,
    /// Item index of each article the bundle was trained with.
    trained: HashMap<String, u32>,
}

impl Engine {
    /// The bundle in `dir`, serving every article it was trained with.
    pub fn load(dir: &Path) -> Result<Self> {
        Ok(Self::new(Bundle::load(dir)?, Catalogue::Trained)?.0)
    }

    /// The bundle serving `catalogue`; also returns the pool id of each
    /// catalogue entry (`u32::MAX` for skipped ones; empty for
    /// [`Catalogue::Trained`]).
    pub fn new(bundle: Bundle, catalogue: Catalogue) -> Result<(Self, Vec<u32>)> {
        let m = &bundle.manifest;
        let trained: HashMap<String, u32> = m
            .items
            .ids
            .iter()
            .enumerate()
            .skip(1)
            .map(|(i, id)| (id.clone(), i as u32))
            .collect();
        let n_bundle = m.items.ids.len();
        let (pool_of, new_codes) = pool_ids_of(m, &trained, &catalogue);
        let (model, d, vectors) = model_and_vectors(&bundle, new_codes)?;
        // The pool: served articles in pool id order (row 0 is padding).
        let (pool_ids, articles): (Vec<u32>, Vec<String>) = match &catalogue {
            Catalogue::Trained => (1..n_bundle as u32)
                .map(|p| (p, m.items.ids[p as usize].clone()))
                .unzip(),
            Catalogue::Articles { ids, .. } => {
                let mut served: Vec<(u32, String)> = pool_of
                    .iter()
                    .zip(ids.iter())
                    .filter(|(p, _)| **p != u32::MAX)
                    .map(|(&p, id)| (p, id.clone()))
                    .collect();
                served.sort_unstable_by_key(|s| s.0);
                served.into_iter().unzip()
            }
        };
        let pool_vecs: Vec<f32> = pool_ids
            .iter()
            .flat_map(|&p| {
                vectors[p as usize * d..(p as usize + 1) * d]
                    .iter()
                    .copied()
            })
            .collect();
        let pool = ItemPool::new(d, pool_ids, articles, pool_vecs)?;
        let vectors = match catalogue {
            Catalogue::Trained => Vec::new(),
            Catalogue::Articles { .. } => vectors,
        };
        let version = format!("{}@{}", m.name, &m.sha256[..m.sha256.len().min(12)]);
        let engine = Engine {
            version,
            bundle,
            model,
            pool,
            vectors,
            trained,
        };
        Ok((engine, pool_of))
    }

    pub fn d_model(&self) -> usize {
        match &self.model {
            Model::SasRec(s) => s.d_model(),
            Model::TwoTower(t) => t.d_model(),
        }
    }

    /// The load-time vector of pool id `p` (item representation or
    /// item-tower vector) of an engine on a catalogue; None otherwise, or
    /// for an id it did not assign.
    pub fn item_vector(&self, p: u32) -> Option<&[f32]> {
        let d = self.d_model();
        self.vectors.get(p as usize * d..(p as usize + 1) * d)
    }

    /// The vector of an article from raw attribute values alone (missing or
    /// unseen values read "unknown"; no id part): how new articles enter
    /// the pool without retraining.
    pub fn embed_article(&self, features: &HashMap<String, String>) -> Result<Vec<f32>> {
        let codes: Vec<u32> = self
            .bundle
            .manifest
            .items
            .features
            .iter()
            .map(|f| features.get(&f.name).map_or(0, |v| f.code(v)))
            .collect();
        Ok(match &self.model {
            Model::SasRec(s) => s.item_from_features(&codes)?,
            Model::TwoTower(t) => t.item_vectors(&[codes], &[None])?,
        })
    }

    /// The query vector of a customer; None when nothing in the history is
    /// in the pool (a sequential ranker: nothing it was trained with), so
    /// the customer gets the cold-start list.
    pub fn query(&self, c: &Customer) -> Result<Option<Vec<f32>>> {
        self.query_on(&self.pool.snapshot(), c)
    }

    /// [`query`](Self::query) on one view of the pool.
    fn query_on(&self, snap: &PoolSnapshot, c: &Customer) -> Result<Option<Vec<f32>>> {
        match &self.model {
            // The ranker skips articles it has no input embedding for.
            Model::SasRec(s) => Ok(s.encode(c.history)),
            Model::TwoTower(t) => {
                if c.days_ago.len() != c.history.len() {
                    return Err(Error::Shape {
                        what: "days before the day served, one per purchase".into(),
                        expected: c.history.len(),
                        got: c.days_ago.len(),
                    });
                }
                // Only the most recent `history_len` purchases the pool holds
                // are pooled (without pooling, one says the customer is
                // known): the scan stops there instead of reading the
                // whole history.
                let pooling = t.spec.history != HistoryPool::None;
                let need = if pooling {
                    t.spec.history_len.max(1)
                } else {
                    1
                };
                let mut known: Vec<(&[f32], f64)> = c
                    .history
                    .iter()
                    .zip(c.days_ago)
                    .rev()
                    .filter_map(|(&p, &ago)| Some((snap.vector_of(p)?, ago)))
                    .take(need)
                    .collect();
                known.reverse();
                if known.is_empty() {
                    return Ok(None);
                }
                let d = t.d_model();
                let pooled = if !pooling {
                    None
                } else {
                    let known = &known[known.len().saturating_sub(t.spec.history_len)..];
                    let ago: Vec<f64> = known.iter().map(|k| k.1).collect();
                    let w = t.history_weights(&ago);
                    let mut p = vec![0f32; d];
                    for ((v, _), wi) in known.iter().zip(&w) {
                        p.iter_mut().zip(*v).for_each(|(a, b)| *a += wi * b);
                    }
                    Some(p)
                };
                Ok(Some(
                    t.user_vectors(&[c.codes.to_vec()], pooled.as_deref())?,
                ))
            }
        }
    }

    /// [`query`](Self::query) for many customers: a sequential ranker
    /// encodes them in one stacked pass (one larger matrix product per
    /// layer instead of one small one per customer).
    pub fn queries(&self, cs: &[Customer]) -> Result<Vec<Option<Vec<f32>>>> {
        match &self.model {
            Model::SasRec(s) => {
                let refs: Vec<&[u32]> = cs.iter().map(|c| c.history).collect();
                Ok(s.encode_many(&refs))
            }
            Model::TwoTower(_) => {
                let snap = self.pool.snapshot();
                cs.iter().map(|c| self.query_on(&snap, c)).collect()
            }
        }
    }

    /// The query of a customer given as article ids (oldest first) and raw
    /// attribute values, as the HTTP server receives them. Articles the
    /// pool does not hold are left out (a sequential ranker reads only
    /// articles it was trained with).
    pub fn query_articles(
        &self,
        history: &[Purchase],
        attributes: &HashMap<String, String>,
    ) -> Result<Option<Vec<f32>>> {
        let snap = self.pool.snapshot();
        let (ids, days_ago): (Vec<u32>, Vec<f64>) = match &self.model {
            Model::SasRec(_) => history
                .iter()
                .filter_map(|p| Some((*self.trained.get(&p.article)?, p.days_ago)))
                .unzip(),
            Model::TwoTower(_) => history
                .iter()
                .filter_map(|p| Some((snap.id_of(&p.article)?, p.days_ago)))
                .unzip(),
        };
        let codes = self.user_codes(attributes);
        let customer = Customer {
            history: &ids,
            days_ago: &days_ago,
            codes: &codes,
        };
        self.query_on(&snap, &customer)
    }

    /// The bundle's code of each customer feature from raw attribute
    /// values (missing or unseen ones read 0, "unknown"; age buckets are
    /// cut from the raw `age`).
    pub fn user_codes(&self, attributes: &HashMap<String, String>) -> Vec<u32> {
        self.bundle
            .manifest
            .user_features
            .iter()
            .map(|f| {
                let key = match f.spec {
                    UserFeatureSpec::AgeBucket { .. } => "age",
                    _ => f.name.as_str(),
                };
                attributes.get(key).map_or(0, |v| f.spec.code(v))
            })
            .collect()
    }

    /// Articles for a customer the model knows nothing about.
    pub fn cold_start(&self) -> &[String] {
        &self.bundle.manifest.cold_start
    }
}

/// The vectors of articles (id, raw attributes) in each engine, all
/// computed before anything changes, so that a failure changes nothing.
pub fn embed_items(
    engines: &[&Engine],
    items: &[(&str, &HashMap<String, String>)],
) -> Result<Vec<Vec<Vec<f32>>>> {
    engines
        .iter()
        .map(|e| items.iter().map(|(_, f)| e.embed_article(f)).collect())
        .collect()
}

/// Adds (or re-vectors) the articles `ids` in each engine's pool, with the
/// vectors [`embed_items`] made for them; available at once.
pub fn add_to_pools(engines: &[&Engine], ids: &[&str], vectors: &[Vec<Vec<f32>>]) -> Result<()> {
    for (e, vs) in engines.iter().zip(vectors) {
        e.pool.update(|s| {
            for (id, v) in ids.iter().zip(vs) {
                s.add(id, v)?;
            }
            Ok(())
        })?;
    }
    Ok(())
}

/// The pool id of each catalogue entry (the bundle's item index, or the ids
/// after the bundle's for articles it lacks, in list order) and the feature
/// codes of those new articles.
fn pool_ids_of(
    m: &crate::Manifest,
    trained: &HashMap<String, u32>,
    catalogue: &Catalogue,
) -> (Vec<u32>, Vec<Vec<u32>>) {
    let Catalogue::Articles { ids, attribute } = catalogue else {
        return (Vec::new(), Vec::new());
    };
    let n_bundle = m.items.ids.len();
    let mut pool_of = vec![u32::MAX; ids.len()];
    let mut new_codes = Vec::new();
    for (k, id) in ids.iter().enumerate().filter(|(_, id)| !id.is_empty()) {
        pool_of[k] = match trained.get(id) {
            Some(&i) => i,
            None => {
                let codes = m.items.features.iter();
                new_codes.push(
                    codes
                        .map(|f| attribute(k, &f.name).map_or(0, |v| f.code(v)))
                        .collect::<Vec<u32>>(),
                );
                (n_bundle + new_codes.len() - 1) as u32
            }
        };
    }
    (pool_of, new_codes)
}

/// The bundle's network, its width, and the vector of every pool id: the
/// bundle's items (row 0 padding), then the new articles embedded from
/// `new_codes`.
fn model_and_vectors(
    bundle: &Bundle,
    new_codes: Vec<Vec<u32>>,
) -> Result<(Model, usize, Vec<f32>)> {
    Ok(match bundle.manifest.kind {
        ModelKind::Sasrec => {
            let s = SasRecModel::from_bundle(bundle)?;
            let d = s.d_model();
            let mut v = s.item_table().to_vec();
            for c in &new_codes {
                v.extend(s.item_from_features(c)?);
            }
            (Model::SasRec(Box::new(s)), d, v)
        }
        ModelKind::TwoTower => {
            let t = TwoTowerModel::from_bundle(bundle)?;
            let d = t.d_model();
            let (mut codes, mut ids) = t.catalogue_inputs(&bundle.manifest);
            ids.extend(std::iter::repeat_n(None, new_codes.len()));
            codes.extend(new_codes);
            let v = t.item_vectors(&codes, &ids)?;
            (Model::TwoTower(Box::new(t)), d, v)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objectives_read_their_config_names_and_value_items_as_documented() {
        let read = |s: &str| serde_json::from_str::<Objective>(&format!("\"{s}\""));
        assert_eq!(read("purchase").unwrap(), Objective::Purchase);
        assert_eq!(read("revenue").unwrap(), Objective::Revenue);
        assert!(read("clicks").is_err());
        assert_eq!(Objective::Purchase.value(1.5, 2.0, 3.0), 1.5);
        assert_eq!(Objective::Purchase.bonus(2.0, 3.0), 0.0);
        assert!((Objective::Revenue.value(1.5, 2.0, 3.0) - 7.5).abs() < 1e-6);
    }
}
