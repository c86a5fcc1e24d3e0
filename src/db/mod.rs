//! SQLite metadata: the only module that touches rusqlite.
//!
//! Layering: `core` calls `Db::read`/`Db::write` with closures over the plain query functions
//! in the per-table modules; nothing here calls upwards. All SQLite work runs on the blocking
//! pool, never on the async workers: one writer connection (SQLite has one writer anyway) and
//! a small pool of readers, which WAL lets run beside the writer. Requests wait for their turn
//! (a reader, the writer) before they take a blocking thread, so a burst of requests queues
//! as tasks rather than as hundreds of threads each holding a stack and a connection.

pub mod audit;
pub mod backup;
pub mod blobs;
pub mod browse;
pub mod cache;
pub mod gc;
pub mod manifests;
pub mod repos;
pub mod retention;
pub mod runs;
pub mod sessions;
pub mod settings;
pub mod tags;
pub mod tokens;
pub mod uploads;
pub mod users;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, OpenFlags, Transaction, TransactionBehavior};

/// Numbered migrations, embedded in the binary and applied in order before the server binds.
const MIGRATIONS: &[(&str, &str)] = &[
    ("0001_init", include_str!("../../migrations/0001_init.sql")),
    ("0002_auth", include_str!("../../migrations/0002_auth.sql")),
    (
        "0003_auth_epoch",
        include_str!("../../migrations/0003_auth_epoch.sql"),
    ),
    (
        "0004_stamps",
        include_str!("../../migrations/0004_stamps.sql"),
    ),
    ("0005_gc", include_str!("../../migrations/0005_gc.sql")),
    (
        "0006_owner_untagged",
        include_str!("../../migrations/0006_owner_untagged.sql"),
    ),
    (
        "0007_retention",
        include_str!("../../migrations/0007_retention.sql"),
    ),
    (
        "0008_pulled_by",
        include_str!("../../migrations/0008_pulled_by.sql"),
    ),
    ("0009_ui", include_str!("../../migrations/0009_ui.sql")),
    (
        "0010_cache",
        include_str!("../../migrations/0010_cache.sql"),
    ),
];

/// `text` with LIKE's pattern characters escaped by `\\` (for `… ESCAPE '\\'`).
pub(crate) fn like_literal(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for ch in text.chars() {
        if matches!(ch, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(ch);
    }
    out
}

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("database task failed: {0}")]
    Join(String),
    /// Another process held the write lock for the whole busy timeout.
    #[error("the database stayed locked by another process for {0:?}")]
    Busy(std::time::Duration),
    #[error("the database stays in journal mode {0}, not WAL (is its file system local?)")]
    NotWal(String),
    #[error(
        "database at {path} was written by a newer berth (schema {found}, this build knows {known})"
    )]
    TooNew {
        path: PathBuf,
        found: i64,
        known: i64,
    },
}

impl DbError {
    /// The disk (or the database's quota) is full.
    pub fn is_full(&self) -> bool {
        match self {
            DbError::Sqlite(rusqlite::Error::SqliteFailure(e, _)) => {
                e.code == rusqlite::ErrorCode::DiskFull
            }
            _ => false,
        }
    }

    /// Another connection (another process) holds the lock the operation needed, for longer
    /// than the busy timeout: the operation may succeed if tried again later.
    pub fn is_busy(&self) -> bool {
        match self {
            DbError::Busy(_) => true,
            DbError::Sqlite(rusqlite::Error::SqliteFailure(e, _)) => matches!(
                e.code,
                rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
            ),
            _ => false,
        }
    }
}

/// How hard a commit waits for the disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// Every commit survives a power loss (`synchronous=FULL`).
    PowerLoss,
    /// Commits survive a crash of berth, not of the machine (`synchronous=NORMAL`).
    ProcessCrash,
}

#[derive(Clone)]
pub struct Db {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    durability: Durability,
    writer: Mutex<Connection>,
    readers: Mutex<Vec<Connection>>,
    /// Async turns: `READERS` reads at once, one write. A turn goes with the blocking work
    /// and ends with it, also when the request that asked is dropped meanwhile.
    read_turns: Arc<tokio::sync::Semaphore>,
    write_turn: Arc<tokio::sync::Mutex<()>>,
}

