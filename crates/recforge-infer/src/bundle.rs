//! Model bundles: `model.safetensors` (the weights) and `manifest.json`
//! (everything else a forward pass needs). The format is documented in
//! `models/README.md`; this module is its reader and the schema the
//! trainer's exporter writes.
//!
//! Loading trusts nothing: the format version, the weights' SHA-256, every
//! tensor's presence, dtype and shape, and the item tables' lengths are
//! checked before a model is built, and each mismatch is an error that says
//! which file and which tensor.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{Error, Result};

pub const FORMAT: &str = "recforge-bundle";
pub const FORMAT_VERSION: u32 = 1;
pub const MANIFEST: &str = "manifest.json";
pub const WEIGHTS: &str = "model.safetensors";
/// `linear_layout` of the bundles this crate serves: burn's own.
pub const BURN_LAYOUT: &str = "weight [d_in, d_out], y = x W + b";
/// `linear_layout` of a bundle exported for PyTorch (`recforge export
/// --layout pytorch`): Linear weights transposed, norms' `weight`/`bias`.
pub const PYTORCH_LAYOUT: &str =
    "pytorch: Linear weight [d_out, d_in], y = x W^T + b; LayerNorm weight/bias";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ModelKind {
    Sasrec,
    TwoTower,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TensorInfo {
    pub name: String,
    pub shape: Vec<usize>,
    /// `F32` or `BF16`, as safetensors names them.
    pub dtype: String,
}

/// A categorical item feature: the raw value of each code (`vocab[0]` is
/// "unknown") and each catalogue item's code.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ItemFeatureSpec {
    pub name: String,
    pub vocab: Vec<String>,
    pub codes: Vec<u32>,
}

/// The catalogue the model was trained with. Item index i (0 = padding)
/// is article `ids[i]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Items {
    pub ids: Vec<String>,
    /// In the model's input order; each feature's codes are offset into
    /// a shared table by the vocabulary sizes of the features before it
    /// (two-tower) or have their own table (SASRec).
    pub features: Vec<ItemFeatureSpec>,
    /// Two-tower: items with a trained id vector (sold in training).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub known: Vec<bool>,
}

/// How a customer attribute becomes a code.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum UserFeatureSpec {
    /// Age in years cut at `edges` (code 1 + bucket; 0 = unknown).
    AgeBucket { edges: Vec<f32>, vocab: usize },
    /// Raw value → code by `vocab` (index = code; unseen values → 0).
    Categorical { vocab: Vec<String> },
    /// Raw value → 1 + FNV-1a-64(value) mod `buckets` (empty → 0).
    Hashed { buckets: usize },
}

impl UserFeatureSpec {
    /// The code of a raw attribute value (as customers.csv writes it; an
    /// age in years for `AgeBucket`). Empty, unparsable or unseen values
    /// read 0, "unknown", as in training (values are compared exactly, as
    /// the trainer does).
    pub fn code(&self, raw: &str) -> u32 {
        if raw.is_empty() {
            return 0;
        }
        match self {
            UserFeatureSpec::AgeBucket { edges, .. } => {
                age_code(edges, raw.parse::<f32>().unwrap_or(f32::NAN))
            }
            UserFeatureSpec::Categorical { vocab } => {
                vocab.iter().position(|x| x == raw).unwrap_or(0) as u32
            }
            UserFeatureSpec::Hashed { buckets } => 1 + (fnv1a(raw) % *buckets as u64) as u32,
        }
    }
}

/// The code of an age in years cut at `edges`: 1 + its bucket, 0 when
/// unknown (NaN or infinite).
pub fn age_code(edges: &[f32], age: f32) -> u32 {
    if !age.is_finite() {
        return 0;
    }
    1 + edges.iter().position(|&e| age < e).unwrap_or(edges.len()) as u32
}

