//! Carrying out a plan: each action and each piece of due work, recorded in the state store
//! before and after (the journal), so that an `apply` killed at any point and run again
//! converges (see [`Executor::recover`]).
//!
//! **The executor decides nothing**: what to do comes from the plan; it only checks, at the
//! moment of doing it, that the preconditions the plan assumed still hold (a restore's backup
//! completed, say), and records what happened.

pub mod directory;
pub mod hooks;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::config::values::Retention;
use crate::config::{Config, InstanceType, Source, SourceKind, StorageLocation};
use crate::engine::{Engine, EngineError, ProgressSink, Repo, SnapshotTags};
use crate::plan::{Action, DataFate, Details, Due, DueDetails, Plan, backup_address};
use crate::records::*;
use crate::state::{StateError, Store};

/// Errors that stop an apply. A failing *operation* is not one of them: it is recorded (the
/// backup `failed`, the instance in error) and the apply goes on with independent work.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error(transparent)]
    State(#[from] StateError),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Done,
    Failed,
}

/// What happened, one line per action or due item, in order.
#[derive(Debug, Default)]
pub struct Report {
    pub lines: Vec<(Outcome, String, String)>,
    /// Print each line on stdout as it happens (the CLI), besides logging it.
    pub echo: bool,
}

impl Report {
    fn done(&mut self, address: &str, what: impl Into<String>) {
        let what = what.into();
        tracing::info!(address, "{what}");
        if self.echo {
            println!("  ok   {address}: {what}");
        }
        self.lines.push((Outcome::Done, address.to_string(), what));
    }
    fn failed(&mut self, address: &str, why: impl Into<String>) {
        let why = why.into();
        tracing::error!(address, "{why}");
        if self.echo {
            println!("  FAIL {address}: {why}");
        }
        self.lines.push((Outcome::Failed, address.to_string(), why));
    }
    pub fn failures(&self) -> usize {
        self.lines.iter().filter(|l| l.0 == Outcome::Failed).count()
    }
}

/// What `apply` cannot carry out yet, so that it refuses before doing anything.
pub fn unsupported(cfg: &Config, plan: &Plan) -> Vec<String> {
    let mut out = BTreeSet::new();
    for (name, inst) in &cfg.instances {
        let touched = plan
            .actions
            .iter()
            .any(|a| a.address == format!("instance.{name}"))
            || plan.due.iter().any(|d| due_instance(d) == name);
        if touched && inst.source.kind() != SourceKind::Directory {
            out.insert(format!(
                "instance `{name}` is a {} instance; this version of backplan applies plans to directory instances only",
                inst.source.kind()
            ));
        }
    }
    for a in &plan.actions {
        if let Details::CreateBackup { storage, .. } = &a.details
            && cfg.storages.get(storage).is_some_and(|s| s.is_external())
        {
            out.insert(format!(
                    "{}: storage `{storage}` is external ({}); this version of backplan writes to local repositories only",
                    a.address,
                    cfg.storages[storage].kind()
                ));
        }
    }
    out.into_iter().collect()
}

fn due_instance(d: &Due) -> &str {
    match &d.details {
        DueDetails::DailyBackup { instance, .. }
        | DueDetails::SkipDaily { instance, .. }
        | DueDetails::Retry { instance, .. }
        | DueDetails::Expire { instance, .. } => instance,
    }
}

pub struct Executor<'a> {
    pub cfg: &'a Config,
    pub store: &'a Store,
    pub engine: &'a dyn Engine,
    pub progress: Arc<dyn ProgressSink>,
    /// The clock for recorded times (injectable for tests).
    pub clock: &'a (dyn Fn() -> DateTime<Utc> + Sync),
    /// Repositories with deleted snapshots, pruned once at the end.
    to_prune: BTreeSet<String>,
    pub report: Report,
    /// Set to stop before the next action (the daemon's shutdown); the action under way
    /// finishes.
    pub stop: Option<Arc<AtomicBool>>,
}

