//! Drill: the escrow goes away while a relay's worker is away.
//!
//! Injected: `hypergate escrow serve` (embedded store) is SIGKILLed while it is idle and no
//! lease exists, then restarted on the same port and data; in the second drill it is also
//! SIGKILLed at growing delays after a client write that needs an unlock, so the kill lands
//! before, inside and after the escrow's unlock.
//!
//! Promised: while the escrow is down a write without a lease is `OK false "read-only: escrow
//! unreachable"`, never `OK true`, and is not stored; restarted, the escrow grants the next
//! unlock and the write gets `OK true`; when the worker returns, every accepted write is the
//! worker's own and no refused one is.

use std::time::{Duration, Instant};

use hypergate_core::nostr::testing::signed_event;
use hypergate_tokio::gateway::GatewayHandle;

use crate::escrow_support::{Backend, Harness};
use crate::gateway_support::{
    PATIENCE, WorkerProcess, Ws, connect, escrow_config, eventually, get_json, init_worker, next,
    publish, query, run_worker, send, start_gateway,
};
use crate::support::{
    EscrowProcess, audit_entries, metric, owner_mirrored, publish_until_accepted,
    quick_lease_options,
};

/// The escrow's worker-liveness timeout here: short, so a lease can be granted soon.
const LIVENESS: Duration = Duration::from_secs(1);

/// Rounds of "restart, write, kill after a delay", and the delay's step.
const KILL_ROUNDS: u64 = 20;
const KILL_STEP_MS: u64 = 2;

const UNLOCKS: &str = "gateway_escrow_unlock_requests_total";

/// An escrow process, a gateway leasing from it, and a relay whose worker has just left.
struct Setup {
    harness: Harness,
    escrow_data: tempfile::TempDir,
    port: u16,
    escrow: EscrowProcess,
    _gateway_data: tempfile::TempDir,
    gateway: GatewayHandle,
    worker_dir: tempfile::TempDir,
    relay: String,
    client: Ws,
}

impl Setup {
    async fn start() -> Setup {
        let options = quick_lease_options(LIVENESS);
        let mut harness = Harness::start(Backend::Embedded, options).await.unwrap();
        // The escrow under test is a process on the harness's port, so it can be SIGKILLed;
        // the harness lends its PKI and client settings.
        let port = harness.addr.port();
        harness.stop().await;
        let escrow_data = tempfile::tempdir().unwrap();
        let escrow = EscrowProcess::spawn(&harness.pki, escrow_data.path(), port, LIVENESS)
            .unwrap_or_else(|output| panic!("the escrow did not start:\n{output}"));
        let gateway_data = tempfile::tempdir().unwrap();
        let gateway = start_gateway(
            gateway_data.path(),
            Some(escrow_config(&harness, "gateway")),
        )
        .await;
        let worker_dir = tempfile::tempdir().unwrap();
        let relay = init_worker(worker_dir.path())["relayKey"]
            .as_str()
            .unwrap()
            .to_owned();
        let mut worker = run_worker(worker_dir.path(), &gateway, Some(&harness));
        let ready = eventually(PATIENCE, async || {
            let status = get_json(worker.addr, "/status").await;
            status["gatewayConnected"] == true
                && status["relays"][0]["escrowId"].is_string()
                && owner_mirrored(gateway.http_addr, &relay).await
        })
        .await;
        assert!(ready, "the worker never linked, deposited and got mirrored");
        worker.kill();
        tokio::time::sleep(LIVENESS + Duration::from_millis(200)).await;
        let client = connect(&format!("ws://{}/relay/{relay}", gateway.http_addr)).await;
        Setup {
            harness,
            escrow_data,
            port,
            escrow,
            _gateway_data: gateway_data,
            gateway,
            worker_dir,
            relay,
            client,
        }
    }

    fn audit_dir(&self) -> std::path::PathBuf {
        self.escrow_data.path().join("audit")
    }

