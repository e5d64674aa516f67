//! Append throughput into a writer log (a disk hypercore, fsync on every write),
//! one event per append versus batched appends. Not a test: run with
//! `cargo bench -p hypergate-adapters --bench log_append` and record the figures
//! in docs/benchmarks.md.

#![allow(clippy::expect_used)] // A benchmark: failing loudly is the point.

use std::time::Instant;

use hypergate_adapters::log::HyperLog;

/// A payload the size of a typical signed kind-1 Nostr event in JSON.
const EVENT_BYTES: usize = 420;
const RUNS: usize = 5;

fn main() {
    let event = vec![b'x'; EVENT_BYTES];
    for (label, events, batch) in [
        ("one event per append", 1_000usize, 1usize),
        ("batches of 10", 5_000, 10),
        ("batches of 100", 20_000, 100),
        ("batches of 1000", 50_000, 1_000),
    ] {
        let mut rates = Vec::with_capacity(RUNS);
        for run in 0..RUNS {
            let tmp = tempfile::tempdir().expect("temp dir");
            let rate = smol::block_on(async {
                let mut log = HyperLog::create(&tmp.path().join("writer"), None)
                    .await
                    .expect("create log");
                let blocks: Vec<&[u8]> = vec![event.as_slice(); batch];
                let started = Instant::now();
                for _ in 0..events / batch {
                    log.append_batch(&blocks).await.expect("append");
                }
                events as f64 / started.elapsed().as_secs_f64()
            });
            eprintln!("  {label}: run {}/{RUNS}: {rate:.0} events/s", run + 1);
            rates.push(rate);
        }
        rates.sort_by(f64::total_cmp);
        println!(
            "{label:>22}: median {:>9.0} events/s ({} events, {RUNS} runs)",
            rates[RUNS / 2],
            events
        );
    }
}