impl<'a> Executor<'a> {
    pub fn new(
        cfg: &'a Config,
        store: &'a Store,
        engine: &'a dyn Engine,
        progress: Arc<dyn ProgressSink>,
        clock: &'a (dyn Fn() -> DateTime<Utc> + Sync),
    ) -> Self {
        Executor {
            cfg,
            store,
            engine,
            progress,
            clock,
            to_prune: BTreeSet::new(),
            report: Report::default(),
            stop: None,
        }
    }

    fn now(&self) -> DateTime<Utc> {
        (self.clock)()
    }

    fn journal(
        &self,
        op: &str,
        address: &str,
        phase: Phase,
        detail: &str,
    ) -> Result<(), ApplyError> {
        self.store.journal(self.now(), op, address, phase, detail)?;
        crate::heartbeat::beat();
        crash_point(op, phase);
        Ok(())
    }

    /// The repository of a storage, and whether backplan may generate its key.
    fn repo(&self, storage: &str) -> Result<(Repo, bool), String> {
        let s = self
            .cfg
            .storages
            .get(storage)
            .ok_or_else(|| format!("storage `{storage}` is not declared in the file"))?;
        match &s.location {
            StorageLocation::Local { path } => Ok((
                Repo {
                    path: path.clone(),
                    password_file: s
                        .password_file
                        .clone()
                        .unwrap_or_else(|| generated_key_path(self.cfg, storage)),
                },
                s.password_file.is_none(),
            )),
            _ => Err(format!(
                "storage `{storage}` is {}; this version of backplan writes to local repositories only",
                s.kind()
            )),
        }
    }

    fn directory_of(&self, instance: &str) -> Option<PathBuf> {
        let source = self
            .cfg
            .instances
            .get(instance)
            .map(|i| i.source.clone())
            .or_else(|| {
                self.store
                    .get_instance(instance)
                    .ok()
                    .flatten()
                    .map(|r| r.source)
            })?;
        match source {
            Source::Directory { path } => Some(path),
            _ => None,
        }
    }

    // -----------------------------------------------------------------------------------------
    // Recovery: converge what an interrupted run left behind. Idempotent.

    /// Resolves interrupted work: a backup left `pending` or `running` is `completed` if its
    /// snapshot reached the repository, `failed` otherwise (then retried on schedule); a
    /// restore interrupted before its swap is forgotten (planned again), one interrupted after
    /// it is `completed`; staging folders are removed.
    pub fn recover(&mut self) -> Result<(), ApplyError> {
        let rec = self.store.load()?;
        let mut interrupted = Vec::new();
        for b in rec.backups.values() {
            if !matches!(b.status, BackupStatus::Pending | BackupStatus::Running) {
                continue;
            }
            let mut b = b.clone();
            let found = self
                .repo(&b.storage)
                .map_err(|e| e.to_string())
                .and_then(|(repo, _)| self.engine.find(&repo, b.id).map_err(|e| e.to_string()));
            match found {
                Ok(snaps) if !snaps.is_empty() => {
                    let s = &snaps[0];
                    b.status = BackupStatus::Completed;
                    b.completed_at = Some(s.time);
                    b.snapshot_id = Some(s.id.clone());
                    b.size_bytes = Some(Size {
                        read: s.bytes_read,
                        added: s.bytes_added,
                    });
                    b.error = None;
                }
                Ok(_) => {
                    // Interrupted before its snapshot was saved: take it again now (same id,
                    // so it cannot be stored twice).
                    interrupted.push(b);
                    continue;
                }
                Err(e) => {
                    b.status = BackupStatus::Failed;
                    b.attempts += 1;
                    b.failed_at = Some(self.now());
                    b.error = Some(format!(
                        "interrupted; the repository could not be checked: {e}"
                    ));
                }
            }
            self.store.put_backup(&b)?;
            self.journal(
                "recover",
                &backup_address(&b),
                Phase::Finished,
                &format!("{}", b.status),
            )?;
        }
        for b in interrupted {
            let address = backup_address(&b);
            self.journal(
                "recover",
                &address,
                Phase::Started,
                "interrupted before its snapshot was saved; taking it again",
            )?;
            self.take_backup(b, &address)?;
        }
        let journal = self.store.journal_entries()?;
        for r in rec.restores.values() {
            if !matches!(r.status, RestoreStatus::Pending | RestoreStatus::Running) {
                continue;
            }
            let address = format!("restore.{}", r.key);
            let swapped = journal
                .iter()
                .any(|e| e.address == address && e.op == "swap" && e.phase == Phase::Finished);
            if swapped {
                let mut r = r.clone();
                r.status = RestoreStatus::Completed;
                r.completed_at = Some(self.now());
                self.store.put_restore(&r)?;
            } else {
                // The target was never touched: forget the attempt so the plan runs it again.
                self.store.remove_restore(&r.key)?;
            }
            self.journal(
                "recover",
                &address,
                Phase::Finished,
                if swapped {
                    "completed"
                } else {
                    "will run again"
                },
            )?;
        }
        for name in rec.instances.keys() {
            if let Some(dir) = self.directory_of(name) {
                for leftover in directory::leftover_staging(&dir) {
                    tracing::warn!("removing leftover staging folder {}", leftover.display());
                    if let Err(e) = std::fs::remove_dir_all(&leftover) {
                        tracing::error!("cannot remove {}: {e}", leftover.display());
                    }
                }
            }
        }
        Ok(())
    }

