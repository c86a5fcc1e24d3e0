//! The configuration layers and the command line, through the real binary.

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

fn berth(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_berth"));
    cmd.args(args).current_dir(dir);
    for (k, _) in std::env::vars() {
        if k.starts_with("BERTH_") {
            cmd.env_remove(k);
        }
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn config_show_prints_embedded_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let o = berth(dir.path(), &["config", "show"], &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("listen = \"127.0.0.1:5000\""), "{out}");
    assert!(out.contains("data_dir = \"./berth-data\""), "{out}");
    assert!(out.contains("durability = \"power-loss\""), "{out}");
}

#[test]
fn layers_apply_in_order_file_env_flags() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("berth.toml");
    std::fs::write(
        &file,
        "listen = \"0.0.0.0:7000\"\ndata_dir = \"/from/file\"\nlog = \"debug\"\n",
    )
    .unwrap();
    let f = file.to_str().unwrap();
    let o = berth(dir.path(), &["--config", f, "config", "show"], &[]);
    assert!(stdout(&o).contains("listen = \"0.0.0.0:7000\""));
    assert!(stdout(&o).contains("log = \"debug\""));
    let o = berth(
        dir.path(),
        &["--config", f, "config", "show"],
        &[("BERTH_LISTEN", "127.0.0.1:7001")],
    );
    assert!(
        stdout(&o).contains("listen = \"127.0.0.1:7001\""),
        "env beats file"
    );
    assert!(stdout(&o).contains("data_dir = \"/from/file\""));
    let o = berth(
        dir.path(),
        &[
            "--config",
            f,
            "config",
            "show",
            "--listen",
            "127.0.0.1:7002",
            "--data-dir",
            "/flag",
        ],
        &[("BERTH_LISTEN", "127.0.0.1:7001")],
    );
    assert!(
        stdout(&o).contains("listen = \"127.0.0.1:7002\""),
        "flag beats env"
    );
    assert!(stdout(&o).contains("data_dir = \"/flag\""));
    // BERTH_CONFIG names the file like --config.
    let o = berth(dir.path(), &["config", "show"], &[("BERTH_CONFIG", f)]);
    assert!(stdout(&o).contains("listen = \"0.0.0.0:7000\""));
}

#[track_caller]
fn refused(o: &Output, needle: &str) {
    assert_eq!(o.status.code(), Some(2), "exit code; stderr: {}", stderr(o));
    let err = stderr(o);
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    assert!(err.starts_with("berth: "), "{err}");
    assert!(err.contains(needle), "{needle:?} in {err}");
}

#[test]
fn unknown_keys_and_invalid_values_exit_2_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.toml");
    std::fs::write(&file, "listen = \"127.0.0.1:1\"\nlisten_adress = \"x\"\n").unwrap();
    let f = file.to_str().unwrap();
    refused(
        &berth(dir.path(), &["--config", f, "serve"], &[]),
        "listen_adress",
    );
    refused(
        &berth(dir.path(), &["config", "show"], &[("BERTH_LISTN", "x")]),
        "listn",
    );
    refused(
        &berth(
            dir.path(),
            &["serve"],
            &[("BERTH_LISTEN", "not-an-address")],
        ),
        "LISTEN",
    );
    refused(
        &berth(dir.path(), &["serve", "--listen", "300.0.0.1:80"], &[]),
        "listen",
    );
    refused(
        &berth(dir.path(), &["serve"], &[("BERTH_DURABILITY", "sometimes")]),
        "sometimes",
    );
    refused(
        &berth(dir.path(), &["serve"], &[("BERTH_LOG", "berth=loud")]),
        "log",
    );
    refused(
        &berth(
            dir.path(),
            &["--config", "/no/such/file.toml", "serve"],
            &[],
        ),
        "does not exist",
    );
    std::fs::write(&file, "listen = [").unwrap();
    refused(
        &berth(dir.path(), &["--config", f, "serve"], &[]),
        "bad.toml",
    );
    let o = berth(dir.path(), &["no-such-command"], &[]);
    assert_eq!(o.status.code(), Some(2));
}

/// `berth serve` with no configuration at all: 127.0.0.1:5000, data in ./berth-data; then a
/// graceful stop on SIGTERM.
#[test]
fn serve_with_embedded_defaults_and_stop_on_sigterm() {
    if std::net::TcpStream::connect("127.0.0.1:5000").is_ok() {
        panic!("port 5000 is in use on this machine; the default-configuration test needs it free");
    }
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_berth"))
        .arg("serve")
        .current_dir(dir.path())
        .env_remove("BERTH_CONFIG")
        .env_remove("BERTH_LISTEN")
        .env_remove("BERTH_DATA_DIR")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect("127.0.0.1:5000").is_err() {
        assert!(
            Instant::now() < deadline,
            "berth did not listen on 127.0.0.1:5000"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(dir.path().join("berth-data/berth.db").is_file());
    assert!(dir.path().join("berth-data/blobs").is_dir());
    Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "graceful exit, got {status}");
    let mut log = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut log).unwrap();
    assert!(log.contains("shutting down"), "{log}");
    assert!(log.contains("stopped"), "{log}");
}
