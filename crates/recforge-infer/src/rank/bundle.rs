//! Ranking bundles: the whole two-stage system as one directory, written by
//! the trainer for the system it evaluated (and for the refit one of a
//! submission) and loaded into a [`RankingEngine`] for serving. The format
//! is documented in `models/README.md`.
//!
//! ```text
//! NAME/
//!   ranking.json     the manifest: format, day served, objective, list
//!                    sizes, the second stage, the feature spec, hashes
//!   state.cbor       articles, their attributes, the candidate sources'
//!                    and the features' fitted state
//!   trees.txt        the second-stage trees (LightGBM's text format),
//!                    when trees are served
//!   ranker/          the sequential ranker's model bundle
//!   retrieval/       the two-tower model's bundle, when it is a source
//! ```
//!
//! Loading trusts nothing: every part's hash, the feature spec against the
//! registry and the trees, the articles against the state's tables and the
//! model bundles, and each mismatch is refused naming the part.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::CustomerHistory;
use super::blend::Blender;
use super::engine::{AddedItem, ArticleEngine, RankCustomer, RankingEngine};
use super::features::{Context, Feature};
use super::second::{Ordering, Ranked, Scorer};
use super::sources::{CandidateConfig, CandidateSources};
use crate::bundle::{ModelKind, read_manifest, sha256_hex};
use crate::engine::Purchase;
use crate::trees::Trees;
use crate::{Bundle, Error, Objective, Result};

pub const FORMAT: &str = "recforge-ranking";
pub const FORMAT_VERSION: u32 = 1;
pub const MANIFEST: &str = "ranking.json";
pub const STATE: &str = "state.cbor";
pub const TREES: &str = "trees.txt";
pub const RANKER: &str = "ranker";
pub const RETRIEVAL: &str = "retrieval";

/// What orders the candidates.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum SecondStageSpec {
    /// Gradient-boosted trees in `trees.txt`.
    Trees {
        sha256: String,
        /// Share of negatives kept in training (the binary trees'
        /// correction).
        negative_rate: f64,
    },
    /// The logistic blender.
    Blender { blender: Blender },
    /// The sequential ranker's score alone.
    Score,
}

/// Metrics of the bundled system on the validation week, as the trainer
/// measured them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Validation {
    pub map_at_12: f64,
    pub revenue_per_impression: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RankingManifest {
    pub format: String,
    pub format_version: u32,
    pub name: String,
    /// The day served: every feature and source is fitted on the rows
    /// before it, and "days since" counts to it.
    pub day: i64,
    /// The log's last day the state saw (training cut-off).
    pub last_day: i64,
    pub objective: Objective,
    pub alpha: f64,
    /// List length served.
    pub k: usize,
    /// The sizes the sources were fitted with (the most a client may ask).
    pub candidates: CandidateConfig,
    pub second: SecondStageSpec,
    /// Feature names in row order.
    pub features: Vec<String>,
    /// Articles (item ids `0..articles`, 0 the padding entry).
    pub articles: usize,
    pub state_sha256: String,
    /// The model bundles' weight hashes (their manifests' `sha256`).
    pub ranker_sha256: String,
    pub retrieval_sha256: Option<String>,
    pub validation: Option<Validation>,
}

/// One article attribute: the raw value of each code and each article's
/// code (how articles the model bundles never saw are embedded).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ArticleColumn {
    pub name: String,
    pub vocab: Vec<String>,
    pub codes: Vec<u32>,
}

/// What `state.cbor` holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RankingState {
    /// Article id of each item id.
    pub articles: Vec<String>,
    pub attributes: Vec<ArticleColumn>,
    pub sources: CandidateSources,
    pub context: Context,
}

/// The served second stage, owned.
#[derive(Clone)]
pub enum Served {
    Trees(Trees, f64),
    Blender(Blender),
    Score,
}

impl Served {
    pub fn scorer(&self) -> Scorer<'_> {
        match self {
            Served::Trees(t, rate) => Scorer::Trees(t, *rate),
            Served::Blender(b) => Scorer::Blender(b),
            Served::Score => Scorer::Score,
        }
    }
}

/// What a bundle is written from.
pub struct RankingParts<'a> {
    pub name: &'a str,
    pub last_day: i64,
    pub objective: Objective,
    pub alpha: f64,
    pub k: usize,
    pub state: &'a RankingState,
    /// The served trees' text, with the negative rate.
    pub trees: Option<(&'a str, f64)>,
    pub blender: Option<&'a Blender>,
    pub ranker: &'a Path,
    pub retrieval: Option<&'a Path>,
    pub validation: Option<Validation>,
}

