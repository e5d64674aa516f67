use proptest::prelude::*;

use super::*;
use crate::time::test_start;
use crate::wire::MAX_PENDING_REASON_BYTES;

const RELAY: RelayKey = RelayKey([3; 32]);
const SECOND: Duration = Duration::from_secs(1);

fn relay(n: u32) -> RelayKey {
    let mut bytes = [7; 32];
    bytes[..4].copy_from_slice(&n.to_be_bytes());
    RelayKey(bytes)
}

fn no_jitter() -> PushConfig {
    PushConfig {
        jitter: 0.0,
        ..PushConfig::default()
    }
}

fn notice(relay: RelayKey, updated_at: u64) -> PendingNotice {
    let mut notice = PendingNotice::new(relay, "replica-write", UnixTime(updated_at));
    notice.types.insert(PendingType::Event);
    notice
}

fn pushes(scheduler: &mut PushScheduler) -> Vec<OutboundPush> {
    std::iter::from_fn(|| scheduler.poll_push()).collect()
}

fn events(scheduler: &mut PushScheduler) -> Vec<PushEvent> {
    std::iter::from_fn(|| scheduler.poll_event()).collect()
}

/// Runs the relay's timer once: fires it at its deadline and returns the pushes it produced.
fn fire(scheduler: &mut PushScheduler) -> (Instant, Vec<OutboundPush>) {
    let (at, _) = scheduler.poll_timeout().expect("a deadline is armed");
    scheduler.handle_timeout(at);
    (at, pushes(scheduler))
}

/// The delays between the first push (at `t0`) and the next `rounds` retries of a
/// relay whose worker never acknowledges.
fn retry_delays(config: PushConfig, seed: u64, rounds: usize) -> Vec<Duration> {
    let t0 = test_start();
    let mut scheduler = PushScheduler::new(config, seed);
    let _ = scheduler.notify_pending(notice(RELAY, 1), true, t0);
    assert_eq!(pushes(&mut scheduler).len(), 1);
    let mut previous = t0;
    let mut delays = Vec::new();
    for _ in 0..rounds {
        let (at, sent) = fire(&mut scheduler);
        assert_eq!(
            sent.len(),
            1,
            "every round pushes while a worker is reachable"
        );
        delays.push(at - previous);
        previous = at;
    }
    delays
}

#[test]
fn first_push_is_immediate_when_a_worker_is_reachable() {
    let t0 = test_start();
    let mut scheduler = PushScheduler::new(PushConfig::default(), 1);
    let outcome = scheduler.notify_pending(notice(RELAY, 10), true, t0);
    assert_eq!(outcome, NotifyOutcome::Created);
    let sent = pushes(&mut scheduler);
    assert_eq!(
        sent.len(),
        1,
        "pushed within the input, no timer round trip"
    );
    assert_eq!(sent[0].relay, RELAY);
    assert_eq!(sent[0].message.state, PendingState::Pending);
    assert_eq!(sent[0].message.updated_at, UnixTime(10));
    assert_eq!(
        events(&mut scheduler),
        vec![PushEvent::Sent {
            relay: RELAY,
            push_id: sent[0].message.push_id,
            attempt: 1,
            state: PendingState::Pending,
        }]
    );
    let status = scheduler.notice(&RELAY).unwrap();
    assert_eq!((status.state, status.attempts), (NoticeState::Pending, 1));
    assert_eq!(
        scheduler.poll_timeout().map(|(_, why)| why),
        Some("pending-write push")
    );
}

#[test]
fn retries_back_off_30_60_120_240_then_cap_at_300_seconds() {
    let delays = retry_delays(no_jitter(), 1, 7);
    let secs: Vec<u64> = delays.iter().map(Duration::as_secs).collect();
    assert_eq!(secs, [30, 60, 120, 240, 300, 300, 300]);
    assert!(delays.iter().all(|delay| delay.subsec_nanos() == 0));
}

