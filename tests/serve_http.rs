//! The HTTP server on a loopback port: every route, the error cases, A/B
//! assignment, sold-out articles, revenue ordering, metrics, and model
//! reloads under concurrent requests. Bundles are random-init SASRec
//! models written by the trainer's exporter.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use burn::tensor::Device;
use recforge::config::experiment::Experiment;
use recforge::export::write_bundle;
use recforge::features::ItemFeature;
use recforge::train::parts::{BundleParts, ModelShape, sasrec_spec};
use recforge_infer::bundle::{ItemFeatureSpec, Items, ModelKind};
use serde_json::{Value, json};

const TOKEN: &str = "test-admin-token-0123456789";
const N: usize = 300;
const COLOURS: [&str; 4] = ["", "Black", "White", "Red"];

fn article(i: usize) -> String {
    format!("{:010}", 500_000_000 + i)
}

/// A random-init SASRec bundle over N articles with one item feature.
fn bundle(dir: &Path, name: &str, seed: u64) {
    let mut exp = Experiment {
        name: name.into(),
        ..Default::default()
    };
    exp.data.max_len = 20;
    exp.model.d_model = 16;
    exp.model.n_layers = 1;
    exp.model.n_heads = 2;
    exp.model.d_ff = 32;
    let feats = vec![ItemFeature {
        name: "colour_group_name".into(),
        vocab: COLOURS.len(),
        codes: (0..=N)
            .map(|i| if i == 0 { 0 } else { 1 + (i % 3) as u32 })
            .collect(),
    }];
    let dev = Device::flex();
    dev.seed(seed);
    let cfg = recforge::train::sasrec::model_config(&exp.model, N + 1, exp.data.max_len, &feats);
    let model = cfg.init(&feats, &dev);
    let parts = BundleParts {
        kind: ModelKind::Sasrec,
        sasrec: Some(sasrec_spec(&cfg)),
        two_tower: None,
        items: Items {
            ids: (0..=N)
                .map(|i| if i == 0 { String::new() } else { article(i) })
                .collect(),
            features: vec![ItemFeatureSpec {
                name: "colour_group_name".into(),
                vocab: COLOURS.iter().map(|s| s.to_string()).collect(),
                codes: feats[0].codes.clone(),
            }],
            known: vec![],
        },
        users: vec![],
        cold_start: (1..=20).map(article).collect(),
        data_end_day: 100,
        model: ModelShape::SasRec(cfg.clone()),
    };
    write_bundle(&model, &exp, parts, json!({}), &dir.join(name)).unwrap();
}

struct Client {
    base: String,
    agent: ureq::Agent,
}

impl Client {
    fn new(addr: std::net::SocketAddr) -> Self {
        Client {
            base: format!("http://{addr}"),
            agent: ureq::Agent::config_builder()
                .http_status_as_error(false)
                .build()
                .into(),
        }
    }

