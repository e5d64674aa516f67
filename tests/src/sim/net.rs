//! The simulation's network: seeded latency, loss, duplication (and so
//! reordering), partitions between any two parties, and parties that are down.
//!
//! Contract: [`Net::send`] decides a message's fate at send time from the
//! seeded RNG — dropped (loss, partition, either end down), delivered once,
//! or delivered twice — and queues it by delivery time; [`Net::pop_due`]
//! yields messages in (time, send order). A party that goes down loses what
//! was in flight to it: delivery re-checks that the receiver is up and still
//! reachable from the sender.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use rand::Rng;
use rand_chacha::ChaCha8Rng;

/// A party on the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Node {
    /// The gateway.
    Gateway,
    /// The escrow service.
    Escrow,
    /// Worker number `n`.
    Worker(usize),
}

/// Network behaviour.
#[derive(Debug, Clone, Copy)]
pub struct NetConfig {
    /// Shortest one-way latency.
    pub min_latency: Duration,
    /// Longest one-way latency (different latencies reorder messages).
    pub max_latency: Duration,
    /// Probability a message is lost.
    pub loss: f64,
    /// Probability a message is delivered twice.
    pub duplicate: f64,
}

impl Default for NetConfig {
    fn default() -> Self {
        Self {
            min_latency: Duration::from_millis(1),
            max_latency: Duration::from_millis(80),
            loss: 0.01,
            duplicate: 0.01,
        }
    }
}

/// A message in flight.
#[derive(Debug, Clone)]
pub struct Envelope<P> {
    /// Sender.
    pub from: Node,
    /// Receiver.
    pub to: Node,
    /// Content.
    pub payload: P,
}

/// The network.
#[derive(Debug)]
pub struct Net<P> {
    config: NetConfig,
    queue: BTreeMap<(Instant, u64), Envelope<P>>,
    next_seq: u64,
    partitions: BTreeSet<(Node, Node)>,
    down: BTreeSet<Node>,
}

impl<P: Clone> Net<P> {
    /// An empty, fully connected network.
    pub fn new(config: NetConfig) -> Self {
        Self {
            config,
            queue: BTreeMap::new(),
            next_seq: 0,
            partitions: BTreeSet::new(),
            down: BTreeSet::new(),
        }
    }

    fn pair(a: Node, b: Node) -> (Node, Node) {
        if a <= b { (a, b) } else { (b, a) }
    }

    /// Whether `a` and `b` can exchange messages now.
    pub fn connected(&self, a: Node, b: Node) -> bool {
        !self.partitions.contains(&Self::pair(a, b))
            && !self.down.contains(&a)
            && !self.down.contains(&b)
    }

    /// Cuts `a` from `b` (both directions).
    pub fn partition(&mut self, a: Node, b: Node) {
        self.partitions.insert(Self::pair(a, b));
    }

    /// Reconnects `a` and `b`.
    pub fn heal(&mut self, a: Node, b: Node) {
        self.partitions.remove(&Self::pair(a, b));
    }

    /// Reconnects everything.
    pub fn heal_all(&mut self) {
        self.partitions.clear();
    }

    /// Marks a party down (it neither sends nor receives) or up.
    pub fn set_down(&mut self, node: Node, down: bool) {
        if down {
            self.down.insert(node);
        } else {
            self.down.remove(&node);
        }
    }

    /// Whether a party is down.
    pub fn is_down(&self, node: Node) -> bool {
        self.down.contains(&node)
    }

    /// Sends a message; its fate is decided now.
    pub fn send(&mut self, rng: &mut ChaCha8Rng, from: Node, to: Node, payload: P, now: Instant) {
        if !self.connected(from, to) || rng.random_bool(self.config.loss) {
            return;
        }
        let copies = if rng.random_bool(self.config.duplicate) {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let span = self
                .config
                .max_latency
                .saturating_sub(self.config.min_latency)
                .as_millis() as u64;
            let latency =
                self.config.min_latency + Duration::from_millis(rng.random_range(0..=span));
            let seq = self.next_seq;
            self.next_seq += 1;
            self.queue.insert(
                (now + latency, seq),
                Envelope {
                    from,
                    to,
                    payload: payload.clone(),
                },
            );
        }
    }

    /// When the next message is due.
    pub fn next_due(&self) -> Option<Instant> {
        self.queue.keys().next().map(|(at, _)| *at)
    }

    /// The next message due at or before `now` that can still be delivered.
    pub fn pop_due(&mut self, now: Instant) -> Option<Envelope<P>> {
        loop {
            let (&(at, seq), _) = self.queue.iter().next()?;
            if at > now {
                return None;
            }
            let envelope = self.queue.remove(&(at, seq))?;
            if self.connected(envelope.from, envelope.to) {
                return Some(envelope);
            }
        }
    }
}
