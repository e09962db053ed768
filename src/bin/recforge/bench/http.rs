//! `recforge bench http`: the HTTP server under a fixed request rate. A
//! 105,542-article SASRec bundle (the serving benchmark's shape) is served
//! by a `recforge-serve` process; a second `recforge-serve load` process
//! sends recommendation requests for stored customers (history length 50)
//! at each rate over loopback, open loop, and reports latency percentiles
//! measured from each request's due time.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use serde_json::{Value, json};

use recforge::util::rng::Rng;

/// Kills the server when the benchmark ends, however it ends.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn sibling(name: &str) -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let path = exe.with_file_name(name);
    ensure!(
        path.exists(),
        "{} not found: build it first (`cargo build --workspace`, with --release for release numbers)",
        path.display()
    );
    Ok(path)
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn wait_listening(port: u16, server: &mut Child) -> Result<()> {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(120) {
        if let Some(status) = server.try_wait()? {
            bail!("recforge-serve exited with {status} before serving");
        }
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!("recforge-serve did not start listening within 120 s")
}

#[allow(clippy::too_many_arguments)]
// One benchmark script: start the server, drive each rate, write the table.
pub fn run(
    items: usize,
    customers: usize,
    len: usize,
    rates: &[f64],
    seconds: f64,
    threads: usize,
    workers: usize,
    ranking: bool,
    soak: Option<f64>,
    out: &Path,
) -> Result<()> {
    ensure!(
        !rates.is_empty() && customers > 0,
        "need rates and customers"
    );
    let dir = tempfile::tempdir()?;
    let models = dir.path().join("models");
    let mut bodies = String::new();
    // The ranking bundle's histories are served as of its day.
    let mut today = String::new();
    let what = if ranking {
        // The whole ranking system on a synthetic log of `customers`
        // customers; every customer with a purchase is requested.
        let built = crate::bench::ranking::build(
            customers,
            items,
            182,
            crate::bench::ranking::FULL_RUN_ROUNDS,
            &dir.path().join("build"),
        )?;
        std::fs::create_dir_all(&models)?;
        std::fs::rename(&built.bundle, models.join("hm"))?;
        let serving = dir.path().join("serving");
        recforge::export::serving_data::write(
            &dir.path().join("build").join("raw"),
            &serving,
            usize::MAX,
            Some(built.day),
        )?;
        today = format!(
            "today = \"{}\"\n",
            recforge::util::dates::format_ymd(built.day as i32)
        );
        std::fs::rename(
            serving.join("customers.jsonl"),
            dir.path().join("customers.jsonl"),
        )?;
        let text = std::fs::read_to_string(dir.path().join("customers.jsonl"))?;
        for line in text.lines() {
            let v: Value = serde_json::from_str(line)?;
            if v["history"].as_array().is_some_and(|h| !h.is_empty()) {
                bodies.push_str(&json!({"customer_id": v["customer_id"], "k": 12}).to_string());
                bodies.push('\n');
            }
        }
        format!(
            "a ranking bundle (the whole two-stage system: candidate sources sized for about 200 candidates, 45 features, \
{} rounds of lambdarank trees, over a random-init SASRec with d = 64, 2 layers, 2 heads, d_ff 256) built on a synthetic \
log of {customers} customers and {items} articles; every customer with a purchase ({} of them) is requested with their \
whole history",
            crate::bench::ranking::FULL_RUN_ROUNDS,
            bodies.lines().count()
        )
    } else {
        eprintln!("writing a {items}-article bundle ...");
        crate::bench::serve::random_sasrec(items, len, &models.join("hm"))?;
        let mut rng = Rng::new(5);
        let mut lines = String::new();
        for c in 0..customers {
            let history: Vec<Value> = (0..len)
                .map(|j| {
                    let a = 1 + rng.below(items as u64);
                    json!({"article_id": format!("{:010}", 100_000_000 + a), "days_ago": len - j})
                })
                .collect();
            lines
                .push_str(&json!({"customer_id": format!("c{c}"), "history": history}).to_string());
            lines.push('\n');
            bodies.push_str(&json!({"customer_id": format!("c{c}"), "k": 12}).to_string());
            bodies.push('\n');
        }
        std::fs::write(dir.path().join("customers.jsonl"), lines)?;
        format!(
            "a random-init SASRec bundle: {items} articles, d = 64, 2 layers, 2 heads, d_ff 256; {customers} stored \
customers with {len}-purchase histories"
        )
    };
    std::fs::write(dir.path().join("bodies.jsonl"), bodies)?;
    let port = free_port()?;
    let token = "bench-admin-token-not-secret";
    std::fs::write(
        dir.path().join("serve.toml"),
        format!(
            "models_dir = \"models\"\nadmin_token = \"{token}\"\nport = {port}\nworkers = {workers}\n\n{state}\n[tenants.hm]\nbundle = \"hm\"\ncustomers = \"customers.jsonl\"\n{today}",
            state = if soak.is_some() {
                "state_dir = \"state\"\n"
            } else {
                ""
            },
        ),
    )?;
    let t = Instant::now();
    let mut server = Guard(
        Command::new(sibling("recforge-serve")?)
            .args(["serve", "--config"])
            .arg(dir.path().join("serve.toml"))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting recforge-serve")?,
    );
    wait_listening(port, &mut server.0)?;
    let startup_s = t.elapsed().as_secs_f64();
    let url = format!("http://127.0.0.1:{port}/v1/hm/recommend");
    let articles = dir.path().join("articles.txt");
    let load = |rate: f64, secs: f64, churn: bool| -> Result<Value> {
        let mut cmd = Command::new(sibling("recforge-serve")?);
        cmd.args(["load", "--url", &url, "--bodies"])
            .arg(dir.path().join("bodies.jsonl"))
            .args(["--rate", &rate.to_string(), "--seconds", &secs.to_string()])
            .args(["--threads", &threads.to_string()]);
        if churn {
            cmd.args(["--churn-token", token, "--churn-articles"])
                .arg(&articles);
            if ranking {
                cmd.arg("--churn-no-items");
            }
        }
        let out = cmd.output().context("running recforge-serve load")?;
        ensure!(
            out.status.success(),
            "load generator failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(serde_json::from_slice(&out.stdout)?)
    };
    // Warm-up: first touches of the item table and the customer map.
    load(rates[0], 2.0, false)?;
    if let Some(secs) = soak {
        // Articles the churn marks and buys: ids the bundle serves.
        let pool: Vec<String> = if ranking {
            std::fs::read_to_string(dir.path().join("customers.jsonl"))?
                .lines()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .flat_map(|v| {
                    v["history"]
                        .as_array()
                        .map(|h| {
                            h.iter()
                                .filter_map(|x| x["article_id"].as_str().map(str::to_string))
                                .collect::<Vec<_>>()
                        })
                        .unwrap_or_default()
                })
                .take(2000)
                .collect()
        } else {
            (1..=items.min(2000))
                .map(|a| format!("{:010}", 100_000_000 + a))
                .collect()
        };
        std::fs::write(&articles, pool.join("\n"))?;
        return soak_run(
            SoakRun {
                server: &mut server.0,
                rate: rates[0],
                seconds: secs,
                workers,
                threads,
                what: &what,
                startup_s,
                ranking,
                out,
            },
            |rate, secs| load(rate, secs, true),
        );
    }
    let mut rows = String::new();
    let mut at_500 = None;
    for &rate in rates {
        eprintln!("{rate} requests/s for {seconds} s ...");
        let r = load(rate, seconds, false)?;
        let f = |k: &str| r[k].as_f64().unwrap_or(f64::NAN);
        if (rate - 500.0).abs() < 1e-9 {
            at_500 = Some(f("p99_ms"));
        }
        rows.push_str(&format!(
            "| {rate:.0} | {:.1} | {} | {} | {:.2} | {:.2} | {:.2} | {:.2} |\n",
            f("rate"),
            f("ok"),
            f("failed"),
            f("p50_ms"),
            f("p90_ms"),
            f("p99_ms"),
            f("max_ms")
        ));
    }
    drop(server);
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let profile = if cfg!(debug_assertions) {
        "debug build; dependencies and recforge-infer optimised"
    } else {
        "release build"
    };
    // The single-model target is 10 ms; the whole ranking system's 15 ms.
    let target = if ranking { 15.0 } else { 10.0 };
    let verdict = match at_500 {
        Some(p99) if p99 <= target => {
            format!("**p99 at 500 requests/s: {p99:.2} ms, within the {target} ms target.**")
        }
        Some(p99) => {
            format!("**p99 at 500 requests/s: {p99:.2} ms, over the {target} ms target.**")
        }
        None => "500 requests/s was not among the rates run.".into(),
    };
    let table = format!(
        "# HTTP serving benchmark\n\n`recforge bench http` ({profile}, {cores} CPU cores shared by server and client). \
One `recforge-serve` process ({workers} worker threads) serves {what}; each request is \
`POST /v1/hm/recommend {{\"customer_id\", \"k\": 12}}` over HTTP/1.1 keep-alive on 127.0.0.1. A second process \
(`recforge-serve load`, {threads} client threads) sends requests open loop at a fixed rate for {seconds} s per rate; \
latency runs from each request's due time to its full response. Server start (bundle load and checks, customer file): {startup_s:.1} s.\n\n\
| target req/s | achieved req/s | ok | failed | p50 ms | p90 ms | p99 ms | max ms |\n|---:|---:|---:|---:|---:|---:|---:|---:|\n{rows}\n{verdict}\n"
    );
    recforge::util::fsutil::write_atomic(out, table.as_bytes())?;
    println!("{table}\nwritten to {}", out.display());
    Ok(())
}

/// What one soak needs to know.
struct SoakRun<'a> {
    server: &'a mut Child,
    rate: f64,
    seconds: f64,
    workers: usize,
    threads: usize,
    what: &'a str,
    startup_s: f64,
    ranking: bool,
    out: &'a Path,
}

/// Resident memory of process `pid` in MiB (Linux; None elsewhere).
fn rss_mib(pid: u32) -> Option<f64> {
    recforge::util::resources::status_mib(&pid.to_string(), "VmRSS")
}

/// The soak: the load with churn, the server's memory sampled each second.
fn soak_run(s: SoakRun, load: impl Fn(f64, f64) -> Result<Value>) -> Result<()> {
    let pid = s.server.id();
    let before = rss_mib(pid);
    let done = std::sync::atomic::AtomicBool::new(false);
    eprintln!(
        "soak: {} requests/s for {} s with churn ...",
        s.rate, s.seconds
    );
    let (r, samples) = std::thread::scope(|scope| {
        let sampler = scope.spawn(|| {
            // (seconds since the soak began, MiB), each second.
            let t0 = Instant::now();
            let mut samples = Vec::new();
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                if let Some(m) = rss_mib(pid) {
                    samples.push((t0.elapsed().as_secs_f64(), m));
                }
                std::thread::sleep(Duration::from_secs(1));
            }
            samples
        });
        let r = load(s.rate, s.seconds);
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        (r, sampler.join().unwrap_or_default())
    });
    let peak = samples
        .iter()
        .map(|s| s.1)
        .fold(before.unwrap_or(0.0), f64::max);
    let timeline: String = samples
        .iter()
        .step_by(10)
        .map(|(t, m)| format!("| {t:.0} | {m:.0} |\n"))
        .collect();
    let r = r?;
    let after = rss_mib(pid);
    if let Some(status) = s.server.try_wait()? {
        bail!("recforge-serve exited with {status} during the soak");
    }
    let f = |k: &str| r[k].as_f64().unwrap_or(f64::NAN);
    let churn = |k: &str| {
        (
            r["churn"][k]["sent"].as_u64().unwrap_or(0),
            r["churn"][k]["failed"].as_u64().unwrap_or(0),
        )
    };
    let mut changes = String::new();
    let mut change_failures = 0;
    for (k, label) in [
        ("availability", "sold-out / in-stock marks"),
        ("events", "purchase events"),
        ("items", "new articles"),
        ("reloads", "reloads of the running bundle"),
    ] {
        let (sent, failed) = churn(k);
        change_failures += failed;
        changes.push_str(&format!("| {label} | {sent} | {failed} |\n"));
    }
    let mem = |m: Option<f64>| m.map_or("n/a".to_string(), |m| format!("{m:.0}"));
    let growth = match (before, after) {
        (Some(b), Some(a)) => format!("{:+.0} MiB ({:+.1}%)", a - b, 100.0 * (a - b) / b),
        _ => "n/a".into(),
    };
    let failed = f("failed");
    let verdict = if failed == 0.0 && change_failures == 0 {
        format!(
            "**0 failed requests and 0 failed changes; p99 {:.2} ms; resident memory {growth} over the soak.**",
            f("p99_ms")
        )
    } else {
        format!(
            "**{failed} failed requests and {change_failures} failed changes** (p99 {:.2} ms; memory {growth}).",
            f("p99_ms")
        )
    };
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let profile = if cfg!(debug_assertions) {
        "debug build; dependencies and recforge-infer optimised"
    } else {
        "release build"
    };
    let table = format!(
        "# HTTP soak\n\n`recforge bench http --soak{}` ({profile}, {cores} CPU cores shared by server and clients). \
One `recforge-serve` process ({} worker threads, journal in `state_dir`) serves {}; `recforge-serve load` \
({} client threads) sends `POST /v1/hm/recommend {{\"customer_id\", \"k\": 12}}` open loop at {:.0} requests/s for {:.0} s \
while four more threads send live changes through the admin routes, each journaled and fsync'd before it returns. \
Server start: {:.1} s.\n\n\
| requests | achieved req/s | ok | failed | p50 ms | p90 ms | p99 ms | max ms |\n|---:|---:|---:|---:|---:|---:|---:|---:|\n\
| {} | {:.1} | {} | {} | {:.2} | {:.2} | {:.2} | {:.2} |\n\n\
| change | sent | failed |\n|---|---:|---:|\n{changes}\n\
| server resident memory | MiB |\n|---|---:|\n| after warm-up | {} |\n| peak (sampled each second) | {:.0} |\n| after the soak | {} |\n\n\
Resident memory during the soak, every 10 s:\n\n| s | MiB |\n|---:|---:|\n{timeline}\n{verdict}\n",
        if s.ranking { " --ranking" } else { "" },
        s.workers,
        s.what,
        s.threads,
        s.rate,
        s.seconds,
        s.startup_s,
        f("sent"),
        f("rate"),
        f("ok"),
        failed,
        f("p50_ms"),
        f("p90_ms"),
        f("p99_ms"),
        f("max_ms"),
        mem(before),
        peak,
        mem(after),
    );
    recforge::util::fsutil::write_atomic(s.out, table.as_bytes())?;
    println!("{table}\nwritten to {}", s.out.display());
    Ok(())
}