/// A loaded ranking bundle: the engine, its served second stage and the
/// article ids.
#[derive(Clone)]
pub struct RankingBundle {
    pub dir: PathBuf,
    pub manifest: RankingManifest,
    pub engine: RankingEngine,
    /// Shared by clones (the trees are the largest part a clone would copy).
    pub served: Arc<Served>,
    pub articles: Vec<String>,
    /// Item id of each article.
    index: HashMap<String, u32>,
    /// Per [`super::Attr`] (by index): the code of each raw value, from the
    /// state's article columns, for articles added while serving.
    attr_codes: Arc<Vec<HashMap<String, u32>>>,
    /// `name@state-hash-prefix`: says which system answered.
    pub version: String,
}

/// What [`RankingBundle::add_articles`] changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Added {
    /// Articles new to the bundle, now with item ids.
    pub new: usize,
    /// Articles added while serving and now added again (their vectors
    /// re-read from the pools).
    pub refreshed: usize,
}

impl Added {
    pub fn changed(self) -> bool {
        self.new + self.refreshed > 0
    }
}

/// One customer's request to a ranking bundle, as a server receives it.
pub struct Request<'a> {
    /// Past purchases, oldest first.
    pub history: &'a [Purchase],
    /// Raw customer attributes (`age` in years, the two-tower model's
    /// customer columns).
    pub attributes: &'a HashMap<String, String>,
    pub k: usize,
    /// Articles never to serve (besides sold-out ones).
    pub exclude: &'a [&'a str],
    /// Also never serve what the history holds.
    pub exclude_purchased: bool,
    /// The list's objective, when the client's differs from the bundle's.
    pub ordering: Option<&'a Ordering>,
    /// The client's candidate sizes (checked with
    /// `CandidateConfig::within`), when smaller than the bundle's.
    pub candidates: Option<&'a CandidateConfig>,
}

/// What a ranking bundle answers.
pub struct Answer {
    /// (article id, value: score + objective term, None where unscored).
    pub items: Vec<(String, Option<f64>)>,
    /// Candidates the sources proposed (after sold-out ones left).
    pub candidates: usize,
    /// Purchases of the history the bundle knows.
    pub known_history: usize,
}

fn feature_names() -> Vec<String> {
    Feature::ALL.iter().map(|f| f.name().to_string()).collect()
}

/// Writes a ranking bundle into `dir`: into a temporary directory beside
/// it, renamed into place, so a half-written bundle never exists under its
/// name (an existing bundle there is replaced whole).
pub fn write(dir: &Path, parts: &RankingParts) -> Result<RankingManifest> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| Error::Io { path, source }
    };
    let parent = dir.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(io(parent))?;
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "ranking".into());
    let tmp = parent.join(format!(".{name}.tmp-{}", std::process::id()));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(io(&tmp))?;
    }
    std::fs::create_dir_all(&tmp).map_err(io(&tmp))?;
    let mut state = Vec::new();
    ciborium::into_writer(parts.state, &mut state)
        .map_err(|e| Error::Invalid(format!("{STATE}: cannot encode the state: {e}")))?;
    std::fs::write(tmp.join(STATE), &state).map_err(io(&tmp.join(STATE)))?;
    let second = match (parts.trees, parts.blender) {
        (Some((text, negative_rate)), _) => {
            std::fs::write(tmp.join(TREES), text).map_err(io(&tmp.join(TREES)))?;
            SecondStageSpec::Trees {
                sha256: sha256_hex(text.as_bytes()),
                negative_rate,
            }
        }
        (None, Some(b)) => SecondStageSpec::Blender { blender: b.clone() },
        (None, None) => SecondStageSpec::Score,
    };
    let copy = |from: &Path, to: &str| -> Result<String> {
        let bundle = Bundle::load(from)?;
        let dest = tmp.join(to);
        std::fs::create_dir_all(&dest).map_err(io(&dest))?;
        for f in [crate::bundle::MANIFEST, bundle.manifest.weights.as_str()] {
            std::fs::copy(from.join(f), dest.join(f)).map_err(io(&from.join(f)))?;
        }
        Ok(bundle.manifest.sha256.clone())
    };
    let ranker_sha256 = copy(parts.ranker, RANKER)?;
    let retrieval_sha256 = match parts.retrieval {
        Some(r) => Some(copy(r, RETRIEVAL)?),
        None => None,
    };
    let manifest = RankingManifest {
        format: FORMAT.into(),
        format_version: FORMAT_VERSION,
        name: parts.name.into(),
        day: parts.state.context.day(),
        last_day: parts.last_day,
        objective: parts.objective,
        alpha: parts.alpha,
        k: parts.k,
        candidates: parts.state.sources.config().clone(),
        second,
        features: feature_names(),
        articles: parts.state.articles.len(),
        state_sha256: sha256_hex(&state),
        ranker_sha256,
        retrieval_sha256,
        validation: parts.validation.clone(),
    };
    let json = serde_json::to_vec_pretty(&manifest).expect("the manifest serialises");
    std::fs::write(tmp.join(MANIFEST), json).map_err(io(&tmp.join(MANIFEST)))?;
    if dir.exists() {
        std::fs::remove_dir_all(dir).map_err(io(dir))?;
    }
    std::fs::rename(&tmp, dir).map_err(io(dir))?;
    Ok(manifest)
}

