//! What the gateway's counters, histograms and mirror gauges say, read back from the exposition.

use std::time::Duration;

use crate::mirror::{CoreAnnouncement, CoreKey, MirrorConfig, MirrorStore, Registered};
use hypergate_core::gateway::GatewayEvent;
use hypergate_core::ids::{PeerId, RelayKey};
use hypergate_core::push::PushEvent;
use hypergate_core::router::{RouterEvent, SessionId};
use hypergate_core::time::UnixTime;
use hypergate_core::wire::{CoreRole, PendingState};

use super::{GatewayMetrics, MirrorSnapshot};
use crate::escrow_client::ClientError;

const RELAY: RelayKey = RelayKey([7; 32]);

fn encode(metrics: &GatewayMetrics) -> String {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &metrics.registry)
        .map_err(|e| e.to_string())
        .unwrap_or_else(|e| panic!("encoding failed: {e}"));
    text
}

fn has(text: &str, line: &str) {
    assert!(
        text.lines().any(|l| l == line),
        "missing {line:?} in:\n{text}"
    );
}

#[test]
fn each_push_outcome_is_counted_under_its_result_and_ack_waits_are_observed() {
    let metrics = GatewayMetrics::new();
    let fresh = encode(&metrics);
    for result in ["sent", "acked", "overdue", "cleared", "abandoned"] {
        has(
            &fresh,
            &format!("gateway_pending_write_push_total{{result=\"{result}\"}} 0"),
        );
    }
    let sent = PushEvent::Sent {
        relay: RELAY,
        push_id: 1,
        attempt: 1,
        state: PendingState::Pending,
    };
    for event in [
        sent.clone(),
        sent,
        PushEvent::Acked {
            relay: RELAY,
            wait: Duration::from_secs(40),
        },
        PushEvent::ResyncOverdue { relay: RELAY },
        PushEvent::ClearedAbandoned { relay: RELAY },
    ] {
        metrics.observe(&GatewayEvent::Push(event));
    }
    let text = encode(&metrics);
    has(&text, "gateway_pending_write_push_total{result=\"sent\"} 2");
    has(
        &text,
        "gateway_pending_write_push_total{result=\"acked\"} 1",
    );
    has(
        &text,
        "gateway_pending_write_push_total{result=\"overdue\"} 1",
    );
    has(
        &text,
        "gateway_pending_write_push_total{result=\"abandoned\"} 1",
    );
    has(
        &text,
        "gateway_pending_write_push_total{result=\"cleared\"} 0",
    );
    // 40 s lands in the 60 s bucket, not the 30 s one.
    has(&text, "gateway_pending_write_push_wait_seconds_count 1");
    has(&text, "gateway_pending_write_push_wait_seconds_sum 40.0");
    has(
        &text,
        "gateway_pending_write_push_wait_seconds_bucket{le=\"30.0\"} 0",
    );
    has(
        &text,
        "gateway_pending_write_push_wait_seconds_bucket{le=\"60.0\"} 1",
    );
}

#[test]
fn a_fallback_that_ends_is_observed_in_seconds() {
    let metrics = GatewayMetrics::new();
    metrics.observe(&GatewayEvent::Router(RouterEvent::FallbackEnded {
        session: SessionId(3),
        relay: RELAY,
        peer: PeerId([9; 32]),
        duration: Duration::from_millis(1_500),
        subscriptions: Vec::new(),
    }));
    let text = encode(&metrics);
    has(&text, "gateway_relay_fallback_duration_seconds_count 1");
    has(&text, "gateway_relay_fallback_duration_seconds_sum 1.5");
    has(
        &text,
        "gateway_relay_fallback_duration_seconds_bucket{le=\"1.0\"} 0",
    );
    has(
        &text,
        "gateway_relay_fallback_duration_seconds_bucket{le=\"2.0\"} 1",
    );
}

