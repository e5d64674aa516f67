use std::collections::{BTreeMap, VecDeque};

use proptest::prelude::*;

use super::*;

type Queue = FairQueue<u8, u32>;

fn limits() -> FairQueueLimits {
    FairQueueLimits {
        per_flow: 8,
        reserved_per_flow: 2,
        reserved_total: 8,
        shared: 10,
        control: 3,
    }
}

fn drain(queue: &mut Queue) -> Vec<(Flow<u8>, u32)> {
    std::iter::from_fn(|| queue.pop()).collect()
}

#[test]
fn a_calm_flow_is_admitted_and_served_within_one_round_while_others_flood() {
    let mut queue = Queue::new(limits());
    let mut refused = 0;
    for item in 0..100 {
        for flood in 1..=3 {
            if queue.push(Flow::Client(flood), item).is_err() {
                refused += 1;
            }
        }
    }
    assert!(refused > 0, "the flood fills the shared room");
    assert_eq!(queue.push(Flow::Client(1), 999), Err(Refused::SharedFull));
    assert_eq!(
        queue.client_len(),
        6 + 10,
        "the flooders' reserved items and the shared room"
    );
    queue.push(Flow::Client(9), 7).unwrap();
    let served: Vec<_> = drain(&mut queue)
        .into_iter()
        .map(|(flow, _)| flow)
        .collect();
    let calm = served
        .iter()
        .position(|flow| *flow == Flow::Client(9))
        .unwrap();
    assert!(calm <= 3, "the calm flow waited {calm} turns: {served:?}");
}

#[test]
fn control_items_have_their_own_room_whatever_the_clients_hold() {
    let mut queue = Queue::new(limits());
    for flow in 0..10 {
        for item in 0..8 {
            let _ = queue.push(Flow::Client(flow), item);
        }
    }
    assert_eq!(queue.client_len(), 18, "reserved and shared rooms are full");
    for item in 0..3 {
        queue.push(Flow::Control, item).unwrap();
    }
    assert_eq!(
        queue.push(Flow::Control, 3),
        Err(Refused::ControlFull { held: 3 })
    );
    assert_eq!(queue.len(), 21);
    assert_eq!(queue.len(), queue.limits().max_items());
}

#[test]
fn a_removed_flow_gives_back_its_room_and_leaves_the_round() {
    let mut queue = Queue::new(limits());
    for item in 0..8 {
        queue.push(Flow::Client(1), item).unwrap();
    }
    queue.push(Flow::Client(2), 100).unwrap();
    assert_eq!(queue.remove_flow(&1), 8);
    assert_eq!(queue.remove_flow(&1), 0);
    assert_eq!(queue.client_len(), 1);
    assert_eq!(drain(&mut queue), vec![(Flow::Client(2), 100)]);
    assert!(queue.is_empty());
    for item in 0..8 {
        queue.push(Flow::Client(3), item).unwrap();
    }
}

#[test]
fn refusals_name_a_metric_label() {
    assert_eq!(Refused::FlowFull { held: 1 }.as_str(), "flow-full");
    assert_eq!(Refused::ControlFull { held: 1 }.as_str(), "control-full");
    assert_eq!(Refused::SharedFull.as_str(), "link-busy");
    assert_eq!(Refused::ReservedFull.as_str(), "link-busy");
}

// ---- Properties over random operation sequences, checked against a plain model. ----

#[derive(Debug, Clone)]
enum Op {
    /// Push the next item id into flow `n` (0: control, else client `n`).
    Push(u8),
    Pop,
    Remove(u8),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u8..6).prop_map(Op::Push),
        3 => Just(Op::Pop),
        1 => (1u8..6).prop_map(Op::Remove),
    ]
}

fn arbitrary_limits() -> impl Strategy<Value = FairQueueLimits> {
    (1usize..6, 0usize..4, 0usize..8, 0usize..8, 0usize..4).prop_map(
        |(per_flow, reserved_per_flow, reserved_total, shared, control)| FairQueueLimits {
            per_flow,
            reserved_per_flow,
            reserved_total,
            shared,
            control,
        },
    )
}

