//! Carrying out a plan: each action and each piece of due work, recorded in the state store
//! before and after (the journal), so that an `apply` killed at any point and run again
//! converges (see [`Executor::recover`]).
//!
//! **The executor decides nothing**: what to do comes from the plan; it only checks, at the
//! moment of doing it, that the preconditions the plan assumed still hold (a restore's backup
//! completed, say), and records what happened.

mod backup;
mod drill;
pub mod hooks;
mod recovery;
mod restore;
mod retag;

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
    /// The daemon's counters: every operation that ends is counted there.
    pub metrics: Option<Arc<crate::metrics::Metrics>>,
    /// The daemon's notifier (`[notify]`): terminal events go there.
    pub notify: Option<Arc<crate::notify::Notifier>>,
}

/// An operation under way (see [`Executor::op_start`]).
struct Op {
    name: &'static str,
    address: String,
    instance: String,
    backup: String,
    started: std::time::Instant,
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
            metrics: None,
            notify: None,
        }
    }

    /// A terminal event for `[notify]` (queued; never waits).
    fn notify(&self, event: crate::notify::Event) {
        if let Some(n) = &self.notify {
            n.emit(event);
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
        #[cfg(debug_assertions)]
        crash_point(op, phase);
        Ok(())
    }

    /// An operation starts: one log line (so that the log alone tells the story).
    fn op_start(
        &self,
        name: &'static str,
        address: &str,
        instance: &str,
        backup: Option<Uuid>,
    ) -> Op {
        let id = backup.map_or_else(|| "-".to_string(), |b| b.to_string());
        tracing::info!(op = name, address, instance, backup = %id, "{name} started");
        Op {
            name,
            address: address.to_string(),
            instance: instance.to_string(),
            backup: id,
            started: std::time::Instant::now(),
        }
    }

    /// An operation ends: one log line with its duration and bytes (a backup's read and
    /// added; the size of the backup restored, expired or purged), and the metrics.
    fn op_end(&self, op: Op, ok: bool, bytes: Option<Size>) {
        let took = op.started.elapsed();
        let secs = format!("{:.3}", took.as_secs_f64());
        let read = bytes.map(|b| b.read);
        let added = bytes.filter(|_| op.name == "backup").map(|b| b.added);
        let (name, address, instance, backup) = (op.name, &op.address, &op.instance, &op.backup);
        if ok {
            tracing::info!(op = name, address, instance, backup = %backup, duration_s = %secs, bytes = read, bytes_added = added, "{name} finished");
        } else {
            tracing::warn!(op = name, address, instance, backup = %backup, duration_s = %secs, bytes = read, bytes_added = added, "{name} failed");
        }
        if let Some(m) = &self.metrics {
            let bytes = added.and(bytes).map(|b| (b.read, b.added));
            m.operation(name, instance, ok, took, bytes);
        }
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
        self.rewrite_pending_tags()?;
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
                let op = self.op_start("prune", &address, "-", None);
                match self.engine.prune(&repo) {
                    Ok(()) => {
                        crate::failpoint!("prune.done");
                        self.op_end(op, true, None);
                        self.journal("prune", &address, Phase::Finished, "")?;
                        self.report.done(&address, "pruned");
                    }
                    Err(e) => {
                        self.op_end(op, false, None);
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
            Details::UpdateSource { instance, source } => {
                self.update_instance(instance, |r| r.source = source.to.clone())?;
                self.journal("update-source", &a.address, Phase::Finished, "")?;
                self.report
                    .done(&a.address, "recorded the new connection settings");
            }
            Details::SwitchInstance { instance, kind } => {
                crate::failpoint!("switch.before");
                self.update_instance(instance, |r| r.kind = kind.to)?;
                crate::failpoint!("switch.recorded");
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
                let op = self.op_start("update", &a.address, instance, Some(*pre_update_backup));
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
                    self.op_end(op, false, None);
                    self.journal("update", &a.address, Phase::Failed, &why)?;
                    self.report.failed(&a.address, why);
                    return Ok(());
                }
                crate::failpoint!("update.before-hook");
                let hook = hooks::run(
                    &format!("{} on_update", a.address),
                    on_update,
                    &hooks::secret_env_names(self.cfg),
                    self.stop.as_deref(),
                    self.hook_limits(instance),
                );
                crate::failpoint!("update.hook-ran");
                if let Err(why) = hook {
                    let why = format!(
                        "on_update failed, the version stays {}: {why}",
                        version.from
                    );
                    self.update_instance(instance, |r| r.error = Some(why.clone()))?;
                    self.op_end(op, false, None);
                    self.journal("update", &a.address, Phase::Failed, &why)?;
                    self.report.failed(&a.address, why);
                    return Ok(());
                }
                self.update_instance(instance, |r| {
                    r.version = version.to.clone();
                    r.error = None;
                })?;
                crate::failpoint!("update.recorded");
                self.op_end(op, true, None);
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
                    // The record first; the snapshot's tags (a lost host rebuilds the record
                    // from there) right after the plan's actions (see `retag.rs`).
                    self.put_tags_pending(&b, &a.address)?;
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
                if label.is_some() || notes.is_some() {
                    let tags = crate::catalogue::snapshot_tags(&b);
                    if let Err(e) = self.put_retagged(&mut b, &a.address, &tags)? {
                        self.journal("revive", &a.address, Phase::Failed, &e)?;
                        self.report.failed(&a.address, e);
                        return Ok(());
                    }
                } else {
                    self.put_backup(&b)?;
                }
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
                    self.cfg.schedule.storage.as_str(),
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
                    self.cfg.schedule.storage.as_str(),
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
                self.notify(crate::notify::Event::backup(
                    &b,
                    &d.address,
                    None,
                    self.now(),
                ));
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
                crate::failpoint!("expire.before-forget");
                let op = self.op_start("expire", &d.address, instance, Some(*id));
                if let Err(e) = self.forget_snapshot(&b) {
                    self.op_end(op, false, b.size_bytes);
                    self.journal("expire", &d.address, Phase::Failed, &e)?;
                    self.report.failed(
                        &d.address,
                        format!("expiry failed (tried again later): {e}"),
                    );
                    return Ok(());
                }
                b.status = BackupStatus::Expired;
                self.put_backup(&b)?;
                crate::failpoint!("expire.recorded");
                self.op_end(op, true, b.size_bytes);
                self.journal("expire", &d.address, Phase::Finished, "")?;
                self.report.done(&d.address, "expired");
            }
            DueDetails::Drill {
                instance, backup, ..
            } => self.drill(&d.address, instance, *backup)?,
            DueDetails::Purge { id, data, .. } => {
                let Some(mut b) = self.store.get_backup(*id)? else {
                    return Ok(());
                };
                if b.status != BackupStatus::Deleting {
                    return Ok(()); // revived meanwhile
                }
                self.journal("purge", &d.address, Phase::Started, "")?;
                let op = self.op_start("purge", &d.address, &b.instance, Some(*id));
                if *data == DataFate::Deleted
                    && let Err(e) = self.forget_snapshot(&b)
                {
                    self.op_end(op, false, b.size_bytes);
                    self.journal("purge", &d.address, Phase::Failed, &e)?;
                    self.report.failed(&d.address, format!("the backup's data could not be deleted (it stays `deleting` and is tried again): {e}"));
                    return Ok(());
                }
                b.status = BackupStatus::Deleted;
                if *data == DataFate::Deleted {
                    self.put_backup(&b)?;
                } else {
                    // Its data stays in storage: the snapshot says it left the catalogue, so
                    // that `storage adopt` on a new host does not bring it back.
                    let tags = crate::catalogue::deleted_tags(&b, self.now());
                    if let Err(e) = self.put_retagged(&mut b, &d.address, &tags)? {
                        self.op_end(op, false, b.size_bytes);
                        self.journal("purge", &d.address, Phase::Failed, &e)?;
                        self.report.failed(
                            &d.address,
                            format!("it stays `deleting` and is tried again: {e}"),
                        );
                        return Ok(());
                    }
                }
                self.op_end(op, true, b.size_bytes);
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
            for b in self.store.load()?.backups.values() {
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
        self.remember_good(b);
        Ok(())
    }

    /// Keeps the completed backups of [`Self::good`] in step with a record just written.
    fn remember_good(&self, b: &BackupRecord) {
        if let Some(map) = self.good.borrow_mut().as_mut() {
            let entry = map.entry(b.instance.clone()).or_default();
            if b.status == BackupStatus::Completed {
                entry.insert(b.id, (b.finished_at(), b.created_at));
            } else {
                entry.remove(&b.id);
            }
        }
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
}

/// Fault injection for the crash-safety tests: with `BACKPLAN_CRASH_AFTER=<op>:<phase>`
/// (like `swap:started`), the process kills itself with SIGKILL right after journaling that
/// step, exactly as a power cut or `kill -9` would stop it there. `BACKPLAN_HANG_AFTER` stops
/// there for good instead, as a hung operation would (the watchdog tests).
#[cfg(debug_assertions)]
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
