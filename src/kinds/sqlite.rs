//! SQLite instances (`source = { kind = "sqlite", path = ... }`): online backups streamed from
//! one read transaction, restores renamed over the database file in one step.
//!
//! **Backup**: the database's pages 1 to N are read through SQLite's `sqlite_dbpage` table
//! ([`write_pages`]) inside one read transaction: the database file image as of one commit
//! (in WAL mode too: pages are read through the pager, which takes a page's latest committed
//! version from the `-wal`). A reader holds writers differently in the two journal modes, so:
//! - **WAL mode** (the header says so, [`in_wal_mode`]): writers are not held up by a reader,
//!   so the pages are streamed straight into the engine as the one file [`FILE_IN_SNAPSHOT`],
//!   with no copy on disk, read while the engine chunks, compresses and stores what came
//!   before. Only checkpoints stop at the read's snapshot until it ends.
//! - **Rollback-journal mode**: a reader makes writers' commits wait for as long as it reads,
//!   and a stream reads at the repository's pace (an upload included). So the pages are read
//!   into a copy in a private folder beside the database first ([`copy_beside`]:
//!   `.<file>.backplan-backup/`, on its own filesystem, never `/tmp`): writers wait for that
//!   local copy only, as they did for the backup API's copy of earlier versions. The folder is
//!   backed up as a tree holding only [`FILE_IN_SNAPSHOT`] and removed afterwards
//!   ([`Kind::backup_finished`]), or at the next backup or start after a crash.
//!
//! Both give a snapshot with the file at its root, so they (and the folder copies of older
//! versions) restore the same way. A writer's lock is waited for up to [`BUSY_WAIT`]. A read
//! that fails half-way leaves no snapshot. The bundled SQLite needs
//! `SQLITE_ENABLE_DBPAGE_VTAB` (`.cargo/config.toml`).
//!
//! **Restore**: the backup is written into a hidden staging file beside the database
//! (`.<file>.backplan-restore-<key>`), given the database's mode and owner, synced, and
//! checked with `PRAGMA integrity_check`; then renamed over the database in its opened
//! folder, and the folder synced. The swap is refused while another process holds the
//! database (a lock on the file or on its `-shm`); a `-wal` or hot `-journal` left by a
//! process that stopped is folded into the old database by SQLite itself first, and the old
//! companions are removed before and after the rename, so that no stale log is ever paired
//! with the restored file.

use std::ffi::CString;
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

use super::directory::{self, Entry, cstr, identity_chain_at, open_at, stat_at};
use super::{BackupSource, Kind, RestoreInto, Target};
use crate::config::Source;
use crate::engine::WrittenStream;

/// The SQLite kind.
pub struct Sqlite;

/// The database's file name inside a snapshot: the same for every instance, so that a backup
/// of one instance restores into another.
pub const FILE_IN_SNAPSHOT: &str = "database.sqlite";

/// The files SQLite keeps beside a database (`<file>-wal`, ...).
const COMPANIONS: [&str; 3] = ["-wal", "-shm", "-journal"];

/// How long a backup waits for a lock held by a writer before it fails (and is retried).
const BUSY_WAIT: Duration = Duration::from_secs(120);

/// How long a copy or an integrity check may keep the watchdog fed: longer is a hang.
const LONGEST: Duration = Duration::from_secs(1800);

const HEADER: &[u8; 16] = b"SQLite format 3\0";

fn path_of(source: &Source) -> Result<&Path, String> {
    match source {
        Source::Sqlite { path } => Ok(path),
        other => Err(format!(
            "{} is not a sqlite instance's source",
            other.describe()
        )),
    }
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The private folder older versions made the backup copy of `db` in (removed if found).
pub fn copy_folder(db: &Path) -> PathBuf {
    db.with_file_name(format!(".{}.backplan-backup", file_name(db)))
}

/// A file SQLite keeps beside `db` (`suffix` is `-wal`, `-shm` or `-journal`).
fn companion(db: &Path, suffix: &str) -> PathBuf {
    db.with_file_name(format!("{}{suffix}", file_name(db)))
}

impl Kind for Sqlite {
    fn drill_check(&self, _source: &Source, restored: &Path) -> Result<String, String> {
        drill_integrity_check(&restored.join(FILE_IN_SNAPSHOT))
    }

    fn provision(&self, source: &Source) -> Result<&'static str, String> {
        provision(path_of(source)?)
    }

    fn backup_source(&self, source: &Source, instance: &str) -> Result<BackupSource, String> {
        let db = path_of(source)?;
        check_source(db, instance)?;
        if !in_wal_mode(db).map_err(|e| format!("cannot read {}: {e}", db.display()))? {
            return copy_beside(db);
        }
        let path = db.to_path_buf();
        Ok(BackupSource::Written(WrittenStream {
            name: FILE_IN_SNAPSHOT.to_string(),
            producer: format!("reading the SQLite database {}", db.display()),
            // A lock wait, or a long read with the engine busy: the watchdog is fed meanwhile.
            write: Arc::new(move |out: &mut dyn Write| {
                crate::heartbeat::during(LONGEST, || write_pages(&path, out)).map(|_| ())
            }),
        }))
    }

    /// Removes the copy folder of a rollback-mode backup (or of an older version's), if any.
    fn backup_finished(&self, source: &Source, _instance: &str) {
        if let Ok(db) = path_of(source) {
            let folder = copy_folder(db);
            if let Err(e) = remove_dir(&folder) {
                tracing::warn!(
                    "the backup copy {} could not be removed: {e}",
                    folder.display()
                );
            }
        }
    }

    fn open_target(&self, source: &Source) -> Result<Box<dyn Target>, String> {
        Ok(Box::new(SqliteTarget::open(path_of(source)?)?))
    }

    fn discard_leftovers(&self, source: &Source) -> Vec<String> {
        let Ok(db) = path_of(source) else {
            return Vec::new();
        };
        let mut leftovers = directory::leftover_staging(db);
        leftovers.push(copy_folder(db));
        leftovers
            .into_iter()
            .filter(|p| std::fs::symlink_metadata(p).is_ok())
            .map(|p| {
                let removed = if p.is_dir() {
                    std::fs::remove_dir_all(&p)
                } else {
                    std::fs::remove_file(&p)
                };
                match removed {
                    Ok(()) => format!("removed the leftover {}", p.display()),
                    Err(e) => format!("cannot remove {}: {e}", p.display()),
                }
            })
            .collect()
    }

    fn store_path(&self, source: &Source) -> Option<PathBuf> {
        path_of(source).ok().map(Path::to_path_buf)
    }
}

