//! Running external tools (skopeo, docker, tar) so that a failure shows the command, its exit
//! status and both output streams.

use std::fs::File;
use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Output, Stdio};

/// Run to completion; panic unless it exits 0. Returns stdout.
#[track_caller]
pub fn run(cmd: &mut Command) -> String {
    let out = output(cmd);
    if !out.status.success() {
        panic!("command failed: {}", describe(cmd, &out));
    }
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Run to completion whatever the exit status.
#[track_caller]
pub fn output(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

/// Run to completion with `input` on stdin (a secret for `--password-stdin`), whatever the
/// exit status.
#[track_caller]
pub fn output_with_stdin(cmd: &mut Command, input: &str) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    // A tool that exits without reading is reported by its status, not as a broken pipe.
    let _ = child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(input.as_bytes());
    child
        .wait_with_output()
        .unwrap_or_else(|e| panic!("wait for {cmd:?}: {e}"))
}

/// Run with `input` on stdin; panic unless it exits 0. Returns stdout.
#[track_caller]
pub fn run_with_stdin(cmd: &mut Command, input: &str) -> String {
    let out = output_with_stdin(cmd, input);
    if !out.status.success() {
        panic!("command failed: {}", describe(cmd, &out));
    }
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Both output streams of a finished command, for matching error messages.
pub fn combined(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Panic unless the command failed. Returns both output streams.
#[track_caller]
pub fn expect_failure(cmd: &Command, out: &Output) -> String {
    if out.status.success() {
        panic!("command should have failed: {}", describe(cmd, out));
    }
    combined(out)
}

/// Run with stdout written to `file`; panic unless it exits 0.
#[track_caller]
pub fn run_to_file(cmd: &mut Command, file: &Path) {
    let f = File::create(file).unwrap_or_else(|e| panic!("create {}: {e}", file.display()));
    let out = cmd
        .stdin(Stdio::null())
        .stdout(f)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    if !out.status.success() {
        panic!("command failed: {}", describe(cmd, &out));
    }
}

/// `producer | consumer`; panic unless both exit 0. Returns the consumer's stdout.
#[track_caller]
pub fn pipe(producer: &mut Command, consumer: &mut Command) -> String {
    let mut first = producer
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {producer:?}: {e}"));
    let stdout = first.stdout.take().expect("piped stdout");
    let out = consumer
        .stdin(stdout)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {consumer:?}: {e}"));
    let first_out = first.wait_with_output().expect("wait for the producer");
    if !first_out.status.success() {
        panic!("command failed: {}", describe(producer, &first_out));
    }
    if !out.status.success() {
        panic!("command failed: {}", describe(consumer, &out));
    }
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn describe(cmd: &Command, out: &Output) -> String {
    format!(
        "{cmd:?} exited with {}\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `berth --data-dir DATA ARGS…`, with no configuration file from the environment.
pub fn berth(data: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_berth"));
    cmd.arg("--data-dir")
        .arg(data)
        .args(args)
        .env_remove("BERTH_CONFIG");
    cmd
}
