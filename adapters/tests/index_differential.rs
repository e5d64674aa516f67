//! Differential test of the relay index against a naive model (strfry's idea).
//!
//! The model is a plain list of the visible events: a filter's answer is the events that
//! `Filter::matches`, sorted `created_at` descending then id ascending, cut to the limit. Seeded
//! runs build an index from thousands of generated changes (small pools of authors, kinds, tag
//! values and timestamps so that filters hit and ties happen; some removals; idempotent
//! re-inserts and absent removes) and ask thousands of generated filters; every answer that the
//! scan cap did not truncate must equal the model's exactly, order included. A failing run
//! prints its seed.

// Helpers outside `#[test]` functions unwrap too: in a test, a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};

use hypergate_adapters::index::{IndexChange, QueryLimits, QueryResult, RelayIndex};
use hypergate_core::nostr::{Event, EventId, Filter, Kind, PublicKey, Signature, Tag};

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

    fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    fn bytes32(&mut self) -> [u8; 32] {
        let mut out = [0u8; 32];
        for chunk in out.chunks_mut(8) {
            chunk.copy_from_slice(&self.next_u64().to_le_bytes());
        }
        out
    }
}

const KINDS: [u16; 5] = [1, 4, 7, 1000, 40000];
const WORDS: [&str; 5] = ["nostr", "rust", "relay", "ab", "abc"];
const TIME_BASE: u64 = 1_000;
const TIME_SPAN: usize = 40;

struct Pools {
    authors: Vec<PublicKey>,
    refs: Vec<String>,
    long_values: Vec<String>,
}