/// Reads that run at once, and reader connections kept open between requests (a cold open
/// parses the schema and recompiles statements, which costs more than a query). Each reader
/// holds its schema, its prepared statements and up to 2 MiB of page cache: a few cores gain
/// nothing from more readers, and a 1 GB machine would feel dozens.
const READERS: usize = 8;

impl Db {
    /// Open (creating if needed) the database and apply pending migrations. Blocking.
    pub fn open(path: &Path, durability: Durability) -> Result<Db> {
        let mut writer = connect(path, durability, false)?;
        migrate(&mut writer, path)?;
        Ok(Db {
            inner: Arc::new(Inner {
                path: path.to_path_buf(),
                durability,
                writer: Mutex::new(writer),
                readers: Mutex::new(Vec::new()),
                read_turns: Arc::new(tokio::sync::Semaphore::new(READERS)),
                write_turn: Arc::new(tokio::sync::Mutex::new(())),
            }),
        })
    }

    /// Run a read-only closure on a reader connection, off the async workers.
    pub async fn read<T, E, F>(&self, f: F) -> std::result::Result<T, E>
    where
        T: Send + 'static,
        E: From<DbError> + Send + 'static,
        F: FnOnce(&Connection) -> std::result::Result<T, E> + Send + 'static,
    {
        // Never closed, so acquiring cannot fail.
        let turn = self.inner.read_turns.clone().acquire_owned().await.ok();
        let db = self.clone();
        tokio::task::spawn_blocking(move || {
            let _turn = turn;
            db.read_blocking(f)
        })
        .await
        .map_err(|e| E::from(DbError::Join(e.to_string())))?
    }

    /// Run a closure inside one IMMEDIATE write transaction, committed only when it returns
    /// `Ok`: a domain error from the closure rolls everything back.
    pub async fn write<T, E, F>(&self, f: F) -> std::result::Result<T, E>
    where
        T: Send + 'static,
        E: From<DbError> + Send + 'static,
        F: FnOnce(&Transaction) -> std::result::Result<T, E> + Send + 'static,
    {
        let asked = std::time::Instant::now();
        let Ok(turn) = tokio::time::timeout(BUSY_TIMEOUT, self.write_turn()).await else {
            return Err(DbError::Busy(BUSY_TIMEOUT).into());
        };
        let db = self.clone();
        tokio::task::spawn_blocking(move || {
            let _turn = turn;
            db.write_since(asked, f)
        })
        .await
        .map_err(|e| E::from(DbError::Join(e.to_string())))?
    }

    /// `write` for background work that goes on for a while (garbage collection): after the
    /// transaction, a pause as long as it took, so the work holds the one writer at most half
    /// the time and requests waiting for it get their turn between batches.
    pub async fn write_paced<T, E, F>(&self, f: F) -> std::result::Result<T, E>
    where
        T: Send + 'static,
        E: From<DbError> + Send + 'static,
        F: FnOnce(&Transaction) -> std::result::Result<T, E> + Send + 'static,
    {
        let started = std::time::Instant::now();
        let out = self.write(f).await;
        // Move what the batch added to the WAL into the database now, as part of this
        // work's time: otherwise the commit of some request that crosses the WAL's
        // auto-checkpoint size pays for it.
        // In a turn of its own: it works on the writer connection.
        let turn = self.write_turn().await;
        let db = self.clone();
        let _ = tokio::task::spawn_blocking(move || {
            let _turn = turn;
            db.checkpoint()
        })
        .await;
        tokio::time::sleep(started.elapsed()).await;
        out
    }

    /// The turn to use the writer connection, held until the guard is dropped.
    async fn write_turn(&self) -> tokio::sync::OwnedMutexGuard<()> {
        self.inner.write_turn.clone().lock_owned().await
    }

