//! Drill: the escrow's PostgreSQL stops under load and comes back.
//!
//! Injected: the escrow runs on a PostgreSQL server the drill starts for itself (so it may stop
//! it); while deposits stream in (one signed deposit after another, each a transaction) and a
//! relay's worker is away, the server is stopped with `pg_ctl -m immediate` (every connection
//! dropped, transactions in flight cut), then started again on the same port and data.
//!
//! Promised: while the database is down deposits are refused and a gateway write gets
//! `OK false "read-only: …"`, never `OK true`; every deposit the escrow acknowledged is in the
//! database afterwards; once the server is back the escrow serves deposits and unlocks again by
//! itself (its pool reconnects), and the gateway's next write is accepted under a lease.
//!
//! Needs the PostgreSQL 15 binaries (`PGBIN`, default `/usr/lib/postgresql/15/bin`) and, as
//! root, the `postgres` user: skipped with a message when they are missing and CI is unset.

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use hypergate_core::nostr::testing::signed_event;
use tokio::sync::Mutex;

use crate::escrow_support::{Harness, RelayFixture, TestDatabase, peer_of};
use crate::gateway_support::{
    PATIENCE, connect, escrow_config, eventually, publish, query, start_gateway,
};
use crate::support::{deposited_worker, publish_until_accepted, quick_lease_options};

const LIVENESS: Duration = Duration::from_secs(1);

/// A PostgreSQL server of the drill's own, in a temporary directory; stopped when dropped.
struct OwnPostgres {
    root: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
    /// `runuser -u postgres --` as root (initdb and postgres refuse root), nothing otherwise.
    as_user: Vec<String>,
}

