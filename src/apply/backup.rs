//! Taking backups: new records, the engine call for the instance's kind, and the
//! repository of a storage (created on first use only, never silently re-created).

use std::collections::BTreeMap;

use super::*;
use crate::views::human_bytes;

impl Executor<'_> {
    /// The repository of a storage, and whether backplan may generate its key.
    pub(super) fn repo(&self, storage: &str) -> Result<(Repo, bool), String> {
        let r = storage::resolve(self.cfg, storage)?;
        Ok((r.repo, r.may_generate_key))
    }

    /// The repository of a storage, ready for a backup. A repository is created only on the
    /// storage's first use: once one was recorded (or backups were taken to it), a missing one
    /// is an error naming the path (an unmounted disk, a wrong path), and one found there must
    /// be the recorded repository, opened by the key.
    pub(super) fn usable_repo(&self, storage: &str) -> Result<Repo, String> {
        let (repo, create_key) = self.repo(storage)?;
        let recorded = self.store.get_storage(storage).map_err(|e| e.to_string())?;
        let found = self
            .engine
            .repository_id(&repo)
            .map_err(|e| e.to_string())?;
        let id = match (found, &recorded) {
            (Some(found), Some(r)) if found == r.repository_id => return Ok(repo),
            (Some(found), Some(r)) => {
                return Err(format!(
                    "the repository at {} (id {found}) is not the one storage `{storage}` has used (id {}, at {}); refusing to write to it. Point `path` back to the recorded repository, or mount the disk that holds it",
                    repo.path.display(),
                    r.repository_id,
                    r.path.display()
                ));
            }
            (Some(found), None) => found,
            (None, Some(r)) => {
                return Err(missing_repository(storage, &repo, &r.path));
            }
            (None, None) => {
                if self
                    .store
                    .storage_has_backups(storage)
                    .map_err(|e| e.to_string())?
                {
                    return Err(missing_repository(storage, &repo, &repo.path));
                }
                let new_key = create_key && !repo.password_file.exists();
                self.engine
                    .ensure(&repo, create_key)
                    .map_err(|e| e.to_string())?;
                if new_key {
                    // Said once, when it happens: without this file the backups are lost.
                    tracing::warn!(
                        "a new repository key was generated for storage `{storage}` at {key}: copy it somewhere safe, away from this host, now (print it with `cat {key}`); without it no backup in {repo} can be read",
                        key = repo.password_file.display(),
                        repo = repo.path.display()
                    );
                }
                self.engine
                    .repository_id(&repo)
                    .map_err(|e| e.to_string())?
                    .ok_or_else(|| {
                        format!("no repository at {} after creating it", repo.path.display())
                    })?
            }
        };
        self.store
            .put_storage(&StorageRecord {
                name: storage.to_string(),
                repository_id: id,
                path: repo.path.clone(),
                recorded_at: self.now(),
            })
            .map_err(|e| e.to_string())?;
        Ok(repo)
    }

    /// Where an instance's data lives: what was recorded when it was created wins over the
    /// file (a changed `source` is refused by the planner, and must not be read under the old
    /// name); the file only for an instance not recorded yet.
    pub(super) fn source_of(&self, instance: &str) -> Option<Source> {
        self.store
            .get_instance(instance)
            .ok()
            .flatten()
            .map(|r| r.source)
            .or_else(|| self.cfg.instances.get(instance).map(|i| i.source.clone()))
    }

    pub(super) fn expiry(&self, storage: &str, from: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self.cfg.storages.get(storage).map(|s| s.retention) {
            Some(Retention::Forever) => None,
            Some(Retention::For(d)) => Some(from + d.to_chrono()),
            None => Some(from + self.cfg.schedule.retention.to_chrono()),
        }
    }

    pub(super) fn new_backup(
        &self,
        id: Uuid,
        instance: &str,
        kind: BackupKind,
        label: String,
        storage: &str,
        fill: impl FnOnce(&mut BackupRecord),
    ) -> Result<BackupRecord, String> {
        let now = self.now();
        let source_kind = self
            .source_of(instance)
            .map(|s| s.kind())
            .ok_or_else(|| format!("`{instance}` is neither recorded nor in the file"))?;
        let mut b = BackupRecord {
            id,
            instance: instance.to_string(),
            source_kind,
            kind,
            key: None,
            created_by: kind.created_by(),
            label,
            notes: String::new(),
            storage: storage.to_string(),
            status: BackupStatus::Pending,
            created_at: now,
            completed_at: None,
            // Fixed when the backup is created: a later change of retention does not move it.
            // System backups keep the local retention wherever `[schedule] storage` puts them.
            expires_at: self.expiry(
                match kind.created_by() {
                    crate::records::CreatedBy::System => "local",
                    crate::records::CreatedBy::User => storage,
                },
                now,
            ),
            size_bytes: None,
            snapshot_id: None,
            error: None,
            attempts: 0,
            failed_at: None,
            date: None,
            version: None,
            delete_at: None,
            status_before_delete: None,
            versions: Default::default(),
            unreadable: None,
        };
        fill(&mut b);
        Ok(b)
    }

    /// Takes a system backup unless a completed one with this id exists already (a re-run
    /// after a crash). Returns the failure, if any.
    pub(super) fn system_backup(
        &mut self,
        id: Uuid,
        instance: &str,
        kind: BackupKind,
        label: String,
        fill: impl FnOnce(&mut BackupRecord),
    ) -> Result<Result<(), String>, ApplyError> {
        let existing = self.store.get_backup(id)?;
        let storage = self.cfg.schedule.storage.clone();
        let b = match existing {
            Some(b) if b.status == BackupStatus::Completed => return Ok(Ok(())),
            Some(b) => b,
            None => match self.new_backup(id, instance, kind, label, &storage, fill) {
                Ok(b) => b,
                Err(e) => return Ok(Err(e)),
            },
        };
        let address = backup_address(&b);
        let done = self.take_backup(b, &address)?;
        Ok(if done.status == BackupStatus::Completed {
            Ok(())
        } else {
            Err(done.error.unwrap_or_default())
        })
    }

    /// Runs one backup: the record is written `running` first and `completed` only once the
    /// snapshot is durable in the repository.
    pub(super) fn take_backup(
        &mut self,
        mut b: BackupRecord,
        address: &str,
    ) -> Result<BackupRecord, ApplyError> {
        b.status = BackupStatus::Running;
        b.attempts += 1;
        self.put_backup(&b)?;
        crate::failpoint!("backup.running");
        self.journal(
            "backup",
            address,
            Phase::Started,
            &format!("try {}", b.attempts),
        )?;
        let op = self.op_start("backup", address, &b.instance, Some(b.id));
        let started = op.started;
        if let (Some(n), BackupKind::Daily) = (&self.notify, b.kind) {
            n.daily_started();
        }
        // A failed `after_backup` after a backup that completed.
        let mut after_failed: Option<String> = None;
        // Items of the source the engine could not read (the backup then failed).
        let mut unreadable = None;
        // Err: why, and whether a retry can help (not for what this version lacks).
        let result = (|| -> Result<(crate::engine::SnapshotInfo, _), (String, bool)> {
            let source = self.source_of(&b.instance).ok_or_else(|| {
                (
                    format!("`{}` is neither recorded nor in the file", b.instance),
                    false,
                )
            })?;
            let kind = kinds::of(source.kind()).map_err(|e| (e, false))?;
            storage::resolve(self.cfg, &b.storage).map_err(|e| (e, false))?;
            // The operator's `before_backup` (quiesce the application) comes before the kind
            // reads the store (a SQLite copy is made by `backup_source`); `after_backup`
            // follows once it succeeded, whatever the backup's outcome.
            self.instance_hook(&b.instance, "before_backup", |h| &h.before_backup)
                .map_err(|e| (e, true))?;
            let taken = self.backup_engine(&b, &source, kind, &mut unreadable);
            match (
                taken,
                self.instance_hook(&b.instance, "after_backup", |h| &h.after_backup),
            ) {
                (Ok(s), Err(h)) => {
                    after_failed = Some(h);
                    Ok(s)
                }
                (Err((e, retry)), Err(h)) => Err((format!("{e}; then {h}"), retry)),
                (taken, Ok(())) => taken,
            }
        })();
        match result {
            Ok((s, versions)) => {
                crate::failpoint!("backup.before-completed");
                b.versions = versions;
                b.unreadable = None;
                b.status = BackupStatus::Completed;
                b.completed_at = Some(self.now());
                b.snapshot_id = Some(s.id);
                b.size_bytes = Some(Size {
                    read: s.bytes_read,
                    added: s.bytes_added,
                });
                // The data is in the repository even when `after_backup` failed: said beside it.
                b.error = after_failed.clone();
                b.failed_at = None;
                self.put_backup(&b)?;
                crate::failpoint!("backup.completed");
                self.op_end(op, after_failed.is_none(), b.size_bytes);
                self.journal(
                    "backup",
                    address,
                    Phase::Finished,
                    after_failed.as_deref().unwrap_or(""),
                )?;
                let what = format!(
                    "backed up {}, {} ({} added to the repository)",
                    crate::views::count(s.files as usize, "file", "files"),
                    human_bytes(s.bytes_read),
                    human_bytes(s.bytes_added)
                );
                match after_failed {
                    None => self.report.done(address, what),
                    Some(h) => self.report.failed(address, format!("{what}, but {h}")),
                }
            }
            Err((e, retry)) => {
                b.status = BackupStatus::Failed;
                b.failed_at = Some(self.now());
                b.error = Some(e.clone());
                b.unreadable = unreadable;
                if !retry {
                    // What this version lacks (or the file no longer declares) does not come
                    // with a retry.
                    b.attempts = b.attempts.max(crate::plan::planner::MAX_ATTEMPTS);
                    b.error = Some(format!("{e} (not retried)"));
                }
                self.put_backup(&b)?;
                self.op_end(op, false, None);
                self.journal("backup", address, Phase::Failed, &e)?;
                let why = format!("backup failed (try {}): {e}", b.attempts);
                if retry {
                    self.report.failed(address, why);
                } else {
                    self.report.failed_for_good(address, why + " (not retried)");
                }
            }
        }
        let took = Some(started.elapsed());
        self.notify(crate::notify::Event::backup(&b, address, took, self.now()));
        Ok(b)
    }

    /// The kind's source and the engine call of one backup; a temporary copy the kind made
    /// goes, whatever the outcome. Err: why, and that a retry can help.
    fn backup_engine(
        &self,
        b: &BackupRecord,
        source: &Source,
        kind: &dyn kinds::Kind,
        unreadable: &mut Option<crate::records::Unreadable>,
    ) -> Result<(crate::engine::SnapshotInfo, BTreeMap<String, String>), (String, bool)> {
        let what = kind
            .backup_source(source, &b.instance)
            .map_err(|e| (e, true))?;
        let versions = kind.versions(source).inspect_err(|_| {
            kind.backup_finished(source, &b.instance);
        });
        let versions = versions.map_err(|e| (e, true))?;
        crate::failpoint!("backup.before-engine");
        let taken = (|| {
            let repo = self.usable_repo(&b.storage)?;
            // The snapshot carries the whole record (a lost host rebuilds it from there).
            let tags = crate::catalogue::snapshot_tags(&BackupRecord {
                versions: versions.clone(),
                ..b.clone()
            });
            let progress = self.progress.clone();
            match what {
                BackupSource::Tree(path) => {
                    let exclude = self.exclude_of(&b.instance);
                    self.engine
                        .backup_dir(&repo, &path, &exclude, &tags, progress)
                }
                BackupSource::Stream(s) => self.engine.backup_stream(&repo, &s, &tags, progress),
                BackupSource::Written(w) => self.engine.backup_written(&repo, &w, &tags, progress),
            }
            .map_err(|e: EngineError| {
                if let EngineError::Unreadable { total, items, .. } = &e {
                    *unreadable = Some(crate::records::Unreadable {
                        total: *total,
                        paths: items.clone(),
                    });
                }
                e.to_string()
            })
        })();
        crate::failpoint!("backup.stored");
        // A temporary copy the kind made goes, whatever the outcome.
        kind.backup_finished(source, &b.instance);
        taken.map(|s| (s, versions)).map_err(|e| (e, true))
    }

    /// The `exclude` patterns of a directory instance, as the file says now.
    fn exclude_of(&self, instance: &str) -> Vec<String> {
        self.cfg
            .instances
            .get(instance)
            .map(|i| i.exclude.clone())
            .unwrap_or_default()
    }

    pub(super) fn forget_snapshot(&mut self, b: &BackupRecord) -> Result<(), String> {
        let Some(snapshot) = &b.snapshot_id else {
            return Ok(()); // failed or skipped: no data
        };
        let (repo, _) = self.repo(&b.storage)?;
        // Forgotten by a run stopped before it recorded so: only the prune is left to do.
        if (self.engine.find(&repo, b.id).map_err(|e| e.to_string())?).is_empty() {
            self.to_prune.insert(b.storage.clone());
            return Ok(());
        }
        self.engine
            .forget(&repo, std::slice::from_ref(snapshot))
            .map_err(|e| e.to_string())?;
        crate::failpoint!("expire.forgotten");
        self.to_prune.insert(b.storage.clone());
        Ok(())
    }
}

pub(super) fn missing_repository(storage: &str, repo: &Repo, recorded: &std::path::Path) -> String {
    let moved = if recorded != repo.path {
        format!(" (it was at {})", recorded.display())
    } else {
        String::new()
    };
    format!(
        "there is no repository at {}, but storage `{storage}` has used one before{moved}: its backups are recorded; backplan does not create a new empty repository in its place. Mount the disk that holds it, or set `path` to where it is",
        repo.path.display()
    )
}