    /// A passive WAL checkpoint on the writer connection (readers are not waited for).
    fn checkpoint(&self) -> Result<()> {
        let conn = self.inner.writer.lock().unwrap_or_else(|p| p.into_inner());
        conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))?;
        Ok(())
    }

    /// `write` for bookkeeping the caller does not wait for (last use, last login): run in a
    /// task of its own, a failure logged as `what`. A busy database then delays only this.
    pub fn write_detached<F>(&self, what: &'static str, f: F)
    where
        F: FnOnce(&Transaction) -> Result<()> + Send + 'static,
    {
        let db = self.clone();
        tokio::spawn(async move {
            if let Err(e) = db.write(f).await {
                tracing::warn!(error = %e, "could not record {what}");
            }
        });
    }

    /// `read` for callers that are already off the async workers (the CLI).
    pub fn read_blocking<T, E, F>(&self, f: F) -> std::result::Result<T, E>
    where
        E: From<DbError>,
        F: FnOnce(&Connection) -> std::result::Result<T, E>,
    {
        let pooled = self
            .inner
            .readers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop();
        let conn = match pooled {
            Some(c) => c,
            None => connect(&self.inner.path, self.inner.durability, true)?,
        };
        let out = f(&conn);
        let mut readers = self.inner.readers.lock().unwrap_or_else(|p| p.into_inner());
        if readers.len() < READERS {
            readers.push(conn);
        }
        out
    }

    /// `write` for callers that are already off the async workers (the CLI).
    ///
    /// The whole wait, for this process's writer and then for SQLite's lock (another
    /// process's writer), is bounded by `BUSY_TIMEOUT`: writes queued behind a long lock fail
    /// as busy together rather than one timeout after another.
    pub fn write_blocking<T, E, F>(&self, f: F) -> std::result::Result<T, E>
    where
        E: From<DbError>,
        F: FnOnce(&Transaction) -> std::result::Result<T, E>,
    {
        self.write_since(std::time::Instant::now(), f)
    }

    /// `write_blocking` for a write asked for at `asked`: the wait counts from then.
    fn write_since<T, E, F>(&self, asked: std::time::Instant, f: F) -> std::result::Result<T, E>
    where
        E: From<DbError>,
        F: FnOnce(&Transaction) -> std::result::Result<T, E>,
    {
        let mut conn = self.inner.writer.lock().unwrap_or_else(|p| p.into_inner());
        let left = BUSY_TIMEOUT.saturating_sub(asked.elapsed());
        if left.is_zero() {
            return Err(DbError::Busy(BUSY_TIMEOUT).into());
        }
        conn.busy_timeout(left).map_err(DbError::from)?;
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(DbError::from)?;
        let out = f(&tx)?;
        tx.commit().map_err(DbError::from)?;
        Ok(out)
    }
}

fn connect(path: &Path, durability: Durability, read_only: bool) -> Result<Connection> {
    let flags = if read_only {
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX
    } else {
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
    };
    let conn = Connection::open_with_flags(path, flags)?;
    // Every query goes through `prepare_cached`, and there are more kinds than rusqlite's
    // default 16 cache slots: without room for all of them, mixed load recompiles.
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    conn.busy_timeout(BUSY_TIMEOUT)?;
    if !read_only {
        set_wal(&conn)?;
    }
    let sync = match durability {
        Durability::PowerLoss => "FULL",
        Durability::ProcessCrash => "NORMAL",
    };
    conn.pragma_update(None, "synchronous", sync)?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    Ok(conn)
}

/// Prepared statements kept per connection.
const STATEMENT_CACHE: usize = 128;

/// How long a connection waits for another one's lock.
const BUSY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Switch to WAL. The switch needs the database to itself and SQLite answers `SQLITE_BUSY`
/// at once, without waiting, when another connection is opening the same new database at the
/// same moment: try again for as long as `busy_timeout` would have waited.
fn set_wal(conn: &Connection) -> Result<()> {
    let deadline = std::time::Instant::now() + BUSY_TIMEOUT;
    loop {
        match conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get::<_, String>(0)) {
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::DatabaseBusy
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            Ok(mode) if !mode.eq_ignore_ascii_case("wal") => {
                return Err(DbError::NotWal(mode));
            }
            other => return other.map(drop).map_err(Into::into),
        }
    }
}

