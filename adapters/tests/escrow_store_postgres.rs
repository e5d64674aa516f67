//! The escrow store suite on PostgreSQL, plus what only PostgreSQL has:
//! migrations, connection settings, retries, and a crash test that really
//! terminates the server backend in the middle of a deposit transaction.
//!
//! `HYPERGATE_TEST_DATABASE_URL` names a superuser; each test creates its own
//! database and drops it. Without the variable the tests print that they
//! skipped, except under CI (`CI` set), where they fail.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod escrow_store_suite;

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use escrow_store_suite::{Backend, at, deposit_audit, new_deposit, peer, put, relay};
use hypergate_adapters::escrow_store::{
    EscrowStore, EscrowStoreError, MIGRATIONS, PostgresEscrowStore, PostgresSettings, RetryPolicy,
    WriteOutcome,
};
use postgres::error::SqlState;
use postgres::{Client, NoTls};

const URL_VAR: &str = "HYPERGATE_TEST_DATABASE_URL";

/// The superuser settings, or `None` (skip) when the variable is unset outside CI.
fn admin_settings() -> Option<PostgresSettings> {
    match std::env::var(URL_VAR) {
        Ok(url) => Some(PostgresSettings::from_url(&url).unwrap()),
        Err(_) if std::env::var_os("CI").is_some() => panic!(
            "{URL_VAR} is not set but CI is: the PostgreSQL escrow store tests must run in CI \
             (set {URL_VAR} to a superuser URL such as postgres://postgres@127.0.0.1:55432/postgres)"
        ),
        Err(_) => {
            eprintln!("skipped: {URL_VAR} is not set (a PostgreSQL superuser URL)");
            None
        }
    }
}

/// A database of its own for one test, dropped at the end (even on panic).
struct TestDatabase {
    admin: postgres::Config,
    name: String,
    settings: PostgresSettings,
}

impl TestDatabase {
    fn create() -> Option<Self> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let admin = admin_settings()?;
        let name = format!(
            "hg_escrow_test_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let mut client = admin.config.connect(NoTls).unwrap();
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .unwrap();
        let mut settings = admin.clone();
        settings.config.dbname(&name);
        settings.retry = RetryPolicy {
            max_attempts: 5,
            initial_delay: Duration::from_millis(50),
            max_delay: Duration::from_millis(500),
        };
        Some(Self {
            admin: admin.config,
            name,
            settings,
        })
    }

    fn store(&self) -> PostgresEscrowStore {
        PostgresEscrowStore::connect(&self.settings).unwrap()
    }

    fn client(&self) -> Client {
        self.settings.config.connect(NoTls).unwrap()
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        if let Ok(mut client) = self.admin.connect(NoTls) {
            let drop = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
            if let Err(error) = client.batch_execute(&drop) {
                eprintln!("could not drop test database {}: {error}", self.name);
            }
        }
    }
}

impl Backend for TestDatabase {
    fn open(&self) -> Box<dyn EscrowStore> {
        let store = self.store();
        store.migrate().unwrap();
        Box::new(store)
    }
}

fn postgres() -> Option<TestDatabase> {
    TestDatabase::create()
}

escrow_store_suite!(postgres);

// ---- settings (no database needed) ----

#[test]
fn settings_that_would_make_the_pool_panic_are_errors() {
    let mut settings = PostgresSettings::from_url("postgres://nobody@127.0.0.1:1/none").unwrap();
    assert_eq!(settings.pool_size, 5);
    settings.pool_size = 0;
    let refused = PostgresEscrowStore::connect(&settings);
    assert!(
        matches!(refused, Err(EscrowStoreError::InvalidInput(_))),
        "{refused:?}"
    );
    settings.pool_size = 1;
    settings.connect_timeout = Duration::ZERO;
    assert!(matches!(
        PostgresEscrowStore::connect(&settings),
        Err(EscrowStoreError::InvalidInput(_))
    ));
    let bad_url = PostgresSettings::from_url("postgres://[::1");
    assert!(matches!(bad_url, Err(EscrowStoreError::InvalidInput(_))));
}

