//! Upload staging: the local file of each upload session in progress. Bytes are appended
//! here (`writer`), hashed, verified, and then handed to the blob store as a `Staged` file.
//! Staging is always local, whatever store keeps the finished blobs.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{Sync, secure, writer};
use crate::oci::{Algorithm, UploadId};

pub use writer::{AppendError, Progress};

#[derive(Clone, Debug)]
pub struct Staging {
    dir: PathBuf,
    pub(super) sync: Sync,
    /// Upload bytes received but not yet written, over all uploads at once (`writer`).
    pub(super) budget: Arc<tokio::sync::Semaphore>,
    /// The largest upload taken, if limited.
    pub(super) max_upload: Option<u64>,
}

/// A complete upload file, verified by its caller, on its way into the blob store.
#[derive(Debug)]
pub struct Staged {
    path: PathBuf,
}

impl Staged {
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Drop the file (bytes that did not verify).
    pub async fn discard(self) {
        let path = self.path;
        let _ = blocking(move || std::fs::remove_file(path)).await;
    }
}

/// An upload file found by `Staging::list`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StagedFile {
    pub id: UploadId,
    pub size: u64,
    /// Last modification, in Unix seconds.
    pub modified: i64,
}

impl Staging {
    /// Open the staging folder `dir`, creating it. Blocking; called at start-up.
    pub fn open(dir: &Path, sync: Sync) -> io::Result<Staging> {
        secure::create_dir(dir)?;
        Ok(Staging {
            dir: dir.to_path_buf(),
            sync,
            budget: Arc::new(tokio::sync::Semaphore::new(writer::BUDGET_UNITS)),
            max_upload: None,
        })
    }

    /// Refuse uploads that grow past `max` bytes (`AppendError::TooLarge`).
    pub fn with_max_upload(mut self, max: Option<u64>) -> Staging {
        self.max_upload = max;
        self
    }

    pub(super) fn path(&self, id: &UploadId) -> PathBuf {
        self.dir.join(id.as_str())
    }

    /// Create the empty file of a new upload session.
    pub async fn create(&self, id: &UploadId) -> io::Result<()> {
        let path = self.path(id);
        blocking(move || {
            secure::file_options()
                .write(true)
                .create(true)
                .truncate(true)
                .open(path)
                .map(drop)
        })
        .await
    }

    /// Bytes received so far by an upload session, `None` if its file is gone.
    pub async fn len(&self, id: &UploadId) -> io::Result<Option<u64>> {
        match tokio::fs::metadata(self.path(id)).await {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Hash an upload file from the start: how a session's state is rebuilt after a restart.
    pub async fn rehash(&self, id: &UploadId, alg: Algorithm) -> io::Result<Progress> {
        let path = self.path(id);
        blocking(move || writer::rehash(&path, alg)).await
    }

    /// Cut an upload file back to `len` bytes (a chunk that was refused).
    pub async fn truncate(&self, id: &UploadId, len: u64) -> io::Result<()> {
        let path = self.path(id);
        blocking(move || {
            std::fs::OpenOptions::new()
                .write(true)
                .open(path)?
                .set_len(len)
        })
        .await
    }

    /// Forget an upload session's bytes. Returns the bytes freed, `None` if there was no file.
    pub async fn delete(&self, id: &UploadId) -> io::Result<Option<u64>> {
        let path = self.path(id);
        blocking(move || {
            let size = match std::fs::metadata(&path) {
                Ok(m) => m.len(),
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(e),
            };
            match std::fs::remove_file(&path) {
                Ok(()) => Ok(Some(size)),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(e),
            }
        })
        .await
    }

    /// Whether a file can be created, written and removed in the staging folder.
    pub async fn probe(&self) -> io::Result<()> {
        let path = self.dir.join("ready-probe");
        blocking(move || {
            let mut f = secure::file_options()
                .write(true)
                .create(true)
                .truncate(true)
                .open(&path)?;
            io::Write::write_all(&mut f, b"ok")?;
            drop(f);
            match std::fs::remove_file(&path) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            }
        })
        .await
    }

    /// Bytes free for unprivileged writes on the file system of the staging folder.
    pub async fn free_space(&self) -> io::Result<u64> {
        let dir = self.dir.clone();
        blocking(move || {
            let st = rustix::fs::statvfs(&dir)?;
            Ok(st.f_bavail.saturating_mul(st.f_frsize))
        })
        .await
    }

    /// The file system's size and the bytes free for berth, in that order.
    pub async fn disk_space(&self) -> io::Result<(u64, u64)> {
        let dir = self.dir.clone();
        blocking(move || {
            let st = rustix::fs::statvfs(&dir)?;
            Ok((
                st.f_blocks.saturating_mul(st.f_frsize),
                st.f_bavail.saturating_mul(st.f_frsize),
            ))
        })
        .await
    }

    /// The upload file of `id`, complete and verified by the caller, for `BlobStore::commit`.
    pub fn staged(&self, id: &UploadId) -> Staged {
        Staged {
            path: self.path(id),
        }
    }

    /// Every upload file, in no particular order; names that are not upload ids are skipped.
    pub async fn list(&self) -> io::Result<Vec<StagedFile>> {
        let dir = self.dir.clone();
        blocking(move || {
            let mut out = Vec::new();
            for entry in std::fs::read_dir(&dir)? {
                let entry = entry?;
                let Some(id) = entry
                    .file_name()
                    .to_str()
                    .and_then(|n| UploadId::parse(n).ok())
                else {
                    continue;
                };
                let meta = match entry.metadata() {
                    Ok(m) => m,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(e),
                };
                out.push(StagedFile {
                    id,
                    size: meta.len(),
                    modified: super::unix_seconds(&meta),
                });
            }
            Ok(out)
        })
        .await
    }
}

/// Open a file for reading only if it is a regular file, without following a final symbolic
/// link or blocking on a FIFO.
pub fn open_regular(path: &Path) -> io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)?;
    if !file.metadata()?.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} is not a regular file", path.display()),
        ));
    }
    Ok(file)
}

