//! One client's serving state: its model variants, the live changes to its
//! item pool (kept so that a reloaded model gets them too), its customers
//! and prices.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};

use serde::Deserialize;

use recforge_infer::rank::bundle::RankingBundle;
use recforge_infer::rank::second::Ordering;
use recforge_infer::rank::sources::CandidateConfig;

use crate::config::{Config, TenantConfig};
use crate::{Engine, Purchase};
use crate::{Error, Result};

/// What one variant serves: one model's top K over the pool, or the whole
/// ranking system of a ranking bundle.
pub enum Served {
    Model(Box<Engine>),
    Ranking {
        bundle: Box<RankingBundle>,
        /// The tenant's objective over the bundle's state (None: the
        /// bundle's own).
        ordering: Option<Ordering>,
        /// The tenant's candidate sizes (None: the bundle's).
        sizes: Option<CandidateConfig>,
    },
}

impl Served {
    /// A model bundle or a ranking bundle (it has `ranking.json`), the
    /// ranking one ordered by `cfg`'s objective when that differs from the
    /// bundle's.
    pub fn load(dir: &Path, cfg: &TenantConfig, max_k: usize) -> Result<Self> {
        if !recforge_infer::rank::bundle::is_ranking(dir) {
            return Ok(Served::Model(Box::new(Engine::load(dir)?)));
        }
        let bundle = RankingBundle::load(dir)?;
        let m = &bundle.manifest;
        let ordering = (cfg.objective != m.objective || cfg.alpha != m.alpha).then(|| {
            let e = &bundle.engine;
            Ordering::new(&e.context, &e.sources, cfg.objective, cfg.alpha, max_k)
        });
        let sizes = match &cfg.candidates {
            Some(c) => {
                let sizes = c.over(bundle.engine.sources.config());
                sizes
                    .within(bundle.engine.sources.config())
                    .map_err(|msg| Error::Invalid(format!("{}: {msg}", dir.display())))?;
                Some(sizes)
            }
            None => None,
        };
        Ok(Served::Ranking {
            bundle: Box::new(bundle),
            ordering,
            sizes,
        })
    }

    /// Which weights answered: the model's, or the ranking bundle's state.
    pub fn version(&self) -> &str {
        match self {
            Served::Model(e) => &e.version,
            Served::Ranking { bundle, .. } => &bundle.version,
        }
    }

    /// The engine whose pool decides what is servable (the sequential
    /// ranker's for a ranking bundle).
    pub fn primary(&self) -> &Engine {
        match self {
            Served::Model(e) => e,
            Served::Ranking { bundle, .. } => &bundle.engine.ranker.engine,
        }
    }

    /// Every model engine it holds: pool changes go to all of them.
    pub fn engines(&self) -> Vec<&Engine> {
        match self {
            Served::Model(e) => vec![e],
            Served::Ranking { bundle, .. } => std::iter::once(&bundle.engine.ranker.engine)
                .chain(bundle.engine.retrieval.as_ref().map(|r| &r.engine))
                .collect(),
        }
    }
}

/// The bundles being served; swapped whole on reload, so a request keeps
/// the engine it started with.
pub struct Variants {
    pub a: Arc<Served>,
    pub b: Option<Arc<Served>>,
}

impl Variants {
    /// Every variant being served, by name.
    pub fn served(&self) -> impl Iterator<Item = (&'static str, &Served)> {
        std::iter::once(("a", &*self.a)).chain(self.b.as_deref().map(|b| ("b", b)))
    }

    /// Every model engine of every variant: item changes go to all of them.
    pub fn engines(&self) -> impl Iterator<Item = (&'static str, &Engine)> {
        self.served()
            .flat_map(|(name, s)| s.engines().into_iter().map(move |e| (name, e)))
    }
}

/// Article prices for the revenue objective, with the median that stands
/// in for articles without one (kept up to date on writes, so a request
/// never scans the table).
pub struct Prices {
    by_article: HashMap<String, f32>,
    median: f32,
}

impl Prices {
    pub fn new(by_article: HashMap<String, f32>) -> Self {
        let mut p = Prices {
            by_article,
            median: 1.0,
        };
        p.median = median(p.by_article.values().copied());
        p
    }

    /// The article's price, or the median of known prices.
    pub fn get(&self, article: &str) -> f32 {
        self.by_article.get(article).copied().unwrap_or(self.median)
    }

    pub fn set_many<'a>(&mut self, prices: impl Iterator<Item = (&'a str, f32)>) {
        let mut any = false;
        for (a, p) in prices {
            self.by_article.insert(a.to_string(), p);
            any = true;
        }
        if any {
            self.median = median(self.by_article.values().copied());
        }
    }
}