#[test]
fn jittered_delays_stay_within_20_percent_and_replay_per_seed() {
    let nominal = [30u64, 60, 120, 240, 300, 300, 300, 300];
    let delays = retry_delays(PushConfig::default(), 42, nominal.len());
    for (delay, nominal) in delays.iter().zip(nominal) {
        let low = Duration::from_secs(nominal).mul_f64(0.8);
        let high = Duration::from_secs(nominal).mul_f64(1.2);
        assert!(
            (low..=high).contains(delay),
            "{delay:?} is outside ±20 % of {nominal} s"
        );
    }
    assert_eq!(
        delays,
        retry_delays(PushConfig::default(), 42, nominal.len())
    );
    assert_ne!(
        delays,
        retry_delays(PushConfig::default(), 43, nominal.len())
    );
    assert!(
        delays
            .iter()
            .zip(nominal)
            .any(|(d, n)| *d != Duration::from_secs(n)),
        "the jitter is applied"
    );
}

#[test]
fn unreachable_relay_retries_every_15_seconds_without_growing_attempts() {
    let t0 = test_start();
    let mut scheduler = PushScheduler::new(no_jitter(), 1);
    let _ = scheduler.notify_pending(notice(RELAY, 1), false, t0);
    assert!(pushes(&mut scheduler).is_empty());
    let mut previous = t0;
    for _ in 0..5 {
        let (at, sent) = fire(&mut scheduler);
        assert!(sent.is_empty(), "no worker to push to");
        assert_eq!(at - previous, 15 * SECOND);
        previous = at;
        assert_eq!(scheduler.notice(&RELAY).unwrap().attempts, 0);
    }
    assert!(events(&mut scheduler).is_empty());
}

#[test]
fn relay_becoming_reachable_while_waiting_on_base_cadence_is_pushed_at_once() {
    let t0 = test_start();
    let mut scheduler = PushScheduler::new(no_jitter(), 1);
    let _ = scheduler.notify_pending(notice(RELAY, 1), false, t0);
    let (at, sent) = fire(&mut scheduler);
    assert!(sent.is_empty());
    let now = at + 3 * SECOND;
    scheduler.handle_reachability(RELAY, true, now);
    assert_eq!(pushes(&mut scheduler).len(), 1, "pushed at once");
    let status = scheduler.notice(&RELAY).unwrap();
    assert_eq!(status.attempts, 1);
    assert_eq!(
        status.next_deadline,
        Some(now + 30 * SECOND),
        "then the backoff"
    );
    // Reachable again while on the backoff: no extra push (the worker has it).
    scheduler.handle_reachability(RELAY, false, now + SECOND);
    scheduler.handle_reachability(RELAY, true, now + 2 * SECOND);
    assert!(pushes(&mut scheduler).is_empty());
}

#[test]
fn repeated_notice_still_brings_news_of_a_reachable_worker() {
    let t0 = test_start();
    let mut scheduler = PushScheduler::new(no_jitter(), 1);
    let _ = scheduler.notify_pending(notice(RELAY, 1), false, t0);
    let (at, _) = fire(&mut scheduler);
    let outcome = scheduler.notify_pending(notice(RELAY, 1), true, at + SECOND);
    assert_eq!(outcome, NotifyOutcome::Ignored);
    assert_eq!(
        pushes(&mut scheduler).len(),
        1,
        "the waiting notice is pushed at once"
    );
    assert!(scheduler.notice(&RELAY).unwrap().reachable);
}

#[test]
fn ack_stops_retries_and_reports_the_wait_from_the_first_push() {
    let t0 = test_start();
    let mut scheduler = PushScheduler::new(no_jitter(), 1);
    let _ = scheduler.notify_pending(notice(RELAY, 5), true, t0);
    let first = pushes(&mut scheduler).remove(0);
    let (at, _) = fire(&mut scheduler); // a retry 30 s later
    let now = at + 2 * SECOND;
    let outcome = scheduler.handle_ack(RELAY, first.message.push_id, UnixTime(5), now);
    assert_eq!(outcome, Ok(AckOutcome::Acked { wait: 32 * SECOND }));
    let acked = events(&mut scheduler);
    assert!(acked.contains(&PushEvent::Acked {
        relay: RELAY,
        wait: 32 * SECOND
    }));
    assert_eq!(scheduler.notice(&RELAY).unwrap().state, NoticeState::Acked);
    // Another worker's ack of the same state changes nothing.
    assert_eq!(
        scheduler.handle_ack(RELAY, 9, UnixTime(5), now),
        Ok(AckOutcome::AlreadyAcked)
    );
    let (deadline, why) = scheduler.poll_timeout().unwrap();
    assert_eq!(why, "pending-write resync deadline");
    assert_eq!(deadline, now + Duration::from_secs(600));
    scheduler.handle_timeout(deadline - SECOND);
    assert!(pushes(&mut scheduler).is_empty(), "no retry while acked");
}

