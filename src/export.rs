//! `recforge export RUN_DIR --out models/NAME`: a run's selected model as a
//! bundle the burn-free inference crate serves (format: `models/README.md`).
//!
//! The weights are burn's own safetensors export of the model's parameters;
//! the manifest carries what is not a parameter: hyperparameters, the item
//! catalogue and feature codes, how customer attributes become codes, the
//! cold-start list, the training config and validation metrics. The bundle
//! is written to a temporary directory and renamed into place.

use std::path::Path;

use burn::module::Module;
use burn::store::{ModuleSnapshot, SafetensorsStore};
use burn::tensor::Device;
use recforge_infer::bundle::{
    self, FORMAT, FORMAT_VERSION, ItemFeatureSpec, Items, Manifest, ModelKind, SasRecSpec,
    TensorInfo, TwoTowerSpec, UserFeature,
};
use serde::Serialize;

use crate::baseline::{self, Fitted, Kind};
use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::experiment::{Experiment, HistoryPool};
use crate::features::ItemFeature;
use crate::fsutil::AtomicDir;
use crate::train::Task;
use crate::train::checkpoint;
use crate::train::retrieval::Retrieval;
use crate::train::sequential::Sequential;

/// What was exported.
#[derive(Debug, Clone, Serialize)]
pub struct Exported {
    pub dir: std::path::PathBuf,
    pub kind: ModelKind,
    pub tensors: usize,
    pub bytes: u64,
    pub sha256: String,
}

/// Length of the cold-start list stored in the bundle.
const COLD_START: usize = 100;

pub fn export(run_dir: &Path, out: &Path) -> Result<Exported> {
    let config = run_dir.join("config.toml");
    let exp = Experiment::load(&config, &[])?;
    let best = run_dir.join("best");
    if !best.join(checkpoint::MODEL).exists() {
        return Err(Error::Config(format!(
            "{}: no selected model (best/) to export; has the run finished an epoch?",
            run_dir.display()
        )));
    }
    let state = checkpoint::read_state(&best)?;
    let validation = state
        .best_epoch
        .and_then(|e| state.history.iter().find(|h| h.epoch == e))
        .and_then(|h| h.valid.as_ref())
        .map(|v| serde_json::to_value(v).expect("metrics serialise"))
        .unwrap_or(serde_json::Value::Null);
    let dev = Device::flex();
    match exp.model.kind {
        crate::experiment::ModelKind::Sasrec => {
            let task = Sequential::prepare(&exp)?;
            let model = checkpoint::load_model(&best, task.build(&dev))?;
            let c = task.config();
            let spec = sasrec_spec(&c);
            let mut parts = Parts::new(ModelKind::Sasrec, task.dataset(), task.item_features());
            parts.sasrec = Some(spec);
            write_bundle(&model, &exp, parts, validation, out)
        }
        crate::experiment::ModelKind::TwoTower => {
            let task = Retrieval::prepare(&exp)?;
            let model = checkpoint::load_model(&best, task.build(&dev))?;
            let c = task.config();
            let mut hidden: Vec<String> = vec!["price_bucket".into()];
            hidden.extend(exp.tower.id_features.iter().cloned());
            let mut parts = Parts::new(ModelKind::TwoTower, task.dataset(), task.item_features());
            parts.two_tower = Some(TwoTowerSpec {
                d_model: c.d_model,
                feature_dim: c.feature_dim,
                hidden: c.hidden,
                id_buckets: c.id_buckets,
                id_dim: c.id_dim,
                history: match exp.tower.history {
                    HistoryPool::None => "none",
                    HistoryPool::Mean => "mean",
                    HistoryPool::Recency => "recency",
                }
                .into(),
                history_len: exp.tower.history_len,
                half_life_days: exp.tower.half_life_days,
                hidden_with_id: hidden,
            });
            parts.items.known = task.item_inputs().known.clone();
            parts.users = task.user_inputs().specs.clone();
            write_bundle(&model, &exp, parts, validation, out)
        }
    }
}

/// Writes `model` and its manifest as the bundle `out` (atomically).
pub fn write_bundle<M: Module>(
    model: &M,
    exp: &Experiment,
    parts: Parts,
    validation: serde_json::Value,
    out: &Path,
) -> Result<Exported> {
    let tmp = AtomicDir::create(out)?;
    let wpath = tmp.path().join(bundle::WEIGHTS);
    let mut store = SafetensorsStore::from_file(wpath.clone()).overwrite(true);
    model
        .valid()
        .save_into(&mut store)
        .map_err(|e| Error::invalid(&wpath, format!("could not write the weights: {e}")))?;
    let bytes = std::fs::read(&wpath).map_err(|e| Error::io(&wpath, e))?;
    let sha256 = bundle::sha256_hex(&bytes);
    let st = safetensors::SafeTensors::deserialize(&bytes)
        .map_err(|e| Error::invalid(&wpath, format!("burn wrote an unreadable file: {e}")))?;
    let mut tensors: Vec<TensorInfo> = st
        .tensors()
        .into_iter()
        .map(|(name, view)| TensorInfo {
            name,
            shape: view.shape().to_vec(),
            dtype: format!("{:?}", view.dtype()),
        })
        .collect();
    tensors.sort_by(|a, b| a.name.cmp(&b.name));
    let manifest = Manifest {
        format: FORMAT.into(),
        format_version: FORMAT_VERSION,
        kind: parts.kind,
        name: exp.name.clone(),
        weights: bundle::WEIGHTS.into(),
        sha256: sha256.clone(),
        tensors: tensors.clone(),
        linear_layout: "weight [d_in, d_out], y = x W + b".into(),
        padding_id: 0,
        sasrec: parts.sasrec,
        two_tower: parts.two_tower,
        items: parts.items,
        user_features: parts.users,
        cold_start: parts.cold_start,
        data_end_day: parts.data_end_day,
        training_config: exp.to_toml(),
        validation,
    };
    let mpath = tmp.path().join(bundle::MANIFEST);
    let json = serde_json::to_vec_pretty(&manifest).expect("a manifest serialises");
    std::fs::write(&mpath, json).map_err(|e| Error::io(&mpath, e))?;
    tmp.commit()?;
    Ok(Exported {
        dir: out.to_path_buf(),
        kind: manifest.kind,
        tensors: tensors.len(),
        bytes: bytes.len() as u64,
        sha256,
    })
}

/// The manifest's description of a SASRec network.
pub fn sasrec_spec(c: &crate::model::SasRecConfig) -> SasRecSpec {
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
        activation: "gelu".into(),
        attention_mask_value: -1.0e4,
    }
}

/// The manifest's model-specific and catalogue parts.
pub struct Parts {
    pub kind: ModelKind,
    pub sasrec: Option<SasRecSpec>,
    pub two_tower: Option<TwoTowerSpec>,
    pub items: Items,
    pub users: Vec<UserFeature>,
    pub cold_start: Vec<String>,
    pub data_end_day: i64,
}

impl Parts {
    pub fn new(kind: ModelKind, ds: &Dataset, feats: &[ItemFeature]) -> Self {
        // Customers without history get time-decayed popularity over
        // everything the data holds: the freshest list at export time.
        let rows = crate::split::time_order(ds);
        let fitted = Fitted::fit(ds, &rows, baseline::Params::default());
        let mut cold = Vec::new();
        fitted.recommend(Kind::DecayedPopular, 0, COLD_START, &mut cold);
        Parts {
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
        }
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
