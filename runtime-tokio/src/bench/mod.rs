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
//! - `hypergate bench suite` ([`suite`], run by `scripts/bench`) is issue 8's side-by-side run:
//!   the Schnorr ceiling ([`schnorr`]), the loopback ceiling ([`echo`], served by the hidden
//!   `hypergate bench echo`), the reference relay ([`servers`]), and per gateway build the
//!   `bench gateway` phases, idle-connection memory ([`idle`]) and failover trials
//!   ([`failover`]); [`report`] renders the tables and writes them into `docs/benchmarks.md`.
//! - The pieces are public so that other gateways (another runtime, a reference relay) can be
//!   loaded the same way: [`load::run`] takes any URL, and [`topology::TopologyOptions`] takes
//!   extra `hypergate gateway` arguments.

pub mod echo;
pub mod events;
pub mod failover;
pub mod gateway;
pub mod idle;
pub mod load;
pub mod report;
pub mod schnorr;
pub mod servers;
pub mod stats;
pub mod suite;
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
    /// Issue 8's side-by-side run: Schnorr ceiling, loopback ceiling, reference relay, and per
    /// gateway build direct / forwarding / replica, idle memory and failover; prints markdown.
    Suite(Box<SuiteArgs>),
    /// The loopback-ceiling server: answers REQ with EOSE and EVENT with OK (for `suite`).
    #[command(hide = true)]
    Echo {
        /// Where to listen.
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: String,
    },
}

/// `hypergate bench suite` arguments.
#[derive(Debug, Args)]
struct SuiteArgs {
    /// Runs per throughput figure (medians are printed).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Events stored before REQ phases.
    #[arg(long, default_value_t = 1_000)]
    seed_events: usize,
    /// Events signed per gateway or reference EVENT phase.
    #[arg(long, default_value_t = 20_000)]
    pool: usize,
    /// The escrow's peer liveness timeout, in seconds.
    #[arg(long, default_value_t = 1.0)]
    liveness_timeout: f64,
    /// A gateway to measure, `NAME` (this binary) or `NAME=BINARY` (started as
    /// `BINARY gateway …`); repeat for more. Default: `tokio`.
    #[arg(long = "gateway")]
    gateways: Vec<String>,
    /// `NAME=ARG`: an extra argument for the gateway NAME; repeat for more.
    #[arg(long = "gateway-arg", allow_hyphen_values = true)]
    gateway_args: Vec<String>,
    /// nostr-rs-relay's binary (`scripts/bench-reference-relay` builds it).
    #[arg(long)]
    reference_relay: Option<PathBuf>,
    /// Idle-connection counts, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1000,10000")]
    idle: Vec<usize>,
    /// Failover trials per gateway.
    #[arg(long, default_value_t = 20)]
    failover_trials: usize,
    /// Events verified for the single-core Schnorr ceiling.
    #[arg(long, default_value_t = 20_000)]
    schnorr_events: usize,
    /// Write the markdown into this file's marked block (e.g. docs/benchmarks.md).
    #[arg(long)]
    write_docs: Option<PathBuf>,
    /// The heading of the written block.
    #[arg(long, default_value = "## Side by side")]
    heading: String,
    /// The command quoted in the markdown (default: this process's arguments).
    #[arg(long)]
    command: Option<String>,
    #[command(flatten)]
    load: LoadArgs,
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
                    gateway_binary: None,
                    gateway_args,
                    liveness_timeout: seconds("--liveness-timeout", liveness_timeout)?,
                    keep_dir,
                },
            };
            gateway::run(&options, load.json).await?;
        }
        BenchCommand::Suite(args) => run_suite(*args).await?,
        BenchCommand::Echo { listen } => echo::serve(&listen).await?,
    }
    Ok(())
}

async fn run_suite(args: SuiteArgs) -> anyhow::Result<()> {
    let binary = std::env::current_exe().context("locating this binary")?;
    let specs = if args.gateways.is_empty() {
        vec!["tokio".to_owned()]
    } else {
        args.gateways.clone()
    };
    let mut gateways = specs
        .iter()
        .map(|spec| suite::GatewaySpec::parse(spec))
        .collect::<anyhow::Result<Vec<_>>>()?;
    suite::GatewaySpec::attach_args(&mut gateways, &args.gateway_args)?;
    let options = suite::SuiteOptions {
        runs: args.runs.max(1),
        load: args.load.config(String::new(), None)?,
        seed_events: args.seed_events,
        pool: args.pool,
        gateways,
        binary,
        reference_relay: args.reference_relay.clone(),
        idle_counts: args.idle.clone(),
        failover_trials: args.failover_trials,
        liveness_timeout: seconds("--liveness-timeout", args.liveness_timeout)?,
        schnorr_events: args.schnorr_events,
    };
    let results = suite::run(&options).await?;
    if args.load.json {
        println!("{}", serde_json::to_string(&results)?);
    }
    let command = args
        .command
        .clone()
        .unwrap_or_else(|| std::env::args().collect::<Vec<_>>().join(" "));
    let markdown = report::markdown(&options, &results, &command);
    if !args.load.json {
        print!("{markdown}");
    }
    if let Some(path) = &args.write_docs {
        let document =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        std::fs::write(
            path,
            report::write_block(&document, &args.heading, &markdown),
        )
        .with_context(|| format!("writing {}", path.display()))?;
        eprintln!("bench suite: wrote the tables into {}", path.display());
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