#[test]
fn stale_ack_does_not_stop_retries() {
    let t0 = test_start();
    let mut scheduler = PushScheduler::new(no_jitter(), 1);
    let _ = scheduler.notify_pending(notice(RELAY, 5), true, t0);
    let _ = scheduler.notify_pending(notice(RELAY, 8), true, t0 + SECOND);
    assert_eq!(pushes(&mut scheduler).len(), 2);
    let outcome = scheduler.handle_ack(RELAY, 1, UnixTime(5), t0 + 2 * SECOND);
    assert_eq!(
        outcome,
        Ok(AckOutcome::Stale {
            current: UnixTime(8)
        })
    );
    assert_eq!(
        scheduler.notice(&RELAY).unwrap().state,
        NoticeState::Pending
    );
    let (at, sent) = fire(&mut scheduler);
    assert_eq!(at, t0 + 31 * SECOND);
    assert_eq!(sent.len(), 1, "retries continue");
}

#[test]
fn newer_notice_replaces_the_stored_one_and_an_older_one_is_ignored() {
    let t0 = test_start();
    let mut scheduler = PushScheduler::new(no_jitter(), 1);
    let _ = scheduler.notify_pending(notice(RELAY, 5), true, t0);
    let _ = fire(&mut scheduler);
    let _ = fire(&mut scheduler);
    assert_eq!(scheduler.notice(&RELAY).unwrap().attempts, 3);
    let now = t0 + 100 * SECOND;
    assert_eq!(
        scheduler.notify_pending(notice(RELAY, 5), true, now),
        NotifyOutcome::Ignored
    );
    assert_eq!(
        scheduler.notify_pending(notice(RELAY, 4), true, now),
        NotifyOutcome::Ignored
    );
    assert!(pushes(&mut scheduler).is_empty());
    assert_eq!(
        scheduler.notify_pending(notice(RELAY, 6), true, now),
        NotifyOutcome::Updated
    );
    let sent = pushes(&mut scheduler);
    assert_eq!(sent.len(), 1, "pushed at once");
    assert_eq!(sent[0].message.updated_at, UnixTime(6));
    let status = scheduler.notice(&RELAY).unwrap();
    assert_eq!(status.attempts, 1, "attempts restarted");
    assert_eq!(status.next_deadline, Some(now + 30 * SECOND));
}

#[test]
fn acked_notice_is_pushed_again_when_the_resync_deadline_passes() {
    let t0 = test_start();
    let mut scheduler = PushScheduler::new(no_jitter(), 1);
    let _ = scheduler.notify_pending(notice(RELAY, 5), true, t0);
    let _ = scheduler
        .handle_ack(RELAY, 1, UnixTime(5), t0 + SECOND)
        .unwrap();
    let _ = (pushes(&mut scheduler), events(&mut scheduler));
    let (at, sent) = fire(&mut scheduler);
    assert_eq!(at, t0 + 601 * SECOND);
    assert_eq!(sent.len(), 1, "pushed again at once");
    let after = events(&mut scheduler);
    assert_eq!(after[0], PushEvent::ResyncOverdue { relay: RELAY });
    assert!(matches!(after[1], PushEvent::Sent { attempt: 1, .. }));
    let status = scheduler.notice(&RELAY).unwrap();
    assert_eq!((status.state, status.attempts), (NoticeState::Pending, 1));
    assert_eq!(
        status.next_deadline,
        Some(at + 30 * SECOND),
        "with a fresh backoff"
    );
    // The new round's wait is measured from its own first push.
    let outcome = scheduler.handle_ack(RELAY, 2, UnixTime(5), at + 4 * SECOND);
    assert_eq!(outcome, Ok(AckOutcome::Acked { wait: 4 * SECOND }));
}

