//! The worker agent against an in-test gateway over real TCP and the real peer link:
//! registration, mirroring of real hypercores, a worker killed mid-mirror and restarted, and a
//! gateway with the wrong identity never getting to push.

// Test helpers: a failed setup step should fail the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod worker_agent_support;

use std::time::Duration;

use hypergate_adapters::mirror::CoreKey;
use hypergate_core::ids::RelayKey;
use hypergate_core::nostr::Event;
use hypergate_core::nostr::testing::signed_event;
use hypergate_core::relay::WriterKey;
use hypergate_core::wire::MAX_MIRROR_BLOCKS_PER_RANGE;
use hypergate_tokio::worker_agent::{self, WorkerAgentHandle};
use worker_agent_support::{TestGateway, agent_config, eventually, identity, start_worker};

fn events(from: u64, count: u64) -> Vec<Event> {
    (from..from + count)
        .map(|i| signed_event(9, 1_700_000_000 + i, 1, Vec::new(), &format!("note {i}")))
        .collect()
}

/// Every core the worker holds: (key, length).
async fn worker_cores(worker: &WorkerAgentHandle, relay: RelayKey) -> Vec<([u8; 32], u64)> {
    worker
        .with_relay(relay, async |logs| {
            let mut cores = vec![(
                logs.owner_log().public_key().to_bytes(),
                logs.owner_log().len(),
            )];
            for writer in logs.local_writers().unwrap() {
                let len = logs.writer_log(&writer).await.unwrap().len();
                cores.push((writer.0, len));
            }
            cores
        })
        .await
        .unwrap()
}

