//! Replacing a table while the engine runs.
//!
//! [`SharedTable`] holds the current version as an `Arc<Table>` behind a mutex, plus a generation
//! counter. A [`TableReader`] (one per thread) keeps its own `Arc` and the generation it saw: its
//! per-event cost is one atomic load and a compare, and it takes the mutex only when the
//! generation moved. A reader uses one `Arc<Table>` for a whole event, so no event sees rows of
//! two versions; an old mapping is unmapped when the last reader lets go of it.
//!
//! [`TableWatcher`] polls the file on its own thread and swaps in a new version when the path
//! names a different file (device, inode, modification time or size changed), after opening it
//! fully validated and checking that its schema matches the loaded one. Every version is a
//! private copy of the file ([`Table::open`]), so the file may be replaced by rename or
//! rewritten in place: a version in use never changes under its readers.
//!
//! A file can be seen half-written: `cp` truncates the file, then writes it. A copy taken while
//! the file changes is not loaded and tried again at the next poll; a file that fails to load is
//! refused only if the path still names the same file (same size and modification time) at the
//! next poll, so a write in progress is not reported as a bad table.

use super::reader::{OpenOptions, Table};
use super::TableError;
use std::fs::Metadata;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

/// What identifies one version of a file at a path: replacing the file by rename changes the
/// inode; rewriting it in place changes the modification time or the size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct FileId {
    dev: u64,
    ino: u64,
    mtime_ns: i128,
    size: u64,
}

impl FileId {
    pub(crate) fn of(meta: &Metadata) -> FileId {
        #[cfg(unix)]
        {
            use std::os::unix::fs::MetadataExt;
            FileId {
                dev: meta.dev(),
                ino: meta.ino(),
                mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
                size: meta.len(),
            }
        }
        #[cfg(not(unix))]
        {
            let mtime_ns = meta
                .modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_nanos() as i128);
            FileId {
                dev: 0,
                ino: 0,
                mtime_ns,
                size: meta.len(),
            }
        }
    }
}

/// The files that failed to load, by [`FileId`].
#[derive(Default)]
struct Failures {
    /// The last file refused: not tried again until the path names another, so that a bad file
    /// is reported once rather than on every poll.
    refused: Option<FileId>,
    /// A file that failed once and is refused if the path still names it at the next poll (it
    /// may have been caught while being written).
    pending: Option<(FileId, TableError)>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Nothing panics while holding these locks; should it happen, the data is still consistent
    // (each critical section is a single assignment), so carry on.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

struct Inner {
    path: PathBuf,
    opts: OpenOptions,
    generation: AtomicU64,
    current: Mutex<Arc<Table>>,
    /// Serializes reloads and remembers the files that failed.
    reload: Mutex<Failures>,
    swaps: AtomicU64,
    rejected: AtomicU64,
    last_error: Mutex<Option<String>>,
}

/// A table that can be replaced while readers use it.
///
/// Cloning is cheap and every clone refers to the same table.
///
/// ```
/// use kairos::table::{build, BuildOptions, OpenOptions, SharedTable};
/// let dir = tempfile::tempdir()?;
/// let csv = dir.path().join("limits.csv");
/// let path = dir.path().join("limits.tbl");
/// std::fs::write(&csv, "account,limit\n1,100\n")?;
/// build(&BuildOptions::new(&csv, "account", &path))?;
///
/// let shared = SharedTable::open(&path, OpenOptions::default())?;
/// let mut reader = shared.reader();
/// let limit = reader.current().column("limit").unwrap();
/// assert_eq!(reader.current().get_int(1).and_then(|r| r.int(limit)), Some(100));
///
/// std::fs::write(&csv, "account,limit\n1,250\n")?;
/// build(&BuildOptions::new(&csv, "account", &path))?;
/// shared.reload_now()?;
/// assert_eq!(reader.current().get_int(1).and_then(|r| r.int(limit)), Some(250));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct SharedTable {
    inner: Arc<Inner>,
}

impl SharedTable {
    /// Opens the table at `path`; later reloads open the same path with the same options.
    pub fn open(path: impl AsRef<Path>, opts: OpenOptions) -> Result<SharedTable, TableError> {
        let table = Table::open(path.as_ref(), &opts)?;
        Ok(SharedTable::from_table(table, opts))
    }