#[test]
fn resync_of_an_older_state_keeps_the_notice_pending_and_pushes_it_again() {
    let t0 = test_start();
    let mut scheduler = PushScheduler::new(no_jitter(), 1);
    let _ = scheduler.notify_pending(notice(RELAY, 5), true, t0);
    let _ = scheduler
        .handle_ack(RELAY, 1, UnixTime(5), t0 + SECOND)
        .unwrap();
    let _ = scheduler.notify_pending(notice(RELAY, 9), true, t0 + 2 * SECOND);
    let _ = scheduler
        .handle_ack(RELAY, 2, UnixTime(9), t0 + 3 * SECOND)
        .unwrap();
    let _ = pushes(&mut scheduler);
    let now = t0 + 10 * SECOND;
    let outcome = scheduler.handle_resync_complete(RELAY, UnixTime(7), UnixTime(100), now);
    assert_eq!(
        outcome,
        Ok(ResyncOutcome::StillPending {
            updated_at: UnixTime(9)
        })
    );
    let sent = pushes(&mut scheduler);
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].message.state, PendingState::Pending);
    assert_eq!(sent[0].message.updated_at, UnixTime(9));
    assert_eq!(
        scheduler.notice(&RELAY).unwrap().state,
        NoticeState::Pending
    );
    assert_eq!(scheduler.pending_count(), 1);
}

#[test]
fn cleared_notice_is_retried_until_acked_then_the_entry_ends() {
    let t0 = test_start();
    let mut scheduler = PushScheduler::new(no_jitter(), 1);
    let _ = scheduler.notify_pending(notice(RELAY, 5), true, t0);
    let _ = scheduler
        .handle_ack(RELAY, 1, UnixTime(5), t0 + SECOND)
        .unwrap();
    let _ = (pushes(&mut scheduler), events(&mut scheduler));
    let now = t0 + 20 * SECOND;
    let outcome = scheduler.handle_resync_complete(RELAY, UnixTime(5), UnixTime(5), now);
    assert_eq!(outcome, Ok(ResyncOutcome::Clearing));
    let sent = pushes(&mut scheduler);
    assert_eq!(sent.len(), 1, "the cleared notice goes out at once");
    let cleared = &sent[0].message;
    assert_eq!(cleared.state, PendingState::Cleared);
    assert_eq!(cleared.cleared_at, Some(UnixTime(5)));
    assert_eq!(
        cleared.updated_at,
        UnixTime(6),
        "newer than the pending notice"
    );
    assert_eq!(
        scheduler.handle_resync_complete(RELAY, UnixTime(5), UnixTime(5), now),
        Ok(ResyncOutcome::AlreadyClearing)
    );
    let (at, retry) = fire(&mut scheduler);
    assert_eq!(at, now + 30 * SECOND, "same backoff as pending pushes");
    assert_eq!(retry[0].message.state, PendingState::Cleared);
    // A late ack of the pending notice does not end the cleared one.
    assert_eq!(
        scheduler.handle_ack(RELAY, 1, UnixTime(5), at),
        Ok(AckOutcome::Stale {
            current: UnixTime(6)
        })
    );
    let _ = events(&mut scheduler);
    assert_eq!(
        scheduler.handle_ack(RELAY, 2, UnixTime(6), at + SECOND),
        Ok(AckOutcome::Cleared)
    );
    assert_eq!(
        events(&mut scheduler),
        vec![PushEvent::Cleared { relay: RELAY }]
    );
    assert!(scheduler.notice(&RELAY).is_none());
    assert!(scheduler.is_empty());
    assert_eq!(scheduler.poll_timeout(), None);
    assert_eq!(
        scheduler.handle_ack(RELAY, 2, UnixTime(6), at + SECOND),
        Err(PushError::UnknownRelay(RELAY))
    );
}

