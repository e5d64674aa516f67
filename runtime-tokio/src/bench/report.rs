//! The suite's markdown: a throughput table (medians over runs), the ratios issue 8 sets
//! targets for (each marked met or missed: measured, never asserted), idle memory, failover
//! percentiles, and the per-run figures; and the marked block of `docs/benchmarks.md` it is
//! written into.
//!
//! Contract: a figure that was not measured (no reference relay given, no second runtime, no
//! successful trial) prints as `–` with the reason, never as a number. Percentiles over failover
//! trials are nearest-rank ([`super::stats::nearest_rank`]); throughput figures are medians of
//! runs ([`super::stats::median`]). [`write_block`] replaces only the text between
//! [`BLOCK_BEGIN`] and [`BLOCK_END`], or appends a new block when there is none.

use std::fmt::Write as _;

use super::gateway::{REQ_FILTER, RunFigures};
use super::load::LoadReport;
use super::stats::{median, nearest_rank};
use super::suite::{GatewayResults, ServerRuns, SuiteOptions, SuiteResults};

/// Opens the generated block in `docs/benchmarks.md`.
pub const BLOCK_BEGIN: &str = "<!-- bench-suite:begin (written by scripts/bench) -->";
/// Closes it.
pub const BLOCK_END: &str = "<!-- bench-suite:end -->";

/// Median figures of one target over the runs.
struct Row {
    event_per_second: Option<f64>,
    event_p50: Option<f64>,
    event_p99: Option<f64>,
    req_per_second: Option<f64>,
    req_p50: Option<f64>,
    req_p99: Option<f64>,
    events_per_req: Option<f64>,
    errors: u64,
}

impl Row {
    fn of(event: &[&LoadReport], req: &[&LoadReport]) -> Row {
        let m = |reports: &[&LoadReport], value: fn(&LoadReport) -> f64| {
            median(&reports.iter().map(|r| value(r)).collect::<Vec<_>>())
        };
        Row {
            event_per_second: m(event, |r| r.per_second),
            event_p50: m(event, p50),
            event_p99: m(event, p99),
            req_per_second: m(req, |r| r.per_second),
            req_p50: m(req, p50),
            req_p99: m(req, p99),
            events_per_req: m(req, |r| r.events_per_req),
            errors: event.iter().chain(req).map(|r| r.errors).sum(),
        }
    }

    fn of_server(runs: &ServerRuns) -> Row {
        Row::of(
            &runs.event.iter().collect::<Vec<_>>(),
            &runs.req.iter().collect::<Vec<_>>(),
        )
    }

    fn of_gateway(
        runs: &[RunFigures],
        event: fn(&RunFigures) -> &LoadReport,
        req: fn(&RunFigures) -> &LoadReport,
    ) -> Row {
        Row::of(
            &runs.iter().map(event).collect::<Vec<_>>(),
            &runs.iter().map(req).collect::<Vec<_>>(),
        )
    }
}

fn p50(report: &LoadReport) -> f64 {
    report.latency.map_or(f64::NAN, |l| l.p50_us as f64)
}

fn p99(report: &LoadReport) -> f64 {
    report.latency.map_or(f64::NAN, |l| l.p99_us as f64)
}

fn number(value: Option<f64>) -> String {
    match value {
        Some(v) if v.abs() >= 100.0 => group_thousands(v.round() as i64),
        Some(v) => format!("{v:.1}"),
        None => "–".to_owned(),
    }
}

/// `12345` → `12,345`.
#[must_use]
pub fn group_thousands(value: i64) -> String {
    let digits = value.unsigned_abs().to_string();
    let mut out = String::new();
    for (index, digit) in digits.chars().enumerate() {
        if index > 0 && (digits.len() - index) % 3 == 0 {
            out.push(',');
        }
        out.push(digit);
    }
    if value < 0 { format!("-{out}") } else { out }
}

