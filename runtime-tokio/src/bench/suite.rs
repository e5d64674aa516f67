//! `hypergate bench suite`: issue 8's side-by-side benchmark in one run.
//!
//! Contract — in this order, on one machine, one thing at a time:
//! 1. the single-core Schnorr ceiling ([`super::schnorr`]);
//! 2. the loopback ceiling ([`super::echo`], a child process) and, if a binary is given, the
//!    reference relay ([`super::servers::ReferenceRelay`]): per run a fresh server, seeded with
//!    `seed_events` events (not for the echo, which stores nothing), then REQ and EVENT with the
//!    same load shape as every gateway phase;
//! 3. for every gateway in [`SuiteOptions::gateways`] (today: the tokio gateway; another runtime
//!    slots in as `--gateway NAME=BINARY` plus `--gateway-arg NAME=ARG`): `runs` runs of
//!    [`super::gateway`] (worker direct, forwarding, replica mode with EVENT under a lease), the
//!    idle-connection memory per count ([`super::idle`], a fresh topology per count, forwarding
//!    mode: the worker alive, sessions routed to it), and `failover_trials` failover trials
//!    ([`super::failover`]).
//! - The result is rendered by [`super::report`] as markdown (stdout) and, if asked, written
//!   into a marked block of `docs/benchmarks.md`. Progress goes to stderr. Nothing asserts.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use serde::Serialize;

use super::events::EventPool;
use super::failover::{self, FailoverTrial};
use super::gateway::{self, GatewayBenchOptions, REQ_FILTER, RunFigures};
use super::idle::{self, IdleReport};
use super::load::{self, LoadConfig, LoadReport, Workload};
use super::schnorr::{self, SchnorrCeiling};
use super::servers::{EchoServer, ReferenceRelay};
use super::topology::{Topology, TopologyOptions};

/// Events signed per echo EVENT phase: more than one run can use at the echo's rate is not
/// needed, because a pool that runs dry ends the window at the last answer (the rate stays
/// exact, over a shorter window).
const ECHO_POOL: usize = 150_000;

/// One gateway build to measure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewaySpec {
    /// Its column name (`tokio`, `glommio`, …).
    pub name: String,
    /// Its binary; `None`: the worker's binary (this one).
    pub binary: Option<PathBuf>,
    /// Extra `gateway` arguments.
    pub args: Vec<String>,
}

impl GatewaySpec {
    /// Parses `NAME` or `NAME=BINARY`.
    pub fn parse(spec: &str) -> anyhow::Result<GatewaySpec> {
        let (name, binary) = match spec.split_once('=') {
            Some((name, binary)) if !binary.is_empty() => (name, Some(PathBuf::from(binary))),
            Some((name, _)) => (name, None),
            None => (spec, None),
        };
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
            bail!("--gateway {spec:?}: the name must be letters, digits or '-'");
        }
        Ok(GatewaySpec {
            name: name.to_owned(),
            binary,
            args: Vec::new(),
        })
    }

    /// Attaches `NAME=ARG` arguments to the gateways they name.
    pub fn attach_args(gateways: &mut [GatewaySpec], args: &[String]) -> anyhow::Result<()> {
        for arg in args {
            let Some((name, value)) = arg.split_once('=') else {
                bail!("--gateway-arg {arg:?}: expected NAME=ARG");
            };
            let Some(gateway) = gateways.iter_mut().find(|g| g.name == name) else {
                bail!("--gateway-arg {arg:?}: no --gateway named {name:?}");
            };
            gateway.args.push(value.to_owned());
        }
        Ok(())
    }
}

/// How to run the suite.
#[derive(Debug, Clone)]
pub struct SuiteOptions {
    /// Runs per throughput figure (medians are taken over them).
    pub runs: usize,
    /// The load shape of every throughput phase (`url` is set per phase).
    pub load: LoadConfig,
    /// Events stored before REQ phases.
    pub seed_events: usize,
    /// Events signed per gateway or reference EVENT phase.
    pub pool: usize,
    /// The gateways to measure.
    pub gateways: Vec<GatewaySpec>,
    /// This binary: the worker, the echo server, and the default gateway.
    pub binary: PathBuf,
    /// nostr-rs-relay's binary; `None`: no reference column.
    pub reference_relay: Option<PathBuf>,
    /// Idle-connection counts to measure.
    pub idle_counts: Vec<usize>,
    /// Failover trials per gateway.
    pub failover_trials: usize,
    /// The escrow's peer liveness timeout in every topology.
    pub liveness_timeout: Duration,
    /// Events verified for the Schnorr ceiling.
    pub schnorr_events: usize,
}