#[test]
fn cleared_notice_is_abandoned_after_its_send_budget() {
    let t0 = test_start();
    let config = PushConfig {
        cleared_max_attempts: 3,
        ..no_jitter()
    };
    let mut scheduler = PushScheduler::new(config, 1);
    let _ = scheduler.notify_pending(notice(RELAY, 5), true, t0);
    let _ = scheduler.handle_resync_complete(RELAY, UnixTime(5), UnixTime(50), t0);
    let _ = events(&mut scheduler);
    let mut cleared_sends = pushes(&mut scheduler).len() - 1; // minus the pending push
    for _ in 0..20 {
        if scheduler.notice(&RELAY).is_none() {
            break;
        }
        let (_, sent) = fire(&mut scheduler);
        cleared_sends += sent.len();
    }
    assert!(
        scheduler.notice(&RELAY).is_none(),
        "given up after its budget"
    );
    assert_eq!(cleared_sends, 3);
    let ended = events(&mut scheduler);
    assert_eq!(
        ended.last(),
        Some(&PushEvent::ClearedAbandoned { relay: RELAY })
    );
    assert_eq!(scheduler.poll_timeout(), None);
}

#[test]
fn pending_count_follows_pending_acked_and_clearing() {
    let t0 = test_start();
    let mut scheduler = PushScheduler::new(no_jitter(), 1);
    for n in 0..3 {
        let _ = scheduler.notify_pending(notice(relay(n), 5), true, t0);
    }
    assert_eq!((scheduler.pending_count(), scheduler.len()), (3, 3));
    let _ = scheduler.handle_ack(relay(0), 1, UnixTime(5), t0).unwrap();
    assert_eq!(scheduler.pending_count(), 3, "acked is still unresynced");
    let _ = scheduler
        .handle_resync_complete(relay(0), UnixTime(5), UnixTime(9), t0)
        .unwrap();
    assert_eq!((scheduler.pending_count(), scheduler.len()), (2, 3));
    // A new write while clearing makes the relay pending again.
    let _ = scheduler.notify_pending(notice(relay(0), 10), true, t0);
    assert_eq!(scheduler.pending_count(), 3);
    let _ = scheduler
        .handle_resync_complete(relay(0), UnixTime(10), UnixTime(11), t0)
        .unwrap();
    let _ = scheduler.handle_ack(relay(0), 2, UnixTime(11), t0).unwrap();
    assert_eq!((scheduler.pending_count(), scheduler.len()), (2, 2));
}

#[test]
fn unknown_relay_ack_and_resync_are_errors_and_reachability_is_ignored() {
    let t0 = test_start();
    let mut scheduler = PushScheduler::new(PushConfig::default(), 1);
    assert_eq!(
        scheduler.handle_ack(RELAY, 1, UnixTime(1), t0),
        Err(PushError::UnknownRelay(RELAY))
    );
    assert_eq!(
        scheduler.handle_resync_complete(RELAY, UnixTime(1), UnixTime(1), t0),
        Err(PushError::UnknownRelay(RELAY))
    );
    scheduler.handle_reachability(RELAY, true, t0);
    assert!(scheduler.is_empty());
    assert_eq!(scheduler.poll_timeout(), None);
}

#[test]
fn push_carries_the_notice_and_cuts_input_too_long_for_the_wire() {
    let t0 = test_start();
    let mut scheduler = PushScheduler::new(PushConfig::default(), 1);
    let notice = PendingNotice {
        relay_key: RELAY,
        reason: "é".repeat(100),
        types: [PendingType::HttpArtifact, PendingType::Drive].into(),
        drive_identifier: Some("x".repeat(10_000)),
        drive_version: Some(12),
        pending_since: UnixTime(3),
        updated_at: UnixTime(4),
        lease_version: Some(2),
        lease_active: true,
    };
    let _ = scheduler.notify_pending(notice.clone(), true, t0);
    let message = pushes(&mut scheduler).remove(0).message;
    assert_eq!(message.relay_key, RELAY);
    assert_eq!(
        message.reason.len(),
        MAX_PENDING_REASON_BYTES,
        "cut, not dropped"
    );
    assert!(notice.reason.starts_with(message.reason.as_str()));
    assert_eq!(
        message.types.as_slice(),
        [PendingType::Drive, PendingType::HttpArtifact]
    );
    assert_eq!(
        message.drive_identifier, None,
        "a cut identifier would name another drive"
    );
    assert_eq!(message.drive_version, Some(12));
    assert_eq!(
        (message.pending_since, message.updated_at),
        (UnixTime(3), UnixTime(4))
    );
    assert_eq!(
        (message.lease_version, message.lease_active),
        (Some(2), true)
    );
    assert_eq!(
        message.cleared_at, None,
        "only cleared pushes carry cleared_at"
    );
    assert!(
        crate::wire::encode(&crate::wire::Frame::new(
            1,
            crate::wire::Message::PendingWritePush(message)
        ))
        .is_ok()
    );
}

