//! Drill: the gateway's data directory fills up while it writes under a lease.
//!
//! Injected: the gateway's data directory is a small tmpfs the test mounts (root is needed;
//! outside CI the drill is skipped with a message when `mount` is refused, under CI it must
//! run). With the relay's worker away and a lease held, a filler file takes every free byte.
//!
//! Promised: a write is `OK false "error: …"`, never `OK true`; reads from the mirror continue
//! (a REQ on a new connection is answered, without the refused write). Also promised, and not
//! kept yet (the ignored variant): once the filler is removed the next write is accepted, and
//! when the worker returns every accepted write is the worker's own and the refused one is not.
//!
//! Why a real full filesystem rather than an injected write error: the write path crosses
//! hypercore, the mirror store and the registry snapshot, and a real `ENOSPC` reaches every one
//! of them as it would in production; the gateway exposes no seam to inject one.

use std::io::Write as _;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use hypergate_core::nostr::testing::signed_event;

use crate::escrow_support::{Backend, Harness};
use crate::gateway_support::{
    PATIENCE, connect, escrow_config, eventually, get_json, init_worker, publish, query,
    run_worker, start_gateway,
};
use crate::support::{mirrored_cores, owner_mirrored, publish_until_accepted, quick_lease_options};

const LIVENESS: Duration = Duration::from_secs(1);

