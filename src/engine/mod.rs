//! The storage engine: restic-format repositories. **This is the only module that sees
//! rustic types**; the rest of the program uses the [`Engine`] trait and the plain types here.
//!
//! Guards against known hazards of rustic_core 0.13 (see `rustic.rs` for each):
//! - synchronous, and unusable from an async task (its OpenDAL backends start a runtime and
//!   panic inside another): every operation runs on a thread of its own, outside any runtime;
//!   callers in async code still use `spawn_blocking`, since the call blocks;
//! - a repository handle does not see what it just wrote: every operation opens its own;
//! - no repository locks: operations on one repository are serialised in this process (and
//!   `sled` already admits a single backplan process per state directory);
//! - panics inside the library (restore `unwrap`s I/O errors in worker threads) become
//!   [`EngineError::Panicked`], never a dead process;
//! - a snapshot id is read as a prefix (an empty one matches a snapshot): restores take full
//!   ids only;
//! - the local backend does not sync directories after renaming files into place: the
//!   repository's directories are synced before an operation is reported complete.

mod rustic;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use uuid::Uuid;

pub use crate::config::SecretSource;

pub use rustic::{RusticEngine, install_log_bridge};

/// One repository, as the engine needs it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Repo {
    /// The repository folder; for a remote repository, its name in messages and the key of
    /// its in-process lock (`azure:<account>/<container>/<prefix>`, `s3:<bucket>/<prefix>`).
    pub path: PathBuf,
    /// The file holding the repository password.
    pub password_file: PathBuf,
    /// Where the repository is when it is not the folder `path` on this host.
    pub remote: Option<Remote>,
}

/// A repository in an object store: a restic-format repository under `prefix` inside the
/// container or bucket. Credentials are read from their source at each use, never kept here.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Remote {
    Azure {
        account: String,
        container: String,
        /// Default `https://<account>.blob.core.windows.net`.
        endpoint: Option<String>,
        prefix: String,
        access_key: SecretSource,
    },
    S3 {
        bucket: String,
        /// Default `us-east-1`.
        region: Option<String>,
        /// Default AWS; requests are path-style (S3-compatible servers).
        endpoint: Option<String>,
        prefix: String,
        access_key_id: String,
        secret_access_key: SecretSource,
    },
}

impl Remote {
    /// How the repository is named in messages: `azure:<account>/<container>[/<prefix>]`,
    /// `s3:<bucket>[/<prefix>]`.
    pub fn name(&self) -> String {
        let (base, prefix) = match self {
            Remote::Azure {
                account,
                container,
                prefix,
                ..
            } => (format!("azure:{account}/{container}"), prefix),
            Remote::S3 { bucket, prefix, .. } => (format!("s3:{bucket}"), prefix),
        };
        if prefix.is_empty() {
            base
        } else {
            format!("{base}/{prefix}")
        }
    }
}

impl Repo {
    /// A repository in the folder `path` of this host.
    pub fn local(path: impl Into<PathBuf>, password_file: impl Into<PathBuf>) -> Repo {
        Repo {
            path: path.into(),
            password_file: password_file.into(),
            remote: None,
        }
    }
}

/// What a snapshot is tagged with: `backplan`, `instance=<name>`, `backup=<uuid>`, `kind=<kind>`,
/// and the rest of the backup's record (`meta`, see `catalogue`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SnapshotTags {
    pub instance: String,
    pub backup: Uuid,
    pub kind: String,
    /// More `name=value` tags: what a new host needs to rebuild the backup's record (label,
    /// notes, expiry, ...; `catalogue::snapshot_tags`). Each is one tag, commas included.
    pub meta: Vec<String>,
}

impl SnapshotTags {
    pub fn to_tags(&self) -> Vec<String> {
        let mut tags = vec![
            "backplan".to_string(),
            format!("instance={}", self.instance),
            format!("backup={}", self.backup),
            format!("kind={}", self.kind),
        ];
        tags.extend(self.meta.iter().cloned());
        tags
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct SnapshotInfo {
    /// The full snapshot id (64 hex digits).
    pub id: String,
    pub time: DateTime<Utc>,
    pub tags: Vec<String>,
    /// Bytes read from the source.
    pub bytes_read: u64,
    /// Bytes added to the repository (after deduplication and compression).
    pub bytes_added: u64,
    pub files: u64,
}

impl SnapshotInfo {
    /// The backplan backup id in the snapshot's tags, if any.
    pub fn backup_id(&self) -> Option<Uuid> {
        self.tags.iter().find_map(|t| {
            t.strip_prefix("backup=")
                .and_then(|u| Uuid::parse_str(u).ok())
        })
    }
}

/// A backup source that is a byte stream: the standard output of a producer process
/// (`pg_dump`, ...), stored in the snapshot as one file named `name`. The backup succeeds only
/// if the producer exits 0; otherwise no snapshot is kept.
#[derive(Clone, PartialEq, Eq)]
pub struct StreamSource {
    /// The program and its arguments.
    pub argv: Vec<String>,
    /// Variables added to the producer's environment (a password for libpq, say).
    pub env: Vec<(String, String)>,
    /// The file name inside the snapshot.
    pub name: String,
}

/// The environment's values are secrets (a password): never shown.
impl std::fmt::Debug for StreamSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let env: Vec<String> = self.env.iter().map(|(k, _)| format!("{k}=***")).collect();
        f.debug_struct("StreamSource")
            .field("argv", &self.argv)
            .field("env", &env)
            .field("name", &self.name)
            .finish()
    }
}

