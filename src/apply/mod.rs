//! Carrying out a plan: each action and each piece of due work, recorded in the state store
//! before and after (the journal), so that an `apply` killed at any point and run again
//! converges (see [`Executor::recover`]).
//!
//! **The executor decides nothing**: what to do comes from the plan; it only checks, at the
//! moment of doing it, that the preconditions the plan assumed still hold (a restore's backup
//! completed, say), and records what happened.

pub mod hooks;

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::config::values::Retention;
use crate::config::{Config, InstanceType, Source};
use crate::engine::{Engine, EngineError, ProgressSink, Repo, SnapshotTags};
use crate::kinds::{self, BackupSource, RestoreInto};
use crate::plan::{Action, DataFate, Details, Due, DueDetails, Plan, backup_address, fmt_time};
use crate::records::*;
use crate::state::{StateError, Store};
use crate::storage;

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
    /// Failed for a reason a retry cannot change (a kind or storage this version lacks): the
    /// run fails, but the daemon does not try again on its own.
    FailedForGood,
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
    fn failed_for_good(&mut self, address: &str, why: impl Into<String>) {
        self.failed(address, why);
        if let Some(last) = self.lines.last_mut() {
            last.0 = Outcome::FailedForGood;
        }
    }
    pub fn failures(&self) -> usize {
        self.lines.iter().filter(|l| l.0 != Outcome::Done).count()
    }
    /// Failures that a later try may overcome.
    pub fn retriable_failures(&self) -> usize {
        self.lines.iter().filter(|l| l.0 == Outcome::Failed).count()
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
    /// Completed backups per instance, loaded at the first expiry of a run and kept in step
    /// with every write (see [`Self::put_backup`]).
    good: RefCell<Option<GoodBackups>>,
}

