//! Every policy rejection reason the API can produce, each on a relay of its
//! own, answered 412 with the original's `unlock-rejected:<reasons>` and the
//! list, audited, and counted in the exported metrics — on both backends.
//!
//! `record-superseded` and `relay-mismatch` cannot come out of the API: an
//! unlock always judges the relay's current deposit of the relay it names
//! (the core's tests cover both).

// Test helpers: a failed setup step should fail the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod escrow_support;

use std::time::Duration;

use escrow_support::{
    Backend, Harness, Options, RelayFixture, evidence_allowing, gateway, now, peer_of,
};
use hypergate_adapters::audit::AuditLog;
use hypergate_core::escrow::Evidence;
use hypergate_core::ids::PeerId;
use hypergate_core::time::UnixTime;
use hypergate_tokio::escrow::EscrowClient;
use hypergate_tokio::escrow::client::{
    ClientError, DepositParams, EscrowPolicy, RevokeBy, deposit_body,
};

struct Case<'h> {
    harness: &'h Harness,
    escrow: EscrowPolicy,
    worker: EscrowClient,
}

impl Case<'_> {
    /// Deposits a fresh relay permitting `permitted`, expiring at `expires_at` if given.
    async fn relay(&self, permitted: &[PeerId], expires_at: Option<UnixTime>) -> RelayFixture {
        let relay = RelayFixture::new();
        let body = deposit_body(
            &self.escrow,
            &DepositParams {
                package: &relay.package(),
                relay_key: &relay.relay,
                permitted_requesters: permitted,
                expires_at,
                created_at: now(),
            },
        )
        .unwrap();
        self.worker.deposit(&body).await.unwrap();
        relay
    }

    /// Unlocks as `client` with `evidence`; the refusal's status, code and reasons.
    async fn refused(
        &self,
        client: &str,
        relay: &RelayFixture,
        evidence: &Evidence,
    ) -> (u16, String, Vec<String>) {
        let error = self
            .harness
            .client(client)
            .unlock(relay.key(), None, evidence, &self.escrow.public_key)
            .await
            .unwrap_err();
        match error {
            ClientError::Refused {
                status,
                code,
                reasons,
                ..
            } => (status, code, reasons.unwrap_or_default()),
            other => panic!("expected a refusal, got {other:?}"),
        }
    }
}

fn only(reason: &str) -> (u16, String, Vec<String>) {
    (
        412,
        format!("unlock-rejected:{reason}"),
        vec![reason.to_owned()],
    )
}

