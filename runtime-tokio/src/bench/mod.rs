//! `hypergate bench`: a NIP-01 load generator, and the gateway benchmark built on it.
//!
//! Contract:
//! - A benchmark, never a test: it measures and prints; nothing asserts on time.
//! - `hypergate bench event|req --url ws://…` loads any NIP-01 relay ([`load`]): N connections,
//!   one request in flight on each, a warmup that is not measured, then requests/s, p50 and p99
//!   in µs and the error count; `--json` prints one object for scripts; progress goes to
//!   stderr. Events are signed before the clock starts ([`events`]).
//! - `hypergate bench gateway` ([`gateway`]) builds the whole topology on loopback
//!   ([`topology`]: escrow with mTLS in this process, `hypergate gateway` and
//!   `hypergate worker run` as children) and measures the worker directly, the gateway
//!   forwarding to it, and the gateway in replica mode after the worker is SIGKILLed (EVENT
//!   under a lease), over several fresh runs; it prints a markdown table of medians.
//! - The pieces are public so that other gateways (another runtime, a reference relay) can be
//!   loaded the same way: [`load::run`] takes any URL, and [`topology::TopologyOptions`] takes
//!   extra `hypergate gateway` arguments.

pub mod events;
pub mod gateway;
pub mod load;
pub mod stats;
pub mod topology;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Subcommand};

/// `hypergate bench …`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    command: BenchCommand,
}

#[derive(Debug, Subcommand)]
enum BenchCommand {
    /// Publish-and-wait-OK: each request is a freshly signed kind-1 event.
    Event {
        /// The relay's WebSocket URL.
        #[arg(long)]
        url: String,
        /// Events signed before the run (the run stops early if they are used up).
        #[arg(long, default_value_t = 20_000)]
        pool: usize,
        #[command(flatten)]
        load: LoadArgs,
    },
    /// `["REQ", id, filter]`, wait for EOSE, `CLOSE`, repeat.
    Req {
        /// The relay's WebSocket URL.
        #[arg(long)]
        url: String,
        /// The filter of every REQ.
        #[arg(long, default_value = gateway::REQ_FILTER)]
        filter: String,
        #[command(flatten)]
        load: LoadArgs,
    },
    /// Worker direct vs gateway forwarding vs gateway replica mode, on a fresh loopback
    /// topology per run (escrow with mTLS, gateway, worker child killed with SIGKILL); prints
    /// a markdown table of medians.
    Gateway {
        /// Fresh topologies to measure.
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// Events stored through the worker before measuring.
        #[arg(long, default_value_t = 1_000)]
        seed_events: usize,
        /// Events signed per EVENT phase.
        #[arg(long, default_value_t = 20_000)]
        pool: usize,
        /// The escrow's peer liveness timeout, in seconds.
        #[arg(long, default_value_t = 1.0)]
        liveness_timeout: f64,
        /// An extra argument for `hypergate gateway`; repeat for more.
        #[arg(long = "gateway-arg", allow_hyphen_values = true)]
        gateway_args: Vec<String>,
        /// The `hypergate` binary for the gateway and worker (default: this one).
        #[arg(long)]
        binary: Option<PathBuf>,
        /// Keep the temp directory and the children's logs.
        #[arg(long)]
        keep_dir: bool,
        #[command(flatten)]
        load: LoadArgs,
    },
}

/// The load shape shared by every subcommand.
#[derive(Debug, Args)]
struct LoadArgs {
    /// Parallel connections, one request in flight on each.
    #[arg(long, default_value_t = 8)]
    connections: usize,
    /// Measured seconds.
    #[arg(long, default_value_t = 5.0)]
    duration: f64,
    /// Unmeasured seconds before.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Seconds to wait for one answer before counting an error and reconnecting.
    #[arg(long, default_value_t = 10.0)]
    timeout: f64,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

impl LoadArgs {
    fn config(&self, url: String, progress: Option<String>) -> anyhow::Result<load::LoadConfig> {
        Ok(load::LoadConfig {
            url,
            connections: self.connections,
            warmup: seconds("--warmup", self.warmup)?,
            duration: seconds("--duration", self.duration)?,
            request_timeout: seconds("--timeout", self.timeout)?,
            progress,
        })
    }
}

fn seconds(flag: &str, value: f64) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(value)
        .map_err(|e| anyhow::anyhow!("{flag} {value}: not a number of seconds ({e})"))
}

/// Runs `hypergate bench …`.
pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    match args.command {
        BenchCommand::Event { url, pool, load } => {
            let created_at = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .context("the clock is before 1970")?
                .as_secs();
            eprintln!("bench: signing {pool} events");
            let label = format!("cli-{created_at}");
            let events = tokio::task::spawn_blocking(move || {
                events::EventPool::sign(&label, pool, created_at, 200)
            })
            .await
            .context("the signing thread failed")??;
            let config = load.config(url, Some("EVENT".into()))?;
            let report = load::run(&config, &load::Workload::Event(Arc::new(events))).await?;
            print_report(&config, &report, load.json);
        }
        BenchCommand::Req { url, filter, load } => {
            let config = load.config(url, Some("REQ".into()))?;
            let report = load::run(&config, &load::Workload::req(&filter)?).await?;
            print_report(&config, &report, load.json);
        }
        BenchCommand::Gateway {
            runs,
            seed_events,
            pool,
            liveness_timeout,
            gateway_args,
            binary,
            keep_dir,
            load,
        } => {
            let binary = match binary {
                Some(binary) => binary,
                None => std::env::current_exe().context("locating this binary")?,
            };
            let options = gateway::GatewayBenchOptions {
                runs: runs.max(1),
                load: load.config(String::new(), None)?,
                seed_events,
                pool,
                topology: topology::TopologyOptions {
                    binary,
                    gateway_args,
                    liveness_timeout: seconds("--liveness-timeout", liveness_timeout)?,
                    keep_dir,
                },
            };
            gateway::run(&options, load.json).await?;
        }
    }
    Ok(())
}

fn print_report(config: &load::LoadConfig, report: &load::LoadReport, json: bool) {
    if json {
        println!(
            "{}",
            serde_json::json!({ "url": config.url, "report": report })
        );
        return;
    }
    let (p50, p99) = report
        .latency
        .map_or(("–".to_owned(), "–".to_owned()), |l| {
            (l.p50_us.to_string(), l.p99_us.to_string())
        });
    println!(
        "{} {}: {:.0} requests/s, p50 {p50} µs, p99 {p99} µs, {} errors ({} connections, {:.1} s)",
        report.verb,
        config.url,
        report.per_second,
        report.errors,
        report.connections,
        report.elapsed_secs,
    );
    if report.verb == "REQ" {
        println!("events per REQ: {:.1}", report.events_per_req);
    }
    if let Some(error) = &report.first_error {
        println!("first error: {error}");
    }
    if report.pool_exhausted {
        println!("the event pool ran out before the window ended (raise --pool)");
    }
}
