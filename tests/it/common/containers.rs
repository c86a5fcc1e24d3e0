//! skopeo and podman with a credential store of their own, so a login made elsewhere (in
//! ~/.docker, ~/.config/containers, /run/containers) can neither leak into a test nor make
//! one of its checks pass.

use std::ffi::OsStr;
use std::fs;
use std::path::PathBuf;
use std::process::Command;

use super::cmd::{combined, expect_failure, output, output_with_stdin, run};
use super::require_tool;

/// Every place skopeo and podman read or write logins (`--authfile`, `$REGISTRY_AUTH_FILE`,
/// `$XDG_RUNTIME_DIR/containers/auth.json`, `~/.config/containers/auth.json`,
/// `$DOCKER_CONFIG/config.json`, `~/.docker/config.json`) points into one temporary directory.
pub struct Clients {
    dir: tempfile::TempDir,
}

impl Clients {
    pub fn new() -> Clients {
        let dir = tempfile::tempdir().unwrap();
        for sub in ["home", "run", "config", "docker"] {
            fs::create_dir_all(dir.path().join(sub)).unwrap();
        }
        // podman refuses a $DOCKER_CONFIG without a config.json.
        fs::write(dir.path().join("docker/config.json"), br#"{"auths":{}}"#).unwrap();
        Clients { dir }
    }

    pub fn authfile(&self) -> PathBuf {
        self.dir.path().join("auth.json")
    }

    pub fn command<S: AsRef<OsStr>>(&self, tool: &str, args: &[S]) -> Command {
        let d = self.dir.path();
        let mut cmd = Command::new(require_tool(tool));
        cmd.env("HOME", d.join("home"))
            .env("XDG_RUNTIME_DIR", d.join("run"))
            .env("XDG_CONFIG_HOME", d.join("config"))
            .env("DOCKER_CONFIG", d.join("docker"))
            .env("REGISTRY_AUTH_FILE", self.authfile());
        if tool == "skopeo" {
            // No /etc/containers/policy.json needed.
            cmd.arg("--insecure-policy");
        }
        cmd.args(args);
        cmd
    }

    /// skopeo ARGS; panics unless it succeeds. Returns stdout.
    #[track_caller]
    pub fn skopeo<S: AsRef<OsStr>>(&self, args: &[S]) -> String {
        run(&mut self.command("skopeo", args))
    }

    /// skopeo ARGS, which must fail. Returns both output streams.
    #[track_caller]
    pub fn skopeo_fails<S: AsRef<OsStr>>(&self, args: &[S]) -> String {
        let mut cmd = self.command("skopeo", args);
        let out = output(&mut cmd);
        expect_failure(&cmd, &out)
    }

    /// `TOOL login --tls-verify=false --authfile F -u USER --password-stdin HOST`.
    pub fn login(&self, tool: &str, host: &str, user: &str, secret: &str) -> (bool, String) {
        let authfile = self.authfile();
        let mut cmd = self.command(
            tool,
            &[
                "login",
                "--tls-verify=false",
                "--authfile",
                authfile.to_str().unwrap(),
                "-u",
                user,
                "--password-stdin",
                host,
            ],
        );
        let out = output_with_stdin(&mut cmd, secret);
        (out.status.success(), combined(&out))
    }

    /// The registries the auth file holds credentials for.
    pub fn logins(&self) -> Vec<String> {
        let Ok(bytes) = fs::read(self.authfile()) else {
            return Vec::new();
        };
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        v["auths"]
            .as_object()
            .map(|a| a.keys().cloned().collect())
            .unwrap_or_default()
    }
}

/// containerd's socket: Docker's own containerd, or a system one.
pub fn containerd_socket() -> &'static str {
    ["/var/run/docker/containerd/containerd.sock", "/run/containerd/containerd.sock"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .expect("no containerd socket: these tests need containerd running (Docker's, or the containerd package's)")
}
