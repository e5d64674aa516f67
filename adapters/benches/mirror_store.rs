//! Verify-and-store throughput of the mirror store (a benchmark, not a test;
//! figures go to docs/benchmarks.md).
//!
//! `cargo bench -p hypergate-adapters --bench mirror_store`
//!
//! An origin log holds 10,000 blocks of 500 bytes. A fresh mirror catches up
//! in batches of 100 proofs, each batch exported from where the mirror stands
//! (`export_range(held, held..held + 100)`, so every proof carries the signed
//! upgrade to the origin's length, as on the peer link). Exporting happens
//! before the clock starts; the timed part is `MirrorStore::store_blocks`:
//! verification, block writes, the replica checkpoint and the inventory
//! commit, with hypercore's fsyncs. Median of 5 runs, each on a new store.
//!
//! A baseline applies the same batches to a bare `HyperLog` replica with
//! `apply_proofs`, to separate the store's own cost from the log's.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use hypergate_adapters::log::{HyperLog, Proof};
use hypergate_adapters::mirror::{CoreAnnouncement, CoreKey, CoreRole, MirrorConfig, MirrorStore};
use hypergate_core::ids::{PeerId, RelayKey};
use hypergate_core::time::UnixTime;

const BLOCKS: u64 = 10_000;
const BLOCK_BYTES: usize = 500;
const BATCH: u64 = 100;
const RUNS: usize = 5;

fn main() {
    smol::block_on(async {
        let tmp = tempfile::tempdir().unwrap();
        let mut origin = HyperLog::create(&tmp.path().join("origin"), None)
            .await
            .unwrap();
        for chunk in 0..BLOCKS / 1_000 {
            let blocks: Vec<Vec<u8>> = (chunk * 1_000..(chunk + 1) * 1_000)
                .map(|i| {
                    let mut block = format!("event {i} ").into_bytes();
                    block.resize(BLOCK_BYTES, b'x');
                    block
                })
                .collect();
            origin.append_batch(&blocks).await.unwrap();
        }
        let mut batches: Vec<Vec<Proof>> = Vec::new();
        for start in (0..BLOCKS).step_by(BATCH as usize) {
            batches.push(
                origin
                    .export_range(start, start..start + BATCH)
                    .await
                    .unwrap(),
            );
        }
        let key = CoreKey::from(origin.public_key());

        let mut baseline = Vec::with_capacity(RUNS);
        for run in 0..RUNS {
            let dir = tmp.path().join(format!("replica{run}"));
            let mut replica = HyperLog::create_replica(&dir, origin.public_key())
                .await
                .unwrap();
            let started = Instant::now();
            for batch in &batches {
                replica.apply_proofs(batch).await.unwrap();
            }
            baseline.push(started.elapsed());
            assert_eq!(replica.contiguous_len(), BLOCKS);
        }
        report("baseline HyperLog::apply_proofs", baseline);

        let mut runs = Vec::with_capacity(RUNS);
        for run in 0..RUNS {
            let root = tmp.path().join(format!("store{run}"));
            let mut store = MirrorStore::open(&root, MirrorConfig::default())
                .await
                .unwrap();
            let announcement =
                CoreAnnouncement::new(key, PeerId([1; 32]), RelayKey([2; 32]), CoreRole::Writer);
            let _ = store
                .register_core(announcement, UnixTime(0))
                .await
                .unwrap();
            let started = Instant::now();
            for (i, batch) in batches.iter().enumerate() {
                let outcome = store
                    .store_blocks(&key, batch, UnixTime(i as u64))
                    .await
                    .unwrap();
                assert_eq!(outcome.rejected_blocks, 0);
            }
            let elapsed = started.elapsed();
            assert_eq!(store.len(&key).unwrap(), BLOCKS);
            let rate = BLOCKS as f64 / elapsed.as_secs_f64();
            println!("run {run}: {BLOCKS} blocks in {elapsed:.2?} = {rate:.0} blocks/s");
            runs.push(elapsed);
        }
        report("mirror_store verify+store", runs);
    });
}

fn report(what: &str, mut runs: Vec<Duration>) {
    runs.sort();
    let median = runs[RUNS / 2];
    let rate = BLOCKS as f64 / median.as_secs_f64();
    let mib = rate * BLOCK_BYTES as f64 / f64::from(1 << 20);
    println!(
        "{what}: median of {RUNS} runs {median:.2?} for {BLOCKS} blocks of {BLOCK_BYTES} B \
         in batches of {BATCH}: {rate:.0} blocks/s ({mib:.2} MiB/s)"
    );
}
