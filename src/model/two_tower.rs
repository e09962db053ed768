//! Two-tower retrieval model: a customer tower and an item tower map into
//! one space of unit vectors, so retrieval is a maximum inner product search
//! over precomputed item vectors.
//!
//! The item tower sees only an item's features (and, optionally, a hashed id
//! embedding that is dropped at random in training and absent for items
//! never sold in training): an article that never sold still gets a
//! meaningful vector, which is what lets retrieval propose new arrivals.
//! The customer tower sees the customer's own attributes and a pooled
//! summary of their recent purchases, embedded by the same item tower.
//!
//! Inputs are feature codes, not catalogue positions, so a served model can
//! embed items that were not in the catalogue when it was trained.

use burn::module::{Initializer, Module};
use burn::nn::{Dropout, DropoutConfig, Embedding, EmbeddingConfig, Linear, LinearConfig};
use burn::tensor::activation::relu;
use burn::tensor::{Device, Int, Tensor};
use serde::{Deserialize, Serialize};

use recforge_infer::bundle::HistoryPool;

/// Everything needed to rebuild the network's shapes (saved with runs and
/// export manifests).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TwoTowerConfig {
    /// Output (retrieval) dimension.
    pub d_model: usize,
    pub feature_dim: usize,
    pub hidden: usize,
    /// Hashed article-id embedding: buckets and width (0 = none).
    pub id_buckets: usize,
    pub id_dim: usize,
    pub dropout: f64,
    pub init_std: f64,
    /// (name, vocabulary size) of each item feature, in input order; the
    /// codes of feature f are offset by the vocabularies before it.
    pub item_features: Vec<(String, usize)>,
    /// As `item_features`, for the customer tower.
    pub user_features: Vec<(String, usize)>,
    pub history: HistoryPool,
}

impl TwoTowerConfig {
    fn vocab(list: &[(String, usize)]) -> usize {
        list.iter().map(|f| f.1).sum()
    }

    pub fn init(&self, device: &Device) -> TwoTower {
        let normal = Initializer::Normal {
            mean: 0.0,
            std: self.init_std,
        };
        let table = |n: usize, d: usize| {
            (n > 0 && d > 0).then(|| {
                EmbeddingConfig::new(n, d)
                    .with_initializer(normal.clone())
                    .init(device)
            })
        };
        let fd = self.feature_dim;
        let item_in = self.item_features.len() * fd + self.id_dim;
        let user_in = self.user_features.len() * fd
            + if self.history == HistoryPool::None {
                0
            } else {
                self.d_model
            };
        let mlp = |n_in: usize| Mlp {
            hidden: LinearConfig::new(n_in, self.hidden).init(device),
            out: LinearConfig::new(self.hidden, self.d_model).init(device),
            dropout: DropoutConfig::new(self.dropout).init(),
        };
        TwoTower {
            item_features: table(Self::vocab(&self.item_features), fd),
            item_id: table(self.id_buckets, self.id_dim),
            item_mlp: mlp(item_in.max(1)),
            user_features: table(Self::vocab(&self.user_features), fd),
            user_mlp: mlp(user_in.max(1)),
        }
    }
}

/// Two layers with a ReLU between: enough to mix features non-linearly.
#[derive(Module, Debug)]
pub struct Mlp {
    pub hidden: Linear,
    pub out: Linear,
    pub dropout: Dropout,
}

impl Mlp {
    /// `[n, in]` → `[n, out]`.
    pub fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        self.out
            .forward(self.dropout.forward(relu(self.hidden.forward(x))))
    }
}

#[derive(Module, Debug)]
pub struct TwoTower {
    /// `[Σ item vocabularies, feature_dim]`: all item features in one table.
    pub item_features: Option<Embedding>,
    /// `[id_buckets, id_dim]`.
    pub item_id: Option<Embedding>,
    pub item_mlp: Mlp,
    /// `[Σ customer vocabularies, feature_dim]`.
    pub user_features: Option<Embedding>,
    pub user_mlp: Mlp,
}

/// Rows scaled to unit L2 norm: `[n, d]` → `[n, d]`.
pub fn l2_normalize(x: Tensor<2>) -> Tensor<2> {
    let norm = x
        .clone()
        .powf_scalar(2.0)
        .sum_dim(1)
        .sqrt()
        .clamp_min(1e-12);
    x / norm
}

/// Looks up `codes` `[n, f]` in `table` and lays the f vectors side by side
/// → `[n, f * dim]`.
fn lookup(table: &Embedding, codes: Tensor<2, Int>) -> Tensor<2> {
    let [n, f] = codes.dims();
    let d = table.weight.dims()[1];
    table
        .weight
        .val()
        .select(0, codes.reshape([n * f]))
        .reshape([n, f * d])
}

