//! A backup's metadata in its snapshot: an edit of label or notes (and a backup leaving the
//! catalogue with its data kept) rewrites the snapshot's tags as `restic tag` does, so that a
//! new host can rebuild the record from the snapshot (`catalogue`, `storage adopt`).
//!
//! **One rewrite, one exclusive lock**: under a single restic exclusive lock the new snapshot
//! file is written, then the record names it, then the old file is forgotten
//! ([`crate::engine::Engine::retag`]). The journal's `retag` entry is opened before and
//! finished after.
//!
//! **A label or notes edit is recorded before its snapshot's tags are rewritten**: the record
//! (what `show`, `status` and the plan read) changes at once, with the journal's `retag` entry
//! opened first ("snapshot tags pending"); the rewrite follows right after the plan's actions in
//! the same run ([`Executor::rewrite_pending_tags`]). Until then `show` says the tags are
//! pending. A rewrite that fails stays open (the edit stays applied) and is tried again: by
//! the daemon with back-off (a run with nothing else to do still runs while tags are pending,
//! [`Executor::tags_pending`]), by the next `apply`, and at start.
//! Other rewrites (a revived backup's new label, a backup leaving the catalogue) are done in
//! one step with their record, as before.
//!
//! Recovery ([`Executor::recover_retags`], at start, for every `retag` entry left open):
//! the snapshot the record names is given the record's tags (nothing to do when it carries
//! them already), then every other snapshot of the backup is forgotten. So a run stopped
//! before the record changed leaves the old record (the plan does the edit again), a run
//! stopped with the tags pending gets them rewritten, and one stopped after the record named
//! the new snapshot loses the old one.

use super::*;

/// What the `retag` journal entry of an edit whose tags are not rewritten yet says.
const PENDING: &str = "snapshot tags pending";

