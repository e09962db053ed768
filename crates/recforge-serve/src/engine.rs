//! One loaded bundle: its model, its live item pool, and the translation
//! from article ids and raw attribute values to the model's codes.

use std::collections::HashMap;
use std::path::Path;

use recforge_infer::bundle::{ModelKind, UserFeatureSpec};
use recforge_infer::{Bundle, ItemPool, SasRecModel, TwoTowerModel};

use crate::{Error, Result};

// One per loaded bundle: the variants' size difference costs nothing.
#[allow(clippy::large_enum_variant)]
pub enum Model {
    SasRec(SasRecModel),
    TwoTower(TwoTowerModel),
}

pub struct Engine {
    /// `name@sha256-prefix`: says which weights answered.
    pub version: String,
    pub bundle: Bundle,
    pub model: Model,
    pub pool: ItemPool,
    /// Model item index of each article the bundle was trained with.
    trained: HashMap<String, u32>,
}

/// A past purchase as the server receives it.
#[derive(Debug, Clone)]
pub struct Purchase {
    pub article: String,
    /// Days before the day served (0 = today); pooled histories weigh by it.
    pub days_ago: f64,
}

impl Engine {
    pub fn load(dir: &Path) -> Result<Self> {
        let bundle = Bundle::load(dir)?;
        let m = &bundle.manifest;
        let trained: HashMap<String, u32> = m
            .items
            .ids
            .iter()
            .enumerate()
            .skip(1)
            .map(|(i, id)| (id.clone(), i as u32))
            .collect();
        let n = m.items.ids.len();
        let (model, d, vectors) = match m.kind {
            ModelKind::Sasrec => {
                let s = SasRecModel::from_bundle(&bundle)?;
                let d = s.d_model();
                let v = s.item_table()[d..].to_vec();
                (Model::SasRec(s), d, v)
            }
            ModelKind::TwoTower => {
                let t = TwoTowerModel::from_bundle(&bundle)?;
                let d = t.d_model();
                let (codes, ids) = t.catalogue_inputs(m);
                // Without the padding row.
                let v = t.item_vectors(&codes[1..], &ids[1..])?;
                (Model::TwoTower(t), d, v)
            }
        };
        let pool = ItemPool::new(
            d,
            (1..n as u32).collect(),
            m.items.ids[1..].to_vec(),
            vectors,
        )?;
        let version = format!("{}@{}", m.name, &m.sha256[..m.sha256.len().min(12)]);
        Ok(Engine {
            version,
            bundle,
            model,
            pool,
            trained,
        })
    }

    pub fn d_model(&self) -> usize {
        match &self.model {
            Model::SasRec(s) => s.d_model(),
            Model::TwoTower(t) => t.d_model(),
        }
    }

    /// The model's feature codes of an article from raw attribute values
    /// (missing or unseen values read "unknown").
    fn item_codes(&self, features: &HashMap<String, String>) -> Vec<u32> {
        self.bundle
            .manifest
            .items
            .features
            .iter()
            .map(|f| features.get(&f.name).map_or(0, |v| f.code(v)))
            .collect()
    }

    /// The vector of an article from its features alone (no id part): how
    /// new articles enter the pool without retraining.
    pub fn item_vector(&self, features: &HashMap<String, String>) -> Result<Vec<f32>> {
        let codes = self.item_codes(features);
        Ok(match &self.model {
            Model::SasRec(s) => s.item_from_features(&codes)?,
            Model::TwoTower(t) => t.item_vectors(&[codes], &[None])?,
        })
    }

    /// The query vector of a customer with this history (oldest first) and
    /// these attributes; None when nothing in the history is in the pool:
    /// such customers get the cold-start list, as in submissions.
    pub fn query(
        &self,
        history: &[Purchase],
        attributes: &HashMap<String, String>,
    ) -> Result<Option<Vec<f32>>> {
        match &self.model {
            Model::SasRec(s) => {
                // Articles added after training have no input embedding.
                let seq: Vec<u32> = history
                    .iter()
                    .filter_map(|p| self.trained.get(&p.article).copied())
                    .collect();
                Ok(s.encode(&seq))
            }
            Model::TwoTower(t) => {
                let d = t.d_model();
                let snap = self.pool.snapshot();
                let known: Vec<(&[f32], f64)> = history
                    .iter()
                    .filter_map(|p| {
                        let id = snap.id_of(&p.article)?;
                        Some((snap.vector_of(id)?, p.days_ago))
                    })
                    .collect();
                if known.is_empty() {
                    return Ok(None);
                }
                let pooled = if t.spec.history == "none" {
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
                let codes: Vec<u32> = self
                    .bundle
                    .manifest
                    .user_features
                    .iter()
                    .map(|f| {
                        // Age buckets are cut from the raw `age` column.
                        let key = match f.spec {
                            UserFeatureSpec::AgeBucket { .. } => "age",
                            _ => f.name.as_str(),
                        };
                        attributes.get(key).map_or(0, |v| f.spec.code(v))
                    })
                    .collect();
                Ok(Some(t.user_vectors(&[codes], pooled.as_deref())?))
            }
        }
    }

    /// Articles for a customer the model knows nothing about.
    pub fn cold_start(&self) -> &[String] {
        &self.bundle.manifest.cold_start
    }
}

impl From<recforge_infer::Error> for Error {
    fn from(e: recforge_infer::Error) -> Self {
        Error::Model(e.to_string())
    }
}
