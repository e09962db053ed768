//! `recforge._recforge`: recforge-infer for Python. One class,
//! [`Recommender`], over a model bundle (one model's top K over its live
//! item pool) or a ranking bundle (the whole two-stage system), with the
//! same loading checks, the same answers as `recforge submit` and the HTTP
//! server, and the item-pool changes a server takes. The Python side
//! (`python/recforge/`) adds typed stubs, a reader of `serving-data`'s
//! customers file and the Spark job.

use std::collections::HashMap;
use std::path::PathBuf;

use pyo3::create_exception;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use rayon::prelude::*;

use recforge_infer::engine::{Engine, Purchase};
use recforge_infer::rank::bundle::{RankingBundle, Request, is_ranking};

create_exception!(
    _recforge,
    RecforgeError,
    PyValueError,
    "A bundle that fails its checks, or a request it cannot answer; the message is recforge's own."
);

fn err(e: impl std::fmt::Display) -> PyErr {
    RecforgeError::new_err(e.to_string())
}

/// A past purchase as Python gives it: an article id (bought today), or
/// (article id, days ago), or (article id, days ago, sales channel).
#[derive(FromPyObject)]
enum Entry {
    Id(String),
    Dated(String, f64),
    Full(String, f64, Option<u8>),
}

impl Entry {
    fn purchase(self) -> Purchase {
        let (article, days_ago, channel) = match self {
            Entry::Id(a) => (a, 0.0, None),
            Entry::Dated(a, d) => (a, d, None),
            Entry::Full(a, d, c) => (a, d, c),
        };
        Purchase {
            article,
            days_ago: days_ago.max(0.0),
            channel,
        }
    }
}

enum Inner {
    Model(Box<Engine>),
    Ranking(Box<RankingBundle>),
}

/// A loaded bundle and its live item pool.
#[pyclass(module = "recforge._recforge")]
struct Recommender {
    inner: Inner,
}

/// One answer: (article id, score) pairs, best first.
type Ranked = Vec<(String, Option<f64>)>;

impl Recommender {
    fn answer(
        &self,
        history: &[Purchase],
        attributes: &HashMap<String, String>,
        k: usize,
        exclude: &[&str],
        exclude_purchased: bool,
    ) -> recforge_infer::Result<Ranked> {
        match &self.inner {
            Inner::Ranking(b) => Ok(b
                .answer(&Request {
                    history,
                    attributes,
                    k,
                    exclude,
                    exclude_purchased,
                    ordering: None,
                    candidates: None,
                })?
                .items),
            Inner::Model(e) => {
                let snap = e.pool.snapshot();
                let mut skip: Vec<u32> = exclude.iter().filter_map(|a| snap.id_of(a)).collect();
                if exclude_purchased {
                    skip.extend(history.iter().filter_map(|p| snap.id_of(&p.article)));
                }
                skip.sort_unstable();
                skip.dedup();
                match e.query_articles(history, attributes)? {
                    Some(q) => Ok(snap
                        .recommend(&q, k, &[&skip])?
                        .pop()
                        .unwrap_or_default()
                        .into_iter()
                        .filter_map(|(id, s)| {
                            Some((snap.article(id)?.to_string(), Some(f64::from(s))))
                        })
                        .collect()),
                    // As the server: the bundle's cold-start list, among
                    // what the pool sells and the request allows.
                    None => Ok(e
                        .cold_start()
                        .iter()
                        .filter(|a| {
                            snap.id_of(a).is_some_and(|id| {
                                snap.is_available(id) && skip.binary_search(&id).is_err()
                            })
                        })
                        .take(k)
                        .map(|a| (a.clone(), None))
                        .collect()),
                }
            }
        }
    }

    /// The engines whose pools hold the articles.
    fn engines(&self) -> Vec<&Engine> {
        match &self.inner {
            Inner::Model(e) => vec![e],
            Inner::Ranking(b) => b.engines(),
        }
    }

