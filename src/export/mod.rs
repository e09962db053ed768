//! `recforge export RUN_DIR --out models/NAME`: a run's selected model as a
//! bundle the burn-free inference crate serves (format: `models/README.md`).
//!
//! The weights are burn's own safetensors export of the model's parameters;
//! the manifest carries what is not a parameter: hyperparameters, the item
//! catalogue and feature codes, how customer attributes become codes, the
//! cold-start list, the training config and validation metrics. All of it
//! comes from the run directory (the parts recorded when the run started,
//! the selected checkpoint): the data is not read again. The bundle is
//! written to a temporary directory and renamed into place.
//!
//! [`serve`] serves a bundle on a dataset through the inference crate's
//! engine (evaluation, ranking, submissions); [`serving_data`] writes the
//! customer and price files the HTTP server reads beside a bundle.

pub mod serve;
pub mod serving_data;

use std::path::Path;

use burn::module::Module;
use burn::store::{BurnToPyTorchAdapter, ModuleSnapshot, SafetensorsStore};
use burn::tensor::Device;
use recforge_infer::bundle::{self, FORMAT, FORMAT_VERSION, Manifest, ModelKind, TensorInfo};
use serde::Serialize;

use crate::config::experiment::Experiment;
use crate::error::{Error, Result};
use crate::train::checkpoint;
use crate::train::parts::{self, BundleParts, ModelShape};
use crate::util::fsutil::AtomicDir;

/// What was exported.
#[derive(Debug, Clone, Serialize)]
pub struct Exported {
    pub dir: std::path::PathBuf,
    pub kind: ModelKind,
    pub tensors: usize,
    pub bytes: u64,
    pub sha256: String,
}

/// Copies the ranking bundle `dir` (one `recforge run` wrote) to `out`
/// after checking every part, as the serving side will load it; the copy
/// is written whole or not at all.
pub fn export_ranking(
    dir: &Path,
    out: &Path,
) -> Result<recforge_infer::rank::bundle::RankingManifest> {
    let bundle = recforge_infer::rank::bundle::RankingBundle::load(dir)?;
    let tmp = AtomicDir::create(out)?;
    copy_tree(dir, tmp.path())?;
    tmp.commit()?;
    Ok(bundle.manifest)
}

/// Refits a ranking bundle's candidate sources and feature statistics on
/// `data` as of `day` (default: the day after the data ends), keeping its
/// models, second stage, objective and sizes, and writes the result to
/// `out`: fresher popularity, co-purchase and article statistics without
/// retraining anything. Refitting on the bundle's own rows and day gives
/// its state bit for bit (tested).
pub fn refresh_ranking(
    dir: &Path,
    data: &Path,
    day: Option<i64>,
    out: &Path,
) -> Result<recforge_infer::rank::bundle::RankingManifest> {
    use recforge_infer::rank::bundle::{self, RankingBundle, SecondStageSpec};
    let old = RankingBundle::load(dir)?;
    let m = &old.manifest;
    let ds = serve::load_data(data)?;
    let day = match day {
        Some(d) => d,
        None => crate::data::split::last_day(&ds).map_or(0, |d| d + 1),
    };
    let (ranker_dir, retrieval_dir) = (dir.join(bundle::RANKER), dir.join(bundle::RETRIEVAL));
    let set = crate::rank::RankSettings {
        candidates: &m.candidates,
        retrieval: m.retrieval_sha256.as_ref().map(|_| retrieval_dir.as_path()),
        ranker: &ranker_dir,
        objective: m.objective,
        alpha: m.alpha,
        second: None,
        bundle: None,
    };
    let ranker = crate::rank::Ranker::new(&ds, day, &set)?;
    let trees_path = dir.join(bundle::TREES);
    let text = match &m.second {
        SecondStageSpec::Trees { .. } => {
            Some(std::fs::read_to_string(&trees_path).map_err(|e| Error::io(&trees_path, e))?)
        }
        _ => None,
    };
    let served = crate::rank::ServedStage {
        trees: match &m.second {
            SecondStageSpec::Trees { negative_rate, .. } => {
                text.as_deref().map(|t| (t, *negative_rate))
            }
            _ => None,
        },
        blender: match &m.second {
            SecondStageSpec::Blender { blender } => Some(blender),
            _ => None,
        },
    };
    ranker.write_bundle(out, &set, served, m.validation.clone())
}

/// Copies the files under `from` into `to` (directories recreated).
fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to).map_err(|e| Error::io(to, e))?;
    for entry in std::fs::read_dir(from).map_err(|e| Error::io(from, e))? {
        let entry = entry.map_err(|e| Error::io(from, e))?;
        let (src, dst) = (entry.path(), to.join(entry.file_name()));
        if entry.file_type().map_err(|e| Error::io(&src, e))?.is_dir() {
            copy_tree(&src, &dst)?;
        } else {
            std::fs::copy(&src, &dst).map_err(|e| Error::io(&src, e))?;
        }
    }
    Ok(())
}

/// How the weights file lays out the parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Layout {
    /// burn's: what recforge-infer and recforge-serve read.
    #[default]
    Burn,
    /// PyTorch's, for `load_state_dict` into the reference module of
    /// `models/README.md`: Linear weights `[d_out, d_in]`, LayerNorm
    /// `weight`/`bias` (burn-store's own adapter does the conversion).
    Pytorch,
}

pub fn export(run_dir: &Path, out: &Path) -> Result<Exported> {
    export_as(run_dir, out, Layout::Burn)
}

