//! The running server's control socket, `<data-dir>/berth.sock`: how a CLI command asks the
//! server to do work that must happen inside it (garbage collection runs under locks that
//! only the server's own uploads take).
//!
//! One JSON request line, one JSON answer line (an import sends progress lines before it). The socket is owner-only (the umask makes it
//! 0600 inside the 0700 data directory), so only the account berth runs as, or root, can use
//! it: the same people who can read the database.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::watch;

use crate::core::Registry;
use crate::core::gc::{Report, Trigger};
use crate::core::import::{ImportOptions, ImportProgress, ImportReport};
use crate::core::retention::{PolicySpec, RetentionReport, Which};
use crate::storage::DataDir;

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum Request {
    Gc {
        dry_run: bool,
    },
    Retention {
        /// One saved policy; `None`: all of them (or the draft).
        policy: Option<String>,
        draft: Option<Box<PolicySpec>>,
        dry_run: bool,
        force: bool,
    },
    Import {
        /// A registry:2 storage root, absolute.
        dir: std::path::PathBuf,
        dry_run: bool,
        overwrite_tags: bool,
    },
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Answer {
    Report(Box<Report>),
    Retention(Box<RetentionReport>),
    Import(Box<ImportReport>),
    /// Not an answer yet: how far the work has got.
    Progress(ImportProgress),
    Error(String),
}

/// A request line is small (a draft policy at most); anything longer is not ours.
const MAX_REQUEST: u64 = 1 << 20;
/// How long a client may take to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Listen on the control socket until `stop`. The server holds the data directory's lock,
/// so a socket file found there is a dead server's and is replaced.
pub fn listen(data: &DataDir) -> std::io::Result<UnixListener> {
    let path = data.control_socket();
    match std::fs::remove_file(&path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let listener = UnixListener::bind(&path)?;
    // Connecting needs write permission only: read and write for the owner, like every
    // other file of the data directory.
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(
        &path,
        std::fs::Permissions::from_mode(crate::storage::secure::FILE_MODE),
    )?;
    Ok(listener)
}

pub async fn serve(listener: UnixListener, registry: Registry, mut stop: watch::Receiver<bool>) {
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = stop.wait_for(|s| *s) => return,
        };
        let stream = match accepted {
            Ok((s, _)) => s,
            Err(e) => {
                tracing::warn!(error = %e, "control socket accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let registry = registry.clone();
        tokio::spawn(async move {
            if let Err(e) = answer(stream, registry).await {
                tracing::debug!(error = %e, "control connection ended");
            }
        });
    }
}

async fn answer(stream: UnixStream, registry: Registry) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    let mut reader = BufReader::new(read.take(MAX_REQUEST));
    tokio::time::timeout(REQUEST_TIMEOUT, reader.read_line(&mut line))
        .await
        .map_err(|_| std::io::Error::other("request timed out"))??;
    let answer = match serde_json::from_str::<Request>(line.trim()) {
        Ok(Request::Gc { dry_run }) => {
            match registry.collect_garbage(Trigger::Cli, dry_run).await {
                Ok(r) => Answer::Report(Box::new(r)),
                Err(e) => Answer::Error(format!("garbage collection failed: {e}")),
            }
        }
        Ok(Request::Retention {
            policy,
            draft,
            dry_run,
            force,
        }) => {
            let which = match (policy, draft) {
                (_, Some(d)) => Which::Draft(d),
                (Some(name), None) => Which::Named(name),
                (None, None) => Which::Saved,
            };
            match registry
                .apply_retention(which, Trigger::Cli, dry_run, force)
                .await
            {
                Ok(r) => Answer::Retention(Box::new(r)),
                Err(e) => Answer::Error(e.to_string()),
            }
        }
        Ok(Request::Import {
            dir,
            dry_run,
            overwrite_tags,
        }) => {
            let options = ImportOptions {
                dry_run,
                overwrite_tags,
                ..ImportOptions::default()
            };
            import(&registry, dir, options, &mut write).await?
        }
        Err(e) => Answer::Error(format!("not a control request: {e}")),
    };
    send(&mut write, &answer).await?;
    write.shutdown().await
}

async fn send(
    write: &mut tokio::net::unix::OwnedWriteHalf,
    answer: &Answer,
) -> std::io::Result<()> {
    let mut out = serde_json::to_vec(answer).map_err(std::io::Error::other)?;
    out.push(b'\n');
    write.write_all(&out).await
}

/// Run an import, sending its progress at most every 200 ms. A client that goes away (an
/// interrupted command) ends the import between two steps: the import runs in a task of its
/// own, told to stop, never dropped in the middle of one.
async fn import(
    registry: &Registry,
    dir: std::path::PathBuf,
    options: ImportOptions,
    write: &mut tokio::net::unix::OwnedWriteHalf,
) -> std::io::Result<Answer> {
    let (tx, mut rx) = watch::channel(ImportProgress::default());
    let on_progress = std::sync::Arc::new(move |p| {
        let _ = tx.send(p);
    });
    let stop = options.stop.clone();
    let registry = registry.clone();
    let mut run =
        tokio::spawn(async move { registry.import_registry2(dir, options, on_progress).await });
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    loop {
        tokio::select! {
            done = &mut run => {
                return Ok(match done {
                    Ok(Ok(r)) => Answer::Import(Box::new(r)),
                    Ok(Err(e)) => Answer::Error(format!("import failed: {e}")),
                    Err(e) => Answer::Error(format!("import failed: {e}")),
                });
            }
            _ = tick.tick() => {
                if rx.has_changed().unwrap_or(false) {
                    let p = *rx.borrow_and_update();
                    if let Err(e) = send(write, &Answer::Progress(p)).await {
                        stop.store(true, std::sync::atomic::Ordering::Relaxed);
                        let _ = run.await;
                        return Err(e);
                    }
                }
            }
        }
    }
}

/// Send `request` to the server running on `data`; `Ok(None)` when no server listens there.
/// Progress lines on the way go to `on_progress`.
pub fn request(
    data: &DataDir,
    request: &Request,
    on_progress: &dyn Fn(ImportProgress),
) -> anyhow::Result<Option<Answer>> {
    use std::io::{BufRead, Write};
    let path = data.control_socket();
    let mut stream = match std::os::unix::net::UnixStream::connect(&path) {
        Ok(s) => s,
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Ok(None);
        }
        Err(e) => anyhow::bail!("cannot reach the server at {}: {e}", path.display()),
    };
    let mut line = serde_json::to_vec(request)?;
    line.push(b'\n');
    stream.write_all(&line)?;
    let mut reader = std::io::BufReader::new(stream);
    loop {
        let mut line = String::new();
        reader.read_line(&mut line)?;
        if line.is_empty() {
            anyhow::bail!("the server closed the control socket without answering");
        }
        match serde_json::from_str(&line)? {
            Answer::Progress(p) => on_progress(p),
            answer => return Ok(Some(answer)),
        }
    }
}