/// Two load phases of a plain server (echo or reference relay), one per run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ServerRuns {
    /// EVENT publish-and-wait-OK, per run.
    pub event: Vec<LoadReport>,
    /// REQ until EOSE, per run.
    pub req: Vec<LoadReport>,
}

/// Everything measured for one gateway.
#[derive(Debug, Clone, Serialize)]
pub struct GatewayResults {
    /// Its name.
    pub name: String,
    /// The arguments it ran with.
    pub args: Vec<String>,
    /// Direct / forwarding / replica per run.
    pub runs: Vec<RunFigures>,
    /// Idle-connection memory per count.
    pub idle: Vec<IdleReport>,
    /// Failover trials.
    pub failover: Vec<FailoverTrial>,
    /// Failover trials that failed, with why.
    pub failover_errors: Vec<String>,
}

/// The whole suite's figures.
#[derive(Debug, Clone, Serialize)]
pub struct SuiteResults {
    /// The Schnorr ceiling.
    pub schnorr: SchnorrCeiling,
    /// The loopback ceiling.
    pub echo: ServerRuns,
    /// The reference relay, if measured.
    pub reference: Option<ServerRuns>,
    /// Per gateway.
    pub gateways: Vec<GatewayResults>,
    /// `/proc/loadavg` when the suite started and ended.
    pub load_average: (String, String),
}

/// Runs the suite.
pub async fn run(options: &SuiteOptions) -> anyhow::Result<SuiteResults> {
    let load_before = load_average();
    eprintln!(
        "bench suite: Schnorr ceiling ({} events, one core)",
        options.schnorr_events
    );
    let count = options.schnorr_events;
    let schnorr = tokio::task::spawn_blocking(move || schnorr::measure(count))
        .await
        .context("the Schnorr thread failed")??;

    let mut echo = ServerRuns::default();
    for run in 1..=options.runs {
        let server = EchoServer::start(&options.binary).await?;
        let label = format!("echo {run}");
        let (event, req) = server_phases(options, server.url(), &label, ECHO_POOL, 0).await?;
        echo.event.push(event);
        echo.req.push(req);
    }

    let mut reference = None;
    if let Some(binary) = &options.reference_relay {
        let mut runs = ServerRuns::default();
        for run in 1..=options.runs {
            let relay = ReferenceRelay::start(binary).await?;
            let label = format!("reference {run}");
            let (event, req) = server_phases(
                options,
                relay.url(),
                &label,
                options.pool,
                options.seed_events,
            )
            .await?;
            runs.event.push(event);
            runs.req.push(req);
        }
        reference = Some(runs);
    }

    let mut gateways = Vec::with_capacity(options.gateways.len());
    for spec in &options.gateways {
        gateways.push(measure_gateway(options, spec).await?);
    }
    Ok(SuiteResults {
        schnorr,
        echo,
        reference,
        gateways,
        load_average: (load_before, load_average()),
    })
}

