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
    // The port is bound before the data directory is opened: wait for an HTTP answer.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !answers_http(5000) {
        assert!(
            Instant::now() < deadline,
            "berth did not answer on 127.0.0.1:5000"
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

/// Whether something answers HTTP on 127.0.0.1:`port` within a second.
fn answers_http(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
    if s.write_all(b"GET /v2/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut buf = [0u8; 12];
    s.read_exact(&mut buf).is_ok() && buf.starts_with(b"HTTP/1.1")
}

#[test]
fn unrelated_berth_variables_change_nothing_and_misspelled_ones_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let plain = berth(dir.path(), &["config", "show"], &[]);
    assert!(plain.status.success());
    // What the README's CI example exports, and what other tools might.
    let with = berth(
        dir.path(),
        &["config", "show"],
        &[
            ("BERTH_TOKEN", "berth_rt_x"),
            ("BERTH_URL", "https://r.example"),
        ],
    );
    assert!(with.status.success(), "{}", stderr(&with));
    assert_eq!(stdout(&with), stdout(&plain));
    assert_eq!(stderr(&with), "");
    let o = berth(
        dir.path(),
        &["config", "show"],
        &[("BERTH_LISTNE", ":6000")],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("BERTH_LISTNE") && stderr(&o).contains("did you mean BERTH_LISTEN?"),
        "{}",
        stderr(&o)
    );
    assert_eq!(stdout(&o), stdout(&plain), "the misspelled one is not read");
    // The CLI's other commands too.
    let data = dir.path().join("data");
    let o = berth(
        dir.path(),
        &["--data-dir", data.to_str().unwrap(), "user", "list"],
        &[("BERTH_TOKEN", "berth_rt_x")],
    );
    assert!(!stderr(&o).contains("BERTH_TOKEN"), "{}", stderr(&o));
}

#[test]
fn errors_name_the_key_as_written_without_internals_or_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("berth.toml");
    std::fs::write(&file, "listen = \"nowhere\"\n").unwrap();
    let f = file.to_str().unwrap();
    type Case<'a> = (Vec<&'a str>, Vec<(&'a str, &'a str)>, &'a str);
    let cases: Vec<Case> = vec![
        (vec!["serve"], vec![("BERTH_LOG", "verbose")], "BERTH_LOG"),
        (
            vec!["serve"],
            vec![("BERTH_LISTEN", "nowhere")],
            "BERTH_LISTEN",
        ),
        (vec!["serve", "--listen", "nowhere"], vec![], "--listen"),
        (vec!["--config", f, "serve"], vec![], "listen in "),
        (
            vec!["serve"],
            vec![("BERTH_LIMITS__MAX_CONNECTIONS", "many")],
            "BERTH_LIMITS__MAX_CONNECTIONS",
        ),
        (
            vec!["serve"],
            vec![("BERTH_SHUTDOWN_GRACE_SECS", "-1")],
            "BERTH_SHUTDOWN_GRACE_SECS",
        ),
        (
            vec!["serve"],
            vec![("BERTH_EXTERNAL_URL", "https://ops:hunter2@registry.example")],
            "BERTH_EXTERNAL_URL",
        ),
        (
            vec!["serve"],
            vec![("BERTH_TLS__MODE", "sometimes")],
            "BERTH_TLS__MODE",
        ),
    ];
    for (args, env, key) in cases {
        let o = berth(dir.path(), &args, &env);
        refused(&o, key);
        let err = stderr(&o);
        for leak in ["src/", "berth::", "hunter2", "u64", "usize", "Overrides"] {
            assert!(!err.contains(leak), "{leak:?} in {err}");
        }
    }
}

#[test]
fn listen_addresses_as_registry_users_type_them() {
    let dir = tempfile::tempdir().unwrap();
    for (given, shown) in [
        (":5000", "0.0.0.0:5000"),
        ("localhost:5001", "127.0.0.1:5001"),
    ] {
        let o = berth(dir.path(), &["config", "show", "--listen", given], &[]);
        assert!(o.status.success(), "{}", stderr(&o));
        assert!(
            stdout(&o).contains(&format!("listen = \"{shown}\"")),
            "{}",
            stdout(&o)
        );
    }
}

#[test]
fn config_show_names_every_key() {
    let dir = tempfile::tempdir().unwrap();
    let o = berth(dir.path(), &["config", "show"], &[]);
    let out = stdout(&o);
    for key in berth::config::keys::KEYS {
        let last = key.rsplit('.').next().unwrap();
        assert!(
            out.contains(&format!("{last} = "))
                || out
                    .lines()
                    .next()
                    .is_some_and(|l| l.starts_with("# not set:") && l.contains(key)),
            "{key} missing from:\n{out}"
        );
    }
    assert!(out.contains("[limits]"), "{out}");
}

#[test]
fn a_busy_port_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let data = dir.path().join("data");
    let o = berth(
        dir.path(),
        &[
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
            data.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("cannot listen"), "{err}");
    assert!(!err.contains("password"), "no admin was created: {err}");
    assert!(!data.exists(), "a data directory was created");
}

#[test]
fn a_second_server_on_one_data_directory_is_refused_also_after_a_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut first = crate::common::Server::start(&data, &[]);
    let serve_again = || {
        berth(
            dir.path(),
            &[
                "serve",
                "--listen",
                &format!("127.0.0.1:{}", crate::common::server::free_port()),
                "--data-dir",
                data.to_str().unwrap(),
            ],
            &[],
        )
    };
    let o = serve_again();
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(err.contains("another berth server"), "{err}");
    assert!(err.contains(&format!("pid {}", first.child.id())), "{err}");
    // The CLI still works beside it.
    first.admin(&["user", "list"]);
    first.kill9();
    let second = crate::common::Server::start(&data, &[]);
    second.admin(&["user", "list"]);
}

#[test]
fn gc_durations_as_people_write_them() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("gc.toml");
    std::fs::write(
        &file,
        "[gc]\ngrace = \"90m\"\nuntagged_grace = \"never\"\nwindow = \"22:00-04:00\"\n",
    )
    .unwrap();
    let f = file.to_str().unwrap();
    let o = berth(
        dir.path(),
        &["--config", f, "config", "show"],
        &[("BERTH_GC__UPLOAD_EXPIRY", "3600")],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    for want in [
        "[gc]",
        "grace = \"90m\"",
        "untagged_grace = \"never\"",
        "upload_expiry = 3600",
        "window = \"22:00-04:00\"",
        "interval = \"1h\"",
    ] {
        assert!(out.contains(want), "{want} in {out}");
    }
    refused(
        &berth(dir.path(), &["serve"], &[("BERTH_GC__GRACE", "5 parsecs")]),
        "BERTH_GC__GRACE: \"5 parsecs\" is not a duration",
    );
    refused(
        &berth(
            dir.path(),
            &["serve"],
            &[("BERTH_GC__UPLOAD_EXPIRY", "never")],
        ),
        "cannot be never",
    );
    refused(
        &berth(dir.path(), &["serve"], &[("BERTH_GC__WINDOW", "2am-5am")]),
        "not a daily window",
    );
    refused(
        &berth(dir.path(), &["serve"], &[("BERTH_GC__INTERVAL", "0")]),
        "out of range",
    );
}
