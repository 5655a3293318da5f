//! [`Engine`] on rustic_core 0.13 with its local backend. Nothing outside this file names a
//! rustic type.

use std::collections::HashMap;
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Once};

use chrono::{DateTime, Utc};
use rustic_backend::BackendOptions;
use rustic_core::repofile::{MasterKey, SnapshotFile};
use rustic_core::{
    BackupOptions, CheckOptions, ConfigOptions, Credentials, Excludes, KeyOptions, LimitOption,
    LocalDestination, LsOptions, OpenStatus, ParentOptions, PathList, Progress, ProgressBars,
    ProgressType, PruneOptions, ReadSubsetOption, Repository, RepositoryOptions, RestoreOptions,
    RusticError, RusticProgress, SnapshotGroupCriterion, SnapshotOptions,
};
use uuid::Uuid;

use super::*;

mod flush;
mod gate;
mod kept_key;
mod listing;
mod lock;
mod remote;
mod restore;
mod stream;

pub struct RusticEngine {
    /// Master keys of repositories opened before, by (path, password): opening with the
    /// password costs a scrypt derivation (0.4 s, 128 MiB); with the master key, microseconds.
    /// This is what makes "a fresh handle per operation" affordable.
    keys: Mutex<HashMap<(PathBuf, String), MasterKey>>,
    /// One lock per repository: rustic takes no repository locks, so writers are serialised.
    locks: Mutex<HashMap<PathBuf, Arc<Mutex<()>>>>,
    /// Key files already reported as readable by others (once per process: at every start).
    loose_keys: Mutex<std::collections::HashSet<PathBuf>>,
    /// The folder of the keys backplan generates: their master keys are also kept on disk
    /// (see [`RusticEngine::keep_master_keys_of`]).
    kept_keys: Option<PathBuf>,
}

impl Default for RusticEngine {
    fn default() -> Self {
        Self::new()
    }
}

impl RusticEngine {
    pub fn new() -> Self {
        install_log_bridge();
        RusticEngine {
            keys: Mutex::new(HashMap::new()),
            locks: Mutex::new(HashMap::new()),
            loose_keys: Mutex::new(std::collections::HashSet::new()),
            kept_keys: None,
        }
    }

    /// Keeps the master key of every repository opened with a key file directly in `dir` (the
    /// folder of the keys backplan generates, in its state folder) in a file beside the key,
    /// `NAME.master` (0600), so that a one-shot command skips the scrypt derivation (0.3–0.4 s
    /// and 64 MiB per run). That file grants what the key file beside it grants; it is
    /// used only while it names the same password (a SHA-256 of it) and opens the repository.
    /// Keys given by `password_file` elsewhere (credentials) are never copied to disk.
    pub fn keep_master_keys_of(mut self, dir: &Path) -> Self {
        self.kept_keys = Some(dir.to_path_buf());
        self
    }

    /// Where the master key of `password_file` is kept on disk, when it is.
    fn kept_key_path(&self, password_file: &Path) -> Option<PathBuf> {
        let dir = self.kept_keys.as_deref()?;
        if password_file.parent() != Some(dir) {
            return None;
        }
        let mut name = password_file.file_name()?.to_os_string();
        name.push(".master");
        Some(dir.join(name))
    }

    /// The repository password (see [`read_password`]), with a warning, once per process, when
    /// the key file is readable by group or others.
    fn password(&self, repo: &Repo) -> Result<Password, EngineError> {
        let password = read_password(&repo.password_file)?;
        if password.mode & 0o077 != 0
            && self
                .loose_keys
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(repo.password_file.clone())
        {
            tracing::warn!(
                "the repository key {} can be read by group or others (mode {:o}); run `chmod 600 {}`",
                repo.password_file.display(),
                password.mode & 0o777,
                repo.password_file.display()
            );
        }
        Ok(password)
    }

    /// The lock that serialises operations on `repo` (exposed for tests).
    pub fn repository_lock(&self, repo: &Repo) -> Arc<Mutex<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
        locks.entry(repo.path.clone()).or_default().clone()
    }

    /// Runs one operation with every guard: alone on its repository, on a thread of its own
    /// (outside any async runtime: rustic's OpenDAL backends start a runtime of their own and
    /// panic inside another), and with a panic turned into an error.
    fn guarded<T: Send>(
        &self,
        repo: &Repo,
        op: &'static str,
        mut f: impl FnMut() -> Result<T, EngineError> + Send,
    ) -> Result<T, EngineError> {
        let lock = self.repository_lock(repo);
        // Waiting for the lock is live work (the watchdog's heartbeat), not a hang.
        let _held = loop {
            match lock.try_lock() {
                Ok(held) => break held,
                Err(std::sync::TryLockError::Poisoned(p)) => break p.into_inner(),
                Err(std::sync::TryLockError::WouldBlock) => {
                    crate::heartbeat::beat();
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
            }
        };
        std::thread::scope(|s| {
            let worker = std::thread::Builder::new()
                .name(format!("engine {op}"))
                .spawn_scoped(s, || run_again_after_late_conflicts(repo, &mut f))
                .map_err(|source| EngineError::Io {
                    op: "starting an engine thread",
                    source,
                })?;
            match worker.join() {
                Ok(result) => result,
                Err(panic) => Err(EngineError::Panicked {
                    op,
                    message: panic_message(&panic),
                }),
            }
        })
    }

    /// A fresh handle on the repository (never reused across operations: a handle does not
    /// see the blobs it wrote itself, so a second backup on it stores everything again).
    fn open(
        &self,
        repo: &Repo,
        progress: Arc<dyn ProgressSink>,
    ) -> Result<Repository<OpenStatus>, EngineError> {
        self.open_on(repo, handle(repo, progress)?)
    }

    /// [`RusticEngine::open`] on a handle made by the caller.
    fn open_on(
        &self,
        repo: &Repo,
        unopened: Repository<()>,
    ) -> Result<Repository<OpenStatus>, EngineError> {
        let Password {
            key: password,
            legacy,
            ..
        } = self.password(repo)?;
        let cache_key = (repo.path.clone(), password.clone());
        let known = self
            .keys
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&cache_key)
            .cloned();
        let kept = self.kept_key_path(&repo.password_file);
        let known = known.or_else(|| kept.as_deref().and_then(|k| kept_key::read(k, &password)));
        if let Some(key) = known
            && let Ok(open) = unopened.clone().open(&Credentials::Masterkey(key))
        {
            self.keys
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(cache_key, open.key());
            return Ok(open);
        }
        let (open, keep) = match unopened.clone().open(&Credentials::password(&password)) {
            Ok(open) => (open, true),
            // A repository made when backplan kept the key's surrounding spaces.
            Err(e) => match legacy.and_then(|old| unopened.open(&Credentials::password(&old)).ok())
            {
                Some(open) => {
                    tracing::warn!(
                        "repository {} opens only with the key of {} read with its surrounding spaces, as backplan did before; restic reads it without them: add a key restic can use (`restic key add`) and write it to that file",
                        repo.path.display(),
                        repo.password_file.display()
                    );
                    // Not kept on disk: the warning is said at every run until fixed.
                    (open, false)
                }
                None => return Err(err(repo)(e)),
            },
        };
        if let Some(kept) = kept.filter(|_| keep) {
            kept_key::write(&kept, &password, &open.key());
        }
        self.keys
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(cache_key, open.key());
        Ok(open)
    }
}

