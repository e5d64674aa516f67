//! Escrow store throughput (a benchmark, not a test; figures go to docs/benchmarks.md):
//! committed deposit transactions per second (each a rotation: supersede the
//! previous deposit, insert the new one, index its audit entry) and unlocks
//! per second (an unlock is two transactions: `record_lease_issued` +
//! `record_lease_ended`), median of 5 runs, embedded vs PostgreSQL.
//!
//! `cargo bench -p hypergate-adapters --bench escrow_store`
//!
//! PostgreSQL runs when `HYPERGATE_BENCH_DATABASE_URL` is set; the bench
//! migrates that database and leaves its rows there (use a throwaway one).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use hypergate_adapters::escrow_store::{
    AuditIndexEntry, EmbeddedEscrowStore, EscrowStore, LeaseRecord, PostgresEscrowStore,
    PostgresSettings, StoredDeposit, WriteOutcome,
};
use hypergate_core::escrow::{AuditKind, DEFAULT_POLICY_VERSION, DepositRecord};
use hypergate_core::ids::{PeerId, RelayKey};
use hypergate_core::lease::LeaseId;
use hypergate_core::time::UnixTime;
use serde_json::json;

const RUNS: usize = 5;
const DEPOSITS_PER_RUN: u64 = 400;
const UNLOCKS_PER_RUN: u64 = 200;
const RELAYS: u64 = 10;
const T0: u64 = 1_700_000_000_000;

/// Writes one run's worth of operations into a store, numbering audit entries from `seq`.
struct Workload<'s> {
    store: &'s dyn EscrowStore,
    salt: u64,
    seq: u64,
}

impl Workload<'_> {
    fn relay(&self, n: u64) -> RelayKey {
        let mut key = [0u8; 32];
        key[..8].copy_from_slice(&self.salt.to_be_bytes());
        key[8..16].copy_from_slice(&n.to_be_bytes());
        RelayKey(key)
    }

    fn audit(
        &mut self,
        kind: AuditKind,
        escrow_id: &str,
        relay: RelayKey,
        lease: Option<LeaseId>,
    ) -> AuditIndexEntry {
        self.seq += 1;
        AuditIndexEntry {
            seq: self.seq,
            kind,
            escrow_id: escrow_id.to_owned(),
            lease_id: lease,
            relay,
            actor: "bench".into(),
            at: UnixTime(T0 + self.seq),
            block_digest: [7; 32],
        }
    }

    fn deposit(&mut self, n: u64) -> String {
        let relay = self.relay(n % RELAYS);
        let escrow_id = format!("bench_{:x}_{n}", self.salt);
        let deposit = StoredDeposit {
            record: DepositRecord {
                escrow_id: escrow_id.clone(),
                relay_key: relay,
                owner: PeerId([1; 32]),
                permitted_requesters: BTreeSet::from([PeerId([2; 32])]),
                policy_version: DEFAULT_POLICY_VERSION.into(),
                created_at: UnixTime(T0 + n),
                expires_at: UnixTime(T0 + n + 86_400_000),
                revoked_at: None,
                revoked_by: None,
                revoked_reason: None,
                superseded_by: None,
                unlocks_used: 0,
            },
            sealed_package: json!({"cipherText": "Y2lwaGVydGV4dA==", "nonce": "bm9uY2U=", "publicKey": "a2V5"}),
            metadata: json!({"identifier": "bench", "name": "bench relay"}),
            writer_hash: [3; 32],
        };
        let audit = self.audit(AuditKind::Deposit, &escrow_id, relay, None);
        assert_eq!(
            self.store.put_deposit(&deposit, &audit).unwrap(),
            WriteOutcome::Applied
        );
        escrow_id
    }

    fn unlock(&mut self, n: u64) {
        let relay = self.relay(n % RELAYS);
        let current = self.store.current_deposit(&relay).unwrap().unwrap();
        let id = LeaseId {
            relay,
            epoch: n / RELAYS + 1,
        };
        let escrow_id = current.record.escrow_id;
        let lease = LeaseRecord {
            id,
            escrow_id: escrow_id.clone(),
            requester: PeerId([2; 32]),
            issued_at: UnixTime(T0 + n),
            expires_at: UnixTime(T0 + n + 600_000),
            evidence: json!({"registration": {"escrowEnabled": true}}),
            reasons: Vec::new(),
            payload_digest: [4; 32],
            released_at: None,
            release_reason: None,
        };
        let issued = self.audit(AuditKind::UnlockIssued, &escrow_id, relay, Some(id));
        assert_eq!(
            self.store.record_lease_issued(&lease, &issued).unwrap(),
            WriteOutcome::Applied
        );
        let ended = self.audit(AuditKind::LeaseReleased, &escrow_id, relay, Some(id));
        let outcome = self
            .store
            .record_lease_ended(id, UnixTime(T0 + n + 1), "peer-healthy", &ended)
            .unwrap();
        assert_eq!(outcome, WriteOutcome::Applied);
    }
}

