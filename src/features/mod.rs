//! What the models consume, computed from training rows only: item features
//! (here: one code per item per feature, 0 = unknown, plus an optional price
//! bucket), SASRec's training windows and batches ([`seq`]), and the
//! two-tower model's samples and customer inputs ([`tower`]).

pub mod seq;
pub mod tower;

use crate::config::experiment::ModelConfig;
use crate::data::Dataset;
use crate::error::{Error, Result};

#[derive(Debug, Clone, PartialEq)]
pub struct ItemFeature {
    pub name: String,
    /// Codes 0..vocab; 0 = unknown.
    pub vocab: usize,
    /// `codes[item]`, item 0 (padding) has code 0.
    pub codes: Vec<u32>,
}

/// The feature set a model config asks for, checked against the cache.
pub fn item_features(
    ds: &Dataset,
    train_rows: &[usize],
    cfg: &ModelConfig,
) -> Result<Vec<ItemFeature>> {
    let mut out = Vec::new();
    if cfg.item_features {
        for f in &ds.items.features {
            if !cfg.feature_names.is_empty() && !cfg.feature_names.contains(&f.name) {
                continue;
            }
            out.push(ItemFeature {
                name: f.name.clone(),
                vocab: f.vocab.len().max(1),
                codes: f.codes.clone(),
            });
        }
        for want in &cfg.feature_names {
            if want != "price_bucket" && ds.items.feature(want).is_none() {
                let have: Vec<&str> = ds.items.features.iter().map(|f| f.name.as_str()).collect();
                return Err(Error::Config(format!(
                    "model.feature_names: `{want}` is not an item feature of `{}` (it has: {})",
                    ds.meta.name,
                    have.join(", ")
                )));
            }
        }
        let want_price =
            cfg.feature_names.is_empty() || cfg.feature_names.iter().any(|n| n == "price_bucket");
        if cfg.price_buckets > 0 && ds.meta.has_price && want_price {
            out.push(price_buckets(ds, train_rows, cfg.price_buckets));
        }
    }
    Ok(out)
}

/// Each item's median training price, cut at quantiles of those medians so
/// the buckets hold similar numbers of items. Items never sold get 0.
pub fn price_buckets(ds: &Dataset, train_rows: &[usize], n: usize) -> ItemFeature {
    let n_items = ds.items.len();
    let mut per_item: Vec<Vec<f32>> = vec![Vec::new(); n_items];
    for &r in train_rows {
        let p = ds.inter.price[r];
        if p > 0.0 && p.is_finite() {
            per_item[ds.inter.item[r] as usize].push(p);
        }
    }
    let median: Vec<Option<f32>> = per_item
        .into_iter()
        .map(|mut v| {
            if v.is_empty() {
                return None;
            }
            v.sort_by(f32::total_cmp);
            Some(v[v.len() / 2])
        })
        .collect();
    let mut sorted: Vec<f32> = median.iter().flatten().copied().collect();
    sorted.sort_by(f32::total_cmp);
    let cuts: Vec<f32> = (1..n)
        .map(|q| {
            sorted
                .get(q * sorted.len() / n)
                .copied()
                .unwrap_or(f32::MAX)
        })
        .collect();
    let codes = median
        .iter()
        .map(|m| match m {
            None => 0,
            Some(p) => 1 + cuts.partition_point(|c| c <= p) as u32,
        })
        .collect();
    ItemFeature {
        name: "price_bucket".into(),
        vocab: n + 1,
        codes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::TimeUnit;
    use crate::data::split::tests::toy;

    #[test]
    fn price_buckets_split_items_by_quantile() {
        let mut ds = toy(&[1, 1, 1, 1], &[1, 2, 3, 4], &[1, 2, 3, 4], TimeUnit::Day);
        ds.inter.price = vec![1.0, 2.0, 3.0, 4.0];
        ds.meta.has_price = true;
        let f = price_buckets(&ds, &[0, 1, 2, 3], 2);
        assert_eq!(f.codes, vec![0, 1, 1, 2, 2]);
        // An item with no training sale has no bucket.
        let f = price_buckets(&ds, &[0, 1], 2);
        assert_eq!(f.codes[3], 0);
        assert_eq!(f.vocab, 3);
    }
}