fn remove_dir(path: &Path) -> std::io::Result<()> {
    match std::fs::remove_dir_all(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// Whether the file starts as a SQLite database does (an empty file is an empty database).
fn has_header(file: &mut std::fs::File) -> std::io::Result<bool> {
    use std::io::Read;
    let mut head = Vec::with_capacity(HEADER.len());
    file.take(HEADER.len() as u64).read_to_end(&mut head)?;
    Ok(head.is_empty() || head == HEADER)
}

/// Creates an empty database (and its folders), or adopts the database that exists.
/// Refuses a folder, a symbolic link, or a file that is not a SQLite database.
pub fn provision(db: &Path) -> Result<&'static str, String> {
    let shown = db.display();
    match std::fs::symlink_metadata(db) {
        Ok(m) if m.file_type().is_symlink() => Err(format!(
            "{shown} is a symbolic link; a sqlite instance needs the database file itself"
        )),
        Ok(m) if m.is_dir() => Err(format!(
            "{shown} is a folder; a sqlite instance needs a database file"
        )),
        Ok(m) if m.is_file() => {
            let mut f = std::fs::File::open(db).map_err(|e| format!("{shown}: {e}"))?;
            if has_header(&mut f).map_err(|e| format!("{shown}: {e}"))? {
                Ok("adopted")
            } else {
                Err(format!(
                    "{shown} exists and is not a SQLite database; backplan adopts a database, it never replaces another file"
                ))
            }
        }
        Ok(_) => Err(format!("{shown} is not a regular file")),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if let Some(parent) = db.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(parent)
                    .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
            }
            let conn = Connection::open_with_flags(
                db,
                OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE,
            )
            .map_err(|e| format!("cannot create the database {shown}: {e}"))?;
            // A write transaction gives the file its header: a valid database, not 0 bytes.
            conn.execute_batch("PRAGMA user_version = 0")
                .map_err(|e| format!("cannot create the database {shown}: {e}"))?;
            conn.close()
                .map_err(|(_, e)| format!("cannot create the database {shown}: {e}"))?;
            Ok("created")
        }
        Err(e) => Err(format!("cannot read {shown}: {e}")),
    }
}

/// Checks, before anything is copied, that an instance's database is a SQLite file.
pub fn check_source(db: &Path, instance: &str) -> Result<(), String> {
    let shown = db.display();
    match std::fs::symlink_metadata(db) {
        Ok(m) if m.file_type().is_symlink() => Err(format!(
            "the database of instance `{instance}` should be a file, but {shown} is a symbolic link; backplan backs up the real file only, never what a link points to"
        )),
        Ok(m) if m.is_file() => {
            let mut f = std::fs::File::open(db).map_err(|e| format!("cannot read {shown}: {e}"))?;
            match has_header(&mut f) {
                Ok(true) => Ok(()),
                Ok(false) => Err(format!(
                    "{shown} of instance `{instance}` is not a SQLite database; nothing was backed up"
                )),
                Err(e) => Err(format!("cannot read {shown}: {e}")),
            }
        }
        Ok(_) => Err(format!(
            "the database of instance `{instance}` should be a file, but {shown} is a folder (or another kind of entry)"
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(format!(
            "the database {shown} of instance `{instance}` does not exist (is a disk not mounted?); nothing was backed up"
        )),
        Err(e) => Err(format!("cannot read {shown}: {e}")),
    }
}

/// Whether the database file says it is in WAL mode (its header's write version, byte 18, is
/// 2). An empty file, a rollback-journal one, or one changed to WAL since: `false`.
fn in_wal_mode(db: &Path) -> std::io::Result<bool> {
    use std::io::Read;
    let mut head = [0u8; 19];
    match std::fs::File::open(db)?.read_exact(&mut head) {
        Ok(()) => Ok(head[18] == 2),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(false),
        Err(e) => Err(e),
    }
}

/// A rollback-journal database: its pages read ([`write_pages`]) into a copy in a private
/// folder beside it (`.<file>.backplan-backup/`, 0700, on its own filesystem), backed up as a
/// tree. Writers' commits wait only for this local copy, not for the whole backup (the stream
/// of a WAL database goes at the repository's pace, an upload included, and a rollback-mode
/// reader holds writers for as long as it reads).
fn copy_beside(db: &Path) -> Result<BackupSource, String> {
    let folder = copy_folder(db);
    let made = remove_dir(&folder)
        .and_then(|()| {
            std::os::unix::fs::DirBuilderExt::mode(&mut std::fs::DirBuilder::new(), 0o700)
                .create(&folder)
        })
        .map_err(|e| format!("cannot prepare {}: {e}", folder.display()))
        .and_then(|()| {
            let copy = folder.join(FILE_IN_SNAPSHOT);
            let file = std::fs::File::create_new(&copy)
                .map_err(|e| format!("cannot create {}: {e}", copy.display()))?;
            let mut out = CopyFile(std::io::BufWriter::with_capacity(1 << 20, file));
            // One blocking call with no progress of its own: the watchdog is fed meanwhile.
            crate::heartbeat::during(LONGEST, || write_pages(db, &mut out))?;
            out.flush()
                .map_err(|e| format!("cannot write {}: {e}", copy.display()))
        });
    match made {
        Ok(()) => Ok(BackupSource::Tree(folder)),
        Err(e) => {
            let _ = remove_dir(&folder);
            Err(format!("copying {} online: {e}", db.display()))
        }
    }
}

/// The file of [`copy_beside`]: a full disk says what the copy needs (and other errors are
/// left as they are: a damaged database is not a matter of room).
struct CopyFile(std::io::BufWriter<std::fs::File>);

impl CopyFile {
    fn room(e: std::io::Error) -> std::io::Error {
        use std::io::ErrorKind::{QuotaExceeded, StorageFull};
        if !matches!(e.kind(), StorageFull | QuotaExceeded) {
            return e;
        }
        std::io::Error::new(
            e.kind(),
            format!(
                "{e} (a database in rollback-journal mode is copied beside itself before it is stored, and needs room for one copy there; one in WAL mode is streamed and needs none)"
            ),
        )
    }
}

impl Write for CopyFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.write(buf).map_err(Self::room)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush().map_err(Self::room)
    }
}

