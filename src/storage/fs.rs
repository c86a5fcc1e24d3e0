//! The filesystem blob store: one file per blob, `<root>/<alg>/<hex[0..2]>/<hex>`.
//!
//! A blob reaches its name only by rename of a fully written, fsynced and verified upload
//! file, so a crash can never leave a partial file under a digest name.

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};

use futures_util::FutureExt as _;
use futures_util::future::BoxFuture;

use super::staging::blocking;
use super::{BlobStore, BlobStream, Listed, Result, Staged, StoreError, Sync, reader, secure};
use crate::oci::{Algorithm, Digest};

#[derive(Clone, Debug)]
pub struct FsStore {
    root: PathBuf,
    sync: Sync,
}

impl FsStore {
    /// Open the store under `root`, creating the folder. Blocking; called at start-up.
    pub fn open(root: &Path, sync: Sync) -> io::Result<FsStore> {
        secure::create_dir(root)?;
        Ok(FsStore {
            root: root.to_path_buf(),
            sync,
        })
    }

    fn path(&self, d: &Digest) -> PathBuf {
        self.root
            .join(d.algorithm().as_str())
            .join(&d.hex()[..2])
            .join(d.hex())
    }
}

fn not_found(e: io::Error) -> StoreError {
    if e.kind() == io::ErrorKind::NotFound {
        StoreError::NotFound
    } else {
        StoreError::Io(e)
    }
}

impl BlobStore for FsStore {
    fn stat<'a>(&'a self, d: &'a Digest) -> BoxFuture<'a, Result<u64>> {
        let path = self.path(d);
        async move {
            let m = tokio::fs::metadata(path).await.map_err(not_found)?;
            Ok(m.len())
        }
        .boxed()
    }

    fn open<'a>(
        &'a self,
        d: &'a Digest,
        start: u64,
        len: u64,
    ) -> BoxFuture<'a, Result<BlobStream>> {
        let path = self.path(d);
        async move { reader::open(path, start, len).await.map_err(not_found) }.boxed()
    }

    fn commit<'a>(&'a self, staged: Staged, d: &'a Digest) -> BoxFuture<'a, Result<()>> {
        let to = self.path(d);
        let sync = self.sync;
        async move { Ok(blocking(move || commit(staged.path(), &to, sync)).await?) }.boxed()
    }

    fn delete<'a>(&'a self, d: &'a Digest) -> BoxFuture<'a, Result<u64>> {
        let path = self.path(d);
        async move {
            let size = blocking(move || {
                let size = fs::metadata(&path)?.len();
                fs::remove_file(&path)?;
                Ok(size)
            })
            .await
            .map_err(not_found)?;
            Ok(size)
        }
        .boxed()
    }

    fn list<'a>(
        &'a self,
        after: Option<&'a Digest>,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<Listed>>> {
        let root = self.root.clone();
        let after = after.cloned();
        async move { Ok(blocking(move || list(&root, after.as_ref(), limit)).await?) }.boxed()
    }
}

fn commit(from: &Path, to: &Path, sync: Sync) -> io::Result<()> {
    let dir = to.parent().expect("blob paths have a parent");
    let alg_dir = dir.parent().expect("shard folders have a parent");
    if to.exists() {
        fs::remove_file(from)?;
    } else {
        secure::create_dir(dir)?;
        if sync == Sync::Always {
            File::open(from)?.sync_data()?;
        }
        fs::rename(from, to)?;
    }
    if sync == Sync::Always {
        // Also when the blob (or its folder) was just made by a concurrent upload of the
        // same bytes: the acknowledgement must not run ahead of that upload's fsyncs. On
        // folders with nothing new these cost next to nothing.
        sync_dir(dir)?;
        sync_dir(alg_dir)?;
        sync_dir(alg_dir.parent().expect("the algorithm folder has a parent"))?;
    }
    Ok(())
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Blobs in digest order after `after`, at most `limit`. Reads one shard folder at a time,
/// so a page costs one shard's names, not the whole store's.
fn list(root: &Path, after: Option<&Digest>, limit: usize) -> io::Result<Vec<Listed>> {
    let mut out = Vec::new();
    let after_key = after.map(|d| (d.algorithm().as_str(), d.hex()));
    for alg in [Algorithm::Sha256, Algorithm::Sha512] {
        let alg_name = alg.as_str();
        if after_key.is_some_and(|(a, _)| alg_name < a) {
            continue;
        }
        let same_alg = after_key.filter(|(a, _)| *a == alg_name);
        for shard in sorted_names(&root.join(alg_name))? {
            if same_alg.is_some_and(|(_, hex)| shard.as_str() < &hex[..2]) {
                continue;
            }
            let shard_dir = root.join(alg_name).join(&shard);
            for name in sorted_names(&shard_dir)? {
                if same_alg.is_some_and(|(_, hex)| name.as_str() <= hex) {
                    continue;
                }
                let Ok(digest) = Digest::parse(&format!("{alg_name}:{name}")) else {
                    continue;
                };
                if digest.hex()[..2] != shard {
                    continue;
                }
                let meta = match fs::symlink_metadata(shard_dir.join(&name)) {
                    Ok(m) if m.is_file() => m,
                    Ok(_) => continue,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(e),
                };
                out.push(Listed {
                    digest,
                    size: meta.len(),
                    modified: super::unix_seconds(&meta),
                });
                if out.len() >= limit {
                    return Ok(out);
                }
            }
        }
    }
    Ok(out)
}

/// The names in `dir`, sorted; none when it does not exist.
fn sorted_names(dir: &Path) -> io::Result<Vec<String>> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut names = Vec::new();
    for entry in entries {
        if let Ok(name) = entry?.file_name().into_string() {
            names.push(name);
        }
    }
    names.sort_unstable();
    Ok(names)
}
