//! A backup's metadata in its snapshot: an edit of label or notes (and a backup leaving the
//! catalogue with its data kept) rewrites the snapshot's tags as `restic tag` does, so that a
//! new host can rebuild the record from the snapshot (`catalogue`, `storage adopt`).
//!
//! **The record and the snapshot change in one step**: the new snapshot file is written
//! first, then the record (new label or notes and the new snapshot id together), then the old
//! snapshot file is forgotten. A run stopped in between leaves the old record (the plan does
//! the edit again, and the engine finds the copy already made) or two snapshots of the backup
//! (the journal's `retag` entry is left unfinished, and [`Executor::recover`] forgets the one
//! the record does not name).

use super::*;

impl Executor<'_> {
    /// Writes `b` after rewriting its snapshot's tags to `tags`; a backup without a snapshot
    /// is only written. Err (nothing written): why the snapshot could not be rewritten.
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
        let new = self.repo(&b.storage).and_then(|(repo, _)| {
            self.engine
                .retag(&repo, &old, tags)
                .map(|new| (repo, new))
                .map_err(|e| e.to_string())
        });
        let (repo, new) = match new {
            Ok(r) => r,
            Err(e) => {
                self.journal("retag", address, Phase::Failed, &format!("{detail}: {e}"))?;
                return Ok(Err(format!(
                    "the snapshot's metadata could not be rewritten, so nothing was changed (tried again later): {e}"
                )));
            }
        };
        b.snapshot_id = Some(new.clone());
        self.put_backup(b)?;
        crate::failpoint!("retag.recorded");
        if new != old
            && let Err(e) = self.engine.forget(&repo, std::slice::from_ref(&old))
        {
            // The record names the new snapshot; the old one goes at the next start.
            tracing::warn!(
                address,
                "the snapshot before the edit ({old}) could not be forgotten yet: {e}"
            );
            self.journal("retag", address, Phase::Failed, &format!("{detail}: {e}"))?;
            return Ok(Ok(()));
        }
        self.journal("retag", address, Phase::Finished, &detail)?;
        Ok(Ok(()))
    }

    /// At start: a metadata rewrite the journal shows unfinished may have left two snapshots
    /// of one backup; the one its record does not name is forgotten.
    pub(super) fn recover_retags(&mut self) -> Result<(), ApplyError> {
        // Only the rewrites left open (the index of open operations), not the whole journal.
        let mut last: std::collections::BTreeMap<String, JournalEntry> = Default::default();
        for address in self.store.journal_open("retag")? {
            let entries = self.store.journal_at(&address)?;
            if let Some(e) = entries.into_iter().rev().find(|e| e.op == "retag") {
                last.insert(address, e);
            }
        }
        for (address, e) in &last {
            let address = address.as_str();
            if e.phase == Phase::Finished {
                continue;
            }
            let Some(id) = e
                .detail
                .split_whitespace()
                .next()
                .and_then(|w| Uuid::parse_str(w).ok())
            else {
                continue;
            };
            let Some(b) = self.store.get_backup(id)? else {
                continue;
            };
            let cleaned = self.repo(&b.storage).and_then(|(repo, _)| {
                let extra: Vec<String> =
                    (self.engine.find(&repo, id).map_err(|e| e.to_string())?)
                        .into_iter()
                        .map(|s| s.id)
                        .filter(|s| b.snapshot_id.as_ref() != Some(s))
                        .collect();
                self.engine
                    .forget(&repo, &extra)
                    .map_err(|e| e.to_string())?;
                Ok(extra.len())
            });
            match cleaned {
                Ok(n) => self.journal(
                    "retag",
                    address,
                    Phase::Finished,
                    &format!("{id}: recovered, {n} leftover snapshot(s) forgotten"),
                )?,
                Err(e) => tracing::warn!(
                    address,
                    "an interrupted metadata rewrite could not be tidied yet (tried at the next start): {e}"
                ),
            }
        }
        Ok(())
    }
}