/// Per-second rates of one run: (deposits, unlocks).
fn run(store: &dyn EscrowStore, salt: u64) -> (f64, f64) {
    let seq = store.last_audit_seq().unwrap().unwrap_or(0);
    let mut workload = Workload { store, salt, seq };
    let started = Instant::now();
    for n in 0..DEPOSITS_PER_RUN {
        workload.deposit(n);
    }
    let deposits = DEPOSITS_PER_RUN as f64 / started.elapsed().as_secs_f64();
    // Each unlock also reads the relay's current deposit, as the escrow service would.
    let started = Instant::now();
    for n in 0..UNLOCKS_PER_RUN {
        workload.unlock(n);
    }
    let unlocks = UNLOCKS_PER_RUN as f64 / started.elapsed().as_secs_f64();
    (deposits, unlocks)
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn report(backend: &str, runs: Vec<(f64, f64)>) {
    let deposits: Vec<f64> = runs.iter().map(|run| run.0).collect();
    let unlocks: Vec<f64> = runs.iter().map(|run| run.1).collect();
    let list = |values: &[f64]| {
        values
            .iter()
            .map(|v| format!("{v:.0}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    println!(
        "{backend:<10} deposit: {:>7.0} tx/s   (runs: {})",
        median(deposits.clone()),
        list(&deposits)
    );
    println!(
        "{backend:<10} unlock:  {:>7.0} unlocks/s = {:.0} tx/s (issue + end; runs: {})",
        median(unlocks.clone()),
        2.0 * median(unlocks.clone()),
        list(&unlocks)
    );
}

fn salt() -> u64 {
    // Distinct relays and escrow ids per run and per invocation (PostgreSQL keeps rows).
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    (nanos as u64) ^ u64::from(std::process::id()).rotate_left(32)
}

fn main() {
    println!(
        "escrow store: {DEPOSITS_PER_RUN} deposits over {RELAYS} relays, then {UNLOCKS_PER_RUN} unlocks; median of {RUNS} runs"
    );
    let embedded: Vec<(f64, f64)> = (0..RUNS)
        .map(|_| {
            let dir = tempfile::tempdir().unwrap();
            let store = EmbeddedEscrowStore::open(dir.path()).unwrap();
            run(&store, salt())
        })
        .collect();
    report("embedded", embedded);

    match std::env::var("HYPERGATE_BENCH_DATABASE_URL") {
        Ok(url) => {
            let store =
                PostgresEscrowStore::connect(&PostgresSettings::from_url(&url).unwrap()).unwrap();
            store.migrate().unwrap();
            let postgres: Vec<(f64, f64)> = (0..RUNS).map(|_| run(&store, salt())).collect();
            report("postgres", postgres);
        }
        Err(_) => println!("postgres   skipped: HYPERGATE_BENCH_DATABASE_URL is not set"),
    }
}
