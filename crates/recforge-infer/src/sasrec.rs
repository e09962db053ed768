//! The sequential ranker's forward pass, for one customer or many stacked.
//!
//! Only the customer's real items are processed (no padding): in the
//! trained model, padding positions are masked out of every real
//! position's attention, so they cannot change its result. Positions are
//! right-aligned as in training: the most recent item sits at
//! `max_len - 1`. The last layer computes its query, feed-forward and norms
//! for the last position only, since nothing else is read.

use crate::bundle::{Bundle, ModelKind, SasRecSpec};
use crate::nn::{LayerNorm, Linear, dot, gelu_inplace, softmax};
use crate::{Error, Result};

struct Layer {
    query: Linear,
    key: Linear,
    value: Linear,
    output: Linear,
    inner: Linear,
    outer: Linear,
    norm_1: LayerNorm,
    norm_2: LayerNorm,
}

pub struct SasRecModel {
    pub spec: SasRecSpec,
    /// Item representations `[n_items, d]` (id + features), row 0 = padding.
    table: Vec<f32>,
    /// Per feature: its embedding table `[vocab, d]`, for new articles.
    features: Vec<Vec<f32>>,
    position: Vec<f32>,
    norm: LayerNorm,
    layers: Vec<Layer>,
    final_norm: Option<LayerNorm>,
}

