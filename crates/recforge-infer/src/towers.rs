//! The two-tower model's forward passes: item vectors from feature codes
//! (and a hashed id vector where the article sold in training), customer
//! vectors from attribute codes and pooled purchase history. Both are unit
//! vectors; a customer's candidates are the items with the largest inner
//! product.

use crate::bundle::{Bundle, HistoryPool, ModelKind, TwoTowerSpec, UserFeatureSpec, fnv1a};
use crate::nn::{Linear, l2_normalize, relu};
use crate::{Error, Result};

struct Mlp {
    hidden: Linear,
    out: Linear,
}

impl Mlp {
    fn load(b: &Bundle, prefix: &str, d_in: usize, hidden: usize, d_out: usize) -> Result<Self> {
        Ok(Mlp {
            hidden: Linear::load(b, &format!("{prefix}.hidden"), d_in, hidden)?,
            out: Linear::load(b, &format!("{prefix}.out"), hidden, d_out)?,
        })
    }

    fn forward(&self, x: &[f32]) -> Vec<f32> {
        let mut h = self.hidden.forward(x);
        h.iter_mut().for_each(|v| *v = relu(*v));
        self.out.forward(&h)
    }
}

/// A shared table of several categorical features: feature f's code c is
/// row `offsets[f] + c`.
struct Features {
    table: Vec<f32>,
    offsets: Vec<usize>,
    vocab: Vec<usize>,
    dim: usize,
}

impl Features {
    fn load(b: &Bundle, name: &str, vocab: Vec<usize>, dim: usize) -> Result<Option<Self>> {
        if vocab.is_empty() {
            return Ok(None);
        }
        let total: usize = vocab.iter().sum();
        let mut offsets = Vec::with_capacity(vocab.len());
        let mut acc = 0;
        for v in &vocab {
            offsets.push(acc);
            acc += v;
        }
        Ok(Some(Features {
            table: b.tensor(&format!("{name}.weight"), &[total, dim])?,
            offsets,
            vocab,
            dim,
        }))
    }

    /// Appends the embeddings of `codes` (one per feature) to `out`.
    fn lookup(&self, codes: &[u32], out: &mut Vec<f32>) -> Result<()> {
        if codes.len() != self.vocab.len() {
            return Err(Error::Shape {
                what: "feature codes".into(),
                expected: self.vocab.len(),
                got: codes.len(),
            });
        }
        for (f, &c) in codes.iter().enumerate() {
            if c as usize >= self.vocab[f] {
                return Err(Error::Invalid(format!(
                    "code {c} of feature {f} is outside its {} values",
                    self.vocab[f]
                )));
            }
            let row = self.offsets[f] + c as usize;
            out.extend_from_slice(&self.table[row * self.dim..(row + 1) * self.dim]);
        }
        Ok(())
    }
}

pub struct TwoTowerModel {
    pub spec: TwoTowerSpec,
    items: Option<Features>,
    ids: Option<Vec<f32>>,
    item_mlp: Mlp,
    users: Option<Features>,
    user_mlp: Mlp,
    /// Columns of the item features that read 0 when the id is hidden.
    hidden_cols: Vec<usize>,
}

impl TwoTowerModel {
    pub fn from_bundle(b: &Bundle) -> Result<Self> {
        let m = &b.manifest;
        if m.kind != ModelKind::TwoTower {
            return Err(b.invalid(format!("a {:?} bundle, not a two-tower model", m.kind)));
        }
        let spec = m
            .two_tower
            .clone()
            .ok_or_else(|| b.invalid("the manifest has no `two_tower` section".into()))?;
        let fd = spec.feature_dim;
        let item_vocab: Vec<usize> = m
            .items
            .features
            .iter()
            .map(|f| f.vocab.len().max(1))
            .collect();
        let user_vocab: Vec<usize> = m
            .user_features
            .iter()
            .map(|u| match &u.spec {
                UserFeatureSpec::AgeBucket { vocab, .. } => *vocab,
                UserFeatureSpec::Categorical { vocab } => vocab.len().max(1),
                UserFeatureSpec::Hashed { buckets } => buckets + 1,
            })
            .collect();
        let item_in = item_vocab.len() * fd + spec.id_dim;
        let pooled = if spec.history == HistoryPool::None {
            0
        } else {
            spec.d_model
        };
        let user_in = user_vocab.len() * fd + pooled;
        let ids = if spec.id_buckets > 0 && spec.id_dim > 0 {
            Some(b.tensor("item_id.weight", &[spec.id_buckets, spec.id_dim])?)
        } else {
            None
        };
        let hidden_cols = m
            .items
            .features
            .iter()
            .enumerate()
            .filter(|(_, f)| spec.hidden_with_id.contains(&f.name))
            .map(|(i, _)| i)
            .collect();
        Ok(TwoTowerModel {
            items: Features::load(b, "item_features", item_vocab, fd)?,
            ids,
            item_mlp: Mlp::load(b, "item_mlp", item_in.max(1), spec.hidden, spec.d_model)?,
            users: Features::load(b, "user_features", user_vocab, fd)?,
            user_mlp: Mlp::load(b, "user_mlp", user_in.max(1), spec.hidden, spec.d_model)?,
            hidden_cols,
            spec,
        })
    }

