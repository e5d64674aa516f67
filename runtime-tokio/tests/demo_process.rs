//! `hypergate demo` as a real process: it must fall back and return, say so,
//! and exit 0; `--json` must print one JSON object per line.

use std::process::Command;

fn hypergate() -> Command {
    Command::new(env!("CARGO_BIN_EXE_hypergate"))
}

#[test]
fn demo_process_falls_back_to_the_replica_and_returns_to_a_worker() {
    let output = hypergate()
        .args(["demo", "--heartbeat-ms", "40"])
        .output()
        .expect("the hypergate binary runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "demo failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    for expected in [
        "routed",
        "fallback-started",
        "fallback-ended",
        "ok: peer first",
    ] {
        assert!(
            stdout.contains(expected),
            "missing {expected:?} in:\n{stdout}"
        );
    }
}

#[test]
fn demo_json_output_is_one_object_per_line() {
    let output = hypergate()
        .args(["demo", "--heartbeat-ms", "40", "--json"])
        .output()
        .expect("the hypergate binary runs");
    assert!(output.status.success());
    let stdout = String::from_utf8_lossy(&output.stdout);
    let mut lines = 0;
    for line in stdout.lines() {
        let value: serde_json::Value = serde_json::from_str(line).expect("each line is JSON");
        assert!(value.get("event").is_some() && value.get("t").is_some());
        lines += 1;
    }
    assert!(lines > 10);
}

#[test]
fn unknown_subcommand_exits_with_a_usage_error() {
    let output = hypergate().arg("frobnicate").output().expect("runs");
    assert_eq!(output.status.code(), Some(2), "clap's usage error code");
    let help = hypergate().arg("--help").output().expect("runs");
    assert!(help.status.success());
    assert!(String::from_utf8_lossy(&help.stdout).contains("demo"));
}
