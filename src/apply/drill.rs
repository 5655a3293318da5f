//! Restore drills: the newest backup of an instance restored into a fresh scratch folder
//! under `drill_dir`, checked, timed, and the scratch folder removed.
//!
//! **A drill never writes into an instance**: it restores with the engine straight into a
//! folder it has just made under `drill_dir` (validation refuses a `drill_dir` that is, holds
//! or is inside an instance's path, and the drill checks again before writing), and reads
//! only that folder. The checks: the restored tree against the snapshot's listing (names,
//! types, file sizes), then the kind's own check (`Kind::drill_check`: SQLite's
//! `integrity_check`, `pg_restore --list` of a PostgreSQL dump). The restore is timed (the
//! RTO). Free space under `drill_dir` is checked first against the backup's size. The scratch
//! folder is removed whatever happens; one left by a crash is removed by recovery.
//! A failed drill is recorded, logged, counted in the metrics and reported like a failed
//! backup; it is tried again at the next interval.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use super::*;
use crate::engine::{EntryKind, TreeEntry};

/// The names of scratch folders under `drill_dir` start with this; recovery removes only
/// these.
pub const SCRATCH_PREFIX: &str = "backplan-drill-";

/// What a drill found, once it got as far as restoring.
struct Checked {
    detail: String,
    rto: Option<f64>,
}