type GoodBackups = HashMap<String, HashMap<Uuid, (DateTime<Utc>, DateTime<Utc>)>>;

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
            good: RefCell::new(None),
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
        let r = storage::resolve(self.cfg, storage)?;
        Ok((r.repo, r.may_generate_key))
    }

    /// The repository of a storage, ready for a backup. A repository is created only on the
    /// storage's first use: once one was recorded (or backups were taken to it), a missing one
    /// is an error naming the path (an unmounted disk, a wrong path), and one found there must
    /// be the recorded repository, opened by the key.
    fn usable_repo(&self, storage: &str) -> Result<Repo, String> {
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
                self.engine
                    .ensure(&repo, create_key)
                    .map_err(|e| e.to_string())?;
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
    fn source_of(&self, instance: &str) -> Option<Source> {
        self.store
            .get_instance(instance)
            .ok()
            .flatten()
            .map(|r| r.source)
            .or_else(|| self.cfg.instances.get(instance).map(|i| i.source.clone()))
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
            self.put_backup(&b)?;
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
        for r in rec.instances.values() {
            if let Ok(kind) = kinds::of(r.source.kind()) {
                for line in kind.discard_leftovers(&r.source) {
                    tracing::warn!("{}: {line}", r.name);
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
                let provisioned = kinds::of(source.kind()).and_then(|k| k.provision(source));
                // A creation that failed before keeps its first date (its skipped slots).
                let created_at = self
                    .store
                    .get_instance(instance)?
                    .map_or(now, |r| r.created_at);
                let mut record = InstanceRecord {
                    name: instance.clone(),
                    kind: *kind,
                    version: version.clone(),
                    source: source.clone(),
                    created_at,
                    updated_at: now,
                    error: None,
                    creation_failed: false,
                };
                match provisioned {
                    Ok(how) => {
                        self.store.put_instance(&record)?;
                        self.journal("create", &a.address, Phase::Finished, how)?;
                        self.report.done(&a.address, how);
                    }
                    Err(e) => {
                        // Recorded, so that status shows it and its daily slots are recorded
                        // as skipped with the reason; it is created again at the next run.
                        record.error = Some(format!("creation failed: {e}"));
                        record.creation_failed = true;
                        self.store.put_instance(&record)?;
                        self.journal("create", &a.address, Phase::Failed, &e)?;
                        if kinds::of(source.kind()).is_err() {
                            self.report.failed_for_good(&a.address, e);
                        } else {
                            self.report.failed(&a.address, e);
                        }
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
                    self.put_backup(&b)?;
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
                match b {
                    Ok(b) => {
                        self.take_backup(b, &a.address)?;
                    }
                    Err(e) => self.report.failed(&a.address, e),
                }
            }
            Details::Restore {
                restore,
                from,
                backup,
                to,
                pre_restore_backup,
                ..
            } => self.restore(&a.address, restore, from, *backup, to, *pre_restore_backup)?,
            Details::DeleteBackup {
                id,
                data,
                delete_at,
                ..
            } => {
                let Some(mut b) = self.store.get_backup(*id)? else {
                    return Ok(());
                };
                if *data == DataFate::AlreadyExpired {
                    self.remove_backup(*id)?;
                    self.journal(
                        "delete",
                        &a.address,
                        Phase::Finished,
                        "record of an expired backup",
                    )?;
                    self.report
                        .done(&a.address, "record removed (its data had already expired)");
                    return Ok(());
                }
                // Nothing is deleted now: the data goes after the deletion grace.
                b.status_before_delete = Some(b.status);
                b.status = BackupStatus::Deleting;
                b.delete_at = *delete_at;
                self.put_backup(&b)?;
                let when = delete_at.as_ref().map(fmt_time).unwrap_or_default();
                self.journal(
                    "delete",
                    &a.address,
                    Phase::Started,
                    &format!("data deleted on {when}"),
                )?;
                self.report.done(
                    &a.address,
                    format!("marked for deletion on {when}; restorable by id and revived by putting the key back until then"),
                );
            }
            Details::ReviveBackup {
                id, label, notes, ..
            } => {
                let Some(mut b) = self.store.get_backup(*id)? else {
                    return Ok(());
                };
                if b.status != BackupStatus::Deleting {
                    return Ok(());
                }
                b.status = b
                    .status_before_delete
                    .take()
                    .unwrap_or(if b.snapshot_id.is_some() {
                        BackupStatus::Completed
                    } else {
                        BackupStatus::Failed
                    });
                b.delete_at = None;
                if let Some(c) = label {
                    b.label = c.to.clone();
                }
                if let Some(c) = notes {
                    b.notes = c.to.clone();
                }
                self.put_backup(&b)?;
                self.journal("revive", &a.address, Phase::Finished, "deletion cancelled")?;
                self.report
                    .done(&a.address, "kept: its deletion is cancelled");
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
                match b {
                    Ok(b) => {
                        self.take_backup(b, &d.address)?;
                    }
                    Err(e) => self.report.failed(&d.address, e),
                }
            }
            DueDetails::SkipDaily {
                id,
                instance,
                date,
                slot_at,
                reason,
            } => {
                let mut b = match self.new_backup(
                    *id,
                    instance,
                    BackupKind::Daily,
                    format!("Daily backup {date}"),
                    "local",
                    |b| b.date = Some(*date),
                ) {
                    Ok(b) => b,
                    Err(e) => {
                        self.report.failed(&d.address, e);
                        return Ok(());
                    }
                };
                b.status = BackupStatus::Skipped;
                b.created_at = *slot_at;
                b.expires_at = self.expiry("local", *slot_at);
                b.error = Some(
                    reason
                        .clone()
                        .unwrap_or_else(|| "missed: backplan was not running at the slot".into()),
                );
                self.put_backup(&b)?;
                self.journal("skip", &d.address, Phase::Finished, "missed slot recorded")?;
                self.report
                    .done(&d.address, "missed slot recorded as skipped");
            }
            DueDetails::Retry { id, .. } => {
                if let Some(b) = self.store.get_backup(*id)? {
                    self.take_backup(b, &d.address)?;
                }
            }
            DueDetails::Expire { id, instance, .. } => {
                let Some(mut b) = self.store.get_backup(*id)? else {
                    return Ok(());
                };
                // Checked again now: a follow-up expiry waits for a newer good backup, and
                // `keep_last_good` must hold whatever happened earlier in this run.
                if b.status != BackupStatus::Completed
                    && b.status != BackupStatus::Failed
                    && b.status != BackupStatus::Skipped
                {
                    return Ok(());
                }
                if self.among_last_good(instance, *id)? {
                    self.report.done(
                        &d.address,
                        "kept for now: it is still among the newest good backups (keep_last_good)",
                    );
                    return Ok(());
                }
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
                self.put_backup(&b)?;
                self.journal("expire", &d.address, Phase::Finished, "")?;
                self.report.done(&d.address, "expired");
            }
            DueDetails::Purge { id, data, .. } => {
                let Some(mut b) = self.store.get_backup(*id)? else {
                    return Ok(());
                };
                if b.status != BackupStatus::Deleting {
                    return Ok(()); // revived meanwhile
                }
                self.journal("purge", &d.address, Phase::Started, "")?;
                if *data == DataFate::Deleted
                    && let Err(e) = self.forget_snapshot(&b)
                {
                    self.journal("purge", &d.address, Phase::Failed, &e)?;
                    self.report.failed(&d.address, format!("the backup's data could not be deleted (it stays `deleting` and is tried again): {e}"));
                    return Ok(());
                }
                b.status = BackupStatus::Deleted;
                self.put_backup(&b)?;
                self.journal("purge", &d.address, Phase::Finished, "")?;
                self.report.done(
                    &d.address,
                    if *data == DataFate::Deleted {
                        "deleted after its grace; the record stays as a tombstone"
                    } else {
                        "removed from the catalogue; its data stays in external storage"
                    },
                );
            }
        }
        Ok(())
    }

    /// Whether backup `id` is among the newest `keep_last_good` completed backups of its
    /// instance, as recorded now.
    fn among_last_good(&self, instance: &str, id: Uuid) -> Result<bool, ApplyError> {
        let keep = self.cfg.schedule.keep_last_good as usize;
        if keep == 0 {
            return Ok(false);
        }
        let mut cache = self.good.borrow_mut();
        if cache.is_none() {
            let mut map: GoodBackups = HashMap::new();
            for b in self.store.load()?.backups.into_values() {
                if b.status == BackupStatus::Completed {
                    map.entry(b.instance.clone())
                        .or_default()
                        .insert(b.id, (b.finished_at(), b.created_at));
                }
            }
            *cache = Some(map);
        }
        let mut good: Vec<(DateTime<Utc>, DateTime<Utc>, Uuid)> = cache
            .as_ref()
            .and_then(|m| m.get(instance))
            .map(|g| g.iter().map(|(id, (f, c))| (*f, *c, *id)).collect())
            .unwrap_or_default();
        good.sort_by_key(|g| std::cmp::Reverse(*g));
        Ok(good.iter().take(keep).any(|g| g.2 == id))
    }

    /// Every backup write of the executor goes through here, so that the completed-backup
    /// index used by [`Self::among_last_good`] stays in step with the store.
    fn put_backup(&self, b: &BackupRecord) -> Result<(), ApplyError> {
        self.store.put_backup(b)?;
        if let Some(map) = self.good.borrow_mut().as_mut() {
            let entry = map.entry(b.instance.clone()).or_default();
            if b.status == BackupStatus::Completed {
                entry.insert(b.id, (b.finished_at(), b.created_at));
            } else {
                entry.remove(&b.id);
            }
        }
        Ok(())
    }

    fn remove_backup(&self, id: Uuid) -> Result<(), ApplyError> {
        self.store.remove_backup(id)?;
        if let Some(map) = self.good.borrow_mut().as_mut() {
            for g in map.values_mut() {
                g.remove(&id);
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
            expires_at: self.expiry(storage, now),
            size_bytes: None,
            snapshot_id: None,
            error: None,
            attempts: 0,
            failed_at: None,
            date: None,
            version: None,
            delete_at: None,
            status_before_delete: None,
        };
        fill(&mut b);
        Ok(b)
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
            None => match self.new_backup(id, instance, kind, label, "local", fill) {
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
    fn take_backup(
        &mut self,
        mut b: BackupRecord,
        address: &str,
    ) -> Result<BackupRecord, ApplyError> {
        b.status = BackupStatus::Running;
        b.attempts += 1;
        self.put_backup(&b)?;
        self.journal(
            "backup",
            address,
            Phase::Started,
            &format!("try {}", b.attempts),
        )?;
        // Err: why, and whether a retry can help (not for what this version lacks).
        let result = (|| -> Result<crate::engine::SnapshotInfo, (String, bool)> {
            let source = self.source_of(&b.instance).ok_or_else(|| {
                (
                    format!("`{}` is neither recorded nor in the file", b.instance),
                    false,
                )
            })?;
            let kind = kinds::of(source.kind()).map_err(|e| (e, false))?;
            storage::resolve(self.cfg, &b.storage).map_err(|e| (e, false))?;
            let what = kind
                .backup_source(&source, &b.instance)
                .map_err(|e| (e, true))?;
            let repo = self.usable_repo(&b.storage).map_err(|e| (e, true))?;
            let tags = SnapshotTags {
                instance: b.instance.clone(),
                backup: b.id,
                kind: b.kind.as_str().to_string(),
            };
            let progress = self.progress.clone();
            match what {
                BackupSource::Tree(path) => self.engine.backup_dir(&repo, &path, &tags, progress),
                BackupSource::Stream(s) => self.engine.backup_stream(&repo, &s, &tags, progress),
            }
            .map_err(|e: EngineError| (e.to_string(), true))
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
                self.put_backup(&b)?;
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
            Err((e, retry)) => {
                b.status = BackupStatus::Failed;
                b.failed_at = Some(self.now());
                b.error = Some(e.clone());
                if !retry {
                    // What this version lacks (or the file no longer declares) does not come
                    // with a retry.
                    b.attempts = b.attempts.max(crate::plan::planner::MAX_ATTEMPTS);
                    b.error = Some(format!("{e} (not retried)"));
                }
                self.put_backup(&b)?;
                self.journal("backup", address, Phase::Failed, &e)?;
                let why = format!("backup failed (try {}): {e}", b.attempts);
                if retry {
                    self.report.failed(address, why);
                } else {
                    self.report.failed_for_good(address, why + " (not retried)");
                }
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
            Ok(None) => {
                record.status = RestoreStatus::Completed;
                record.completed_at = Some(self.now());
                self.store.put_restore(&record)?;
                self.journal("restore", address, Phase::Finished, "")?;
                self.report.done(address, format!("{to} now holds {from}"));
            }
            Ok(Some(warning)) => {
                // Swapped: the record says what the target holds, and what went wrong after.
                record.status = RestoreStatus::Completed;
                record.completed_at = Some(self.now());
                record.error = Some(warning.clone());
                self.store.put_restore(&record)?;
                self.journal("restore", address, Phase::Finished, &warning)?;
                self.report
                    .failed(address, format!("{to} now holds {from}, but {warning}"));
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
    ) -> Result<Result<Option<String>, String>, ApplyError> {
        // Only a sandbox, checked again at the last moment.
        let target = self.store.get_instance(to)?;
        match &target {
            Some(t) if t.creation_failed => {
                return Ok(Err(format!(
                    "`{to}` could not be created ({}); nothing was restored",
                    t.error.as_deref().unwrap_or("no reason recorded")
                )));
            }
            Some(t) if t.kind == InstanceType::Sandbox => {}
            Some(_) => {
                return Ok(Err(format!(
                    "`{to}` is a production instance; restores go into sandboxes only"
                )));
            }
            None => return Ok(Err(format!("`{to}` is not a managed instance"))),
        }
        let Some(source) = self.source_of(to) else {
            return Ok(Err(format!("`{to}` is neither recorded nor in the file")));
        };
        let kind = match kinds::of(source.kind()) {
            Ok(k) => k,
            Err(e) => return Ok(Err(e)),
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
        // An empty id would be read as a prefix of every snapshot.
        let Some(snapshot) = b.snapshot_id.clone().filter(|s| !s.trim().is_empty()) else {
            return Ok(Err(format!(
                "backup {} is recorded as completed but without a snapshot id; nothing was restored",
                backup_address(&b)
            )));
        };
        // The target, opened and checked before anything is written: replaceable atomically,
        // and reaching no other store.
        let protected = match self.protected_paths(to) {
            Ok(p) => p,
            Err(e) => return Ok(Err(e)),
        };
        let target = match kind
            .open_target(&source)
            .and_then(|t| t.check_apart_from(&protected).map(|()| t))
        {
            Ok(t) => t,
            Err(e) => return Ok(Err(e)),
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
        let repo = match self.usable_repo(&b.storage) {
            Ok(r) => r,
            Err(e) => return Ok(Err(e)),
        };
        let restored = target.stage(key).and_then(|into| match into {
            RestoreInto::Tree(path) => self
                .engine
                .restore_dir(&repo, &snapshot, &path, self.progress.clone())
                .map(|_| ())
                .map_err(|e| e.to_string()),
            RestoreInto::Stream { name, mut sink } => self
                .engine
                .restore_stream(&repo, &snapshot, &name, &mut sink)
                .map(|_| ())
                .map_err(|e| e.to_string()),
        });
        if let Err(e) = restored
            .and_then(|()| target.prepare(key))
            // 3. Checked again right before the swap.
            .and_then(|()| target.check_apart_from(&protected))
        {
            target.discard(key);
            return Ok(Err(e));
        }
        self.journal("swap", address, Phase::Started, "")?;
        if let Err(e) = target.commit(key) {
            target.discard(key);
            return Ok(Err(e));
        }
        // From here the target holds the restored data, whatever fails next.
        self.journal("swap", address, Phase::Finished, "")?;
        Ok(Ok(target.finish(key).err()))
    }

    /// What a restore into `to` must never reach: backplan's state folder, its repositories
    /// and key files, and every other instance's store.
    fn protected_paths(&self, to: &str) -> Result<Vec<(String, PathBuf)>, String> {
        let mut out = vec![(
            "backplan's state folder".to_string(),
            self.cfg.daemon.state_dir.clone(),
        )];
        out.extend(storage::own_paths(self.cfg));
        let recorded = self.store.load().map_err(|e| e.to_string())?;
        let sources = self
            .cfg
            .instances
            .values()
            .map(|i| (&i.name, &i.source))
            .chain(recorded.instances.values().map(|r| (&r.name, &r.source)));
        for (name, source) in sources {
            if name == to {
                continue;
            }
            if let Some(path) = kinds::of(source.kind())
                .ok()
                .and_then(|k| k.store_path(source))
            {
                out.push((format!("the data of instance `{name}`"), path));
            }
        }
        Ok(out)
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

fn missing_repository(storage: &str, repo: &Repo, recorded: &std::path::Path) -> String {
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
