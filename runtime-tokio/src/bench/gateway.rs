//! `hypergate bench gateway`: worker direct vs gateway forwarding vs gateway replica mode,
//! side by side, several runs, medians, one markdown table.
//!
//! Contract — one run, on a fresh [`Topology`] each time (so runs do not inherit each other's
//! data, leases or rotations):
//! 1. seed the relay with `seed_events` events through the worker, and wait until the
//!    gateway has mirrored them;
//! 2. REQ at the worker directly, then through the gateway (forwarding);
//! 3. EVENT at the worker directly, then through the gateway; before each measurement the
//!    mirror is allowed to catch up, so the previous phase's mirroring does not run under it;
//! 4. SIGKILL the worker, publish probe events until one is accepted (replica mode and a lease
//!    from the escrow, whose liveness timeout is short), then REQ and EVENT at the gateway in
//!    replica mode (EVENT: verified, appended durably under the lease).
//!
//! Medians are taken per figure over the runs. Throughput ratios are forwarding / direct.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use serde::Serialize;

use super::events::EventPool;
use super::load::{self, LoadConfig, LoadReport, Workload};
use super::stats::median;
use super::topology::{Topology, TopologyOptions};

/// Padding of each benchmark event's content (≈ 450-byte frames).
const CONTENT_BYTES: usize = 200;

/// The REQ every REQ phase sends.
pub const REQ_FILTER: &str = r#"{"kinds":[1],"limit":10}"#;

/// Longest wait for the mirror to catch up between phases (a guard, not a measurement).
const SETTLE_LIMIT: Duration = Duration::from_secs(180);

/// How to run the side-by-side benchmark.
#[derive(Debug, Clone)]
pub struct GatewayBenchOptions {
    /// Fresh topologies to measure.
    pub runs: usize,
    /// Connections, warmup, duration and timeout of every phase (`url` is set per phase).
    pub load: LoadConfig,
    /// Events stored before measuring.
    pub seed_events: usize,
    /// Events signed per EVENT phase (the phase ends early if they run out).
    pub pool: usize,
    /// How to start the topology.
    pub topology: TopologyOptions,
}

/// One run's figures.
#[derive(Debug, Clone, Serialize)]
pub struct RunFigures {
    /// REQ at the worker.
    pub direct_req: LoadReport,
    /// REQ through the gateway, forwarded.
    pub forward_req: LoadReport,
    /// EVENT at the worker.
    pub direct_event: LoadReport,
    /// EVENT through the gateway, forwarded.
    pub forward_event: LoadReport,
    /// REQ at the gateway with the worker dead (served from the mirror).
    pub replica_req: LoadReport,
    /// EVENT at the gateway with the worker dead (under a lease).
    pub replica_event: LoadReport,
    /// From the SIGKILL to the first accepted write, in milliseconds.
    pub lease_after_ms: u64,
}

/// Runs the benchmark; the markdown table (or JSON) goes to stdout, progress to stderr.
pub async fn run(options: &GatewayBenchOptions, json: bool) -> anyhow::Result<()> {
    let mut runs = Vec::with_capacity(options.runs);
    for run in 1..=options.runs {
        eprintln!("bench: run {run}/{}", options.runs);
        runs.push(one_run(run, options).await?);
    }
    if json {
        let report = serde_json::json!({
            "connections": options.load.connections,
            "warmupSecs": options.load.warmup.as_secs_f64(),
            "durationSecs": options.load.duration.as_secs_f64(),
            "seedEvents": options.seed_events,
            "runs": runs,
            "medians": Rows::of(&runs),
        });
        println!("{report}");
    } else {
        print!("{}", markdown(options, &runs));
    }
    Ok(())
}