impl TwoTower {
    pub fn d_model(&self) -> usize {
        self.item_mlp.out.weight.dims()[1]
    }

    /// Item vectors from feature codes `[n, n_item_features]` (already
    /// offset into the shared table), hashed id buckets `[n]` and id keep
    /// flags `[n, 1]` (1 = use the id vector, 0 = features only)
    /// → unit vectors `[n, d]`.
    pub fn item_embed(
        &self,
        codes: Tensor<2, Int>,
        id_bucket: Tensor<1, Int>,
        id_keep: Tensor<2>,
    ) -> Tensor<2> {
        let n = codes.dims()[0];
        let mut parts = Vec::new();
        if let Some(t) = &self.item_features {
            parts.push(lookup(t, codes));
        }
        if let Some(t) = &self.item_id {
            let d = t.weight.dims()[1];
            let v = t.weight.val().select(0, id_bucket).reshape([n, d]);
            parts.push(v * id_keep);
        }
        l2_normalize(self.item_mlp.forward(Tensor::cat(parts, 1)))
    }

    /// Customer vectors from feature codes `[b, n_user_features]` (offset)
    /// and pooled history vectors `[b, d]` (zeros without history)
    /// → unit vectors `[b, d]`.
    pub fn user_embed(
        &self,
        codes: Option<Tensor<2, Int>>,
        pooled: Option<Tensor<2>>,
    ) -> Tensor<2> {
        let mut parts = Vec::new();
        if let (Some(t), Some(c)) = (&self.user_features, codes) {
            parts.push(lookup(t, c));
        }
        if let Some(p) = pooled {
            parts.push(p);
        }
        l2_normalize(self.user_mlp.forward(Tensor::cat(parts, 1)))
    }

    /// Recency-weighted sum of history item vectors: `items` `[n, d]` holds
    /// the vectors, `index` `[b * l]` picks each slot's row, `weights`
    /// `[b, l]` (rows sum to 1, or 0 without history) → `[b, d]`.
    pub fn pool(items: Tensor<2>, index: Tensor<1, Int>, weights: Tensor<2>) -> Tensor<2> {
        let [b, l] = weights.dims();
        let d = items.dims()[1];
        let h = items.select(0, index).reshape([b, l, d]);
        (h * weights.reshape([b, l, 1])).sum_dim(1).reshape([b, d])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::TensorData;

    fn norms(t: Tensor<2>) -> Vec<f32> {
        t.powf_scalar(2.0)
            .sum_dim(1)
            .sqrt()
            .into_data()
            .convert::<f32>()
            .try_into_vec::<f32>()
            .unwrap()
    }

    #[test]
    fn both_towers_give_unit_vectors() {
        let dev = Device::flex();
        let cfg = TwoTowerConfig {
            d_model: 8,
            feature_dim: 4,
            hidden: 16,
            id_buckets: 10,
            id_dim: 3,
            dropout: 0.0,
            init_std: 0.5,
            item_features: vec![("a".into(), 3), ("b".into(), 5)],
            user_features: vec![("age".into(), 4)],
            history: HistoryPool::Recency,
        };
        dev.seed(3);
        let m = cfg.init(&dev);
        let codes =
            Tensor::<2, Int>::from_data(TensorData::new(vec![0i64, 3, 2, 7, 1, 4], [3, 2]), &dev);
        let ids = Tensor::<1, Int>::from_data(TensorData::new(vec![0i64, 9, 4], [3]), &dev);
        let keep = Tensor::<2>::from_data(TensorData::new(vec![1f32, 0.0, 1.0], [3, 1]), &dev);
        let items = m.item_embed(codes, ids, keep);
        for n in norms(items.clone()) {
            assert!((n - 1.0).abs() < 1e-5, "item norm {n}");
        }
        // Two customers, one with two purchases pooled, one without history.
        let idx = Tensor::<1, Int>::from_data(TensorData::new(vec![0i64, 2, 0, 0], [4]), &dev);
        let w =
            Tensor::<2>::from_data(TensorData::new(vec![0.25f32, 0.75, 0.0, 0.0], [2, 2]), &dev);
        let pooled = TwoTower::pool(items, idx, w);
        let ucodes = Tensor::<2, Int>::from_data(TensorData::new(vec![1i64, 3], [2, 1]), &dev);
        let users = m.user_embed(Some(ucodes), Some(pooled));
        for n in norms(users) {
            assert!((n - 1.0).abs() < 1e-5, "user norm {n}");
        }
    }
}
