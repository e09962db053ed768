//! `recforge run`: the whole pipeline from one config, on a tiny synthetic
//! H&M log; unchanged steps are reused, and a ranker change reruns only
//! what depends on the ranker.

mod common;

use std::path::Path;

use recforge::pipeline::{PipelineConfig, run};

fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// The steps a run ran rather than reused.
fn reran(out: &recforge::pipeline::PipelineOutcome) -> Vec<&str> {
    out.steps
        .iter()
        .filter(|s| !s.reused)
        .map(|s| s.step.as_str())
        .collect()
}

/// A submission-format file as customer → articles.
fn read_lists(path: &Path) -> std::collections::HashMap<String, Vec<String>> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| {
            let (c, p) = l.split_once(',').unwrap();
            (c.to_string(), p.split(' ').map(str::to_string).collect())
        })
        .collect()
}

/// A `recforge-serve` tenant on the test period's ranking bundle, fed the
/// customer file `recforge serving-data` writes for the bundle's day,
/// answers every test customer with the evaluation's own list.
fn http_serves_the_evaluated_lists(
    run_dir: &Path,
    scratch: &Path,
    served: &std::collections::HashMap<String, Vec<String>>,
) {
    let bundle = run_dir.join("ranking-tiny");
    let day = recforge_infer::rank::bundle::RankingBundle::load(&bundle)
        .unwrap()
        .manifest
        .day;
    let dir = scratch.join("http");
    copy_dir(&bundle, &dir.join("models").join("shop"));
    copy_dir(
        &run_dir.join("models").join("ranker"),
        &dir.join("models").join("sasrec"),
    );
    recforge::export::serving_data::write(
        &run_dir.join("cache"),
        &dir.join("serving"),
        usize::MAX,
        Some(day),
    )
    .unwrap();
    let today = recforge::util::dates::format_ymd(day as i32);
    let cfg = format!(
        r#"
models_dir = "models"
admin_token = "0123456789abcdef0123"
port = 0
workers = 2

[tenants.shop]
bundle = "shop"
customers = "serving/customers.jsonl"
today = "{today}"

# The same bundle with smaller candidate lists for this client.
[tenants.small]
bundle = "shop"
customers = "serving/customers.jsonl"
today = "{today}"
[tenants.small.candidates]
sasrec = 5
two_tower = 5
popular = 5

# An A/B test of the whole ranking system against one model's top K.
[tenants.mix]
bundle = "shop"
customers = "serving/customers.jsonl"
today = "{today}"
[tenants.mix.ab]
bundle = "sasrec"
share = 0.5
"#
    );
    std::fs::write(dir.join("serve.toml"), cfg).unwrap();
    let server =
        recforge_serve::start(recforge_serve::Config::load(&dir.join("serve.toml")).unwrap())
            .unwrap();
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    // One recommendation for customer `c` from `tenant`: (status, body).
    let ask = |tenant: &str, c: &str| -> (u16, serde_json::Value) {
        let url = format!("http://{}/v1/{tenant}/recommend", server.addr);
        let body = serde_json::json!({"customer_id": c, "k": 12}).to_string();
        let mut resp = agent
            .post(&url)
            .header("content-type", "application/json")
            .send(body.as_bytes())
            .unwrap();
        let text = resp.body_mut().read_to_string().unwrap();
        (resp.status().as_u16(), serde_json::from_str(&text).unwrap())
    };
    let articles = |v: &serde_json::Value| -> Vec<String> {
        v["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x["article_id"].as_str().unwrap().to_string())
            .collect()
    };
    for (c, want) in served {
        let (status, v) = ask("shop", c);
        assert_eq!(status, 200);
        assert_eq!(v["source"], "ranking", "{v}");
        assert!(v["candidates"].as_u64().unwrap() > 0, "{v}");
        assert_eq!(&articles(&v), want, "customer {c}");
    }
    // A client's smaller candidate sizes shrink its candidate lists; sizes
    // beyond what the bundle was fitted with are refused at load.
    let count = |tenant: &str, c: &str| -> u64 {
        let (_, v) = ask(tenant, c);
        assert_eq!(v["items"].as_array().unwrap().len(), 12, "{v}");
        v["candidates"].as_u64().unwrap()
    };
    let (mut fewer, mut checked) = (0, 0);
    for c in served.keys().take(40) {
        let (full, small) = (count("shop", c), count("small", c));
        assert!(small <= full, "customer {c}: {small} > {full}");
        fewer += usize::from(small < full);
        checked += 1;
    }
    assert!(
        fewer * 2 > checked,
        "{fewer} of {checked} had fewer candidates"
    );
    let too_many: recforge_serve::config::TenantConfig =
        toml::from_str("bundle = \"shop\"\n[candidates]\nsasrec = 100000\n").unwrap();
    let err = recforge_serve::tenant::Served::load(&dir.join("models").join("shop"), &too_many, 12)
        .err()
        .expect("sizes beyond the bundle's are refused")
        .to_string();
    assert!(err.contains("candidates.sasrec: 100000"), "{err}");
    // Each variant answers with its own system: the ranking bundle's lists
    // in variant a, the single model's in b.
    let mut seen = std::collections::HashMap::new();
    for (c, want) in served {
        let (_, v) = ask("mix", c);
        let variant = v["variant"].as_str().unwrap().to_string();
        let source = v["source"].as_str().unwrap().to_string();
        match variant.as_str() {
            "a" => {
                assert_eq!(source, "ranking", "{v}");
                assert_eq!(&articles(&v), want, "customer {c}");
            }
            _ => assert!(source == "model" || source == "cold-start", "{v}"),
        }
        *seen.entry(variant).or_insert(0) += 1;
    }
    assert_eq!(seen.len(), 2, "both variants served: {seen:?}");
    // A new article on the ranking tenant: accepted, given an item id in
    // both variants' engines, and kept through a reload (the overlay).
    let manifest = recforge_infer::Bundle::load(&dir.join("models").join("shop").join("ranker"))
        .unwrap()
        .manifest;
    let features: serde_json::Map<String, serde_json::Value> = manifest
        .items
        .features
        .iter()
        .map(|f| (f.name.clone(), f.vocab[f.codes[1] as usize].clone().into()))
        .collect();
    let admin = |path: &str, body: serde_json::Value| -> (u16, serde_json::Value) {
        let mut resp = agent
            .post(format!("http://{}{path}", server.addr))
            .header("content-type", "application/json")
            .header("authorization", "Bearer 0123456789abcdef0123")
            .send(body.to_string().as_bytes())
            .unwrap();
        let text = resp.body_mut().read_to_string().unwrap();
        (resp.status().as_u16(), serde_json::from_str(&text).unwrap())
    };
    let c = served.keys().next().unwrap();
    let known = |v: &serde_json::Value| v["known_history"].as_u64().unwrap();
    let before = known(&ask("shop", c).1);
    let item = serde_json::json!({"items": [{"article_id": "0999999997", "features": features}]});
    let (status, v) = admin("/v1/shop/items", item);
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["added"], 1, "{v}");
    for c in served.keys().take(20) {
        let (status, v) = ask("shop", c);
        assert_eq!((status, articles(&v).len()), (200, 12), "{v}");
    }
    // Bought, the new article is a purchase the bundle knows: it has an
    // item id (and stays known through a reload, from the overlay).
    let event = serde_json::json!({"events": [{"customer_id": c, "article_id": "0999999997"}]});
    let (status, v) = admin("/v1/shop/events", event);
    assert_eq!(status, 200, "{v}");
    assert_eq!(known(&ask("shop", c).1), before + 1);
    let (status, v) = admin("/v1/shop/reload", serde_json::json!({}));
    assert_eq!(status, 200, "{v}");
    let (status, v) = ask("shop", c);
    assert_eq!((status, known(&v)), (200, before + 1), "{v}");
    server.stop();
}