fn flow_of(n: u8) -> Flow<u8> {
    if n == 0 {
        Flow::Control
    } else {
        Flow::Client(n)
    }
}

/// What one step did, with the model's per-flow lengths just before it.
#[derive(Debug)]
enum Step {
    Pushed {
        flow: Flow<u8>,
        before: BTreeMap<Flow<u8>, usize>,
        result: Result<(), Refused>,
    },
    Popped(Flow<u8>),
    /// A flow got its first item (it joins the round).
    Busy(Flow<u8>),
    Emptied(Flow<u8>),
}

/// Runs `ops` on a queue and on a model (per-flow FIFOs); asserts after every operation that
/// the queue agrees with the model (nothing lost, duplicated or reordered; lengths), and
/// returns what happened for the invariants below.
fn run(limits: FairQueueLimits, ops: &[Op]) -> Vec<Step> {
    let mut queue = Queue::new(limits);
    let mut model: BTreeMap<Flow<u8>, VecDeque<u32>> = BTreeMap::new();
    let mut steps = Vec::new();
    let mut next_item = 0u32;
    for op in ops {
        let lengths: BTreeMap<_, _> = model.iter().map(|(f, q)| (*f, q.len())).collect();
        match op {
            Op::Push(n) => {
                let flow = flow_of(*n);
                next_item += 1;
                let result = queue.push(flow, next_item);
                if result.is_ok() {
                    let entry = model.entry(flow).or_default();
                    if entry.is_empty() {
                        steps.push(Step::Busy(flow));
                    }
                    entry.push_back(next_item);
                }
                steps.push(Step::Pushed {
                    flow,
                    before: lengths,
                    result,
                });
            }
            Op::Pop => match queue.pop() {
                Some((flow, item)) => {
                    let expected = model.get_mut(&flow).and_then(VecDeque::pop_front);
                    assert_eq!(expected, Some(item), "{flow:?} served out of order");
                    steps.push(Step::Popped(flow));
                    if model.get(&flow).is_some_and(VecDeque::is_empty) {
                        model.remove(&flow);
                        steps.push(Step::Emptied(flow));
                    }
                }
                None => assert!(model.is_empty(), "items lost: {model:?}"),
            },
            Op::Remove(n) => {
                let dropped = queue.remove_flow(n);
                let held = model.remove(&Flow::Client(*n)).map_or(0, |q| q.len());
                assert_eq!(dropped, held);
                if held > 0 {
                    steps.push(Step::Emptied(Flow::Client(*n)));
                }
            }
        }
        for (flow, items) in &model {
            assert_eq!(queue.flow_len(flow), items.len());
        }
        let total: usize = model.values().map(VecDeque::len).sum();
        assert_eq!(queue.len(), total);
        assert_eq!(queue.busy_flows(), model.len());
        assert_eq!(queue.is_empty(), model.is_empty());
    }
    // Whatever is left drains exactly as the model holds it.
    while let Some((flow, item)) = queue.pop() {
        assert_eq!(
            model.get_mut(&flow).and_then(VecDeque::pop_front),
            Some(item)
        );
        if model.get(&flow).is_some_and(VecDeque::is_empty) {
            model.remove(&flow);
        }
    }
    assert!(model.is_empty(), "items never served: {model:?}");
    steps
}

fn reserved_used(lengths: &BTreeMap<Flow<u8>, usize>, limits: &FairQueueLimits) -> usize {
    lengths
        .iter()
        .filter(|(flow, _)| **flow != Flow::Control)
        .map(|(_, len)| (*len).min(limits.reserved_per_flow))
        .sum()
}

fn shared_used(lengths: &BTreeMap<Flow<u8>, usize>, limits: &FairQueueLimits) -> usize {
    lengths
        .iter()
        .filter(|(flow, _)| **flow != Flow::Control)
        .map(|(_, len)| len.saturating_sub(limits.reserved_per_flow))
        .sum()
}

