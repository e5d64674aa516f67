//! Store choice for the relay index, by measurement.
//!
//! Loads the same layout (see `layout.rs`) into redb, heed (LMDB) and fjall and measures, for
//! each, the median of 5 runs (a fresh directory per run) of:
//! - bulk insert of 200,000 events, 1,000 per durable transaction;
//! - single-event insert + durable commit (median of 200 commits after the bulk load);
//! - mean latency of four typical queries (300 of each, one read snapshot per query):
//!   author + kinds limit 20, `#e` limit 100, kind 1 over one day limit 100, newest 50.
//!
//! Run: `cargo run --release -- [redb|heed|fjall]…` from this directory (all stores by default).
//! It is a throwaway measurement program: `unwrap` on storage errors is deliberate.

mod layout;
mod stores;

use std::time::{Duration, Instant};

use layout::{Ev, Pools, Rng, SPAN, START, Table, bounds, generate, hex, key_id, tag_prefix};
use stores::{Reader, Store};

const EVENTS: usize = 200_000;
const BATCH: usize = 1_000;
const SINGLE_INSERTS: usize = 200;
const QUERIES: usize = 300;
const RUNS: usize = 5;

#[derive(Default, Clone)]
struct Run {
    bulk: Duration,
    single: Duration,
    queries: [Duration; 4],
    disk_bytes: u64,
}

const QUERY_NAMES: [&str; 4] = [
    "author+kinds l20",
    "#e l100",
    "kind1 1-day l100",
    "newest 50",
];

fn main() {
    let wanted: Vec<String> = std::env::args().skip(1).collect();
    let want =
        |name: &str| wanted.is_empty() || wanted.iter().any(|w| name.starts_with(w.as_str()));

    let mut rng = Rng::new(0x5eed);
    let pools = Pools::new(&mut rng);
    let events = generate(&mut rng, &pools, EVENTS + SINGLE_INSERTS);
    let (bulk, singles) = events.split_at(EVENTS);
    eprintln!("generated {} events", events.len());

    let mut rows = Vec::new();
    #[cfg(feature = "redb")]
    if want("redb") {
        rows.push(measure::<stores::redb_store::RedbStore>(
            bulk, singles, &pools,
        ));
    }
    #[cfg(feature = "heed")]
    if want("heed") {
        rows.push(measure::<stores::heed_store::HeedStore>(
            bulk, singles, &pools,
        ));
    }
    #[cfg(feature = "fjall")]
    if want("fjall") {
        rows.push(measure::<stores::fjall_store::FjallStore>(
            bulk, singles, &pools,
        ));
    }

    println!(
        "| store | bulk 200k (s) | single insert+commit (ms) | {} | disk (MiB) |",
        QUERY_NAMES.map(|n| format!("{n} (µs)")).join(" | ")
    );
    println!("|---|---|---|---|---|---|---|---|");
    for (name, run) in rows {
        println!(
            "| {name} | {:.2} | {:.2} | {} | {:.0} |",
            run.bulk.as_secs_f64(),
            run.single.as_secs_f64() * 1e3,
            run.queries
                .map(|q| format!("{:.1}", q.as_secs_f64() * 1e6))
                .join(" | "),
            run.disk_bytes as f64 / (1 << 20) as f64
        );
    }
}

fn measure<S: Store>(bulk: &[Ev], singles: &[Ev], pools: &Pools) -> (&'static str, Run) {
    let mut runs = Vec::new();
    for run in 0..RUNS {
        let dir =
            tempfile::tempdir_in(std::env::var("STORE_DIR").unwrap_or("/tmp".into())).unwrap();
        let store = S::open(dir.path());

        let started = Instant::now();
        for batch in bulk.chunks(BATCH) {
            store.insert(batch);
        }
        let bulk_time = started.elapsed();

        let mut single_times: Vec<Duration> = singles
            .iter()
            .map(|ev| {
                let started = Instant::now();
                store.insert(std::slice::from_ref(ev));
                started.elapsed()
            })
            .collect();
        single_times.sort();

        let mut rng = Rng::new(0xbeef + run as u64);
        let queries = [0, 1, 2, 3].map(|which| {
            let started = Instant::now();
            let mut found = 0usize;
            for _ in 0..QUERIES {
                found += store.read(|reader| query(reader, which, &mut rng, pools, bulk));
            }
            assert!(found > 0, "{} query {which} found nothing", S::NAME);
            started.elapsed() / QUERIES as u32
        });
        let disk_bytes = dir_size(dir.path());
        eprintln!(
            "{} run {run}: bulk {:?}, single p50 {:?}, queries {:?}",
            S::NAME,
            bulk_time,
            single_times[single_times.len() / 2],
            queries
        );
        runs.push(Run {
            bulk: bulk_time,
            single: single_times[single_times.len() / 2],
            queries,
            disk_bytes,
        });
        drop(store);
    }
    let median = |f: &dyn Fn(&Run) -> Duration| {
        let mut values: Vec<Duration> = runs.iter().map(f).collect();
        values.sort();
        values[values.len() / 2]
    };
    let result = Run {
        bulk: median(&|r| r.bulk),
        single: median(&|r| r.single),
        queries: [0, 1, 2, 3].map(|i| median(&|r| r.queries[i])),
        disk_bytes: runs.iter().map(|r| r.disk_bytes).max().unwrap_or(0),
    };
    (S::NAME, result)
}

/// Runs query `which` and returns how many events it produced.
fn query(reader: &dyn Reader, which: usize, rng: &mut Rng, pools: &Pools, bulk: &[Ev]) -> usize {
    let mut produced = 0usize;
    let mut take = |reader: &dyn Reader, table, lo: &[u8], hi: &[u8], limit, kinds: &[u16]| {
        reader.scan(table, lo, hi, &mut |key| {
            reader.get(&key_id(key), &mut |value| {
                if kinds.is_empty() || kinds.contains(&layout::value_kind(value)) {
                    produced += 1;
                }
            });
            produced < limit
        });
    };
    match which {
        0 => {
            let author = pools.authors[rng.below(pools.authors.len() as u64) as usize];
            let (lo, hi) = bounds(&author, 0, u64::MAX);
            take(reader, Table::Author, &lo, &hi, 20, &[1, 7]);
        }
        1 => {
            let target = &bulk[rng.below(bulk.len() as u64 / 10) as usize];
            let prefix = tag_prefix(b'e', hex(&target.id).as_bytes());
            let (lo, hi) = bounds(&prefix, 0, u64::MAX);
            take(reader, Table::Tag, &lo, &hi, 100, &[]);
        }
        2 => {
            let since = START + rng.below(SPAN - 86_400);
            let (lo, hi) = bounds(&1u16.to_be_bytes(), since, since + 86_400);
            take(reader, Table::Kind, &lo, &hi, 100, &[]);
        }
        _ => {
            let (lo, hi) = bounds(&[], 0, u64::MAX);
            take(reader, Table::Time, &lo, &hi, 50, &[]);
        }
    }
    produced
}

fn dir_size(path: &std::path::Path) -> u64 {
    std::fs::read_dir(path)
        .map(|entries| {
            entries
                .flatten()
                .map(|entry| match entry.metadata() {
                    Ok(meta) if meta.is_dir() => dir_size(&entry.path()),
                    Ok(meta) => meta.len(),
                    Err(_) => 0,
                })
                .sum()
        })
        .unwrap_or(0)
}
