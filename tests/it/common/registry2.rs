//! registry:2 (Debian's `docker-registry`, the distribution project's server) on loopback,
//! with its filesystem storage in a folder of the test's: the registry people move in from.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::server::free_port;

pub const REGISTRY2_BIN: &str = "/usr/bin/docker-registry";

pub struct Registry2 {
    child: Child,
    port: u16,
}

impl Registry2 {
    /// Serve the storage root `root` (created if needed) without authentication, deletes on.
    pub fn start(root: &Path) -> Registry2 {
        assert!(
            Path::new(REGISTRY2_BIN).is_file(),
            "{REGISTRY2_BIN} (registry:2) is required by this test but is not installed; run the README's test command, which installs it"
        );
        std::fs::create_dir_all(root).unwrap();
        let port = free_port();
        let config = root.with_extension("yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n",
                root.display()
            ),
        )
        .unwrap();
        let child = Command::new(REGISTRY2_BIN)
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "registry:2 did not start on port {port}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Registry2 { child, port }
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The folder of its blobs and repositories.
    pub fn v2(root: &Path) -> PathBuf {
        root.join("docker/registry/v2")
    }
}

impl Drop for Registry2 {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