fn ratio(numerator: Option<f64>, denominator: Option<f64>) -> Option<f64> {
    match (numerator, denominator) {
        (Some(n), Some(d)) if d > 0.0 => Some(n / d),
        _ => None,
    }
}

/// One line of the targets table: what, measured, target, and whether it was met.
struct Target {
    what: String,
    measured: String,
    target: &'static str,
    met: Option<bool>,
}

fn times(value: Option<f64>) -> String {
    value.map_or("–".to_owned(), |v| format!("{v:.2}×"))
}

fn percent(value: Option<f64>) -> String {
    value.map_or("–".to_owned(), |v| format!("{:.0} %", v * 100.0))
}

/// The markdown of a whole suite run.
#[must_use]
pub fn markdown(options: &SuiteOptions, results: &SuiteResults, command: &str) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Command: `{command}`. Load: {} connections, one request in flight each, {} s warmup + \
         {} s measured per phase, medians of {} runs; REQ = `{REQ_FILTER}` on a relay seeded \
         with {} events (the echo answers EOSE only); EVENT = publish a distinct pre-signed \
         event and wait for its `OK`. Load average (1/5/15 min) {} at the start, {} at the end; \
         the load generator shares the 2 vCPUs with the servers.\n",
        options.load.connections,
        options.load.warmup.as_secs_f64(),
        options.load.duration.as_secs_f64(),
        options.runs,
        options.seed_events,
        results.load_average.0,
        results.load_average.1,
    );
    let _ = writeln!(
        out,
        "| target | EVENT/s | EVENT p50 (µs) | EVENT p99 (µs) | REQ/s | REQ p50 (µs) | REQ p99 (µs) | events/REQ | errors |"
    );
    let _ = writeln!(
        out,
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"
    );
    let mut rows = vec![(
        "loopback ceiling (WebSocket echo)".to_owned(),
        Row::of_server(&results.echo),
    )];
    if let Some(reference) = &results.reference {
        rows.push((
            "reference: nostr-rs-relay 0.8.12".to_owned(),
            Row::of_server(reference),
        ));
    }
    for gateway in &results.gateways {
        let name = &gateway.name;
        rows.push((
            format!("{name}: worker direct"),
            Row::of_gateway(&gateway.runs, |r| &r.direct_event, |r| &r.direct_req),
        ));
        rows.push((
            format!("{name}: gateway → worker (forwarding)"),
            Row::of_gateway(&gateway.runs, |r| &r.forward_event, |r| &r.forward_req),
        ));
        rows.push((
            format!("{name}: gateway replica (EVENT under lease)"),
            Row::of_gateway(&gateway.runs, |r| &r.replica_event, |r| &r.replica_req),
        ));
    }
    for (name, row) in &rows {
        let _ = writeln!(
            out,
            "| {name} | {} | {} | {} | {} | {} | {} | {} | {} |",
            number(row.event_per_second),
            number(row.event_p50),
            number(row.event_p99),
            number(row.req_per_second),
            number(row.req_p50),
            number(row.req_p99),
            number(row.events_per_req),
            row.errors,
        );
    }
    let _ = writeln!(
        out,
        "\nSingle-core Schnorr ceiling (the gateway's `Event::verify`: id + BIP-340 signature, \
         `secp256k1` crate, one thread, {} events): **{} events/s** ({} signatures/s without \
         the id hash).\n",
        group_thousands(results.schnorr.events as i64),
        number(Some(results.schnorr.events_per_second)),
        number(Some(results.schnorr.signatures_per_second)),
    );
    for gateway in &results.gateways {
        targets(&mut out, results, gateway);
    }
    per_run(&mut out, results);
    out
}