impl RusticEngine {
    /// A fresh handle on the repository, with restic's lock taken for the operation (see
    /// `rustic/lock.rs`): held, and refreshed, until the returned guard is dropped.
    fn open_locked(
        &self,
        repo: &Repo,
        progress: Arc<dyn ProgressSink>,
        mode: lock::Mode,
    ) -> Result<(Repository<OpenStatus>, lock::RepoLock), EngineError> {
        // Writes wait for the lock's second look; none is possible before the lock is taken.
        let gate = Arc::new(gate::Gate::default());
        let open = self.open_on(repo, handle_gated(repo, progress, Some(gate.clone()))?)?;
        let key = open.key();
        let sealer =
            lock::Sealer::new(&key.encrypt, &key.mac.k, &key.mac.r).map_err(|message| {
                EngineError::Repository {
                    repo: repo.path.clone(),
                    message,
                }
            })?;
        let files: Arc<dyn lock::LockFiles> = match &repo.remote {
            Some(remote) => remote::lock_files(remote)?,
            None => Arc::new(lock::LocalLocks(repo.path.join("locks"))),
        };
        let mut held = lock::acquire(
            files,
            sealer,
            mode,
            &repo.path,
            lock::wait_left(),
            lock::REFRESH,
        )?;
        let _ = gate.settle.set(held.settle());
        held.gate = Some(gate);
        lock::hold_for_tests(mode);
        Ok((open, held))
    }
}

/// The second look of `lock` (`lock.rs`), for an operation about to write outside the
/// repository (a restore's files) or to report what it read: Err names the conflicting lock
/// (the operation is then run again, see [`run_again_after_late_conflicts`]).
fn second_look(lock: &lock::RepoLock, repo: &Repo) -> Result<(), EngineError> {
    lock.settle()
        .pass()
        .map_err(|holder| EngineError::Repository {
            repo: repo.path.clone(),
            message: format!("the repository is locked by {holder}"),
        })
}

/// Runs an operation (on its engine thread) and, when the second look of a lock it took found
/// a conflicting lock (it then wrote nothing to the repository: `gate.rs`), runs it again:
/// its next lock waits for that holder within what is left of the wait bound, as a conflict
/// found at the first look does.
fn run_again_after_late_conflicts<T>(
    repo: &Repo,
    f: &mut impl FnMut() -> Result<T, EngineError>,
) -> Result<T, EngineError> {
    let mut again = false;
    loop {
        lock::OperationLocks::start(again);
        let result = f();
        let Some(holder) = lock::OperationLocks::conflict() else {
            return result;
        };
        if lock::wait_left().is_zero() {
            return Err(EngineError::Repository {
                repo: repo.path.clone(),
                message: format!(
                    "the repository is locked by {holder}, which came while this operation started (nothing was written); waited {}s",
                    lock::wait_bound().as_secs()
                ),
            });
        }
        tracing::info!(
            "repository {}: {holder} came while this operation started; nothing was written, it starts again once that lock is gone",
            repo.path.display()
        );
        again = true;
    }
}

fn handle(repo: &Repo, progress: Arc<dyn ProgressSink>) -> Result<Repository<()>, EngineError> {
    handle_gated(repo, progress, None)
}

/// [`handle`]; with a gate, every write and remove of the handle waits for it (`gate.rs`).
fn handle_gated(
    repo: &Repo,
    progress: Arc<dyn ProgressSink>,
    gate: Option<Arc<gate::Gate>>,
) -> Result<Repository<()>, EngineError> {
    let mut backends = match &repo.remote {
        Some(remote) => remote::backends(remote)?,
        // `local:` always: a path holding `:` would otherwise be read as a backend name.
        None => BackendOptions::default()
            .repository(format!("local:{}", repo.path.display()))
            .to_backends()
            .map_err(err(repo))?,
    };
    if let Some(gate) = gate {
        backends = rustic_core::RepositoryBackends::new(
            Arc::new(gate::Gated {
                inner: backends.repository(),
                gate,
            }),
            backends.repo_hot(),
        );
    }
    Repository::new_with_progress(
        &RepositoryOptions::default().no_cache(true),
        &backends,
        Bars(progress),
    )
    .map_err(err(repo))
}

impl Engine for RusticEngine {
    fn ensure(&self, repo: &Repo, create_key: bool) -> Result<(), EngineError> {
        self.guarded(repo, "repository set-up", || {
            let unopened = handle(repo, Arc::new(NoProgress))?;
            let exists = unopened.config_id().map_err(err(repo))?.is_some();
            if exists {
                if !repo.password_file.exists() {
                    return Err(EngineError::Repository {
                        repo: repo.path.clone(),
                        message: format!(
                            "the repository exists but its key file {} is missing; put back the saved copy of the key (without it the backups cannot be read)",
                            repo.password_file.display()
                        ),
                    });
                }
                return Ok(());
            }
            if !repo.password_file.exists() {
                if !create_key {
                    return Err(EngineError::Password {
                        path: repo.password_file.clone(),
                        source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
                    });
                }
                write_new_key(&repo.password_file)?;
            }
            let password = self.password(repo)?.key;
            if repo.remote.is_none() {
                std::fs::create_dir_all(&repo.path).map_err(|source| EngineError::Io {
                    op: "creating the repository folder",
                    source,
                })?;
            }
            let open = unopened
                .init(
                    &Credentials::password(&password),
                    &KeyOptions::default(),
                    &ConfigOptions::default(),
                )
                .map_err(err(repo))?;
            if let Some(kept) = self.kept_key_path(&repo.password_file) {
                kept_key::write(&kept, &password, &open.key());
            }
            self.keys
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert((repo.path.clone(), password), open.key());
            sync_repository(repo)
        })
    }