pub(super) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(io::Error::other)?
}

/// A file brought into staging from outside the upload path (an import, a copy between
/// stores), hashed on the way.
pub struct Adopted {
    path: PathBuf,
    /// Hard-linked (no bytes copied) rather than copied.
    pub linked: bool,
    pub progress: Progress,
}

impl Adopted {
    /// The file, for `BlobStore::commit` once its digest is checked.
    pub fn into_staged(self) -> Staged {
        Staged { path: self.path }
    }

    /// Drop the file (a digest that did not match).
    pub async fn discard(self) {
        let path = self.path;
        let _ = blocking(move || std::fs::remove_file(path)).await;
    }
}

/// Names of adopted files: never an upload id, so garbage collection's sweep of abandoned
/// upload files leaves them alone (a hard link keeps its source's old modification time).
const ADOPT_PREFIX: &str = "adopt-";
/// Names of files a pull-through fill is writing; a crash leaves them, the next start
/// removes them (`sweep_fills`).
const FILL_PREFIX: &str = "fill-";

/// A copied file, or (after removing what was written) why it could not be written.
fn received(path: PathBuf, written: io::Result<Progress>) -> io::Result<Adopted> {
    match written {
        Ok(progress) => Ok(Adopted {
            path,
            linked: false,
            progress,
        }),
        Err(e) => {
            let _ = std::fs::remove_file(&path);
            Err(e)
        }
    }
}

impl Staging {
    /// A new file name in staging for an adopted or copied blob.
    fn adopt_path(&self) -> io::Result<PathBuf> {
        self.new_path(ADOPT_PREFIX)
    }

    fn new_path(&self, prefix: &str) -> io::Result<PathBuf> {
        let mut raw = [0u8; 16];
        getrandom::fill(&mut raw).map_err(|e| io::Error::other(e.to_string()))?;
        Ok(self
            .dir
            .join(format!("{prefix}{}", UploadId::from_random(raw))))
    }