fn targets(out: &mut String, results: &SuiteResults, gateway: &GatewayResults) {
    let name = &gateway.name;
    let reference = results.reference.as_ref().map(Row::of_server);
    let echo = Row::of_server(&results.echo);
    let direct = Row::of_gateway(&gateway.runs, |r| &r.direct_event, |r| &r.direct_req);
    let forward = Row::of_gateway(&gateway.runs, |r| &r.forward_event, |r| &r.forward_req);
    let replica = Row::of_gateway(&gateway.runs, |r| &r.replica_event, |r| &r.replica_req);
    let at_least = |value: Option<f64>, bound: f64| value.map(|v| v >= bound);
    let mut lines = Vec::new();
    let replica_vs_reference = ratio(
        replica.req_per_second,
        reference.as_ref().and_then(|r| r.req_per_second),
    );
    lines.push(Target {
        what: "replica-mode REQ/s ÷ reference REQ/s".into(),
        measured: times(replica_vs_reference),
        target: "≥ 10×",
        met: at_least(replica_vs_reference, 10.0),
    });
    let lease_vs_reference = ratio(
        replica.event_per_second,
        reference.as_ref().and_then(|r| r.event_per_second),
    );
    lines.push(Target {
        what: "EVENT under lease ÷ reference EVENT/s".into(),
        measured: times(lease_vs_reference),
        target: "≥ 10×",
        met: at_least(lease_vs_reference, 10.0),
    });
    let lease_vs_schnorr = ratio(
        replica.event_per_second,
        Some(results.schnorr.events_per_second),
    );
    lines.push(Target {
        what: "EVENT under lease ÷ single-core Schnorr ceiling".into(),
        measured: percent(lease_vs_schnorr),
        target: "≥ 50 %",
        met: at_least(lease_vs_schnorr, 0.5),
    });
    let forward_req = ratio(forward.req_per_second, direct.req_per_second);
    lines.push(Target {
        what: "forwarding ÷ worker direct, REQ/s".into(),
        measured: percent(forward_req),
        target: "≥ 60 %",
        met: at_least(forward_req, 0.6),
    });
    let forward_event = ratio(forward.event_per_second, direct.event_per_second);
    lines.push(Target {
        what: "forwarding ÷ worker direct, EVENT/s".into(),
        measured: percent(forward_event),
        target: "≥ 60 %",
        met: at_least(forward_event, 0.6),
    });
    let added = |a: Option<f64>, b: Option<f64>| a.zip(b).map(|(a, b)| a - b);
    lines.push(Target {
        what: "forwarding: added REQ latency p50 / p99 (µs)".into(),
        measured: format!(
            "{} / {}",
            number(added(forward.req_p50, direct.req_p50)),
            number(added(forward.req_p99, direct.req_p99))
        ),
        target: "–",
        met: None,
    });
    let mut failover: Vec<u64> = gateway.failover.iter().map(|t| t.failover_us).collect();
    failover.sort_unstable();
    let ms = |us: Option<u64>| us.map(|us| us as f64 / 1000.0);
    let failover_p99 = ms(nearest_rank(&failover, 99));
    let confirmed = gateway
        .failover
        .iter()
        .filter(|t| t.replica_confirmed)
        .count();
    lines.push(Target {
        what: format!(
            "failover p50 / p99 (ms), {} trials ({} failed; replica mode confirmed by \
             `/metrics` in {confirmed})",
            gateway.failover.len(),
            gateway.failover_errors.len()
        ),
        measured: format!(
            "{} / {}",
            number(ms(nearest_rank(&failover, 50))),
            number(failover_p99)
        ),
        target: "p99 ≤ 1,000",
        met: failover_p99.map(|p99| p99 <= 1000.0),
    });
    for idle in &gateway.idle {
        let kib = idle.bytes_per_connection.map(|b| b / 1024.0);
        lines.push(Target {
            what: format!(
                "idle connection, {} open of {} (forwarding mode): RSS {} → {} KiB",
                group_thousands(idle.opened as i64),
                group_thousands(idle.requested as i64),
                group_thousands(idle.rss_before_kib as i64),
                group_thousands(idle.rss_after_kib as i64),
            ),
            measured: kib.map_or("–".to_owned(), |k| format!("{k:.1} KiB")),
            target: "≤ 16 KiB",
            met: kib.map(|k| k <= 16.0),
        });
    }
    let vs_echo = ratio(replica.req_per_second, echo.req_per_second);
    lines.push(Target {
        what: "replica-mode REQ/s ÷ loopback-ceiling REQ/s".into(),
        measured: percent(vs_echo),
        target: "–",
        met: None,
    });
    if name != "tokio" {
        let tokio = results.gateways.iter().find(|g| g.name == "tokio");
        let tokio_replica =
            tokio.map(|g| Row::of_gateway(&g.runs, |r| &r.replica_event, |r| &r.replica_req));
        let vs_tokio = ratio(
            replica.req_per_second,
            tokio_replica.and_then(|r| r.req_per_second),
        );
        lines.push(Target {
            what: format!("{name} ÷ tokio, replica-mode REQ/s"),
            measured: times(vs_tokio),
            target: "≥ 1.2×",
            met: at_least(vs_tokio, 1.2),
        });
    }
    let args = if gateway.args.is_empty() {
        String::new()
    } else {
        format!(" (gateway arguments `{}`)", gateway.args.join(" "))
    };
    let _ = writeln!(out, "Targets, gateway **{name}**{args}:\n");
    let _ = writeln!(out, "| ratio | measured | target | |");
    let _ = writeln!(out, "| --- | --- | --- | --- |");
    for line in lines {
        let verdict = match line.met {
            Some(true) => "met",
            Some(false) => "**missed**",
            None => "",
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {verdict} |",
            line.what, line.measured, line.target
        );
    }
    if results.reference.is_none() {
        let _ = writeln!(
            out,
            "\nNo reference relay was given (`--reference-relay`), so its ratios are `–`."
        );
    }
    if let Some(idle) = gateway.idle.first() {
        let _ = writeln!(
            out,
            "\nOpen-files soft limit: {} in the load generator, {} in the gateway.",
            idle.client_nofile, idle.target_nofile
        );
    }
    for idle in gateway.idle.iter().filter(|i| i.first_error.is_some()) {
        let _ = writeln!(
            out,
            "- {} idle connections: first handshake error: {}",
            idle.requested,
            idle.first_error.as_deref().unwrap_or_default()
        );
    }
    for error in &gateway.failover_errors {
        let _ = writeln!(out, "- a failover trial failed: {error}");
    }
    let _ = writeln!(out);
}

