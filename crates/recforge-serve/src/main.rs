//! `recforge-serve serve --config serve.toml` runs the server;
//! `recforge-serve load ...` is the load generator used by the benchmark.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use recforge_serve::load::{self, LoadConfig};

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
        } => {
            let text = std::fs::read_to_string(&bodies)
                .with_context(|| format!("reading {}", bodies.display()))?;
            let bodies: Vec<String> = text
                .lines()
                .filter(|l| !l.trim().is_empty())
                .map(str::to_string)
                .collect();
            let r = load::run(&LoadConfig {
                url,
                rate,
                seconds,
                threads,
                bodies,
            })?;
            // One machine-readable line for the benchmark that drives this.
            println!(
                "{{\"sent\":{},\"ok\":{},\"failed\":{},\"wall_s\":{:.3},\"rate\":{:.1},\"p50_ms\":{:.3},\"p90_ms\":{:.3},\"p99_ms\":{:.3},\"max_ms\":{:.3}}}",
                r.sent,
                r.ok,
                r.failed,
                r.wall_s,
                r.achieved_rate(),
                r.p50_ms,
                r.p90_ms,
                r.p99_ms,
                r.max_ms
            );
        }
    }
    Ok(())
}