/// Writes the database file image of `db` as of one read transaction into `out` and returns
/// its size: its pages 1 to N in order, each read through SQLite's pager from the
/// `sqlite_dbpage` table (so a page whose latest version is in the `-wal` is read from there),
/// all in the one transaction, so the image is the database as of one commit. Waits for a
/// writer's lock up to [`BUSY_WAIT`]. Writers are held up as by any reader while it runs (in
/// rollback mode their commits wait; in WAL mode only checkpoints stop at this read).
pub fn write_pages(db: &Path, out: &mut dyn Write) -> Result<u64, String> {
    let sql = |e: rusqlite::Error| e.to_string();
    // Read-only: the backup never writes to the instance's database.
    let conn = Connection::open_with_flags(
        db,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(sql)?;
    conn.busy_timeout(BUSY_WAIT).map_err(sql)?;
    conn.execute_batch("BEGIN").map_err(sql)?;
    // The first read starts the transaction (and, in rollback mode, waits for a writer).
    let pages: i64 = conn
        .query_row("PRAGMA page_count", [], |r| r.get(0))
        .map_err(|e| match e.sqlite_error_code() {
            Some(rusqlite::ErrorCode::DatabaseBusy) => format!(
                "the database stayed locked by a writer for {} s",
                BUSY_WAIT.as_secs()
            ),
            _ => e.to_string(),
        })?;
    let page_size: i64 = conn
        .query_row("PRAGMA page_size", [], |r| r.get(0))
        .map_err(sql)?;
    let mut stmt = conn
        .prepare("SELECT pgno, data FROM sqlite_dbpage('main')")
        .map_err(|e| {
            if e.to_string().contains("no such table") {
                format!("this build's SQLite has no sqlite_dbpage table (it must be built with SQLITE_ENABLE_DBPAGE_VTAB): {e}")
            } else {
                e.to_string()
            }
        })?;
    let mut rows = stmt.query([]).map_err(sql)?;
    let mut written: i64 = 0;
    while let Some(row) = rows
        .next()
        .map_err(|e| format!("reading page {} of {pages}: {e}", written + 1))?
    {
        let pgno: i64 = row.get(0).map_err(sql)?;
        let data = row
            .get_ref(1)
            .map_err(sql)?
            .as_blob()
            .map_err(|e| e.to_string())?;
        if pgno != written + 1 || data.len() as i64 != page_size {
            return Err(format!(
                "SQLite gave page {pgno} of {} bytes after page {written} (pages of {page_size} bytes expected, in order)",
                data.len()
            ));
        }
        out.write_all(data)
            .map_err(|e| format!("after {written} of {pages} pages: {e}"))?;
        written += 1;
    }
    if written != pages {
        return Err(format!(
            "SQLite gave {written} pages of a database of {pages}"
        ));
    }
    drop(rows);
    drop(stmt);
    conn.execute_batch("COMMIT").map_err(sql)?;
    conn.close().map_err(|(_, e)| e.to_string())?;
    Ok((pages * page_size) as u64)
}

/// `PRAGMA integrity_check` of the database at `db`: `Ok` when it says `ok`.
pub fn integrity_check(db: &Path) -> Result<(), String> {
    let conn = Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_WRITE)
        .map_err(|e| e.to_string())?;
    let lines: Vec<String> = conn
        .prepare("PRAGMA integrity_check")
        .and_then(|mut s| {
            s.query_map([], |r| r.get::<_, String>(0))?
                .collect::<Result<_, _>>()
        })
        .map_err(|e| e.to_string())?;
    conn.close().map_err(|(_, e)| e.to_string())?;
    if lines == ["ok"] {
        Ok(())
    } else {
        Err(format!(
            "the restored database fails SQLite's integrity check: {}",
            lines.iter().take(5).cloned().collect::<Vec<_>>().join("; ")
        ))
    }
}

/// The pid of a process holding a lock on the open file `fd` (SQLite's locks), if any.
fn lock_holder(fd: &OwnedFd) -> std::io::Result<Option<libc::pid_t>> {
    // SAFETY: flock is plain data; zeroed is a valid value.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = libc::F_WRLCK as _;
    fl.l_whence = libc::SEEK_SET as _;
    // SAFETY: a valid fd and a flock of the right type.
    if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETLK, &mut fl) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok((i32::from(fl.l_type) != libc::F_UNLCK).then_some(fl.l_pid))
}

/// The database file of a restore, held through its opened folder (as the directory kind
/// holds its folder): no path is walked again between the checks and the rename.
pub struct SqliteTarget {
    path: PathBuf,
    parent: OwnedFd,
    parent_entry: Entry,
    name: CString,
    entry: Entry,
}