pub(crate) async fn one_run(
    run: usize,
    options: &GatewayBenchOptions,
) -> anyhow::Result<RunFigures> {
    let mut topology = Topology::start(&options.topology).await?;
    let worker = topology.worker_url();
    let gateway = topology.gateway_url();
    let req = Workload::req(REQ_FILTER)?;

    // 1. Seed through the worker, as fast as it takes them, then let the mirror catch up.
    let seed = sign(&format!("seed-{run}"), options.seed_events).await?;
    let seeded = load::run(
        &LoadConfig {
            url: worker.clone(),
            warmup: Duration::ZERO,
            duration: SETTLE_LIMIT,
            progress: Some(format!("run {run} seed")),
            ..options.load.clone()
        },
        &Workload::Event(seed),
    )
    .await?;
    if seeded.completed_total < options.seed_events as u64 {
        bail!(
            "seeding stored {} of {} events (first error: {:?})",
            seeded.completed_total,
            options.seed_events,
            seeded.first_error
        );
    }
    let mut written = seeded.completed_total;
    settle(&topology, written).await;

    // 2. and 3. Direct vs forwarded.
    let phase = |url: &str, name: &str| LoadConfig {
        url: url.to_owned(),
        progress: Some(format!("run {run} {name}")),
        ..options.load.clone()
    };
    let direct_req = load::run(&phase(&worker, "REQ worker"), &req).await?;
    let forward_req = load::run(&phase(&gateway, "REQ gateway→worker"), &req).await?;
    let pool = sign(&format!("direct-{run}"), options.pool).await?;
    let direct_event = load::run(&phase(&worker, "EVENT worker"), &Workload::Event(pool)).await?;
    written += direct_event.completed_total;
    settle(&topology, written).await;
    let pool = sign(&format!("forward-{run}"), options.pool).await?;
    let forward_event = load::run(
        &phase(&gateway, "EVENT gateway→worker"),
        &Workload::Event(pool),
    )
    .await?;
    written += forward_event.completed_total;
    settle(&topology, written).await;

    // 4. The worker dies; wait for a leased write, then measure replica mode.
    let probes = sign(&format!("probe-{run}"), 2_000).await?;
    let replica_pool = sign(&format!("replica-{run}"), options.pool).await?;
    topology.kill_worker();
    eprintln!("bench: run {run}: worker killed, waiting for a lease");
    let lease_after = load::publish_until_accepted(
        &gateway,
        &probes,
        Duration::from_millis(100),
        Duration::from_secs(60),
    )
    .await
    .with_context(|| {
        format!(
            "no write was accepted within 60 s of killing the worker{}",
            topology.gateway_log_tail()
        )
    })?;
    let replica_req = load::run(&phase(&gateway, "REQ gateway replica"), &req).await?;
    let replica_event = load::run(
        &phase(&gateway, "EVENT gateway lease"),
        &Workload::Event(replica_pool),
    )
    .await?;
    topology.shutdown().await;
    Ok(RunFigures {
        direct_req,
        forward_req,
        direct_event,
        forward_event,
        replica_req,
        replica_event,
        lease_after_ms: u64::try_from(lease_after.as_millis()).unwrap_or(u64::MAX),
    })
}

/// Signs a pool off the async threads (signing is client cost, paid before the clock runs).
pub(crate) async fn sign(label: &str, count: usize) -> anyhow::Result<Arc<EventPool>> {
    let label = label.to_owned();
    let created_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .context("the clock is before 1970")?
        .as_secs();
    let pool = tokio::task::spawn_blocking(move || {
        EventPool::sign(&label, count, created_at, CONTENT_BYTES)
    })
    .await
    .context("the signing thread failed")??;
    Ok(Arc::new(pool))
}

/// Waits for the mirror to hold `written` events; warns (and goes on) if it does not.
pub(crate) async fn settle(topology: &Topology, written: u64) {
    if !topology.wait_mirrored(written, SETTLE_LIMIT).await {
        eprintln!(
            "bench: warning: the mirror did not reach {written} blocks with no lag within {} s; \
             the next phase runs with mirroring in the background",
            SETTLE_LIMIT.as_secs()
        );
    }
}

/// Median figures of one target.
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(rename_all = "camelCase")]
struct Row {
    event_per_second: Option<f64>,
    event_p50_us: Option<f64>,
    event_p99_us: Option<f64>,
    req_per_second: Option<f64>,
    req_p50_us: Option<f64>,
    req_p99_us: Option<f64>,
    errors: u64,
}

/// The three rows and the ratios, as medians over the runs.
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(rename_all = "camelCase")]
struct Rows {
    worker_direct: Row,
    gateway_forwarding: Row,
    gateway_replica: Row,
    forwarding_over_direct_event: Option<f64>,
    forwarding_over_direct_req: Option<f64>,
    lease_after_ms: Option<f64>,
}