    /// Bring `src` into staging: hard-linked when it is on the same file system (no bytes
    /// move; `src` itself is not changed), copied otherwise; either way hashed with `alg`
    /// from the staged file. The caller compares the digest before committing.
    pub async fn adopt(&self, src: &Path, alg: Algorithm) -> io::Result<Adopted> {
        let path = self.adopt_path()?;
        let src = src.to_path_buf();
        blocking(move || {
            // Only a regular file: never a link to elsewhere, a FIFO, a device.
            let mut from = open_regular(&src)?;
            let linked = std::fs::hard_link(&src, &path).is_ok()
                && match std::fs::symlink_metadata(&path) {
                    // `src` could have been swapped for a link since it was opened.
                    Ok(m) if m.is_file() => true,
                    _ => {
                        let _ = std::fs::remove_file(&path);
                        false
                    }
                };
            if !linked {
                let copied = (|| {
                    let mut to = secure::file_options()
                        .write(true)
                        .create_new(true)
                        .open(&path)?;
                    io::copy(&mut from, &mut to)
                })();
                drop(from);
                if let Err(e) = copied {
                    let _ = std::fs::remove_file(&path);
                    return Err(e);
                }
            }
            match writer::rehash(&path, alg) {
                Ok(progress) => Ok(Adopted {
                    path,
                    linked,
                    progress,
                }),
                Err(e) => {
                    let _ = std::fs::remove_file(&path);
                    Err(e)
                }
            }
        })
        .await
    }

    /// A new empty staged file for a blob arriving from elsewhere (a pull-through cache's
    /// fill), open for writing and reading at offsets; the caller writes, hashes and verifies
    /// it, then commits or `discard`s it.
    pub async fn create_fill(&self) -> io::Result<(Staged, std::fs::File)> {
        let path = self.new_path(FILL_PREFIX)?;
        let p = path.clone();
        let file = blocking(move || {
            secure::file_options()
                .read(true)
                .write(true)
                .create_new(true)
                .open(&p)
        })
        .await?;
        Ok((Staged { path }, file))
    }

    /// Write `body` into a new staged file, hashed with `alg` on the way (a blob copied from
    /// another store: a backup, a restore). The caller compares the digest.
    pub async fn receive<S>(&self, mut body: S, alg: Algorithm) -> io::Result<Adopted>
    where
        S: futures_util::Stream<Item = io::Result<bytes::Bytes>> + Unpin,
    {
        use futures_util::StreamExt as _;
        use tokio::io::AsyncWriteExt as _;
        let path = self.adopt_path()?;
        let written = async {
            let file = secure::file_options()
                .write(true)
                .create_new(true)
                .open(&path)?;
            let mut file = tokio::fs::File::from_std(file);
            let mut progress = Progress::new(alg);
            while let Some(chunk) = body.next().await {
                let chunk = chunk?;
                progress.hasher.update(&chunk);
                progress.len += chunk.len() as u64;
                file.write_all(&chunk).await?;
            }
            file.flush().await?;
            Ok::<_, io::Error>(progress)
        }
        .await;
        received(path, written)
    }

    /// `receive` from a blocking reader (an entry of a tar stream). Blocking.
    pub fn receive_blocking(&self, body: &mut dyn io::Read, alg: Algorithm) -> io::Result<Adopted> {
        let path = self.adopt_path()?;
        let written = (|| {
            let mut file = secure::file_options()
                .write(true)
                .create_new(true)
                .open(&path)?;
            let mut progress = Progress::new(alg);
            let mut buf = vec![0u8; 1 << 20];
            loop {
                let n = body.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                progress.hasher.update(&buf[..n]);
                progress.len += n as u64;
                io::Write::write_all(&mut file, &buf[..n])?;
            }
            Ok::<_, io::Error>(progress)
        })();
        received(path, written)
    }

    /// Background writeback for a fill file, as uploads get.
    pub fn writeback(&self, file: &std::fs::File) -> io::Result<writer::Writeback> {
        writer::Writeback::new(file, self.sync)
    }

    /// Remove fill files a stopped server left behind. Blocking; at start-up, before any
    /// request is served.
    pub fn sweep_fills(&self) -> io::Result<()> {
        sweep(&self.dir, FILL_PREFIX)
    }

    /// Remove adopted files an interrupted import left behind. Only while no import runs.
    pub async fn sweep_adopted(&self) -> io::Result<()> {
        let dir = self.dir.clone();
        blocking(move || sweep(&dir, ADOPT_PREFIX)).await
    }
}

/// Remove the files of `dir` whose names start with `prefix`. Blocking.
fn sweep(dir: &Path, prefix: &str) -> io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_name().to_string_lossy().starts_with(prefix) {
            match std::fs::remove_file(entry.path()) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
    }
    Ok(())
}