#[test]
fn push_ids_are_new_per_send() {
    let t0 = test_start();
    let mut scheduler = PushScheduler::new(PushConfig::default(), 1);
    let _ = scheduler.notify_pending(notice(RELAY, 1), true, t0);
    let mut ids = BTreeSet::new();
    ids.insert(pushes(&mut scheduler)[0].message.push_id);
    for _ in 0..5 {
        ids.insert(fire(&mut scheduler).1[0].message.push_id);
    }
    assert_eq!(ids.len(), 6);
}

#[test]
fn backoff_and_jitter_never_overflow_or_panic() {
    let config = PushConfig::default();
    assert_eq!(config.backoff(0), 15 * SECOND);
    assert_eq!(config.backoff(31), 300 * SECOND);
    assert_eq!(config.backoff(32), 300 * SECOND);
    assert_eq!(config.backoff(u32::MAX), 300 * SECOND);
    let extreme = PushConfig {
        base_retry: Duration::MAX,
        max_retry: Duration::MAX,
        jitter: f64::NAN,
        resync_deadline: Duration::MAX,
        cleared_max_attempts: u32::MAX,
    };
    assert_eq!(extreme.backoff(1), Duration::MAX);
    let t0 = test_start();
    let mut scheduler = PushScheduler::new(extreme, 1);
    let _ = scheduler.notify_pending(notice(RELAY, 1), true, t0);
    let _ = scheduler.handle_ack(RELAY, 1, UnixTime(1), t0).unwrap();
    assert!(scheduler.poll_timeout().is_some_and(|(at, _)| at > t0));
    let zero = PushConfig {
        base_retry: Duration::ZERO,
        max_retry: Duration::ZERO,
        jitter: 5.0,
        resync_deadline: Duration::ZERO,
        cleared_max_attempts: 0,
    };
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    assert_eq!(jittered(&mut rng, &zero, Duration::ZERO), MIN_DELAY);
    let mut scheduler = PushScheduler::new(zero, 1);
    let _ = scheduler.notify_pending(notice(RELAY, 1), true, t0);
    scheduler.handle_timeout(t0);
    let (at, _) = scheduler.poll_timeout().unwrap();
    assert!(at > t0, "a zero delay still moves the deadline forward");
    let _ = scheduler
        .handle_resync_complete(RELAY, UnixTime(1), UnixTime(1), t0)
        .unwrap();
    assert!(
        events(&mut scheduler).contains(&PushEvent::ClearedAbandoned { relay: RELAY }),
        "a zero budget ends the cleared notice at once"
    );
}

#[test]
fn notice_is_built_from_the_registry_flags() {
    let mut flags = PendingWrites::default();
    assert_eq!(PendingNotice::from_pending_writes(RELAY, &flags), None);
    flags.pending = true;
    assert_eq!(
        PendingNotice::from_pending_writes(RELAY, &flags),
        None,
        "no updated_at"
    );
    flags.updated_at = Some(UnixTime(20));
    flags.types.insert(PendingType::Drive);
    flags.drive_identifier = Some("drive-1".into());
    flags.drive_version = Some(4);
    flags.lease_version = Some(3);
    flags.lease_active = true;
    let notice = PendingNotice::from_pending_writes(RELAY, &flags).unwrap();
    assert_eq!(notice.reason, "replica-write");
    assert_eq!(notice.pending_since, UnixTime(20));
    assert_eq!(notice.updated_at, UnixTime(20));
    assert_eq!(notice.types, flags.types);
    assert_eq!(notice.drive_identifier.as_deref(), Some("drive-1"));
    assert_eq!(
        (notice.drive_version, notice.lease_version),
        (Some(4), Some(3))
    );
    assert!(notice.lease_active);
    flags.reason = Some("drive".into());
    flags.since = Some(UnixTime(10));
    let notice = PendingNotice::from_pending_writes(RELAY, &flags).unwrap();
    assert_eq!(
        (notice.reason.as_str(), notice.pending_since),
        ("drive", UnixTime(10))
    );
}

