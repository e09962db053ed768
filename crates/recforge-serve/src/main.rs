//! `recforge-serve serve --config serve.toml` runs the server;
//! `recforge-serve load ...` is the load generator used by the benchmark.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use recforge_serve::load::{self, LoadConfig};

// Why not the system allocator: see mimalloc's line in Cargo.toml.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(version, about = "HTTP recommendation server for recforge bundles")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Serve every tenant of a config file until SIGTERM or Ctrl-C, then
    /// finish the requests in flight and exit.
    Serve {
        /// The server's TOML config (tenants, bundles, limits, timeouts).
        #[arg(long)]
        config: PathBuf,
    },
    /// Send POST requests at a fixed rate and report latency percentiles.
    Load {
        #[arg(long)]
        url: String,
        /// Request bodies, one JSON document per line, used in turn.
        #[arg(long)]
        bodies: PathBuf,
        #[arg(long, default_value_t = 500.0)]
        rate: f64,
        #[arg(long, default_value_t = 20.0)]
        seconds: f64,
        #[arg(long, default_value_t = 32)]
        threads: usize,
        /// Soak: send live changes beside the requests (sold-out marks,
        /// purchase events, new articles, reloads) with this admin token.
        #[arg(long)]
        churn_token: Option<String>,
        /// Soak: article ids to mark and buy, one per line.
        #[arg(long)]
        churn_articles: Option<PathBuf>,
        /// Soak: send no new articles.
        #[arg(long)]
        churn_no_items: bool,
    },
}

fn main() -> Result<()> {
    match Cli::parse().cmd {
        Cmd::Serve { config } => {
            let cfg = recforge_serve::Config::load(&config)?;
            let server = recforge_serve::start(cfg)?;
            // After start: a signal while the bundles load still ends the
            // process at once.
            let signals = recforge_serve::StopSignals::install()?;
            eprintln!(
                "recforge-serve: listening on http://{} (tenants: {})",
                server.addr,
                server
                    .app
                    .tenants
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            signals.stop_on_signal(server);
            eprintln!("recforge-serve: stopped");
        }
        Cmd::Load {
            url,
            bodies,
            rate,
            seconds,
            threads,
            churn_token,
            churn_articles,
            churn_no_items,
        } => {
            let text = std::fs::read_to_string(&bodies)
                .with_context(|| format!("reading {}", bodies.display()))?;
            let bodies: Vec<String> = text
                .lines()
                .filter(|l| !l.trim().is_empty())
                .map(str::to_string)
                .collect();
            let churn = match (churn_token, churn_articles) {
                (Some(token), Some(path)) => {
                    let text = std::fs::read_to_string(&path)
                        .with_context(|| format!("reading {}", path.display()))?;
                    let articles: Vec<String> = text
                        .lines()
                        .map(str::trim)
                        .filter(|l| !l.is_empty())
                        .map(str::to_string)
                        .collect();
                    let customers: Vec<String> = bodies
                        .iter()
                        .filter_map(|b| {
                            let v: serde_json::Value = serde_json::from_str(b).ok()?;
                            Some(v["customer_id"].as_str()?.to_string())
                        })
                        .collect();
                    anyhow::ensure!(
                        !articles.is_empty() && !customers.is_empty(),
                        "a soak needs article ids and bodies with customer ids"
                    );
                    let tenant_url = url
                        .strip_suffix("/recommend")
                        .context("a soak's --url ends in /recommend")?
                        .to_string();
                    Some(load::Churn {
                        tenant_url,
                        token,
                        articles,
                        customers,
                        availability_per_s: 10.0,
                        events_per_s: 20.0,
                        items_per_s: if churn_no_items { 0.0 } else { 1.0 },
                        reload_every_s: 15.0,
                    })
                }
                (None, None) => None,
                _ => anyhow::bail!("a soak needs both --churn-token and --churn-articles"),
            };
            let r = load::run(&LoadConfig {
                url,
                rate,
                seconds,
                threads,
                bodies,
                churn,
            })?;
            // One machine-readable line for the benchmark that drives this.
            let mut line = serde_json::json!({
                "sent": r.sent,
                "ok": r.ok,
                "failed": r.failed,
                "wall_s": r.wall_s,
                "rate": r.achieved_rate(),
                "p50_ms": r.p50_ms,
                "p90_ms": r.p90_ms,
                "p99_ms": r.p99_ms,
                "max_ms": r.max_ms,
            });
            if let Some(c) = &r.churn {
                for (name, n) in [
                    ("availability", &c.availability),
                    ("events", &c.events),
                    ("items", &c.items),
                    ("reloads", &c.reloads),
                ] {
                    line["churn"][name] = serde_json::json!({"sent": n.sent, "failed": n.failed});
                }
            }
            println!("{line}");
        }
    }
    Ok(())
}
