//! The relay index's layout as plain byte keys, shared by every store under test, and a seeded
//! generator of events that look like a relay's (small author, kind and tag pools so that
//! queries hit).
//!
//! Tables (all keys sort bytewise; `rev(t) = u64::MAX - t` big-endian, so ascending key order is
//! `created_at` descending and then id ascending, NIP-01's order):
//! - `events`: `id` → encoded event
//! - `by_time`: `rev(created_at) ‖ id` → ()
//! - `by_author`: `pubkey ‖ rev(created_at) ‖ id` → ()
//! - `by_kind`: `kind (u16 BE) ‖ rev(created_at) ‖ id` → ()
//! - `by_tag`: `letter ‖ len ‖ value ‖ rev(created_at) ‖ id` → ()

/// One generated event, already encoded.
pub struct Ev {
    pub id: [u8; 32],
    pub pubkey: [u8; 32],
    pub created_at: u64,
    pub kind: u16,
    /// Single-letter tags: (letter, value).
    pub tags: Vec<(u8, Vec<u8>)>,
    /// The stored value: header + tags + content (what a compact encoding would be).
    pub value: Vec<u8>,
}

/// Index tables other than `events`.
#[derive(Clone, Copy, Debug)]
pub enum Table {
    Time,
    Author,
    Kind,
    Tag,
}

pub const TABLES: [Table; 4] = [Table::Time, Table::Author, Table::Kind, Table::Tag];

/// splitmix64: a seeded generator with no dependency.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    pub fn bytes32(&mut self) -> [u8; 32] {
        let mut out = [0u8; 32];
        for chunk in out.chunks_mut(8) {
            chunk.copy_from_slice(&self.next_u64().to_le_bytes());
        }
        out
    }
}

pub const AUTHORS: usize = 1_000;
pub const HASHTAGS: usize = 50;
pub const START: u64 = 1_700_000_000;
pub const SPAN: u64 = 365 * 86_400;

pub struct Pools {
    pub authors: Vec<[u8; 32]>,
}

impl Pools {
    pub fn new(rng: &mut Rng) -> Pools {
        Pools {
            authors: (0..AUTHORS).map(|_| rng.bytes32()).collect(),
        }
    }
}

/// `count` events; `e` tags point at earlier events so that thread queries hit.
pub fn generate(rng: &mut Rng, pools: &Pools, count: usize) -> Vec<Ev> {
    let mut events: Vec<Ev> = Vec::with_capacity(count);
    for _ in 0..count {
        let id = rng.bytes32();
        let pubkey = pools.authors[rng.below(AUTHORS as u64) as usize];
        let created_at = START + rng.below(SPAN);
        let kind: u16 = match rng.below(10) {
            0..=6 => 1,
            7 | 8 => 7,
            _ => 6,
        };
        let mut tags = Vec::new();
        if !events.is_empty() && rng.below(2) == 0 {
            let target = &events[rng.below(events.len() as u64) as usize];
            tags.push((b'e', hex(&target.id).into_bytes()));
            tags.push((b'p', hex(&target.pubkey).into_bytes()));
        }
        if rng.below(4) == 0 {
            tags.push((
                b't',
                format!("tag{}", rng.below(HASHTAGS as u64)).into_bytes(),
            ));
        }
        let content_len = 50 + rng.below(350) as usize;
        let mut value = Vec::with_capacity(200 + content_len);
        value.extend_from_slice(&id);
        value.extend_from_slice(&pubkey);
        value.extend_from_slice(&created_at.to_le_bytes());
        value.extend_from_slice(&kind.to_le_bytes());
        for (letter, tag_value) in &tags {
            value.push(*letter);
            value.push(tag_value.len() as u8);
            value.extend_from_slice(tag_value);
        }
        value.extend((0..content_len).map(|i| b'a' + (i % 26) as u8));
        value.extend_from_slice(&[0u8; 64]);
        events.push(Ev {
            id,
            pubkey,
            created_at,
            kind,
            tags,
            value,
        });
    }
    events
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn rev(created_at: u64) -> [u8; 8] {
    (u64::MAX - created_at).to_be_bytes()
}

/// The kind stored in an encoded value (bytes 72..74).
pub fn value_kind(value: &[u8]) -> u16 {
    u16::from_le_bytes([value[72], value[73]])
}

pub fn tag_prefix(letter: u8, value: &[u8]) -> Vec<u8> {
    let mut key = vec![letter, value.len() as u8];
    key.extend_from_slice(value);
    key
}

/// Every index key of `ev`, by table.
pub fn index_keys(ev: &Ev) -> Vec<(Table, Vec<u8>)> {
    let rev = rev(ev.created_at);
    let suffix: Vec<u8> = rev.iter().chain(ev.id.iter()).copied().collect();
    let mut keys = vec![
        (Table::Time, suffix.clone()),
        (Table::Author, [&ev.pubkey[..], &suffix].concat()),
        (Table::Kind, [&ev.kind.to_be_bytes()[..], &suffix].concat()),
    ];
    for (letter, value) in &ev.tags {
        keys.push((
            Table::Tag,
            [tag_prefix(*letter, value), suffix.clone()].concat(),
        ));
    }
    keys
}

/// Inclusive key bounds of `prefix` restricted to `since..=until`.
pub fn bounds(prefix: &[u8], since: u64, until: u64) -> (Vec<u8>, Vec<u8>) {
    let lo = [prefix, &rev(until)[..], &[0u8; 32][..]].concat();
    let hi = [prefix, &rev(since)[..], &[0xffu8; 32][..]].concat();
    (lo, hi)
}

/// A key's trailing id.
pub fn key_id(key: &[u8]) -> [u8; 32] {
    let mut id = [0u8; 32];
    id.copy_from_slice(&key[key.len() - 32..]);
    id
}