    /// The engine whose vectors `item_vector` and `customer_vector` give.
    fn vector_engine(&self) -> &Engine {
        match &self.inner {
            Inner::Model(e) => e,
            Inner::Ranking(b) => match &b.engine.retrieval {
                Some(r) => &r.engine,
                None => &b.engine.ranker.engine,
            },
        }
    }
}

#[pymethods]
impl Recommender {
    /// Loads the bundle in `path` (a model bundle or a ranking bundle),
    /// with every check `recforge submit` and the server make.
    #[staticmethod]
    fn load(py: Python<'_>, path: PathBuf) -> PyResult<Self> {
        let inner = py.detach(|| {
            if is_ranking(&path) {
                RankingBundle::load(&path).map(|b| Inner::Ranking(Box::new(b)))
            } else {
                Engine::load(&path).map(|e| Inner::Model(Box::new(e)))
            }
        });
        Ok(Recommender {
            inner: inner.map_err(err)?,
        })
    }

    /// "sasrec", "two-tower" or "ranking".
    #[getter]
    fn kind(&self) -> &'static str {
        match &self.inner {
            Inner::Ranking(_) => "ranking",
            Inner::Model(e) => match e.bundle.manifest.kind {
                recforge_infer::bundle::ModelKind::Sasrec => "sasrec",
                recforge_infer::bundle::ModelKind::TwoTower => "two-tower",
            },
        }
    }

    /// Which weights (and, for a ranking bundle, which fitted state) answer.
    #[getter]
    fn version(&self) -> String {
        match &self.inner {
            Inner::Ranking(b) => b.version.clone(),
            Inner::Model(e) => e.version.clone(),
        }
    }

    /// The day served, in days since 1970-01-01: a ranking bundle's own
    /// day, or the day after a model's data ends. Ages of purchases
    /// (`days_ago`) count back from it.
    #[getter]
    fn day(&self) -> i64 {
        match &self.inner {
            Inner::Ranking(b) => b.manifest.day,
            Inner::Model(e) => e.bundle.manifest.data_end_day + 1,
        }
    }

    /// Articles in the item pool, and how many of them are sold now.
    fn pool_size(&self) -> (usize, usize) {
        let snap = self.engines()[0].pool.snapshot();
        (snap.len(), snap.available_len())
    }

    /// The top `k` for one customer: `history` oldest first, each an
    /// article id, (id, days ago) or (id, days ago, channel); `attributes`
    /// the raw customer columns (`age`, ...). Returns (article id, score)
    /// pairs, best first (score None where unscored: cold start, padding).
    #[pyo3(signature = (history, attributes=None, k=12, exclude=None, exclude_purchased=false))]
    fn recommend(
        &self,
        py: Python<'_>,
        history: Vec<Entry>,
        attributes: Option<HashMap<String, String>>,
        k: usize,
        exclude: Option<Vec<String>>,
        exclude_purchased: bool,
    ) -> PyResult<Ranked> {
        let history: Vec<Purchase> = history.into_iter().map(Entry::purchase).collect();
        let attributes = attributes.unwrap_or_default();
        let exclude = exclude.unwrap_or_default();
        let exclude: Vec<&str> = exclude.iter().map(String::as_str).collect();
        py.detach(|| self.answer(&history, &attributes, k, &exclude, exclude_purchased))
            .map_err(err)
    }

    /// [`recommend`] for many customers at once, on every core, without
    /// holding the interpreter: `histories[i]` with `attributes[i]`.
    #[pyo3(signature = (histories, attributes=None, k=12, exclude_purchased=false))]
    fn recommend_batch(
        &self,
        py: Python<'_>,
        histories: Vec<Vec<Entry>>,
        attributes: Option<Vec<HashMap<String, String>>>,
        k: usize,
        exclude_purchased: bool,
    ) -> PyResult<Vec<Ranked>> {
        let n = histories.len();
        let attributes = attributes.unwrap_or_else(|| vec![HashMap::new(); n]);
        if attributes.len() != n {
            return Err(err(format!(
                "{n} histories but {} attribute maps",
                attributes.len()
            )));
        }
        let histories: Vec<Vec<Purchase>> = histories
            .into_iter()
            .map(|h| h.into_iter().map(Entry::purchase).collect())
            .collect();
        py.detach(|| {
            histories
                .par_iter()
                .zip(&attributes)
                .map(|(h, a)| self.answer(h, a, k, &[], exclude_purchased))
                .collect::<recforge_infer::Result<Vec<_>>>()
        })
        .map_err(err)
    }

    /// Adds articles from their raw attributes (or replaces their
    /// vectors), as the server's items route: embedded by each model's
    /// item side, available at once; in a ranking bundle they also get item
    /// ids (read as never sold). All or nothing. Returns the pool size.
    fn add_items(
        &mut self,
        py: Python<'_>,
        items: Vec<(String, HashMap<String, String>)>,
    ) -> PyResult<usize> {
        py.detach(|| -> recforge_infer::Result<usize> {
            use recforge_infer::engine::{add_to_pools, embed_items};
            let added: Vec<(&str, &HashMap<String, String>)> =
                items.iter().map(|(id, f)| (id.as_str(), f)).collect();
            let engines = self.engines();
            let vectors = embed_items(&engines, &added)?;
            let ids: Vec<&str> = added.iter().map(|(id, _)| *id).collect();
            add_to_pools(&engines, &ids, &vectors)?;
            if let Inner::Ranking(b) = &mut self.inner {
                b.add_articles(&added);
            }
            Ok(self.engines()[0].pool.snapshot().len())
        })
        .map_err(err)
    }

    /// Marks articles sold out or back in stock in every pool. An unknown
    /// article id refuses the whole call.
    #[pyo3(signature = (sold_out=None, in_stock=None))]
    fn set_available(
        &self,
        sold_out: Option<Vec<String>>,
        in_stock: Option<Vec<String>>,
    ) -> PyResult<()> {
        let (sold_out, in_stock) = (sold_out.unwrap_or_default(), in_stock.unwrap_or_default());
        let engines = self.engines();
        let primary = engines[0].pool.snapshot();
        if let Some(a) = sold_out
            .iter()
            .chain(&in_stock)
            .find(|a| primary.id_of(a).is_none())
        {
            return Err(err(format!("article `{a}` is not in the item pool")));
        }
        for e in engines {
            e.pool
                .update(|s| {
                    for (list, available) in [(&sold_out, false), (&in_stock, true)] {
                        for a in list {
                            // A model's pool may lack an article the other has.
                            if s.id_of(a).is_some() {
                                s.set_available(a, available)?;
                            }
                        }
                    }
                    Ok(())
                })
                .map_err(err)?;
        }
        Ok(())
    }

    /// The item vector of an article (a model bundle's; a ranking bundle's
    /// two-tower model's, else its ranker's), None for one not in the pool.
    fn item_vector(&self, article: &str) -> Option<Vec<f32>> {
        let snap = self.vector_engine().pool.snapshot();
        snap.vector_of(snap.id_of(article)?).map(<[f32]>::to_vec)
    }

    /// The customer's query vector in the same space (None without any
    /// purchase the model knows and, for a sequential ranker, at all).
    #[pyo3(signature = (history, attributes=None))]
    fn customer_vector(
        &self,
        history: Vec<Entry>,
        attributes: Option<HashMap<String, String>>,
    ) -> PyResult<Option<Vec<f32>>> {
        let history: Vec<Purchase> = history.into_iter().map(Entry::purchase).collect();
        self.vector_engine()
            .query_articles(&history, &attributes.unwrap_or_default())
            .map_err(err)
    }
}

/// The shard (of `shards`) a customer belongs to: the hash `recforge
/// submit --shard` splits customers by.
#[pyfunction]
fn shard_of(customer_id: &str, shards: u32) -> u32 {
    recforge_infer::bundle::shard_of(customer_id, shards)
}

#[pymodule]
fn _recforge(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Recommender>()?;
    m.add_function(wrap_pyfunction!(shard_of, m)?)?;
    m.add("RecforgeError", m.py().get_type::<RecforgeError>())?;
    Ok(())
}