#[test]
fn escrow_refusal_reasons_are_counted_and_unknown_ones_fold_into_other() {
    let metrics = GatewayMetrics::new();
    has(
        &encode(&metrics),
        "gateway_escrow_policy_rejections_total{reason=\"peers-still-healthy\"} 0",
    );
    metrics.escrow_refused(&ClientError::Refused {
        status: 412,
        code: "policy-rejected".into(),
        message: None,
        reasons: Some(vec![
            "peers-still-healthy".into(),
            "mirror-too-stale".into(),
            "a-reason-from-a-newer-escrow".into(),
            "x".repeat(10_000),
        ]),
    });
    // A refusal without policy reasons (an outage) is not a policy rejection.
    metrics.escrow_refused(&ClientError::Timeout(Duration::from_secs(5)));
    let text = encode(&metrics);
    has(
        &text,
        "gateway_escrow_policy_rejections_total{reason=\"peers-still-healthy\"} 1",
    );
    has(
        &text,
        "gateway_escrow_policy_rejections_total{reason=\"mirror-too-stale\"} 1",
    );
    has(
        &text,
        "gateway_escrow_policy_rejections_total{reason=\"other\"} 2",
    );
    let series = text
        .lines()
        .filter(|l| l.starts_with("gateway_escrow_policy_rejections_total"))
        .count();
    assert_eq!(series, 14, "13 policy reasons and `other`:\n{text}");
}

fn core_key(seed: u8) -> CoreKey {
    let signing = ed25519_dalek::SigningKey::from_bytes(&[seed; 32]);
    CoreKey(signing.verifying_key().to_bytes())
}

#[tokio::test]
async fn mirror_lag_is_the_worst_core_of_each_relay_and_role_and_vanishes_with_the_core() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let mut store = MirrorStore::open(dir.path(), MirrorConfig::default())
        .await
        .unwrap_or_else(|e| panic!("open: {e}"));
    let owner = PeerId([1; 32]);
    let start = UnixTime(1_700_000_000_000);
    for (seed, role, advertised) in [
        (11, CoreRole::Writer, 5),
        (12, CoreRole::Writer, 9),
        (13, CoreRole::Owner, 0),
    ] {
        let key = core_key(seed);
        let registered = store
            .register_core(CoreAnnouncement::new(key, owner, RELAY, role), start)
            .await
            .unwrap_or_else(|e| panic!("register: {e}"));
        assert_eq!(registered, Registered::New);
        store
            .advertise(&key, advertised, start)
            .unwrap_or_else(|e| panic!("advertise: {e}"));
    }
    let later = UnixTime(start.0 + 2_500);
    let metrics = GatewayMetrics::new();
    metrics.apply_mirror(&MirrorSnapshot::of(&store, later));
    let text = encode(&metrics);
    let relay = RELAY.to_hex();
    has(
        &text,
        &format!("gateway_blind_peer_mirror_lag_blocks{{relay=\"{relay}\",type=\"writer\"}} 9"),
    );
    has(
        &text,
        &format!("gateway_blind_peer_mirror_lag_ms{{relay=\"{relay}\",type=\"writer\"}} 2500"),
    );
    has(
        &text,
        &format!("gateway_blind_peer_mirror_lag_blocks{{relay=\"{relay}\",type=\"owner\"}} 0"),
    );
    has(
        &text,
        &format!("gateway_blind_peer_mirror_lag_ms{{relay=\"{relay}\",type=\"owner\"}} 0"),
    );
    has(&text, "gateway_blind_peer_cores 3");

    for seed in [11, 12] {
        store
            .remove_core(&core_key(seed))
            .unwrap_or_else(|e| panic!("remove: {e}"));
    }
    metrics.apply_mirror(&MirrorSnapshot::of(&store, later));
    let text = encode(&metrics);
    assert!(
        !text.contains("type=\"writer\""),
        "a removed core's series stays:\n{text}"
    );
    has(&text, "gateway_blind_peer_cores 1");
    has(
        &text,
        "gateway_blind_peer_evictions_total{reason=\"removed\"} 2",
    );
}
