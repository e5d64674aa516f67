//! Relay index benchmark (not a test): builds an index of 1,000,000 generated events in a
//! temporary directory, then reports p50/p99 latency of typical filters over 1,000 queries each,
//! and compares the stored encoding (postcard) with NIP-01 JSON.
//!
//! Run: `cargo bench -p hypergate-adapters --bench index_query` (release profile).
//! `INDEX_BENCH_EVENTS=<n>` changes the index size; progress goes to stderr, results to stdout.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use hypergate_adapters::index::{IndexChange, QueryLimits, RelayIndex, codec};
use hypergate_core::nostr::{Event, EventId, Filter, Kind, PublicKey, Signature, Tag};

const BATCH: usize = 5_000;
const QUERIES: usize = 1_000;
const AUTHORS: usize = 5_000;
const HASHTAGS: u64 = 200;
const START: u64 = 1_700_000_000;
const SPAN: u64 = 365 * 86_400;
/// Thread roots: `e` tags point at one of these half of the time, so threads have replies.
const POPULAR: usize = 20_000;

/// splitmix64: a seeded generator with no dependency.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    fn bytes32(&mut self) -> [u8; 32] {
        let mut out = [0u8; 32];
        for chunk in out.chunks_mut(8) {
            chunk.copy_from_slice(&self.next_u64().to_le_bytes());
        }
        out
    }
}

struct Generator {
    rng: Rng,
    authors: Vec<PublicKey>,
    ids: Vec<EventId>,
}

impl Generator {
    fn new(seed: u64) -> Generator {
        let mut rng = Rng(seed);
        let authors = (0..AUTHORS).map(|_| PublicKey(rng.bytes32())).collect();
        Generator {
            rng,
            authors,
            ids: Vec::new(),
        }
    }

    fn author(&mut self) -> PublicKey {
        self.authors[self.rng.below(AUTHORS as u64) as usize]
    }

    fn event(&mut self) -> Event {
        let id = EventId(self.rng.bytes32());
        let kind = match self.rng.below(10) {
            0..=6 => 1,
            7 | 8 => 7,
            _ => 6,
        };
        let mut tags = Vec::new();
        if !self.ids.is_empty() && self.rng.below(2) == 0 {
            let target = self.reply_target();
            tags.push(Tag::new(["e".to_owned(), target.to_hex()]));
            tags.push(Tag::new(["p".to_owned(), self.author().to_hex()]));
        }
        if self.rng.below(4) == 0 {
            let hashtag = format!("tag{}", self.rng.below(HASHTAGS));
            tags.push(Tag::new(["t".to_owned(), hashtag]));
        }
        let content_len = 20 + self.rng.below(280) as usize;
        let content = (0..content_len)
            .map(|i| char::from(b'a' + (i % 26) as u8))
            .collect();
        self.ids.push(id);
        Event {
            id,
            pubkey: self.author(),
            created_at: START + self.rng.below(SPAN),
            kind: Kind(kind),
            tags,
            content,
            sig: Signature([0; 64]),
        }
    }