impl Pools {
    fn new(rng: &mut Rng) -> Pools {
        Pools {
            authors: (0..8).map(|_| PublicKey(rng.bytes32())).collect(),
            refs: (0..10).map(|_| hex(&rng.bytes32())).collect(),
            // Longer than the 64 bytes kept verbatim in keys: these are hashed.
            long_values: (0..3)
                .map(|i| format!("{i}{}", "long".repeat(20)))
                .collect(),
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn gen_tag(rng: &mut Rng, pools: &Pools) -> Tag {
    match rng.below(10) {
        0 | 1 => Tag::new(["e", rng.pick(&pools.refs).as_str(), "wss://relay"]),
        2 => Tag::new(["p".to_owned(), rng.pick(&pools.authors).to_hex()]),
        3 | 4 => Tag::new(["t", *rng.pick(&WORDS)]),
        5 => Tag::new(["T", *rng.pick(&WORDS)]),
        6 => Tag::new(["t", rng.pick(&pools.long_values).as_str()]),
        // Never indexed: a multi-letter name, a missing value, a non-ASCII letter, no name.
        7 => Tag::new(["tt", *rng.pick(&WORDS)]),
        8 => Tag::new(["e"]),
        _ => {
            if rng.chance(50) {
                Tag::new(["é", *rng.pick(&WORDS)])
            } else {
                Tag::default()
            }
        }
    }
}

fn gen_event(rng: &mut Rng, pools: &Pools) -> Event {
    let tags = (0..rng.below(5)).map(|_| gen_tag(rng, pools)).collect();
    Event {
        id: EventId(rng.bytes32()),
        pubkey: *rng.pick(&pools.authors),
        created_at: TIME_BASE + rng.below(TIME_SPAN) as u64,
        kind: Kind(*rng.pick(&KINDS)),
        tags,
        content: format!("note {}", rng.next_u64()),
        sig: Signature([0; 64]),
    }
}

fn gen_filter(rng: &mut Rng, pools: &Pools, known: &[EventId]) -> Filter {
    let mut filter = Filter::default();
    if rng.chance(15) {
        let ids = (0..rng.below(4))
            .map(|_| {
                if rng.chance(80) && !known.is_empty() {
                    *rng.pick(known)
                } else {
                    EventId(rng.bytes32())
                }
            })
            .collect();
        filter.ids = Some(ids);
    }
    if rng.chance(35) {
        let mut authors: BTreeSet<PublicKey> = (0..1 + rng.below(3))
            .map(|_| *rng.pick(&pools.authors))
            .collect();
        if rng.chance(5) {
            authors.clear();
        }
        filter.authors = Some(authors);
    }
    if rng.chance(35) {
        let mut kinds: BTreeSet<Kind> = (0..1 + rng.below(3))
            .map(|_| Kind(if rng.chance(90) { *rng.pick(&KINDS) } else { 2 }))
            .collect();
        if rng.chance(5) {
            kinds.clear();
        }
        filter.kinds = Some(kinds);
    }
    if rng.chance(40) {
        for _ in 0..1 + rng.below(2) {
            let letter = *rng.pick(&['e', 'p', 't', 'T', 'x', 'é']);
            let values: BTreeSet<String> = (0..rng.below(4))
                .map(|_| match letter {
                    'e' => rng.pick(&pools.refs).clone(),
                    'p' => rng.pick(&pools.authors).to_hex(),
                    't' if rng.chance(25) => rng.pick(&pools.long_values).clone(),
                    _ => (*rng.pick(&WORDS)).to_owned(),
                })
                .collect();
            filter.tags.insert(letter, values);
        }
    }
    let time = |rng: &mut Rng| TIME_BASE - 3 + rng.below(TIME_SPAN + 6) as u64;
    if rng.chance(30) {
        filter.since = Some(time(rng));
    }
    if rng.chance(30) {
        filter.until = Some(time(rng));
    }
    if rng.chance(75) {
        filter.limit = Some(rng.below(35) as u64);
    }
    filter
}

/// The naive answer: every matching event, newest first with the id tie-break, cut to the limit.
fn model(view: &BTreeMap<EventId, Event>, filter: &Filter, limits: &QueryLimits) -> Vec<Event> {
    let mut matching: Vec<Event> = view
        .values()
        .filter(|event| filter.matches(event))
        .cloned()
        .collect();
    sort_newest_first(&mut matching);
    matching.truncate(limits.limit_for(filter));
    matching
}

fn sort_newest_first(events: &mut [Event]) {
    events.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(a.id.cmp(&b.id)));
}

/// Counts of answers compared, so a run can show it checked something.
#[derive(Default, Debug)]
struct Tally {
    exact: usize,
    truncated: usize,
    non_empty: usize,
}

/// Checks one answer against the model: exactly equal when not truncated; otherwise still
/// matching, ordered, free of duplicates and within the limit.
fn check(
    seed: u64,
    filters: &[Filter],
    result: &QueryResult,
    expected: &[Event],
    limit: usize,
    tally: &mut Tally,
) {
    if result.truncated_by_scan_cap {
        tally.truncated += 1;
        assert!(result.events.len() <= limit, "seed {seed}: {filters:?}");
        let mut sorted = result.events.clone();
        sort_newest_first(&mut sorted);
        sorted.dedup_by_key(|event| event.id);
        assert_eq!(sorted, result.events, "seed {seed}: order, {filters:?}");
        for event in &result.events {
            assert!(
                filters.iter().any(|filter| filter.matches(event)),
                "seed {seed}: truncated answer holds a non-matching event, {filters:?}"
            );
        }
    } else {
        tally.exact += 1;
        if !expected.is_empty() {
            tally.non_empty += 1;
        }
        assert_eq!(
            result.events, expected,
            "seed {seed}: index and model disagree for {filters:?}"
        );
    }
}

fn limits(scan_cap: usize) -> QueryLimits {
    QueryLimits {
        default_limit: 25,
        max_limit: 30,
        scan_cap,
    }
}

/// What a comparison reads: the index, the model view and the pools filters are drawn from.
struct World<'a> {
    seed: u64,
    pools: &'a Pools,
    index: &'a RelayIndex,
    view: &'a BTreeMap<EventId, Event>,
    known: &'a [EventId],
    limits: &'a QueryLimits,
}

/// Asks `count` generated filters (and `count / 4` multi-filter REQs) of the index and the model.
fn compare(world: &World<'_>, rng: &mut Rng, count: usize) -> Tally {
    let World {
        seed,
        pools,
        index,
        view,
        known,
        limits,
    } = *world;
    let mut tally = Tally::default();
    for _ in 0..count {
        let filter = gen_filter(rng, pools, known);
        let result = index.query(&filter, limits).unwrap();
        let expected = model(view, &filter, limits);
        let limit = limits.limit_for(&filter);
        check(seed, &[filter], &result, &expected, limit, &mut tally);
    }
    for _ in 0..count / 4 {
        let filters: Vec<Filter> = (0..1 + rng.below(3))
            .map(|_| gen_filter(rng, pools, known))
            .collect();
        let result = index.query_many(&filters, limits).unwrap();
        let mut expected: Vec<Event> = filters
            .iter()
            .flat_map(|filter| model(view, filter, limits))
            .collect();
        sort_newest_first(&mut expected);
        expected.dedup_by_key(|event| event.id);
        let limit = filters.iter().map(|f| limits.limit_for(f)).sum();
        check(seed, &filters, &result, &expected, limit, &mut tally);
    }
    tally
}

/// Every visible event, read back through the global index with no cap in the way.
fn everything(index: &RelayIndex) -> Vec<Event> {
    let all = QueryLimits {
        default_limit: usize::MAX,
        max_limit: usize::MAX,
        scan_cap: usize::MAX,
    };
    let result = index.query(&Filter::default(), &all).unwrap();
    assert!(!result.truncated_by_scan_cap);
    result.events
}

fn run(seed: u64, events: usize, filters_per_check: usize, scan_cap: usize) {
    let limits = limits(scan_cap);
    let mut rng = Rng(seed);
    let pools = Pools::new(&mut rng);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("index.redb");
    let mut index = RelayIndex::open(&path).unwrap();
    let mut view: BTreeMap<EventId, Event> = BTreeMap::new();
    let mut known: Vec<EventId> = Vec::new();
    let mut removed: BTreeSet<EventId> = BTreeSet::new();
    let mut total = Tally::default();

    let mut inserted = 0;
    let mut checkpoints = vec![2 * events / 3, events / 3];
    while inserted < events {
        let mut batch = Vec::new();
        for _ in 0..1 + rng.below(60) {
            let roll = rng.below(100);
            if roll < 82 || view.is_empty() {
                let event = gen_event(&mut rng, &pools);
                known.push(event.id);
                view.insert(event.id, event.clone());
                batch.push(IndexChange::Insert(event));
                inserted += 1;
            } else if roll < 94 {
                let id = *view.keys().nth(rng.below(view.len())).unwrap();
                view.remove(&id);
                removed.insert(id);
                batch.push(IndexChange::Remove(id));
            } else if roll < 97 {
                // Absent: never inserted, or already removed.
                let id = match removed.iter().next() {
                    Some(id) if rng.chance(50) => *id,
                    _ => EventId(rng.bytes32()),
                };
                batch.push(IndexChange::Remove(id));
            } else {
                // Present already: changes nothing.
                let event = view.values().nth(rng.below(view.len())).unwrap().clone();
                batch.push(IndexChange::Insert(event));
            }
        }
        index.apply(&batch).unwrap();
        // Part-way checks: the index must agree with the model at any point, not just at the end.
        if checkpoints.last().is_some_and(|&at| inserted >= at) {
            checkpoints.pop();
            let world = World {
                seed,
                pools: &pools,
                index: &index,
                view: &view,
                known: &known,
                limits: &limits,
            };
            let tally = compare(&world, &mut rng, filters_per_check / 4);
            total.exact += tally.exact;
        }
    }
    assert_eq!(index.len().unwrap(), view.len() as u64, "seed {seed}");

    let world = World {
        seed,
        pools: &pools,
        index: &index,
        view: &view,
        known: &known,
        limits: &limits,
    };
    let tally = compare(&world, &mut rng, filters_per_check);
    total.exact += tally.exact;
    total.truncated += tally.truncated;
    total.non_empty += tally.non_empty;
    eprintln!(
        "seed {seed}: {} events visible, {} removed, {total:?}",
        view.len(),
        removed.len()
    );
    assert!(
        total.exact > filters_per_check / 2,
        "seed {seed}: {total:?}"
    );
    assert!(
        total.non_empty > filters_per_check / 4,
        "seed {seed}: {total:?}"
    );
    assert!(
        total.truncated > 0,
        "seed {seed}: the scan cap was never reached"
    );

    // Reopened, the index gives the same answers, and removed events stay gone.
    let before = everything(&index);
    drop(index);
    let index = RelayIndex::open(&path).unwrap();
    assert_eq!(everything(&index), before, "seed {seed}");
    let mut expected: Vec<Event> = view.values().cloned().collect();
    sort_newest_first(&mut expected);
    assert_eq!(before, expected, "seed {seed}");
    for id in &removed {
        assert_eq!(index.get(id).unwrap(), None, "seed {seed}");
        let by_id = Filter {
            ids: Some(BTreeSet::from([*id])),
            ..Filter::default()
        };
        assert!(
            index.query(&by_id, &limits).unwrap().events.is_empty(),
            "seed {seed}"
        );
    }
    let world = World {
        seed,
        pools: &pools,
        index: &index,
        view: &view,
        known: &known,
        limits: &limits,
    };
    let after_reopen = compare(&world, &mut Rng(seed ^ 0xabcd), filters_per_check / 4);
    assert!(after_reopen.exact > 0, "seed {seed}");
}

#[test]
fn index_answers_equal_the_naive_model_whenever_not_truncated() {
    for seed in [1, 2, 3] {
        run(seed, 2_500, 2_000, 400);
    }
}

#[test]
fn index_answers_equal_the_naive_model_on_a_dense_small_view() {
    // Few events, many filters: most answers are complete, ties on created_at are common.
    for seed in [11, 12] {
        run(seed, 300, 1_500, 60);
    }
}