fn per_run(out: &mut String, results: &SuiteResults) {
    let rates = |reports: &[&LoadReport]| {
        reports
            .iter()
            .map(|r| group_thousands(r.per_second.round() as i64))
            .collect::<Vec<_>>()
            .join(" / ")
    };
    let _ = writeln!(out, "Per run, requests/s:\n");
    let server = |out: &mut String, name: &str, runs: &ServerRuns| {
        let _ = writeln!(
            out,
            "- {name}: EVENT {}; REQ {}{}",
            rates(&runs.event.iter().collect::<Vec<_>>()),
            rates(&runs.req.iter().collect::<Vec<_>>()),
            if runs.event.iter().any(|r| r.pool_exhausted) {
                " (an EVENT pool ran dry: rate over the shorter window)"
            } else {
                ""
            }
        );
    };
    server(out, "echo", &results.echo);
    if let Some(reference) = &results.reference {
        server(out, "reference", reference);
    }
    let mut first_errors: Vec<(String, &LoadReport)> = Vec::new();
    for (name, runs) in [
        ("echo", Some(&results.echo)),
        ("reference", results.reference.as_ref()),
    ] {
        for report in runs.into_iter().flat_map(|r| r.event.iter().chain(&r.req)) {
            first_errors.push((name.to_owned(), report));
        }
    }
    for gateway in &results.gateways {
        for run in &gateway.runs {
            for report in [
                &run.direct_event,
                &run.forward_event,
                &run.replica_event,
                &run.direct_req,
                &run.forward_req,
                &run.replica_req,
            ] {
                first_errors.push((gateway.name.clone(), report));
            }
        }
    }
    for (name, report) in first_errors {
        if let Some(error) = &report.first_error {
            let _ = writeln!(
                out,
                "- {name} {}: {} error(s) in the window, the first: {error}",
                report.verb, report.errors
            );
        }
    }
    for gateway in &results.gateways {
        let pick = |f: fn(&RunFigures) -> &LoadReport| {
            rates(&gateway.runs.iter().map(f).collect::<Vec<_>>())
        };
        let _ = writeln!(
            out,
            "- {}: EVENT direct {}, forwarded {}, leased {}; REQ direct {}, forwarded {}, \
             replica {}; first leased write after the SIGKILL (ms) {}",
            gateway.name,
            pick(|r| &r.direct_event),
            pick(|r| &r.forward_event),
            pick(|r| &r.replica_event),
            pick(|r| &r.direct_req),
            pick(|r| &r.forward_req),
            pick(|r| &r.replica_req),
            gateway
                .runs
                .iter()
                .map(|r| group_thousands(i64::try_from(r.lease_after_ms).unwrap_or(i64::MAX)))
                .collect::<Vec<_>>()
                .join(" / "),
        );
        let failover: Vec<String> = gateway
            .failover
            .iter()
            .map(|t| format!("{:.0}", t.failover_us as f64 / 1000.0))
            .collect();
        let _ = writeln!(
            out,
            "- {} failover trials (ms): {}",
            gateway.name,
            failover.join(", ")
        );
    }
}