#[test]
fn poll_timeout_is_the_minimum_over_100k_notices_and_a_full_pass_rearms_them() {
    const RELAYS: u32 = 100_000;
    let t0 = test_start();
    let mut scheduler = PushScheduler::new(PushConfig::default(), 9);
    for n in 0..RELAYS {
        let at = t0 + Duration::from_millis(u64::from(n % 1000));
        let _ = scheduler.notify_pending(notice(relay(n), 1), n % 3 != 0, at);
    }
    assert_eq!(pushes(&mut scheduler).len(), 66_666);
    let _ = events(&mut scheduler);
    let minimum = |scheduler: &PushScheduler| {
        (0..RELAYS)
            .filter_map(|n| scheduler.notice(&relay(n)).and_then(|s| s.next_deadline))
            .min()
    };
    assert_eq!(
        scheduler.poll_timeout().map(|(at, _)| at),
        minimum(&scheduler)
    );
    // An adapter fires exactly at the deadline it was given.
    let (first, _) = scheduler.poll_timeout().unwrap();
    scheduler.handle_timeout(first);
    assert!(scheduler.poll_timeout().is_some_and(|(at, _)| at > first));
    let t = t0 + Duration::from_secs(60);
    scheduler.handle_timeout(t);
    let sent = pushes(&mut scheduler).len();
    assert!(
        sent >= 66_666,
        "every reachable relay retried at least once: {sent}"
    );
    let _ = events(&mut scheduler);
    let (next, _) = scheduler.poll_timeout().unwrap();
    assert!(next > t);
    assert_eq!(Some(next), minimum(&scheduler));
    assert_eq!(scheduler.len(), RELAYS as usize);
    assert!(
        (0..RELAYS).all(|n| scheduler.notice(&relay(n)).unwrap().next_deadline > Some(t)),
        "every relay has a later deadline"
    );
}

// ---- properties ----

const RELAYS_IN_PROPS: u32 = 4;

#[derive(Debug, Clone)]
enum Op {
    Notify {
        relay: u32,
        updated_at: u64,
        reachable: bool,
    },
    Reachability {
        relay: u32,
        reachable: bool,
    },
    Ack {
        relay: u32,
        updated_at: u64,
    },
    Resync {
        relay: u32,
        through: u64,
        cleared_at: u64,
    },
    Advance {
        millis: u64,
    },
    /// Advance exactly to the next deadline, as an adapter's timer does.
    FireNext,
}

fn op() -> impl Strategy<Value = Op> {
    let relay = 0..RELAYS_IN_PROPS;
    prop_oneof![
        (relay.clone(), 0..12u64, any::<bool>()).prop_map(|(relay, updated_at, reachable)| {
            Op::Notify {
                relay,
                updated_at,
                reachable,
            }
        }),
        (relay.clone(), any::<bool>())
            .prop_map(|(relay, reachable)| Op::Reachability { relay, reachable }),
        (relay.clone(), 0..14u64).prop_map(|(relay, updated_at)| Op::Ack { relay, updated_at }),
        (relay, 0..12u64, 0..14u64).prop_map(|(relay, through, cleared_at)| Op::Resync {
            relay,
            through,
            cleared_at
        }),
        prop_oneof![0..2_000u64, 0..400_000u64, 0..1_000_000u64]
            .prop_map(|millis| Op::Advance { millis }),
        Just(Op::FireNext),
    ]
}

