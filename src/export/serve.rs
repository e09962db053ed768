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
use recforge_infer::rank::CustomerHistory;
use recforge_infer::rank::engine::{ArticleEngine, RankCustomer};

use crate::data::Dataset;
use crate::data::history::History;
use crate::error::{Error, Result};

/// A bundle ready to serve the customers of one dataset: the inference
/// crate's engine on the dataset's articles (item id = dataset item), and
/// the translation of the dataset's customer attributes into its codes.
pub struct Server {
    pub articles: ArticleEngine,
    /// Two-tower: how the dataset's customer attributes become codes.
    pub user_codes: UserCodes,
}

impl std::ops::Deref for Server {
    type Target = ArticleEngine;

    fn deref(&self) -> &ArticleEngine {
        &self.articles
    }
}

impl Server {
    /// Serves the articles of `ds` (only those): the bundle's own keep
    /// their vectors, the others are embedded from their attributes.
    pub fn new(bundle_dir: &Path, ds: &Dataset) -> Result<Self> {
        let bundle = Bundle::load(bundle_dir)?;
        let user_codes = UserCodes::new(&bundle, ds);
        let attribute = |di: usize, name: &str| {
            let src = ds.items.feature(name)?;
            Some(src.vocab[src.codes[di] as usize].as_str())
        };
        let articles = ArticleEngine::new(bundle, &ds.items.ids, &attribute)?;
        Ok(Server {
            articles,
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

    /// The queries of `users` served on `day`, from their purchases before
    /// it, on all cores.
    pub fn queries(
        &self,
        ds: &Dataset,
        hist: &History,
        users: &[u32],
        day: i64,
    ) -> Result<Vec<Option<Vec<f32>>>> {
        let codes: Vec<Vec<u32>> = users
            .iter()
            .map(|&u| self.user_codes.codes(ds, u))
            .collect();
        let customers: Vec<RankCustomer> = users
            .iter()
            .zip(&codes)
            .map(|(&u, codes)| customer(ds, hist, u, day, codes))
            .collect();
        Ok(self.articles.queries(&customers, day)?)
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
        let codes = self.user_codes.codes(ds, user);
        Ok(self
            .articles
            .query(&customer(ds, hist, user, day, &codes), day)?)
    }
}

/// `user` of `ds` as the engines receive a customer on `day`: purchases
/// before it, their age and attribute codes.
pub fn customer<'a>(
    ds: &Dataset,
    hist: &'a History,
    user: u32,
    day: i64,
    codes: &'a [u32],
) -> RankCustomer<'a> {
    let (items, days) = hist.as_of(user, day);
    RankCustomer {
        history: CustomerHistory {
            items,
            days,
            channels: &hist.channels(user)[..items.len()],
            age: ds.age.get(user as usize).copied().unwrap_or(f32::NAN),
        },
        codes,
    }
}

/// How a dataset's customer attributes become a bundle's codes (the
/// two-tower model's customer features; none for a sequential ranker).
pub struct UserCodes(Vec<UserCode>);

impl UserCodes {
    pub fn new(bundle: &Bundle, ds: &Dataset) -> Self {
        UserCodes(UserCode::all(bundle, ds))
    }

    /// The bundle's code of each customer feature of `user`.
    pub fn codes(&self, ds: &Dataset, user: u32) -> Vec<u32> {
        self.0.iter().map(|c| c.code(ds, user as usize)).collect()
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
    Ok(server.articles.lists(queries, k)?)
}
