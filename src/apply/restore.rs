//! Restore orchestration (SPEC section 5): the target checked before anything is written, a
//! pre-restore backup, the restore into a staging place, a last check, the atomic commit.

use super::*;

impl Executor<'_> {
    pub(super) fn restore(
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
        crate::failpoint!("restore.recorded");
        self.journal(
            "restore",
            address,
            Phase::Started,
            &format!("{from} -> {to}"),
        )?;
        let op = self.op_start("restore", address, to, Some(backup));
        let result = self.restore_steps(address, key, backup, to, safety);
        // The size of the backup restored, for the log line and the metrics.
        let size = self
            .store
            .get_backup(backup)
            .ok()
            .flatten()
            .and_then(|b| b.size_bytes);
        let result = result?;
        let took = op.started.elapsed();
        self.op_end(op, matches!(result, Ok(None)), size);
        match result {
            Ok(None) => {
                record.status = RestoreStatus::Completed;
                record.completed_at = Some(self.now());
                self.store.put_restore(&record)?;
                crate::failpoint!("restore.completed");
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
        let bytes = size.map(|s| s.read);
        self.notify(crate::notify::Event::restore(
            &record,
            address,
            took,
            bytes,
            self.now(),
        ));
        Ok(())
    }

    pub(super) fn restore_steps(
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
            .and_then(|t| t.check_backup(&b.versions).map(|()| t))
        {
            Ok(t) => t,
            Err(e) => return Ok(Err(e)),
        };
        crate::failpoint!("restore.checked");
        // 1. A safety backup of the target as it is now; 2. the restore beside the target,
        // readied; 3. checked again right before the swap. 1 and 2 run together where the
        // target allows: the swap waits for both, and either failing cancels the restore.
        let staged = match target.alongside_safety_backup() {
            None => {
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
                crate::failpoint!("restore.safety-taken");
                let repo = match self.usable_repo(&b.storage) {
                    Ok(r) => r,
                    Err(e) => return Ok(Err(e)),
                };
                let restored = stage_into(
                    self.engine,
                    &repo,
                    &snapshot,
                    &*target,
                    key,
                    self.progress.clone(),
                );
                crate::failpoint!("restore.staged");
                restored.and_then(|()| target.prepare(key))
            }
            Some(shared) => {
                let repo = match self.usable_repo(&b.storage) {
                    Ok(r) => r,
                    Err(e) => return Ok(Err(e)),
                };
                let (engine, progress) = (self.engine, self.progress.clone());
                let (safety_taken, staged) = std::thread::scope(|s| {
                    let staging = s.spawn(|| {
                        let restored = stage_into(engine, &repo, &snapshot, shared, key, progress);
                        crate::failpoint!("restore.staged");
                        restored.and_then(|()| shared.prepare(key))
                    });
                    let safety_taken = self.system_backup(
                        safety,
                        to,
                        BackupKind::PreRestore,
                        format!("Before restore {key}"),
                        |_| (),
                    );
                    if matches!(safety_taken, Ok(Ok(()))) {
                        crate::failpoint!("restore.safety-taken");
                    } else {
                        // Stops the restore under way now rather than at its end.
                        shared.discard(key);
                    }
                    let staged = staging.join().unwrap_or_else(|_| {
                        Err("the restore into the staging place panicked".to_string())
                    });
                    (safety_taken, staged)
                });
                match safety_taken {
                    Err(e) => {
                        target.discard(key);
                        return Err(e);
                    }
                    Ok(Err(e)) => {
                        target.discard(key);
                        return Ok(Err(format!(
                            "the pre-restore backup of {to} failed, so nothing was restored: {e}"
                        )));
                    }
                    Ok(Ok(())) => staged,
                }
            }
        };
        if let Err(e) = staged.and_then(|()| target.check_apart_from(&protected)) {
            target.discard(key);
            return Ok(Err(e));
        }
        // 4. The operator's `before_restore` (stop the application), as late as can be: the
        // instance is unavailable from here until `after_restore`. A failure cancels.
        if let Err(e) = self.instance_hook(to, "before_restore", |h| &h.before_restore) {
            target.discard(key);
            return Ok(Err(e));
        }
        self.journal("swap", address, Phase::Started, "")?;
        crate::failpoint!("restore.before-exchange");
        if let Err(e) = target.commit(key) {
            target.discard(key);
            // The application was stopped for the swap: start it again on the old data.
            return Ok(Err(match self.after_restore(address, to)? {
                None => e,
                Some(h) => format!("{e}; then {h}"),
            }));
        }
        // From here the target holds the restored data, whatever fails next.
        crate::failpoint!("restore.exchanged");
        self.journal("swap", address, Phase::Finished, "")?;
        let finished = target.finish(key).err();
        crate::failpoint!("restore.finished");
        let hook = self.after_restore(address, to)?;
        Ok(Ok(match (finished, hook) {
            (None, None) => None,
            (Some(w), None) | (None, Some(w)) => Some(w),
            (Some(w), Some(h)) => Some(format!("{w}; and {h}")),
        }))
    }

    /// Runs `after_restore` of `to` and journals that it ran: recovery runs it for a restore
    /// interrupted after its swap that did not get that far. Returns its failure.
    pub(super) fn after_restore(
        &mut self,
        address: &str,
        to: &str,
    ) -> Result<Option<String>, ApplyError> {
        let failed = self
            .instance_hook(to, "after_restore", |h| &h.after_restore)
            .err();
        self.journal(
            "after_restore",
            address,
            Phase::Finished,
            failed.as_deref().unwrap_or(""),
        )?;
        Ok(failed)
    }

    /// What a restore into `to` must never reach: backplan's state folder, its repositories
    /// and key files, and every other instance's store.
    pub(super) fn protected_paths(&self, to: &str) -> Result<Vec<(String, PathBuf)>, String> {
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

/// Restores `snapshot` into `target`'s staging place (see [`kinds::Target::stage`]).
fn stage_into(
    engine: &dyn Engine,
    repo: &Repo,
    snapshot: &str,
    target: &dyn kinds::Target,
    key: &str,
    progress: Arc<dyn ProgressSink>,
) -> Result<(), String> {
    target.stage(key).and_then(|into| match into {
        RestoreInto::Tree(path) => engine
            .restore_dir(repo, snapshot, &path, progress)
            .map(|_| ())
            .map_err(|e| e.to_string()),
        RestoreInto::Stream { name, mut sink } => engine
            .restore_stream(repo, snapshot, &name, &mut sink)
            .map(|_| ())
            .map_err(|e| e.to_string()),
    })
}
