//! The expiry sweep: one task that sleeps until the core's next lease
//! deadline (or at most `max_interval`, the original's 30 s cleanup cadence
//! as a safety net) and then ends what is due, so a lease expires at its TTL
//! on the escrow side even if no request ever arrives.
//!
//! Every change to the state wakes the task (a `Notify` permit, so a wake-up
//! between reading the deadline and sleeping is never lost) to re-read the
//! deadline: a lease issued with a shorter TTL than the current sleep is not
//! overslept. A failing step (audit or store down) is logged and retried on
//! the next wake-up.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::escrow::service::EscrowService;

/// Runs until `shutdown` turns true.
pub(crate) async fn run_expiry_sweep(
    service: Arc<EscrowService>,
    max_interval: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let cap = Instant::now() + max_interval;
        let wake = service
            .next_deadline()
            .await
            .map_or(cap, |deadline| deadline.min(cap));
        tokio::select! {
            () = tokio::time::sleep_until(wake.into()) => {}
            () = service.changed.notified() => continue,
            _ = shutdown.changed() => return,
        }
        if *shutdown.borrow() {
            return;
        }
        if let Err(error) = service.expire_due().await {
            tracing::warn!(%error, "escrow expiry sweep failed; retrying at the next deadline");
            // Do not spin on a deadline that cannot be recorded right now.
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}