impl Rows {
    fn of(runs: &[RunFigures]) -> Rows {
        let row = |event: fn(&RunFigures) -> &LoadReport, req: fn(&RunFigures) -> &LoadReport| {
            let figure = |pick: fn(&RunFigures) -> &LoadReport, value: fn(&LoadReport) -> f64| {
                median(&runs.iter().map(|r| value(pick(r))).collect::<Vec<_>>())
            };
            let p50 = |report: &LoadReport| report.latency.map_or(f64::NAN, |l| l.p50_us as f64);
            let p99 = |report: &LoadReport| report.latency.map_or(f64::NAN, |l| l.p99_us as f64);
            Row {
                event_per_second: figure(event, |r| r.per_second),
                event_p50_us: figure(event, p50),
                event_p99_us: figure(event, p99),
                req_per_second: figure(req, |r| r.per_second),
                req_p50_us: figure(req, p50),
                req_p99_us: figure(req, p99),
                errors: runs.iter().map(|r| event(r).errors + req(r).errors).sum(),
            }
        };
        let ratio = |forward: fn(&RunFigures) -> &LoadReport,
                     direct: fn(&RunFigures) -> &LoadReport| {
            median(
                &runs
                    .iter()
                    .map(|r| forward(r).per_second / direct(r).per_second)
                    .collect::<Vec<_>>(),
            )
        };
        Rows {
            worker_direct: row(|r| &r.direct_event, |r| &r.direct_req),
            gateway_forwarding: row(|r| &r.forward_event, |r| &r.forward_req),
            gateway_replica: row(|r| &r.replica_event, |r| &r.replica_req),
            forwarding_over_direct_event: ratio(|r| &r.forward_event, |r| &r.direct_event),
            forwarding_over_direct_req: ratio(|r| &r.forward_req, |r| &r.direct_req),
            lease_after_ms: median(
                &runs
                    .iter()
                    .map(|r| r.lease_after_ms as f64)
                    .collect::<Vec<_>>(),
            ),
        }
    }
}

fn markdown(options: &GatewayBenchOptions, runs: &[RunFigures]) -> String {
    use std::fmt::Write as _;
    let rows = Rows::of(runs);
    let number = |value: Option<f64>| value.map_or("–".to_owned(), |v| format!("{v:.0}"));
    let percent =
        |value: Option<f64>| value.map_or("–".to_owned(), |v| format!("{:.0} %", v * 100.0));
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Medians of {} runs; {} connections, one request in flight each; {:.0} s warmup + \
         {:.0} s measured per phase; relay seeded with {} events; REQ = `{REQ_FILTER}`.\n",
        runs.len(),
        options.load.connections,
        options.load.warmup.as_secs_f64(),
        options.load.duration.as_secs_f64(),
        options.seed_events,
    );
    let _ = writeln!(
        out,
        "| target | EVENT/s | EVENT p50 (µs) | EVENT p99 (µs) | REQ/s | REQ p50 (µs) | REQ p99 (µs) | errors |"
    );
    let _ = writeln!(out, "| --- | --- | --- | --- | --- | --- | --- | --- |");
    for (name, row) in [
        ("worker direct", rows.worker_direct),
        ("gateway → worker (forwarding)", rows.gateway_forwarding),
        ("gateway replica (EVENT under lease)", rows.gateway_replica),
    ] {
        let _ = writeln!(
            out,
            "| {name} | {} | {} | {} | {} | {} | {} | {} |",
            number(row.event_per_second),
            number(row.event_p50_us),
            number(row.event_p99_us),
            number(row.req_per_second),
            number(row.req_p50_us),
            number(row.req_p99_us),
            row.errors,
        );
    }
    let _ = writeln!(
        out,
        "\nForwarding / direct throughput: EVENT {}, REQ {}. First leased write {} ms after the \
         SIGKILL (median).\n",
        percent(rows.forwarding_over_direct_event),
        percent(rows.forwarding_over_direct_req),
        number(rows.lease_after_ms),
    );
    let _ = writeln!(out, "Per run (requests/s):\n");
    for (index, run) in runs.iter().enumerate() {
        let _ = writeln!(
            out,
            "- run {}: EVENT direct {:.0} / forwarded {:.0} / leased {:.0}; REQ direct {:.0} / \
             forwarded {:.0} / replica {:.0}; events per REQ {:.1} / {:.1} / {:.1}",
            index + 1,
            run.direct_event.per_second,
            run.forward_event.per_second,
            run.replica_event.per_second,
            run.direct_req.per_second,
            run.forward_req.per_second,
            run.replica_req.per_second,
            run.direct_req.events_per_req,
            run.forward_req.events_per_req,
            run.replica_req.events_per_req,
        );
    }
    for run in runs {
        for report in [
            &run.direct_event,
            &run.forward_event,
            &run.replica_event,
            &run.direct_req,
            &run.forward_req,
            &run.replica_req,
        ] {
            if let Some(error) = &report.first_error {
                let _ = writeln!(out, "- first {} error: {error}", report.verb);
            }
            if report.pool_exhausted {
                let _ = writeln!(
                    out,
                    "- an EVENT phase used up its pool of {} events before the window ended",
                    options.pool
                );
            }
        }
    }
    out
}