/// A backup source that is a byte stream written by code of this process (the pages of a
/// SQLite database, ...), stored in the snapshot as one file named `name`, exactly as a
/// [`StreamSource`]'s output is. `write` runs on a thread of its own while the engine chunks,
/// compresses and stores what it has written so far; the backup succeeds only if `write`
/// returns `Ok`, otherwise no snapshot is kept. `write` may be called again, for a whole new
/// stream, when the engine starts the backup over (as a process source is started again).
#[derive(Clone)]
pub struct WrittenStream {
    /// The file name inside the snapshot.
    pub name: String,
    /// What writes the stream, for messages (`SQLite /srv/app.db`).
    pub producer: String,
    /// Writes the whole stream into its argument; `Err` says why it could not.
    pub write: Arc<WriteStream>,
}

/// What writes a [`WrittenStream`]: the whole stream into its argument each time it is called.
pub type WriteStream = dyn Fn(&mut dyn std::io::Write) -> Result<(), String> + Send + Sync;

impl std::fmt::Debug for WrittenStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WrittenStream")
            .field("name", &self.name)
            .field("producer", &self.producer)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct RestoreStats {
    pub files: u64,
    pub bytes: u64,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct VerifyReport {
    /// Problems found; empty means the repository is sound.
    pub problems: Vec<String>,
    pub snapshots: usize,
    /// The packs the problems name, each with the snapshots that reference a blob in it.
    pub damaged_packs: Vec<DamagedPack>,
}

/// A pack found damaged (or missing) by a check, and the snapshots it takes data from.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DamagedPack {
    /// The pack's full id.
    pub pack: String,
    /// Full ids of the snapshots with a file, folder or tree blob in the pack.
    pub snapshots: Vec<String>,
}

/// Where progress of long operations goes (a terminal line, or log lines).
pub trait ProgressSink: Send + Sync {
    /// `total` is known once the engine has sized the work.
    fn update(&self, phase: &str, done_bytes: u64, total_bytes: Option<u64>);
}

/// A sink that drops everything.
pub struct NoProgress;
impl ProgressSink for NoProgress {
    fn update(&self, _: &str, _: u64, _: Option<u64>) {}
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("cannot read the repository password from {}: {source}", path.display())]
    Password {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("repository {}: {message}", repo.display())]
    Repository { repo: PathBuf, message: String },
    /// An object store (Azure Blob, S3) failed or refused a request.
    #[error("storage {repo}: {message}")]
    Remote { repo: String, message: String },
    /// A storage credential (account key, secret access key) could not be read.
    #[error("cannot read {what}: {message}")]
    Credential { what: String, message: String },
    #[error(
        "{op} failed inside the storage library (a panic: {message}); nothing was reported complete"
    )]
    Panicked { op: &'static str, message: String },
    #[error("{op}: {source}")]
    Io {
        op: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("no snapshot {id} in repository {}", repo.display())]
    NoSnapshot { repo: PathBuf, id: String },
    #[error("restore target {} must be an empty or absent folder", path.display())]
    DestinationNotEmpty { path: PathBuf },
    /// Items of the source could not be read: the snapshot was incomplete and is discarded.
    /// `items` holds the first [`crate::records::Unreadable::MAX_LISTED`] of `total`.
    #[error(
        "{total} item(s) of {} could not be read, so the backup is incomplete and was discarded: {}",
        folder.display(),
        first_items(items, *total)
    )]
    Unreadable {
        folder: PathBuf,
        total: usize,
        items: Vec<String>,
    },
    /// The producer of a stream backup failed; no snapshot was kept.
    #[error("{program} failed, so no backup was kept: {message}")]
    Producer { program: String, message: String },
}

/// The first three of a list of paths, and how many more (an error message stays one line;
/// the backup's record lists more).
fn first_items(items: &[String], total: usize) -> String {
    let shown: Vec<&str> = items.iter().take(3).map(String::as_str).collect();
    let mut text = shown.join(", ");
    if total > shown.len() {
        text += &format!(
            " and {} more (`backplan show` lists them)",
            total - shown.len()
        );
    }
    text
}