/// Runs `ops` from `t0`, calling `check(scheduler, now, ended, fired_at)` after
/// each step (with `fired_at` set when the step was `handle_timeout`), once the
/// outputs are drained. `ended` is the relays whose entry ended by an event.
fn run(
    seed: u64,
    ops: &[Op],
    mut check: impl FnMut(&PushScheduler, Instant, &BTreeSet<RelayKey>, Option<Instant>),
) {
    let mut now = test_start();
    let mut scheduler = PushScheduler::new(PushConfig::default(), seed);
    let mut ended = BTreeSet::new();
    for op in ops {
        let mut fired_at = None;
        match *op {
            Op::Notify {
                relay: n,
                updated_at,
                reachable,
            } => {
                let _ = scheduler.notify_pending(notice(relay(n), updated_at), reachable, now);
            }
            Op::Reachability {
                relay: n,
                reachable,
            } => {
                scheduler.handle_reachability(relay(n), reachable, now);
            }
            Op::Ack {
                relay: n,
                updated_at,
            } => {
                let _ = scheduler.handle_ack(relay(n), 1, UnixTime(updated_at), now);
            }
            Op::Resync {
                relay: n,
                through,
                cleared_at,
            } => {
                let _ = scheduler.handle_resync_complete(
                    relay(n),
                    UnixTime(through),
                    UnixTime(cleared_at),
                    now,
                );
            }
            Op::Advance { millis } => {
                now += Duration::from_millis(millis);
                scheduler.handle_timeout(now);
                fired_at = Some(now);
            }
            Op::FireNext => {
                if let Some((at, _)) = scheduler.poll_timeout() {
                    now = now.max(at);
                    scheduler.handle_timeout(now);
                    fired_at = Some(now);
                }
            }
        }
        let _ = pushes(&mut scheduler);
        for event in events(&mut scheduler) {
            if let PushEvent::Cleared { relay } | PushEvent::ClearedAbandoned { relay } = event {
                ended.insert(relay);
            }
        }
        // A relay notified again after its entry ended is tracked afresh.
        if let Op::Notify { relay: n, .. } = *op {
            if scheduler.notice(&relay(n)).is_some() {
                ended.remove(&relay(n));
            }
        }
        check(&scheduler, now, &ended, fired_at);
    }
}

proptest! {
    #[test]
    fn after_handle_timeout_and_a_drain_the_next_deadline_is_later(
        seed in any::<u64>(),
        ops in prop::collection::vec(op(), 1..80),
    ) {
        run(seed, &ops, |scheduler, _, _, fired_at| {
            if let Some(t) = fired_at {
                let next = scheduler.poll_timeout().map(|(at, _)| at);
                assert!(next.is_none_or(|at| at > t), "deadline {next:?} not after {t:?} (seed {seed})");
            }
        });
    }

    #[test]
    fn a_notified_relay_is_never_dropped_without_a_cleared_or_abandoned_event(
        seed in any::<u64>(),
        ops in prop::collection::vec(op(), 1..80),
    ) {
        let notified: BTreeSet<RelayKey> = ops
            .iter()
            .filter_map(|op| match op {
                Op::Notify { relay: n, .. } => Some(relay(*n)),
                _ => None,
            })
            .collect();
        let mut seen = BTreeSet::new();
        run(seed, &ops, |scheduler, _, ended, _| {
            for relay in &notified {
                if scheduler.notice(relay).is_some() {
                    seen.insert(*relay);
                }
                if seen.contains(relay) {
                    assert!(
                        scheduler.notice(relay).is_some() || ended.contains(relay),
                        "{relay:?} vanished without an event (seed {seed})"
                    );
                }
            }
            let not_clearing = notified
                .iter()
                .filter_map(|relay| scheduler.notice(relay))
                .filter(|status| status.state != NoticeState::Clearing)
                .count();
            assert_eq!(scheduler.pending_count(), not_clearing);
        });
    }

    #[test]
    fn a_pending_notice_with_a_reachable_worker_is_retried_within_the_jittered_cap(
        seed in any::<u64>(),
        ops in prop::collection::vec(op(), 1..80),
    ) {
        let config = PushConfig::default();
        let cap = Duration::from_secs_f64(config.max_retry.as_secs_f64() * (1.0 + config.jitter));
        run(seed, &ops, |scheduler, now, _, _| {
            for status in scheduler.entries.keys().filter_map(|relay| scheduler.notice(relay)) {
                if status.state == NoticeState::Pending && status.reachable {
                    let deadline = status.next_deadline;
                    assert!(
                        deadline.is_some_and(|at| at <= now + cap),
                        "deadline {deadline:?} beyond now + {cap:?} (seed {seed})"
                    );
                }
            }
        });
    }
}