    fn repository_id(&self, repo: &Repo) -> Result<Option<String>, EngineError> {
        self.guarded(repo, "repository check", || {
            // A missing folder is no repository; the backend must not create it.
            if repo.remote.is_none() && !repo.path.exists() {
                return Ok(None);
            }
            let unopened = handle(repo, Arc::new(NoProgress))?;
            if unopened.config_id().map_err(err(repo))?.is_none() {
                return Ok(None);
            }
            if !repo.password_file.exists() {
                return Err(EngineError::Repository {
                    repo: repo.path.clone(),
                    message: format!(
                        "the repository exists but its key file {} is missing; put back the saved copy of the key (without it the backups cannot be read)",
                        repo.password_file.display()
                    ),
                });
            }
            let open = self.open(repo, Arc::new(NoProgress))?;
            Ok(Some(open.config().id.to_hex().to_string()))
        })
    }

    fn backup_dir(
        &self,
        repo: &Repo,
        source: &Path,
        exclude: &[String],
        tags: &SnapshotTags,
        progress: Arc<dyn ProgressSink>,
    ) -> Result<SnapshotInfo, EngineError> {
        self.guarded(repo, "backup", || {
            let source_str = source.to_str().ok_or_else(|| EngineError::Repository {
                repo: repo.path.clone(),
                message: format!("the source path {} is not UTF-8", source.display()),
            })?;
            let about = Arc::new(AboutTotal {
                inner: progress.clone(),
                total: AtomicU64::new(0),
            });
            // Where a backup's time goes, at debug level (BENCHMARKS.md, "Daemon").
            tracing::debug!("backup: opening the repository");
            let (open, lock) = self.open_locked(repo, about.clone(), lock::Mode::Shared)?;
            tracing::debug!("backup: repository opened, lock landed");
            let indexed = open.to_indexed_ids().map_err(err(repo))?;
            tracing::debug!("backup: index read");
            let snap = new_snapshot(repo, tags)?;
            let mut parent_opts =
                ParentOptions::default().group_by(SnapshotGroupCriterion::new().label(true));
            // The parent is the instance's latest snapshot, found here as rustic would (by
            // label) so that its size gives the progress total: rustic's own size scan, a
            // second walk of the whole tree, is skipped for every backup that has a parent.
            let parent = indexed
                .get_matching_snapshots(|s| s.label == snap.label)
                .ok()
                .and_then(|all| all.into_iter().max_by(|a, b| a.time.cmp(&b.time)));
            let no_scan = match &parent {
                Some(p) => {
                    parent_opts = parent_opts.parents(vec![p.id.to_hex().to_string()]);
                    let size = p.summary.as_ref().map_or(0, |s| s.total_bytes_processed);
                    about.total.store(size, Ordering::Relaxed);
                    // A parent without a summary (older restic) gives no total: scan.
                    size > 0
                }
                None => false,
            };
            let opts = BackupOptions::default()
                // The tree is stored relative to the source: restoring it gives the tree.
                .as_path(PathBuf::from("/"))
                .parent_opts(parent_opts)
                .no_scan(no_scan)
                .excludes(Excludes::default().globs(exclude_globs(source_str, exclude)));
            let paths = PathList::from_string(source_str)
                .map_err(err(repo))?
                .sanitize()
                .map_err(|e| EngineError::Repository {
                    repo: repo.path.clone(),
                    message: format!("source {}: {e}", source.display()),
                })?;
            let skipped = SkippedFiles::start();
            let saved = indexed.backup(&opts, &paths, snap);
            tracing::debug!("backup: snapshot saved");
            let skipped = skipped.finish();
            let saved = saved.map_err(err(repo))?;
            let info = info(&saved);
            // rustic logs unreadable files and saves the snapshot anyway: such a snapshot is
            // not a complete backup, so it is removed and the backup fails.
            if !skipped.is_empty() {
                let ids = open_ids(&indexed, std::slice::from_ref(&info.id), repo)?;
                indexed.delete_snapshots(&ids).map_err(err(repo))?;
                sync_written(repo, &lock)?;
                let paths = unreadable_paths(&skipped);
                return Err(EngineError::Unreadable {
                    folder: source.to_path_buf(),
                    total: paths.len(),
                    items: paths
                        .into_iter()
                        .take(crate::records::Unreadable::MAX_LISTED)
                        .collect(),
                });
            }
            sync_written(repo, &lock)?;
            tracing::debug!("backup: repository synced");
            Ok(info)
        })
    }

    fn backup_stream(
        &self,
        repo: &Repo,
        source: &StreamSource,
        tags: &SnapshotTags,
        progress: Arc<dyn ProgressSink>,
    ) -> Result<SnapshotInfo, EngineError> {
        self.stream_backup(repo, source, tags, progress)
    }

    fn backup_written(
        &self,
        repo: &Repo,
        source: &WrittenStream,
        tags: &SnapshotTags,
        progress: Arc<dyn ProgressSink>,
    ) -> Result<SnapshotInfo, EngineError> {
        self.written_backup(repo, source, tags, progress)
    }

    fn restore_stream(
        &self,
        repo: &Repo,
        snapshot: &str,
        name: &str,
        sink: &mut (dyn std::io::Write + Send),
    ) -> Result<u64, EngineError> {
        self.stream_restore(repo, snapshot, name, sink)
    }

    fn find(&self, repo: &Repo, backup: Uuid) -> Result<Vec<SnapshotInfo>, EngineError> {
        let tag = format!("backup={backup}");
        Ok(self
            .list(repo)?
            .into_iter()
            .filter(|s| s.tags.contains(&tag))
            .collect())
    }

    fn list(&self, repo: &Repo) -> Result<Vec<SnapshotInfo>, EngineError> {
        self.guarded(repo, "listing snapshots", || {
            // A repository not created yet holds no snapshots.
            if handle(repo, Arc::new(NoProgress))?
                .config_id()
                .map_err(err(repo))?
                .is_none()
            {
                return Ok(Vec::new());
            }
            let (open, _lock) = self.open_locked(repo, Arc::new(NoProgress), lock::Mode::Shared)?;
            let mut all: Vec<SnapshotInfo> = open
                .get_all_snapshots()
                .map_err(err(repo))?
                .iter()
                .map(info)
                .collect();
            all.sort_by(|a, b| (a.time, &a.id).cmp(&(b.time, &b.id)));
            Ok(all)
        })
    }

