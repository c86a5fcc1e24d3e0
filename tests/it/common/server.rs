//! The real `berth` binary on a loopback port, with its own data directory.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Server {
    pub child: Child,
    pub port: u16,
    pub data_dir: PathBuf,
    log: PathBuf,
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Server {
    /// Start `berth serve` on a free port with `data_dir`, extra environment and arguments.
    pub fn start(data_dir: &Path, env: &[(&str, &str)]) -> Server {
        Self::start_on(data_dir, free_port(), env)
    }

    pub fn start_on(data_dir: &Path, port: u16, env: &[(&str, &str)]) -> Server {
        Self::start_wrapped(data_dir, port, env, &[])
    }

    /// `start_on` through a wrapper command, e.g. `["sh", "-c", "umask 022; exec \"$@\"", "sh"]`.
    pub fn start_wrapped(
        data_dir: &Path,
        port: u16,
        env: &[(&str, &str)],
        wrapper: &[&str],
    ) -> Server {
        let log = data_dir.with_extension(format!("{port}.log"));
        let log_file = std::fs::File::create(&log).unwrap();
        let mut cmd = match wrapper.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(env!("CARGO_BIN_EXE_berth"));
                c
            }
            None => Command::new(env!("CARGO_BIN_EXE_berth")),
        };
        cmd.arg("serve")
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--data-dir")
            .arg(data_dir)
            .env_remove("BERTH_CONFIG")
            .env("BERTH_ADMIN_PASSWORD", super::ADMIN_PASSWORD)
            // Parallel servers would race for the default metrics port; tests that use the
            // metrics listener give it a port of their own.
            .env("BERTH_METRICS__LISTEN", "off")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("start berth");
        let mut server = Server {
            child,
            port,
            data_dir: data_dir.to_path_buf(),
            log,
        };
        server.wait_ready();
        server
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// `127.0.0.1:PORT`, as image references name the registry.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `berth --data-dir DATA ARGS` (user, token, anonymous administration) while the server
    /// runs; panics unless it exits 0. Returns stdout, e.g. a token's secret with its newline.
    #[track_caller]
    pub fn admin(&self, args: &[&str]) -> String {
        super::cmd::run(&mut self.admin_command(args))
    }

    /// The same with `input` on stdin (`user add NAME --password-stdin`).
    #[track_caller]
    pub fn admin_with_stdin(&self, args: &[&str], input: &str) -> String {
        super::cmd::run_with_stdin(&mut self.admin_command(args), input)
    }

    fn admin_command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_berth"));
        cmd.arg("--data-dir")
            .arg(&self.data_dir)
            .args(args)
            .env_remove("BERTH_CONFIG");
        cmd
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("berth exited early with {status}:\n{}", self.log());
            }
            // Its own line, not only an open port: another test's server may hold the port
            // this one failed to bind.
            let serving = self.log().contains("berth is serving");
            if serving && std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("berth did not start listening:\n{}", self.log());
    }

    /// Peak resident memory so far (VmHWM), in KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        status_kib(self.child.id(), "VmHWM:")
    }

    /// Resident anonymous memory now (RssAnon: heap, stacks; not mapped files), in KiB.
    pub fn rss_anon_kib(&self) -> u64 {
        status_kib(self.child.id(), "RssAnon:")
    }

    /// Threads of the server process now.
    pub fn threads(&self) -> u64 {
        status_kib(self.child.id(), "Threads:")
    }

    pub fn rss_kib(&self) -> u64 {
        status_kib(self.child.id(), "VmRSS:")
    }

    /// SIGKILL, no chance to clean up.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM and wait for a clean exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        self.signal_term();
        self.child.wait().unwrap()
    }

    /// SIGTERM, without waiting.
    pub fn signal_term(&self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
    }

    /// Wait for the server to exit by itself.
    pub fn wait(&mut self) -> std::process::ExitStatus {
        self.child.wait().unwrap()
    }
}

/// A number from `/proc/PID/status` (KiB for the memory lines).
fn status_kib(pid: u32, key: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
