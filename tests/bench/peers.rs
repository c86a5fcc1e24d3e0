//! The registries berth is compared with, each measured when its binary is found:
//!
//! - registry:2, Debian's `docker-registry` package at REGISTRY2_BIN;
//! - NORA (`cargo install nora-registry`), named by `BENCH_NORA` or found as `nora` on the
//!   PATH;
//! - Trow (built from its source with `SQLX_OFFLINE=true cargo build --release`), named by
//!   `BENCH_TROW` or found as `trow` on the PATH.
//!
//! An empty `BENCH_NORA` or `BENCH_TROW` leaves that peer out; one that names no executable
//! file is an error. The variable must name the server's binary itself, not a wrapper
//! script: memory and CPU are read from the process the bench starts. Each peer runs
//! without authentication, as registry:2 does, and with the settings below so that it
//! serves the whole table (NORA's defaults limit requests per second and concurrent uploads).

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Result, ensure};

use crate::server::{Kind, REGISTRY2_BIN};

/// A registry to measure: what it is and the binary that runs it.
#[derive(Clone, Debug)]
pub struct Registry {
    pub kind: Kind,
    pub bin: PathBuf,
}

impl Registry {
    pub fn berth() -> Registry {
        Registry {
            kind: Kind::Berth,
            bin: env!("CARGO_BIN_EXE_berth").into(),
        }
    }
}

/// How a peer is found, and how to get it when it is not.
struct Lookup {
    kind: Kind,
    var: &'static str,
    name: &'static str,
    how: &'static str,
}

const NORA: Lookup = Lookup {
    kind: Kind::Nora,
    var: "BENCH_NORA",
    name: "nora",
    how: "`cargo install nora-registry`",
};

const TROW: Lookup = Lookup {
    kind: Kind::Trow,
    var: "BENCH_TROW",
    name: "trow",
    how: "build it from its source with SQLX_OFFLINE=true",
};

/// The peers to measure beside berth. Each one left out is said in one line.
pub fn find() -> Result<Vec<Registry>> {
    let mut found = Vec::new();
    if Path::new(REGISTRY2_BIN).is_file() {
        found.push(Registry {
            kind: Kind::Registry2,
            bin: REGISTRY2_BIN.into(),
        });
    } else {
        println!("registry:2 is not installed ({REGISTRY2_BIN} missing): skipped");
    }
    for lookup in [NORA, TROW] {
        let label = lookup.kind.label();
        let bin = match std::env::var_os(lookup.var) {
            Some(v) if v.is_empty() => {
                println!("{} is empty: {label} skipped", lookup.var);
                continue;
            }
            Some(v) => {
                let bin = PathBuf::from(v);
                ensure!(
                    is_executable(&bin),
                    "{}={}: not an executable file",
                    lookup.var,
                    bin.display()
                );
                bin
            }
            None => match on_path(lookup.name) {
                Some(bin) => bin,
                None => {
                    println!(
                        "{label} not found ({} unset, no `{}` on the PATH; {}): skipped",
                        lookup.var, lookup.name, lookup.how
                    );
                    continue;
                }
            },
        };
        println!("{label}: {} ({})", bin.display(), version(&bin));
        found.push(Registry {
            kind: lookup.kind,
            bin,
        });
    }
    Ok(found)
}

fn is_executable(path: &Path) -> bool {
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|bin| is_executable(bin))
}

/// The first line of `<bin> --version`, for the record.
fn version(bin: &Path) -> String {
    let out = Command::new(bin)
        .arg("--version")
        .stdin(Stdio::null())
        .output();
    match out {
        Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout)
            .lines()
            .next()
            .unwrap_or("")
            .trim()
            .to_string(),
        _ => "version unknown".into(),
    }
}

/// The command that serves a peer on `addr` with its data in `data`, run from `dir` (the
/// server's temp dir), configured by what is set here only, not by the caller's environment.
pub fn command(reg: &Registry, dir: &Path, data: &Path, addr: SocketAddr) -> Result<Command> {
    let mut cmd = Command::new(&reg.bin);
    cmd.current_dir(dir).env_remove("RUST_LOG");
    match reg.kind {
        Kind::Nora => {
            // Its settings are read from environment variables, then a config file
            // (`config.toml` in the working directory unless NORA_CONFIG_PATH names one).
            remove_vars(&mut cmd, "NORA_");
            let config = dir.join("nora.toml");
            std::fs::write(&config, "")?;
            cmd.arg("serve")
                .env("NORA_CONFIG_PATH", config)
                .env("NORA_HOST", addr.ip().to_string())
                .env("NORA_PORT", addr.port().to_string())
                .env("NORA_STORAGE_PATH", data)
                .env("NORA_AUTH_ENABLED", "false")
                // The OCI registry alone, and no upstream: a blob not found here is not
                // looked for on Docker Hub.
                .env("NORA_REGISTRIES_ENABLE", "docker")
                .env("NORA_DOCKER_PROXIES", "")
                // Its defaults are 100 requests/s per client IP, 100 open upload sessions
                // (the many-clients line opens 200 at once: the rest would get 429) and
                // 2 GiB per upload.
                .env("NORA_RATE_LIMIT_ENABLED", "false")
                .env("NORA_MAX_UPLOAD_SESSIONS", "10000")
                .env("NORA_MAX_UPLOAD_SESSION_SIZE_MB", "1048576")
                .env("NORA_BODY_LIMIT_MB", "1048576")
                .env("RUST_LOG", "warn");
        }
        Kind::Trow => {
            cmd.arg("--bind")
                .arg(addr.to_string())
                .arg("--data-dir")
                .arg(data)
                .env("RUST_LOG", "warn");
        }
        Kind::Berth | Kind::Registry2 => unreachable!("{} is not started here", reg.kind.label()),
    }
    Ok(cmd)
}

fn remove_vars(cmd: &mut Command, prefix: &str) {
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with(prefix) {
            cmd.env_remove(key);
        }
    }
}

/// Where a peer keeps blob `sha256:<hex>` pushed to `repo`, as the versions this was written
/// against do (NORA 1.4, Trow 0.10); another version may keep it elsewhere.
pub fn blob_file(kind: Kind, data: &Path, repo: &str, digest: &str) -> PathBuf {
    match kind {
        Kind::Nora => data.join("docker").join(repo).join("blobs").join(digest),
        Kind::Trow => data.join("blobs").join(digest),
        Kind::Berth | Kind::Registry2 => unreachable!("not a peer"),
    }
}