async fn each_policy_rejection_reason_is_answered_412_audited_and_counted(backend: Backend) {
    let Some(harness) = Harness::start(backend, Options::default()).await else {
        return;
    };
    let case = Case {
        escrow: harness.policy().await,
        worker: harness.client("worker"),
        harness: &harness,
    };
    let good = || evidence_allowing(now());
    let g = [gateway()];

    let relay = case.relay(&g, None).await;
    case.worker
        .revoke(&RevokeBy::Relay(relay.key()), None, "test")
        .await
        .unwrap();
    assert_eq!(
        case.refused("gateway", &relay, &good()).await,
        only("record-revoked")
    );

    let relay = case.relay(&g, Some(UnixTime(now().0 + 1_000))).await;
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    assert_eq!(
        case.refused("gateway", &relay, &good()).await,
        only("record-expired")
    );

    let relay = case.relay(&g, None).await;
    let evidence = Evidence {
        escrow_enabled: Some(false),
        ..good()
    };
    assert_eq!(
        case.refused("gateway", &relay, &evidence).await,
        only("registration-flag-missing")
    );
    let evidence = Evidence {
        healthy_peer_count: Some(1),
        ..good()
    };
    assert_eq!(
        case.refused("gateway", &relay, &evidence).await,
        only("peers-still-healthy")
    );
    let evidence = Evidence {
        last_healthy_at: Some(UnixTime(now().0 - 10_000)),
        ..good()
    };
    assert_eq!(
        case.refused("gateway", &relay, &evidence).await,
        only("peer-timeout-not-reached")
    );
    let evidence = Evidence {
        mirror_lag_ms: Some(20_000),
        ..good()
    };
    assert_eq!(
        case.refused("gateway", &relay, &evidence).await,
        only("mirror-too-stale")
    );
    let evidence = Evidence {
        mirror_last_synced_at: Some(UnixTime(now().0 - 120_000)),
        ..good()
    };
    assert_eq!(
        case.refused("gateway", &relay, &evidence).await,
        only("mirror-window-expired")
    );
    assert_eq!(
        case.refused("gateway-2", &relay, &good()).await,
        only("requester-not-permitted")
    );
    // The original let `{registration:{escrowEnabled:true}}` alone through.
    let evidence = Evidence {
        escrow_enabled: Some(true),
        ..Evidence::default()
    };
    let (status, _, reasons) = case.refused("gateway", &relay, &evidence).await;
    assert_eq!(status, 412);
    assert_eq!(
        reasons,
        [
            "peers-still-healthy",
            "peer-timeout-not-reached",
            "mirror-too-stale",
            "mirror-window-expired",
            "evidence-missing"
        ]
    );

    // Two permitted gateways: while one holds the lease the other is refused;
    // once it is given back, the deposit's one release is spent.
    let relay = case.relay(&[gateway(), peer_of("gateway-2")], None).await;
    let lease = harness
        .client("gateway")
        .unlock(relay.key(), None, &good(), &case.escrow.public_key)
        .await
        .unwrap();
    // (With the default budget of one release the key is also spent already.)
    let (status, _, reasons) = case.refused("gateway-2", &relay, &good()).await;
    assert_eq!(status, 412);
    assert_eq!(
        reasons,
        ["unlock-budget-exhausted", "lease-held-by-another"]
    );
    harness
        .client("gateway")
        .release(lease.lease_id, None, "peer-healthy")
        .await
        .unwrap();
    assert_eq!(
        case.refused("gateway-2", &relay, &good()).await,
        only("unlock-budget-exhausted")
    );

    // Audited with their reasons.
    let report = AuditLog::verify(&harness.audit_dir()).await.unwrap();
    let rejected = report
        .entries
        .iter()
        .filter(|entry| entry.event.kind.as_str() == "unlock-rejected")
        .count();
    assert_eq!(rejected, 11);

    // Counted on the registry `/metrics` serves, in the OpenMetrics format.
    let metrics = harness
        .client("operator")
        .send_raw(hyper::Method::GET, "/metrics", &[], bytes::Bytes::new())
        .await
        .unwrap();
    assert_eq!(metrics.status, 200);
    assert!(
        metrics
            .content_type
            .as_deref()
            .is_some_and(|t| t.starts_with("application/openmetrics-text")),
        "{:?}",
        metrics.content_type
    );
    let text = String::from_utf8(metrics.body.to_vec()).unwrap();
    for line in [
        "escrow_unlock_total{result=\"policy-rejection\"} 11",
        "escrow_unlock_total{result=\"success\"} 1",
        "escrow_policy_rejections_total{reason=\"record-revoked\"} 1",
        "escrow_policy_rejections_total{reason=\"record-expired\"} 1",
        "escrow_policy_rejections_total{reason=\"peers-still-healthy\"} 2",
        "escrow_policy_rejections_total{reason=\"evidence-missing\"} 1",
        "escrow_policy_rejections_total{reason=\"lease-held-by-another\"} 1",
        "escrow_policy_rejections_total{reason=\"unlock-budget-exhausted\"} 2",
        "escrow_active_leases 0",
        "escrow_unlock_duration_seconds_count 12",
        "escrow_deposits_total{result=\"stored\"} 4",
        "# EOF",
    ] {
        assert!(text.contains(line), "missing {line:?} in:\n{text}");
    }
    for family in [
        "escrow_http_request_duration_seconds_bucket{le=\"0.001\",route=\"/api/escrow/escrow/unlock\",status=\"412\"}",
        "escrow_store_operation_duration_seconds_count{operation=\"put_deposit\"} 4",
        "escrow_audit_append_duration_seconds_count",
        "escrow_audit_failures_total 0",
    ] {
        assert!(text.contains(family), "missing {family:?} in:\n{text}");
    }
    // The metrics are also at the root, where Prometheus usually scrapes.
    let under_base = harness
        .root_client("operator")
        .send_raw(hyper::Method::GET, "/metrics", &[], bytes::Bytes::new())
        .await
        .unwrap();
    assert_eq!(under_base.status, 200);
}
both_backends!(each_policy_rejection_reason_is_answered_412_audited_and_counted);