    /// Shares an open table; reloads read `table.path()` with `opts`.
    pub fn from_table(table: Table, opts: OpenOptions) -> SharedTable {
        SharedTable {
            inner: Arc::new(Inner {
                path: table.path().to_path_buf(),
                opts,
                generation: AtomicU64::new(0),
                current: Mutex::new(Arc::new(table)),
                reload: Mutex::new(Failures::default()),
                swaps: AtomicU64::new(0),
                rejected: AtomicU64::new(0),
                last_error: Mutex::new(None),
            }),
        }
    }

    /// The path the table is reloaded from.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// The current version. Takes a lock: per-event code should hold a [`TableReader`] instead.
    pub fn load(&self) -> Arc<Table> {
        lock(&self.inner.current).clone()
    }

    /// A handle for one reading thread, holding the current version.
    pub fn reader(&self) -> TableReader {
        let (table, seen) = self.snapshot();
        TableReader {
            inner: self.inner.clone(),
            table,
            seen,
        }
    }

    /// The number of versions published since the table was opened (0 for the first).
    #[inline]
    pub fn generation(&self) -> u64 {
        self.inner.generation.load(Ordering::Acquire)
    }

    /// How many replacements were published.
    pub fn swaps(&self) -> u64 {
        self.inner.swaps.load(Ordering::Relaxed)
    }

    /// How many replacements were refused (unreadable, corrupt or incompatible files).
    pub fn rejected(&self) -> u64 {
        self.inner.rejected.load(Ordering::Relaxed)
    }

    /// The message of the last refused replacement, if any.
    pub fn last_error(&self) -> Option<String> {
        lock(&self.inner.last_error).clone()
    }

    /// Opens the file at the path now and publishes it if its schema is compatible, whether or
    /// not it changed. On error the loaded table stays, and the error is also counted in
    /// [`rejected`](Self::rejected) and kept as [`last_error`](Self::last_error).
    pub fn reload_now(&self) -> Result<(), TableError> {
        let mut failures = lock(&self.inner.reload);
        let id = std::fs::metadata(&self.inner.path)
            .ok()
            .map(|m| FileId::of(&m));
        failures.pending = None;
        let r = self.reload_locked().map_err(|e| self.refuse(e));
        failures.refused = if r.is_err() { id } else { None };
        r
    }

    /// Reloads if the path names a different file than the loaded one (and than the last file
    /// that was refused). `Ok(true)` when a new version was published, `Ok(false)` when nothing
    /// was: the file did not change, it changed while it was being copied (it is tried again at
    /// the next call), or it failed for the first time. A file that fails is refused, with
    /// `Err`, at the next call that finds it unchanged, so that a file caught while being
    /// written (which fails, then changes) is not refused. This is what [`TableWatcher`] calls
    /// on each poll.
    pub fn reload_if_changed(&self) -> Result<bool, TableError> {
        let mut failures = lock(&self.inner.reload);
        let meta =
            std::fs::metadata(&self.inner.path).map_err(|e| TableError::io(&self.inner.path, e))?;
        let id = FileId::of(&meta);
        if Some(id) == self.load().file_id() || Some(id) == failures.refused {
            return Ok(false);
        }
        if let Some((_, error)) = failures.pending.take_if(|(failed, _)| *failed == id) {
            failures.refused = Some(id);
            return Err(self.refuse(error));
        }
        failures.pending = None;
        match self.reload_locked() {
            Ok(()) => {
                failures.refused = None;
                Ok(true)
            }
            Err(TableError::Changed { .. }) => Ok(false),
            Err(e) => {
                failures.pending = Some((id, e));
                Ok(false)
            }
        }
    }

    /// Counts a refused replacement and keeps its message.
    fn refuse(&self, error: TableError) -> TableError {
        self.inner.rejected.fetch_add(1, Ordering::Relaxed);
        *lock(&self.inner.last_error) = Some(error.to_string());
        error
    }

    /// Opens, checks and publishes; the caller holds the reload lock.
    fn reload_locked(&self) -> Result<(), TableError> {
        let inner = &*self.inner;
        let new = Table::open(&inner.path, &inner.opts)?;
        compatible(&self.load(), &new).map_err(|message| TableError::Incompatible {
            path: inner.path.clone(),
            message,
        })?;
        self.publish(new);
        Ok(())
    }