    fn restore_dir(
        &self,
        repo: &Repo,
        snapshot: &str,
        dest: &Path,
        progress: Arc<dyn ProgressSink>,
    ) -> Result<RestoreStats, EngineError> {
        self.guarded(repo, "restore", || {
            let empty = match std::fs::read_dir(dest) {
                Ok(mut entries) => entries.next().is_none(),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => true,
                Err(source) => {
                    return Err(EngineError::Io {
                        op: "reading the restore target",
                        source,
                    });
                }
            };
            // Restoring over existing files fails on hard links and special files.
            if !empty {
                return Err(EngineError::DestinationNotEmpty {
                    path: dest.to_path_buf(),
                });
            }
            let dest_str = dest
                .to_str()
                .ok_or_else(|| EngineError::DestinationNotEmpty {
                    path: dest.to_path_buf(),
                })?;
            // rustic restores on 8 reader threads, each reading at most 2 MiB of a pack at
            // once (vendor/rustic_core/BACKPLAN.md): that bounds a restore's memory.
            // Where a restore's time goes, at debug level (BENCHMARKS.md, "Storage engine").
            tracing::debug!("restore: opening the repository");
            let (open, lock) = self.open_locked(repo, progress.clone(), lock::Mode::Shared)?;
            tracing::debug!("restore: repository opened, lock landed");
            let indexed = open.to_indexed().map_err(err(repo))?;
            tracing::debug!("restore: index read");
            let snap = find_snapshot(&indexed, repo, snapshot)?;
            let node = indexed
                .node_from_snapshot_and_path(&snap, "")
                .map_err(err(repo))?;
            let ls = indexed
                .ls(&node, &LsOptions::default())
                .map_err(err(repo))?;
            // The tree walked once, here, while the lock settles (read-only work), and kept
            // for the plan and the metadata pass when not too large (`restore.rs`).
            let kept = restore::keep_walk(ls.clone(), restore::KEEP_AT_MOST).map_err(err(repo))?;
            tracing::debug!("restore: tree walked");
            type Nodes<'a> = Box<
                dyn Iterator<
                        Item = rustic_core::RusticResult<(PathBuf, rustic_core::repofile::Node)>,
                    > + 'a,
            >;
            let nodes = || -> Nodes<'_> {
                match &kept {
                    Some(kept) => Box::new(kept.iter().cloned().map(Ok)),
                    None => Box::new(ls.clone()),
                }
            };
            // Nothing is written into the destination before the lock's second look: a
            // conflict there runs the restore again, into the same empty folder.
            second_look(&lock, repo)?;
            tracing::debug!("restore: lock settled");
            let destination = LocalDestination::new(dest_str, true, false).map_err(err(repo))?;
            let mut opts = RestoreOptions::default().numeric_id(true);
            // Sparse files back as sparse files. rustic 0.13 does not export the option's
            // type, but the field is public and the type deserialises by name.
            opts.sparse = serde_json::from_str("\"ByContent\"").ok();
            let plan = indexed
                .prepare_restore(&opts, nodes(), &destination, false)
                .map_err(err(repo))?;
            let stats = RestoreStats {
                files: plan.stats.files.restore,
                bytes: plan.restore_size,
            };
            tracing::debug!("restore: folders made, plan ready");
            // The tree is flushed while it is written (`flush.rs`): the sync below, which
            // makes it durable, then finds little left to write.
            flush::while_flushing(
                flush::INTERVAL,
                || flush::sync_filesystem_of(dest),
                || {
                    indexed
                        .restore(plan, &opts, nodes(), &destination)
                        .map_err(err(repo))
                },
            )?;
            tracing::debug!("restore: contents and metadata written");
            // Nothing is swapped into place before it is on disk.
            sync_filesystem(dest)?;
            tracing::debug!("restore: tree synced");
            Ok(stats)
        })
    }

    fn retag(
        &self,
        repo: &Repo,
        snapshot: &str,
        tags: &SnapshotTags,
        recorded: &mut (dyn FnMut(&str) -> Result<(), String> + Send),
    ) -> Result<String, EngineError> {
        self.guarded(repo, "rewriting a snapshot's tags", || {
            use rustic_core::repofile::SnapshotId;
            // Exclusive, as `restic tag` takes it: no other snapshot may appear meanwhile. One
            // lock (one 200 ms settle) for the write, the record and the forget.
            let (open, lock) =
                self.open_locked(repo, Arc::new(NoProgress), lock::Mode::Exclusive)?;
            let failed = |message: String| EngineError::Repository {
                repo: repo.path.clone(),
                message,
            };
            let mut snap = find_snapshot(&open, repo, snapshot)?;
            let wanted: std::collections::BTreeSet<String> = tags.to_tags().into_iter().collect();
            if snap.tags.iter().cloned().collect::<std::collections::BTreeSet<_>>() == wanted {
                second_look(&lock, repo)?;
                recorded(snapshot).map_err(failed)?;
                return Ok(snapshot.to_string());
            }
            let before: std::collections::HashSet<SnapshotId> =
                open.list::<SnapshotId>().map_err(err(repo))?.collect();
            // As `restic tag`: same tree, time and paths; `original` (set when it was read)
            // names the first snapshot of the backup.
            snap.tags = Default::default();
            for tag in wanted {
                snap.tags.add(tag);
            }
            let old = snap.id;
            open.save_snapshots(vec![snap]).map_err(err(repo))?;
            sync_snapshots(repo)?;
            // The new file's id is the hash of what was stored: the one not there before.
            let new: Vec<SnapshotId> = open
                .list::<SnapshotId>()
                .map_err(err(repo))?
                .filter(|id| !before.contains(id))
                .collect();
            let new = match new.as_slice() {
                [one] => one.to_hex().to_string(),
                _ => {
                    return Err(failed(format!(
                        "after rewriting the tags of snapshot {snapshot}, {} new snapshots appeared (another writer?)",
                        new.len()
                    )));
                }
            };
            recorded(&new).map_err(failed)?;
            // The record names the new file: the old one goes, under the same lock.
            open.delete_snapshots(&[old]).map_err(err(repo))?;
            sync_snapshots(repo)?;
            Ok(new)
        })
    }

    fn forget(&self, repo: &Repo, snapshots: &[String]) -> Result<(), EngineError> {
        if snapshots.is_empty() {
            return Ok(());
        }
        self.guarded(repo, "forget", || {
            let (open, lock) =
                self.open_locked(repo, Arc::new(NoProgress), lock::Mode::Exclusive)?;
            let ids = open_ids(&open, snapshots, repo)?;
            open.delete_snapshots(&ids).map_err(err(repo))?;
            sync_written(repo, &lock)
        })
    }

    fn prune(&self, repo: &Repo) -> Result<(), EngineError> {
        self.guarded(repo, "prune", || {
            let (open, lock) =
                self.open_locked(repo, Arc::new(NoProgress), lock::Mode::Exclusive)?;
            // Delete now (the default only marks packs for a day later) and repack partly
            // used packs without the default 10% cap.
            let opts = PruneOptions::default()
                .instant_delete(true)
                .max_unused(LimitOption::Percentage(0))
                .max_repack(LimitOption::Unlimited);
            let plan = open.prune_plan(&opts).map_err(err(repo))?;
            open.prune(&opts, plan).map_err(err(repo))?;
            sync_written(repo, &lock)
        })
    }

    fn verify(&self, repo: &Repo, read_share: f64) -> Result<VerifyReport, EngineError> {
        self.guarded(repo, "verify", || {
            let (open, _lock) = self.open_locked(repo, Arc::new(NoProgress), lock::Mode::Shared)?;
            let snapshots = open.get_all_snapshots().map_err(err(repo))?.len();
            let mut opts = CheckOptions::default();
            if read_share > 0.0 {
                // rustic's percentage subset picks packs while they fit the budget, and at
                // 100% it can still leave some out: "all" reads everything.
                let subset: ReadSubsetOption = if read_share >= 100.0 {
                    ReadSubsetOption::All
                } else {
                    format!("{read_share}%").parse().map_err(err(repo))?
                };
                opts = opts.read_data(true).read_data_subset(subset);
            }
            let results = open.check(opts).map_err(err(repo))?;
            // `check` returns Ok even when it finds errors: read the findings.
            let problems: Vec<String> = results
                .0
                .iter()
                .map(|(level, e)| format!("{level:?}: {}", one_line(&e.to_string())))
                .collect();
            let damaged_packs = if problems.is_empty() {
                Vec::new()
            } else {
                let named: Vec<String> = problems.iter().flat_map(|p| named_packs(p)).collect();
                // What the damage touches is a help, not the verdict: an index that cannot be
                // read leaves it out.
                open.to_indexed_ids()
                    .map_err(err(repo))
                    .and_then(|indexed| affected_snapshots(&indexed, &named, repo))
                    .unwrap_or_else(|e| {
                        tracing::warn!("verify: cannot tell which backups the damage affects: {e}");
                        Vec::new()
                    })
            };
            Ok(VerifyReport {
                problems,
                snapshots,
                damaged_packs,
            })
        })
    }

    fn check_storage(&self, repo: &Repo) -> Result<(), EngineError> {
        // Not under the repository's lock: the check touches no repository file (its test
        // object lies beside them), and must not wait behind a long backup.
        isolated("storage check", || remote::check(repo))
    }

    fn listing(&self, repo: &Repo, snapshot: &str) -> Result<Vec<TreeEntry>, EngineError> {
        RusticEngine::listing(self, repo, snapshot)
    }
}