    fn reply_target(&mut self) -> EventId {
        let popular = self.ids.len().min(POPULAR) as u64;
        let pool = if self.rng.below(2) == 0 {
            popular
        } else {
            self.ids.len() as u64
        };
        self.ids[self.rng.below(pool) as usize]
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let at = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[at.min(sorted.len() - 1)]
}

fn micros(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e6
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let total: usize = std::env::var("INDEX_BENCH_EVENTS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1_000_000);
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("index.redb");
    let mut index = RelayIndex::open(&path)?;
    let mut generator = Generator::new(0x1de);

    let started = Instant::now();
    let mut generating = Duration::ZERO;
    let mut sample = Vec::new();
    for batch_start in (0..total).step_by(BATCH) {
        let made = Instant::now();
        let batch: Vec<IndexChange> = (batch_start..(batch_start + BATCH).min(total))
            .map(|_| IndexChange::Insert(generator.event()))
            .collect();
        generating += made.elapsed();
        if sample.len() < 100_000 {
            sample.extend(batch.iter().filter_map(|change| match change {
                IndexChange::Insert(event) => Some(event.clone()),
                IndexChange::Remove(_) => None,
            }));
        }
        index.apply(&batch)?;
        let done = batch_start + batch.len();
        if done % 100_000 == 0 || done == total {
            eprintln!(
                "built {done}/{total} events in {:.1} s",
                started.elapsed().as_secs_f64()
            );
        }
    }
    let build = started.elapsed() - generating;
    let file_bytes = std::fs::metadata(&path)?.len();
    println!(
        "index of {} events: build {:.1} s ({:.0} events/s, {} per transaction), file {:.0} MiB",
        index.len()?,
        build.as_secs_f64(),
        total as f64 / build.as_secs_f64(),
        BATCH,
        file_bytes as f64 / f64::from(1 << 20)
    );

    let started = Instant::now();
    index.compact()?;
    println!(
        "compacted in {:.1} s: file {:.0} MiB",
        started.elapsed().as_secs_f64(),
        std::fs::metadata(&path)?.len() as f64 / f64::from(1 << 20)
    );

    let limits = QueryLimits::default();
    let mut rng = Rng(0xbe7c);
    type MakeFilter<'a> = Box<dyn FnMut(&mut Rng) -> Filter + 'a>;
    let authors = generator.authors.clone();
    let popular: Vec<EventId> = generator.ids.iter().take(POPULAR).copied().collect();
    let cases: Vec<(&str, MakeFilter<'_>)> = vec![
        (
            "author + kind 1, limit 20",
            Box::new(|rng: &mut Rng| Filter {
                authors: Some(BTreeSet::from(
                    [authors[rng.below(AUTHORS as u64) as usize]],
                )),
                kinds: Some(BTreeSet::from([Kind(1)])),
                limit: Some(20),
                ..Filter::default()
            }),
        ),
        (
            "#e (thread root), no limit",
            Box::new(|rng: &mut Rng| Filter {
                tags: [(
                    'e',
                    BTreeSet::from([popular[rng.below(popular.len() as u64) as usize].to_hex()]),
                )]
                .into(),
                ..Filter::default()
            }),
        ),
        (
            "kind 1, since/until 1 day, limit 100",
            Box::new(|rng: &mut Rng| {
                let since = START + rng.below(SPAN - 86_400);
                Filter {
                    kinds: Some(BTreeSet::from([Kind(1)])),
                    since: Some(since),
                    until: Some(since + 86_400),
                    limit: Some(100),
                    ..Filter::default()
                }
            }),
        ),
        (
            "global newest, limit 50",
            Box::new(|_: &mut Rng| Filter {
                limit: Some(50),
                ..Filter::default()
            }),
        ),
        (
            "3 authors + #t hashtag, limit 20",
            Box::new(|rng: &mut Rng| Filter {
                authors: Some(
                    (0..3)
                        .map(|_| authors[rng.below(AUTHORS as u64) as usize])
                        .collect(),
                ),
                tags: [('t', BTreeSet::from([format!("tag{}", rng.below(HASHTAGS))]))].into(),
                limit: Some(20),
                ..Filter::default()
            }),
        ),
    ];
    println!("| filter | p50 (µs) | p99 (µs) | mean events returned | truncated by scan cap |");
    println!("|---|---|---|---|---|");
    for (name, mut make) in cases {
        let mut times = Vec::with_capacity(QUERIES);
        let mut returned = 0usize;
        let mut truncated = 0usize;
        for _ in 0..QUERIES {
            let filter = make(&mut rng);
            let started = Instant::now();
            let result = index.query(&filter, &limits)?;
            times.push(started.elapsed());
            returned += result.events.len();
            truncated += usize::from(result.truncated_by_scan_cap);
        }
        times.sort();
        println!(
            "| {name} | {:.0} | {:.0} | {:.1} | {truncated}/{QUERIES} |",
            micros(percentile(&times, 0.50)),
            micros(percentile(&times, 0.99)),
            returned as f64 / QUERIES as f64,
        );
    }

    // Stored encoding versus NIP-01 JSON, over the first events generated.
    let started = Instant::now();
    let postcard: Vec<Vec<u8>> = sample.iter().map(codec::encode).collect::<Result<_, _>>()?;
    let postcard_encode = started.elapsed();
    let started = Instant::now();
    let json: Vec<String> = sample.iter().map(Event::to_json).collect();
    let json_encode = started.elapsed();
    let started = Instant::now();
    for bytes in &postcard {
        std::hint::black_box(codec::decode(bytes)?);
    }
    let postcard_decode = started.elapsed();
    let started = Instant::now();
    for text in &json {
        std::hint::black_box(Event::parse_json(text)?);
    }
    let json_decode = started.elapsed();
    let per = |d: Duration| micros(d) / sample.len() as f64;
    let mean_len = |total: usize| total as f64 / sample.len() as f64;
    println!(
        "| encoding ({} events) | mean bytes | encode (µs/event) | decode (µs/event) |",
        sample.len()
    );
    println!("|---|---|---|---|");
    println!(
        "| postcard (stored) | {:.0} | {:.2} | {:.2} |",
        mean_len(postcard.iter().map(Vec::len).sum()),
        per(postcard_encode),
        per(postcard_decode)
    );
    println!(
        "| NIP-01 JSON | {:.0} | {:.2} | {:.2} |",
        mean_len(json.iter().map(String::len).sum()),
        per(json_encode),
        per(json_decode)
    );
    Ok(())
}
