//! The operator's logs as `kubectl logs` shows them: its standard output is a pipe there, so no
//! ANSI colour codes may be in it.

#![allow(clippy::unwrap_used)]

use std::process::{Command, Stdio};

/// A start that fails at once (a kubeconfig that does not exist) logs INFO and ERROR lines,
/// which are coloured on a terminal; into a pipe they carry no escape byte.
#[test]
fn logs_into_a_pipe_have_no_colour_codes() {
    let dir = std::env::temp_dir().join(format!("xdpturn-operator-logs-{}", std::process::id()));
    let out = Command::new(env!("CARGO_BIN_EXE_xdpturn-operator"))
        .arg("--kubeconfig")
        .arg(dir.join("missing-kubeconfig"))
        .env_remove("NO_COLOR")
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stdout}{stderr}");
    assert!(
        stdout.contains("ERROR") && stdout.contains("reading kubeconfig"),
        "the failure is logged: {stdout}{stderr}"
    );
    assert!(
        !out.stdout.contains(&0x1b) && !out.stderr.contains(&0x1b),
        "no ESC byte in piped logs: {stdout:?} {stderr:?}"
    );
}
