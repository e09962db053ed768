//! What a bundle needs from the data, recorded in the run directory when a
//! run starts (`RUN/bundle-parts.json`), so `recforge export` builds the
//! bundle from the run directory alone, without reading the data again.

use recforge_infer::bundle::{
    ItemFeatureSpec, Items, ModelKind, SasRecSpec, TwoTowerSpec, UserFeature,
};
use serde::{Deserialize, Serialize};

use crate::data::Dataset;
use crate::eval::baselines::{self, Fitted, Kind};
use crate::features::ItemFeature;
use crate::model::{SasRecConfig, TwoTowerConfig};

/// The file in the run directory.
pub const FILE: &str = "bundle-parts.json";

/// Length of the cold-start list stored in the bundle.
const COLD_START: usize = 100;

/// The network a run trains, by its shapes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ModelShape {
    SasRec(SasRecConfig),
    TwoTower(TwoTowerConfig),
}

/// The manifest's model-specific and catalogue parts, and the network's
/// shapes (to rebuild it before its weights are loaded).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BundleParts {
    pub kind: ModelKind,
    pub sasrec: Option<SasRecSpec>,
    pub two_tower: Option<TwoTowerSpec>,
    pub items: Items,
    pub users: Vec<UserFeature>,
    pub cold_start: Vec<String>,
    pub data_end_day: i64,
    pub model: ModelShape,
}

impl BundleParts {
    /// The parts of `ds` (catalogue, feature codes, the cold-start list as
    /// of its last day) for a model of `shape` with item features `feats`.
    pub fn new(shape: ModelShape, ds: &Dataset, feats: &[ItemFeature]) -> Self {
        let kind = match shape {
            ModelShape::SasRec(_) => ModelKind::Sasrec,
            ModelShape::TwoTower(_) => ModelKind::TwoTower,
        };
        // Customers without history get time-decayed popularity over
        // everything the data holds: the freshest list the data gives.
        let rows = crate::data::split::time_order(ds);
        let fitted = Fitted::fit(ds, &rows, baselines::Params::default());
        let mut cold = Vec::new();
        fitted.recommend(Kind::DecayedPopular, 0, COLD_START, &mut cold);
        BundleParts {
            kind,
            sasrec: None,
            two_tower: None,
            items: Items {
                ids: ds.items.ids.clone(),
                features: item_specs(ds, feats),
                known: vec![],
            },
            users: vec![],
            cold_start: cold
                .iter()
                .map(|&i| ds.items.ids[i as usize].clone())
                .collect(),
            data_end_day: rows.last().map(|&r| ds.day(r)).unwrap_or(0),
            model: shape,
        }
    }

    /// The item feature codes the network was built with (the same codes
    /// the manifest lists).
    pub fn item_features(&self) -> Vec<ItemFeature> {
        self.items
            .features
            .iter()
            .map(|f| ItemFeature {
                name: f.name.clone(),
                vocab: f.vocab.len(),
                codes: f.codes.clone(),
            })
            .collect()
    }
}

/// The manifest's description of a SASRec network.
pub fn sasrec_spec(c: &SasRecConfig) -> SasRecSpec {
    SasRecSpec {
        n_items: c.n_items,
        max_len: c.max_len,
        d_model: c.d_model,
        n_heads: c.n_heads,
        n_layers: c.n_layers,
        d_ff: c.d_ff,
        norm_first: c.norm_first,
        embed_norm_eps: crate::model::sasrec::EMBED_NORM_EPS,
        layer_norm_eps: crate::model::sasrec::LAYER_NORM_EPS,
        activation: recforge_infer::bundle::Activation::Gelu,
        attention_mask_value: -1.0e4,
    }
}

/// The item features as the manifest lists them: raw values and codes.
fn item_specs(ds: &Dataset, feats: &[ItemFeature]) -> Vec<ItemFeatureSpec> {
    feats
        .iter()
        .map(|f| {
            let mut vocab = match ds.items.feature(&f.name) {
                Some(src) => src.vocab.clone(),
                // Price buckets: quantile bucket numbers, 0 = unknown.
                None => (0..f.vocab)
                    .map(|i| if i == 0 { String::new() } else { i.to_string() })
                    .collect(),
            };
            vocab.resize(f.vocab.max(1), String::new());
            ItemFeatureSpec {
                name: f.name.clone(),
                vocab,
                codes: f.codes.clone(),
            }
        })
        .collect()
}