    pub fn d_model(&self) -> usize {
        self.spec.d_model
    }

    /// Unit vectors `[n, d]` of items given their feature codes (`codes`
    /// holds n rows, one code per item feature; 0 = unknown) and hashed id
    /// buckets (`None` = no trained id: a new article, embedded from its
    /// features with the id-linked ones read as unknown).
    pub fn item_vectors(&self, codes: &[Vec<u32>], ids: &[Option<u32>]) -> Result<Vec<f32>> {
        let mut x = Vec::new();
        for (c, id) in codes.iter().zip(ids) {
            let mut c = c.clone();
            if id.is_none() {
                for &col in &self.hidden_cols {
                    if let Some(v) = c.get_mut(col) {
                        *v = 0;
                    }
                }
            }
            if let Some(f) = &self.items {
                f.lookup(&c, &mut x)?;
            }
            if let Some(t) = &self.ids {
                let dim = self.spec.id_dim;
                match id {
                    Some(bucket) => {
                        let b = *bucket as usize % self.spec.id_buckets;
                        x.extend_from_slice(&t[b * dim..(b + 1) * dim]);
                    }
                    None => x.extend(std::iter::repeat_n(0.0, dim)),
                }
            }
        }
        let mut y = self.item_mlp.forward(&x);
        l2_normalize(&mut y, self.spec.d_model);
        Ok(y)
    }

    /// The item tower's inputs for the bundle's own catalogue (item index
    /// order, padding row included): feature codes, and the id bucket of
    /// every article with a trained id vector (sold in training).
    pub fn catalogue_inputs(&self, m: &crate::Manifest) -> (Vec<Vec<u32>>, Vec<Option<u32>>) {
        let n = m.items.ids.len();
        let codes = (0..n)
            .map(|i| m.items.features.iter().map(|f| f.codes[i]).collect())
            .collect();
        let ids = (0..n)
            .map(|i| {
                m.items
                    .known
                    .get(i)
                    .copied()
                    .unwrap_or(false)
                    .then(|| self.id_bucket(&m.items.ids[i]))
            })
            .collect();
        (codes, ids)
    }

    /// The hashed id bucket of an article id.
    pub fn id_bucket(&self, article_id: &str) -> u32 {
        if self.spec.id_buckets == 0 {
            0
        } else {
            (fnv1a(article_id) % self.spec.id_buckets as u64) as u32
        }
    }

    /// Pooling weights of past purchases `days_ago` (0 = the day served),
    /// most recent `history_len` only, summing to 1; empty without pooling.
    pub fn history_weights(&self, days_ago: &[f64]) -> Vec<f32> {
        let w: Vec<f64> = days_ago
            .iter()
            .map(|&a| match self.spec.history {
                HistoryPool::Recency => 0.5f64.powf(a / self.spec.half_life_days),
                _ => 1.0,
            })
            .collect();
        let total: f64 = w.iter().sum();
        w.iter()
            .map(|&x| if total > 0.0 { (x / total) as f32 } else { 0.0 })
            .collect()
    }

    /// Unit vectors `[n, d]` of customers: attribute codes (n rows) and,
    /// with history pooling, each customer's pooled history vector
    /// (n rows of d; zeros without history).
    pub fn user_vectors(&self, codes: &[Vec<u32>], pooled: Option<&[f32]>) -> Result<Vec<f32>> {
        let d = self.spec.d_model;
        let pooling = self.spec.history != HistoryPool::None;
        if pooling && pooled.is_none_or(|p| p.len() != codes.len() * d) {
            return Err(Error::Shape {
                what: "pooled history vectors".into(),
                expected: codes.len() * d,
                got: pooled.map_or(0, <[f32]>::len),
            });
        }
        let mut x = Vec::new();
        for (r, c) in codes.iter().enumerate() {
            if let Some(f) = &self.users {
                f.lookup(c, &mut x)?;
            }
            if pooling && let Some(p) = pooled {
                x.extend_from_slice(&p[r * d..(r + 1) * d]);
            }
        }
        let mut y = self.user_mlp.forward(&x);
        l2_normalize(&mut y, d);
        Ok(y)
    }
}
