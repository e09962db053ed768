//! Serving a bundle against a dataset: the glue between recforge's data
//! (customers, purchase logs, article attributes) and the burn-free
//! inference crate. It maps the data's articles to the bundle's item
//! indices, embeds articles the model never saw from their attributes,
//! builds the live item pool, and turns a customer's history and
//! attributes into the query vector the pool is searched with.

use std::collections::HashMap;
use std::path::Path;

use recforge_infer::bundle::{ModelKind, UserFeatureSpec};
use recforge_infer::{Bundle, ItemPool, SasRecModel, TwoTowerModel};

use rayon::prelude::*;

use crate::data::Dataset;
use crate::error::{Error, Result};

pub enum Model {
    SasRec(Box<SasRecModel>),
    TwoTower(Box<TwoTowerModel>),
}

/// A bundle ready to serve the customers of one dataset.
pub struct Server {
    pub bundle: Bundle,
    pub model: Model,
    pub pool: ItemPool,
    /// Pool id of each dataset item (`u32::MAX` = not servable).
    pub item_of: Vec<u32>,
    /// Dataset item of each pool id (for writing article ids).
    pub data_item: Vec<u32>,
    /// Vector of each pool id: SASRec's item representations, or the item
    /// tower's vectors (also the two-tower history pooling input).
    vectors: Vec<f32>,
    /// Articles of the dataset the model never saw, embedded from attributes.
    pub new_articles: usize,
    /// Two-tower: how the dataset's customer attributes become codes.
    user_codes: Vec<UserCode>,
}

/// Each customer's purchases (dataset item, day) in time order; build it
/// with `Histories::of_all`.
pub use crate::train::tower_data::Timeline as Histories;

impl Server {
    pub fn new(bundle_dir: &Path, ds: &Dataset) -> Result<Self> {
        let bundle = Bundle::load(bundle_dir)?;
        let m = &bundle.manifest;
        let index: HashMap<&str, u32> = m
            .items
            .ids
            .iter()
            .enumerate()
            .skip(1)
            .map(|(i, id)| (id.as_str(), i as u32))
            .collect();
        let model = match m.kind {
            ModelKind::Sasrec => Model::SasRec(Box::new(SasRecModel::from_bundle(&bundle)?)),
            ModelKind::TwoTower => Model::TwoTower(Box::new(TwoTowerModel::from_bundle(&bundle)?)),
        };
        let n_bundle = m.items.ids.len();
        // Pool ids: the bundle's item indices, then the data's new articles.
        let mut item_of = vec![u32::MAX; ds.items.len()];
        let mut new_items = Vec::new();
        for (di, id) in ds.items.ids.iter().enumerate().skip(1) {
            match index.get(id.as_str()) {
                Some(&bi) => item_of[di] = bi,
                None => new_items.push(di as u32),
            }
        }
        let mut data_item = vec![u32::MAX; n_bundle + new_items.len()];
        for (di, &p) in item_of.iter().enumerate() {
            if p != u32::MAX {
                data_item[p as usize] = di as u32;
            }
        }
        for (k, &di) in new_items.iter().enumerate() {
            let p = (n_bundle + k) as u32;
            item_of[di as usize] = p;
            data_item[p as usize] = di;
        }
        let new_codes: Vec<Vec<u32>> = new_items
            .iter()
            .map(|&di| feature_codes(&bundle, ds, di))
            .collect();
        let (d, vectors) = match &model {
            Model::SasRec(s) => {
                let d = s.d_model();
                let mut v = s.item_table().to_vec();
                for c in &new_codes {
                    v.extend(s.item_from_features(c)?);
                }
                (d, v)
            }
            Model::TwoTower(t) => {
                let (mut codes, mut ids) = t.catalogue_inputs(m);
                codes.extend(new_codes.iter().cloned());
                ids.extend(std::iter::repeat_n(None, new_codes.len()));
                (t.d_model(), t.item_vectors(&codes, &ids)?)
            }
        };
        // Only articles of this dataset are served (row 0 is padding).
        let pool_ids: Vec<u32> = (1..data_item.len() as u32)
            .filter(|&p| data_item[p as usize] != u32::MAX)
            .collect();
        let articles = pool_ids
            .iter()
            .map(|&p| ds.items.ids[data_item[p as usize] as usize].clone())
            .collect();
        let pool_vecs: Vec<f32> = pool_ids
            .iter()
            .flat_map(|&p| {
                vectors[p as usize * d..(p as usize + 1) * d]
                    .iter()
                    .copied()
            })
            .collect();
        let pool = ItemPool::new(d, pool_ids, articles, pool_vecs)?;
        Ok(Server {
            user_codes: UserCode::all(&bundle, ds),
            new_articles: new_items.len(),
            bundle,
            model,
            pool,
            item_of,
            data_item,
            vectors,
        })
    }

    /// The vector of pool id `p` (item representation or item-tower vector).
    pub fn item_vector(&self, p: u32) -> &[f32] {
        let d = self.d_model();
        &self.vectors[p as usize * d..(p as usize + 1) * d]
    }

    pub fn d_model(&self) -> usize {
        match &self.model {
            Model::SasRec(s) => s.d_model(),
            Model::TwoTower(t) => t.d_model(),
        }
    }