/// Whether `dir` holds a ranking bundle (rather than a model bundle).
pub fn is_ranking(dir: &Path) -> bool {
    dir.join(MANIFEST).is_file()
}

impl RankingBundle {
    /// Loads and checks the bundle in `dir`.
    pub fn load(dir: &Path) -> Result<Self> {
        let bad = |msg: String| Error::Bundle {
            dir: dir.to_path_buf(),
            msg,
        };
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read(&path).map_err(|source| Error::Io { path, source })
        };
        let text = read(MANIFEST)?;
        let manifest: RankingManifest = read_manifest(
            &text,
            MANIFEST,
            "a ranking manifest",
            FORMAT,
            FORMAT_VERSION,
        )
        .map_err(bad)?;
        let want = feature_names();
        if manifest.features != want {
            let first = manifest
                .features
                .iter()
                .zip(&want)
                .position(|(a, b)| a != b)
                .unwrap_or(manifest.features.len().min(want.len()));
            return Err(bad(format!(
                "{MANIFEST}: feature spec of {} features differs from this reader's {} at column {first} (`{}` against `{}`)",
                manifest.features.len(),
                want.len(),
                manifest.features.get(first).map_or("none", String::as_str),
                want.get(first).map_or("none", String::as_str),
            )));
        }
        let bytes = read(STATE)?;
        let sum = sha256_hex(&bytes);
        if sum != manifest.state_sha256 {
            return Err(bad(format!(
                "{STATE} has SHA-256 {sum}, the manifest says {}: the state was changed or damaged",
                manifest.state_sha256
            )));
        }
        let state: RankingState = ciborium::from_reader(bytes.as_slice())
            .map_err(|e| bad(format!("{STATE} cannot be read: {e}")))?;
        let n = state.articles.len();
        for (what, len) in [
            ("the manifest's article count", manifest.articles),
            ("the candidate sources' tables", state.sources.n_items()),
            ("the feature statistics", state.context.n_items()),
        ] {
            if len != n {
                return Err(bad(format!(
                    "{STATE}: {n} articles, but {what} cover {len}"
                )));
            }
        }
        if let Some(c) = state.attributes.iter().find(|c| c.codes.len() != n) {
            return Err(bad(format!(
                "{STATE}: attribute `{}` has {} codes for {n} articles",
                c.name,
                c.codes.len()
            )));
        }
        if state.context.day() != manifest.day {
            return Err(bad(format!(
                "{STATE} is fitted for day {}, the manifest serves day {}",
                state.context.day(),
                manifest.day
            )));
        }
        let served = match &manifest.second {
            SecondStageSpec::Trees {
                sha256,
                negative_rate,
            } => {
                let t = read(TREES)?;
                let sum = sha256_hex(&t);
                if &sum != sha256 {
                    return Err(bad(format!(
                        "{TREES} has SHA-256 {sum}, the manifest says {sha256}: the trees were changed or damaged"
                    )));
                }
                let text = String::from_utf8(t).map_err(|_| bad(format!("{TREES} is not text")))?;
                let trees = Trees::parse(&text).map_err(|e| bad(format!("{TREES}: {e}")))?;
                if trees.feature_names != manifest.features {
                    return Err(bad(format!(
                        "{TREES} reads {} features ({}…), the feature spec has {}",
                        trees.n_features(),
                        trees.feature_names.first().map_or("", String::as_str),
                        manifest.features.len()
                    )));
                }
                Served::Trees(trees, *negative_rate)
            }
            SecondStageSpec::Blender { blender } => {
                let n = super::blend::N;
                if [&blender.mean, &blender.scale, &blender.weights]
                    .iter()
                    .any(|v| v.len() != n)
                {
                    return Err(bad(format!(
                        "{MANIFEST}: the blender's coefficients are not {n} per table"
                    )));
                }
                Served::Blender(blender.clone())
            }
            SecondStageSpec::Score => Served::Score,
        };
        let attribute = |item: usize, name: &str| {
            let c = state.attributes.iter().find(|c| c.name == name)?;
            c.vocab
                .get(*c.codes.get(item)? as usize)
                .map(String::as_str)
        };
        let model = |sub: &str, kind: ModelKind, sha: &str| -> Result<ArticleEngine> {
            let b = Bundle::load(&dir.join(sub))?;
            if b.manifest.kind != kind {
                return Err(bad(format!(
                    "{sub}/ holds a {:?} bundle; a {kind:?} bundle belongs there",
                    b.manifest.kind
                )));
            }
            if b.manifest.sha256 != sha {
                return Err(bad(format!(
                    "{sub}/ holds weights {}, the manifest was written with {sha}",
                    b.manifest.sha256
                )));
            }
            let mut known = std::collections::HashSet::with_capacity(n);
            known.extend(state.articles.iter().map(String::as_str));
            if let Some(missing) = b
                .manifest
                .items
                .ids
                .iter()
                .skip(1)
                .find(|id| !known.contains(id.as_str()))
            {
                return Err(bad(format!(
                    "{sub}/ was trained with article `{missing}`, which the ranking bundle's articles lack"
                )));
            }
            ArticleEngine::new(b, &state.articles, &attribute)
        };
        let ranker = model(RANKER, ModelKind::Sasrec, &manifest.ranker_sha256)?;
        let retrieval = match &manifest.retrieval_sha256 {
            Some(sha) => Some(model(RETRIEVAL, ModelKind::TwoTower, sha)?),
            None => None,
        };
        let ordering = Ordering::new(
            &state.context,
            &state.sources,
            manifest.objective,
            manifest.alpha,
            manifest.k,
        );
        let version = format!("{}@{}", manifest.name, &manifest.state_sha256[..12]);
        let index = state
            .articles
            .iter()
            .enumerate()
            .skip(1)
            .map(|(i, a)| (a.clone(), i as u32))
            .collect();
        let attr_codes = super::Attr::ALL
            .iter()
            .map(|a| {
                state
                    .attributes
                    .iter()
                    .find(|c| c.name == a.column())
                    .map(|c| {
                        c.vocab
                            .iter()
                            .enumerate()
                            .skip(1)
                            .map(|(code, v)| (v.clone(), code as u32))
                            .collect()
                    })
                    .unwrap_or_default()
            })
            .collect();
        let RankingState {
            articles,
            sources,
            context,
            ..
        } = state;
        Ok(RankingBundle {
            dir: dir.to_path_buf(),
            engine: RankingEngine {
                ranker,
                retrieval,
                sources,
                context,
                ordering,
            },
            served: Arc::new(served),
            articles,
            index,
            attr_codes: Arc::new(attr_codes),
            manifest,
            version,
        })
    }

    /// Takes articles added to its engines' pools while serving (each with
    /// the raw attributes it was added with) as new item ids, so the
    /// two-tower and same-product sources can propose them and their
    /// features are computed as for an article never sold; articles it
    /// already has are left as they are (their pool vectors were replaced).
    /// Returns how many were new. A server clones the bundle, adds, and
    /// swaps the clone in; requests on the old one finish unchanged.
    pub fn add_articles(&mut self, articles: &[(&str, &HashMap<String, String>)]) -> Added {
        let ranker = self.engine.ranker.engine.pool.snapshot();
        let retrieval = self
            .engine
            .retrieval
            .as_ref()
            .map(|r| r.engine.pool.snapshot());
        let mut added = Vec::new();
        let mut again = Vec::new();
        for &(id, attributes) in articles {
            if let Some(&item) = self.index.get(id) {
                // Only articles added while serving have pool vectors in
                // the tables; the fitted ones keep their load-time vectors.
                if item as usize >= self.engine.ranker.loaded_items() {
                    again.push(item);
                }
                continue;
            }
            let attrs = std::array::from_fn(|a| {
                let column = super::Attr::ALL[a].column();
                attributes
                    .get(column)
                    .and_then(|v| self.attr_codes[a].get(v.trim()))
                    .copied()
                    .unwrap_or(0)
            });
            added.push(AddedItem {
                ranker: ranker.id_of(id),
                retrieval: retrieval.as_ref().and_then(|s| s.id_of(id)),
                attrs,
            });
            self.index
                .insert(id.to_string(), self.articles.len() as u32);
            self.articles.push(id.to_string());
        }
        self.engine.ranker.refresh_added(&again);
        if let Some(r) = &mut self.engine.retrieval {
            r.refresh_added(&again);
        }
        self.engine.add_unsold(&added);
        Added {
            new: added.len(),
            refreshed: again.len(),
        }
    }

    /// Every model engine it holds (the sequential ranker's, then the
    /// two-tower model's): pool changes go to all of them.
    pub fn engines(&self) -> Vec<&crate::engine::Engine> {
        std::iter::once(&*self.engine.ranker.engine)
            .chain(self.engine.retrieval.as_ref().map(|r| &*r.engine))
            .collect()
    }

    /// The item id of an article.
    pub fn item(&self, article: &str) -> Option<u32> {
        self.index.get(article).copied()
    }

    /// The list for one customer on the bundle's day: their history (days
    /// before the day, as a server sends it) becomes dated purchases of
    /// known articles, then candidates → features → the served second
    /// stage → top K of what the live pool sells and the request allows.
    pub fn answer(&self, req: &Request) -> Result<Answer> {
        let day = self.manifest.day;
        let (mut items, mut days, mut channels) = (Vec::new(), Vec::new(), Vec::new());
        for p in req.history {
            if let Some(i) = self.item(&p.article) {
                items.push(i);
                days.push(day - p.days_ago.max(0.0).round() as i64);
                channels.push(p.channel);
            }
        }
        // The online share needs every purchase's channel.
        let channels: Vec<u8> = channels
            .iter()
            .copied()
            .collect::<Option<_>>()
            .unwrap_or_default();
        // Oldest first, as the log is (a stable sort keeps same-day order).
        let mut order: Vec<usize> = (0..items.len()).collect();
        order.sort_by_key(|&j| days[j]);
        let items: Vec<u32> = order.iter().map(|&j| items[j]).collect();
        let days: Vec<i64> = order.iter().map(|&j| days[j]).collect();
        let channels: Vec<u8> = if channels.is_empty() {
            channels
        } else {
            order.iter().map(|&j| channels[j]).collect()
        };
        let age = req
            .attributes
            .get("age")
            .and_then(|a| a.trim().parse::<f32>().ok())
            .unwrap_or(f32::NAN);
        let codes = self
            .engine
            .retrieval
            .as_ref()
            .map_or_else(Vec::new, |r| r.engine.user_codes(req.attributes));
        let customer = RankCustomer {
            history: CustomerHistory {
                items: &items,
                days: &days,
                channels: &channels,
                age,
            },
            codes: &codes,
        };
        let sizes = req.candidates.unwrap_or(self.engine.sources.config());
        let p = self
            .engine
            .prepare_sized(std::slice::from_ref(&customer), 0, sizes)?
            .pop()
            .ok_or_else(|| Error::Invalid("no customer prepared".into()))?;
        let mut excluded: Vec<u32> = req.exclude.iter().filter_map(|a| self.item(a)).collect();
        if req.exclude_purchased {
            excluded.extend(&items);
        }
        excluded.sort_unstable();
        let snap = self.engine.ranker.engine.pool.snapshot();
        let allowed = |item: u32| {
            excluded.binary_search(&item).is_err() && self.engine.ranker.sells(&snap, item)
        };
        let ordering = req.ordering.unwrap_or(&self.engine.ordering);
        let ranked: Vec<Ranked> = ordering.ranked(
            &p.candidates,
            &p.rows,
            p.has_query,
            self.served.scorer(),
            &allowed,
            req.k,
        );
        Ok(Answer {
            items: ranked
                .iter()
                .map(|r| (self.articles[r.item as usize].clone(), r.value))
                .collect(),
            candidates: p.candidates.len(),
            known_history: items.len(),
        })
    }
}
