//! Filter queries: the plan, the k-way merge of index ranges, and the bounds on their work.
//!
//! A filter is planned on one index (strfry's order of preference):
//! 1. `ids` → one direct get per id;
//! 2. a `#x` tag condition (the letter with the fewest values) → one `by_tag` range per value;
//! 3. `authors` → one `by_author` range per author;
//! 4. `kinds` → one `by_kind` range per kind;
//! 5. otherwise the global `by_time` index.
//!
//! Each range is already clipped to `since..=until` and sorted newest first, so a k-way merge
//! of the ranges (a min-heap of their heads, duplicates dropped because equal keys are
//! adjacent) yields candidates in the answer's order; the first `limit` candidates that pass
//! [`Filter::matches`] are the answer, and the scan stops there. A list that is present and
//! empty, or `since > until`, matches nothing and reads nothing.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};

use hypergate_core::nostr::{Event, EventId, Filter};

use super::keys::{self, Suffix};
use super::store::{IndexTable, ReadTables};
use super::{IndexError, RelayIndex, storage};

/// Bounds on one query's answer and work.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueryLimits {
    /// Events returned for a filter without `limit`. Default 500.
    pub default_limit: usize,
    /// Most events returned for one filter, whatever its `limit`. Default 5,000.
    pub max_limit: usize,
    /// Most index entries (or direct gets) examined by one `query` or `query_many`.
    /// Default 50,000 (tens of milliseconds of work in the `index_query` bench).
    pub scan_cap: usize,
}

impl Default for QueryLimits {
    fn default() -> Self {
        QueryLimits {
            default_limit: 500,
            max_limit: 5_000,
            scan_cap: 50_000,
        }
    }
}

impl QueryLimits {
    /// How many events `filter` may return.
    #[must_use]
    pub fn limit_for(&self, filter: &Filter) -> usize {
        filter
            .limit
            .map_or(self.default_limit, |limit| {
                usize::try_from(limit).unwrap_or(usize::MAX)
            })
            .min(self.max_limit)
    }
}

/// A query's answer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct QueryResult {
    /// Matching events, `created_at` descending, then id ascending; no duplicates.
    pub events: Vec<Event>,
    /// The scan cap stopped the query before it could tell that it had every event it should
    /// return: `events` is correct and ordered but may be missing some.
    pub truncated_by_scan_cap: bool,
}

impl RelayIndex {
    /// The events matching `filter`, newest first, within `limits`.
    pub fn query(&self, filter: &Filter, limits: &QueryLimits) -> Result<QueryResult, IndexError> {
        self.query_many(std::slice::from_ref(filter), limits)
    }

    /// The events matching any of `filters` (one `REQ`), newest first and without duplicates.
    /// Each filter is limited by its own `limit` (NIP-01); the scan cap is shared, so one `REQ`
    /// examines at most `limits.scan_cap` entries in total. All filters read one snapshot.
    pub fn query_many(
        &self,
        filters: &[Filter],
        limits: &QueryLimits,
    ) -> Result<QueryResult, IndexError> {
        let tables = self.read_tables()?;
        let mut budget = limits.scan_cap;
        let mut truncated = false;
        let mut merged: BTreeMap<Suffix, Event> = BTreeMap::new();
        for filter in filters {
            let answer = run_filter(&tables, filter, limits.limit_for(filter), &mut budget)?;
            truncated |= answer.truncated;
            for event in answer.events {
                merged.insert(keys::suffix(event.created_at, &event.id), event);
            }
        }
        Ok(QueryResult {
            events: merged.into_values().collect(),
            truncated_by_scan_cap: truncated,
        })
    }
}

/// One filter's answer.
struct Answer {
    events: Vec<Event>,
    truncated: bool,
}

/// Which index a plan scans.
#[derive(Clone, Copy)]
enum Index {
    Time,
    Author,
    Kind,
    Tag,
}

/// How a filter is answered.
enum Plan<'f> {
    /// The filter matches nothing.
    Nothing,
    /// Direct gets of these ids.
    Ids(&'f std::collections::BTreeSet<EventId>),
    /// A merge of these prefixes' ranges in one index.
    Scan {
        index: Index,
        prefixes: Vec<Vec<u8>>,
    },
}