/// Seeds (if asked), then REQ and EVENT at `url` with the suite's load shape.
async fn server_phases(
    options: &SuiteOptions,
    url: &str,
    label: &str,
    pool: usize,
    seed: usize,
) -> anyhow::Result<(LoadReport, LoadReport)> {
    let tag = label.replace(' ', "-");
    if seed > 0 {
        let events = gateway::sign(&format!("seed-{tag}"), seed).await?;
        let seeded = load::run(
            &LoadConfig {
                url: url.to_owned(),
                warmup: Duration::ZERO,
                duration: Duration::from_secs(180),
                progress: Some(format!("{label} seed")),
                ..options.load.clone()
            },
            &Workload::Event(events),
        )
        .await?;
        if seeded.completed_total < seed as u64 {
            bail!(
                "{label}: seeding stored {} of {seed} events (first error: {:?})",
                seeded.completed_total,
                seeded.first_error
            );
        }
    }
    let phase = |verb: &str| LoadConfig {
        url: url.to_owned(),
        progress: Some(format!("{label} {verb}")),
        ..options.load.clone()
    };
    let req = load::run(&phase("REQ"), &Workload::req(REQ_FILTER)?).await?;
    let created_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .context("the clock is before 1970")?
        .as_secs();
    let label = format!("event-{tag}");
    let events = tokio::task::spawn_blocking(move || {
        EventPool::sign_parallel(&label, pool, created_at, 200, 2)
    })
    .await
    .context("the signing threads failed")??;
    let event = load::run(&phase("EVENT"), &Workload::Event(Arc::new(events))).await?;
    Ok((event, req))
}

async fn measure_gateway(
    options: &SuiteOptions,
    spec: &GatewaySpec,
) -> anyhow::Result<GatewayResults> {
    let topology = TopologyOptions {
        binary: options.binary.clone(),
        gateway_binary: spec.binary.clone(),
        gateway_args: spec.args.clone(),
        liveness_timeout: options.liveness_timeout,
        keep_dir: false,
    };
    let bench = GatewayBenchOptions {
        runs: options.runs,
        load: options.load.clone(),
        seed_events: options.seed_events,
        pool: options.pool,
        topology: topology.clone(),
    };
    let mut runs = Vec::with_capacity(options.runs);
    for run in 1..=options.runs {
        eprintln!(
            "bench suite: gateway {} run {run}/{}",
            spec.name, options.runs
        );
        runs.push(gateway::one_run(run, &bench).await?);
    }

    let mut idle = Vec::with_capacity(options.idle_counts.len());
    for &count in &options.idle_counts {
        eprintln!(
            "bench suite: gateway {}: {count} idle connections",
            spec.name
        );
        let topology = Topology::start(&topology).await?;
        idle.push(idle::hold_idle(&topology.gateway_url(), topology.gateway_pid(), count).await?);
        topology.shutdown().await;
    }

    let mut failover = Vec::with_capacity(options.failover_trials);
    let mut failover_errors = Vec::new();
    for trial in 1..=options.failover_trials {
        eprintln!(
            "bench suite: gateway {}: failover trial {trial}/{}",
            spec.name, options.failover_trials
        );
        match failover::trial(&format!("failover-{trial}"), &topology).await {
            Ok(outcome) => failover.push(outcome),
            Err(error) => {
                eprintln!("bench suite: failover trial {trial} failed: {error:#}");
                failover_errors.push(format!("{error:#}"));
            }
        }
    }
    Ok(GatewayResults {
        name: spec.name.clone(),
        args: spec.args.clone(),
        runs,
        idle,
        failover,
        failover_errors,
    })
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|text| {
            let fields: Vec<&str> = text.split_whitespace().take(3).collect();
            (fields.len() == 3).then(|| fields.join(" "))
        })
        .unwrap_or_else(|| "unknown".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gateway_specs_name_a_binary_optionally_and_collect_their_args() {
        let mut gateways = vec![
            GatewaySpec::parse("tokio").unwrap(),
            GatewaySpec::parse("glommio=target/release/hypergate-glommio").unwrap(),
        ];
        assert_eq!(gateways[0].binary, None);
        assert_eq!(
            gateways[1].binary,
            Some(PathBuf::from("target/release/hypergate-glommio"))
        );
        GatewaySpec::attach_args(
            &mut gateways,
            &["glommio=--runtime".into(), "glommio=glommio".into()],
        )
        .unwrap();
        assert!(gateways[0].args.is_empty());
        assert_eq!(gateways[1].args, ["--runtime", "glommio"]);
        assert!(GatewaySpec::attach_args(&mut gateways, &["other=x".into()]).is_err());
        assert!(GatewaySpec::attach_args(&mut gateways, &["no-equals".into()]).is_err());
        assert!(GatewaySpec::parse("").is_err());
        assert!(GatewaySpec::parse("bad name=x").is_err());
    }
}