    fn publish(&self, table: Table) {
        let new = Arc::new(table);
        let old = {
            let mut cur = lock(&self.inner.current);
            let old = std::mem::replace(&mut *cur, new);
            // Bumped under the lock, so a reader that reads the generation under the same lock
            // gets the one matching the table it cloned.
            self.inner.generation.fetch_add(1, Ordering::Release);
            old
        };
        self.inner.swaps.fetch_add(1, Ordering::Relaxed);
        // Unmapping happens here (or in the last reader), outside the lock.
        drop(old);
    }

    fn snapshot(&self) -> (Arc<Table>, u64) {
        let cur = lock(&self.inner.current);
        let generation = self.inner.generation.load(Ordering::Relaxed);
        (cur.clone(), generation)
    }
}

impl std::fmt::Debug for SharedTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedTable")
            .field("path", &self.inner.path)
            .field("generation", &self.generation())
            .field("swaps", &self.swaps())
            .field("rejected", &self.rejected())
            .finish()
    }
}

/// Why a replacement is refused: the key type, or any column's name, type or position differs.
/// Columns are resolved to [`ColumnId`](super::ColumnId)s once, so they must keep meaning the
/// same thing in every version.
fn compatible(old: &Table, new: &Table) -> Result<(), String> {
    let (o, n) = (old.schema(), new.schema());
    if o.key().ty != n.key().ty {
        return Err(format!(
            "the key is {} but the loaded table's key is {}",
            n.key().ty,
            o.key().ty
        ));
    }
    if o.key_index() != n.key_index() {
        return Err(format!(
            "the key column is `{}` but the loaded table's is `{}`",
            n.key().name,
            o.key().name
        ));
    }
    if o.len() != n.len() {
        return Err(format!(
            "{} columns but the loaded table has {} (loaded: {o}; new: {n})",
            n.len(),
            o.len()
        ));
    }
    for (i, (a, b)) in o.columns().iter().zip(n.columns()).enumerate() {
        if a != b {
            return Err(format!(
                "column {} is `{}:{}` but the loaded table has `{}:{}`",
                i + 1,
                b.name,
                b.ty,
                a.name,
                a.ty
            ));
        }
    }
    Ok(())
}

/// One reading thread's view of a [`SharedTable`].
///
/// Call [`current`](Self::current) once per event and use the returned table for the whole
/// event: every lookup of the event then sees the same version.
pub struct TableReader {
    inner: Arc<Inner>,
    table: Arc<Table>,
    seen: u64,
}

impl TableReader {
    /// The newest published version: one atomic load when nothing changed, a lock and an `Arc`
    /// clone when a new version was published since the last call.
    #[inline]
    pub fn current(&mut self) -> &Table {
        if self.inner.generation.load(Ordering::Acquire) != self.seen {
            self.refresh();
        }
        &self.table
    }

    /// The version this reader holds, without looking for a newer one.
    #[inline]
    pub fn held(&self) -> &Arc<Table> {
        &self.table
    }

    /// The generation of the version this reader holds.
    #[inline]
    pub fn generation(&self) -> u64 {
        self.seen
    }

    #[cold]
    #[inline(never)]
    fn refresh(&mut self) {
        let cur = lock(&self.inner.current);
        self.table = cur.clone();
        self.seen = self.inner.generation.load(Ordering::Relaxed);
    }
}

impl Clone for TableReader {
    fn clone(&self) -> Self {
        TableReader {
            inner: self.inner.clone(),
            table: self.table.clone(),
            seen: self.seen,
        }
    }
}

impl std::fmt::Debug for TableReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TableReader")
            .field("path", &self.inner.path)
            .field("generation", &self.seen)
            .finish()
    }
}

/// What a [`TableWatcher`] did on a poll, passed to [`WatchOptions::on_event`].
#[derive(Debug)]
pub enum SwapEvent<'a> {
    /// A new version was published.
    Swapped {
        /// Its generation.
        generation: u64,
        /// Its number of rows.
        rows: usize,
    },
    /// The file changed but was refused (or could not be examined); the loaded table stays.
    Rejected {
        /// Why.
        error: &'a TableError,
    },
}

