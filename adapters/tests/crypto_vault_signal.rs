//! The lease vault's SIGINT/SIGTERM wipe, tested in child processes so the
//! signal never reaches the test runner.
//!
//! Each test re-executes this test binary with `--exact <its own name>` and
//! an environment variable that turns the same test function into the child:
//! the child fills a vault, installs the wipe, raises the signal at itself
//! and reports what it saw on stdout; the parent checks the report and how
//! the child ended.

// A test binary: a failed setup step should fail the test loudly.
#![allow(clippy::unwrap_used)]

use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use ed25519_dalek::SigningKey;
use hypergate_adapters::crypto::LeaseVault;
use hypergate_core::ids::RelayKey;
use hypergate_core::lease::LeaseId;
use signal_hook::consts::{SIGINT, SIGTERM};

const CHILD_ENV: &str = "HYPERGATE_VAULT_SIGNAL_CHILD";

fn lease(relay: u8) -> LeaseId {
    LeaseId {
        relay: RelayKey([relay; 32]),
        epoch: 1,
    }
}

fn filled_vault() -> LeaseVault {
    let vault = LeaseVault::new();
    vault
        .insert(lease(1), SigningKey::from_bytes(&[1; 32]))
        .unwrap();
    vault
        .insert(lease(2), SigningKey::from_bytes(&[2; 32]))
        .unwrap();
    vault
}

/// Waits up to five seconds for the signal thread to wipe the vault.
fn wait_until_empty(vault: &LeaseVault) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if vault.is_empty() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    false
}

fn run_child(test_name: &str, signal: &str) -> Output {
    let exe = std::env::current_exe().unwrap();
    Command::new(exe)
        .args([test_name, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, signal)
        .output()
        .unwrap()
}

fn child_signal() -> Option<i32> {
    match std::env::var(CHILD_ENV).ok()?.as_str() {
        "SIGTERM" => Some(SIGTERM),
        "SIGINT" => Some(SIGINT),
        _ => None,
    }
}

#[test]
fn signal_wipes_every_key_and_leaves_shutdown_to_the_process() {
    if let Some(signal) = child_signal() {
        let vault = filled_vault();
        let _guard = vault.install_signal_wipe().unwrap();
        println!("CHILD held={}", vault.len());
        signal_hook::low_level::raise(signal).unwrap();
        let wiped = wait_until_empty(&vault);
        // Still alive: the process's own handling decides when to stop.
        println!(
            "CHILD wiped={wiped} lease1={} lease2={}",
            vault.contains(&lease(1)),
            vault.contains(&lease(2))
        );
        return;
    }
    for signal in ["SIGTERM", "SIGINT"] {
        let output = run_child(
            "signal_wipes_every_key_and_leaves_shutdown_to_the_process",
            signal,
        );
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "{signal}: child failed: {:?}\n{stdout}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(stdout.contains("CHILD held=2"), "{signal}: {stdout}");
        assert!(
            stdout.contains("CHILD wiped=true lease1=false lease2=false"),
            "{signal}: {stdout}"
        );
        // The child really ran the one test (not zero tests).
        assert!(stdout.contains("1 passed"), "{signal}: {stdout}");
    }
}

#[test]
fn terminate_variant_wipes_then_dies_by_the_signal() {
    if let Some(signal) = child_signal() {
        let vault = filled_vault();
        let _guard = vault.install_signal_wipe_then_terminate().unwrap();
        println!("CHILD held={}", vault.len());
        signal_hook::low_level::raise(signal).unwrap();
        // The signal thread terminates the process; reaching the end is a failure.
        std::thread::sleep(Duration::from_secs(5));
        println!("CHILD survived");
        return;
    }
    let output = run_child("terminate_variant_wipes_then_dies_by_the_signal", "SIGTERM");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("CHILD held=2"), "{stdout}");
    assert!(!stdout.contains("CHILD survived"), "{stdout}");
    assert_eq!(output.status.signal(), Some(SIGTERM), "{:?}", output.status);
}

#[test]
fn dropping_the_guard_stops_the_wipe() {
    if std::env::var(CHILD_ENV).is_ok() {
        let vault = filled_vault();
        drop(vault.install_signal_wipe().unwrap());
        // An independent observer, to know the signal was delivered.
        let delivered = Arc::new(AtomicBool::new(false));
        signal_hook::flag::register(SIGTERM, Arc::clone(&delivered)).unwrap();
        signal_hook::low_level::raise(SIGTERM).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while !delivered.load(Ordering::SeqCst) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        // Give a (wrongly) surviving wipe thread time to act.
        std::thread::sleep(Duration::from_millis(200));
        println!(
            "CHILD delivered={} held={}",
            delivered.load(Ordering::SeqCst),
            vault.len()
        );
        return;
    }
    let output = run_child("dropping_the_guard_stops_the_wipe", "SIGTERM");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{:?}\n{stdout}", output.status);
    assert!(stdout.contains("CHILD delivered=true held=2"), "{stdout}");
}