    /// A history (dataset items) as the ranker's input: new articles have
    /// no input embedding in the trained model and are left out.
    fn sequence(&self, s: &SasRecModel, items: &[u32]) -> Vec<u32> {
        items
            .iter()
            .map(|&i| self.item_of[i as usize])
            .filter(|&p| (p as usize) < s.spec.n_items)
            .collect()
    }

    /// [`query`](Self::query) for many customers, on all cores. The
    /// sequential ranker encodes 64 customers per stacked pass (one larger
    /// matrix product per layer instead of 64 small ones).
    pub fn queries(
        &self,
        ds: &Dataset,
        hist: &Histories,
        users: &[u32],
        day: i64,
    ) -> Result<Vec<Option<Vec<f32>>>> {
        match &self.model {
            Model::SasRec(s) => Ok(users
                .par_chunks(64)
                .flat_map_iter(|chunk| {
                    let seqs: Vec<Vec<u32>> = chunk
                        .iter()
                        .map(|&u| self.sequence(s, hist.before(u, day).0))
                        .collect();
                    let refs: Vec<&[u32]> = seqs.iter().map(Vec::as_slice).collect();
                    s.encode_many(&refs)
                })
                .collect()),
            Model::TwoTower(_) => users
                .par_iter()
                .map(|&u| self.query(ds, hist, u, day))
                .collect(),
        }
    }

    /// The query vector of `user` served on `day`, from their purchases
    /// before `day`; None for a customer without any (cold start).
    pub fn query(
        &self,
        ds: &Dataset,
        hist: &Histories,
        user: u32,
        day: i64,
    ) -> Result<Option<Vec<f32>>> {
        let (items, days) = hist.before(user, day);
        if items.is_empty() {
            return Ok(None);
        }
        match &self.model {
            Model::SasRec(s) => Ok(s.encode(&self.sequence(s, items))),
            Model::TwoTower(t) => {
                let d = t.d_model();
                let pooled = if t.spec.history == "none" {
                    None
                } else {
                    let take = items.len().saturating_sub(t.spec.history_len);
                    let ago: Vec<f64> = days[take..].iter().map(|&x| (day - x) as f64).collect();
                    let w = t.history_weights(&ago);
                    let mut p = vec![0f32; d];
                    for (&i, &wi) in items[take..].iter().zip(&w) {
                        let row = self.item_of[i as usize] as usize;
                        let v = &self.vectors[row * d..(row + 1) * d];
                        p.iter_mut().zip(v).for_each(|(a, b)| *a += wi * b);
                    }
                    Some(p)
                };
                let u = user as usize;
                let codes = vec![self.user_codes.iter().map(|c| c.code(ds, u)).collect()];
                Ok(Some(t.user_vectors(&codes, pooled.as_deref())?))
            }
        }
    }
}

/// The bundle's feature codes of dataset item `di`, from its raw attribute
/// values (unseen values and the price bucket read 0, "unknown").
pub fn feature_codes(bundle: &Bundle, ds: &Dataset, di: u32) -> Vec<u32> {
    bundle
        .manifest
        .items
        .features
        .iter()
        .map(|f| {
            let Some(src) = ds.items.feature(&f.name) else {
                return 0;
            };
            f.code(&src.vocab[src.codes[di as usize] as usize])
        })
        .collect()
}

/// How one customer attribute of the dataset becomes the bundle's code.
enum UserCode {
    /// Age in years, bucketed at these edges (1 + bucket; 0 = unknown).
    Age(Vec<f32>),
    /// Dataset column `name`: `map[c]` is the bundle's code of the
    /// column's code c, translated once, so serving a customer does no
    /// string work.
    Column { name: String, map: Vec<u32> },
    /// A column the dataset lacks: always "unknown".
    Missing,
}

impl UserCode {
    /// The translation of every customer attribute the bundle reads.
    fn all(bundle: &Bundle, ds: &Dataset) -> Vec<UserCode> {
        bundle
            .manifest
            .user_features
            .iter()
            .map(|f| {
                let Some(col) = ds.users.feature(&f.name) else {
                    return match &f.spec {
                        UserFeatureSpec::AgeBucket { edges, .. } => UserCode::Age(edges.clone()),
                        _ => UserCode::Missing,
                    };
                };
                let map = col
                    .vocab
                    .iter()
                    .map(|v| match &f.spec {
                        UserFeatureSpec::AgeBucket { .. } => 0,
                        spec => spec.code(v),
                    })
                    .collect();
                UserCode::Column {
                    name: f.name.clone(),
                    map,
                }
            })
            .collect()
    }

    fn code(&self, ds: &Dataset, u: usize) -> u32 {
        match self {
            UserCode::Age(edges) => {
                recforge_infer::bundle::age_code(edges, ds.age.get(u).copied().unwrap_or(f32::NAN))
            }
            UserCode::Column { name, map } => ds
                .users
                .feature(name)
                .and_then(|f| f.codes.get(u))
                .and_then(|&c| map.get(c as usize).copied())
                .unwrap_or(0),
            UserCode::Missing => 0,
        }
    }
}

/// Reads `dir` as a prepared cache (it has `meta.json`) or as raw files.
pub fn load_data(dir: &Path) -> Result<Dataset> {
    if dir.join("meta.json").exists() {
        crate::cache::read(dir)
    } else {
        crate::ingest::load(dir, crate::ingest::Format::Auto)
    }
    .map_err(|e| match e {
        Error::Config(m) => Error::Config(format!("{}: {m}", dir.display())),
        other => other,
    })
}