    fn post(&self, path: &str, body: &str, token: Option<&str>) -> (u16, Value) {
        let mut req = self
            .agent
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/json");
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let mut resp = req.send(body.as_bytes()).unwrap();
        let status = resp.status().as_u16();
        let text = resp.body_mut().read_to_string().unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    fn get_json(&self, path: &str, token: &str) -> (u16, Value) {
        let mut resp = self
            .agent
            .get(format!("{}{path}", self.base))
            .header("authorization", format!("Bearer {token}"))
            .call()
            .unwrap();
        let status = resp.status().as_u16();
        let text = resp.body_mut().read_to_string().unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    fn get(&self, path: &str) -> (u16, String) {
        let mut resp = self
            .agent
            .get(format!("{}{path}", self.base))
            .call()
            .unwrap();
        (
            resp.status().as_u16(),
            resp.body_mut().read_to_string().unwrap(),
        )
    }
}

fn ids(v: &Value) -> Vec<String> {
    v["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["article_id"].as_str().unwrap().to_string())
        .collect()
}

fn setup(dir: &Path) -> recforge_serve::Server {
    setup_with(dir, "")
}

/// The test server, with `extra` (top-level config lines) added.
fn setup_with(dir: &Path, extra: &str) -> recforge_serve::Server {
    let cfg = recforge_serve::Config::load(&write_setup(dir, extra)).unwrap();
    recforge_serve::start(cfg).unwrap()
}

/// Writes the test server's bundles, data and config into `dir`; returns
/// the config's path.
fn write_setup(dir: &Path, extra: &str) -> std::path::PathBuf {
    let models = dir.join("models");
    for (name, seed) in [("v1", 1), ("v2", 2), ("v3", 3)] {
        bundle(&models, name, seed);
    }
    // A damaged bundle: its weights are cut short.
    bundle(&models, "broken", 4);
    let w = models.join("broken/model.safetensors");
    let bytes = std::fs::read(&w).unwrap();
    std::fs::write(&w, &bytes[..bytes.len() / 2]).unwrap();
    let customers: String = (0..3)
        .map(|c| {
            let history: Vec<Value> = (1..=5)
                .map(|j| json!({"article_id": article(c * 10 + j), "days_ago": 10 - j}))
                .collect();
            json!({"customer_id": format!("cust{c}"), "history": history, "attributes": {}})
                .to_string()
                + "\n"
        })
        .collect();
    std::fs::write(dir.join("customers.jsonl"), customers).unwrap();
    let prices: String = std::iter::once("article_id,price\n".to_string())
        .chain((1..=N).map(|i| format!("{},{}\n", article(i), 0.01 * (1 + i % 7) as f64)))
        .collect();
    std::fs::write(dir.join("prices.csv"), prices).unwrap();
    let cfg = format!(
        r#"
models_dir = "models"
admin_token = "{TOKEN}"
port = 0
max_body_bytes = 4096
max_k = {N}
workers = 2
state_dir = "state"
{extra}

[tenants.shop]
bundle = "v1"
customers = "customers.jsonl"
exclude_purchased = true
today = "2020-09-23"

[tenants.ab]
bundle = "v1"
attribution_window_s = 2
[tenants.ab.ab]
bundle = "v2"
share = 0.5

[tenants.rev]
bundle = "v1"
objective = "revenue"
alpha = 1.0
prices = "prices.csv"
"#
    );
    std::fs::write(dir.join("serve.toml"), cfg).unwrap();
    dir.join("serve.toml")
}

/// Every route the server has: its metrics label and its documented path.
const ROUTES: [(&str, &str); 11] = [
    ("healthz", "/healthz"),
    ("readyz", "/readyz"),
    ("metrics", "/metrics"),
    ("openapi", "/openapi.yaml"),
    ("recommend", "/v1/{tenant}/recommend"),
    ("recommend_batch", "/v1/{tenant}/recommend/batch"),
    ("items", "/v1/{tenant}/items"),
    ("availability", "/v1/{tenant}/items/availability"),
    ("reload", "/v1/{tenant}/reload"),
    ("events", "/v1/{tenant}/events"),
    ("attribution", "/v1/{tenant}/attribution"),
];

#[test]
fn every_route_over_http() {
    let dir = tempfile::tempdir().unwrap();
    let server = setup(dir.path());
    let c = Client::new(server.addr);
    let hist = json!([article(1), article(2), article(3)]).to_string();

    // Health and the shipped API description, which names every route.
    let (s, body) = c.get("/healthz");
    assert_eq!(s, 200);
    assert!(body.contains("shop") && body.contains("ab"));
    let (s, api) = c.get("/openapi.yaml");
    assert_eq!(s, 200);
    for (_, route) in ROUTES {
        assert!(api.contains(&format!("{route}:")), "{route} undocumented");
    }

    // Recommendations by explicit history and by customer id.
    let (s, r) = c.post(
        "/v1/shop/recommend",
        &format!(r#"{{"history": {hist}, "k": 12}}"#),
        None,
    );
    assert_eq!(s, 200, "{r}");
    assert_eq!(ids(&r).len(), 12);
    assert_eq!(r["variant"], "a");
    assert_eq!(r["source"], "model");
    assert!(r["model_version"].as_str().unwrap().starts_with("v1@"));
    let scores: Vec<f64> = r["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["score"].as_f64().unwrap())
        .collect();
    assert!(
        scores.windows(2).all(|w| w[0] >= w[1]),
        "not ranked: {scores:?}"
    );
    let (s, r) = c.post(
        "/v1/shop/recommend",
        r#"{"customer_id": "cust1", "k": 50}"#,
        None,
    );
    assert_eq!(s, 200, "{r}");
    // exclude_purchased: cust1 bought articles 11-15.
    let got = ids(&r);
    assert!((11..=15).all(|j| !got.contains(&article(j))));
    // Explicit exclusions.
    let first = ids(&c
        .post(
            "/v1/shop/recommend",
            &format!(r#"{{"history": {hist}, "k": 3}}"#),
            None,
        )
        .1)[0]
        .clone();
    let (_, r) = c.post(
        "/v1/shop/recommend",
        &format!(r#"{{"history": {hist}, "k": 3, "exclude": ["{first}", "no-such-article"]}}"#),
        None,
    );
    assert!(!ids(&r).contains(&first));
    // Nothing the model knows: the cold-start list.
    let (s, r) = c.post(
        "/v1/shop/recommend",
        r#"{"history": ["unknown-article"], "k": 5}"#,
        None,
    );
    assert_eq!(s, 200);
    assert_eq!(r["source"], "cold-start");
    assert_eq!(ids(&r), (1..=5).map(article).collect::<Vec<_>>());

    // Bad input: each a 4xx with a JSON error, and the server goes on.
    let cases: Vec<(&str, String, u16, &str)> = vec![
        ("/v1/shop/recommend", "{\"k\": 3".into(), 400, "bad_json"),
        (
            "/v1/shop/recommend",
            r#"{"customer_id": "cust1", "kk": 3}"#.into(),
            400,
            "bad_json",
        ),
        (
            "/v1/nobody/recommend",
            r#"{"customer_id": "cust1"}"#.into(),
            404,
            "unknown_tenant",
        ),
        (
            "/v1/shop/recommend",
            r#"{"customer_id": "stranger"}"#.into(),
            404,
            "unknown_customer",
        ),
        (
            "/v1/shop/recommend",
            r#"{"customer_id": "cust1", "k": 0}"#.into(),
            422,
            "bad_k",
        ),
        (
            "/v1/shop/recommend",
            format!(r#"{{"customer_id": "cust1", "k": {}}}"#, N + 1),
            422,
            "bad_k",
        ),
        (
            "/v1/shop/recommend",
            r#"{"k": 3}"#.into(),
            422,
            "no_customer",
        ),
        (
            "/v1/shop/recommend",
            format!(r#"{{"history": ["{}"]}}"#, "x".repeat(5000)),
            413,
            "body_too_large",
        ),
        ("/v1/shop/nothing", "{}".into(), 404, "no_route"),
    ];
    for (path, body, status, code) in &cases {
        let (s, r) = c.post(path, body, None);
        assert_eq!(
            (s, r["error"]["code"].as_str()),
            (*status, Some(*code)),
            "{path} {body:.60}: {r}"
        );
    }
    let (s, _) = c.get("/v1/shop/recommend");
    assert_eq!(s, 405);

    // Admin routes need the token.
    let sold = format!(r#"{{"sold_out": ["{first}"]}}"#);
    assert_eq!(c.post("/v1/shop/items/availability", &sold, None).0, 401);
    assert_eq!(
        c.post(
            "/v1/shop/items/availability",
            &sold,
            Some("wrong-token-wrong-token")
        )
        .0,
        401
    );
    assert_eq!(c.post("/v1/shop/reload", "", None).0, 401);
    // An error may be answered before its body is read, after which hyper
    // drops the connection: the answer says so, or a pooling client would
    // send its next request down a closed socket.
    let refused = c
        .agent
        .post(format!("{}/v1/shop/items", c.base))
        .send(r#"{"items": []}"#.as_bytes())
        .unwrap();
    assert_eq!(refused.status().as_u16(), 401);
    assert_eq!(
        refused
            .headers()
            .get("connection")
            .and_then(|v| v.to_str().ok()),
        Some("close")
    );
    assert_eq!(c.post("/v1/shop/items", r#"{"items": []}"#, None).0, 401);

    // Sold out: gone from the very next response, even asking for all.
    let all = format!(r#"{{"history": {hist}, "k": {N}}}"#);
    assert!(ids(&c.post("/v1/shop/recommend", &all, None).1).contains(&first));
    let (s, r) = c.post("/v1/shop/items/availability", &sold, Some(TOKEN));
    assert_eq!(s, 200, "{r}");
    let (_, r) = c.post("/v1/shop/recommend", &all, None);
    assert!(!ids(&r).contains(&first));
    assert_eq!(
        ids(&r).len(),
        N - 1 - 3,
        "all but the sold-out one and the 3 bought"
    );
    // Unknown ids refuse the whole update.
    let (s, r) = c.post(
        "/v1/shop/items/availability",
        &format!(r#"{{"in_stock": ["{first}", "nope"]}}"#),
        Some(TOKEN),
    );
    assert_eq!(
        (s, r["error"]["code"].as_str()),
        (404, Some("unknown_article"))
    );
    assert!(!ids(&c.post("/v1/shop/recommend", &all, None).1).contains(&first));

    // A new article from its features: servable at once, with the score
    // the model gives its feature vector.
    let (s, r) = c.post(
        "/v1/shop/items",
        r#"{"items": [{"article_id": "NEW-1", "features": {"colour_group_name": "Red"}, "price": 0.05}]}"#,
        Some(TOKEN),
    );
    assert_eq!(s, 200, "{r}");
    assert_eq!(r["pool_size"], N + 1);
    let (_, r) = c.post(
        "/v1/shop/recommend",
        &format!(r#"{{"history": {hist}, "k": {N}}}"#),
        None,
    );
    assert!(ids(&r).contains(&"NEW-1".to_string()));
    let (s, r) = c.post(
        "/v1/shop/items",
        r#"{"items": [{"article_id": "NEW-2", "features": {"colur": "Red"}}]}"#,
        Some(TOKEN),
    );
    assert_eq!(
        (s, r["error"]["code"].as_str()),
        (422, Some("unknown_feature"))
    );

    // A reload keeps the live changes: still sold out, still has NEW-1.
    let (s, r) = c.post("/v1/shop/reload", r#"{"bundle": "v3"}"#, Some(TOKEN));
    assert_eq!(s, 200, "{r}");
    assert!(r["model_version"].as_str().unwrap().starts_with("v3@"));
    let (_, r) = c.post(
        "/v1/shop/recommend",
        &format!(r#"{{"history": {hist}, "k": {N}}}"#),
        None,
    );
    assert!(r["model_version"].as_str().unwrap().starts_with("v3@"));
    assert!(!ids(&r).contains(&first) && ids(&r).contains(&"NEW-1".to_string()));
    // A damaged bundle is refused and the current model keeps serving.
    let (s, r) = c.post("/v1/shop/reload", r#"{"bundle": "broken"}"#, Some(TOKEN));
    assert_eq!(
        (s, r["error"]["code"].as_str()),
        (422, Some("bad_bundle")),
        "{r}"
    );
    let (s, r) = c.post(
        "/v1/shop/recommend",
        &format!(r#"{{"history": {hist}}}"#),
        None,
    );
    assert_eq!(s, 200);
    assert!(r["model_version"].as_str().unwrap().starts_with("v3@"));
    let (s, _) = c.post(
        "/v1/shop/reload",
        r#"{"bundle": "../models/v1"}"#,
        Some(TOKEN),
    );
    assert_eq!(s, 422);
    let (s, _) = c.post("/v1/shop/reload", r#"{"variant": "b"}"#, Some(TOKEN));
    assert_eq!(s, 422);

    // Revenue objective: ordered by score + ln(price).
    let (s, r) = c.post(
        "/v1/rev/recommend",
        &format!(r#"{{"history": {hist}, "k": 20}}"#),
        None,
    );
    assert_eq!(s, 200);
    let items = r["items"].as_array().unwrap();
    let values: Vec<f64> = items.iter().map(|x| x["value"].as_f64().unwrap()).collect();
    assert!(values.windows(2).all(|w| w[0] >= w[1]));
    for x in items {
        let i: usize = x["article_id"].as_str().unwrap().parse::<usize>().unwrap() - 500_000_000;
        let want = x["score"].as_f64().unwrap() + (0.01 * (1 + i % 7) as f64).ln();
        assert!((x["value"].as_f64().unwrap() - want).abs() < 1e-4);
    }

    // Metrics: per-tenant, per-route counts and histograms, pool gauges.
    let (s, m) = c.get("/metrics");
    assert_eq!(s, 200);
    for want in [
        "recforge_requests_total{tenant=\"shop\",variant=\"a\",route=\"recommend\",status=\"200\"}",
        "recforge_requests_total{tenant=\"shop\",variant=\"\",route=\"recommend\",status=\"422\"} 3",
        "recforge_requests_total{tenant=\"shop\",variant=\"\",route=\"availability\",status=\"401\"} 2",
        "recforge_request_duration_seconds_bucket{tenant=\"shop\",variant=\"a\",route=\"recommend\",le=\"+Inf\"}",
        &format!(
            "recforge_item_pool_size{{tenant=\"shop\",variant=\"a\"}} {}",
            N + 1
        ),
        &format!("recforge_item_pool_available{{tenant=\"shop\",variant=\"a\"}} {N}"),
        "recforge_model_info{tenant=\"ab\",variant=\"b\",version=\"v2@",
    ] {
        assert!(m.contains(want), "metrics lack {want}:\n{m}");
    }

    // Batch: each request answered in its place, a bad one as its error.
    let batch = json!({"requests": [
        {"customer_id": "cust1", "k": 4},
        {"customer_id": "stranger"},
        {"history": [article(1), article(2), article(3)], "k": 3},
    ]});
    let (s, r) = c.post("/v1/shop/recommend/batch", &batch.to_string(), None);
    assert_eq!(s, 200, "{r}");
    let results = r["results"].as_array().unwrap();
    assert_eq!(results.len(), 3);
    let one = c
        .post(
            "/v1/shop/recommend",
            r#"{"customer_id": "cust1", "k": 4}"#,
            None,
        )
        .1;
    assert_eq!(ids(&results[0]), ids(&one));
    assert_eq!(
        (
            results[1]["status"].as_u64(),
            results[1]["error"]["code"].as_str()
        ),
        (Some(404), Some("unknown_customer"))
    );
    assert_eq!(ids(&results[2]).len(), 3);
    let (s, r) = c.post("/v1/shop/recommend/batch", r#"{"requests": []}"#, None);
    assert_eq!((s, r["error"]["code"].as_str()), (422, Some("bad_batch")));

    // Readiness, and a request id on every answer (the client's, or one
    // the server makes).
    assert_eq!(c.get("/readyz").0, 200);
    let resp = c
        .agent
        .get(format!("{}/healthz", c.base))
        .header("x-request-id", "trace-42")
        .call()
        .unwrap();
    assert_eq!(
        resp.headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok()),
        Some("trace-42")
    );
    let resp = c.agent.get(format!("{}/nowhere", c.base)).call().unwrap();
    assert!(resp.headers().get("x-request-id").is_some());

    // Every route and status this test saw answered is in the API
    // description, and every operation there has an operationId.
    let (_, m) = c.get("/metrics");
    let path_of = |route: &str| match ROUTES.iter().find(|r| r.0 == route) {
        Some(r) => Some(r.1),
        // No route: the description's general 404.
        None if route == "unknown" => None,
        None => panic!("route {route} has no documented path"),
    };
    let section = |path: &str| -> &str {
        let start = api
            .find(&format!("\n  {path}:\n"))
            .unwrap_or_else(|| panic!("{path} undocumented"));
        let rest = &api[start + 1..];
        let end = rest[1..].find("\n  /").map_or(rest.len(), |e| e + 1);
        &rest[..end.min(rest.find("\ncomponents:").unwrap_or(rest.len()))]
    };
    let mut seen = 0;
    for line in m
        .lines()
        .filter(|l| l.starts_with("recforge_requests_total{"))
    {
        let field = |k: &str| {
            let at = line.find(&format!("{k}=\"")).unwrap() + k.len() + 2;
            line[at..at + line[at..].find('"').unwrap()].to_string()
        };
        let (route, status) = (field("route"), field("status"));
        let Some(path) = path_of(&route) else {
            continue;
        };
        let text = section(path);
        // 405 (wrong method) is said once, in the description.
        assert!(
            status == "405" || text.contains(&format!("\"{status}\":")),
            "{path} answered {status}, undocumented"
        );
        seen += 1;
    }
    assert!(seen >= 15, "{seen} route/status pairs");
    for (_, path) in ROUTES {
        assert!(
            section(path).contains("operationId:"),
            "{path} lacks an operationId"
        );
    }
    server.stop();
}

#[test]
fn ab_variants_are_stable_and_split_by_share() {
    let dir = tempfile::tempdir().unwrap();
    let server = setup(dir.path());
    let c = Client::new(server.addr);
    let mut seen: HashMap<String, String> = HashMap::new();
    let mut b = 0;
    for round in 0..2 {
        for u in 0..200 {
            let body = format!(
                r#"{{"customer_id": "u{u}", "history": ["{}"], "k": 3}}"#,
                article(1 + u % 50)
            );
            let (s, r) = c.post("/v1/ab/recommend", &body, None);
            assert_eq!(s, 200, "{r}");
            let v = r["variant"].as_str().unwrap().to_string();
            let version = r["model_version"].as_str().unwrap();
            // Every response says its variant, and the variant's model answered.
            assert!(
                version.starts_with(if v == "a" { "v1@" } else { "v2@" }),
                "{v} answered by {version}"
            );
            if round == 0 {
                b += usize::from(v == "b");
                seen.insert(format!("u{u}"), v);
            } else {
                assert_eq!(seen[&format!("u{u}")], v, "customer u{u} changed variant");
            }
        }
    }
    assert!(
        (70..=130).contains(&b),
        "{b} of 200 customers in b at share 0.5"
    );
    // Each arm's requests and latencies are counted apart.
    let (_, m) = c.get("/metrics");
    for (v, n) in [("a", 400 - 2 * b), ("b", 2 * b)] {
        let want = format!(
            "recforge_requests_total{{tenant=\"ab\",variant=\"{v}\",route=\"recommend\",status=\"200\"}} {n}\n"
        );
        assert!(m.contains(&want), "metrics lack {want}:\n{m}");
        let hist = format!(
            "recforge_request_duration_seconds_count{{tenant=\"ab\",variant=\"{v}\",route=\"recommend\"}} {n}\n"
        );
        assert!(m.contains(&hist), "metrics lack {hist}");
    }
    server.stop();
}

#[test]
fn reloads_under_concurrent_requests_drop_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let server = setup(dir.path());
    let addr = server.addr;
    let stop = AtomicBool::new(false);
    let (done, failed) = (AtomicUsize::new(0), AtomicUsize::new(0));
    let versions = std::sync::Mutex::new(HashSet::new());
    std::thread::scope(|s| {
        for t in 0..4 {
            let (stop, done, failed, versions) = (&stop, &done, &failed, &versions);
            s.spawn(move || {
                let c = Client::new(addr);
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    let body = format!(
                        r#"{{"history": ["{}", "{}"], "k": 12}}"#,
                        article(1 + (t + i) % N),
                        article(1 + i % N)
                    );
                    let (s, r) = c.post("/v1/shop/recommend", &body, None);
                    if s == 200 && ids(&r).len() == 12 {
                        versions
                            .lock()
                            .unwrap()
                            .insert(r["model_version"].as_str().unwrap()[..2].to_string());
                        done.fetch_add(1, Ordering::Relaxed);
                    } else {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                    i += 1;
                }
            });
        }
        let c = Client::new(addr);
        for round in 0..6 {
            let name = ["v2", "v3", "v1"][round % 3];
            let (s, r) = c.post(
                "/v1/shop/reload",
                &format!(r#"{{"bundle": "{name}"}}"#),
                Some(TOKEN),
            );
            assert_eq!(s, 200, "{r}");
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        stop.store(true, Ordering::Relaxed);
    });
    let (done, failed) = (done.into_inner(), failed.into_inner());
    eprintln!("{done} requests during 6 reloads, {failed} failed");
    assert_eq!(failed, 0);
    assert!(done > 50, "only {done} requests were made");
    let versions = versions.into_inner().unwrap();
    assert!(versions.len() >= 2, "requests saw only {versions:?}");
    server.stop();
}

/// Reads what the server sends on `s` until it closes the connection (or
/// 5 s pass): the raw response, and whether it was closed.
fn read_until_closed(s: &mut std::net::TcpStream) -> (String, bool) {
    use std::io::Read;
    s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return (String::from_utf8_lossy(&out).into_owned(), true),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                return (String::from_utf8_lossy(&out).into_owned(), true);
            }
            Err(_) => return (String::from_utf8_lossy(&out).into_owned(), false),
        }
    }
}

#[test]
fn slow_clients_are_dropped_while_others_are_served() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let server = setup_with(dir.path(), "header_timeout_ms = 300\nbody_timeout_ms = 300");
    let c = Client::new(server.addr);
    // One client trickles its headers, another never finishes its body.
    // Timed from before the connection, so the server's timer cannot have
    // started earlier.
    let t = std::time::Instant::now();
    let mut trickle = std::net::TcpStream::connect(server.addr).unwrap();
    trickle.write_all(b"GET /healthz HTTP/1.1\r\nHo").unwrap();
    let mut stalled = std::net::TcpStream::connect(server.addr).unwrap();
    stalled
        .write_all(
            b"POST /v1/shop/recommend HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\n\
content-length: 100\r\n\r\n{\"customer_id\"",
        )
        .unwrap();
    assert_eq!(c.get("/healthz").0, 200, "others are served meanwhile");
    let (_, closed) = read_until_closed(&mut trickle);
    assert!(closed, "the trickling client is dropped");
    let waited = t.elapsed().as_secs_f64();
    assert!((0.3..4.0).contains(&waited), "dropped after {waited:.2} s");
    let (resp, closed) = read_until_closed(&mut stalled);
    assert!(resp.starts_with("HTTP/1.1 408"), "{resp}");
    assert!(resp.contains("body_timeout") && closed, "{resp}");
    assert_eq!(c.get("/healthz").0, 200, "and still served afterwards");
    server.stop();
}

#[test]
fn sigterm_stops_accepting_and_finishes_the_requests_in_flight() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let server = setup_with(
        dir.path(),
        "body_timeout_ms = 20000\nshutdown_grace_ms = 20000",
    );
    let addr = server.addr;
    let signals = recforge_serve::StopSignals::install().unwrap();
    // In flight: the headers are in, half of the body is not. The server
    // says "100 Continue" once it starts reading the body, so the test
    // knows the request has started before it signals.
    let body = json!({"customer_id": "cust0", "k": 5}).to_string();
    let (first, rest) = body.split_at(body.len() / 2);
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    let head = format!(
        "POST /v1/shop/recommend HTTP/1.1\r\nHost: x\r\nexpect: 100-continue\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    {
        use std::io::Read;
        s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap();
        let mut got = Vec::new();
        let mut byte = [0u8; 1];
        while !got.ends_with(b"\r\n\r\n") {
            assert_eq!(s.read(&mut byte).unwrap(), 1, "closed before 100 Continue");
            got.push(byte[0]);
        }
        assert!(
            got.starts_with(b"HTTP/1.1 100"),
            "{}",
            String::from_utf8_lossy(&got)
        );
    }
    s.write_all(first.as_bytes()).unwrap();
    let stopper = std::thread::spawn(move || signals.stop_on_signal(server));
    signal_hook::low_level::raise(signal_hook::consts::SIGTERM).unwrap();
    // New connections are refused from now on.
    let t = std::time::Instant::now();
    while std::net::TcpStream::connect(addr).is_ok() {
        assert!(t.elapsed().as_secs() < 5, "still accepting after SIGTERM");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(!stopper.is_finished(), "it waits for the request in flight");
    s.write_all(rest.as_bytes()).unwrap();
    let (resp, _) = read_until_closed(&mut s);
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    let json_start = resp.find("\r\n\r\n").unwrap() + 4;
    let v: Value = serde_json::from_str(&resp[json_start..]).unwrap();
    assert_eq!(v["items"].as_array().unwrap().len(), 5, "{v}");
    assert_eq!(stopper.join().unwrap(), "SIGTERM");
}

#[test]
fn readiness_fails_first_then_the_listener_closes() {
    let dir = tempfile::tempdir().unwrap();
    let server = setup_with(dir.path(), "drain_delay_ms = 3000");
    let c = Client::new(server.addr);
    assert_eq!(c.get("/readyz").0, 200);
    let addr = server.addr;
    let t = std::time::Instant::now();
    let stopper = std::thread::spawn(move || server.stop());
    // Not ready from the start of the stop, while still accepting and
    // alive: a load balancer takes it out of rotation.
    loop {
        let (s, body) = Client::new(addr).get("/readyz");
        if s == 503 {
            assert!(body.contains("stopping"), "{body}");
            break;
        }
        assert!(
            t.elapsed().as_millis() < 2000,
            "still ready 2 s after the stop began"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    if t.elapsed().as_millis() < 2500 {
        // Still inside the drain: a fresh connection is accepted.
        assert_eq!(Client::new(addr).get("/healthz").0, 200);
    }
    stopper.join().unwrap();
    assert!(
        t.elapsed().as_millis() >= 3000,
        "closed before the drain delay"
    );
}

#[test]
fn a_request_past_its_deadline_gets_503() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let server = setup_with(
        dir.path(),
        "request_timeout_ms = 300\nbody_timeout_ms = 5000",
    );
    let mut s = std::net::TcpStream::connect(server.addr).unwrap();
    s.write_all(b"POST /v1/shop/recommend HTTP/1.1\r\nHost: x\r\ncontent-length: 50\r\n\r\n{\"k\"")
        .unwrap();
    let t = std::time::Instant::now();
    let (resp, _) = read_until_closed(&mut s);
    assert!(resp.starts_with("HTTP/1.1 503"), "{resp}");
    assert!(resp.contains("\"deadline\""), "{resp}");
    assert!(t.elapsed().as_secs_f64() < 3.0);
    assert_eq!(Client::new(server.addr).get("/healthz").0, 200);
    server.stop();
}

/// The list `c` gets for `body` on `tenant`, with scores.
fn list(c: &Client, tenant: &str, body: &str) -> Vec<(String, f64)> {
    let (s, r) = c.post(&format!("/v1/{tenant}/recommend"), body, None);
    assert_eq!(s, 200, "{body}: {r}");
    r["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| {
            (
                x["article_id"].as_str().unwrap().to_string(),
                x["score"].as_f64().unwrap_or(f64::NAN),
            )
        })
        .collect()
}

/// cust1's stored history as the engine sees it on the shop tenant's
/// today, 2020-09-23: articles 11-15, bought 9 to 5 days before.
fn cust1_history() -> Vec<Value> {
    (1..=5)
        .map(|j| json!({"article_id": article(10 + j), "days_ago": 10 - j}))
        .collect()
}

#[test]
fn events_extend_histories_and_purchases_are_attributed_per_arm() {
    let dir = tempfile::tempdir().unwrap();
    let server = setup(dir.path());
    let c = Client::new(server.addr);
    let ask = |id: &str| format!(r#"{{"customer_id": "{id}", "k": 10}}"#);

    // A purchase event: the next list is the model's list for the longer
    // history (bought today), without what was bought.
    let before = list(&c, "shop", &ask("cust1"));
    let top = before[0].0.clone();
    let event = json!({"events": [{"customer_id": "cust1", "article_id": top, "price": 0.04}]});
    assert_eq!(c.post("/v1/shop/events", &event.to_string(), None).0, 401);
    let (s, r) = c.post("/v1/shop/events", &event.to_string(), Some(TOKEN));
    assert_eq!((s, r["accepted"].as_u64()), (200, Some(1)), "{r}");
    let after = list(&c, "shop", &ask("cust1"));
    assert!(after.iter().all(|(a, _)| *a != top), "{after:?}");
    assert_ne!(before, after);
    let mut longer = cust1_history();
    longer.push(json!({"article_id": top, "days_ago": 0}));
    let explicit = list(&c, "shop", &json!({"history": longer, "k": 10}).to_string());
    assert_eq!(after, explicit);
    // An event dated three days back ages from the tenant's today.
    let dated = json!({"events": [{"customer_id": "newbie", "article_id": article(7), "date": "2020-09-20"}]});
    assert_eq!(
        c.post("/v1/shop/recommend", &ask("newbie"), None).0,
        404,
        "not known before its first purchase"
    );
    assert_eq!(
        c.post("/v1/shop/events", &dated.to_string(), Some(TOKEN)).0,
        200
    );
    let newbie = list(&c, "shop", &ask("newbie"));
    let explicit = list(
        &c,
        "shop",
        &json!({"history": [{"article_id": article(7), "days_ago": 3}], "k": 10}).to_string(),
    );
    assert_eq!(newbie, explicit);
    // Bad events change nothing.
    for (body, status, code) in [
        (r#"{"events": []}"#, 422, "empty"),
        (r#"{"events": [{"customer_id": "cust1"}]}"#, 400, "bad_json"),
        (
            r#"{"events": [{"customer_id": "cust1", "article_id": "x"}, {"customer_id": "cust1", "article_id": "y", "date": "2020-02-30"}]}"#,
            422,
            "bad_event",
        ),
        (
            r#"{"events": [{"customer_id": "", "article_id": "x"}]}"#,
            422,
            "bad_event",
        ),
        (
            r#"{"events": [{"customer_id": "c", "article_id": "x", "price": -1}]}"#,
            422,
            "bad_event",
        ),
    ] {
        let (s, r) = c.post("/v1/shop/events", body, Some(TOKEN));
        assert_eq!(
            (s, r["error"]["code"].as_str()),
            (status, Some(code)),
            "{body}: {r}"
        );
    }
    assert_eq!(list(&c, "shop", &ask("cust1")), after);

    // Attribution on the A/B tenant (2 s window): 20 customers shown 5
    // articles each; the even ones buy their first article (attributed to
    // the arm that showed it), the odd ones something never shown to them.
    let mut arm_of = HashMap::new();
    let mut shown = HashMap::new();
    for i in 0..20 {
        let id = format!("u{i}");
        let body = json!({"customer_id": id, "history": [article(1)], "k": 5}).to_string();
        let (s, r) = c.post("/v1/ab/recommend", &body, None);
        assert_eq!(s, 200, "{r}");
        arm_of.insert(id.clone(), r["variant"].as_str().unwrap().to_string());
        shown.insert(id, ids(&r));
    }
    let events: Vec<Value> = (0..20)
        .map(|i| {
            let id = format!("u{i}");
            let article_id = if i % 2 == 0 {
                shown[&id][0].clone()
            } else {
                (1..=N)
                    .map(article)
                    .find(|a| !shown[&id].contains(a))
                    .unwrap()
            };
            json!({"customer_id": id, "article_id": article_id, "price": 2.0})
        })
        .collect();
    let (s, r) = c.post(
        "/v1/ab/events",
        &json!({ "events": events }).to_string(),
        Some(TOKEN),
    );
    assert_eq!((s, r["attributed"].as_u64()), (200, Some(10)), "{r}");
    // A backfilled purchase (dated long ago) of a shown article credits
    // no arm.
    let old = json!({"events": [{"customer_id": "u4", "article_id": shown["u4"][1], "price": 2.0, "date": "2020-01-01"}]});
    let (_, r) = c.post("/v1/ab/events", &old.to_string(), Some(TOKEN));
    assert_eq!(r["attributed"], 0, "{r}");
    // Past the window, a purchase of a shown article is not attributed.
    std::thread::sleep(std::time::Duration::from_millis(2200));
    let late =
        json!({"events": [{"customer_id": "u0", "article_id": shown["u0"][1], "price": 2.0}]});
    let (_, r) = c.post("/v1/ab/events", &late.to_string(), Some(TOKEN));
    assert_eq!(r["attributed"], 0, "{r}");

    let (s, rep) = c.get_json("/v1/ab/attribution", TOKEN);
    assert_eq!(s, 200, "{rep}");
    assert_eq!(rep["purchase_events"], 22);
    let (_, m) = c.get("/metrics");
    for arm in ["a", "b"] {
        let members: Vec<usize> = (0..20)
            .filter(|i| arm_of[&format!("u{i}")] == arm)
            .collect();
        assert!(!members.is_empty(), "arm {arm} got no customer");
        let bought = members.iter().filter(|i| *i % 2 == 0).count();
        let a = &rep["arms"][arm];
        assert_eq!(a["responses"].as_u64(), Some(members.len() as u64), "{rep}");
        assert_eq!(a["impressions"].as_u64(), Some(5 * members.len() as u64));
        assert_eq!(a["purchases"].as_u64(), Some(bought as u64));
        let vpi = 2.0 * bought as f64 / (5 * members.len()) as f64;
        assert!((a["value_per_impression"].as_f64().unwrap() - vpi).abs() < 1e-9);
        let ci = a["ci95"].as_array().unwrap();
        assert!(ci[0].as_f64().unwrap() <= vpi && vpi <= ci[1].as_f64().unwrap());
        for want in [
            format!(
                "recforge_impressions_total{{tenant=\"ab\",variant=\"{arm}\"}} {}",
                5 * members.len()
            ),
            format!(
                "recforge_attributed_purchases_total{{tenant=\"ab\",variant=\"{arm}\"}} {bought}"
            ),
            format!(
                "recforge_attributed_revenue_total{{tenant=\"ab\",variant=\"{arm}\"}} {}",
                2 * bought
            ),
        ] {
            assert!(m.contains(&want), "metrics lack {want}");
        }
    }
    assert!(rep["b_minus_a"]["ci95"].is_array(), "{rep}");
    assert_eq!(
        c.get_json("/v1/ab/attribution", "wrong-token-wrong-token")
            .0,
        401
    );
    server.stop();
}

/// Not a test on its own: the server process that
/// `live_changes_survive_a_sigkill_and_a_torn_record` starts (this test
/// binary again, running only this) and kills.
#[test]
#[ignore]
fn serve_child() {
    let Ok(dir) = std::env::var("RECFORGE_SERVE_CHILD") else {
        return;
    };
    let dir = std::path::PathBuf::from(dir);
    let cfg = recforge_serve::Config::load(&dir.join("serve.toml")).unwrap();
    let server = recforge_serve::start(cfg).unwrap();
    std::fs::write(dir.join("addr.tmp"), server.addr.to_string()).unwrap();
    std::fs::rename(dir.join("addr.tmp"), dir.join("addr")).unwrap();
    loop {
        std::thread::sleep(std::time::Duration::from_secs(60));
    }
}

#[test]
fn live_changes_survive_a_sigkill_and_a_torn_record() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_setup(dir.path(), "");
    /// Kills the child server however the test ends.
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut child = Kill(
        std::process::Command::new(std::env::current_exe().unwrap())
            .args(["serve_child", "--exact", "--ignored", "--nocapture"])
            .env("RECFORGE_SERVE_CHILD", dir.path())
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let t = std::time::Instant::now();
    while !dir.path().join("addr").exists() {
        assert!(t.elapsed().as_secs() < 60, "the child server did not start");
        assert!(
            child.0.try_wait().unwrap().is_none(),
            "the child server exited"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let addr: std::net::SocketAddr = std::fs::read_to_string(dir.path().join("addr"))
        .unwrap()
        .parse()
        .unwrap();
    let c = Client::new(addr);
    // Fifteen changes, each confirmed: four new articles, four sold out
    // and one of them back, six purchases.
    let mut confirmed = 0;
    let mut change = |path: &str, body: Value| {
        let (s, r) = c.post(path, &body.to_string(), Some(TOKEN));
        assert_eq!(s, 200, "{path}: {r}");
        confirmed += 1;
    };
    for i in 1..=4 {
        change(
            "/v1/shop/items",
            json!({"items": [{"article_id": format!("NEW-{i}"), "features": {"colour_group_name": "Red"}}]}),
        );
    }
    for i in 100..104 {
        change(
            "/v1/shop/items/availability",
            json!({"sold_out": [article(i)]}),
        );
    }
    change(
        "/v1/shop/items/availability",
        json!({"in_stock": [article(101)]}),
    );
    let bought: Vec<String> = (40..46).map(article).collect();
    for a in &bought {
        change(
            "/v1/shop/events",
            json!({"events": [{"customer_id": "cust1", "article_id": a}]}),
        );
    }
    assert_eq!(confirmed, 15);
    let all = |c: &Client| {
        list(
            c,
            "shop",
            &json!({"history": [article(1)], "k": N}).to_string(),
        )
    };
    let cust1 = |c: &Client| list(c, "shop", r#"{"customer_id": "cust1", "k": 20}"#);
    let want_all = all(&c);
    let want_cust1 = cust1(&c);
    // SIGKILL: no handler runs, nothing is flushed.
    child.0.kill().unwrap();
    child.0.wait().unwrap();

    // What the restarted server serves after replaying the journal.
    let check = |c: &Client| {
        let got = all(c);
        assert_eq!(got, want_all);
        let got: HashSet<String> = got.into_iter().map(|x| x.0).collect();
        assert!((1..=4).all(|i| got.contains(&format!("NEW-{i}"))));
        assert!([100, 102, 103].iter().all(|&i| !got.contains(&article(i))));
        assert!(got.contains(&article(101)));
        let mine = cust1(c);
        assert_eq!(mine, want_cust1);
        assert!(mine.iter().all(|(a, _)| !bought.contains(a)));
    };
    let server = recforge_serve::start(recforge_serve::Config::load(&config).unwrap()).unwrap();
    check(&Client::new(server.addr));
    server.stop();

    // A crash mid-append leaves half a record: skipped, the rest replayed.
    let journal = dir.path().join("state/shop.journal");
    let lines = std::fs::read_to_string(&journal).unwrap().lines().count();
    assert_eq!(lines, 15);
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&journal)
        .unwrap();
    std::io::Write::write_all(
        &mut f,
        b"1234abcd {\"op\":\"availability\",\"sold_out\":[\"05000",
    )
    .unwrap();
    drop(f);
    let server = recforge_serve::start(recforge_serve::Config::load(&config).unwrap()).unwrap();
    check(&Client::new(server.addr));
    server.stop();
}

/// Random and mutated requests at every route (seeded, about two thousand
/// of them, a few seconds): never a panic, never a 5xx, always a JSON
/// error; the server still answers afterwards.
#[test]
fn random_and_mutated_requests_never_break_the_server() {
    use recforge::util::rng::Rng;
    let dir = tempfile::tempdir().unwrap();
    let server = setup(dir.path());
    let c = Client::new(server.addr);
    let mut rng = Rng::new(17);
    let paths = [
        "/healthz",
        "/readyz",
        "/v1/shop/recommend",
        "/v1/shop/recommend/batch",
        "/v1/ab/recommend",
        "/v1/rev/recommend",
        "/v1/shop/items",
        "/v1/shop/items/availability",
        "/v1/shop/events",
        "/v1/shop/reload",
        "/v1/ab/attribution",
        "/v1/nobody/recommend",
        "/v1//recommend",
        "/v1/shop/recommend/batch/extra",
        "/%00/%ff",
        "/v1/shop/../shop/recommend",
    ];
    let seeds = [
        json!({"customer_id": "cust1", "k": 5}),
        json!({"history": [article(1), {"article_id": article(2), "days_ago": 3.5, "channel": 2}], "k": 12, "exclude": [article(3)]}),
        json!({"requests": [{"customer_id": "cust0"}, {"history": [article(4)]}]}),
        json!({"items": [{"article_id": "FZ-1", "features": {"colour_group_name": "Red"}, "price": 0.02}]}),
        json!({"sold_out": [article(5)], "in_stock": [article(6)]}),
        json!({"events": [{"customer_id": "cust2", "article_id": article(7), "date": "2020-09-20", "price": 0.03}]}),
        json!({"variant": "a", "bundle": "v2"}),
    ];
    let junk: [&[u8]; 12] = [
        b"null",
        b"[]",
        b"{}",
        b"-1",
        b"1e999",
        b"\"\xff\"",
        b"[[[[[[[[[[[[[[[[",
        b"\"\\ud800\"",
        b"{\"k\": 18446744073709551616}",
        b"true",
        b"\x00",
        b"{\"customer_id\": [\"x\"]}",
    ];
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut answered = [0usize; 6];
    for i in 0..2000 {
        let path = if rng.chance(0.1) {
            // A mangled path: random bytes, percent-escaped.
            let n = 1 + rng.below(40) as usize;
            (0..n)
                .map(|_| match rng.below(4) {
                    0 => "/".to_string(),
                    1 => format!("%{:02x}", rng.below(256)),
                    _ => ((b'a' + rng.below(26) as u8) as char).to_string(),
                })
                .collect::<String>()
        } else {
            paths[rng.below(paths.len() as u64) as usize].to_string()
        };
        let path = if path.starts_with('/') {
            path
        } else {
            format!("/{path}")
        };
        let mut body = serde_json::to_vec(&seeds[rng.below(seeds.len() as u64) as usize]).unwrap();
        for _ in 0..rng.below(4) {
            match rng.below(5) {
                0 if !body.is_empty() => {
                    let at = rng.below(body.len() as u64) as usize;
                    body[at] = rng.below(256) as u8;
                }
                1 => body.truncate(rng.below(body.len() as u64 + 1) as usize),
                2 => {
                    let j = junk[rng.below(junk.len() as u64) as usize];
                    let at = rng.below(body.len() as u64 + 1) as usize;
                    body.splice(at..at, j.iter().copied());
                }
                3 => body = junk[rng.below(junk.len() as u64) as usize].to_vec(),
                _ => {}
            }
        }
        let method = ["GET", "POST", "POST", "POST", "PUT", "DELETE"][rng.below(6) as usize];
        let mut req = ureq::http::Request::builder()
            .method(method)
            .uri(format!("{}{path}", c.base));
        if rng.chance(0.7) {
            req = req.header("authorization", format!("Bearer {TOKEN}"));
        } else if rng.chance(0.5) {
            req = req.header(
                "authorization",
                ["Bearer", "Bearer x", "Basic YTpi"][rng.below(3) as usize],
            );
        }
        if rng.chance(0.2) {
            req = req.header("content-type", "application/xml; charset=latin1");
        }
        let Ok(req) = req.body(body.clone()) else {
            continue;
        };
        let Ok(mut resp) = agent.run(req) else {
            // Refused by the client library itself (e.g. a path it will
            // not send): nothing reached the server.
            continue;
        };
        let status = resp.status().as_u16();
        let text = resp.body_mut().read_to_string().unwrap_or_default();
        answered[(status / 100) as usize] += 1;
        assert!(
            status < 500,
            "request {i}: {method} {path} {:?} got {status}: {text}",
            String::from_utf8_lossy(&body)
        );
        if status >= 400 {
            let v: Value = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("request {i}: {status} not JSON ({e}): {text}"));
            assert!(v["error"]["code"].is_string(), "request {i}: {text}");
        } else if let Ok(v) = serde_json::from_str::<Value>(&text)
            && let Some(results) = v["results"].as_array()
        {
            // A batch: no request inside it failed on the server's side.
            for r in results {
                assert!(
                    r["status"].as_u64().is_none_or(|s| s < 500),
                    "request {i}: {r}"
                );
            }
        }
    }
    assert!(answered[2] > 40 && answered[4] > 500, "{answered:?}");
    assert_eq!(c.get("/healthz").0, 200);
    assert_eq!(
        c.post("/v1/shop/recommend", r#"{"customer_id": "cust1"}"#, None)
            .0,
        200
    );
    server.stop();
}