/// Runs `f` as [`RusticEngine::guarded`] does, but without the repository's lock: on a thread
/// of its own, outside any async runtime, with a panic turned into an error.
fn isolated<T: Send>(
    op: &'static str,
    f: impl FnOnce() -> Result<T, EngineError> + Send,
) -> Result<T, EngineError> {
    std::thread::scope(|s| {
        let worker = std::thread::Builder::new()
            .name(format!("engine {op}"))
            .spawn_scoped(s, f)
            .map_err(|source| EngineError::Io {
                op: "starting an engine thread",
                source,
            })?;
        worker.join().unwrap_or_else(|panic| {
            Err(EngineError::Panicked {
                op,
                message: panic_message(&panic),
            })
        })
    })
}

/// The pack ids (or their leading hex digits, as check messages print them) that a check
/// finding names: `pack <hex>`.
fn named_packs(problem: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = problem;
    while let Some(at) = rest.find("pack ") {
        rest = &rest[at + 5..];
        let hex: String = rest
            .chars()
            .take_while(|c| c.is_ascii_hexdigit())
            .map(|c| c.to_ascii_lowercase())
            .collect();
        if hex.len() >= 8 && !out.contains(&hex) {
            out.push(hex);
        }
    }
    out
}

/// For each named pack (matched by the start of its id in the index), the snapshots that
/// reference a blob in it. Each tree is read at most once (a subtree's answer is kept); a tree
/// that cannot be read counts as affected.
fn affected_snapshots<S: rustic_core::Open + rustic_core::IndexedTree>(
    open: &Repository<S>,
    named: &[String],
    repo: &Repo,
) -> Result<Vec<DamagedPack>, EngineError> {
    use rustic_core::repofile::IndexFile;
    use std::collections::HashSet;
    // The blobs of each named pack, from the index.
    let mut packs: Vec<(String, HashSet<rustic_core::Id>)> = Vec::new();
    for file in open.stream_files::<IndexFile>().map_err(err(repo))? {
        let (_, index) = file.map_err(err(repo))?;
        for p in index.packs.iter().chain(&index.packs_to_delete) {
            let hex = p.id.to_hex().to_string();
            if named.iter().any(|n| hex.starts_with(n.as_str())) {
                let blobs = p.blobs.iter().map(|b| *b.id);
                match packs.iter_mut().find(|(h, _)| *h == hex) {
                    Some((_, set)) => set.extend(blobs),
                    None => packs.push((hex, blobs.collect())),
                }
            }
        }
    }
    let snapshots = open.get_all_snapshots().map_err(err(repo))?;
    let mut out = Vec::new();
    for (pack, blobs) in packs {
        let mut known: HashMap<rustic_core::Id, bool> = HashMap::new();
        let affected = snapshots
            .iter()
            .filter(|s| tree_uses(open, *s.tree, &blobs, &mut known))
            .map(|s| s.id.to_hex().to_string())
            .collect();
        out.push(DamagedPack {
            pack,
            snapshots: affected,
        });
    }
    Ok(out)
}

