//! The single-core Schnorr-verification ceiling: how many events one core verifies per second
//! with the code the gateway runs on every write, so EVENT-under-lease reads as a fraction of it.
//!
//! Contract: `count` events are signed first (not timed); then, on the calling thread alone,
//! every event is verified with [`Event::verify`] (NIP-01 id recomputed with SHA-256, then the
//! BIP-340 signature through the core's [`SignatureVerifier`], i.e. the `secp256k1` crate the
//! gateway uses); then the signatures alone with [`SignatureVerifier::verify_schnorr`]. Each
//! pass is timed as a whole. A failed verification is an error (the figures would be of the
//! wrong work). Run it on an otherwise idle core: it measures the CPU, not the gateway.

use std::time::Instant;

use anyhow::{Context as _, bail};
use hypergate_core::nostr::{ClientMessage, Event, Limits, SignatureVerifier};

use super::events::EventPool;

/// One measurement.
#[derive(Debug, Clone, Copy, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SchnorrCeiling {
    /// Events verified.
    pub events: usize,
    /// Full event verification (id + signature) per second, one core.
    pub events_per_second: f64,
    /// Signature-only verifications per second, one core.
    pub signatures_per_second: f64,
}

/// Signs `count` events and times their verification on this thread.
pub fn measure(count: usize) -> anyhow::Result<SchnorrCeiling> {
    if count == 0 {
        bail!("the Schnorr ceiling needs at least one event");
    }
    let created_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .context("the clock is before 1970")?
        .as_secs();
    let pool = EventPool::sign("schnorr-ceiling", count, created_at, 200)?;
    let limits = Limits::default();
    let mut events: Vec<Event> = Vec::with_capacity(count);
    while let Some(signed) = pool.take() {
        match ClientMessage::parse(&signed.frame, &limits) {
            Ok(ClientMessage::Event(event)) => events.push(*event),
            _ => bail!("a pooled frame is not an EVENT"),
        }
    }
    let verifier = SignatureVerifier::new();

    let started = Instant::now();
    for event in &events {
        event
            .verify(&verifier)
            .context("a pooled event failed verification")?;
    }
    let full = started.elapsed().as_secs_f64();

    let started = Instant::now();
    for event in &events {
        verifier
            .verify_schnorr(&event.pubkey, &event.id, &event.sig)
            .context("a pooled signature failed verification")?;
    }
    let signatures = started.elapsed().as_secs_f64();

    let per_second = |secs: f64| count as f64 / secs.max(f64::MIN_POSITIVE);
    Ok(SchnorrCeiling {
        events: count,
        events_per_second: per_second(full),
        signatures_per_second: per_second(signatures),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceiling_verifies_every_event_and_reports_positive_rates() {
        let ceiling = measure(16).unwrap();
        assert_eq!(ceiling.events, 16);
        assert!(ceiling.events_per_second > 0.0);
        assert!(ceiling.signatures_per_second > 0.0);
        assert!(measure(0).is_err());
    }
}
