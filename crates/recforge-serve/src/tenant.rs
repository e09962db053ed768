//! One client's serving state: its model variants, the live changes to its
//! item pool (kept so that a reloaded model gets them too, and journaled
//! so that a restarted server does), its customers' dated histories (which
//! purchase events extend), prices, and the online attribution of
//! purchases to the arm that showed them.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};

use serde::Deserialize;

use recforge_infer::rank::bundle::RankingBundle;
use recforge_infer::rank::second::Ordering;
use recforge_infer::rank::sources::CandidateConfig;

use crate::attribution::Attribution;
use crate::config::{Config, TenantConfig};
use crate::journal::{EventRecord, Journal, Record};
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
            Served::Ranking { bundle, .. } => bundle.engines(),
        }
    }

    /// A ranking variant after articles were added to its engines' pools:
    /// a clone whose tables give the new ones item ids and re-read the
    /// vectors of those added before (sharing engines, pools and trees with
    /// this one); None for a model variant (its pool is all it serves from)
    /// or when its tables need no change.
    pub fn with_articles(&self, articles: &[(&str, &HashMap<String, String>)]) -> Option<Served> {
        let Served::Ranking {
            bundle,
            ordering,
            sizes,
        } = self
        else {
            return None;
        };
        let mut bundle = bundle.clone();
        let added = bundle.add_articles(articles);
        added.changed().then(|| {
            let mut ordering = ordering.clone();
            if let Some(o) = &mut ordering {
                o.add_unsold(added.new);
            }
            Served::Ranking {
                bundle,
                ordering,
                sizes: sizes.clone(),
            }
        })
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

    /// The article's price when one is known.
    pub fn known(&self, article: &str) -> Option<f32> {
        self.by_article.get(article).copied()
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

/// One purchase in a stored history, dated, so its age follows the clock.
pub struct Dated {
    pub article: String,
    /// Days since 1970-01-01.
    pub day: i64,
    pub channel: Option<u8>,
}

pub struct Customer {
    /// Oldest first, at most the tenant's `max_history`.
    pub history: Vec<Dated>,
    pub attributes: HashMap<String, String>,
}

impl Customer {
    /// The history as the engines take it on `today`: each purchase's age
    /// in days. A purchase dated after `today` (an event from a skewed
    /// clock, or one past a replay's served day) is left out until its
    /// day comes: nothing after the day served reaches a feature.
    pub fn purchases(&self, today: i64) -> Vec<Purchase> {
        self.history
            .iter()
            .filter(|d| d.day <= today)
            .map(|d| Purchase {
                article: d.article.clone(),
                days_ago: (today - d.day) as f64,
                channel: d.channel,
            })
            .collect()
    }

    /// Adds a purchase in date order (after others of its day). Events
    /// never grow a history past `max` (one loaded longer from the
    /// customers file keeps its length): the oldest purchase goes.
    fn push(&mut self, p: Dated, max: usize) {
        let cap = max.max(self.history.len());
        let at = self.history.partition_point(|d| d.day <= p.day);
        self.history.insert(at, p);
        if self.history.len() > cap {
            let extra = self.history.len() - cap;
            self.history.drain(..extra);
        }
    }
}

/// The day a history's ages are counted from.
#[derive(Debug, Clone, Copy)]
pub enum Today {
    /// A configured date (replaying data as of its served day).
    Fixed(i64),
    /// The server's clock (UTC).
    Clock,
}

impl Today {
    pub fn day(self) -> i64 {
        match self {
            Today::Fixed(d) => d,
            Today::Clock => (unix_now() / 86_400.0).floor() as i64,
        }
    }
}

/// Seconds since 1970-01-01 on the server's clock.
pub fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// What admin changes and events share: the overlay and the journal,
/// behind one lock so records reach the journal in the order they apply.
pub struct Live {
    pub overlay: Overlay,
    pub journal: Option<Journal>,
}

impl Live {
    /// Writes `r` to the journal (when there is one) before it is applied.
    pub fn record(&mut self, r: &Record) -> Result<()> {
        match &mut self.journal {
            Some(j) => j.append(r),
            None => Ok(()),
        }
    }
}

pub struct Tenant {
    pub name: String,
    pub cfg: TenantConfig,
    models_dir: std::path::PathBuf,
    /// The server's largest k (a ranking bundle's own objective is sized
    /// to it).
    max_k: usize,
    variants: RwLock<Arc<Variants>>,
    /// Serialises admin changes and events (items, availability, events,
    /// reload) and their journal.
    pub live: Mutex<Live>,
    pub customers: RwLock<HashMap<String, Customer>>,
    pub prices: RwLock<Prices>,
    pub today: Today,
    pub attribution: Attribution,
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
    /// `YYYY-MM-DD`; without it, `days_ago` counts back from the day the
    /// file is loaded.
    #[serde(default)]
    date: Option<String>,
    #[serde(default)]
    days_ago: f64,
    /// Sales channel (H&M: 1 store, 2 online), when known.
    #[serde(default)]
    channel: Option<u8>,
}

impl Tenant {
    pub fn load(name: &str, cfg: &TenantConfig, server: &Config) -> Result<Self> {
        let max_k = server.max_k;
        let a = Served::load(&server.models_dir.join(&cfg.bundle), cfg, max_k)?;
        let b = match &cfg.ab {
            Some(ab) => Some(Served::load(
                &server.models_dir.join(&ab.bundle),
                cfg,
                max_k,
            )?),
            None => None,
        };
        let today = match &cfg.today {
            Some(d) => Today::Fixed(
                recforge_infer::dates::parse_ymd(d)
                    .map(i64::from)
                    .ok_or_else(|| Error::Invalid(format!("today = `{d}`: use YYYY-MM-DD")))?,
            ),
            None => Today::Clock,
        };
        let customers = match &cfg.customers {
            Some(p) => read_customers(p, today.day())?,
            None => HashMap::new(),
        };
        let prices = match &cfg.prices {
            Some(p) => read_prices(p)?,
            None => HashMap::new(),
        };
        let customers = RwLock::new(customers);
        let prices = RwLock::new(Prices::new(prices));
        let mut overlay = Overlay::default();
        let journal = match &server.state_dir {
            Some(dir) => {
                let (j, replay) = Journal::open(&dir.join(format!("{name}.journal")))?;
                let n = replay.records.len();
                for r in &replay.records {
                    apply_record(r, &mut overlay, &customers, &prices, cfg.max_history);
                }
                if n > 0 {
                    eprintln!(
                        "recforge-serve: tenant `{name}`: replayed {n} journal records from {}",
                        j.path().display()
                    );
                }
                Some(j)
            }
            None => None,
        };
        let a = Arc::new(apply_overlay(a, &overlay)?);
        let b = match b {
            Some(b) => Some(Arc::new(apply_overlay(b, &overlay)?)),
            None => None,
        };
        Ok(Tenant {
            name: name.to_string(),
            cfg: cfg.clone(),
            models_dir: server.models_dir.clone(),
            max_k,
            variants: RwLock::new(Arc::new(Variants { a, b })),
            live: Mutex::new(Live { overlay, journal }),
            customers,
            prices,
            today,
            attribution: Attribution::new(
                cfg.attribution_window_s as f64,
                server.max_tracked_impressions,
            ),
        })
    }

    /// Applies an accepted (and journaled) change to the tenant's state
    /// beyond the pools; `live` is the tenant's, already locked.
    pub fn apply(&self, live: &mut Live, r: &Record) {
        apply_record(
            r,
            &mut live.overlay,
            &self.customers,
            &self.prices,
            self.cfg.max_history,
        );
    }

    pub fn variants(&self) -> Arc<Variants> {
        self.variants
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Swaps in variants made from the current ones (ranking variants that
    /// took new articles). The new ones are built outside the write lock,
    /// so requests are not held up by the copy; the caller holds `live`,
    /// so no reload or other change lands between the read and the swap.
    pub fn replace_variants(&self, f: impl FnOnce(&Variants) -> Option<Variants>) {
        let current = self.variants();
        if let Some(next) = f(&current) {
            *self.variants.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(next);
        }
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
        // Read and checked before taking the lock: changes and events go
        // on meanwhile. The overlay is applied and the bundle swapped in
        // under it, so no change lands between the two.
        let engine = Served::load(&self.models_dir.join(&name), &self.cfg, self.max_k)?;
        let live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        let engine = Arc::new(apply_overlay(engine, &live.overlay)?);
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

/// The hash of A/B splits and access-log sampling (shared with sharding).
pub(crate) use recforge_infer::bundle::mix64 as mix;

/// What a record changes outside the engines' pools: the overlay (for
/// reloads), customers' histories and prices. The one place a change
/// lands, whether it arrives live (after the route changed the pools) or
/// from the journal at start.
fn apply_record(
    r: &Record,
    overlay: &mut Overlay,
    customers: &RwLock<HashMap<String, Customer>>,
    prices: &RwLock<Prices>,
    max_history: usize,
) {
    match r {
        Record::Items { items } => {
            prices.write().unwrap_or_else(|e| e.into_inner()).set_many(
                items
                    .iter()
                    .filter_map(|it| Some((it.article_id.as_str(), it.price?))),
            );
            for it in items {
                overlay.unavailable.remove(&it.article_id);
                overlay
                    .added
                    .insert(it.article_id.clone(), it.features.clone());
            }
        }
        Record::Availability { sold_out, in_stock } => {
            overlay.unavailable.extend(sold_out.iter().cloned());
            for a in in_stock {
                overlay.unavailable.remove(a);
            }
        }
        Record::Events { events } => {
            let mut customers = customers.write().unwrap_or_else(|e| e.into_inner());
            for e in events {
                add_event(&mut customers, e, max_history);
            }
        }
    }
}

fn add_event(customers: &mut HashMap<String, Customer>, e: &EventRecord, max_history: usize) {
    customers
        .entry(e.customer_id.clone())
        .or_insert_with(|| Customer {
            history: Vec::new(),
            attributes: HashMap::new(),
        })
        .push(
            Dated {
                article: e.article_id.clone(),
                day: e.day,
                channel: e.channel,
            },
            max_history,
        );
}

/// A freshly loaded variant with the overlay's changes: added articles in
/// every engine's pool (and, for a ranking bundle, in its tables), then
/// availability.
fn apply_overlay(served: Served, overlay: &Overlay) -> Result<Served> {
    for engine in served.engines() {
        apply_to_engine(engine, overlay)?;
    }
    let added: Vec<(&str, &HashMap<String, String>)> = overlay
        .added
        .iter()
        .map(|(id, f)| (id.as_str(), f))
        .collect();
    Ok(served.with_articles(&added).unwrap_or(served))
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

/// Reads a customers file; entries dated by `days_ago` alone are dated
/// back from `today`.
fn read_customers(path: &Path, today: i64) -> Result<HashMap<String, Customer>> {
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
        let mut history = c
            .history
            .into_iter()
            .map(|h| {
                let day = match &h.date {
                    Some(d) => recforge_infer::dates::parse_ymd(d)
                        .map(i64::from)
                        .ok_or_else(|| Error::Data {
                            path: path.to_path_buf(),
                            line: i + 1,
                            msg: format!(
                                "date `{d}` of article `{}`: use YYYY-MM-DD",
                                h.article_id
                            ),
                        })?,
                    None => today - h.days_ago.max(0.0).round() as i64,
                };
                Ok(Dated {
                    article: h.article_id,
                    day,
                    channel: h.channel,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        // Oldest first, whatever order the file had (stable within a day).
        history.sort_by_key(|d| d.day);
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
    fn events_join_histories_in_date_order_within_the_cap() {
        let d = |a: &str, day| Dated {
            article: a.into(),
            day,
            channel: None,
        };
        let mut c = Customer {
            history: vec![d("x", 10), d("y", 12)],
            attributes: HashMap::new(),
        };
        c.push(d("late-arrival", 11), 3);
        c.push(d("z", 12), 3);
        let order: Vec<&str> = c.history.iter().map(|p| p.article.as_str()).collect();
        assert_eq!(
            order,
            ["late-arrival", "y", "z"],
            "x, the oldest, made room"
        );
        let ages: Vec<f64> = c.purchases(15).iter().map(|p| p.days_ago).collect();
        assert_eq!(ages, [4.0, 3.0, 3.0]);
        // A purchase dated after the day served is left out until its day.
        c.push(d("w", 20), 3);
        assert!(c.purchases(15).iter().all(|p| p.article != "w"));
        assert_eq!(c.purchases(20).last().unwrap().article, "w");
    }

    #[test]
    fn bad_customer_and_price_lines_name_file_and_line() {
        let dir = std::env::temp_dir().join(format!("recforge-serve-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let c = dir.join("customers.jsonl");
        std::fs::write(&c, "{\"customer_id\": \"a\"}\n\n{\"customer_id\": 7}\n").unwrap();
        let err = read_customers(&c, 0).err().unwrap().to_string();
        assert!(err.contains("customers.jsonl, line 3"), "{err}");
        std::fs::write(
            &c,
            "{\"customer_id\": \"a\", \"history\": [{\"article_id\": \"x\", \"date\": \"2020-02-30\"}]}\n",
        )
        .unwrap();
        let err = read_customers(&c, 0).err().unwrap().to_string();
        assert!(
            err.contains("line 1") && err.contains("2020-02-30"),
            "{err}"
        );
        std::fs::write(
            &c,
            "{\"customer_id\": \"a\", \"history\": [{\"article_id\": \"y\", \"date\": \"1970-01-11\"}, {\"article_id\": \"x\", \"days_ago\": 3}]}\n",
        )
        .unwrap();
        let got = read_customers(&c, 20).unwrap();
        let ages: Vec<(String, f64)> = got["a"]
            .purchases(21)
            .into_iter()
            .map(|p| (p.article, p.days_ago))
            .collect();
        assert_eq!(ages, [("y".to_string(), 11.0), ("x".to_string(), 4.0)]);
        std::fs::write(&c, "{\"customer_id\": \"a\"}\n{\"customer_id\": \"a\"}\n").unwrap();
        assert!(
            read_customers(&c, 0)
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