/// As [`export`], with the weights in `layout`.
pub fn export_as(run_dir: &Path, out: &Path, layout: Layout) -> Result<Exported> {
    let config = run_dir.join("config.toml");
    let exp = Experiment::load(&config, &[])?;
    let best = run_dir.join("best");
    if !best.join(checkpoint::MODEL).exists() {
        return Err(Error::Runtime(format!(
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
    let parts = read_parts(run_dir)?;
    let dev = Device::flex();
    match parts.model.clone() {
        ModelShape::SasRec(c) => {
            let model = checkpoint::load_model(&best, c.init(&parts.item_features(), &dev))?;
            write_bundle_as(&model, &exp, parts, validation, out, layout)
        }
        ModelShape::TwoTower(c) => {
            let model = checkpoint::load_model(&best, c.init(&dev))?;
            write_bundle_as(&model, &exp, parts, validation, out, layout)
        }
    }
}

/// The bundle parts the run recorded when it started.
fn read_parts(run_dir: &Path) -> Result<BundleParts> {
    let path = run_dir.join(parts::FILE);
    let bytes = std::fs::read(&path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => Error::invalid(
            &path,
            "missing: the run predates recorded bundle parts; train it again to export it",
        ),
        _ => Error::io(&path, e),
    })?;
    serde_json::from_slice(&bytes).map_err(|e| Error::invalid(&path, e.to_string()))
}

/// The safetensors file `bytes` with its JSON header's keys sorted.
///
/// burn fills the header's `__metadata__` from a hash map, so the same
/// weights exported twice gave files (and manifest sha256s, and served
/// `model_version`s) that differed in key order alone. serde_json's maps
/// are sorted (its `preserve_order` feature is off in this tree; the test
/// below fails if a dependency ever turns it on), so parsing and writing
/// the header back sorts every level. The header keeps its length (padded
/// with spaces, which the format allows), so the tensor offsets and data
/// are untouched. None if the header does not parse or comes out longer.
fn canonical_header(bytes: &[u8]) -> Option<Vec<u8>> {
    let n = usize::try_from(u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?)).ok()?;
    let header = bytes.get(8..8usize.checked_add(n)?)?;
    let fields: serde_json::Value = serde_json::from_slice(header).ok()?;
    let mut text = serde_json::to_vec(&fields).ok()?;
    if text.len() > n {
        return None;
    }
    text.resize(n, b' ');
    let mut out = Vec::with_capacity(bytes.len());
    out.extend_from_slice(&bytes[..8]);
    out.extend_from_slice(&text);
    out.extend_from_slice(&bytes[8 + n..]);
    Some(out)
}

/// Writes `model` and its manifest as the bundle `out` (atomically).
pub fn write_bundle<M: Module>(
    model: &M,
    exp: &Experiment,
    parts: BundleParts,
    validation: serde_json::Value,
    out: &Path,
) -> Result<Exported> {
    write_bundle_as(model, exp, parts, validation, out, Layout::Burn)
}

fn write_bundle_as<M: Module>(
    model: &M,
    exp: &Experiment,
    parts: BundleParts,
    validation: serde_json::Value,
    out: &Path,
    layout: Layout,
) -> Result<Exported> {
    let tmp = AtomicDir::create(out)?;
    let wpath = tmp.path().join(bundle::WEIGHTS);
    let mut store = SafetensorsStore::from_file(wpath.clone()).overwrite(true);
    if layout == Layout::Pytorch {
        store = store.with_to_adapter(BurnToPyTorchAdapter);
    }
    model
        .valid()
        .save_into(&mut store)
        .map_err(|e| Error::invalid(&wpath, format!("could not write the weights: {e}")))?;
    let written = std::fs::read(&wpath).map_err(|e| Error::io(&wpath, e))?;
    let bytes = canonical_header(&written).ok_or_else(|| {
        Error::invalid(
            &wpath,
            "burn wrote a safetensors header that does not parse",
        )
    })?;
    std::fs::write(&wpath, &bytes).map_err(|e| Error::io(&wpath, e))?;
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
        linear_layout: match layout {
            Layout::Burn => bundle::BURN_LAYOUT,
            Layout::Pytorch => bundle::PYTORCH_LAYOUT,
        }
        .into(),
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A safetensors file with this header text and four data bytes.
    fn file(header: &str) -> Vec<u8> {
        let mut b = (header.len() as u64).to_le_bytes().to_vec();
        b.extend_from_slice(header.as_bytes());
        b.extend_from_slice(&[1, 2, 3, 4]);
        b
    }

    #[test]
    fn headers_differing_in_key_order_become_the_same_bytes_with_data_untouched() {
        let t = r#""w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}"#;
        let a = file(&format!(
            r#"{{"__metadata__":{{"format":"pt","version":"1"}},{t}}}"#
        ));
        let b = file(&format!(
            r#"{{{t},"__metadata__":{{"version":"1","format":"pt"}}}}"#
        ));
        let (ca, cb) = (canonical_header(&a).unwrap(), canonical_header(&b).unwrap());
        assert_eq!(ca, cb);
        assert_eq!(ca.len(), a.len(), "the header keeps its length");
        assert_eq!(&ca[ca.len() - 4..], &[1, 2, 3, 4]);
        let st = safetensors::SafeTensors::deserialize(&ca).unwrap();
        assert_eq!(st.tensor("w").unwrap().data(), &[1, 2, 3, 4]);
        assert!(
            canonical_header(&a[..20]).is_none(),
            "a cut file is refused"
        );
    }
}