impl SqliteTarget {
    /// Opens the folder of `db` and checks the database: a regular file (no link, no mount
    /// point), a SQLite database, on its folder's filesystem, and not in use.
    pub fn open(db: &Path) -> Result<SqliteTarget, String> {
        let (Some(parent), Some(name)) = (db.parent(), db.file_name()) else {
            return Err(format!("{} has no folder and name", db.display()));
        };
        let parent_path = if parent.as_os_str().is_empty() {
            Path::new(".")
        } else {
            parent
        };
        let at = |e: std::io::Error| format!("{}: {e}", parent_path.display());
        let parent = open_at(
            None,
            &cstr(parent_path.as_os_str()).map_err(at)?,
            libc::O_PATH | libc::O_DIRECTORY,
        )
        .map_err(at)?;
        let parent_entry = stat_at(&parent, &CString::default()).map_err(at)?;
        let mut t = SqliteTarget {
            path: db.to_path_buf(),
            parent,
            parent_entry,
            name: cstr(name).map_err(at)?,
            // Replaced by the database's own entry right below.
            entry: parent_entry,
        };
        t.entry = t.check()?;
        t.refuse_if_in_use()?;
        Ok(t)
    }

    /// Checks the database file as it is now, through the opened folder.
    fn check(&self) -> Result<Entry, String> {
        let shown = self.path.display();
        let e = stat_at(&self.parent, &self.name).map_err(|e| format!("{shown}: {e}"))?;
        if e.is_symlink() {
            return Err(format!(
                "{shown} is a symbolic link; a restore replaces a real database file only, never what a link points to"
            ));
        }
        if e.mode & libc::S_IFMT != libc::S_IFREG {
            return Err(format!("{shown} is not a database file"));
        }
        if e.mount_root || e.id.0 != self.parent_entry.id.0 {
            return Err(format!(
                "{shown} is a mount point; the restored file is prepared beside it and renamed over it, which cannot cross filesystems"
            ));
        }
        let mut f = std::fs::File::from(
            open_at(
                Some(&self.parent),
                &self.name,
                libc::O_RDONLY | libc::O_NOFOLLOW,
            )
            .map_err(|e| format!("{shown}: {e}"))?,
        );
        if !has_header(&mut f).map_err(|e| format!("{shown}: {e}"))? {
            return Err(format!(
                "{shown} is not a SQLite database; a restore replaces a database only"
            ));
        }
        Ok(e)
    }

    fn name_with(&self, suffix: &str) -> CString {
        let mut v = self.name.as_bytes().to_vec();
        v.extend_from_slice(suffix.as_bytes());
        CString::new(v).expect("no NUL")
    }

    fn staging_name(&self, restore_key: &str) -> CString {
        let staging = directory::staging_path(&self.path, restore_key);
        cstr(staging.file_name().expect("a staging path has a name")).expect("no NUL")
    }

    fn staging_path(&self, restore_key: &str) -> PathBuf {
        directory::staging_path(&self.path, restore_key)
    }

    /// Refuses while another process holds the database: a lock on the file (a transaction,
    /// or any connection in WAL mode) or on its `-shm` (every WAL connection).
    fn refuse_if_in_use(&self) -> Result<(), String> {
        let shown = self.path.display();
        for suffix in ["", "-shm"] {
            let fd = match open_at(
                Some(&self.parent),
                &self.name_with(suffix),
                libc::O_RDONLY | libc::O_NOFOLLOW,
            ) {
                Ok(fd) => fd,
                Err(e) if !suffix.is_empty() && e.kind() == std::io::ErrorKind::NotFound => {
                    continue;
                }
                Err(e) => return Err(format!("{shown}{suffix}: {e}")),
            };
            if let Some(pid) = lock_holder(&fd).map_err(|e| format!("{shown}{suffix}: {e}"))? {
                return Err(format!(
                    "{shown} is in use by another process (pid {pid}); a restore replaces a database nobody has open. Stop what uses the sandbox, then apply again"
                ));
            }
        }
        Ok(())
    }

    fn unlink(&self, name: &CString) -> std::io::Result<()> {
        // SAFETY: a valid fd and a NUL-terminated name.
        if unsafe { libc::unlinkat(self.parent.as_raw_fd(), name.as_ptr(), 0) } == 0 {
            return Ok(());
        }
        match std::io::Error::last_os_error() {
            e if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            e => Err(e),
        }
    }

    fn exists(&self, name: &CString) -> bool {
        stat_at(&self.parent, name).is_ok()
    }

    /// Removes the `-wal`, `-shm` and `-journal` beside the database.
    fn remove_companions(&self) -> std::io::Result<()> {
        for suffix in COMPANIONS {
            self.unlink(&self.name_with(suffix))?;
        }
        Ok(())
    }

    /// A log left beside the old database by a process that stopped is part of that
    /// database: SQLite folds it in (a WAL checkpointed and deleted on close, a hot journal
    /// rolled back) when the database is opened and closed. The data stays the same.
    fn fold_leftover_logs(&self) -> Result<(), String> {
        let shown = self.path.display();
        if !COMPANIONS.iter().any(|s| self.exists(&self.name_with(s))) {
            return Ok(());
        }
        let conn = Connection::open_with_flags(&self.path, OpenFlags::SQLITE_OPEN_READ_WRITE)
            .and_then(|c| {
                c.query_row("PRAGMA schema_version", [], |r| r.get::<_, i64>(0))?;
                Ok(c)
            })
            .map_err(|e| format!("{shown}: {e}"))?;
        conn.close().map_err(|(_, e)| format!("{shown}: {e}"))?;
        self.refuse_if_in_use()?;
        let wal = std::fs::symlink_metadata(companion(&self.path, "-wal"));
        if wal.is_ok_and(|m| m.len() > 0) {
            return Err(format!(
                "{shown} keeps a write-ahead log that SQLite did not fold into it (a persistent WAL, or a process that opened it meanwhile); nothing was restored. Stop what uses the sandbox, then apply again"
            ));
        }
        self.remove_companions()
            .map_err(|e| format!("removing the old logs of {shown}: {e}"))
    }

