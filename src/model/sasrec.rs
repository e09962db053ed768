//! SASRec-style sequential ranker: causal self-attention over a customer's
//! purchase sequence; the hidden state at position t scores the item bought
//! at t + 1 by a dot product with the same item representation that encodes
//! inputs (tied weights).
//!
//! An item's representation is its id embedding plus one embedding per
//! categorical feature (product type, colour, department, price bucket...),
//! so items that share features share signal, and rarely bought items are not
//! left with an untrained id vector alone.

use burn::module::{Initializer, Module};
use burn::nn::attention::generate_autoregressive_mask;
use burn::nn::{Embedding, EmbeddingConfig, LayerNorm, LayerNormConfig};
use burn::tensor::{Device, Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use super::dropout::FastDropout;
use super::encoder::{Encoder, EncoderConfig};
use crate::features::ItemFeature;

/// Epsilon of the LayerNorm after embedding + position (as SASRec's 1e-12).
pub const EMBED_NORM_EPS: f64 = 1e-12;
/// Epsilon of the encoder's and the final LayerNorms (burn's default).
pub const LAYER_NORM_EPS: f64 = 1e-5;

/// Everything needed to rebuild the network's shapes (saved with checkpoints
/// and, later, export manifests).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SasRecConfig {
    /// Catalogue size including the padding id 0.
    pub n_items: usize,
    pub max_len: usize,
    pub d_model: usize,
    pub n_heads: usize,
    pub n_layers: usize,
    pub d_ff: usize,
    pub dropout: f64,
    pub norm_first: bool,
    pub init_std: f64,
    /// (name, vocabulary size) of each item feature, in embedding order.
    pub features: Vec<(String, usize)>,
}

impl SasRecConfig {
    /// Builds the model with feature codes `feats` (aligned with `features`).
    pub fn init(&self, feats: &[ItemFeature], device: &Device) -> SasRec {
        assert_eq!(feats.len(), self.features.len(), "feature list mismatch");
        let normal = Initializer::Normal {
            mean: 0.0,
            std: self.init_std,
        };
        let emb = |n: usize| {
            EmbeddingConfig::new(n, self.d_model)
                .with_initializer(normal.clone())
                .init(device)
        };
        let codes = feats
            .iter()
            .map(|f| {
                let c: Vec<i64> = f.codes.iter().map(|&c| c as i64).collect();
                Tensor::<1, Int>::from_data(TensorData::new(c, [f.codes.len()]), device)
            })
            .collect();
        SasRec {
            item: emb(self.n_items),
            features: feats.iter().map(|f| emb(f.vocab)).collect(),
            codes,
            position: emb(self.max_len),
            norm: LayerNormConfig::new(self.d_model)
                .with_epsilon(EMBED_NORM_EPS)
                .init(device),
            dropout: FastDropout::new(self.dropout),
            encoder: EncoderConfig {
                d_model: self.d_model,
                d_ff: self.d_ff,
                n_heads: self.n_heads,
                n_layers: self.n_layers,
                dropout: self.dropout,
                norm_first: self.norm_first,
                layer_norm_eps: LAYER_NORM_EPS,
                initializer: normal,
            }
            .init(device),
            final_norm: self.norm_first.then(|| {
                LayerNormConfig::new(self.d_model)
                    .with_epsilon(LAYER_NORM_EPS)
                    .init(device)
            }),
        }
    }
}

#[derive(Module, Debug)]
pub struct SasRec {
    /// `[n_items, d]`, row 0 = padding.
    pub item: Embedding,
    /// One `[vocab_f, d]` table per item feature.
    pub features: Vec<Embedding>,
    /// Constant `[n_items]` code tables of each feature (not trained).
    pub codes: Vec<Tensor<1, Int>>,
    /// Learned positions `[max_len, d]`; the most recent item is at max_len - 1.
    pub position: Embedding,
    pub norm: LayerNorm,
    pub dropout: FastDropout,
    pub encoder: Encoder,
    /// Pre-norm stacks leave the residual stream unnormalised; this closes it.
    pub final_norm: Option<LayerNorm>,
}

impl SasRec {
    pub fn n_items(&self) -> usize {
        self.item.weight.dims()[0]
    }

    pub fn max_len(&self) -> usize {
        self.position.weight.dims()[0]
    }

    /// Representations of `ids` `[n]` → `[n, d]`.
    pub fn item_repr(&self, ids: Tensor<1, Int>) -> Tensor<2> {
        let mut x = self.item.weight.val().select(0, ids.clone());
        for (emb, codes) in self.features.iter().zip(&self.codes) {
            let c = codes.clone().select(0, ids.clone());
            x = x + emb.weight.val().select(0, c);
        }
        x
    }

    /// Representations of the whole catalogue `[n_items, d]` (row 0 = padding).
    pub fn item_table(&self) -> Tensor<2> {
        let mut x = self.item.weight.val();
        for (emb, codes) in self.features.iter().zip(&self.codes) {
            x = x + emb.weight.val().select(0, codes.clone());
        }
        x
    }

    /// Hidden states for right-aligned inputs `[b, l]` (0 = padding) whose
    /// first column is position `pos_offset`, given the item table
    /// `[n_items, d]` → `[b, l, d]`.
    pub fn encode(
        &self,
        table: &Tensor<2>,
        inputs: Tensor<2, Int>,
        pos_offset: usize,
    ) -> Tensor<3> {
        let [b, l] = inputs.dims();
        let d = table.dims()[1];
        let x = table.clone().select(0, inputs.clone().reshape([b * l]));
        self.encode_embedded(x.reshape([b, l, d]), inputs, pos_offset)
    }

    /// As `encode`, from already embedded inputs `[b, l, d]` → `[b, l, d]`.
    pub fn encode_embedded(
        &self,
        x: Tensor<3>,
        inputs: Tensor<2, Int>,
        pos_offset: usize,
    ) -> Tensor<3> {
        let [b, l, d] = x.dims();
        let device = x.device();
        let pos = self
            .position
            .weight
            .val()
            .slice(pos_offset..pos_offset + l)
            .reshape([1, l, d]);
        let x = self.dropout.forward(self.norm.forward(x + pos));
        let causal = generate_autoregressive_mask(b, l, &device);
        let pad = inputs.equal_elem(0);
        let h = self.encoder.forward(x, &pad, &causal);
        match &self.final_norm {
            Some(norm) => norm.forward(h),
            None => h,
        }
    }

    /// Scores of every real item (ids 1..n_items) for each history's next
    /// purchase: inputs `[b, l]` → `[b, n_items - 1]`; column j is item j + 1.
    pub fn score_next(&self, inputs: Tensor<2, Int>) -> Tensor<2> {
        self.score_next_with(&self.item_table(), inputs)
    }

    /// As `score_next` with the item table `[n_items, d]` computed once by
    /// the caller: inputs `[b, l]` → `[b, n_items - 1]`.
    pub fn score_next_with(&self, table: &Tensor<2>, inputs: Tensor<2, Int>) -> Tensor<2> {
        let [b, l] = inputs.dims();
        let h = self.encode(table, inputs, self.max_len() - l);
        let [_, _, d] = h.dims();
        let last = h.slice([0..b, l - 1..l]).reshape([b, d]);
        let n = self.n_items();
        last.matmul(table.clone().slice(1..n).transpose())
    }
}
