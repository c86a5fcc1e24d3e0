//! The web UI in a real headless Chromium against the real binary: this test starts
//! `berth serve`, fills it with skopeo (a two-platform index, tags to delete, tags for a
//! retention policy) and an image in the Docker daemon, then runs `tests/ui/browser.py`
//! (Selenium with Debian's chromium and chromium-driver, from the venv `tests/run.sh` makes in
//! `target/ui-venv`). Screenshots of every main page at desktop width and at 375 px go to
//! `target/ui-screenshots/`.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::cmd::run;
use crate::common::docker::{Docker, busybox_rootfs};
use crate::common::images::{write_oci_index_layout, write_oci_layout};
use crate::common::{ADMIN_PASSWORD, Server, require_tool};

const DEST_CREDS: &str = "--dest-creds=admin:test-admin-password";

/// The venv's python, with Selenium; a clear failure when the test command did not make it.
fn ui_python() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let python = root.join("target/ui-venv/bin/python");
    let ok = python.is_file()
        && Command::new(&python)
            .args(["-c", "import selenium"])
            .status()
            .is_ok_and(|s| s.success());
    assert!(
        ok,
        "{} with Selenium is required by this test; run the README's test command \
         (tests/run.sh), which makes it",
        python.display()
    );
    python
}

fn skopeo_copy(from: &str, to: &str, digest_file: Option<&Path>) {
    let mut cmd = Command::new(require_tool("skopeo"));
    cmd.args([
        "--insecure-policy",
        "copy",
        "--all",
        "--dest-tls-verify=false",
        DEST_CREDS,
    ]);
    if let Some(f) = digest_file {
        cmd.arg("--digestfile").arg(f);
    }
    run(cmd.arg(from).arg(to));
}

fn file_size(blobs: &Path, d: &berth::oci::Digest) -> u64 {
    std::fs::metadata(blobs.join(d.hex())).unwrap().len()
}

#[test]
fn the_web_ui_in_a_real_browser() {
    require_tool("chromium");
    require_tool("chromedriver");
    let python = ui_python();
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let server = Server::start(
        &data,
        &[
            ("BERTH_GC__ENABLED", "false"),
            ("BERTH_GC__GRACE", "0s"),
            ("BERTH_GC__UNTAGGED_GRACE", "0s"),
        ],
    );
    let host = server.host();

    // team/app:multi, a two-platform index, as skopeo reports its digest.
    let layout = tmp.path().join("index");
    let (_, images) = write_oci_index_layout(
        &layout,
        "multi",
        &[("linux/amd64", 11), ("linux/arm64", 12)],
    );
    let blobs = layout.join("blobs/sha256");
    let sizes: Vec<String> = ["linux/amd64", "linux/arm64"]
        .iter()
        .zip(&images)
        .map(|(p, i)| {
            let bytes = file_size(&blobs, &i.config)
                + i.layers.iter().map(|l| file_size(&blobs, l)).sum::<u64>();
            format!("{p}={bytes}")
        })
        .collect();
    let digest_file = tmp.path().join("index.digest");
    skopeo_copy(
        &format!("oci:{}:multi", layout.display()),
        &format!("docker://{host}/team/app:multi"),
        Some(&digest_file),
    );
    let index_digest = std::fs::read_to_string(&digest_file).unwrap();
    // Tags to delete, each its own image (so collecting them frees bytes), and tags for a
    // retention policy.
    for (repo, tag, seed) in [
        ("team/app", "del-1", 21),
        ("team/app", "del-2", 22),
        ("team/app", "del-3", 23),
        ("ret/app", "old-1", 31),
        ("ret/app", "old-2", 32),
        ("ret/app", "keep-1", 33),
    ] {
        let dir = tmp.path().join(format!("img-{seed}"));
        write_oci_layout(&dir, "t", seed);
        skopeo_copy(
            &format!("oci:{}:t", dir.display()),
            &format!("docker://{host}/{repo}:{tag}"),
            None,
        );
    }
    // An image in the Docker daemon to push with a token made in the browser.
    let mut docker = Docker::new();
    let root = tmp.path().join("rootfs");
    busybox_rootfs(&root);
    let docker_image = format!("{host}/team/docker:1");
    docker.import(&root, &docker_image);

    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/ui-screenshots");
    // Screenshots of an earlier run must not stand in for this one's.
    let _ = std::fs::remove_dir_all(&out);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/ui/browser.py");
    let result = Command::new(&python)
        .arg(&script)
        .env("BERTH_URL", server.url(""))
        .env("BERTH_DATA", &data)
        .env("ADMIN_PASSWORD", ADMIN_PASSWORD)
        .env("INDEX_DIGEST", index_digest.trim())
        .env("PLATFORM_SIZES", sizes.join(","))
        .env("DOCKER_IMAGE", &docker_image)
        .env("OUT", &out)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&result.stdout);
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert!(
        result.status.success(),
        "the browser test failed:\n{stdout}\n{stderr}\nserver log:\n{}",
        server.log()
    );
    // Every step ran, and each main page was photographed at both widths.
    assert!(stdout.contains("\"steps\""), "{stdout}");
    for page in [
        "signin",
        "dashboard",
        "repositories",
        "tags",
        "manifest",
        "tokens",
        "audit",
        "retention",
        "gc",
        "users",
    ] {
        for width in ["desktop", "375"] {
            let shot = out.join(format!("{page}-{width}.png"));
            let len = std::fs::metadata(&shot).map(|m| m.len()).unwrap_or(0);
            assert!(len > 1000, "no screenshot {}", shot.display());
        }
    }
}
