//! Key-only scans: the candidates of a plan, in answer order, read from index keys alone.
//!
//! - A [`PrefixRange`] is one key prefix's range (one author, one kind, one tag value, or the
//!   whole time index) clipped to `since..=until`. It can skip forward to a suffix: a few steps
//!   in place, then a fresh B-tree descent (galloping), so skipping far costs a lookup, not a
//!   walk.
//! - A [`Union`] merges the ranges of one condition (`authors: [a, b]` is `a ∪ b`) with a
//!   min-heap of their heads, dropping duplicates (equal suffixes meet at the top of the heap).
//! - [`Candidates`] intersects the unions of several conditions by leapfrogging: each condition
//!   skips to the largest head seen until all agree. An event must be in every condition's
//!   index to come out, so `authors + #t` reads both ranges' keys but fetches only the events
//!   in both.
//!
//! Every key read is one examined entry and is paid for from the [`Budget`]; when it runs out
//! the scan stops with [`Stop::Budget`], which the query reports as truncation.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use super::keys::{self, Suffix};
use super::store::IndexTable;
use super::{IndexError, storage};

/// Why a scan stopped before its end.
pub(crate) enum Stop {
    /// The scan cap was reached with entries left to examine.
    Budget,
    /// Storage failed or the index is inconsistent.
    Failed(IndexError),
}

impl From<IndexError> for Stop {
    fn from(error: IndexError) -> Stop {
        Stop::Failed(error)
    }
}

/// Index entries a query may still examine.
pub(crate) struct Budget {
    pub(crate) left: usize,
}

impl Budget {
    /// Pays for one examined entry.
    pub(crate) fn spend(&mut self) -> Result<(), Stop> {
        if self.left == 0 {
            return Err(Stop::Budget);
        }
        self.left -= 1;
        Ok(())
    }
}

type KeyRange = redb::Range<'static, &'static [u8], ()>;

/// Steps taken in place before a skip re-descends the B-tree.
const GALLOP_STEPS: usize = 4;

/// One prefix's keys within `since..=until`, in order, positioned at `head`.
struct PrefixRange<'t> {
    table: &'t IndexTable,
    prefix: Vec<u8>,
    high: Vec<u8>,
    range: KeyRange,
    head: Option<Suffix>,
}

impl<'t> PrefixRange<'t> {
    fn open(
        table: &'t IndexTable,
        prefix: Vec<u8>,
        since: u64,
        until: u64,
        budget: &mut Budget,
    ) -> Result<PrefixRange<'t>, Stop> {
        let (low, high) = keys::range_bounds(&prefix, since, until);
        let range = table
            .range(low.as_slice()..=high.as_slice())
            .map_err(storage("scanning an index"))?;
        let mut opened = PrefixRange {
            table,
            prefix,
            high,
            range,
            head: None,
        };
        opened.step(budget)?;
        Ok(opened)
    }

    /// Moves `head` to the next key (or the end).
    fn step(&mut self, budget: &mut Budget) -> Result<(), Stop> {
        self.head = match self.range.next() {
            None => None,
            Some(entry) => {
                let (key, _) = entry.map_err(storage("scanning an index"))?;
                let suffix = keys::key_suffix(key.value()).ok_or_else(|| {
                    IndexError::Corrupt("index key shorter than its suffix".into())
                })?;
                budget.spend()?;
                Some(suffix)
            }
        };
        Ok(())
    }

    /// Moves `head` to the first key at or after `target`.
    fn seek(&mut self, target: &Suffix, budget: &mut Budget) -> Result<(), Stop> {
        for _ in 0..GALLOP_STEPS {
            match self.head {
                Some(head) if head < *target => self.step(budget)?,
                _ => return Ok(()),
            }
        }
        if self.head.is_some_and(|head| head < *target) {
            let mut low = self.prefix.clone();
            low.extend_from_slice(target);
            self.range = self
                .table
                .range(low.as_slice()..=self.high.as_slice())
                .map_err(storage("scanning an index"))?;
            self.step(budget)?;
        }
        Ok(())
    }
}

