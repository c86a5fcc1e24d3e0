//! Reading a registry:2 (distribution) filesystem storage root, read-only:
//!
//! ```text
//! <root>/docker/registry/v2/blobs/sha256/<xx>/<hex>/data
//! <root>/docker/registry/v2/repositories/<name>/_manifests/revisions/sha256/<hex>/link
//! <root>/docker/registry/v2/repositories/<name>/_manifests/tags/<tag>/current/link
//! ```
//!
//! A directory holding `_manifests` is a repository; names nest (`team/app` under `team`).
//! Only what is really inside the root is read: symbolic links are never followed, and only
//! regular files are opened. Blocking: call from a blocking task.

use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use crate::oci::{Digest, Tag};
use crate::storage::open_regular;

/// The deepest repository path followed (a name is at most 255 characters).
const MAX_DEPTH: usize = 128;
/// A link file holds one digest; anything longer is not one.
const MAX_LINK: u64 = 256;

#[derive(Debug)]
pub struct Source {
    v2: PathBuf,
}

/// One repository of the source.
#[derive(Debug, Default)]
pub struct SourceRepo {
    pub name: String,
    /// Manifests by digest.
    pub revisions: Vec<Digest>,
    /// Tags with their target and when the tag was last set (Unix seconds).
    pub tags: Vec<SourceTag>,
    /// Entries that cannot be read: (what, why).
    pub unreadable: Vec<(String, String)>,
}

#[derive(Debug)]
pub struct SourceTag {
    pub name: String,
    pub target: Digest,
    pub set_at: i64,
}

impl Source {
    /// `dir` is the storage root (holding `docker/registry/v2`) or the `v2` folder itself.
    pub fn open(dir: &Path) -> Result<Source, String> {
        let candidates = [dir.join("docker/registry/v2"), dir.to_path_buf()];
        for v2 in candidates {
            if v2.join("repositories").is_dir() {
                return Ok(Source { v2 });
            }
        }
        Err(format!(
            "{} is not a registry:2 storage root (no docker/registry/v2/repositories in it)",
            dir.display()
        ))
    }

    /// Where the source keeps a blob's bytes (manifests included).
    pub fn blob_path(&self, d: &Digest) -> PathBuf {
        self.v2
            .join("blobs")
            .join(d.algorithm().as_str())
            .join(&d.hex()[..2])
            .join(d.hex())
            .join("data")
    }

    /// The size of a blob in the source, `None` when its data file is missing.
    pub fn blob_size(&self, d: &Digest) -> Option<u64> {
        fs::symlink_metadata(self.blob_path(d))
            .ok()
            .filter(|m| m.is_file())
            .map(|m| m.len())
    }

    /// Read a manifest's bytes and check them against their digest; at most `max` bytes.
    pub fn read_manifest(&self, d: &Digest, max: usize) -> Result<Vec<u8>, String> {
        let path = self.blob_path(d);
        let file = open_regular(&path).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => "its blob is missing from the source".to_string(),
            _ => format!("cannot read {}: {e}", path.display()),
        })?;
        let mut body = Vec::new();
        file.take(max as u64 + 1)
            .read_to_end(&mut body)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        if body.len() > max {
            return Err(format!("larger than {max} bytes"));
        }
        let mut h = crate::oci::Hasher::new(d.algorithm());
        h.update(&body);
        let actual = h.finish();
        if &actual != d {
            return Err(format!("its bytes in the source have digest {actual}"));
        }
        Ok(body)
    }

    /// Every repository, in name order.
    pub fn repositories(&self) -> io::Result<Vec<SourceRepo>> {
        let mut out = Vec::new();
        let root = self.v2.join("repositories");
        if root.is_dir() {
            walk(&root, "", 0, &mut out)?;
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }
}

fn walk(dir: &Path, name: &str, depth: usize, out: &mut Vec<SourceRepo>) -> io::Result<()> {
    if depth > MAX_DEPTH {
        return Ok(());
    }
    let mut subdirs = Vec::new();
    let mut is_repo = false;
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        // Never follows symbolic links: only what is really inside the root is read.
        if !entry.file_type()?.is_dir() {
            continue;
        }
        let file_name = entry.file_name();
        let Some(n) = file_name.to_str() else {
            continue;
        };
        if n == "_manifests" {
            is_repo = true;
        } else if !n.starts_with('_') {
            subdirs.push(n.to_string());
        }
    }
    if is_repo && !name.is_empty() {
        out.push(read_repo(dir, name)?);
    }
    subdirs.sort();
    for sub in subdirs {
        let child = if name.is_empty() {
            sub.clone()
        } else {
            format!("{name}/{sub}")
        };
        walk(&dir.join(&sub), &child, depth + 1, out)?;
    }
    Ok(())
}