    /// Kills the escrow and starts it again on the same port and data. A restart that fails
    /// is a finding: say what the killed escrow printed last and what the verifier makes of
    /// its audit log.
    fn restart_escrow(&mut self) {
        self.escrow.kill();
        let spawned = EscrowProcess::spawn(
            &self.harness.pki,
            self.escrow_data.path(),
            self.port,
            LIVENESS,
        );
        match spawned {
            Ok(escrow) => self.escrow = escrow,
            Err(output) => {
                let (code, entries) = audit_entries(&self.audit_dir());
                panic!(
                    "the escrow did not restart after a SIGKILL:\n{output}\nits last lines \
                     before the kill:\n{}\naudit verify: exit {code:?}, {} entries",
                    self.escrow.log_tail(15),
                    entries.len()
                )
            }
        }
    }

    /// The worker returns: the pending writes are resynced, the lease ends and the worker's
    /// gateway writer is rotated (a new deposit); every `accepted` write is the worker's own,
    /// no `refused` one is.
    async fn worker_returns(&self, accepted: &[String], refused: &[String]) -> WorkerProcess {
        let addr = self.gateway.http_addr;
        let pending = get_json(addr, "/api/blind-peer/replicas").await;
        assert_eq!(
            pending["replicas"][0]["gatewayPendingWrites"], true,
            "{pending}"
        );
        let before = get_json(addr, "/api/relays").await;
        let worker = run_worker(self.worker_dir.path(), &self.gateway, Some(&self.harness));
        let returned = Instant::now();
        let old_deposit = {
            let status = get_json(worker.addr, "/status").await;
            status["relays"][0]["escrowId"].clone()
        };
        let settled = eventually(PATIENCE * 2, async || {
            let replicas = get_json(addr, "/api/blind-peer/replicas").await;
            let leases = metric(addr, "gateway_escrow_leases_active", &[]).await;
            let status = get_json(worker.addr, "/status").await;
            replicas["replicas"][0]["gatewayPendingWrites"] == false
                && leases == 0.0
                && status["rotations"][0]["status"] == "completed"
                && status["relays"][0]["escrowId"].is_string()
                && status["relays"][0]["escrowId"] != old_deposit
        })
        .await;
        assert!(
            settled,
            "the writes were never resynced, or the lease never ended, or no rotation: {before}"
        );
        println!(
            "worker back: resynced, lease ended, writer rotated in {:?}",
            returned.elapsed()
        );
        let mut local = connect(&format!("ws://{}/relay/{}", worker.addr, self.relay)).await;
        let on_worker = query(&mut local, "accepted", &ids_filter(accepted)).await;
        assert_eq!(on_worker.len(), accepted.len(), "accepted writes lost");
        let leaked = query(&mut local, "refused", &ids_filter(refused)).await;
        assert!(leaked.is_empty(), "refused writes reached the worker");
        worker
    }
}