impl Executor<'_> {
    pub(super) fn drill(
        &mut self,
        address: &str,
        instance: &str,
        backup: Uuid,
    ) -> Result<(), ApplyError> {
        let started_at = self.now();
        let clock = Instant::now();
        let what = self
            .store
            .get_backup(backup)?
            .map(|b| backup_address(&b))
            .unwrap_or_else(|| format!("backup.{backup}"));
        self.journal("drill", address, Phase::Started, &what)?;
        let op = self.op_start("drill", address, instance, Some(backup));
        let mut rto = None;
        let result = self.drill_steps(instance, backup).map(|c| {
            rto = c.rto;
            c.detail
        });
        let result = match result {
            Ok(detail) => Ok(detail),
            Err((e, measured)) => {
                rto = measured;
                Err(e)
            }
        };
        let ok = result.is_ok();
        let size = self
            .store
            .get_backup(backup)
            .ok()
            .flatten()
            .and_then(|b| b.size_bytes);
        self.op_end(op, ok, size);
        let (outcome, detail) = match result {
            Ok(d) => (DrillOutcome::Passed, d),
            Err(e) => (DrillOutcome::Failed, e),
        };
        let run = DrillRun {
            backup_id: backup,
            started_at,
            outcome,
            rto_seconds: rto,
            duration_seconds: clock.elapsed().as_secs_f64(),
            detail: detail.clone(),
        };
        let record = DrillRecord::with_run(self.store.get_drill(instance)?, instance, run);
        self.store.put_drill(&record)?;
        let rto_text = rto
            .map(|s| format!("{s:.1} s"))
            .unwrap_or_else(|| "-".into());
        if ok {
            self.journal("drill", address, Phase::Finished, &detail)?;
            self.report.done(
                address,
                format!("restore drill of {what} passed (restore took {rto_text}): {detail}"),
            );
        } else {
            self.journal("drill", address, Phase::Failed, &detail)?;
            self.report.failed(
                address,
                format!(
                    "restore drill of {what} FAILED (tried again at the next interval): {detail}"
                ),
            );
        }
        Ok(())
    }

    /// The drill itself: `Err` with what went wrong and the restore time if it was measured.
    fn drill_steps(&self, instance: &str, backup: Uuid) -> Result<Checked, (String, Option<f64>)> {
        let fail = |e: String| (e, None);
        let b = match self.store.get_backup(backup) {
            Ok(Some(b)) if b.status == BackupStatus::Completed => b,
            Ok(Some(b)) => {
                return Err(fail(format!(
                    "backup {} is {}, not completed",
                    backup_address(&b),
                    b.status
                )));
            }
            Ok(None) => return Err(fail(format!("backup {backup} is not recorded"))),
            Err(e) => return Err(fail(e.to_string())),
        };
        // An empty id would be read as a prefix of every snapshot.
        let Some(snapshot) = b.snapshot_id.clone().filter(|s| !s.trim().is_empty()) else {
            return Err(fail(format!(
                "backup {} is recorded as completed but without a snapshot id",
                backup_address(&b)
            )));
        };
        let source = self
            .source_of(instance)
            .ok_or_else(|| fail(format!("`{instance}` is neither recorded nor in the file")))?;
        let kind = kinds::of(source.kind()).map_err(fail)?;
        let dir = self.cfg.schedule.drill_dir.clone();
        // Checked before the folder is made, and again once it exists (links resolved).
        self.drill_dir_apart(&dir).map_err(fail)?;
        make_private_dir(&dir)
            .map_err(|e| fail(format!("cannot create drill_dir {}: {e}", dir.display())))?;
        self.drill_dir_apart(&dir).map_err(fail)?;
        clear_leftovers(&dir);
        // 1. Free space, before anything is read from the repository.
        let need = b.size_bytes.map(|s| s.read).unwrap_or(0);
        let free = free_bytes(&dir).map_err(|e| {
            fail(format!(
                "cannot read the free space of {}: {e}",
                dir.display()
            ))
        })?;
        if need > free {
            return Err(fail(format!(
                "not enough free space in drill_dir {}: the backup needs {}, {} is free; nothing was restored (free some space or set `drill_dir` to a larger disk)",
                dir.display(),
                crate::views::human_bytes(need),
                crate::views::human_bytes(free)
            )));
        }
        // 2. A fresh scratch folder, made by this drill (never an existing one).
        let scratch = dir.join(format!(
            "{SCRATCH_PREFIX}{instance}-{}",
            Uuid::new_v4().simple()
        ));
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&scratch)
            .map_err(|e| fail(format!("cannot create {}: {e}", scratch.display())))?;
        // Where it is, in the journal (recovery removes it after a crash in any case).
        self.journal(
            "drill-scratch",
            &format!("drill.{instance}"),
            Phase::Started,
            &scratch.display().to_string(),
        )
        .map_err(|e| fail(e.to_string()))?;
        let result = self.drill_in(&b, &snapshot, &source, kind, &scratch);
        // 3. The scratch folder goes, whatever happened.
        let removed = std::fs::remove_dir_all(&scratch);
        match (result, removed) {
            (Ok(c), Ok(())) => Ok(c),
            (Ok(c), Err(e)) => Err((
                format!(
                    "the checks passed ({}), but the scratch folder {} could not be removed: {e}",
                    c.detail,
                    scratch.display()
                ),
                c.rto,
            )),
            (Err(e), _) => Err(e),
        }
    }

    fn drill_in(
        &self,
        b: &BackupRecord,
        snapshot: &str,
        source: &Source,
        kind: &dyn kinds::Kind,
        scratch: &Path,
    ) -> Result<Checked, (String, Option<f64>)> {
        let fail = |e: String| (e, None);
        let repo = self.usable_repo(&b.storage).map_err(fail)?;
        let listing = self
            .engine
            .listing(&repo, snapshot)
            .map_err(|e| fail(format!("the snapshot's listing cannot be read: {e}")))?;
        // The backup's size again, from the listing (a record may not know it).
        let need: u64 = listing.iter().map(|e| e.size).sum();
        let free = free_bytes(scratch).map_err(|e| fail(e.to_string()))?;
        if need > free {
            return Err(fail(format!(
                "not enough free space in drill_dir {}: the snapshot holds {}, {} is free; nothing was restored",
                scratch.parent().unwrap_or(scratch).display(),
                crate::views::human_bytes(need),
                crate::views::human_bytes(free)
            )));
        }
        let tree = scratch.join("tree");
        let timer = Instant::now();
        self.engine
            .restore_dir(&repo, snapshot, &tree, self.progress.clone())
            .map_err(|e| fail(format!("the restore failed: {e}")))?;
        let rto = timer.elapsed().as_secs_f64();
        let with_rto = |e: String| (e, Some(rto));
        let entries = compare_tree(&tree, &listing).map_err(with_rto)?;
        let own = kind.drill_check(source, &tree).map_err(with_rto)?;
        let mut detail = format!(
            "{} match the snapshot's listing",
            crate::views::count(entries, "entry", "entries")
        );
        if !own.is_empty() {
            detail += &format!("; {own}");
        }
        Ok(Checked {
            detail,
            rto: Some(rto),
        })
    }

    /// Checked again before anything is written: the drill folder is not, does not hold and
    /// is not inside any instance's store (file or recorded).
    fn drill_dir_apart(&self, dir: &Path) -> Result<(), String> {
        let real = crate::config::validate::resolved;
        let drill = real(dir);
        let recorded = self.store.load().map_err(|e| e.to_string())?;
        let sources = self
            .cfg
            .instances
            .values()
            .map(|i| (&i.name, &i.source))
            .chain(recorded.instances.values().map(|r| (&r.name, &r.source)));
        for (name, source) in sources {
            let Some(path) = kinds::of(source.kind())
                .ok()
                .and_then(|k| k.store_path(source))
            else {
                continue;
            };
            let store = real(&path);
            if drill.starts_with(&store) || store.starts_with(&drill) {
                return Err(format!(
                    "drill_dir {} overlaps the data of instance `{name}` ({}); nothing was restored",
                    dir.display(),
                    path.display()
                ));
            }
        }
        Ok(())
    }

    /// Scratch folders of drills a crash interrupted, removed at start.
    pub(super) fn clear_drill_leftovers(&mut self) {
        for line in clear_leftovers(&self.cfg.schedule.drill_dir) {
            tracing::warn!("{line}");
        }
    }
}

use std::os::unix::fs::DirBuilderExt;

fn make_private_dir(dir: &Path) -> std::io::Result<()> {
    match std::fs::symlink_metadata(dir) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(std::io::Error::other("it exists and is not a folder")),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir),
        Err(e) => Err(e),
    }
}