proptest! {
    /// Every accepted item is served exactly once, in its flow's order, unless its flow was
    /// removed (checked inside `run` after every operation and by the final drain).
    #[test]
    fn nothing_is_lost_duplicated_or_reordered_within_a_flow(
        limits in arbitrary_limits(),
        ops in proptest::collection::vec(op(), 1..200),
    ) {
        run(limits, &ops);
    }

    /// From the moment a flow holds items until it is served, and between two of its items,
    /// every other flow is served at most once.
    #[test]
    fn between_two_pops_of_a_busy_flow_each_other_flow_is_served_at_most_once(
        limits in arbitrary_limits(),
        ops in proptest::collection::vec(op(), 1..200),
    ) {
        // For each busy flow: how often each other flow was served since it became busy or
        // was last served.
        let mut served_since: BTreeMap<Flow<u8>, BTreeMap<Flow<u8>, usize>> = BTreeMap::new();
        for step in run(limits, &ops) {
            match step {
                Step::Busy(flow) => { served_since.insert(flow, BTreeMap::new()); }
                Step::Emptied(flow) => { served_since.remove(&flow); }
                Step::Popped(flow) => {
                    for (waiting, others) in served_since.iter_mut() {
                        if *waiting == flow {
                            others.clear();
                        } else {
                            let count = others.entry(flow).or_default();
                            *count += 1;
                            prop_assert!(*count <= 1, "{flow:?} served twice while {waiting:?} waited");
                        }
                    }
                }
                Step::Pushed { .. } => {}
            }
        }
    }

    /// After every push: no client flow over `per_flow`, the reserved and shared rooms and
    /// the control room within their limits, the whole queue within `max_items`.
    #[test]
    fn caps_hold_after_every_push(
        limits in arbitrary_limits(),
        ops in proptest::collection::vec(op(), 1..200),
    ) {
        for step in run(limits, &ops) {
            let Step::Pushed { flow, mut before, result: Ok(()) } = step else { continue };
            *before.entry(flow).or_default() += 1;
            for (flow, len) in &before {
                let cap = if *flow == Flow::Control { limits.control } else { limits.per_flow };
                prop_assert!(*len <= cap, "{flow:?} holds {len}");
            }
            prop_assert!(reserved_used(&before, &limits) <= limits.reserved_total);
            prop_assert!(shared_used(&before, &limits) <= limits.shared);
            prop_assert!(before.values().sum::<usize>() <= limits.max_items());
        }
    }

    /// A control item is refused only when the control flow itself is at its limit, however
    /// many client items are queued: client items never take the control room.
    #[test]
    fn a_control_item_is_refused_only_when_the_control_flow_is_at_its_limit(
        limits in arbitrary_limits(),
        ops in proptest::collection::vec(op(), 1..200),
    ) {
        for step in run(limits, &ops) {
            if let Step::Pushed { flow: Flow::Control, before, result } = step {
                let held = before.get(&Flow::Control).copied().unwrap_or(0);
                prop_assert_eq!(result.is_err(), held >= limits.control);
            }
        }
    }

    /// A client flow holding fewer than its reserved items is refused only when the reserved
    /// room is taken; every refusal names the bound that is actually reached.
    #[test]
    fn a_client_flow_below_its_reservation_is_refused_only_when_the_reserved_room_is_taken(
        limits in arbitrary_limits(),
        ops in proptest::collection::vec(op(), 1..200),
    ) {
        for step in run(limits, &ops) {
            let Step::Pushed { flow: flow @ Flow::Client(_), before, result } = step else {
                continue;
            };
            let held = before.get(&flow).copied().unwrap_or(0);
            let reserved_full = reserved_used(&before, &limits) >= limits.reserved_total;
            let shared_full = shared_used(&before, &limits) >= limits.shared;
            let expected = if held >= limits.per_flow {
                Err(Refused::FlowFull { held })
            } else if held < limits.reserved_per_flow {
                if reserved_full { Err(Refused::ReservedFull) } else { Ok(()) }
            } else if shared_full {
                Err(Refused::SharedFull)
            } else {
                Ok(())
            };
            prop_assert_eq!(result, expected);
        }
    }
}
