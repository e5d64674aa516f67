//! Operator commands as real processes: `hypergate audit verify` on a real audit
//! log (intact, then tampered) and `hypergate escrow migrate` against a real
//! PostgreSQL (twice: the second run applies nothing).

#![allow(clippy::unwrap_used)] // Test helpers outside #[test] functions.

use std::process::Command;

use hypergate_adapters::audit::{AuditEvent, AuditLog};
use hypergate_core::ids::RelayKey;
use hypergate_core::time::UnixTime;

fn hypergate() -> Command {
    Command::new(env!("CARGO_BIN_EXE_hypergate"))
}

fn write_audit_log(dir: &std::path::Path, entries: u64) {
    smol::block_on(async {
        let mut log = AuditLog::open(dir).await.unwrap();
        for i in 0..entries {
            let event = AuditEvent::rotation(
                RelayKey([7; 32]),
                &format!("escrow_{}", i + 1),
                &format!("escrow_{i}"),
                "worker",
                UnixTime(1_700_000_000_000 + i),
            );
            log.append_event(&event).await.unwrap();
        }
    });
}

#[test]
fn audit_verify_prints_an_intact_log_and_exits_zero() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("audit");
    write_audit_log(&dir, 3);
    let output = hypergate()
        .args(["audit", "verify"])
        .arg(&dir)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("3 entries, chain intact"), "{stdout}");
    assert_eq!(stdout.matches("rotation").count(), 3, "{stdout}");

    let json = hypergate()
        .args(["audit", "verify", "--json"])
        .arg(&dir)
        .output()
        .unwrap();
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&json.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
}

#[test]
fn audit_verify_fails_on_a_tampered_block() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("audit");
    write_audit_log(&dir, 2);
    let data = std::fs::read_dir(&dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .find(|path| path.file_name().is_some_and(|n| n == "data"))
        .unwrap();
    let mut bytes = std::fs::read(&data).unwrap();
    bytes[5] ^= 0x01;
    std::fs::write(&data, bytes).unwrap();
    let output = hypergate()
        .args(["audit", "verify"])
        .arg(&dir)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("does not verify"));
}

#[test]
fn escrow_migrate_applies_the_schema_once() {
    let Ok(admin_url) = std::env::var("HYPERGATE_TEST_DATABASE_URL") else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI is set but HYPERGATE_TEST_DATABASE_URL is missing: scripts/test starts PostgreSQL"
        );
        eprintln!("skipped: HYPERGATE_TEST_DATABASE_URL is not set");
        return;
    };
    let database = format!("hg_migrate_{}", std::process::id());
    let mut admin = postgres::Client::connect(&admin_url, postgres::NoTls).unwrap();
    admin
        .batch_execute(&format!("DROP DATABASE IF EXISTS {database}"))
        .unwrap();
    admin
        .batch_execute(&format!("CREATE DATABASE {database}"))
        .unwrap();
    let url = match admin_url.rsplit_once('/') {
        Some((base, _)) => format!("{base}/{database}"),
        None => panic!("unexpected database URL {admin_url}"),
    };

    let run = || {
        let output = hypergate()
            .args(["escrow", "migrate", "--json"])
            .env("ESCROW_DATABASE_URL", &url)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_slice::<serde_json::Value>(&output.stdout).unwrap()
    };
    let first = run();
    assert!(!first["applied"].as_array().unwrap().is_empty(), "{first}");
    let second = run();
    assert!(second["applied"].as_array().unwrap().is_empty(), "{second}");
    assert_eq!(second["alreadyApplied"], first["applied"]);

    let bad = hypergate()
        .args(["escrow", "migrate", "--database-url", "not a url"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(1));
    admin
        .batch_execute(&format!("DROP DATABASE IF EXISTS {database}"))
        .unwrap();
}