/// Median of positive prices; 1.0 (no change in order) without any.
fn median(values: impl Iterator<Item = f32>) -> f32 {
    let mut v: Vec<f32> = values.filter(|p| *p > 0.0).collect();
    if v.is_empty() {
        return 1.0;
    }
    let mid = v.len() / 2;
    *v.select_nth_unstable_by(mid, f32::total_cmp).1
}

/// Item-pool changes since the server started, replayed onto a reloaded
/// bundle: an operator who marked an article sold out expects it to stay
/// so when the model is swapped.
#[derive(Default)]
pub struct Overlay {
    pub added: BTreeMap<String, HashMap<String, String>>,
    pub unavailable: BTreeSet<String>,
}

pub struct Customer {
    pub history: Vec<Purchase>,
    pub attributes: HashMap<String, String>,
}

pub struct Tenant {
    pub name: String,
    pub cfg: TenantConfig,
    models_dir: std::path::PathBuf,
    /// The server's largest k (a ranking bundle's own objective is sized
    /// to it).
    max_k: usize,
    variants: RwLock<Arc<Variants>>,
    /// Serialises admin changes (items, availability, reload).
    pub overlay: Mutex<Overlay>,
    pub customers: HashMap<String, Customer>,
    pub prices: RwLock<Prices>,
}

/// One line of a customers file.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CustomerLine {
    customer_id: String,
    #[serde(default)]
    history: Vec<HistoryLine>,
    #[serde(default)]
    attributes: HashMap<String, String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HistoryLine {
    article_id: String,
    #[serde(default)]
    days_ago: f64,
    /// Sales channel (H&M: 1 store, 2 online), when known.
    #[serde(default)]
    channel: Option<u8>,
}

impl Tenant {
    pub fn load(name: &str, cfg: &TenantConfig, server: &Config) -> Result<Self> {
        let max_k = server.max_k;
        let a = Arc::new(Served::load(
            &server.models_dir.join(&cfg.bundle),
            cfg,
            max_k,
        )?);
        let b = match &cfg.ab {
            Some(ab) => Some(Arc::new(Served::load(
                &server.models_dir.join(&ab.bundle),
                cfg,
                max_k,
            )?)),
            None => None,
        };
        let customers = match &cfg.customers {
            Some(p) => read_customers(p)?,
            None => HashMap::new(),
        };
        let prices = match &cfg.prices {
            Some(p) => read_prices(p)?,
            None => HashMap::new(),
        };
        Ok(Tenant {
            name: name.to_string(),
            cfg: cfg.clone(),
            models_dir: server.models_dir.clone(),
            max_k,
            variants: RwLock::new(Arc::new(Variants { a, b })),
            overlay: Mutex::new(Overlay::default()),
            customers,
            prices: RwLock::new(Prices::new(prices)),
        })
    }

    pub fn variants(&self) -> Arc<Variants> {
        self.variants
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// "a" or "b" for a customer: a stable hash of tenant and customer id
    /// against the split, so a customer always sees the same variant and
    /// tenants' splits are independent. Requests without a customer id go
    /// to "a".
    pub fn variant_of(&self, customer: Option<&str>) -> &'static str {
        match (&self.cfg.ab, customer) {
            (Some(ab), Some(id)) => {
                let h = mix(recforge_infer::bundle::fnv1a(&format!(
                    "{}\u{1f}{id}",
                    self.name
                )));
                // The top 53 bits as a uniform number in [0, 1).
                let u = (h >> 11) as f64 / (1u64 << 53) as f64;
                if u < ab.share { "b" } else { "a" }
            }
            _ => "a",
        }
    }

    /// Loads `bundle` (or the configured one) as `variant`, replays the
    /// overlay onto it and swaps it in. Requests in flight finish on the
    /// engine they hold. Returns (previous version, new version).
    pub fn reload(&self, variant: &str, bundle: Option<&str>) -> Result<(String, String)> {
        let overlay = self.overlay.lock().unwrap_or_else(|e| e.into_inner());
        let name = match (variant, &self.cfg.ab) {
            ("b", None) => {
                return Err(Error::Invalid(format!(
                    "tenant `{}` has no variant b",
                    self.name
                )));
            }
            ("a", _) => bundle.unwrap_or(&self.cfg.bundle).to_string(),
            ("b", Some(ab)) => bundle.unwrap_or(&ab.bundle).to_string(),
            _ => {
                return Err(Error::Invalid(format!(
                    "variant `{variant}`: use \"a\" or \"b\""
                )));
            }
        };
        if name.contains('/') || name.contains('\\') || name.starts_with('.') {
            return Err(Error::Invalid(format!(
                "bundle `{name}`: give a directory name under the models directory"
            )));
        }
        let engine = Served::load(&self.models_dir.join(&name), &self.cfg, self.max_k)?;
        apply_overlay(&engine, &overlay)?;
        let engine = Arc::new(engine);
        let mut slot = self.variants.write().unwrap_or_else(|e| e.into_inner());
        let current = slot.clone();
        let previous;
        let next = if variant == "a" {
            previous = current.a.version().to_string();
            Variants {
                a: engine.clone(),
                b: current.b.clone(),
            }
        } else {
            previous = current
                .b
                .as_ref()
                .map(|e| e.version().to_string())
                .unwrap_or_default();
            Variants {
                a: current.a.clone(),
                b: Some(engine.clone()),
            }
        };
        *slot = Arc::new(next);
        Ok((previous, engine.version().to_string()))
    }
}