/// A tmpfs mounted on a temporary directory; unmounted (lazily) when dropped.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    /// Mounts `size` (e.g. `16m`); `None` when mounting is not permitted and CI is unset.
    fn mount(size: &str) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().unwrap();
        let status = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(dir.path())
            .status();
        match status {
            Ok(status) if status.success() => Some(Tmpfs { dir }),
            other => {
                assert!(
                    std::env::var_os("CI").is_none(),
                    "CI runs as root and must run the disk-full drill: mount failed: {other:?}"
                );
                eprintln!("skipping the disk-full drill: mounting a tmpfs failed ({other:?})");
                None
            }
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// Writes `path` until the filesystem has no byte left; the bytes written.
fn fill(path: &Path) -> u64 {
    let mut file = std::fs::File::create(path).unwrap();
    let mut written = 0u64;
    for chunk in [1 << 20, 4096, 1] {
        let block = vec![0xa5u8; chunk];
        loop {
            match file.write(&block) {
                Ok(0) => break,
                Ok(n) => written += n as u64,
                Err(error) if error.raw_os_error() == Some(28) => break, // ENOSPC
                Err(error) => panic!("filling {}: {error}", path.display()),
            }
        }
    }
    written
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_data_dir_refuses_writes_with_an_error_and_keeps_serving_reads() {
    drill(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_data_dir_accepts_writes_again_once_space_is_freed() {
    drill(true).await;
}

/// The drill; with `expect_recovery`, it frees the space and requires writes to resume and
/// reach the returning worker.
async fn drill(expect_recovery: bool) {
    let Some(tmpfs) = Tmpfs::mount("16m") else {
        return;
    };
    let options = quick_lease_options(LIVENESS);
    let harness = Harness::start(Backend::Embedded, options).await.unwrap();
    let gateway = start_gateway(tmpfs.path(), Some(escrow_config(&harness, "gateway"))).await;
    let worker_dir = tempfile::tempdir().unwrap();
    let relay = init_worker(worker_dir.path())["relayKey"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut worker = run_worker(worker_dir.path(), &gateway, Some(&harness));
    let mut local = connect(&format!("ws://{}/relay/{relay}", worker.addr)).await;
    let mut mirrored_ids = Vec::new();
    for i in 0..2u64 {
        let event = signed_event(12, 1_700_000_700 + i, 1, Vec::new(), &format!("early {i}"));
        assert_eq!(publish(&mut local, &event.to_json()).await[2], true);
        mirrored_ids.push(event.id.to_hex());
    }
    let ready = eventually(PATIENCE, async || {
        let status = get_json(worker.addr, "/status").await;
        let cores = mirrored_cores(gateway.http_addr, &relay).await;
        status["relays"][0]["escrowId"].is_string()
            && owner_mirrored(gateway.http_addr, &relay).await
            && cores
                .iter()
                .any(|(kind, length, _)| kind == "writer" && *length == 2)
    })
    .await;
    assert!(ready, "the worker never deposited and got mirrored");
    drop(local);
    worker.kill();
    tokio::time::sleep(LIVENESS + Duration::from_millis(200)).await;

    // A lease is held: the first write is accepted.
    let url = format!("ws://{}/relay/{relay}", gateway.http_addr);
    let mut client = connect(&url).await;
    let first = signed_event(12, 1_700_000_800, 1, Vec::new(), "before the disk filled");
    let (ok, _) = publish_until_accepted(&mut client, &first.to_json(), 40).await;
    assert_eq!(ok[2], true, "no lease before the fault: {ok}");
    let mut accepted = vec![first.id.to_hex()];

    // The disk fills up.
    let filler = tmpfs.path().join("filler");
    let filled = fill(&filler);
    println!("filled the gateway's data dir with {filled} bytes");
    let refused = signed_event(12, 1_700_000_801, 1, Vec::new(), "while the disk is full");
    let ok = publish(&mut client, &refused.to_json()).await;
    println!("write on a full disk: {ok}");
    assert_eq!(ok[2], false, "a write was accepted on a full disk: {ok}");
    assert!(ok[3].as_str().unwrap().starts_with("error:"), "{ok}");

    // Reads continue, on a new connection too.
    let mut reader = connect(&url).await;
    let served: Vec<String> = query(&mut reader, "full", r#"{"kinds":[1]}"#)
        .await
        .iter()
        .map(|event| event["id"].as_str().unwrap().to_owned())
        .collect();
    for id in mirrored_ids.iter().chain(&accepted) {
        assert!(
            served.contains(id),
            "{id} not served on a full disk: {served:?}"
        );
    }
    assert!(
        !served.contains(&refused.id.to_hex()),
        "the refused write is served"
    );

    // Space is freed: writes are accepted again.
    std::fs::remove_file(&filler).unwrap();
    if !expect_recovery {
        return;
    }
    let freed = Instant::now();
    let after = signed_event(12, 1_700_000_802, 1, Vec::new(), "after space was freed");
    let (ok, attempts) = publish_until_accepted(&mut client, &after.to_json(), 40).await;
    assert_eq!(ok[2], true, "no write accepted after space was freed: {ok}");
    println!(
        "recovered: write accepted {:?} after the filler was removed ({attempts} attempt(s))",
        freed.elapsed()
    );
    accepted.push(after.id.to_hex());
    let ids = |ids: &[String]| format!(r#"{{"ids":{}}}"#, serde_json::json!(ids));
    let late = query(&mut reader, "late", &ids(&[refused.id.to_hex()])).await;
    assert!(late.is_empty(), "the refused write appeared after recovery");

    // The worker returns: the accepted writes are its own, the refused one is not.
    let worker = run_worker(worker_dir.path(), &gateway, Some(&harness));
    let cleared = eventually(PATIENCE * 2, async || {
        let replicas = get_json(gateway.http_addr, "/api/blind-peer/replicas").await;
        replicas["replicas"][0]["gatewayPendingWrites"] == false
    })
    .await;
    assert!(cleared, "the accepted writes were never resynced");
    let mut local = connect(&format!("ws://{}/relay/{relay}", worker.addr)).await;
    let on_worker = query(&mut local, "accepted", &ids(&accepted)).await;
    assert_eq!(on_worker.len(), accepted.len(), "accepted writes lost");
    let leaked = query(&mut local, "refused", &ids(&[refused.id.to_hex()])).await;
    assert!(leaked.is_empty(), "the refused write reached the worker");
    drop(gateway);
}
