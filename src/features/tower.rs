//! What the two-tower model reads: item feature codes and hashed ids,
//! customer attribute codes, and training samples of
//! (customer state before a purchase, purchased article).
//!
//! Feature codes of all features of one tower share a single embedding
//! table: feature f's codes are offset by the vocabulary sizes of the
//! features before it, so a batch is one lookup, not one per feature.

use recforge_infer::bundle::{UserFeature, UserFeatureSpec};

use crate::config::experiment::{HistoryPool, TowerConfig};
use crate::data::Dataset;
use crate::data::history::History;
use crate::data::{AGE_BUCKETS, age_bucket};
use crate::error::{Error, Result};
use crate::features::ItemFeature;

pub use recforge_infer::bundle::fnv1a;

/// Hashed id bucket of an article id.
pub fn id_bucket(id: &str, buckets: usize) -> u32 {
    if buckets == 0 {
        0
    } else {
        (fnv1a(id) % buckets as u64) as u32
    }
}

/// Per-item inputs of the item tower, indexed by dense item id.
#[derive(Debug, Clone)]
pub struct ItemInputs {
    /// (name, vocabulary) in input order.
    pub features: Vec<(String, usize)>,
    /// `codes[item * F + f]`, offset into the shared table.
    codes: Vec<i64>,
    id_bucket: Vec<i64>,
    /// Sold in training: the item's id vector was trained. Others (new
    /// arrivals) are embedded from features alone.
    pub known: Vec<bool>,
    /// (column, code of "unknown") of the features hidden together with the
    /// id (see `gather`): the price bucket, which only sold items have, and
    /// the configured identity-like features.
    hidden: Vec<(usize, i64)>,
}

impl ItemInputs {
    pub fn build(
        ds: &Dataset,
        feats: &[ItemFeature],
        id_buckets: usize,
        id_features: &[String],
        train_rows: &[usize],
    ) -> Self {
        let n = ds.items.len();
        let f = feats.len();
        let mut codes = vec![0i64; n * f];
        let mut offset = 0i64;
        let mut hidden = Vec::new();
        for (fi, feat) in feats.iter().enumerate() {
            for (item, &c) in feat.codes.iter().enumerate() {
                codes[item * f + fi] = offset + i64::from(c);
            }
            if feat.name == "price_bucket" || id_features.contains(&feat.name) {
                hidden.push((fi, offset));
            }
            offset += feat.vocab as i64;
        }
        let id_bucket = ds
            .items
            .ids
            .iter()
            .map(|id| i64::from(id_bucket(id, id_buckets)))
            .collect();
        let mut known = vec![false; n];
        for &r in train_rows {
            known[ds.inter.item[r] as usize] = true;
        }
        ItemInputs {
            features: feats.iter().map(|x| (x.name.clone(), x.vocab)).collect(),
            codes,
            id_bucket,
            known,
            hidden,
        }
    }

    pub fn len(&self) -> usize {
        self.known.len()
    }

    pub fn is_empty(&self) -> bool {
        self.known.len() <= 1
    }

    pub fn n_features(&self) -> usize {
        self.features.len()
    }

    /// Codes `[n × F]` and id buckets `[n]` of `items`. Where `keep` is
    /// false the hidden features read "unknown", as for an article that
    /// never sold: otherwise "no price" or an untrained product code would
    /// only ever be seen on unsold negatives in training, and the tower
    /// would learn to bury every new arrival for it. (The caller hides the
    /// id vector by the same flag.)
    pub fn gather(&self, items: &[u32], keep: &[bool]) -> (Vec<i64>, Vec<i64>) {
        let f = self.n_features();
        let mut codes = Vec::with_capacity(items.len() * f);
        let mut ids = Vec::with_capacity(items.len());
        for (&i, &k) in items.iter().zip(keep) {
            let i = i as usize;
            let start = codes.len();
            codes.extend_from_slice(&self.codes[i * f..(i + 1) * f]);
            if !k {
                for &(col, unknown) in &self.hidden {
                    codes[start + col] = unknown;
                }
            }
            ids.push(self.id_bucket[i]);
        }
        (codes, ids)
    }
}

/// Per-customer attribute codes of the customer tower.
#[derive(Debug, Clone)]
pub struct UserInputs {
    pub features: Vec<(String, usize)>,
    /// How serving turns raw customer attributes into the same codes.
    pub specs: Vec<UserFeature>,
    /// `codes[user * U + f]`, offset into the shared table.
    codes: Vec<i64>,
}

