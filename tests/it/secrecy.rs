//! The data directory is the owner's alone: it holds the bearer-token signing key and every
//! private blob. Checked on the real binary started with the usual umask 022.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::common::server::{Server, free_port};
use crate::common::{curl::curl, require_tool};

const UMASK_022: &[&str] = &["sh", "-c", "umask 022; exec \"$@\"", "sh"];

/// Every path under `root` with a mode that lets anyone but the owner in.
fn open_to_others(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        let meta = std::fs::symlink_metadata(&p).unwrap();
        let mode = meta.permissions().mode() & 0o777;
        let want = if meta.is_dir() { 0o700 } else { 0o600 };
        if mode != want {
            out.push(format!("{} {:o}", p.display(), mode));
        }
        if meta.is_dir() {
            for e in std::fs::read_dir(&p).unwrap() {
                stack.push(e.unwrap().path());
            }
        }
    }
    out
}

fn count_files(root: &Path) -> usize {
    let mut n = 0;
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        if p.is_dir() {
            stack.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
        } else {
            n += 1;
        }
    }
    n
}

#[test]
fn a_new_data_directory_and_everything_in_it_is_owner_only() {
    require_tool("curl");
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let server = Server::start_wrapped(
        &data,
        free_port(),
        &[("BERTH_ADMIN_PASSWORD", "")],
        UMASK_022,
    );
    let auth = format!(
        "admin:{}",
        std::fs::read_to_string(data.join("initial-admin-password"))
            .unwrap()
            .trim()
    );
    // A finished blob, and an upload session left open.
    let up = curl(&[
        "-u",
        &auth,
        "-X",
        "POST",
        &server.url("/v2/team/app/blobs/uploads/"),
    ]);
    up.assert(202);
    let body = tmp.path().join("blob");
    std::fs::write(&body, b"secret layer bytes").unwrap();
    let digest = format!(
        "sha256:{}",
        berth::oci::Digest::sha256_of(b"secret layer bytes").hex()
    );
    let loc = up.header("location").unwrap().to_string();
    let loc = crate::common::net::absolute(&server.url(""), &loc);
    curl(&[
        "-u",
        &auth,
        "-X",
        "PUT",
        "-H",
        "Content-Type: application/octet-stream",
        "--data-binary",
        &format!("@{}", body.display()),
        &crate::common::net::with_query(&loc, "digest", &digest),
    ])
    .assert(201);
    curl(&[
        "-u",
        &auth,
        "-X",
        "POST",
        &server.url("/v2/team/app/blobs/uploads/"),
    ])
    .assert(202);
    // The CLI writes into the same directory while the server runs.
    server.admin(&["user", "add", "alice"]);
    assert!(
        count_files(&data) >= 5,
        "expected the database, a blob and an upload"
    );
    let bad = open_to_others(&data);
    assert!(bad.is_empty(), "readable by others: {bad:#?}");
}

#[test]
fn an_existing_directory_open_to_others_is_repaired_with_a_warning() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let mut server = Server::start(&data, &[]);
    server.terminate();
    // As an older berth (or a careless copy) left it.
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(
        data.join("berth.db"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    std::fs::set_permissions(data.join("blobs"), std::fs::Permissions::from_mode(0o775)).unwrap();
    assert!(!open_to_others(&data).is_empty());
    let server = Server::start_wrapped(&data, free_port(), &[], UMASK_022);
    let bad = open_to_others(&data);
    assert!(bad.is_empty(), "still readable by others: {bad:#?}");
    let log = server.log();
    assert!(log.contains("readable by other accounts"), "{log}");
}