impl Executor<'_> {
    /// Writes `b` after rewriting its snapshot's tags to `tags`, in one step; a backup without
    /// a snapshot is only written. Err (nothing written): why the snapshot could not be
    /// rewritten.
    pub(super) fn put_retagged(
        &mut self,
        b: &mut BackupRecord,
        address: &str,
        tags: &SnapshotTags,
    ) -> Result<Result<(), String>, ApplyError> {
        let Some(old) = b.snapshot_id.clone() else {
            self.put_backup(b)?;
            return Ok(Ok(()));
        };
        let detail = format!("{} {old}", b.id);
        self.journal("retag", address, Phase::Started, &detail)?;
        match self.rewrite(b, tags)? {
            Ok(None) => self.journal("retag", address, Phase::Finished, &detail)?,
            Ok(Some(e)) => self.old_left(address, &old, &format!("{detail}: {e}"))?,
            Err(e) => {
                self.journal("retag", address, Phase::Failed, &format!("{detail}: {e}"))?;
                return Ok(Err(format!(
                    "the snapshot's metadata could not be rewritten, so nothing was changed (tried again later): {e}"
                )));
            }
        }
        Ok(Ok(()))
    }

    /// Writes `b` (a new label or notes) now and leaves its snapshot's tags to
    /// [`Self::rewrite_pending_tags`]: the journal says they are pending before the record
    /// changes.
    pub(super) fn put_tags_pending(
        &mut self,
        b: &BackupRecord,
        address: &str,
    ) -> Result<(), ApplyError> {
        if let Some(old) = &b.snapshot_id {
            let detail = format!("{} {old}: {PENDING}", b.id);
            self.journal("retag", address, Phase::Started, &detail)?;
        }
        self.put_backup(b)?;
        crate::failpoint!("retag.pending");
        Ok(())
    }

    /// Rewrites the tags [`Self::put_tags_pending`] left pending (after the plan's actions, so
    /// that every edit of a run is recorded before the first rewrite waits for its lock), and
    /// those a failed rewrite left open. A failure is reported (a retriable failure: the
    /// daemon tries again with back-off, even when nothing else is to do), and at start.
    pub(super) fn rewrite_pending_tags(&mut self) -> Result<(), ApplyError> {
        for (address, id, phase) in self.open_retags(true)? {
            let Some(mut b) = self.store.get_backup(id)? else {
                continue;
            };
            if b.status == BackupStatus::Deleted {
                continue; // a backup leaving the catalogue: its rewrite was done in one step
            }
            let failed = if phase == Phase::Failed {
                // Tried before: it may have left a snapshot behind, so recovery's way.
                self.recover_one(&address, id)?.err()
            } else {
                let tags = crate::catalogue::snapshot_tags(&b);
                let old = b.snapshot_id.clone().unwrap_or_default();
                match self.rewrite(&mut b, &tags)? {
                    Ok(None) => {
                        let detail = format!("{id}: snapshot tags rewritten");
                        self.journal("retag", &address, Phase::Finished, &detail)?;
                        None
                    }
                    Ok(Some(e)) => {
                        self.old_left(&address, &old, &format!("{id} {old}: {e}"))?;
                        None
                    }
                    Err(e) => Some(e),
                }
            };
            match failed {
                None => tracing::info!(address, "snapshot tags rewritten"),
                Some(e) => {
                    self.journal(
                        "retag",
                        &address,
                        Phase::Failed,
                        &format!("{id} {PENDING}: {e}"),
                    )?;
                    self.report.failed(
                        &address,
                        format!("the label and notes are recorded, but the snapshot's tags could not be rewritten yet (tried again later, and at start): {e}"),
                    );
                }
            }
        }
        Ok(())
    }

    /// Whether an edit's snapshot tags are still to be rewritten (a run with nothing else to
    /// do still runs for them: the daemon's retry of a rewrite that failed).
    pub fn tags_pending(&self) -> Result<bool, ApplyError> {
        Ok(!self.open_retags(true)?.is_empty())
    }

    /// Under one exclusive lock: the snapshot `b` names gets `tags` (a new file), `b` is
    /// recorded with the new id, the old file is forgotten. Ok(None): done; Ok(Some(why)):
    /// recorded, but the old file could not be forgotten (the caller leaves the journal entry
    /// open: recovery forgets it); Err: why nothing was recorded (`b` unchanged).
    fn rewrite(
        &mut self,
        b: &mut BackupRecord,
        tags: &SnapshotTags,
    ) -> Result<Result<Option<String>, String>, ApplyError> {
        let Some(old) = b.snapshot_id.clone() else {
            self.put_backup(b)?;
            return Ok(Ok(None));
        };
        let repo = match self.repo(&b.storage) {
            Ok((repo, _)) => repo,
            Err(e) => return Ok(Err(e)),
        };
        let store = self.store;
        let mut record = b.clone();
        let mut unrecorded: Option<StateError> = None;
        let mut recorded = false;
        let done = self.engine.retag(&repo, &old, tags, &mut |new: &str| {
            record.snapshot_id = Some(new.to_string());
            if let Err(e) = store.put_backup(&record) {
                let message = e.to_string();
                unrecorded = Some(e);
                return Err(message);
            }
            recorded = true;
            crate::failpoint!("retag.recorded");
            Ok(())
        });
        if let Some(e) = unrecorded {
            return Err(e.into());
        }
        if recorded {
            *b = record;
            self.remember_good(b);
        }
        Ok(match done {
            Ok(_) => Ok(None),
            Err(e) if recorded => Ok(Some(e.to_string())),
            Err(e) => Err(e.to_string()),
        })
    }

    /// The record names the rewritten snapshot but the old one could not be forgotten: the
    /// journal entry stays open (not pending) and the next start forgets it.
    fn old_left(&self, address: &str, old: &str, detail: &str) -> Result<(), ApplyError> {
        tracing::warn!(
            address,
            "the snapshot before the edit ({old}) could not be forgotten yet (at the next start): {detail}"
        );
        self.journal("retag", address, Phase::Failed, detail)
    }

    /// The `retag` entries left open: address, backup id and the last phase. `pending_only`: only the edits
    /// whose tags are pending (the others are tidied at start).
    fn open_retags(&self, pending_only: bool) -> Result<Vec<(String, Uuid, Phase)>, ApplyError> {
        let mut out = Vec::new();
        // Only the rewrites left open (the index of open operations), not the whole journal.
        for address in self.store.journal_open("retag")? {
            let entries = self.store.journal_at(&address)?;
            let Some(e) = entries.into_iter().rev().find(|e| e.op == "retag") else {
                continue;
            };
            if e.phase == Phase::Finished || (pending_only && !e.detail.contains(PENDING)) {
                continue;
            }
            if let Some(id) = e
                .detail
                .split_whitespace()
                .next()
                .and_then(|w| Uuid::parse_str(w.trim_end_matches(':')).ok())
            {
                out.push((address, id, e.phase));
            }
        }
        Ok(out)
    }

    /// At start: a metadata rewrite the journal shows unfinished may have left the tags
    /// pending, or two snapshots of one backup. The snapshot its record names gets the
    /// record's tags, and every other snapshot of the backup is forgotten.
    pub(super) fn recover_retags(&mut self) -> Result<(), ApplyError> {
        for (address, id, _) in self.open_retags(false)? {
            if let Err(e) = self.recover_one(&address, id)? {
                tracing::warn!(
                    address,
                    "an interrupted metadata rewrite could not be finished yet (tried again later): {e}"
                );
            }
        }
        Ok(())
    }

    /// [`Self::recover_retags`] for one backup. Err: why it is not finished (the journal
    /// entry stays open).
    fn recover_one(&mut self, address: &str, id: Uuid) -> Result<Result<(), String>, ApplyError> {
        let Some(mut b) = self.store.get_backup(id)? else {
            return Ok(Ok(()));
        };
        // A backup leaving the catalogue carries dated tags: its record was written with its
        // rewrite, in one step, so only the leftover goes.
        if b.status != BackupStatus::Deleted {
            let tags = crate::catalogue::snapshot_tags(&b);
            // Recorded with the old file left: forgotten just below with the other leftovers.
            if let Err(e) = self.rewrite(&mut b, &tags)? {
                return Ok(Err(e));
            }
        }
        let cleaned = self.repo(&b.storage).and_then(|(repo, _)| {
            let extra: Vec<String> = (self.engine.find(&repo, id).map_err(|e| e.to_string())?)
                .into_iter()
                .map(|s| s.id)
                .filter(|s| b.snapshot_id.as_ref() != Some(s))
                .collect();
            self.engine
                .forget(&repo, &extra)
                .map_err(|e| e.to_string())?;
            Ok(extra.len())
        });
        Ok(match cleaned {
            Ok(n) => {
                self.journal(
                    "retag",
                    address,
                    Phase::Finished,
                    &format!("{id}: recovered, {n} leftover snapshot(s) forgotten"),
                )?;
                Ok(())
            }
            Err(e) => Err(e),
        })
    }
}