/// Each part of a ranking bundle damaged in a copy: the load is refused
/// with an error naming the part.
fn damaged_bundles_are_refused(bundle: &Path, scratch: &Path) {
    use recforge_infer::rank::bundle::RankingBundle;
    let copy = |name: &str| {
        let to = scratch.join(name);
        let _ = std::fs::remove_dir_all(&to);
        copy_dir(bundle, &to);
        to
    };
    let refused = |dir: &Path| match RankingBundle::load(dir) {
        Ok(_) => panic!("{} loaded", dir.display()),
        Err(e) => e.to_string(),
    };
    assert!(RankingBundle::load(bundle).is_ok());
    let flip = |path: &Path| {
        let mut b = std::fs::read(path).unwrap();
        let n = b.len() / 2;
        b[n] ^= 0x55;
        std::fs::write(path, b).unwrap();
    };
    let d = copy("state");
    flip(&d.join("state.cbor"));
    assert!(
        refused(&d).contains("state.cbor has SHA-256"),
        "{}",
        refused(&d)
    );
    let d = copy("trees");
    let t = std::fs::read_to_string(d.join("trees.txt")).unwrap();
    std::fs::write(d.join("trees.txt"), t.replacen("Tree=0", "Tree=0\n", 1)).unwrap();
    assert!(
        refused(&d).contains("trees.txt has SHA-256"),
        "{}",
        refused(&d)
    );
    let d = copy("no-trees");
    std::fs::remove_file(d.join("trees.txt")).unwrap();
    assert!(refused(&d).contains("trees.txt"), "{}", refused(&d));
    let d = copy("spec");
    let m = std::fs::read_to_string(d.join("ranking.json")).unwrap();
    std::fs::write(
        d.join("ranking.json"),
        m.replacen("\"rank_sasrec\"", "\"rank_gru\"", 1),
    )
    .unwrap();
    assert!(refused(&d).contains("feature spec"), "{}", refused(&d));
    let d = copy("format");
    std::fs::write(
        d.join("ranking.json"),
        m.replacen("\"format_version\": 1", "\"format_version\": 9", 1),
    )
    .unwrap();
    assert!(refused(&d).contains("version 9"), "{}", refused(&d));
    let d = copy("ranker-kind");
    std::fs::remove_dir_all(d.join("ranker")).unwrap();
    copy_dir(&bundle.join("retrieval"), &d.join("ranker"));
    assert!(
        refused(&d).contains("ranker/ holds a TwoTower bundle"),
        "{}",
        refused(&d)
    );
    let d = copy("ranker-weights");
    flip(&d.join("ranker").join("model.safetensors"));
    // The copy's own name holds "ranker": the message must name the file.
    assert!(
        refused(&d).contains("model.safetensors has SHA-256"),
        "{}",
        refused(&d)
    );
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

/// A newer log holding an article no model ever saw, bought by 60
/// customers on its last day: refreshed on it, the bundle serves the
/// article without retraining. SASRec and the two-tower model embed it
/// from its attributes, and the popularity source puts it on a list for a
/// customer without history.
fn new_articles_enter_through_a_refresh(bundle: &Path, ds: &recforge::data::Dataset, d: &Path) {
    use recforge_infer::rank::bundle::{RankingBundle, Request};
    let mut newer = ds.clone();
    let id = "0999999999".to_string();
    assert!(!ds.items.ids.contains(&id));
    newer.items.ids.push(id.clone());
    // The attributes of article 1 (so the towers know every value).
    for f in &mut newer.items.features {
        let c = f.codes[1];
        f.codes.push(c);
    }
    let item = (newer.items.ids.len() - 1) as u32;
    let last = recforge::data::split::last_day(ds).unwrap();
    let per_day = ds.meta.time_unit.per_day();
    let part = *newer.inter.part.last().unwrap();
    let i = &mut newer.inter;
    for u in 1..=60u32 {
        i.user.push(u);
        i.item.push(item);
        i.time.push(last * per_day);
        i.price.push(0.03);
        i.channel.push(2);
        i.part.push(part);
    }
    newer.meta.n_items += 1;
    newer.meta.n_interactions += 60;
    let data = d.join("newer-log");
    recforge::data::cache::write(&newer, &data).unwrap();
    let out = d.join("models").join("newer");
    recforge::export::refresh_ranking(bundle, &data, None, &out).unwrap();
    let b = RankingBundle::load(&out).unwrap();
    let k = b
        .articles
        .iter()
        .position(|a| *a == id)
        .expect("the new article is in the bundle") as u32;
    let tt = b
        .engine
        .retrieval
        .as_ref()
        .expect("the tiny pipeline has a two-tower model");
    assert!(tt.sells(&tt.engine.pool.snapshot(), k));
    assert!(tt.vector(k).is_some());
    let ranker = &b.engine.ranker;
    assert!(ranker.sells(&ranker.engine.pool.snapshot(), k));
    let no_attrs = std::collections::HashMap::new();
    let ans = b
        .answer(&Request {
            history: &[],
            attributes: &no_attrs,
            k: 12,
            exclude: &[],
            exclude_purchased: false,
            ordering: None,
            candidates: None,
        })
        .unwrap();
    assert!(
        ans.items.iter().any(|(a, _)| *a == id),
        "the new best seller is not served to a new customer: {:?}",
        ans.items
    );
}

/// An article added while serving (what `/items` does on a ranking tenant:
/// embed it in both engines' pools, then give it an item id in a clone of
/// the bundle): the two-tower source proposes it, its features read as an
/// unsold article's, a sold-out mark keeps it out, and the bundle it was
/// cloned from, still serving, ignores it.
fn new_articles_enter_live(bundle: &Path, ds: &recforge::data::Dataset) {
    use recforge_infer::rank::bundle::RankingBundle;
    use recforge_infer::rank::sources::Source;
    let b = RankingBundle::load(bundle).unwrap();
    let hist = recforge::data::history::History::of_all(ds);
    let users: Vec<u32> = (1..ds.users.len() as u32).step_by(3).collect();
    // The raw attributes of the article the two-tower source proposes most,
    // under a new id: its tower vector (no id part) lands beside it.
    let tr = recforge::submit::ranking::Translation::new(&b, ds);
    let mut times: std::collections::HashMap<u32, usize> = Default::default();
    for p in tr.prepare(&b, ds, &hist, &users).unwrap() {
        // The bundle it was cloned from, below, has these same candidates.
        for c in p
            .candidates
            .iter()
            .filter(|c| c.rank(Source::TwoTower).is_some())
        {
            *times.entry(c.item).or_default() += 1;
        }
    }
    let template = times
        .iter()
        .max_by_key(|(i, n)| (**n, **i))
        .map(|(i, _)| *i)
        .unwrap();
    let data_item = ds
        .items
        .ids
        .iter()
        .position(|a| *a == b.articles[template as usize])
        .unwrap();
    let id = "0999999998";
    let features: std::collections::HashMap<String, String> = ds
        .items
        .features
        .iter()
        .map(|f| (f.name.clone(), f.vocab[f.codes[data_item] as usize].clone()))
        .collect();
    for e in b.engines() {
        let v = e.embed_article(&features).unwrap();
        e.pool.update(|s| s.add(id, &v).map(|_| ())).unwrap();
    }
    let mut live = b.clone();
    assert_eq!(live.add_articles(&[(id, &features)]).new, 1);
    let again = live.add_articles(&[(id, &features)]);
    assert_eq!(
        (again.new, again.refreshed),
        (0, 1),
        "added once, re-read after"
    );
    let k = live.item(id).unwrap();
    assert_eq!(k as usize, b.articles.len(), "the next item id");
    assert!(live.engine.context.ln_price(k).is_nan(), "never sold");
    let tt = live.engine.retrieval.as_ref().unwrap();
    assert!(tt.vector(k).is_some() && tt.sells(&tt.engine.pool.snapshot(), k));

    let proposed = |bundle: &RankingBundle| -> usize {
        let tr = recforge::submit::ranking::Translation::new(bundle, ds);
        tr.prepare(bundle, ds, &hist, &users)
            .unwrap()
            .iter()
            .filter(|p| {
                p.candidates
                    .iter()
                    .any(|c| c.item == k && c.rank(Source::TwoTower).is_some())
            })
            .count()
    };
    let reached = proposed(&live);
    assert!(
        reached > 0,
        "the two-tower source never proposed the new article"
    );
    // The bundle it was cloned from shares the pools but has no id for it.
    let tr = recforge::submit::ranking::Translation::new(&b, ds);
    for p in tr.prepare(&b, ds, &hist, &users).unwrap() {
        assert!(
            p.candidates
                .iter()
                .all(|c| (c.item as usize) < b.articles.len())
        );
    }
    live.engine
        .ranker
        .engine
        .pool
        .set_available(id, false)
        .unwrap();
    assert_eq!(proposed(&live), 0, "sold out: never a candidate");
    live.engine
        .ranker
        .engine
        .pool
        .set_available(id, true)
        .unwrap();
    assert_eq!(proposed(&live), reached);
}

/// `submit --shard I/N` for every I, then `--merge`: the unsharded file,
/// byte for byte (through the binary, as array jobs run it); an incomplete
/// or overlapping set of shards is refused naming the problem.
fn shards_merge_into_the_unsharded_file(
    run_dir: &Path,
    ds: &recforge::data::Dataset,
    whole: &Path,
    d: &Path,
) {
    let bundle = run_dir.join("ranking-tiny-refit");
    let data = run_dir.join("cache");
    let parts: Vec<std::path::PathBuf> = (0..3).map(|i| d.join(format!("part-{i}.csv"))).collect();
    for (i, p) in parts.iter().enumerate() {
        let (ok, _, err) = common::recforge(&[
            "submit",
            "--bundle",
            bundle.to_str().unwrap(),
            "--data",
            data.to_str().unwrap(),
            "--out",
            p.to_str().unwrap(),
            "--shard",
            &format!("{i}/3"),
        ]);
        assert!(ok, "{err}");
    }
    let sizes: Vec<usize> = parts.iter().map(|p| read_lists(p).len()).collect();
    assert_eq!(sizes.iter().sum::<usize>(), ds.users.len() - 1);
    assert!(
        sizes.iter().all(|&n| n * 5 > ds.users.len()),
        "balanced: {sizes:?}"
    );
    // `submit --merge FILES --out OUT` over the run's data.
    let merge = |out: &Path, files: &[&Path]| {
        let mut args = vec![
            "submit",
            "--data",
            data.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--merge",
        ];
        args.extend(files.iter().map(|p| p.to_str().unwrap()));
        common::recforge(&args)
    };
    let merged = d.join("merged.csv");
    let all: Vec<&Path> = parts.iter().map(|p| p.as_path()).collect();
    let (ok, _, err) = merge(&merged, &all);
    assert!(ok, "{err}");
    assert_eq!(
        std::fs::read(&merged).unwrap(),
        std::fs::read(whole).unwrap()
    );
    // Two of three shards, or one shard twice, is not a submission.
    let bad = d.join("bad.csv");
    let (ok, _, err) = merge(&bad, &all[..2]);
    assert!(!ok && err.contains("in none of the 2 shard files"), "{err}");
    let (ok, _, err) = merge(&bad, &[all[0], all[0], all[1], all[2]]);
    assert!(!ok && err.contains("another shard"), "{err}");
    assert!(!bad.exists(), "a refused merge writes nothing");
}

/// The most popular articles, sold out while other articles flip between
/// sold out and back, never reach a ranking-bundle list read meanwhile.
fn sold_out_articles_are_never_served(bundle: &Path, ds: &recforge::data::Dataset) {
    use recforge_infer::rank::bundle::RankingBundle;
    let b = RankingBundle::load(bundle).unwrap();
    let tr = recforge::submit::ranking::Translation::new(&b, ds);
    let hist = recforge::data::history::History::of_all(ds);
    let users: Vec<u32> = (1..ds.users.len() as u32).step_by(7).collect();
    let (before, _) = tr.lists(&b, ds, &hist, &users).unwrap();
    // The articles served most often: surely served again if sellable.
    let mut count: std::collections::HashMap<u32, usize> = Default::default();
    for &i in before.iter().flatten() {
        *count.entry(i).or_default() += 1;
    }
    let mut top: Vec<(u32, usize)> = count.into_iter().collect();
    top.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let gone: Vec<u32> = top.iter().take(5).map(|t| t.0).collect();
    let flipping: Vec<u32> = top.iter().skip(5).take(20).map(|t| t.0).collect();
    let pool = &b.engine.ranker.engine.pool;
    for &i in &gone {
        pool.set_available(&ds.items.ids[i as usize], false)
            .unwrap();
    }
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut on = false;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                for &i in &flipping {
                    pool.set_available(&ds.items.ids[i as usize], on).unwrap();
                }
                on = !on;
            }
        });
        let readers: Vec<_> = (0..2)
            .map(|_| {
                s.spawn(|| {
                    for _ in 0..3 {
                        let (lists, _) = tr.lists(&b, ds, &hist, &users).unwrap();
                        for l in &lists {
                            assert_eq!(l.len(), 12);
                            assert!(
                                !l.iter().any(|i| gone.contains(i)),
                                "{l:?} holds a sold-out article"
                            );
                        }
                    }
                })
            })
            .collect();
        for r in readers {
            r.join().unwrap();
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
    });
}

