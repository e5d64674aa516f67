//! Pre-signed events for the load generator.
//!
//! Contract: signing is client cost, so a pool is signed before a timed run starts and the
//! run only hands frames out. Every event is distinct (a per-pool label and an index in the
//! content), carries a correct NIP-01 id and a BIP-340 signature by one of a few authors
//! derived from the label, and is kind 1 with `created_at` = the Unix time given. A pool
//! hands each frame out once, to whichever connection asks first; when it is empty the run
//! stops sending events rather than repeat one (a duplicate is answered without the work of
//! a new write).

use std::sync::atomic::{AtomicUsize, Ordering};

use hypergate_core::nostr::{ClientMessage, Event, EventId, Kind, PublicKey, Signature};
use secp256k1::{Keypair, Secp256k1};
use sha2::{Digest as _, Sha256};

/// How many authors a pool's events are spread over.
const AUTHORS: usize = 16;

/// Why a pool could not be signed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EventPoolError {
    /// A derived secret key was not a valid secp256k1 scalar (probability ≈ 2⁻¹²⁸).
    #[error("a derived secret key is not valid: {0}")]
    Key(#[from] secp256k1::Error),
}

/// One ready-to-send `["EVENT", …]` frame and the id its `OK` will name.
#[derive(Debug, Clone)]
pub struct SignedFrame {
    /// The event id in lowercase hex.
    pub id: String,
    /// The whole client frame.
    pub frame: String,
}

/// Signed event frames, handed out once each.
#[derive(Debug)]
pub struct EventPool {
    frames: Vec<SignedFrame>,
    next: AtomicUsize,
}

impl EventPool {
    /// Signs `count` events labelled `label` (make it unique per run and phase) with
    /// `created_at`; `content_bytes` of padding make the events realistically sized.
    pub fn sign(
        label: &str,
        count: usize,
        created_at: u64,
        content_bytes: usize,
    ) -> Result<EventPool, EventPoolError> {
        let secp = Secp256k1::signing_only();
        let authors = (0..AUTHORS)
            .map(|n| {
                let secret: [u8; 32] =
                    Sha256::digest(format!("hypergate bench {label} {n}")).into();
                Keypair::from_seckey_slice(&secp, &secret)
            })
            .collect::<Result<Vec<_>, _>>()?;
        let padding = "x".repeat(content_bytes);
        let frames = (0..count)
            .zip(authors.iter().cycle())
            .map(|(index, keypair)| {
                let mut event = Event {
                    id: EventId([0; 32]),
                    pubkey: PublicKey(keypair.x_only_public_key().0.serialize()),
                    created_at,
                    kind: Kind(1),
                    tags: Vec::new(),
                    content: format!("bench {label} #{index} {padding}"),
                    sig: Signature([0; 64]),
                };
                event.id = event.compute_id();
                let signature = secp.sign_schnorr_no_aux_rand(&event.id.0, keypair);
                event.sig = Signature(*signature.as_ref());
                SignedFrame {
                    id: event.id.to_hex(),
                    frame: ClientMessage::Event(Box::new(event)).to_json(),
                }
            })
            .collect();
        Ok(EventPool {
            frames,
            next: AtomicUsize::new(0),
        })
    }

    /// [`EventPool::sign`] split over `threads` threads (chunk `t` labelled `{label}/{t}`), for
    /// pools large enough that signing on one core would take longer than the run.
    pub fn sign_parallel(
        label: &str,
        count: usize,
        created_at: u64,
        content_bytes: usize,
        threads: usize,
    ) -> Result<EventPool, EventPoolError> {
        let threads = threads.clamp(1, count.max(1));
        let chunk = count.div_ceil(threads);
        let chunks = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..threads)
                .map(|t| {
                    let size = chunk.min(count.saturating_sub(t * chunk));
                    let label = format!("{label}/{t}");
                    scope.spawn(move || EventPool::sign(&label, size, created_at, content_bytes))
                })
                .collect();
            handles
                .into_iter()
                .map(|handle| {
                    handle
                        .join()
                        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
                })
                .collect::<Vec<_>>()
        });
        let mut frames = Vec::with_capacity(count);
        for pool in chunks {
            frames.extend(pool?.frames);
        }
        Ok(EventPool {
            frames,
            next: AtomicUsize::new(0),
        })
    }

    /// The next unsent frame; `None` once all were handed out.
    pub fn take(&self) -> Option<&SignedFrame> {
        let index = self.next.fetch_add(1, Ordering::Relaxed);
        self.frames.get(index)
    }

    /// How many frames the pool was signed with.
    #[must_use]
    pub fn len(&self) -> usize {
        self.frames.len()
    }

    /// Whether the pool was signed empty.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    /// Whether every frame was handed out.
    #[must_use]
    pub fn exhausted(&self) -> bool {
        self.next.load(Ordering::Relaxed) >= self.frames.len()
    }
}

#[cfg(test)]
mod tests {
    use hypergate_core::nostr::{Limits, SignatureVerifier};

    use super::*;

    #[test]
    fn pooled_events_are_distinct_verified_and_handed_out_once() {
        let pool = EventPool::sign("t", 20, 1_700_000_000, 32).unwrap();
        let verifier = SignatureVerifier::new();
        let mut seen = std::collections::BTreeSet::new();
        while let Some(signed) = pool.take() {
            let Ok(ClientMessage::Event(event)) =
                ClientMessage::parse(&signed.frame, &Limits::default())
            else {
                panic!("not an EVENT frame: {}", signed.frame);
            };
            event.verify(&verifier).unwrap();
            assert_eq!(event.id.to_hex(), signed.id);
            assert!(seen.insert(signed.id.clone()), "handed out twice");
        }
        assert_eq!(seen.len(), 20);
        assert!(pool.exhausted());
        assert!(pool.take().is_none());
    }

    #[test]
    fn a_pool_signed_in_parallel_has_the_count_asked_for_and_no_repeats() {
        let pool = EventPool::sign_parallel("p", 7, 1_700_000_000, 8, 3).unwrap();
        assert_eq!(pool.len(), 7);
        let mut seen = std::collections::BTreeSet::new();
        while let Some(signed) = pool.take() {
            assert!(seen.insert(signed.id.clone()), "repeated event");
        }
        assert_eq!(seen.len(), 7);
    }
}
