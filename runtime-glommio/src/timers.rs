//! The timer half of the core's drive loop, on glommio timers.
//!
//! Contract: [`run_timers_until`] sleeps until the gateway core's next
//! deadline, calls `handle_timeout` with the time the timer actually fired,
//! hands every drained event to `on_event`, and repeats until `until`. It
//! never fires a deadline early. The full glommio gateway adds sockets to
//! the same loop; the core is untouched.
//!
//! [`GlommioTimer`] is the same timer as the peer link's
//! [`Sleeper`]: a sleep started on it completes no earlier than asked. Like
//! every glommio timer it works only on a glommio executor thread.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hypergate_adapters::clock::{Clock, SystemClock};
use hypergate_adapters::peer_link::Sleeper;
use hypergate_core::gateway::{Gateway, GatewayEvent};

/// glommio's timer as the peer link's [`Sleeper`] (heartbeats, dead-peer and
/// handshake timeouts). A named type, so a glommio link's type can be written
/// down: `Established<TcpStream, GlommioTimer>`.
#[derive(Debug, Clone, Copy, Default)]
pub struct GlommioTimer;

/// One sleep of a [`GlommioTimer`]; the clock starts when it is created.
#[derive(Debug)]
pub struct GlommioSleep(glommio::timer::Timer);

impl Sleeper for GlommioTimer {
    type Sleep = GlommioSleep;

    fn sleep(&self, duration: Duration) -> GlommioSleep {
        GlommioSleep(glommio::timer::Timer::new(duration))
    }
}

impl Future for GlommioSleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        Pin::new(&mut self.0).poll(cx).map(|_fired_at| ())
    }
}

/// Drives `gateway`'s timers on the current glommio executor until `until`.
pub async fn run_timers_until(
    gateway: &mut Gateway,
    until: Instant,
    mut on_event: impl FnMut(Instant, GatewayEvent),
) {
    let clock = SystemClock;
    loop {
        let now = clock.now();
        while let Some(event) = gateway.poll_event() {
            on_event(now, event);
        }
        // Frames queued for peers have no link to go to in this timer-only loop.
        while gateway.poll_transmit().is_some() {}
        let next = gateway
            .poll_timeout()
            .map_or(until, |(deadline, _)| deadline.min(until));
        if next > now {
            glommio::timer::sleep(next - now).await;
        }
        let fired = clock.now();
        if fired >= until {
            return;
        }
        gateway.handle_timeout(fired);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::executor::start;
    use hypergate_core::gateway::GatewayConfig;
    use hypergate_core::health::{HealthConfig, HealthEvent, PeerHealth};
    use hypergate_core::ids::PeerId;

    #[test]
    fn a_silent_peer_goes_down_on_glommio_timers_no_earlier_than_its_deadline() {
        let transitions = start("hypergate-timers-test", 2, || async {
            let clock = SystemClock;
            let config = GatewayConfig {
                health: HealthConfig {
                    heartbeat_interval: Duration::from_millis(40),
                    miss_limit: 2,
                    failure_limit: 3,
                },
                ..GatewayConfig::default()
            };
            let start = clock.now();
            let mut gateway = Gateway::new(config, start, clock.unix_now());
            gateway.handle_link_up(PeerId([1; 32]), start);
            let mut transitions = Vec::new();
            run_timers_until(
                &mut gateway,
                start + Duration::from_millis(400),
                |at, event| {
                    if let GatewayEvent::Health(HealthEvent::PeerChanged { to, .. }) = event {
                        transitions.push((to, at.duration_since(start)));
                    }
                },
            )
            .await;
            transitions
        })
        .unwrap();
        let states: Vec<PeerHealth> = transitions.iter().map(|(to, _)| *to).collect();
        assert_eq!(
            states,
            vec![PeerHealth::Healthy, PeerHealth::Suspect, PeerHealth::Down]
        );
        // Suspect after 1.5 intervals, down after 2.5: never early.
        assert!(transitions[1].1 >= Duration::from_millis(60));
        assert!(transitions[2].1 >= Duration::from_millis(100));
    }
}
