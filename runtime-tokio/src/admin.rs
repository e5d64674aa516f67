//! Operator commands that act on stored state: verifying the escrow audit log
//! and migrating the escrow's PostgreSQL schema.
//!
//! Exit codes follow one rule: 0 when the check or change succeeded, 1 when it
//! failed (the reason on stderr), 2 when the audit log verified but holds unsigned
//! trailing bytes — entries that were lost or an append cut short by a crash, which
//! an operator must look at before the escrow can start on that log again.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use hypergate_adapters::audit::AuditLog;
use hypergate_adapters::escrow_store::{PostgresEscrowStore, PostgresSettings};

/// `hypergate audit verify <dir>`: checks every block against the log's key and
/// signed tree, and the digest chain; prints the entries.
pub async fn audit_verify(
    dir: &Path,
    pinned_key: Option<&str>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let report = match pinned_key {
        Some(key) => AuditLog::verify_pinned(dir, key).await,
        None => AuditLog::verify(dir).await,
    }
    .with_context(|| format!("audit log {} does not verify", dir.display()))?;
    if json {
        for entry in &report.entries {
            println!("{}", entry.json);
        }
    } else {
        println!(
            "audit log {}: key {}, {} entries, chain intact",
            dir.display(),
            report.public_key,
            report.length
        );
        for entry in &report.entries {
            println!(
                "{:>6}  {:<16} relay {}  escrow {}  actor {}  digest {}",
                entry.seq,
                entry.event.kind.as_str(),
                entry.event.relay_key.short(),
                entry.event.escrow_id,
                entry.event.actor,
                &entry.digest[..16]
            );
        }
    }
    if report.unsigned_trailing_bytes > 0 {
        eprintln!(
            "hypergate: WARNING: {} unsigned bytes follow the signed log in {}: entries were \
             lost or an append was cut short. The escrow refuses to open this log; keep a copy \
             for investigation and start a new audit directory.",
            report.unsigned_trailing_bytes,
            dir.display()
        );
        return Ok(ExitCode::from(2));
    }
    Ok(ExitCode::SUCCESS)
}

/// `hypergate escrow migrate`: applies the escrow schema's pending migrations.
pub async fn escrow_migrate(database_url: String, json: bool) -> anyhow::Result<ExitCode> {
    // The postgres client is blocking (it runs its own runtime): keep it off the
    // async worker threads.
    let report = tokio::task::spawn_blocking(move || {
        let settings = PostgresSettings::from_url(&database_url)?;
        PostgresEscrowStore::connect(&settings)?.migrate()
    })
    .await
    .context("migration task failed")?
    .context("escrow schema migration failed")?;
    if json {
        println!(
            "{}",
            serde_json::json!({
                "applied": report.applied,
                "alreadyApplied": report.already_applied,
            })
        );
    } else if report.applied.is_empty() {
        println!(
            "escrow schema up to date ({} migrations already applied)",
            report.already_applied.len()
        );
    } else {
        for name in &report.applied {
            println!("applied {name}");
        }
    }
    Ok(ExitCode::SUCCESS)
}