impl OwnPostgres {
    /// initdb + start; `None` when PostgreSQL is not installed and CI is unset.
    fn start() -> Option<OwnPostgres> {
        let bin = PathBuf::from(
            std::env::var("PGBIN").unwrap_or_else(|_| "/usr/lib/postgresql/15/bin".into()),
        );
        if !bin.join("postgres").exists() {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI needs PostgreSQL in {} for the database drill",
                bin.display()
            );
            eprintln!(
                "skipping the PostgreSQL drill: no PostgreSQL in {}",
                bin.display()
            );
            return None;
        }
        let root = tempfile::tempdir().unwrap();
        let root_user = Command::new("id").arg("-u").output().unwrap().stdout == b"0\n";
        let as_user: Vec<String> = if root_user {
            let owner = Command::new("chown")
                .args(["postgres"])
                .arg(root.path())
                .status()
                .unwrap();
            assert!(owner.success(), "chown to the postgres user failed");
            vec![
                "runuser".into(),
                "-u".into(),
                "postgres".into(),
                "--".into(),
            ]
        } else {
            Vec::new()
        };
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let server = OwnPostgres {
            root,
            bin,
            port,
            as_user,
        };
        let data = server.data();
        server.run(
            "initdb",
            &[
                "-D",
                &data,
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--locale=C.UTF-8",
                "-N",
            ],
        );
        server.pg_ctl_start();
        Some(server)
    }

    fn data(&self) -> String {
        self.root.path().join("data").display().to_string()
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    fn run(&self, program: &str, args: &[&str]) {
        let binary = self.bin.join(program);
        let mut command = match self.as_user.split_first() {
            Some((first, rest)) => {
                let mut command = Command::new(first);
                command.args(rest).arg(&binary);
                command
            }
            None => Command::new(&binary),
        };
        let output = command.args(args).output().unwrap();
        assert!(
            output.status.success(),
            "{program} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    fn pg_ctl_start(&self) {
        let options = format!(
            "-c listen_addresses=127.0.0.1 -p {} -k {} -c fsync=off",
            self.port,
            self.root.path().display()
        );
        let log = self.root.path().join("server.log").display().to_string();
        self.run(
            "pg_ctl",
            &[
                "-D",
                &self.data(),
                "-l",
                &log,
                "-w",
                "-s",
                "-o",
                &options,
                "start",
            ],
        );
    }

    /// Stops the server at once: connections are dropped, transactions in flight cut.
    fn stop_immediately(&self) {
        self.run(
            "pg_ctl",
            &["-D", &self.data(), "-m", "immediate", "-w", "-s", "stop"],
        );
    }
}

impl Drop for OwnPostgres {
    fn drop(&mut self) {
        let data = self.data();
        let binary = self.bin.join("pg_ctl");
        let mut command = match self.as_user.split_first() {
            Some((first, rest)) => {
                let mut command = Command::new(first);
                command.args(rest).arg(&binary);
                command
            }
            None => Command::new(&binary),
        };
        let _ = command
            .args(["-D", &data, "-m", "immediate", "-w", "-s", "stop"])
            .output();
    }
}

/// What the deposit stream saw: acknowledged escrow ids, and refusals by error code.
#[derive(Default)]
struct Deposits {
    acknowledged: Vec<(Instant, String)>,
    refused: Vec<(Instant, String)>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_escrow_refuses_while_its_database_is_down_and_recovers_by_itself_when_it_returns() {
    let Some(postgres) = OwnPostgres::start() else {
        return;
    };
    let options = quick_lease_options(LIVENESS);
    let db = TestDatabase::create_at(&postgres.url());
    let harness = Harness::start_on(db, options).await;
    let gateway_data = tempfile::tempdir().unwrap();
    let gateway = start_gateway(
        gateway_data.path(),
        Some(escrow_config(&harness, "gateway")),
    )
    .await;
    let worker_dir = tempfile::tempdir().unwrap();
    let (relay, mut worker) = deposited_worker(worker_dir.path(), &gateway, &harness).await;
    worker.kill();

    // The load: deposits of fresh relays, one after another, until told to stop.
    let policy = harness.policy().await;
    let depositor = harness.client("worker");
    let deposits = Arc::new(Mutex::new(Deposits::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let (deposits, stop) = (Arc::clone(&deposits), Arc::clone(&stop));
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let body = RelayFixture::new().deposit(&policy, &[peer_of("gateway")]);
                let outcome = depositor.deposit(&body).await;
                let mut deposits = deposits.lock().await;
                match outcome {
                    Ok(answer) => deposits.acknowledged.push((
                        Instant::now(),
                        answer["escrowId"].as_str().unwrap_or_default().to_owned(),
                    )),
                    Err(error) => deposits.refused.push((Instant::now(), error.to_string())),
                }
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;

    // The database stops.
    let stopped = Instant::now();
    postgres.stop_immediately();
    let url = format!("ws://{}/relay/{relay}", gateway.http_addr);
    let mut client = connect(&url).await;
    let during = signed_event(15, 1_700_003_000, 1, Vec::new(), "database down");
    let ok = publish(&mut client, &during.to_json()).await;
    println!("write with the database down: {ok}");
    assert_eq!(
        ok[2], false,
        "a write was accepted with the database down: {ok}"
    );
    assert!(ok[3].as_str().unwrap().starts_with("read-only:"), "{ok}");
    let acknowledged_in_outage = {
        let deposits = deposits.lock().await;
        deposits
            .acknowledged
            .iter()
            .filter(|(at, _)| *at > stopped + Duration::from_millis(100))
            .count()
    };
    tokio::time::sleep(Duration::from_millis(1500)).await;

    // The database returns: deposits and unlocks resume by themselves.
    let restarted = Instant::now();
    postgres.pg_ctl_start();
    let resumed = eventually(PATIENCE, async || {
        let deposits = deposits.lock().await;
        deposits
            .acknowledged
            .last()
            .is_some_and(|(at, _)| *at > restarted)
    })
    .await;
    assert!(
        resumed,
        "no deposit was acknowledged after the database returned"
    );
    let deposit_recovery = restarted.elapsed();
    let after = signed_event(15, 1_700_003_100, 1, Vec::new(), "database back");
    let (ok, attempts) = publish_until_accepted(&mut client, &after.to_json(), 60).await;
    assert_eq!(
        ok[2], true,
        "no write accepted after the database returned: {ok}"
    );
    let write_recovery = restarted.elapsed();
    stop.store(true, Ordering::Relaxed);
    load.await.unwrap();

    // Every acknowledged deposit is in the database; the refused write is nowhere.
    let deposits = deposits.lock().await;
    let stored = harness
        .db
        .as_ref()
        .unwrap()
        .query_texts("SELECT id FROM escrow_deposits");
    let lost: Vec<&String> = deposits
        .acknowledged
        .iter()
        .map(|(_, id)| id)
        .filter(|id| !stored.contains(id))
        .collect();
    let mut codes: Vec<String> = deposits
        .refused
        .iter()
        .map(|(_, error)| error.chars().take(90).collect())
        .collect();
    codes.dedup();
    println!(
        "deposits: {} acknowledged ({acknowledged_in_outage} during the outage), {} refused: \
         {codes:?}",
        deposits.acknowledged.len(),
        deposits.refused.len()
    );
    println!(
        "recovered: deposits {deposit_recovery:?} and the first write {write_recovery:?} after \
         the restart ({attempts} attempt(s))"
    );
    assert!(lost.is_empty(), "acknowledged deposits lost: {lost:?}");
    assert!(
        !deposits.refused.is_empty(),
        "no deposit was refused while the database was down"
    );
    let served = query(
        &mut client,
        "down",
        &format!(r#"{{"ids":["{}"]}}"#, during.id.to_hex()),
    )
    .await;
    assert!(served.is_empty(), "the refused write is served");
}