fn ids_filter(ids: &[String]) -> String {
    format!(r#"{{"ids":{}}}"#, serde_json::json!(ids))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_are_read_only_while_the_escrow_is_down_and_leased_again_after_it_restarts() {
    let mut setup = Setup::start().await;
    let addr = setup.gateway.http_addr;

    // The escrow is killed (idle, no lease anywhere): read-only with the reason, nothing stored.
    setup.escrow.kill();
    let refused_before = metric(addr, UNLOCKS, &["result=\"refused\""]).await;
    let mut refused = Vec::new();
    for i in 0..3u64 {
        let event = signed_event(11, 1_700_000_400 + i, 1, Vec::new(), &format!("down {i}"));
        let ok = publish(&mut setup.client, &event.to_json()).await;
        assert_eq!(ok[2], false, "a write was accepted with no escrow: {ok}");
        let message = ok[3].as_str().unwrap();
        assert!(
            message.starts_with("read-only:") && message.contains("escrow unreachable"),
            "{ok}"
        );
        refused.push(event.id.to_hex());
    }
    let refused_after = metric(addr, UNLOCKS, &["result=\"refused\""]).await;
    println!("escrow down: unlock refusals {refused_before} -> {refused_after}");
    assert!(refused_after >= refused_before + 3.0);
    let stored = query(&mut setup.client, "refused", &ids_filter(&refused)).await;
    assert!(stored.is_empty(), "refused writes are served: {stored:?}");

    // Restarted on the same port and data, the escrow grants the next unlock.
    let restarted = Instant::now();
    setup.restart_escrow();
    let event = signed_event(11, 1_700_000_450, 1, Vec::new(), "after the restart");
    let (ok, attempts) = publish_until_accepted(&mut setup.client, &event.to_json(), 40).await;
    assert_eq!(
        ok[2], true,
        "no write accepted after the escrow came back: {ok}"
    );
    println!(
        "recovered: first write accepted {:?} after the escrow restart ({attempts} attempt(s)); \
         unlock successes {}",
        restarted.elapsed(),
        metric(addr, UNLOCKS, &["result=\"success\""]).await
    );

    // While the lease lasts, the escrow is not needed: killed again, writes are still accepted.
    setup.escrow.kill();
    let leased = signed_event(11, 1_700_000_460, 1, Vec::new(), "escrow down, lease held");
    let ok = publish(&mut setup.client, &leased.to_json()).await;
    assert_eq!(ok[2], true, "a write under a held lease was refused: {ok}");
    let accepted = vec![event.id.to_hex(), leased.id.to_hex()];
    setup.restart_escrow();
    let _worker = setup.worker_returns(&accepted, &refused).await;

    setup.escrow.kill();
    let (code, entries) = audit_entries(&setup.audit_dir());
    let kinds: Vec<&str> = entries.iter().filter_map(|e| e["type"].as_str()).collect();
    println!("escrow audit (exit {code:?}): {kinds:?}");
    assert_eq!(code, Some(0), "the audit log does not verify");
    assert!(kinds.contains(&"unlock-issued"), "{kinds:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_escrow_killed_during_unlocks_restarts_by_itself_and_loses_no_accepted_write() {
    let mut setup = Setup::start().await;
    let mut accepted = Vec::new();
    let mut refused = Vec::new();
    let mut outcomes = Vec::new();
    for round in 0..KILL_ROUNDS {
        setup.restart_escrow();
        let event = signed_event(11, 1_700_000_500 + round, 1, Vec::new(), "mid-unlock");
        send(
            &mut setup.client,
            &format!(r#"["EVENT",{}]"#, event.to_json()),
        )
        .await;
        tokio::time::sleep(Duration::from_millis(round * KILL_STEP_MS)).await;
        setup.escrow.kill();
        let ok = loop {
            let frame = next(&mut setup.client).await;
            if frame[0] == "OK" {
                break frame;
            }
        };
        outcomes.push(format!("{}ms:{}", round * KILL_STEP_MS, ok[2]));
        if ok[2] == true {
            accepted.push(event.id.to_hex());
            break;
        }
        assert!(
            ok[3].as_str().unwrap().starts_with("read-only:"),
            "a write refused for another reason: {ok}"
        );
        refused.push(event.id.to_hex());
    }
    println!("kill after delay -> accepted: {}", outcomes.join(" "));

    // The escrow back once more: writes are accepted (under the lease granted before the last
    // kill, a re-fetch of one issued just before a kill, or a new one).
    let restarted = Instant::now();
    setup.restart_escrow();
    let event = signed_event(11, 1_700_000_600, 1, Vec::new(), "after the kills");
    let (ok, attempts) = publish_until_accepted(&mut setup.client, &event.to_json(), 40).await;
    assert_eq!(
        ok[2], true,
        "no write accepted after the escrow came back: {ok}"
    );
    accepted.push(event.id.to_hex());
    println!(
        "after the kills: write accepted {:?} after the restart ({attempts} attempt(s))",
        restarted.elapsed()
    );
    let stored = query(&mut setup.client, "refused", &ids_filter(&refused)).await;
    assert!(stored.is_empty(), "refused writes are served: {stored:?}");
    let _worker = setup.worker_returns(&accepted, &refused).await;
    setup.escrow.kill();
    // A kill inside an audit append is rebuilt at the next start, the damaged copy kept.
    let repaired = std::fs::read_dir(setup.escrow_data.path())
        .unwrap()
        .filter(|entry| {
            let name = entry.as_ref().unwrap().file_name();
            name.to_string_lossy().starts_with("audit.damaged-")
        })
        .count();
    println!("audit logs rebuilt after a kill inside an append: {repaired}");
    let (code, _) = audit_entries(&setup.audit_dir());
    assert_eq!(
        code,
        Some(0),
        "the audit log does not verify after the kills"
    );
}

/// The escrow is down when a worker starts and deposits its gateway writer: the worker keeps
/// running (linked, mirrored) and deposits by itself once the escrow is back (its deposit check
/// runs every advertisement tick, 10 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_could_not_deposit_deposits_by_itself_once_the_escrow_is_back() {
    late_deposit(false).await;
}

/// … and the gateway learns of that deposit, so a lease can be granted from it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_deposit_reaches_the_gateway_and_serves_a_lease() {
    late_deposit(true).await;
}

/// The drill; with `expect_lease`, the gateway must learn of the late deposit and lease from it.
async fn late_deposit(expect_lease: bool) {
    let options = quick_lease_options(LIVENESS);
    let mut harness = Harness::start(Backend::Embedded, options).await.unwrap();
    let port = harness.addr.port();
    harness.stop().await;
    let escrow_data = tempfile::tempdir().unwrap();
    let spawn = || {
        EscrowProcess::spawn(&harness.pki, escrow_data.path(), port, LIVENESS)
            .unwrap_or_else(|output| panic!("the escrow did not start:\n{output}"))
    };
    let mut escrow = spawn();
    let gateway_data = tempfile::tempdir().unwrap();
    let gateway = start_gateway(
        gateway_data.path(),
        Some(escrow_config(&harness, "gateway")),
    )
    .await;
    let worker_dir = tempfile::tempdir().unwrap();
    let relay = init_worker(worker_dir.path())["relayKey"]
        .as_str()
        .unwrap()
        .to_owned();

    // The escrow dies before the worker's first deposit.
    escrow.kill();
    let mut worker = run_worker(worker_dir.path(), &gateway, Some(&harness));
    let linked = eventually(PATIENCE, async || {
        owner_mirrored(gateway.http_addr, &relay).await
            && get_json(worker.addr, "/status").await["gatewayConnected"] == true
    })
    .await;
    assert!(
        linked,
        "the worker never linked and got mirrored without an escrow"
    );
    let status = get_json(worker.addr, "/status").await;
    assert!(
        status["relays"][0]["escrowId"].is_null(),
        "a deposit was recorded with the escrow down: {status}"
    );

    // The escrow returns; the worker deposits by itself.
    let restarted = Instant::now();
    escrow = spawn();
    let deposited = eventually(PATIENCE, async || {
        get_json(worker.addr, "/status").await["relays"][0]["escrowId"].is_string()
    })
    .await;
    assert!(
        deposited,
        "the worker never deposited after the escrow returned"
    );
    println!(
        "deposit recovered {:?} after the escrow restart",
        restarted.elapsed()
    );

    if !expect_lease {
        return;
    }
    // The gateway learns of it, and it serves a lease once the worker is away.
    let announced = eventually(PATIENCE, async || {
        let relays = get_json(gateway.http_addr, "/api/relays").await;
        relays["relays"][0]["escrowEnabled"] == true
    })
    .await;
    let relays = get_json(gateway.http_addr, "/api/relays").await;
    assert!(
        announced,
        "the gateway never learnt of the late deposit: {relays}"
    );
    worker.kill();
    tokio::time::sleep(LIVENESS + Duration::from_millis(200)).await;
    let mut client = connect(&format!("ws://{}/relay/{relay}", gateway.http_addr)).await;
    let event = signed_event(11, 1_700_000_700, 1, Vec::new(), "from the late deposit");
    let (ok, attempts) = publish_until_accepted(&mut client, &event.to_json(), 40).await;
    assert_eq!(ok[2], true, "no lease from the late deposit: {ok}");
    println!("leased from the late deposit after {attempts} attempt(s)");
    drop(escrow);
}