impl ItemFeatureSpec {
    /// The code of a raw attribute value; unseen values read 0, "unknown".
    pub fn code(&self, raw: &str) -> u32 {
        if raw.is_empty() {
            return 0;
        }
        self.vocab.iter().position(|x| x == raw).unwrap_or(0) as u32
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserFeature {
    /// The customers.csv column (or `age_bucket`, read from `age`).
    pub name: String,
    pub spec: UserFeatureSpec,
}

/// Hyperparameters of the sequential ranker's forward pass.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SasRecSpec {
    pub n_items: usize,
    pub max_len: usize,
    pub d_model: usize,
    pub n_heads: usize,
    pub n_layers: usize,
    pub d_ff: usize,
    /// Pre-norm (LayerNorm before each sub-layer, a final LayerNorm after
    /// the stack) or post-norm (after each residual sum).
    pub norm_first: bool,
    /// Epsilon of the LayerNorm after embedding + position.
    pub embed_norm_eps: f64,
    /// Epsilon of the encoder's (and the final) LayerNorms.
    pub layer_norm_eps: f64,
    pub activation: Activation,
    /// Value written over masked attention scores before the softmax.
    pub attention_mask_value: f64,
}

/// The feed-forward activation of a sequential ranker's layers (written
/// `gelu` in manifests).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Activation {
    /// Exact GELU, with erf.
    Gelu,
}

/// How the customer tower summarises recent purchases (written `none`,
/// `mean` or `recency` in manifests and experiment files).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HistoryPool {
    /// No purchase history: customer attributes only.
    None,
    /// Plain average of the last `history_len` purchases' item vectors.
    Mean,
    /// Average weighted by 0.5^(age in days / `half_life_days`).
    Recency,
}

/// Hyperparameters of the two towers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TwoTowerSpec {
    pub d_model: usize,
    pub feature_dim: usize,
    pub hidden: usize,
    pub id_buckets: usize,
    pub id_dim: usize,
    pub history: HistoryPool,
    pub history_len: usize,
    pub half_life_days: f64,
    /// Item features (by name) that read "unknown" when the id is hidden,
    /// as for an article that never sold.
    pub hidden_with_id: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: String,
    pub format_version: u32,
    pub kind: ModelKind,
    /// Name of the experiment the model comes from.
    pub name: String,
    pub weights: String,
    /// Hex SHA-256 of the weights file.
    pub sha256: String,
    pub tensors: Vec<TensorInfo>,
    /// burn's `Linear` stores its weight `[d_in, d_out]` (y = x W + b).
    pub linear_layout: String,
    pub padding_id: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sasrec: Option<SasRecSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub two_tower: Option<TwoTowerSpec>,
    pub items: Items,
    #[serde(default)]
    pub user_features: Vec<UserFeature>,
    /// Shown to customers without history: article ids, best first.
    pub cold_start: Vec<String>,
    /// Last day (days since 1970-01-01) of the data the model saw.
    pub data_end_day: i64,
    /// The resolved training config (TOML text).
    pub training_config: String,
    /// Validation metrics of the selected epoch.
    pub validation: serde_json::Value,
}

/// A loaded, checked bundle.
pub struct Bundle {
    pub dir: PathBuf,
    pub manifest: Manifest,
    tensors: HashMap<String, (Vec<usize>, Vec<f32>)>,
}