/// Whether the tree `id` (or anything below it) has a blob in `blobs`.
fn tree_uses<S: rustic_core::Open + rustic_core::IndexedTree>(
    open: &Repository<S>,
    id: rustic_core::Id,
    blobs: &std::collections::HashSet<rustic_core::Id>,
    known: &mut HashMap<rustic_core::Id, bool>,
) -> bool {
    if let Some(k) = known.get(&id) {
        return *k;
    }
    let uses = blobs.contains(&id)
        || match open.get_tree(&id.into()) {
            Err(_) => true,
            Ok(tree) => tree.nodes.iter().any(|n| {
                n.content.iter().flatten().any(|c| blobs.contains(&**c))
                    || n.subtree.is_some_and(|t| tree_uses(open, *t, blobs, known))
            }),
        };
    known.insert(id, uses);
    uses
}

/// The snapshot named by its full id. A full id only: the library reads a shorter one (even an
/// empty one) as a prefix and would pick some other snapshot.
fn find_snapshot<S: rustic_core::Open>(
    open: &Repository<S>,
    repo: &Repo,
    snapshot: &str,
) -> Result<SnapshotFile, EngineError> {
    let missing = || EngineError::NoSnapshot {
        repo: repo.path.clone(),
        id: snapshot.to_string(),
    };
    if snapshot.len() != 64 || !snapshot.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(missing());
    }
    open.get_snapshot_from_str(snapshot, |_| true)
        .map_err(|_| missing())
}

/// A new snapshot labelled `backplan:<instance>` (parents are found by label: one label per
/// instance) and tagged with the backup's tags.
fn new_snapshot(repo: &Repo, tags: &SnapshotTags) -> Result<SnapshotFile, EngineError> {
    let mut snap = SnapshotOptions::default()
        .label(format!("backplan:{}", tags.instance))
        .command(format!("backplan backup {}", tags.instance))
        .to_snapshot()
        .map_err(err(repo))?;
    // One tag each, as given: `SnapshotOptions::add_tags` would split a label at its commas.
    for tag in tags.to_tags() {
        snap.tags.add(tag);
    }
    Ok(snap)
}

fn open_ids<S: rustic_core::Open>(
    open: &Repository<S>,
    ids: &[String],
    repo: &Repo,
) -> Result<Vec<rustic_core::repofile::SnapshotId>, EngineError> {
    Ok(open
        .get_snapshots(ids)
        .map_err(err(repo))?
        .into_iter()
        .map(|s| s.id)
        .collect())
}

fn info(s: &SnapshotFile) -> SnapshotInfo {
    let ts = s.time.timestamp();
    let time =
        DateTime::<Utc>::from_timestamp(ts.as_second(), ts.subsec_nanosecond().max(0) as u32)
            .unwrap_or_default();
    let (bytes_read, bytes_added, files) = s
        .summary
        .as_ref()
        .map(|m| {
            (
                m.total_bytes_processed,
                m.data_added,
                m.total_files_processed,
            )
        })
        .unwrap_or_default();
    SnapshotInfo {
        // `Display` of a snapshot id is only 8 hex digits; the full id is needed.
        id: s.id.to_hex().to_string(),
        time,
        tags: s.tags.iter().cloned().collect(),
        bytes_read,
        bytes_added,
        files,
    }
}

fn err(repo: &Repo) -> impl Fn(Box<RusticError>) -> EngineError + '_ {
    move |e| EngineError::Repository {
        repo: repo.path.clone(),
        // `Display` is a multi-line report with a backtrace; this is the one-line form.
        message: e.display_log().trim_start_matches("Error: ").to_string(),
    }
}

/// A repository password as read from its file.
struct Password {
    /// As restic reads a password file: without a byte-order mark and surrounding whitespace
    /// (line ends included), so that stock `restic --password-file` opens the same repository.
    key: String,
    /// How backplan read it before (only line ends removed), when that differs from `key`:
    /// a repository made with it still opens.
    legacy: Option<String>,
    /// The file's permission bits.
    mode: u32,
}

fn read_password(path: &Path) -> Result<Password, EngineError> {
    use std::os::unix::fs::PermissionsExt;
    let fail = |source| EngineError::Password {
        path: path.to_path_buf(),
        source,
    };
    let mode = std::fs::metadata(path).map_err(fail)?.permissions().mode();
    let original = std::fs::read_to_string(path).map_err(fail)?;
    let key = original
        .strip_prefix('\u{feff}')
        .unwrap_or(&original)
        .trim();
    if key.is_empty() {
        return Err(fail(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "the file is empty or holds only whitespace; write the repository password in it",
        )));
    }
    let legacy = original.trim_end_matches(['\n', '\r']);
    Ok(Password {
        key: key.to_string(),
        legacy: (legacy != key).then(|| legacy.to_string()),
        mode,
    })
}

/// A new random repository key, written 0600 and synced before the repository uses it.
fn write_new_key(path: &Path) -> Result<(), EngineError> {
    let io = |op| move |source| EngineError::Io { op, source };
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes))
        .map_err(io("reading random bytes for the repository key"))?;
    let key: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    if let Some(parent) = path.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(parent)
            .map_err(io("creating the key's folder"))?;
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io("creating the repository key file"))?;
    f.write_all(format!("{key}\n").as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(io("writing the repository key file"))?;
    if let Some(parent) = path.parent() {
        sync_dir(parent)?;
    }
    Ok(())
}

fn sync_dir(dir: &Path) -> Result<(), EngineError> {
    std::fs::File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(|source| EngineError::Io {
            op: "syncing a repository folder",
            source,
        })
}

/// The local backend writes a file, syncs it and renames it into place, but never syncs
/// the folder: the rename (a new snapshot, index or pack) could be lost in a power cut after
/// the backup was reported complete. Sync every folder of the repository.
fn sync_repository(repo: &Repo) -> Result<(), EngineError> {
    // An object store's write is durable once acknowledged; there are no folders here.
    if repo.remote.is_some() {
        return Ok(());
    }
    let root = &repo.path;
    for sub in ["data", "index", "snapshots", "keys"] {
        let dir = root.join(sub);
        if sub == "data"
            && let Ok(entries) = std::fs::read_dir(&dir)
        {
            for e in entries.flatten() {
                crate::heartbeat::beat();
                sync_dir(&e.path())?;
            }
        }
        if dir.exists() {
            sync_dir(&dir)?;
        }
    }
    sync_dir(root)
}

