//! Serving a bundle against a dataset: the glue between recforge's data
//! (customers, purchase logs, article attributes) and the inference
//! crate's [`Engine`], which holds the model and the live item pool and
//! computes queries. This module only translates: the dataset's articles
//! and their attribute values into the engine's catalogue (it embeds the
//! ones the bundle never saw), dataset item ids into pool ids and back, and
//! a customer's purchases and attribute codes into the engine's inputs.

use std::path::Path;

use recforge_infer::Bundle;
use recforge_infer::bundle::UserFeatureSpec;
use recforge_infer::engine::{Catalogue, Customer, Engine, Model};

use rayon::prelude::*;

use crate::data::Dataset;
use crate::data::history::History;
use crate::error::{Error, Result};

/// A bundle ready to serve the customers of one dataset: the inference
/// crate's engine on the dataset's articles, and the translation of the
/// dataset's ids and attribute codes into the engine's.
pub struct Server {
    pub engine: Engine,
    /// Pool id of each dataset item (`u32::MAX` = not servable).
    pub item_of: Vec<u32>,
    /// Dataset item of each pool id (for writing article ids).
    pub data_item: Vec<u32>,
    /// Articles of the dataset the model never saw, embedded from attributes.
    pub new_articles: usize,
    /// Two-tower: how the dataset's customer attributes become codes.
    user_codes: Vec<UserCode>,
}

impl Server {
    /// Serves the articles of `ds` (only those): the bundle's own keep
    /// their vectors, the others are embedded from their attributes.
    pub fn new(bundle_dir: &Path, ds: &Dataset) -> Result<Self> {
        let bundle = Bundle::load(bundle_dir)?;
        let user_codes = UserCode::all(&bundle, ds);
        let n_bundle = bundle.manifest.items.ids.len();
        let attribute = |di: usize, name: &str| {
            let src = ds.items.feature(name)?;
            Some(src.vocab[src.codes[di] as usize].as_str())
        };
        let (engine, item_of) = Engine::new(
            bundle,
            Catalogue::Articles {
                ids: &ds.items.ids,
                attribute: &attribute,
            },
        )?;
        let new_articles = item_of
            .iter()
            .filter(|&&p| p != u32::MAX && p as usize >= n_bundle)
            .count();
        let mut data_item = vec![u32::MAX; n_bundle + new_articles];
        for (di, &p) in item_of.iter().enumerate() {
            if p != u32::MAX {
                data_item[p as usize] = di as u32;
            }
        }
        Ok(Server {
            engine,
            item_of,
            data_item,
            new_articles,
            user_codes,
        })
    }

    /// The vector of pool id `p` (item representation or item-tower
    /// vector); None for an id it did not assign.
    pub fn item_vector(&self, p: u32) -> Option<&[f32]> {
        self.engine.item_vector(p)
    }

    pub fn d_model(&self) -> usize {
        self.engine.d_model()
    }

    /// The engine's inputs for `user` served on `day`: purchases before
    /// `day` as pool ids, their age in days (two-tower only) and the
    /// customer's attribute codes (two-tower only).
    fn inputs(&self, ds: &Dataset, hist: &History, user: u32, day: i64) -> Inputs {
        let (items, days) = hist.as_of(user, day);
        let pool_ids = |items: &[u32]| items.iter().map(|&i| self.item_of[i as usize]).collect();
        match &self.engine.model {
            Model::SasRec(_) => Inputs {
                history: pool_ids(items),
                days_ago: Vec::new(),
                codes: Vec::new(),
            },
            // The tower pools the last `history_len` purchases, and every
            // article of the dataset is in this server's pool: the older
            // ones need not be passed.
            Model::TwoTower(t) => Inputs {
                history: pool_ids(&items[items.len().saturating_sub(t.spec.history_len.max(1))..]),
                days_ago: days[days.len().saturating_sub(t.spec.history_len.max(1))..]
                    .iter()
                    .map(|&x| (day - x) as f64)
                    .collect(),
                codes: self
                    .user_codes
                    .iter()
                    .map(|c| c.code(ds, user as usize))
                    .collect(),
            },
        }
    }

    /// [`query`](Self::query) for many customers, on all cores: a
    /// sequential ranker encodes 64 customers per engine call (one stacked
    /// pass), the two-tower model one customer per task.
    pub fn queries(
        &self,
        ds: &Dataset,
        hist: &History,
        users: &[u32],
        day: i64,
    ) -> Result<Vec<Option<Vec<f32>>>> {
        let per_call = match self.engine.model {
            Model::SasRec(_) => 64,
            Model::TwoTower(_) => 1,
        };
        let chunks: Vec<Vec<Option<Vec<f32>>>> = users
            .par_chunks(per_call)
            .map(|chunk| {
                let inputs: Vec<Inputs> = chunk
                    .iter()
                    .map(|&u| self.inputs(ds, hist, u, day))
                    .collect();
                let customers: Vec<Customer> = inputs.iter().map(Inputs::customer).collect();
                self.engine.queries(&customers)
            })
            .collect::<std::result::Result<_, _>>()?;
        Ok(chunks.into_iter().flatten().collect())
    }

    /// The query vector of `user` served on `day`, from their purchases
    /// before `day`; None for a customer without any (cold start).
    pub fn query(
        &self,
        ds: &Dataset,
        hist: &History,
        user: u32,
        day: i64,
    ) -> Result<Option<Vec<f32>>> {
        let inputs = self.inputs(ds, hist, user, day);
        if inputs.history.is_empty() {
            return Ok(None);
        }
        Ok(self.engine.query(&inputs.customer())?)
    }
}

/// One customer's engine inputs, owned.
struct Inputs {
    history: Vec<u32>,
    days_ago: Vec<f64>,
    codes: Vec<u32>,
}

impl Inputs {
    fn customer(&self) -> Customer<'_> {
        Customer {
            history: &self.history,
            days_ago: &self.days_ago,
            codes: &self.codes,
        }
    }
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
        crate::data::cache::read(dir)
    } else {
        crate::ingest::load(dir, crate::ingest::Format::Auto)
    }
    .map_err(|e| match e {
        Error::Config(m) => Error::Config(format!("{}: {m}", dir.display())),
        other => other,
    })
}

/// Each customer's top `k` (dataset items) from a served bundle as of
/// `day`; empty for a customer without history.
pub fn top_lists(
    server: &Server,
    past: &Dataset,
    hist: &History,
    users: &[u32],
    day: i64,
    k: usize,
) -> Result<Vec<Vec<u32>>> {
    let queries = server.queries(past, hist, users, day)?;
    lists(server, &queries, k)
}

/// The top `k` of `server`'s pool for each query (dataset items; empty
/// where there is no query), searched as one batch.
pub fn lists(server: &Server, queries: &[Option<Vec<f32>>], k: usize) -> Result<Vec<Vec<u32>>> {
    if k == 0 {
        return Ok(vec![Vec::new(); queries.len()]);
    }
    let flat: Vec<f32> = queries.iter().flatten().flatten().copied().collect();
    let mut found = server
        .engine
        .pool
        .snapshot()
        .recommend(&flat, k, &[])?
        .into_iter();
    Ok(queries
        .iter()
        .map(|q| match q {
            Some(_) => found
                .next()
                .expect("one list per query")
                .iter()
                .map(|x| server.data_item[x.0 as usize])
                .collect(),
            None => Vec::new(),
        })
        .collect())
}
