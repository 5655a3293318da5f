//! Recovery: converge what an interrupted run left behind. Idempotent.

use super::*;

impl Executor<'_> {
    /// Resolves interrupted work: a backup left `pending` or `running` is `completed` if its
    /// snapshot reached the repository, `failed` otherwise (then retried on schedule); a
    /// restore interrupted before its swap is forgotten (planned again), one interrupted after
    /// it is `completed` (its `after_restore` run if it had not); staging folders are removed.
    pub fn recover(&mut self) -> Result<(), ApplyError> {
        // What was interrupted, copied out: the records in memory are not held while this
        // writes (a write would copy them all).
        let rec = {
            let all = self.store.load()?;
            Recorded {
                backups: (all.backups.iter())
                    .filter(|(_, b)| {
                        matches!(b.status, BackupStatus::Pending | BackupStatus::Running)
                    })
                    .map(|(id, b)| (*id, b.clone()))
                    .collect(),
                restores: (all.restores.iter())
                    .filter(|(_, r)| {
                        matches!(r.status, RestoreStatus::Pending | RestoreStatus::Running)
                    })
                    .map(|(key, r)| (key.clone(), r.clone()))
                    .collect(),
                instances: Default::default(),
                drills: Default::default(),
            }
        };
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
                    // so it cannot be stored twice). The attempt failed: counted and notified.
                    let why = "interrupted (backplan stopped or crashed during the backup); taking it again";
                    self.interrupted(&b, why);
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
                    self.interrupted(&b, b.error.as_deref().unwrap_or_default());
                }
            }
            self.put_backup(&b)?;
            crate::failpoint!("recover.backup-resolved");
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
            crate::failpoint!("recover.before-retake");
            self.take_backup(b, &address)?;
        }
        for r in rec.restores.values() {
            if !matches!(r.status, RestoreStatus::Pending | RestoreStatus::Running) {
                continue;
            }
            let address = format!("restore.{}", r.key);
            // Only this operation's entries (the journal by address), not the whole journal.
            let journal = self.store.journal_at(&address)?;
            let swapped = journal
                .iter()
                .any(|e| e.address == address && e.op == "swap" && e.phase == Phase::Finished);
            if swapped {
                let mut r = r.clone();
                // The application stopped by `before_restore` is started again.
                let hook_ran = journal.iter().any(|e| {
                    e.address == address && e.op == "after_restore" && e.phase == Phase::Finished
                });
                if !hook_ran && let Some(e) = self.after_restore(&address, &r.to)? {
                    r.error = Some(e);
                }
                r.status = RestoreStatus::Completed;
                r.completed_at = Some(self.now());
                self.store.put_restore(&r)?;
            } else {
                // The target was never touched: forget the attempt so the plan runs it again.
                self.store.remove_restore(&r.key)?;
                crate::failpoint!("recover.restore-forgotten");
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
        self.recover_retags()?;
        crate::failpoint!("recover.before-leftovers");
        for r in self.store.load()?.instances.values() {
            if let Ok(kind) = kinds::of(r.source.kind()) {
                for line in kind.discard_leftovers(&r.source) {
                    tracing::warn!("{}: {line}", r.name);
                }
            }
        }
        self.clear_drill_leftovers();
        Ok(())
    }
}

impl Executor<'_> {
    /// A backup found interrupted failed: one failure in the metrics and one notification.
    fn interrupted(&self, b: &BackupRecord, why: &str) {
        if let Some(m) = &self.metrics {
            m.operation(
                "backup",
                &b.instance,
                false,
                std::time::Duration::ZERO,
                None,
            );
        }
        let address = backup_address(b);
        self.notify(crate::notify::Event::interrupted(
            b,
            &address,
            why,
            self.now(),
        ));
    }
}