    // -----------------------------------------------------------------------------------------
    // The plan.

    fn stopping(&self) -> bool {
        self.stop.as_ref().is_some_and(|s| s.load(Ordering::SeqCst))
    }

    pub fn run(&mut self, plan: &Plan) -> Result<(), ApplyError> {
        for a in &plan.actions {
            if self.stopping() {
                return Ok(());
            }
            self.action(a)?;
        }
        for d in &plan.due {
            if self.stopping() {
                return Ok(());
            }
            self.due(d)?;
        }
        let storages: Vec<String> = std::mem::take(&mut self.to_prune).into_iter().collect();
        for storage in storages {
            if let Ok((repo, _)) = self.repo(&storage) {
                let address = format!("storage.{storage}");
                self.journal("prune", &address, Phase::Started, "")?;
                match self.engine.prune(&repo) {
                    Ok(()) => {
                        self.journal("prune", &address, Phase::Finished, "")?;
                        self.report.done(&address, "pruned");
                    }
                    Err(e) => {
                        self.journal("prune", &address, Phase::Failed, &e.to_string())?;
                        self.report.failed(&address, format!("prune failed: {e}"));
                    }
                }
            }
        }
        Ok(())
    }

    fn action(&mut self, a: &Action) -> Result<(), ApplyError> {
        let now = self.now();
        match &a.details {
            Details::CreateInstance {
                instance,
                kind,
                version,
                source,
            } => {
                let provisioned = match source {
                    Source::Directory { path } => {
                        directory::provision(path).map_err(|e| e.to_string())
                    }
                    other => Err(format!("{} instances are not supported yet", other.kind())),
                };
                match provisioned {
                    Ok(how) => {
                        self.store.put_instance(&InstanceRecord {
                            name: instance.clone(),
                            kind: *kind,
                            version: version.clone(),
                            source: source.clone(),
                            created_at: now,
                            updated_at: now,
                            error: None,
                        })?;
                        self.journal("create", &a.address, Phase::Finished, how)?;
                        self.report.done(&a.address, how);
                    }
                    Err(e) => {
                        self.journal("create", &a.address, Phase::Failed, &e)?;
                        self.report.failed(&a.address, e);
                    }
                }
            }
            Details::SwitchInstance { instance, kind } => {
                self.update_instance(instance, |r| r.kind = kind.to)?;
                self.journal(
                    "switch",
                    &a.address,
                    Phase::Finished,
                    &format!("{} -> {}", kind.from, kind.to),
                )?;
                self.report
                    .done(&a.address, format!("switched to {}", kind.to));
            }
            Details::UpdateInstance {
                instance,
                version,
                pre_update_backup,
                on_update,
            } => {
                self.journal(
                    "update",
                    &a.address,
                    Phase::Started,
                    &format!("{} -> {}", version.from, version.to),
                )?;
                let backup = self.system_backup(
                    *pre_update_backup,
                    instance,
                    BackupKind::PreUpdate,
                    format!("Before update to {}", version.to),
                    |b| b.version = Some(version.to.clone()),
                )?;
                if let Err(e) = backup {
                    let why =
                        format!("the pre-update backup failed, so the update did not run: {e}");
                    self.update_instance(instance, |r| r.error = Some(why.clone()))?;
                    self.journal("update", &a.address, Phase::Failed, &why)?;
                    self.report.failed(&a.address, why);
                    return Ok(());
                }
                let hook = hooks::run(
                    &format!("{} on_update", a.address),
                    on_update,
                    &hooks::secret_env_names(self.cfg),
                    self.stop.as_deref(),
                    hooks::Limits::default(),
                );
                if let Err(why) = hook {
                    let why = format!(
                        "on_update failed, the version stays {}: {why}",
                        version.from
                    );
                    self.update_instance(instance, |r| r.error = Some(why.clone()))?;
                    self.journal("update", &a.address, Phase::Failed, &why)?;
                    self.report.failed(&a.address, why);
                    return Ok(());
                }
                self.update_instance(instance, |r| {
                    r.version = version.to.clone();
                    r.error = None;
                })?;
                self.journal("update", &a.address, Phase::Finished, "")?;
                self.report
                    .done(&a.address, format!("updated to {}", version.to));
            }
            Details::UpdateBackup {
                id, label, notes, ..
            } => {
                if let Some(mut b) = self.store.get_backup(*id)? {
                    if let Some(c) = label {
                        b.label = c.to.clone();
                    }
                    if let Some(c) = notes {
                        b.notes = c.to.clone();
                    }
                    self.store.put_backup(&b)?;
                    self.journal("update", &a.address, Phase::Finished, "metadata")?;
                    self.report.done(&a.address, "label and notes updated");
                }
            }
            Details::CreateBackup {
                id,
                instance,
                key,
                label,
                notes,
                storage,
                ..
            } => {
                let b = self.new_backup(
                    *id,
                    instance,
                    BackupKind::OnDemand,
                    label.clone(),
                    storage,
                    |b| {
                        b.key = Some(key.clone());
                        b.notes = notes.clone();
                    },
                );
                self.take_backup(b, &a.address)?;
            }
            Details::Restore {
                restore,
                from,
                backup,
                to,
                pre_restore_backup,
                ..
            } => self.restore(&a.address, restore, from, *backup, to, *pre_restore_backup)?,
            Details::DeleteBackup { id, data, .. } => {
                let Some(mut b) = self.store.get_backup(*id)? else {
                    return Ok(());
                };
                b.status = BackupStatus::Deleting;
                self.store.put_backup(&b)?;
                self.journal("delete", &a.address, Phase::Started, "")?;
                if *data == DataFate::Deleted
                    && let Err(e) = self.forget_snapshot(&b)
                {
                    self.journal("delete", &a.address, Phase::Failed, &e)?;
                    self.report.failed(&a.address, format!("the backup's data could not be deleted (it stays `deleting` and is tried again): {e}"));
                    return Ok(());
                }
                self.store.remove_backup(*id)?;
                self.journal("delete", &a.address, Phase::Finished, "")?;
                self.report.done(&a.address, "deleted");
            }
            Details::ForgetInstance { instance, .. } => {
                self.store.remove_instance(instance)?;
                self.journal(
                    "forget",
                    &a.address,
                    Phase::Finished,
                    "its data was not touched",
                )?;
                self.report
                    .done(&a.address, "forgotten; its data was not touched");
            }
        }
        Ok(())
    }