/// Parses manifest `name` (`text`) as a `T` of `format` version `version`,
/// reading the version first: a newer format may hold values (a new
/// activation, say) this reader's types cannot name. The error is the
/// message for a bundle error; `what` is what the file should be.
pub(crate) fn read_manifest<T: serde::de::DeserializeOwned>(
    text: &[u8],
    name: &str,
    what: &str,
    format: &str,
    version: u32,
) -> std::result::Result<T, String> {
    #[derive(Deserialize)]
    struct Version {
        format: String,
        format_version: u32,
    }
    let v: Version =
        serde_json::from_slice(text).map_err(|e| format!("{name} is not {what}: {e}"))?;
    if v.format != format || v.format_version != version {
        return Err(format!(
            "{name} is format `{}` version {}; this reader reads `{format}` version {version}",
            v.format, v.format_version
        ));
    }
    serde_json::from_slice(text).map_err(|e| format!("{name} is not {what}: {e}"))
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

impl Bundle {
    // A list of independent checks of the bundle against its manifest,
    // each with its own message naming what is wrong.
    pub fn load(dir: &Path) -> Result<Self> {
        let bad = |msg: String| Error::Bundle {
            dir: dir.to_path_buf(),
            msg,
        };
        let mpath = dir.join(MANIFEST);
        let text = std::fs::read_to_string(&mpath).map_err(|e| Error::Io {
            path: mpath.clone(),
            source: e,
        })?;
        let manifest: Manifest = read_manifest(
            text.as_bytes(),
            MANIFEST,
            "a valid manifest",
            FORMAT,
            FORMAT_VERSION,
        )
        .map_err(bad)?;
        if manifest.linear_layout != BURN_LAYOUT {
            return Err(bad(if manifest.linear_layout == PYTORCH_LAYOUT {
                "its weights are in PyTorch's layout (exported with --layout pytorch, for load_state_dict); \
                 this reader serves burn's: export the run again without --layout"
                    .into()
            } else {
                format!(
                    "linear_layout `{}` is not one this reader knows (`{BURN_LAYOUT}`)",
                    manifest.linear_layout
                )
            }));
        }
        let wpath = dir.join(&manifest.weights);
        let bytes = std::fs::read(&wpath).map_err(|e| Error::Io {
            path: wpath.clone(),
            source: e,
        })?;
        let sum = sha256_hex(&bytes);
        if sum != manifest.sha256 {
            return Err(bad(format!(
                "{} has SHA-256 {sum}, the manifest says {}: the weights were changed or damaged",
                manifest.weights, manifest.sha256
            )));
        }
        let st = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| {
            bad(format!(
                "{} is not a readable safetensors file: {e}",
                manifest.weights
            ))
        })?;
        let mut tensors = HashMap::new();
        for info in &manifest.tensors {
            let view = st.tensor(&info.name).map_err(|_| {
                bad(format!(
                    "tensor `{}` listed in the manifest is missing from {}",
                    info.name, manifest.weights
                ))
            })?;
            if view.shape() != info.shape.as_slice() {
                return Err(bad(format!(
                    "tensor `{}` has shape {:?} in {}, the manifest says {:?}",
                    info.name,
                    view.shape(),
                    manifest.weights,
                    info.shape
                )));
            }
            let data = view.data();
            let values: Vec<f32> = match view.dtype() {
                safetensors::Dtype::F32 => data
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect(),
                safetensors::Dtype::BF16 => data
                    .chunks_exact(2)
                    .map(|c| f32::from_bits(u32::from(u16::from_le_bytes([c[0], c[1]])) << 16))
                    .collect(),
                other => {
                    return Err(bad(format!(
                        "tensor `{}` is {other:?}; bundles hold F32 or BF16",
                        info.name
                    )));
                }
            };
            tensors.insert(info.name.clone(), (info.shape.clone(), values));
        }
        let n = manifest.items.ids.len();
        for f in &manifest.items.features {
            if f.codes.len() != n || f.codes.iter().any(|&c| c as usize >= f.vocab.len().max(1)) {
                return Err(bad(format!(
                    "item feature `{}`: {} codes for {n} items, or a code outside its {} values",
                    f.name,
                    f.codes.len(),
                    f.vocab.len()
                )));
            }
        }
        Ok(Bundle {
            dir: dir.to_path_buf(),
            manifest,
            tensors,
        })
    }

    /// The values of tensor `name`, checked to have `shape`.
    pub fn tensor(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let (s, v) = self.tensors.get(name).ok_or_else(|| Error::Bundle {
            dir: self.dir.clone(),
            msg: format!("the model needs tensor `{name}`, which the manifest does not list"),
        })?;
        if s != shape {
            return Err(Error::Bundle {
                dir: self.dir.clone(),
                msg: format!(
                    "tensor `{name}` has shape {s:?}; the hyperparameters in the manifest need {shape:?}"
                ),
            });
        }
        Ok(v.clone())
    }

    pub fn has(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    pub fn invalid(&self, msg: String) -> Error {
        Error::Bundle {
            dir: self.dir.clone(),
            msg,
        }
    }
}

/// MurmurHash3's 64-bit finaliser. FNV-1a alone leaves its high bits
/// nearly constant across ids that differ only in their last characters
/// ("u1", "u2", ...); this spreads every input bit over every output bit.
pub fn mix64(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// The shard (of `shards`) a customer belongs to: a stable hash of the id
/// alone, so every tool that splits customers (`recforge submit --shard`,
/// the Spark job) splits them alike.
pub fn shard_of(customer_id: &str, shards: u32) -> u32 {
    (mix64(fnv1a(customer_id)) % u64::from(shards.max(1))) as u32
}

/// FNV-1a, 64 bit: the hash of hashed ids and attributes. Stable across
/// platforms and releases, so trainer and server agree on buckets.
pub fn fnv1a(s: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}
