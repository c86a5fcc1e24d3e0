//! The registries under test: each one a child process on a free loopback port with its own
//! temp data dir, killed (and its dir removed) when the guard drops, also on panic.
//! berth starts with an admin password and is administered through its own CLI on the same
//! data dir, as an operator would; registry:2, NORA and Trow run without authentication
//! (peers.rs finds and configures the last two).

use std::fs::File;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use reqwest::Url;
use tempfile::TempDir;

use crate::peers::{self, Registry};

/// Debian's package of registry:2 (github.com/distribution/distribution 2.8).
pub const REGISTRY2_BIN: &str = "/usr/bin/docker-registry";
/// berth's `admin` password (a throwaway data dir on loopback).
pub const ADMIN_PASSWORD: &str = "bench-admin-password";
/// The robot token the workloads push and pull with.
pub const ROBOT: &str = "bench-robot";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Berth,
    Registry2,
    Nora,
    Trow,
}

impl Kind {
    pub fn label(self) -> &'static str {
        match self {
            Kind::Berth => "berth",
            Kind::Registry2 => "registry:2",
            Kind::Nora => "NORA",
            Kind::Trow => "Trow",
        }
    }
}

pub struct Server {
    pub kind: Kind,
    pub base: Url,
    addr: SocketAddr,
    data: PathBuf,
    child: Child,
    // Dropped after `Drop::drop` has killed the child, so the files are no longer in use.
    dir: TempDir,
}

/// A port that was free a moment ago. The server binds it right after; on a quiet bench
/// machine nothing else takes it in between.
pub fn free_port() -> Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0").context("cannot bind a loopback port")?;
    Ok(l.local_addr()?.port())
}

impl Server {
    pub fn start(reg: &Registry) -> Result<Server> {
        Self::start_configured(reg, None)
    }

    /// `start`, berth with a config file.
    pub fn start_configured(reg: &Registry, config: Option<&Path>) -> Result<Server> {
        let kind = reg.kind;
        let dir = tempfile::Builder::new()
            .prefix(&format!(
                "bench-{}-",
                kind.label().replace(':', "").to_lowercase()
            ))
            .tempdir()?;
        let data = dir.path().join("data");
        std::fs::create_dir(&data)?;
        let addr: SocketAddr = ([127, 0, 0, 1], free_port()?).into();
        let log = File::create(dir.path().join("server.log"))?;
        let mut cmd = match kind {
            Kind::Berth => {
                let mut cmd = berth(&data);
                cmd.arg("serve").arg("--listen").arg(addr.to_string());
                cmd.env("BERTH_LOG", "warn")
                    .env("BERTH_ADMIN_PASSWORD", ADMIN_PASSWORD);
                if let Some(c) = config {
                    cmd.env("BERTH_CONFIG", c);
                }
                cmd
            }
            Kind::Registry2 => {
                let config = dir.path().join("config.yml");
                std::fs::write(&config, registry2_config(&data, addr))?;
                let mut cmd = Command::new(&reg.bin);
                cmd.arg("serve").arg(config);
                cmd
            }
            Kind::Nora | Kind::Trow => peers::command(reg, dir.path(), &data, addr)?,
        };
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("cannot start {}", kind.label()))?;
        Ok(Server {
            kind,
            base: Url::parse(&format!("http://{addr}/"))?,
            addr,
            data,
            child,
            dir,
        })
    }

    /// The server's data directory.
    pub fn data(&self) -> &Path {
        &self.data
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Run `berth --data-dir <its dir> <args>` beside the running server; its stdout.
    pub fn berth_cli(&self, args: &[&str]) -> Result<String> {
        ensure!(
            self.kind == Kind::Berth,
            "{} has no berth CLI",
            self.kind.label()
        );
        let out = berth(&self.data)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .context("cannot run the berth CLI")?;
        ensure!(
            out.status.success(),
            "berth {}: {}: {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
        Ok(String::from_utf8(out.stdout)?)
    }

    /// Create the robot token ROBOT (everything on every repository); its secret.
    pub fn create_robot(&self) -> Result<String> {
        let out = self.berth_cli(&[
            "token",
            "create",
            "--user",
            "admin",
            "--name",
            ROBOT,
            "--scope",
            "**:pull,push,delete",
            "--expires",
            "never",
        ])?;
        let secret = out.trim();
        ensure!(
            !secret.is_empty() && !secret.contains(char::is_whitespace),
            "berth token create printed {out:?}, expected the secret alone"
        );
        Ok(secret.to_string())
    }

    /// Wait until the server answers HTTP (berth binds its port before it opens its data
    /// directory), then read the idle RSS (after that one request).
    pub async fn wait_ready(&mut self) -> Result<f64> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "{} exited at start-up ({status}):\n{}",
                    self.kind.label(),
                    self.log()
                );
            }
            if answers_http(self.addr).await {
                break;
            }
            ensure!(
                Instant::now() < deadline,
                "{} did not listen on {} within 30 s:\n{}",
                self.kind.label(),
                self.addr,
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.memory_mib("VmRSS")
    }

    /// A memory figure from /proc/<pid>/status (`VmRSS`, `VmHWM`), in MiB.
    pub fn memory_mib(&self, field: &str) -> Result<f64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))?;
        let kib: f64 = status
            .lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|v| v.trim().strip_suffix("kB")?.trim().parse().ok())
            .with_context(|| format!("no {field} in /proc/{}/status", self.child.id()))?;
        Ok(kib / 1024.0)
    }

    /// CPU time the server has used so far (user and system, all its threads), in seconds.
    /// Unlike a throughput, it barely moves with what else the machine is doing.
    pub fn cpu_secs(&self) -> Result<f64> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id()))?;
        // Fields after the command name, which is in parentheses: state is field 3,
        // utime and stime are fields 14 and 15, in clock ticks (USER_HZ, 100 on Linux).
        let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks = |i: usize| -> Result<f64> {
            let v = fields.get(i).and_then(|v| v.parse::<f64>().ok());
            v.with_context(|| format!("unexpected /proc/{}/stat: {stat}", self.child.id()))
        };
        Ok((ticks(11)? + ticks(12)?) / 100.0)
    }

    /// The last lines the server wrote, for error messages.
    pub fn log(&self) -> String {
        let text = std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether something answers an HTTP request on `addr` within half a second.
async fn answers_http(addr: SocketAddr) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let ask = async {
        let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
        s.write_all(b"GET /v2/ HTTP/1.0\r\n\r\n").await.ok()?;
        let mut head = [0u8; 5];
        s.read_exact(&mut head).await.ok()?;
        (&head == b"HTTP/").then_some(())
    };
    matches!(
        tokio::time::timeout(Duration::from_millis(500), ask).await,
        Ok(Some(()))
    )
}

/// The berth binary on `data`, configured by its flags only, not by the caller's `BERTH_*`.
fn berth(data: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_berth"));
    cmd.arg("--data-dir").arg(data);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("BERTH_") {
            cmd.env_remove(key);
        }
    }
    cmd
}

fn registry2_config(data: &Path, addr: SocketAddr) -> String {
    format!(
        "version: 0.1\n\
         log: {{level: error, accesslog: {{disabled: true}}}}\n\
         storage: {{filesystem: {{rootdirectory: {}}}, delete: {{enabled: true}}}}\n\
         http: {{addr: {addr}}}\n",
        data.display()
    )
}