    fn due(&mut self, d: &Due) -> Result<(), ApplyError> {
        match &d.details {
            DueDetails::DailyBackup {
                id, instance, date, ..
            } => {
                let b = self.new_backup(
                    *id,
                    instance,
                    BackupKind::Daily,
                    format!("Daily backup {date}"),
                    "local",
                    |b| b.date = Some(*date),
                );
                self.take_backup(b, &d.address)?;
            }
            DueDetails::SkipDaily {
                id,
                instance,
                date,
                slot_at,
            } => {
                let mut b = self.new_backup(
                    *id,
                    instance,
                    BackupKind::Daily,
                    format!("Daily backup {date}"),
                    "local",
                    |b| b.date = Some(*date),
                );
                b.status = BackupStatus::Skipped;
                b.created_at = *slot_at;
                b.expires_at = self.expiry("local", *slot_at);
                b.error = Some("missed: backplan was not running at the slot".into());
                self.store.put_backup(&b)?;
                self.journal("skip", &d.address, Phase::Finished, "missed slot recorded")?;
                self.report
                    .done(&d.address, "missed slot recorded as skipped");
            }
            DueDetails::Retry { id, .. } => {
                if let Some(b) = self.store.get_backup(*id)? {
                    self.take_backup(b, &d.address)?;
                }
            }
            DueDetails::Expire { id, .. } => {
                let Some(mut b) = self.store.get_backup(*id)? else {
                    return Ok(());
                };
                self.journal("expire", &d.address, Phase::Started, "")?;
                if let Err(e) = self.forget_snapshot(&b) {
                    self.journal("expire", &d.address, Phase::Failed, &e)?;
                    self.report.failed(
                        &d.address,
                        format!("expiry failed (tried again later): {e}"),
                    );
                    return Ok(());
                }
                b.status = BackupStatus::Expired;
                self.store.put_backup(&b)?;
                self.journal("expire", &d.address, Phase::Finished, "")?;
                self.report.done(&d.address, "expired");
            }
        }
        Ok(())
    }

