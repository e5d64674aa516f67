//! Per-flow queues scheduled fairly onto one outbound link.
//!
//! Contract:
//! - Items are queued by [`Flow`]: one flow per client (its session), plus one
//!   [`Flow::Control`] for the link's own frames. Within a flow, items leave in the order they
//!   were pushed.
//! - [`FairQueue::pop`] serves the flows that hold items in plain round robin, one item per
//!   turn: between two items of a flow that stays busy, every other busy flow (control
//!   included) gets at most one. A flow that empties leaves the round; when it gets items
//!   again it joins at the back.
//! - Admission is bounded three ways ([`FairQueueLimits`]), and a refusal names which bound
//!   ([`Refused`]):
//!   - each client flow holds at most `per_flow` items;
//!   - each client flow's first `reserved_per_flow` items come from a reserved room of
//!     `reserved_total` items that only such items use; beyond them, items come from a
//!     `shared` room. So a flow with fewer than `reserved_per_flow` items queued is admitted
//!     however full the shared room is: a calm client is never refused because others flood
//!     the link. It is refused only when the reserved room itself is taken, which needs more
//!     than `reserved_total / reserved_per_flow` flows holding items;
//!   - the control flow has its own room of `control` items that no client item ever
//!     takes: a control item is refused only when the control flow itself holds `control`
//!     items, whatever the client flows hold.
//! - Everything queued is bounded by `reserved_total + shared + control` items.
//! - [`FairQueue::remove_flow`] drops a client flow and its items (its session ended).
//!
//! Plain round robin by item, not deficit round robin by bytes: what a frame costs on the
//! link (sealing it, the worker parsing and answering it) is mostly per frame; frames are
//! already capped in size by the peer link; and the caps are counted in frames. Deficit
//! round robin would need every item's size and a quantum as large as the largest frame to
//! stay O(1) per pop.
//!
//! No clock, no async: the runtime holds the queue behind its own lock and wakes its link
//! writer when [`FairQueue::push`] made an idle queue busy.

use std::collections::{BTreeMap, VecDeque};

/// A queue's flow: the link's own control frames, or one client's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Flow<K> {
    /// The link's own frames (acknowledgements, pushes): their own room, never taken by
    /// client items.
    Control,
    /// One client's frames.
    Client(K),
}

/// The bounds of a [`FairQueue`], in items. See the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FairQueueLimits {
    /// Items one client flow may hold.
    pub per_flow: usize,
    /// Items of each client flow taken from the reserved room (its first ones).
    pub reserved_per_flow: usize,
    /// The reserved room, shared by all client flows' first items.
    pub reserved_total: usize,
    /// The room for client items beyond each flow's reserved ones.
    pub shared: usize,
    /// The control flow's own room.
    pub control: usize,
}

impl FairQueueLimits {
    /// Most items the queue ever holds.
    #[must_use]
    pub fn max_items(&self) -> usize {
        self.reserved_total
            .saturating_add(self.shared)
            .saturating_add(self.control)
    }
}

/// Why an item was not queued; nothing was queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refused {
    // ---- The flow's own sender: it queued faster than the link serves it. ----
    /// The client flow holds `per_flow` items.
    #[error("the flow already holds {held} items, its limit")]
    FlowFull {
        /// Items the flow holds.
        held: usize,
    },
    /// The control flow holds `control` items.
    #[error("the control flow already holds {held} items, its limit")]
    ControlFull {
        /// Items the control flow holds.
        held: usize,
    },
    // ---- Everyone's: the link is saturated by many flows. ----
    /// The flow is past its reserved items and the shared room is full.
    #[error("the link's shared room is full")]
    SharedFull,
    /// The flow is within its reserved items, but so many flows hold items that the reserved
    /// room is full.
    #[error("the link's reserved room is full")]
    ReservedFull,
}

impl Refused {
    /// A fixed label for metrics: `flow-full`, `control-full` or `link-busy`.
    #[must_use]
    pub fn as_str(&self) -> &'static str {
        match self {
            Refused::FlowFull { .. } => "flow-full",
            Refused::ControlFull { .. } => "control-full",
            Refused::SharedFull | Refused::ReservedFull => "link-busy",
        }
    }
}