#[test]
fn pipeline_runs_end_to_end_and_reuses_unchanged_steps() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let synth = write(
        d,
        "synth.toml",
        "customers = 2000\narticles = 400\ndays = 70\nseed = 5\n",
    );
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny");
    let (tt, sr) = (
        fixtures.join("two_tower.toml"),
        fixtures.join("sasrec.toml"),
    );
    let pipeline = |ranker_lr: &str| {
        format!(
            r#"
name = "tiny"
submission = true
[data]
synth = "{}"
[retrieval]
experiment = "{}"
set = ['device="flex"']
[ranker]
experiment = "{}"
set = ['device="flex"', "optim.lr={ranker_lr}"]
[candidates]
two_tower = 20
sasrec = 20
[objective]
kind = "purchase"
[trees]
weeks = 2
max_rounds = 60
patience = 20
"#,
            synth.display(),
            tt.display(),
            sr.display()
        )
    };
    let cfg_path = write(d, "p.toml", &pipeline("0.001"));
    let cfg = PipelineConfig::load(&cfg_path).unwrap();
    let (run_dir, report) = (d.join("run"), d.join("report"));
    let first = run(&cfg, &run_dir, &report).unwrap();
    let ran: Vec<(&str, bool)> = first
        .steps
        .iter()
        .map(|s| (s.step.as_str(), s.reused))
        .collect();
    assert_eq!(
        ran,
        [
            ("data", false),
            ("baselines", false),
            ("retrieval", false),
            ("ranker", false),
            ("rank-tiny", false),
            ("retrieval-refit", false),
            ("ranker-refit", false),
            ("second-stage-refit-tiny", false),
            ("submission-tiny", false)
        ]
    );
    // The evaluated models never saw the second stage's weeks; the
    // submission's refit models saw every row, the last week included.
    let ds = recforge::data::cache::read(&run_dir.join("cache")).unwrap();
    let rows = |run: &str| {
        let info: serde_json::Value =
            serde_json::from_slice(&std::fs::read(run_dir.join(run).join("run.json")).unwrap())
                .unwrap();
        info["train_rows"].as_u64().unwrap() as usize
    };
    let last = recforge::data::split::last_day(&ds).unwrap();
    let before = |day: i64| (0..ds.inter.len()).filter(|&r| ds.day(r) < day).count();
    for stage in ["retrieval", "ranker"] {
        assert_eq!(rows(&format!("{stage}-refit")), ds.inter.len(), "{stage}");
        // The models' own split ends where the two tree weeks begin (they
        // early-stop on the first): they train on the rows four weeks
        // before the end (two tree weeks, validation, test).
        assert_eq!(rows(stage), before(last + 1 - 4 * 7), "{stage}");
    }
    let results = std::fs::read_to_string(report.join("results.md")).unwrap();
    assert!(
        results.contains("candidates ranked by tiny-ranker"),
        "{results}"
    );
    assert!(results.contains("A/B against the best baseline"));
    // The second stage was trained on the weeks before the validation
    // week, and the served trees are compared with the logistic blender
    // and the ranker's score alone.
    assert!(results.contains("## The second stage"), "{results}");
    assert!(results.contains("## The logistic blender"), "{results}");
    assert!(results.contains("the logistic blender (A) against the served ranking (B)"));
    assert!(results.contains("the ranker's score alone (A) against the served ranking (B)"));
    assert!(results.contains("trees without the SASRec features"));
    assert!(results.contains("| `rank_sasrec` |"), "{results}");
    assert!(run_dir.join("second-stage-tiny.txt").exists());
    // The pipeline's per-customer metrics pair up with another run's.
    let mine = recforge::eval::compare::PerCustomer::read(&run_dir.join("per-customer-tiny.json"))
        .unwrap();
    let same = recforge::eval::compare::compare(&mine, &mine, 100, 1).unwrap();
    assert!(same.customers > 0 && same.customers == mine.customers.len());
    let stages = std::fs::read_to_string(report.join("stages.md")).unwrap();
    assert!(stages.contains("| total |"), "{stages}");
    assert!(stages.contains("## Model checks"), "{stages}");
    // Each step's peak is its own (the counter is reset where Linux allows).
    if cfg!(target_os = "linux") {
        let table = stages.split("## Model checks").next().unwrap();
        assert!(!table.lines().any(|l| l.ends_with("* |")), "{stages}");
    }
    for chart in ["validation.svg", "candidates.svg"] {
        let svg = std::fs::read_to_string(report.join(chart)).unwrap();
        assert!(svg.starts_with("<svg") && svg.contains("polyline") == (chart == "validation.svg"));
    }
    let sub = std::fs::read_to_string(first.submission.as_ref().unwrap()).unwrap();
    assert_eq!(sub.lines().count(), 2000 + 1);
    let bytes = |p: &Path| std::fs::read(p).unwrap();
    let sub_bytes = bytes(first.submission.as_ref().unwrap());

    // What is evaluated is what is served: `recforge submit` on the test
    // period's ranking bundle gives the evaluation's own list to every
    // test customer, and on the refit bundle the pipeline's submission.
    let served = read_lists(&run_dir.join("served-tiny.csv"));
    assert!(served.len() > 100, "{} test customers", served.len());
    let submit = |bundle: &str, out: &Path| {
        recforge::submit::submit(&recforge::submit::SubmitOptions {
            bundle: run_dir.join(bundle),
            data: run_dir.join("cache"),
            out: out.to_path_buf(),
            stale_days: 0,
            chunk: 300,
            shard: None,
        })
        .unwrap()
    };
    let from_bundle = d.join("from-bundle.csv");
    submit("ranking-tiny", &from_bundle);
    let all = read_lists(&from_bundle);
    for (c, l) in &served {
        assert_eq!(all.get(c), Some(l), "customer {c}");
    }
    let refit = d.join("from-refit.csv");
    submit("ranking-tiny-refit", &refit);
    assert_eq!(bytes(&refit), sub_bytes);
    shards_merge_into_the_unsharded_file(&run_dir, &ds, &refit, d);
    http_serves_the_evaluated_lists(&run_dir, d, &served);
    damaged_bundles_are_refused(&run_dir.join("ranking-tiny"), d);
    // `recforge export` copies a checked ranking bundle, and refuses a
    // damaged one without writing anything.
    let exported = d.join("models").join("tiny");
    recforge::export::export_ranking(&run_dir.join("ranking-tiny"), &exported).unwrap();
    assert!(recforge_infer::rank::bundle::RankingBundle::load(&exported).is_ok());
    // Refreshing the bundle's state on the same rows and day gives it bit
    // for bit; on every row it serves the day after the data, with
    // fresher statistics and the same models and trees.
    let day = recforge_infer::rank::bundle::RankingBundle::load(&exported)
        .unwrap()
        .manifest
        .clone();
    let same = recforge::export::refresh_ranking(
        &exported,
        &run_dir.join("cache"),
        Some(day.day),
        &d.join("models").join("same"),
    )
    .unwrap();
    assert_eq!(same.state_sha256, day.state_sha256);
    assert_eq!(same.second, day.second);
    let fresh = recforge::export::refresh_ranking(
        &exported,
        &run_dir.join("cache"),
        None,
        &d.join("models").join("fresh"),
    )
    .unwrap();
    assert_eq!(fresh.day, recforge::data::split::last_day(&ds).unwrap() + 1);
    assert_ne!(fresh.state_sha256, day.state_sha256);
    assert_eq!(fresh.ranker_sha256, day.ranker_sha256);
    assert!(
        recforge_infer::rank::bundle::RankingBundle::load(&d.join("models").join("fresh")).is_ok()
    );
    new_articles_enter_through_a_refresh(&exported, &ds, d);
    let bad = d.join("state");
    assert!(recforge::export::export_ranking(&bad, &d.join("models").join("bad")).is_err());
    assert!(!d.join("models").join("bad").exists());
    sold_out_articles_are_never_served(&run_dir.join("ranking-tiny"), &ds);
    new_articles_enter_live(&run_dir.join("ranking-tiny"), &ds);

    // Unchanged: everything reused, nothing rewritten.
    let again = run(&cfg, &run_dir, &report).unwrap();
    assert!(again.steps.iter().all(|s| s.reused), "{:?}", again.steps);
    assert_eq!(bytes(again.submission.as_ref().unwrap()), sub_bytes);

    // A missing output is made again, even with unchanged inputs.
    std::fs::remove_file(again.submission.as_ref().unwrap()).unwrap();
    let fourth = run(&cfg, &run_dir, &report).unwrap();
    assert_eq!(reran(&fourth), ["submission-tiny"]);
    assert_eq!(bytes(fourth.submission.as_ref().unwrap()), sub_bytes);

    // A ranker change reruns the ranker and what reads it, not retrieval.
    std::fs::write(&cfg_path, pipeline("0.002")).unwrap();
    let cfg = PipelineConfig::load(&cfg_path).unwrap();
    let third = run(&cfg, &run_dir, &report).unwrap();
    let reused: Vec<(&str, bool)> = third
        .steps
        .iter()
        .map(|s| (s.step.as_str(), s.reused))
        .collect();
    assert_eq!(
        reused,
        [
            ("data", true),
            ("baselines", true),
            ("retrieval", true),
            ("ranker", false),
            ("rank-tiny", false),
            ("retrieval-refit", true),
            ("ranker-refit", false),
            ("second-stage-refit-tiny", false),
            ("submission-tiny", false)
        ]
    );

    // Switching the trees off reruns only the ranking and the
    // submission, and the submission is then ordered by the blender: the
    // trees are what the first submission was ordered by.
    let with_trees = bytes(third.submission.as_ref().unwrap());
    let results_with_trees = std::fs::read_to_string(report.join("results.md")).unwrap();
    let mut plain = cfg.clone();
    plain.trees.enabled = false;
    let off = run(&plain, &run_dir, &report).unwrap();
    assert_eq!(
        reran(&off),
        ["rank-tiny", "second-stage-refit-tiny", "submission-tiny"]
    );
    let without = bytes(off.submission.as_ref().unwrap());
    assert_ne!(with_trees, without);
    let results = std::fs::read_to_string(report.join("results.md")).unwrap();
    assert!(!results.contains("## The second stage"), "{results}");
    assert!(results.contains("## The logistic blender"), "{results}");

    // Exporting the second stage's rows changes no result; the validation
    // file holds only customers with a bought candidate, every candidate of
    // theirs, one column per registry feature.
    let mut export = cfg.clone();
    export.trees.export_rows = true;
    let exported = run(&export, &run_dir, &report).unwrap();
    assert_eq!(
        reran(&exported),
        ["rank-tiny", "second-stage-refit-tiny", "submission-tiny"]
    );
    assert_eq!(bytes(exported.submission.as_ref().unwrap()), with_trees);
    assert_eq!(
        std::fs::read_to_string(report.join("results.md")).unwrap(),
        results_with_trees
    );
    let rows_dir = run_dir.join("second-stage-rows-tiny");
    let summary: serde_json::Value =
        serde_json::from_slice(&bytes(&rows_dir.join("summary.json"))).unwrap();
    let read = |name: &str| {
        use polars::prelude::SerReader;
        let f = std::fs::File::open(rows_dir.join(name)).unwrap();
        polars::prelude::ParquetReader::new(f).finish().unwrap()
    };
    let (train, valid) = (read("train.parquet"), read("valid.parquet"));
    for f in recforge::rank::features::Feature::ALL {
        assert!(train.column(f.name()).is_ok() && valid.column(f.name()).is_ok());
    }
    let customers = |df: &polars::prelude::DataFrame| -> Vec<i64> {
        df.column("customer")
            .unwrap()
            .i64()
            .unwrap()
            .iter()
            .map(|v| v.unwrap())
            .collect()
    };
    let labels: Vec<f32> = valid
        .column("label")
        .unwrap()
        .f32()
        .unwrap()
        .iter()
        .map(|v| v.unwrap())
        .collect();
    let vc = customers(&valid);
    let n_valid = (*vc.last().unwrap() + 1) as usize;
    let mut bought = vec![false; n_valid];
    for (&c, &l) in vc.iter().zip(&labels) {
        bought[c as usize] |= l > 0.0;
    }
    assert!(bought.iter().all(|&b| b));
    assert!(n_valid <= summary["valid_customers"].as_u64().unwrap() as usize);
    assert!(customers(&train).windows(2).all(|w| w[0] <= w[1]));
    let served_map = summary["models"][0]["valid_map"].as_f64().unwrap();
    assert!(served_map > 0.0 && served_map <= 1.0, "{summary}");
}