    fn create_staging(&self, restore_key: &str) -> std::io::Result<std::fs::File> {
        let name = self.staging_name(restore_key);
        // A leftover of an earlier try: it is ours (a hidden name with the restore's key).
        self.discard_staging(restore_key)?;
        // SAFETY: a valid fd and a NUL-terminated name; the mode is an integer.
        let fd = unsafe {
            libc::openat(
                self.parent.as_raw_fd(),
                name.as_ptr(),
                libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC,
                0o600 as libc::c_uint,
            )
        };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: a fresh descriptor that nothing else owns.
        Ok(std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// Removes the staging file and the files SQLite kept beside it.
    fn discard_staging(&self, restore_key: &str) -> std::io::Result<()> {
        let staging = self.staging_name(restore_key);
        for suffix in COMPANIONS {
            let mut v = staging.as_bytes().to_vec();
            v.extend_from_slice(suffix.as_bytes());
            self.unlink(&CString::new(v).expect("no NUL"))?;
        }
        self.unlink(&staging)
    }

    fn sync_parent(&self) -> std::io::Result<()> {
        let dir = open_at(
            Some(&self.parent),
            &CString::new(".").expect("no NUL"),
            libc::O_RDONLY | libc::O_DIRECTORY,
        )?;
        std::fs::File::from(dir).sync_all()
    }
}

impl Target for SqliteTarget {
    fn describe(&self) -> String {
        self.path.display().to_string()
    }

    fn check_apart_from(&self, protected: &[(String, PathBuf)]) -> Result<(), String> {
        let shown = self.path.display();
        let chain = identity_chain_at(&self.parent, &self.name)
            .map_err(|e| format!("cannot check where {shown} is: {e}"))?;
        for (what, path) in protected {
            let other = directory::identity_chain(path)
                .map_err(|e| format!("cannot check where {} is: {e}", path.display()))?;
            if directory::overlaps(&chain, &other) {
                return Err(format!(
                    "{shown} is or is inside {what} ({}); a restore there would replace it, so nothing was restored. Give the sandbox a database file of its own",
                    path.display()
                ));
            }
        }
        Ok(())
    }

    fn stage(&self, restore_key: &str) -> Result<RestoreInto, String> {
        let file = self
            .create_staging(restore_key)
            .map_err(|e| format!("preparing the staging file: {e}"))?;
        Ok(RestoreInto::Stream {
            name: FILE_IN_SNAPSHOT.to_string(),
            sink: Box::new(file),
        })
    }

    fn prepare(&self, restore_key: &str) -> Result<(), String> {
        let staging = self.staging_path(restore_key);
        let fd = open_at(
            Some(&self.parent),
            &self.staging_name(restore_key),
            libc::O_RDWR | libc::O_NOFOLLOW,
        )
        .map_err(|e| format!("{}: {e}", staging.display()))?;
        let file = std::fs::File::from(fd);
        let meta = || -> std::io::Result<()> {
            use std::os::unix::fs::PermissionsExt;
            file.set_permissions(std::fs::Permissions::from_mode(self.entry.mode & 0o7777))?;
            match std::os::unix::fs::fchown(&file, Some(self.entry.uid), Some(self.entry.gid)) {
                // Not root: keeping our own ownership is the best possible.
                Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {}
                other => other?,
            }
            file.sync_all()
        };
        meta().map_err(|e| format!("preparing the restored file {}: {e}", staging.display()))?;
        crate::heartbeat::during(LONGEST, || integrity_check(&staging))?;
        // The check leaves the file as it was; what SQLite kept beside it goes.
        for suffix in COMPANIONS {
            let _ = std::fs::remove_file(companion(&staging, suffix));
        }
        Ok(())
    }

    fn commit(&self, restore_key: &str) -> Result<(), String> {
        let now = self.check()?;
        if now.id != self.entry.id {
            return Err(format!(
                "{} was replaced by another file during the restore",
                self.path.display()
            ));
        }
        self.refuse_if_in_use()?;
        self.fold_leftover_logs()?;
        crate::failpoint!("sqlite.logs-folded");
        let staging = self.staging_name(restore_key);
        let fd = self.parent.as_raw_fd();
        // SAFETY: a valid fd and NUL-terminated names, both in that folder.
        if unsafe { libc::renameat(fd, staging.as_ptr(), fd, self.name.as_ptr()) } != 0 {
            return Err(format!(
                "renaming the restored file over {}: {}",
                self.path.display(),
                std::io::Error::last_os_error()
            ));
        }
        crate::failpoint!("sqlite.renamed-unsynced");
        Ok(())
    }

    fn finish(&self, _restore_key: &str) -> Result<(), String> {
        let shown = self.path.display();
        // Only a process that opened the old database during the swap left these.
        self.remove_companions().map_err(|e| {
            format!("the restored database is in place, but its old logs could not be removed ({e}); remove {shown}-wal and {shown}-journal before opening it")
        })?;
        self.sync_parent().map_err(|e| {
            format!("the restored database is in place, but syncing its folder failed ({e})")
        })
    }

    fn discard(&self, restore_key: &str) {
        if let Err(e) = self.discard_staging(restore_key) {
            tracing::warn!(
                "the staging file {} could not be removed: {e}",
                self.staging_path(restore_key).display()
            );
        }
    }
}

/// A restore drill's check: `PRAGMA integrity_check` on the restored copy, opened read-only.
fn drill_integrity_check(db: &Path) -> Result<String, String> {
    let c = Connection::open_with_flags(
        db,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| format!("the restored database {} does not open: {e}", db.display()))?;
    let mut stmt = c
        .prepare("PRAGMA integrity_check")
        .map_err(|e| format!("integrity_check cannot run: {e}"))?;
    let rows: Vec<String> = stmt
        .query_map([], |r| r.get::<_, String>(0))
        .and_then(|rows| rows.collect())
        .map_err(|e| format!("integrity_check failed: {e}"))?;
    match rows.as_slice() {
        [ok] if ok == "ok" => Ok("SQLite integrity_check ok".into()),
        problems => Err(format!(
            "SQLite integrity_check found {} problem(s): {}",
            problems.len(),
            problems
                .iter()
                .take(5)
                .cloned()
                .collect::<Vec<_>>()
                .join("; ")
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn db_with_rows(path: &Path, rows: i64) {
        let mut c = Connection::open(path).unwrap();
        let tx = c.transaction().unwrap();
        tx.execute_batch("CREATE TABLE IF NOT EXISTS t(n INTEGER)")
            .unwrap();
        for n in 0..rows {
            tx.execute("INSERT INTO t VALUES (?1)", [n]).unwrap();
        }
        tx.commit().unwrap();
    }

    fn rows(path: &Path) -> i64 {
        Connection::open(path)
            .unwrap()
            .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .unwrap()
    }

    #[test]
    fn provision_creates_a_database_and_adopts_one() {
        let tmp = tempfile::tempdir().unwrap();
        let db = tmp.path().join("new/app.db");
        assert_eq!(provision(&db).unwrap(), "created");
        let bytes = std::fs::read(&db).unwrap();
        assert!(
            bytes.starts_with(HEADER),
            "a real database, not an empty file"
        );
        assert!(integrity_check(&db).is_ok());
        db_with_rows(&db, 3);
        assert_eq!(provision(&db).unwrap(), "adopted");
        assert_eq!(rows(&db), 3, "adopting changes nothing");
    }

    #[test]
    fn provision_refuses_folders_links_and_other_files() {
        let tmp = tempfile::tempdir().unwrap();
        let e = provision(tmp.path()).unwrap_err();
        assert!(e.contains("is a folder"), "{e}");
        let db = tmp.path().join("app.db");
        provision(&db).unwrap();
        let link = tmp.path().join("link.db");
        std::os::unix::fs::symlink(&db, &link).unwrap();
        let e = provision(&link).unwrap_err();
        assert!(e.contains("symbolic link"), "{e}");
        let text = tmp.path().join("notes.txt");
        std::fs::write(&text, "not a database").unwrap();
        let e = provision(&text).unwrap_err();
        assert!(e.contains("not a SQLite database"), "{e}");
        assert_eq!(std::fs::read_to_string(&text).unwrap(), "not a database");
    }

    /// What [`Sqlite::backup_source`] gives the engine for `db`, read into memory: the stream
    /// of a WAL database, the copy of a rollback-mode one (which `backup_finished` removes).
    fn backed_up(db: &Path) -> (Vec<u8>, &'static str) {
        let source = Source::Sqlite {
            path: db.to_path_buf(),
        };
        match Sqlite.backup_source(&source, "app").unwrap() {
            BackupSource::Written(w) => {
                assert_eq!(w.name, FILE_IN_SNAPSHOT);
                let mut out = Vec::new();
                (w.write)(&mut out).unwrap();
                (out, "stream")
            }
            BackupSource::Tree(folder) => {
                assert_eq!(folder, copy_folder(db));
                let names: Vec<_> = std::fs::read_dir(&folder)
                    .unwrap()
                    .map(|e| e.unwrap().file_name())
                    .collect();
                assert_eq!(names, [FILE_IN_SNAPSHOT], "only the copy is in the folder");
                let bytes = std::fs::read(folder.join(FILE_IN_SNAPSHOT)).unwrap();
                Sqlite.backup_finished(&source, "app");
                assert!(!folder.exists(), "the copy is removed once stored");
                (bytes, "copy")
            }
            other => panic!("{other:?}"),
        }
    }

    fn streamed(db: &Path) -> Vec<u8> {
        let (bytes, how) = backed_up(db);
        assert_eq!(how, "stream", "a WAL database is streamed");
        bytes
    }

    /// Without `SQLITE_ENABLE_DBPAGE_VTAB` (`.cargo/config.toml`) there is no such table, and
    /// no SQLite backup works.
    #[test]
    fn the_bundled_sqlite_has_sqlite_dbpage() {
        let c = Connection::open_in_memory().unwrap();
        c.execute_batch("CREATE TABLE t(x); INSERT INTO t VALUES (1)")
            .unwrap();
        let pages: i64 = c
            .query_row("SELECT count(*) FROM sqlite_dbpage", [], |r| r.get(0))
            .expect("the bundled SQLite is built with SQLITE_ENABLE_DBPAGE_VTAB");
        assert_eq!(pages, 2);
    }

    /// A rollback-journal database is copied beside itself first, so that writers wait for
    /// the local copy only, not for the whole backup.
    #[test]
    fn a_rollback_mode_database_is_copied_beside_it_and_the_copy_removed() {
        let tmp = tempfile::tempdir().unwrap();
        let db = tmp.path().join("app.db");
        db_with_rows(&db, 5);
        Connection::open(&db)
            .unwrap()
            .execute_batch("CREATE TABLE big(x); WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 2000) INSERT INTO big SELECT randomblob(3000) FROM n;")
            .unwrap();
        let file = std::fs::read(&db).unwrap();
        assert!(file.len() > 6 << 20);
        let (bytes, how) = backed_up(&db);
        assert_eq!(how, "copy");
        assert!(
            bytes == file,
            "{} bytes copied, {} in the file",
            bytes.len(),
            file.len()
        );
        assert_eq!(
            write_pages(&db, &mut std::io::sink()).unwrap(),
            file.len() as u64
        );
        assert_eq!(
            std::fs::read(&db).unwrap(),
            file,
            "the database is not written to"
        );
    }

    /// Pages whose latest version is still in the `-wal` are read from there: the stream is
    /// what the file becomes once the log is checkpointed into it.
    #[test]
    fn the_stream_reads_the_pages_a_wal_holds() {
        let tmp = tempfile::tempdir().unwrap();
        let db = tmp.path().join("app.db");
        db_with_rows(&db, 5);
        let c = Connection::open(&db).unwrap();
        c.pragma_update(None, "journal_mode", "WAL").unwrap();
        c.pragma_update(None, "wal_autocheckpoint", 0).unwrap();
        c.execute_batch("CREATE TABLE big(x); WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 2000) INSERT INTO big SELECT randomblob(3000) FROM n; DELETE FROM t WHERE n < 2;")
            .unwrap();
        assert!(std::fs::metadata(companion(&db, "-wal")).unwrap().len() > 6 << 20);
        let bytes = streamed(&db);
        c.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)").unwrap();
        let file = std::fs::read(&db).unwrap();
        assert!(
            bytes == file,
            "{} bytes streamed, {} in the file",
            bytes.len(),
            file.len()
        );
        let copy = tmp.path().join("copy.db");
        std::fs::write(&copy, &bytes).unwrap();
        assert!(integrity_check(&copy).is_ok());
        assert_eq!(rows(&copy), 3);
    }

    /// In rollback mode a writer's commit holds the lock: the read waits for it (as the
    /// backup API's copy did) and then sees the commit whole.
    #[test]
    fn the_read_waits_for_a_writer_s_lock() {
        let tmp = tempfile::tempdir().unwrap();
        let db = tmp.path().join("app.db");
        db_with_rows(&db, 1);
        let writer = Connection::open(&db).unwrap();
        writer
            .execute_batch("BEGIN EXCLUSIVE; INSERT INTO t VALUES (1), (2);")
            .unwrap();
        let started = Instant::now();
        let reading = {
            let db = db.clone();
            std::thread::spawn(move || {
                let mut out = Vec::new();
                write_pages(&db, &mut out).map(|_| out)
            })
        };
        std::thread::sleep(Duration::from_millis(1500));
        assert!(!reading.is_finished(), "the read did not wait for the lock");
        writer.execute_batch("COMMIT").unwrap();
        let bytes = reading.join().unwrap().unwrap();
        assert!(started.elapsed() >= Duration::from_millis(1500));
        let copy = tmp.path().join("copy.db");
        std::fs::write(&copy, &bytes).unwrap();
        assert_eq!(rows(&copy), 3);
    }

    #[test]
    fn no_copy_is_made_of_a_wal_database_and_an_older_version_s_copy_is_removed() {
        let tmp = tempfile::tempdir().unwrap();
        let db = tmp.path().join("app.db");
        db_with_rows(&db, 5);
        // The application has the database open, as in production (its `-wal` and `-shm`
        // exist; a reader of a WAL database would make them otherwise).
        let app = Connection::open(&db).unwrap();
        app.pragma_update(None, "journal_mode", "WAL").unwrap();
        app.execute_batch("INSERT INTO t VALUES (5)").unwrap();
        assert!(in_wal_mode(&db).unwrap());
        let source = Source::Sqlite { path: db.clone() };
        let listing = || {
            let mut names: Vec<_> = std::fs::read_dir(tmp.path())
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            names.sort();
            names
        };
        let before = listing();
        assert_eq!(before.len(), 3, "{before:?}");
        let copy = tmp.path().join("copy.db");
        std::fs::write(&copy, streamed(&db)).unwrap();
        assert_eq!(rows(&copy), 6);
        std::fs::remove_file(&copy).unwrap();
        assert_eq!(before, listing(), "nothing made beside the database");
        drop(app);
        // The copy folder an older version made (left by a crash, or by the upgrade itself)
        // goes after the next backup...
        let folder = copy_folder(&db);
        assert_eq!(folder, tmp.path().join(".app.db.backplan-backup"));
        std::fs::create_dir(&folder).unwrap();
        std::fs::write(folder.join(FILE_IN_SNAPSHOT), "old copy").unwrap();
        Sqlite.backup_finished(&source, "app");
        assert!(!folder.exists());
        // ...and with a restore's staging file at start-up, by the leftovers sweep.
        std::fs::create_dir(&folder).unwrap();
        let staging = directory::staging_path(&db, "r1");
        std::fs::write(&staging, "").unwrap();
        std::fs::write(companion(&staging, "-wal"), "").unwrap();
        let lines = Sqlite.discard_leftovers(&source);
        assert_eq!(lines.len(), 3, "{lines:?}");
        assert!(!folder.exists());
        assert!(!staging.exists());
        assert!(!companion(&staging, "-wal").exists());
        assert_eq!(rows(&db), 6);
    }

    #[test]
    fn sources_that_are_not_databases_are_named() {
        let tmp = tempfile::tempdir().unwrap();
        let e = check_source(tmp.path(), "app").unwrap_err();
        assert!(e.contains("is a folder"), "{e}");
        let e = check_source(&tmp.path().join("gone.db"), "app").unwrap_err();
        assert!(e.contains("does not exist"), "{e}");
        std::fs::write(tmp.path().join("x.db"), "hello, world, not sqlite").unwrap();
        let e = check_source(&tmp.path().join("x.db"), "app").unwrap_err();
        assert!(e.contains("not a SQLite database"), "{e}");
    }

    /// Writes `src` into the staging file of `t`, as the engine would.
    fn stage_copy_of(t: &SqliteTarget, key: &str, src: &Path) {
        let RestoreInto::Stream { mut sink, name } = t.stage(key).unwrap() else {
            panic!("a stream")
        };
        assert_eq!(name, FILE_IN_SNAPSHOT);
        sink.write_all(&std::fs::read(src).unwrap()).unwrap();
    }

    use std::io::Write;

    #[test]
    fn restore_renames_a_checked_copy_over_the_database_and_removes_stale_logs() {
        let tmp = tempfile::tempdir().unwrap();
        let db = tmp.path().join("sandbox.db");
        db_with_rows(&db, 2);
        let new = tmp.path().join("new.db");
        db_with_rows(&new, 7);
        let t = SqliteTarget::open(&db).unwrap();
        stage_copy_of(&t, "r1", &new);
        t.prepare("r1").unwrap();
        assert_eq!(rows(&db), 2, "untouched before the commit");
        // An empty -shm left by a stopped process: removed, never paired with the new file.
        std::fs::write(companion(&db, "-shm"), "").unwrap();
        t.commit("r1").unwrap();
        t.finish("r1").unwrap();
        assert_eq!(rows(&db), 7);
        assert!(!companion(&db, "-shm").exists());
        assert!(directory::leftover_staging(&db).is_empty());
    }

    /// The `sqlite3` shell on `db` in another process, its stdin to write SQL to.
    fn sqlite3_shell(db: &Path) -> (std::process::Child, std::process::ChildStdin) {
        let mut child = std::process::Command::new("sqlite3")
            .arg(db)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("the sqlite3 shell is installed");
        let stdin = child.stdin.take().unwrap();
        (child, stdin)
    }

    #[test]
    fn a_log_left_by_a_killed_writer_is_never_paired_with_the_restored_file() {
        let tmp = tempfile::tempdir().unwrap();
        let db = tmp.path().join("sandbox.db");
        db_with_rows(&db, 1);
        // A WAL writer killed with its commits still in the -wal (never checkpointed).
        let (mut child, mut stdin) = sqlite3_shell(&db);
        writeln!(
            stdin,
            "PRAGMA journal_mode=WAL; PRAGMA wal_autocheckpoint=0; CREATE TABLE big(x); INSERT INTO big SELECT randomblob(1000) FROM generate_series(1, 500); SELECT 'done';"
        )
        .unwrap();
        let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        while !line.contains("done") {
            line.clear();
            std::io::BufRead::read_line(&mut out, &mut line).unwrap();
        }
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(std::fs::metadata(companion(&db, "-wal")).unwrap().len() > 0);

        let new = tmp.path().join("new.db");
        db_with_rows(&new, 7);
        let t = SqliteTarget::open(&db).unwrap();
        stage_copy_of(&t, "r1", &new);
        t.prepare("r1").unwrap();
        t.commit("r1").unwrap();
        // A crash right after the rename (before `finish`) must find no old log either.
        for suffix in COMPANIONS {
            assert!(!companion(&db, suffix).exists(), "{suffix} left beside it");
        }
        assert!(integrity_check(&db).is_ok());
        t.finish("r1").unwrap();
        assert_eq!(rows(&db), 7);
        let c = Connection::open(&db).unwrap();
        let big: Result<i64, _> = c.query_row("SELECT count(*) FROM big", [], |r| r.get(0));
        assert!(
            big.is_err(),
            "the old database's log was replayed into the new one"
        );
    }

    #[test]
    fn a_damaged_copy_fails_the_check_and_leaves_the_target_as_it_was() {
        let tmp = tempfile::tempdir().unwrap();
        let db = tmp.path().join("sandbox.db");
        db_with_rows(&db, 2);
        let bad = tmp.path().join("bad.db");
        db_with_rows(&bad, 2000);
        let mut bytes = std::fs::read(&bad).unwrap();
        let len = bytes.len();
        bytes[len - 3000..len - 1000].fill(0xa5);
        std::fs::write(&bad, bytes).unwrap();
        let t = SqliteTarget::open(&db).unwrap();
        std::fs::write(t.staging_path("r1"), "").unwrap(); // a leftover of an earlier try
        stage_copy_of(&t, "r1", &bad);
        let e = t.prepare("r1").unwrap_err();
        assert!(e.contains("integrity"), "{e}");
        t.discard("r1");
        assert_eq!(rows(&db), 2);
        assert!(directory::leftover_staging(&db).is_empty());
    }

    #[test]
    fn a_database_in_use_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let db = tmp.path().join("sandbox.db");
        db_with_rows(&db, 1);
        // A WAL connection in another process holds the database open.
        let (mut child, mut stdin) = sqlite3_shell(&db);
        writeln!(stdin, "PRAGMA journal_mode=WAL; SELECT count(*) FROM t;").unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !companion(&db, "-shm").exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let e = SqliteTarget::open(&db).err().expect("refused");
        assert!(e.contains("in use by another process"), "{e}");
        drop(stdin);
        child.wait().unwrap();
        assert!(SqliteTarget::open(&db).is_ok());
    }

    #[test]
    fn a_target_reaching_another_store_is_refused_by_identity() {
        let tmp = tempfile::tempdir().unwrap();
        let prod = tmp.path().join("srv/prod");
        std::fs::create_dir_all(&prod).unwrap();
        let inside = prod.join("sandbox.db");
        db_with_rows(&inside, 1);
        std::os::unix::fs::symlink(tmp.path().join("srv"), tmp.path().join("alias")).unwrap();
        let protected = [("the data of instance `prod`".to_string(), prod.clone())];
        // Inside another instance's folder, however it is spelt.
        for spelling in [
            "srv/prod/sandbox.db",
            "alias/prod/sandbox.db",
            "srv/../alias/prod/sandbox.db",
        ] {
            let t = SqliteTarget::open(&tmp.path().join(spelling)).unwrap();
            let e = t.check_apart_from(&protected).unwrap_err();
            assert!(e.contains("instance `prod`"), "{spelling}: {e}");
        }
        // The same database file as another instance (a hard link is the same file too).
        let other = tmp.path().join("other.db");
        std::fs::hard_link(&inside, &other).unwrap();
        let t = SqliteTarget::open(&other).unwrap();
        let same = [("the data of instance `prod-db`".to_string(), inside.clone())];
        assert!(t.check_apart_from(&same).is_err());
        // A file of its own is fine.
        let own = tmp.path().join("own.db");
        db_with_rows(&own, 1);
        let t = SqliteTarget::open(&own).unwrap();
        t.check_apart_from(&protected).unwrap();
        t.check_apart_from(&same).unwrap();
        assert_eq!(
            Sqlite.store_path(&Source::Sqlite { path: own.clone() }),
            Some(own)
        );
    }

    #[test]
    fn links_and_non_databases_are_refused_as_targets() {
        let tmp = tempfile::tempdir().unwrap();
        let db = tmp.path().join("real.db");
        db_with_rows(&db, 1);
        let link = tmp.path().join("link.db");
        std::os::unix::fs::symlink(&db, &link).unwrap();
        let e = SqliteTarget::open(&link).err().expect("refused");
        assert!(e.contains("symbolic link"), "{e}");
        std::fs::write(tmp.path().join("x.db"), "hello, world, not sqlite").unwrap();
        let e = SqliteTarget::open(&tmp.path().join("x.db"))
            .err()
            .expect("refused");
        assert!(e.contains("not a SQLite database"), "{e}");
    }
}