fn read_repo(dir: &Path, name: &str) -> io::Result<SourceRepo> {
    let mut repo = SourceRepo {
        name: name.to_string(),
        ..SourceRepo::default()
    };
    let manifests = dir.join("_manifests");
    for alg_dir in sorted_dirs(&manifests.join("revisions"))? {
        for hex in sorted_dirs(&manifests.join("revisions").join(&alg_dir))? {
            let link = manifests
                .join("revisions")
                .join(&alg_dir)
                .join(&hex)
                .join("link");
            match read_link(&link) {
                Ok(Some((d, _))) if d.hex() == hex => repo.revisions.push(d),
                // A revision whose link is gone was deleted in the source.
                Ok(None) => {}
                Ok(Some((d, _))) => repo.unreadable.push((
                    format!("{name}@{alg_dir}:{hex}"),
                    format!("its link names {d}"),
                )),
                Err(e) => repo.unreadable.push((format!("{name}@{alg_dir}:{hex}"), e)),
            }
        }
    }
    for tag in sorted_dirs(&manifests.join("tags"))? {
        let what = format!("{name}:{tag}");
        if Tag::parse(&tag).is_err() {
            repo.unreadable.push((what, "not a valid tag name".into()));
            continue;
        }
        match read_link(&manifests.join("tags").join(&tag).join("current/link")) {
            Ok(Some((target, set_at))) => repo.tags.push(SourceTag {
                name: tag,
                target,
                set_at,
            }),
            Ok(None) => repo
                .unreadable
                .push((what, "the tag has no current link".into())),
            Err(e) => repo.unreadable.push((what, e)),
        }
    }
    Ok(repo)
}

/// Subdirectory names of `dir`, sorted; none when `dir` does not exist.
fn sorted_dirs(dir: &Path) -> io::Result<Vec<String>> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry?;
        if entry.file_type()?.is_dir()
            && let Some(n) = entry.file_name().to_str()
        {
            out.push(n.to_string());
        }
    }
    out.sort();
    Ok(out)
}

/// A link file's digest and modification time; `None` when it does not exist.
fn read_link(path: &Path) -> Result<Option<(Digest, i64)>, String> {
    let file = match open_regular(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    let modified = file
        .metadata()
        .ok()
        .and_then(|m| m.modified().ok())
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs() as i64);
    let mut text = String::new();
    file.take(MAX_LINK)
        .read_to_string(&mut text)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let d = Digest::parse(text.trim()).map_err(|_| "its link holds no digest".to_string())?;
    Ok(Some((d, modified)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(path: &Path, text: &str) {
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, text).unwrap();
    }

    #[test]
    fn finds_nested_repositories_tags_and_revisions() {
        let tmp = tempfile::tempdir().unwrap();
        let v2 = tmp.path().join("docker/registry/v2");
        let d = Digest::sha256_of(b"m");
        let repos = v2.join("repositories");
        for name in ["team", "team/app", "other/deep/x"] {
            let m = repos.join(name).join("_manifests");
            write(
                &m.join(format!("revisions/sha256/{}/link", d.hex())),
                &d.to_string(),
            );
            write(&m.join("tags/v1/current/link"), &d.to_string());
        }
        // A deleted revision (no link), a tag with garbage, an upload folder.
        fs::create_dir_all(repos.join("team/_manifests/revisions/sha256/ab")).unwrap();
        write(&repos.join("team/_manifests/tags/bad/current/link"), "nope");
        fs::create_dir_all(repos.join("team/_uploads/x")).unwrap();

        let source = Source::open(tmp.path()).unwrap();
        let found = source.repositories().unwrap();
        let names: Vec<_> = found.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["other/deep/x", "team", "team/app"]);
        let team = &found[1];
        assert_eq!(team.revisions, vec![d.clone()]);
        assert_eq!(team.tags.len(), 1);
        assert_eq!(team.tags[0].target, d);
        assert_eq!(team.unreadable.len(), 1, "{:?}", team.unreadable);
        assert!(team.unreadable[0].0.ends_with(":bad"));
        // The v2 folder itself works too; a folder with neither does not.
        assert!(Source::open(&v2).is_ok());
        assert!(Source::open(&repos).is_err());
    }

    #[test]
    fn manifests_are_checked_against_their_digest() {
        let tmp = tempfile::tempdir().unwrap();
        let v2 = tmp.path().join("docker/registry/v2");
        fs::create_dir_all(v2.join("repositories")).unwrap();
        let source = Source::open(tmp.path()).unwrap();
        let d = Digest::sha256_of(b"{}");
        assert!(
            source
                .read_manifest(&d, 10)
                .unwrap_err()
                .contains("missing")
        );
        write(&source.blob_path(&d), "{ }");
        assert!(source.read_manifest(&d, 10).unwrap_err().contains("digest"));
        write(&source.blob_path(&d), "{}");
        assert_eq!(source.read_manifest(&d, 10).unwrap(), b"{}");
        assert!(source.read_manifest(&d, 1).unwrap_err().contains("larger"));
    }
}