/// [`sync_repository`] for the folders a locked operation wrote or removed files in (its
/// gate noted them), and `data` when one of its subfolders is among them: an unchanged
/// re-backup syncs `snapshots` alone instead of every folder of the repository.
fn sync_written(repo: &Repo, lock: &lock::RepoLock) -> Result<(), EngineError> {
    let Some(gate) = &lock.gate else {
        return sync_repository(repo);
    };
    if repo.remote.is_some() {
        return Ok(());
    }
    let touched = gate.touched();
    for folder in &touched {
        crate::heartbeat::beat();
        sync_dir(&repo.path.join(folder))?;
    }
    if touched.iter().any(|f| f.starts_with("data/")) {
        sync_dir(&repo.path.join("data"))?;
    }
    Ok(())
}

/// [`sync_repository`] for a change of snapshot files alone (a tag rewrite): only the
/// `snapshots` folder changed, its file synced by the backend before its rename.
fn sync_snapshots(repo: &Repo) -> Result<(), EngineError> {
    if repo.remote.is_some() {
        return Ok(());
    }
    sync_dir(&repo.path.join("snapshots"))
}

/// Flushes the filesystem holding `path` (a restored tree: rustic syncs none of its files).
fn sync_filesystem(path: &Path) -> Result<(), EngineError> {
    // A large tree takes a while to flush: live work for the watchdog, up to half an hour.
    crate::heartbeat::during(std::time::Duration::from_secs(1800), || {
        flush::sync_filesystem_of(path)
    })
    .map_err(|source| EngineError::Io {
        op: "syncing the restored tree",
        source,
    })
}

/// rustic's error reports span many lines (message, context, backtrace): keep the gist.
fn one_line(report: &str) -> String {
    report
        .lines()
        .map(str::trim)
        .take_while(|l| {
            !l.starts_with("For more information")
                && !l.starts_with("Some additional details")
                && !l.starts_with("Backtrace")
        })
        .filter(|l| !l.is_empty() && *l != "Message:")
        .collect::<Vec<_>>()
        .join(" ")
}

fn panic_message(p: &Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

// ---------------------------------------------------------------------------------------------
// Progress: rustic's progress bars, forwarded to a `ProgressSink`.

#[derive(Clone)]
struct Bars(Arc<dyn ProgressSink>);
impl std::fmt::Debug for Bars {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Bars")
    }
}

impl ProgressBars for Bars {
    fn progress(&self, kind: ProgressType, prefix: &str) -> Progress {
        crate::heartbeat::beat();
        Progress::new(Bar {
            sink: self.0.clone(),
            bytes: matches!(kind, ProgressType::Bytes),
            phase: Mutex::new(prefix.trim_end_matches('.').to_string()),
            len: AtomicU64::new(0),
            pos: AtomicU64::new(0),
        })
    }
}

/// The progress of a backup whose total is its parent snapshot's size (rustic's size scan
/// skipped): said as "about", and no total once the backup has passed it.
struct AboutTotal {
    inner: Arc<dyn ProgressSink>,
    /// Bytes of the parent snapshot; 0: no estimate.
    total: AtomicU64,
}

/// The phase of a backup whose total is the previous backup's size.
const ABOUT_PHASE: &str = "backing up (about as much as last time)";

impl ProgressSink for AboutTotal {
    fn update(&self, phase: &str, done: u64, total: Option<u64>) {
        let about = self.total.load(Ordering::Relaxed);
        if total.is_none() && about > 0 && phase == "backing up" {
            return self
                .inner
                .update(ABOUT_PHASE, done, (done <= about).then_some(about));
        }
        self.inner.update(phase, done, total)
    }
}

struct Bar {
    sink: Arc<dyn ProgressSink>,
    bytes: bool,
    phase: Mutex<String>,
    len: AtomicU64,
    pos: AtomicU64,
}
impl std::fmt::Debug for Bar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Bar")
    }
}

impl RusticProgress for Bar {
    fn is_hidden(&self) -> bool {
        // Not hidden: a backup without a parent then sizes its source first, for the ETA.
        false
    }
    fn set_length(&self, len: u64) {
        self.len.store(len, Ordering::Relaxed);
    }
    fn set_title(&self, title: &str) {
        *self.phase.lock().unwrap_or_else(|p| p.into_inner()) = title.to_string();
    }
    fn inc(&self, n: u64) {
        crate::heartbeat::beat();
        let done = self.pos.fetch_add(n, Ordering::Relaxed) + n;
        if self.bytes {
            let len = self.len.load(Ordering::Relaxed);
            let phase = self.phase.lock().unwrap_or_else(|p| p.into_inner()).clone();
            self.sink.update(&phase, done, (len > 0).then_some(len));
        }
    }
    fn finish(&self) {}
}

// ---------------------------------------------------------------------------------------------
// rustic logs through the `log` crate: forward to tracing, and watch for skipped files.

static ACTIVE_BACKUPS: Mutex<Vec<Arc<Mutex<Vec<String>>>>> = Mutex::new(Vec::new());

/// Collects the "ignoring error" warnings rustic logs while a backup runs (files it could not
/// read and left out). With several backups at once, each sees all of them: a false failure
/// is retried, a silent gap is not.
struct SkippedFiles(Arc<Mutex<Vec<String>>>);

impl SkippedFiles {
    fn start() -> Self {
        let c = Arc::new(Mutex::new(Vec::new()));
        ACTIVE_BACKUPS
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(c.clone());
        SkippedFiles(c)
    }
    fn finish(self) -> Vec<String> {
        ACTIVE_BACKUPS
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|c| !Arc::ptr_eq(c, &self.0));
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

struct LogBridge;
impl log::Log for LogBridge {
    fn enabled(&self, m: &log::Metadata<'_>) -> bool {
        m.level() <= log::Level::Warn
    }
    fn log(&self, r: &log::Record<'_>) {
        if !self.enabled(r.metadata()) {
            return;
        }
        let msg = r.args().to_string();
        if msg.contains("ignoring error") {
            for c in ACTIVE_BACKUPS
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
            {
                c.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(msg.clone());
            }
        }
        match r.level() {
            log::Level::Error => tracing::error!(target: "rustic", "{msg}"),
            _ => tracing::warn!(target: "rustic", "{msg}"),
        }
    }
    fn flush(&self) {}
}

/// The paths in rustic's "ignoring error" warnings, each once, in the order seen (the size
/// scan and the walk both report an unreadable folder). A warning whose path cannot be found
/// stays whole.
fn unreadable_paths(warnings: &[String]) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    warnings
        .iter()
        .map(|w| unreadable_path(w).unwrap_or(w).to_string())
        .filter(|p| seen.insert(p.clone()))
        .collect()
}