fn plan(filter: &Filter) -> Plan<'_> {
    let empty_list = filter.ids.as_ref().is_some_and(|ids| ids.is_empty())
        || filter.authors.as_ref().is_some_and(|a| a.is_empty())
        || filter.kinds.as_ref().is_some_and(|k| k.is_empty())
        || filter.tags.values().any(|values| values.is_empty())
        || filter.since.unwrap_or(0) > filter.until.unwrap_or(u64::MAX);
    if empty_list {
        return Plan::Nothing;
    }
    if let Some(ids) = &filter.ids {
        return Plan::Ids(ids);
    }
    // Only ASCII letters are in `by_tag` (see `keys`); any other letter is left to the final
    // `Filter::matches` check on whatever index is scanned.
    let indexed_tag = filter
        .tags
        .iter()
        .filter_map(|(letter, values)| Some((u8::try_from(*letter).ok()?, values)))
        .filter(|(letter, _)| letter.is_ascii_alphabetic())
        .min_by_key(|(_, values)| values.len());
    if let Some((letter, values)) = indexed_tag {
        let prefixes = values
            .iter()
            .map(|value| keys::tag_prefix(letter, value))
            .collect();
        return Plan::Scan {
            index: Index::Tag,
            prefixes,
        };
    }
    if let Some(authors) = &filter.authors {
        let prefixes = authors.iter().map(keys::author_prefix).collect();
        return Plan::Scan {
            index: Index::Author,
            prefixes,
        };
    }
    if let Some(kinds) = &filter.kinds {
        let prefixes = kinds.iter().map(|kind| keys::kind_prefix(*kind)).collect();
        return Plan::Scan {
            index: Index::Kind,
            prefixes,
        };
    }
    Plan::Scan {
        index: Index::Time,
        prefixes: vec![Vec::new()],
    }
}

/// Answers one filter, spending at most `budget` examined entries (and deducting them).
fn run_filter(
    tables: &ReadTables,
    filter: &Filter,
    limit: usize,
    budget: &mut usize,
) -> Result<Answer, IndexError> {
    let mut answer = Answer {
        events: Vec::new(),
        truncated: false,
    };
    if limit == 0 {
        return Ok(answer);
    }
    match plan(filter) {
        Plan::Nothing => {}
        Plan::Ids(ids) => {
            for id in ids {
                if *budget == 0 {
                    answer.truncated = true;
                    break;
                }
                *budget -= 1;
                if let Some(event) = tables.event(id)?
                    && filter.matches(&event)
                {
                    answer.events.push(event);
                }
            }
            answer
                .events
                .sort_by_key(|event| keys::suffix(event.created_at, &event.id));
            answer.events.truncate(limit);
        }
        Plan::Scan { index, prefixes } => {
            let table = match index {
                Index::Time => &tables.by_time,
                Index::Author => &tables.by_author,
                Index::Kind => &tables.by_kind,
                Index::Tag => &tables.by_tag,
            };
            let since = filter.since.unwrap_or(0);
            let until = filter.until.unwrap_or(u64::MAX);
            let mut scan = MergedScan::new(table, &prefixes, since, until)?;
            while answer.events.len() < limit {
                let Some(suffix) = scan.next()? else {
                    break;
                };
                if *budget == 0 {
                    answer.truncated = true;
                    break;
                }
                *budget -= 1;
                let id = keys::suffix_id(&suffix);
                let event = tables.event(&id)?.ok_or_else(|| {
                    IndexError::Corrupt(format!("index entry for missing event {id}"))
                })?;
                if filter.matches(&event) {
                    answer.events.push(event);
                }
            }
        }
    }
    Ok(answer)
}

type KeyRange = redb::Range<'static, &'static [u8], ()>;

/// A k-way merge of index ranges by key suffix, without duplicates.
struct MergedScan {
    sources: Vec<KeyRange>,
    /// The next suffix of each source that has one, smallest first.
    heads: BinaryHeap<Reverse<(Suffix, usize)>>,
    last: Option<Suffix>,
}

impl MergedScan {
    fn new(
        table: &IndexTable,
        prefixes: &[Vec<u8>],
        since: u64,
        until: u64,
    ) -> Result<MergedScan, IndexError> {
        let mut scan = MergedScan {
            sources: Vec::with_capacity(prefixes.len()),
            heads: BinaryHeap::with_capacity(prefixes.len()),
            last: None,
        };
        for prefix in prefixes {
            let (low, high) = keys::range_bounds(prefix, since, until);
            let range = table
                .range(low.as_slice()..=high.as_slice())
                .map_err(storage("scanning an index"))?;
            scan.sources.push(range);
            scan.advance(scan.sources.len() - 1)?;
        }
        Ok(scan)
    }

    /// Reads source `source`'s next key into the heap.
    fn advance(&mut self, source: usize) -> Result<(), IndexError> {
        let Some(range) = self.sources.get_mut(source) else {
            return Ok(());
        };
        if let Some(entry) = range.next() {
            let (key, _) = entry.map_err(storage("scanning an index"))?;
            let suffix = keys::key_suffix(key.value())
                .ok_or_else(|| IndexError::Corrupt("index key shorter than its suffix".into()))?;
            self.heads.push(Reverse((suffix, source)));
        }
        Ok(())
    }

    /// The next distinct suffix in order.
    fn next(&mut self) -> Result<Option<Suffix>, IndexError> {
        while let Some(Reverse((suffix, source))) = self.heads.pop() {
            self.advance(source)?;
            if self.last != Some(suffix) {
                self.last = Some(suffix);
                return Ok(Some(suffix));
            }
        }
        Ok(None)
    }
}
