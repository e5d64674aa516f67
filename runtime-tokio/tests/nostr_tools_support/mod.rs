//! nostr-tools, the real Nostr client library the end-to-end tests drive, installed with npm
//! into a temp dir.

// Test helpers: a failed setup step should fail the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::Value;

/// nostr-tools (npm) installed in a temp dir, driving the scripts in `tests/js/`.
pub(crate) struct NostrTools {
    dir: tempfile::TempDir,
}

impl NostrTools {
    /// Installs nostr-tools and ws; `None` (skipped) only when node/npm are missing and CI is
    /// unset — under CI a missing client is a failure.
    pub(crate) fn install() -> Option<NostrTools> {
        let available = |program: &str| {
            Command::new(program)
                .arg("--version")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|status| status.success())
        };
        if !(available("npm") && available("node")) {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI needs node and npm for the nostr-tools steps"
            );
            eprintln!("skipping the nostr-tools steps: node or npm is not installed");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let install = Command::new("npm")
            .args([
                "install",
                "--no-audit",
                "--no-fund",
                "--silent",
                "nostr-tools@2",
                "ws@8",
            ])
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert!(
            install.status.success(),
            "npm install failed: {}",
            String::from_utf8_lossy(&install.stderr)
        );
        for script in ["nostr_tools_step.mjs", "nostr_tools_client.mjs"] {
            std::fs::copy(
                Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("tests/js")
                    .join(script),
                dir.path().join(script),
            )
            .unwrap();
        }
        Some(NostrTools { dir })
    }

    /// Runs one step against `url` (see the script's header); its JSON report.
    pub(crate) async fn step(&self, url: &str, args: &[&str]) -> Value {
        let script = self.dir.path().join("nostr_tools_step.mjs");
        let mut command = Command::new("node");
        command.arg(script).arg(url).args(args);
        let output = tokio::task::spawn_blocking(move || command.output().unwrap())
            .await
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        // nostr-tools logs NOTICEs to stdout too: the report is the last line.
        let last = stdout.trim().lines().last().unwrap_or_default();
        let report: Value = serde_json::from_str(last).unwrap_or_else(|_| {
            panic!(
                "nostr-tools step printed no report: {stdout} {}",
                String::from_utf8_lossy(&output.stderr)
            )
        });
        assert_eq!(report["ok"], true, "nostr-tools step failed: {report}");
        report
    }

    /// Runs `tests/js/nostr_tools_client.mjs` against `url` (publish, live, read back, a
    /// tampered event refused); its JSON report. The client must succeed.
    pub(crate) fn client(&self, url: &str) -> Value {
        let output = Command::new("node")
            .arg(self.dir.path().join("nostr_tools_client.mjs"))
            .arg(url)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "nostr-tools client failed: {stdout} {}",
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_str(stdout.trim()).unwrap()
    }
}