impl UserInputs {
    /// The configured customer features: `age_bucket` (where ages are
    /// known) and every categorical customer column of the cache;
    /// high-cardinality ones (postal codes) are hashed into
    /// `cfg.hash_buckets` buckets.
    // One case per kind of customer column (age, categorical, hashed),
    // each a few lines; kept together so the column order is plain.
    pub fn build(ds: &Dataset, cfg: &TowerConfig) -> Result<Self> {
        let n = ds.users.len();
        let want = |name: &str| {
            cfg.user_feature_names.is_empty() || cfg.user_feature_names.iter().any(|w| w == name)
        };
        for w in &cfg.user_feature_names {
            if w != "age_bucket" && ds.users.feature(w).is_none() {
                let have: Vec<&str> = ds.users.features.iter().map(|f| f.name.as_str()).collect();
                return Err(Error::Config(format!(
                    "tower.user_feature_names: `{w}` is not a customer feature of `{}` (it has: age_bucket, {})",
                    ds.meta.name,
                    have.join(", ")
                )));
            }
        }
        let mut cols: Vec<(String, usize, Vec<u32>)> = Vec::new();
        let mut specs = Vec::new();
        if cfg.user_features {
            if want("age_bucket") && ds.age.iter().any(|a| !a.is_nan()) {
                // Bucket indices shifted by one so 0 stays "unknown".
                let codes = ds
                    .age
                    .iter()
                    .map(|&a| {
                        if a.is_nan() {
                            0
                        } else {
                            age_bucket(a) as u32 + 1
                        }
                    })
                    .collect();
                cols.push(("age_bucket".into(), AGE_BUCKETS.len() + 2, codes));
                specs.push(UserFeature {
                    name: "age_bucket".into(),
                    spec: UserFeatureSpec::AgeBucket {
                        edges: AGE_BUCKETS.to_vec(),
                        vocab: AGE_BUCKETS.len() + 2,
                    },
                });
            }
            for f in &ds.users.features {
                if !want(&f.name) {
                    continue;
                }
                if f.vocab.len() > cfg.hash_buckets {
                    let codes = f
                        .codes
                        .iter()
                        .map(|&c| {
                            if c == 0 {
                                0
                            } else {
                                1 + (fnv1a(&f.vocab[c as usize]) % cfg.hash_buckets as u64) as u32
                            }
                        })
                        .collect();
                    cols.push((f.name.clone(), cfg.hash_buckets + 1, codes));
                    specs.push(UserFeature {
                        name: f.name.clone(),
                        spec: UserFeatureSpec::Hashed {
                            buckets: cfg.hash_buckets,
                        },
                    });
                } else {
                    cols.push((f.name.clone(), f.vocab.len().max(1), f.codes.clone()));
                    let mut vocab = f.vocab.clone();
                    if vocab.is_empty() {
                        vocab.push(String::new());
                    }
                    specs.push(UserFeature {
                        name: f.name.clone(),
                        spec: UserFeatureSpec::Categorical { vocab },
                    });
                }
            }
        }
        let u = cols.len();
        let mut codes = vec![0i64; n * u];
        let mut offset = 0i64;
        for (fi, (_, vocab, c)) in cols.iter().enumerate() {
            for (user, &code) in c.iter().enumerate() {
                codes[user * u + fi] = offset + i64::from(code);
            }
            offset += *vocab as i64;
        }
        Ok(UserInputs {
            features: cols.into_iter().map(|(n, v, _)| (n, v)).collect(),
            specs,
            codes,
        })
    }

    pub fn n_features(&self) -> usize {
        self.features.len()
    }

    pub fn gather(&self, users: &[u32]) -> Vec<i64> {
        let u = self.n_features();
        let mut out = Vec::with_capacity(users.len() * u);
        for &x in users {
            let x = x as usize;
            out.extend_from_slice(&self.codes[x * u..(x + 1) * u]);
        }
        out
    }
}

/// One training example: `user` bought `item` on `day`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    pub user: u32,
    pub item: u32,
    pub day: i64,
    pub price: f32,
}

/// Distinct (customer, article, day) purchases among `rows` (H&M repeats a
/// row per unit bought), from the last `last_days` days when non-zero.
pub fn samples(ds: &Dataset, rows: &[usize], last_days: u32) -> Vec<Sample> {
    let end = rows.iter().map(|&r| ds.day(r)).max().unwrap_or(0);
    let from = if last_days == 0 {
        i64::MIN
    } else {
        end - i64::from(last_days) + 1
    };
    let mut out: Vec<Sample> = rows
        .iter()
        .filter(|&&r| ds.day(r) >= from)
        .map(|&r| Sample {
            user: ds.inter.user[r],
            item: ds.inter.item[r],
            day: ds.day(r),
            price: ds.inter.price[r],
        })
        .collect();
    out.sort_by_key(|s| (s.day, s.user, s.item));
    out.dedup_by_key(|s| (s.day, s.user, s.item));
    out
}

/// Customer states for the customer tower: attribute codes and the pooled
/// history's slots and weights, right-aligned, `len` slots per row.
#[derive(Debug, Clone)]
pub struct UserBatch {
    pub rows: usize,
    pub codes: Vec<i64>,
    /// `[rows × len]` item ids (0 = empty slot, weight 0).
    pub hist: Vec<u32>,
    /// `[rows × len]`; a row sums to 1, or is all 0 without history.
    pub weights: Vec<f32>,
    pub len: usize,
}