/// MurmurHash3's 64-bit finaliser. FNV-1a alone leaves its high bits
/// nearly constant across ids that differ only in their last characters
/// ("u1", "u2", ...): 10 of 200 such customers landed in a 50% variant.
fn mix(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

fn apply_overlay(served: &Served, overlay: &Overlay) -> Result<()> {
    for engine in served.engines() {
        apply_to_engine(engine, overlay)?;
    }
    Ok(())
}

fn apply_to_engine(engine: &Engine, overlay: &Overlay) -> Result<()> {
    let vectors: Vec<(String, Vec<f32>)> = overlay
        .added
        .iter()
        .map(|(id, f)| Ok((id.clone(), engine.embed_article(f)?)))
        .collect::<Result<_>>()?;
    engine.pool.update(|s| {
        for (id, v) in &vectors {
            s.add(id, v)?;
        }
        for id in &overlay.unavailable {
            if s.id_of(id).is_some() {
                s.set_available(id, false)?;
            }
        }
        Ok(())
    })?;
    Ok(())
}

fn read_customers(path: &Path) -> Result<HashMap<String, Customer>> {
    let text = crate::read_text(path)?;
    let mut out = HashMap::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let c: CustomerLine = serde_json::from_str(line).map_err(|e| Error::Data {
            path: path.to_path_buf(),
            line: i + 1,
            msg: e.to_string(),
        })?;
        let history = c
            .history
            .into_iter()
            .map(|h| Purchase {
                article: h.article_id,
                days_ago: h.days_ago,
                channel: h.channel,
            })
            .collect();
        if out
            .insert(
                c.customer_id.clone(),
                Customer {
                    history,
                    attributes: c.attributes,
                },
            )
            .is_some()
        {
            return Err(Error::Data {
                path: path.to_path_buf(),
                line: i + 1,
                msg: format!("customer `{}` appears twice", c.customer_id),
            });
        }
    }
    Ok(out)
}

fn read_prices(path: &Path) -> Result<HashMap<String, f32>> {
    let text = crate::read_text(path)?;
    let mut out = HashMap::new();
    for (i, line) in text.lines().enumerate() {
        if i == 0 && line.starts_with("article_id") || line.trim().is_empty() {
            continue;
        }
        let bad = |msg: String| Error::Data {
            path: path.to_path_buf(),
            line: i + 1,
            msg,
        };
        let (id, price) = line
            .split_once(',')
            .ok_or_else(|| bad("expected `article_id,price`".into()))?;
        let p: f32 = price
            .trim()
            .parse()
            .map_err(|_| bad(format!("price `{price}` is not a number")))?;
        if !(p.is_finite() && p > 0.0) {
            return Err(bad(format!("price {p} must be positive")));
        }
        out.insert(id.trim().to_string(), p);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_customer_and_price_lines_name_file_and_line() {
        let dir = std::env::temp_dir().join(format!("recforge-serve-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let c = dir.join("customers.jsonl");
        std::fs::write(&c, "{\"customer_id\": \"a\"}\n\n{\"customer_id\": 7}\n").unwrap();
        let err = read_customers(&c).err().unwrap().to_string();
        assert!(err.contains("customers.jsonl, line 3"), "{err}");
        std::fs::write(&c, "{\"customer_id\": \"a\"}\n{\"customer_id\": \"a\"}\n").unwrap();
        assert!(
            read_customers(&c)
                .err()
                .unwrap()
                .to_string()
                .contains("twice")
        );
        let p = dir.join("prices.csv");
        std::fs::write(&p, "article_id,price\nx,0.5\ny,-1\n").unwrap();
        let err = read_prices(&p).err().unwrap().to_string();
        assert!(err.contains("prices.csv, line 3"), "{err}");
        std::fs::write(&p, "article_id,price\nx,0.5\n").unwrap();
        assert_eq!(read_prices(&p).unwrap()["x"], 0.5);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
