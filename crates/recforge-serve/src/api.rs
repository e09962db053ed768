//! The JSON API's routes as plain functions: request body in, response
//! value or a client error out. No HTTP types here, so every rule can be
//! tested without a socket (the integration tests also go through HTTP).

use std::borrow::Cow;
use std::collections::HashMap;

use recforge_infer::engine::{Engine, Purchase};
use recforge_infer::{Objective, PoolSnapshot};
use serde::Deserialize;
use serde_json::{Value, json};

use recforge_infer::rank::bundle::{RankingBundle, Request};
use recforge_infer::rank::second::Ordering;
use recforge_infer::rank::sources::CandidateConfig;

use crate::journal::{EventRecord, ItemRecord, Record};
use crate::tenant::{Served, Tenant, Variants, unix_now};

/// A client error (4xx) or a server fault (5xx), returned as
/// `{"error": {"code", "message"}}`.
#[derive(Debug)]
pub struct ApiError {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: u16, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }
    pub fn body(&self) -> Value {
        json!({"error": {"code": self.code, "message": self.message}})
    }
}

type ApiResult = Result<Value, ApiError>;

fn parse<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::new(400, "bad_json", format!("request body: {e}")))
}

/// A history entry: an article id, or an article id with its age in days.
#[derive(Deserialize)]
#[serde(untagged)]
enum HistoryItem {
    Id(String),
    Dated {
        article_id: String,
        days_ago: f64,
        /// Sales channel (H&M: 1 store, 2 online), when known.
        #[serde(default)]
        channel: Option<u8>,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RecommendRequest {
    customer_id: Option<String>,
    /// Recent purchases, oldest first; overrides the stored history.
    history: Option<Vec<HistoryItem>>,
    attributes: Option<HashMap<String, String>>,
    #[serde(default = "default_k")]
    k: usize,
    #[serde(default)]
    exclude: Vec<String>,
}

fn default_k() -> usize {
    12
}

pub fn recommend(t: &Tenant, max_k: usize, body: &[u8]) -> ApiResult {
    let req: RecommendRequest = parse(body)?;
    let value = checked_answer(t, max_k, &req)?;
    record_impressions(t, &req, &value);
    Ok(value)
}

fn checked_answer(t: &Tenant, max_k: usize, req: &RecommendRequest) -> ApiResult {
    if req.k == 0 || req.k > max_k {
        return Err(ApiError::new(
            422,
            "bad_k",
            format!("k = {} is outside 1..={max_k}", req.k),
        ));
    }
    answer(t, req)
}

/// The articles of an answer given to an identified customer become
/// impressions of the arm that answered.
fn record_impressions(t: &Tenant, req: &RecommendRequest, value: &Value) {
    if let Some(id) = &req.customer_id
        && let (Some(variant), Some(items)) = (
            crate::http::variant_label(value),
            value.get("items").and_then(Value::as_array),
        )
    {
        t.attribution.shown(
            id,
            variant,
            items
                .iter()
                .map(|it| it.get("article_id").and_then(Value::as_str).unwrap_or("")),
            unix_now(),
        );
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchRequest {
    requests: Vec<Value>,
}

/// Most recommendations one batch may ask for.
pub const MAX_BATCH: usize = 1000;

/// Several recommendations in one call: each answered as
/// [`recommend`] would, in order, an error standing in the place of a
/// request that fails (the others still answered). `abandoned` is set
/// when the caller stopped waiting (the deadline): the work stops, and
/// nothing counts as shown.
pub fn recommend_batch(
    t: &Tenant,
    max_k: usize,
    body: &[u8],
    abandoned: &std::sync::atomic::AtomicBool,
) -> ApiResult {
    let req: BatchRequest = parse(body)?;
    if req.requests.is_empty() || req.requests.len() > MAX_BATCH {
        return Err(ApiError::new(
            422,
            "bad_batch",
            format!(
                "`requests` holds {}; give 1..={MAX_BATCH}",
                req.requests.len()
            ),
        ));
    }
    let mut answered = Vec::with_capacity(req.requests.len());
    for (i, r) in req.requests.iter().enumerate() {
        if abandoned.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(ApiError::new(
                503,
                "deadline",
                format!("the batch was abandoned at its deadline, after {i} requests"),
            ));
        }
        let one = RecommendRequest::deserialize(r)
            .map_err(|e| ApiError::new(400, "bad_json", format!("request body: {e}")))
            .and_then(|q| checked_answer(t, max_k, &q).map(|v| (q, v)));
        answered.push(one);
    }
    let results = answered
        .into_iter()
        .map(|one| match one {
            Ok((q, v)) => {
                record_impressions(t, &q, &v);
                v
            }
            Err(e) => {
                let mut b = e.body();
                b["status"] = json!(e.status);
                b
            }
        })
        .collect::<Vec<_>>();
    Ok(json!({"tenant": t.name, "results": results}))
}

/// The stored customer's history (aged to the tenant's today) and
/// attributes, each only where the request does not send its own.
type Stored = (Option<Vec<Purchase>>, Option<HashMap<String, String>>);

fn stored(t: &Tenant, req: &RecommendRequest) -> Option<Stored> {
    let id = req.customer_id.as_ref()?;
    let customers = t.customers.read().unwrap_or_else(|e| e.into_inner());
    let c = customers.get(id)?;
    Some((
        req.history.is_none().then(|| c.purchases(t.today.day())),
        req.attributes.is_none().then(|| c.attributes.clone()),
    ))
}

fn answer(t: &Tenant, req: &RecommendRequest) -> ApiResult {
    let (stored_history, stored_attributes) = match stored(t, req) {
        Some(s) => (s.0, s.1),
        None => (None, None),
    };
    let history = history_of(t, req, stored_history)?;
    let history: &[Purchase] = &history;
    let attributes = match (&req.attributes, stored_attributes) {
        (Some(a), _) => Cow::Borrowed(a),
        (None, Some(a)) => Cow::Owned(a),
        (None, None) => Cow::Owned(HashMap::new()),
    };
    let attributes: &HashMap<String, String> = &attributes;
    let variant = t.variant_of(req.customer_id.as_deref());
    let variants = t.variants();
    let served: &Served = match (variant, &variants.b) {
        ("b", Some(b)) => b,
        _ => &variants.a,
    };
    let engine: &Engine = match served {
        Served::Model(e) => e,
        Served::Ranking {
            bundle,
            ordering,
            sizes,
        } => {
            let how = How {
                ordering: ordering.as_ref(),
                sizes: sizes.as_ref(),
            };
            return ranking_answer(t, bundle, how, req, history, attributes, variant);
        }
    };
    let snap = engine.pool.snapshot();
    // Unknown article ids in `exclude` cannot be served anyway.
    let mut exclude: Vec<u32> = req.exclude.iter().filter_map(|a| snap.id_of(a)).collect();
    if t.cfg.exclude_purchased {
        exclude.extend(history.iter().filter_map(|p| snap.id_of(&p.article)));
    }
    exclude.sort_unstable();
    exclude.dedup();
    let query = engine
        .query_articles(history, attributes)
        .map_err(|e| ApiError::new(500, "model", e.to_string()))?;
    let (source, items): (&str, Vec<Value>) = match query {
        Some(q) => ("model", model_items(t, &snap, &q, req.k, &exclude)?),
        None => (
            "cold-start",
            cold_start_items(engine, &snap, req.k, &exclude),
        ),
    };
    Ok(json!({
        "tenant": t.name,
        "variant": variant,
        "model_version": engine.version,
        "pool_version": snap.version,
        "source": source,
        "items": items,
    }))
}

/// The whole ranking system's answer: candidates → features → second stage
/// → top `k` of what the pool sells.
/// A tenant's options over a ranking bundle.
struct How<'a> {
    ordering: Option<&'a Ordering>,
    sizes: Option<&'a CandidateConfig>,
}

fn ranking_answer(
    t: &Tenant,
    bundle: &RankingBundle,
    how: How,
    req: &RecommendRequest,
    history: &[Purchase],
    attributes: &HashMap<String, String>,
    variant: &str,
) -> ApiResult {
    let exclude: Vec<&str> = req.exclude.iter().map(String::as_str).collect();
    let a = bundle
        .answer(&Request {
            history,
            attributes,
            k: req.k,
            exclude: &exclude,
            exclude_purchased: t.cfg.exclude_purchased,
            ordering: how.ordering,
            candidates: how.sizes,
        })
        .map_err(|e| ApiError::new(500, "model", e.to_string()))?;
    let items: Vec<Value> = a
        .items
        .iter()
        .map(|(id, v)| json!({"article_id": id, "score": v}))
        .collect();
    Ok(json!({
        "tenant": t.name,
        "variant": variant,
        "model_version": bundle.version,
        "pool_version": bundle.engine.ranker.engine.pool.snapshot().version,
        "source": "ranking",
        "candidates": a.candidates,
        "known_history": a.known_history,
        "items": items,
    }))
}

/// The request's history: the one it sends, or the stored customer's.
fn history_of(
    t: &Tenant,
    req: &RecommendRequest,
    stored: Option<Vec<Purchase>>,
) -> Result<Vec<Purchase>, ApiError> {
    match (&req.history, &req.customer_id, stored) {
        (Some(h), _, _) => Ok(h
            .iter()
            .map(|x| match x {
                HistoryItem::Id(a) => Purchase {
                    article: a.clone(),
                    days_ago: 0.0,
                    channel: None,
                },
                HistoryItem::Dated {
                    article_id,
                    days_ago,
                    channel,
                } => Purchase {
                    article: article_id.clone(),
                    days_ago: days_ago.max(0.0),
                    channel: *channel,
                },
            })
            .collect()),
        (None, Some(_), Some(h)) => Ok(h),
        (None, Some(id), None) => Err(ApiError::new(
            404,
            "unknown_customer",
            format!(
                "customer `{id}` is not known to tenant `{}`; send `history` instead",
                t.name
            ),
        )),
        (None, None, _) => Err(ApiError::new(
            422,
            "no_customer",
            "give `customer_id` or `history`",
        )),
    }
}

/// The model's top `k` for query `q`, ordered by the tenant's objective
/// (the revenue objective re-orders a wider list by score + alpha · ln
/// price and reports that value too).
fn model_items(
    t: &Tenant,
    snap: &PoolSnapshot,
    q: &[f32],
    k: usize,
    exclude: &[u32],
) -> Result<Vec<Value>, ApiError> {
    let revenue = t.cfg.objective == Objective::Revenue;
    let want = if revenue { (4 * k).max(100) } else { k };
    let mut list = snap
        .recommend(q, want, &[exclude])
        .map_err(|e| ApiError::new(500, "model", e.to_string()))?
        .pop()
        .unwrap_or_default();
    let mut scored: Vec<(u32, f32, f32)> = list.drain(..).map(|(id, s)| (id, s, s)).collect();
    if revenue {
        let prices = t.prices.read().unwrap_or_else(|e| e.into_inner());
        for x in &mut scored {
            let p = prices.get(snap.article(x.0).unwrap_or_default());
            x.2 = t.cfg.objective.value(x.1, t.cfg.alpha, f64::from(p).ln());
        }
        scored.sort_by(|a, b| b.2.total_cmp(&a.2).then(a.0.cmp(&b.0)));
    }
    scored.truncate(k);
    Ok(scored
        .iter()
        .map(|&(id, s, v)| {
            let mut o = json!({"article_id": snap.article(id).unwrap_or_default(), "score": s});
            if revenue {
                o["value"] = json!(v);
            }
            o
        })
        .collect())
}

/// The bundle's cold-start list, available and not excluded, first `k`.
fn cold_start_items(engine: &Engine, snap: &PoolSnapshot, k: usize, exclude: &[u32]) -> Vec<Value> {
    engine
        .cold_start()
        .iter()
        .filter_map(|a| {
            let id = snap.id_of(a)?;
            (snap.is_available(id) && exclude.binary_search(&id).is_err())
                .then(|| json!({"article_id": a, "score": null}))
        })
        .take(k)
        .collect()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ItemsRequest {
    items: Vec<ItemRecord>,
}

/// A change that could not be made durable: nothing was applied.
fn not_journaled(e: crate::Error) -> ApiError {
    ApiError::new(
        503,
        "journal",
        format!("the change could not be recorded durably ({e}); nothing was changed"),
    )
}

/// Adds articles (or replaces their vectors) from their features, in every
/// variant, all or nothing.
// A route: parse, check every article before changing anything (so a
// bad one applies nothing), embed, apply, answer; one step after another.
pub fn items(t: &Tenant, body: &[u8]) -> ApiResult {
    let req: ItemsRequest = parse(body)?;
    if req.items.is_empty() {
        return Err(ApiError::new(422, "empty", "`items` is empty"));
    }
    let mut live = t.live.lock().unwrap_or_else(|e| e.into_inner());
    let variants = t.variants();
    let engines: Vec<&Engine> = variants.engines().map(|(_, e)| e).collect();
    let known: Vec<&str> = variants
        .a
        .primary()
        .bundle
        .manifest
        .items
        .features
        .iter()
        .map(|f| f.name.as_str())
        .collect();
    for it in &req.items {
        if it.article_id.trim().is_empty() {
            return Err(ApiError::new(
                422,
                "bad_item",
                "an item has an empty `article_id`",
            ));
        }
        if let Some(bad) = it.features.keys().find(|k| {
            !engines.iter().any(|e| {
                e.bundle
                    .manifest
                    .items
                    .features
                    .iter()
                    .any(|f| &f.name == *k)
            })
        }) {
            return Err(ApiError::new(
                422,
                "unknown_feature",
                format!(
                    "article `{}`: feature `{bad}` is not read by the model (it reads {known:?})",
                    it.article_id
                ),
            ));
        }
        if let Some(p) = it.price
            && !(p.is_finite() && p > 0.0)
        {
            return Err(ApiError::new(
                422,
                "bad_price",
                format!(
                    "article `{}`: price must be a positive number",
                    it.article_id
                ),
            ));
        }
    }
    // Every vector first, so that a failure changes nothing.
    let added: Vec<(&str, &HashMap<String, String>)> = req
        .items
        .iter()
        .map(|it| (it.article_id.as_str(), &it.features))
        .collect();
    let vectors = recforge_infer::engine::embed_items(&engines, &added)
        .map_err(|err| ApiError::new(500, "model", err.to_string()))?;
    let record = Record::Items {
        items: req.items.clone(),
    };
    live.record(&record).map_err(not_journaled)?;
    let ids: Vec<&str> = added.iter().map(|(id, _)| *id).collect();
    recforge_infer::engine::add_to_pools(&engines, &ids, &vectors)
        .map_err(|err| ApiError::new(500, "pool", err.to_string()))?;
    // A ranking variant gives the new articles item ids in a clone of its
    // tables, swapped in while `live` is held (requests in flight finish
    // on the old one, which ignores pool entries it has no id for).
    t.replace_variants(|v| {
        let a = v.a.with_articles(&added).map(std::sync::Arc::new);
        let b =
            v.b.as_ref()
                .and_then(|b| b.with_articles(&added))
                .map(std::sync::Arc::new);
        (a.is_some() || b.is_some()).then(|| Variants {
            a: a.unwrap_or_else(|| v.a.clone()),
            b: b.or_else(|| v.b.clone()),
        })
    });
    t.apply(&mut live, &record);
    Ok(json!({"added": req.items.len(), "pool_size": variants.a.primary().pool.snapshot().len()}))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AvailabilityRequest {
    #[serde(default)]
    sold_out: Vec<String>,
    #[serde(default)]
    in_stock: Vec<String>,
}

/// Marks articles sold out or back in stock in every variant. Unknown
/// article ids refuse the whole request, so a typo never half-applies.
pub fn availability(t: &Tenant, body: &[u8]) -> ApiResult {
    let req: AvailabilityRequest = parse(body)?;
    if req.sold_out.is_empty() && req.in_stock.is_empty() {
        return Err(ApiError::new(
            422,
            "empty",
            "give `sold_out` and/or `in_stock` article ids",
        ));
    }
    let mut live = t.live.lock().unwrap_or_else(|e| e.into_inner());
    let variants = t.variants();
    let engines: Vec<&Engine> = variants.engines().map(|(_, e)| e).collect();
    let snaps: Vec<_> = engines.iter().map(|e| e.pool.snapshot()).collect();
    let unknown: Vec<&String> = req
        .sold_out
        .iter()
        .chain(&req.in_stock)
        .filter(|a| snaps.iter().all(|s| s.id_of(a).is_none()))
        .collect();
    if !unknown.is_empty() {
        return Err(ApiError::new(
            404,
            "unknown_article",
            format!("not in the item pool: {unknown:?}; nothing was changed"),
        ));
    }
    let record = Record::Availability {
        sold_out: req.sold_out.clone(),
        in_stock: req.in_stock.clone(),
    };
    live.record(&record).map_err(not_journaled)?;
    for e in &engines {
        e.pool
            .update(|s| {
                for (list, avail) in [(&req.sold_out, false), (&req.in_stock, true)] {
                    for a in list {
                        if s.id_of(a).is_some() {
                            s.set_available(a, avail)?;
                        }
                    }
                }
                Ok(())
            })
            .map_err(|err| ApiError::new(500, "pool", err.to_string()))?;
    }
    t.apply(&mut live, &record);
    Ok(json!({
        "sold_out": req.sold_out.len(),
        "in_stock": req.in_stock.len(),
        "available": variants.a.primary().pool.snapshot().available_len(),
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EventsRequest {
    events: Vec<EventIn>,
}

/// A purchase as the client's app reports it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EventIn {
    customer_id: String,
    article_id: String,
    /// `YYYY-MM-DD`; without it, the tenant's today.
    #[serde(default)]
    date: Option<String>,
    /// What was paid; without it, the tenant's price of the article.
    #[serde(default)]
    price: Option<f32>,
    #[serde(default)]
    channel: Option<u8>,
}

/// Appends purchases to customers' histories (journaled first, all or
/// nothing), so their next recommendations follow them, and attributes
/// each to the response that showed it.
pub fn events(t: &Tenant, body: &[u8]) -> ApiResult {
    let req: EventsRequest = parse(body)?;
    if req.events.is_empty() {
        return Err(ApiError::new(422, "empty", "`events` is empty"));
    }
    let today = t.today.day();
    let mut records = Vec::with_capacity(req.events.len());
    for (i, e) in req.events.iter().enumerate() {
        let bad = |msg: String| ApiError::new(422, "bad_event", format!("events[{i}]: {msg}"));
        if e.customer_id.trim().is_empty() || e.article_id.trim().is_empty() {
            return Err(bad(
                "`customer_id` and `article_id` must not be empty".into()
            ));
        }
        let day = match &e.date {
            Some(d) => recforge_infer::dates::parse_ymd(d)
                .map(i64::from)
                .ok_or_else(|| bad(format!("date `{d}`: use YYYY-MM-DD")))?,
            None => today,
        };
        if let Some(p) = e.price
            && !(p.is_finite() && p > 0.0)
        {
            return Err(bad("price must be a positive number".into()));
        }
        records.push(EventRecord {
            customer_id: e.customer_id.clone(),
            article_id: e.article_id.clone(),
            day,
            price: e.price,
            channel: e.channel,
        });
    }
    let mut live = t.live.lock().unwrap_or_else(|e| e.into_inner());
    let record = Record::Events {
        events: records.clone(),
    };
    live.record(&record).map_err(not_journaled)?;
    t.apply(&mut live, &record);
    drop(live);
    let events = records;
    let now = unix_now();
    t.attribution.received(events.len());
    let prices = t.prices.read().unwrap_or_else(|e| e.into_inner());
    // Only a purchase made now (today or yesterday, for one that took a
    // while to arrive) follows from a response just shown; a backfilled
    // one extends the history but credits no arm.
    let attributed = events
        .iter()
        .filter(|e| e.day >= today - 1)
        .filter(|e| {
            let value = e
                .price
                .or_else(|| prices.known(&e.article_id))
                .unwrap_or(0.0);
            t.attribution
                .purchased(&e.customer_id, &e.article_id, f64::from(value), now)
                .is_some()
        })
        .count();
    Ok(json!({"accepted": events.len(), "attributed": attributed}))
}

/// Each arm's impressions, attributed purchases and revenue, and value per
/// impression with its 95% interval.
pub fn attribution(t: &Tenant) -> ApiResult {
    serde_json::to_value(t.attribution.report())
        .map(|mut v| {
            v["tenant"] = json!(t.name);
            v
        })
        .map_err(|e| ApiError::new(500, "internal", e.to_string()))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ReloadRequest {
    #[serde(default)]
    variant: Option<String>,
    #[serde(default)]
    bundle: Option<String>,
}

pub fn reload(t: &Tenant, body: &[u8]) -> ApiResult {
    let req: ReloadRequest = if body.iter().all(u8::is_ascii_whitespace) {
        ReloadRequest::default()
    } else {
        parse(body)?
    };
    let variant = req.variant.as_deref().unwrap_or("a");
    match t.reload(variant, req.bundle.as_deref()) {
        Ok((previous, version)) => {
            Ok(json!({"variant": variant, "previous_version": previous, "model_version": version}))
        }
        Err(crate::Error::Invalid(msg)) => Err(ApiError::new(422, "bad_reload", msg)),
        Err(e) => Err(ApiError::new(
            422,
            "bad_bundle",
            format!("{e}; the current model keeps serving"),
        )),
    }
}