/// The states of `(user, as of day)` pairs.
pub fn user_batch(
    states: &[(u32, i64)],
    users: &UserInputs,
    timeline: &History,
    cfg: &TowerConfig,
) -> UserBatch {
    let codes = users.gather(&states.iter().map(|s| s.0).collect::<Vec<_>>());
    let rows = states.len();
    if cfg.history == HistoryPool::None {
        return UserBatch {
            rows,
            codes,
            hist: vec![],
            weights: vec![],
            len: 0,
        };
    }
    let lists: Vec<(&[u32], &[i64])> = states
        .iter()
        .map(|&(u, day)| {
            let (items, days) = timeline.as_of(u, day);
            let k = items.len().saturating_sub(cfg.history_len);
            (&items[k..], &days[k..])
        })
        .collect();
    let len = lists.iter().map(|l| l.0.len()).max().unwrap_or(0).max(1);
    let mut hist = vec![0u32; rows * len];
    let mut weights = vec![0f32; rows * len];
    for (r, ((items, days), &(_, day))) in lists.iter().zip(states).enumerate() {
        let pad = len - items.len();
        let w: Vec<f64> = days
            .iter()
            .map(|&d| match cfg.history {
                HistoryPool::Recency => 0.5f64.powf((day - d) as f64 / cfg.half_life_days),
                _ => 1.0,
            })
            .collect();
        let total: f64 = w.iter().sum();
        for (j, (&it, &wj)) in items.iter().zip(&w).enumerate() {
            hist[r * len + pad + j] = it;
            weights[r * len + pad + j] = if total > 0.0 {
                (wj / total) as f32
            } else {
                0.0
            };
        }
    }
    UserBatch {
        rows,
        codes,
        hist,
        weights,
        len,
    }
}

/// Distinct item ids in first-seen order, and each input's position among them.
pub fn unique(items: &[u32]) -> (Vec<u32>, Vec<i64>) {
    let mut seen = rustc_hash::FxHashMap::default();
    let mut uniq = Vec::new();
    let pos = items
        .iter()
        .map(|&i| {
            *seen.entry(i).or_insert_with(|| {
                uniq.push(i);
                uniq.len() as i64 - 1
            })
        })
        .collect();
    (uniq, pos)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::TimeUnit;
    use crate::data::split::tests::toy;

    #[test]
    fn history_is_strictly_before_the_day_and_recency_weighted() {
        let ds = toy(&[1, 1, 1, 1], &[1, 2, 3, 4], &[1, 5, 5, 9], TimeUnit::Day);
        let rows: Vec<usize> = (0..4).collect();
        let tl = History::build(&ds, &rows);
        assert_eq!(tl.as_of(1, 5).0, &[1]);
        assert_eq!(tl.as_of(1, 6).0, &[1, 2, 3]);
        let cfg = TowerConfig {
            half_life_days: 4.0,
            history_len: 2,
            ..TowerConfig::default()
        };
        let users = UserInputs::build(&ds, &cfg).unwrap();
        let b = user_batch(&[(1, 9), (1, 1)], &users, &tl, &cfg);
        assert_eq!(b.len, 2);
        // Last two purchases before day 9 (both on day 5): equal weights.
        assert_eq!(&b.hist[..2], &[2, 3]);
        assert!((b.weights[0] - 0.5).abs() < 1e-6);
        // No purchase before day 1: no history, zero weights.
        assert_eq!(&b.weights[2..], &[0.0, 0.0]);
        let b = user_batch(&[(1, 6)], &users, &tl, &cfg);
        assert_eq!(b.hist, vec![2, 3]);
        let b = user_batch(
            &[(1, 10)],
            &users,
            &tl,
            &TowerConfig {
                half_life_days: 4.0,
                ..TowerConfig::default()
            },
        );
        // Day 9 is 1 day old, day 1 is 9 days old: weights 2^(-1/4) vs 2^(-9/4).
        let w = &b.weights;
        assert!((w[3] / w[0] - 2f32.powf(2.0)).abs() < 1e-4, "{w:?}");
        assert!((w.iter().sum::<f32>() - 1.0).abs() < 1e-5);
    }

    #[test]
    fn samples_drop_repeated_units_and_keep_the_window() {
        let ds = toy(&[1, 1, 2, 1], &[1, 1, 2, 3], &[1, 1, 5, 9], TimeUnit::Day);
        let s = samples(&ds, &[0, 1, 2, 3], 0);
        assert_eq!(s.len(), 3);
        let s = samples(&ds, &[0, 1, 2, 3], 5);
        assert_eq!(s.iter().map(|s| s.item).collect::<Vec<_>>(), vec![2, 3]);
    }

    #[test]
    fn unique_keeps_first_seen_order() {
        let (u, p) = unique(&[5, 3, 5, 0, 3]);
        assert_eq!(u, vec![5, 3, 0]);
        assert_eq!(p, vec![0, 1, 0, 2, 1]);
    }
}
