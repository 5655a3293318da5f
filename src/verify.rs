//! Verification: the integrity of every repository, and that every backup recorded as
//! completed has its snapshot. Used by `backplan verify` and by the daemon (`schedule.verify`).

use std::io::Write;

use crate::config::Config;
use crate::engine::Engine;
use crate::records::{BackupStatus, Recorded};

/// Verifies every repository of `cfg` against what is recorded, writing one line per storage
/// (and per problem). Returns the number of problems.
pub fn check(
    cfg: &Config,
    rec: &Recorded,
    engine: &dyn Engine,
    subset: f64,
    out: &mut dyn Write,
) -> usize {
    let mut problems = 0;
    for (name, s) in &cfg.storages {
        let repo = match crate::storage::of(s).and_then(|k| k.resolve(cfg, name, s)) {
            Ok(r) => r.repo,
            Err(e) => {
                let _ = writeln!(out, "storage {name}: not verified: {e}");
                continue;
            }
        };
        match engine.repository_id(&repo) {
            Ok(Some(_)) => {}
            Ok(None) => {
                let _ = writeln!(
                    out,
                    "storage {name}: no repository yet at {}",
                    repo.path.display()
                );
                continue;
            }
            Err(e) => {
                let _ = writeln!(out, "storage {name}: FAILED: {e}");
                problems += 1;
                continue;
            }
        }
        let report = match engine.verify(&repo, subset) {
            Ok(r) => r,
            Err(e) => {
                let _ = writeln!(out, "storage {name}: FAILED: {e}");
                problems += 1;
                continue;
            }
        };
        let snapshots = match engine.list(&repo) {
            Ok(l) => l,
            Err(e) => {
                let _ = writeln!(out, "storage {name}: FAILED to list snapshots: {e}");
                problems += 1;
                continue;
            }
        };
        let mut missing = Vec::new();
        for b in rec.backups.values() {
            if b.storage == *name && b.status == BackupStatus::Completed {
                let present = b
                    .snapshot_id
                    .as_ref()
                    .is_some_and(|id| snapshots.iter().any(|s| &s.id == id));
                if !present {
                    missing.push(crate::plan::backup_address(b));
                }
            }
        }
        for p in &report.problems {
            let _ = writeln!(out, "storage {name}: {p}");
        }
        for m in &missing {
            let _ = writeln!(
                out,
                "storage {name}: {m} is recorded as completed but its snapshot is missing"
            );
        }
        problems += report.problems.len() + missing.len();
        if report.problems.is_empty() && missing.is_empty() {
            let _ = writeln!(
                out,
                "storage {name}: OK ({}, structure checked, {subset}% of the data read back)",
                crate::views::count(report.snapshots, "snapshot", "snapshots")
            );
        }
    }
    if problems > 0 {
        let _ = writeln!(
            out,
            "{} found.",
            crate::views::count(problems, "problem", "problems")
        );
    }
    problems
}