/// The union of one condition's ranges: distinct suffixes in order.
pub(crate) struct Union<'t> {
    ranges: Vec<PrefixRange<'t>>,
    /// `(head, range)` of every range that has a head, smallest first.
    heads: BinaryHeap<Reverse<(Suffix, usize)>>,
}

impl<'t> Union<'t> {
    pub(crate) fn open(
        table: &'t IndexTable,
        prefixes: Vec<Vec<u8>>,
        since: u64,
        until: u64,
        budget: &mut Budget,
    ) -> Result<Union<'t>, Stop> {
        let mut union = Union {
            ranges: Vec::with_capacity(prefixes.len()),
            heads: BinaryHeap::with_capacity(prefixes.len()),
        };
        for prefix in prefixes {
            let range = PrefixRange::open(table, prefix, since, until, budget)?;
            if let Some(head) = range.head {
                union.heads.push(Reverse((head, union.ranges.len())));
            }
            union.ranges.push(range);
        }
        Ok(union)
    }

    fn head(&self) -> Option<Suffix> {
        self.heads.peek().map(|Reverse((head, _))| *head)
    }

    /// Moves every range whose head is before `target` to `target` or after.
    fn seek(&mut self, target: &Suffix, budget: &mut Budget) -> Result<(), Stop> {
        while let Some(Reverse((head, index))) = self.heads.peek().copied() {
            if head >= *target {
                break;
            }
            self.heads.pop();
            if let Some(range) = self.ranges.get_mut(index) {
                range.seek(target, budget)?;
                if let Some(head) = range.head {
                    self.heads.push(Reverse((head, index)));
                }
            }
        }
        Ok(())
    }

    /// Moves past the current head (in every range that holds it).
    fn advance(&mut self, budget: &mut Budget) -> Result<(), Stop> {
        let Some(current) = self.head() else {
            return Ok(());
        };
        while let Some(Reverse((head, index))) = self.heads.peek().copied() {
            if head != current {
                break;
            }
            self.heads.pop();
            if let Some(range) = self.ranges.get_mut(index) {
                range.step(budget)?;
                if let Some(head) = range.head {
                    self.heads.push(Reverse((head, index)));
                }
            }
        }
        Ok(())
    }
}

/// The suffixes present in every condition's union, in order.
pub(crate) struct Candidates<'t> {
    conditions: Vec<Union<'t>>,
    /// The last candidate returned; the driver moves past it on the next call (not before
    /// returning it, so a budget that runs out then does not lose it).
    returned: bool,
}

impl<'t> Candidates<'t> {
    /// Intersects `conditions`, the first driving (it should be the most selective).
    pub(crate) fn new(conditions: Vec<Union<'t>>) -> Candidates<'t> {
        Candidates {
            conditions,
            returned: false,
        }
    }

    /// The next suffix in every condition, or `None` at the end of any of them.
    pub(crate) fn next(&mut self, budget: &mut Budget) -> Result<Option<Suffix>, Stop> {
        let count = self.conditions.len();
        if self.returned {
            self.returned = false;
            if let Some(driver) = self.conditions.first_mut() {
                driver.advance(budget)?;
            }
        }
        let Some(mut target) = self.conditions.first().and_then(Union::head) else {
            return Ok(None);
        };
        let mut agreeing = 1;
        let mut at = 0;
        while agreeing < count {
            at = (at + 1) % count;
            let Some(condition) = self.conditions.get_mut(at) else {
                return Ok(None);
            };
            condition.seek(&target, budget)?;
            match condition.head() {
                None => return Ok(None),
                Some(head) if head == target => agreeing += 1,
                Some(head) => {
                    target = head;
                    agreeing = 1;
                }
            }
        }
        // Every condition's head is `target` now.
        self.returned = true;
        Ok(Some(target))
    }
}