/// The engine's operations. Every call blocks; call from a blocking thread.
pub trait Engine: Send + Sync {
    /// Creates the repository if it does not exist yet (and the key file, when `create_key`
    /// is set and the file is missing). Idempotent.
    fn ensure(&self, repo: &Repo, create_key: bool) -> Result<(), EngineError>;
    /// The id of the repository at `repo.path` (the `id` in its `config` file), read with its
    /// key: `None` when there is no repository there, an error when the key does not open it.
    /// Creates nothing.
    fn repository_id(&self, repo: &Repo) -> Result<Option<String>, EngineError>;
    /// Backs up the tree under `source` (its contents, relative to it), leaving out what
    /// matches an `exclude` pattern (gitignore-style: a pattern with a `/` is relative to
    /// `source`, one without matches a name at any depth).
    fn backup_dir(
        &self,
        repo: &Repo,
        source: &Path,
        exclude: &[String],
        tags: &SnapshotTags,
        progress: Arc<dyn ProgressSink>,
    ) -> Result<SnapshotInfo, EngineError>;
    /// Backs up the standard output of a producer process as one file (no parent snapshot;
    /// nothing kept unless the producer exits 0).
    fn backup_stream(
        &self,
        repo: &Repo,
        source: &StreamSource,
        tags: &SnapshotTags,
        progress: Arc<dyn ProgressSink>,
    ) -> Result<SnapshotInfo, EngineError>;
    /// Backs up what `source.write` writes (on a thread of its own) as one file, as
    /// [`Engine::backup_stream`] does a process's output: no parent snapshot; nothing kept
    /// unless `write` returns `Ok`.
    fn backup_written(
        &self,
        repo: &Repo,
        source: &WrittenStream,
        tags: &SnapshotTags,
        progress: Arc<dyn ProgressSink>,
    ) -> Result<SnapshotInfo, EngineError>;
    /// Writes the file `name` of a stream backup's snapshot into `sink`; returns the bytes
    /// written.
    fn restore_stream(
        &self,
        repo: &Repo,
        snapshot: &str,
        name: &str,
        sink: &mut (dyn std::io::Write + Send),
    ) -> Result<u64, EngineError>;
    /// Snapshots tagged with backplan backup `id` (normally one).
    fn find(&self, repo: &Repo, backup: Uuid) -> Result<Vec<SnapshotInfo>, EngineError>;
    fn list(&self, repo: &Repo) -> Result<Vec<SnapshotInfo>, EngineError>;
    /// Restores a snapshot's tree into `dest`, which must be absent or empty. `snapshot` is a
    /// full id (64 hex digits), never a prefix.
    fn restore_dir(
        &self,
        repo: &Repo,
        snapshot: &str,
        dest: &Path,
        progress: Arc<dyn ProgressSink>,
    ) -> Result<RestoreStats, EngineError>;
    /// Rewrites a snapshot's metadata as `restic tag` does, under one exclusive lock: a new
    /// snapshot file with the same tree, time and paths carrying exactly `tags` (its
    /// `original` names the first one); then `recorded` with the new full id (the caller
    /// records it); then the old file is forgotten. Returns the new id. A snapshot that
    /// already carries exactly `tags` is left as it is (`recorded` gets its own id). When
    /// `recorded` fails, the old file stays beside the new one (an error is returned).
    fn retag(
        &self,
        repo: &Repo,
        snapshot: &str,
        tags: &SnapshotTags,
        recorded: &mut (dyn FnMut(&str) -> Result<(), String> + Send),
    ) -> Result<String, EngineError>;
    /// Removes snapshots (the data goes at the next [`Engine::prune`]).
    fn forget(&self, repo: &Repo, snapshots: &[String]) -> Result<(), EngineError>;
    /// Deletes data no snapshot uses any more, now.
    fn prune(&self, repo: &Repo) -> Result<(), EngineError>;
    /// Checks the structure, and reads back `read_share` percent of the data (0 to 100).
    fn verify(&self, repo: &Repo, read_share: f64) -> Result<VerifyReport, EngineError>;
    /// Tries the storage without touching the repository: credentials, the container or
    /// bucket, and a write / read / delete round trip of a test object beside it.
    fn check_storage(&self, repo: &Repo) -> Result<(), EngineError>;
    /// Every entry of a snapshot's tree (reads trees only, no file contents). `snapshot` is a
    /// full id.
    fn listing(&self, repo: &Repo, snapshot: &str) -> Result<Vec<TreeEntry>, EngineError>;
}

/// One entry of a snapshot's tree: its path relative to the snapshot's root, its type, and
/// for a file its size.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct TreeEntry {
    pub path: PathBuf,
    pub kind: EntryKind,
    pub size: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum EntryKind {
    File,
    Dir,
    Symlink,
    /// Devices, FIFOs, sockets.
    Other,
}

/// The engine used by the program.
pub fn default_engine() -> Arc<dyn Engine> {
    Arc::new(RusticEngine::new())
}