/// Removes the scratch folders drills left under `dir` (only those with the drills' own
/// name); returns a line for each.
fn clear_leftovers(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        if !e.file_name().to_string_lossy().starts_with(SCRATCH_PREFIX) {
            continue;
        }
        let path = e.path();
        // A link is removed as a link, never followed.
        let removed = match e.file_type() {
            Ok(t) if t.is_dir() => std::fs::remove_dir_all(&path),
            _ => std::fs::remove_file(&path),
        };
        out.push(match removed {
            Ok(()) => format!(
                "removed {}, left by an interrupted restore drill",
                path.display()
            ),
            Err(e) => format!(
                "cannot remove {}, left by an interrupted restore drill: {e}",
                path.display()
            ),
        });
    }
    out
}

fn free_bytes(dir: &Path) -> std::io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::other("a NUL byte in the path"))?;
    // SAFETY: statvfs(3) fills the struct it is given; `c` is a valid C string.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok((st.f_bavail as u64).saturating_mul(st.f_frsize as u64))
}

/// The restored tree against the snapshot's listing: the same names, types and file sizes.
/// Returns the number of entries compared.
fn compare_tree(root: &Path, listing: &[TreeEntry]) -> Result<usize, String> {
    let want: BTreeMap<&Path, (EntryKind, u64)> = listing
        .iter()
        .filter(|e| !e.path.as_os_str().is_empty())
        .map(|e| (e.path.as_path(), (e.kind, e.size)))
        .collect();
    let mut have: BTreeMap<std::path::PathBuf, (EntryKind, u64)> = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let entries = std::fs::read_dir(&dir)
            .map_err(|e| format!("cannot read the restored folder {}: {e}", dir.display()))?;
        for e in entries {
            let e = e.map_err(|e| format!("cannot read the restored tree: {e}"))?;
            let path = e.path();
            let m = std::fs::symlink_metadata(&path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            let t = m.file_type();
            let kind = if t.is_dir() {
                stack.push(path.clone());
                EntryKind::Dir
            } else if t.is_file() {
                EntryKind::File
            } else if t.is_symlink() {
                EntryKind::Symlink
            } else {
                EntryKind::Other
            };
            let size = if kind == EntryKind::File { m.len() } else { 0 };
            let rel = path.strip_prefix(root).unwrap_or(&path).to_path_buf();
            have.insert(rel, (kind, size));
        }
    }
    let mut problems = Vec::new();
    for (p, (kind, size)) in &want {
        match have.get(*p) {
            None => problems.push(format!("{} is missing", p.display())),
            Some((k, _)) if k != kind => problems.push(format!(
                "{} is a {k:?}, the snapshot has a {kind:?}",
                p.display()
            )),
            Some((_, s)) if s != size => problems.push(format!(
                "{} has {s} bytes, the snapshot {size}",
                p.display()
            )),
            Some(_) => {}
        }
    }
    for p in have.keys() {
        if !want.contains_key(p.as_path()) {
            problems.push(format!("{} is not in the snapshot", p.display()));
        }
    }
    if problems.is_empty() {
        return Ok(want.len());
    }
    let n = problems.len();
    problems.truncate(5);
    Err(format!(
        "the restored tree differs from the snapshot's listing in {n} place(s): {}",
        problems.join("; ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(path: &str, kind: EntryKind, size: u64) -> TreeEntry {
        TreeEntry {
            path: path.into(),
            kind,
            size,
        }
    }

    #[test]
    fn the_tree_comparison_finds_every_kind_of_difference() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        std::fs::create_dir(root.join("d")).unwrap();
        std::fs::write(root.join("d/a"), "abc").unwrap();
        std::os::unix::fs::symlink("d/a", root.join("l")).unwrap();
        let listing = vec![
            entry("", EntryKind::Dir, 0),
            entry("d", EntryKind::Dir, 0),
            entry("d/a", EntryKind::File, 3),
            entry("l", EntryKind::Symlink, 0),
        ];
        assert_eq!(compare_tree(root, &listing), Ok(3));

        // A file of another size, a missing entry, an extra one, another type.
        std::fs::write(root.join("d/a"), "abcd").unwrap();
        let e = compare_tree(root, &listing).unwrap_err();
        assert!(e.contains("d/a has 4 bytes, the snapshot 3"), "{e}");
        std::fs::remove_file(root.join("l")).unwrap();
        std::fs::write(root.join("extra"), "").unwrap();
        let e = compare_tree(root, &listing).unwrap_err();
        assert!(e.contains("l is missing"), "{e}");
        assert!(e.contains("extra is not in the snapshot"), "{e}");
        assert!(e.contains("in 3 place(s)"), "{e}");
        std::fs::write(root.join("d/a"), "abc").unwrap();
        std::fs::remove_file(root.join("extra")).unwrap();
        std::fs::create_dir(root.join("l")).unwrap();
        let e = compare_tree(root, &listing).unwrap_err();
        assert!(e.contains("l is a Dir, the snapshot has a Symlink"), "{e}");
    }
}