/// `document` with the block between the markers replaced by `heading` + `body` (or, without
/// markers, with a new block appended at the end).
#[must_use]
pub fn write_block(document: &str, heading: &str, body: &str) -> String {
    let block = format!(
        "{BLOCK_BEGIN}\n{heading}\n\n{}\n{BLOCK_END}",
        body.trim_end()
    );
    if let (Some(begin), Some(end)) = (document.find(BLOCK_BEGIN), document.find(BLOCK_END))
        && begin < end
    {
        let after = end + BLOCK_END.len();
        return format!("{}{block}{}", &document[..begin], &document[after..]);
    }
    let mut out = document.trim_end().to_owned();
    out.push_str("\n\n");
    out.push_str(&block);
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_are_grouped_by_three_with_the_sign_kept() {
        assert_eq!(group_thousands(0), "0");
        assert_eq!(group_thousands(999), "999");
        assert_eq!(group_thousands(1_000), "1,000");
        assert_eq!(group_thousands(1_234_567), "1,234,567");
        assert_eq!(group_thousands(-45_000), "-45,000");
    }

    #[test]
    fn the_block_is_appended_once_then_replaced_in_place() {
        let document = "# Benchmarks\n\nhand-written text\n";
        let first = write_block(document, "## Side by side (day 1)", "| a |\n");
        assert!(first.starts_with(document.trim_end()));
        assert!(first.contains("## Side by side (day 1)\n\n| a |\n"));
        let edited = format!("{first}\n## Later section\n");
        let second = write_block(&edited, "## Side by side (day 2)", "| b |");
        assert!(!second.contains("day 1"));
        assert!(!second.contains("| a |"));
        assert!(second.contains("## Side by side (day 2)\n\n| b |\n"));
        assert!(second.contains("hand-written text"));
        assert!(second.ends_with("## Later section\n"));
        assert_eq!(second.matches(BLOCK_BEGIN).count(), 1);
    }

    #[test]
    fn unmeasured_ratios_print_a_dash_not_a_number() {
        assert_eq!(ratio(Some(5.0), None), None);
        assert_eq!(ratio(Some(5.0), Some(0.0)), None);
        assert_eq!(ratio(Some(5.0), Some(2.0)), Some(2.5));
        assert_eq!(times(None), "–");
        assert_eq!(percent(Some(0.756)), "76 %");
        assert_eq!(number(None), "–");
        assert_eq!(number(Some(12_345.4)), "12,345");
    }
}