impl SasRecModel {
    pub fn from_bundle(b: &Bundle) -> Result<Self> {
        let m = &b.manifest;
        if m.kind != ModelKind::Sasrec {
            return Err(b.invalid(format!("a {:?} bundle, not a sequential ranker", m.kind)));
        }
        let spec = m
            .sasrec
            .clone()
            .ok_or_else(|| b.invalid("the manifest has no `sasrec` section".into()))?;
        let d = spec.d_model;
        // Only GELU deserialises: the activation needs no check here.
        if spec.n_heads == 0 || d % spec.n_heads != 0 {
            return Err(b.invalid(format!(
                "unsupported shape: d_model {d}, {} heads",
                spec.n_heads
            )));
        }
        if m.items.ids.len() != spec.n_items {
            return Err(b.invalid(format!(
                "{} item ids for {} items",
                m.items.ids.len(),
                spec.n_items
            )));
        }
        let mut table = b.tensor("item.weight", &[spec.n_items, d])?;
        let mut features = Vec::new();
        for (fi, f) in m.items.features.iter().enumerate() {
            let vocab = f.vocab.len().max(1);
            let t = b.tensor(&format!("features.{fi}.weight"), &[vocab, d])?;
            for (item, &c) in f.codes.iter().enumerate() {
                let src = &t[c as usize * d..(c as usize + 1) * d];
                table[item * d..(item + 1) * d]
                    .iter_mut()
                    .zip(src)
                    .for_each(|(x, y)| *x += y);
            }
            features.push(t);
        }
        let eps = spec.layer_norm_eps;
        let layers = (0..spec.n_layers)
            .map(|l| {
                let p = format!("encoder.layers.{l}");
                Ok(Layer {
                    query: Linear::load(b, &format!("{p}.mha.query"), d, d)?,
                    key: Linear::load(b, &format!("{p}.mha.key"), d, d)?,
                    value: Linear::load(b, &format!("{p}.mha.value"), d, d)?,
                    output: Linear::load(b, &format!("{p}.mha.output"), d, d)?,
                    inner: Linear::load(b, &format!("{p}.pwff.linear_inner"), d, spec.d_ff)?,
                    outer: Linear::load(b, &format!("{p}.pwff.linear_outer"), spec.d_ff, d)?,
                    norm_1: LayerNorm::load(b, &format!("{p}.norm_1"), d, eps)?,
                    norm_2: LayerNorm::load(b, &format!("{p}.norm_2"), d, eps)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(SasRecModel {
            position: b.tensor("position.weight", &[spec.max_len, d])?,
            norm: LayerNorm::load(b, "norm", d, spec.embed_norm_eps)?,
            final_norm: if spec.norm_first {
                Some(LayerNorm::load(b, "final_norm", d, eps)?)
            } else {
                None
            },
            table,
            features,
            layers,
            spec,
        })
    }

    pub fn d_model(&self) -> usize {
        self.spec.d_model
    }

    /// Item representations `[n_items, d]`, row 0 = padding.
    pub fn item_table(&self) -> &[f32] {
        &self.table
    }

    /// The representation of an article the model never saw, from its
    /// feature codes (one per manifest item feature; 0 = unknown): the sum
    /// of its feature embeddings, with no id part.
    pub fn item_from_features(&self, codes: &[u32]) -> Result<Vec<f32>> {
        let d = self.spec.d_model;
        if codes.len() != self.features.len() {
            return Err(Error::Shape {
                what: "feature codes of a new article".into(),
                expected: self.features.len(),
                got: codes.len(),
            });
        }
        let mut v = vec![0f32; d];
        for (t, &c) in self.features.iter().zip(codes) {
            let row = t.get(c as usize * d..(c as usize + 1) * d).ok_or_else(|| {
                Error::Invalid(format!("feature code {c} is outside its vocabulary"))
            })?;
            v.iter_mut().zip(row).for_each(|(x, y)| *x += y);
        }
        Ok(v)
    }

    /// The hidden state after the customer's last purchase `[d]`: the query
    /// whose inner product with an item representation is its score.
    /// `history` holds item indices, oldest first (only the last `max_len`
    /// count; ids outside the table are skipped). None without history.
    pub fn encode(&self, history: &[u32]) -> Option<Vec<f32>> {
        self.encode_many(&[history]).pop().flatten()
    }

    /// [`encode`](Self::encode) for many customers at once: their positions
    /// are stacked into one matrix, so every linear layer is one larger
    /// matrix product instead of one small product per customer (attention
    /// alone stays per customer). Results are in input order.
    pub fn encode_many(&self, histories: &[&[u32]]) -> Vec<Option<Vec<f32>>> {
        let n_items = self.spec.n_items as u32;
        let d = self.spec.d_model;
        // Each customer's kept items, most recent `max_len`.
        let kept: Vec<Vec<u32>> = histories
            .iter()
            .map(|h| {
                let items: Vec<u32> = h
                    .iter()
                    .copied()
                    .filter(|&i| i > 0 && i < n_items)
                    .collect();
                items[items.len().saturating_sub(self.spec.max_len)..].to_vec()
            })
            .collect();
        let lens: Vec<usize> = kept.iter().map(Vec::len).filter(|&n| n > 0).collect();
        let mut x = Vec::with_capacity(lens.iter().sum::<usize>() * d);
        for items in &kept {
            let p0 = self.spec.max_len - items.len();
            for (j, &it) in items.iter().enumerate() {
                let e = &self.table[it as usize * d..(it as usize + 1) * d];
                let p = &self.position[(p0 + j) * d..(p0 + j + 1) * d];
                x.extend(e.iter().zip(p).map(|(a, b)| a + b));
            }
        }
        self.norm.forward(&mut x);
        let last = self.layers.len() - 1;
        for (l, layer) in self.layers.iter().enumerate() {
            x = self.layer(layer, x, &lens, l == last);
        }
        if let Some(norm) = &self.final_norm {
            norm.forward(&mut x);
        }
        // After the last layer one row per customer with history is left.
        let mut rows = x.chunks(d);
        kept.iter()
            .map(|items| {
                if items.is_empty() {
                    None
                } else {
                    rows.next().map(<[f32]>::to_vec)
                }
            })
            .collect()
    }

    /// One encoder layer over `x` `[Σ lens, d]` (customers' rows stacked);
    /// with `only_last`, returns each customer's last row `[customers, d]`.
    fn layer(&self, layer: &Layer, x: Vec<f32>, lens: &[usize], only_last: bool) -> Vec<f32> {
        let d = self.spec.d_model;
        let pre = self.spec.norm_first;
        let normed = if pre {
            let mut y = x.clone();
            layer.norm_2.forward(&mut y);
            y
        } else {
            x.clone()
        };
        let attn = self.attention(layer, &normed, lens, only_last);
        // Residual over the rows that go on.
        let mut x = if only_last { last_rows(&x, lens, d) } else { x };
        x.iter_mut().zip(&attn).for_each(|(a, b)| *a += b);
        if !pre {
            layer.norm_1.forward(&mut x);
        }
        let mut ff_in = x.clone();
        if pre {
            layer.norm_1.forward(&mut ff_in);
        }
        let mut h = layer.inner.forward(&ff_in);
        gelu_inplace(&mut h);
        let ff = layer.outer.forward(&h);
        x.iter_mut().zip(&ff).for_each(|(a, b)| *a += b);
        if !pre {
            layer.norm_2.forward(&mut x);
        }
        x
    }

    /// Causal multi-head self-attention within each customer's rows: `x`
    /// `[Σ lens, d]` → `[Σ lens, d]`, or each customer's last row only
    /// `[customers, d]`.
    fn attention(&self, layer: &Layer, x: &[f32], lens: &[usize], only_last: bool) -> Vec<f32> {
        let d = self.spec.d_model;
        let heads = self.spec.n_heads;
        let dk = d / heads;
        let q_in = if only_last {
            last_rows(x, lens, d)
        } else {
            x.to_vec()
        };
        let q = layer.query.forward(&q_in);
        let k = layer.key.forward(x);
        let v = layer.value.forward(x);
        let scale = (dk as f32).sqrt();
        let mut ctx = vec![0f32; q_in.len()];
        let mut w = vec![0f32; lens.iter().copied().max().unwrap_or(0)];
        let (mut start, mut qi) = (0, 0);
        for &n in lens {
            let first = if only_last { n - 1 } else { 0 };
            for i in first..n {
                for h in 0..heads {
                    let qv = &q[qi * d + h * dk..qi * d + (h + 1) * dk];
                    // Keys after i are masked: their weight is exactly 0 in f32.
                    for (j, wj) in w.iter_mut().enumerate().take(i + 1) {
                        let r = start + j;
                        let kv = &k[r * d + h * dk..r * d + (h + 1) * dk];
                        *wj = dot(qv, kv) / scale;
                    }
                    softmax(&mut w[..=i]);
                    let out = &mut ctx[qi * d + h * dk..qi * d + (h + 1) * dk];
                    for (j, &wj) in w.iter().enumerate().take(i + 1) {
                        let r = start + j;
                        let vv = &v[r * d + h * dk..r * d + (h + 1) * dk];
                        out.iter_mut().zip(vv).for_each(|(o, x)| *o += wj * x);
                    }
                }
                qi += 1;
            }
            start += n;
        }
        layer.output.forward(&ctx)
    }
}

/// Each customer's last row of the stacked `x` `[Σ lens, d]` → `[customers, d]`.
fn last_rows(x: &[f32], lens: &[usize], d: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(lens.len() * d);
    let mut end = 0;
    for &n in lens {
        end += n;
        out.extend_from_slice(&x[(end - 1) * d..end * d]);
    }
    out
}