#[test]
fn an_unreachable_server_fails_within_the_connect_timeout() {
    // Port 1 on loopback: nothing listens.
    let mut settings = PostgresSettings::from_url("postgres://nobody@127.0.0.1:1/none").unwrap();
    settings.connect_timeout = Duration::from_millis(500);
    let started = Instant::now();
    let refused = PostgresEscrowStore::connect(&settings);
    assert!(
        matches!(refused, Err(EscrowStoreError::Pool(_))),
        "{refused:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn retry_backoff_doubles_up_to_its_cap() {
    let retry = RetryPolicy {
        max_attempts: 10,
        initial_delay: Duration::from_millis(100),
        max_delay: Duration::from_millis(700),
    };
    let delays: Vec<u128> = (1..=6).map(|n| retry.delay_after(n).as_millis()).collect();
    assert_eq!(delays, vec![100, 200, 400, 700, 700, 700]);
    assert_eq!(retry.delay_after(u32::MAX).as_millis(), 700);
}

// ---- migrations ----

fn migration_rows(db: &TestDatabase) -> Vec<String> {
    db.client()
        .query("SELECT name FROM escrow_migrations ORDER BY name", &[])
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect()
}

#[test]
fn migrating_twice_applies_each_migration_once() {
    let Some(db) = postgres() else { return };
    let store = db.store();
    let names: Vec<String> = MIGRATIONS
        .iter()
        .map(|(name, _)| (*name).to_owned())
        .collect();
    let first = store.migrate().unwrap();
    assert_eq!(first.applied, names);
    assert!(first.already_applied.is_empty());
    let second = store.migrate().unwrap();
    assert!(second.applied.is_empty());
    assert_eq!(second.already_applied, names);
    assert_eq!(migration_rows(&db), names);
}

#[test]
fn concurrent_migrations_apply_each_migration_once() {
    let Some(db) = postgres() else { return };
    let barrier = std::sync::Barrier::new(4);
    let reports: Vec<_> = std::thread::scope(|scope| {
        let runs: Vec<_> = (0..4)
            .map(|_| {
                scope.spawn(|| {
                    let store = db.store();
                    barrier.wait();
                    store.migrate().unwrap()
                })
            })
            .collect();
        runs.into_iter().map(|run| run.join().unwrap()).collect()
    });
    let applied: usize = reports.iter().map(|report| report.applied.len()).sum();
    assert_eq!(applied, MIGRATIONS.len());
    assert_eq!(migration_rows(&db).len(), MIGRATIONS.len());
    // The schema works after the race.
    let store = db.store();
    put(
        &store,
        1,
        &new_deposit("escrow_d1", relay(1), peer(1), at(0)),
    );
}

#[test]
fn a_database_migrated_by_a_newer_build_is_refused() {
    let Some(db) = postgres() else { return };
    let store = db.store();
    store.migrate().unwrap();
    db.client()
        .batch_execute("INSERT INTO escrow_migrations (name) VALUES ('9999_from_the_future.sql')")
        .unwrap();
    let refused = store.migrate();
    assert!(
        matches!(&refused, Err(EscrowStoreError::UnknownMigrations(names)) if names == &["9999_from_the_future.sql"]),
        "{refused:?}"
    );
}

#[test]
fn the_schema_itself_allows_only_one_current_deposit_per_relay() {
    let Some(db) = postgres() else { return };
    let store = db.open();
    put(
        &*store,
        1,
        &new_deposit("escrow_d1", relay(1), peer(1), at(0)),
    );
    put(
        &*store,
        2,
        &new_deposit("escrow_d2", relay(1), peer(1), at(1)),
    );
    let mut client = db.client();
    let second_current =
        client.batch_execute(&blocker_insert("escrow_sneaky", &relay(1).to_hex(), true));
    let code = second_current.unwrap_err().code().cloned();
    assert_eq!(code, Some(SqlState::UNIQUE_VIOLATION));
    let rows: i64 = client
        .query_one(
            "SELECT count(*) FROM escrow_deposits WHERE relay_key = $1",
            &[&relay(1).to_hex()],
        )
        .unwrap()
        .get(0);
    assert_eq!(rows, 2, "rotation keeps both rows");
}

// ---- blocking a write mid-transaction, and killing it there ----

/// SQL inserting a bare deposit row; run inside an open transaction it holds
/// the row's id, so a store transaction inserting the same id blocks on it.
fn blocker_insert(escrow_id: &str, relay_hex: &str, current: bool) -> String {
    format!(
        "INSERT INTO escrow_deposits (id, relay_key, owner_peer_key, permitted_requesters, \
           encrypted_package, writer_hash, policy_version, created_at, expires_at, is_current) \
         VALUES ('{escrow_id}', '{relay_hex}', 'blocker', '[]', '{{}}', 'x', 'x', NOW(), NOW(), \
           {current})"
    )
}

/// Opens a transaction that holds `escrow_id` until the client rolls back.
fn hold_deposit_id(db: &TestDatabase, escrow_id: &str) -> Client {
    let mut client = db.client();
    client
        .batch_execute(&format!(
            "BEGIN; {}",
            blocker_insert(escrow_id, "blocker-relay", false)
        ))
        .unwrap();
    client
}

/// Waits for a store backend blocked on a lock while inserting a deposit;
/// returns its pid and application name.
fn blocked_deposit_insert(db: &TestDatabase) -> (i32, String) {
    let mut client = db.client();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let row = client
            .query_opt(
                "SELECT pid, application_name FROM pg_stat_activity \
                 WHERE datname = current_database() AND wait_event_type = 'Lock' \
                   AND query LIKE 'INSERT INTO escrow_deposits%'",
                &[],
            )
            .unwrap();
        if let Some(row) = row {
            return (row.get(0), row.get(1));
        }
        assert!(Instant::now() < deadline, "the deposit never blocked");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn terminate(db: &TestDatabase, pid: i32) {
    let killed: bool = db
        .client()
        .query_one("SELECT pg_terminate_backend($1)", &[&pid])
        .unwrap()
        .get(0);
    assert!(killed);
}

#[test]
fn a_backend_killed_mid_deposit_leaves_the_old_deposit_whole_and_the_new_one_absent() {
    let Some(mut db) = postgres() else { return };
    db.settings.retry.max_attempts = 1; // see the crash, not a retry
    let store = db.open();
    let old = new_deposit("escrow_old", relay(1), peer(1), at(0));
    let new = new_deposit("escrow_new", relay(1), peer(1), at(10));
    put(&*store, 1, &old);

    let mut blocker = hold_deposit_id(&db, "escrow_new");
    let result = std::thread::scope(|scope| {
        // The store's transaction locks, claims audit seq 2, marks the old
        // deposit superseded and not current, then blocks inserting the new one.
        let deposit = scope.spawn(|| store.put_deposit(&new, &deposit_audit(2, &new)));
        let (pid, application) = blocked_deposit_insert(&db);
        assert_eq!(application, "hypergate-escrow");
        terminate(&db, pid);
        deposit.join().unwrap()
    });
    blocker.batch_execute("ROLLBACK").unwrap();
    assert!(
        matches!(
            result,
            Err(EscrowStoreError::Unavailable { attempts: 1, .. })
        ),
        "{result:?}"
    );

    // All of the old state, none of the new.
    assert_eq!(store.current_deposit(&relay(1)).unwrap(), Some(old.clone()));
    assert_eq!(store.deposit_history(&relay(1)).unwrap(), vec![old.clone()]);
    assert_eq!(store.deposit("escrow_new").unwrap(), None);
    assert_eq!(
        store.audit_index(0..10).unwrap(),
        vec![deposit_audit(1, &old)]
    );
    // The pool replaced the dead connection; the deposit can be made now.
    put(&*store, 2, &new);
    assert_eq!(store.current_deposit(&relay(1)).unwrap(), Some(new));
}

#[test]
fn a_deposit_whose_backend_is_killed_is_retried_and_applied_once() {
    let Some(db) = postgres() else { return };
    let store = db.open();
    let old = new_deposit("escrow_old", relay(1), peer(1), at(0));
    let new = new_deposit("escrow_new", relay(1), peer(1), at(10));
    put(&*store, 1, &old);

    let mut blocker = hold_deposit_id(&db, "escrow_new");
    let result = std::thread::scope(|scope| {
        let deposit = scope.spawn(|| store.put_deposit(&new, &deposit_audit(2, &new)));
        let (pid, _) = blocked_deposit_insert(&db);
        terminate(&db, pid);
        blocker.batch_execute("ROLLBACK").unwrap();
        deposit.join().unwrap()
    });
    assert_eq!(result.unwrap(), WriteOutcome::Applied);
    let mut superseded = old.clone();
    superseded.record.superseded_by = Some("escrow_new".into());
    assert_eq!(
        store.deposit_history(&relay(1)).unwrap(),
        vec![superseded, new.clone()]
    );
    assert_eq!(
        store.audit_index(0..10).unwrap(),
        vec![deposit_audit(1, &old), deposit_audit(2, &new)]
    );
}

#[test]
fn statement_timeout_ends_a_blocked_write_and_is_not_retried() {
    let Some(mut db) = postgres() else { return };
    db.settings.statement_timeout = Duration::from_millis(300);
    let store = db.open();
    let new = new_deposit("escrow_new", relay(1), peer(1), at(10));
    let mut blocker = hold_deposit_id(&db, "escrow_new");
    let started = Instant::now();
    let result = store.put_deposit(&new, &deposit_audit(1, &new));
    let waited = started.elapsed();
    blocker.batch_execute("ROLLBACK").unwrap();
    match result {
        Err(EscrowStoreError::Postgres(error)) => {
            assert_eq!(error.code(), Some(&SqlState::QUERY_CANCELED));
        }
        other => panic!("expected a cancelled statement, got {other:?}"),
    }
    assert!(
        waited >= Duration::from_millis(300) && waited < Duration::from_secs(3),
        "{waited:?}"
    );
    assert_eq!(store.last_audit_seq().unwrap(), None);
}