#[test]
fn a_model_stage_on_another_split_is_refused_before_it_trains() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let synth = write(
        d,
        "synth.toml",
        "customers = 300\narticles = 80\ndays = 40\nseed = 3\n",
    );
    // No `split`: the experiment default is leave-one-out, whose training
    // part would include the pipeline's test week.
    let tt = write(
        d,
        "tt.toml",
        "device = \"flex\"\n[model]\nkind = \"two-tower\"\n[loss]\nkind = \"in-batch\"\n[eval]\nks = [12]\nmetric = \"recall@12\"\n",
    );
    let sr = write(
        d,
        "sr.toml",
        "device = \"flex\"\n[data]\nsplit = \"last-week\"\n",
    );
    let text = format!(
        "name = \"split\"\n[data]\nsynth = \"{}\"\n[retrieval]\nexperiment = \"{}\"\n[ranker]\nexperiment = \"{}\"\n",
        synth.display(),
        tt.display(),
        sr.display()
    );
    let cfg = PipelineConfig::load(&write(d, "p.toml", &text)).unwrap();
    let err = run(&cfg, &d.join("run"), &d.join("report"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("tt.toml") && err.contains("data.split = \"last-week\""),
        "{err}"
    );
    assert!(
        !d.join("run").join("retrieval").exists(),
        "nothing was trained"
    );
    // A good retrieval stage is not trained when the ranker's is wrong.
    let tt_ok = write(
        d,
        "tt_ok.toml",
        "device = \"flex\"\n[data]\nsplit = \"last-week\"\n[model]\nkind = \"two-tower\"\n[loss]\nkind = \"in-batch\"\n[eval]\nks = [12]\nmetric = \"recall@12\"\n",
    );
    let sr_bad = write(d, "sr_bad.toml", "device = \"flex\"\n");
    let both = text
        .replace(&tt.display().to_string(), &tt_ok.display().to_string())
        .replace(&sr.display().to_string(), &sr_bad.display().to_string());
    let cfg = PipelineConfig::load(&write(d, "p2.toml", &both)).unwrap();
    let err = run(&cfg, &d.join("run2"), &d.join("report2"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("sr_bad.toml"), "{err}");
    assert!(
        !d.join("run2").join("retrieval").exists(),
        "retrieval trained"
    );
    // With the pipeline's target days given but another length, also refused.
    let text = both
        .replace(&sr_bad.display().to_string(), &sr.display().to_string())
        .replace("[data]\n", "[data]\ntarget_days = 14\n");
    let cfg = PipelineConfig::load(&write(d, "p14.toml", &text)).unwrap();
    let err = run(&cfg, &d.join("run14"), &d.join("report14"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("tt_ok.toml"), "{err}");
    assert!(err.contains("data.target_days = 14"), "{err}");
}