/// Apply the pending migrations, one exclusive transaction each. The version is read inside
/// the transaction: another process opening the same database at the same moment (the CLI
/// while the server starts) waits for the lock and then finds the migration done.
fn migrate(conn: &mut Connection, path: &Path) -> Result<()> {
    let known = MIGRATIONS.len() as i64;
    loop {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Exclusive)?;
        let current: i64 = tx.pragma_query_value(None, "user_version", |r| r.get(0))?;
        if current > known || current < 0 {
            return Err(DbError::TooNew {
                path: path.to_path_buf(),
                found: current,
                known,
            });
        }
        let Some((_name, sql)) = MIGRATIONS.get(current as usize) else {
            return Ok(());
        };
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", current + 1)?;
        tx.commit()?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn processes_opening_a_new_database_at_once_all_succeed() {
        // As `berth user add` run while `berth serve` starts: each opener migrates, or waits
        // and finds the migrations done.
        for _ in 0..5 {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("t.db");
            let barrier = std::sync::Barrier::new(4);
            std::thread::scope(|s| {
                let openers: Vec<_> = (0..4)
                    .map(|_| {
                        s.spawn(|| {
                            barrier.wait();
                            Db::open(&path, Durability::ProcessCrash).map(drop)
                        })
                    })
                    .collect();
                for o in openers {
                    o.join().unwrap().unwrap();
                }
            });
        }
    }

    #[test]
    fn migrations_apply_once_and_refuse_newer_schemas() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let db = Db::open(&path, Durability::ProcessCrash).unwrap();
        let v: i64 = db
            .read_blocking(|c| {
                Ok::<i64, DbError>(c.pragma_query_value(None, "user_version", |r| r.get(0))?)
            })
            .unwrap();
        assert_eq!(v, MIGRATIONS.len() as i64);
        drop(db);
        Db::open(&path, Durability::ProcessCrash).unwrap();
        let c = Connection::open(&path).unwrap();
        c.pragma_update(None, "user_version", 99).unwrap();
        drop(c);
        assert!(matches!(
            Db::open(&path, Durability::ProcessCrash),
            Err(DbError::TooNew { .. })
        ));
    }

    /// Wait (up to 5 s) until `done` holds.
    async fn eventually(done: impl Fn() -> bool) -> bool {
        for _ in 0..500 {
            if done() {
                return true;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        done()
    }

    #[tokio::test]
    async fn a_dropped_request_keeps_its_turn_until_its_work_ends() {
        // A client that goes away drops its request's future while the database work it
        // started runs on: the turn must stay taken until that work ends, or the next request
        // would take a thread (and a reader, or a wait on the writer) beside it.
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("t.db"), Durability::ProcessCrash).unwrap();
        let turns = || db.inner.read_turns.available_permits();

        let (go, wait) = std::sync::mpsc::channel::<()>();
        let read = db.read(move |_| {
            let _ = wait.recv();
            Ok::<_, DbError>(())
        });
        let dropped = tokio::time::timeout(std::time::Duration::from_millis(50), read).await;
        assert!(dropped.is_err(), "the read ended before it was let go");
        assert_eq!(
            turns(),
            READERS - 1,
            "the read's turn went back with its request"
        );
        go.send(()).unwrap();
        assert!(
            eventually(|| turns() == READERS).await,
            "the read's turn never came back"
        );

        let (go, wait) = std::sync::mpsc::channel::<()>();
        let write = db.write(move |_| {
            let _ = wait.recv();
            Ok::<_, DbError>(())
        });
        let dropped = tokio::time::timeout(std::time::Duration::from_millis(50), write).await;
        assert!(dropped.is_err(), "the write ended before it was let go");
        let free = || db.inner.write_turn.try_lock().is_ok();
        assert!(!free(), "the write's turn went back with its request");
        go.send(()).unwrap();
        assert!(eventually(free).await, "the write's turn never came back");
    }
}

#[cfg(test)]
pub(crate) mod tests_support {
    use super::*;

    /// An in-memory database with every migration applied, for query tests.
    pub fn memory() -> Connection {
        let mut c = Connection::open_in_memory().unwrap();
        c.pragma_update(None, "foreign_keys", "ON").unwrap();
        migrate(&mut c, Path::new(":memory:")).unwrap();
        c
    }
}

/// A connection as the query functions take it (a write transaction derefs to one), so that
/// callers can name it in helper signatures without depending on rusqlite.
pub type Conn = Connection;

/// What every query function returns.
pub type Result<T> = std::result::Result<T, DbError>;
