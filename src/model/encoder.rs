//! The causal transformer encoder SASRec runs: burn's `TransformerEncoder`
//! computation, layer for layer (post-norm or pre-norm, exact GELU, masked
//! scores filled with −1e4), with the same parameter names, so bundles and
//! the inference crate read it unchanged. It exists for its dropout: burn's
//! draws a ChaCha20 float per element, [`FastDropout`] a hashed counter.

use burn::module::{Initializer, Module};
use burn::nn::{LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::tensor::activation::{gelu, softmax};
use burn::tensor::{Bool, Device, Tensor};

use super::dropout::FastDropout;

/// Scores at masked positions (burn's `MultiHeadAttention::min_float`).
pub const MASK_VALUE: f64 = -1.0e4;

#[derive(Debug, Clone)]
pub struct EncoderConfig {
    pub d_model: usize,
    pub d_ff: usize,
    pub n_heads: usize,
    pub n_layers: usize,
    pub dropout: f64,
    pub norm_first: bool,
    pub layer_norm_eps: f64,
    pub initializer: Initializer,
}

impl EncoderConfig {
    pub fn init(&self, device: &Device) -> Encoder {
        Encoder {
            layers: (0..self.n_layers).map(|_| self.layer(device)).collect(),
        }
    }

    fn linear(&self, d_in: usize, d_out: usize, device: &Device) -> Linear {
        LinearConfig::new(d_in, d_out)
            .with_initializer(self.initializer.clone())
            .init(device)
    }

    fn norm(&self, device: &Device) -> LayerNorm {
        LayerNormConfig::new(self.d_model)
            .with_epsilon(self.layer_norm_eps)
            .init(device)
    }

    fn layer(&self, device: &Device) -> EncoderLayer {
        let d = self.d_model;
        EncoderLayer {
            mha: Attention {
                query: self.linear(d, d, device),
                key: self.linear(d, d, device),
                value: self.linear(d, d, device),
                output: self.linear(d, d, device),
                dropout: FastDropout::new(self.dropout),
                n_heads: self.n_heads,
            },
            pwff: FeedForward {
                linear_inner: self.linear(d, self.d_ff, device),
                linear_outer: self.linear(self.d_ff, d, device),
                dropout: FastDropout::new(self.dropout),
            },
            norm_1: self.norm(device),
            norm_2: self.norm(device),
            dropout: FastDropout::new(self.dropout),
            norm_first: self.norm_first,
        }
    }
}

#[derive(Module, Debug)]
pub struct Encoder {
    pub layers: Vec<EncoderLayer>,
}

impl Encoder {
    /// `x` `[b, l, d]`, `mask_pad` `[b, l]` (true = padding), `mask_attn`
    /// `[b, l, l]` (true = hidden) → `[b, l, d]`.
    pub fn forward(
        &self,
        mut x: Tensor<3>,
        mask_pad: &Tensor<2, Bool>,
        mask_attn: &Tensor<3, Bool>,
    ) -> Tensor<3> {
        for layer in &self.layers {
            x = layer.forward(x, mask_pad, mask_attn);
        }
        x
    }
}

#[derive(Module, Debug)]
pub struct EncoderLayer {
    pub mha: Attention,
    pub pwff: FeedForward,
    /// Post-norm: after the attention block; pre-norm: before the feed-forward.
    pub norm_1: LayerNorm,
    /// Post-norm: after the feed-forward block; pre-norm: before the attention.
    pub norm_2: LayerNorm,
    /// On both residual branches.
    pub dropout: FastDropout,
    pub norm_first: bool,
}

impl EncoderLayer {
    /// `[b, l, d]` → `[b, l, d]`.
    fn forward(
        &self,
        x: Tensor<3>,
        mask_pad: &Tensor<2, Bool>,
        mask_attn: &Tensor<3, Bool>,
    ) -> Tensor<3> {
        if self.norm_first {
            let a = self
                .mha
                .forward(self.norm_2.forward(x.clone()), mask_pad, mask_attn);
            let x = x + self.dropout.forward(a);
            let f = self.pwff.forward(self.norm_1.forward(x.clone()));
            x + self.dropout.forward(f)
        } else {
            let a = self.mha.forward(x.clone(), mask_pad, mask_attn);
            let x = self.norm_1.forward(x + self.dropout.forward(a));
            let f = self.pwff.forward(x.clone());
            self.norm_2.forward(x + self.dropout.forward(f))
        }
    }
}

#[derive(Module, Debug)]
pub struct Attention {
    pub query: Linear,
    pub key: Linear,
    pub value: Linear,
    pub output: Linear,
    /// On the attention weights.
    pub dropout: FastDropout,
    pub n_heads: usize,
}

impl Attention {
    /// Self-attention over `x` `[b, l, d]` → `[b, l, d]`.
    fn forward(
        &self,
        x: Tensor<3>,
        mask_pad: &Tensor<2, Bool>,
        mask_attn: &Tensor<3, Bool>,
    ) -> Tensor<3> {
        let [b, l, d] = x.dims();
        let h = self.n_heads;
        let dk = d / h;
        // [b, l, d] → [b, h, l, dk]
        let heads = |lin: &Linear| {
            lin.forward(x.clone())
                .reshape([b, l, h, dk])
                .swap_dims(1, 2)
        };
        let (q, k, v) = (heads(&self.query), heads(&self.key), heads(&self.value));
        let scores = q
            .matmul(k.transpose())
            .div_scalar((dk as f32).sqrt())
            .mask_fill(mask_pad.clone().reshape([b, 1, 1, l]), MASK_VALUE)
            .mask_fill(mask_attn.clone().reshape([b, 1, l, l]), MASK_VALUE);
        let weights = self.dropout.forward(softmax(scores, 3));
        let context = weights.matmul(v).swap_dims(1, 2).reshape([b, l, d]);
        self.output.forward(context)
    }
}

#[derive(Module, Debug)]
pub struct FeedForward {
    pub linear_inner: Linear,
    pub linear_outer: Linear,
    /// After the activation.
    pub dropout: FastDropout,
}

impl FeedForward {
    /// `[b, l, d]` → `[b, l, d]`, through `d_ff` with exact (erf) GELU.
    fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let x = self.dropout.forward(gelu(self.linear_inner.forward(x)));
        self.linear_outer.forward(x)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::nn::attention::generate_autoregressive_mask;
    use burn::nn::transformer::{TransformerEncoderConfig, TransformerEncoderInput};
    use burn::store::{ModuleSnapshot, SafetensorsStore};
    use burn::tensor::TensorData;

    /// Ours and burn's, with the same weights (moved through a
    /// safetensors file by name), give the same outputs in both norm modes.
    #[test]
    fn the_same_computation_as_burns_encoder() {
        let dev = Device::flex();
        for norm_first in [false, true] {
            dev.seed(11);
            let burns = TransformerEncoderConfig::new(16, 32, 2, 2)
                .with_dropout(0.2)
                .with_norm_first(norm_first)
                .with_layer_norm_eps(1e-5)
                .init(&dev);
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("w.safetensors");
            burns
                .save_into(&mut SafetensorsStore::from_file(path.clone()).overwrite(true))
                .unwrap();
            let mut ours = EncoderConfig {
                d_model: 16,
                d_ff: 32,
                n_heads: 2,
                n_layers: 2,
                dropout: 0.2,
                norm_first,
                layer_norm_eps: 1e-5,
                initializer: Initializer::Zeros,
            }
            .init(&dev);
            let applied = ours
                .load_from(&mut SafetensorsStore::from_file(path))
                .unwrap();
            assert!(
                applied.errors.is_empty()
                    && applied.missing.is_empty()
                    && applied.unused.is_empty(),
                "{applied:?}"
            );
            let x = Tensor::<3>::random(
                [3, 5, 16],
                burn::tensor::Distribution::Normal(0.0, 1.0),
                &dev,
            );
            let ids = Tensor::<2, burn::tensor::Int>::from_data(
                TensorData::new(vec![0i64, 0, 3, 4, 5, 1, 2, 3, 4, 5, 0, 9, 8, 7, 6], [3, 5]),
                &dev,
            );
            let (pad, causal) = (ids.equal_elem(0), generate_autoregressive_mask(3, 5, &dev));
            let want = burns.forward(
                TransformerEncoderInput::new(x.clone())
                    .mask_pad(pad.clone())
                    .mask_attn(causal.clone()),
            );
            let got = ours.forward(x, &pad, &causal);
            let diff = (want - got).abs().max().into_scalar::<f32>();
            assert!(diff < 1e-5, "norm_first {norm_first}: {diff}");
        }
    }
}
