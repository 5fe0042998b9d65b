//! Helpers for Convoy's end-to-end tests: locate and run the real `convoy` binary.

use std::path::PathBuf;
use std::process::{Command, Output};

/// The `convoy` binary of this workspace's current profile, built if it is not there yet
/// (`cargo test --workspace` builds it; `cargo test -p convoy_e2e` alone may not).
pub fn convoy_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    // target/<profile>/deps/e2e-<hash> -> target/<profile>/convoy
    let profile_dir = exe
        .parent()
        .and_then(|p| p.parent())
        .expect("target profile dir");
    let bin = profile_dir.join(format!("convoy{}", std::env::consts::EXE_SUFFIX));
    if !bin.exists() {
        let status = Command::new(env!("CARGO"))
            .args(["build", "-p", "convoy", "--bin", "convoy"])
            .status()
            .expect("running cargo build");
        assert!(status.success(), "cargo build -p convoy failed");
    }
    bin
}

/// Runs `convoy ARGS` and returns its output.
pub fn convoy(args: &[&str]) -> Output {
    Command::new(convoy_bin())
        .args(args)
        .output()
        .expect("running convoy")
}

/// Runs `convoy ARGS`, asserts it succeeded, and returns its stdout.
pub fn convoy_ok(args: &[&str]) -> String {
    let out = convoy(args);
    assert!(
        out.status.success(),
        "convoy {args:?} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 stdout")
}