/// Whether the gateway's mirror holds every core of `relay` at the worker's length, block for
/// block identical.
async fn mirrored(gateway: &TestGateway, worker: &WorkerAgentHandle, relay: RelayKey) -> bool {
    let cores = worker_cores(worker, relay).await;
    let state = gateway.state.lock().await;
    for (key, length) in &cores {
        if state.mirror.len(&CoreKey(*key)).unwrap_or(0) != *length {
            return false;
        }
    }
    drop(state);
    for (key, length) in cores {
        for index in 0..length {
            let theirs = {
                let mut state = gateway.state.lock().await;
                state.mirror.read_block(&CoreKey(key), index).await.unwrap()
            };
            let ours = worker
                .with_relay(relay, async |logs| {
                    if logs.owner_log().public_key().to_bytes() == key {
                        logs.owner_log().get(index).await.unwrap()
                    } else {
                        logs.writer_log(&WriterKey(key))
                            .await
                            .unwrap()
                            .get(index)
                            .await
                            .unwrap()
                    }
                })
                .await
                .unwrap();
            assert_eq!(
                theirs,
                ours,
                "mirror block {index} of {} differs",
                hex::encode(key)
            );
        }
    }
    true
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_register_their_relays_and_the_gateway_mirrors_every_core() {
    let gateway = TestGateway::start(identity(0x61)).await;
    let mut workers = Vec::new();
    for seed in [0x71u8, 0x72] {
        let data = tempfile::tempdir().unwrap();
        let relay = worker_agent::create_relay(data.path()).await.unwrap();
        let worker = start_worker(agent_config(identity(seed), data.path(), &gateway, None)).await;
        worker.append_events(relay, &events(0, 40)).await.unwrap();
        workers.push((data, relay, worker, identity(seed).peer_id()));
    }
    for (_, relay, worker, peer) in &workers {
        assert!(
            eventually(Duration::from_secs(30), async || {
                let state = gateway.state.lock().await;
                state.core.registry().workers_of(relay).any(|p| p == *peer)
            })
            .await,
            "relay {relay} was not registered by its worker"
        );
        assert!(
            eventually(Duration::from_secs(30), async || mirrored(
                &gateway, worker, *relay
            )
            .await)
            .await,
            "relay {relay} was not mirrored"
        );
        let status = worker.status();
        assert!(status.gateway_connected);
        assert_eq!(status.relays.len(), 1);
        assert!(status.relays[0].cores.iter().any(|core| core.length >= 40));
    }
    let state = gateway.state.lock().await;
    assert_eq!(state.mirror.counters().rejected_blocks, 0);
    drop(state);
    for (_, _, worker, _) in &workers {
        worker.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_mirror_and_restarted_resumes_and_no_corrupt_block_is_stored() {
    let gateway = TestGateway::start(identity(0x61)).await;
    let data = tempfile::tempdir().unwrap();
    let relay = worker_agent::create_relay(data.path()).await.unwrap();
    let worker = start_worker(agent_config(identity(0x73), data.path(), &gateway, None)).await;
    // Appends while the gateway pulls; the kill lands somewhere in the middle.
    for batch in 0..10 {
        worker
            .append_events(relay, &events(batch * 30, 30))
            .await
            .unwrap();
        tokio::task::yield_now().await;
    }
    assert!(
        eventually(Duration::from_secs(30), async || {
            let state = gateway.state.lock().await;
            state.mirror.cores().any(|core| core.local_length > 0)
        })
        .await,
        "nothing was mirrored before the kill"
    );
    worker.shutdown().await;
    let at_kill: Vec<u64> = {
        let state = gateway.state.lock().await;
        state.mirror.cores().map(|core| core.local_length).collect()
    };
    eprintln!("mirror lengths when the worker was killed: {at_kill:?}");

    // Restarted on the same data directory, with more to mirror.
    let worker = start_worker(agent_config(identity(0x73), data.path(), &gateway, None)).await;
    worker.append_events(relay, &events(300, 50)).await.unwrap();
    assert!(
        eventually(Duration::from_secs(60), async || mirrored(
            &gateway, &worker, relay
        )
        .await)
        .await,
        "the mirror did not resume after the restart"
    );
    let state = gateway.state.lock().await;
    assert_eq!(
        state.mirror.counters().rejected_blocks,
        0,
        "a proof was rejected"
    );
    assert!(state.mirror.quarantined().is_empty());
    drop(state);
    let writer_len = worker_cores(&worker, relay)
        .await
        .iter()
        .map(|c| c.1)
        .max()
        .unwrap();
    assert_eq!(writer_len, 350);
    worker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_of_several_responses_is_mirrored_completely_even_after_a_kill_mid_backlog() {
    const BACKLOG: u64 = 3_000; // about three responses of at most 1,024 blocks
    let gateway = TestGateway::start(identity(0x61)).await;
    gateway.state.lock().await.hold_at = Some(0); // no pulls while the backlog is written
    let data = tempfile::tempdir().unwrap();
    let relay = worker_agent::create_relay(data.path()).await.unwrap();
    let worker = start_worker(agent_config(identity(0x75), data.path(), &gateway, None)).await;
    for batch in 0..BACKLOG / 500 {
        worker
            .append_events(relay, &events(batch * 500, 500))
            .await
            .unwrap();
    }
    let (writer, _) = worker_cores(&worker, relay)
        .await
        .into_iter()
        .find(|core| core.1 == BACKLOG)
        .unwrap();
    assert!(
        eventually(Duration::from_secs(30), async || {
            let state = gateway.state.lock().await;
            state
                .mirror
                .core(&CoreKey(writer))
                .is_some_and(|core| core.remote_length == BACKLOG)
        })
        .await,
        "the backlog was not advertised"
    );

    // One response, then the mirror stops: its signed tree covers the whole backlog, its blocks
    // only the first response. The worker is killed in that state.
    gateway.state.lock().await.hold_at = Some(1);
    assert!(
        eventually(Duration::from_secs(30), async || {
            let state = gateway.state.lock().await;
            state.mirror.len(&CoreKey(writer)).unwrap_or(0) > 0
        })
        .await,
        "the first response never arrived"
    );
    worker.shutdown().await;
    let (held, signed) = {
        let state = gateway.state.lock().await;
        let record = state.mirror.core(&CoreKey(writer)).unwrap();
        (record.local_length, record.signed_length)
    };
    eprintln!("mirror at the kill: {held} blocks held, signed tree {signed}");
    assert!(
        held > 0 && held <= MAX_MIRROR_BLOCKS_PER_RANGE as u64,
        "one response at most"
    );
    assert_eq!(signed, BACKLOG, "the signed tree ran ahead of the blocks");

    // Restarted with the mirror free to pull: it resumes from that state and completes.
    gateway.state.lock().await.hold_at = None;
    let worker = start_worker(agent_config(identity(0x75), data.path(), &gateway, None)).await;
    assert!(
        eventually(Duration::from_secs(120), async || mirrored(
            &gateway, &worker, relay
        )
        .await)
        .await,
        "the backlog was not mirrored completely: {:?}",
        gateway
            .state
            .lock()
            .await
            .mirror
            .core(&CoreKey(writer))
            .map(|core| (core.local_length, core.signed_length))
    );
    let state = gateway.state.lock().await;
    assert_eq!(
        state.mirror.counters().rejected_blocks,
        0,
        "a proof was rejected"
    );
    assert!(state.mirror.quarantined().is_empty());
    drop(state);
    worker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_that_is_not_the_pinned_identity_never_gets_to_push() {
    // The rogue listens where the worker expects its gateway, with another key.
    let rogue = TestGateway::start(identity(0x66)).await;
    let data = tempfile::tempdir().unwrap();
    let relay = worker_agent::create_relay(data.path()).await.unwrap();
    let mut config = agent_config(identity(0x74), data.path(), &rogue, None);
    config.gateway_key = identity(0x61).peer_id(); // the real gateway's key is pinned
    let worker = start_worker(config).await;
    // Give it time to try (and be refused) several times.
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(
        rogue.link(identity(0x74).peer_id()).await.is_none(),
        "the worker completed a link with an unpinned gateway"
    );
    let status = worker.status();
    assert!(!status.gateway_connected);
    assert_eq!(status.connects, 0);
    assert_eq!(status.relays[0].job_state, "idle");
    let state = rogue.state.lock().await;
    assert!(state.core.registry().relay(&relay).is_none());
    drop(state);
    worker.shutdown().await;
}