/// The path in one warning: `... at `PATH` ...` (a file that cannot be opened), or the walk's
/// `PATH: <os error>` (after `caused by: ` or right after `ignoring error `).
fn unreadable_path(warning: &str) -> Option<&str> {
    if let Some((_, rest)) = warning.split_once(" at `") {
        return rest.split_once('`').map(|(p, _)| p);
    }
    let rest = match warning.split_once("caused by: ") {
        Some((_, rest)) => rest,
        None => warning.strip_prefix("ignoring error ")?,
    };
    rest.split_once(": ")
        .map(|(p, _)| p)
        .filter(|p| p.starts_with('/'))
}

/// Sends `log` records (rustic's, sled's) to tracing, and lets backups see skipped files.
/// Installed by the engine; idempotent.
pub fn install_log_bridge() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if log::set_logger(&LogBridge).is_ok() {
            log::set_max_level(log::LevelFilter::Warn);
        }
    });
}

/// The `exclude` patterns as rustic's override globs: `!` makes a glob exclude; the walk
/// matches absolute paths, so a pattern with a `/` (anchored, as in gitignore) is put under
/// the source folder, and one without stays a name matched at any depth.
fn exclude_globs(source: &str, exclude: &[String]) -> Vec<String> {
    exclude
        .iter()
        .map(|p| {
            if p.trim_end_matches('/').contains('/') {
                format!(
                    "!{}/{}",
                    source.trim_end_matches('/'),
                    p.trim_start_matches('/')
                )
            } else {
                format!("!{p}")
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a backup reported: (phase, done, total) of every update.
    #[derive(Default)]
    struct Seen(Mutex<Vec<(String, u64, Option<u64>)>>);
    impl ProgressSink for Seen {
        fn update(&self, phase: &str, done: u64, total: Option<u64>) {
            let mut seen = self.0.lock().unwrap();
            seen.push((phase.to_string(), done, total));
        }
    }

    /// A backup with an earlier one of its instance uses it as parent, skips rustic's size
    /// scan, and says its total is about the parent's size; another instance's backup in the
    /// same repository is no parent.
    #[test]
    fn a_repeat_backup_takes_its_total_from_the_parent_and_says_about() {
        let tmp = tempfile::tempdir().unwrap();
        let repo = Repo::local(tmp.path().join("repo"), tmp.path().join("k.key"));
        let engine = RusticEngine::new();
        engine.ensure(&repo, true).unwrap();
        let src = tmp.path().join("src");
        std::fs::create_dir(&src).unwrap();
        std::fs::write(src.join("a"), vec![7u8; 300_000]).unwrap();
        std::fs::write(src.join("b"), vec![8u8; 100_000]).unwrap();
        let tags = |instance: &str| SnapshotTags {
            instance: instance.into(),
            kind: "on-demand".into(),
            ..Default::default()
        };
        let backup = |instance: &str| {
            let seen = Arc::new(Seen::default());
            let info = engine
                .backup_dir(&repo, &src, &[], &tags(instance), seen.clone())
                .unwrap();
            let seen = std::mem::take(&mut *seen.0.lock().unwrap());
            (info, seen)
        };
        // A first backup has no estimate (rustic sizes the source meanwhile).
        let (first, seen) = backup("i");
        assert!(seen.iter().all(|(p, ..)| p != ABOUT_PHASE), "{seen:?}");

        std::fs::write(src.join("c"), vec![9u8; 50_000]).unwrap();
        let (second, seen) = backup("i");
        let backing: Vec<_> = seen
            .iter()
            .filter(|(p, ..)| p.starts_with("backing up"))
            .collect();
        assert!(!backing.is_empty(), "{seen:?}");
        for (phase, done, total) in &backing {
            assert_eq!(phase, ABOUT_PHASE, "no size scan: {seen:?}");
            // Past the parent's size, no total is claimed.
            assert_eq!(*total, (*done <= 400_000).then_some(400_000), "{seen:?}");
        }
        assert_eq!(backing.iter().map(|b| b.1).max(), Some(450_000), "{seen:?}");

        let (_, seen) = backup("j");
        assert!(seen.iter().all(|(p, ..)| p != ABOUT_PHASE), "{seen:?}");

        let open = engine.open(&repo, Arc::new(NoProgress)).unwrap();
        let all = open.get_all_snapshots().unwrap();
        let by_id = |id: &str| all.iter().find(|s| s.id.to_hex().as_str() == id).unwrap();
        assert_eq!(
            by_id(&second.id).parent.map(|p| p.to_hex().to_string()),
            Some(first.id.clone()),
            "the repeat backup's parent is the instance's latest snapshot"
        );
        let j = all.iter().find(|s| s.label == "backplan:j").unwrap();
        assert_eq!(j.parent, None, "another instance's snapshot is no parent");
    }

    #[test]
    fn operations_run_outside_any_async_runtime() {
        let engine = RusticEngine::new();
        let repo = Repo::local("/nonexistent", "/nonexistent.key");
        let rt = tokio::runtime::Runtime::new().unwrap();
        let inside = rt.block_on(async {
            assert!(tokio::runtime::Handle::try_current().is_ok());
            engine.guarded(&repo, "probe", || {
                Ok(tokio::runtime::Handle::try_current().is_ok())
            })
        });
        assert!(!inside.unwrap(), "the operation saw the caller's runtime");
    }

    #[test]
    fn a_panic_in_an_operation_is_an_error() {
        let engine = RusticEngine::new();
        let repo = Repo::local("/nonexistent", "/nonexistent.key");
        let r: Result<(), _> = engine.guarded(&repo, "probe", || panic!("boom"));
        match r {
            Err(EngineError::Panicked {
                op: "probe",
                message,
            }) => assert_eq!(message, "boom"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn unreadable_paths_are_found_in_rustic_warnings_once_each() {
        let w = |s: &str| s.to_string();
        let warnings = [
            w(
                "ignoring error: Error: Failed to open ReadSourceOpen at `/d/a b`\nFailed to open file at `/d/a b`. Please make sure the file exists and is accessible. (kind: related to input/output operations): caused by: Permission denied (os error 13)",
            ),
            w("ignoring error /d/locked: Permission denied (os error 13)"),
            w(
                "ignoring error: Error: Failed to get next entry from walk iterator. (kind: internal): caused by: /d/locked: Permission denied (os error 13)",
            ),
            w("ignoring error reading parent snapshot: something else"),
        ];
        assert_eq!(
            unreadable_paths(&warnings),
            [
                "/d/a b",
                "/d/locked",
                "ignoring error reading parent snapshot: something else"
            ]
        );
    }
}