impl std::fmt::Display for SwapEvent<'_> {
    /// One line for a log or a terminal: `swapped in a new version (generation 2, 1204 rows)`,
    /// or `replacement refused, keeping the loaded version: FILE: REASON`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SwapEvent::Swapped { generation, rows } => {
                write!(
                    f,
                    "swapped in a new version (generation {generation}, {rows} rows)"
                )
            }
            SwapEvent::Rejected { error } => {
                write!(
                    f,
                    "replacement refused, keeping the loaded version: {error}"
                )
            }
        }
    }
}

/// The callback type of [`WatchOptions::on_event`].
pub type SwapCallback = Arc<dyn Fn(SwapEvent<'_>) + Send + Sync>;

/// How a [`TableWatcher`] polls.
#[derive(Clone)]
pub struct WatchOptions {
    /// Time between two looks at the file.
    pub interval: Duration,
    /// Called on the watcher's thread after each swap or refusal (for logs and metrics).
    pub on_event: Option<SwapCallback>,
}

impl Default for WatchOptions {
    fn default() -> Self {
        WatchOptions {
            interval: Duration::from_secs(1),
            on_event: None,
        }
    }
}

impl std::fmt::Debug for WatchOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WatchOptions")
            .field("interval", &self.interval)
            .field("on_event", &self.on_event.is_some())
            .finish()
    }
}

/// A thread that reloads a [`SharedTable`] when its file is replaced. Stops when dropped.
///
/// ```
/// use kairos::table::{build, BuildOptions, OpenOptions, SharedTable, TableWatcher, WatchOptions};
/// use std::time::Duration;
/// # let dir = tempfile::tempdir()?;
/// # let csv = dir.path().join("t.csv");
/// # let path = dir.path().join("t.tbl");
/// # std::fs::write(&csv, "k,v\na,1\n")?;
/// # build(&BuildOptions::new(&csv, "k", &path))?;
/// let shared = SharedTable::open(&path, OpenOptions::default())?;
/// let watcher = TableWatcher::spawn(
///     shared.clone(),
///     WatchOptions { interval: Duration::from_millis(100), ..WatchOptions::default() },
/// )?;
/// // ... run the engine with shared.reader() ...
/// drop(watcher);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct TableWatcher {
    stop: Arc<(Mutex<bool>, Condvar)>,
    thread: Option<JoinHandle<()>>,
}

impl TableWatcher {
    /// Starts polling `shared`'s path every `opts.interval`.
    pub fn spawn(shared: SharedTable, opts: WatchOptions) -> std::io::Result<TableWatcher> {
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let stop2 = stop.clone();
        let thread = std::thread::Builder::new()
            .name("kairos-table-watch".into())
            .spawn(move || watch(shared, opts, stop2))?;
        Ok(TableWatcher {
            stop,
            thread: Some(thread),
        })
    }

    /// Stops the thread and waits for it.
    pub fn stop(self) {
        drop(self)
    }
}

impl Drop for TableWatcher {
    fn drop(&mut self) {
        *lock(&self.stop.0) = true;
        self.stop.1.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn watch(shared: SharedTable, opts: WatchOptions, stop: Arc<(Mutex<bool>, Condvar)>) {
    let report = |e: SwapEvent<'_>| {
        if let Some(cb) = &opts.on_event {
            cb(e);
        }
    };
    // A path that cannot be examined (deleted, permissions) is reported when it starts failing,
    // not on every poll.
    let mut stat_failing = false;
    loop {
        {
            let stopped = lock(&stop.0);
            let (stopped, _) = stop
                .1
                .wait_timeout_while(stopped, opts.interval, |s| !*s)
                .unwrap_or_else(|e| e.into_inner());
            if *stopped {
                return;
            }
        }
        match std::fs::metadata(shared.path()) {
            Err(e) => {
                if !stat_failing {
                    stat_failing = true;
                    let error = TableError::io(shared.path(), e);
                    *lock(&shared.inner.last_error) = Some(error.to_string());
                    report(SwapEvent::Rejected { error: &error });
                }
                continue;
            }
            Ok(_) => stat_failing = false,
        }
        match shared.reload_if_changed() {
            Ok(false) => {}
            Ok(true) => {
                let t = shared.load();
                report(SwapEvent::Swapped {
                    generation: shared.generation(),
                    rows: t.len(),
                });
            }
            Err(error) => report(SwapEvent::Rejected { error: &error }),
        }
    }
}
