//! The Docker daemon through its CLI. A `Docker` session keeps its logins in a config
//! directory of its own (`docker --config`), so nothing reaches ~/.docker or other tests, and
//! removes the images it made from the daemon however the test ends. Loopback registries
//! are insecure-allowed by default, so plain HTTP works.
//!
//! The calls block the test's thread; nothing else runs on its runtime meanwhile (the server
//! is another process), so that is harmless.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use super::cmd::{output, output_with_stdin, pipe, run, run_with_stdin};
use super::require_tool;

/// The docker CLI, after checking once that the daemon answers.
pub fn cli() -> &'static Path {
    static CLI: OnceLock<PathBuf> = OnceLock::new();
    CLI.get_or_init(|| {
        let docker = require_tool("docker");
        let out = output(Command::new(&docker).arg("info"));
        assert!(
            out.status.success(),
            "`docker info` failed, so the Docker daemon is not usable; these tests need it \
             (start dockerd, or run as a member of the docker group):\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        docker
    })
}

pub struct Docker {
    config: tempfile::TempDir,
    /// Image references to remove from the daemon on drop.
    images: Vec<String>,
}

impl Docker {
    pub fn new() -> Docker {
        cli();
        Docker {
            config: tempfile::tempdir().unwrap(),
            images: Vec::new(),
        }
    }

    /// `docker --config <this session's> ARGS`.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(cli());
        cmd.arg("--config").arg(self.config.path()).args(args);
        cmd
    }

    /// Run; panic unless it exits 0. Returns stdout.
    #[track_caller]
    pub fn run(&self, args: &[&str]) -> String {
        run(&mut self.command(args))
    }

    /// Run whatever the exit status.
    #[track_caller]
    pub fn output(&self, args: &[&str]) -> Output {
        output(&mut self.command(args))
    }

    /// Remove `image` from the daemon when the session ends (pulled or tagged references).
    pub fn track(&mut self, image: &str) {
        if !self.images.iter().any(|i| i == image) {
            self.images.push(image.to_string());
        }
    }

    /// `docker login HOST -u USER --password-stdin`; panics unless it succeeds.
    #[track_caller]
    pub fn login(&self, host: &str, user: &str, secret: &str) -> String {
        run_with_stdin(
            &mut self.command(&["login", host, "-u", user, "--password-stdin"]),
            secret,
        )
    }

    /// The same whatever the outcome.
    pub fn try_login(&self, host: &str, user: &str, secret: &str) -> Output {
        output_with_stdin(
            &mut self.command(&["login", host, "-u", user, "--password-stdin"]),
            secret,
        )
    }

    /// The registries this session holds credentials for (`auths` of its config.json).
    pub fn logins(&self) -> Vec<String> {
        let path = self.config.path().join("config.json");
        let Ok(bytes) = fs::read(&path) else {
            return Vec::new();
        };
        let config: serde_json::Value = serde_json::from_slice(&bytes)
            .unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()));
        config["auths"]
            .as_object()
            .map(|a| a.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// Whether the daemon holds `image`.
    pub fn has_image(&self, image: &str) -> bool {
        self.output(&["image", "inspect", image]).status.success()
    }

    /// `tar -C root -c . | docker import - image`
    pub fn import(&mut self, root: &Path, image: &str) {
        self.track(image);
        pipe(
            Command::new(require_tool("tar"))
                .arg("-C")
                .arg(root)
                .args(["-c", "."]),
            &mut self.command(&["import", "-", image]),
        );
    }
}

impl Drop for Docker {
    fn drop(&mut self) {
        for image in &self.images {
            let _ = self.command(&["rmi", "--force", image]).output();
        }
    }
}

/// A root filesystem with a static busybox as `/bin/busybox` and `/bin/sh`.
pub fn busybox_rootfs(root: &Path) {
    let bin = root.join("bin");
    fs::create_dir_all(&bin).unwrap();
    fs::copy(require_tool("busybox"), bin.join("busybox")).unwrap();
    std::os::unix::fs::symlink("busybox", bin.join("sh")).unwrap();
}