/// Per-flow FIFO queues served in round robin. See the module docs.
#[derive(Debug, Clone)]
pub struct FairQueue<K: Ord + Clone, T> {
    limits: FairQueueLimits,
    /// Only flows holding items.
    flows: BTreeMap<Flow<K>, VecDeque<T>>,
    /// The flows holding items, in the order they are served next.
    ring: VecDeque<Flow<K>>,
    /// Σ over client flows of min(len, reserved_per_flow).
    reserved_used: usize,
    /// Σ over client flows of len − reserved_per_flow, where positive.
    shared_used: usize,
    control_len: usize,
}

impl<K: Ord + Clone, T> FairQueue<K, T> {
    /// An empty queue bounded by `limits`.
    #[must_use]
    pub fn new(limits: FairQueueLimits) -> Self {
        Self {
            limits,
            flows: BTreeMap::new(),
            ring: VecDeque::new(),
            reserved_used: 0,
            shared_used: 0,
            control_len: 0,
        }
    }

    /// The bounds.
    #[must_use]
    pub fn limits(&self) -> &FairQueueLimits {
        &self.limits
    }

    /// Queues `item` at the back of `flow`, or says which bound refuses it.
    pub fn push(&mut self, flow: Flow<K>, item: T) -> Result<(), Refused> {
        let held = self.flow_len(&flow);
        match &flow {
            Flow::Control => {
                if held >= self.limits.control {
                    return Err(Refused::ControlFull { held });
                }
                self.control_len += 1;
            }
            Flow::Client(_) => {
                if held >= self.limits.per_flow {
                    return Err(Refused::FlowFull { held });
                }
                if held < self.limits.reserved_per_flow {
                    if self.reserved_used >= self.limits.reserved_total {
                        return Err(Refused::ReservedFull);
                    }
                    self.reserved_used += 1;
                } else {
                    if self.shared_used >= self.limits.shared {
                        return Err(Refused::SharedFull);
                    }
                    self.shared_used += 1;
                }
            }
        }
        if held == 0 {
            self.ring.push_back(flow.clone());
        }
        self.flows.entry(flow).or_default().push_back(item);
        Ok(())
    }

    /// The next item in round-robin order, with its flow.
    #[must_use]
    pub fn pop(&mut self) -> Option<(Flow<K>, T)> {
        let flow = self.ring.pop_front()?;
        let queue = self.flows.get_mut(&flow)?;
        let held = queue.len();
        let item = queue.pop_front()?;
        if queue.is_empty() {
            self.flows.remove(&flow);
        } else {
            self.ring.push_back(flow.clone());
        }
        self.release(&flow, held);
        Some((flow, item))
    }

    /// Drops the client flow `key` and the items it held; returns how many.
    pub fn remove_flow(&mut self, key: &K) -> usize {
        let flow = Flow::Client(key.clone());
        let Some(queue) = self.flows.remove(&flow) else {
            return 0;
        };
        let dropped = queue.len();
        let reserved = dropped.min(self.limits.reserved_per_flow);
        self.reserved_used = self.reserved_used.saturating_sub(reserved);
        self.shared_used = self.shared_used.saturating_sub(dropped - reserved);
        self.ring.retain(|queued| queued != &flow);
        dropped
    }

    /// Accounts for one item leaving `flow`, which held `held` before.
    fn release(&mut self, flow: &Flow<K>, held: usize) {
        match flow {
            Flow::Control => self.control_len = self.control_len.saturating_sub(1),
            Flow::Client(_) if held > self.limits.reserved_per_flow => {
                self.shared_used = self.shared_used.saturating_sub(1);
            }
            Flow::Client(_) => self.reserved_used = self.reserved_used.saturating_sub(1),
        }
    }

    /// Items `flow` holds.
    #[must_use]
    pub fn flow_len(&self, flow: &Flow<K>) -> usize {
        self.flows.get(flow).map_or(0, VecDeque::len)
    }

    /// Items queued in all flows.
    #[must_use]
    pub fn len(&self) -> usize {
        self.control_len + self.client_len()
    }

    /// Items queued in client flows.
    #[must_use]
    pub fn client_len(&self) -> usize {
        self.reserved_used + self.shared_used
    }

    /// Items queued in the control flow.
    #[must_use]
    pub fn control_len(&self) -> usize {
        self.control_len
    }

    /// Whether nothing is queued.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.ring.is_empty()
    }

    /// Flows holding items (control included).
    #[must_use]
    pub fn busy_flows(&self) -> usize {
        self.ring.len()
    }
}

#[cfg(test)]
mod tests;