    // -----------------------------------------------------------------------------------------
    // Backups.

    fn expiry(&self, storage: &str, from: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self.cfg.storages.get(storage).map(|s| s.retention) {
            Some(Retention::Forever) => None,
            Some(Retention::For(d)) => Some(from + d.to_chrono()),
            None => Some(from + self.cfg.schedule.retention.to_chrono()),
        }
    }

    fn new_backup(
        &self,
        id: Uuid,
        instance: &str,
        kind: BackupKind,
        label: String,
        storage: &str,
        fill: impl FnOnce(&mut BackupRecord),
    ) -> BackupRecord {
        let now = self.now();
        let source_kind = self
            .cfg
            .instances
            .get(instance)
            .map(|i| i.source.kind())
            .unwrap_or(SourceKind::Directory);
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
            expires_at: self.expiry(storage, now),
            size_bytes: None,
            snapshot_id: None,
            error: None,
            attempts: 0,
            failed_at: None,
            date: None,
            version: None,
        };
        fill(&mut b);
        b
    }

    /// Takes a system backup unless a completed one with this id exists already (a re-run
    /// after a crash). Returns the failure, if any.
    fn system_backup(
        &mut self,
        id: Uuid,
        instance: &str,
        kind: BackupKind,
        label: String,
        fill: impl FnOnce(&mut BackupRecord),
    ) -> Result<Result<(), String>, ApplyError> {
        let existing = self.store.get_backup(id)?;
        let b = match existing {
            Some(b) if b.status == BackupStatus::Completed => return Ok(Ok(())),
            Some(b) => b,
            None => self.new_backup(id, instance, kind, label, "local", fill),
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
    fn take_backup(
        &mut self,
        mut b: BackupRecord,
        address: &str,
    ) -> Result<BackupRecord, ApplyError> {
        b.status = BackupStatus::Running;
        b.attempts += 1;
        self.store.put_backup(&b)?;
        self.journal(
            "backup",
            address,
            Phase::Started,
            &format!("try {}", b.attempts),
        )?;
        let result = (|| -> Result<crate::engine::SnapshotInfo, String> {
            let path = self
                .directory_of(&b.instance)
                .ok_or_else(|| format!("instance `{}` is not a directory instance", b.instance))?;
            let (repo, create_key) = self.repo(&b.storage)?;
            self.engine
                .ensure(&repo, create_key)
                .map_err(|e| e.to_string())?;
            let tags = SnapshotTags {
                instance: b.instance.clone(),
                backup: b.id,
                kind: b.kind.as_str().to_string(),
            };
            self.engine
                .backup_dir(&repo, &path, &tags, self.progress.clone())
                .map_err(|e: EngineError| e.to_string())
        })();
        match result {
            Ok(s) => {
                b.status = BackupStatus::Completed;
                b.completed_at = Some(self.now());
                b.snapshot_id = Some(s.id);
                b.size_bytes = Some(Size {
                    read: s.bytes_read,
                    added: s.bytes_added,
                });
                b.error = None;
                b.failed_at = None;
                self.store.put_backup(&b)?;
                self.journal("backup", address, Phase::Finished, "")?;
                self.report.done(
                    address,
                    format!(
                        "backed up {} files, {} ({} added to the repository)",
                        s.files,
                        human_bytes(s.bytes_read),
                        human_bytes(s.bytes_added)
                    ),
                );
            }
            Err(e) => {
                b.status = BackupStatus::Failed;
                b.failed_at = Some(self.now());
                b.error = Some(e.clone());
                self.store.put_backup(&b)?;
                self.journal("backup", address, Phase::Failed, &e)?;
                self.report
                    .failed(address, format!("backup failed (try {}): {e}", b.attempts));
            }
        }
        Ok(b)
    }

    fn forget_snapshot(&mut self, b: &BackupRecord) -> Result<(), String> {
        let Some(snapshot) = &b.snapshot_id else {
            return Ok(()); // failed or skipped: no data
        };
        let (repo, _) = self.repo(&b.storage)?;
        self.engine
            .forget(&repo, std::slice::from_ref(snapshot))
            .map_err(|e| e.to_string())?;
        self.to_prune.insert(b.storage.clone());
        Ok(())
    }

    fn update_instance(
        &self,
        name: &str,
        f: impl FnOnce(&mut InstanceRecord),
    ) -> Result<(), ApplyError> {
        if let Some(mut r) = self.store.get_instance(name)? {
            f(&mut r);
            r.updated_at = self.now();
            self.store.put_instance(&r)?;
        }
        Ok(())
    }

    // -----------------------------------------------------------------------------------------
    // Restores.

    fn restore(
        &mut self,
        address: &str,
        key: &str,
        from: &str,
        backup: Uuid,
        to: &str,
        safety: Uuid,
    ) -> Result<(), ApplyError> {
        let mut record = RestoreRecord {
            key: key.to_string(),
            from: from.to_string(),
            backup_id: Some(backup),
            to: to.to_string(),
            status: RestoreStatus::Running,
            requested_at: self.now(),
            completed_at: None,
            safety_backup: Some(safety),
            error: None,
        };
        self.store.put_restore(&record)?;
        self.journal(
            "restore",
            address,
            Phase::Started,
            &format!("{from} -> {to}"),
        )?;
        let result = self.restore_steps(address, key, backup, to, safety);
        match result? {
            Ok(()) => {
                record.status = RestoreStatus::Completed;
                record.completed_at = Some(self.now());
                self.store.put_restore(&record)?;
                self.journal("restore", address, Phase::Finished, "")?;
                self.report.done(address, format!("{to} now holds {from}"));
            }
            Err(e) => {
                record.status = RestoreStatus::Failed;
                record.completed_at = Some(self.now());
                record.error = Some(e.clone());
                self.store.put_restore(&record)?;
                self.journal("restore", address, Phase::Failed, &e)?;
                self.report.failed(
                    address,
                    format!("restore failed, {to} was left as it was: {e}"),
                );
            }
        }
        Ok(())
    }

    fn restore_steps(
        &mut self,
        address: &str,
        key: &str,
        backup: Uuid,
        to: &str,
        safety: Uuid,
    ) -> Result<Result<(), String>, ApplyError> {
        // Only a sandbox, checked again at the last moment.
        let target = self.store.get_instance(to)?;
        match &target {
            Some(t) if t.kind == InstanceType::Sandbox => {}
            Some(_) => {
                return Ok(Err(format!(
                    "`{to}` is a production instance; restores go into sandboxes only"
                )));
            }
            None => return Ok(Err(format!("`{to}` is not a managed instance"))),
        }
        let Some(target) = self.directory_of(to) else {
            return Ok(Err(format!("`{to}` is not a directory instance")));
        };
        let b = match self.store.get_backup(backup)? {
            Some(b) if b.status == BackupStatus::Completed => b,
            Some(b) => {
                return Ok(Err(format!(
                    "backup {} is {}, not completed",
                    backup_address(&b),
                    b.status
                )));
            }
            None => return Ok(Err(format!("backup {backup} is not recorded"))),
        };
        // 1. A safety backup of the target as it is now.
        if let Err(e) = self.system_backup(
            safety,
            to,
            BackupKind::PreRestore,
            format!("Before restore {key}"),
            |_| (),
        )? {
            return Ok(Err(format!(
                "the pre-restore backup of {to} failed, so nothing was restored: {e}"
            )));
        }
        // 2. Restore beside the target.
        let staging = directory::staging_path(&target, key);
        if staging.exists() {
            let _ = std::fs::remove_dir_all(&staging);
        }
        let (repo, _) = match self.repo(&b.storage) {
            Ok(r) => r,
            Err(e) => return Ok(Err(e)),
        };
        let snapshot = b.snapshot_id.clone().unwrap_or_default();
        if let Err(e) = self
            .engine
            .restore_dir(&repo, &snapshot, &staging, self.progress.clone())
        {
            let _ = std::fs::remove_dir_all(&staging);
            return Ok(Err(e.to_string()));
        }
        if let Err(e) = directory::copy_root_metadata(&target, &staging) {
            let _ = std::fs::remove_dir_all(&staging);
            return Ok(Err(format!("preparing the restored tree: {e}")));
        }
        // 3. Swap, durably, then remove the old tree (now at the staging path).
        self.journal("swap", address, Phase::Started, "")?;
        let parent = target.parent().map(PathBuf::from).unwrap_or_default();
        if let Err(e) =
            directory::exchange(&staging, &target).and_then(|()| directory::sync_dir(&parent))
        {
            let _ = std::fs::remove_dir_all(&staging);
            return Ok(Err(format!("swapping the restored tree into place: {e}")));
        }
        self.journal("swap", address, Phase::Finished, "")?;
        if let Err(e) = std::fs::remove_dir_all(&staging) {
            tracing::warn!(
                "the old tree at {} could not be removed: {e}",
                staging.display()
            );
        }
        Ok(Ok(()))
    }
}

/// Fault injection for the crash-safety tests: with `BACKPLAN_CRASH_AFTER=<op>:<phase>`
/// (like `swap:started`), the process kills itself with SIGKILL right after journaling that
/// step, exactly as a power cut or `kill -9` would stop it there. `BACKPLAN_HANG_AFTER` stops
/// there for good instead, as a hung operation would (the watchdog tests).
fn crash_point(op: &str, phase: Phase) {
    let here = format!("{op}:{}", format!("{phase:?}").to_lowercase());
    if std::env::var_os("BACKPLAN_HANG_AFTER").is_some_and(|at| at.to_string_lossy() == here) {
        loop {
            std::thread::park();
        }
    }
    let Some(at) = std::env::var_os("BACKPLAN_CRASH_AFTER") else {
        return;
    };
    if at.to_string_lossy() == here {
        // SAFETY: kill(2) on our own pid; SIGKILL cannot be caught, nothing runs after it.
        unsafe {
            libc::kill(libc::getpid(), libc::SIGKILL);
        }
    }
}

/// Where backplan keeps the key it generated for a storage without `password_file`.
pub fn generated_key_path(cfg: &Config, storage: &str) -> PathBuf {
    cfg.daemon
        .state_dir
        .join("keys")
        .join(format!("{storage}.key"))
}

pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1024.0 && i < UNITS.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[i])
    }
}
